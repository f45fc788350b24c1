"""Batches of a :class:`~sodeep.synthetic.SyntheticSequences` stream made in worker processes while
the model trains.

A worker process makes whole chunks of consecutive batches and writes each chunk into a slot of a
buffer in shared memory, allocated once per iteration; through the DataLoader's queue it sends
only the chunk's number and its batch lengths.  The training process copies each batch out of its
slot when it hands the batch over, so a slot can be written again once its chunk is handed over
(the DataLoader keeps at most ``prefetch_factor`` chunks per worker in flight, and the buffer has
one slot more).  Passing a new shared-memory tensor per chunk instead costs a file-descriptor
handshake and a page fault per 4 KiB in the training process, a few percent of pretraining.  The
batches, and their order, are those of the stream itself, for any number of workers.

Example:
    >>> from sodeep.synthetic import SyntheticSequences
    >>> stream = SyntheticSequences(batch_size=4, lengths=[3, 5], seed=0)
    >>> batches = iter(stream_loader(stream, workers=1))
    >>> scores, ranks = next(batches)
    >>> torch.equal(scores, stream.batch(0)[0]) and torch.equal(ranks, stream.batch(0)[1])
    True
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import multiprocessing.util  # noqa: F401  (registers its exit handler before ours)
import os
import signal
import sys
import weakref
from collections.abc import Iterable, Iterator
from numbers import Integral
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sodeep.synthetic import SyntheticSequences

#: A chunk holds at most this many scores (and as many ranks; a slot of the buffer takes at most
#: 8 MiB of shared memory, unless one batch is larger) ...
CHUNK_ELEMENTS = 2**20
#: ... and at most this many batches.
MAX_BATCHES_PER_CHUNK = 32


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def batches_per_chunk(stream: SyntheticSequences) -> int:
    """Batches a chunk of ``stream`` holds: as many as fit in :data:`CHUNK_ELEMENTS` scores at the
    stream's longest length, between 1 and :data:`MAX_BATCHES_PER_CHUNK`."""
    largest_batch = stream.batch_size * max(stream.lengths)
    return max(1, min(MAX_BATCHES_PER_CHUNK, CHUNK_ELEMENTS // largest_batch))


#: Chunks each worker may have made ahead of the training process (the DataLoader's ``prefetch_factor``).
CHUNKS_AHEAD = 2


class SequenceChunks(IterableDataset):
    """``stream``'s batches for this process, ``chunk_batches`` consecutive ones per item, written
    into the slots of ``buffer``.

    Item ``c`` packs the process's batches ``c * chunk_batches`` to ``(c + 1) * chunk_batches - 1``
    (see :meth:`SyntheticSequences.process_batch_index`) into slot ``c % slots``: their scores
    back to back in ``buffer[slot, 0]``, their ranks in ``buffer[slot, 1]``.  The item itself is
    ``(c, lengths)``, the batches' lengths as a list of ints.  DataLoader worker ``w`` of ``W``
    makes items ``w, w + W, ...``; the DataLoader returns them in order.

    Args:
        stream: the batches.
        chunk_batches: batches per item, ``>= 1``.
        slots: slots of the buffer, ``>= 1``; it is allocated in shared memory (before the
            DataLoader starts its workers, which then write into the same memory).
    """

    def __init__(self, stream: SyntheticSequences, chunk_batches: int, slots: int = 1) -> None:
        super().__init__()
        for name, value in (("chunk_batches", chunk_batches), ("slots", slots)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.stream = stream
        self.chunk_batches = chunk_batches
        slot_elements = chunk_batches * stream.batch_size * max(stream.lengths)
        self.buffer = torch.empty(slots, 2, slot_elements, dtype=torch.float32).share_memory_()  # the stream's dtype

    def chunk(self, index: int) -> tuple[int, list[int]]:
        """Make item ``index``: write its batches into their slot, return ``(index, lengths)``."""
        slot = self.buffer[index % len(self.buffer)]
        first, offset, lengths = index * self.chunk_batches, 0, []
        for position in range(first, first + self.chunk_batches):
            scores, ranks = self.stream.batch(self.stream.process_batch_index(position))
            size = scores.numel()
            slot[0, offset : offset + size] = scores.view(-1)
            slot[1, offset : offset + size] = ranks.view(-1)
            offset += size
            lengths.append(scores.shape[1])
        return index, lengths

    def batches(self, index: int, lengths: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of item ``index`` (as :meth:`chunk` returned it), each copied out of its slot
        when it is asked for."""
        slot, rows, offset = self.buffer[index % len(self.buffer)], self.stream.batch_size, 0
        for length in lengths:
            size = rows * length
            yield (
                slot[0, offset : offset + size].view(rows, length).clone(),
                slot[1, offset : offset + size].view(rows, length).clone(),
            )
            offset += size

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        info = get_worker_info()
        index, step = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            yield self.chunk(index)
            index += step


class UnpackedChunks:
    """Iterates ``(scores, ranks)`` batches, each ``(rows, n)``, of ``stream`` made by ``workers``
    processes in chunks of ``chunk_batches`` (:class:`SequenceChunks`).

    Each iteration starts its own workers and buffer; :meth:`close` ends every iteration and with
    it the workers (so does leaving the interpreter).
    """

    def __init__(self, stream: SyntheticSequences, workers: int, chunk_batches: int) -> None:
        self.stream = stream
        self.workers = workers
        self.chunk_batches = chunk_batches
        self._iterations: weakref.WeakSet = weakref.WeakSet()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        iteration = self._unpack()
        self._iterations.add(iteration)
        _OPEN_ITERATIONS.add(iteration)
        return iteration

    def _unpack(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A slot is written again CHUNKS_AHEAD * workers items later, when the DataLoader has
        # handed over the item after it: by then every batch of its chunk has been copied out.
        chunks = SequenceChunks(self.stream, self.chunk_batches, slots=CHUNKS_AHEAD * self.workers + 1)
        loader = DataLoader(
            chunks,
            batch_size=None,
            num_workers=self.workers,
            prefetch_factor=CHUNKS_AHEAD,
            worker_init_fn=_outlive_stop_signals,
        )
        for index, lengths in loader:
            yield from chunks.batches(index, lengths)

    def close(self) -> None:
        """End every iteration over this loader: its DataLoader iterator is released, which asks
        the workers to finish and waits for them."""
        for iteration in list(self._iterations):
            iteration.close()


#: Iterations over worker loaders not yet ended, ended at exit (below).
_OPEN_ITERATIONS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_iterations() -> None:
    # The workers outlive SIGTERM (below), so multiprocessing's own exit handler, which
    # terminates daemonic children with SIGTERM and then waits for them, must find them gone.
    # Handlers registered later run first: this one runs before multiprocessing's.
    for iteration in list(_OPEN_ITERATIONS):
        iteration.close()


#: Seconds a data worker lives on after a SIGINT or SIGTERM if nobody closes its loader: longer
#: than a stop takes (a checkpoint, a validation), since the training process reports a worker
#: that ends while the loader is open as a failure.
STOP_GRACE_SECONDS = 300


def _end_with_the_training_process() -> None:
    # A training process killed outright (SIGKILL, the out-of-memory killer) runs no exit handler:
    # without this, its workers would notice only at PyTorch's next watchdog check, seconds later.
    # Linux ends the worker with the thread that started it (the one iterating the loader).
    # Workers started through a fork server are the server's children, not the training process's:
    # they keep PyTorch's watchdog alone.
    # A worker that starts after the training process has already ended (its parent is now init,
    # or a subreaper) ends at once.
    parent = multiprocessing.parent_process()
    if not sys.platform.startswith("linux") or parent is None:
        return
    if os.getppid() != parent.pid:
        if _has_ended(parent.pid):
            os._exit(0)
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent.pid:  # the training process ended before the line above
        os._exit(0)


def _has_ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (ended, only waiting to be reaped), on Linux."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


#: ``prctl`` option: the signal a process gets when its parent thread ends (Linux).
PR_SET_PDEATHSIG = 1


def _outlive_stop_signals(worker_id: int) -> None:
    _end_with_the_training_process()
    # A Ctrl-C reaches the whole process group, and a scheduler's SIGTERM (SLURM at its time
    # limit, scancel) every process of the job.  The training process handles both: it finishes
    # its step and saves a checkpoint, which may need the next batches, then closes its loader,
    # which ends the worker.  Should nobody close it (the training process failed while holding
    # it), the worker ends STOP_GRACE_SECONDS after the first signal: SIGALRM's default action.
    if not hasattr(signal, "alarm"):  # Windows: no SIGTERM from a scheduler, no alarm
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return

    def outlive(number: int, frame: Any) -> None:
        pending = signal.alarm(0)
        signal.alarm(pending or STOP_GRACE_SECONDS)

    signal.signal(signal.SIGINT, outlive)
    signal.signal(signal.SIGTERM, outlive)


def stream_loader(stream: SyntheticSequences, workers: int = 1) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """An iterable of ``stream``'s ``(scores, ranks)`` batches, in the stream's order.

    Args:
        stream: the batches to load (its ``start_batch``, ``rank`` and ``world_size`` included).
        workers: processes that make the batches, in chunks of :func:`batches_per_chunk`, while the
            caller trains; ``0`` makes each batch in the calling process when it is asked for.

    Returns:
        A ``DataLoader`` (``workers == 0``) or an :class:`UnpackedChunks`; either can be given to
        Lightning as a training dataloader.  With workers, the shared memory a loader takes is
        ``2 * workers + 1`` slots of :class:`SequenceChunks` (24 MiB at most for one worker and
        batches of up to 2^20 scores).
    """
    if isinstance(workers, bool) or not isinstance(workers, Integral) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    workers = int(workers)
    if workers == 0:
        return DataLoader(stream, batch_size=None)
    return UnpackedChunks(stream, workers, batches_per_chunk(stream))
