"""The exact pairwise-sigmoid sorter: no training, one temperature."""

from __future__ import annotations

from typing import Any

import torch

from sodeep.sorters.base import HALF_PRECISION, Sorter, scale_rows_by_power_of_two


@torch.no_grad()
def row_scale(scores: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each row ``(..., 1)``, as a constant; 1 where a row is constant
    (or has one element), since any positive scale ranks an all-tied row correctly."""
    if scores.shape[-1] < 2:
        return torch.ones_like(scores[..., :1])
    spread = scores.std(dim=-1, keepdim=True)
    return torch.where(spread > 0, spread, torch.ones_like(spread))


def pairwise_sigmoid_rank(scores: torch.Tensor, temperature: float, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Soft descending ranks from all pairwise comparisons, normalized by ``n``.

    ``rank_i = (1/2 + sum_j sigmoid((x_j - x_i) / (temperature * std(x)))) / n``, where the sum
    includes ``j = i`` (which contributes 1/2), so ties get average ranks and, as ``temperature``
    goes to 0, the result converges to :func:`sodeep.rank`.  The row's standard deviation is
    treated as a constant (no gradient), which makes the sorter invariant to positive affine maps.
    This is the ``exa`` sorter of SoDeep (Engilberge et al., CVPR 2019), vectorized over the batch.

    Args:
        scores: ``(..., n)``.
        temperature: ``> 0``, in units of the row's standard deviation.
        scale: use this ``(..., 1)`` scale instead of the row's standard deviation.

    Returns:
        ``(..., n)``, same dtype and device.

    Example:
        >>> pairwise_sigmoid_rank(torch.tensor([[0.0, 3.0, 1.0]]), temperature=1e-3)
        tensor([[1.0000, 0.3333, 0.6667]])
    """
    n = scores.shape[-1]
    with torch.no_grad():
        spread = row_scale(scores) if scale is None else scale.expand_as(scores[..., :1])
        inverse_scale = (1.0 / (temperature * spread)).unsqueeze(-1)
    differences = scores.unsqueeze(-2) - scores.unsqueeze(-1)  # [..., i, j] = x_j - x_i
    return (0.5 + torch.sigmoid(differences * inverse_scale).sum(-1)) / n


class FixedTemperatureSorter(Sorter):
    """Base of untrained sorters with one ``temperature`` (in units of the row's std):
    permutation-equivariant and affine-invariant, any ``n >= 2``, memory ``B * n^2``.  Rows are
    first brought to a largest magnitude ~1 by an exact power of two, and half-precision scores
    are ranked in float32, so rows of any finite magnitude and floating dtype rank alike.
    Subclasses set ``rank_function(scores, temperature)``."""

    permutation_equivariant = True
    affine_invariant = True

    def __init__(self, temperature: float = 0.01) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @staticmethod
    def rank_function(scores: torch.Tensor, temperature: float) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.dtype in HALF_PRECISION:
            return self.rank_rows(scores.float()).to(scores.dtype)
        # Rows brought to a largest magnitude ~1 by an exact power of two: the row's standard
        # deviation and 1 / (temperature * std) then stay in range (rows of 1e-40 or 1e300 work).
        with torch.no_grad():
            largest = scores.abs().amax(-1, keepdim=True)
            log2_size = torch.where(largest > 0, largest, 1.0).log2()
        return self.rank_function(scale_rows_by_power_of_two(scores, log2_size), self.temperature)

    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class PairwiseSigmoidSorter(FixedTemperatureSorter):
    """Untrained sorter: :func:`pairwise_sigmoid_rank` with a fixed ``temperature``."""

    architecture = "pairwise_sigmoid"
    rank_function = staticmethod(pairwise_sigmoid_rank)
