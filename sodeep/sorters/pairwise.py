"""The pairwise-sigmoid sorter (SoDeep's ``exa``): no training, one temperature."""

from __future__ import annotations

import torch

from sodeep.sorters.base import FixedTemperatureSorter, check_positive_setting, row_scale


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
        ``(..., n)``, same dtype and device, computed in that dtype: where ``1 / (temperature *
        std)`` passes its range (float16 rows, rows of magnitude 1e-38 in float32) the ranks are
        NaN.  :class:`PairwiseSigmoidSorter` ranks any finite rows: it rescales them by a power
        of two first and ranks half precision in float32.

    Example:
        >>> pairwise_sigmoid_rank(torch.tensor([[0.0, 3.0, 1.0]]), temperature=1e-3)
        tensor([[1.0000, 0.3333, 0.6667]])
    """
    check_positive_setting(temperature, "temperature")
    n = scores.shape[-1]
    # The scale is a constant, for forward-mode AD too (which ``torch.no_grad`` does not stop).
    spread = row_scale(scores) if scale is None else scale.detach().expand_as(scores[..., :1])
    inverse_scale = (1.0 / (temperature * spread)).unsqueeze(-1)
    differences = scores.unsqueeze(-2) - scores.unsqueeze(-1)  # [..., i, j] = x_j - x_i
    return (0.5 + torch.sigmoid(differences * inverse_scale).sum(-1)) / n


class PairwiseSigmoidSorter(FixedTemperatureSorter):
    """Untrained sorter: :func:`pairwise_sigmoid_rank` with a fixed ``temperature``.

    Args:
        temperature: ``> 0``, in units of the row's standard deviation (default 0.01), so the
            ranks do not change when the scores are scaled.  (``ConvSorter``'s
            ``temperature_floor`` is in the units of the scores instead.)

    Shapes: ``(n,)`` or ``(B, n)`` -> the same shape and dtype, any ``n >= 2``; memory ``B * n^2``.

    Example:
        >>> PairwiseSigmoidSorter(temperature=0.5)(torch.tensor([0.2, 5.0, -1.0, 5.0]))  # exact: [0.75, 0.375, 1, 0.375]
        tensor([0.8069, 0.3919, 0.9094, 0.3919])
    """

    architecture = "pairwise_sigmoid"
    rank_function = staticmethod(pairwise_sigmoid_rank)
