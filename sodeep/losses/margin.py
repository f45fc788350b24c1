"""Margin (hinge) ranking losses from recommendation and multi-label classification.

For triplets use ``torch.nn.TripletMarginLoss`` (anchor, positive, negative embeddings) and for a
single pair of score vectors ``torch.nn.MarginRankingLoss``: they already do the job.
:func:`pairwise_margin_ranking_loss` is what they do not: every positive against every negative of
each row, with masks and hard-negative mining, vectorized.
"""

from __future__ import annotations

import torch
from torch import nn

from sodeep.losses.validation import check_binary, check_finite_margin, check_rank, check_same_shape, check_tensor
from sodeep.reducers import Reducer, get_reducer


def _valid_mask(labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(labels, dtype=torch.bool)
    check_binary(mask, "mask")  # a fractional "mask" is a weight: pass it as weight
    check_same_shape(labels, mask, "labels and mask")
    return mask.bool()


def _gather_by_flag(scores: torch.Tensor, flag: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores where ``flag`` holds, packed to the left of a ``(B, width)`` tensor, and validity."""
    order = flag.to(torch.uint8).argsort(dim=-1, descending=True, stable=True)[:, :width]
    return scores.gather(-1, order), flag.gather(-1, order)


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

    Args:
        scores: ``(B, N)`` (e.g. item scores per user, link scores per node).
        labels: ``(B, N)`` in {0, 1}.
        mask: ``(B, N)``, true/1 where the label is known (padding and unknown labels: 0).
        margin: the hinge margin.
        hard_negatives: if set, each positive is compared only with the ``k`` highest-scored
            valid negatives of its row (the pairs with the largest hinge).
        reduction: over the pair tensor ``(B, P, K)`` with validity as the weight; the default
            ``"weighted_mean"`` averages over valid pairs (0, in the graph, if there are none).
            ``"none"`` returns the ``(B, P, K)`` tensor (invalid pairs zeroed) where ``P`` is the
            largest number of positives and ``K`` of negatives considered in a row.

    Returns:
        A scalar (or the pair tensor for ``"none"``).

    Example:
        >>> scores = torch.tensor([[2.0, 0.5, 1.0]])
        >>> pairwise_margin_ranking_loss(scores, torch.tensor([[1, 0, 0]]))  # pairs: 0.0 and 0.0
        tensor(0.)
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, N)")
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    check_finite_margin(margin)
    valid = _valid_mask(labels, mask)
    positive = valid & (labels == 1)
    negative = valid & (labels == 0)
    most_positives = max(int(positive.sum(-1).max()), 1)
    most_negatives = max(int(negative.sum(-1).max()), 1)
    positive_scores, positive_ok = _gather_by_flag(scores, positive, most_positives)
    if hard_negatives is not None:
        if hard_negatives < 1:
            raise ValueError(f"hard_negatives must be >= 1, got {hard_negatives}")
        # The hardest negatives are the highest-scored ones, the same for every positive of a row.
        width = min(hard_negatives, most_negatives)
        masked = scores.masked_fill(~negative, float("-inf"))
        negative_scores, order = masked.topk(width, dim=-1)
        negative_ok = negative.gather(-1, order)
        negative_scores = torch.where(negative_ok, negative_scores, torch.zeros_like(negative_scores))
    else:
        negative_scores, negative_ok = _gather_by_flag(scores, negative, most_negatives)
    hinge = torch.clamp(margin - positive_scores.unsqueeze(-1) + negative_scores.unsqueeze(-2), min=0)
    pair_ok = positive_ok.unsqueeze(-1) & negative_ok.unsqueeze(-2)
    return get_reducer(reduction)(hinge, pair_ok.to(hinge.dtype))


class PairwiseMarginRankingLoss(nn.Module):
    """Module form of :func:`pairwise_margin_ranking_loss`: ``forward(scores, labels, mask=None)``."""

    def __init__(
        self, margin: float = 1.0, hard_negatives: int | None = None, reduction: str | Reducer = "weighted_mean"
    ) -> None:
        super().__init__()
        self.margin = float(margin)
        self.hard_negatives = hard_negatives
        self.reducer = get_reducer(reduction)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return pairwise_margin_ranking_loss(
            scores, labels, mask, margin=self.margin, hard_negatives=self.hard_negatives, reduction=self.reducer
        )


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
        margin: a number, or a ``(C,)`` tensor of per-label margins.
        weight: broadcastable to ``(B, C)``; a 0/1 mask of known labels.
        reduction: see :mod:`sodeep.reducers`.

    Example:
        >>> multilabel_hinge_loss(torch.tensor([[2.0, -0.5]]), torch.tensor([[1, 0]]), reduction="none")
        tensor([[0.0000, 0.5000]])
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, C)")
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    if isinstance(margin, torch.Tensor) and margin.shape not in ((), (scores.shape[-1],)):
        raise ValueError(
            f"margin must be a number or of shape (C,) = ({scores.shape[-1]},) for scores of shape "
            f"{tuple(scores.shape)}, got margin of shape {tuple(margin.shape)}"
        )
    check_finite_margin(margin)
    signs = 2 * labels.to(scores.dtype) - 1
    return get_reducer(reduction)(torch.clamp(margin - signs * scores, min=0), weight)


class MultiLabelHingeLoss(nn.Module):
    """Module form of :func:`multilabel_hinge_loss` with per-label and optionally adaptive margins.

    Adaptive margins: in training mode, after each forward, every label's running (exponential
    moving average) hinge loss is updated from the batch's known labels, and its margin becomes
    ``base_margin * running_c / mean(running)``, clipped to ``margin_range``: labels that stay
    hard get a wider margin.  The update happens under ``no_grad``, outside the autograd graph;
    margins and running losses are buffers (saved in ``state_dict``, moved with ``.to``).

    Args:
        num_labels: ``C``.
        margin: a number or a sequence of ``C`` margins (the base margins).
        adaptive: enable adaptive margins.
        margin_range: ``(low, high)`` clip of adaptive margins.
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
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        base = torch.as_tensor(margin, dtype=torch.get_default_dtype())
        if base.shape not in ((), (num_labels,)):
            raise ValueError(
                f"margin must be a number or {num_labels} margins (num_labels), got shape {tuple(base.shape)}"
            )
        check_finite_margin(base)
        check_finite_margin(torch.tensor(margin_range), "margin_range")
        base = base.expand(num_labels).clone()
        if not 0 <= momentum < 1 or margin_range[0] > margin_range[1]:
            raise ValueError(f"momentum must be in [0, 1) and margin_range ordered, got {momentum}, {margin_range}")
        self.register_buffer("base_margin", base)
        self.register_buffer("margin", base.clone())
        self.register_buffer("running_loss", torch.ones(num_labels))
        self.adaptive = adaptive
        self.margin_range = (float(margin_range[0]), float(margin_range[1]))
        self.momentum = float(momentum)
        self.reducer = get_reducer(reduction)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(scores, torch.Tensor) and scores.dim() == 2 and scores.shape[-1] != self.margin.numel():
            raise ValueError(
                f"scores have {scores.shape[-1]} labels (shape {tuple(scores.shape)}), but this loss was "
                f"built for num_labels={self.margin.numel()}"
            )
        per_element = multilabel_hinge_loss(scores, labels, self.margin.to(scores.dtype), reduction="none")
        loss = self.reducer(per_element, weight)  # checks the weight before the margins move
        if self.adaptive and self.training:
            self._update_margins(per_element.detach(), weight)
        return loss

    @torch.no_grad()
    def _update_margins(self, per_element: torch.Tensor, weight: torch.Tensor | None) -> None:
        known = (
            torch.ones_like(per_element)
            if weight is None
            else (weight != 0).to(per_element.dtype).expand_as(per_element)
        )
        count = known.sum(0)
        batch_loss = per_element.sum(0) / count.clamp_min(1)
        seen = count > 0
        updated = self.momentum * self.running_loss + (1 - self.momentum) * batch_loss.to(self.running_loss.dtype)
        self.running_loss.copy_(torch.where(seen, updated, self.running_loss))
        relative = self.running_loss / self.running_loss.mean().clamp_min(torch.finfo(self.running_loss.dtype).tiny)
        self.margin.copy_((self.base_margin * relative).clamp(*self.margin_range))


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
    known labels of sample ``b`` (all ``C`` without a mask).  Without a mask and with
    ``margin=1`` it equals ``torch.nn.MultiLabelMarginLoss`` given the same targets in index form.

    Args:
        scores: ``(B, C)``; labels: ``(B, C)`` in {0, 1}; mask: ``(B, C)`` known labels.
        weight: per-sample ``(B,)`` weight.
        reduction: over the ``(B,)`` per-sample losses.
    """
    check_tensor(scores, "scores")
    check_rank(scores, "scores", (2,), "(B, C)")
    check_binary(labels)
    check_same_shape(scores, labels, "scores and labels")
    check_finite_margin(margin)
    valid = _valid_mask(labels, mask)
    positive = (valid & (labels == 1)).to(scores.dtype)
    negative = (valid & (labels == 0)).to(scores.dtype)
    hinge = torch.clamp(margin - scores.unsqueeze(-1) + scores.unsqueeze(-2), min=0)  # [b, j, i]
    pair_weight = positive.unsqueeze(-1) * negative.unsqueeze(-2)
    known = valid.sum(-1).to(scores.dtype).clamp_min(1)
    per_sample = (hinge * pair_weight).sum((-1, -2)) / known
    return get_reducer(reduction)(per_sample, weight)


class MultiLabelRankingHingeLoss(nn.Module):
    """Module form of :func:`multilabel_ranking_hinge_loss`: ``forward(scores, labels, mask=None, weight=None)``."""

    def __init__(self, margin: float = 1.0, reduction: str | Reducer = "weighted_mean") -> None:
        super().__init__()
        self.margin = float(margin)
        self.reducer = get_reducer(reduction)

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
