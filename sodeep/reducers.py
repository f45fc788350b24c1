"""Reductions: turn per-element losses and weights into a scalar (or keep them).

A loss computes per-element values; a reducer, passed in or named, turns them into what the
training loop needs.  A weight is broadcast to the per-element loss; a 0/1 mask is a weight, so
"update only the labels a sample knows about" is ``weight=mask``.

===========================  ======================================================
``"none"``                   ``w * l`` (same shape as the broadcast loss)
``"sum"``                    ``sum(w * l)``
``"mean"``                   ``sum(w * l) / numel``
``"weighted_mean"``          ``sum(w * l) / sum(w)``
``"nonzero_weighted_mean"``  ``sum(w * l) / count(w != 0)`` (TensorFlow's SUM_BY_NONZERO_WEIGHTS)
===========================  ======================================================

An element of weight 0 is left out of the result even where its loss is infinite or NaN (the
forward value; the gradient of such an element is its loss's own business: ``-log(0)`` has an
infinite derivative, which a zero weight turns into NaN in backward, so mask such inputs before
the loss, e.g. ``torch.where(mask, x, 1)``); a learnable weight gets, at such an element, the
gradient of a zero loss there.  With every weight zero, the weighted means return 0, still connected to the graph, so
``backward()`` works and yields zero gradients for the losses (never NaN); learnable weights
then get the gradient of a sum, each its element's loss, which a descent step makes negative,
and the next call refuses: keep such weights positive (e.g. a softplus of a parameter).  Products, sums and counts are taken in
at least float32 (in the weight's dtype if it is wider) and the result is returned in the loss's
dtype: a float32 weight of 1e-8 or 1e5 keeps its value beside a half-precision loss, and a
half-precision mean of many elements neither overflows nor loses its count (a half-precision
*sum* past 65,504 is still inf).  ``"weighted_mean"`` takes the weights relative to the largest, so
weights whose sum passes the dtype's range give the same mean as small ones.  A loss must be a
floating-point tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sodeep.checks import require

__all__ = [
    "REDUCTIONS",
    "MeanReduction",
    "NoReduction",
    "NonzeroWeightedMeanReduction",
    "Reducer",
    "SumReduction",
    "WeightedMeanReduction",
    "check_weight_fits",
    "get_reducer",
    "reduce_loss",
]


def _check_loss(loss: torch.Tensor) -> None:
    if not isinstance(loss, torch.Tensor) or not loss.is_floating_point():
        kind = loss.dtype if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"loss must be a floating-point tensor, got {kind}")


def check_weight_fits(loss: torch.Tensor, weight: Any) -> None:
    """A real tensor whose shape broadcasts to ``loss``'s without enlarging it (a ``TypeError`` or
    ``ValueError`` naming ``weight``); shapes and types only, no values read."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a tensor or None, got {type(weight).__name__}")
    if weight.is_complex():
        raise TypeError(f"weight must be real (a mask or non-negative weights), got dtype {weight.dtype}")
    # Compared here, not by catching torch.broadcast_shapes' error, which torch.compile raises as its own.
    lined_up = zip(reversed(loss.shape), reversed(weight.shape))
    if not all(size == other or size == 1 or other == 1 for size, other in lined_up):
        # A weight per sample of a (B, L) loss lines up with its last dimension, L, not with B.
        per_sample = weight.dim() == 1 and loss.dim() >= 2 and weight.shape[0] == loss.shape[0]
        hint = f": a weight per sample is weight[:, None], shape ({weight.shape[0]}, 1)" if per_sample else ""
        # A weight per label, given to a loss with one value per sample.
        if loss.dim() == 1 and weight.dim() == 2 and weight.shape[0] == loss.shape[0]:
            hint = f": this loss has one value per sample, so a weight per sample has shape {tuple(loss.shape)}"
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} does not broadcast to the loss shape {tuple(loss.shape)}{hint}"
        )
    shape = torch.broadcast_shapes(loss.shape, weight.shape)
    if shape != loss.shape:
        # A weight per sample shaped for a (B, L) loss (or one per label), given to a loss with one
        # value per sample.
        per_sample = loss.dim() == 1 and weight.dim() == 2 and weight.shape[0] == loss.shape[0]
        hint = f": this loss has one value per sample, so a weight per sample has shape {tuple(loss.shape)}"
        hint = hint if per_sample else ""  # a branch, not str * bool, which torch.compile cannot trace
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} would enlarge the loss of shape {tuple(loss.shape)} to "
            f"{tuple(shape)}{hint}"
        )


def _broadcast(loss: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if weight is None:  # half precision summed in float32, and divided there by a count past its range
        loss = loss.to(torch.promote_types(loss.dtype, torch.float32))
        return loss, torch.ones_like(loss)
    check_weight_fits(loss, weight)
    if weight.device != loss.device:
        if weight.dim() > 0 or weight.device.type != "cpu":
            raise ValueError(f"weight must be on the loss's device, {loss.device}, got {weight.device}")
        weight = weight.to(loss.device)  # a 0-d weight may stay on the CPU, as PyTorch allows for scalars
    require(torch.isfinite(weight) & (weight >= 0), "weight must be finite and non-negative")
    # A half-precision loss keeps a float32 weight's range (1e-8 and 1e5 are 0 and inf in float16).
    wide = torch.promote_types(loss.dtype, torch.float32)
    if weight.is_floating_point():
        wide = torch.promote_types(wide, weight.dtype)
    return loss.to(wide), weight.to(wide).expand_as(loss)


def _total(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` in at least float32 (half-precision sums and counts overflow at 65,504)."""
    return values.sum(dtype=torch.promote_types(values.dtype, torch.float32))


class Reducer(nn.Module):
    """Base class: ``forward(loss, weight=None)`` -> reduced tensor."""

    name = ""
    #: The result does not change when every weight is multiplied by one constant.  Such a
    #: reducer sees the weights divided by the largest, so weights that sum past the dtype's
    #: range (or are subnormal) still give the exact ratio.
    scale_free = False

    def forward(self, loss: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``loss`` and ``weight`` reach :meth:`reduce` in at least float32; the result is in ``loss``'s dtype."""
        _check_loss(loss)
        dtype = loss.dtype
        loss, weight = _broadcast(loss, weight)
        # A zero weight leaves its element out, even an infinite or NaN one (0 * inf would be NaN);
        # finite losses keep their product, so a learnable weight at 0 keeps its gradient.
        loss = torch.where((weight != 0) | torch.isfinite(loss), loss, torch.zeros_like(loss))
        if self.scale_free and weight.numel() > 0:
            largest = weight.amax()
            weight = weight / torch.where(largest > 0, largest, torch.ones_like(largest))
        return self.reduce(loss * weight, weight).to(dtype)

    def reduce(self, weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class NoReduction(Reducer):
    name = "none"

    def reduce(self, weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weighted


class SumReduction(Reducer):
    name = "sum"

    def reduce(self, weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return _total(weighted)


class MeanReduction(Reducer):
    name = "mean"

    def reduce(self, weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # Divided before the sum: a mean within the dtype's range does not overflow on the way.
        return _total(weighted / max(weighted.numel(), 1))


class WeightedMeanReduction(Reducer):
    name = "weighted_mean"
    scale_free = True

    def reduce(self, weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        total = _total(weight)
        # Dividing by 1 where the weights sum to 0 keeps an all-zero weight at 0 and in the graph.
        return _total(weighted) / torch.where(total > 0, total, torch.ones_like(total))


class NonzeroWeightedMeanReduction(Reducer):
    name = "nonzero_weighted_mean"

    def reduce(self, weighted: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        present = (weight != 0).sum()
        present = torch.where(present > 0, present, torch.ones_like(present))
        return _total(weighted / present)  # divided first, as the mean


#: Reduction name -> reducer class.
REDUCTIONS: dict[str, type[Reducer]] = {
    cls.name: cls
    for cls in (NoReduction, SumReduction, MeanReduction, WeightedMeanReduction, NonzeroWeightedMeanReduction)
}


def get_reducer(reduction: str | Reducer) -> Reducer:
    """A reducer from its name (see :data:`REDUCTIONS`) or the reducer itself."""
    if isinstance(reduction, Reducer):
        return reduction
    if not isinstance(reduction, str):
        raise TypeError(
            f"reduction must be one of {sorted(REDUCTIONS)} or a Reducer, got {type(reduction).__name__} {reduction!r}"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)} or a Reducer, got {reduction!r}")
    return REDUCTIONS[reduction]()


def reduce_loss(
    loss: torch.Tensor, weight: torch.Tensor | None = None, reduction: str | Reducer = "mean"
) -> torch.Tensor:
    """Reduce a per-element ``loss`` with an optional broadcastable ``weight``.

    Example:
        >>> loss = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> reduce_loss(loss, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "nonzero_weighted_mean")
        tensor(2.)
    """
    return get_reducer(reduction)(loss, weight)
