"""Lightning and W&B plumbing shared by every training command (sorter pretraining, applications).

Imported only by training code: ``import sodeep`` does not load Lightning or W&B.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sodeep.files import atomic_torch_save

#: W&B modes a command accepts: ``offline`` (the default: nothing is sent, no account needed),
#: ``online`` and ``disabled``.
WANDB_MODES = ("offline", "online", "disabled")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: never half-written."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


def configure_wandb_environment(mode: str, directory: Path) -> None:
    """Keep W&B local unless asked otherwise (nothing is sent, no account is needed), with all of
    its files under ``directory``."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
    os.environ.setdefault("WANDB_MODE", mode)
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    directory.mkdir(parents=True, exist_ok=True)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ.setdefault(variable, str(directory))


def make_loggers(out: Path, mode: str, name: str, config: dict[str, Any]) -> list:
    """A CSV logger (``out/csv/metrics.csv``) and, unless ``mode`` is ``disabled``, a W&B logger
    whose files stay under ``out/wandb``."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers: list = [CSVLogger(save_dir=str(out), name="csv", version="")]
    if mode != "disabled":
        configure_wandb_environment(mode, out / "wandb")
        loggers.append(
            WandbLogger(
                project="sodeep", name=name, save_dir=str(out / "wandb"), offline=mode == "offline", config=config
            )
        )
    return loggers


def start_wandb_run(mode: str, out: Path, name: str, config: dict[str, Any]) -> Any:
    """One W&B run for a whole command (offline by default: nothing is sent); ``None`` if disabled."""
    if mode == "disabled":
        return None
    configure_wandb_environment(mode, out / "wandb")
    import wandb

    return wandb.init(project="sodeep", name=name, dir=str(out / "wandb"), mode=mode, config=config)


def quiet_lightning() -> None:
    """Keep Lightning's per-fit banners (accelerator, tips, adverts) out of the output."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


class ProgressLines(Callback):
    """A plain progress line on stderr every ``every`` training steps and at the end: what a log
    file gets instead of a progress bar."""

    def __init__(self, every: int = 100) -> None:
        self.every = max(1, int(every))

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            metrics = {key: value for key, value in trainer.progress_bar_metrics.items() if key != "v_num"}
            shown = ", ".join(f"{key}={float(value):.4g}" for key, value in metrics.items())
            total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
            print(f"step {step}{total}" + (f": {shown}" if shown else ""), file=sys.stderr, flush=True)


def progress_settings(every: int = 100) -> dict[str, Any]:
    """``Trainer`` keyword arguments for progress: Lightning's bar on a terminal, else
    :class:`ProgressLines` (a log file gets a line every ``every`` steps, not thousands of bars)."""
    if sys.stderr.isatty():
        return {"enable_progress_bar": True, "callbacks": []}
    return {"enable_progress_bar": False, "callbacks": [ProgressLines(every)]}
