"""Lightning plumbing shared by every training command (sorter pretraining, applications):
checkpoints, loggers, signals, trainers.  W&B's set-up is :mod:`sodeep.wandb_setup`.

Imported only by training code: ``import sodeep`` does not load Lightning or W&B.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sodeep.config import SCALE_OUT
from sodeep.files import atomic_torch_save, atomic_write
from sodeep.run_folder import stop_saved
from sodeep.stream_loader import available_cores
from sodeep.wandb_setup import wandb_identity


class SetupWarning(UserWarning):
    """A setting that works but wastes the machine (e.g. more processes than cores); the command
    line prints it as one line, ``sodeep <command>: warning: ...``."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: never half-written."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        atomic_torch_save(checkpoint, path)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept (its rows of steps
    below ``keep_below``: a resumed run logs the later ones again) and appended to.  Training rows
    off the ``log_every`` grid are dropped, but for the run's ``last_step``: Lightning logs the
    step a run stops at, which a run that was not interrupted has only at its end."""

    def __init__(self, log_dir: str, keep_below: int, log_every: int = 1, last_step: int | None = None) -> None:
        self.keep_below = keep_below
        self.log_every = log_every
        self.last_step = last_step
        super().__init__(log_dir=log_dir)

    def _kept(self, row: dict[str, str]) -> bool:
        if not row.get("step") or float(row["step"]) >= self.keep_below:
            return False
        step = int(float(row["step"]))
        on_grid = (step + 1) % self.log_every == 0 or step == self.last_step
        return on_grid or any(value for key, value in row.items() if key and key.startswith("val"))

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as stream:
            reader = csv.DictReader(stream)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if self._kept(row)]

        def write(binary: Any) -> None:
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
            binary.write(text.getvalue().encode("utf-8"))

        atomic_write(self.metrics_file_path, write)
        self.metrics_keys = header


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, given ``resume_step``, continues the run's ``metrics.csv`` instead of
    deleting it (Lightning's own logger starts the file anew)."""

    def __init__(
        self,
        *args: Any,
        resume_step: int | None = None,
        log_every: int = 1,
        last_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step
        self.log_every = log_every
        self.last_step = last_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            if self.resume_step is None:
                self._experiment = ExperimentWriter(log_dir=self.log_dir)
            else:
                self._experiment = _AppendingWriter(
                    self.log_dir, keep_below=self.resume_step, log_every=self.log_every, last_step=self.last_step
                )
        return self._experiment


def make_loggers(
    out: Path,
    mode: str,
    name: str,
    config: dict[str, Any],
    *,
    run_id: str | None = None,
    resume_step: int | None = None,
    log_every: int = 1,
    last_step: int | None = None,
) -> list:
    """A CSV logger (``out/csv/metrics.csv``) and, unless ``mode`` is ``disabled``, a W&B logger
    whose files stay under ``out/wandb`` while its W&B run lasts within :func:`wandb_environment`.
    With ``run_id`` the W&B run keeps that id (a resumed run continues it); with ``resume_step``
    the CSV keeps its rows of earlier steps (those on the trainer's ``log_every`` grid or at the
    run's ``last_step``, and validations)."""
    from lightning.pytorch.loggers import WandbLogger

    loggers: list = [
        ResumableCSVLogger(
            save_dir=str(out),
            name="csv",
            version="",
            resume_step=resume_step,
            log_every=log_every,
            last_step=last_step,
        )
    ]
    if mode != "disabled":  # (the caller sets W&B's variables: wandb_environment)
        identity = {"id": run_id, "resume": "allow"} if run_id else {}
        wandb_logger = WandbLogger(
            **wandb_identity(name),
            save_dir=str(out),
            offline=mode == "offline",
            config=config,
            **identity,
        )
        # Lightning passes anonymous=None to wandb.init, which then warns that the setting is gone.
        getattr(wandb_logger, "_wandb_init", {}).pop("anonymous", None)
        loggers.append(wandb_logger)
    return loggers


class StopOnSignal(Callback):
    """On SIGINT or SIGTERM, finish the current training step, save ``checkpoint`` and stop; the
    caller then raises :class:`RunInterrupted` (see :attr:`stopped_at`).  A validation due after
    that step runs first and is saved with it (a resumed run continues after it); none runs off
    schedule.  A signal during the last step lets the run finish.  A second signal before the
    save (during a validation, say) stops at once with ``KeyboardInterrupt``: the run then resumes
    from its last saved checkpoint.  Signals after the save are let pass (the run is closing down:
    :func:`sodeep.run_folder.stop_saved`).  The previous handlers are restored when the fit ends."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.requested = False
        # Interrupts that Python dropped in finalizers (sodeep.run_folder.interrupts_in_finalizers_kept):
        # each is a request too.
        self.kept: list[KeyboardInterrupt] = []
        self.stopped_at: int | None = None
        self._stopping = False
        self._previous: dict[int, Any] = {}

    def _request(self, number: int, frame: Any) -> None:
        if self.stopped_at is not None:  # saved and stopping: nothing left to cut short
            return
        if self.requested:
            self._restore()
            raise KeyboardInterrupt(f"a second {signal.Signals(number).name}: stopped without saving")
        self.requested = True

    def on_train_start(self, trainer: Any, module: Any) -> None:
        # Installed after Lightning's own signal connector has saved the handlers it restores at
        # teardown, so that ours never outlives the fit.
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._request) for number in self.SIGNALS}

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int) -> None:
        # Under DDP a signal may reach one process only (``kill`` of the launching one), while every
        # process must stop at the same step and take part in saving: any request stops them all.
        requested = trainer.strategy.reduce_boolean_decision(self.requested or bool(self.kept), all=False)
        last_step = 0 < trainer.max_steps <= trainer.global_step  # finishing anyway: validation, checkpoint, results
        if not requested or self._stopping or last_step:
            return
        self._stopping = True
        trainer.should_stop = True
        every = trainer.val_check_batch
        if isinstance(every, int) and trainer.limit_val_batches and trainer.global_step % every == 0:
            return  # Lightning validates on stopping, here on schedule: saved once it is done
        trainer.limit_val_batches = 0  # Lightning would validate on stopping: off schedule, and it delays the stop
        self._save(trainer)

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if self._stopping and self.stopped_at is None:
            self._save(trainer)

    def _save(self, trainer: Any) -> None:
        trainer.save_checkpoint(self.checkpoint)
        for callback in trainer.checkpoint_callbacks:
            # Its last.ckpt at the end of training would replace this one with the state after
            # the step's bookkeeping, which a resume reads as one step more.
            callback.save_last = False
        self.stopped_at = int(trainer.global_step)
        stop_saved()  # a signal from now on would only cut the closing down short

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def on_train_end(self, trainer: Any, module: Any) -> None:
        # Before Lightning's teardown restores the handlers it found (on_fit_end comes after it):
        # restoring ours later would leave Lightning's handler installed once the fit is over.
        self._restore()

    def on_fit_end(self, trainer: Any, module: Any) -> None:
        self._restore()

    def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: Any, module: Any, stage: str) -> None:
        self._restore()


@contextlib.contextmanager
def stop_signals_outside_training_are_interrupts(
    trainer: Any, before_exit: Callable[[], None] | None = None
) -> Iterator[None]:
    """Around ``trainer.fit``: a SIGTERM or Ctrl-C that comes while :class:`StopOnSignal` is not
    installed (before training starts, or after it ends) meets Lightning's own handling, which ends
    the fit with ``SystemExit``: status 0 for SIGTERM (``SIGTERMException``), 1 for Ctrl-C, and no
    message.  Raise ``KeyboardInterrupt`` instead, which the console script reports in one line
    with status 130.  A ``trainer`` of several processes is also interruptible while they join,
    and then stops the processes its launcher started (see :func:`_exit_on_signal_until_joined`),
    after calling ``before_exit``.  The caller's SIGINT and SIGTERM handlers are back in place on
    exit (Lightning ignores Ctrl-C from the interrupt it handles on)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    launcher = getattr(trainer.strategy, "launcher", None)
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = (
        {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    )
    try:
        with _exit_on_signal_until_joined(trainer.world_size, trainer.num_nodes, launcher, before_exit):
            yield
    except SIGTERMException as stopped:
        raise KeyboardInterrupt("SIGTERM outside training") from stopped
    except SystemExit as exited:
        if isinstance(exited.__context__, KeyboardInterrupt):  # Lightning's sys.exit(1) on Ctrl-C
            raise KeyboardInterrupt("Ctrl-C outside training") from exited
        raise
    finally:
        for number, handler in handlers.items():
            if handler is not None and signal.getsignal(number) != handler:
                signal.signal(number, handler)


@contextlib.contextmanager
def _exit_on_signal_until_joined(
    processes: int, nodes: int = 1, launcher: Any = None, before_exit: Callable[[], None] | None = None
) -> Iterator[None]:
    """While a run of several ``processes`` waits for them all to join, torch.distributed blocks
    in C++, where Python's signal handlers never run: Ctrl-C would wait out its 30-minute timeout.
    A thread woken by the signal (``signal.set_wakeup_fd``) calls ``before_exit`` (which puts back
    a run that ``--overwrite`` set aside, say) and ends the process there, with one line and
    status 130; nothing was trained.  The processes that ``launcher`` (Lightning's) started
    from this one get SIGTERM first, which ends them the same way, instead of leaving them waiting
    for the others.  Once the process group is up, signals are left to :class:`StopOnSignal`."""
    if processes <= 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    import torch.distributed

    advice = (
        "Start the command on every machine (docs/scaling.md) or with fewer --num-nodes"
        if nodes > 1
        else "Run the same command again"
    )
    readable, writable = os.pipe()
    os.set_blocking(writable, False)
    previous = signal.set_wakeup_fd(writable, warn_on_full_buffer=False)

    def watch() -> None:
        while os.read(readable, 1):  # b"" once the pipe is closed: the fit is over
            if not torch.distributed.is_initialized():
                if os.environ.get("LOCAL_RANK", "0") == "0":
                    sys.stderr.write(
                        f"sodeep: interrupted while waiting for the run's {processes} processes to join; nothing "
                        f"was trained. {advice}\n"
                    )
                    sys.stderr.flush()
                if launcher is not None and hasattr(launcher, "kill"):
                    launcher.kill(signal.SIGTERM)  # the processes it started, if any
                if before_exit is not None:
                    try:
                        before_exit()
                    except Exception as error:  # the exit goes on; the next command finishes the job
                        sys.stderr.write(f"sodeep: {error}\n")
                os._exit(130)

    watcher = threading.Thread(target=watch, name="sodeep-join-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(writable)
        watcher.join()
        os.close(readable)


def quiet_lightning() -> None:
    """Keep Lightning's per-fit banners (accelerator, tips, adverts) and its own deprecation
    notice about torch's pytree API out of the output, and its note on a moved run folder."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    # A run folder moved or renamed before --resume: its checkpoints go to the folder as it is now.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")


class ProgressLines(Callback):
    """A plain progress line on stderr every ``every`` training steps and at the end: what a log
    file gets instead of a progress bar.  Step lines show the training metrics; each validation
    has a line of its own (a step line printed before a validation is due would show the last one's)."""

    def __init__(self, every: int = 100) -> None:
        self.every = max(1, int(every))

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero:
            return
        if step % self.every == 0 or step == trainer.max_steps:
            metrics = {
                key: value
                for key, value in trainer.progress_bar_metrics.items()
                if key != "v_num" and not key.startswith("val")
            }
            shown = ", ".join(f"{key}={float(value):.4g}" for key, value in metrics.items())
            total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
            print(f"step {step}{total}" + (f": {shown}" if shown else ""), file=sys.stderr, flush=True)

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {key: value for key, value in trainer.callback_metrics.items() if key.startswith("val/")}
        shown = ", ".join(f"{key}={float(value):.6g}" for key, value in sorted(metrics.items()))  # 0.99997, not 1
        print(f"validation at step {trainer.global_step}: {shown}", file=sys.stderr, flush=True)


def progress_settings(every: int = 100) -> dict[str, Any]:
    """``Trainer`` keyword arguments for progress: Lightning's bar on a terminal, else
    :class:`ProgressLines` (a log file gets a line every ``every`` steps, not thousands of bars)."""
    if sys.stderr.isatty():
        return {"enable_progress_bar": True, "callbacks": []}
    return {"enable_progress_bar": False, "callbacks": [ProgressLines(every)]}


def available_accelerators() -> list[str]:
    """Accelerators ``--accelerator`` can name on this machine: ``auto``, ``cpu`` and, where torch
    sees them, ``gpu`` (also ``cuda``) or ``mps``."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["gpu", "cuda"]
    if torch.backends.mps.is_available():
        names += ["gpu", "mps"]
    return list(dict.fromkeys(names))


def make_trainer(*, asked_for: dict[str, Any] | None = None, **settings: Any) -> L.Trainer:
    """Lightning's ``Trainer`` with ``settings``; where it cannot train (an accelerator this
    machine lacks or whose package is missing, devices it does not have, more CPU processes than
    cores) is a one-line ``ValueError`` naming the settings of :data:`sodeep.config.SCALE_OUT`
    that were asked for: those of ``asked_for`` (what the user set, where the command adapted
    them) or else of ``settings``."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.accelerators import CPUAccelerator

    shown = settings if asked_for is None else asked_for
    asked = ", ".join(f"{key}={shown[key]!r}" for key in SCALE_OUT if key in shown)
    try:
        trainer = L.Trainer(**settings)
    except ValueError as error:
        if "invalid accelerator name" in str(error):
            from lightning.pytorch.accelerators import AcceleratorRegistry

            known = ", ".join(sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()}))
            raise ValueError(
                f"cannot train with {asked}: accelerator {settings.get('accelerator')!r} is not one Lightning knows "
                f"({known}; available here: {', '.join(available_accelerators())})"
            ) from None
        if "invalid strategy name" not in str(error):
            raise
        raise ValueError(f"cannot train with {asked}: {_unknown_strategy(str(settings.get('strategy')))}") from None
    # Lightning raises all three for an accelerator or devices it cannot use.
    except (MisconfigurationException, ModuleNotFoundError, TypeError) as error:
        reason = " ".join(str(error).split())
        unavailable = re.search(r"`(\w+)Accelerator` can not run on your system", reason)
        if "No supported gpu backend found" in reason or unavailable:
            kind = unavailable.group(1) if unavailable else "GPU"
            reason = (
                f"this machine has no {kind} that torch can use; drop accelerator= or give accelerator='cpu' "
                f"(available here: {', '.join(available_accelerators())})"
            )
        elif "CPUAccelerator" in reason:  # -1 or indices, which sodeep accepts for GPUs
            reason = (
                "on CPUs, devices must be a count of processes >= 1 or 'auto'; -1 and indices like 0,2 choose "
                "GPUs: give a count, or accelerator='gpu' on a machine with GPUs"
            )
        raise ValueError(f"cannot train with {asked}: {reason}") from None
    launcher = getattr(trainer.strategy, "launcher", None)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if (
        type(launcher).__name__ == "_SubprocessScriptLauncher"
        and not getattr(environment, "creates_processes_externally", True)
        and not program_runs_again()
    ):
        raise ValueError(
            f"cannot train with {asked}: Lightning starts the other processes by running this program again, and a "
            "program given to python -c, on standard input or typed at the prompt cannot be; save it in a file "
            "and run that (or launch it with torchrun)"
        )
    cores = available_cores()
    if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > cores:
        # Each CPU device is a process with its own copy of PyTorch: more than the cores only
        # slow each other (and dozens of them exhaust the memory before the first step).
        raise ValueError(
            f"cannot train with {asked}: {trainer.num_devices} CPU processes on the {cores} "
            f"core{'s' * (cores != 1)} this process may use; use devices={cores} or fewer"
        )
    return trainer


def _unknown_strategy(strategy: str) -> str:
    """Why ``strategy`` is refused: not a name Lightning knows; the names it knows that sodeep runs
    under (those that start their processes inside fit aside), the closest first."""
    import difflib

    from lightning.pytorch.strategies import StrategyRegistry

    from sodeep.config import _IN_FIT_LAUNCHERS

    # Lightning's XLA strategies start their processes inside fit too; single_tpu needs a device.
    known = ["auto"] + [
        name
        for name in sorted(StrategyRegistry.available_strategies())
        if not any(word in name for word in (*_IN_FIT_LAUNCHERS, "xla", "tpu"))
    ]
    close = difflib.get_close_matches(strategy, known, n=1)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    return f"{strategy!r} is not a Lightning strategy; {suggestion}strategies sodeep runs under: {', '.join(known)}"


def program_runs_again() -> bool:
    """Whether this process's program can be started again as it was (a script file, or a module
    run with ``python -m``), as Lightning does to start the other processes of a distributed run;
    not a program given to ``python -c``, on standard input or typed at the prompt."""
    if getattr(sys.modules.get("__main__"), "__spec__", None) is not None:  # python -m module
        return True
    script = sys.argv[0] if sys.argv else ""
    return script not in ("", "-", "-c") and Path(script).is_file()


def global_rank() -> int:
    """This process's rank in a distributed run (0 when it runs alone), as Lightning set it when
    the last ``Trainer`` was built."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0))


def release_process_group() -> None:
    """Destroy torch.distributed's default process group, if one is up.

    Lightning leaves it up after ``fit``.  Destroyed here, it is torn down while every process of
    the run still lives, not by the interpreter's exit, when the others (and rank 0's store) may
    already be gone.
    """
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
