"""Value checks that never stall an accelerator.

A check on values (NaN, infinity, labels of 0 and 1) needs the values on the host.  On the CPU
(eager) that is free, so the check raises a ``ValueError`` at once.  On other devices, and inside
``torch.compile``, it becomes an asynchronous assertion (``torch._assert_async``): no host
synchronisation, and the failure surfaces at the next synchronising call (e.g. ``loss.item()``).
On CUDA that is a device-side assertion: the kernel prints the message on stderr
(``Assertion `predictions contains NaN or infinite values` failed``), the call raises
``CUDA error: device-side assert triggered``, and the process can no longer use the GPU.  To
debug bad inputs on a GPU, turn on synchronous checks (:func:`set_synchronous_checks`, or
``SODEEP_SYNCHRONOUS_CHECKS=1`` in the environment): eager checks then read their result on the
host and raise the ``ValueError``, at the cost of one synchronisation per check (compiled code
keeps its assertions).  Under ``torch.func`` transforms (``vmap``, ``grad``) on the CPU the check
reads the values beneath the transform's wrappers, so ``vmap`` over a sorter or a loss raises the
same ``ValueError`` when any of its samples is bad.  Compiled code inside a transform
(``torch.compile(vmap(loss))``, ``grad`` alone too) skips the value checks: the assertion has no
batching rule under ``vmap``, and compiled code cannot tell the transforms apart.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np
import torch


def _switch_from_environment(name: str) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off (any case), unset or empty =
    off; anything else is off, with a warning."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    warnings.warn(
        f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {os.environ[name]!r}: left off", stacklevel=2
    )
    return False


#: Whether eager checks on accelerators read their result on the host (see the module docstring).
_synchronous_checks = _switch_from_environment("SODEEP_SYNCHRONOUS_CHECKS")


def set_synchronous_checks(enabled: bool) -> bool:
    """Make eager value checks on accelerators raise ``ValueError`` at once (``True``), at the cost of
    a host synchronisation per check, or assert asynchronously (``False``, the default); returns the
    previous setting.  CPU checks raise at once either way.

    Example:
        >>> previous = set_synchronous_checks(True)
        >>> set_synchronous_checks(previous)
        True
    """
    global _synchronous_checks
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"enabled must be True or False, got {type(enabled).__name__} {enabled!r}")
    previous, _synchronous_checks = _synchronous_checks, bool(enabled)
    return previous


def require(condition: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the boolean tensor ``condition`` is all true (see the
    module docstring for accelerators, compiled code and ``torch.func`` transforms)."""
    if torch.compiler.is_compiling():
        # Compiled code inside a torch.func transform (vmap, grad) cannot assert: the assertion has
        # no batching rule, and the values beneath the transform's wrappers are out of its reach.
        if not torch._C._are_functorch_transforms_active():
            torch._assert_async(condition.all(), message)
    elif condition.device.type != "cpu" and not _synchronous_checks:
        # Beneath vmap's wrappers, all samples at once (no batching rule for the assertion).
        torch._assert_async(beneath_transforms(condition).all(), message)
    elif not bool(beneath_transforms(condition).all()):
        raise ValueError(message)


def check_integer(value: Any, name: str, low: int, high: int | None = None) -> None:
    """An integer (Python or NumPy, not a bool) in ``low..high``: 2.5 or True is refused, not truncated.

    Example:
        >>> check_integer(2.5, "batch_size", 1)
        Traceback (most recent call last):
        TypeError: batch_size must be an integer, got float 2.5
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if high is None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


def ranks_described(ranks: Any) -> str:
    """What a ranker returned, for a message: ``torch.float64 of shape (3, 5)``, or a type's name."""
    if isinstance(ranks, torch.Tensor):
        return f"{ranks.dtype} of shape {tuple(ranks.shape)}"
    return type(ranks).__name__


def python_scalar(value: Any) -> Any:
    """A NumPy scalar or 0-d array as the Python number it holds (a notebook's ``np.int64`` seed);
    anything else as it is.

    Example:
        >>> python_scalar(np.int64(3)), python_scalar(np.array(0.5)), python_scalar([1, 2])
        (3, 0.5, [1, 2])
    """
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def check_dense(value: torch.Tensor, name: str) -> None:
    """A tensor of the usual (strided) layout: a sparse or nested one is refused in one line, not
    deep in a kernel."""
    if value.is_nested:  # of either layout; a jagged one has no to_dense()
        raise TypeError(
            f"{name} must be a dense tensor, got a nested tensor: pass its rows one at a time ({name}.unbind()), "
            "or rows of one length as a (batch, n) tensor"
        )
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {value.layout}: pass {name}.to_dense()")


#: Floating dtypes the sorters and losses compute with (float8 types have too few kernels).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float_dtype(value: torch.Tensor, name: str) -> None:
    """A floating tensor of one of :data:`FLOAT_DTYPES`, refused in one line otherwise."""
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 tensor, got dtype {value.dtype}"
            + (f": cast it first, {name}.float()" if value.is_floating_point() else "")
        )


def require_number(value, condition: Callable[[torch.Tensor], torch.Tensor], message: str) -> None:
    """Check a Python number that ``torch.compile`` may have made symbolic, where a Python test of
    it would break the graph: as :func:`require` on a float64 tensor of it (under compile an
    asynchronous assertion).  Eager code tests its numbers in Python, with the value in the message.

    Example:
        >>> require_number(0.5, lambda weight: weight >= 0, "weight must be >= 0")
        >>> require_number(-1.0, lambda weight: weight >= 0, "weight must be >= 0")
        Traceback (most recent call last):
        ValueError: weight must be >= 0
    """
    require(condition(torch.tensor(value, dtype=torch.float64)), message)


def beneath_transforms(tensor: torch.Tensor) -> torch.Tensor:
    """The plain tensor beneath ``torch.func``'s wrappers (all of a ``vmap``'s samples at once);
    ``tensor`` itself outside transforms."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        tensor = functorch.get_unwrapped(tensor)
    return tensor
