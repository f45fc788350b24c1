"""Value checks: raised at once on the CPU, asserted asynchronously on accelerators unless
synchronous checks are on."""

import os
import subprocess
import sys

import pytest
import torch

from sodeep import checks
from sodeep.losses import SpearmanLoss


class OnAnAccelerator(torch.Tensor):
    """A CPU tensor that reports an accelerator device, to follow ``require``'s accelerator path."""

    @property
    def device(self):
        return torch.device("cuda", 0)


@pytest.fixture
def asserted(monkeypatch):
    """The messages of the asynchronous assertions made, instead of making them."""
    messages = []
    monkeypatch.setattr(torch, "_assert_async", lambda condition, message: messages.append(message))
    return messages


@pytest.fixture
def restore_setting():
    previous = checks.set_synchronous_checks(False)
    yield
    checks.set_synchronous_checks(previous)


def failing_condition_on_an_accelerator():
    return torch.tensor([True, False]).as_subclass(OnAnAccelerator)


def test_a_failing_check_on_an_accelerator_is_an_asynchronous_assertion(asserted, restore_setting):
    checks.require(failing_condition_on_an_accelerator(), "scores contain NaN")
    assert asserted == ["scores contain NaN"]


def test_synchronous_checks_raise_on_an_accelerator_without_an_assertion(asserted, restore_setting):
    assert checks.set_synchronous_checks(True) is False
    with pytest.raises(ValueError, match="^scores contain NaN$"):
        checks.require(failing_condition_on_an_accelerator(), "scores contain NaN")
    checks.require(torch.tensor([True, True]).as_subclass(OnAnAccelerator), "never raised")
    assert asserted == []
    assert checks.set_synchronous_checks(False) is True


def test_cpu_checks_raise_whatever_the_setting(asserted, restore_setting):
    for enabled in (False, True):
        checks.set_synchronous_checks(enabled)
        with pytest.raises(ValueError, match="bad"):
            checks.require(torch.tensor(False), "bad")
    assert asserted == []


def test_the_setting_must_be_a_bool(restore_setting):
    with pytest.raises(TypeError, match="enabled must be True or False, got int 1"):
        checks.set_synchronous_checks(1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", "True"), ("true", "True"), ("ON", "True"), ("0", "False"), ("off", "False"), ("", "False")]
    + [("garbage", "False")],
)
def test_the_environment_variable_sets_the_default(value, expected):
    environment = {**os.environ, "SODEEP_SYNCHRONOUS_CHECKS": value}
    program = "import sodeep.checks as c; print(c._synchronous_checks)"
    shown = subprocess.run([sys.executable, "-c", program], env=environment, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == expected
    warned = "SODEEP_SYNCHRONOUS_CHECKS must be 1 or 0 (true/false, yes/no, on/off), got 'garbage': left off"
    assert (warned in shown.stderr) == (value == "garbage")


def test_a_numpy_bool_is_a_bool(restore_setting):
    import numpy as np

    checks.set_synchronous_checks(np.bool_(True))
    assert checks.set_synchronous_checks(False) is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_synchronous_checks_on_cuda_raise_and_keep_the_gpu_usable(restore_setting):
    checks.set_synchronous_checks(True)
    predictions = torch.randn(3, 20, device="cuda")
    predictions[1, 4] = float("nan")
    loss = SpearmanLoss().to("cuda")
    with pytest.raises(ValueError, match="NaN"):
        loss(predictions, torch.randn(3, 20, device="cuda"))
    assert torch.ones(2, device="cuda").sum().item() == 2


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x: __import__("sodeep").rank(x), "x"),
        (lambda x: __import__("sodeep").load_sorter()(x), "scores"),
        (lambda x: __import__("sodeep").SpearmanLoss()(x, torch.randn(3, 4)), "predictions"),
        (lambda x: __import__("sodeep.losses").losses.pairwise_margin_ranking_loss(x, torch.ones(3, 4)), "scores"),
        (lambda x: __import__("sodeep.metrics").metrics.rowwise_spearman(x, torch.randn(3, 4)), "predicted_ranks"),
    ],
)
def test_a_sparse_tensor_is_refused_in_one_line_naming_the_argument(call, name):
    sparse = torch.randn(3, 4).to_sparse()
    with pytest.raises(TypeError) as raised:
        call(sparse)
    assert str(raised.value) == f"{name} must be a dense tensor, got layout torch.sparse_coo: pass {name}.to_dense()"


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x: __import__("sodeep").rank(x), "x"),
        (lambda x: __import__("sodeep").load_sorter()(x), "scores"),
        (lambda x: __import__("sodeep").SpearmanLoss()(x, torch.randn(2, 4)), "predictions"),
    ],
)
def test_a_nested_tensor_is_refused_in_one_line_naming_the_argument(call, name, layout):
    nested = torch.nested.nested_tensor([torch.randn(3), torch.randn(4)], layout=layout)
    with pytest.raises(TypeError) as raised:
        call(nested)
    assert str(raised.value) == (
        f"{name} must be a dense tensor, got a nested tensor: pass its rows one at a time ({name}.unbind()), "
        "or rows of one length as a (batch, n) tensor"
    )
