"""sodeep's default sorter: pairwise comparisons at temperatures set by a convolutional network.

Design (rationale and ablations in ``pretrained/MODEL_CARD.md``)
-----------------------------------------------------------------
Soft ranks from pairwise sigmoids, ``rank_i = (1/2 + sum_j sigmoid((x_j - x_i) / tau_ij)) / n``,
are exact for ties, permutation-equivariant and differentiable, but one global temperature fails
on real scores: heavy tails and outliers squeeze most values into a sliver of the range (blurred
ranks), while sparse regions get no gradient.  Here every element ``i`` gets its own temperature
``tau_i``, measured in units of the *local spacing* of the values around it, and a pair uses the
geometric mean of its two temperatures, ``tau_ij = sqrt(tau_i tau_j)`` (so ``p_ij + p_ji = 1`` and
the ranks always sum to ``(n + 1) / 2``).

``tau_i = softness * spacing_i * exp(h_i)``:

* ``spacing_i`` is the smaller of the gaps from ``x_i`` to the next distinct value below and above.
* ``h_i`` comes from a small convolutional network that runs along the *distinct values in
  sorted order* (so it sees the neighbourhood in value space, which no permutation of the input
  changes): a first convolution reads the ``2 * radius`` log gaps around each distinct value
  (relative to the row's typical gap), joined by its tie multiplicity and ``log n``, and 1x1
  convolutions follow.  ``h`` is centred per row, so the network cannot make the sorter sharper
  overall (which would trade gradient reach for fidelity without limit); it learns *where* to be
  sharp (around outliers, cluster edges, ties) and where soft.  The last layer starts at zero,
  so an untrained network is the plain adaptive-temperature sorter.  (A first version compared
  pairs at ``min(tau_i, tau_j)``; training then made a few elements arbitrarily soft, which costs
  nothing under the min, and the rest arbitrarily sharp: the hard rank with vanishing gradients.)

Sorting computes the temperatures, which carry no gradient, and lets the pairwise sum be banded:
each element is compared softly with its ``band`` nearest neighbours on either side in sorted
order and exactly (0, 1/2 or 1) with the rest, whose sigmoids are nearly saturated at these
temperatures.
Gradients reach the scores through the banded sigmoids alone; the cost is ``O(n log n + n band)``.  Everything is scale-free, so the sorter is invariant to
positive affine maps of its input, and one set of weights serves every ``2 <= n <= capacity``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sodeep.sorters.base import Sorter

# A missing gap (no distinct value below the smallest or above the largest) reads as a gap
# e^8 ~ 3000 times the row's typical gap: far away, which is what "no neighbour" means.
MISSING_GAP_LOG = 8.0

#: Hidden activations of the temperature network, by the name checkpoints record.
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}


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


def banded_soft_correction(sorted_scores: torch.Tensor, root_inverse_tau: torch.Tensor, reach: int) -> torch.Tensor:
    """Soft minus exact comparisons of each element with its ``reach`` nearest neighbours on
    either side in sorted order, summed: ``sum_j sigmoid((x_j - x_k) / tau_kj) - H(x_j - x_k)``
    over ``0 < |j - k| <= reach``, with ``1 / tau_kj = r_k r_j`` and ``H`` the exact comparison
    (0, 1/2 for ties, 1).

    Args:
        sorted_scores: ``(B, n)``, ascending; gradients flow through it.
        root_inverse_tau: ``(B, n)``, ``r = tau ** -1/2`` at each sorted position (positive).
        reach: ``1 <= reach <= n - 1``.

    Returns:
        ``(B, n)``: the correction to add to the exact (unnormalized) descending ranks.
    """
    # Windows (B, n, 2 reach + 1) of the neighbours.  Outside the row r is 0, so z = 0 and the
    # pair adds sigmoid(0) - 1/2 = 0 with no gradient: no mask needed.  (Evaluating each pair's
    # sigmoid once and reading the lower half through a skewed view does half the arithmetic but
    # more operations, and measured slower at B=32, n=100.)
    neighbours = F.pad(sorted_scores, (reach, reach)).unfold(-1, 2 * reach + 1, 1)
    root_neighbours = F.pad(root_inverse_tau, (reach, reach)).unfold(-1, 2 * reach + 1, 1)
    z = (neighbours - sorted_scores.unsqueeze(-1)) * (root_inverse_tau.unsqueeze(-1) * root_neighbours)
    with torch.no_grad():
        # z has the sign of x_j - x_k inside the row (r > 0); ties, self and padding have z = 0.
        hard = z.sign().mul_(0.5).add_(0.5)
    return (torch.sigmoid(z) - hard).sum(-1)


class ConvSorter(Sorter):
    """Adaptive-temperature pairwise sorter whose temperatures come from a small CNN.

    Args:
        capacity: largest ``n`` accepted (the lengths it was trained and validated on).
        softness: temperature in units of the local spacing; the one knob between fidelity
            (small) and gradient reach (large).  Recorded in checkpoints.
        radius: the first convolution reads ``2 * radius`` gaps around each distinct value.
        width: channels of the hidden 1x1 convolutions.
        depth: number of hidden layers.
        band: compare each element softly with its ``band`` nearest neighbours on each side in
            sorted order and exactly with the rest (``None``: softly with all, ``O(n^2)``).  The
            band moves single ranks by a fraction of a position (more inside large tie groups,
            where it is closer to the exact rank than all pairs are); the model card compares.
        activation: hidden activation of the temperature network, a key of :data:`ACTIVATIONS`
            (``"relu"``: ~40 us less per layer than exact ``"gelu"`` at B=32, n=100 on this CPU,
            same fidelity after pretraining; checkpoints without the key are GELU).

    Shapes: ``(n,)`` or ``(B, n)`` -> same shape, ``2 <= n <= capacity``.

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
        depth: int = 2,
        band: int | None = 8,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        if not softness > 0:
            raise ValueError(f"softness must be > 0, got {softness}")
        if radius < 1 or width < 1 or depth < 1:
            raise ValueError(f"radius, width and depth must be >= 1, got {radius}, {width}, {depth}")
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

    def sorted_log_temperature(self, sorted_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Temperatures of rows sorted ascending; differentiable in the network's parameters only.

        Args:
            sorted_scores: ``(B, n)``, ascending.

        Returns:
            ``(log_tau, group_id, group_size)``, each ``(B, n)``: ``log tau`` at each sorted
            position (in the units of the scores) and the grouping of
            :func:`distinct_value_groups`.
        """
        n = sorted_scores.shape[-1]
        net_dtype = self.network[0].weight.dtype
        sorted_scores = sorted_scores.detach()
        group_id, group_value, group_size = distinct_value_groups(sorted_scores)
        values, multiplicity = group_value.to(net_dtype), group_size.to(net_dtype)

        # Gap g lies between distinct values g and g + 1; it exists when g + 1 < G.
        has_gap = multiplicity[:, 1:] > 0
        gap = (values[:, 1:] - values[:, :-1]).clamp_min(torch.finfo(net_dtype).tiny)
        log_gap = torch.where(has_gap, gap.log(), 0.0)
        row_log_gap = log_gap.sum(-1, keepdim=True) / has_gap.sum(-1, keepdim=True).clamp_min(1)
        relative = torch.where(has_gap, log_gap - row_log_gap, MISSING_GAP_LOG)

        # Distinct value g sees gaps g - radius .. g + radius - 1 (gap g - 1 below it, gap g above).
        padded = F.pad(relative, (self.radius, self.radius), value=MISSING_GAP_LOG)
        gap_window = padded.unfold(-1, 2 * self.radius, 1)  # (B, n, 2 * radius)
        below, above = gap_window[..., self.radius - 1], gap_window[..., self.radius]
        features = torch.cat(
            [
                gap_window,
                multiplicity.clamp_min(1).log().unsqueeze(-1),
                torch.full_like(below, math.log(n) / math.log(self.max_length)).unsqueeze(-1),
            ],
            dim=-1,
        )
        offset = self.network(features).squeeze(-1)
        # Centre per row over elements (distinct values weighted by multiplicity): the network
        # moves sharpness around, it cannot make the sorter sharper overall.
        offset = offset - (offset * multiplicity).sum(-1, keepdim=True) / n

        # Local spacing: the smaller of the two gaps (a missing gap is never the smaller).
        log_tau_group = math.log(self.softness) + row_log_gap + torch.minimum(below, above) + offset
        log_tau = log_tau_group.gather(-1, group_id).to(sorted_scores.dtype)
        return log_tau, group_id, group_size

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        n = scores.shape[-1]
        sorted_scores, order = scores.sort(dim=-1)
        log_tau, group_id, group_size = self.sorted_log_temperature(sorted_scores)
        reach = n - 1 if self.band is None else min(self.band, n - 1)
        # A pair is compared at the geometric mean of its two temperatures:
        # an element made soft blurs its own comparisons, so softness cannot be hidden.
        root_inverse_tau = torch.exp(-0.5 * log_tau)
        with torch.no_grad():
            # Exact descending rank at ascending position k: 1/2 + #greater + #equal / 2 (self included).
            group_end = group_size.cumsum(-1).gather(-1, group_id)
            exact = (n + 0.5) - group_end + 0.5 * group_size.gather(-1, group_id)
        correction = banded_soft_correction(sorted_scores, root_inverse_tau, reach)
        sorted_ranks = (exact + correction) / n
        return torch.empty_like(sorted_ranks).scatter(-1, order, sorted_ranks)
