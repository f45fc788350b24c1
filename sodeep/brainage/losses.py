"""Brain-age objectives: a regression loss plus the library's rank and age-difference terms,
as in Cheng et al., "Brain Age Estimation From MRI Using Cascade Networks With Ranking Loss",
IEEE TMI 2021, with named presets for the command line and configs.

For predicted ages ``p`` and chronological ages ``t`` of a batch of ``n`` subjects:

``L(p, t) = main(p, t) + w_s * SpearmanLoss(p, t) + w_a * age_difference_loss(p, t)``

where ``main`` is the mean absolute (``l1``) or squared (``mse``) error, ``SpearmanLoss`` ranks
``p`` across the batch with a sorter (:mod:`sodeep.losses.rank`) and ``age_difference_loss`` is the
mean over pairs ``i != j`` of ``((p_i - p_j) - (t_i - t_j))^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sodeep.losses import SpearmanLoss, age_difference_loss
from sodeep.losses.rank import SorterFunction
from sodeep.losses.validation import check_fixed_setting, check_same_shape, check_tensor


@dataclass(frozen=True)
class BrainAgeLossPreset:
    """The weights of one named objective: ``main + spearman_weight * Spearman +
    age_difference_weight * age difference``."""

    main: str  # "l1" or "mse"
    spearman_weight: float = 0.0
    age_difference_weight: float = 0.0

    @property
    def compares_subjects(self) -> bool:
        """Whether a term compares the subjects of a batch (needs 2 or more of them)."""
        return bool(self.spearman_weight or self.age_difference_weight)


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


def _weight_value(weight: Any) -> float | None:
    """A term weight as a float: a real number, or a NumPy or torch scalar of one (a bool, a
    complex number or text is ``None``); beyond float's range, ``inf``."""
    if isinstance(weight, torch.Tensor):
        real = weight.numel() == 1 and not (weight.is_complex() or weight.dtype == torch.bool)
    elif isinstance(weight, (np.ndarray, np.generic)):
        real = weight.size == 1 and weight.dtype.kind in "iuf"
        weight = np.asarray(weight).reshape(-1)[0] if real else weight
    else:
        real = isinstance(weight, (Real, Decimal)) and not isinstance(weight, bool)
    if not real:
        return None
    try:
        return float(weight)
    except OverflowError:
        return math.inf


class BrainAgeLoss(nn.Module):
    """Combined brain-age objective (see the module docstring for the formula).

    Args:
        main: ``"l1"`` or ``"mse"``.
        spearman_weight: weight ``w_s`` of :class:`sodeep.losses.SpearmanLoss` (predictions
            ranked across the batch).
        age_difference_weight: weight ``w_a`` of :func:`sodeep.losses.age_difference_loss`.
        sorter: sorter of the Spearman term (default: the shipped sorter, loaded only if
            ``spearman_weight`` is not 0).

    Shapes: predictions and targets ``(n,)``, ``n >= 2`` when a rank or age-difference term is
    used; returns a scalar.

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
        sorter: SorterFunction | None = None,
    ) -> None:
        super().__init__()
        if main not in ("l1", "mse"):
            raise ValueError(f"main must be 'l1' or 'mse', got {main!r}")
        self.main = main
        for name, weight in (("spearman_weight", spearman_weight), ("age_difference_weight", age_difference_weight)):
            check_fixed_setting(weight, name, type(self).__name__)
            value = _weight_value(weight)
            if value is None:
                raise TypeError(f"{name} must be a finite number >= 0, got {type(weight).__name__} {weight!r}")
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.spearman_weight = _weight_value(spearman_weight) + 0.0  # (-0.0 as 0.0)
        self.age_difference_weight = _weight_value(age_difference_weight) + 0.0
        self.spearman = SpearmanLoss(sorter=sorter) if self.spearman_weight else None

    @property
    def compares_subjects(self) -> bool:
        """Whether a term compares the subjects of a batch (needs 2 or more of them)."""
        return bool(self.spearman_weight or self.age_difference_weight)

    @classmethod
    def from_preset(cls, name: str, sorter: SorterFunction | None = None) -> BrainAgeLoss:
        """The objective named ``name`` in :data:`BRAIN_AGE_PRESETS`."""
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


def check_batch_pairs(presets: list[str] | tuple[str, ...], batch_size: int) -> None:
    """Refuse a batch of fewer than 2 subjects when a preset in ``presets`` has a Spearman or
    age-difference term: both compare the subjects of a batch.  Unknown names are left to
    :func:`sodeep.brainage.config.check_run_plan`."""
    paired = [name for name in presets if name in BRAIN_AGE_PRESETS and BRAIN_AGE_PRESETS[name].compares_subjects]
    if batch_size < 2 and paired:
        raise ValueError(
            f"batch_size must be >= 2 with presets {paired}: their rank and age-difference terms compare the "
            f"subjects of a batch; got {batch_size}"
        )


def check_batch_size(presets: list[str] | tuple[str, ...], batch_size: int) -> None:
    """Refuse a ``batch_size`` larger than the shipped sorter ranks when a preset in ``presets``
    has a Spearman term (training would stop at its first step)."""
    ranked = [name for name in presets if BRAIN_AGE_PRESETS[name].spearman_weight]
    if not ranked:
        return
    from sodeep.checkpoints import load_sorter

    capacity = load_sorter().max_length
    if capacity is not None and batch_size > capacity:
        raise ValueError(
            f"batch_size must be <= {capacity} with presets {ranked}: their Spearman term ranks a batch with "
            f"the shipped sorter, whose capacity is {capacity}; got {batch_size}"
        )
