"""Sorting order along the last dimension, for code that does not care how ties are ordered.

``torch.sort`` on the CPU is fast on small tensors and slow beyond a few thousand elements (from
about 3,000 on an Intel Xeon, 5,000 on an AMD EPYC, where a few rows of 1,000-2,000 values
sort twice as fast with it up to 4,096 elements, and many rows of 100 values 1.15x as fast with
NumPy from 3,200): from there on it takes 1.2 to seven times as long per core as NumPy's
vectorized sort (``python experiments/benchmarks/bench_argsort.py``).
:func:`argsort` sorts CPU tensors of more than 2,048 elements in rows of more than 8, of the
dtypes NumPy shares with torch, through NumPy, and
everything else (smaller tensors, rows of up to 8 elements, where NumPy's per-row cost makes it
slower, other devices, bfloat16, tensors inside ``torch.func`` transforms) with ``torch.sort``.
Inside ``torch.compile`` the NumPy sort is a ``torch.library`` custom operator, so
``fullgraph=True`` traces through code that calls it.

NumPy sorts on one core: on a machine with many cores and batches of many long rows,
``torch.sort`` over all of them can be faster.
"""

from __future__ import annotations

import numpy as np
import torch

# Dtypes NumPy sorts with the same order as torch (float16 is widened: NumPy sorts it slowly).
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_WIDENED = {torch.float16: torch.float32, torch.bool: torch.uint8}
#: Tensors of up to this many elements are sorted by ``torch.sort``, within a few microseconds of
#: NumPy there (``bench_argsort.py``; docs/sorter.md, "Speed") ...
TORCH_SORT_MAX_ELEMENTS = 2048
#: ... and so are rows of up to this length, however many (NumPy's per-row cost dominates them).
TORCH_SORT_MAX_LENGTH = 8


def _numpy_argsort(values: torch.Tensor, descending: bool) -> torch.Tensor:
    order = torch.from_numpy(np.argsort(values.resolve_neg().numpy(), axis=-1))
    return order.flip(-1) if descending else order


# The same as an operator that torch.compile keeps as one opaque call (NumPy cannot be traced).
_numpy_argsort_op = torch.library.custom_op("sodeep::numpy_argsort", _numpy_argsort, mutates_args=())


@_numpy_argsort_op.register_fake
def _(values: torch.Tensor, descending: bool) -> torch.Tensor:
    return torch.empty_like(values, dtype=torch.int64, memory_format=torch.contiguous_format)


@_numpy_argsort_op.register_vmap
def _(info, in_dims: tuple, values: torch.Tensor, descending: bool) -> tuple[torch.Tensor, int | None]:
    # Under vmap (compiled code inside torch.func transforms): every sample's rows in one call,
    # the batch dimension first, so that the rows stay the last one.
    batch_dim = in_dims[0]
    if batch_dim is None:
        return _numpy_argsort_op(values, descending), None
    return _numpy_argsort_op(values.movedim(batch_dim, 0), descending), 0


def argsort(values: torch.Tensor, *, descending: bool = False) -> torch.Tensor:
    """Indices that sort ``values`` along its last dimension; tied elements in any order.

    Args:
        values: real tensor ``(..., n)`` without NaN (where NaN goes is not specified), any device.
        descending: largest first.

    Returns:
        int64 ``(..., n)`` on the device of ``values``: ``values.gather(-1, order)`` is sorted.

    Example:
        >>> argsort(torch.tensor([[0.5, 2.0, -1.0]]), descending=True)
        tensor([[1, 0, 2]])
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    if values.dim() == 0:
        raise ValueError("values must have at least one dimension, got a 0-d tensor")
    if values.is_complex():
        raise TypeError("values must be real, got a complex tensor")
    values = values.detach()
    widened = values.to(_WIDENED.get(values.dtype, values.dtype))
    by_numpy = (
        values.device.type == "cpu"
        and widened.dtype in _NUMPY_DTYPES
        and values.numel() > TORCH_SORT_MAX_ELEMENTS
        and values.shape[-1] > TORCH_SORT_MAX_LENGTH
    )
    if by_numpy and torch.compiler.is_compiling():
        return _numpy_argsort_op(widened, descending)
    if by_numpy and not torch._C._functorch.is_functorch_wrapped_tensor(values):  # not inside vmap or grad
        return _numpy_argsort(widened, descending)
    return torch.sort(values, dim=-1, descending=descending).indices
