"""Rankers from relaxed permutation matrices: NeuralSort and SoftSort.

Both build a soft permutation matrix ``P`` (``P[k, i]``: how much element ``i`` sits at descending
position ``k``) and return ``rank_i = sum_k (k + 1) P[k, i] / n`` in sodeep's convention.  Scores
are centred on the row's mean and divided by its standard deviation (no gradient), so both are
affine-invariant; both are permutation-equivariant.  Memory is ``B * n^2``.  The functions compute
in the scores' dtype: where the logits divided by the temperature pass its range (float16 at small
temperatures) they give NaN; the sorter classes rank half precision in float32 and rescale rows
by a power of two first, for any finite scores.
"""

from __future__ import annotations

import torch

from sodeep.sorters.base import FixedTemperatureSorter, check_positive_setting, row_scale


def _standardized(scores: torch.Tensor) -> torch.Tensor:
    """Rows centred on their mean and divided by their std (both constants): NeuralSort's
    ``(n + 1 - 2k) s`` would otherwise lose float32 precision to a large common offset."""
    return (scores - scores.detach().mean(-1, keepdim=True)) / row_scale(scores)


def _ranks_from_permutation(permutation: torch.Tensor) -> torch.Tensor:
    n = permutation.shape[-1]
    positions = torch.arange(1, n + 1, dtype=permutation.dtype, device=permutation.device)
    return (positions.unsqueeze(-1) * permutation).sum(-2) / n


def neuralsort_rank(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """NeuralSort (Grover et al., ICLR 2019): ``P[k, :] = softmax(((n + 1 - 2k) s - A 1) / tau)``
    with ``A_ij = |s_i - s_j|``.  ``scores``: ``(B, n)`` -> ``(B, n)``; ``temperature > 0``."""
    check_positive_setting(temperature, "temperature")
    s = _standardized(scores)
    n = s.shape[-1]
    absolute_sum = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs().sum(-1)  # (B, n): sum_j |s_i - s_j|
    scaling = n + 1 - 2 * torch.arange(1, n + 1, dtype=s.dtype, device=s.device)  # (n,)
    logits = scaling.unsqueeze(-1) * s.unsqueeze(-2) - absolute_sum.unsqueeze(-2)  # (B, k, i)
    return _ranks_from_permutation(torch.softmax(logits / temperature, dim=-1))


def softsort_rank(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """SoftSort (Prillo & Eisenschlos, ICML 2020): ``P[k, :] = softmax(-|sort(s)_k - s| / tau)``.
    ``scores``: ``(B, n)`` -> ``(B, n)``; ``temperature > 0``."""
    check_positive_setting(temperature, "temperature")
    s = _standardized(scores)
    sorted_scores = s.sort(dim=-1, descending=True).values
    logits = -(sorted_scores.unsqueeze(-1) - s.unsqueeze(-2)).abs()
    return _ranks_from_permutation(torch.softmax(logits / temperature, dim=-1))


class NeuralSortSorter(FixedTemperatureSorter):
    """:func:`neuralsort_rank` with a fixed ``temperature`` (``> 0``, in units of the row's
    standard deviation; default 0.01).

    Shapes: ``(n,)`` or ``(B, n)`` -> the same shape and dtype, any ``n >= 2``; memory ``B * n^2``.

    Example:
        >>> NeuralSortSorter(temperature=0.5)(torch.tensor([0.2, 5.0, -1.0, 5.0]))  # exact: [0.75, 0.375, 1, 0.375]
        tensor([0.8100, 0.3915, 0.9069, 0.3915])
    """

    architecture = "neuralsort"
    rank_function = staticmethod(neuralsort_rank)


class SoftSortSorter(FixedTemperatureSorter):
    """:func:`softsort_rank` with a fixed ``temperature`` (``> 0``, in units of the row's
    standard deviation; default 0.01).

    Shapes: ``(n,)`` or ``(B, n)`` -> the same shape and dtype, any ``n >= 2``; memory ``B * n^2``.

    Example:
        >>> SoftSortSorter(temperature=0.5)(torch.tensor([0.2, 5.0, -1.0, 5.0]))  # exact: [0.75, 0.375, 1, 0.375]
        tensor([0.8063, 0.4000, 0.8937, 0.4000])
    """

    architecture = "softsort"
    rank_function = staticmethod(softsort_rank)
