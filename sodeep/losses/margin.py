"""Margin (hinge) ranking losses from recommendation and multi-label classification.

For triplets use ``torch.nn.TripletMarginLoss`` (anchor, positive, negative embeddings) and for a
single pair of score vectors ``torch.nn.MarginRankingLoss``: they already do the job.
:func:`pairwise_margin_ranking_loss` is what they do not: every positive against every negative of
each row, with masks and hard-negative mining, vectorized.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from torch import nn

from sodeep.checks import check_integer
from sodeep.losses.precision import float32_under_autocast
from sodeep.losses.validation import (
    check_binary,
    check_finite_margin,
    check_fixed_setting,
    check_rank,
    check_same_shape,
    check_scalar_margin,
    check_setting_device,
    check_tensor,
    number_tensors_take,
)
from sodeep.reducers import (
    MeanReduction,
    NonzeroWeightedMeanReduction,
    Reducer,
    SumReduction,
    WeightedMeanReduction,
    check_weight_fits,
    get_reducer,
)
from sodeep.wording import shown_float


def _valid_mask(labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(labels, dtype=torch.bool)
    check_binary(mask, "mask")  # a fractional "mask" is a weight: pass it as weight
    check_same_shape(labels, mask, "labels and mask")
    return mask.bool()


@float32_under_autocast
def pairwise_margin_ranking_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    margin: float = 1.0,
    hard_negatives: int | None = None,
    reduction: str | Reducer = "weighted_mean",
) -> torch.Tensor:
    """``max(0, margin - (s_pos - s_neg))`` over every valid positive x negative pair of each row.

    The hinge of a positive ``i`` summed over the negatives is, with the negatives sorted by
    score, ``c_i (margin - s_i) + (sum of the c_i highest negative scores)``, where ``c_i``
    counts the negatives scored at least ``s_i - margin``.  The built-in reductions are computed
    that way: ``O(B N log N)`` time and ``O(B N)`` memory, no host synchronisation, however many
    pairs there are.  The sums are taken in float64 (float32 on MPS): which pairs pass the hinge
    is decided there on the uncentred scores, and each row is centred on the highest negative it
    compares with (a constant), so that every term is at most the positive's largest hinge: sums stay accurate
    at any offset, beside far outliers, beside padding at extreme values and with float32 hinges
    near float32's largest value (float64 scores: a positive's ``c_i`` times its largest hinge
    must stay within float64's range).

    Args:
        scores: ``(B, N)`` (e.g. item scores per user, link scores per node); finite everywhere,
            masked positions included (pad with any finite value, e.g. 0).
        labels: ``(B, N)`` in {0, 1}.
        mask: ``(B, N)``, true/1 where the label is known (padding and unknown labels: 0).
        margin: the hinge margin, a number (or a 0-d tensor).
        hard_negatives: if set, each positive is compared only with the ``k`` highest-scored
            valid negatives of its row (the pairs with the largest hinge; which of several
            equally scored negatives are taken is unspecified).
        reduction: over the pair tensor ``(B, N, N)`` (entry ``[b, i, j]``: positive item ``i``
            against negative item ``j``) with validity as the weight.  The default
            ``"weighted_mean"`` averages over valid pairs (0, in the graph, if there are none);
            ``"sum"`` adds them; ``"mean"`` divides that sum by ``B N N``.  ``"none"`` and a custom
            :class:`~sodeep.reducers.Reducer` get the pair tensor itself, invalid pairs zeroed:
            ``B N N`` elements in memory.  Results are returned in the scores' dtype (a
            half-precision sum past 65,504 is inf).

    Returns:
        A scalar (or the pair tensor for ``"none"``).

    Example:
        >>> scores = torch.tensor([[2.0, 0.5, 1.0]])
        >>> pairwise_margin_ranking_loss(scores, torch.tensor([[1, 0, 0]]))  # pairs: 0.0 and 0.0
        tensor(0.)
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, N)", rows=True)
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    margin = number_tensors_take(margin)
    check_setting_device(margin, "margin", scores.device)
    check_pair_options(margin, hard_negatives)
    valid = _valid_mask(labels, mask)
    positive = valid & (labels == 1)
    negative = valid & (labels == 0)
    reducer = get_reducer(reduction)
    width = min(int(hard_negatives or scores.shape[-1]), scores.shape[-1])
    high_first, order, compared = _highest_negatives(scores, negative, width)
    if type(reducer) in _FROM_TOTALS:
        total, pairs = _hinge_total(scores, high_first, order, compared, positive, margin)
        return _FROM_TOTALS[type(reducer)](total, pairs, scores.shape).to(scores.dtype)
    # The same negatives as the totals take: the first ``compared`` of ``order``.
    taken = torch.arange(width, device=scores.device) < compared
    negative = torch.zeros_like(negative).scatter(-1, order, taken)
    pair_ok = positive.unsqueeze(-1) & negative.unsqueeze(-2)
    wide = scores.to(torch.promote_types(scores.dtype, torch.float32))
    # The difference first: scores of a large common offset differ exactly, a small margin is kept.
    hinge = torch.clamp((wide.unsqueeze(-2) - wide.unsqueeze(-1)) + margin, min=0)
    hinge = torch.where(pair_ok, hinge, 0.0).to(scores.dtype)  # an invalid pair's overflow stays out
    return reducer(hinge, pair_ok.to(hinge.dtype))


def check_pair_options(margin, hard_negatives) -> None:
    """``margin``: a finite number or 0-d tensor; ``hard_negatives``: ``None`` or an integer >= 1."""
    check_scalar_margin(margin)
    if hard_negatives is not None:
        check_integer(hard_negatives, "hard_negatives", 1)


def _highest_negatives(
    scores: torch.Tensor, negative: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negatives each row compares with, its ``width`` highest valid ones: ``(their scores
    highest first (B, width) with -inf past the row's, their indices (B, width), their number
    (B, 1))``, all detached."""
    masked = scores.detach().masked_fill(~negative, float("-inf"))
    if width >= scores.shape[-1]:
        high_first, order = masked.sort(dim=-1, descending=True, stable=True)
    else:
        high_first, order = masked.topk(width, dim=-1)
    return high_first, order, negative.sum(-1, keepdim=True).clamp(max=width)


def _accumulation_dtype(scores: torch.Tensor) -> torch.dtype:
    """float64, where the device has it: a float32 score's difference with any other is exact
    there, and ``c`` hinges near float32's largest value still add up."""
    return torch.float32 if scores.device.type == "mps" else torch.float64


def _hinge_total(
    scores: torch.Tensor,
    high_first: torch.Tensor,
    order: torch.Tensor,
    compared: torch.Tensor,
    positive: torch.Tensor,
    margin,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the valid pairs' hinges and their number, both scalars, without the pair tensor."""
    dtype = torch.promote_types(scores.dtype, _accumulation_dtype(scores))
    wide, high_first = scores.to(dtype), high_first.to(dtype)
    # c_i = #{compared negatives j : margin - s_i + s_j >= 0}, the pairs whose clamp passes a
    # gradient, by binary search in the negated (ascending) order of the uncentred scores, in the
    # dtype and with the margin of the sums: a pair counted has a hinge >= 0.
    threshold = margin - wide.detach()
    above = torch.searchsorted((-high_first).contiguous(), threshold.contiguous(), right=True)
    # Sums of the highest negatives, with the gradient to each, from the row's highest negative
    # (a constant): every term of a positive's sum is then at most its largest hinge.
    centre = torch.where(compared > 0, high_first[..., :1], 0.0)
    centred = wide - centre
    running = torch.where(torch.isinf(high_first), 0.0, centred.gather(-1, order)).cumsum(-1)
    running = torch.cat([running.new_zeros(running.shape[:-1] + (1,)), running], dim=-1)
    per_positive = above.to(dtype) * (margin - centred) + running.gather(-1, above)
    # A positive with no hinge (above == 0) adds 0, even where its centred score overflowed to inf.
    total = torch.where(positive & (above > 0), per_positive, 0.0).sum()
    pairs = (positive.sum(-1) * compared.squeeze(-1)).sum()
    return total, pairs.to(dtype)


def _weighted_mean(total: torch.Tensor, pairs: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return total / torch.where(pairs > 0, pairs, torch.ones_like(pairs))


#: Built-in reductions of the pair tensor from the hinge total and the number of valid pairs.
_FROM_TOTALS = {
    SumReduction: lambda total, pairs, shape: total,
    MeanReduction: lambda total, pairs, shape: total / (shape[0] * shape[1] * shape[1]),
    WeightedMeanReduction: _weighted_mean,
    NonzeroWeightedMeanReduction: _weighted_mean,
}


class PairwiseMarginRankingLoss(nn.Module):
    """Module form of :func:`pairwise_margin_ranking_loss`: ``forward(scores, labels, mask=None)``."""

    def __init__(
        self, margin: float = 1.0, hard_negatives: int | None = None, reduction: str | Reducer = "weighted_mean"
    ) -> None:
        super().__init__()
        check_fixed_setting(margin, "margin", type(self).__name__, "pairwise_margin_ranking_loss")
        check_pair_options(margin, hard_negatives)
        self.margin = float(margin)
        self.hard_negatives = None if hard_negatives is None else int(hard_negatives)
        self.reducer = get_reducer(reduction)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return pairwise_margin_ranking_loss(
            scores, labels, mask, margin=self.margin, hard_negatives=self.hard_negatives, reduction=self.reducer
        )

    def extra_repr(self) -> str:
        return f"margin={shown_float(self.margin)}, hard_negatives={self.hard_negatives}"


def _margin_tensor(margin: Any, scores: torch.Tensor) -> torch.Tensor:
    """Per-label margins given as a list or NumPy array, as a tensor on the scores' device in at
    least float32, the dtype the hinges are computed in before they take the scores' dtype."""
    wide = torch.promote_types(scores.dtype, torch.float32)
    try:
        if any(isinstance(item, torch.Tensor) for item in margin):  # stacked: learnable margins keep their graph
            values = torch.stack([torch.as_tensor(item, dtype=wide, device=scores.device) for item in margin])
        else:
            values = torch.as_tensor(margin)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"margin must be numbers, got {margin!r}") from None
    if values.dtype == torch.bool or values.is_complex():
        raise TypeError(f"margin must be real numbers, got {values.dtype} values")
    return values.to(device=scores.device, dtype=wide)


@float32_under_autocast
def multilabel_hinge_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    margin: float | torch.Tensor = 1.0,
    weight: torch.Tensor | None = None,
    reduction: str | Reducer = "weighted_mean",
) -> torch.Tensor:
    """Element-wise multi-label hinge: ``max(0, margin - y * s + (1 - y) * s)``, ``y`` in {0, 1}.

    (Positives are pushed above ``margin``, negatives below ``-margin``: the form commonly
    written in TensorFlow.)

    Args:
        scores: ``(B, C)``.
        labels: ``(B, C)`` in {0, 1}.
        margin: a number, or ``(C,)`` per-label margins (a tensor, a list or a NumPy array).
        weight: broadcastable to ``(B, C)``; a 0/1 mask of known labels.
        reduction: see :mod:`sodeep.reducers`.

    Returns:
        The reduced loss, in the dtype of ``scores``.

    Example:
        >>> multilabel_hinge_loss(torch.tensor([[2.0, -0.5]]), torch.tensor([[1, 0]]), reduction="none")
        tensor([[0.0000, 0.5000]])
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, C)", rows=True)
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    margin = number_tensors_take(margin)
    if isinstance(margin, (list, tuple)) or type(margin).__module__ == "numpy":  # per-label, as the module takes
        margin = _margin_tensor(margin, scores)
    elif isinstance(margin, bool) or not isinstance(margin, (Real, torch.Tensor)):
        raise TypeError(
            f"margin must be a number or (C,) per-label margins (a tensor, a list or a NumPy array), "
            f"got {type(margin).__name__} {margin!r}"
        )
    check_setting_device(margin, "margin", scores.device)
    if isinstance(margin, torch.Tensor) and (
        margin.dim() > 1 or (margin.dim() == 1 and margin.shape[0] != scores.shape[-1])
    ):
        # A (B, C) tensor third is most likely a mask of known labels, as the module's forward takes it.
        hint = "; a mask of known labels goes in weight=" if margin.shape == scores.shape else ""
        raise ValueError(
            f"margin must be a number or of shape (C,) = ({scores.shape[-1]},) for scores of shape "
            f"{tuple(scores.shape)}, got margin of shape {tuple(margin.shape)}{hint}"
        )
    check_finite_margin(margin)
    # Computed in at least float32 whatever the margin's form (a number, a list, a tensor: a margin
    # of 7e4 beside float16 scores of 1e4 leaves a finite hinge), then rounded once to the scores'
    # dtype, which the loss keeps (a float64 margin tensor does not widen it).
    wide = torch.promote_types(scores.dtype, torch.float32)
    signs = 2 * labels.to(wide) - 1
    hinge = torch.clamp(margin - signs * scores.to(wide), min=0).to(scores.dtype)
    return get_reducer(reduction)(hinge, weight)


#: The buffers of MultiLabelHingeLoss that hold its margins' state.
_MARGIN_BUFFERS = ("base_margin", "margin", "running_loss")


def _checked_margin_range(margin_range: Any) -> tuple[float, float]:
    """``margin_range`` as ``(low, high)`` floats; ``TypeError``/``ValueError`` unless two finite
    numbers with ``low <= high``."""
    if not isinstance(margin_range, (tuple, list)) or any(
        isinstance(value, bool) or not isinstance(value, Real) for value in margin_range
    ):
        raise TypeError(f"margin_range must be two numbers (low, high), got {margin_range!r}")
    if len(margin_range) != 2:
        raise ValueError(f"margin_range must be (low, high), got {tuple(margin_range)}")
    check_finite_margin(torch.as_tensor(margin_range, dtype=torch.float64), "margin_range")
    if margin_range[0] > margin_range[1]:
        raise ValueError(f"margin_range must be (low, high) with low <= high, got {tuple(margin_range)}")
    return float(margin_range[0]), float(margin_range[1])


class MultiLabelHingeLoss(nn.Module):
    """Module form of :func:`multilabel_hinge_loss` with per-label and optionally adaptive margins.

    Adaptive margins: in training mode, after each forward, every label's running (exponential
    moving average) hinge loss is updated from the batch's known labels, and its margin becomes
    ``base_margin * running_c / mean(running)``, clipped to ``margin_range``: labels that stay
    hard get a wider margin.  The update happens under ``no_grad``, outside the autograd graph;
    margins and running losses are buffers, moved with ``.to`` and, when adaptive, saved in
    ``state_dict`` (fixed margins are settings: loading a checkpoint keeps those the loss was built with).
    They are held in the default dtype (float32): for float64 scores, ``.double()`` the loss too,
    which gives margins still at their given values those values (1/3 to float64 precision;
    margins an adaptive loss has moved keep the values they reached, widened), or a margin such
    as 1/3 is rounded to float32.  Under ``torch.distributed`` (DDP) the batch's
    per-label losses and counts are summed over the processes before the update, so every process
    moves its margins alike, by the whole step's batch: each process must then call the loss in
    training mode as often as the others (as a training step does).

    Args:
        num_labels: ``C``.
        margin: a number or a sequence of ``C`` margins (the base margins).
        adaptive: enable adaptive margins.
        margin_range: ``(low, high)`` clip of adaptive margins; with ``adaptive`` the base margins
            must lie inside it.
        momentum: of the running per-label loss.
        reduction: see :mod:`sodeep.reducers`.
    """

    def __init__(
        self,
        num_labels: int,
        margin: float | list[float] | torch.Tensor = 1.0,
        adaptive: bool = False,
        margin_range: tuple[float, float] = (0.1, 2.0),
        momentum: float = 0.9,
        reduction: str | Reducer = "weighted_mean",
    ) -> None:
        super().__init__()
        check_integer(num_labels, "num_labels", 1)
        # Adaptive margins are the module's own buffers, which the function form does not have.
        check_fixed_setting(
            margin, "margin", type(self).__name__, None if adaptive is True else "multilabel_hinge_loss"
        )
        margin = number_tensors_take(margin)
        refused = isinstance(margin, bool) or (isinstance(margin, torch.Tensor) and margin.dtype == torch.bool)
        # Numbers are read on the CPU, so that their values survive a module built on the meta device.
        given_as_tensor = isinstance(margin, torch.Tensor)
        device = margin.device if given_as_tensor else torch.get_default_device()
        try:
            given = torch.as_tensor(margin, device=None if given_as_tensor else "cpu")
            refused = refused or given.dtype == torch.bool or given.is_complex()  # NumPy's True or 1+2j too
            base = given if refused else given.to(torch.get_default_dtype())
            # Numbers read in float64 (as_tensor reads Python floats in the default dtype).
            exact = given if refused or given_as_tensor else torch.as_tensor(margin, dtype=torch.float64, device="cpu")
        except (TypeError, ValueError, RuntimeError):
            refused = True
        if refused:
            raise TypeError(
                f"margin must be a number or {num_labels} numbers (num_labels), got {type(margin).__name__} {margin!r}"
            )
        if base.shape not in ((), (num_labels,)):
            raise ValueError(
                f"margin must be a number or {num_labels} margins (num_labels), got shape {tuple(base.shape)}"
            )
        check_finite_margin(base)
        margin_range = _checked_margin_range(margin_range)
        base = base.expand(num_labels).clone()
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be True or False, got {type(adaptive).__name__} {adaptive!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, Real):
            raise TypeError(f"momentum must be a number in [0, 1), got {type(momentum).__name__} {momentum!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        # Kept off the buffers for reset_parameters (a module built on the meta device has no values)
        # and for a cast to float64, in float64: the margins as given, not as the default dtype rounds them.
        self._initial_margin = (
            None if exact.is_meta else exact.detach().to("cpu", torch.float64).expand(num_labels).clone()
        )
        base = base.to(device)
        self.register_buffer("base_margin", base)
        self.register_buffer("margin", base.clone())
        self.register_buffer("running_loss", torch.ones(num_labels))
        self._margin_range = margin_range
        self.adaptive = adaptive
        self.momentum = float(momentum)
        self.reducer = get_reducer(reduction)

    @property
    def adaptive(self) -> bool:
        """Whether margins adapt in training mode.  Fixed margins are settings, given when the loss
        is built, and stay out of ``state_dict`` (a checkpoint must not replace the margins a
        fine-tuning run asks for); adaptive ones are state, saved with it."""
        return self._adaptive

    @adaptive.setter
    def adaptive(self, adaptive: bool) -> None:
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be True or False, got {type(adaptive).__name__} {adaptive!r}")
        if adaptive:
            self._check_base_within(self.margin_range)
        self._adaptive = adaptive
        if adaptive:
            self._non_persistent_buffers_set.difference_update(_MARGIN_BUFFERS)
        else:
            self._non_persistent_buffers_set.update(_MARGIN_BUFFERS)

    @property
    def margin_range(self) -> tuple[float, float]:
        """``(low, high)``, the clip of adaptive margins; an adaptive loss's base margins lie within."""
        return self._margin_range

    @margin_range.setter
    def margin_range(self, margin_range: tuple[float, float]) -> None:
        margin_range = _checked_margin_range(margin_range)
        if self.adaptive:
            self._check_base_within(margin_range)
        self._margin_range = margin_range

    def _check_base_within(self, margin_range: tuple[float, float]) -> None:
        """``ValueError`` unless the base margins lie in ``margin_range`` (those given to a loss
        built on the meta device, whose buffers hold no values, are read from the CPU copy)."""
        base = self._initial_margin if self.base_margin.is_meta else self.base_margin
        if base is None:
            return
        low, high = margin_range
        outside = (base < low) | (base > high)
        if outside.any():
            raise ValueError(
                f"margin {base[outside].unique()[:4].tolist()} lies outside margin_range {(low, high)}: adaptive "
                "margins are clipped to margin_range, so it would change on the first step; widen margin_range"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if not self.adaptive:  # the state of an adaptive loss, or of one saved with its fixed margins
            for name in _MARGIN_BUFFERS:
                state_dict.pop(prefix + name, None)
        elif all(prefix + name in state_dict for name in _MARGIN_BUFFERS):
            self._margins_unset = False  # an adaptive loss's state sets every margin
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Buffers that leave the meta device (to_empty) hold no values: the margins given are put
        # back, as fixed margins are settings that no checkpoint restores.
        # A cast to float16 or bfloat16 (a model-wide .half()) leaves the margins and running
        # losses in float32: a margin of 7e4 stays finite, and 0.3 stays 0.3.
        before = {name: self._buffers[name] for name in _MARGIN_BUFFERS}
        was_meta = self.margin.is_meta
        super()._apply(fn, *args, **kwargs)
        for name, old in before.items():
            new = self._buffers[name]
            if new.is_floating_point() and torch.finfo(new.dtype).bits < 32 and old.dtype != new.dtype:
                self._buffers[name] = old.to(device=new.device, dtype=torch.promote_types(old.dtype, torch.float32))
        if was_meta and not self.margin.is_meta:
            if self._initial_margin is not None:
                self.reset_parameters()
            else:  # margins given as a meta tensor: none to put back, only memory
                self._margins_unset = True
        elif self._initial_margin is not None and not self.margin.is_meta:
            for name in ("base_margin", "margin"):  # margins widened to float64 at their given values are those given
                old, new = before[name], self._buffers[name]
                if new.dtype == torch.float64 and old.dtype != torch.float64:
                    exact = self._initial_margin.to(new.device)
                    at_given = old.to(new.device) == exact.to(old.dtype)
                    self._buffers[name] = torch.where(at_given, exact, new)
        return self

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Margins back to the base margins given, running losses to 1: for a module built on the
        meta device and then given memory by ``to_empty``, as for torch's own modules."""
        if self._initial_margin is None:
            raise RuntimeError(
                "MultiLabelHingeLoss was given its margin as a tensor on the meta device, which holds no values: "
                "build it with a number, a list or a tensor with values to reset it"
            )
        self.base_margin.copy_(self._initial_margin)
        self.margin.copy_(self._initial_margin)
        self.running_loss.fill_(1.0)

    @float32_under_autocast
    def forward(self, scores: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(scores, torch.Tensor) and scores.dim() == 2 and scores.shape[-1] != self.margin.numel():
            raise ValueError(
                f"scores have {scores.shape[-1]} labels (shape {tuple(scores.shape)}), but this loss was "
                f"built for num_labels={self.margin.numel()}"
            )
        if self.margin.is_meta and isinstance(scores, torch.Tensor) and not scores.is_meta:
            # No values to move (a model built on meta, loaded with assign=True): to_empty gives the
            # loss memory and its margins back.
            raise ValueError(
                f"the loss's margins are on the meta device, which holds no values, and the scores on "
                f"{scores.device}: give the loss memory with loss.to_empty(device={str(scores.device)!r})"
            )
        if getattr(self, "_margins_unset", False):
            raise RuntimeError(
                "the loss's margins were given as a tensor on the meta device and to_empty gave them memory, not "
                "values: build the loss with margins that hold values (numbers, or a tensor in memory)"
            )
        updating = self.adaptive and self.training
        if updating and not torch.compiler.is_compiling() and torch._C._functorch.is_functorch_wrapped_tensor(scores):
            raise RuntimeError(
                "adaptive margins update buffers in place, which torch.func transforms (vmap, grad) "
                "cannot do: call .eval() (margins frozen) or build the loss with adaptive=False"
            )
        per_element = multilabel_hinge_loss(scores, labels, self.margin, reduction="none")
        loss = self.reducer(per_element, weight)  # checks the weight before the margins move
        if updating:
            self._update_margins(per_element.detach(), weight)
        return loss

    def extra_repr(self) -> str:
        base = self.base_margin
        if base.is_meta:
            margin = "<on the meta device>"
        elif bool((base == base[0]).all()):
            margin = shown_float(base[0].item())
        else:
            margin = f"<{base.numel()} per-label margins>"
        settings = f"num_labels={self.base_margin.numel()}, margin={margin}, adaptive={self.adaptive}"
        if self.adaptive:
            low, high = self.margin_range
            settings += (
                f", margin_range=({shown_float(low)}, {shown_float(high)}), momentum={shown_float(self.momentum)}"
            )
        return settings

    @torch.no_grad()
    def _update_margins(self, per_element: torch.Tensor, weight: torch.Tensor | None) -> None:
        # In at least float32 (or the buffers' wider dtype): half-precision sums over a batch overflow.
        wide = torch.promote_types(torch.promote_types(per_element.dtype, self.running_loss.dtype), torch.float32)
        per_element = per_element.to(wide)
        known = (
            torch.ones_like(per_element, dtype=torch.bool) if weight is None else (weight != 0).expand_as(per_element)
        )
        count = known.sum(0).to(wide)
        total = torch.where(known, per_element, 0.0).sum(0)
        if _several_processes():  # DDP: the step's batch is every process's, and so is the update
            summed = torch.stack([total, count])
            torch.distributed.all_reduce(summed)
            total, count = summed.unbind(0)
        batch_loss = total / count.clamp_min(1)
        # A label seen in this batch, with a finite loss (a hinge past the dtype's range is inf).
        seen = (count > 0) & torch.isfinite(batch_loss)
        updated = self.momentum * self.running_loss + (1 - self.momentum) * batch_loss.to(self.running_loss.dtype)
        self.running_loss.copy_(torch.where(seen, updated, self.running_loss))
        mean = self.running_loss.mean()
        # Every label solved (all running losses 0): all equally easy, the base margins.
        relative = torch.where(mean > 0, self.running_loss / mean.clamp_min(torch.finfo(mean.dtype).tiny), 1.0)
        self.margin.copy_((self.base_margin * relative).clamp(*self.margin_range))


def _several_processes() -> bool:
    """Whether this process is one of several of an initialized ``torch.distributed`` group."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


@float32_under_autocast
def multilabel_ranking_hinge_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    margin: float = 1.0,
    weight: torch.Tensor | None = None,
    reduction: str | Reducer = "weighted_mean",
) -> torch.Tensor:
    """Every positive against every negative label of a sample:
    ``l_b = sum_{j pos} sum_{i neg} max(0, margin - (s_j - s_i)) / C_b``, with ``C_b`` the number of
    known labels of sample ``b`` (all ``C`` without a mask).  A sample whose mask hides every label
    is left out of the weighted reductions (weight 0).  Without a mask and with ``margin=1`` it
    equals ``torch.nn.MultiLabelMarginLoss`` given the same targets in index form.

    It builds the ``(B, C, C)`` pair tensor: B=4, C=3,000 takes about 0.7 GB in a forward and
    backward.  For large label spaces, :func:`pairwise_margin_ranking_loss` sums the same
    hinges without it (``reduction="sum"``: over every pair of the batch, not divided by ``C_b``).

    Args:
        scores: ``(B, C)``; labels: ``(B, C)`` in {0, 1}; mask: ``(B, C)`` known labels.
        margin: the hinge's margin, a number or a 0-d tensor (in the units of ``scores``).
        weight: per-sample ``(B,)`` weight.
        reduction: over the ``(B,)`` per-sample losses.

    Returns:
        The reduced loss, in the dtype of ``scores``.

    Example:
        >>> scores, labels = torch.tensor([[2.0, 1.5, -1.0]]), torch.tensor([[1, 0, 0]])
        >>> multilabel_ranking_hinge_loss(scores, labels)  # (1 - (2 - 1.5)) / 3 labels
        tensor(0.1667)
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, C)", rows=True)
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    margin = number_tensors_take(margin)
    check_pair_options(margin, None)
    valid = _valid_mask(labels, mask)
    pair_ok = (valid & (labels == 1)).unsqueeze(-1) & (valid & (labels == 0)).unsqueeze(-2)
    # In at least float32, invalid pairs zeroed (an invalid pair's overflow stays out of the sum).
    work = scores.to(torch.promote_types(scores.dtype, torch.float32))
    hinge = torch.clamp(margin - work.unsqueeze(-1) + work.unsqueeze(-2), min=0)  # [b, j, i]
    known = valid.sum(-1).clamp_min(1)
    per_sample = torch.where(pair_ok, hinge, 0.0).sum((-1, -2)) / known
    if mask is not None and (weight is None or (isinstance(weight, torch.Tensor) and weight.dim() <= 1)):
        # A sample whose mask hides every label is left out of the means, not counted as a 0.
        known_labels = valid.any(-1)
        if weight is not None:
            check_weight_fits(per_sample, weight)
        weight = known_labels.to(per_sample.dtype) if weight is None else weight * known_labels
    return get_reducer(reduction)(per_sample.to(scores.dtype), weight)


class MultiLabelRankingHingeLoss(nn.Module):
    """Module form of :func:`multilabel_ranking_hinge_loss`: ``forward(scores, labels, mask=None, weight=None)``."""

    def __init__(self, margin: float = 1.0, reduction: str | Reducer = "weighted_mean") -> None:
        super().__init__()
        check_fixed_setting(margin, "margin", type(self).__name__, "multilabel_ranking_hinge_loss")
        check_pair_options(margin, None)
        self.margin = float(margin)
        self.reducer = get_reducer(reduction)

    def extra_repr(self) -> str:
        return f"margin={shown_float(self.margin)}"

    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return multilabel_ranking_hinge_loss(
            scores, labels, mask, margin=self.margin, weight=weight, reduction=self.reducer
        )
