"""Pretraining a sorter with Lightning: L1 to the exact normalized ranks of synthetic sequences."""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset

from sodeep.evaluation import EVALUATION_LENGTHS, held_out_set
from sodeep.metrics import mean_absolute_rank_error, rowwise_spearman
from sodeep.sorters import Sorter, build_sorter
from sodeep.synthetic import FAMILIES, SyntheticSequences


class HeldOutCells(Dataset):
    """The fixed validation set as a map-style dataset of whole ``(family, n)`` cells."""

    def __init__(self, lengths: Sequence[int], sequences_per_cell: int, families: Sequence[str]) -> None:
        self.families = list(families)
        self.cells = held_out_set(lengths, self.families, sequences_per_cell)

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        family, length, scores, ranks = self.cells[index]
        return scores, ranks, self.families.index(family), length


class SequenceDataModule(L.LightningDataModule):
    """Seeded synthetic training stream and fixed held-out cells.

    Its state (batches consumed) goes into Lightning checkpoints, so ``--resume`` continues the
    exact stream where the interrupted run stopped.
    """

    def __init__(
        self,
        batch_size: int = 64,
        lengths: Sequence[int] = tuple(range(2, 257)),
        seed: int = 0,
        validation_lengths: Sequence[int] = EVALUATION_LENGTHS,
        validation_sequences: int = 32,
        families: Sequence[str] = tuple(FAMILIES),
        affine_probability: float = 0.5,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.lengths = list(lengths)
        self.seed = seed
        self.validation_lengths = list(validation_lengths)
        self.validation_sequences = validation_sequences
        self.families = list(families)
        self.affine_probability = affine_probability
        self.start_batch = 0

    def train_dataloader(self) -> DataLoader:
        stream = SyntheticSequences(
            self.batch_size,
            self.lengths,
            self.seed,
            families=self.families,
            affine_probability=self.affine_probability,
            start_batch=self.start_batch,
        )
        return DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        cells = HeldOutCells(self.validation_lengths, self.validation_sequences, self.families)
        return DataLoader(cells, batch_size=None)

    def state_dict(self) -> dict[str, Any]:
        consumed = self.trainer.global_step if self.trainer is not None else self.start_batch
        return {"batches_consumed": int(consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_batch = int(state_dict.get("batches_consumed", 0))


class SorterPretraining(L.LightningModule):
    """Trains ``sorter`` with L1 to the exact normalized ranks; validates per family and per n.

    The sorter's architecture and config are saved as hyperparameters, so a Lightning checkpoint
    of this module describes itself (``sodeep export`` turns it into a sorter checkpoint).
    """

    def __init__(
        self,
        sorter: Sorter,
        learning_rate: float = 3e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        total_steps: int = 3000,
        families: Sequence[str] = tuple(FAMILIES),
    ) -> None:
        super().__init__()
        self.sorter = sorter
        self.save_hyperparameters(ignore=["sorter"])
        self.hparams["architecture"] = sorter.architecture
        self.hparams["sorter_config"] = sorter.config()
        self.families = list(families)
        self._validation: dict[str, list[float]] = defaultdict(list)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        scores, ranks = batch
        loss = torch.nn.functional.l1_loss(self.sorter(scores), ranks)
        self.log("train/l1", loss, prog_bar=True)
        self.log("train/n", float(scores.shape[-1]))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, int, int], batch_index: int) -> None:
        scores, ranks, family_index, length = batch
        predicted = self.sorter(scores)
        family = self.families[int(family_index)]
        metrics = {
            "l1": (predicted - ranks).abs().mean().item(),
            "spearman": torch.nanmean(rowwise_spearman(predicted, ranks)).item(),
            "rank_error": mean_absolute_rank_error(predicted, ranks).mean().item(),
        }
        for name, value in metrics.items():
            self._validation[f"val/{name}"].append(value)
            self._validation[f"val_family/{name}/{family}"].append(value)
            self._validation[f"val_n/{name}/{int(length)}"].append(value)

    def on_validation_epoch_end(self) -> None:
        for key, values in self._validation.items():
            finite = [value for value in values if not math.isnan(value)]
            if finite:
                self.log(key, sum(finite) / len(finite), prog_bar=key in ("val/spearman", "val/rank_error"))
        self._validation.clear()

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            self.sorter.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        warmup, total = self.hparams.warmup_steps, max(self.hparams.total_steps, 1)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def sorter_from_training_checkpoint(path: str | os.PathLike) -> Sorter:
    """Rebuild the sorter from a Lightning checkpoint written by :class:`SorterPretraining`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    hyperparameters = payload.get("hyper_parameters", {}) if isinstance(payload, dict) else {}
    if "architecture" not in hyperparameters:
        raise ValueError(
            f"{path} is not a sodeep pretraining checkpoint (no sorter architecture in its hyperparameters)"
        )
    sorter = build_sorter(hyperparameters["architecture"], **hyperparameters["sorter_config"])
    prefix = "sorter."
    sorter.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    return sorter.eval()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: never half-written."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            super().save_checkpoint(checkpoint, temporary, storage_options)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
