import re

import pytest
import torch

from sodeep import load_sorter, rank
from sodeep.metrics import rowwise_spearman
from sodeep.sorters import (
    ConvSorter,
    NeuralSortSorter,
    OriginalCNNSorter,
    OriginalLSTMLargeSorter,
    PairwiseSigmoidSorter,
    SoftSortSorter,
    neuralsort_rank,
    pairwise_sigmoid_rank,
    softsort_rank,
)
from sodeep.sorters.base import scale_rows_by_power_of_two
from sodeep.synthetic import generate_sequences, make_generator

EQUIVARIANT = [ConvSorter, lambda: ConvSorter(band=None), lambda: PairwiseSigmoidSorter(0.01)]


@pytest.mark.parametrize("make", EQUIVARIANT)
@pytest.mark.parametrize("n", [2, 3, 17, 100, 256])
def test_shapes_and_convention(make, n):
    sorter = make().eval()
    x = torch.randn(4, n)
    out = sorter(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert sorter(x[0]).shape == (n,)
    exact = rank(x)
    assert (out - exact).abs().max() < 0.5  # in the same (descending, normalized) convention
    assert torch.isclose(out.sum(-1), exact.sum(-1), atol=1e-3).all()


@pytest.mark.parametrize("make", EQUIVARIANT)
def test_permutation_equivariant_and_ties_equal(make):
    sorter = make().eval()
    x = torch.randn(3, 40)
    x[:, 5] = x[:, 9]  # a tie
    permutation = torch.randperm(40)
    out = sorter(x)
    torch.testing.assert_close(sorter(x[:, permutation]), out[:, permutation], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 5], out[:, 9], atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", EQUIVARIANT)
@pytest.mark.parametrize("scale,shift", [(1e-4, 3e-4), (1e4, -2e4), (37.0, 65.0)])
def test_affine_invariant(make, scale, shift):
    sorter = make().eval()
    x = torch.randn(4, 64, dtype=torch.float64)
    torch.testing.assert_close(sorter(scale * x + shift), sorter(x), atol=1e-6, rtol=0)


# Scale-free sorters: the shipped one, and the fixed-temperature family (one of it suffices).
SCALE_FREE = [load_sorter, lambda: PairwiseSigmoidSorter(0.01), lambda: SoftSortSorter(0.01)]


@pytest.mark.parametrize("make", SCALE_FREE)
@pytest.mark.parametrize(
    "dtype,exponent", [(torch.float32, -110), (torch.float32, 110), (torch.float64, -1000), (torch.float64, 1000)]
)
def test_rows_of_any_float_magnitude_rank_like_unit_rows(make, dtype, exponent):
    # x * 2**k holds exactly the comparisons of x; the sorter's own arithmetic (temperatures of
    # 1e-33 or 1e33) must neither overflow nor blur, and the chain rule gives gradients / 2**k.
    sorter = make().eval()
    x = (torch.rand(3, 40, dtype=torch.float64) + 0.01).to(dtype) * torch.tensor([[1.0], [-1.0], [3.0]], dtype=dtype)
    weights = torch.linspace(-1, 1, 40, dtype=dtype)
    unit = x.clone().requires_grad_()
    scaled = (x * 2.0**exponent).requires_grad_()
    ranks_unit, ranks_scaled = sorter(unit), sorter(scaled)
    (ranks_unit * weights).sum().backward()
    (ranks_scaled * weights).sum().backward()
    torch.testing.assert_close(ranks_scaled, ranks_unit, atol=1e-5, rtol=0)
    assert torch.isfinite(scaled.grad).all()
    torch.testing.assert_close(scaled.grad * 2.0**exponent, unit.grad, atol=1e-4, rtol=1e-4)


def test_scaling_rows_by_powers_of_two_is_exact():
    x = torch.randn(3, 30)
    x[0] *= 2.0**-130  # subnormal float32 scores: lifted by 2**130, beyond one float32 factor
    scaled = scale_rows_by_power_of_two(x, torch.tensor([[-129.6], [3.4], [100.2]]))
    expected = x.double() * torch.tensor([[2.0**130], [2.0**-3], [2.0**-100]], dtype=torch.float64)
    assert scaled.dtype == torch.float32 and torch.equal(scaled.double(), expected)


@pytest.mark.parametrize("make", SCALE_FREE)
def test_subnormal_and_extreme_scores_give_finite_faithful_ranks(make):
    sorter = make().eval()
    tiny = torch.tensor([[1e-45, 3e-45, 0.0, -1e-45, 6e-45, -3e-45], [3.4e38, -3.4e38, 0.0, 1e38, -1e38, 2e38]])
    ranks = sorter(tiny)
    assert torch.isfinite(ranks).all()
    assert (ranks - rank(tiny)).abs().max() < 0.5 / 6  # within half a position of the exact ranks
    assert torch.equal(ranks.argsort(), rank(tiny).argsort())


@pytest.mark.parametrize("make", SCALE_FREE)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_half_precision_scores_are_ranked_in_float32(make, dtype, scale):
    # float16 cannot hold 1 / tau beyond 65504: ranked in float32, returned in the input's dtype.
    sorter = make().eval()
    x = (torch.randn(3, 40) * scale).to(dtype).requires_grad_()
    ranks = sorter(x)
    assert ranks.dtype == dtype and torch.isfinite(ranks).all()
    # The same ranks as the float32 call on the same values, but for the output's rounding.
    assert (ranks.float() - sorter(x.detach().float())).abs().max() <= 2**-8
    (ranks * torch.linspace(-1, 1, 40, dtype=dtype)).sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("network_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1e6, 1e30])
def test_a_half_precision_network_ranks_scores_of_any_scale(network_dtype, scale):
    # model.half() may reach the loss's sorter: its network reads relative log gaps (order 1).
    sorter = load_sorter().to(network_dtype).eval()
    x = torch.randn(4, 60)
    x[:, 3] = x[:, 7]  # ties take the general path
    torch.testing.assert_close(sorter(x * scale), load_sorter().eval()(x), atol=2e-3, rtol=0)


def test_original_sorters_are_neither_equivariant_nor_any_length():
    assert not OriginalCNNSorter.permutation_equivariant and not OriginalLSTMLargeSorter.affine_invariant
    cnn = OriginalCNNSorter(100).eval()
    assert cnn(torch.randn(3, 100)).shape == (3, 100)
    with pytest.raises(ValueError, match="n=99"):
        cnn(torch.randn(3, 99))
    lstm = OriginalLSTMLargeSorter(length=20, hidden_size=16).eval()
    assert lstm(torch.randn(2, 20)).shape == (2, 20)


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.randn(2, 16385), "capacity"),
        (torch.randn(2, 1), "n >= 2"),
        (torch.tensor([[1.0, float("nan"), 2.0]]), "NaN"),
        (torch.tensor([[1.0, float("inf"), 2.0]]), "infinite"),
        (torch.tensor([[1.0, float("inf"), -float("inf")]]), "infinite"),
        (torch.randn(2, 3, 4), r"got shape \(2, 3, 4\): rows of 4 are scores.reshape\(-1, 4\)$"),
        (torch.tensor(1.0), r"must have shape \(n,\) or \(B, n\), got shape \(\)$"),
        (torch.randn(0, 5), "empty"),
        (torch.arange(5), "floating"),
        (torch.randn(2, 5).to(torch.float8_e4m3fn), r"got dtype torch.float8_e4m3fn: cast it first, scores.float\(\)$"),
    ],
)
def test_clear_errors(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ConvSorter()(bad)


def test_finite_scores_whose_sum_overflows_are_accepted():
    scores = torch.tensor([[3e38, 2e38, 1.0, -5.0]])
    assert not torch.isfinite(scores.sum())
    ranks = ConvSorter().eval()(scores)
    assert torch.isfinite(ranks).all()
    assert torch.equal(ranks.argsort(), rank(scores).argsort())


def test_eval_mode_is_deterministic_and_device_dtype_follow_input():
    sorter = ConvSorter().eval()
    x = torch.randn(5, 33, dtype=torch.float64)
    assert torch.equal(sorter(x), sorter(x))
    assert sorter(x).dtype == torch.float64


def test_constant_row_gives_average_ranks():
    out = ConvSorter()(torch.full((2, 7), 3.0))
    torch.testing.assert_close(out, torch.full((2, 7), 4.0 / 7))


def test_exact_sorter_gradcheck_float64():
    # The row's scale is a stop-gradient constant by design; check the gradient at a fixed scale.
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.ones(3, 1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: pairwise_sigmoid_rank(s, 0.5, scale), (x,))


def test_temperature_network_receives_gradient():
    sorter = ConvSorter()
    scores, ranks, _ = generate_sequences(8, 30, make_generator(0))
    torch.nn.functional.l1_loss(sorter(scores), ranks).backward()
    assert sorter.network[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n", [5, 50])
def test_exact_sorter_converges_to_hard_ranks(n):
    x = torch.randn(8, n, dtype=torch.float64)
    errors = [(PairwiseSigmoidSorter(t)(x) - rank(x)).abs().max().item() for t in (1.0, 0.1, 1e-4)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


@pytest.mark.parametrize("family", ["normal", "cauchy", "ties", "repeated"])
def test_band_is_as_faithful_as_all_pairs(family):
    scores, ranks, _ = generate_sequences(64, 200, make_generator(11), families=[family])
    banded, full = ConvSorter(band=8), ConvSorter(band=None)
    with torch.no_grad():
        banded_error = (banded(scores) - ranks).abs().mean()
        full_error = (full(scores) - ranks).abs().mean()
    assert banded_error <= full_error * 1.01


def test_untrained_conv_sorter_already_beats_fixed_temperature_on_heavy_tails():
    scores, ranks, _ = generate_sequences(64, 100, make_generator(5), families=["cauchy"], affine_probability=0)
    ours = rowwise_spearman(ConvSorter()(scores), ranks).mean()
    fixed = rowwise_spearman(PairwiseSigmoidSorter(0.01)(scores), ranks).mean()
    assert ours > fixed


@pytest.mark.parametrize("make", [NeuralSortSorter, SoftSortSorter])
def test_relaxed_permutation_rankers_converge_to_hard_ranks(make):
    x = torch.randn(4, 30, dtype=torch.float64)
    errors = [(make(t)(x) - rank(x)).abs().max().item() for t in (1.0, 0.1, 1e-4)]
    assert errors[0] > errors[2] and errors[2] < 1e-3
    permutation = torch.randperm(30)
    torch.testing.assert_close(make(0.1)(x[:, permutation]), make(0.1)(x)[:, permutation])


@pytest.mark.parametrize("make", [NeuralSortSorter, SoftSortSorter, PairwiseSigmoidSorter])
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
def test_fixed_temperature_rankers_in_float32_match_float64_whatever_the_offset(make, offset):
    scores = torch.randn(3, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 15 + offset
    scores = scores.float().double()  # the same values in both dtypes
    sorter = make(0.01)
    torch.testing.assert_close(sorter(scores.float()).double(), sorter(scores), atol=1e-3, rtol=0)


@pytest.mark.parametrize("make", [NeuralSortSorter, SoftSortSorter])
def test_spearman_loss_compares_rankers(make):
    from sodeep.losses import SpearmanLoss

    predictions = torch.randn(20, requires_grad=True)
    SpearmanLoss(sorter=make(0.1))(predictions, torch.randn(20)).backward()
    assert predictions.grad.abs().sum() > 0


def test_original_sorters_rank_scores_of_any_float_dtype_in_their_weights_dtype():
    for sorter in (OriginalCNNSorter(40), OriginalLSTMLargeSorter(length=6, hidden_size=8)):
        n = sorter.max_length
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            scores = torch.randn(2, n, dtype=dtype, requires_grad=True)
            ranks = sorter.eval()(scores)
            assert ranks.dtype == dtype and ranks.shape == (2, n)
            ranks.float().sum().backward()
            assert scores.grad is not None and torch.isfinite(scores.grad.float()).all()


@pytest.mark.parametrize(
    "build,error",
    [
        (lambda: PairwiseSigmoidSorter(temperature=float("inf")), ValueError),
        (lambda: PairwiseSigmoidSorter(temperature="0.1"), TypeError),
        (lambda: PairwiseSigmoidSorter(temperature=True), TypeError),
        (lambda: ConvSorter(softness=float("inf")), ValueError),
        (lambda: ConvSorter(softness="0.1"), TypeError),
        (lambda: ConvSorter(band=2.5), TypeError),
        (lambda: ConvSorter(band="3"), TypeError),
        (lambda: ConvSorter(capacity=1), ValueError),
        (lambda: ConvSorter(depth=-1), ValueError),
        (lambda: ConvSorter(temperature_floor=True), ValueError),
        (lambda: OriginalLSTMLargeSorter(length=1.5), TypeError),
    ],
)
def test_sorter_settings_of_the_wrong_type_or_range_are_named(build, error):
    with pytest.raises(
        error, match=r"must be (a finite number > 0|an integer|in \d+\.\.|>= \d+, got|None or a finite)"
    ):
        build()


@pytest.mark.parametrize(
    "make",
    [
        lambda: PairwiseSigmoidSorter(0.1),
        lambda: NeuralSortSorter(1.0),
        lambda: SoftSortSorter(1.0),
        lambda: load_sorter(),
        lambda: load_sorter(temperature_floor=0.1),
    ],
)
def test_forward_mode_derivative_is_the_reverse_mode_one(make):
    """Constants such as the row's scale carry no tangent in forward mode either
    (``torch.no_grad`` does not stop forward-mode AD)."""
    from torch.func import jacfwd, jacrev

    sorter = make().double()
    x = torch.tensor([0.3, -1.2, 0.8, 2.0, 0.8, -0.4, 1.1], dtype=torch.float64)
    torch.testing.assert_close(jacfwd(sorter)(x), jacrev(sorter)(x), atol=1e-12, rtol=1e-9)
    tangent = torch.randn(7, dtype=torch.float64)
    _, forward = torch.func.jvp(sorter, (x,), (tangent,))
    torch.testing.assert_close(forward, torch.autograd.functional.jacobian(sorter, x) @ tangent)


@pytest.mark.parametrize(
    "make, n, accepted",
    [
        (lambda: OriginalCNNSorter(length=100), 50, "accepts only n = 100"),
        (lambda: PairwiseSigmoidSorter(0.1), 1, "accepts any n >= 2"),
        (lambda: ConvSorter(capacity=64), 65, "accepts n >= 2 and n <= 64 (its capacity)"),
    ],
)
def test_a_refused_length_says_which_lengths_the_sorter_accepts(make, n, accepted):
    with pytest.raises(ValueError, match=f"n={n} .*; this sorter {re.escape(accepted)}"):
        make()(torch.randn(2, n))


@pytest.mark.parametrize("rank_function", [pairwise_sigmoid_rank, neuralsort_rank, softsort_rank])
@pytest.mark.parametrize("temperature", [0.0, -1e-3, float("nan"), float("inf")])
def test_the_rank_functions_refuse_a_temperature_that_is_not_a_positive_number(rank_function, temperature):
    """Zero gave NaN ranks and a negative temperature reversed ranks (outside [0, 1] for NeuralSort)."""
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        rank_function(torch.tensor([[0.0, 3.0, 1.0]]), temperature)
