"""Internals of the convolutional sorter: the band's constant part and the frozen fast path."""

import math

import pytest
import torch
from scipy.stats import rankdata

from sodeep import load_sorter
from sodeep.sorters import ConvSorter
from sodeep.sorters.conv import BandedSoftRanks, band_base, banded_sigmoid_sum, untied_band_base
from sodeep.synthetic import generate_sequences, make_generator


def band_base_by_loop(row: torch.Tensor, reach: int) -> list[float]:
    """Exact descending rank minus the hard comparisons in the band, for one ascending row."""
    n = len(row)
    exact = rankdata(-row.numpy(), method="average")
    base = []
    for k in range(n):
        hard = 0.0
        for j in range(k - reach, k + reach + 1):
            if j < 0 or j >= n or row[j] == row[k]:
                hard += 0.5  # padding, the element itself and ties
            elif row[j] > row[k]:
                hard += 1.0
        base.append(exact[k] - hard)
    return base


@pytest.mark.parametrize("family", ["normal", "ties", "repeated"])
@pytest.mark.parametrize("n,reach", [(2, 1), (5, 2), (12, 4), (40, 8)])
def test_band_base_matches_a_loop(family, n, reach):
    sorted_scores = generate_sequences(6, n, make_generator(n), families=[family])[0].double().sort(-1).values
    end = torch.stack([torch.searchsorted(row, row, right=True) for row in sorted_scores]).double()
    start = torch.stack([torch.searchsorted(row, row) for row in sorted_scores]).double()
    expected = torch.tensor([band_base_by_loop(row, reach) for row in sorted_scores], dtype=torch.float64)
    torch.testing.assert_close(band_base(n, reach, start, end), expected)


@pytest.mark.parametrize("n,reach", [(2, 1), (7, 3), (100, 8)])
def test_untied_band_base_is_band_base_without_ties(n, reach):
    position = torch.arange(n, dtype=torch.float64)
    expected = band_base(n, reach, position, position + 1) / n
    cached = untied_band_base(n, reach, torch.float32, torch.device("cpu"))
    assert cached.dtype == torch.float32
    torch.testing.assert_close(cached, expected.float())


@pytest.mark.parametrize("family", ["normal", "ties", "cauchy"])
@pytest.mark.parametrize("n,reach", [(2, 1), (9, 3), (64, 8), (30, 29)])
def test_hand_written_backward_matches_autograd(family, n, reach):
    scores = generate_sequences(5, n, make_generator(7 * n), families=[family])[0].double().requires_grad_()
    sorted_scores, order = scores.detach().sort(-1)
    root_inverse_tau = torch.rand_like(sorted_scores) + 0.5
    base = torch.randn_like(sorted_scores)
    upstream = torch.randn_like(sorted_scores)

    fused = BandedSoftRanks.apply(scores, sorted_scores, order, root_inverse_tau, base, reach)
    (fused_grad,) = torch.autograd.grad(fused, scores, upstream)
    sorted_ranks = base + banded_sigmoid_sum(scores.gather(-1, order), root_inverse_tau, reach) / n
    reference = torch.empty_like(sorted_ranks).scatter(-1, order, sorted_ranks)
    (reference_grad,) = torch.autograd.grad(reference, scores, upstream)

    torch.testing.assert_close(fused, reference)
    torch.testing.assert_close(fused_grad, reference_grad)


def test_hand_written_backward_gradcheck_float64():
    scores = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    _, order = scores.detach().sort(-1)
    root_inverse_tau = torch.rand(3, 11, dtype=torch.float64) + 0.5
    base = torch.zeros(11, dtype=torch.float64)

    def ranks(x):  # the order is fixed: gradcheck's small steps do not reorder the row
        return BandedSoftRanks.apply(x, x.detach().gather(-1, order), order, root_inverse_tau, base, 4)

    assert torch.autograd.gradcheck(ranks, (scores,))


@pytest.mark.parametrize("family", ["normal", "ties", "repeated"])
def test_frozen_sorter_matches_the_learning_sorter(family):
    scores = generate_sequences(8, 50, make_generator(3), families=[family])[0].double()
    learning = load_sorter(trainable=True).double().eval()
    frozen = load_sorter().double()
    results = []
    for sorter in (learning, frozen):
        x = scores.clone().requires_grad_()
        ranks = sorter(x)
        (grad,) = torch.autograd.grad(ranks, x, torch.linspace(-1, 1, 50, dtype=torch.float64).expand(8, 50))
        results.append((ranks, grad))
    assert results[0][0].grad_fn is not None and type(results[1][0].grad_fn).__name__ == "BandedSoftRanksBackward"
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_lengths_first_seen_in_inference_mode_still_train():
    sorter = load_sorter(trainable=True)
    scores = torch.randn(4, 37)
    with torch.inference_mode():
        sorter(scores)  # caches the constant part of the ranks at n = 37
    ranks = sorter(scores.requires_grad_())  # the learning path
    torch.nn.functional.l1_loss(ranks, torch.rand(4, 37)).backward()
    frozen = load_sorter().requires_grad_(False)
    x = scores.detach().clone().requires_grad_()
    frozen(x).sum().backward()
    assert scores.grad is not None and x.grad is not None


def test_frozen_sorter_works_under_torch_func_grad():
    frozen = load_sorter().double().requires_grad_(False)
    scores = torch.randn(4, 20, dtype=torch.float64)
    grad = torch.func.grad(lambda x: frozen(x).square().sum())(scores)
    x = scores.clone().requires_grad_()
    frozen(x).square().sum().backward()
    torch.testing.assert_close(grad, x.grad)


def log_temperature_by_features(sorter, sorted_scores: torch.Tensor) -> torch.Tensor:
    """The temperature network as first written: a feature tensor [gap window, log multiplicity,
    log n / log capacity] through ``sorter.network``, centred with multiplicity weights."""
    n = sorted_scores.shape[-1]
    starts = torch.ones_like(sorted_scores, dtype=torch.bool)
    starts[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group_id = starts.cumsum(-1) - 1
    values = torch.zeros_like(sorted_scores).scatter_(-1, group_id, sorted_scores)
    multiplicity = torch.zeros_like(sorted_scores).scatter_add_(-1, group_id, torch.ones_like(sorted_scores))
    has_gap = multiplicity[:, 1:] > 0
    log_gap = torch.where(has_gap, (values[:, 1:] - values[:, :-1]).clamp_min(1e-300).log(), 0.0)
    row_log_gap = log_gap.sum(-1, keepdim=True) / has_gap.sum(-1, keepdim=True).clamp_min(1)  # a constant row has none
    relative = torch.where(has_gap, log_gap - row_log_gap, 8.0)
    window = torch.nn.functional.pad(relative, (sorter.radius, sorter.radius), value=8.0).unfold(
        -1, 2 * sorter.radius, 1
    )
    log_n = torch.full_like(sorted_scores, math.log(n) / math.log(sorter.max_length))
    features = torch.cat([window, multiplicity.clamp_min(1).log()[..., None], log_n[..., None]], -1)
    offset = sorter.network(features).squeeze(-1)
    offset = offset - (offset * multiplicity).sum(-1, keepdim=True) / n
    below, above = window[..., sorter.radius - 1], window[..., sorter.radius]
    log_tau = row_log_gap + math.log(sorter.softness) + torch.minimum(below, above) + offset
    return log_tau.gather(-1, group_id)


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("family", ["normal", "ties", "repeated"])
def test_temperature_network_matches_the_feature_formulation(depth, family):
    sorter = ConvSorter(depth=depth, width=8).double()
    generator = torch.Generator().manual_seed(depth)
    for parameter in sorter.network.parameters():
        parameter.data = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.5
    for n in (2, 5, 60):
        scores = generate_sequences(4, n, make_generator(n), families=[family])[0].double()
        sorted_scores = scores.sort(-1).values
        log_tau = sorter.sorted_log_temperature(sorted_scores)[0]
        torch.testing.assert_close(log_tau, log_temperature_by_features(sorter, sorted_scores))
