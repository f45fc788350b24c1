"""Synthetic score sequences and their exact ranks, for pretraining and evaluating sorters.

The families extend those of the original SoDeep generator (uniform, normal, linear ranges,
shuffled ranges, concatenated mixtures) with what real scores look like: ties and repeated values,
heavy tails, skew, outliers, sorted input and near-constant rows.  Generation is batched: one call
builds a ``(B, n)`` tensor with one vectorized draw per family present in the batch (a Python loop
over the ~15 families, never over elements or rows), driven by an explicit ``torch.Generator``.

Speed: on a CPU, ``torch.sort`` of many short rows is the bottleneck (about 12x slower than NumPy's
vectorized sort of the same array here).  The targets are therefore ranked by
:func:`exact_ranks_cpu`, which sorts with :func:`sodeep.cpu_sort.sort_keys_with_order`, and rows
are laid out family by family so no scattered writes are needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset

from sodeep.cpu_sort import sort_keys_with_order, sortable_keys
from sodeep.ranks import rank

Sampler = Callable[[int, int, torch.Generator], torch.Tensor]

# Largest decade of the random positive scale applied to sequences: scales are log-uniform in
# [1e-4, 1e4], as the issue asks, so a sorter meets ages in years, logits and tiny scores alike.
SCALE_DECADES = 4.0
# Shifts are a multiple of the scale: a shift of 1e4 on values of size 1e-4 would fall below
# float32 resolution and create ties that are an artefact of the representation, not of the data.
MAX_RELATIVE_SHIFT = 10.0
# Share of entries of the "outliers" family that are blown up by 10 to 1000.
OUTLIER_FRACTION = 0.05


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


def _uniform(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(batch, n, generator=gen) * 2 - 1


def _normal(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, n, generator=gen)


def _linear(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Evenly spaced values from a to b (a, b ~ U(0, 1)), in order, as SoDeep's ``arange(a, b)``."""
    ends = torch.rand(batch, 2, generator=gen)
    steps = torch.arange(n, dtype=torch.float32) / n
    start, stop = ends[:, :1], ends[:, 1:]
    return start + (stop - start) * steps


def _permute_rows(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shuffle each row independently (uniform permutations: the order of random 32-bit keys)."""
    keys = torch.randint(-(2**31), 2**31, x.shape, generator=gen, dtype=torch.int64).to(torch.int32)
    return x.gather(-1, sort_keys_with_order(keys)[1])


def _shuffled_linear(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return _permute_rows(_linear(batch, n, gen), gen)


def _concatenate(first: Sampler, second: Sampler) -> Sampler:
    """Rows made of a prefix from ``first`` and a suffix from ``second`` at a random split."""

    def sample(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
        split = torch.randint(1, n + 1, (batch, 1), generator=gen)
        prefix = torch.arange(n) < split
        return torch.where(prefix, first(batch, n, gen), second(batch, n, gen))

    return sample


def _ties(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Integer scores from a small alphabet (2 to n/2 + 2 levels): many ties, as ratings or votes."""
    levels = torch.randint(2, n // 2 + 3, (batch, 1), generator=gen)
    return torch.floor(torch.rand(batch, n, generator=gen) * levels)


def _repeated(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Normal scores where a random fraction (up to half) of entries copy another entry."""
    base = torch.randn(batch, n, generator=gen)
    fraction = torch.rand(batch, 1, generator=gen) * 0.5
    source = torch.randint(0, n, (batch, n), generator=gen)
    copy = torch.rand(batch, n, generator=gen) < fraction
    index = torch.where(copy, source, torch.arange(n).expand(batch, n))
    return base.gather(-1, index)


def _cauchy(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.tan(math.pi * (torch.rand(batch, n, generator=gen) - 0.5))


def student_t(dof: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` Student-t draws per row with integer degrees of freedom ``dof`` ``(B, 1)`` in 1..5:
    ``normal / sqrt(chi2 / dof)``, with ``chi2(dof) = -2 log(U_1 ... U_{dof // 2}) + Z^2 [dof odd]``
    (a sum of exponentials plus one squared normal for odd dof: three draws per element).

    Returns:
        ``(B, n)`` float32.
    """
    batch = dof.shape[0]
    dof = dof.float()
    normal = torch.randn(batch, n, generator=gen)
    uniforms = 1 - torch.rand(batch, n, 2, generator=gen)  # in (0, 1]: the log stays finite
    keep = torch.arange(1, 3) <= (dof // 2).unsqueeze(-1)
    chi2 = -2 * torch.where(keep, uniforms, 1.0).log().sum(-1)
    chi2 = chi2 + torch.randn(batch, n, generator=gen).square() * (dof % 2)
    return normal / torch.sqrt(chi2 / dof)


def _student_t(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Student-t with 1 to 5 degrees of freedom per row."""
    return student_t(torch.randint(1, 6, (batch, 1), generator=gen), n, gen)


def _lognormal(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    sigma = 0.25 + 1.75 * torch.rand(batch, 1, generator=gen)
    return torch.exp(sigma * torch.randn(batch, n, generator=gen))


def _outliers(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Normal scores where about 5% of entries are multiplied by 10 to 1000."""
    base = torch.randn(batch, n, generator=gen)
    draw = torch.rand(batch, n, generator=gen)
    # One uniform decides both: below 5% it is an outlier, and draw / 5% is again uniform.
    is_outlier = draw < OUTLIER_FRACTION
    magnitude = torch.exp(math.log(10) * (1 + 2 * draw.clamp_max(OUTLIER_FRACTION) / OUTLIER_FRACTION))
    return torch.where(is_outlier, base * magnitude, base)


def _sorted(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.from_numpy(np.sort(torch.randn(batch, n, generator=gen).numpy(), axis=-1))


def _reverse_sorted(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return _sorted(batch, n, gen).flip(-1)


def _near_constant(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """A constant plus relative noise of 1e-3 (float32 keeps about 4 significant digits of it)."""
    level = 1 + torch.rand(batch, 1, generator=gen)
    return level + 1e-3 * torch.randn(batch, n, generator=gen)


#: Name -> sampler ``(batch, n, generator) -> (batch, n)`` float32 tensor.
FAMILIES: dict[str, Sampler] = {
    "uniform": _uniform,
    "normal": _normal,
    "linear": _linear,
    "shuffled_linear": _shuffled_linear,
    "uniform+normal": _concatenate(_uniform, _normal),
    "shuffled_linear+uniform": _concatenate(_shuffled_linear, _uniform),
    "ties": _ties,
    "repeated": _repeated,
    "cauchy": _cauchy,
    "student_t": _student_t,
    "lognormal": _lognormal,
    "outliers": _outliers,
    "sorted": _sorted,
    "reverse_sorted": _reverse_sorted,
    "near_constant": _near_constant,
}


def random_affine_parameters(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(a, b)``, each ``(batch, 1)``: ``a`` log-uniform in [1e-4, 1e4], ``|b| <= 10 a``."""
    scale = 10 ** (SCALE_DECADES * (2 * torch.rand(batch, 1, generator=gen) - 1))
    shift = scale * MAX_RELATIVE_SHIFT * (2 * torch.rand(batch, 1, generator=gen) - 1)
    return scale, shift


def random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply ``a * x + b`` per row of ``x`` ``(B, n)`` with :func:`random_affine_parameters`."""
    scale, shift = random_affine_parameters(x.shape[0], gen)
    return x * scale + shift


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
    probability ``affine_probability`` the row is then rescaled by :func:`random_affine`.

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

    # Rows come family by family (family_index is sorted): each family fills one contiguous block.
    family_index = torch.randint(0, len(names), (batch_size,), generator=generator).sort().values
    counts = torch.bincount(family_index, minlength=len(names)).tolist()
    scores = torch.cat([FAMILIES[name](count, length, generator) for name, count in zip(names, counts) if count])
    rescale = torch.rand(batch_size, 1, generator=generator) < affine_probability
    scale, shift = random_affine_parameters(batch_size, generator)
    scores = torch.addcmul(torch.where(rescale, shift, 0.0), scores, torch.where(rescale, scale, 1.0))
    return scores, exact_ranks_cpu(scores), family_index


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
