"""Pretraining a sorter with Lightning: L1 to the exact normalized ranks of synthetic sequences."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from sodeep.checkpoints import (
    CHECKPOINT_FORMAT,
    RUN_SORTER,
    CheckpointError,
    check_pretraining_folder,
    load_sorter,
    read_weights_only,
    recorded_command,
    run_folder_sorter,
    same_sorter_source,
    write_sorter_checkpoint,
)
from sodeep.config import (
    PretrainConfig,
    config_to_dict,
    lengths_summary,
    parse_lengths,
    run_wandb_mode,
    wandb_mode_change,
)
from sodeep.evaluation import ELEMENTS_PER_CALL, EVALUATION_LENGTHS, held_out_set
from sodeep.files import atomic_write_json, file_digest
from sodeep.metrics import mean_absolute_rank_error, rowwise_spearman
from sodeep.process_state import caller_state_kept
from sodeep.run_folder import (
    PREVIOUS_RUN,
    RUN_RECORD,
    RunInterrupted,
    check_not_being_cleared,
    check_not_in_use,
    claim_run_folder,
    describe_change,
    differing_settings,
    drop_previous_run,
    holds_files_besides_its_lock,
    interrupts_in_finalizers_kept,
    put_back_previous_run,
    releasing_run_folders,
    restore_a_killed_replacement,
    set_aside_previous_run,
    start_run_folder,
)
from sodeep.runs import (
    AtomicCheckpointIO,
    SetupWarning,
    StopOnSignal,
    make_loggers,
    make_trainer,
    progress_settings,
    quiet_lightning,
    release_process_group,
    stop_signals_outside_training_are_interrupts,
)
from sodeep.sorters import SORTERS, Sorter, build_sorter
from sodeep.sorters.conv import MAX_LENGTH
from sodeep.stream_loader import UnpackedChunks, available_cores, stream_loader
from sodeep.synthetic import FAMILIES, SyntheticSequences
from sodeep.wandb_setup import check_wandb_login, wandb_environment


class HeldOutCells(Dataset):
    """The fixed validation set as a map-style dataset of batches of whole ``(family, n)`` cells.

    A batch holds the cells of one length, as many families as fit in about
    :data:`~sodeep.evaluation.ELEMENTS_PER_CALL` scores (at least one cell): ``(scores, ranks,
    family_of_row, n)``, scores and ranks ``(R, n)``, ``family_of_row`` ``(R,)`` int64 indices
    into ``families``.  One call of the sorter per batch, not per cell.
    """

    def __init__(self, lengths: Sequence[int], sequences_per_cell: int, families: Sequence[str]) -> None:
        self.families = list(families)
        by_length: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        for family, length, scores, ranks in held_out_set(lengths, self.families, sequences_per_cell):
            by_length[length].append((self.families.index(family), scores, ranks))
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
        for length, cells in sorted(by_length.items()):
            per_batch = max(1, ELEMENTS_PER_CALL // (sequences_per_cell * length))
            for start in range(0, len(cells), per_batch):
                part = cells[start : start + per_batch]
                family_of_row = torch.tensor([family for family, _, _ in part]).repeat_interleave(sequences_per_cell)
                scores = torch.cat([scores for _, scores, _ in part])
                self.batches.append((scores, torch.cat([ranks for _, _, ranks in part]), family_of_row, length))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        return self.batches[index]


class SequenceDataModule(L.LightningDataModule):
    """Seeded synthetic training stream and fixed held-out cells.

    Under DDP the processes share out the one stream (:class:`SyntheticSequences` with their rank
    and world size): each step takes the stream's next ``world_size`` batches, one per process.
    Its state (stream batches consumed: steps times world size) goes into Lightning checkpoints,
    so ``--resume`` continues the exact stream where the interrupted run stopped.  Every process
    validates on all the held-out cells.  ``data_workers`` processes make the training batches
    (:func:`sodeep.stream_loader.stream_loader`; 0: the training process makes them).
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
        data_workers: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.lengths = list(lengths)
        self.seed = seed
        self.validation_lengths = list(validation_lengths)
        self.validation_sequences = validation_sequences
        self.families = list(families)
        self.affine_probability = affine_probability
        self.data_workers = data_workers
        self.training_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.start_batch = 0
        self.start_step = 0

    def train_dataloader(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        rank, world_size = (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        self.start_step = 0 if self.trainer is None else self.trainer.global_step  # a resumed fit's first step
        stream = SyntheticSequences(
            self.batch_size,
            self.lengths,
            self.seed,
            families=self.families,
            affine_probability=self.affine_probability,
            start_batch=self.start_batch,
            rank=rank,
            world_size=world_size,
        )
        self.close()
        self.training_batches = stream_loader(stream, self.data_workers)
        return self.training_batches

    def close(self) -> None:
        """Stop the data workers of the training batches, if any (the fit is over)."""
        if isinstance(self.training_batches, UnpackedChunks):
            self.training_batches.close()

    def val_dataloader(self) -> DataLoader:
        cells = HeldOutCells(self.validation_lengths, self.validation_sequences, self.families)
        return DataLoader(cells, batch_size=None)

    def stream_settings(self) -> dict[str, Any]:
        """What the training stream is a function of, besides the batch index: checkpoints record
        it, so that a run resumes only the stream it was trained on."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "lengths": self.lengths,
            "families": self.families,
            "affine_probability": self.affine_probability,
        }

    def state_dict(self) -> dict[str, Any]:
        consumed = self.start_batch
        if self.trainer is not None:
            steps_here = self.trainer.global_step - self.start_step  # steps of this fit, at this world size
            consumed += steps_here * self.trainer.world_size
        return {"batches_consumed": consumed, "stream": self.stream_settings()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_batch = int(state_dict.get("batches_consumed", 0))


#: How a Python caller goes on with an interrupted run (the console script prints its command).
RESUME_FROM_PYTHON = "pretrain(config, resume=True) goes on from there"


def held_out_lengths(training_lengths: Sequence[int], shortest: int, longest: int | None) -> list[int]:
    """The row lengths a pretraining validates on: :data:`~sodeep.evaluation.EVALUATION_LENGTHS`
    and the shortest and longest of ``training_lengths``, within what the sorter accepts
    (``shortest``..``longest``, ``None``: no upper bound), ascending.

    >>> held_out_lengths(range(512, 1025), 2, 16384)
    [2, 3, 5, 8, 16, 32, 64, 100, 128, 256, 512, 1024]
    """
    candidates = {*EVALUATION_LENGTHS, min(training_lengths), max(training_lengths)}
    return sorted(n for n in candidates if n >= shortest and (longest is None or n <= longest))


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
        # Given as one mapping so that the loggers' record (csv/hparams.yaml) names the sorter too;
        # lists, not tuples, keep that file plain YAML.
        self.save_hyperparameters(
            {
                "learning_rate": learning_rate,
                "weight_decay": weight_decay,
                "warmup_steps": warmup_steps,
                "total_steps": total_steps,
                "families": list(families),
                "architecture": sorter.architecture,
                "sorter_config": sorter.config(),
            }
        )
        self.families = list(families)
        self._validation: dict[str, list[float]] = defaultdict(list)
        # Seconds of training before this fit (those of a resumed run's earlier parts, up to the
        # checkpoint it resumes from), and when this fit started.
        self._seconds_before, self._fit_started = 0.0, time.time()

    def start_clock(self) -> None:
        """Count this fit's seconds from now (before ``trainer.fit``: with several processes, their
        start counts too)."""
        self._fit_started = time.time()

    def training_seconds(self) -> float:
        """Seconds of training of the run: this fit's, and those of its earlier parts up to the
        checkpoint it resumed from."""
        return self._seconds_before + (time.time() - self._fit_started)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._seconds_before = float(checkpoint.get("training_seconds", 0.0))

    def on_train_start(self) -> None:
        # Said once training is under way (bad input and interrupts before it stay one line).
        warmup, total = self.hparams.warmup_steps, self.hparams.total_steps
        # (Step k of the warm-up runs at (k + 1) / warmup of the rate: warmup = steps reaches it last.)
        if warmup > total and self.global_step < total and self.trainer.is_global_zero:
            warnings.warn(
                f"warmup_steps={warmup} is more than steps={total}: the learning rate rises for the whole run and "
                f"never reaches learning_rate={self.hparams.learning_rate:g}; lower it, e.g. warmup_steps={total // 10}",
                SetupWarning,
                stacklevel=2,
            )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        scores, ranks = batch
        loss = torch.nn.functional.l1_loss(self.sorter(scores), ranks)
        self._last_loss = loss.detach()
        self.log("train/l1", loss, prog_bar=True)
        self.log("train/n", float(scores.shape[-1]))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_index: int) -> None:
        # Read at the logger's cadence, which reads the loss then anyway: a loss that is not finite
        # ends the run there rather than at the next validation.
        if self.global_step % LOG_EVERY_STEPS == 0 and not bool(torch.isfinite(outputs["loss"])):
            raise ValueError(self.diverged(f"the L1 loss is {outputs['loss'].item()} at step {self.global_step}"))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The last checkpoint keeps the last weights that trained: finite, after a finite loss.
        last_loss = getattr(self, "_last_loss", None)
        if last_loss is not None and not bool(torch.isfinite(last_loss)):
            raise ValueError(self.diverged(f"the L1 loss is {last_loss.item()} at step {self.global_step}"))
        if not all(torch.isfinite(parameter).all() for parameter in self.sorter.parameters()):
            raise ValueError(self.diverged(f"the sorter's weights are not finite at step {self.global_step}"))
        checkpoint["training_seconds"] = self.training_seconds()

    def diverged(self, what: str) -> str:
        """The one line that ends a run whose training went to NaN or infinity (``what``)."""
        return (
            f"pretraining diverged: {what}; lower the learning rate (it was {self.hparams.learning_rate}) and run "
            "again with overwrite=True"
        )

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | int, int], batch_index: int
    ) -> None:
        """Metrics of each ``(family, n)`` cell in ``batch`` (:class:`HeldOutCells`; one family index
        may stand for every row), noted for the validation's means: L1, mean Spearman over the rows
        whose exact ranks are not all tied (as :func:`~sodeep.metrics.mean_spearman`), mean rank
        error in positions."""
        scores, ranks, family_of_row, length = batch
        predicted = self.sorter(scores)
        family_of_row = torch.as_tensor(family_of_row, device=scores.device).expand(scores.shape[0])
        per_row = {
            "l1": (predicted - ranks).abs().mean(-1),
            "spearman": rowwise_spearman(predicted, ranks),
            "rank_error": mean_absolute_rank_error(predicted, ranks),
        }
        every_row = torch.ones_like(family_of_row, dtype=torch.bool)
        counted = {"l1": every_row, "spearman": ranks.amax(-1) != ranks.amin(-1), "rank_error": every_row}
        # (families, rows): which rows are each family's.  Masked sums, not index_add_, whose
        # atomic additions on a GPU would make the figures vary from run to run.
        of_family = family_of_row == torch.arange(len(self.families), device=family_of_row.device)[:, None]
        cells = of_family.any(-1)
        means = []
        for name, values in per_row.items():
            taken = of_family & counted[name]
            # NaN for a cell with no row counted.
            means.append(torch.where(taken, values, 0.0).sum(-1) / taken.sum(-1).to(values.dtype))
        # One transfer to the host for the batch's cells.
        for family_index, values in zip(cells.nonzero().flatten().tolist(), torch.stack(means, -1)[cells].tolist()):
            family = self.families[family_index]
            for name, value in zip(per_row, values):
                self._validation[f"val/{name}"].append(value)
                self._validation[f"val_family/{name}/{family}"].append(value)
                self._validation[f"val_n/{name}/{int(length)}"].append(value)

    def on_validation_epoch_end(self) -> None:
        # An L1 distance is NaN only where the ranks are (a Spearman correlation also where a row's
        # scores are all equal): a cell of NaN ranks ends the run, not only a validation of them all.
        lengths = sorted(
            int(key.rsplit("/", 1)[1])
            for key, values in self._validation.items()
            if key.startswith("val_n/l1/") and any(math.isnan(value) for value in values)
        )
        if lengths:
            at = ", ".join(map(str, lengths))
            raise ValueError(self.diverged(f"the sorter's ranks are NaN at step {self.global_step} (n = {at})"))
        for key, values in self._validation.items():
            finite = [value for value in values if not math.isnan(value)]
            if finite:
                # Every process validated on the same cells: the mean over processes changes nothing,
                # but keeps the logged values in step under DDP.
                mean = sum(finite) / len(finite)
                self.log(key, mean, prog_bar=key in ("val/spearman", "val/rank_error"), sync_dist=True)
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


def _data_worker_ended(error: BaseException) -> RuntimeError | None:
    """PyTorch's "DataLoader worker ... killed" error behind ``error``: raised from its SIGCHLD
    handler, it may land inside other code that wraps it (``inspect`` turns it into a
    ``TypeError("unsupported callable")``), so the chain of causes is searched."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RuntimeError) and str(error).startswith("DataLoader worker"):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _settings_as_recorded(settings: dict[str, Any], record: Path) -> dict[str, Any]:
    """``settings`` as the folder's run record writes the same run: the lengths and the sorter it
    started from in its spelling (``"2,3,4"`` for ``"2-4"``, ``runs/a`` for ``./runs/a/``), and
    without the settings it does not name that are at their defaults (a record need not name
    them), so that such a run resumes."""
    try:
        recorded = json.loads(record.read_text())["config"]
        same = parse_lengths(recorded["lengths"]) == parse_lengths(settings["lengths"])
    except (OSError, ValueError, KeyError, TypeError):
        return settings
    defaults = config_to_dict(PretrainConfig())
    unnamed = {key for key, value in settings.items() if key not in recorded and value == defaults.get(key)}
    settings = {key: value for key, value in settings.items() if key not in unnamed}
    if settings.get("init_from") != recorded.get("init_from") and same_sorter_source(
        settings.get("init_from"), recorded.get("init_from")
    ):
        settings["init_from"] = recorded["init_from"]  # ./runs/a/ and runs/a/sorter.pt for runs/a
    given, started_with = (
        {key: where.get(key, defaults[key]) for key in ("architecture", "sorter", "init_from")}
        for where in (settings, recorded)
    )
    if given != started_with and given["init_from"] is None and _same_fresh_sorter(given, started_with):
        # The record's spelling of the same sorter (none where the record leaves it out).
        if "sorter" in recorded:
            settings["sorter"] = recorded["sorter"]
        else:
            settings.pop("sorter", None)
    return {**settings, "lengths": recorded["lengths"]} if same else settings


def _same_fresh_sorter(given: dict[str, Any], started_with: dict[str, Any]) -> bool:
    """Whether two ``architecture`` and ``sorter`` settings build the same fresh sorter (``sorter``
    entries that spell out a default make no difference); built without memory, on the meta device."""
    if given["architecture"] != started_with["architecture"] or started_with["init_from"] is not None:
        return False
    try:
        with torch.device("meta"):
            built = [build_sorter(where["architecture"], **where["sorter"]).config() for where in (given, started_with)]
        return bool(built[0] == built[1])
    except Exception:  # a sorter that cannot be built so (one of the user's): the run's settings decide
        return False


def _no_training_checkpoint_in(folder: Path) -> str:
    """Why the folder ``folder`` has no ``checkpoints/last.ckpt`` to turn into a sorter, and what
    to do instead."""
    if recorded_command(folder) is None:
        return (
            f"{folder} is a folder, neither a training checkpoint nor a pretraining run folder (no readable "
            f"{RUN_RECORD}): give a run folder of `sodeep pretrain` or its checkpoints/last.ckpt"
        )
    try:
        check_not_in_use(folder, "export it once its first checkpoint is written")
    except ValueError as running:
        return f"no training checkpoint in {folder} yet, which {str(running).removeprefix(f'{folder} ')}"
    aside = folder / PREVIOUS_RUN
    if (aside / RUN_SORTER).is_file() or (aside / "checkpoints" / "last.ckpt").is_file():
        return (
            f"no training checkpoint in {folder}: an --overwrite was stopped before training, and the run it "
            f"replaces is in {aside} (the next pretraining in {folder} puts it back); export or load {aside}, "
            "or run the pretraining again"
        )
    if (folder / RUN_SORTER).is_file():
        return (
            f"no training checkpoint in {folder}, whose run has finished: its sorter is {folder / RUN_SORTER} "
            "(load or evaluate it as it is)"
        )
    return (
        f"no training checkpoint in {folder}: its pretraining run stopped before its first checkpoint; "
        "run its pretraining again"
    )


def sorter_from_training_checkpoint(path: str | os.PathLike, *, trainable: bool = False) -> Sorter:
    """Rebuild the sorter from a Lightning checkpoint written by :class:`SorterPretraining`, or
    from the last checkpoint of a pretraining run folder (``path/checkpoints/last.ckpt``); its
    ``checkpoint_metadata`` gives the step it was saved at (``step``, of ``of_steps``) and the
    training settings it recorded (``training``).  As :func:`~sodeep.checkpoints.load_sorter`,
    frozen and in eval mode; ``trainable=True`` returns it in train mode with gradients."""
    if not isinstance(trainable, bool):
        raise TypeError(f"trainable must be True or False, got {trainable!r}")
    path = Path(path)
    if path.is_dir():
        check_not_being_cleared(path)
        check_pretraining_folder(path)
    if path.is_dir() and (path / "checkpoints" / "last.ckpt").is_file():
        path = path / "checkpoints" / "last.ckpt"
    if path.is_dir():
        raise FileNotFoundError(_no_training_checkpoint_in(path))
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    payload = read_weights_only(path)
    hyperparameters = payload.get("hyper_parameters", {}) if isinstance(payload, dict) else {}
    if "architecture" not in hyperparameters or "state_dict" not in payload:
        if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is a sorter checkpoint already: it needs no export")
        raise CheckpointError(
            f"{path} is not a sodeep pretraining checkpoint (no sorter architecture in its hyperparameters); "
            "only the checkpoints of a pretraining run (`sodeep pretrain`, pretrain()) export to sorters"
        )
    sorter = build_sorter(hyperparameters["architecture"], **hyperparameters["sorter_config"])
    prefix = "sorter."
    try:
        sorter.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match its sorter architecture: {error}") from error
    total = hyperparameters.get("total_steps")
    # How it was trained: the optimisation's settings and the data stream's, as the checkpoint
    # recorded them (the sorter's own are in its config).
    stream = payload.get(SequenceDataModule.__qualname__, {}).get("stream", {})
    training = {
        key: value
        for key, value in {**hyperparameters, **(stream if isinstance(stream, dict) else {})}.items()
        if key not in ("architecture", "sorter_config")
    }
    try:
        json.dumps(training)
    except (TypeError, ValueError):
        training = {}
    sorter.checkpoint_metadata = {"step": payload.get("global_step"), "of_steps": total, "training": training}
    sorter.loaded_to_fine_tune = trainable  # a rank loss given it warns that it freezes it
    return sorter.train().requires_grad_(True) if trainable else sorter.eval().requires_grad_(False)


def _init_from_file(init_from: str) -> Path:
    """The sorter file ``init_from`` names: itself, or the ``sorter.pt`` of a run folder."""
    source = Path(init_from)
    return run_folder_sorter(source) if source.is_dir() else source


def _initial_sorter(config: PretrainConfig, *, resumable: bool) -> Sorter:
    """The sorter the run starts from: fresh weights of ``config.architecture``, or the sorter
    ``config.init_from`` holds, trainable, with the entries of ``config.sorter`` that
    :func:`~sodeep.checkpoints.load_sorter` may replace.  A run that resumes from its checkpoint
    is rebuilt from it: its weights come from there, and the ``init_from`` file may since have
    changed or gone."""
    if config.init_from is None:
        return build_sorter(config.architecture, **config.sorter)
    source = Path(config.init_from)
    if resumable:
        try:
            return sorter_from_training_checkpoint(Path(config.out) / "checkpoints" / "last.ckpt", trainable=True)
        except (CheckpointError, ValueError, OSError, RuntimeError):
            if not source.exists():  # the folder's checks name what is wrong with its checkpoint
                return build_sorter(config.architecture, **config.sorter)
    try:
        sorter = load_sorter(source, trainable=True, **config.sorter)
    except (CheckpointError, ValueError, TypeError) as error:
        raise ValueError(f"init_from: {error}") from None
    if sorter.architecture != config.architecture:
        raise ValueError(
            f"init_from: {source} holds a sorter of architecture {sorter.architecture!r}, not "
            f"{config.architecture!r}; give architecture={sorter.architecture!r}"
        )
    return sorter


@releasing_run_folders
def pretrain(config: PretrainConfig | None = None, *, resume: bool = False, overwrite: bool = False) -> Sorter:
    """Pretrain a sorter with ``config`` and write its run folder ``config.out``.

    The folder gets ``run.json`` (the settings; a folder holds one run), ``checkpoints/last.ckpt``
    (written atomically every ``checkpoint_every`` steps and at the last), ``csv/metrics.csv``, an
    offline W&B run under ``wandb/`` (unless ``config.wandb`` says otherwise), the sorter checkpoint
    ``sorter.pt`` and ``pretrain_summary.json``.  ``resume=True`` continues the run the folder holds from its
    last checkpoint, with the exact data stream of an uninterrupted run, the same CSV and the same
    W&B run; ``overwrite=True`` clears the folder first.  On SIGINT or SIGTERM the run saves its
    checkpoint and raises :class:`sodeep.run_folder.RunInterrupted`.  Validation runs every
    ``validation_every`` steps and at the last step, on fixed held-out sequences of every family at
    the lengths of :func:`held_out_lengths` (the shortest and longest trained n among them), logged
    per family (``val_family/...``) and per n (``val_n/...``).

    Every setting, and whether the folder may be used (:func:`sodeep.run_folder.claim_run_folder`),
    is checked (``ValueError``, one line) before anything is written.  The run seeds Python, NumPy
    and torch for itself, and computes in float32 whatever torch's default dtype; the caller's
    random state, default dtype, and the rest of the process state a run sets
    (:func:`sodeep.process_state.caller_state_kept`), is as it was when the call returns or raises.

    With ``config.devices``, ``strategy`` and ``num_nodes`` the run trains on several processes
    (DDP, docs/scaling.md): every process calls this function, each draws its own share of the
    data stream, and only rank 0 claims and writes the run folder.  The process group is destroyed
    when the fit ends, normally or not.

    Returns:
        The trained sorter, on the CPU, in eval mode and frozen, as :func:`sodeep.load_sorter`
        returns it (``sorter.train().requires_grad_(True)`` to fine-tune it).

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> config = PretrainConfig(steps=2, batch_size=4, lengths="2-8", sorter={"capacity": 8},
        ...                         validation_every=2, validation_sequences=2, out=out, wandb="disabled")
        >>> pretrain(config).max_length
        8
    """
    with caller_state_kept():
        return _pretrain(config, resume=resume, overwrite=overwrite)


def _pretrain(config: PretrainConfig | None, *, resume: bool, overwrite: bool) -> Sorter:
    config = PretrainConfig() if config is None else config
    if not isinstance(config, PretrainConfig):
        raise TypeError(
            f"config must be a PretrainConfig, e.g. PretrainConfig(**settings), got {type(config).__name__}"
        )
    config.validate()
    out = Path(config.out)
    last = out / "checkpoints" / "last.ckpt"
    quiet_lightning()
    stop, replaced = StopOnSignal(last), DropTheReplacedRun(last)
    # Built first, because it knows this process's rank (from the launcher's environment); it
    # starts no process and writes nothing until fit.
    trainer = _make_trainer(config, out, stop, replaced)
    leader = trainer.is_global_zero
    if leader:  # before anything reads the folder
        restore_a_killed_replacement(out, saved=holds_a_checkpoint)
    mode, chosen_by = run_wandb_mode(config.wandb, config.out, resume=resume and not overwrite)
    check_wandb_login(mode, chosen_by=chosen_by)
    mode_change = wandb_mode_change(config.out, mode, chosen_by) if resume and not overwrite else None
    config = dataclasses.replace(config, wandb=mode)  # recorded as the mode the run takes
    lengths = config.length_list()
    settings = _settings_as_recorded(config_to_dict(config), out / RUN_RECORD)
    # Built before the output folder is read or touched: a wrong architecture or capacity is named as
    # such, and leaves nothing behind.  The seed covers the initial weights too.
    L.seed_everything(config.seed, workers=True, verbose=False)
    sorter = _initial_sorter(config, resumable=resume and not overwrite and last.is_file())
    # The file a new run starts from, by its bytes: a resume needs it no more, and keeps the record's.
    init_digest = None if resume or config.init_from is None else file_digest(_init_from_file(config.init_from))
    if sorter.min_length == sorter.max_length and set(lengths) != {sorter.max_length}:
        raise ValueError(
            f"sorter {config.architecture!r} takes n = {sorter.max_length} only, not lengths "
            f"{lengths_summary(lengths)}: set lengths to {sorter.max_length}"
        )
    if sorter.max_length is not None and max(lengths) > sorter.max_length:
        settable = "capacity" in sorter.config() and max(lengths) <= MAX_LENGTH
        raise ValueError(
            f"lengths go up to {max(lengths)} but sorter {config.architecture!r} takes n <= {sorter.max_length}: "
            f"set lengths within {sorter.min_length}-{sorter.max_length}"
            + (f", or the sorter's capacity to {max(lengths)} or more (at most {MAX_LENGTH})" if settable else "")
        )
    if min(lengths) < sorter.min_length:
        raise ValueError(
            f"lengths start at {min(lengths)} but sorter {config.architecture!r} takes n >= {sorter.min_length}"
        )
    if not any(True for _ in sorter.parameters()):
        learned = [name for name, cls in SORTERS.items() if _has_weights_when_built(cls)]
        raise ValueError(
            f"sorter {config.architecture!r} has no weights to train: it is analytic, used as it is; "
            f"pretrain one of {', '.join(map(repr, learned))}"
        )
    if config.strategy == "ddp_find_unused_parameters_false":
        unused = weights_left_out_of_the_loss(sorter, min(lengths))
        if unused:
            raise ValueError(
                f"strategy 'ddp_find_unused_parameters_false' needs every weight in the loss, and sorter "
                f"{config.architecture!r} leaves out {', '.join(unused[:3])}; use strategy 'ddp' (sodeep then lets "
                "DDP look for such weights)"
            )
    # A finished run (its sorter and summary) has nothing to train, with or without its checkpoint.
    done = run_finished(out, config.steps)
    finished = resume and not overwrite and done
    replacing, record = False, None
    if leader:
        never_saved = _started_but_never_saved(out)
        if not resume and never_saved:
            overwrite = True  # nothing was trained there yet: starting again loses nothing
        # The run this one replaces stays, set aside, until the new one saves its first checkpoint.
        replacing = overwrite and not never_saved and holds_files_besides_its_lock(out)
        record = claim_run_folder(
            out,
            "pretrain",
            settings,
            resume=resume,
            overwrite=overwrite,
            ignored=RESUMABLE_WITH,
            resume_problem=None if overwrite or done else _checkpoint_problem(last),
            finished=done,
        )
        if init_digest is not None:
            record["init_from_sha256"] = init_digest
        if resume and not overwrite and never_saved and not finished_steps(out):
            # The run stopped before its first checkpoint (killed, say): nothing to continue, and
            # nothing lost by starting it, as a command that always passes --resume expects.
            print(f"resuming {out} from step 0 of {config.steps}: it stopped before saving any", file=sys.stderr)
            overwrite = True
        elif resume and not overwrite and not last.is_file() and not finished:
            why = (
                f"holds a run that finished ({finished_steps(out)} steps) but lost its {RUN_SORTER} and checkpoint"
                if finished_steps(out)
                else "has no checkpoint (the run stopped before its first one, or it was deleted)"
            )
            raise ValueError(f"resume=True: {out} {why}; run with overwrite=True instead of resume=True to start again")
    expected = {
        "architecture": sorter.architecture,
        "sorter_config": sorter.config(),
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "warmup_steps": config.warmup_steps,
        "total_steps": config.steps,
    }
    validation_lengths = held_out_lengths(lengths, sorter.min_length, sorter.max_length)
    data = SequenceDataModule(
        batch_size=config.batch_size,
        lengths=lengths,
        seed=config.seed,
        validation_lengths=validation_lengths,
        validation_sequences=config.validation_sequences,
        families=config.family_list(),
        affine_probability=config.affine_probability,
        data_workers=config.data_workers,
    )
    if finished:
        return load_sorter(out / RUN_SORTER)  # nothing to train, nothing rewritten, the checkpoint unread
    resume_step = None
    if resume and not overwrite and last.is_file():
        resume_step = _checkpoint_step(last, expected, data.stream_settings())
    environment = contextlib.ExitStack()  # W&B's variables, as they were once the run ends
    if leader:
        if mode_change is not None and resume_step is not None:
            print(mode_change, file=sys.stderr)
        replaced.previous_run = set_aside_previous_run(out, replacing)
        start_run_folder(out, record, overwrite=overwrite and not replacing)
    try:
        return _train(config, trainer, stop, replaced, out, record, settings, data, sorter, resume_step, environment)
    finally:
        replaced.settle()  # the previous run goes once the new one has a checkpoint, else it is back


def _train(
    config: PretrainConfig,
    trainer: L.Trainer,
    stop: StopOnSignal,
    replaced: DropTheReplacedRun,
    out: Path,
    record: dict[str, Any] | None,
    settings: dict[str, Any],
    data: SequenceDataModule,
    sorter: Sorter,
    resume_step: int | None,
    environment: contextlib.ExitStack,
) -> Sorter:
    """The part of :func:`pretrain` from the claimed folder on: loggers, training, results."""
    leader = trainer.is_global_zero
    last = out / "checkpoints" / "last.ckpt"
    if leader:
        if config.wandb != "disabled":
            environment.enter_context(wandb_environment(config.wandb, out))
        trainer.loggers = make_loggers(
            out,
            config.wandb,
            out.name,
            settings,
            run_id=record["run_id"],
            resume_step=resume_step,
            log_every=LOG_EVERY_STEPS,
            last_step=config.steps - 1,
        )
        if resume_step is not None:
            print(f"resuming {out} from step {resume_step} of {config.steps}", file=sys.stderr, flush=True)
    module = SorterPretraining(
        sorter,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        total_steps=config.steps,
        families=config.family_list(),
    )
    try:
        with (
            threads_beside(config.data_workers),
            stop_signals_outside_training_are_interrupts(trainer, before_exit=replaced.put_back),
            interrupts_in_finalizers_kept() as stop.kept,
        ):
            module.start_clock()
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume_step is not None else None)
            if stop.stopped_at is None and not any(key.startswith("val/") for key in trainer.callback_metrics):
                # Resumed from a checkpoint of the last step (its sorter not yet written): nothing
                # was trained, and the summary still needs the validation of those weights.  Where
                # the log holds that validation already, it is not logged twice.
                loggers = trainer.loggers
                if _logs_validation_at(out, config.steps - 1):
                    trainer.loggers = []
                try:
                    trainer.validate(module, datamodule=data, verbose=False)
                finally:
                    trainer.loggers = loggers
        if stop.kept and stop.stopped_at is None:  # a Ctrl-C as the fit closed its data loaders, say
            raise stop.kept[0]
    except KeyboardInterrupt:
        if last.exists():  # stopped after training had saved: --resume continues (or finishes) it from there
            raise RunInterrupted(
                int(read_weights_only(last).get("global_step", trainer.global_step)), RESUME_FROM_PYTHON
            ) from None
        raise
    except (RuntimeError, TypeError) as error:  # a data worker killed (the out-of-memory killer, a stray kill)
        ended = _data_worker_ended(error)
        if ended is None:
            raise
        reason = str(ended).splitlines()[0].strip()
        if last.exists():
            saved = int(read_weights_only(last).get("global_step", trainer.global_step))
            raise RunInterrupted(f"step {saved}, as a data worker ended ({reason})", RESUME_FROM_PYTHON) from None
        raise ValueError(
            f"a data worker ended before the first checkpoint ({reason}); add overwrite=True to start again"
        ) from None
    finally:  # a failed run too: the next run in this process must not log into its W&B run
        data.close()
        _finish_loggers(trainer)
        environment.close()
        release_process_group()
    if stop.stopped_at is not None:
        raise RunInterrupted(stop.stopped_at, RESUME_FROM_PYTHON)
    if not all(torch.isfinite(parameter).all() for parameter in module.sorter.parameters()):
        raise ValueError(module.diverged(f"the sorter's weights are not finite after step {trainer.global_step}"))
    trained = module.sorter.cpu().eval().requires_grad_(False)
    if leader:
        _write_results(
            trained,
            trainer,
            out,
            settings,
            config,
            resumed=resume_step is not None,
            training_seconds=module.training_seconds(),
            init_digest=record.get("init_from_sha256"),
        )
    return trained


#: Steps between two readings of the training loss (logging, and the check that it is finite).
LOG_EVERY_STEPS = 10

#: Settings a run may be resumed with other values of: where it trains, not what it learns.
#: Resumed on another number of processes, the run continues the same stream of batches, taken
#: ``world_size`` at a time from then on.
RESUMABLE_WITH = ("out", "wandb", "data_workers", "accelerator", "devices", "strategy", "num_nodes")


def saved_step_of_this_run(config: PretrainConfig, since: float | None = None) -> int | None:
    """The step of the checkpoint that ``config.out`` holds for a run of ``config``'s settings
    (those of :data:`RESUMABLE_WITH` aside), so that ``resume=True`` continues it; with ``since``
    (seconds since the epoch), only a checkpoint written since then.  ``None`` where the folder
    holds another run, no run, or no readable checkpoint."""
    out = Path(config.out)
    last = out / "checkpoints" / "last.ckpt"
    try:
        record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
        recorded = record["config"]
        written = last.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None
    settings = _settings_as_recorded(config_to_dict(config), out / RUN_RECORD)
    same = (
        isinstance(recorded, dict)
        and record.get("command") == "pretrain"
        and not differing_settings(recorded, settings, RESUMABLE_WITH)
    )
    if not same or (since is not None and written < since):
        return None
    try:
        return int(read_weights_only(last)["global_step"])
    except Exception:  # unreadable, or not a checkpoint that says its step: nothing to resume from
        return None


#: PyTorch's DataLoader warning for more workers than cores (a ``warnings`` message pattern).
TORCH_TOO_MANY_WORKERS = r"This DataLoader will create \d+ worker processes"


@contextlib.contextmanager
def threads_beside(data_workers: int) -> Iterator[None]:
    """Within the block, PyTorch uses at most one thread per core that ``data_workers`` processes
    leave free (at least one): a data worker and a training thread on one core slow each other
    more than the thread speeds the step.  The thread count is restored afterwards.  Several
    workers that leave no core to the training get a :class:`~sodeep.runs.SetupWarning` (once per
    machine in a distributed run; PyTorch's own warnings about more workers than cores, which say
    the same, are silenced within the block): one keeps a sorter's step fed."""
    before = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        if data_workers:
            cores = available_cores()
            if data_workers > 1 and data_workers >= cores:
                if os.environ.get("LOCAL_RANK", "0") == "0":
                    warnings.warn(
                        f"data_workers={data_workers} leaves none of the {cores} CPU core{'s' * (cores != 1)} "
                        f"this process may use to the training, and processes sharing a core slow each other; "
                        f"use data_workers={cores - 1} (0 makes the batches in the training process)",
                        SetupWarning,
                        stacklevel=3,
                    )
                stack.enter_context(warnings.catch_warnings())
                warnings.filterwarnings("ignore", message=TORCH_TOO_MANY_WORKERS, category=UserWarning)
            torch.set_num_threads(max(1, min(before, cores - data_workers)))
        try:
            yield
        finally:
            torch.set_num_threads(before)


def several_processes(accelerator: str, devices: Any, num_nodes: int, **_: Any) -> bool:
    """Whether Lightning will train these ``Trainer`` settings in more than one process."""
    if num_nodes > 1:
        return True
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    text = str(devices).strip()
    if text in ("auto", "-1"):  # every device: several where there are several GPUs
        return accelerator != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() > 1
    if "," in text:
        return len([index for index in text.split(",") if index.strip()]) > 1
    return text.isdigit() and int(text) > 1


class FinishAtTheLastStep(L.Callback):
    """At a run's last step, whatever ``validation_every`` and ``checkpoint_every``: validate
    (Lightning validates when it is asked to stop) and save ``checkpoint``, so that a finished
    run's checkpoint, sorter and summary all hold its final weights and their validation."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = Path(checkpoint)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int) -> None:
        if trainer.global_step >= trainer.max_steps and not trainer.should_stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, module: Any) -> None:
        if trainer.global_step >= trainer.max_steps:
            trainer.save_checkpoint(self.checkpoint)


class DropTheReplacedRun(L.Callback):
    """Where ``--overwrite`` set the folder's previous run aside (``previous_run``, set once the
    folder is claimed): delete it once the new run has saved its first checkpoint (``checkpoint``
    exists), which a resume continues.  Until then a stop or a failure puts the previous run
    back (:meth:`settle`)."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.previous_run: Path | None = None

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int) -> None:
        if self.previous_run is not None and self.checkpoint.is_file():
            self.drop()

    def drop(self) -> None:
        """Delete the previous run, where it is still set aside."""
        if self.previous_run is not None:
            drop_previous_run(self.previous_run)
            self.previous_run = None

    def put_back(self) -> None:
        """Put the previous run back into its folder, where it is still set aside."""
        if self.previous_run is not None:
            put_back_previous_run(self.previous_run.parent, self.previous_run)
            self.previous_run = None

    def settle(self) -> None:
        """As the run ends: the previous run goes where the new one saved a checkpoint, else it
        comes back."""
        if self.checkpoint.is_file():
            self.drop()
        else:
            self.put_back()


def weights_left_out_of_the_loss(sorter: Sorter, length: int) -> list[str]:
    """Names of the sorter's weights that get no gradient from an L1 loss on its ranks of a
    ``(2, length)`` batch (the global random state untouched, gradients cleared after)."""
    scores = torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    was_training = sorter.training
    sorter.train()
    try:
        sorter(scores).abs().sum().backward()
        return [name for name, weight in sorter.named_parameters() if weight.requires_grad and weight.grad is None]
    finally:
        sorter.zero_grad(set_to_none=True)
        sorter.train(was_training)


def _make_trainer(config: PretrainConfig, out: Path, stop: StopOnSignal, replaced: DropTheReplacedRun) -> L.Trainer:
    """The ``Trainer`` of a pretraining run, without loggers (rank 0 gets them once it has
    claimed the run folder)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    progress = progress_settings(every=100)
    options = config.trainer_options()
    asked_for = dict(options)
    if options["strategy"] == "ddp" or (options["strategy"] == "auto" and several_processes(**options)):
        # A sorter may leave weights out of its graph (the conv sorter of depth 0 skips its head's
        # bias), which plain DDP (Lightning's choice for several devices) refuses; looking for them
        # each step costs little at these sizes.
        options["strategy"] = "ddp_find_unused_parameters_true"
    return make_trainer(
        asked_for=asked_for,
        max_steps=config.steps,
        val_check_interval=min(config.validation_every, config.steps),
        check_val_every_n_epoch=None,
        logger=False,
        callbacks=[
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                save_last=True,
                every_n_train_steps=min(config.checkpoint_every, config.steps),
                save_top_k=0,
                # last.ckpt may have been written by StopOnSignal: overwrite it, never last-v1.ckpt
                enable_version_counter=False,
            ),
            # Before `stop`, whose on_train_end puts back the handlers it replaced: a signal during
            # the last checkpoint's save is then still only a request, and the run finishes.
            FinishAtTheLastStep(out / "checkpoints" / "last.ckpt"),
            stop,
            # After `stop`: a signal while the replaced run is deleted is a request to stop.
            replaced,
            *progress["callbacks"],
        ],
        enable_progress_bar=progress["enable_progress_bar"],
        plugins=[AtomicCheckpointIO()],
        # The training stream is shared out by SequenceDataModule; validation takes every cell.
        use_distributed_sampler=False,
        log_every_n_steps=LOG_EVERY_STEPS,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **options,
    )


def _write_results(
    trained: Sorter,
    trainer: L.Trainer,
    out: Path,
    settings: dict[str, Any],
    config: PretrainConfig,
    *,
    resumed: bool,
    training_seconds: float,
    init_digest: str | None = None,
) -> None:
    """Write ``sorter.pt`` and ``pretrain_summary.json`` (rank 0's work).  A resume that trained
    nothing (the run had finished, and lost its sorter) keeps the run's summary as it was.
    ``training_seconds``: those of every part of the run; ``init_digest``: the SHA-256 of the
    ``init_from`` file when the run started."""
    kept = run_summary_at(out, int(trainer.global_step)) if resumed else None
    metadata = kept or {
        "command": invoked_command(),
        "config": settings,
        **({"init_from_sha256": init_digest} if init_digest else {}),
        "steps": int(trainer.global_step),
        "training_seconds": round(training_seconds, 1),
        "resumed": resumed,
        "world_size": int(trainer.world_size),
        "sequences_per_step": config.batch_size * int(trainer.world_size),
        # The last validation's means over the held-out cells, under the names they are logged with.
        "validation": {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")},
    }
    if (out / RUN_SORTER).is_file() and not _readable_sorter(out / RUN_SORTER):
        (out / RUN_SORTER).unlink()  # the run's own file, damaged: written again below
    write_sorter_checkpoint(trained, out / RUN_SORTER, metadata)
    if kept is None:
        atomic_write_json(out / "pretrain_summary.json", metadata, indent=2)


def run_summary_at(out: Path, step: int) -> dict[str, Any] | None:
    """The run's ``pretrain_summary.json`` where it was written at ``step``, or ``None``."""
    try:
        summary = json.loads((out / "pretrain_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("steps") == step else None


def _logs_validation_at(out: Path, step: int) -> bool:
    """Whether the run's ``csv/metrics.csv`` holds a validation row logged at ``step``."""
    try:
        with open(out / "csv" / "metrics.csv", newline="", encoding="utf-8") as stream:
            return any(
                row.get("step") == str(step)
                and any(value for key, value in row.items() if key and key.startswith("val"))
                for row in csv.DictReader(stream)
            )
    except (OSError, ValueError, csv.Error):
        return False


def run_finished(out: Path, steps: int) -> bool:
    """Whether the run in ``out`` finished its ``steps`` and holds its sorter, readable (a damaged
    one is written again from the run's last checkpoint by a resume)."""
    return finished_steps(out) >= steps and _readable_sorter(out / RUN_SORTER)


def _readable_sorter(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        load_sorter(path)
    except (CheckpointError, ValueError):
        return False
    return True


def finished_steps(out: Path) -> int:
    """The steps the run in ``out`` finished (its summary; its last checkpoint may be older), or 0."""
    try:
        return int(json.loads((out / "pretrain_summary.json").read_text(encoding="utf-8"))["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _checkpoint_problem(last: Path) -> str | None:
    """Why the run's checkpoint ``last`` cannot be read (damaged, truncated), or ``None`` where it
    can or where there is none."""
    if not last.is_file():
        return None
    try:
        read_weights_only(last)
    except CheckpointError as error:
        return str(error)
    return None


def holds_a_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a pretraining checkpoint (``checkpoints/last.ckpt``)."""
    return (out / "checkpoints" / "last.ckpt").is_file()


def _started_but_never_saved(out: Path) -> bool:
    """Whether ``out`` holds a pretraining run, of any settings, stopped before its first
    checkpoint (no weights): a run that was told "interrupted before this command saved anything"."""
    try:
        record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    nothing_saved = not (out / "checkpoints" / "last.ckpt").exists() and not (out / RUN_SORTER).exists()
    return nothing_saved and isinstance(record, dict) and record.get("command") == "pretrain"


def _checkpoint_step(path: Path, expected: dict[str, Any], stream: dict[str, Any]) -> int:
    """The global step a Lightning checkpoint was saved at; ``ValueError`` for a file that is not
    a readable pretraining checkpoint, or one whose hyper-parameters differ from ``expected`` or
    whose training stream differs from ``stream`` (a checkpoint copied in from another run)."""
    try:
        payload = read_weights_only(path)
    except CheckpointError as error:
        raise ValueError(
            f"resume=True: {error}; run with overwrite=True instead of resume=True to start the run again"
        ) from None
    if (
        not isinstance(payload, dict)
        or "global_step" not in payload
        or "sorter_config" not in payload.get("hyper_parameters", {})
    ):
        raise ValueError(
            f"resume=True: {path} is not a sodeep pretraining checkpoint; run with overwrite=True instead of resume=True "
            "to start again"
        )
    saved = dict(payload["hyper_parameters"])
    saved_stream = payload.get(SequenceDataModule.__qualname__, {}).get("stream")
    if isinstance(saved_stream, dict):
        saved |= saved_stream
    expected = expected | stream
    differing = [key for key, value in expected.items() if key in saved and saved[key] != value]
    if differing:
        changes = ", ".join(
            f"{key}: {describe_change(saved[key], expected[key])}"
            if isinstance(saved[key], dict)
            else f"{key}: {_setting_text(saved[key])} -> {_setting_text(expected[key])}"
            for key in differing
        )
        raise ValueError(
            f"resume=True: {path} was saved by a run of other settings ({changes}), not this folder's run; "
            "run with overwrite=True instead of resume=True to start again"
        )
    return int(payload["global_step"])


def _setting_text(value: Any) -> str:
    """``repr`` of a setting, a long list cut to its ends: ``[2, 3, ..., 256] (255 values)``."""
    if isinstance(value, list) and len(value) > 6:
        return f"[{value[0]!r}, {value[1]!r}, ..., {value[-1]!r}] ({len(value)} values)"
    return repr(value)


def _finish_loggers(trainer: L.Trainer) -> None:
    """Close the W&B run, if one started, so that the next run in this process starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:  # reading .experiment starts one
            logger.experiment.finish()


def invoked_command() -> str:
    """The command line that runs this process, as a shell would take it again: ``sodeep pretrain
    ...``, ``python -m sodeep pretrain ...``, or a script's name and arguments.

    Example:
        >>> import sys
        >>> saved, sys.argv = sys.argv, ["/usr/lib/python3/site-packages/sodeep/__main__.py", "pretrain", "--out", "my runs"]
        >>> invoked_command()
        "python -m sodeep pretrain --out 'my runs'"
        >>> sys.argv = saved
    """
    import shlex

    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program == "__main__.py":
        program = f"python -m {Path(sys.argv[0]).parent.name}"
    return " ".join([program, shlex.join(sys.argv[1:])]).strip()


def _has_weights_when_built(cls: type) -> bool:
    """Whether a sorter class built with its defaults has weights, found without memory (on the
    meta device); a class that needs settings to be built is not counted."""
    try:
        with torch.device("meta"):
            return any(True for _ in cls().parameters())
    except (TypeError, ValueError):
        return False
