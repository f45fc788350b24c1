"""Every library loss traces into one graph: ``torch.compile(loss, fullgraph=True)`` works, with
no host synchronisation in its checks, and matches eager in value and gradient."""

import pytest
import torch

from sodeep.losses import (
    AgeDifferenceLoss,
    HardNegativeRankLoss,
    MapRankLoss,
    MultiLabelHingeLoss,
    MultiLabelRankingHingeLoss,
    PairwiseMarginRankingLoss,
    RecallRankLoss,
    SpearmanLoss,
    sigmoid_cross_entropy,
)
from sodeep.reducers import REDUCTIONS, reduce_loss

BATCH, WIDTH = 4, 6
#: Graph capture and autograd without code generation: a graph break or a host synchronisation
#: fails the same way, in a fraction of Inductor's compile time (SpearmanLoss and the sorter are
#: also compiled with Inductor in their own tests).
BACKEND = "aot_eager"


def binary(*shape):
    return (torch.rand(*shape) < 0.5).long()


CASES = {
    "spearman": lambda: (SpearmanLoss(l1_weight=0.1), torch.randn(BATCH, WIDTH), (torch.randn(BATCH, WIDTH),)),
    "map": lambda: (MapRankLoss(), torch.randn(BATCH, WIDTH), (binary(BATCH, WIDTH),)),
    "recall": lambda: (RecallRankLoss(), torch.randn(WIDTH, WIDTH), ()),
    "hard_negative_rank": lambda: (HardNegativeRankLoss(), torch.randn(WIDTH, WIDTH), ()),
    "age_difference": lambda: (AgeDifferenceLoss(), torch.randn(WIDTH), (torch.randn(WIDTH),)),
    "multilabel_hinge_weighted": lambda: (
        MultiLabelHingeLoss(WIDTH, margin=torch.linspace(0.5, 1.5, WIDTH).tolist()),
        torch.randn(BATCH, WIDTH),
        (binary(BATCH, WIDTH), binary(BATCH, WIDTH).float()),
    ),
    "multilabel_hinge_adaptive": lambda: (
        MultiLabelHingeLoss(WIDTH, adaptive=True),
        torch.randn(BATCH, WIDTH),
        (binary(BATCH, WIDTH),),
    ),
    "multilabel_ranking_hinge_masked": lambda: (
        MultiLabelRankingHingeLoss(),
        torch.randn(BATCH, WIDTH),
        (binary(BATCH, WIDTH), binary(BATCH, WIDTH)),
    ),
    "pairwise_margin": lambda: (
        PairwiseMarginRankingLoss(),
        torch.randn(BATCH, WIDTH),
        (binary(BATCH, WIDTH), binary(BATCH, WIDTH)),
    ),
    "pairwise_margin_hard_negatives": lambda: (
        PairwiseMarginRankingLoss(hard_negatives=2),
        torch.randn(BATCH, WIDTH),
        (binary(BATCH, WIDTH),),
    ),
    "pairwise_margin_pairs": lambda: (
        PairwiseMarginRankingLoss(reduction="none"),
        torch.randn(BATCH, WIDTH),
        (binary(BATCH, WIDTH),),
    ),
    "sigmoid_cross_entropy": lambda: (
        sigmoid_cross_entropy,
        torch.randn(BATCH, WIDTH),
        (torch.rand(BATCH, WIDTH), binary(BATCH, WIDTH).float()),
    ),
}


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_compiles_with_fullgraph_and_matches_eager(case, dynamic):
    """Static shapes (a first compile) and symbolic ones (what a changed shape recompiles to)."""
    torch.manual_seed(0)
    loss, inputs, others = CASES[case]()
    eager_inputs, compiled_inputs = inputs.clone().requires_grad_(), inputs.clone().requires_grad_()
    expected = loss(eager_inputs, *others)
    if isinstance(loss, torch.nn.Module):
        loss.load_state_dict(loss.state_dict())  # adaptive margins: the compiled call starts where eager did
    torch._dynamo.reset()
    got = torch.compile(loss, fullgraph=True, dynamic=dynamic, backend=BACKEND)(compiled_inputs, *others)
    if case == "multilabel_hinge_adaptive":
        assert loss.margin.ne(1.0).any()  # the buffers moved inside the compiled call as well
        return
    torch.testing.assert_close(got, expected)
    expected.sum().backward()
    got.sum().backward()
    torch.testing.assert_close(compiled_inputs.grad, eager_inputs.grad)


@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
def test_reductions_compile_with_fullgraph(reduction):
    loss, weight = torch.rand(BATCH, WIDTH), torch.rand(BATCH, 1)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda values, weights: reduce_loss(values, weights, reduction), fullgraph=True, backend=BACKEND
    )
    torch.testing.assert_close(compiled(loss, weight), reduce_loss(loss, weight, reduction))


def test_compiled_checks_still_refuse_bad_values():
    """Inside a compiled graph a value check is an asynchronous assertion: on the CPU it fails
    in the call itself."""
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda values, weights: reduce_loss(values, weights, "weighted_mean"), fullgraph=True, backend=BACKEND
    )
    with pytest.raises(RuntimeError, match="weight must be finite and non-negative"):
        compiled(torch.rand(BATCH, WIDTH), -torch.ones(BATCH, 1))
    torch._dynamo.reset()
    margin = torch.compile(PairwiseMarginRankingLoss(), fullgraph=True, backend=BACKEND)
    with pytest.raises(RuntimeError, match="labels must contain only 0 and 1"):
        margin(torch.randn(BATCH, WIDTH), torch.full((BATCH, WIDTH), 2))


def test_compiled_functional_losses_check_the_numbers_they_are_given():
    """Under compile a float argument becomes symbolic once it changes: the checks still refuse
    a negative weight or a non-finite margin (an asynchronous assertion, a RuntimeError)."""
    from sodeep import rank
    from sodeep.losses import multilabel_hinge_loss, pairwise_margin_ranking_loss, spearman_loss

    spearman = torch.compile(lambda p, t, w: spearman_loss(p, t, rank, l1_weight=w), fullgraph=True, backend=BACKEND)
    pairwise = torch.compile(
        lambda s, y, m: pairwise_margin_ranking_loss(s, y, margin=m), fullgraph=True, backend=BACKEND
    )
    hinge = torch.compile(lambda s, y, m: multilabel_hinge_loss(s, y, m), fullgraph=True, backend=BACKEND)
    scores, labels = torch.randn(BATCH, WIDTH), binary(BATCH, WIDTH)
    for weight in (0.5, 0.7):  # the second value makes the weight symbolic
        torch.testing.assert_close(
            spearman(scores[0], scores[1], weight), spearman_loss(scores[0], scores[1], rank, l1_weight=weight)
        )
    with pytest.raises(RuntimeError, match="l1_weight must be a finite number >= 0"):
        spearman(scores[0], scores[1], -0.3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(RuntimeError, match="l1_weight must be a finite number >= 0"):
            spearman(scores[0], scores[1], bad)
    for margin in (1.0, 0.5):
        pairwise(scores, labels, margin), hinge(scores, labels, margin)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(RuntimeError, match="margin must be finite"):
            pairwise(scores, labels, bad)
        with pytest.raises(RuntimeError, match="margin must be finite"):
            hinge(scores, labels, bad)


@pytest.mark.parametrize(
    "case", ["spearman", "pairwise_margin", "multilabel_ranking_hinge_masked", "multilabel_hinge_weighted"]
)
def test_compiled_per_sample_gradients_equal_eager(case):
    """``torch.compile(vmap(grad(loss)))``: value checks, which have no batching rule as
    assertions, are left out of compiled code inside a transform instead of failing its trace."""
    from torch.func import grad, vmap

    torch.manual_seed(0)
    loss, inputs, others = CASES[case]()
    per_sample = vmap(grad(lambda scores, *rest: loss(scores.unsqueeze(0), *(r.unsqueeze(0) for r in rest))))
    expected = per_sample(inputs, *others)
    torch._dynamo.reset()
    got = torch.compile(per_sample, fullgraph=True, backend=BACKEND)(inputs, *others)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: torch.compile(
                lambda values, weights: reduce_loss(values, weights, "weighted_mean"), fullgraph=True, backend=BACKEND
            )(torch.rand(2, 3), torch.ones(3, 2)),
            "weight of shape (3, 2) does not broadcast to the loss shape (2, 3)",
        ),
        (
            lambda: torch.compile(MultiLabelHingeLoss(3), fullgraph=True, backend=BACKEND)(
                torch.rand(2, 3), binary(2, 3), torch.ones(2)
            ),
            "a weight per sample is weight[:, None], shape (2, 1)",
        ),
    ],
)
def test_a_compiled_loss_refuses_a_weight_that_does_not_broadcast_with_its_own_message(call, message):
    """Refused while tracing, as every shape a loss refuses: sodeep's message is in the error."""
    torch._dynamo.reset()
    with pytest.raises(Exception) as raised:  # noqa: PT011 (torch.compile's own exception type)
        call()
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("loss_shape", "weight_shape", "message"),
    [((5,), (2, 5), "would enlarge the loss of shape"), ((5,), (5, 3), "so a weight per sample has shape")],
)
def test_a_loss_compiled_with_dynamic_shapes_refuses_a_weight_with_its_own_message(loss_shape, weight_shape, message):
    """Under dynamic shapes the sizes in the message are torch's symbols (s0, s1, ...)."""
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda values, weights: reduce_loss(values, weights, "weighted_mean"),
        fullgraph=True,
        backend=BACKEND,
        dynamic=True,
    )
    compiled(torch.rand(4), torch.ones(4))
    with pytest.raises(Exception) as raised:  # noqa: PT011 (torch.compile's own exception type)
        compiled(torch.rand(*loss_shape), torch.ones(*weight_shape))
    assert message in str(raised.value)
