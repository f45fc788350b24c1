import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sodeep.brainage.losses import BRAIN_AGE_PRESETS, BrainAgeLoss
from sodeep.losses import age_difference_loss, spearman_loss
from sodeep.sorters import PairwiseSigmoidSorter


def test_cheng2021_preset_combines_the_terms():
    sorter = PairwiseSigmoidSorter(1e-3)
    loss = BrainAgeLoss.from_preset("cheng2021", sorter=sorter)
    assert (loss.main, loss.spearman_weight, loss.age_difference_weight) == ("mse", 10.0, 10.0)
    predictions, targets = 50 + 10 * torch.randn(16), 50 + 10 * torch.randn(16)
    expected = F.mse_loss(predictions, targets) + 10 * (
        spearman_loss(predictions, targets, sorter) + age_difference_loss(predictions, targets)
    )
    torch.testing.assert_close(loss(predictions, targets), expected)
    assert set(BRAIN_AGE_PRESETS) >= {"l1", "mse", "l1+spearman", "l1+agediff", "l1+spearman+agediff"}


@pytest.mark.parametrize("preset", sorted(BRAIN_AGE_PRESETS))
def test_brain_age_loss_checks_its_inputs_in_every_preset(preset):
    loss = BrainAgeLoss.from_preset(preset, sorter=PairwiseSigmoidSorter(1e-3))
    ages = 50 + 10 * torch.randn(8)
    # A regression head's (n, 1) output: one clear message, whichever terms the preset has.
    with pytest.raises(ValueError, match=r"squeeze\(-1\)"):
        loss(ages.unsqueeze(-1), ages.unsqueeze(-1))
    with pytest.raises(ValueError, match="targets contains NaN"):
        loss(ages, torch.where(torch.arange(8) == 3, float("nan"), ages))
    with pytest.raises(TypeError, match="targets must be a torch.Tensor"):
        loss(ages, ages.tolist())
    # Integer ages (whole years) are accepted by every preset, as their float values.
    years = torch.arange(20, 84, 8)
    torch.testing.assert_close(loss(ages, years), loss(ages, years.float()))


@pytest.mark.parametrize("name", sorted(BRAIN_AGE_PRESETS))
def test_every_preset_is_its_weighted_sum_of_terms(name):
    sorter = PairwiseSigmoidSorter(1e-3)
    preset = BRAIN_AGE_PRESETS[name]
    predictions, targets = 50 + 10 * torch.randn(12), 50 + 10 * torch.randn(12)
    main = F.l1_loss if preset.main == "l1" else F.mse_loss
    expected = (
        main(predictions, targets)
        + preset.spearman_weight * spearman_loss(predictions, targets, sorter)
        + preset.age_difference_weight * age_difference_loss(predictions, targets)
    )
    torch.testing.assert_close(BrainAgeLoss.from_preset(name, sorter=sorter)(predictions, targets), expected)


def test_unknown_preset_and_main_are_refused():
    with pytest.raises(ValueError, match="unknown preset 'l2'"):
        BrainAgeLoss.from_preset("l2")
    with pytest.raises(ValueError, match="main must be 'l1' or 'mse'"):
        BrainAgeLoss(main="huber")


@pytest.mark.parametrize("name", ["spearman_weight", "age_difference_weight"])
def test_a_term_weight_that_requires_grad_is_refused(name):
    # The module keeps its weights as numbers: a learnable one would silently stop learning.
    with pytest.raises(TypeError, match=f"{name} of BrainAgeLoss .* requires grad would be detached"):
        BrainAgeLoss(**{name: torch.tensor(1.0, requires_grad=True)}, sorter=PairwiseSigmoidSorter(0.1))


@pytest.mark.parametrize("name", ["spearman_weight", "age_difference_weight"])
@pytest.mark.parametrize(
    ("weight", "error", "message"),
    [
        (float("nan"), ValueError, "must be a finite number >= 0, got nan"),
        (float("inf"), ValueError, "must be a finite number >= 0, got inf"),
        (-5.0, ValueError, "must be a finite number >= 0, got -5.0"),
        ("1", TypeError, "must be a finite number >= 0, got str '1'"),
        (True, TypeError, "must be a finite number >= 0, got bool True"),
        (np.True_, TypeError, "must be a finite number >= 0, got bool np.True_"),
        (torch.tensor(True), TypeError, r"must be a finite number >= 0, got Tensor tensor\(True\)"),
        (np.complex64(1), TypeError, r"must be a finite number >= 0, got complex64 np.complex64\(1\+0j\)"),
        (10**400, ValueError, "must be a finite number >= 0, got inf"),
    ],
)
def test_a_term_weight_that_is_not_a_finite_number_at_least_0_is_refused(name, weight, error, message):
    with pytest.raises(error, match=f"^{name} {message}$"):
        BrainAgeLoss(**{name: weight}, sorter=PairwiseSigmoidSorter(0.1))


@pytest.mark.parametrize(
    "weight", [2, 2.0, torch.tensor(2.0), torch.tensor([2.0]), np.array(2.0), np.array([2.0]), np.float32(2)]
)
def test_term_weights_given_as_python_numpy_or_torch_scalars_are_taken(weight):
    loss = BrainAgeLoss("l1", weight, -0.0, sorter=PairwiseSigmoidSorter(0.1))
    assert (loss.spearman_weight, loss.age_difference_weight) == (2.0, 0.0)
    assert math.copysign(1.0, loss.age_difference_weight) == 1.0  # -0.0 as 0.0
