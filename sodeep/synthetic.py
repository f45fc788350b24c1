"""Synthetic score sequences and their exact ranks, for pretraining and evaluating sorters.

The families extend those of the original SoDeep generator (uniform, normal, linear ranges,
shuffled ranges, concatenated mixtures) with what real scores look like: ties and repeated values,
heavy tails, skew, outliers, sorted input and near-constant rows (:data:`FAMILIES`).  Each row
also gets, with probability ``affine_probability``, a random positive scale log-uniform in
[1e-4, 1e4] and a shift of up to 10 times the scale, so a sorter meets ages in years, logits and
tiny scores alike.

Speed: the exact ranks of a row come from how it is built (see :mod:`sodeep.synthetic_kernels`):
one vectorized NumPy sort of random integer keys for the whole batch, then one compiled walk
along each row.  No float values are sorted, except in the rare rows whose float32 values fail
the walk's order check, which it sorts itself.  Large batches split their rows over the threads
torch may use, and the memory of outputs the caller has dropped is used again.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import IterableDataset

from sodeep import synthetic_kernels as kernels

#: Name -> what a row of the family looks like.  Every row is built by
#: :mod:`sodeep.synthetic_kernels` so that its exact ranks come from its construction.
FAMILIES: dict[str, str] = {
    "uniform": "U(-1, 1)",
    "normal": "N(0, 1)",
    "linear": "SoDeep's arange(a, b, (b - a) / n), a, b ~ U(0, 1), in order",
    "shuffled_linear": "the linear range, shuffled",
    "uniform+normal": "a U(-1, 1) prefix of random length 1..n, then N(0, 1)",
    "shuffled_linear+uniform": "a shuffled linear range of random length k in 1..n, then U(-1, 1)",
    "ties": "integers floor(U * L), L from 2 to n/2 + 2 levels: ratings, votes",
    "repeated": "N(0, 1) where a random fraction (up to half) of entries copy another entry",
    "cauchy": "standard Cauchy",
    "student_t": "Student-t with 1 to 5 degrees of freedom per row",
    "lognormal": "exp(sigma * N(0, 1)), sigma ~ U(0.25, 2)",
    "outliers": "N(0, 1) where about 5% of entries are multiplied by 10 to 1000",
    "sorted": "N(0, 1), sorted ascending",
    "reverse_sorted": "N(0, 1), sorted descending",
    "near_constant": "c + 1e-3 N(0, 1), c ~ U(1, 2): float32 keeps about 4 digits of the noise",
}
_FAMILY_CODES = {name: code for code, name in enumerate(FAMILIES)}
assert len(FAMILIES) == kernels.FAMILY_COUNT and _FAMILY_CODES["near_constant"] == kernels.NEAR_CONSTANT

# Batches with fewer entries than this are built on the calling thread alone: handing half of
# the rows to another thread costs more than it saves (measured here: 512x100 took 283 us on
# one thread and 316 us on two; 256x256, 320 and 279 us; 4096x100, 2.1 and 1.3 ms).
PARALLEL_MIN_ENTRIES = 65_536


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def generate_sequences(
    batch_size: int,
    length: int,
    generator: torch.Generator | int,
    *,
    families: Sequence[str] | None = None,
    affine_probability: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` sequences of ``length`` scores and their exact ranks.

    Each row picks a family uniformly from ``families`` (default: all of :data:`FAMILIES`); with
    probability ``affine_probability`` the row then gets a random positive scale (log-uniform in
    [1e-4, 1e4]) and a shift of up to 10 times that scale.

    Args:
        batch_size: ``B >= 1``.
        length: ``n >= 1``.
        generator: the only source of randomness, a CPU ``torch.Generator`` or an int seed; the
            same seed gives the same batch (``None``, i.e. torch's global generator, is refused).
        families: names from :data:`FAMILIES`.
        affine_probability: chance of a random positive affine transform per row.

    Returns:
        ``(scores, ranks, family_index)`` with shapes ``(B, n)``, ``(B, n)``, ``(B,)``; ranks in
        the convention of :func:`sodeep.rank` (descending, average ties, normalized by n);
        ``family_index`` indexes ``families`` and is sorted: rows come grouped by family.

    Example:
        >>> scores, ranks, family = generate_sequences(4, 10, make_generator(0))
        >>> scores.shape, ranks.shape, family.shape
        (torch.Size([4, 10]), torch.Size([4, 10]), torch.Size([4]))
    """
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = make_generator(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or an int seed, got {type(generator).__name__} "
            "(no hidden global randomness: the same seed must give the same batch)"
        )
    family_codes = _checked_family_codes(families, affine_probability)
    if batch_size < 1 or length < 1:
        raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
    batch_seeds = _recycled.draw_seed(generator)
    return _build_batches(family_codes, batch_seeds, batch_size, length, affine_probability)


def _checked_family_codes(families: Sequence[str] | None, affine_probability: float) -> np.ndarray:
    """The kernels' codes of ``families`` after checking them and ``affine_probability``."""
    try:
        family_codes = _family_codes(None if families is None else tuple(families))
    except TypeError:  # an unhashable entry: not a family name
        raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {families}") from None
    if not 0.0 <= affine_probability <= 1.0:
        raise ValueError(f"affine_probability must be in [0, 1], got {affine_probability}")
    return family_codes


@functools.lru_cache(maxsize=256)
def _family_codes(families: tuple[str, ...] | None) -> np.ndarray:
    """The codes ``(len(families),)`` int64 of the kernels' families, checked once per tuple."""
    names = list(FAMILIES) if families is None else list(families)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {names}")
    return np.array([_FAMILY_CODES[name] for name in names], np.int64)


_helpers: tuple[int, int, ThreadPoolExecutor] | None = None


def _helper_threads(count: int) -> ThreadPoolExecutor:
    """A pool of ``count`` threads kept between calls (starting a thread costs ~0.3 ms here), made
    anew in a forked process (a DataLoader worker), where the parent's threads do not exist."""
    global _helpers
    if _helpers is None or _helpers[:2] != (os.getpid(), count):
        if _helpers is not None and _helpers[0] == os.getpid():
            _helpers[2].shutdown(wait=False)  # torch's thread count changed: let the old threads go
        _helpers = (os.getpid(), count, ThreadPoolExecutor(count, thread_name_prefix="sodeep-synthetic"))
    return _helpers[2]


class _RecycledMemory(threading.local):
    """Memory for the generator's arrays that is used again from call to call, one set per thread.

    Fresh memory for a batch costs more than building it here: glibc maps large blocks anew (or
    returns a freed heap top to the system), and each 4 KiB page then faults on first write
    (measured: 768 faults and ~1.1 ms per 4096x100 batch, when building it takes ~1.4 ms).  So
    the keys, seeds and codes live in one scratch buffer each per thread, and ``scores``/``ranks``
    are arrays that are handed out again once the tensors made from them (and every view of
    those) are gone: ``torch.from_numpy`` holds the array it was given until its storage dies, so
    an array that only this pool refers to is free.
    """

    # At most this many output buffers per thread (three batches: a training loop that prefetches
    # holds two), of at most this many entries each (bigger arrays are allocated as usual, like
    # any array when the caller holds every buffer): 24 MiB of float32 per thread at most.
    MAX_BUFFERS = 6
    MAX_ENTRIES = 2**20

    @staticmethod
    def _references(arrays: list[np.ndarray], k: int) -> int:
        """The reference count of ``arrays[k]``, as :meth:`output` sees it."""
        return sys.getrefcount(arrays[k])

    def __init__(self) -> None:
        self.scratch: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.buffers: list[np.ndarray] = []  # the memory of each output slot
        self.arrays: list[np.ndarray] = []  # the array of each slot last handed out, a view of its buffer
        # The batch's seed is drawn into this tensor, in place, and read through a NumPy view of it.
        self.seed = torch.empty(1, dtype=torch.int64)
        self.seed_bits = self.seed.numpy().view(np.uint64)

    def draw_seed(self, generator: torch.Generator) -> np.ndarray:
        """64 random bits from ``generator`` as a ``(1,)`` uint64 array, valid until the next draw
        on this thread: the draw of ``torch.randint(-2**63, 2**63 - 1, (1,))``, made in place
        (~1 us, half of what ``randint`` and reading its result cost)."""
        self.seed.random_(-(2**63), 2**63 - 1, generator=generator)
        return self.seed_bits

    def scratch_array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A scratch array of ``shape``, valid until the next call from this thread for ``name``."""
        buffer, view = self.scratch.get(name, (None, None))
        if view is not None and view.shape == shape and view.dtype == dtype:
            return view  # the common case, a batch of the same shape as the last one
        entries = math.prod(shape)
        if buffer is None or buffer.size < entries or buffer.dtype != dtype:
            buffer = np.empty(entries, dtype)
        view = buffer[:entries].reshape(shape)
        self.scratch[name] = (buffer, view)
        return view

    def output(self, shape: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
        """An uninitialized float32 tensor of ``shape`` on memory no live tensor uses, and its array."""
        entries = shape[0] * shape[1]
        slot = self._free_slot(shape, entries) if entries <= self.MAX_ENTRIES else -1
        if slot < 0:  # too big for the pool, or the caller holds every buffer
            tensor = torch.empty(shape)
            return tensor, tensor.numpy()
        arrays, buffers = self.arrays, self.buffers
        array = arrays[slot]
        if array.shape != shape:
            if buffers[slot].size < entries:
                buffers[slot] = np.empty(entries, np.float32)
            array = arrays[slot] = buffers[slot][:entries].reshape(shape)
        return torch.from_numpy(array), array

    def _free_slot(self, shape: tuple[int, int], entries: int) -> int:
        """A slot no tensor refers to, preferably one big enough (a new one while there are fewer
        than MAX_BUFFERS), or -1."""
        arrays, buffers = self.arrays, self.buffers
        slot = -1
        for k in range(len(arrays)):
            if self._references(arrays, k) == self.UNREFERENCED:
                if arrays[k].shape == shape or buffers[k].size >= entries:
                    return k
                if slot < 0:
                    slot = k  # free but small: grown by output() unless a big enough one is free
        if slot < 0 and len(buffers) < self.MAX_BUFFERS:
            slot = len(buffers)
            buffers.append(np.empty(entries, np.float32))
            arrays.append(buffers[slot][:entries].reshape(shape))
        return slot


# What _references reports for an array that only the pool's list holds.  Measured, not assumed:
# how many references getrefcount's own call adds depends on the Python version.
_RecycledMemory.UNREFERENCED = _RecycledMemory._references([np.empty(0)], 0)
_recycled = _RecycledMemory()


def _build_batches(
    family_codes: np.ndarray, batch_seeds: np.ndarray, batch_size: int, length: int, affine_probability: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``len(batch_seeds)`` batches of :func:`generate_sequences`, one after the other in
    ``(len(batch_seeds) * batch_size, length)`` outputs, batch ``b`` from its 64-bit seed
    ``batch_seeds[b]`` alone (the checks are the caller's)."""
    memory = _recycled
    # Each row gets its own seed from its batch's seed, and a batch's rows come family by family
    # (its family_index is sorted).  Nothing here runs torch kernels: they would wake torch's
    # OpenMP threads, which then spin for milliseconds on the cores the row-building threads need
    # (measured: 1.6 ms per 4096x100 batch became 3 ms).
    rows = len(batch_seeds) * batch_size
    seeds = memory.scratch_array("seeds", (rows,), np.uint64)
    codes = memory.scratch_array("codes", (rows,), np.int64)
    family_index = np.empty(rows, np.int64)
    # A key and its column share one integer: 24 + 8 bits while columns fit in 8 bits.
    key_type, index_bits = (np.uint32, 8) if length <= 256 else (np.uint64, 32)
    keys = memory.scratch_array("keys", (rows, length), key_type)
    values, values_array = memory.output((rows, length))
    ranks, ranks_array = memory.output((rows, length))
    workers = min(torch.get_num_threads(), rows) if rows * length >= PARALLEL_MIN_ENTRIES else 1
    if workers == 1:  # most calls: two compiled calls and a sort, nothing else
        kernels.draw_batch(batch_seeds, family_codes, seeds, family_index, codes, keys, index_bits)
        keys.sort(axis=-1)  # in place: no fresh buffer to page-fault
        kernels.finish_rows(codes, seeds, keys, index_bits, affine_probability, values_array, ranks_array)
        return values, ranks, torch.from_numpy(family_index)

    kernels.draw_rows(batch_seeds, family_codes, seeds, family_index, codes)

    def build(chunk: slice) -> None:
        kernels.draw_keys(seeds[chunk], keys[chunk], index_bits)
        keys[chunk].sort(axis=-1)
        kernels.finish_rows(
            codes[chunk],
            seeds[chunk],
            keys[chunk],
            index_bits,
            affine_probability,
            values_array[chunk],
            ranks_array[chunk],
        )

    # Contiguous chunks of equal cost: rows come grouped by family, and a mixture row costs ~3
    # uniform ones.  (Interleaved rows would balance without a cost table, but strided arrays
    # slow the compiled walk by half.)
    bounds = kernels.split_rows(codes, workers).tolist()
    chunks = [slice(low, high) for low, high in zip(bounds[:-1], bounds[1:])]
    # The kernels release the GIL: the first chunk runs here, the others on helper threads.
    pending = [_helper_threads(workers - 1).submit(build, chunk) for chunk in chunks[1:]]
    build(chunks[0])
    for job in pending:
        job.result()  # re-raises a helper's exception here
    return values, ranks, torch.from_numpy(family_index)


class SyntheticSequences(IterableDataset):
    """Endless stream of ready ``(scores, ranks)`` batches for pretraining (use ``batch_size=None``
    in the ``DataLoader``).

    Batch ``k`` is a pure function of ``(seed, k)``, so a resumed run continues the exact stream:
    set ``start_batch`` to the number of batches already consumed.  Each batch draws its length
    uniformly from ``lengths``.  With several DataLoader workers, worker ``w`` of ``W`` yields
    batches ``k = start_batch + w, w + W, ...`` (interleaved, so the stream is the same).

    Speed: iterating builds the coming batches in blocks of about :attr:`BLOCK_ENTRIES` scores,
    the batches of one length in one call (split over threads like any large batch), and yields
    them one by one, views of the block's memory.  Each batch is still exactly :meth:`batch` of
    its index; a block only saves the cost of a call per batch.
    """

    #: Scores built per block when iterating: 1 MiB of float32 per output, small enough for
    #: :class:`_RecycledMemory` to use its memory again.
    BLOCK_ENTRIES = 2**18

    def __init__(
        self,
        batch_size: int,
        lengths: Sequence[int],
        seed: int = 0,
        *,
        families: Sequence[str] | None = None,
        affine_probability: float = 0.5,
        start_batch: int = 0,
    ) -> None:
        super().__init__()
        if not lengths or min(lengths) < 2:
            raise ValueError(f"lengths must be a non-empty list of ints >= 2, got {lengths}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.family_codes = _checked_family_codes(families, affine_probability)
        self.batch_size = batch_size
        self.lengths = list(lengths)
        self.seed = seed
        self.families = families
        self.affine_probability = affine_probability
        self.start_batch = start_batch

    def _length_and_seed(self, index: int, generator: torch.Generator, choice: torch.Tensor) -> tuple[int, np.uint64]:
        """Batch ``index``'s length and 64-bit seed: the first two draws of ``generator`` seeded
        from ``(seed, index)`` (the length's drawn into ``choice``, a 0-d int64 tensor)."""
        # Mixing the seed and the index into one 63-bit seed keeps streams of nearby seeds apart.
        generator.manual_seed((self.seed * 1_000_003 + index) % (2**63 - 1))
        length = self.lengths[int(choice.random_(0, len(self.lengths), generator=generator))]
        return length, _recycled.draw_seed(generator)[0]

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` of the stream."""
        length, seed = self._length_and_seed(index, torch.Generator(), torch.empty((), dtype=torch.int64))
        scores, ranks, _ = _build_batches(
            self.family_codes, np.array([seed]), self.batch_size, length, self.affine_probability
        )
        return scores, ranks

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        per_block = max(1, self.BLOCK_ENTRIES // (self.batch_size * max(self.lengths)))
        generator, choice = torch.Generator(), torch.empty((), dtype=torch.int64)
        index = self.start_batch + worker
        while True:
            block = [self._length_and_seed(index + k * workers, generator, choice) for k in range(per_block)]
            yield from self._build_block(block)
            index += per_block * workers

    def _build_block(self, block: list[tuple[int, np.uint64]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``block`` (a length and a seed each), in its order."""
        positions_by_length: dict[int, list[int]] = {}
        for position, (length, _) in enumerate(block):
            positions_by_length.setdefault(length, []).append(position)
        batches: list = [None] * len(block)
        size = self.batch_size
        for length, positions in positions_by_length.items():
            seeds = np.array([block[position][1] for position in positions], np.uint64)
            scores, ranks, _ = _build_batches(self.family_codes, seeds, size, length, self.affine_probability)
            for k, position in enumerate(positions):
                batches[position] = (scores[k * size : (k + 1) * size], ranks[k * size : (k + 1) * size])
        return batches
