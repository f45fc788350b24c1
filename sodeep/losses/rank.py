"""Rank-based losses of SoDeep (Engilberge et al., CVPR 2019): a frozen differentiable sorter
turns scores into ranks, and the loss is a simple function of those ranks.

Every loss takes a ``sorter``: a ``Sorter`` (default: the shipped one with the temperature floor
that makes it teach, ``load_sorter(**TRAINING_SETTINGS)``)
or any callable mapping ``(B, n)`` scores to ranks in :func:`sodeep.rank`'s convention
(descending, normalized by ``n``), e.g. ``PairwiseSigmoidSorter`` or a wrapped torchsort
``soft_rank`` (see :func:`descending_normalized`).  The sorter is frozen: no gradient to its
parameters, eval mode whatever the model's mode, and it moves with ``.to(device)``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from numbers import Real

import torch
from torch import nn
from torch.nn import functional as F

from sodeep.checks import check_integer, require, require_number
from sodeep.losses.precision import float32_under_autocast
from sodeep.losses.validation import (
    check_binary,
    check_fixed_setting,
    check_rank,
    check_same_shape,
    check_scalar_margin,
    check_setting_device,
    check_tensor,
)
from sodeep.ranks import rank
from sodeep.sorters.conv import MAX_LENGTH
from sodeep.wording import shown_float

#: Any callable from ``(B, n)`` scores to ``(B, n)`` ranks in :func:`sodeep.rank`'s convention.
SorterFunction = Callable[[torch.Tensor], torch.Tensor]


class DescendingNormalized(nn.Module):
    """A sorter that returns ascending ranks in ``[1, n]`` (torchsort's ``soft_rank``, most
    soft-sort libraries), in sodeep's convention: it ranks the negated scores and divides by ``n``.
    Takes ``(n,)`` or ``(B, n)``, as the other sorters do, also where ``ascending_sorter`` takes
    rows only.  An ``nn.Module`` given as ``ascending_sorter`` is its submodule, so a loss that
    holds the wrapper freezes and moves it as it does any sorter.  Picklable wherever
    ``ascending_sorter`` is (a module-level function such as ``soft_rank``)."""

    def __init__(self, ascending_sorter: SorterFunction) -> None:
        super().__init__()
        check_sorter(ascending_sorter, "ascending_sorter")
        self.ascending_sorter = ascending_sorter

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if isinstance(scores, torch.Tensor) and scores.dim() == 1:  # torchsort's soft_rank takes rows only
            return self(scores.unsqueeze(0)).squeeze(0)
        ascending = self.ascending_sorter(-scores)
        if isinstance(ascending, torch.Tensor) and not ascending.is_floating_point():
            # argsort's order, say: divided by n, it would pass for ranks.
            raise TypeError(
                f"the ascending sorter returned {ascending.dtype} values: descending_normalized takes floating "
                "ascending ranks 1..n (an argsort's order is not ranks; integer ranks 1..n carry no gradient: cast "
                "them with .float())"
            )
        return ascending / scores.shape[-1]

    def extra_repr(self) -> str:  # (a loss shows its sorter by its extra_repr: the wrapped one in full)
        return repr(self.ascending_sorter)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def descending_normalized(ascending_sorter: SorterFunction) -> SorterFunction:
    """Adapt a sorter that returns ascending ranks in ``[1, n]`` (torchsort's ``soft_rank``,
    most soft-sort libraries) to sodeep's convention (:class:`DescendingNormalized`)."""
    return DescendingNormalized(ascending_sorter)


class FrozenSorterMixin(nn.Module):
    """Holds a frozen sorter: no gradient to its weights, eval mode whatever the owner's mode.

    The sorter passed in is frozen in place (``requires_grad_(False).eval()``), with a warning where
    it was loaded to fine-tune or has gradients on its weights: to go on training a sorter while a
    loss uses it, give the loss a frozen copy (``copy.deepcopy(sorter).requires_grad_(False)``).

    The sorter is a fixed part of the loss, not a submodule: it stays out of the owner's
    ``parameters()``, ``state_dict()`` and ``modules()`` (so a Lightning module that holds the
    loss has no module left in eval mode), yet moves with the loss (``.to(device)``, ``.double()``).
    A model that holds the same sorter as a submodule of its own sets its mode with its own
    (``model.train()``); the loss puts it back in eval mode before it ranks, so that a sorter with
    BatchNorm ranks with its fixed statistics, never updating them.
    """

    def _set_sorter(self, sorter: SorterFunction | None) -> None:
        if sorter is None:
            from sodeep.checkpoints import TRAINING_SETTINGS, load_sorter

            # On the CPU even under `with torch.device("meta")`: the weights keep their values.
            with torch.device("cpu"):
                sorter = load_sorter(**TRAINING_SETTINGS)
        check_sorter(sorter)
        values = None
        if isinstance(sorter, nn.Module):
            # A sorter loaded to fine-tune (load_sorter(trainable=True)) or in the middle of training
            # (gradients on its weights): the loss would stop that training without a word.  A sorter
            # just built is taken as it is: a fresh ConvSorter is a sorter in its own right (its design
            # ranks to a tenth of a position at softness 0.5), not only a start for training.
            weights = [weight for weight in sorter.parameters() if weight.requires_grad]
            if weights and (getattr(sorter, "loaded_to_fine_tune", False) or any(w.grad is not None for w in weights)):
                warnings.warn(
                    f"{type(self).__name__} froze the sorter given to it, in place (no gradient to its weights, eval "
                    "mode): a rank loss trains the model through a fixed sorter. To go on training this sorter "
                    "outside the loss, give the loss a frozen copy: sorter=copy.deepcopy(sorter).requires_grad_(False)",
                    stacklevel=3,
                )
            sorter.requires_grad_(False).eval()
            tensors = self._sorter_tensors(sorter)
            if not any(tensor.is_meta for tensor in tensors.values()):
                values = {name: tensor.detach().clone() for name, tensor in tensors.items()}
        object.__setattr__(self, "sorter", sorter)  # not registered as a submodule: see the class docstring
        # The frozen weights' values, outside the module: state_dict() leaves the sorter out, so
        # after `.to("meta")` or `to_empty()` (a model built on the meta device) they come from here.
        object.__setattr__(self, "_sorter_values", values)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "sorter":  # `loss.sorter = other`: frozen and kept out of the submodules too
            self._set_sorter(value)  # type: ignore[arg-type]
        else:
            super().__setattr__(name, value)

    def extra_repr(self) -> str:
        """``sorter=...``: the sorter's class and settings (a function: its name)."""
        sorter = getattr(self.sorter, "_orig_mod", self.sorter)  # a compiled sorter: the module it compiled
        if isinstance(sorter, nn.Module):
            return f"sorter={type(sorter).__name__}({sorter.extra_repr()})"
        return f"sorter={getattr(sorter, '__qualname__', None) or repr(sorter)}"

    @staticmethod
    def _sorter_tensors(sorter: nn.Module) -> dict[str, torch.Tensor]:
        return {**dict(sorter.named_parameters()), **dict(sorter.named_buffers())}

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if isinstance(self.sorter, nn.Module):
            before = self._sorter_tensors(self.sorter)
            if not any(tensor.is_meta for tensor in before.values()):  # the weights as they are now
                object.__setattr__(self, "_sorter_values", {name: t.detach().clone() for name, t in before.items()})
            self.sorter._apply(fn, *args, **kwargs)
            if self._sorter_values is not None:
                with torch.no_grad():  # the values the weights had before, in their new dtype and device
                    for name, tensor in self._sorter_tensors(self.sorter).items():
                        if not tensor.is_meta:
                            tensor.copy_(self._sorter_values[name])
                if hasattr(self.sorter, "has_meta_weights"):  # a Sorter: its weights are set again
                    self.sorter.weights_unset = self.sorter.has_meta_weights()
        return self

    def rank(self, scores: torch.Tensor) -> torch.Tensor:
        if isinstance(self.sorter, nn.Module):
            if self.sorter.training:  # a model that holds the sorter too set its mode (model.train())
                self.sorter.eval()
            weights = next(iter(self._sorter_tensors(self.sorter).values()), None)
            if weights is not None and isinstance(scores, torch.Tensor) and weights.device != scores.device:
                # A sorter on the meta device holds no values to move: to_empty gives them back.
                move = "to_empty(device=" if weights.is_meta else "to("
                raise ValueError(
                    f"the loss's sorter is on {weights.device} and the scores on {scores.device}: move the loss "
                    f"with the model, loss.{move}{str(scores.device)!r})"
                )
        check_length_for(self.sorter, scores)
        return self.sorter(scores)


def check_length_for(sorter: SorterFunction, scores: torch.Tensor) -> None:
    """Refuse rows ``scores`` ``(B, n)`` longer or shorter than a loss's ``sorter`` takes (its
    ``max_length`` and ``min_length``), saying how to give the loss another sorter."""
    if not isinstance(scores, torch.Tensor):
        return
    longest, shortest = getattr(sorter, "max_length", None), getattr(sorter, "min_length", None)
    if isinstance(shortest, int) and scores.shape[-1] < shortest:
        takes = f"only n={shortest}" if shortest == longest else f"n >= {shortest}"
        raise ValueError(
            f"the loss ranks rows of n={scores.shape[-1]} values, and its sorter takes {takes}. Where the loss "
            f"ranks across the batch, as for (n,) predictions and (N, N) similarities, this may be a last, "
            f"shorter batch, which drop_last=True leaves out. Or give the loss a sorter of other n, e.g. "
            f"sorter=load_sorter() (2 <= n <= {MAX_LENGTH:,})"
        )
    if isinstance(longest, int) and scores.shape[-1] > longest:
        shipped = f"load_sorter() (n <= {MAX_LENGTH:,}) or " if scores.shape[-1] <= MAX_LENGTH else ""
        raise ValueError(
            f"the loss ranks rows of n={scores.shape[-1]} values, more than its sorter takes ({longest}); give the "
            f"loss a sorter that takes them, e.g. sorter={shipped}PairwiseSigmoidSorter() (any n, memory B * n^2)"
        )


def check_sorter(sorter, name: str = "sorter") -> None:
    """A :data:`SorterFunction`: a ``Sorter``, an ``nn.Module`` or any callable (not a class);
    ``name``: the argument's name in errors."""
    if isinstance(sorter, type):
        raise TypeError(
            f"{name} is the class {sorter.__name__}, not a sorter: pass an instance (e.g. {sorter.__name__}()) "
            "or a function"
        )
    from sodeep.checkpoints import load_sorter
    from sodeep.sorters import build_sorter

    factory = sorter.func if isinstance(sorter, functools.partial) else sorter
    if any(factory is maker for maker in (load_sorter, build_sorter)):
        raise TypeError(
            f"{name} is the function {factory.__name__}, which makes a sorter, not a sorter: pass what it returns "
            f"({name}={factory.__name__}(...))"
        )
    if not callable(sorter):
        raise TypeError(
            f"{name} must be a Sorter, an nn.Module or a callable from (B, n) scores to ranks "
            f"(e.g. sodeep.load_sorter(); sodeep.rank too, for a loss value without gradient), got {type(sorter).__name__}"
        )


#: The range of a row's mean rank that a sorter's ranks may have: exact ones average (n + 1) / 2n,
#: in (0.5, 0.75]; learned sorters stray beyond (0, 1] at single elements, less in the mean.
MEAN_RANK_RANGE = (0.25, 1.0)


def sorter_ranks(sorter: SorterFunction, scores: torch.Tensor) -> torch.Tensor:
    """``sorter(scores)``, refused unless it is a floating tensor of the scores' shape whose rows
    average in :data:`MEAN_RANK_RANGE`, as ranks in (0, 1] do, the sorters' convention (descending
    ranks divided by n): a sorter that reduces, broadcasts or counts ranks 1..n would otherwise give
    a silently wrong loss."""
    check_length_for(sorter, scores)
    ranks = sorter(scores)
    if not isinstance(ranks, torch.Tensor) or ranks.shape != scores.shape:
        got = f"shape {tuple(ranks.shape)}" if isinstance(ranks, torch.Tensor) else type(ranks).__name__
        raise ValueError(
            f"the sorter returned {got} for scores of shape {tuple(scores.shape)}; a sorter maps (B, n) scores "
            "to (B, n) ranks"
        )
    if not ranks.is_floating_point():
        raise TypeError(
            f"the sorter returned {ranks.dtype} values, not ranks: a sorter returns floating ranks in (0, 1] "
            "(descending ranks divided by n), as sodeep.rank and the sorters of sodeep.sorters do"
        )
    mean = ranks.detach().mean(-1)
    require(
        ~mean.isnan(),
        "the sorter returned NaN ranks for finite scores: check the sorter (its weights, its temperature); a sorter "
        "of sodeep.sorters does not",
    )
    require(
        (mean >= MEAN_RANK_RANGE[0]) & (mean <= MEAN_RANK_RANGE[1]) & ~_rise_with(ranks.detach(), scores.detach()),
        "the sorter's ranks are not descending ranks in (0, 1] (a row averages outside [0.25, 1], or the "
        "ranks rise with the scores): wrap a sorter of ascending ranks 1..n, such as torchsort.soft_rank, in "
        "sodeep.losses.descending_normalized, divide descending ranks 1..n by n, or lower a soft ranker's "
        "temperature",
    )
    return ranks.to(scores.dtype)  # the losses return the scores' dtype, whatever the sorter's


#: Scores a batch needs for ranks that rise with them, however little they spread, to be refused
#: (a soft ranker at a high temperature may rank a few short rows any way) ...
RISING_CHECK_MIN_ELEMENTS = 32
#: ... and pairs of neighbouring entries that both the scores and the ranks order (rows of ties
#: and one lower score give one such pair each, which NeuralSort at T = 2 orders rising).
RISING_CHECK_MIN_PAIRS = 16


def _rise_with(ranks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Whether ``ranks`` rise with ``scores`` (both ``(..., n)``), as ascending ranks do: their
    correlation, pooled over the rows, is above 1/2 (descending ranks give -1, ties and constant
    rows 0), and they spread as ranks do; or, spread or not, over at least
    :data:`RISING_CHECK_MIN_ELEMENTS` scores, every two neighbouring entries of a row are ordered
    alike by the scores and by the ranks (where both order them, in at least
    :data:`RISING_CHECK_MIN_PAIRS` pairs), as ascending soft ranks at a high regularization are:
    nearly constant, but ordered as the scores.  Rows count by their spread
    (all scaled by one constant into [-1, 1]: no overflow), so rows of nearly equal scores, which a
    sorter may rank in any order, count for little."""
    wide = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(wide)
    largest = scores.abs().amax()
    scores = scores / torch.where(largest > 0, largest, 1.0)
    centred_scores = scores - scores.mean(-1, keepdim=True)
    centred_ranks = ranks.to(wide) - ranks.to(wide).mean(-1, keepdim=True)
    covariance = (centred_ranks * centred_scores).sum()
    rising = covariance > 0.5 * (centred_ranks.square().sum() * centred_scores.square().sum()).sqrt()
    # Ranks that spread like ranks (a standard deviation of 0.1 or more; exact ones have 0.25 to
    # 0.29): a soft ranker at a high temperature, nearly constant, may order a short row any way
    # (NeuralSort at T = 3 ranks 1 in 100 rows of 3 scores ascending, at a correlation near 1, and
    # at high temperatures ranks a far outlier among the first), while over a batch most of its
    # neighbouring entries stay in descending order.
    spread = centred_ranks.square().mean() >= 0.01
    alike = torch.sign(torch.diff(scores, dim=-1)) * torch.sign(torch.diff(ranks.to(wide), dim=-1))
    ordered_alike = (
        (alike >= 0).all()
        & ((alike > 0).sum() >= RISING_CHECK_MIN_PAIRS)
        & (scores.numel() >= RISING_CHECK_MIN_ELEMENTS)
    )
    return (rising & spread) | ordered_alike


def _as_rows(values: torch.Tensor) -> torch.Tensor:
    return values.unsqueeze(0) if values.dim() == 1 else values


@float32_under_autocast
def spearman_loss(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    sorter: SorterFunction,
    l1_weight: float = 0.0,
) -> torch.Tensor:
    """SoDeep's Spearman surrogate: ``MSE(sorter(predictions), rank(targets)) + l1_weight * L1``.

    With exact normalized ranks and no ties, ``MSE = (1 - rho) * (n^2 - 1) / (6 n^2)``, where
    ``rho`` is Spearman's correlation, so the loss is an affine function of ``1 - rho``.

    Args:
        predictions, targets: ``(n,)`` (one ranking over the batch) or ``(B, n)`` (rows ranked
            independently), ``n >= 2``; targets may be integers.
        sorter: see the module docstring.
        l1_weight: weight of ``L1(predictions, targets)``, an anchor on the raw values: a number
            or a 0-d tensor.

    Returns:
        A scalar.

    Example:
        >>> from sodeep.sorters import PairwiseSigmoidSorter
        >>> sorter = PairwiseSigmoidSorter(temperature=1e-3)
        >>> spearman_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0]), sorter)
        tensor(0.)
    """
    check_tensor(predictions, "predictions")
    check_tensor(targets, "targets", floating=False)  # integer targets (ages, counts) rank alike
    check_same_shape(predictions, targets, "predictions and targets")
    check_rank(predictions, "predictions", (1, 2), "(n,) or (B, n)", rows=True)
    check_setting_device(l1_weight, "l1_weight", predictions.device)
    check_l1_weight(l1_weight)
    check_sorter(sorter)
    if predictions.dim() == 2 and predictions.shape[-1] == 1 and predictions.shape[0] > 1:
        raise ValueError(
            f"predictions have shape {tuple(predictions.shape)}: one column of scores ranks nothing per row; "
            "to rank the batch, pass predictions.squeeze(-1) and targets.squeeze(-1) (shape (n,))"
        )
    if predictions.shape[-1] < 2:
        raise ValueError(
            f"ranking needs n >= 2 values per row, got shape {tuple(predictions.shape)} "
            "(a batch of one has no ranking; drop_last=True avoids it)"
        )
    # The targets' ranks first: otherwise Inductor on the CPU (torch 2.13) schedules a read of
    # their scatter before the scatter at some small shapes ((2, 4) to (2, 7)), and the compiled
    # gradient comes out NaN.
    # Whole ranks, exact in rank's float32 for integer targets, normalized in the wider of that and
    # the predictions' dtype: float64 predictions meet ranks of float64 precision.
    target_ranks = rank(_as_rows(targets), normalized=False)
    predicted_ranks = sorter_ranks(sorter, _as_rows(predictions))
    wide = torch.promote_types(target_ranks.dtype, predicted_ranks.dtype)
    target_ranks = (target_ranks.to(wide) / targets.shape[-1]).to(predicted_ranks.dtype)
    loss = F.mse_loss(predicted_ranks, target_ranks)
    if isinstance(l1_weight, torch.Tensor) or l1_weight:  # a tensor's value is not read (no host sync)
        # In at least float32: targets of 1e5 overflow a half-precision difference, not the weighted mean.
        wide = torch.promote_types(predictions.dtype, torch.float32)
        anchor = l1_weight * F.l1_loss(predictions.to(wide), targets.to(wide))
        loss = loss + anchor.to(loss.dtype)
    return loss


def check_l1_weight(l1_weight: float | torch.Tensor) -> None:
    """A finite number >= 0, or a 0-d tensor of one (checked without host synchronisation)."""
    if isinstance(l1_weight, torch.Tensor) and l1_weight.dim() == 0:
        require(torch.isfinite(l1_weight) & (l1_weight >= 0), "l1_weight must be a finite number >= 0")
    elif isinstance(l1_weight, bool) or not isinstance(l1_weight, Real):
        raise TypeError(f"l1_weight must be a finite number >= 0, got {type(l1_weight).__name__} {l1_weight!r}")
    elif torch.compiler.is_compiling():  # the number may be symbolic: checked without a graph break
        require_number(
            l1_weight, lambda weight: torch.isfinite(weight) & (weight >= 0), "l1_weight must be a finite number >= 0"
        )
    elif not 0 <= l1_weight < math.inf:
        raise ValueError(f"l1_weight must be a finite number >= 0, got {l1_weight!r}")


class SpearmanLoss(FrozenSorterMixin):
    """Module form of :func:`spearman_loss` with a frozen ``sorter``.

    Args:
        sorter: a :class:`~sodeep.sorters.Sorter` or any :data:`SorterFunction`; ``None`` loads the
            shipped sorter with the losses' temperature floor (``load_sorter(**TRAINING_SETTINGS)``,
            0.1 in the units of the scores).
        l1_weight: weight of the L1 anchor on raw values.

    Example:
        >>> from sodeep.sorters import PairwiseSigmoidSorter
        >>> loss = SpearmanLoss(sorter=PairwiseSigmoidSorter(temperature=1e-3))
        >>> loss(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 2.0]))
        tensor(0.2963)
    """

    def __init__(self, sorter: SorterFunction | None = None, l1_weight: float = 0.0) -> None:
        super().__init__()
        self._set_sorter(sorter)
        check_fixed_setting(l1_weight, "l1_weight", type(self).__name__, "spearman_loss")
        check_l1_weight(l1_weight)
        self.l1_weight = float(l1_weight)

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return spearman_loss(predictions, targets, self.rank, self.l1_weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_weight={shown_float(self.l1_weight)}"


@float32_under_autocast
def map_rank_loss(scores: torch.Tensor, labels: torch.Tensor, sorter: SorterFunction) -> torch.Tensor:
    """Mean-average-precision surrogate (SoDeep's ``MapRankingLoss``): for every class, rank the
    batch by that class's score and average the normalized ranks of its positives; average over
    the classes that have at least one positive.  Lower is better (positives ranked first).

    It is the mean rank of the positives, which average precision weighs otherwise: AP rewards
    the first positives most, while the mean rank counts every place alike, so the two agree only
    loosely (of 10 items, positives at places 1 and 10, or at 5 and 6, both have mean rank 0.55;
    their AP is 0.60 and 0.27).  Its minimum is AP's (all positives first).

    Args:
        scores: ``(B, C)`` multi-label scores, ``B >= 2``.
        labels: ``(B, C)`` in {0, 1}.
        sorter: see the module docstring; it ranks each class's column of ``scores``.

    Returns:
        A scalar; 0 (in the graph) if no class has a positive.

    Example:
        >>> from sodeep.sorters import PairwiseSigmoidSorter
        >>> scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.3]])  # 3 samples, 2 classes
        >>> map_rank_loss(scores, torch.tensor([[1, 0], [0, 1], [1, 0]]), PairwiseSigmoidSorter(temperature=1e-3))
        tensor(0.4167)

        (Class 0's positives are ranked 1st and 2nd of 3, class 1's 1st: ``(1/2 + 1/3) / 2``.)
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, C)", rows=True)
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    if scores.shape[0] < 2:
        raise ValueError(f"scores must have a batch of at least 2 to rank, got shape {tuple(scores.shape)}")
    check_sorter(sorter)
    try:
        ranks = sorter_ranks(sorter, scores.t())  # (C, B): each class ranks the batch
    except ValueError as error:
        if not any(part in str(error) for part in ("has length n=", "rows of n=")):  # refers to the transposed scores
            raise
        raise ValueError(
            f"{error} (map_rank_loss ranks each class's column of its (B, C) scores of shape "
            f"{tuple(scores.shape)}: the sorter's rows are the transposed (C, B), its n the batch size B)"
        ) from None
    positives = labels.t().to(ranks.dtype)
    count = positives.sum(-1)
    mean_positive_rank = (ranks * positives).sum(-1) / count.clamp_min(1)
    present = (count > 0).to(ranks.dtype)
    return (mean_positive_rank * present).sum() / present.sum().clamp_min(1)


class MapRankLoss(FrozenSorterMixin):
    """Module form of :func:`map_rank_loss`: ``loss(scores, labels)``, both ``(B, C)`` (``B >= 2``
    samples, ``C`` classes; labels in {0, 1}) -> a scalar."""

    def __init__(self, sorter: SorterFunction | None = None) -> None:
        super().__init__()
        self._set_sorter(sorter)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return map_rank_loss(scores, labels, self.rank)


def _check_square(scores: torch.Tensor) -> None:
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(N, N) with positives on the diagonal")
    if scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"scores must be square (N, N) with N >= 2, got shape {tuple(scores.shape)}")


@float32_under_autocast
def recall_rank_loss(scores: torch.Tensor, sorter: SorterFunction) -> torch.Tensor:
    """Recall surrogate (SoDeep's ``RankLoss``) for cross-modal retrieval: the mean normalized
    rank of each positive (the diagonal of ``scores``) in its row and in its column.

    Args:
        scores: ``(N, N)``, ``scores[i, j]`` = similarity of query ``i`` and item ``j``.
        sorter: see the module docstring; it ranks each row and each column of ``scores``.

    Returns:
        A scalar in ``[1/N, 1]``; ``1/N`` when every positive is ranked first both ways.

    Example:
        >>> from sodeep.sorters import PairwiseSigmoidSorter
        >>> similarities = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.8, 0.5], [0.6, 0.1, 0.4]])
        >>> recall_rank_loss(similarities, PairwiseSigmoidSorter(temperature=1e-3))
        tensor(0.4444)
    """
    _check_square(scores)
    check_sorter(sorter)
    row_ranks = sorter_ranks(sorter, scores).diagonal()
    column_ranks = sorter_ranks(sorter, scores.t()).diagonal()
    return 0.5 * (row_ranks.mean() + column_ranks.mean())


class RecallRankLoss(FrozenSorterMixin):
    """Module form of :func:`recall_rank_loss`: ``loss(scores)``, ``(N, N)`` similarities of ``N``
    queries and ``N`` items with the positives on the diagonal -> a scalar."""

    def __init__(self, sorter: SorterFunction | None = None) -> None:
        super().__init__()
        self._set_sorter(sorter)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return recall_rank_loss(scores, self.rank)


@float32_under_autocast
def hard_negative_rank_loss(
    scores: torch.Tensor, sorter: SorterFunction, margin: float | None = None, hard_negatives: int = 1
) -> torch.Tensor:
    """Hard-negative loss in the rank domain (SoDeep's ``RankHardLoss``), both directions.

    In each row (and each column) the positive's rank should beat the ranks of the
    ``hard_negatives`` best-ranked negatives by ``margin``:
    ``sum max(0, margin + rank(positive) - rank(hard negative))``, averaged over rows, columns
    and hard negatives.

    Args:
        scores: ``(N, N)`` with positives on the diagonal.
        sorter: see the module docstring; it ranks each row and each column of ``scores``.
        margin: in normalized rank units, a number or a 0-d tensor; ``None`` means one
            position, ``1/N``.
        hard_negatives: how many of the best-ranked negatives to use, ``k >= 1``; a batch with
            fewer negatives (``N - 1 < k``, such as an epoch's last, smaller batch) uses them all.

    Returns:
        A scalar, 0 when every positive is ranked at least ``margin`` ahead of its hard negatives.

    Example:
        >>> from sodeep.sorters import PairwiseSigmoidSorter
        >>> similarities = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.8, 0.5], [0.6, 0.1, 0.4]])
        >>> hard_negative_rank_loss(similarities, PairwiseSigmoidSorter(temperature=1e-3))
        tensor(0.2222)
    """
    _check_square(scores)
    size = scores.shape[0]
    check_integer(hard_negatives, "hard_negatives", 1)
    hard_negatives = min(hard_negatives, size - 1)
    if margin is not None:
        check_setting_device(margin, "margin", scores.device)
        check_scalar_margin(margin)
    check_sorter(sorter)
    margin = 1.0 / size if margin is None else margin
    losses = []
    eye = torch.eye(size, dtype=torch.bool, device=scores.device)
    for oriented in (scores, scores.t()):
        ranks = sorter_ranks(sorter, oriented)
        positive = ranks.diagonal().unsqueeze(-1)
        # Exclude the positive itself: push it past every negative before picking the smallest.
        negative_ranks = ranks.masked_fill(eye, float("inf"))
        hardest = negative_ranks.topk(hard_negatives, dim=-1, largest=False).values
        losses.append(torch.clamp(margin + positive - hardest, min=0).mean())
    return 0.5 * (losses[0] + losses[1])


class HardNegativeRankLoss(FrozenSorterMixin):
    """Module form of :func:`hard_negative_rank_loss`: ``loss(scores)``, ``(N, N)`` similarities
    with the positives on the diagonal -> a scalar."""

    def __init__(
        self, sorter: SorterFunction | None = None, margin: float | None = None, hard_negatives: int = 1
    ) -> None:
        super().__init__()
        self._set_sorter(sorter)
        if margin is not None:
            check_fixed_setting(margin, "margin", type(self).__name__, "hard_negative_rank_loss")
            check_scalar_margin(margin)
        check_integer(hard_negatives, "hard_negatives", 1)
        self.margin = None if margin is None else float(margin)
        self.hard_negatives = int(hard_negatives)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return hard_negative_rank_loss(scores, self.rank, self.margin, self.hard_negatives)

    def extra_repr(self) -> str:
        margin = None if self.margin is None else shown_float(self.margin)
        return f"{super().extra_repr()}, margin={margin}, hard_negatives={self.hard_negatives}"


__all__ = [
    "HardNegativeRankLoss",
    "MapRankLoss",
    "RecallRankLoss",
    "SpearmanLoss",
    "descending_normalized",
    "hard_negative_rank_loss",
    "map_rank_loss",
    "recall_rank_loss",
    "spearman_loss",
]
