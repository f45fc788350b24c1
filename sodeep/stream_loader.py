"""Batches of a :class:`~sodeep.synthetic.SyntheticSequences` stream made in worker processes while
the model trains.

A worker process makes whole chunks of consecutive batches and sends each chunk as three tensors
(every batch's scores, every batch's ranks, their lengths), so the cost of passing tensors between
processes is paid once per chunk, not once per batch; the training process cuts the chunks back
into batches (views, no copy).  The batches, and their order, are those of the stream itself, for
any number of workers.  A batch is a view into its chunk's shared memory, which stays open (a
file descriptor) while any batch of the chunk is kept: ``.clone()`` batches kept by the thousand.

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
import multiprocessing.util  # noqa: F401  (registers its exit handler before ours)
import os
import signal
import weakref
from collections.abc import Iterable, Iterator
from numbers import Integral
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sodeep.synthetic import SyntheticSequences

#: A chunk holds at most this many scores (and as many ranks): 4 MiB of float32 each ...
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


class SequenceChunks(IterableDataset):
    """``stream``'s batches for this process, ``chunk_batches`` consecutive ones per item.

    Item ``c`` packs the process's batches ``c * chunk_batches`` to ``(c + 1) * chunk_batches - 1``
    (see :meth:`SyntheticSequences.process_batch_index`) as ``(scores, ranks, lengths)``: float32
    ``(sum_k B * n_k,)`` twice and int64 ``(chunk_batches,)``.  DataLoader worker ``w`` of ``W``
    makes items ``w, w + W, ...``; the DataLoader returns them in order.
    """

    def __init__(self, stream: SyntheticSequences, chunk_batches: int) -> None:
        super().__init__()
        if isinstance(chunk_batches, bool) or not isinstance(chunk_batches, int) or chunk_batches < 1:
            raise ValueError(f"chunk_batches must be an integer >= 1, got {chunk_batches!r}")
        self.stream = stream
        self.chunk_batches = chunk_batches

    def chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Item ``index``: ``(scores, ranks, lengths)``."""
        first = index * self.chunk_batches
        batches = [
            self.stream.batch(self.stream.process_batch_index(position))
            for position in range(first, first + self.chunk_batches)
        ]
        lengths = torch.tensor([scores.shape[1] for scores, _ in batches], dtype=torch.int64)
        scores = torch.cat([scores.reshape(-1) for scores, _ in batches])
        ranks = torch.cat([ranks.reshape(-1) for _, ranks in batches])
        return scores, ranks, lengths

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        index, step = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            yield self.chunk(index)
            index += step


class UnpackedChunks:
    """Iterates ``(scores, ranks)`` batches, each ``(rows, n)``, out of a loader of
    :class:`SequenceChunks` items.

    Each iteration holds the loader's worker processes; :meth:`close` ends every iteration and
    with it the workers (so does leaving the interpreter).
    """

    def __init__(self, chunks: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], rows: int) -> None:
        self.chunks = chunks
        self.rows = rows
        self._iterations: weakref.WeakSet = weakref.WeakSet()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        iteration = self._unpack()
        self._iterations.add(iteration)
        _OPEN_ITERATIONS.add(iteration)
        return iteration

    def _unpack(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for scores, ranks, lengths in self.chunks:
            lengths = lengths.tolist()
            sizes = [self.rows * length for length in lengths]
            for batch_scores, batch_ranks, length in zip(scores.split(sizes), ranks.split(sizes), lengths):
                yield batch_scores.view(self.rows, length), batch_ranks.view(self.rows, length)

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


def _outlive_stop_signals(worker_id: int) -> None:
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
        A ``DataLoader`` (``workers == 0``) or an iterable over one; either can be given to Lightning
        as a training dataloader.
    """
    if isinstance(workers, bool) or not isinstance(workers, Integral) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    workers = int(workers)
    if workers == 0:
        return DataLoader(stream, batch_size=None)
    chunks = DataLoader(
        SequenceChunks(stream, batches_per_chunk(stream)),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        worker_init_fn=_outlive_stop_signals,
    )
    return UnpackedChunks(chunks, stream.batch_size)
