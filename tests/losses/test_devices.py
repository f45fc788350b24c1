"""Tensors on different devices are named in one line, like shapes, rather than failing inside
PyTorch ("Tensor on device cpu is not on the expected device meta!").  The meta device stands in
for an accelerator here; a 0-d weight may stay on the CPU, as PyTorch allows for scalars."""

import pytest
import torch

from sodeep import rank
from sodeep.losses import (
    HardNegativeRankLoss,
    MapRankLoss,
    MultiLabelHingeLoss,
    RecallRankLoss,
    SpearmanLoss,
    age_difference_loss,
    hard_negative_rank_loss,
    map_rank_loss,
    multilabel_hinge_loss,
    pairwise_margin_ranking_loss,
    sigmoid_cross_entropy,
    spearman_loss,
)
from sodeep.reducers import reduce_loss


def _meta(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to("meta")


SCORES, LABELS = torch.randn(3, 5), (torch.arange(15).reshape(3, 5) % 2)


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda: spearman_loss(SCORES, _meta(SCORES), rank), "predictions and targets must be on the same device"),
        (lambda: map_rank_loss(SCORES, _meta(LABELS), rank), "scores and labels must be on the same device"),
        (
            lambda: pairwise_margin_ranking_loss(SCORES, _meta(LABELS)),
            "scores and labels must be on the same device, got cpu and meta",
        ),
        (
            lambda: pairwise_margin_ranking_loss(SCORES, LABELS, _meta(torch.ones_like(LABELS))),
            "labels and mask must be on the same device, got cpu and meta",
        ),
        (lambda: multilabel_hinge_loss(SCORES, _meta(LABELS)), "scores and labels must be on the same device"),
        (
            lambda: multilabel_hinge_loss(SCORES, LABELS, weight=_meta(torch.ones(3, 5))),
            "weight must be on the loss's device, cpu, got meta",
        ),
        (
            lambda: age_difference_loss(SCORES[0], _meta(SCORES[0])),
            "predictions and targets must be on the same device",
        ),
        (lambda: sigmoid_cross_entropy(SCORES, _meta(LABELS.float())), "logits and labels must be on the same device"),
        (lambda: reduce_loss(SCORES, _meta(torch.ones(5)), "weighted_mean"), "weight must be on the loss's device"),
    ],
)
def test_tensors_on_different_devices_are_named(call, words):
    with pytest.raises(ValueError, match="^[^\n]*$") as error:
        call()
    assert words in str(error.value)


def test_a_0d_weight_on_the_cpu_is_accepted_as_pytorch_accepts_it():
    loss = torch.randn(3, 5).to("meta")
    assert reduce_loss(loss, torch.tensor(2.0), "weighted_mean").device.type == "meta"
    with pytest.raises(ValueError, match="^weight must be on the loss's device, cpu, got meta$"):
        reduce_loss(torch.randn(3, 5), torch.tensor(2.0).to("meta"), "weighted_mean")


@pytest.mark.parametrize("loss", [SpearmanLoss, MapRankLoss, RecallRankLoss, HardNegativeRankLoss])
def test_a_loss_left_on_another_device_than_its_scores_says_to_move_it(loss):
    """The usual slip: the model moved to the accelerator, the loss (and its sorter) left behind."""
    with pytest.raises(ValueError, match=r"^the loss's sorter is on cpu and the scores on meta: .*loss.to\('meta'\)$"):
        loss()(*(tensor.to("meta") for tensor in _INPUTS[loss]))
    moved = loss().to("meta")
    assert moved(*(tensor.to("meta") for tensor in _INPUTS[loss])).device.type == "meta"


_INPUTS = {
    SpearmanLoss: (torch.randn(8), torch.randn(8)),
    MapRankLoss: (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.long)),
    RecallRankLoss: (torch.randn(4, 4),),
    HardNegativeRankLoss: (torch.randn(4, 4),),
}


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: multilabel_hinge_loss(SCORES, LABELS, margin=_meta(torch.ones(5))), "margin"),
        (lambda: pairwise_margin_ranking_loss(SCORES, LABELS, margin=_meta(torch.tensor(0.5))), "margin"),
        (lambda: hard_negative_rank_loss(torch.randn(4, 4), rank, margin=_meta(torch.tensor(0.1))), "margin"),
        (lambda: spearman_loss(SCORES, SCORES, rank, l1_weight=_meta(torch.tensor(1.0))), "l1_weight"),
    ],
)
def test_a_tensor_setting_on_another_device_is_named(call, name):
    with pytest.raises(ValueError, match=rf"^{name} is on meta, the scores on cpu: move it .* with \.to\('cpu'\)$"):
        call()


def test_a_hinge_loss_on_another_device_than_the_scores_is_told_to_move():
    with pytest.raises(ValueError, match=r"^margin is on cpu, the scores on meta: move it .* with \.to\('meta'\)$"):
        MultiLabelHingeLoss(5)(_meta(SCORES), _meta(LABELS))
    # On the meta device its margins hold no values: to_empty, not .to (test_margin_losses).
    with pytest.raises(ValueError, match=r"loss.to_empty\(device='cpu'\)$"):
        MultiLabelHingeLoss(5).to("meta")(SCORES, LABELS)


def test_a_zero_dimensional_cpu_setting_is_taken_as_a_number():
    margin = torch.tensor(0.5)
    assert pairwise_margin_ranking_loss(SCORES, LABELS, margin=margin) == pairwise_margin_ranking_loss(
        SCORES, LABELS, margin=0.5
    )


@pytest.mark.parametrize("margin", [[0.5, 1.0, 2.0, 1.0, 0.1], (0.5, 1.0, 2.0, 1.0, 0.1)])
def test_per_label_margins_may_be_a_list_as_in_the_module(margin):
    import numpy as np

    expected = multilabel_hinge_loss(SCORES, LABELS, margin=torch.tensor(margin))
    torch.testing.assert_close(multilabel_hinge_loss(SCORES, LABELS, margin=margin), expected)
    torch.testing.assert_close(multilabel_hinge_loss(SCORES, LABELS, margin=np.array(margin)), expected)
    torch.testing.assert_close(MultiLabelHingeLoss(5, margin=margin)(SCORES, LABELS), expected)


@pytest.mark.parametrize(("margin", "message"), [([True] * 5, "real numbers"), (["a"] * 5, "must be numbers")])
def test_per_label_margins_must_be_real_numbers(margin, message):
    with pytest.raises(TypeError, match=message):
        multilabel_hinge_loss(SCORES, LABELS, margin=margin)


def test_per_label_margins_from_a_list_keep_their_range_beside_half_precision_scores():
    margins = [1e5, 1.0, 1.0, 1.0, 1.0]
    expected = multilabel_hinge_loss(SCORES.half(), LABELS, margin=torch.tensor(margins), reduction="none")
    torch.testing.assert_close(multilabel_hinge_loss(SCORES.half(), LABELS, margin=margins, reduction="none"), expected)


def test_a_hinge_loss_built_on_the_meta_device_gets_its_margins_back_after_to_empty():
    # The usual way to build a large model without memory: build on meta, to_empty, reset_parameters.
    with torch.device("meta"):
        loss = MultiLabelHingeLoss(3, margin=[0.5, 1.0, 1.5], adaptive=True, margin_range=(0.1, 2.0))
    assert loss.margin.is_meta and loss.running_loss.is_meta
    loss.to_empty(device="cpu")
    loss.reset_parameters()
    reference = MultiLabelHingeLoss(3, margin=[0.5, 1.0, 1.5], adaptive=True, margin_range=(0.1, 2.0))
    torch.testing.assert_close(loss.state_dict(), reference.state_dict())
    scores, labels = torch.randn(4, 3), torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    torch.testing.assert_close(loss(scores, labels), reference(scores, labels))
    torch.testing.assert_close(loss.margin, reference.margin)  # the adaptive update moved both alike
    # A margin given as a meta tensor has no values to go back to: said, not filled with garbage.
    loss = MultiLabelHingeLoss(3, margin=torch.ones(3, device="meta")).to_empty(device="cpu")
    with pytest.raises(RuntimeError, match="margin as a tensor on the meta device, which holds no values"):
        loss.reset_parameters()
