"""sodeep's default sorter: pairwise comparisons at temperatures set by a convolutional network.

``rank_i = (1/2 + sum_j sigmoid((x_j - x_i) / tau_ij)) / n`` (descending, ties averaged,
normalized by n), with a temperature per element ``tau_i = softness * spacing_i * exp(h_i)`` and
``tau_ij = sqrt(tau_i tau_j)`` per pair:

* ``spacing_i``: the smaller of the gaps from ``x_i`` to the next distinct value below and above;
* ``h_i``: a small convolutional network that runs along the distinct values in sorted order,
  reading the ``2 * radius`` log gaps around each (relative to the row's typical gap), its tie
  multiplicity and ``log n``; ``h`` is centred per row.

Each element is compared softly with its ``band`` nearest neighbours on either side in sorted
order and exactly (0, 1/2 or 1) with the rest: ``O(n log n + n band)``.  Temperatures and the sort
carry no gradient; gradients reach the scores through the banded sigmoids.  The sorter is
permutation-equivariant and invariant to positive affine maps; rows whose gaps fall outside
``SAFE_GAPS`` are rescaled by an exact power of two first, and half-precision scores are ranked in
float32.  Design, rationale and ablations: ``docs/sorter.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from sodeep.sorters.base import HALF_PRECISION, Sorter, scale_rows_by_power_of_two

# A missing gap (no distinct value below the smallest or above the largest) reads as a gap
# e^8 ~ 3000 times the row's typical gap: far away, which is what "no neighbour" means.
MISSING_GAP_LOG = 8.0
# Gaps between neighbours that the pair couplings 1/sqrt(tau_i tau_j) hold in float32 with a wide
# margin.  A batch with a gap outside is first rescaled, row by row, by an exact power of two
# (scores of 1e-40 or, in float64, 1e300 rank like any others); inside, nothing is done.
SAFE_GAPS = (2.0**-64, 2.0**64)

#: Hidden activations of the temperature network, by the name checkpoints record.
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}
# The same activations as functions for the forward pass (ReLU in place: one allocation fewer).
_ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": torch.relu_}


def distinct_value_groups(sorted_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group equal values of rows sorted ascending.

    Args:
        sorted_scores: ``(B, n)``, ascending along the last dimension.

    Returns:
        ``(group_id, group_value, group_size)``, each ``(B, n)``: ``group_id`` maps each sorted
        position to the index ``g`` of its distinct value; ``group_value[:, g]`` and
        ``group_size[:, g]`` hold the ``g``-th distinct value and its multiplicity for
        ``g < G`` (the row's number of distinct values); ``group_size`` is 0 beyond.
    """
    starts = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group_id = torch.cat([torch.zeros_like(starts[:, :1], dtype=torch.long), starts.cumsum(-1)], -1)
    group_value = torch.zeros_like(sorted_scores).scatter_(-1, group_id, sorted_scores)
    group_size = torch.zeros_like(sorted_scores).scatter_add_(-1, group_id, torch.ones_like(sorted_scores))
    return group_id, group_value, group_size


def band_windows(rows: torch.Tensor, reach: int) -> torch.Tensor:
    """The ``2 reach + 1`` entries around each position, zero-padded at the ends: ``(B, n)`` ->
    ``(B, n, 2 reach + 1)`` (a view of the padded rows)."""
    return F.pad(rows, (reach, reach)).unfold(-1, 2 * reach + 1, 1)


def band_logits(
    sorted_scores: torch.Tensor, root_inverse_tau: torch.Tensor, reach: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair logits ``z_kj = (x_j - x_k) r_k r_j`` and couplings ``r_k r_j`` for the ``2 reach + 1``
    positions ``j`` around each sorted position ``k``, each ``(B, n, 2 reach + 1)``.  Outside the
    row ``r`` is 0, so there ``z = 0`` (no mask needed)."""
    coupling = band_windows(root_inverse_tau, reach) * root_inverse_tau.unsqueeze(-1)
    return (band_windows(sorted_scores, reach) - sorted_scores.unsqueeze(-1)) * coupling, coupling


def banded_sigmoid_sum(sorted_scores: torch.Tensor, root_inverse_tau: torch.Tensor, reach: int) -> torch.Tensor:
    """Soft comparisons of each element with the ``2 reach + 1`` positions around it in sorted
    order, summed: ``sum_j sigmoid((x_j - x_k) r_k r_j)`` over ``|j - k| <= reach``, where
    ``r = tau ** -1/2`` (so a pair's temperature is ``sqrt(tau_k tau_j)``).  Positions outside the
    row have ``r = 0`` and add ``sigmoid(0) = 1/2`` each, with no gradient; so does the element
    itself.  :func:`band_base` holds what these constant halves and the pairs outside the band
    add to the exact rank.

    Args:
        sorted_scores: ``(B, n)``, ascending; gradients flow through it.
        root_inverse_tau: ``(B, n)``, ``r`` at each sorted position (positive).
        reach: ``1 <= reach <= n - 1``.

    Returns:
        ``(B, n)``.
    """
    return torch.sigmoid(band_logits(sorted_scores, root_inverse_tau, reach)[0]).sum(-1)


def band_base(n: int, reach: int, group_start: torch.Tensor, group_end: torch.Tensor) -> torch.Tensor:
    """Exact descending rank minus the hard comparisons inside the band, at each sorted position.

    The exact rank at ascending position ``k`` of a tie group ``[start, end)`` is
    ``1/2 + #greater + #equal / 2 = n + 1/2 - (start + end) / 2``.  Inside the band the hard
    comparisons (1 for a greater value, 1/2 for an equal one, for the element itself and for the
    padding) sum to ``reach + 1/2 + (#greater - #less) / 2``, so that
    ``rank_k = band_base_k + banded_sigmoid_sum_k`` gives the exact rank for pairs outside the band
    and soft ones inside it.

    Args:
        n: row length; ``reach``: as in :func:`banded_sigmoid_sum`.
        group_start, group_end: ``(..., n)`` float, the tie group ``[start, end)`` of each sorted
            position (``k`` and ``k + 1`` without ties).

    Returns:
        ``(..., n)``.
    """
    position = torch.arange(n, dtype=group_start.dtype, device=group_start.device)
    greater = (torch.clamp(position + (reach + 1), max=n) - group_end).clamp_min(0)
    less = (group_start - (position - reach).clamp_min(0)).clamp_min(0)
    return (n - reach) - 0.5 * (group_start + group_end) - 0.5 * (greater - less)


@functools.lru_cache(maxsize=1024)
def untied_band_base(n: int, reach: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`band_base` divided by ``n`` for rows without ties, ``(n,)``: the same for every row of
    that length, so it is computed once (read-only: never modify the returned tensor)."""
    position = torch.arange(n, dtype=torch.float64)
    return (band_base(n, reach, position, position + 1) / n).to(dtype=dtype, device=device)


class BandedSoftRanks(torch.autograd.Function):
    """Normalized soft ranks ``base + banded_sigmoid_sum / n`` at fixed temperatures, with a
    hand-written backward.  Same values and gradients as autograd through
    :func:`banded_sigmoid_sum`, in one graph node instead of about fifteen: a frozen sorter
    (inside a loss) spends most of its time on per-operation overhead.

    With ``a_kj = sigmoid'(z_kj) r_k r_j`` (symmetric in ``k, j``), the gradient at sorted position
    ``k`` of ``sum_m g_m rank_m`` is ``sum_j a_kj (g_j - g_k) / n`` over the band.

    ``apply(scores, sorted_scores, order, root_inverse_tau, base, reach)``: ``scores`` ``(B, n)``
    (differentiable); ``sorted_scores, order = scores.detach().sort(-1)``; ``root_inverse_tau``
    ``(B, n)`` at sorted positions and ``base`` ``(B, n)`` or ``(n,)`` (:func:`band_base` / n),
    both constant; ``1 <= reach <= n - 1``.  Returns ``(B, n)`` ranks in the input's order.
    """

    @staticmethod
    def forward(ctx, scores, sorted_scores, order, root_inverse_tau, base, reach):  # noqa: D102
        logits, coupling = band_logits(sorted_scores, root_inverse_tau, reach)
        soft = logits.sigmoid_()
        sorted_ranks = torch.add(base, soft.sum(-1), alpha=1 / scores.shape[-1])
        ctx.save_for_backward(order, soft, coupling)
        ctx.reach = reach
        # order is a permutation, so every entry of the copy is overwritten.
        return sorted_ranks.scatter(-1, order, sorted_ranks)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ranks):  # noqa: D102
        order, soft, coupling = ctx.saved_tensors
        reach = ctx.reach
        grad_sorted = grad_ranks.gather(-1, order).div_(grad_ranks.shape[-1])
        weighted = (band_windows(grad_sorted, reach) - grad_sorted.unsqueeze(-1)).mul_(coupling)
        grad_sorted = torch.ops.aten.sigmoid_backward(weighted, soft).sum(-1)
        return grad_sorted.scatter(-1, order, grad_sorted), None, None, None, None, None


class ConvSorter(Sorter):
    """Adaptive-temperature pairwise sorter whose temperatures come from a small CNN.

    Args:
        capacity: largest ``n`` accepted (the lengths it was trained and validated on).
        softness: temperature in units of the local spacing; the one knob between fidelity
            (small) and gradient reach (large).  Recorded in checkpoints.
        radius: the first convolution reads ``2 * radius`` gaps around each distinct value.
        width: channels of the hidden 1x1 convolutions (unused when ``depth`` is 0).
        depth: number of hidden layers (0: the first convolution is the last, a linear filter).
        band: compare each element softly with its ``band`` nearest neighbours on each side in
            sorted order and exactly with the rest (``None``: softly with all, ``O(n^2)``).  The
            band moves single ranks by a fraction of a position (more inside large tie groups,
            where it is closer to the exact rank than all pairs are).
        activation: hidden activation of the temperature network, a key of :data:`ACTIVATIONS`
            (checkpoints that name none are ``"gelu"``).

    Shapes: ``(n,)`` or ``(B, n)`` -> same shape and dtype, ``2 <= n <= capacity``; float16 and
    bfloat16 scores are ranked in float32.

    Example:
        >>> sorter = ConvSorter()  # untrained: the plain adaptive-temperature sorter
        >>> sorter(torch.tensor([0.2, 5.0, -1.0, 5.0])).detach()  # exact: [0.75, 0.375, 1, 0.375]
        tensor([0.7708, 0.3812, 0.9669, 0.3812])
    """

    architecture = "conv"
    permutation_equivariant = True
    affine_invariant = True

    def __init__(
        self,
        capacity: int = 256,
        softness: float = 0.5,
        radius: int = 4,
        width: int = 16,
        depth: int = 0,
        band: int | None = 8,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        if not softness > 0:
            raise ValueError(f"softness must be > 0, got {softness}")
        if radius < 1 or width < 1 or depth < 0:
            raise ValueError(f"radius and width must be >= 1 and depth >= 0, got {radius}, {width}, {depth}")
        if band is not None and band < 1:
            raise ValueError(f"band must be None or >= 1, got {band}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.max_length = int(capacity)
        self.softness = float(softness)
        self.radius = int(radius)
        self.width = int(width)
        self.depth = int(depth)
        self.band = None if band is None else int(band)
        self.activation = activation
        self._activation = _ACTIVATION_FUNCTIONS[activation]
        layers: list[nn.Module] = []
        channels = 2 * self.radius + 2  # the gap window, log multiplicity, log n
        for _ in range(self.depth):
            layers += [nn.Linear(channels, self.width), ACTIVATIONS[activation]()]
            channels = self.width
        head = nn.Linear(channels, 1)
        # Zero head: before training, h = 0 and the sorter is the plain adaptive-temperature one.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        # Linear layers over (B, G, channels) windows are the convolutions, channels-last: on a
        # CPU this is several times faster than Conv1d at these tiny sizes.
        self.network = nn.Sequential(*layers, head)
        # The same layers, for the forward pass (slicing the Sequential builds a new module).
        self._linear_layers = (*layers[0::2], head)

    def config(self) -> dict[str, Any]:
        return {
            "capacity": self.max_length,
            "softness": self.softness,
            "radius": self.radius,
            "width": self.width,
            "depth": self.depth,
            "band": self.band,
            "activation": self.activation,
        }

    def sorted_log_temperature(
        self,
        sorted_scores: torch.Tensor,
        *,
        gap: torch.Tensor | None = None,
        has_ties: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Temperatures of rows sorted ascending; differentiable in the network's parameters only.

        Args:
            sorted_scores: ``(B, n)``, ascending.
            gap: ``torch.diff(sorted_scores)`` ``(B, n - 1)`` and ``has_ties`` (whether any gap is
                0), if the caller has them already; else computed here.

        Returns:
            ``(log_tau, group_id, group_size)``: ``log tau`` ``(B, n)`` at each sorted position (in
            the units of the scores) and the grouping of :func:`distinct_value_groups`, each
            ``(B, n)``, or ``None`` for both when no row has a tie (every element is its own group).
        """
        n = sorted_scores.shape[-1]
        first, *others = self._linear_layers
        net_dtype = first.weight.dtype
        sorted_scores = sorted_scores.detach()
        if gap is None:
            gap = torch.diff(sorted_scores)
        if has_ties is None:
            has_ties = int(gap.count_nonzero()) < gap.numel()
        # Log gaps are taken in the scores' dtype (float64 values 1e10 apart by 1e-3 are equal in
        # float32); the network reads them relative to the row's typical gap, numbers of order 1,
        # in its own dtype (so a float16 network ranks scores of any scale).
        if not has_ties:
            # No ties (the usual case for continuous scores): half the operations of the general case.
            group_id = group_size = multiplicity = None
            log_gap = gap.log()
            row_log_gap = log_gap.mean(-1, keepdim=True)
            relative = log_gap - row_log_gap
        else:
            group_id, group_value, group_size = distinct_value_groups(sorted_scores)
            multiplicity = group_size.to(net_dtype)
            # Gap g lies between distinct values g and g + 1; it exists when g + 1 < G.
            has_gap = group_size[:, 1:] > 0
            gap = torch.diff(group_value).clamp_min(torch.finfo(group_value.dtype).tiny)
            log_gap = torch.where(has_gap, gap.log(), 0.0)
            row_log_gap = log_gap.sum(-1, keepdim=True) / has_gap.sum(-1, keepdim=True).clamp_min(1)
            relative = torch.where(has_gap, log_gap - row_log_gap, MISSING_GAP_LOG)
        if relative.dtype != net_dtype:
            relative = relative.to(net_dtype)

        # Distinct value g sees gaps g - radius .. g + radius - 1 (gap g - 1 below it, gap g above).
        padded = F.pad(relative, (self.radius, self.radius), value=MISSING_GAP_LOG)
        gap_window = padded.unfold(-1, 2 * self.radius, 1)  # (B, n, 2 * radius)
        below, above = gap_window[..., self.radius - 1], gap_window[..., self.radius]

        # The first convolution reads [gap window, log multiplicity, log n / log capacity]; the last
        # feature is constant over the batch, so it is folded into the bias (no feature tensor).
        # Rows of (B * n, channels) and in-place activations: at these sizes the time is
        # per-operation overhead, not arithmetic.
        window_weight = first.weight[:, : 2 * self.radius]
        multiplicity_weight = first.weight[:, 2 * self.radius]
        if others:
            bias = torch.add(first.bias, first.weight[:, -1], alpha=math.log(n) / math.log(self.max_length))
            hidden = F.linear(gap_window.reshape(-1, 2 * self.radius), window_weight, bias)
            if multiplicity is not None:
                hidden = hidden.addcmul_(multiplicity.clamp_min(1).log().reshape(-1, 1), multiplicity_weight)
            for layer in others:
                hidden = F.linear(self._activation(hidden), layer.weight, layer.bias)
            offset = hidden.view(sorted_scores.shape)
        else:
            # One linear filter (depth 0): its bias and its log-n term add the same constant to
            # every element of a row, which the centring below removes, so they are skipped.
            offset = (gap_window * window_weight[0]).sum(-1)
            if multiplicity is not None:
                offset = offset + multiplicity.clamp_min(1).log() * multiplicity_weight[0]
        # Centre per row over elements (distinct values weighted by multiplicity): the network
        # moves sharpness around, it cannot make the sorter sharper overall.
        if multiplicity is None:
            offset = offset - offset.mean(-1, keepdim=True)
        else:
            offset = offset - (offset * multiplicity).sum(-1, keepdim=True) / n

        # Local spacing: the smaller of the two gaps (a missing gap is never the smaller).
        log_tau = (row_log_gap + math.log(self.softness)) + torch.minimum(below, above) + offset
        if group_id is not None:
            log_tau = log_tau.gather(-1, group_id)
        return log_tau.to(sorted_scores.dtype), group_id, group_size

    @staticmethod
    def _rescaled(
        scores: torch.Tensor, sorted_scores: torch.Tensor, order: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``scores`` ``(B, n)`` scaled, row by row, by the power of two that brings the row's
        typical gap (geometric mean of its nonzero gaps) to ~1, and its rows sorted (``order``
        still sorts them: the scaling is exact)."""
        # Gaps of halved values: the gap between -3e38 and 3e38 would overflow float32.
        half_gap = torch.diff(sorted_scores * 0.5)
        positive = half_gap > 0
        log2_gap = torch.where(positive, half_gap, 1.0).log2()
        log2_size = 1 + log2_gap.sum(-1, keepdim=True) / positive.sum(-1, keepdim=True).clamp_min(1)
        scaled = scale_rows_by_power_of_two(scores, log2_size)
        return scaled, scaled.detach().gather(-1, order)

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dtype in HALF_PRECISION:
            return self.rank_rows(scores.float()).to(scores.dtype)
        n = scores.shape[-1]
        sorted_scores, order = scores.detach().sort(dim=-1)
        gap = torch.diff(sorted_scores)
        # One reduction tells ties (a zero gap) and gaps too small or too large for the couplings.
        extremes = torch.aminmax(gap)
        smallest, largest = float(extremes.min), float(extremes.max)
        has_ties = smallest == 0
        if has_ties and largest > 0:
            smallest = float(torch.where(gap > 0, gap, largest).amin())
        if largest > 0 and not SAFE_GAPS[0] <= smallest <= largest <= SAFE_GAPS[1]:
            scores, sorted_scores = self._rescaled(scores, sorted_scores, order)
            gap = torch.diff(sorted_scores)
            has_ties = float(gap.amin()) == 0
        log_tau, group_id, group_size = self.sorted_log_temperature(sorted_scores, gap=gap, has_ties=has_ties)
        reach = n - 1 if self.band is None else min(self.band, n - 1)
        # A pair is compared at the geometric mean of its two temperatures:
        # an element made soft blurs its own comparisons, so softness cannot be hidden.
        root_inverse_tau = log_tau.mul(-0.5).exp_()
        if group_id is None:
            base = untied_band_base(n, reach, scores.dtype, scores.device)
        else:
            with torch.no_grad():
                group_end = group_size.cumsum(-1).gather(-1, group_id)
                base = band_base(n, reach, group_end - group_size.gather(-1, group_id), group_end) / n
        if not root_inverse_tau.requires_grad:
            # A frozen network (inside a loss): one autograd node with a hand-written backward.
            try:
                return BandedSoftRanks.apply(scores, sorted_scores, order, root_inverse_tau, base, reach)
            except RuntimeError as error:
                # torch.func transforms (grad, vmap, ...) refuse a Function without setup_context;
                # defining one adds argument binding to every call, so they get plain autograd.
                if "setup_context" not in str(error):
                    raise
        # Pretraining (the temperature network learns) and torch.func: the same formulas, autograd.
        soft_sum = banded_sigmoid_sum(scores.gather(-1, order), root_inverse_tau, reach)
        sorted_ranks = base + soft_sum / n
        return sorted_ranks.scatter(-1, order, sorted_ranks)
