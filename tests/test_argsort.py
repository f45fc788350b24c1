import pytest
import torch

from sodeep.argsort import argsort

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def assert_sorts(values: torch.Tensor, order: torch.Tensor, descending: bool) -> None:
    """``order`` is a permutation of each row that puts ``values`` in torch.sort's order."""
    assert order.dtype == torch.int64 and order.shape == values.shape
    n = values.shape[-1]
    assert torch.equal(order.sort(dim=-1).values, torch.arange(n).expand_as(order))
    expected = torch.sort(values, dim=-1, descending=descending).values
    assert torch.equal(values.gather(-1, order), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 1024), (1000, 8), (2, 1025), (2, 3, 1000)])  # torch.sort, then NumPy
def test_orders_like_torch_sort_for_every_dtype(dtype, descending, shape):
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        values = torch.randint(0, 2, shape, generator=generator).bool()
    elif dtype.is_floating_point:
        values = (20 * torch.randn(shape, generator=generator)).round().to(dtype)  # with ties
    else:
        info = torch.iinfo(dtype)
        values = torch.randint(info.min, info.max, shape, generator=generator, dtype=torch.int64).to(dtype)
        values.view(-1)[-2:] = torch.tensor([info.min, info.max])[-values.numel() :].to(dtype)  # the extremes
    assert_sorts(values, argsort(values, descending=descending), descending)


@pytest.mark.parametrize("descending", [False, True])
def test_special_values_strided_input_and_empty_rows(descending):
    special = torch.tensor([[0.0, -0.0, float("inf"), -float("inf"), 1e-45, -1e38, 3e38, 5.0]] * 600)
    assert_sorts(special, argsort(special, descending=descending), descending)
    strided = torch.randn(9000, 6).t()[:, ::3]  # neither contiguous nor of unit stride
    assert_sorts(strided, argsort(strided, descending=descending), descending)
    negated = torch.randn(5, 900)._neg_view()
    assert_sorts(negated, argsort(negated, descending=descending), descending)
    assert argsort(torch.empty(3, 0)).shape == (3, 0)


def test_takes_tensors_that_require_grad_and_refuses_what_it_cannot_sort():
    values = torch.randn(4, 5000, requires_grad=True)
    assert_sorts(values.detach(), argsort(values), False)
    with pytest.raises(ValueError, match="0-d"):
        argsort(torch.tensor(1.0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        argsort([3.0, 1.0])
    with pytest.raises(TypeError, match="real"):
        argsort(torch.randn(5000, dtype=torch.complex64))


def test_compiles_with_fullgraph_and_works_under_vmap():
    values = torch.randn(3, 2000)
    compiled = torch.compile(lambda v: argsort(v, descending=True), fullgraph=True)
    assert torch.equal(compiled(values), argsort(values, descending=True))
    mapped = torch.func.vmap(argsort)(values)
    assert_sorts(values, mapped, False)


@pytest.mark.parametrize("in_dims", [0, 1])
def test_compiled_code_under_vmap_sorts_every_sample_with_one_numpy_call(in_dims, capfd):
    """The custom operator has a batching rule: no per-sample loop (nor PyTorch's warning about one)."""
    values = torch.randn(3, 3000) if in_dims == 0 else torch.randn(3000, 3)  # rows NumPy sorts
    torch._dynamo.reset()
    compiled = torch.compile(torch.func.vmap(argsort, in_dims=in_dims), fullgraph=True, backend="aot_eager")
    order = compiled(values)
    assert "batching rule" not in capfd.readouterr().err  # a fallback to a loop over samples warns
    assert torch.equal(order, torch.func.vmap(argsort, in_dims=in_dims)(values))
    rows = values if in_dims == 0 else values.T
    assert_sorts(rows, order, False)
