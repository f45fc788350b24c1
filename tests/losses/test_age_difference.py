import itertools

import pytest
import torch

from sodeep.losses import BRAIN_AGE_PRESETS, BrainAgeLoss, age_difference_loss
from sodeep.sorters import PairwiseSigmoidSorter


def slow_all_pairs(predictions, targets):
    pairs = [
        ((predictions[i] - predictions[j]) - (targets[i] - targets[j])) ** 2
        for i, j in itertools.permutations(range(len(predictions)), 2)
    ]
    return torch.stack(pairs).mean()


@pytest.mark.parametrize("n", [2, 3, 17])
def test_closed_form_equals_double_loop(n):
    predictions, targets = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    torch.testing.assert_close(age_difference_loss(predictions, targets), slow_all_pairs(predictions, targets))


def test_gradcheck():
    predictions = torch.randn(6, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: age_difference_loss(p, targets), (predictions,))


def test_sampled_pairs_are_deterministic_and_unbiased():
    predictions, targets = torch.randn(30, dtype=torch.float64), torch.randn(30, dtype=torch.float64)
    first = age_difference_loss(predictions, targets, num_pairs=50, generator=torch.Generator().manual_seed(1))
    second = age_difference_loss(predictions, targets, num_pairs=50, generator=torch.Generator().manual_seed(1))
    assert first == second
    many = age_difference_loss(predictions, targets, num_pairs=200_000, generator=torch.Generator().manual_seed(2))
    assert many.item() == pytest.approx(age_difference_loss(predictions, targets).item(), rel=0.02)
    with pytest.raises(ValueError, match="generator"):
        age_difference_loss(predictions, targets, num_pairs=10)


def test_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        age_difference_loss(torch.randn(1), torch.randn(1))
    with pytest.raises(ValueError, match="same shape"):
        age_difference_loss(torch.randn(3), torch.randn(4))


def test_cheng2021_preset_combines_the_terms():
    sorter = PairwiseSigmoidSorter(1e-3)
    loss = BrainAgeLoss.from_preset("cheng2021", sorter=sorter)
    assert (loss.main, loss.spearman_weight, loss.age_difference_weight) == ("mse", 10.0, 10.0)
    predictions, targets = 50 + 10 * torch.randn(16), 50 + 10 * torch.randn(16)
    from sodeep.losses import spearman_loss

    expected = torch.nn.functional.mse_loss(predictions, targets) + 10 * (
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
