"""Training a brain-age regressor with Lightning: any model, any loss preset, early stopping on
validation MAE, best weights restored at the end."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sodeep.brainage.config import check_fit_settings
from sodeep.brainage.losses import BrainAgeLoss
from sodeep.runs import AtomicCheckpointIO, progress_settings


class AgeRegression(L.LightningModule):
    """Lightning wrapper: ``model`` maps inputs to ages ``(B,)``; ``loss`` is any
    ``(predictions, ages) -> scalar`` module, e.g. :class:`sodeep.brainage.losses.BrainAgeLoss`;
    ``augment`` (optional) transforms training inputs only."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-2,
        max_epochs: int = 200,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.augment = augment
        self.save_hyperparameters(ignore=["model", "loss", "augment"])
        self._validation: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        inputs, ages = batch
        if self.augment is not None:
            inputs = self.augment(inputs)
        loss = self.loss(self.model(inputs), ages)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(ages))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        inputs, ages = batch
        self._validation.append((self.model(inputs), ages))

    def on_validation_epoch_end(self) -> None:
        predictions = torch.cat([p for p, _ in self._validation])
        ages = torch.cat([a for _, a in self._validation])
        self._validation.clear()
        self.log("val/mae", (predictions - ages).abs().mean(), prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def make_loader(inputs: torch.Tensor, ages: torch.Tensor, batch_size: int, *, seed: int | None) -> DataLoader:
    """Shuffled (seeded) loader when ``seed`` is given, else in order.  A last batch of one
    subject is dropped when shuffling: rank and age-difference terms need two subjects."""
    dataset = TensorDataset(inputs, ages)
    if seed is None:
        return DataLoader(dataset, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(dataset) % batch_size == 1
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last)


def fit_age_model(
    model: nn.Module,
    loss: nn.Module | str,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    *,
    out: str | Path,
    seed: int = 0,
    batch_size: int = 64,
    max_epochs: int = 200,
    patience: int = 25,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-2,
    max_minutes: float | None = None,
    csv_directory: str | Path | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ema_decay: float | None = None,
    progress_bar: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` and return it with its best validation weights, plus a summary.

    Args:
        model: ``(B, ...) -> (B,)`` ages.
        loss: a loss module or a :data:`sodeep.brainage.losses.BRAIN_AGE_PRESETS` name.
        train, validation: ``(inputs, ages)`` tensors.
        out: directory for checkpoints (``best.ckpt``, written atomically).
        seed: seeds Lightning, the weights' initialisation order and the shuffling.
        batch_size: subjects per step (2 .. the sorter's capacity when a rank term is used).
        max_epochs, patience: early stopping on validation MAE.
        max_minutes: wall-clock budget of the fit (``None``: none).
        csv_directory: write the per-epoch curves (``metrics.csv``) there.
        augment: applied to each training batch (e.g. :class:`RandomFlipShift`).
        ema_decay: validate, checkpoint and return an exponential moving average of the weights
            (and BatchNorm statistics) with this decay per step (``None``: the raw weights).
            Averaging smooths the epoch-to-epoch jumps of a small-batch 3D CNN at high learning rates.
        progress_bar: show progress: Lightning's bar on a terminal, else a line on stderr every
            100 steps (:func:`sodeep.runs.progress_settings`).

    Returns:
        ``(model in eval mode, {"best_val_mae", "epochs", "best_path"})``.
    """
    if len(train[1]) < 2 or len(validation[1]) < 1:
        raise ValueError(
            f"need >= 2 training and >= 1 validation subjects, got {len(train[1])} and {len(validation[1])}"
        )
    check_fit_settings(batch_size, max_epochs, patience, learning_rate, weight_decay, ema_decay, max_minutes)
    for split, (inputs, ages) in (("train", train), ("validation", validation)):
        if len(inputs) != len(ages) or ages.dim() != 1:
            raise ValueError(
                f"{split}: need inputs (N, ...) and ages (N,), got {tuple(inputs.shape)} and {tuple(ages.shape)}"
            )
        if not (torch.isfinite(inputs).all() and torch.isfinite(ages).all()):
            raise ValueError(f"{split} inputs or ages contain NaN or infinite values")
    L.seed_everything(seed, workers=True, verbose=False)
    if isinstance(loss, str):
        loss = BrainAgeLoss.from_preset(loss)
    module = AgeRegression(
        model, loss, learning_rate=learning_rate, weight_decay=weight_decay, max_epochs=max_epochs, augment=augment
    )
    out = Path(out)
    # A fit starts from scratch: a best.ckpt left by an interrupted fit must not be taken for ours.
    for stale in out.glob("best*.ckpt"):
        stale.unlink()
    loggers = False
    if csv_directory is not None:
        csv_directory = Path(csv_directory)
        loggers = [CSVLogger(save_dir=str(csv_directory.parent), name=csv_directory.name, version="")]
    checkpoint = ModelCheckpoint(dirpath=out, filename="best", monitor="val/mae", mode="min", save_top_k=1)
    callbacks: list[L.Callback] = [EarlyStopping(monitor="val/mae", mode="min", patience=patience), checkpoint]
    if ema_decay is not None:
        # Swaps the average in for validation and writes it as the checkpoint's state_dict.
        callbacks.append(EMAWeightAveraging(decay=ema_decay))
    progress = progress_settings() if progress_bar else {"enable_progress_bar": False, "callbacks": []}
    trainer = L.Trainer(
        max_epochs=max_epochs,
        max_time=None if max_minutes is None else timedelta(minutes=max_minutes),
        callbacks=callbacks + progress["callbacks"],
        plugins=[AtomicCheckpointIO()],
        logger=loggers,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=progress["enable_progress_bar"],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=True,
    )
    with warnings.catch_warnings():
        # A rank term's sorter is frozen and kept in eval mode on purpose; Lightning warns about it.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(
            module,
            train_dataloaders=make_loader(*train, batch_size, seed=seed),
            val_dataloaders=make_loader(*validation, max(len(validation[1]), 1), seed=None),
        )
    if not checkpoint.best_model_path:
        raise ValueError(
            f"training stopped before its first validation (after {trainer.current_epoch} epochs), so "
            f"there is no model to keep: raise max_minutes (now {max_minutes})"
        )
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    best_score = checkpoint.best_model_score
    summary = {
        "best_val_mae": float(best_score) if best_score is not None else math.nan,
        "epochs": int(trainer.current_epoch),
        "best_path": checkpoint.best_model_path,
    }
    return module.model.eval(), summary


@torch.no_grad()
def predict_ages(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Ages ``(N,)`` predicted in eval mode, in batches."""
    model.eval()
    return torch.cat([model(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)])


def load_age_model(model: nn.Module, checkpoint: str | Path) -> nn.Module:
    """Load the weights of a checkpoint written by :func:`fit_age_model` into ``model`` (same
    architecture), with ``weights_only=True``; returns it in eval mode."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not state or not any(key.startswith("model.") for key in state):
        raise ValueError(f"{checkpoint} is not a checkpoint of fit_age_model (no 'model.' weights)")
    model.load_state_dict({key[len("model.") :]: value for key, value in state.items() if key.startswith("model.")})
    return model.eval()
