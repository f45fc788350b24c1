import pytest
import torch

from sodeep.cpu_sort import sort_keys_with_order, sortable_keys


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
