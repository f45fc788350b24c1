import pytest
import torch

from sodeep.losses import (
    HardNegativeRankLoss,
    MultiLabelHingeLoss,
    MultiLabelRankingHingeLoss,
    PairwiseMarginRankingLoss,
    SpearmanLoss,
    multilabel_hinge_loss,
    multilabel_ranking_hinge_loss,
    pairwise_margin_ranking_loss,
    sigmoid_cross_entropy,
)
from sodeep.reducers import REDUCTIONS, reduce_loss
from sodeep.sorters import PairwiseSigmoidSorter


def slow_pairwise(scores, labels, mask, margin, hard_negatives=None, reduction="mean"):
    """Every (positive, negative) pair of every row, one at a time; hard negatives: the highest
    scores first, ties in index order."""
    losses = []
    for b in range(scores.shape[0]):
        negatives = [j for j in range(scores.shape[1]) if labels[b, j] == 0 and mask[b, j]]
        if hard_negatives is not None:
            negatives = sorted(negatives, key=lambda j: -scores[b, j].item())[:hard_negatives]
        for i in range(scores.shape[1]):
            if labels[b, i] == 1 and mask[b, i]:
                for j in negatives:
                    losses.append(torch.clamp(margin - scores[b, i] + scores[b, j], min=0))
    return torch.stack(losses).mean() if reduction == "mean" else torch.stack(losses).sum()


@pytest.mark.parametrize("hard_negatives", [None, 1, 3, 50])
def test_pairwise_margin_equals_double_loop(hard_negatives):
    scores = torch.randn(5, 12, dtype=torch.float64)
    labels = (torch.rand(5, 12) < 0.3).long()
    labels[:, 0] = 1
    mask = torch.rand(5, 12) < 0.8
    mask[:, 0] = True
    ours = pairwise_margin_ranking_loss(scores, labels, mask, margin=0.5, hard_negatives=hard_negatives)
    torch.testing.assert_close(ours, slow_pairwise(scores, labels, mask, 0.5, hard_negatives))


@pytest.mark.parametrize("hard_negatives", [None, 2, 50])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_pairwise_margin_gradient_equals_double_loop_on_ties(hard_negatives, reduction):
    """Scores on a grid of half-units with margins of 1 and 0.5 put many pairs exactly on the
    hinge's corner: the gradient there is the clamp's, as in the double loop (a pair with zero
    hinge passes it).  With hard negatives, tied negatives are taken in index order (the double
    loop's), and the pair tensor of ``"none"`` agrees with the totals."""
    generator = torch.Generator().manual_seed(3)
    for margin in (1.0, 0.5):
        scores = torch.randint(-2, 3, (6, 11), generator=generator).double() * 0.5
        labels = (torch.rand(6, 11, generator=generator) < 0.4).long()
        labels[:, :2] = torch.tensor([1, 0])
        mask = torch.rand(6, 11, generator=generator) < 0.8
        mask[:, :2] = True
        if hard_negatives is not None and hard_negatives < 11:
            scores = scores + torch.arange(11) * 1e-9  # hard-negative ties: any index order is right
        ours_input, loop_input = scores.clone().requires_grad_(), scores.clone().requires_grad_()
        ours = pairwise_margin_ranking_loss(
            ours_input, labels, mask, margin=margin, hard_negatives=hard_negatives, reduction=reduction
        ).sum()
        expected = slow_pairwise(loop_input, labels, mask, margin, hard_negatives, reduction="sum")
        ours.backward()
        expected.backward()
        torch.testing.assert_close(ours, expected)
        torch.testing.assert_close(ours_input.grad, loop_input.grad)


def test_pairwise_margin_pair_tensor_is_indexed_by_items():
    scores = torch.tensor([[3.0, 0.0, 2.5, 1.0]])
    labels = torch.tensor([[1, 0, 0, 1]])
    pairs = pairwise_margin_ranking_loss(scores, labels, reduction="none")
    assert pairs.shape == (1, 4, 4)
    expected = torch.zeros(1, 4, 4)
    expected[0, 0, 2] = 0.5  # 1 - (3 - 2.5)
    expected[0, 3, 1], expected[0, 3, 2] = 0.0, 2.5  # 1 - (1 - 0), 1 - (1 - 2.5)
    torch.testing.assert_close(pairs, expected)
    hardest = pairwise_margin_ranking_loss(scores, labels, hard_negatives=1, reduction="none")
    assert hardest[0, :, 1].eq(0).all() and hardest[0, 3, 2] == 2.5
    mean = pairwise_margin_ranking_loss(scores, labels, reduction="mean")
    torch.testing.assert_close(mean, pairs.mean())


def test_pairwise_margin_keeps_float32_accuracy_at_a_large_offset():
    """Sums over sorted negatives would lose float32 digits to a large common offset; the rows
    are centred first.  Against the float64 double loop's value."""
    generator = torch.Generator().manual_seed(0)
    scores = (torch.randn(4, 300, generator=generator) * 3 + 1e5).float()
    labels = (torch.rand(4, 300, generator=generator) < 0.1).long()
    mask = torch.ones(4, 300, dtype=torch.bool)
    expected = slow_pairwise(scores.double(), labels, mask, 1.0)
    ours = pairwise_margin_ranking_loss(scores, labels)
    assert abs(ours.double().item() - expected.item()) / expected.item() < 1e-5


def test_pairwise_margin_pair_tensor_keeps_a_small_margin_at_a_large_offset():
    """The pair tensor (``reduction="none"``) takes each pair's difference before adding the
    margin: ``margin - s_pos`` first would round a margin of 1e-3 away beside scores near 1e6."""
    generator = torch.Generator().manual_seed(1)
    scores = (torch.randn(4, 60, generator=generator, dtype=torch.float64) * 10 + 1e6).float()
    labels = (torch.rand(4, 60, generator=generator) < 0.3).long()
    expected = slow_pairwise(scores.double(), labels, torch.ones_like(labels), 1e-3, reduction="sum")
    pairs = pairwise_margin_ranking_loss(scores, labels, margin=1e-3, reduction="none")
    total = pairwise_margin_ranking_loss(scores, labels, margin=1e-3, reduction="sum")
    assert pairs.double().sum().item() == pytest.approx(expected.item(), rel=1e-6)
    assert total.double().item() == pytest.approx(expected.item(), rel=1e-6)


def test_pairwise_margin_equals_margin_ranking_loss_on_plain_vectors():
    positives, negatives = torch.randn(4), torch.randn(7)
    scores = torch.cat([positives, negatives]).unsqueeze(0)
    labels = torch.cat([torch.ones(4), torch.zeros(7)]).long().unsqueeze(0)
    reference = torch.nn.MarginRankingLoss(margin=0.3)(
        positives.repeat_interleave(7), negatives.repeat(4), torch.ones(28)
    )
    torch.testing.assert_close(PairwiseMarginRankingLoss(margin=0.3)(scores, labels), reference)


def test_pairwise_margin_no_valid_pair_is_zero_and_differentiable():
    scores = torch.randn(2, 5, requires_grad=True)
    loss = pairwise_margin_ranking_loss(scores, torch.zeros(2, 5, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and torch.equal(scores.grad, torch.zeros(2, 5))


def test_multilabel_hinge_per_label_margins_and_mask():
    scores, labels = torch.randn(6, 4), (torch.rand(6, 4) < 0.5).long()
    margins = torch.tensor([0.5, 1.0, 1.5, 2.0])
    mask = (torch.rand(6, 4) < 0.7).float()
    expected_elements = torch.where(
        labels == 1, torch.clamp(margins - scores, min=0), torch.clamp(margins + scores, min=0)
    )
    ours = multilabel_hinge_loss(scores, labels, margins, weight=mask, reduction="weighted_mean")
    torch.testing.assert_close(ours, (expected_elements * mask).sum() / mask.sum())


@pytest.mark.parametrize("weight", [torch.full((4, 3), float("nan")), torch.ones(5), torch.ones(4, 3, 2)])
def test_a_refused_weight_leaves_the_adaptive_margins_as_they_were(weight):
    loss = MultiLabelHingeLoss(3, adaptive=True, momentum=0.0)
    scores, labels = torch.randn(4, 3), (torch.rand(4, 3) > 0.5).long()
    margins, running = loss.margin.clone(), loss.running_loss.clone()
    with pytest.raises(ValueError, match="weight"):
        loss(scores, labels, weight)
    assert torch.equal(loss.margin, margins) and torch.equal(loss.running_loss, running)


def test_adaptive_margins_move_outside_the_graph_and_stay_clipped():
    loss = MultiLabelHingeLoss(3, margin=1.0, adaptive=True, margin_range=(0.5, 1.5), momentum=0.0)
    scores = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.ones(2, 3, dtype=torch.long)
    value = loss(scores, labels)
    value.backward()
    # Label 0 is easy (loss 0), labels 1 and 2 are hard: their margins widen, label 0's narrows.
    assert loss.margin[0] == 0.5 and loss.margin[1] == loss.margin[2] == 1.5
    assert not loss.margin.requires_grad
    loss.eval()
    before = loss.margin.clone()
    loss(scores, labels)
    assert torch.equal(before, loss.margin)  # no update in eval mode


def test_ranking_hinge_equals_multilabel_margin_loss():
    scores = torch.randn(5, 6)
    labels = (torch.rand(5, 6) < 0.4).long()
    labels[:, 1] = 1
    index_targets = torch.full((5, 6), -1, dtype=torch.long)
    for b in range(5):
        positives = labels[b].nonzero().squeeze(-1)
        index_targets[b, : len(positives)] = positives
    reference = torch.nn.MultiLabelMarginLoss()(scores, index_targets)
    torch.testing.assert_close(MultiLabelRankingHingeLoss()(scores, labels), reference)


def tf_sigmoid_cross_entropy_reference(labels, logits, weights):
    """TensorFlow's v1 formula, written out: max(x, 0) - x z + log(1 + exp(-|x|)), then
    SUM_BY_NONZERO_WEIGHTS over weights broadcast to the loss."""
    losses = torch.clamp(logits, min=0) - logits * labels + torch.log1p(torch.exp(-logits.abs()))
    weights = weights.expand_as(losses)
    present = (weights != 0).sum()
    return (losses * weights).sum() / present if present > 0 else torch.zeros(())


@pytest.mark.parametrize("weight_shape", [(8, 5), (8, 1), (1, 5)])
def test_masked_sigmoid_cross_entropy_matches_tensorflow_formula(weight_shape):
    logits, labels = 3 * torch.randn(8, 5, dtype=torch.float64), (torch.rand(8, 5) < 0.5).double()
    mask = (torch.rand(weight_shape) < 0.6).double()
    torch.testing.assert_close(
        sigmoid_cross_entropy(logits, labels, weight=mask), tf_sigmoid_cross_entropy_reference(labels, logits, mask)
    )


def test_all_zero_weights_give_zero_connected_to_the_graph():
    logits = torch.randn(4, 3, requires_grad=True)
    for reduction in ("weighted_mean", "nonzero_weighted_mean"):
        loss = sigmoid_cross_entropy(logits, torch.ones(4, 3), weight=torch.zeros(4, 3), reduction=reduction)
        loss.backward()
        assert loss.item() == 0 and not torch.isnan(logits.grad).any()


def test_reductions_against_explicit_formulas():
    loss, weight = torch.rand(4, 3), torch.tensor([[1.0, 0.0, 2.0]])
    w = weight.expand(4, 3)
    expected = {
        "none": loss * w,
        "sum": (loss * w).sum(),
        "mean": (loss * w).mean(),
        "weighted_mean": (loss * w).sum() / w.sum(),
        "nonzero_weighted_mean": (loss * w).sum() / (w != 0).sum(),
    }
    assert set(REDUCTIONS) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(reduce_loss(loss, weight, name), value)
    with pytest.raises(ValueError, match="broadcast"):
        reduce_loss(loss, torch.ones(5), "sum")


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "nonzero_weighted_mean"])
def test_a_mean_within_the_dtypes_range_does_not_overflow_on_the_way(reduction):
    loss, weight = torch.tensor([1.0, 1.0, 0.5]), torch.tensor([3e38, 3e38, 0.0])
    expected = {"mean": 2e38, "weighted_mean": 1.0, "nonzero_weighted_mean": 3e38}[reduction]
    torch.testing.assert_close(reduce_loss(loss, weight, reduction), torch.tensor(expected))


def test_bad_labels_and_shapes():
    with pytest.raises(ValueError, match="0 and 1"):
        pairwise_margin_ranking_loss(torch.randn(2, 3), torch.full((2, 3), 2))
    with pytest.raises(ValueError, match="same shape"):
        multilabel_hinge_loss(torch.randn(2, 3), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        pairwise_margin_ranking_loss(torch.randn(0, 3), torch.ones(0, 3, dtype=torch.long))


def test_margins_and_masks_are_checked():
    scores, labels = torch.randn(2, 4), torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])
    nan = float("nan")
    # A NaN margin made every loss NaN, silently.
    with pytest.raises(ValueError, match="margin must be finite"):
        pairwise_margin_ranking_loss(scores, labels, margin=nan)
    with pytest.raises(ValueError, match="margin must be finite"):
        multilabel_hinge_loss(scores, labels, margin=torch.tensor([1.0, nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match="margin must be finite"):
        MultiLabelRankingHingeLoss(margin=nan)(scores, labels)
    with pytest.raises(ValueError, match="margin must be finite"):
        MultiLabelHingeLoss(4, margin=nan)
    # Three margins for four labels are named, not left to fail inside torch's expand.
    with pytest.raises(ValueError, match="4 margins"):
        MultiLabelHingeLoss(4, margin=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="num_labels must be >= 1"):
        MultiLabelHingeLoss(0)
    with pytest.raises(ValueError, match="built for num_labels=3"):
        MultiLabelHingeLoss(3)(scores, labels)
    # A mask of 2s or halves is a weight in disguise, refused rather than counted as "known".
    with pytest.raises(ValueError, match="mask must contain only 0 and 1"):
        pairwise_margin_ranking_loss(scores, labels, mask=torch.tensor([[1, 0, 2, 1], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="mask must contain only 0 and 1"):
        MultiLabelRankingHingeLoss()(scores, labels, mask=torch.full((2, 4), 0.5))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        pairwise_margin_ranking_loss(scores, labels, mask=[[1, 1, 1, 1], [1, 1, 1, 1]])
    # Boolean and 0/1 float masks are fine and agree.
    as_bool = pairwise_margin_ranking_loss(scores, labels, mask=torch.tensor([[True, True, False, True]] * 2))
    as_float = pairwise_margin_ranking_loss(scores, labels, mask=torch.tensor([[1.0, 1.0, 0.0, 1.0]] * 2))
    torch.testing.assert_close(as_bool, as_float)


def test_a_mask_given_where_the_function_takes_its_margin_names_the_weight():
    # The module takes the mask third; its function takes the margin there.
    scores, labels = torch.randn(3, 4), torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]])
    mask = torch.ones(3, 4)
    with pytest.raises(ValueError, match="a mask of known labels goes in weight="):
        multilabel_hinge_loss(scores, labels, mask)
    torch.testing.assert_close(
        multilabel_hinge_loss(scores, labels, weight=mask), MultiLabelHingeLoss(4)(scores, labels, mask)
    )
    # A (C,) margin is what it says, and another wrong shape gets no hint about masks.
    multilabel_hinge_loss(scores, labels, torch.ones(4))
    with pytest.raises(ValueError, match=r"got margin of shape \(2, 4\)$"):
        multilabel_hinge_loss(scores, labels, torch.ones(2, 4))


def test_pairwise_margin_counts_many_pairs_in_half_precision():
    """Over 65,504 pairs a float16 count would overflow to inf and the mean to 0."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 400, generator=generator)
    labels = (torch.rand(64, 400, generator=generator) < 0.2).long()
    full = pairwise_margin_ranking_loss(scores, labels)
    for dtype in (torch.float16, torch.bfloat16):
        half = pairwise_margin_ranking_loss(scores.to(dtype), labels)
        assert half.dtype == dtype
        torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=0)


@pytest.mark.parametrize("padding", [-1e9, torch.finfo(torch.float32).min, torch.finfo(torch.float32).max])
def test_pairwise_margin_is_exact_beside_extreme_padding_and_outliers(padding):
    """Masked padding at extreme finite values, and an unmasked outlier, leave the other pairs'
    sums accurate (the rows are centred on their highest negative, not on their mean)."""
    generator = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 10, generator=generator)
    labels = torch.tensor([[1, 0, 1, 0, 0, 0, 0, 1, 0, 0]] * 3)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[:, -3:] = False
    scores[:, -3:] = padding
    scores[1, 0] = 1e8  # a positive far above every negative: its hinges are 0
    for reduction in ("weighted_mean", "sum", "none"):
        expected = slow_pairwise(
            scores.double(), labels, mask, 1.0, reduction="mean" if reduction == "weighted_mean" else "sum"
        )
        got = pairwise_margin_ranking_loss(scores, labels, mask, reduction=reduction).sum()
        assert torch.isfinite(got)
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding", [-1e9, torch.finfo(torch.float32).min])
def test_pairwise_margin_is_exact_when_most_negatives_are_unmasked_padding(padding):
    """Padding left unmasked and labelled 0 is a negative: with most of a row's negatives there,
    the real pairs' sums stay exact (padding far below every positive adds no hinge)."""
    generator = torch.Generator().manual_seed(2)
    scores = torch.randn(2, 12, generator=generator)
    labels = torch.tensor([[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]] * 2)
    scores[:, 5:] = padding
    mask = torch.ones(2, 12, dtype=torch.bool)
    for reduction in ("sum", "weighted_mean", "none"):
        expected = slow_pairwise(
            scores.double(), labels, mask, 1.0, reduction="sum" if reduction != "weighted_mean" else "mean"
        )
        got = pairwise_margin_ranking_loss(scores, labels, reduction=reduction).sum()
        assert expected.item() > 0.1
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)


def test_pairwise_margin_positive_far_above_a_far_negative_is_zero_not_nan():
    """The centred positive overflows float32 (2e38 - (-2e38)); its hinge is 0, value and gradient."""
    scores = torch.tensor([[2e38, -2e38, 0.0]], requires_grad=True)
    labels = torch.tensor([[1, 0, 1]])
    loss = pairwise_margin_ranking_loss(scores, labels, reduction="sum")
    loss.backward()
    assert loss.item() == 0 and torch.equal(scores.grad, torch.zeros(1, 3))


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_pairwise_margin_decides_pairs_on_the_scores_beside_a_huge_negative(reduction):
    """A negative at 1e9 must not blur which of the other pairs pass the hinge: 0 against -3
    (hinge 0) stays out of the value and of the gradient, as in the float32 double loop."""
    scores = torch.tensor([[0.0, -3.0, 1e9, 0.5]])
    labels = torch.tensor([[1, 0, 0, 1]])
    ours_input, loop_input = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    ours = pairwise_margin_ranking_loss(ours_input, labels, reduction=reduction).sum()
    expected = slow_pairwise(loop_input, labels, torch.ones_like(labels), 1.0, reduction="sum")
    ours.backward()
    expected.backward()
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_input.grad, torch.tensor([[-1.0, 0.0, 2.0, -1.0]]))
    torch.testing.assert_close(ours_input.grad, loop_input.grad)


@pytest.mark.parametrize("reduction", ["sum", "weighted_mean"])
def test_pairwise_margin_is_never_negative_when_the_margin_is_inexact_in_float32(reduction):
    """Margins 0.3 and 0.1 are not float32 numbers: a pair just past the hinge must stay out of
    the sum (it would add a negative term), as in the float64 double loop."""
    for scores, margin in (([[0.30000001192092896, 0.0]], 0.3), ([[100000.1015625, 100000.0]], 0.1)):
        scores = torch.tensor(scores, requires_grad=True)
        labels = torch.tensor([[1, 0]])
        loss = pairwise_margin_ranking_loss(scores, labels, margin=margin, reduction=reduction)
        loss.backward()
        expected = slow_pairwise(scores.detach().double(), labels, torch.ones_like(labels), margin, reduction="sum")
        assert loss.item() >= 0 and loss.item() == pytest.approx(expected.item(), abs=1e-12)
        assert torch.equal(scores.grad, torch.zeros(1, 2))


def test_pairwise_margin_hinges_near_the_largest_float32_add_up_without_overflow():
    """Three hinges, one of 3e38: their sum and mean are finite (an intermediate ``c * hinge``
    past float32's range would make them NaN)."""
    scores = torch.tensor([[1.0, 0.0, 0.5, 3e38]], requires_grad=True)
    labels = torch.tensor([[1, 0, 0, 0]])
    mean = pairwise_margin_ranking_loss(scores, labels)
    mean.backward()
    expected = (torch.tensor(3e38, dtype=torch.float64) + 1.0 + 1.5) / 3
    torch.testing.assert_close(mean.double(), expected)
    torch.testing.assert_close(scores.grad, torch.tensor([[-3.0, 1.0, 1.0, 1.0]]) / 3)
    total = pairwise_margin_ranking_loss(scores.detach(), labels, reduction="sum")
    assert torch.isfinite(total) and total.item() == pytest.approx(3e38, rel=1e-6)


def test_pairwise_margin_pair_tensor_keeps_invalid_pairs_at_zero_in_half_precision():
    """An invalid pair whose hinge overflows float16 (120,000) stays 0, not inf * 0 = NaN."""
    scores = torch.tensor([[60000.0, 60000.0, -60000.0]], dtype=torch.float16)
    labels = torch.tensor([[1, 0, 0]])
    pairs = pairwise_margin_ranking_loss(scores, labels, reduction="none")
    assert pairs.dtype == torch.float16 and torch.isfinite(pairs).all()
    assert pairs.sum().item() == 1.0 and pairwise_margin_ranking_loss(scores, labels).item() == 0.5


def test_pairwise_margin_options_are_checked_when_given():
    import numpy as np

    scores, labels = torch.randn(2, 5), torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="margin must be a number or a 0-d tensor, got shape \\(5,\\)"):
        pairwise_margin_ranking_loss(scores, labels, margin=torch.ones(5))
    with pytest.raises(TypeError, match="margin must be a number or a tensor, got NoneType"):
        pairwise_margin_ranking_loss(scores, labels, margin=None)
    with pytest.raises(ValueError, match="margin must be finite"):
        PairwiseMarginRankingLoss(margin=float("nan"))
    with pytest.raises(ValueError, match="hard_negatives must be >= 1"):
        PairwiseMarginRankingLoss(hard_negatives=0)
    with pytest.raises(ValueError, match="margin must be finite"):
        MultiLabelRankingHingeLoss(margin=float("inf"))
    from_numpy = pairwise_margin_ranking_loss(scores, labels, hard_negatives=np.int64(2))
    torch.testing.assert_close(from_numpy, pairwise_margin_ranking_loss(scores, labels, hard_negatives=2))
    tensor_margin = pairwise_margin_ranking_loss(scores, labels, margin=torch.tensor(0.5))
    torch.testing.assert_close(tensor_margin, pairwise_margin_ranking_loss(scores, labels, margin=0.5))


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean", "nonzero_weighted_mean"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_means_neither_overflow_nor_lose_their_count(reduction, dtype, weighted):
    """100,000 elements of 2.0: a half-precision sum (200,000) or count would be inf or stall, and
    each element divided by the count in half precision (2e-5, subnormal in float16) rounds."""
    loss = torch.full((100_000,), 2.0, dtype=dtype)
    weight = torch.ones(100_000, dtype=dtype) if weighted else None
    reduced = reduce_loss(loss, weight, reduction)
    assert reduced.dtype == dtype and reduced.item() == 2.0
    many = torch.full((4_000, 2_500), 0.5, dtype=dtype)  # 10 million elements
    assert reduce_loss(many, None, reduction).item() == 0.5
    scores, labels = torch.full((1000, 100), -3.0, dtype=dtype), torch.ones(1000, 100, dtype=torch.long)
    assert multilabel_hinge_loss(scores, labels, reduction=reduction).item() == 4.0
    expected = sigmoid_cross_entropy(scores.float(), labels, reduction=reduction)
    torch.testing.assert_close(
        sigmoid_cross_entropy(scores, labels, reduction=reduction).float(), expected, rtol=1e-2, atol=0
    )


@pytest.mark.parametrize("scale", [1e-8, 1e5])
def test_float32_weights_keep_their_range_beside_a_half_precision_loss(scale):
    """Weights of 1e-8 (0 in float16) or 1e5 (inf in float16) weigh the loss as in float32; the
    result is in the loss's dtype."""
    loss = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16, requires_grad=True)
    weight = torch.tensor([1.0, 1.0, 2.0]) * scale
    reduced = reduce_loss(loss, weight, "weighted_mean")
    assert reduced.dtype == torch.float16 and reduced.item() == 2.25
    reduced.backward()
    torch.testing.assert_close(loss.grad, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float16))
    weighted = reduce_loss(loss.detach(), weight, "none")
    assert weighted.dtype == torch.float16
    torch.testing.assert_close(weighted, (loss.detach().double() * weight.double()).to(torch.float16))


def test_adaptive_margins_stay_finite_in_half_precision():
    loss = MultiLabelHingeLoss(100, adaptive=True, momentum=0.5)
    scores, labels = torch.full((1000, 100), -100.0, dtype=torch.float16), torch.ones(1000, 100, dtype=torch.long)
    loss(scores, labels)
    assert torch.isfinite(loss.running_loss).all() and torch.isfinite(loss.margin).all()
    torch.testing.assert_close(loss.running_loss, torch.full((100,), 0.5 + 0.5 * 101))


def test_half_precision_buffers_follow_the_float32_module():
    """A module moved to float16 (``.half()``) sums a batch's hinges in float32 like the float32
    module: 20,000 hinges of 6 would overflow a float16 sum and look like an unseen label."""
    scores = torch.full((20000, 3), -5.0)
    scores[:, 1] = 5.0
    labels = torch.ones(20000, 3, dtype=torch.long)
    reference, half = MultiLabelHingeLoss(3, adaptive=True), MultiLabelHingeLoss(3, adaptive=True).half()
    reference(scores, labels)
    half(scores.half(), labels)
    torch.testing.assert_close(half.running_loss.float(), reference.running_loss, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(half.margin.float(), reference.margin, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_module_cast_to_half_precision_keeps_its_margins_in_float32(dtype):
    """A model-wide ``.to(float16)`` reaches the loss: its margins keep their values (0.3, not
    0.3008 in bfloat16) and a margin beyond float16's range stays finite."""
    scores, labels = torch.tensor([[1e4, -1e4]], dtype=dtype), torch.tensor([[1, 0]])
    wide = MultiLabelHingeLoss(2, margin=7e4, reduction="none").to(dtype)
    expected = multilabel_hinge_loss(scores, labels, 7e4, reduction="none")
    torch.testing.assert_close(wide(scores, labels), expected)
    per_label = MultiLabelHingeLoss(3, margin=[0.1, 0.3, 0.7], adaptive=True, margin_range=(0.05, 1.0)).to(dtype)
    for name in ("margin", "base_margin", "running_loss"):
        assert getattr(per_label, name).dtype == torch.float32
    assert per_label.margin.tolist() == torch.tensor([0.1, 0.3, 0.7]).tolist()
    assert per_label.double().margin.dtype == torch.float64  # a wider cast is followed


@pytest.mark.parametrize("margin", [1 / 3, [0.1, 1 / 3, 2 / 3], torch.tensor(1 / 3, dtype=torch.float64)])
def test_fixed_margins_cast_to_float64_are_the_margins_given(margin):
    """``.double()`` gives the loss the margins as given, not as float32 held them: its value equals
    the function form's in float64."""
    scores = torch.randn(4, 3, dtype=torch.float64) * 0.1
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    loss = MultiLabelHingeLoss(3, margin=margin, reduction="none")
    assert loss.margin.dtype == torch.float32
    widened = loss.float().double()
    expected = multilabel_hinge_loss(scores, labels, torch.as_tensor(margin, dtype=torch.float64), reduction="none")
    assert torch.equal(widened(scores, labels), expected)
    exact = torch.as_tensor(margin, dtype=torch.float64).expand(3)
    assert torch.equal(widened.margin, exact) and torch.equal(widened.base_margin, exact)
    assert widened.margin.data_ptr() != widened.base_margin.data_ptr()  # two buffers, not one tensor
    # Margins an adaptive loss has moved are state: a cast widens the values they reached.
    adaptive = MultiLabelHingeLoss(3, margin=margin, adaptive=True, reduction="none").train()
    assert torch.equal(adaptive.double().margin, exact)  # not moved yet
    adaptive.float()
    for _ in range(3):
        adaptive(scores.float(), labels)
    moved = adaptive.margin.clone()
    assert not torch.equal(moved.double(), exact)
    adaptive.adaptive = False  # frozen where it went
    expected = torch.where(moved == exact.float(), exact, moved.double())  # labels that did not move: exact
    assert torch.equal(adaptive.double().margin, expected) and torch.equal(adaptive.base_margin, exact)


def test_each_label_still_at_its_given_margin_is_made_exact_by_a_cast_to_float64():
    loss = MultiLabelHingeLoss(3, margin=[1 / 3, 1 / 3, 2 / 3], adaptive=True)
    with torch.no_grad():
        loss.margin[0] = 0.5  # one label moved
    loss.double()
    assert loss.margin.tolist() == [0.5, 1 / 3, 2 / 3] and loss.base_margin.tolist() == [1 / 3, 1 / 3, 2 / 3]


def test_a_widened_loss_made_adaptive_moves_its_margins_as_one_adaptive_from_the_start():
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(6, 3, generator=generator, dtype=torch.float64), torch.randint(0, 2, (6, 3), generator=generator))
        for _ in range(20)
    ]
    widened = MultiLabelHingeLoss(3, margin=0.5).double()
    widened.adaptive = True
    from_the_start = MultiLabelHingeLoss(3, margin=0.5, adaptive=True).double()
    for loss in (widened, from_the_start):
        loss.train()
        for scores, labels in batches:
            loss(scores, labels)
    torch.testing.assert_close(widened.margin, from_the_start.margin)
    assert widened.base_margin.tolist() == [0.5, 0.5, 0.5]
    widened.reset_parameters()
    assert widened.margin.tolist() == [0.5, 0.5, 0.5]


def test_adaptive_margins_learn_only_from_known_labels():
    """A label's running loss moves with the samples that know it, not with the unknown ones."""
    loss = MultiLabelHingeLoss(2, adaptive=True, momentum=0.0)
    scores = torch.tensor([[0.0, 0.0], [-9.0, 0.0]])
    labels = torch.ones(2, 2, dtype=torch.long)
    weight = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # sample 1 does not know label 0
    loss(scores, labels, weight)
    torch.testing.assert_close(loss.running_loss, torch.tensor([1.0, 1.0]))


def test_adaptive_margins_refuse_torch_func_transforms_in_training_mode():
    loss = MultiLabelHingeLoss(4, adaptive=True)
    scores, labels = torch.randn(3, 2, 4), (torch.rand(3, 2, 4) < 0.5).long()
    with pytest.raises(RuntimeError, match="call .eval\\(\\)"):
        torch.func.vmap(loss)(scores, labels)
    loss.eval()
    per_sample = torch.func.vmap(loss)(scores, labels)
    torch.testing.assert_close(per_sample, torch.stack([loss(s, y) for s, y in zip(scores, labels)]))


def test_ranking_hinge_in_half_precision_and_beside_extreme_masked_padding():
    generator = torch.Generator().manual_seed(1)
    scores, labels = torch.randn(64, 300, generator=generator), (torch.rand(64, 300, generator=generator) < 0.5).long()
    full = MultiLabelRankingHingeLoss()(scores, labels)
    for dtype in (torch.float16, torch.bfloat16):
        half = MultiLabelRankingHingeLoss()(scores.to(dtype), labels)
        assert half.dtype == dtype
        torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=0)
    mask = torch.ones(64, 300, dtype=torch.bool)
    mask[:, -10:] = False
    padded = scores.clone()
    padded[:, -10:] = torch.finfo(torch.float32).min
    padded[:, -5:] = torch.finfo(torch.float32).max
    torch.testing.assert_close(
        MultiLabelRankingHingeLoss()(padded, labels, mask), MultiLabelRankingHingeLoss()(scores, labels, mask)
    )


def test_multilabel_options_are_checked_when_built():
    with pytest.raises(TypeError, match="num_labels must be an integer, got float 2.5"):
        MultiLabelHingeLoss(2.5)
    with pytest.raises(ValueError, match="margin_range must be \\(low, high\\), got \\(0.1,\\)"):
        MultiLabelHingeLoss(3, margin_range=(0.1,))
    with pytest.raises(ValueError, match="margin must be a number or a 0-d tensor, got shape \\(2, 2\\)"):
        MultiLabelRankingHingeLoss(margin=torch.ones(2, 2))
    with pytest.raises(ValueError, match="margin must be a number or a 0-d tensor, got shape \\(4,\\)"):
        multilabel_ranking_hinge_loss(torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long), margin=torch.ones(4))


def test_adaptive_margins_of_labels_all_solved_are_the_base_margins():
    """Perfect separation: every running loss is 0, no label is harder than another."""
    loss = MultiLabelHingeLoss(3, margin=[0.5, 1.0, 1.5], adaptive=True, momentum=0.0, margin_range=(0.1, 2.0))
    loss(torch.tensor([[9.0, -9.0, 9.0]]), torch.tensor([[1, 0, 1]]))
    torch.testing.assert_close(loss.margin, torch.tensor([0.5, 1.0, 1.5]))


@pytest.mark.parametrize(
    "options,message",
    [
        ({"adaptive": "no"}, "adaptive must be True or False, got str"),
        ({"momentum": "0.5"}, "momentum must be a number"),
    ],
)
def test_adaptive_options_of_the_wrong_type_are_named(options, message):
    with pytest.raises(TypeError, match=message):
        MultiLabelHingeLoss(4, **options)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"margin_range": 5}, "margin_range must be two numbers"),
        ({"margin_range": None}, "margin_range must be two numbers"),
        ({"margin_range": ("0.1", "2")}, "margin_range must be two numbers"),
        ({"margin_range": (True, 2)}, "margin_range must be two numbers"),
        ({"margin": "1"}, "margin must be a number or 3 numbers"),
        ({"margin": None}, "margin must be a number or 3 numbers"),
        ({"margin": True}, "margin must be a number or 3 numbers"),
    ],
)
def test_margins_and_their_range_of_the_wrong_type_are_named(options, message):
    with pytest.raises(TypeError, match=message):
        MultiLabelHingeLoss(3, **options)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"momentum": 1.0}, r"^momentum must be in \[0, 1\), got 1.0$"),
        ({"margin_range": (2.0, 0.1)}, r"^margin_range must be \(low, high\) with low <= high, got \(2.0, 0.1\)$"),
    ],
)
def test_an_adaptive_setting_out_of_range_is_the_one_named(options, message):
    with pytest.raises(ValueError, match=message):
        MultiLabelHingeLoss(3, **options)


def test_the_hinge_function_names_every_form_of_margin_it_takes():
    scores, labels = torch.randn(2, 3), torch.ones(2, 3)
    with pytest.raises(
        TypeError, match=r"a number or \(C,\) per-label margins \(a tensor, a list or a NumPy array\), got str"
    ):
        multilabel_hinge_loss(scores, labels, "a")
    torch.testing.assert_close(
        multilabel_hinge_loss(scores, labels, [1.0, 2.0, 3.0]),
        multilabel_hinge_loss(scores, labels, torch.tensor([1.0, 2.0, 3.0])),
    )


def test_the_module_repr_shows_its_settings():
    assert "num_labels=3, margin=0.5, adaptive=False" in repr(MultiLabelHingeLoss(3, margin=0.5))
    adaptive = repr(MultiLabelHingeLoss(2, margin=[0.5, 1.0], adaptive=True, margin_range=(0.1, 2.0), momentum=0.8))
    assert "margin=<2 per-label margins>, adaptive=True, margin_range=(0.1, 2.0), momentum=0.8" in adaptive
    with torch.device("meta"):
        assert "margin=<on the meta device>" in repr(MultiLabelHingeLoss(3))
        assert "adaptive=True" in repr(MultiLabelHingeLoss(3, adaptive=True))


def test_a_margin_of_any_real_number_type_is_taken():
    from fractions import Fraction

    import numpy as np

    scores, labels = torch.zeros(1, 2), torch.ones(1, 2)
    assert multilabel_hinge_loss(scores, labels, Fraction(1, 2)).item() == 0.5
    for margin in (Fraction(1, 2), [Fraction(1, 2), 0.5], (np.float32(0.5), Fraction(1, 2))):
        assert multilabel_hinge_loss(scores, labels, margin).item() == 0.5
        assert MultiLabelHingeLoss(2, margin=margin)(scores, labels).item() == 0.5
    scores, labels = torch.tensor([[1.0, 0.75, 0.0]]), torch.tensor([[1, 0, 0]])
    for loss in (pairwise_margin_ranking_loss, multilabel_ranking_hinge_loss):
        expected = loss(scores, labels, margin=0.5)  # pairs: 0.25 and 0
        assert expected.item() > 0
        for margin in (Fraction(1, 2), np.float32(0.5), np.float64(0.5)):
            torch.testing.assert_close(loss(scores, labels, margin=margin), expected, rtol=0, atol=0)


def test_weighted_mean_of_weights_summing_past_the_float32_range():
    """Weights of 1e38 sum past float32's largest value; the weighted mean is a ratio and stays exact."""
    loss = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    weight = torch.tensor([1.0, 1.0, 2.0]) * 1e38
    reduced = reduce_loss(loss, weight, "weighted_mean")
    assert reduced.item() == 2.25
    reduced.backward()
    torch.testing.assert_close(loss.grad, torch.tensor([0.25, 0.25, 0.5]))
    subnormal = reduce_loss(loss.detach(), torch.tensor([1.0, 1.0, 2.0]) * 1e-44, "weighted_mean")
    torch.testing.assert_close(subnormal, torch.tensor(2.25))


@pytest.mark.parametrize("loss", [torch.tensor([1, 2, 3]), torch.tensor([True, False]), [1.0, 2.0]])
def test_reducers_refuse_a_loss_that_is_not_a_floating_point_tensor(loss):
    with pytest.raises(TypeError, match="loss must be a floating-point tensor"):
        reduce_loss(loss)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_complex_weights_are_refused_by_name(reduction):
    with pytest.raises(TypeError, match="weight must be real.*complex64"):
        reduce_loss(torch.ones(3), torch.ones(3, dtype=torch.complex64), reduction)


@pytest.mark.parametrize("reduction", [["sum"], 3, None])
def test_a_reduction_of_the_wrong_type_is_named(reduction):
    with pytest.raises(TypeError, match="reduction must be one of"):
        reduce_loss(torch.ones(3), reduction=reduction)


@pytest.mark.parametrize("margin", [torch.tensor(True), torch.tensor(1 + 0j)])
def test_a_margin_tensor_of_bools_or_complex_numbers_is_named(margin):
    scores, labels = torch.randn(2, 4), torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])
    with pytest.raises(TypeError, match="margin must be a real number"):
        pairwise_margin_ranking_loss(scores, labels, margin=margin)
    with pytest.raises(TypeError, match="margin must be a real number"):
        multilabel_hinge_loss(scores, labels, margin=margin)


def test_an_adaptive_base_margin_outside_margin_range_is_refused_when_built():
    with pytest.raises(ValueError, match=r"margin \[5.0\] lies outside margin_range \(0.1, 2.0\)"):
        MultiLabelHingeLoss(3, margin=5.0, adaptive=True)
    with pytest.raises(ValueError, match="outside margin_range"):
        MultiLabelHingeLoss(3, margin=[0.5, 1.0, 0.01], adaptive=True)
    fixed = MultiLabelHingeLoss(3, margin=5.0)  # margins that never adapt are not clipped
    torch.testing.assert_close(fixed.margin, torch.full((3,), 5.0))
    MultiLabelHingeLoss(3, margin=5.0, adaptive=True, margin_range=(1.0, 10.0))


def test_an_adaptive_base_margin_outside_margin_range_is_refused_when_switched_on():
    loss = MultiLabelHingeLoss(3, margin=5.0)
    with pytest.raises(ValueError, match=r"margin \[5.0\] lies outside margin_range \(0.1, 2.0\)"):
        loss.adaptive = True
    assert not loss.adaptive
    torch.testing.assert_close(loss(torch.zeros(4, 3), torch.ones(4, 3, dtype=torch.long)), torch.tensor(5.0))
    loss.margin_range = (1.0, 10.0)
    loss.adaptive = True
    with pytest.raises(ValueError, match=r"margin \[5.0\] lies outside margin_range \(6.0, 7.0\)"):
        loss.margin_range = (6.0, 7.0)
    with pytest.raises(ValueError, match=r"margin_range must be \(low, high\) with low <= high, got \(3.0, 0.5\)"):
        loss.margin_range = (3.0, 0.5)
    assert loss.margin_range == (1.0, 10.0)
    with torch.device("meta"):  # buffers without values: the margins given are checked
        with pytest.raises(ValueError, match=r"margin \[5.0\] lies outside margin_range"):
            MultiLabelHingeLoss(3, margin=5.0, adaptive=True)
        MultiLabelHingeLoss(3, margin=5.0, adaptive=True, margin_range=(1.0, 10.0))


def test_multilabel_hinge_is_in_the_scores_dtype_whatever_the_margins_dtype():
    scores, labels = torch.randn(4, 3), torch.randint(0, 2, (4, 3))
    margin = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    for reduction in ("none", "mean"):
        loss = multilabel_hinge_loss(scores, labels, margin=margin, reduction=reduction)
        assert loss.dtype == torch.float32
        expected = multilabel_hinge_loss(scores.double(), labels, margin=margin, reduction=reduction)
        torch.testing.assert_close(loss, expected.float())


@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_an_element_of_weight_zero_is_left_out_even_when_not_finite(reduction, bad):
    loss = torch.tensor([1.0, bad, 3.0])
    weight = torch.tensor([1.0, 0.0, 2.0])
    finite = torch.tensor([1.0, 0.0, 3.0])  # the same reduction where the masked element is finite
    torch.testing.assert_close(reduce_loss(loss, weight, reduction), reduce_loss(finite, weight, reduction))
    # The documented way to keep gradients finite too: mask the input before the loss.
    inputs = torch.tensor([1.0, 0.0, 2.0], requires_grad=True)
    value = reduce_loss(-torch.log(torch.where(weight != 0, inputs, 1.0)), weight, reduction)
    value.sum().backward()
    assert torch.isfinite(inputs.grad).all() and inputs.grad[1] == 0


@pytest.mark.parametrize("reduction", ["weighted_mean", "nonzero_weighted_mean", "sum"])
def test_a_sample_whose_mask_hides_every_label_is_left_out(reduction):
    torch.manual_seed(0)
    scores, labels = torch.randn(4, 5), (torch.rand(4, 5) < 0.5).long()
    labels[:, 0], labels[:, 1] = 1, 0  # every sample has a pair
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2] = False
    kept = [0, 1, 3]
    expected = multilabel_ranking_hinge_loss(scores[kept], labels[kept], mask[kept], reduction=reduction)
    torch.testing.assert_close(multilabel_ranking_hinge_loss(scores, labels, mask, reduction=reduction), expected)
    weight = torch.tensor([1.0, 2.0, 5.0, 0.5])
    torch.testing.assert_close(
        multilabel_ranking_hinge_loss(scores, labels, mask, weight=weight, reduction=reduction),
        multilabel_ranking_hinge_loss(scores[kept], labels[kept], mask[kept], weight=weight[kept], reduction=reduction),
    )
    for broadcast in (torch.tensor(1.0), torch.ones(1)):  # weights that broadcast to (B,)
        torch.testing.assert_close(
            multilabel_ranking_hinge_loss(scores, labels, mask, weight=broadcast, reduction=reduction), expected
        )


@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
def test_a_learnable_weight_at_zero_keeps_its_gradient(reduction):
    loss = torch.tensor([2.0, 3.0, 4.0])
    weight = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    reduce_loss(loss, weight, reduction).sum().backward()
    reference_weight = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    totals = {
        "none": (loss * reference_weight).sum(),
        "sum": (loss * reference_weight).sum(),
        "mean": (loss * reference_weight).sum() / 3,
        "weighted_mean": (loss * reference_weight).sum() / reference_weight.sum(),
        "nonzero_weighted_mean": (loss * reference_weight).sum() / 2,
    }
    totals[reduction].backward()
    torch.testing.assert_close(weight.grad, reference_weight.grad)
    assert weight.grad[0] != 0


@pytest.mark.parametrize(
    "make",
    [
        lambda margin: PairwiseMarginRankingLoss(margin=margin),
        lambda margin: MultiLabelHingeLoss(3, margin=margin),
        lambda margin: HardNegativeRankLoss(margin=margin),
        lambda margin: MultiLabelRankingHingeLoss(margin=margin),
        lambda margin: MultiLabelHingeLoss(2, margin=[margin, torch.tensor(1.0)]),
        lambda margin: SpearmanLoss(sorter=PairwiseSigmoidSorter(0.1), l1_weight=margin),
    ],
    ids=["pairwise", "multilabel_hinge", "hard_negative", "multilabel_ranking", "per_label_list", "l1_weight"],
)
def test_loss_modules_refuse_a_margin_that_requires_grad(make):
    # A module keeps its margin as a number or a buffer: a learnable one would silently stop learning.
    with pytest.raises(TypeError, match="requires grad would be detached.*in your forward"):
        make(torch.tensor(1.0, requires_grad=True))
    make(torch.tensor(1.0))  # a plain tensor is a number


def test_adaptive_margins_refuse_a_learnable_margin_without_pointing_at_the_function_form():
    # The function form has no adaptive margins: the advice is to pass plain numbers.
    with pytest.raises(TypeError, match="requires grad would be detached: pass numbers") as refused:
        MultiLabelHingeLoss(3, margin=torch.ones(3, requires_grad=True), adaptive=True)
    assert "multilabel_hinge_loss(" not in str(refused.value)


def test_the_function_forms_train_a_margin():
    # d(mean hinge)/d(margin) is the share of active hinges: here 2 of the 3 pairs.
    margin = torch.tensor(0.5, requires_grad=True)
    scores, labels = torch.tensor([[2.0, 1.8, 0.0, 3.0]]), torch.tensor([[1, 0, 0, 0]])
    pairwise_margin_ranking_loss(scores, labels, margin=margin).backward()
    reference_margin = torch.tensor(0.5, requires_grad=True)
    pairs = [torch.clamp(reference_margin - (scores[0, 0] - negative), min=0) for negative in scores[0, 1:]]
    (sum(pairs) / len(pairs)).backward()
    assert margin.grad is not None and torch.allclose(margin.grad, reference_margin.grad)
    per_label = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    multilabel_hinge_loss(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long), margin=per_label).backward()
    assert torch.allclose(per_label.grad, torch.full((3,), 1 / 3))
    # Per-label margins as a list of learnable tensors (and a number) keep their graph too.
    listed = [torch.tensor(0.5, requires_grad=True), torch.tensor(1.0, dtype=torch.float64, requires_grad=True)]
    multilabel_hinge_loss(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.long), margin=[*listed, 2.0]).backward()
    assert [float(margin.grad) for margin in listed] == pytest.approx([1 / 3, 1 / 3])


def test_a_ranking_hinge_weight_of_the_wrong_shape_is_named_with_a_mask_as_without():
    scores, labels = torch.randn(4, 6), torch.tensor([[1, 0, 1, 0, 0, 1]] * 4)
    mask = torch.ones(4, 6, dtype=torch.bool)
    for given_mask in (None, mask):
        with pytest.raises(ValueError) as raised:
            multilabel_ranking_hinge_loss(scores, labels, given_mask, weight=torch.ones(3))
        assert str(raised.value) == "weight of shape (3,) does not broadcast to the loss shape (4,)"


def test_a_weight_per_sample_of_a_per_label_loss_is_shown_how_it_lines_up():
    scores, labels = torch.randn(3, 4), torch.tensor([[1, 0, 1, 0]] * 3)
    with pytest.raises(ValueError) as raised:
        multilabel_hinge_loss(scores, labels, weight=torch.ones(3))
    assert str(raised.value) == (
        "weight of shape (3,) does not broadcast to the loss shape (3, 4): a weight per sample is weight[:, None], "
        "shape (3, 1)"
    )
    per_sample = torch.tensor([1.0, 0.0, 2.0])
    expected = (multilabel_hinge_loss(scores, labels, reduction="none") * per_sample[:, None]).sum() / 12
    torch.testing.assert_close(multilabel_hinge_loss(scores, labels, weight=per_sample[:, None]), expected)
    # The ranking hinge has one value per sample: the (B, 1) weight of the per-label loss is named.
    with pytest.raises(ValueError) as raised:
        multilabel_ranking_hinge_loss(scores, labels, weight=per_sample[:, None])
    assert str(raised.value) == (
        "weight of shape (3, 1) would enlarge the loss of shape (3,) to (3, 3): this loss has one value per "
        "sample, so a weight per sample has shape (3,)"
    )
    with pytest.raises(ValueError) as raised:  # a weight per label
        multilabel_ranking_hinge_loss(scores, labels, weight=torch.ones(3, 4))
    assert str(raised.value) == (
        "weight of shape (3, 4) does not broadcast to the loss shape (3,): this loss has one value per sample, so "
        "a weight per sample has shape (3,)"
    )


def test_fixed_margins_are_settings_kept_through_loading_a_checkpoint():
    """Only adaptive margins are state: a model fine-tuned with a new fixed margin keeps it when a
    checkpoint (new or saved with its margins) is loaded, and a backbone-only checkpoint loads."""
    built = MultiLabelHingeLoss(3, margin=0.2)
    assert set(built.state_dict()) == set()
    checkpoint = {"base_margin": torch.ones(3), "margin": torch.ones(3), "running_loss": torch.ones(3)}
    built.load_state_dict(checkpoint)  # strict: the stale keys of a fixed-margin checkpoint are not an error
    torch.testing.assert_close(built.margin, torch.full((3,), 0.2))
    built.load_state_dict(MultiLabelHingeLoss(3, margin=1.0).state_dict())
    torch.testing.assert_close(built.margin, torch.full((3,), 0.2))
    built.reset_parameters()
    torch.testing.assert_close(built.base_margin, built.margin)
    # Adaptive margins are state and travel with the checkpoint.
    adaptive = MultiLabelHingeLoss(3, margin=0.5, adaptive=True)
    adaptive(torch.randn(8, 3), (torch.rand(8, 3) < 0.5).long())
    restored = MultiLabelHingeLoss(3, margin=0.5, adaptive=True)
    restored.load_state_dict(adaptive.state_dict())
    assert set(restored.state_dict()) == {"base_margin", "margin", "running_loss"}
    torch.testing.assert_close(restored.margin, adaptive.margin)
    assert not torch.equal(restored.margin, torch.full((3,), 0.5))


def test_fixed_margins_come_back_when_a_model_built_on_the_meta_device_is_given_memory():
    """The usual flow: build on meta, to_empty, load_state_dict (which holds no fixed margins)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 4)
            self.loss = MultiLabelHingeLoss(4, margin=[0.5, 1.0, 1.5, 2.0])

    checkpoint = Net().state_dict()
    with torch.device("meta"):
        model = Net()
    model.to_empty(device="cpu")
    model.load_state_dict(checkpoint)
    torch.testing.assert_close(model.loss.margin, torch.tensor([0.5, 1.0, 1.5, 2.0]))
    torch.testing.assert_close(model.loss.running_loss, torch.ones(4))
    moved = MultiLabelHingeLoss(4, margin=0.5).to("meta").to_empty(device="cpu")
    torch.testing.assert_close(moved.margin, torch.full((4,), 0.5))


def test_switching_adaptive_after_building_switches_what_state_dict_saves():
    loss = MultiLabelHingeLoss(3, margin=0.5)
    loss.adaptive = True
    loss(torch.randn(8, 3), (torch.rand(8, 3) < 0.5).long())
    assert set(loss.state_dict()) == {"base_margin", "margin", "running_loss"}
    restored = MultiLabelHingeLoss(3, margin=0.5, adaptive=True)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.margin, loss.margin)
    loss.adaptive = False
    assert set(loss.state_dict()) == set()
    loss.load_state_dict(loss.state_dict())  # strict, on its own state
    with pytest.raises(TypeError, match="adaptive must be True or False"):
        loss.adaptive = 1


def test_fixed_margins_left_on_meta_by_an_assign_load_are_told_to_empty_which_works():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 3)
            self.loss = MultiLabelHingeLoss(3, margin=[0.5, 1.0, 1.5])

    checkpoint = Net().state_dict()
    with torch.device("meta"):
        model = Net()
    model.load_state_dict(checkpoint, assign=True)  # fixed margins are not in it: still on meta
    scores, labels = torch.randn(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"margins are on the meta device.*loss.to_empty\(device='cpu'\)$"):
        model.loss(scores, labels)
    model.loss.to_empty(device="cpu")
    torch.testing.assert_close(model.loss.margin, torch.tensor([0.5, 1.0, 1.5]))
    torch.testing.assert_close(model.head.weight, checkpoint["head.weight"])  # the assigned weights stay


def test_margins_given_on_the_meta_device_refuse_to_be_used_after_to_empty():
    loss = MultiLabelHingeLoss(3, margin=torch.ones(3, device="meta"))
    loss.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="margins were given as a tensor on the meta device"):
        loss(torch.randn(2, 3), torch.ones(2, 3))
    # An adaptive loss gets them from its state.
    adaptive = MultiLabelHingeLoss(3, margin=torch.ones(3, device="meta"), adaptive=True)
    adaptive.to_empty(device="cpu")
    adaptive.load_state_dict(MultiLabelHingeLoss(3, margin=0.5, adaptive=True).state_dict())
    torch.testing.assert_close(adaptive.margin, torch.full((3,), 0.5))
    assert torch.isfinite(adaptive(torch.randn(2, 3), torch.ones(2, 3)))


@pytest.mark.parametrize("margin", ["np.float64(0.3)", "np.float32(0.3)", "np.int64(1)", "np.array(0.3)"])
def test_multilabel_hinge_takes_a_numpy_scalar_margin_as_a_number(margin):
    import numpy as np

    scores, labels = torch.tensor([[2.0, -0.5], [0.1, 0.4]]), torch.tensor([[1, 0], [0, 1]])
    value = eval(margin, {"np": np})
    expected = torch.clamp(float(value) - (2 * labels - 1) * scores, min=0)
    torch.testing.assert_close(multilabel_hinge_loss(scores, labels, value, reduction="none"), expected)
    torch.testing.assert_close(MultiLabelHingeLoss(2, margin=value)(scores, labels), expected.mean())


def test_multilabel_hinge_module_takes_a_margin_beyond_half_precision_as_the_function_does():
    """A margin of 1e5 is finite however the scores are stored: the module gives what the function
    gives (hinges of 1e5 are inf in float16), not an error that blames the margin."""
    scores, labels = torch.zeros(2, 2, dtype=torch.float16), torch.tensor([[1, 0], [0, 1]])
    module = MultiLabelHingeLoss(2, margin=1e5)(scores, labels)
    function = multilabel_hinge_loss(scores, labels, 1e5)
    assert module.dtype == function.dtype == torch.float16
    torch.testing.assert_close(module, function)
    small = torch.tensor([[0.5, -0.25]], dtype=torch.bfloat16), torch.tensor([[1, 0]])
    torch.testing.assert_close(
        MultiLabelHingeLoss(2, margin=[0.3, 0.7])(*small), multilabel_hinge_loss(*small, [0.3, 0.7])
    )


@pytest.mark.parametrize("margin", [0.7, 7e4])
def test_multilabel_hinge_rounds_once_whatever_the_margins_form(margin):
    """A number, a list, a tensor or the module's buffer: each hinge computed in float32 and
    rounded once to half precision, the correctly rounded value of the exact hinge."""
    generator = torch.Generator().manual_seed(0)
    scores = (torch.randn(256, 5, generator=generator) * 3).half()
    scores[0, 0] = 1e4
    labels = torch.randint(0, 2, (256, 5), generator=generator)
    exact = torch.clamp(margin - (2 * labels.double() - 1) * scores.double(), min=0).half()
    forms = [margin, [margin] * 5, torch.full((5,), margin)]
    for form in forms:
        torch.testing.assert_close(multilabel_hinge_loss(scores, labels, form, reduction="none"), exact, rtol=0, atol=0)
    module = MultiLabelHingeLoss(5, margin=margin, reduction="none")
    torch.testing.assert_close(module(scores, labels), exact, rtol=0, atol=0)


@pytest.mark.parametrize(
    "margin", ["np.bool_(True)", "np.array([True, True])", "[np.True_, False]", "np.complex128(1)"]
)
def test_multilabel_hinge_module_refuses_margins_the_function_refuses(margin):
    import numpy as np

    value = eval(margin, {"np": np})
    with pytest.raises(TypeError, match="margin must be"):
        MultiLabelHingeLoss(2, margin=value)
    with pytest.raises(TypeError, match="margin must be"):
        multilabel_hinge_loss(torch.zeros(1, 2), torch.tensor([[1, 0]]), value)


def test_per_sample_gradients_of_the_unreduced_pairwise_loss_need_no_slow_fallback():
    """Under vmap every operation of the unreduced path has a batching rule (PyTorch warns of a
    slow fallback otherwise), and the gradients equal those of one sample at a time."""
    import warnings

    from torch.func import grad, vmap

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 3, 6, generator=generator)
    labels = (torch.rand(4, 3, 6, generator=generator) < 0.5).long()
    mask = torch.rand(4, 3, 6, generator=generator) < 0.8

    def total(s, y, m):
        return pairwise_margin_ranking_loss(s, y, m, margin=0.5, hard_negatives=2, reduction="none").sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_sample = vmap(grad(total))(scores, labels, mask)
    expected = torch.stack([grad(total)(s, y, m) for s, y, m in zip(scores, labels, mask)])
    torch.testing.assert_close(per_sample, expected)


def test_the_per_sample_hint_names_only_losses_of_one_value_per_sample():
    with pytest.raises(ValueError) as raised:  # one value per sample and label: no such hint
        reduce_loss(torch.ones(4, 3), torch.ones(4, 3, 5), "mean")
    assert str(raised.value) == "weight of shape (4, 3, 5) does not broadcast to the loss shape (4, 3)"
    with pytest.raises(ValueError) as raised:  # a weight per label where there are as many labels as samples
        reduce_loss(torch.ones(4), torch.ones(4, 4), "mean")
    assert str(raised.value).endswith("this loss has one value per sample, so a weight per sample has shape (4,)")


def _adaptive_update_on_one_of_two_processes(rank, port, scores, labels, weight, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        loss = MultiLabelHingeLoss(3, margin=1.0, adaptive=True, margin_range=(0.2, 5.0), momentum=0.5)
        rows = slice(0, 3) if rank == 0 else slice(3, None)  # uneven shares of the step's batch
        loss(scores[rows], labels[rows], weight[rows])
        torch.save({"running": loss.running_loss, "margin": loss.margin}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_adaptive_margins_under_two_processes_move_by_the_whole_steps_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(8, 3, generator=generator)
    labels = torch.randint(0, 2, (8, 3), generator=generator)
    weight = (torch.rand(8, 3, generator=generator) > 0.3).float()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_adaptive_update_on_one_of_two_processes, args=(port, scores, labels, weight, str(tmp_path)), nprocs=2)
    single = MultiLabelHingeLoss(3, margin=1.0, adaptive=True, margin_range=(0.2, 5.0), momentum=0.5)
    single(scores, labels, weight)  # one process, the whole batch
    for rank in (0, 1):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(state["running"], single.running_loss)
        torch.testing.assert_close(state["margin"], single.margin)
