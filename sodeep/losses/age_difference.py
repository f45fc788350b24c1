"""Brain-age losses of Cheng et al., "Brain Age Estimation From MRI Using Cascade Networks With
Ranking Loss", IEEE TMI 2021: the age-difference loss and the combined objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sodeep.losses.rank import Ranker, SpearmanLoss
from sodeep.losses.validation import check_rank, check_same_shape, check_tensor


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
        predictions, targets: ``(n,)``, ``n >= 2`` (e.g. predicted and chronological ages).
        num_pairs: sample this many pairs instead of using all.
        generator: the random source for sampled pairs (required with ``num_pairs``).

    Returns:
        A scalar.

    Example:
        >>> age_difference_loss(torch.tensor([30.0, 50.0, 70.0]), torch.tensor([20.0, 50.0, 80.0]))
        tensor(200.)
    """
    check_tensor(predictions, "predictions")
    check_tensor(targets, "targets")
    check_same_shape(predictions, targets, "predictions and targets")
    check_rank(predictions, "predictions", (1,), "(n,)")
    n = predictions.shape[0]
    if n < 2:
        raise ValueError(
            f"age_difference_loss needs n >= 2 subjects to form pairs, got shape {tuple(predictions.shape)}"
        )
    errors = predictions - targets
    if num_pairs is None:
        return 2.0 * errors.var(unbiased=True)
    if generator is None:
        raise ValueError("num_pairs needs an explicit generator (no hidden global randomness in a loss)")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    first = torch.randint(0, n, (num_pairs,), generator=generator, device=generator.device)
    # Second index uniform over the n - 1 others: shift by 1..n-1 modulo n.
    second = (first + torch.randint(1, n, (num_pairs,), generator=generator, device=generator.device)) % n
    first, second = first.to(errors.device), second.to(errors.device)
    return (errors[first] - errors[second]).square().mean()


class AgeDifferenceLoss(nn.Module):
    """Module form of :func:`age_difference_loss` (all pairs)."""

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return age_difference_loss(predictions, targets)


@dataclass(frozen=True)
class BrainAgeLossPreset:
    """``main + spearman_weight * SpearmanLoss + age_difference_weight * age difference``."""

    main: str  # "l1" or "mse"
    spearman_weight: float = 0.0
    age_difference_weight: float = 0.0


#: Named presets.  ``cheng2021`` is the paper's ``MSE + lambda (Spearman + beta AgeDiff)`` with
#: lambda = 10, beta = 1.  The L1 presets weight the age difference (years^2) by 0.1 so that it is
#: of the order of the L1 term (years) rather than dominating it; the Spearman term (normalized
#: ranks, ~1e-2) gets 10, as in the paper.
BRAIN_AGE_PRESETS: dict[str, BrainAgeLossPreset] = {
    "l1": BrainAgeLossPreset("l1"),
    "mse": BrainAgeLossPreset("mse"),
    "l1+spearman": BrainAgeLossPreset("l1", spearman_weight=10.0),
    "l1+agediff": BrainAgeLossPreset("l1", age_difference_weight=0.1),
    "l1+spearman+agediff": BrainAgeLossPreset("l1", spearman_weight=10.0, age_difference_weight=0.1),
    "cheng2021": BrainAgeLossPreset("mse", spearman_weight=10.0, age_difference_weight=10.0),
}


class BrainAgeLoss(nn.Module):
    """Combined brain-age objective: a main regression loss plus rank and age-difference terms.

    Args:
        main: ``"l1"`` or ``"mse"``.
        spearman_weight: weight of :class:`SpearmanLoss` (predictions ranked across the batch).
        age_difference_weight: weight of :func:`age_difference_loss`.
        sorter: ranker for the Spearman term (default: the shipped sorter; loaded only if used).

    Example:
        >>> loss = BrainAgeLoss.from_preset("l1+agediff")
        >>> loss(torch.tensor([30.0, 50.0, 70.0]), torch.tensor([20.0, 50.0, 80.0]))
        tensor(26.6667)
    """

    def __init__(
        self,
        main: str = "mse",
        spearman_weight: float = 10.0,
        age_difference_weight: float = 10.0,
        sorter: Ranker | None = None,
    ) -> None:
        super().__init__()
        if main not in ("l1", "mse"):
            raise ValueError(f"main must be 'l1' or 'mse', got {main!r}")
        self.main = main
        self.spearman_weight = float(spearman_weight)
        self.age_difference_weight = float(age_difference_weight)
        self.spearman = SpearmanLoss(sorter) if self.spearman_weight else None

    @classmethod
    def from_preset(cls, name: str, sorter: Ranker | None = None) -> BrainAgeLoss:
        if name not in BRAIN_AGE_PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(BRAIN_AGE_PRESETS)}")
        preset = BRAIN_AGE_PRESETS[name]
        return cls(preset.main, preset.spearman_weight, preset.age_difference_weight, sorter)

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``predictions``, ``targets``: ``(n,)`` ages of one batch (squeeze a model's ``(n, 1)``
        output first: every preset reads one age per subject)."""
        check_tensor(predictions, "predictions")
        check_tensor(targets, "targets", floating=False)
        check_same_shape(predictions, targets, "predictions and targets")
        if predictions.dim() != 1:
            raise ValueError(
                f"predictions and targets must have shape (n,), one age per subject, got shape "
                f"{tuple(predictions.shape)} (a regression head's (n, 1) output needs .squeeze(-1))"
            )
        # Whole years as integers are ages too, in every preset.
        targets = targets if targets.is_floating_point() else targets.to(predictions.dtype)
        loss = F.l1_loss(predictions, targets) if self.main == "l1" else F.mse_loss(predictions, targets)
        if self.spearman is not None:
            loss = loss + self.spearman_weight * self.spearman(predictions, targets)
        if self.age_difference_weight:
            loss = loss + self.age_difference_weight * age_difference_loss(predictions, targets)
        return loss
