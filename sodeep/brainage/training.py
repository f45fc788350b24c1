"""Training a brain-age regressor with Lightning: any model, any loss preset, early stopping on
validation MAE, best weights restored at the end.

A training run keeps ``last.ckpt`` (written atomically after every epoch) beside ``best.ckpt``; a
run that stopped part-way continues from ``last.ckpt`` (``fit_age_model(..., resume=True)``) with
its optimizer, schedule, early-stopping, weight-average and random state, so that it ends where an
uninterrupted run would.

A model's *head* is its last ``nn.Linear`` (:func:`regression_head`), its *backbone* everything
else; ``fit_age_model(..., freeze_backbone=True)`` trains the head alone, e.g. to fine-tune a
trained regressor (:mod:`sodeep.brainage.finetuning`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging, ModelCheckpoint, Timer
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, TensorDataset

from sodeep.brainage.augmentation import random_generators
from sodeep.brainage.config import check_fit_settings
from sodeep.brainage.interruption import SignalStop, StopAtStepEnd
from sodeep.brainage.losses import BrainAgeLoss, check_batch_pairs
from sodeep.brainage.results import RESTART_ADVICE
from sodeep.checkpoints import CheckpointError, read_weights_only
from sodeep.runs import (
    AtomicCheckpointIO,
    ResumableCSVLogger,
    make_trainer,
    progress_settings,
    stop_signals_outside_training_are_interrupts,
)

#: A training run's checkpoints: the best validation MAE so far, and the end of the last epoch.
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.ckpt", "last.ckpt"
#: A validation prediction beyond this many times the oldest age (plus one year) ends a run as
#: diverged, as a NaN does.
DIVERGED_AGE_FACTOR = 10.0


def regression_head(model: nn.Module) -> nn.Linear:
    """The head of a brain-age regressor: its last ``nn.Linear`` in ``model.modules()`` order
    (:class:`~sodeep.brainage.models.AgeMLP`'s output layer, :class:`~sodeep.brainage.models.SFCN`'s
    regressor).  Everything else is the backbone; parameter names, hence checkpoints, are unchanged.

    Example:
        >>> from sodeep.brainage.models import AgeMLP
        >>> regression_head(AgeMLP(5, hidden=(8,)))
        Linear(in_features=8, out_features=1, bias=True)
    """
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to train as its head")
    return linears[-1]


class AgeRegression(L.LightningModule):
    """Lightning wrapper: ``model`` maps inputs to ages ``(B,)``; ``loss`` is any
    ``(predictions, ages) -> scalar`` module, e.g. :class:`sodeep.brainage.losses.BrainAgeLoss`;
    ``augment`` (optional) transforms training inputs only; ``run`` (JSON-able) names the training
    run, and is saved with the hyperparameters so that a checkpoint says whose it is.
    ``oldest_age``: the largest absolute age of the training subjects; validation predictions
    beyond :data:`DIVERGED_AGE_FACTOR` times it (or the validation subjects' oldest, if larger),
    plus one year, end the run as diverged.

    With ``freeze_backbone`` only :func:`regression_head` is optimized; the backbone's parameters
    stop taking gradients and its modules stay in eval mode while training (dropout off,
    BatchNorm statistics kept), so its weights and buffers end as they started."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        *,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-2,
        max_epochs: int = 200,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        run: dict[str, Any] | None = None,
        freeze_backbone: bool = False,
        oldest_age: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.augment = augment
        self.save_hyperparameters(ignore=["model", "loss", "augment", "oldest_age"])
        # The largest |age| the fit knows (training and validation subjects): the scale of the
        # divergence check, which the few validation subjects alone may not show.
        self.oldest_age = float(oldest_age)
        self._validation: list[tuple[torch.Tensor, torch.Tensor]] = []
        # The epoch's training losses times their batch sizes, summed, and its subject count: logged
        # once an epoch, as the per-epoch curves (a Lightning log call per step adds about a sixth
        # to the tabular model's step).
        self._epoch_total: torch.Tensor | None = None
        # A plain list, so that the head is not registered twice (its weights stay "model.*" only).
        self._head = [regression_head(model)] if freeze_backbone else []
        if freeze_backbone:
            model.requires_grad_(False)
            self._head[0].requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        self._epoch_total = None
        if self._head:
            self.model.eval()
            self._head[0].train()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        inputs, ages = batch
        if self.augment is not None:
            inputs = self.augment(inputs)
        predictions = self.model(inputs)
        try:
            loss = self.loss(predictions, ages)
        except ValueError:
            # The inputs were checked when the data was read: predictions that are not finite
            # come from the training itself.
            if not bool(torch.isfinite(predictions.detach()).all()):
                raise ValueError(self.diverged()) from None
            raise
        wide = torch.promote_types(loss.dtype, torch.float32)
        step = torch.stack([loss.detach().to(wide) * len(ages), loss.new_tensor(len(ages), dtype=wide)])
        self._epoch_total = step if self._epoch_total is None else self._epoch_total + step
        return loss

    def on_train_epoch_end(self) -> None:
        # The mean of the epoch's batch losses weighted by their sizes, over every process's batches
        # (each process takes part, batches or none).
        total = self._epoch_total if self._epoch_total is not None else torch.zeros(2, device=self.device)
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        # (Equal on every process: their mean, sync_dist, is that value.)
        self.log("train/loss", total[0] / total[1].clamp_min(1), prog_bar=True, sync_dist=True)

    def diverged(self, largest: float | None = None, oldest: float | None = None) -> str:
        """The one line that ends a run whose model's predictions went to NaN or infinity, or
        (``largest``) beyond :data:`DIVERGED_AGE_FACTOR` times the ``oldest`` age."""
        run = f" ({', '.join(f'{key} {value}' for key, value in self.hparams.run.items())})" if self.hparams.run else ""
        what = (
            "are not finite"
            if largest is None
            else f"reach {largest:.3g}, beyond {DIVERGED_AGE_FACTOR:g} times the oldest age ({oldest:.3g}),"
        )
        return (
            f"training diverged{run}: the model's predictions {what} at epoch {self.current_epoch + 1}; "
            f"lower the learning rate (it was {self.hparams.learning_rate:g})"
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        inputs, ages = batch
        self._validation.append((self.model(inputs), ages))

    def on_validation_epoch_end(self) -> None:
        predictions = torch.cat([p for p, _ in self._validation])
        ages = torch.cat([a for _, a in self._validation])
        self._validation.clear()
        # Read once an epoch: weights gone to NaN or infinity (a loss that overflowed while the
        # predictions were still finite, a last step that broke them) end the run here, where early
        # stopping would otherwise stop on NaN and leave a model that predicts nothing.  So do
        # predictions that are finite but far beyond any age (a learning rate too high by orders).
        limit = DIVERGED_AGE_FACTOR * (ages.abs().max().clamp_min(self.oldest_age) + 1)
        if not bool((predictions.abs() <= limit).all()):
            finite = bool(torch.isfinite(predictions).all())
            oldest = float(ages.abs().max().clamp_min(self.oldest_age))
            raise ValueError(self.diverged(float(predictions.abs().max()) if finite else None, oldest))
        # Under DDP every process validates on every validation subject, so the processes hold the
        # same value; averaged over them, early stopping and the best checkpoint follow one number.
        self.log("val/mae", (predictions - ages).abs().mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        trained = self._head[0] if self._head else self.model
        optimizer = torch.optim.AdamW(
            trained.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class SubjectShare(Sampler[int]):
    """Process ``rank`` of ``world_size``'s share of each epoch's shuffle of ``size`` subjects.

    Every epoch, ``generator`` (the same seed in every process) shuffles the subjects as
    ``RandomSampler`` does; process ``r`` takes places ``r, r + W, r + 2W, ...`` of that order,
    ``size // W`` subjects, so the processes train on different subjects and take the same number
    of steps (the last ``size % W`` places of an epoch's order are left out of it).  With one
    process this is ``RandomSampler``'s order, subject for subject.

    Example:
        >>> shares = [list(SubjectShare(5, torch.Generator().manual_seed(0), rank=r, world_size=2)) for r in (0, 1)]
        >>> len(shares[0]) == len(shares[1]) == 2 and not set(shares[0]) & set(shares[1])
        True
    """

    def __init__(self, size: int, generator: torch.Generator, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.shuffle = RandomSampler(range(size), generator=generator)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.shuffle) // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = list(self.shuffle)
        return iter(order[self.rank :: self.world_size][: len(self)])


def make_loader(
    inputs: torch.Tensor,
    ages: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A loader shuffled by ``generator`` (seeded by the caller) when one is given, each process
    of ``world_size`` taking its :class:`SubjectShare`; else every subject in order.  When
    shuffling, a last batch of one subject after larger ones is dropped: rank and age-difference
    terms, and BatchNorm, need two."""
    dataset = TensorDataset(inputs, ages)
    if generator is None:
        return DataLoader(dataset, batch_size=batch_size)
    share = SubjectShare(len(dataset), generator, rank=rank, world_size=world_size)
    drop_last = len(share) % batch_size == 1
    # The loader draws its base seed from the generator too, as a shuffling DataLoader does.
    return DataLoader(dataset, batch_size=batch_size, sampler=share, generator=generator, drop_last=drop_last)


class RandomState(Callback):
    """Saves with every checkpoint, and restores from it, the random state the rest of a run
    draws from: the global torch generator (dropout), the shuffling generator and the
    augmentation's.  Lightning restores weights, optimizer and callbacks; without this a resumed
    run would see other batches than an uninterrupted one."""

    def __init__(self, generators: list[torch.Generator]) -> None:
        self.generators = generators

    def state_dict(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "generators": [generator.get_state() for generator in self.generators]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        for generator, state in zip(self.generators, state_dict["generators"]):
            generator.set_state(state)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored state follows the run folder: a folder that was moved
    (or is reached by another path) keeps its best score, where Lightning would forget it and take
    the first epoch after resuming for the best."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        here = self.dirpath

        def moved(path: Any) -> Any:
            return os.path.join(here, os.path.basename(path)) if isinstance(path, str) and path else path

        state = dict(state_dict, dirpath=here)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = moved(state_dict.get(key))
        state["best_k_models"] = {moved(path): score for path, score in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict(state)


def _read_for_resume(path: Path, advice: str = RESTART_ADVICE) -> Any:
    """A checkpoint's payload, or a one-line ``ValueError`` saying why a run cannot resume from it
    (ending in ``advice``)."""
    try:
        return read_weights_only(path)
    except CheckpointError as error:
        raise ValueError(f"cannot resume: {error}; {advice}") from None
    except OSError as error:
        raise ValueError(f"cannot resume: {path} cannot be read ({error.strerror}); {advice}") from None


def check_training_checkpoint(path: str | Path, run: dict[str, Any] | None = None) -> int:
    """The global step of ``path``, a ``last.ckpt`` written by :func:`fit_age_model` for the
    training run ``run``; ``ValueError`` (one line) for a file a run cannot resume from: empty,
    truncated, not a torch file, not such a checkpoint, or another run's."""
    path = Path(path)
    # The folder's finished runs need not go with it: without its last.ckpt the run starts afresh.
    advice = f"delete {path} to train this run again from its start, or {RESTART_ADVICE}"
    payload = _read_for_resume(path, advice)
    hyperparameters = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if (
        not isinstance(hyperparameters, dict)
        or not isinstance(state, dict)
        or not any(str(key).startswith("model.") for key in state)
        or "global_step" not in payload
    ):
        raise ValueError(f"cannot resume: {path} is not a checkpoint of a brain-age training run; {advice}")
    if run is not None and hyperparameters.get("run") != run:
        raise ValueError(
            f"cannot resume: {path} belongs to training run {hyperparameters.get('run')}, not {run}; {advice}"
        )
    return int(payload["global_step"])


def check_resumable_run(directory: str | Path, run: dict[str, Any] | None = None) -> None:
    """Check, writing nothing, that the unfinished training run ``run`` can continue from what
    ``directory`` holds: nothing (it starts afresh), or its ``last.ckpt`` beside a readable
    ``best.ckpt``; ``ValueError`` (one line) otherwise."""
    directory = Path(directory)
    if not (directory / LAST_CHECKPOINT).is_file():
        return
    check_training_checkpoint(directory / LAST_CHECKPOINT, run)
    best = directory / BEST_CHECKPOINT
    if not best.is_file():
        raise ValueError(
            f"cannot resume: {directory} holds {LAST_CHECKPOINT} but no {BEST_CHECKPOINT}; run with overwrite=True instead of resume=True"
        )
    payload = _read_for_resume(best)
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise ValueError(
            f"cannot resume: {best} is not a checkpoint of a brain-age training run; run with overwrite=True instead of resume=True"
        )


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
    run: dict[str, Any] | None = None,
    resume: bool = False,
    stop: SignalStop | None = None,
    freeze_backbone: bool = False,
    accelerator: str = "cpu",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``model`` and return it with its best validation weights, plus a summary.

    Args:
        model: ``(B, ...) -> (B,)`` ages.
        loss: a loss module or a :data:`sodeep.brainage.losses.BRAIN_AGE_PRESETS` name.
        train, validation: ``(inputs, ages)`` tensors.
        out: directory for checkpoints (``best.ckpt`` and, after every epoch, ``last.ckpt``;
            written atomically).
        seed: seeds Lightning, the weights' initialisation order and the shuffling.
        batch_size: subjects per step (2 .. the sorter's capacity when a rank term is used, 2 or more
            with an age-difference term, 1 or more otherwise).
        max_epochs, patience: early stopping on validation MAE.
        max_minutes: wall-clock budget of the fit, resumed runs included (``None``: none).
        csv_directory: write the per-epoch curves (``metrics.csv``) there.
        augment: applied to each training batch (e.g. :class:`RandomFlipShift`).
        ema_decay: validate, checkpoint and return an exponential moving average of the weights
            (and BatchNorm statistics) with this decay per step (``None``: the raw weights).
            Averaging smooths the epoch-to-epoch jumps of a small-batch 3D CNN at high learning rates.
        progress_bar: show progress: Lightning's bar on a terminal, else a line on stderr every
            100 steps (:func:`sodeep.runs.progress_settings`).
        run: JSON-able name of the training run (e.g. preset, seed, fold), saved in its
            checkpoints; resuming refuses another run's checkpoint.
        resume: continue from ``out/last.ckpt`` if there is one (its curves continue too);
            otherwise the fit starts from scratch and removes checkpoints it finds in ``out``.
        stop: the command's :class:`~sodeep.brainage.interruption.SignalStop`: a signal ends
            the fit at the end of the current step with :class:`sodeep.run_folder.RunInterrupted`.
        freeze_backbone: train the model's :func:`regression_head` only (its other parameters
            stop taking gradients, and its other modules stay in eval mode).  ``model`` starts
            from its own weights: load a trained regressor's into it first to fine-tune it.
        accelerator, devices, strategy, num_nodes: Lightning's ``Trainer`` settings of where the
            fit runs (docs/scaling.md); the defaults train in one CPU process.  Under DDP every
            process calls this with the same arguments (Lightning starts a machine's other
            processes at the first fit by running the command again): each trains on its
            :class:`SubjectShare` of every epoch and validates on every validation subject, rank 0
            writes the checkpoints and curves, and every process returns the best weights rank 0
            saved.  The process group stays up for the caller's next fit; destroy it with
            :func:`sodeep.runs.release_process_group` after the last one.

    Returns:
        ``(model in eval mode, {"best_val_mae", "epochs", "best_path", "resumed_at_epoch",
        "train_seconds"})``; ``train_seconds`` adds up the fits of a resumed run up to the
        checkpoint each resumed from.
    """
    if len(train[1]) < 2 or len(validation[1]) < 1:
        raise ValueError(
            f"need >= 2 training and >= 1 validation subjects, got {len(train[1])} and {len(validation[1])}"
        )
    check_fit_settings(batch_size, max_epochs, patience, learning_rate, weight_decay, ema_decay, max_minutes)
    if isinstance(loss, str):
        check_batch_pairs([loss], batch_size)
    elif batch_size < 2 and getattr(loss, "compares_subjects", False):
        raise ValueError(
            f"batch_size must be >= 2 with a {type(loss).__name__} that has a rank or age-difference term: "
            f"it compares the subjects of a batch; got {batch_size}"
        )
    for split, (inputs, ages) in (("train", train), ("validation", validation)):
        if len(inputs) != len(ages) or ages.dim() != 1:
            raise ValueError(
                f"{split}: need inputs (N, ...) and ages (N,), got {tuple(inputs.shape)} and {tuple(ages.shape)}"
            )
        if not (torch.isfinite(inputs).all() and torch.isfinite(ages).all()):
            raise ValueError(f"{split} inputs or ages contain NaN or infinite values")
    out = Path(out)
    last = out / LAST_CHECKPOINT
    resume_step = check_training_checkpoint(last, run) if resume and last.is_file() else None
    L.seed_everything(seed, workers=True, verbose=False)
    if isinstance(loss, str):
        loss = BrainAgeLoss.from_preset(loss)
    module = AgeRegression(
        model,
        loss,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        max_epochs=max_epochs,
        augment=augment,
        run=run,
        freeze_backbone=freeze_backbone,
        oldest_age=float(torch.cat([train[1], validation[1]]).abs().max()),
    )
    generator = torch.Generator().manual_seed(seed)  # the shuffling, the same in every process
    checkpoint = RunCheckpoint(dirpath=out, filename=Path(BEST_CHECKPOINT).stem, monitor="val/mae", mode="min")
    progress = progress_settings() if progress_bar else {"enable_progress_bar": False, "callbacks": []}
    # The timer keeps the run's training time in its checkpoints, so a resumed run adds to it.
    timer = Timer(None if max_minutes is None else timedelta(minutes=max_minutes), verbose=False)
    trainer = make_trainer(
        max_epochs=max_epochs,
        callbacks=_callbacks(out, checkpoint, patience, [generator, *random_generators(augment)], ema_decay, stop)
        + [timer, *progress["callbacks"]],
        plugins=[AtomicCheckpointIO()],
        logger=_curves_logger(csv_directory, resume_step),
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        # Each process trains on its SubjectShare of the training subjects and validates on all of them.
        use_distributed_sampler=False,
        enable_progress_bar=progress["enable_progress_bar"],
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        # CUDA has no deterministic backward of 3-D max pooling (SFCN): a warning there, not a refusal.
        deterministic="warn",
    )
    if len(train[1]) // trainer.world_size < 2:
        raise ValueError(
            f"need >= 2 training subjects per process, got {len(train[1])} for {trainer.world_size} processes"
        )
    if resume_step is None and trainer.is_global_zero:  # rank 0 writes (and clears) the run's files
        # A fit from scratch: checkpoints left by another fit must not be taken for ours.
        for stale in (*out.glob("best*.ckpt"), *out.glob("last*.ckpt")):
            stale.unlink()
    train_loader = make_loader(
        *train, batch_size, generator=generator, rank=trainer.global_rank, world_size=trainer.world_size
    )
    with warnings.catch_warnings():
        # A rank term's sorter is frozen and kept in eval mode on purpose; Lightning warns about it.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        # Resuming finds the run's own checkpoints in its folder.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # inside Lightning
        # Under DDP: a 1x1x1 kernel's gradient may come in either of two stride patterns that lay
        # out the same memory (which one depends on the kernel oneDNN picks); DDP compares the
        # strides literally and warns, though nothing is copied.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        with stop_signals_outside_training_are_interrupts(trainer):
            trainer.fit(
                module,
                train_dataloaders=train_loader,
                val_dataloaders=make_loader(*validation, max(len(validation[1]), 1), generator=None),
                ckpt_path=str(last) if resume_step is not None else None,
                weights_only=True,
            )
    best_path = out / BEST_CHECKPOINT
    if not best_path.is_file():
        raise ValueError(
            f"training stopped before its first validation (after {trainer.current_epoch} epochs), so "
            f"there is no model to keep: raise max_minutes (now {max_minutes})"
        )
    # Every process loads the weights rank 0 saved: their predictions are those of one process.
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    best_score = checkpoint.best_model_score
    summary = {
        "best_val_mae": float(best_score) if best_score is not None else math.nan,
        "epochs": int(trainer.current_epoch),
        "best_path": str(best_path),
        "resumed_at_epoch": None if resume_step is None else resume_step // max(len(train_loader), 1),
        "train_seconds": timer.time_elapsed("train"),
    }
    return module.model.eval(), summary


def _callbacks(
    out: Path,
    checkpoint: RunCheckpoint,
    patience: int,
    generators: list[torch.Generator],
    ema_decay: float | None,
    stop: SignalStop | None,
) -> list[L.Callback]:
    """Early stopping, the best and the every-epoch checkpoints, the random state, and the
    optional weight average and signal stop of a :func:`fit_age_model` run."""
    # After the best one (Lightning keeps checkpoint callbacks in order), so that it holds its state.
    every_epoch = RunCheckpoint(dirpath=out, filename=Path(LAST_CHECKPOINT).stem, enable_version_counter=False)
    callbacks: list[L.Callback] = [
        EarlyStopping(monitor="val/mae", mode="min", patience=patience),
        checkpoint,
        every_epoch,
        RandomState(generators),
    ]
    if ema_decay is not None:
        # Swaps the average in for validation and writes it as the checkpoint's state_dict.
        callbacks.append(EMAWeightAveraging(decay=ema_decay))
    if stop is not None:
        callbacks.append(StopAtStepEnd(stop))
    return callbacks


def _curves_logger(csv_directory: str | Path | None, resume_step: int | None) -> list | bool:
    """The CSV logger of the per-epoch curves in ``csv_directory`` (``False``: none); a resumed
    run continues its file."""
    if csv_directory is None:
        return False
    csv_directory = Path(csv_directory)
    return [
        ResumableCSVLogger(
            save_dir=str(csv_directory.parent), name=csv_directory.name, version="", resume_step=resume_step or 0
        )
    ]


def process_rank(**trainer_options: Any) -> int:
    """This process's global rank among the processes that Lightning's ``Trainer`` settings
    ``trainer_options`` (``accelerator``, ``devices``, ``strategy``, ``num_nodes``) train with: 0
    alone, or for the process a command was started as; read from what the launcher set in the
    environment, starting nothing.  Settings Lightning refuses raise ``ValueError``, so a
    command calls this before it writes anything."""
    where = {"accelerator": "cpu", "devices": 1} | trainer_options  # fit_age_model's defaults
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return int(make_trainer(**quiet, **where).global_rank)


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
