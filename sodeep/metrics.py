"""Fidelity metrics of predicted ranks against exact ranks, per row."""

from __future__ import annotations

import torch

from sodeep.checks import check_dense, check_float_dtype, require

__all__ = ["mean_absolute_rank_error", "mean_spearman", "rowwise_spearman"]


def rowwise_spearman(predicted_ranks: torch.Tensor, true_ranks: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each row: Pearson correlation of predicted and exact ranks.

    It correlates what it is given: pass ranks (``sodeep.rank(scores)``, a sorter's output), not
    raw scores, whose Pearson correlation it would return instead.

    Args:
        predicted_ranks, true_ranks: ``(B, n)`` or ``(n,)`` (then the result is 0-d).

    Returns:
        ``(B,)`` in ``[-1, 1]``; NaN for a row whose exact ranks are constant (all tied, one
        element or none), where it is undefined; 0 for a row whose predicted ranks are constant
        while the exact ones are not; NaN for predictions that are not finite.

    Example:
        >>> rowwise_spearman(torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1.0, 2.0, 3.0]])).round(decimals=4)
        tensor([1.])
    """
    _check_pair(predicted_ranks, true_ranks)
    predicted, true = _centred(predicted_ranks), _centred(true_ranks)
    predicted_norm, true_norm = predicted.norm(dim=-1), true.norm(dim=-1)
    norms = predicted_norm * true_norm
    # Divided by 1 where a norm is 0 (the result is replaced below): no 0 / 0 in the gradient either.
    safe_norms = torch.where(norms == 0, torch.ones_like(norms), norms)
    correlation = ((predicted * true).sum(-1) / safe_norms).clamp(-1, 1)  # rounding may pass 1
    # Constant predictions carry no order: 0, not NaN (a collapsed sorter scores 0, not "undefined");
    # NaN or infinite predictions stay NaN.
    correlation = torch.where(predicted_norm == 0, 0.0, correlation)
    return torch.where(true_norm > 0, correlation, torch.nan)


def mean_spearman(predicted_ranks: torch.Tensor, true_ranks: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`rowwise_spearman` over the rows where it is defined (exact ranks not all
    tied): a scalar, NaN where no row is defined, and NaN where a defined row's predictions or
    exact ranks are not finite (a failing ranker is not averaged away).

    Args:
        predicted_ranks, true_ranks: ``(B, n)`` or ``(n,)``, ranks as for :func:`rowwise_spearman`.

    Example:
        >>> exact = torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])  # the second row is all tied
        >>> round(mean_spearman(torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.1, 0.9]]), exact).item(), 4)
        1.0
    """
    correlation = rowwise_spearman(predicted_ranks, true_ranks)
    defined = _centred(true_ranks).norm(dim=-1) != 0  # NaN exact ranks too: the mean is then NaN
    wide = torch.promote_types(correlation.dtype, torch.float32)  # float16 would overflow past 65,504 rows
    total = torch.where(defined, correlation, 0.0).sum(-1, dtype=wide)
    return (total / defined.sum(-1)).to(correlation.dtype)


def _check_pair(predicted_ranks: torch.Tensor, true_ranks: torch.Tensor) -> None:
    """Two tensors of one shape, ``(B, n)`` or ``(n,)``: no silent broadcasting of rows."""
    for name, value in (("predicted_ranks", predicted_ranks), ("true_ranks", true_ranks)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers (floating or integer ranks), got {value.dtype}")
        if value.is_floating_point():
            check_float_dtype(value, name)
        check_dense(value, name)
    if predicted_ranks.shape != true_ranks.shape:
        raise ValueError(
            f"predicted_ranks and true_ranks must have one shape, (B, n) or (n,), got "
            f"{tuple(predicted_ranks.shape)} and {tuple(true_ranks.shape)}"
        )
    if predicted_ranks.dim() not in (1, 2):
        shape = tuple(predicted_ranks.shape)
        hint = f": rows of {shape[-1]} are each .reshape(-1, {shape[-1]})" if predicted_ranks.dim() > 2 else ""
        raise ValueError(f"predicted_ranks and true_ranks must be (B, n) or (n,), got shape {shape}{hint}")


def _centred(rows: torch.Tensor) -> torch.Tensor:
    """Rows divided by their largest magnitude (rows of zeros kept), then centred: values near
    the dtype's limit neither overflow the mean nor the norm.  Empty rows stay empty."""
    if rows.shape[-1] == 0:  # a shape, not a value: no synchronisation
        return rows
    largest = rows.abs().amax(-1, keepdim=True)
    rows = rows / torch.where(largest > 0, largest, torch.ones_like(largest))
    return rows - rows.mean(-1, keepdim=True)


def mean_absolute_rank_error(predicted_ranks: torch.Tensor, true_ranks: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each row in *positions*: ``mean |r_hat - r| * n`` for normalized ranks.

    Args:
        predicted_ranks, true_ranks: ``(B, n)`` or ``(n,)`` normalized ranks.

    Returns:
        ``(B,)``, or 0-d for ``(n,)`` rows.

    Example:
        >>> mean_absolute_rank_error(torch.tensor([[0.40, 0.60, 1.0]]), torch.tensor([[1 / 3, 2 / 3, 1.0]]))
        tensor([0.1333])
    """
    _check_pair(predicted_ranks, true_ranks)
    for name, value in (("predicted_ranks", predicted_ranks), ("true_ranks", true_ranks)):
        if not value.is_floating_point():  # positions (1, 2, 3) would be counted n times over
            raise TypeError(
                f"{name} must be normalized ranks, a floating-point tensor (positions divided by n, as "
                f"sodeep.rank gives them), got {value.dtype}"
            )
    # Float positions too (rank(..., normalized=False), scipy's rankdata) would be counted n times
    # over: exact normalized ranks are at most 1.  (NaN is left to the result.)
    require(
        ~(true_ranks > 1),
        "true_ranks must be normalized ranks, at most 1 (positions divided by n, as sodeep.rank gives them), "
        "found values above 1: divide positions by n",
    )
    return (predicted_ranks - true_ranks).abs().mean(-1) * true_ranks.shape[-1]
