"""The differentiable rankers the benchmark compares, each at named settings.

A :class:`Ranker` maps scores ``(B, n)`` to ranks ``(B, n)`` in :func:`sodeep.rank`'s convention
(descending, ties averaged, normalized by ``n``).  Rankers built from a soft permutation matrix
(NeuralSort, SoftSort, diffsort) also expose it, ``P[b, k, i]``: how much element ``i`` sits at
descending position ``k``, and their native loss against the true permutation.  A
:class:`RankerFamily` builds a ranker from one value of its sharpness parameter and names its
default, its sharper setting and the small grid the learning-to-sort task searches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from sodeep.checks import ranks_described
from sodeep.ranks import rank
from sodeep.sorters.base import row_scale

RankFunction = Callable[[torch.Tensor], torch.Tensor]
#: Keeps log() of a soft permutation finite where an entry underflowed to 0.
LOG_FLOOR = 1e-9
#: Sorter weights shipped beside the default sorter (``pretrained/``).
#: Shipped original SoDeep sorters (model card): the CNN and the LSTM (the original's ``lstm``:
#: ``OriginalLSTMLargeSorter`` with 128 hidden units), by the name the benchmark gives them.
ORIGINAL_FILES = {"original_cnn": "original_cnn_n100.pt", "original_lstm": "original_lstm_n100.pt"}


#: What a :class:`Ranker` gives: exact ranks (no gradient), soft ranks, or a soft permutation too.
KINDS = ("exact", "rank", "permutation")


def check_rankers(rankers: Any) -> None:
    """Refuse anything but a sequence of :class:`Ranker` (a function or a sorter is wrapped in one)."""
    for ranker in rankers:
        if not isinstance(ranker, Ranker):
            raise TypeError(
                f"rankers must be sodeep.benchmark.rankers.Ranker objects, got {type(ranker).__name__}: wrap a function "
                "or sorter of (B, n) scores as Ranker(family='mine', setting='', kind='rank', rank=function)"
            )
    labels = [ranker.label for ranker in rankers]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"rankers need labels of their own (family and setting), got {repeated} more than once")


@dataclass(frozen=True)
class Ranker:
    """One ranker at one setting.

    Attributes:
        family, setting: e.g. ``"neuralsort"``, ``"T=0.1"``; ``label`` joins them.
        kind: ``"exact"`` (no gradient), ``"rank"`` (rank vector) or ``"permutation"``.
        rank: ``(B, n) -> (B, n)`` ranks in sodeep's convention.
        permutation: ``(B, n) -> (B, n, n)`` soft descending permutation, for permutation rankers.
        native_loss: ``(P, true_P) -> scalar``, the loss its paper trains with, if any.
        lengths: the ``n`` it accepts, ``(low, high)``; ``high=None`` for any.
        footprint: elements a forward and backward of ``(B, n)`` scores keep (its largest
            intermediates); the speed and fidelity parts skip a cell above the budget, the
            regression a ranker whose batch, ranked as one row, is above it.
    """

    family: str
    setting: str
    kind: str
    rank: RankFunction
    permutation: Callable[[torch.Tensor], torch.Tensor] | None = None
    native_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    lengths: tuple[int, int | None] = (2, None)
    footprint: Callable[[int, int], float] = lambda batch, n: batch * n * n

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not callable(self.rank):
            raise ValueError(
                f"a Ranker needs kind in {list(KINDS)} and a callable rank, got kind {self.kind!r} and rank "
                f"{type(self.rank).__name__}"
            )

    @property
    def label(self) -> str:
        return f"{self.family} {self.setting}".strip()

    def checked_rank(self, scores: torch.Tensor) -> torch.Tensor:
        """``rank(scores)``, refused in one line unless it gives floating ranks of the scores' shape,
        with a gradient where the scores need one and the ranker is not ``"exact"``."""
        ranks = self.rank(scores)
        if not isinstance(ranks, torch.Tensor) or ranks.shape != scores.shape or not ranks.is_floating_point():
            raise ValueError(
                f"ranker {self.label!r} returned {ranks_described(ranks)} for scores of shape {tuple(scores.shape)}: a ranker maps (B, n) "
                "scores to (B, n) floating ranks, descending and divided by n (sodeep.rank's convention)"
            )
        if scores.requires_grad and not ranks.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                f"ranker {self.label!r} returned ranks with no gradient, so nothing trains through it: a ranker "
                "without one has kind 'exact' and is measured in the fidelity and speed parts only"
            )
        return ranks

    def accepts(self, n: int) -> bool:
        low, high = self.lengths
        return n >= low and (high is None or n <= high)

    def refusal(self, batch: int, n: int, max_elements: float) -> str | None:
        """Why a cell of ``batch`` rows of ``n`` is left out (``n`` refused, or a footprint above
        ``max_elements``), or ``None`` when it runs."""
        if not self.accepts(n):
            return f"accepts {self.accepted_lengths}"
        if self.footprint(batch, n) > max_elements:
            return f"memory: ~{self.footprint(batch, n):.2g} elements > {max_elements:.2g}"
        return None

    @property
    def accepted_lengths(self) -> str:
        """The ``n`` it accepts, in words: ``"n = 100 only"``, ``"n in 2..256"``, ``"n >= 2"``."""
        low, high = self.lengths
        if high is None:
            return f"n >= {low}"
        return f"n = {low} only" if low == high else f"n in {low}..{high}"


@dataclass(frozen=True)
class RankerFamily:
    """A ranker with one sharpness parameter: ``build(value)``; ``value=None`` for fixed rankers."""

    name: str
    parameter: str
    default: float | None
    sharp: float | None
    grid: tuple[float, ...]
    build: Callable[[float | None], Ranker]
    note: str = ""
    extra: dict = field(default_factory=dict)

    def settings(self, which: str) -> list[float | None]:
        """``"default"``, ``"default+sharp"`` or ``"grid"`` (the default first)."""
        if which == "default" or self.default is None:
            return [self.default]
        if which == "default+sharp":
            return [self.default, self.sharp]
        return [self.default, *[value for value in self.grid if value != self.default]]


def setting_name(parameter: str, value: float | None) -> str:
    return "" if value is None else f"{parameter}={value:g}"


def ranks_from_permutation(permutation: torch.Tensor) -> torch.Tensor:
    """``rank_i = sum_k (k + 1) P[k, i] / n``: ``(B, n, n) -> (B, n)``."""
    n = permutation.shape[-1]
    positions = torch.arange(1, n + 1, dtype=permutation.dtype, device=permutation.device)
    return (positions.unsqueeze(-1) * permutation).sum(-2) / n


def neuralsort_permutation(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """NeuralSort's soft permutation (Grover et al., ICLR 2019) on row-standardized scores, the
    matrix behind :func:`sodeep.sorters.neuralsort_rank`: ``(B, n) -> (B, n, n)``."""
    s = scores / row_scale(scores)
    n = s.shape[-1]
    absolute_sum = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs().sum(-1)
    scaling = n + 1 - 2 * torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    logits = scaling.unsqueeze(-1) * s.unsqueeze(-2) - absolute_sum.unsqueeze(-2)
    return torch.softmax(logits / temperature, dim=-1)


def softsort_permutation(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """SoftSort's soft permutation (Prillo & Eisenschlos, ICML 2020), the matrix behind
    :func:`sodeep.sorters.softsort_rank`: ``(B, n) -> (B, n, n)``."""
    s = scores / row_scale(scores)
    sorted_scores = s.sort(dim=-1, descending=True).values
    return torch.softmax(-(sorted_scores.unsqueeze(-1) - s.unsqueeze(-2)).abs() / temperature, dim=-1)


def row_cross_entropy(permutation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NeuralSort's and SoftSort's loss: cross-entropy of each row of ``P`` (a distribution over
    elements) with the element truly at that position.  ``(B, n, n), (B, n, n) -> scalar``."""
    return -(target * permutation.clamp_min(LOG_FLOOR).log()).sum(-1).mean()


def permutation_binary_cross_entropy(permutation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """diffsort's loss (Petersen et al., ICML 2021): binary cross-entropy of every entry."""
    return F.binary_cross_entropy(permutation.clamp(LOG_FLOOR, 1 - LOG_FLOOR), target)


def true_permutation(values: torch.Tensor) -> torch.Tensor:
    """The exact descending permutation matrix ``P[b, k, i] = 1`` iff element ``i`` is ``k``-th
    largest (ties by position): ``(B, n) -> (B, n, n)``, the dtype of ``values`` (float32 for ints)."""
    order = values.argsort(dim=-1, descending=True, stable=True)
    dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    return F.one_hot(order, values.shape[-1]).to(dtype)


def _fixed_temperature(family: str, sorter_class, permutation_function, native) -> Callable:
    def build(temperature: float | None) -> Ranker:
        permutation = None
        if permutation_function is not None:

            def permutation(scores: torch.Tensor) -> torch.Tensor:
                return permutation_function(scores, temperature)

        return Ranker(
            family=family,
            setting=setting_name("T", temperature),
            kind="rank" if permutation is None else "permutation",
            rank=sorter_class(temperature),
            permutation=permutation,
            native_loss=native,
        )

    return build


def _build_exact(_: float | None) -> Ranker:
    return Ranker("exact", "", "exact", lambda scores: rank(scores), footprint=lambda batch, n: batch * n)


def _build_shipped(floor: float | None) -> Ranker:
    """The shipped sorter with a temperature floor (what the rank losses use); floor 0: the
    sharp, scale-free sorter that ``load_sorter()`` returns."""
    from sodeep.checkpoints import load_sorter

    sorter = load_sorter(temperature_floor=floor or None)
    band = sorter.band or 0
    return Ranker(
        "sodeep (shipped)",
        setting_name("floor", floor),
        "rank",
        sorter,
        lengths=(2, sorter.max_length),
        footprint=lambda batch, n: batch * n * (2 * band + 16),
    )


def _original_builder(architecture: str) -> Callable[[float | None], Ranker]:
    def build(_: float | None) -> Ranker:
        from sodeep.checkpoints import default_sorter_path, load_sorter

        path = default_sorter_path(ORIGINAL_FILES[architecture])
        if not path.is_file():
            raise FileNotFoundError(
                f"no pretrained {architecture} sorter at {path} (sodeep pretrain, see the model card)"
            )
        sorter = load_sorter(path).requires_grad_(False)
        length = sorter.max_length
        return Ranker(
            f"{architecture} (pretrained)",
            f"n={length}",
            "rank",
            sorter,
            lengths=(length, length),
            footprint=lambda batch, n: batch * n * 512,
        )

    return build


def _build_torchsort(strength: float | None) -> Ranker:
    import torchsort

    from sodeep.losses import descending_normalized

    ranker = descending_normalized(lambda scores: torchsort.soft_rank(scores, regularization_strength=strength))
    return Ranker("torchsort", setting_name("eps", strength), "rank", ranker, footprint=lambda batch, n: 8 * batch * n)


def _diffsort_network(n: int):
    import diffsort

    # Bitonic networks need a power of two; odd-even transposition takes any n (n layers).
    kind = "bitonic" if n & (n - 1) == 0 else "odd_even"
    return diffsort.networks.get_sorting_network(kind, n, "cpu")


def _diffsort_layers(n: int) -> int:
    return int(math.log2(n)) * (int(math.log2(n)) + 1) // 2 if n & (n - 1) == 0 else n


def _build_diffsort(steepness: float | None) -> Ranker:
    import diffsort

    networks: dict = {}

    def permutation(scores: torch.Tensor) -> torch.Tensor:
        n = scores.shape[-1]
        key = (n, scores.device, scores.dtype)
        if key not in networks:
            networks[key] = [[m.to(scores.device, scores.dtype) for m in layer] for layer in _diffsort_network(n)]
        # diffsort sorts ascending and returns X[b, i, k]: element i at ascending position k.
        _, ascending = diffsort.sort(networks[key], scores, steepness=steepness, distribution="cauchy")
        return ascending.flip(-1).transpose(-2, -1)

    return Ranker(
        "diffsort",
        setting_name("steepness", steepness),
        "permutation",
        lambda scores: ranks_from_permutation(permutation(scores)),
        permutation=permutation,
        native_loss=permutation_binary_cross_entropy,
        # A few dense (B, n, n) matrices per layer of the network, kept for the backward: 413 MB
        # (3.2 B n^2 per layer) measured for a forward and backward at B=32, n=100.
        footprint=lambda batch, n: 4 * batch * n**2 * _diffsort_layers(n),
    )


def ranker_families() -> list[RankerFamily]:
    """Every family the benchmark knows, available here or not (see :func:`available_families`)."""
    from sodeep.checkpoints import TRAINING_SETTINGS
    from sodeep.sorters import NeuralSortSorter, PairwiseSigmoidSorter, SoftSortSorter

    return [
        RankerFamily("exact", "", None, None, (), _build_exact, "argsort, no gradient: the floor"),
        RankerFamily(
            "sodeep (shipped)",
            "floor",
            TRAINING_SETTINGS["temperature_floor"],
            0.0,
            (0.1, 0.03, 0.3),
            _build_shipped,
            "pretrained/conv_sorter.pt; floor: temperature floor in score units (0: none, load_sorter()'s default)",
        ),
        RankerFamily("original_cnn (pretrained)", "", None, None, (), _original_builder("original_cnn")),
        RankerFamily("original_lstm (pretrained)", "", None, None, (), _original_builder("original_lstm")),
        RankerFamily(
            "pairwise_sigmoid",
            "T",
            0.01,
            0.001,
            (0.01, 0.1),
            _fixed_temperature("pairwise_sigmoid", PairwiseSigmoidSorter, None, None),
        ),
        RankerFamily(
            "neuralsort",
            "T",
            0.01,
            0.001,
            (0.01, 1.0),
            _fixed_temperature("neuralsort", NeuralSortSorter, neuralsort_permutation, row_cross_entropy),
        ),
        RankerFamily(
            "softsort",
            "T",
            0.01,
            0.001,
            (0.01, 1.0),
            _fixed_temperature("softsort", SoftSortSorter, softsort_permutation, row_cross_entropy),
        ),
        RankerFamily("torchsort", "eps", 1.0, 0.01, (1.0, 0.1), _build_torchsort, "optional: pip install torchsort"),
        RankerFamily("diffsort", "steepness", 10.0, 100.0, (10.0, 30.0), _build_diffsort, "optional: diffsort"),
    ]


def available_families() -> tuple[list[RankerFamily], dict[str, str]]:
    """The families that build here, and ``{name: reason}`` for those that do not."""
    usable, missing = [], {}
    for family in ranker_families():
        try:
            family.build(family.default)
        except (ImportError, FileNotFoundError, ValueError) as error:
            missing[family.name] = f"{type(error).__name__}: {error}"
        else:
            usable.append(family)
    return usable, missing
