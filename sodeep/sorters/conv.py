"""sodeep's default sorter: pairwise comparisons at temperatures set by a convolutional network.

``rank_i = (1/2 + sum_j sigmoid((x_j - x_i) / tau_ij)) / n`` (descending, ties averaged,
normalized by n), with a temperature per distinct value ``tau_g = softness * spacing_g * exp(h_g)``
and ``tau_gh = sqrt(tau_g tau_h)`` per pair:

* ``spacing_g``: the smaller of the gaps from value ``g`` to the next distinct value below and above;
* ``h_g``: a small convolutional network that runs along the distinct values in sorted order,
  reading the ``2 * radius`` log gaps around each (relative to the row's typical gap), its tie
  multiplicity and ``log n``; ``h`` is centred per row.

The unit of the computation is the tie group (a distinct value and its multiplicity): each value
is compared softly with the ``band`` nearest distinct values on either side and exactly (0 or 1)
with the rest, so equal scores get equal ranks at every ``n``, in ``O(n log n + n band)`` time and
``O(n band)`` memory.  Gradients flow through the comparisons at fixed temperatures, including
those of tied elements with each other (``sigmoid'(0) / tau``), so a rank loss can pull ties
apart.  With ``temperature_floor`` (in score units, what the rank losses use) every temperature is
at least about the floor.  Without it the sorter is permutation-equivariant and invariant to
positive affine maps; rows are rescaled by an exact power of two first, so finite scores of any magnitude
rank alike, and half-precision scores are ranked in float32.  The forward has no host
synchronisation and no branch on values: ``torch.compile(sorter, fullgraph=True)`` works.
Design, rationale and measurements: ``docs/sorter.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sodeep.argsort import argsort
from sodeep.checks import check_integer
from sodeep.sorters.base import (
    HALF_PRECISION,
    Sorter,
    check_positive_setting,
    scale_rows_by_power_of_two,
)

#: Longest rows any ConvSorter accepts (memory and time grow as ``n * band``).
MAX_LENGTH = 16384
# A missing gap (no distinct value below the smallest or above the largest) reads as a gap
# e^8 ~ 3000 times the row's typical gap: far away, which is what "no neighbour" means.
MISSING_GAP_LOG = 8.0
# Bands up to this many values on each side keep their window's width on rows shorter than it.
SHORT_ROW_REACH = 16
# |logit| beyond which a comparison counts as decided: sigmoid(-30) = 9e-14.
LOGIT_LIMIT = 30.0
#: Compiled code, and CPU batches of at least this many scores (ties included), compare values
#: one offset at a time (each pair's sigmoid once); other batches by windows (fewer, larger
#: operations): the faster of the two (``docs/sorter.md``, "Speed").  Bands wider than
#: SHORT_ROW_REACH are always compared by windows.
BY_OFFSET_MIN_ELEMENTS = 8192
# The temperature network reads log gaps relative to the row's typical one within +-16 (a factor
# of 9e6), the range of its training data.
FEATURE_LOG_GAP = 16.0


def log_tau_limit(dtype: torch.dtype) -> float:
    """Bound on ``|log tau|`` in the scores' units: pair couplings ``1 / tau`` then stay below
    ``e^-8`` times the dtype's largest value, so no finite scores give an infinite coupling, a
    ``0 * inf`` or a NaN (``+-80.7`` in float32, ``+-701.8`` in float64).  Values closer than
    ``e^-limit`` (float32 subnormal gaps) are compared softly, as nearly tied."""
    return math.log(torch.finfo(dtype).max) - 8.0


#: Hidden activations of the temperature network, by the name checkpoints record.
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}
_ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu}


def distinct_value_groups(sorted_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal values of rows sorted ascending.

    Args:
        sorted_scores: ``(B, n)``, ascending along the last dimension.

    Returns:
        ``(group_id, group_size)``, each ``(B, n)``: ``group_id`` (long) maps each sorted position
        to the index ``g`` of its distinct value; ``group_size[:, g]`` is the multiplicity of the
        ``g``-th distinct value for ``g < G`` (the row's number of distinct values) and 0 beyond.
    """
    starts = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group_id = F.pad(starts.cumsum(-1), (1, 0))
    group_size = torch.zeros_like(sorted_scores).scatter_add(-1, group_id, torch.ones_like(sorted_scores))
    return group_id, group_size


def soft_group_ranks(values: torch.Tensor, sizes: torch.Tensor, log_tau: torch.Tensor, reach: int) -> torch.Tensor:
    """Descending soft ranks of distinct values, each compared softly with the ``reach`` nearest
    distinct values on either side and exactly with the rest.

    ``rank_g = 1/2 + #{elements above the band} + sum_h size_h sigmoid((v_h - v_g) / tau_gh)`` over
    ``|h - g| <= reach`` with ``tau_gh = sqrt(tau_g tau_h)``; the term ``h = g`` is
    ``size_g / 2``, the exact comparison of a value with its ties.  As temperatures go to 0 this
    is the exact average rank ``#greater + (size_g + 1) / 2``.

    Each comparison is computed on its side of 1/2: ``sigmoid(-x)`` for the values below
    (``x >= 0``), ``1 - sigmoid(-x)`` for those above, so that its derivative, ``sigmoid'(-x)``, is
    not lost where ``sigmoid(x)`` rounds to 1 (``x`` beyond about 17 in float32).

    Args:
        values: ``(B, G)`` distinct values, ascending where ``sizes > 0``, finite everywhere.
        sizes: ``(B, G)`` multiplicities, 0 for padding groups (which then add nothing).
        log_tau: ``(B, G)`` log temperatures, at most :func:`log_tau_limit` in magnitude.
        reach: ``>= 1``; beyond the row's ends the windows hold padding, which adds nothing.

    Returns:
        ``(B, G)`` unnormalized ranks (meaningful where ``sizes > 0``).
    """
    root_inverse_tau = torch.exp(-0.5 * log_tau)
    # (An eager GPU launches a kernel per operation: it keeps the windows' few.  Compiled code
    # does not look at the size, which may be symbolic.)
    by_offset = torch.compiler.is_compiling() or (
        values.device.type == "cpu" and values.numel() >= BY_OFFSET_MIN_ELEMENTS
    )
    if by_offset and reach <= SHORT_ROW_REACH:
        soft = _soft_comparisons_by_offset(values, sizes, root_inverse_tau, reach)
    else:
        soft = _soft_comparisons_by_window(values, sizes, root_inverse_tau, reach)
    count_up_to = sizes.cumsum(-1)
    above = count_up_to[:, -1:] - count_up_to
    return soft.add_(above).add_(sizes + 1, alpha=0.5)


# Logits are clipped where the sigmoid has saturated (which also covers products that overflow,
# finite values times finite couplings): beyond, sigmoid(-x) and its derivative fall towards
# subnormal numbers, which CPUs compute many times slower.  A pair beyond counts 9e-14 instead of
# less (docs/sorter.md, "Numerical range").  Each pair's logit is -|v_h - v_g| / tau_gh, the side
# of its comparison below 1/2: the value below adds sigmoid(-x) to the ranks of the value above;
# the value above adds 1 - sigmoid(-x) to the value below, its 1 counted with the elements above.
# The value itself adds size_g / 2, the exact comparison with its ties, and no gradient: the
# gradient of its logit, +c and -c by the two paths of the difference, would cancel only in
# exact arithmetic, and where c is large (values closer than the row's typical gap) the rounding
# would swamp the terms of its neighbours.  The two functions below compute the same sum.


def _soft_comparisons_by_window(
    values: torch.Tensor, sizes: torch.Tensor, root_inverse_tau: torch.Tensor, reach: int
) -> torch.Tensor:
    """``sum_h size_h (sigmoid or its complement)`` over the ``2 reach + 1`` window around each
    value, as views ``(B, G, 2 reach + 1)`` of padded rows: few operations, each pair twice."""

    def windows(rows: torch.Tensor) -> torch.Tensor:
        return F.pad(rows, (reach, reach)).unfold(-1, 2 * reach + 1, 1)

    # +1 for the values below in the window, -1 for those above, 0 for the value itself.
    side = torch.arange(reach, -reach - 1, -1, device=values.device, dtype=values.dtype).sign()
    # (In place: no new (B, G, 2 reach + 1) tensor, whose memory may come fresh from the system.)
    coupling = (windows(root_inverse_tau) * root_inverse_tau.unsqueeze(-1)).mul_(side)
    logits = ((windows(values) - values.unsqueeze(-1)) * coupling).clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
    return (torch.sigmoid(logits) * windows(sizes)).mul_(side).sum(-1)


def _soft_comparisons_by_offset(
    values: torch.Tensor, sizes: torch.Tensor, root_inverse_tau: torch.Tensor, reach: int
) -> torch.Tensor:
    """The same sum, one ``(B, G)`` operation per offset ``1 <= d <= reach`` between the two values
    of a pair: each pair's sigmoid once, and code that ``torch.compile`` fuses into one loop
    vectorized along the rows (a reduction over windows it compiles into a loop per value)."""
    length = values.shape[-1]

    def shifted(rows: torch.Tensor) -> torch.Tensor:  # rows[:, g + d] for d = 1 .. reach; 0 beyond the end
        return F.pad(rows, (0, reach))

    above_values, above_roots, above_sizes = shifted(values), shifted(root_inverse_tau), shifted(sizes)
    soft = torch.zeros_like(values)
    for d in range(1, reach + 1):
        above = slice(d, d + length)
        logit = (values - above_values[:, above]) * (root_inverse_tau * above_roots[:, above])
        below_side = torch.sigmoid(logit.clamp(-LOGIT_LIMIT, LOGIT_LIMIT))
        # To the value below: -size_above sigmoid; to the value d places above: +size_below sigmoid.
        to_above = F.pad(sizes * below_side, (d, 0))[:, :length]
        soft = soft + to_above - above_sizes[:, above] * below_side
    return soft


class ConvSorter(Sorter):
    """Adaptive-temperature pairwise sorter whose temperatures come from a small CNN.

    Args:
        capacity: largest ``n`` accepted (at most :data:`MAX_LENGTH`); ``log n / log capacity`` is
            one of the network's inputs.
        softness: temperature in units of the local spacing; the one knob between fidelity
            (small) and gradient reach (large).  Recorded in checkpoints.
        radius: the first convolution reads ``2 * radius`` gaps around each distinct value.
        width: channels of the hidden 1x1 convolutions (unused when ``depth`` is 0).
        depth: number of hidden layers (0: the first convolution is the last, a linear filter).
        band: compare each distinct value softly with its ``band`` nearest distinct values on each
            side and exactly with the rest (``None``: softly with all, ``O(n^2)``).
        activation: hidden activation of the temperature network, a key of :data:`ACTIVATIONS`
            (checkpoints that name none are ``"gelu"``).
        temperature_floor: ``None`` or 0 (the default: scale-free, evaluation-grade ranks) or a
            temperature in the units of the scores added to every element's own, so that pairs
            closer than about this much are compared softly whatever their neighbours (within the
            band; beyond it comparisons stay exact).  This is
            what makes the ranks teach a score model (its scale becomes the schedule from soft to
            sharp, as with torchsort's ``regularization_strength``); the rank losses use it by
            default (:data:`sodeep.checkpoints.TRAINING_SETTINGS`, ``docs/sorter.md``).

    Shapes: ``(n,)`` or ``(B, n)`` -> same shape and dtype, ``2 <= n <= capacity``; float16 and
    bfloat16 scores are ranked in float32.

    Example:
        >>> sorter = ConvSorter()  # untrained: the plain adaptive-temperature sorter
        >>> sorter(torch.tensor([0.2, 5.0, -1.0, 5.0])).detach()  # exact: [0.75, 0.375, 1, 0.375]
        tensor([0.7708, 0.3812, 0.9669, 0.3812])
    """

    architecture = "conv"
    permutation_equivariant = True

    @property
    def affine_invariant(self) -> bool:  # type: ignore[override]
        """Without a temperature floor; a floor is in the units of the scores."""
        return self.temperature_floor is None

    def __init__(
        self,
        capacity: int = MAX_LENGTH,
        softness: float = 0.5,
        radius: int = 4,
        width: int = 16,
        depth: int = 0,
        band: int | None = 8,
        activation: str = "relu",
        temperature_floor: float | None = None,
    ) -> None:
        super().__init__()
        check_integer(capacity, "capacity", 2, MAX_LENGTH)
        check_positive_setting(softness, "softness")
        check_integer(radius, "radius", 1)
        check_integer(width, "width", 1)
        check_integer(depth, "depth", 0)
        if band is not None:
            check_integer(band, "band", 1)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if temperature_floor is not None and (
            isinstance(temperature_floor, bool)
            or not isinstance(temperature_floor, Real)
            or not 0 <= temperature_floor < math.inf
        ):
            raise ValueError(f"temperature_floor must be None or a finite number >= 0, got {temperature_floor!r}")
        self.temperature_floor = float(temperature_floor) if temperature_floor else None
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
        # Linear layers over (B, G, channels) windows are the convolutions, channels-last: on a
        # CPU this is several times faster than Conv1d at these tiny sizes.
        self.network = nn.Sequential(*layers, head)
        self._linear_layers = (*layers[0::2], head)
        self.initialize()
        self.weights_unset = self.has_meta_weights()  # built under a meta device context

    def initialize(self) -> None:
        """Zero head: before training, h = 0 and the sorter is the plain adaptive-temperature one."""
        head = self._linear_layers[-1]
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)

    def config(self) -> dict[str, Any]:
        return {
            "capacity": self.max_length,
            "softness": self.softness,
            "radius": self.radius,
            "width": self.width,
            "depth": self.depth,
            "band": self.band,
            "activation": self.activation,
            "temperature_floor": self.temperature_floor,
        }

    def group_log_temperature(self, values: torch.Tensor, sizes: torch.Tensor, n: int) -> torch.Tensor:
        """Log temperatures of distinct values, in the units of ``values``.

        Args:
            values: ``(B, G)`` distinct values, ascending where ``sizes > 0``, any finite scale.
            sizes: ``(B, G)`` multiplicities, 0 for padding groups.
            n: the row length (``sizes`` sums to it).

        Returns:
            ``(B, G)`` log temperatures within ``+-log_tau_limit(dtype)``, differentiable in ``values``
            and in the network's parameters.
        """
        first, *others = self._linear_layers
        net_dtype = first.weight.dtype
        # Gap g lies between distinct values g and g + 1; it exists when value g + 1 does.  Gaps
        # are taken in the values' dtype, then read relative to the row's typical gap (numbers of
        # order 1) in the network's dtype.
        has_gap = sizes[:, 1:] > 0
        # Gaps of halved values (the gap between -3e38 and 3e38 would overflow float32).
        half_gap = torch.where(has_gap, torch.diff(values * 0.5), 1.0).clamp_min(torch.finfo(values.dtype).tiny)
        log_gap = half_gap.log() + math.log(2.0)
        row_log_gap = (log_gap * has_gap).sum(-1, keepdim=True) / has_gap.sum(-1, keepdim=True).clamp_min(1)
        relative = torch.where(has_gap, log_gap - row_log_gap, MISSING_GAP_LOG)
        multiplicity = sizes.to(net_dtype)

        # Distinct value g sees gaps g - radius .. g + radius - 1 (gap g - 1 below it, gap g above),
        # each within e^+-FEATURE_LOG_GAP of the typical gap: a gap of 1e-45 among unit gaps must
        # not sway the temperatures of its neighbours.
        features = relative.clamp(-FEATURE_LOG_GAP, FEATURE_LOG_GAP).to(net_dtype)
        gap_window = F.pad(features, (self.radius, self.radius), value=MISSING_GAP_LOG).unfold(-1, 2 * self.radius, 1)
        # The gaps below and above each value, unclamped: its spacing.
        around = F.pad(relative, (1, 1), value=MISSING_GAP_LOG)
        below, above = around[:, :-1], around[:, 1:]

        # The first convolution reads [gap window, log multiplicity, log n / log capacity]; the last
        # feature is constant over the batch, so it is folded into the bias (no feature tensor).
        window_weight = first.weight[:, : 2 * self.radius]
        multiplicity_weight = first.weight[:, 2 * self.radius]
        log_multiplicity = multiplicity.clamp_min(1).log()
        if others:
            # log n from the multiplicities (they sum to n) rather than from the Python number,
            # which a sorter compiled with dynamic=True would have to fix to one value.
            log_n = multiplicity.sum(-1, keepdim=True).log().unsqueeze(-1)
            # (B, G, channels): one matrix product per layer.
            hidden = F.linear(gap_window, window_weight, first.bias)
            hidden = hidden.addcmul(log_n, first.weight[:, -1], value=1 / math.log(self.max_length))
            hidden = hidden.addcmul(log_multiplicity.unsqueeze(-1), multiplicity_weight)
            for layer in others:
                hidden = F.linear(self._activation(hidden), layer.weight, layer.bias)
            offset = hidden.squeeze(-1)
        else:
            # One linear filter (depth 0): its bias and its log-n term add the same constant to
            # every element of a row, which the centring below removes, so they are skipped.
            offset = (gap_window * window_weight[0]).sum(-1) + log_multiplicity * multiplicity_weight[0]
        # Centre per row over elements (distinct values weighted by multiplicity): the network
        # moves sharpness around, it cannot make the sorter sharper overall.
        offset = offset - (offset * multiplicity).sum(-1, keepdim=True) / n

        # Local spacing: the smaller of the two gaps (a missing gap is never the smaller).
        log_tau = (row_log_gap + math.log(self.softness)) + torch.minimum(below, above) + offset.to(values.dtype)
        limit = log_tau_limit(values.dtype)
        return log_tau.clamp(-limit, limit)

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dtype in HALF_PRECISION:
            return self.rank_rows(scores.float()).to(scores.dtype)
        n = scores.shape[-1]
        order = argsort(scores)
        sorted_scores = scores.detach().gather(-1, order)
        group_id, sizes = distinct_value_groups(sorted_scores)
        # Rows scaled by the power of two that brings their typical gap (geometric mean of the
        # nonzero gaps) to ~1, as far as their largest magnitude allows (it stays below 2^-8 times
        # the dtype's largest value): exact, so ranks do not change, and temperatures of 1e-40 or
        # 1e300 become numbers of order 1.  A gap past the dtype's range (-3e38 to 3e38 in
        # float32) counts as its largest value.
        with torch.no_grad():
            gap = torch.diff(sorted_scores).clamp_max(torch.finfo(scores.dtype).max)
            positive = gap > 0
            log2_gap = torch.where(positive, gap, 1.0).log2().sum(-1, keepdim=True) / positive.sum(
                -1, keepdim=True
            ).clamp_min(1)
            largest = torch.maximum(sorted_scores[:, :1].abs(), sorted_scores[:, -1:].abs())
            headroom = math.log2(torch.finfo(scores.dtype).max) - 8 - torch.where(largest > 0, largest, 1.0).log2()
            log2_size = torch.maximum(log2_gap, -headroom)
        members = scale_rows_by_power_of_two(scores.gather(-1, order), log2_size)
        # Distinct values, exact, with the gradient of their members' mean: a tie group's gradient
        # is shared equally among its elements.  (A sum of equal values could overflow; a sum of
        # zeros cannot.)
        exact_values = torch.zeros_like(sorted_scores).scatter(-1, group_id, members.detach())
        deltas = members - members.detach()  # zeros that carry the gradient of each element
        group_deltas = torch.zeros_like(members).scatter_add(-1, group_id, deltas) / sizes.clamp_min(1)
        values = exact_values + group_deltas
        # Temperatures carry no gradient to the scores: the exact derivative of these adaptive
        # temperatures teaches a score model to reshape its gaps instead of its order (docs/sorter.md).
        log_tau = self.group_log_temperature(exact_values, sizes, n)
        if self.temperature_floor is not None:
            # tau + floor, with the floor in the rescaled units (an exact power of two).
            log_floor = (math.log(self.temperature_floor) - torch.round(log2_size) * math.log(2.0)).to(log_tau.dtype)
            # A row of equal scores has no spacing to set a temperature by: it takes the floor
            # alone (the limit of rows whose scores are nearly equal where the band spans the row:
            # n <= band + 1).
            all_equal = sizes[:, 1:2] == 0
            log_tau = torch.where(all_equal, log_floor, torch.logaddexp(log_tau, log_floor))
        # Windows of a band up to SHORT_ROW_REACH keep their width whatever n (beyond a short row
        # they hold padding, which adds nothing): their shape does not change with n, so a sorter
        # compiled with dynamic=True does not recompile for short rows either.  Wider bands reach
        # at most the row's other values.
        reach = n - 1 if self.band is None else self.band if self.band <= SHORT_ROW_REACH else min(self.band, n - 1)
        group_ranks = soft_group_ranks(values, sizes, log_tau, reach)
        # Tied elements compare at 1/2 each; the derivative of those comparisons, sigmoid'(0) / tau
        # per pair, is kept by a term whose value is exactly 0: size * (group mean - own) / (4 tau).
        # A value without ties has no such pairs, and its term is left out: its gradient, +c and -c
        # by two paths, cancels only in exact arithmetic, and where c is large (values closer than
        # the row's typical gap) the rounding would swamp the gradient of its comparisons.
        tie_coupling = (0.25 * torch.where(sizes > 1, sizes, 0) * torch.exp(-log_tau.detach())).gather(-1, group_id)
        within_ties = (group_deltas.gather(-1, group_id) - deltas) * tie_coupling
        sorted_ranks = (group_ranks.gather(-1, group_id) + within_ties) / n
        # order is a permutation, so every entry of the copy is overwritten.
        return sorted_ranks.scatter(-1, order, sorted_ranks)
