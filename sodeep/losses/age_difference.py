"""The age-difference loss of Cheng et al., "Brain Age Estimation From MRI Using Cascade Networks
With Ranking Loss", IEEE TMI 2021: pairwise differences of predictions should match those of the
targets.  Generic: any regression whose pairwise differences matter (ages, scores, times)."""

from __future__ import annotations

import torch
from torch import nn

from sodeep.checks import check_integer
from sodeep.losses.precision import float32_under_autocast
from sodeep.losses.validation import check_rank, check_same_shape, check_tensor


@float32_under_autocast
def age_difference_loss(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_pairs: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean over pairs ``(i, j)``, ``i != j``, of ``((p_i - p_j) - (t_i - t_j))^2``.

    With all pairs (the default) this is exact and deterministic, computed from its closed form:
    with errors ``e = p - t``, ``mean_{i != j} (e_i - e_j)^2 = 2 * var(e)`` (unbiased variance),
    ``O(n)`` instead of ``O(n^2)``.  With ``num_pairs``, pairs ``i != j`` are drawn uniformly
    with ``generator`` (on the inputs' device), for an unbiased estimate.

    Args:
        predictions, targets: ``(n,)``, ``n >= 2`` (e.g. predicted and chronological ages);
            targets may be integers.
        num_pairs: sample this many pairs instead of using all.
        generator: the random source for sampled pairs (required with ``num_pairs``, refused
            without it).

    Returns:
        A scalar in the predictions' dtype, computed in at least float32: in float16 a loss above
        65,504 (differences of a few hundred years, as from an untrained model's raw outputs) is inf.

    Example:
        >>> age_difference_loss(torch.tensor([30.0, 50.0, 70.0]), torch.tensor([20.0, 50.0, 80.0]))
        tensor(200.)
    """
    check_tensor(predictions, "predictions")
    check_tensor(targets, "targets", floating=False)  # integer ages are ages
    check_same_shape(predictions, targets, "predictions and targets")
    if predictions.dim() == 2 and predictions.shape[-1] == 1:  # a regression model's (B, 1) output
        raise ValueError(
            f"predictions must have shape (n,), got shape {tuple(predictions.shape)}: pass "
            "predictions.squeeze(-1) and targets.squeeze(-1)"
        )
    check_rank(predictions, "predictions", (1,), "(n,)")
    n = predictions.shape[0]
    if n < 2:
        raise ValueError(
            f"age_difference_loss needs n >= 2 subjects to form pairs, got shape {tuple(predictions.shape)}"
        )
    if generator is not None and num_pairs is None:
        raise ValueError("a generator draws pairs only with num_pairs; without num_pairs every pair is used")
    if targets.dtype == torch.bool:
        raise TypeError("targets must be numbers (ages), got a bool tensor")
    # In at least float32 (and float64 if either input is): half-precision targets round ages,
    # and a half-precision variance of large errors overflows.
    wide = torch.promote_types(predictions.dtype, torch.float32)
    if targets.is_floating_point():
        wide = torch.promote_types(wide, targets.dtype)
    errors = predictions.to(wide) - targets.to(wide)
    if num_pairs is None:
        return (2.0 * errors.var(unbiased=True)).to(predictions.dtype)
    check_integer(num_pairs, "num_pairs", 1)
    if generator is None:
        raise ValueError("num_pairs needs an explicit generator (no hidden global randomness in a loss)")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    first = torch.randint(0, n, (num_pairs,), generator=generator, device=generator.device)
    # Second index uniform over the n - 1 others: shift by 1..n-1 modulo n.
    second = (first + torch.randint(1, n, (num_pairs,), generator=generator, device=generator.device)) % n
    first, second = first.to(errors.device), second.to(errors.device)
    return (errors[first] - errors[second]).square().mean().to(predictions.dtype)


class AgeDifferenceLoss(nn.Module):
    """Module form of :func:`age_difference_loss` over all pairs: ``loss(predictions, targets)``,
    both ``(n,)`` with ``n >= 2``, -> a scalar.  All pairs are exact and cost ``O(n)`` (closed
    form); to draw pairs at random instead, call the function with ``num_pairs`` and a generator.

    Example:
        >>> AgeDifferenceLoss()(torch.tensor([30.0, 50.0, 70.0]), torch.tensor([20.0, 50.0, 80.0]))
        tensor(200.)
    """

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return age_difference_loss(predictions, targets)
