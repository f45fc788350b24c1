"""Synthetic score sequences and their exact ranks, for pretraining and evaluating sorters.

The families extend those of the original SoDeep generator (Engilberge et al., CVPR 2019: uniform,
normal, linear ranges, shuffled ranges, concatenated mixtures) with what real scores look like:
ties and repeated values, heavy tails, skew, outliers, sorted input and near-constant rows
(:data:`FAMILIES`).  Each row also gets, with probability ``affine_probability``, a random positive
scale log-uniform in [1e-4, 1e4] and a shift of up to 10 times the scale, so a sorter meets ages in
years, logits and tiny scores alike.

Each family is a few vectorized torch operations on a ``(rows, n)`` block of float32, the dtype of
the scores returned, drawn from one explicit ``torch.Generator``.  The finished scores are ranked by
:func:`sodeep.rank`, so the ranks are exact for the values returned, ties made by float rounding
included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Integral, Real

import torch
from torch.utils.data import IterableDataset, get_worker_info

from sodeep.checks import check_integer
from sodeep.ranks import rank

# Random positive scales are log-uniform over +-SCALE_DECADES decades; shifts are at most
# MAX_RELATIVE_SHIFT times the scale (a shift of 1e4 on values of 1e-4 would fall below float32
# resolution: ties made by the representation, not by the data).
SCALE_DECADES = 4.0
MAX_RELATIVE_SHIFT = 10.0
# Share of entries of the "outliers" family multiplied by 10 to 1000.
OUTLIER_FRACTION = 0.05
# Level of the "near_constant" rows' noise relative to their constant (in [1, 2)).
NEAR_CONSTANT_NOISE = 1e-3
# Scores are clipped to this magnitude: a heavy-tailed draw (Student-t with one degree of freedom
# over a near-zero denominator) times the largest scale may overflow float32, and scores stay finite.
MAX_MAGNITUDE = 1e30


def _uniform01(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, dtype=torch.float32, generator=generator, device=generator.device)


def _standard_normal(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float32, generator=generator, device=generator.device)


def _integers(generator: torch.Generator, low: int, high: int, *shape: int) -> torch.Tensor:
    """Uniform integers in ``[low, high)``."""
    return torch.randint(low, high, shape, generator=generator, device=generator.device)


def _columns(n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` float32 column indices ``0 .. n - 1``."""
    return torch.arange(n, dtype=torch.float32, device=generator.device)


def _uniform(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return 2.0 * _uniform01(generator, rows, n) - 1.0


def _normal(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return _standard_normal(generator, rows, n)


def _linear(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    start, stop = _uniform01(generator, rows, 1), _uniform01(generator, rows, 1)
    return start + (stop - start) / n * _columns(n, generator)  # SoDeep's arange(a, b, (b - a) / n)


def _shuffled_linear(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    linear = _linear(rows, n, generator)
    return linear.gather(-1, _uniform01(generator, rows, n).argsort(-1))  # a uniform random permutation


def _uniform_normal(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    in_prefix = _columns(n, generator) < _integers(generator, 1, n + 1, rows, 1)
    return torch.where(in_prefix, _uniform(rows, n, generator), _normal(rows, n, generator))


def _shuffled_linear_uniform(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    prefix = _integers(generator, 1, n + 1, rows, 1)
    in_prefix = _columns(n, generator) < prefix
    start, stop = _uniform01(generator, rows, 1), _uniform01(generator, rows, 1)
    linear = start + (stop - start) / prefix * _columns(n, generator)  # valid in the first `prefix` columns
    # Random keys, those after the prefix above every prefix key: the prefix column with the i-th
    # smallest key takes the i-th value of the range, a uniform random shuffle of the prefix.
    keys = torch.where(in_prefix, _uniform01(generator, rows, n), 2.0)
    shuffled = torch.empty_like(linear).scatter_(-1, keys.argsort(-1), linear)
    return torch.where(in_prefix, shuffled, _uniform(rows, n, generator))


def _ties(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    levels = _integers(generator, 2, n // 2 + 3, rows, 1)
    return torch.floor(_uniform01(generator, rows, n) * levels)


def _repeated(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    base = _normal(rows, n, generator)
    copied = _uniform01(generator, rows, n) < 0.5 * _uniform01(generator, rows, 1)
    copy_of = base.gather(-1, _integers(generator, 0, n, rows, n))
    return torch.where(copied, copy_of, base)


def _cauchy(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(rows, n, dtype=torch.float32, device=generator.device).cauchy_(generator=generator)


def _student_t(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    # t = Z / sqrt(chi2_d / d), chi2_d a sum of d squared normals: the first d of 5 per entry.
    dof = _integers(generator, 1, 6, rows, 1)
    squares = _standard_normal(generator, rows, n, 5).square()
    chi2 = (squares * (torch.arange(5, device=generator.device) < dof[..., None])).sum(-1)
    return _normal(rows, n, generator) / torch.sqrt(chi2 / dof)


def _lognormal(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    sigma = 0.25 + 1.75 * _uniform01(generator, rows, 1)
    return torch.exp(sigma * _normal(rows, n, generator))


def _outliers(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    is_outlier = _uniform01(generator, rows, n) < OUTLIER_FRACTION
    factor = 10.0 ** (1.0 + 2.0 * _uniform01(generator, rows, n))
    return _normal(rows, n, generator) * torch.where(is_outlier, factor, 1.0)


def _sorted(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return _normal(rows, n, generator).sort(-1).values


def _reverse_sorted(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return _normal(rows, n, generator).sort(-1, descending=True).values


def _near_constant(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    level = 1.0 + _uniform01(generator, rows, 1)
    return level + NEAR_CONSTANT_NOISE * _normal(rows, n, generator)


# Name -> (description, sampler): a sampler maps (rows, n, generator) to (rows, n) float32 values.
_FAMILY_TABLE: dict[str, tuple[str, Callable[[int, int, torch.Generator], torch.Tensor]]] = {
    "uniform": ("U(-1, 1)", _uniform),
    "normal": ("N(0, 1)", _normal),
    "linear": ("SoDeep's arange(a, b, (b - a) / n), a, b ~ U(0, 1), in order", _linear),
    "shuffled_linear": ("the linear range, shuffled", _shuffled_linear),
    "uniform+normal": ("a U(-1, 1) prefix of random length 1..n, then N(0, 1)", _uniform_normal),
    "shuffled_linear+uniform": (
        "a shuffled linear range of random length k in 1..n, then U(-1, 1)",
        _shuffled_linear_uniform,
    ),
    "ties": ("integers floor(U * L), L from 2 to n/2 + 2 levels: ratings, votes", _ties),
    "repeated": ("N(0, 1) where a random fraction (up to half) of entries copy another entry", _repeated),
    "cauchy": ("standard Cauchy", _cauchy),
    "student_t": ("Student-t with 1 to 5 degrees of freedom per row", _student_t),
    "lognormal": ("exp(sigma * N(0, 1)), sigma ~ U(0.25, 2)", _lognormal),
    "outliers": ("N(0, 1) where about 5% of entries are multiplied by 10 to 1000", _outliers),
    "sorted": ("N(0, 1), sorted ascending", _sorted),
    "reverse_sorted": ("N(0, 1), sorted descending", _reverse_sorted),
    "near_constant": ("c + 1e-3 N(0, 1), c ~ U(1, 2): float32 keeps about 4 digits of the noise", _near_constant),
}

#: Name -> what a row of the family looks like.
FAMILIES: dict[str, str] = {name: description for name, (description, _) in _FAMILY_TABLE.items()}


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``.  torch's CPU generator keeps a seed's low 32
    bits: seeds that agree modulo ``2**32`` give the same draws."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def checked_families(families: Sequence[str] | None) -> list[str]:
    """``families`` as a list of names from :data:`FAMILIES` (all of them for ``None``); a
    ``TypeError`` for a lone name, a mapping or a set (whose order, which the seeded draws follow,
    changes from one process to the next), a ``ValueError`` for an unknown or empty list."""
    if isinstance(families, (str, bytes, dict)):
        raise TypeError(
            f"families must be a list of names, e.g. ['uniform'], got {type(families).__name__} {families!r}"
        )
    if isinstance(families, (set, frozenset)):
        raise TypeError(
            f"families must be a list of names, not a {type(families).__name__}: the draws follow the families' "
            f"order, which a set changes from one process to the next; give sorted({families!r}) or a list"
        )
    names = list(FAMILIES) if families is None else list(families)
    if not names or not all(isinstance(name, str) and name in FAMILIES for name in names):
        raise ValueError(f"families must be a non-empty subset of {list(FAMILIES)}, got {names}")
    return names


def _check_affine_probability(affine_probability: float) -> None:
    if isinstance(affine_probability, bool) or not isinstance(affine_probability, Real):
        raise TypeError(f"affine_probability must be a number in [0, 1], got {affine_probability!r}")
    if not 0.0 <= affine_probability <= 1.0:
        raise ValueError(f"affine_probability must be in [0, 1], got {affine_probability}")


def _random_affine(values: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """``values`` ``(B, n)`` with, per row and with ``probability``, ``scale * x + shift``: scale
    log-uniform over +-:data:`SCALE_DECADES` decades, shift uniform within +-:data:`MAX_RELATIVE_SHIFT`
    times the scale."""
    rows = values.shape[0]
    applies = _uniform01(generator, rows, 1) < probability
    scale = 10.0 ** (SCALE_DECADES * (2.0 * _uniform01(generator, rows, 1) - 1.0))
    shift = MAX_RELATIVE_SHIFT * scale * (2.0 * _uniform01(generator, rows, 1) - 1.0)
    return torch.where(applies, values * scale + shift, values)


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
        generator: the only source of randomness, a ``torch.Generator`` (outputs live on its
            device) or an int seed for :func:`make_generator`; the same seed gives the same batch,
            as do seeds that agree modulo ``2**32`` (``None``, i.e. torch's global generator, is
            refused).
        families: names from :data:`FAMILIES`.
        affine_probability: chance of a random positive affine transform per row.

    Returns:
        ``(scores, ranks, family_index)``: float32 ``(B, n)``, float32 ``(B, n)`` and int64
        ``(B,)``.  ``ranks`` are :func:`sodeep.rank` of ``scores`` (descending, ties averaged,
        normalized by n).  ``family_index`` indexes ``families`` and is sorted: rows come grouped
        by family.

    Example:
        >>> scores, ranks, family = generate_sequences(4, 10, make_generator(0))
        >>> scores.shape, ranks.shape, family.shape
        (torch.Size([4, 10]), torch.Size([4, 10]), torch.Size([4]))
        >>> bool((ranks == rank(scores)).all())
        True
    """
    if isinstance(generator, Integral) and not isinstance(generator, bool):
        check_integer(generator, "seed", -(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
        generator = make_generator(generator)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or an int seed, got {type(generator).__name__} "
            "(no hidden global randomness: the same seed must give the same batch)"
        )
    names = checked_families(families)
    _check_affine_probability(affine_probability)
    check_integer(batch_size, "batch_size", 1)
    check_integer(length, "length", 1)

    family_index = _integers(generator, 0, len(names), batch_size).sort().values
    counts = torch.bincount(family_index, minlength=len(names)).tolist()
    blocks = [_FAMILY_TABLE[name][1](count, length, generator) for name, count in zip(names, counts) if count]
    values = _random_affine(torch.cat(blocks), affine_probability, generator)
    scores = values.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
    return scores, rank(scores), family_index


#: Odd multiplier of the stream seed (2^64 / golden ratio): seeds map one-to-one onto 64-bit offsets
#: spread far apart, and seed 0 onto offset 0.
_SEED_MULTIPLIER = 0x9E3779B97F4A7C15


#: The fewest batches between two streams whose seeds are less than 1,000 apart (see
#: :func:`stream_batch_seed`).
STREAMS_APART = 1_176_378


def stream_batch_seed(seed: int, index: int) -> int:
    """The ``torch.Generator`` seed of batch ``index`` of stream ``seed``: ``seed * M + index``
    modulo ``2**64`` with an odd ``M`` of 64 bits.  torch's CPU generator keeps the low 32 bits of
    a seed, so batch ``k`` of stream ``s`` and batch ``k'`` of another stream ``s'`` draw alike
    where ``k' - k = (s - s') * M`` modulo ``2**32``.  For seeds less than 1,000 apart that offset
    is at least :data:`STREAMS_APART` (1,176,378) batches either way, so runs shorter than that
    never draw a batch of each other's (for seeds less than 10,000 apart, 228,091).  Seeds that
    agree modulo ``2**32`` give one stream."""
    return (int(seed) * _SEED_MULTIPLIER + int(index)) % 2**64


class SyntheticSequences(IterableDataset):
    """Endless stream of ``(scores, ranks)`` batches for pretraining (use ``batch_size=None`` in the
    ``DataLoader``), each as :func:`generate_sequences` returns them.

    Batch ``k`` is :meth:`batch` ``(k)``, a pure function of ``(seed, k)``, so a resumed run
    continues the exact stream: set ``start_batch`` to the number of batches already consumed.
    Each batch draws its length uniformly from ``lengths``.  With several DataLoader workers,
    worker ``w`` of ``W`` yields batches ``start_batch + w, start_batch + w + W, ...``: the
    DataLoader interleaves them into the same stream.  In a distributed run of ``world_size``
    processes, process ``rank`` yields batches ``start_batch + rank, start_batch + rank +
    world_size, ...``: the processes share out the one stream, each step taking its next
    ``world_size`` batches, and no two processes draw the same batch.

    Example:
        >>> stream = SyntheticSequences(batch_size=8, lengths=[5, 10], seed=0)
        >>> scores, ranks = next(iter(stream))
        >>> scores.shape[0], scores.shape[1] in (5, 10), torch.equal(scores, stream.batch(0)[0])
        (8, True, True)

    Args:
        batch_size: sequences per batch, ``>= 1``.
        lengths: the lengths a batch draws from, each ``>= 2``.
        seed, families, affine_probability: as :func:`generate_sequences`.
        start_batch: the first batch to yield (the batches a resumed run has consumed).
        rank, world_size: this process's share of the stream in a distributed run.
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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        given = lengths
        lengths = list(lengths) if isinstance(lengths, Iterable) and not isinstance(lengths, (str, bytes)) else None
        whole = lengths is not None and all(isinstance(n, Integral) and not isinstance(n, bool) for n in lengths)
        if not lengths or not whole or min(lengths) < 2:
            hint = " (parse a text like '2-8' with sodeep.config.parse_lengths)" if isinstance(given, str) else ""
            if isinstance(given, Integral) and not isinstance(given, bool) and given >= 2:
                hint = f" (one length is a list of one: [{given}])"
            raise ValueError(f"lengths must be a non-empty list of ints >= 2, got {given!r}{hint}")
        check_integer(batch_size, "batch_size", 1)
        check_integer(seed, "seed", -(2**63), 2**63 - 1)
        check_integer(start_batch, "start_batch", 0, 2**62)  # batch indices stay below 2**63 - 1
        check_integer(world_size, "world_size", 1)
        check_integer(rank, "rank", 0, world_size - 1)
        names = None if families is None else checked_families(families)  # one copy: an iterator is read once
        _check_affine_probability(affine_probability)
        self.batch_size = int(batch_size)
        self.lengths = [int(n) for n in lengths]
        # Python ints: NumPy's fixed-width ones would overflow in the batch arithmetic.
        self.seed = int(seed)
        self.families = names
        self.affine_probability = affine_probability
        self.start_batch = int(start_batch)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``index`` of the stream: ``(scores, ranks)``, each ``(batch_size, n)``."""
        check_integer(index, "index", 0, 2**63 - 2)
        generator = make_generator(stream_batch_seed(self.seed, index))
        length = self.lengths[int(_integers(generator, 0, len(self.lengths), 1))]
        scores, ranks, _ = generate_sequences(
            self.batch_size,
            length,
            generator,
            families=self.families,
            affine_probability=self.affine_probability,
        )
        return scores, ranks

    def process_batch_index(self, position: int) -> int:
        """Stream index of this process's batch number ``position`` (0, 1, ...):
        ``start_batch + rank + position * world_size``."""
        return self.start_batch + self.rank + position * self.world_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        position, workers = (0, 1) if info is None else (info.id, info.num_workers)
        while True:  # DataLoader workers take turns over this process's batches
            yield self.batch(self.process_batch_index(position))
            position += workers
