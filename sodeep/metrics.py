"""Fidelity metrics of predicted ranks against exact ranks, per row."""

from __future__ import annotations

import torch


def rowwise_spearman(predicted_ranks: torch.Tensor, true_ranks: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row: Pearson correlation of predicted and exact ranks.

    Args:
        predicted_ranks, true_ranks: ``(B, n)``.

    Returns:
        ``(B,)`` in ``[-1, 1]``; NaN for a row whose exact ranks are constant (all tied), where it is
        undefined.

    Example:
        >>> rowwise_spearman(torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1.0, 2.0, 3.0]])).round(decimals=4)
        tensor([1.])
    """
    predicted = predicted_ranks - predicted_ranks.mean(-1, keepdim=True)
    true = true_ranks - true_ranks.mean(-1, keepdim=True)
    denominator = predicted.norm(dim=-1) * true.norm(dim=-1)
    correlation = ((predicted * true).sum(-1) / denominator).clamp(-1, 1)  # rounding may pass 1
    return torch.where(true.norm(dim=-1) > 0, correlation, torch.nan)


def mean_absolute_rank_error(predicted_ranks: torch.Tensor, true_ranks: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each row in *positions*: ``mean |r_hat - r| * n`` for normalized ranks.

    Args:
        predicted_ranks, true_ranks: ``(B, n)`` normalized ranks.

    Returns:
        ``(B,)``.
    """
    return (predicted_ranks - true_ranks).abs().mean(-1) * true_ranks.shape[-1]
