import pytest
import torch

from sodeep import rank
from sodeep.cpu_sort import exact_ranks_cpu, sort_keys_with_order, sortable_keys
from sodeep.synthetic import make_generator


def test_sortable_keys_preserve_order_and_equality():
    values = torch.tensor([-float("inf"), -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 2.0, 7e30, float("inf")])
    keys = sortable_keys(values)
    assert torch.equal(keys[1:] >= keys[:-1], values[1:] >= values[:-1])
    assert torch.equal(keys[1:] == keys[:-1], values[1:] == values[:-1])


@pytest.mark.parametrize("shape", [(1, 2), (5, 17), (32, 100)])
def test_sort_keys_with_order_is_a_stable_argsort(shape):
    keys = torch.randint(-5, 5, shape, dtype=torch.int32)
    expected = keys.sort(dim=-1, stable=True)
    sorted_keys, order = sort_keys_with_order(keys)
    assert torch.equal(sorted_keys, expected.values.long())
    assert torch.equal(order, expected.indices)


@pytest.mark.parametrize("shape", [(1, 2), (7, 13), (64, 256)])
def test_fast_cpu_ranks_equal_the_reference_ranks(shape):
    gen = make_generator(0)
    values = torch.randint(-4, 5, shape, generator=gen).float() * torch.tensor(1e-3)  # many ties
    values[-1, 0], values[-1, -1] = -0.0, 0.0  # equal values with different bits
    values[0] = torch.randn(shape[-1], generator=gen)  # one row without ties
    assert torch.equal(exact_ranks_cpu(values), rank(values))
    heavy = torch.randn(shape, generator=gen) ** 7
    assert torch.equal(exact_ranks_cpu(heavy), rank(heavy))
