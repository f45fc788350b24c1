"""Synthetic score sequences and their exact ranks, for pretraining and evaluating sorters.

The families extend those of the original SoDeep generator (uniform, normal, linear ranges,
shuffled ranges, concatenated mixtures) with what real scores look like: ties and repeated values,
heavy tails, skew, outliers, sorted input and near-constant rows.  Generation is batched: one call
builds a ``(B, n)`` tensor with one vectorized draw per family present in the batch (a Python loop
over the ~15 families, never over elements or rows), driven by an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from sodeep.ranks import rank

Sampler = Callable[[int, int, torch.Generator], torch.Tensor]

# Largest decade of the random positive scale applied to sequences: scales are log-uniform in
# [1e-4, 1e4], as the issue asks, so a sorter meets ages in years, logits and tiny scores alike.
SCALE_DECADES = 4.0
# Shifts are a multiple of the scale: a shift of 1e4 on values of size 1e-4 would fall below
# float32 resolution and create ties that are an artefact of the representation, not of the data.
MAX_RELATIVE_SHIFT = 10.0


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
    order = torch.rand(x.shape, generator=gen).argsort(dim=-1)
    return x.gather(-1, order)


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


def _student_t(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Student-t with 1 to 5 degrees of freedom per row: normal / sqrt(chi2 / dof)."""
    dof = torch.randint(1, 6, (batch, 1), generator=gen).float()
    normal = torch.randn(batch, n, generator=gen)
    # chi2(dof) as a sum of squared normals; dof <= 5 so draw 5 and mask the surplus.
    squares = torch.randn(batch, n, 5, generator=gen).square()
    keep = torch.arange(5) < dof.unsqueeze(-1)
    chi2 = (squares * keep).sum(-1)
    return normal / torch.sqrt(chi2 / dof)


def _lognormal(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    sigma = 0.25 + 1.75 * torch.rand(batch, 1, generator=gen)
    return torch.exp(sigma * torch.randn(batch, n, generator=gen))


def _outliers(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Normal scores where about 5% of entries are multiplied by 10 to 1000."""
    base = torch.randn(batch, n, generator=gen)
    magnitude = 10 ** (1 + 2 * torch.rand(batch, n, generator=gen))
    is_outlier = torch.rand(batch, n, generator=gen) < 0.05
    return torch.where(is_outlier, base * magnitude, base)


def _sorted(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, n, generator=gen).sort(dim=-1).values


def _reverse_sorted(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(batch, n, generator=gen).sort(dim=-1, descending=True).values


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


def random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Apply ``a * x + b`` per row with ``a`` log-uniform in [1e-4, 1e4] and ``|b| <= 10 a``."""
    batch = x.shape[0]
    scale = 10 ** (SCALE_DECADES * (2 * torch.rand(batch, 1, generator=gen) - 1))
    shift = scale * MAX_RELATIVE_SHIFT * (2 * torch.rand(batch, 1, generator=gen) - 1)
    return x * scale + shift


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def generate_sequences(
    batch_size: int,
    length: int,
    generator: torch.Generator,
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
        generator: the only source of randomness; the same seed gives the same batch.
        families: names from :data:`FAMILIES`.
        affine_probability: chance of a random positive affine transform per row.

    Returns:
        ``(scores, ranks, family_index)`` with shapes ``(B, n)``, ``(B, n)``, ``(B,)``; ranks in
        the convention of :func:`sodeep.rank` (descending, average ties, normalized by n);
        ``family_index`` indexes ``families``.

    Example:
        >>> scores, ranks, family = generate_sequences(4, 10, make_generator(0))
        >>> scores.shape, ranks.shape, family.shape
        (torch.Size([4, 10]), torch.Size([4, 10]), torch.Size([4]))
    """
    names = list(FAMILIES) if families is None else list(families)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {names}")
    if batch_size < 1 or length < 1:
        raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
    if not 0.0 <= affine_probability <= 1.0:
        raise ValueError(f"affine_probability must be in [0, 1], got {affine_probability}")

    family_index = torch.randint(0, len(names), (batch_size,), generator=generator)
    scores = torch.empty(batch_size, length)
    for index, name in enumerate(names):
        rows = (family_index == index).nonzero().squeeze(-1)
        if rows.numel():
            scores[rows] = FAMILIES[name](rows.numel(), length, generator)
    rescale = torch.rand(batch_size, 1, generator=generator) < affine_probability
    scores = torch.where(rescale, random_affine(scores, generator), scores)
    return scores, rank(scores), family_index


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
