"""Synthetic score sequences and their exact ranks, for pretraining and evaluating sorters.

The families extend those of the original SoDeep generator (uniform, normal, linear ranges,
shuffled ranges, concatenated mixtures) with what real scores look like: ties and repeated values,
heavy tails, skew, outliers, sorted input and near-constant rows (:data:`FAMILIES`).  Each row
also gets, with probability ``affine_probability``, a random positive scale log-uniform in
[1e-4, 1e4] and a shift of up to 10 times the scale, so a sorter meets ages in years, logits and
tiny scores alike.

Speed: the exact ranks of a row come from how it is built (see :mod:`sodeep.synthetic_kernels`):
one vectorized NumPy sort of random integer keys for the whole batch, then one compiled walk
along each row.  No float values are sorted, except in the few rows flagged for it, which
:func:`exact_ranks_cpu` ranks.  Large batches split their rows over the threads torch may use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import IterableDataset

from sodeep import synthetic_kernels as kernels
from sodeep.cpu_sort import sort_keys_with_order, sortable_keys
from sodeep.ranks import rank


def exact_ranks_cpu(scores: torch.Tensor) -> torch.Tensor:
    """:func:`sodeep.rank` with its default convention, fast for float32 CPU rows.

    Args:
        scores: float32 CPU tensor ``(B, n)``, no NaN.

    Returns:
        ``(B, n)`` float32 normalized descending ranks, ties averaged: equal to ``rank(scores)``.
    """
    if scores.dtype != torch.float32 or scores.device.type != "cpu" or scores.dim() != 2:
        return rank(scores)
    batch, n = scores.shape
    # Descending ranks are ascending ranks of the reversed keys (~k reverses int order).
    sorted_keys, order = sort_keys_with_order(~sortable_keys(scores))
    positions = torch.arange(1, n + 1, dtype=torch.float32)
    sorted_ranks = positions.expand(batch, n).clone()
    tied = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    # NumPy's any along rows is ~4x faster than torch's on CPU bool tensors here.
    rows_with_ties = torch.from_numpy(tied.numpy().any(-1).nonzero()[0])
    if rows_with_ties.numel():
        # Average position of each tie group, for the rows that have ties only.
        starts = torch.ones(rows_with_ties.numel(), n, dtype=torch.bool)
        starts[:, 1:] = ~tied[rows_with_ties]
        group = starts.cumsum(-1) - 1
        zeros = torch.zeros(rows_with_ties.numel(), n)
        total = zeros.scatter_add(-1, group, positions.expand_as(zeros))
        size = zeros.scatter_add(-1, group, torch.ones_like(zeros))
        sorted_ranks[rows_with_ties] = (total / size.clamp_min(1)).gather(-1, group)
    return torch.empty_like(sorted_ranks).scatter_(-1, order, sorted_ranks / n)


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

# Batches with fewer entries than this are built on the calling thread alone: starting a thread
# costs more than it saves.
PARALLEL_MIN_ENTRIES = 32_768


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
    names = list(FAMILIES) if families is None else list(families)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {names}")
    if batch_size < 1 or length < 1:
        raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
    if not 0.0 <= affine_probability <= 1.0:
        raise ValueError(f"affine_probability must be in [0, 1], got {affine_probability}")

    # Rows come family by family (family_index is sorted), each with its own 64-bit seed.
    family_index = torch.randint(0, len(names), (batch_size,), generator=generator).sort().values
    codes = torch.tensor([_FAMILY_CODES[name] for name in names])[family_index].numpy()
    seeds = torch.randint(-(2**63), 2**63 - 1, (batch_size,), generator=generator, dtype=torch.int64)
    scores, ranks = _build_rows(codes, seeds.numpy().view(np.uint64), length, affine_probability)
    return scores, ranks, family_index


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


def _build_rows(
    codes: np.ndarray, seeds: np.ndarray, length: int, affine_probability: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and exact ranks ``(B, length)`` of rows with family ``codes`` and ``seeds`` ``(B,)``."""
    batch_size = len(codes)
    # A key and its column share one integer: 24 + 8 bits while columns fit in 8 bits.
    key_type, signed_type, index_bits = (np.uint32, torch.int32, 8) if length <= 256 else (np.uint64, torch.int64, 32)
    # Buffers come from torch's allocator: fresh NumPy arrays of this size page-fault on every
    # call here (measured: ~770 faults and 1.2 ms for two 4096x100 float32 arrays; torch's, 0.15 ms).
    keys = torch.empty(batch_size, length, dtype=signed_type).numpy().view(key_type)
    values = torch.empty(batch_size, length)
    ranks = torch.empty(batch_size, length)
    needs_sort = np.empty(batch_size, np.bool_)

    def build(rows: slice) -> None:
        kernels.draw_keys(seeds[rows], keys[rows], index_bits)
        keys[rows].sort(axis=-1)  # in place: no fresh buffer to page-fault
        kernels.finish_rows(
            codes[rows], seeds[rows], keys[rows], index_bits, affine_probability,
            values[rows].numpy(), ranks[rows].numpy(), needs_sort[rows],
        )  # fmt: skip

    workers = min(torch.get_num_threads(), batch_size) if batch_size * length >= PARALLEL_MIN_ENTRIES else 1
    bounds = np.linspace(0, batch_size, workers + 1).astype(int)
    chunks = [slice(low, high) for low, high in zip(bounds[:-1], bounds[1:])]
    # The kernels release the GIL: the first chunk runs here, the others on helper threads.
    pending = [_helper_threads(workers - 1).submit(build, chunk) for chunk in chunks[1:]]
    build(chunks[0])
    for job in pending:
        job.result()  # re-raises a helper's exception here
    flagged = torch.from_numpy(needs_sort.nonzero()[0])
    if flagged.numel():
        ranks[flagged] = exact_ranks_cpu(values[flagged])
    return values, ranks


class SyntheticSequences(IterableDataset):
    """Endless stream of ready ``(scores, ranks)`` batches for pretraining (use ``batch_size=None``
    in the ``DataLoader``).

    Batch ``k`` is a pure function of ``(seed, k)``, so a resumed run continues the exact stream:
    set ``start_batch`` to the number of batches already consumed.  Each batch draws its length
    uniformly from ``lengths``.  With several DataLoader workers, worker ``w`` of ``W`` yields
    batches ``k = start_batch + w, w + W, ...`` (interleaved, so the stream is the same).
    """

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
        self.batch_size = batch_size
        self.lengths = list(lengths)
        self.seed = seed
        self.families = families
        self.affine_probability = affine_probability
        self.start_batch = start_batch

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` of the stream."""
        # Mixing the seed and the index into one 63-bit seed keeps streams of nearby seeds apart.
        gen = make_generator((self.seed * 1_000_003 + index) % (2**63 - 1))
        length = self.lengths[int(torch.randint(0, len(self.lengths), (1,), generator=gen))]
        scores, ranks, _ = generate_sequences(
            self.batch_size,
            length,
            gen,
            families=self.families,
            affine_probability=self.affine_probability,
        )
        return scores, ranks

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start_batch + worker
        while True:
            yield self.batch(index)
            index += workers
