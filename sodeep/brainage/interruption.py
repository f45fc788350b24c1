"""SIGINT and SIGTERM as a clean stop of a brain-age command.

A command runs inside :class:`SignalStop`.  While it prepares data or writes a report, a signal
stops it at once: every file it writes is written atomically, so nothing is left half-written.
Inside a training run (:meth:`SignalStop.deferred`) the signal waits for the end of the current
training or validation step (:class:`StopAtStepEnd`); the run then resumes from its last epoch
checkpoint, so the epoch in progress is trained again.  A second signal stops at once.  Either way
the command raises :class:`sodeep.run_folder.RunInterrupted`, which the console script prints as
one line with the command that resumes, exiting with status 130.

Under DDP a signal may reach one process only (``kill`` of the one the command was started as),
while every process must stop at the same point: the processes agree at the end of every training
or validation step, and at the start and end of every deferred block, whether any of them got a
signal.  While their process group is up, a signal between two blocks waits for the next block's
start rather than stopping one process alone.

Example:
    >>> import os, signal
    >>> with SignalStop() as stop:
    ...     stop.where = "the example"
    ...     os.kill(os.getpid(), signal.SIGINT)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sodeep.run_folder.RunInterrupted: interrupted at the example
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.callbacks import Callback

from sodeep.run_folder import RunInterrupted


class SignalStop:
    """Turns SIGINT and SIGTERM into :class:`RunInterrupted` (see the module docstring); the
    previous handlers come back when the ``with`` block ends.  ``where`` names what the command
    is doing, for the message; ``resume`` how a Python caller goes on (:class:`RunInterrupted`)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, resume: str = "") -> None:
        self.where = "the start"
        self.resume = resume
        self.requested = False
        self._deferring = False
        self._closing = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalStop:
        self._previous = self.take_signals()
        return self

    def take_signals(self) -> dict[int, Any]:
        """Make SIGINT and SIGTERM this stop's again; returns the handlers they had.  Python lets
        only the main thread set handlers; elsewhere signals keep theirs."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {number: signal.signal(number, self._handle) for number in self.SIGNALS}

    def __exit__(self, *exception: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame: Any) -> None:
        again = self.requested
        self.requested = True
        if self._closing and not again:
            # (os.write: a print here could interrupt another write to stderr, which would raise.)
            note = (
                f"{signal.Signals(number).name} while closing, with every result written: the command ends as "
                "finished (send it again to stop at once)\n"
            )
            os.write(sys.stderr.fileno(), note.encode())
            return
        # In a run of several processes a signal may reach one of them only: it waits for the next
        # point where they agree (a deferred block's start or end), so that they stop together.
        if again or not (self._deferring or in_process_group()):
            raise RunInterrupted(self.where, self.resume)

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a signal has come."""
        if self.requested:
            raise RunInterrupted(self.where, self.resume)

    @contextmanager
    def closing(self) -> Iterator[None]:
        """Every result is written and the command closes (its W&B run): a first signal is noted
        and let pass, so the command ends as finished; a second stops at once."""
        where, self.where, self._closing = self.where, "closing, with every result written", True
        try:
            yield
        finally:
            self.where, self._closing = where, False

    @contextmanager
    def deferred(self, where: str | None = None) -> Iterator[None]:
        """Hold signals while the block runs (a training run named ``where``, or whatever
        :attr:`where` says); raise at its end if one came, to any process of a DDP run (whose
        processes all leave the block together).  Inside, :class:`StopAtStepEnd` raises at the
        next step's end."""
        self.requested = on_any_process(self.requested)  # the processes enter the block together too
        self.check()
        if where is not None:
            self.where = where
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        self.requested = on_any_process(self.requested)
        if where is not None:
            self.where = f"the end of {where}"
        self.check()


def in_process_group() -> bool:
    """Whether this process is part of a distributed run whose process group is up."""
    import torch.distributed as distributed

    return distributed.is_available() and distributed.is_initialized()


def on_any_process(flag: bool) -> bool:
    """Whether ``flag`` is set in any process of the distributed run this process is part of
    (``flag`` itself when there is none); every process of the run must call it together."""
    import torch
    import torch.distributed as distributed

    if not in_process_group():
        return flag
    on_gpu = distributed.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    value = torch.tensor(int(flag), device=torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu")
    distributed.all_reduce(value, op=distributed.ReduceOp.MAX)
    return bool(value.item())


class StopAtStepEnd(Callback):
    """Raise :class:`RunInterrupted` (``"<where>, epoch <n>"``) at the end of the training or
    validation step during which ``stop`` received a signal, in every process of a DDP run
    alike.  No checkpoint is written: the run's last one is that of its last whole epoch, which
    the processes saved together."""

    def __init__(self, stop: SignalStop) -> None:
        self.stop = stop

    def on_train_start(self, trainer: Any, module: Any) -> None:
        # Lightning installs a SIGTERM handler of its own when the fit starts.  Under DDP it signals
        # the other processes and joins a collective from inside the handler, which hangs the run
        # or ends it with status 0.  The stop's handlers take its place until the fit ends, when
        # Lightning restores the handlers it found: the stop's.
        self.stop.take_signals()

    def _check(self, trainer: Any) -> None:
        # Every process takes the same number of training and validation steps, so they all ask here.
        if trainer.strategy.reduce_boolean_decision(self.stop.requested, all=False):
            self.stop.requested = True
            raise RunInterrupted(f"{self.stop.where}, epoch {trainer.current_epoch + 1}", self.stop.resume)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int) -> None:
        self._check(trainer)

    def on_validation_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_index: int, dataloader_index: int = 0
    ) -> None:
        self._check(trainer)
