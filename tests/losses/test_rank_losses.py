import pytest
import scipy.stats
import torch

import sodeep
from sodeep import SpearmanLoss, load_sorter, rank
from sodeep.checkpoints import TRAINING_SETTINGS
from sodeep.losses import (
    HardNegativeRankLoss,
    MapRankLoss,
    RecallRankLoss,
    descending_normalized,
    hard_negative_rank_loss,
    map_rank_loss,
    recall_rank_loss,
    spearman_loss,
)
from sodeep.sorters import ConvSorter, OriginalCNNSorter, PairwiseSigmoidSorter

SHARP = PairwiseSigmoidSorter(temperature=1e-4)


@pytest.mark.parametrize("n", [5, 40, 100])
def test_spearman_loss_with_sharp_exact_sorter_is_affine_in_one_minus_rho(n):
    predictions, targets = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    rho = scipy.stats.spearmanr(predictions.numpy(), targets.numpy()).statistic
    expected = (1 - rho) * (n**2 - 1) / (6 * n**2)
    sharper = PairwiseSigmoidSorter(temperature=1e-8)
    assert spearman_loss(predictions, targets, sharper).item() == pytest.approx(expected, abs=1e-6)


def test_rows_are_ranked_independently_and_l1_anchor_adds():
    predictions, targets = torch.randn(3, 20), torch.randn(3, 20)
    per_row = torch.stack([spearman_loss(p, t, SHARP) for p, t in zip(predictions, targets)]).mean()
    torch.testing.assert_close(spearman_loss(predictions, targets, SHARP), per_row)
    with_l1 = spearman_loss(predictions, targets, SHARP, l1_weight=0.5)
    torch.testing.assert_close(with_l1, per_row + 0.5 * (predictions - targets).abs().mean())


def test_spearman_loss_default_sorter_is_frozen_and_stays_in_eval():
    loss = SpearmanLoss()
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.sorter.training
    model = torch.nn.Linear(4, 1)
    inputs, targets = torch.randn(37, 4), torch.randn(37)  # an odd, last-batch-like size
    loss(model(inputs).squeeze(-1), targets).backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.sorter.parameters())
    assert loss.to(torch.float64).sorter.network[0].weight.dtype == torch.float64


def test_a_model_holding_the_loss_has_no_module_in_eval_mode_and_no_sorter_state():
    class Regressor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 1)
            self.loss = SpearmanLoss(l1_weight=0.1)

    model = Regressor().train()
    assert all(module.training for module in model.modules())  # Lightning warns about eval-mode modules
    assert set(model.state_dict()) == {"head.weight", "head.bias"}
    assert not model.loss.sorter.training and not any(p.requires_grad for p in model.loss.sorter.parameters())


def test_a_column_of_predictions_is_told_to_squeeze():
    loss = SpearmanLoss(sorter=SHARP)
    with pytest.raises(ValueError, match=r"squeeze\(-1\)"):
        loss(torch.randn(64, 1), torch.randn(64, 1))


def test_spearman_loss_decreases_when_training_a_linear_model():
    torch.manual_seed(0)
    inputs = torch.randn(64, 3)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64)
    model, loss = torch.nn.Linear(3, 1), SpearmanLoss(load_sorter())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    values = []
    for _ in range(60):
        optimizer.zero_grad()
        value = loss(model(inputs).squeeze(-1), targets)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert values[-1] < 0.2 * values[0]


def test_pluggable_callable_ranker():
    def exact_like(scores):
        return PairwiseSigmoidSorter(1e-3)(scores)

    loss = SpearmanLoss(sorter=exact_like)
    predictions, targets = torch.randn(10), torch.randn(10)
    torch.testing.assert_close(loss(predictions, targets), spearman_loss(predictions, targets, exact_like))


@pytest.mark.parametrize(
    "predictions,targets,message",
    [
        (torch.randn(5), torch.randn(6), "same shape"),
        (torch.randn(1), torch.randn(1), "n >= 2"),
        (torch.tensor([1.0, float("nan")]), torch.randn(2), "NaN"),
        (torch.randn(0), torch.randn(0), "empty"),
        (torch.randn(2, 3, 4), torch.randn(2, 3, 4), "shape"),
    ],
)
def test_spearman_loss_errors(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        spearman_loss(predictions, targets, SHARP)


def test_map_loss_matches_a_slow_loop():
    scores = torch.randn(12, 4)
    labels = (torch.rand(12, 4) < 0.4).long()
    labels[:, 3] = 0  # a class with no positive is skipped
    ours = MapRankLoss(SHARP)(scores, labels)
    per_class = []
    for c in range(4):
        if labels[:, c].sum() == 0:
            continue
        ranks = SHARP(scores[:, c])
        per_class.append(ranks[labels[:, c] == 1].mean())
    torch.testing.assert_close(ours, torch.stack(per_class).mean())
    with pytest.raises(ValueError, match="0 and 1"):
        MapRankLoss(SHARP)(scores, labels * 2)


def test_recall_and_hard_negative_losses_small_case():
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.95, 0.5]])
    # Exact ranks: rows -> positives at ranks 1, 1, 2 of 3; columns -> 1, 2, 1.
    recall = RecallRankLoss(SHARP)(scores)
    assert recall.item() == pytest.approx(0.5 * ((1 + 1 + 2) / 9 + (1 + 2 + 1) / 9), abs=1e-4)
    hard = HardNegativeRankLoss(SHARP, margin=0.0)(scores)
    # Only row 2 and column 1 have a negative ranked above the positive, by one position (1/3).
    assert hard.item() == pytest.approx(0.5 * (1 / 3 / 3 + 1 / 3 / 3), abs=1e-4)
    with pytest.raises(ValueError, match="square"):
        RecallRankLoss(SHARP)(torch.randn(3, 4))


@pytest.mark.parametrize("shape", [(2, 24), (2, 6)])  # (2, 6): see the order in spearman_loss
def test_spearman_loss_compiles_with_fullgraph_and_matches_eager(shape):
    """No host synchronisation in the loss: the sorter, the exact ranks of the targets and the
    input checks all trace into one graph."""
    loss = SpearmanLoss(l1_weight=0.1)
    compiled = torch.compile(loss, fullgraph=True, dynamic=False)
    torch.manual_seed(0)
    predictions, targets = torch.randn(shape), torch.randn(shape)
    eager_input, compiled_input = predictions.clone().requires_grad_(), predictions.clone().requires_grad_()
    expected, got = loss(eager_input, targets), compiled(compiled_input, targets)
    torch.testing.assert_close(got, expected)
    expected.backward()
    got.backward()
    torch.testing.assert_close(compiled_input.grad, eager_input.grad)


def test_hard_negative_rank_loss_refuses_a_non_finite_margin():
    with pytest.raises(ValueError, match="margin must be finite"):
        HardNegativeRankLoss(margin=float("nan"))


def test_spearman_loss_pulls_tied_predictions_apart():
    """Tied predictions with different targets get different gradients (the derivative of the
    comparisons of tied elements with each other), also when every prediction is equal."""
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    for start in ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 6.0]):
        predictions = torch.tensor(start, requires_grad=True)
        SpearmanLoss()(predictions, targets).backward()
        # Lowering the prediction with the smaller target lowers the loss: its gradient is larger.
        assert predictions.grad[0] > predictions.grad[1]
    predictions = torch.zeros(4, requires_grad=True)
    loss = SpearmanLoss()
    before = loss(predictions, targets).item()
    optimizer = torch.optim.Adam([predictions], lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        loss(predictions, targets).backward()
        optimizer.step()
    assert loss(predictions, targets).item() < 0.5 * before


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's fallback for unfold_backward
def test_binary_label_losses_work_under_vmap_and_check_every_sample():
    from torch.func import grad, vmap

    from sodeep.losses import MultiLabelHingeLoss

    scores = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(0))
    labels = (torch.rand(4, 6, 3, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    for loss in (MapRankLoss(), MultiLabelHingeLoss(3)):
        per_sample = vmap(grad(loss))(scores, labels)
        loop = torch.stack([grad(loss)(s, y) for s, y in zip(scores, labels)])
        torch.testing.assert_close(per_sample, loop)
        bad = labels.clone()
        bad[2, 0, 0] = 2  # one sample's label
        with pytest.raises(ValueError, match=r"labels must contain only 0 and 1, found values \[0, 1, 2\]"):
            vmap(loss)(scores, bad)


def test_spearman_loss_takes_integer_targets_like_their_float_values():
    predictions = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    ages = torch.randint(20, 30, (3, 10), generator=torch.Generator().manual_seed(1))  # with ties
    for l1_weight in (0.0, 0.5):
        loss = SpearmanLoss(sorter=PairwiseSigmoidSorter(0.1), l1_weight=l1_weight)
        torch.testing.assert_close(loss(predictions, ages), loss(predictions, ages.float()))


@pytest.mark.parametrize("l1_weight", [float("nan"), float("inf"), -0.1])
def test_spearman_loss_refuses_a_weight_that_is_not_finite_and_non_negative(l1_weight):
    with pytest.raises(ValueError, match="l1_weight must be a finite number >= 0"):
        SpearmanLoss(sorter=PairwiseSigmoidSorter(0.1), l1_weight=l1_weight)
    with pytest.raises(ValueError, match="l1_weight must be a finite number >= 0"):
        spearman_loss(torch.randn(5), torch.randn(5), PairwiseSigmoidSorter(0.1), l1_weight=l1_weight)


@pytest.mark.parametrize("l1_weight", ["0.1", True, None, torch.ones(2)])
def test_spearman_loss_refuses_a_weight_of_another_type_as_a_type_error(l1_weight):
    # As the sorters refuse a temperature given as text: a TypeError naming the type.
    with pytest.raises(TypeError, match=r"l1_weight must be a finite number >= 0, got (str|bool|NoneType|Tensor) "):
        SpearmanLoss(sorter=PairwiseSigmoidSorter(0.1), l1_weight=l1_weight)


def test_hard_negative_rank_loss_refuses_a_nan_margin():
    from sodeep.losses import hard_negative_rank_loss

    with pytest.raises(ValueError, match="margin"):
        hard_negative_rank_loss(torch.randn(4, 4), PairwiseSigmoidSorter(0.1), margin=float("nan"))


def test_spearman_loss_takes_a_zero_dimensional_tensor_weight():
    predictions, targets = torch.randn(6), torch.randn(6)
    sorter = PairwiseSigmoidSorter(0.1)
    torch.testing.assert_close(
        spearman_loss(predictions, targets, sorter, l1_weight=torch.tensor(0.5)),
        spearman_loss(predictions, targets, sorter, l1_weight=0.5),
    )
    torch.testing.assert_close(
        SpearmanLoss(sorter, l1_weight=torch.tensor(0.5))(predictions, targets),
        SpearmanLoss(sorter, l1_weight=0.5)(predictions, targets),
    )
    with pytest.raises(ValueError, match="l1_weight must be a finite number >= 0"):
        spearman_loss(predictions, targets, sorter, l1_weight=torch.tensor(-1.0))


@pytest.mark.parametrize(("hard_negatives", "error"), [(2.5, TypeError), (True, TypeError), (0, ValueError)])
def test_hard_negative_count_must_be_a_positive_integer(hard_negatives, error):
    from sodeep.losses import HardNegativeRankLoss, hard_negative_rank_loss

    with pytest.raises(error, match="hard_negatives must be"):
        HardNegativeRankLoss(PairwiseSigmoidSorter(0.1), hard_negatives=hard_negatives)
    with pytest.raises(error, match="hard_negatives must be"):
        hard_negative_rank_loss(torch.randn(4, 4), PairwiseSigmoidSorter(0.1), hard_negatives=hard_negatives)


def test_hard_negative_rank_loss_takes_one_margin_a_number_or_a_zero_dimensional_tensor():
    from sodeep.losses import HardNegativeRankLoss, hard_negative_rank_loss

    scores, sorter = torch.randn(5, 5), PairwiseSigmoidSorter(0.1)
    torch.testing.assert_close(
        hard_negative_rank_loss(scores, sorter, margin=torch.tensor(0.3)),
        hard_negative_rank_loss(scores, sorter, margin=0.3),
    )
    with pytest.raises(ValueError, match="margin must be a number or a 0-d tensor, got shape \\(5,\\)"):
        hard_negative_rank_loss(scores, sorter, margin=torch.full((5,), 0.3))
    with pytest.raises(ValueError, match="margin must be a number or a 0-d tensor"):
        HardNegativeRankLoss(sorter, margin=torch.full((5,), 0.3))


@pytest.mark.parametrize(
    "loss,inputs",
    [
        (spearman_loss, (torch.randn(5), torch.randn(5))),
        ("map_rank_loss", (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.long))),
        ("recall_rank_loss", (torch.randn(4, 4),)),
        ("hard_negative_rank_loss", (torch.randn(4, 4),)),
    ],
)
def test_a_missing_sorter_is_named(loss, inputs):
    import sodeep.losses

    function = getattr(sodeep.losses, loss) if isinstance(loss, str) else loss
    with pytest.raises(TypeError, match="sorter must be a Sorter, an nn.Module or a callable .* got NoneType"):
        function(*inputs, None)


#: Each rank loss module with inputs it accepts.
_SORTER_INPUTS = [
    (SpearmanLoss, (torch.randn(8), torch.randn(8))),
    (MapRankLoss, (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.long))),
    (RecallRankLoss, (torch.randn(4, 4),)),
    (HardNegativeRankLoss, (torch.randn(4, 4),)),
]


@pytest.mark.parametrize("loss,inputs", _SORTER_INPUTS)
def test_a_sorter_whose_ranks_lose_the_scores_shape_is_refused(loss, inputs):
    """A callable that reduces its rows would broadcast into a silently wrong loss."""
    reducing = lambda scores: sodeep.rank(scores).mean(-1, keepdim=True)  # noqa: E731
    with pytest.raises(ValueError, match=r"^the sorter returned shape \(\d+, 1\) for scores of shape \(\d+, \d+\); a"):
        loss(sorter=reducing)(*inputs)
    with pytest.raises(ValueError, match="^the sorter returned float for scores of shape"):
        loss(sorter=lambda scores: 0.5)(*inputs)


@pytest.mark.parametrize("loss,inputs", _SORTER_INPUTS)
def test_a_sorter_of_another_rank_convention_is_refused(loss, inputs):
    """Ascending ranks 1..n (torchsort's soft_rank) or integer positions (argsort) are not the
    sorters' normalized descending ranks: each would give a silently wrong loss."""
    ascending = lambda scores: sodeep.rank(-scores) * scores.shape[-1]  # noqa: E731
    with pytest.raises(ValueError, match=r"not descending ranks in \(0, 1\] .* in sodeep.losses.descending_normalized"):
        loss(sorter=ascending)(*inputs)
    # Ascending ranks divided by n average like descending ones: they rise with the scores.
    with pytest.raises(ValueError, match=r"or the ranks rise with the scores\)"):
        loss(sorter=lambda scores: sodeep.rank(-scores))(*inputs)
    with pytest.raises(TypeError, match=r"^the sorter returned torch.int64 values, not ranks"):
        loss(sorter=torch.argsort)(*inputs)
    with pytest.raises(TypeError, match=r"^the ascending sorter returned torch.int64 values: .*an argsort's order"):
        loss(sorter=descending_normalized(torch.argsort))(*inputs)
    expected = loss(sorter=sodeep.rank)(*inputs)
    torch.testing.assert_close(loss(sorter=descending_normalized(ascending))(*inputs), expected)
    overshooting = lambda scores: sodeep.rank(scores) * 1.6 - 0.3  # noqa: E731  a learned sorter strays beyond (0, 1]
    assert torch.isfinite(loss(sorter=overshooting)(*inputs))


class _AscendingSigmoidRanks(torch.nn.Module):
    """Ascending soft ranks 1..n at a learnable temperature (a module of another library)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = torch.nn.Parameter(torch.tensor(-2.0))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        pairs = (scores.unsqueeze(-1) - scores.unsqueeze(-2)) / self.log_temperature.exp()
        return torch.sigmoid(pairs).sum(-1) + 0.5


def test_float8_scores_are_refused_in_one_line():
    low_precision = torch.randn(2, 5).to(torch.float8_e5m2)
    for arguments, name in (
        ((low_precision, torch.randn(2, 5)), "predictions"),
        ((torch.randn(2, 5), low_precision), "targets"),
    ):
        with pytest.raises(
            TypeError, match=rf"^{name} must be a float16, bfloat16, float32 or float64 tensor, got dtype"
        ):
            SpearmanLoss()(*arguments)


def test_a_module_wrapped_for_the_convention_is_frozen_and_moved_with_the_loss():
    ascending = _AscendingSigmoidRanks()
    loss = SpearmanLoss(sorter=descending_normalized(ascending))
    predictions = torch.randn(3, 20, requires_grad=True)
    loss(predictions, torch.randn(3, 20)).backward()
    assert predictions.grad is not None and ascending.log_temperature.grad is None
    assert not ascending.log_temperature.requires_grad and not ascending.training
    loss.train().double()
    assert ascending.log_temperature.dtype == torch.float64 and not ascending.training
    assert list(loss.state_dict()) == [] and "sorter=DescendingNormalized(_AscendingSigmoidRanks())" in repr(loss)


def test_rows_of_nearly_equal_scores_ranked_in_any_order_do_not_refuse_a_sorter():
    """The direction check pools rows by their spread: a sorter that orders rows of nearly
    equal scores by position (as the original, non-equivariant sorters may) passes beside rows
    of real spread, at any scale of the scores."""
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(3, 8, generator=generator)
    nearly_equal = 1.0 + 1e-7 * torch.randn(5, 8, generator=generator)
    by_position = torch.linspace(0, 1, 8)

    def orders_ties_by_position(scores):
        return sodeep.rank(scores + 1e-5 * by_position)

    targets = torch.randn(8, 8, generator=generator)
    for scale in (1e-30, 1.0, 1e30):
        scores = torch.cat([spread, nearly_equal]) * scale
        assert torch.isfinite(SpearmanLoss(sorter=orders_ties_by_position)(scores, targets))
        with pytest.raises(ValueError, match="the ranks rise with the scores"):
            SpearmanLoss(sorter=lambda s: sodeep.rank(-s))(scores, targets)


def test_a_soft_ranker_at_a_high_temperature_is_not_taken_for_an_ascending_one():
    """NeuralSort at T = 5 ranks this row nearly constant, in the wrong order: a poor ranking,
    not another convention."""
    from sodeep.sorters import NeuralSortSorter

    scores = torch.tensor([[0.8397, 0.8297, 0.1479]])
    ranks = NeuralSortSorter(temperature=5.0)(scores)
    assert ranks[0, 2] < ranks[0, 0] and (ranks.max() - ranks.min()) < 0.1
    assert torch.isfinite(SpearmanLoss(sorter=NeuralSortSorter(temperature=5.0))(scores, torch.rand(1, 3)))


#: As :data:`_SORTER_INPUTS`, with batches of 32 scores or more.
_LARGER_SORTER_INPUTS = [
    (SpearmanLoss, (torch.randn(4, 16), torch.randn(4, 16))),
    (MapRankLoss, (torch.randn(8, 6), (torch.rand(8, 6) < 0.5).long())),
    (RecallRankLoss, (torch.randn(8, 8),)),
    (HardNegativeRankLoss, (torch.randn(8, 8),)),
]


@pytest.mark.parametrize("loss,inputs", _LARGER_SORTER_INPUTS)
@pytest.mark.parametrize("temperature", [1.0, 10.0, 1000.0])
def test_ascending_soft_ranks_divided_by_n_are_refused_however_little_they_spread(loss, inputs, temperature):
    """Soft ascending ranks at a high temperature (torchsort's soft_rank / n at a high
    regularization) are nearly constant and nearly linear in the scores: the loss would reward
    the reversed order."""

    def ascending_soft(scores):  # sum_j sigmoid((x_i - x_j) / T) / n: 1 for the largest as T -> 0
        below = torch.sigmoid((scores.unsqueeze(-1) - scores.unsqueeze(-2)) / temperature)
        return below.sum(-1) / scores.shape[-1]

    with pytest.raises(ValueError, match=r"or the ranks rise with the scores\)"):
        loss(sorter=ascending_soft)(*inputs)


@pytest.mark.parametrize("temperature", [3.0, 10.0, 100.0])
@pytest.mark.parametrize("n", [3, 4, 8])
def test_soft_rankers_that_misorder_a_few_short_rows_are_not_refused_over_a_batch(temperature, n):
    """NeuralSort and SoftSort at high temperatures rank some short rows nearly constant and
    rising; over a batch their ranks fall with the scores."""
    from sodeep.sorters import NeuralSortSorter, SoftSortSorter

    generator = torch.Generator().manual_seed(n)
    for _draw in range(20):
        scores = torch.rand(-(-32 // n), n, generator=generator)
        targets = torch.rand(scores.shape, generator=generator)
        for sorter in (NeuralSortSorter(temperature=temperature), SoftSortSorter(temperature=temperature)):
            assert torch.isfinite(SpearmanLoss(sorter=sorter)(scores, targets))


@pytest.mark.parametrize("temperature", [3.0, 10.0, 100.0])
def test_soft_rankers_that_rank_far_low_scores_among_the_first_are_not_refused(temperature):
    """At high temperatures NeuralSort and SoftSort give a far low outlier, or a long low tail, a
    rank near the top: the ranks then correlate with the scores, but they are not ordered as the
    scores are, as ascending ranks would be."""
    from sodeep.sorters import NeuralSortSorter, SoftSortSorter

    generator = torch.Generator().manual_seed(0)
    outlier = 0.01 * torch.randn(1, 32, generator=generator)
    outlier[0, 0] = -10.0
    skewed = [-torch.exp(2 * torch.randn(64, generator=generator)) for _ in range(20)]
    tied_and_one_lower = torch.tensor([[1.0] * 7 + [0.9]] * 4)  # one pair per row that the scores order
    for scores in (outlier, *skewed, tied_and_one_lower, torch.cat([torch.zeros(1, 31), torch.tensor([[-10.0]])], 1)):
        targets = torch.randn(scores.shape, generator=generator)
        for sorter in (NeuralSortSorter(temperature=temperature), SoftSortSorter(temperature=temperature)):
            assert torch.isfinite(SpearmanLoss(sorter=sorter)(scores, targets))


@pytest.mark.parametrize("loss,inputs", _SORTER_INPUTS)
def test_a_sorter_class_is_refused_with_the_instance_to_pass(loss, inputs):
    with pytest.raises(
        TypeError, match=r"sorter is the class PairwiseSigmoidSorter, not a sorter: pass an instance \(e"
    ):
        loss(sorter=PairwiseSigmoidSorter)


@pytest.mark.parametrize("loss,inputs", _SORTER_INPUTS)
def test_a_sorter_factory_uncalled_is_refused_when_the_loss_is_built(loss, inputs):
    import functools

    from sodeep import build_sorter, load_sorter

    for factory, given in (
        (load_sorter, load_sorter),
        (build_sorter, build_sorter),
        (load_sorter, functools.partial(load_sorter, softness=0.5)),
    ):
        name = factory.__name__
        with pytest.raises(
            TypeError,
            match=rf"sorter is the function {name}, which makes a sorter, not a sorter: pass what it returns \(sorter={name}\(\.\.\.\)\)",
        ):
            loss(sorter=given)


def test_the_adapter_for_ascending_sorters_pickles_and_matches_the_exact_ranks():
    """An ascending [1, n] ranker (scipy-style ``rankdata`` here) in sodeep's convention."""
    import io
    import pickle

    ascending = descending_normalized(_ascending_exact_ranks)
    scores = torch.tensor([[0.3, -1.0, 2.0, 0.3]])
    torch.testing.assert_close(ascending(scores), sodeep.rank(scores))
    loss = SpearmanLoss(sorter=ascending)
    copy = pickle.loads(pickle.dumps(loss))
    torch.testing.assert_close(copy(scores[0], -scores[0]), loss(scores[0], -scores[0]))
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 1), loss), io.BytesIO())


def _ascending_exact_ranks(scores: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(scipy.stats.rankdata(scores.numpy(), axis=-1), dtype=scores.dtype)


class _ModelWithRankLoss(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.loss = SpearmanLoss()


def test_a_model_built_on_the_meta_device_keeps_the_losss_sorter_weights():
    """state_dict() leaves the frozen sorter out, so after to_empty() its weights must come back
    from the loss itself, not stay uninitialised memory."""
    reference = _ModelWithRankLoss()
    for build in (lambda: _ModelWithRankLoss().to("meta"), _meta_context_model):
        model = build()
        model.to_empty(device="cpu")
        model.load_state_dict(reference.state_dict())
        for ours, shipped in zip(model.loss.sorter.parameters(), reference.loss.sorter.parameters()):
            assert torch.equal(ours, shipped)
        predictions, targets = torch.randn(16), torch.randn(16)
        torch.testing.assert_close(model.loss(predictions, targets), reference.loss(predictions, targets))
    doubled = _ModelWithRankLoss().to("meta").to_empty(device="cpu").double()
    for ours, shipped in zip(doubled.loss.sorter.parameters(), reference.loss.sorter.parameters()):
        assert ours.dtype == torch.float64 and torch.equal(ours, shipped.double())


def test_weights_changed_after_the_loss_was_built_move_with_the_loss():
    sorter = load_sorter()
    loss = SpearmanLoss(sorter=sorter)
    changed = {name: torch.randn_like(value) for name, value in sorter.state_dict().items()}
    sorter.load_state_dict(changed)
    loss.to("cpu").double()
    for name, value in sorter.state_dict().items():
        torch.testing.assert_close(value, changed[name].double())
    # ...and through the meta device too: the values as they were when the loss left them.
    loss.to("meta").to_empty(device="cpu")
    for name, value in sorter.state_dict().items():
        torch.testing.assert_close(value, changed[name].double())


def _meta_context_model() -> _ModelWithRankLoss:
    with torch.device("meta"):
        return _ModelWithRankLoss()


def test_load_sorter_under_a_meta_device_context_builds_a_meta_sorter_that_reset_parameters_fills():
    import warnings

    with warnings.catch_warnings(record=True) as caught, torch.device("meta"):
        warnings.simplefilter("always")
        sorter = load_sorter(**TRAINING_SETTINGS)
    assert not caught  # torch's "copying ... is a no-op" says nothing the user can act on
    assert all(parameter.is_meta for parameter in sorter.parameters())
    assert sorter(torch.randn(2, 5, device="meta")).shape == (2, 5)  # shapes on meta, as torch's modules give
    with pytest.raises(ValueError, match="the sorter's weights are on the meta device, which holds no values"):
        sodeep.save_sorter(sorter, "never-written.pt")
    sorter.to_empty(device="cpu")
    for use in (lambda: sorter(torch.randn(2, 5)), lambda: sodeep.save_sorter(sorter, "never-written.pt")):
        with pytest.raises((RuntimeError, ValueError), match="its weights were never set .*reset_parameters"):
            use()  # uninitialised memory: refused, not ranked with or saved
    sorter.reset_parameters()
    reference = load_sorter(**TRAINING_SETTINGS)
    torch.testing.assert_close(sorter.state_dict(), reference.state_dict(), rtol=0, atol=0)
    scores = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sorter(scores), reference(scores), rtol=0, atol=0)


@pytest.mark.parametrize("depth", [0, 2])
def test_a_sorter_built_on_the_meta_device_starts_as_built_after_reset_parameters(depth):
    with torch.device("meta"):
        sorter = ConvSorter(depth=depth)
    sorter.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="its weights were never set"):
        sorter(torch.randn(2, 5))
    with torch.no_grad():
        for parameter in sorter.parameters():
            parameter.fill_(float("nan"))  # what uninitialised memory may hold
    sorter.reset_parameters()
    built = ConvSorter(depth=depth)
    head, built_head = sorter.network[-1], built.network[-1]
    assert head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0  # the zero head of a new sorter
    assert all(torch.isfinite(parameter).all() for parameter in sorter.parameters())
    scores = torch.randn(2, 30, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sorter(scores), built(scores))  # h = 0 either way: the plain sorter
    assert built_head.weight.abs().sum() == 0


def test_the_l1_anchor_of_half_precision_predictions_is_taken_in_float32():
    predictions = torch.randn(64, generator=torch.Generator().manual_seed(0))
    targets = 1e5 + torch.randn(64, generator=torch.Generator().manual_seed(1))
    sorter = PairwiseSigmoidSorter(0.1)
    half = spearman_loss(predictions.half(), targets, sorter, l1_weight=0.01)
    assert half.dtype == torch.float16 and torch.isfinite(half)
    torch.testing.assert_close(
        half.float(), spearman_loss(predictions, targets, sorter, l1_weight=0.01), rtol=2e-3, atol=0
    )


def test_more_hard_negatives_than_a_batch_holds_uses_them_all():
    """An epoch's last, smaller batch must not fail: k is capped at N - 1, as in the pairwise loss."""
    scores = torch.randn(3, 3)
    torch.testing.assert_close(
        HardNegativeRankLoss(hard_negatives=5)(scores), HardNegativeRankLoss(hard_negatives=2)(scores)
    )


def test_complex_labels_or_targets_are_refused():
    """PyTorch would discard their imaginary part with only a warning."""
    from sodeep.losses import age_difference_loss, map_rank_loss

    with pytest.raises(TypeError, match="labels must be real, got dtype torch.complex64"):
        map_rank_loss(torch.randn(3, 2), torch.ones(3, 2, dtype=torch.complex64), sodeep.rank)
    with pytest.raises(TypeError, match="targets must be real, got dtype torch.complex64"):
        age_difference_loss(torch.randn(4), torch.randn(4, dtype=torch.complex64))


def test_a_loss_module_shows_its_settings():
    from sodeep.losses import MultiLabelRankingHingeLoss, PairwiseMarginRankingLoss

    assert repr(SpearmanLoss(sorter=PairwiseSigmoidSorter(0.3), l1_weight=0.1)) == (
        "SpearmanLoss(sorter=PairwiseSigmoidSorter(temperature=0.3), l1_weight=0.1)"
    )
    assert repr(HardNegativeRankLoss(sorter=sodeep.rank, margin=0.1, hard_negatives=2)) == (
        "HardNegativeRankLoss(sorter=rank, margin=0.1, hard_negatives=2)"
    )
    assert "sorter=ConvSorter(" in repr(MapRankLoss()) and "temperature_floor=0.1)" in repr(MapRankLoss())
    assert "margin=0.5, hard_negatives=None" in repr(PairwiseMarginRankingLoss(margin=0.5))
    assert "margin=0.5" in repr(MultiLabelRankingHingeLoss(margin=0.5))
    # Settings given as float32 tensors read as written, not as 0.10000000149011612.
    assert "margin=0.1, hard_negatives=1" in repr(HardNegativeRankLoss(margin=torch.tensor(0.1)))
    assert "margin=0.3, " in repr(PairwiseMarginRankingLoss(margin=torch.tensor(0.3)))
    assert "l1_weight=0.01)" in repr(SpearmanLoss(l1_weight=torch.tensor(0.01)))
    assert "margin=0.1234567890123" in repr(MultiLabelRankingHingeLoss(margin=0.1234567890123))
    from sodeep.losses import MultiLabelHingeLoss
    from sodeep.sorters import ConvSorter

    float32 = float(torch.tensor(0.1))  # 0.10000000149011612
    assert "softness=0.1, " in repr(SpearmanLoss(sorter=ConvSorter(softness=float32)))
    hinge = repr(MultiLabelHingeLoss(2, margin=float32, adaptive=True, momentum=float(torch.tensor(0.9))))
    assert "margin=0.1, adaptive=True, margin_range=(0.1, 2.0), momentum=0.9" in hinge
    compiled = SpearmanLoss(sorter=torch.compile(PairwiseSigmoidSorter(0.3)))
    assert repr(compiled) == "SpearmanLoss(sorter=PairwiseSigmoidSorter(temperature=0.3), l1_weight=0.0)"


def test_map_loss_names_the_batch_when_the_sorter_is_too_short_for_it():
    from sodeep.sorters import ConvSorter

    loss = MapRankLoss(sorter=ConvSorter(capacity=64))
    with pytest.raises(ValueError, match=r"n=100 .* its \(B, C\) scores of shape \(100, 3\).* its n the batch size B"):
        loss(torch.randn(100, 3), (torch.rand(100, 3) > 0.5).float())


@pytest.mark.parametrize("form", ["module", "function", "compiled sorter"])
def test_rows_longer_than_the_sorter_takes_are_refused_naming_the_losss_sorter_argument(form):
    n = load_sorter().max_length + 1
    predictions, targets = torch.randn(n), torch.randn(n)
    if form == "module":
        compute = lambda: SpearmanLoss()(predictions, targets)  # noqa: E731
    elif form == "function":
        compute = lambda: spearman_loss(predictions, targets, load_sorter())  # noqa: E731
    else:
        compute = lambda: SpearmanLoss(sorter=torch.compile(load_sorter()))(predictions, targets)  # noqa: E731
    with pytest.raises(ValueError) as raised:
        compute()
    assert str(raised.value) == (
        f"the loss ranks rows of n={n} values, more than its sorter takes ({n - 1}); give the loss a sorter "
        "that takes them, e.g. sorter=PairwiseSigmoidSorter() (any n, memory B * n^2)"
    )
    # A sorter of a smaller capacity is pointed to the shipped one too.
    with pytest.raises(
        ValueError, match=r"takes \(64\); give the loss a sorter that takes them, e.g. sorter=load_sorter"
    ):
        SpearmanLoss(sorter=ConvSorter(capacity=64))(torch.randn(65), torch.randn(65))
    # ...and the advice works.
    assert torch.isfinite(SpearmanLoss(sorter=PairwiseSigmoidSorter())(predictions[:3000], targets[:3000]))


def test_losses_over_rows_show_how_more_dimensions_become_rows():
    from sodeep.losses import multilabel_hinge_loss

    scores = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4\): rows of 4 are predictions.reshape\(-1, 4\)$"):
        SpearmanLoss(sorter=PairwiseSigmoidSorter(0.1))(scores, scores)
    with pytest.raises(ValueError, match=r"scores must have shape \(B, C\), got shape \(2, 3, 4\): rows of 4 are"):
        multilabel_hinge_loss(scores, torch.ones(2, 3, 4, dtype=torch.long))


def test_a_model_holding_a_meta_sorter_sets_its_weights_by_its_own_load_state_dict():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), load_sorter())
    model.to_empty(device="cpu")
    reference = torch.nn.Sequential(torch.nn.Linear(3, 3), load_sorter())
    model.load_state_dict(reference.state_dict())  # the sorter's weights among the model's
    scores = torch.randn(2, 6)
    torch.testing.assert_close(model[1](scores), reference[1](scores), rtol=0, atol=0)


def test_a_sorter_assigned_after_building_stays_frozen_and_out_of_the_owners_state():
    model = _ModelWithRankLoss()
    model.loss.sorter = ConvSorter(softness=0.1, temperature_floor=0.1)
    model.train()
    assert set(model.state_dict()) == {"linear.weight", "linear.bias"}
    assert not any(p.requires_grad for p in model.loss.sorter.parameters())
    assert not model.loss.sorter.training
    assert all(not isinstance(module, ConvSorter) for module in model.modules())
    before = [p.clone() for p in model.loss.sorter.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.loss(model.linear(torch.randn(16, 4)).squeeze(-1), torch.randn(16)).backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.loss.sorter.parameters()))
    _ModelWithRankLoss().load_state_dict(model.state_dict())  # strict: the checkpoint still fits a fresh model
    with pytest.raises(TypeError):
        model.loss.sorter = "not a sorter"


def test_a_sorter_loaded_to_fine_tune_or_in_training_is_frozen_with_a_warning():
    import copy
    import warnings

    tuned = load_sorter(trainable=True, **TRAINING_SETTINGS)
    with pytest.warns(
        UserWarning,
        match=r"^SpearmanLoss froze the sorter given to it, in place .*copy\.deepcopy\(sorter\)\.requires_grad_\(False\)$",
    ):
        loss = SpearmanLoss(sorter=tuned)
    assert loss.sorter is tuned and not tuned.training and not any(w.requires_grad for w in tuned.parameters())
    training = ConvSorter(capacity=64)
    training(torch.randn(4, 8)).sum().backward()  # a step of its own training: gradients on its weights
    with pytest.warns(UserWarning, match="^MapRankLoss froze the sorter"):
        MapRankLoss(sorter=training)
    # A copy keeps the original training; a fresh, frozen or weightless sorter is taken without a word.
    original = load_sorter(trainable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpearmanLoss(sorter=copy.deepcopy(original).requires_grad_(False))
        SpearmanLoss(sorter=ConvSorter())
        SpearmanLoss(sorter=load_sorter())
        SpearmanLoss(sorter=PairwiseSigmoidSorter())
    assert original.training and all(w.requires_grad for w in original.parameters())


def test_a_loss_moved_to_the_meta_device_is_told_to_use_to_empty():
    loss = SpearmanLoss().to("meta")
    with pytest.raises(ValueError, match=r"loss\.to_empty\(device='cpu'\)$"):
        loss(torch.randn(8), torch.randn(8))
    loss.to_empty(device="cpu")  # and the advice works
    assert torch.isfinite(loss(torch.randn(8), torch.randn(8)))


SHORT_BATCH_CALLS = {
    "spearman module": lambda sorter, size: SpearmanLoss(sorter=sorter)(torch.randn(size), torch.randn(size)),
    "spearman function": lambda sorter, size: spearman_loss(torch.randn(size), torch.randn(size), sorter),
    "map": lambda sorter, size: MapRankLoss(sorter=sorter)(
        torch.randn(size, 3), (torch.arange(size)[:, None] % 2 == torch.arange(3)[None] % 2).float()
    ),
    "recall": lambda sorter, size: RecallRankLoss(sorter=sorter)(torch.randn(size, size)),
    "hard negative": lambda sorter, size: HardNegativeRankLoss(sorter=sorter)(torch.randn(size, size)),
}


@pytest.mark.parametrize("call", SHORT_BATCH_CALLS.values(), ids=SHORT_BATCH_CALLS)
def test_a_short_last_batch_for_a_fixed_length_sorter_is_named_as_the_losss_batch(call):
    """Each rank loss ranks across its batch, so a last, shorter batch meets a fixed-n sorter."""
    sorter = OriginalCNNSorter(length=40).eval()
    with pytest.raises(ValueError) as raised:
        call(sorter, 37)
    assert str(raised.value).startswith(  # map_rank_loss adds how its (B, C) scores are ranked
        "the loss ranks rows of n=37 values, and its sorter takes only n=40. Where the loss ranks across the batch, "
        "as for (n,) predictions and (N, N) similarities, this may be a last, shorter batch, which drop_last=True "
        "leaves out. Or give the loss a sorter of other n, e.g. sorter=load_sorter() (2 <= n <= 16,384)"
    )
    assert torch.isfinite(call(sorter, 40))


def test_an_adapted_ascending_sorter_of_rows_only_takes_one_row_as_the_other_sorters_do():
    def rows_only(scores):  # as torchsort's soft_rank: "'values' should be a 2d-tensor"
        if scores.dim() != 2:
            raise ValueError("'values' should be a 2d-tensor")
        return _ascending_exact_ranks(scores)

    sorter = descending_normalized(rows_only)
    scores = torch.tensor([0.3, -1.0, 2.0, 0.3])
    torch.testing.assert_close(sorter(scores), rank(scores))
    torch.testing.assert_close(sorter(scores[None]), rank(scores[None]))


@pytest.mark.parametrize("build", [lambda: OriginalCNNSorter(length=40), lambda: ConvSorter(capacity=64)])
def test_a_sorter_built_on_the_meta_device_and_given_memory_says_to_reset_its_weights(build):
    with torch.device("meta"):
        sorter = build()
    sorter.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match=r"call sorter.reset_parameters\(\)"):
        sorter(torch.randn(2, 40))
    sorter.reset_parameters()
    assert torch.isfinite(sorter(torch.randn(2, 40))).all()
    # ...inside a loss as well, after the loss's own advice (to_empty).
    with torch.device("meta"):
        loss = SpearmanLoss(sorter=build())
    loss.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match=r"call sorter.reset_parameters\(\)"):
        loss(torch.randn(40), torch.randn(40))
    loss.sorter.reset_parameters()
    assert torch.isfinite(loss(torch.randn(40), torch.randn(40)))


def test_a_meta_sorter_loaded_with_assign_ranks_and_a_partial_load_leaves_it_unset():
    reference = load_sorter()
    with torch.device("meta"):
        sorter = ConvSorter(**reference.config())
    sorter.load_state_dict(reference.state_dict(), assign=True)  # the weights become the tensors given
    scores = torch.randn(2, 40)
    torch.testing.assert_close(sorter(scores), reference(scores))
    with torch.device("meta"):
        partial = ConvSorter()
    partial.to_empty(device="cpu")
    partial.load_state_dict({}, strict=False)  # nothing given: still unset
    with pytest.raises(RuntimeError, match=r"call sorter.reset_parameters\(\)"):
        partial(scores)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_rank_losses_return_the_scores_dtype_whatever_the_sorters(dtype):
    """sodeep.rank gives float32 ranks for half-precision scores; a float32 sorter beside float64
    scores: the losses still return the scores' dtype."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 3, generator=generator).to(dtype)
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    float32_ranks = lambda values: sodeep.rank(values.float())  # noqa: E731
    square = torch.randn(4, 4, generator=generator).to(dtype)
    for sorter in (sodeep.rank, float32_ranks):
        assert map_rank_loss(scores, labels, sorter).dtype == dtype
        assert recall_rank_loss(square, sorter).dtype == dtype
        assert hard_negative_rank_loss(square, sorter).dtype == dtype
        assert SpearmanLoss(sorter=sorter)(scores, scores.float() * 2).dtype == dtype
    torch.testing.assert_close(
        map_rank_loss(scores, labels, float32_ranks), map_rank_loss(scores.float(), labels, sodeep.rank).to(dtype)
    )


def test_a_sorter_the_model_also_holds_ranks_in_eval_mode_whatever_the_models_mode():
    """One sorter shared by a model and its losses: model.train() sets the sorter's mode too; the
    loss puts it back before ranking, so BatchNorm's statistics stay fixed and the loss is the same."""
    from sodeep.sorters import OriginalCNNSorter

    torch.manual_seed(0)
    sorter = OriginalCNNSorter(length=40).requires_grad_(False)
    model = torch.nn.Module()
    model.sorter = sorter
    model.spearman, model.map = SpearmanLoss(sorter=sorter), MapRankLoss(sorter=sorter)
    statistics = [buffer.clone() for buffer in sorter.buffers()]
    predictions, targets = torch.randn(40), torch.randn(40)
    model.eval()
    expected = model.spearman(predictions, targets)
    for _ in range(2):
        model.train()
        assert sorter.training
        torch.testing.assert_close(model.spearman(predictions, targets), expected, rtol=0, atol=0)
        assert not sorter.training
    for before, after in zip(statistics, sorter.buffers()):
        torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_integer_targets_rank_at_the_predictions_precision():
    """Integer targets (ages, counts) against float64 predictions: the loss and its gradient are
    those of the same targets given as float64, to the last bit."""
    from sodeep.losses import spearman_loss

    sorter = PairwiseSigmoidSorter(0.1)
    targets = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])
    gradients = []
    for given in (targets, targets.double()):
        predictions = torch.randn(2, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        predictions.requires_grad_(True)
        loss = spearman_loss(predictions, given, sorter, l1_weight=0.1)
        loss.backward()
        gradients.append((loss.detach(), predictions.grad))
    torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=0)
