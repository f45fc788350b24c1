import itertools

import pytest
import torch

from sodeep.losses import AgeDifferenceLoss, age_difference_loss


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


def test_module_form_is_the_function():
    predictions, targets = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(AgeDifferenceLoss()(predictions, targets), age_difference_loss(predictions, targets))


def test_integer_targets_are_taken_like_their_float_values():
    predictions, ages = torch.randn(6, dtype=torch.float64) * 10 + 40, torch.randint(20, 80, (6,))
    torch.testing.assert_close(age_difference_loss(predictions, ages), age_difference_loss(predictions, ages.double()))


@pytest.mark.parametrize(("num_pairs", "error"), [(2.5, TypeError), (True, TypeError), (0, ValueError)])
def test_num_pairs_must_be_a_positive_integer(num_pairs, error):
    with pytest.raises(error, match="num_pairs must be"):
        age_difference_loss(torch.randn(4), torch.randn(4), num_pairs=num_pairs, generator=torch.Generator())


def test_the_generator_must_be_a_torch_generator_and_num_pairs_is_checked_first():
    predictions, targets = torch.randn(4), torch.randn(4)
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        age_difference_loss(predictions, targets, num_pairs=3, generator=0)
    with pytest.raises(ValueError, match="num_pairs must be >= 1"):
        age_difference_loss(predictions, targets, num_pairs=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_predictions_are_compared_in_float32(dtype):
    torch.manual_seed(0)
    targets = torch.rand(256) * 60 + 20
    predictions = (targets + 0.3 * torch.randn(256)).to(dtype)
    value = age_difference_loss(predictions, targets)
    assert value.dtype == dtype
    exact = slow_all_pairs(predictions.double(), targets.double())
    torch.testing.assert_close(value.double(), exact, rtol=1e-2, atol=0)  # the result's own rounding only


def test_targets_beyond_half_precision_give_a_finite_loss():
    targets = torch.tensor([7e4, 7e4 + 1, 7e4 + 2, 7e4 + 3])
    value = age_difference_loss(torch.zeros(4, dtype=torch.float16), targets)
    exact = slow_all_pairs(torch.zeros(4).double(), targets.double())  # 10/3, NaN before (inf - inf)
    torch.testing.assert_close(value.double(), exact, rtol=1e-3, atol=0)  # the float16 result's rounding


def test_a_generator_without_num_pairs_and_bool_targets_are_refused():
    predictions = torch.randn(5)
    with pytest.raises(ValueError, match="only with num_pairs"):
        age_difference_loss(predictions, torch.randn(5), generator=torch.Generator())
    with pytest.raises(TypeError, match="bool"):
        age_difference_loss(predictions, torch.ones(5, dtype=torch.bool))


def test_a_models_column_of_predictions_is_told_to_squeeze():
    predictions, ages = torch.randn(7, 1), torch.randn(7, 1)
    with pytest.raises(ValueError) as raised:
        age_difference_loss(predictions, ages)
    assert str(raised.value) == (
        "predictions must have shape (n,), got shape (7, 1): pass predictions.squeeze(-1) and targets.squeeze(-1)"
    )
    assert torch.isfinite(age_difference_loss(predictions.squeeze(-1), ages.squeeze(-1)))


def test_descending_normalized_names_its_own_argument():
    from sodeep.losses import descending_normalized

    with pytest.raises(TypeError, match="^ascending_sorter must be a Sorter"):
        descending_normalized(3)
