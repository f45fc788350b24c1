"""Under autocast, every loss runs in float32 and returns float32, as autocast runs torch's own
losses: a half-precision loss times a GradScaler's scale overflows and the scaler skips steps."""

import pytest
import torch
from torch.nn import functional as F

from tests.losses.test_compile import BACKEND, CASES

HALF = [torch.float16, torch.bfloat16]


def _call(loss, inputs, others):
    return loss(inputs, *others)


@pytest.mark.parametrize("half", HALF, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_under_autocast_a_loss_is_float32_and_equals_the_float32_loss_of_its_inputs(case, half):
    torch.manual_seed(0)
    loss, inputs, others = CASES[case]()
    low = inputs.to(half)
    if isinstance(loss, torch.nn.Module):
        state = {name: value.clone() for name, value in loss.state_dict().items()}
    with torch.autocast("cpu", dtype=half):
        reference = F.margin_ranking_loss(low[0], low[-1], torch.ones_like(low[0]))
        got = _call(loss, low, others)
    assert reference.dtype == torch.float32  # what autocast makes of torch's own loss
    assert got.dtype == torch.float32
    if isinstance(loss, torch.nn.Module):
        loss.load_state_dict(state)  # adaptive margins: the reference starts where the autocast call did
    torch.testing.assert_close(got, _call(loss, low.float(), others))
    # Outside autocast, the scores' dtype, as before.
    assert _call(loss, low, others).dtype == half


def test_the_scaled_loss_of_a_gradscaler_stays_finite_under_autocast():
    """A hinge loss of a few units in float16 times 65,536 is inf: the scaler would skip the step."""
    case = CASES["pairwise_margin"]
    loss, inputs, others = case()
    scores = (inputs * 100).half().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        value = loss(scores, *others)
    assert value.item() > 1.0
    (value * 65536.0).backward()
    assert torch.isfinite(value * 65536.0) and torch.isfinite(scores.grad).all()
    assert scores.grad.dtype == torch.float16


@pytest.mark.parametrize("case", ["spearman", "map", "multilabel_hinge_weighted", "pairwise_margin"])
def test_a_loss_under_autocast_compiles_into_one_graph(case):
    torch.manual_seed(0)
    loss, inputs, others = CASES[case]()
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend=BACKEND)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = compiled(inputs.bfloat16(), *others), loss(inputs.bfloat16(), *others)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
