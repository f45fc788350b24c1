import numpy as np
import pytest
import scipy.stats
import torch

from sodeep import rank
from sodeep.ranks import TIE_METHODS


@pytest.mark.parametrize("ties", TIE_METHODS)
@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("shape,dim", [((50,), -1), ((7, 30), -1), ((4, 9, 6), 1), ((3, 5, 8), 0)])
def test_matches_scipy_rankdata_with_ties(ties, descending, shape, dim):
    x = torch.randint(0, 6, shape).to(torch.float64)  # many ties
    ours = rank(x, dim=dim, descending=descending, ties=ties, normalized=False)
    reference = scipy.stats.rankdata((-x if descending else x).numpy(), method=ties, axis=dim)
    np.testing.assert_allclose(ours.numpy(), reference)


@pytest.mark.parametrize("ties", TIE_METHODS)
@pytest.mark.parametrize(
    "values,dtype",
    [
        ([0, 1, 255, 1, 0, 254], torch.uint8),
        ([-128, 127, 0, -128, 5], torch.int8),
        ([-(2**63), 2**63 - 1, 2**62, 2**62 + 1, -(2**63), 0], torch.int64),
        ([True, False, True, False, False], torch.bool),
    ],
)
def test_unsigned_boolean_and_extreme_integers_rank_in_order(values, dtype, ties):
    x = torch.tensor(values, dtype=dtype)
    # Dense ascending ranks order the values exactly (NumPy int64) and negate safely.
    dense = scipy.stats.rankdata(np.array(values, dtype=np.int64), method="dense")
    for descending in (True, False):
        reference = scipy.stats.rankdata(-dense if descending else dense, method=ties)
        ours = rank(x, descending=descending, ties=ties, normalized=False)
        np.testing.assert_allclose(ours.numpy(), reference)


def test_default_convention_is_descending_normalized_average():
    x = torch.tensor([0.5, 2.0, -1.0, 2.0])
    torch.testing.assert_close(rank(x), torch.tensor([3.0, 1.5, 4.0, 1.5]) / 4)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]
)
def test_dtype_is_float64_for_float64_input_else_float32_and_no_grad(dtype):
    x = torch.arange(10).to(dtype)
    out = rank(x)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    y = torch.randn(5, requires_grad=True)
    assert not rank(y).requires_grad


@pytest.mark.parametrize("default", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.float16, torch.bfloat16])
def test_ranks_are_float32_whatever_the_default_dtype(default, dtype):
    values = torch.randperm(3000, generator=torch.Generator().manual_seed(0)).to(dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        ours = rank(values, normalized=False)
    finally:
        torch.set_default_dtype(previous)
    assert ours.dtype == torch.float32
    reference = scipy.stats.rankdata(-values.double().numpy(), method="average")
    np.testing.assert_array_equal(ours.numpy(), reference)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32])
def test_wide_unsigned_integers_rank_like_int64(dtype):
    x = torch.tensor([7, 0, 65535, 7, 3]).to(dtype)
    torch.testing.assert_close(rank(x), rank(x.to(torch.int64)))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        rank(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="ties"):
        rank(torch.tensor([1.0]), ties="random")
    with pytest.raises(ValueError, match="0-d"):
        rank(torch.tensor(1.0))
    with pytest.raises(TypeError, match="uint64"):
        rank(torch.tensor([1, 2]).to(torch.uint64))


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"normalized": "false"}, "normalized must be True or False, got 'false'"),
        ({"normalized": 0.5}, "normalized must be True or False, got 0.5"),
        ({"descending": "no"}, "descending must be True or False, got 'no'"),
        ({"descending": None}, "descending must be True or False, got None"),
        ({"dim": 1.5}, "dim must be an integer, got 1.5"),
        ({"dim": True}, "dim must be an integer, got True"),
    ],
)
def test_settings_of_the_wrong_type_are_refused_in_one_line(setting, message):
    with pytest.raises(TypeError) as raised:
        rank(torch.tensor([3.0, 1.0, 2.0]), **setting)
    assert str(raised.value) == message


def test_a_numpy_integer_is_a_dim():
    import numpy as np

    scores = torch.tensor([[3.0, 1.0], [2.0, 4.0]])
    for dim in (0, 1, -1):
        assert torch.equal(rank(scores, dim=np.int64(dim)), rank(scores, dim=dim))
    assert torch.equal(rank(scores, descending=np.bool_(False)), rank(scores, descending=False))
    with pytest.raises(IndexError) as raised:
        rank(scores, dim=2)
    assert str(raised.value) == "dim must be in -2..1 for a 2-d tensor, got 2"


@pytest.mark.parametrize("dtype,n", [(torch.float16, 3000), (torch.bfloat16, 300), (torch.float16, 70_000)])
@pytest.mark.parametrize("ties", ["average", "ordinal", "dense"])
@pytest.mark.parametrize("normalized", [True, False])
def test_half_precision_scores_get_exact_float32_ranks(dtype, n, ties, normalized):
    values = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(dtype)  # with ties from rounding
    ranks = rank(values, ties=ties, normalized=normalized)
    exact = scipy.stats.rankdata(-values.float().numpy(), method=ties) / (n if normalized else 1)
    assert ranks.dtype == torch.float32
    torch.testing.assert_close(ranks, torch.from_numpy(exact).float(), rtol=0, atol=0)
