"""Value checks that never stall an accelerator.

A check on values (NaN, infinity, labels of 0 and 1) needs the values on the host.  On the CPU
(eager) that is free, so the check raises a ``ValueError`` at once.  On other devices, and inside
``torch.compile``, it becomes an asynchronous assertion (``torch._assert_async``): no host
synchronisation, and a ``RuntimeError`` with the same message surfaces at the next synchronising
call (e.g. ``loss.item()``).  Under ``torch.func`` transforms (``vmap``, ``grad``) on the CPU the check
reads the values beneath the transform's wrappers, so ``vmap`` over a sorter or a loss raises the
same ``ValueError`` when any of its samples is bad.
"""

from __future__ import annotations

import torch


def require(condition: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the boolean tensor ``condition`` is all true (see the
    module docstring for accelerators, compiled code and ``torch.func`` transforms)."""
    if torch.compiler.is_compiling():
        torch._assert_async(condition.all(), message)
    elif condition.device.type != "cpu":
        # Beneath vmap's wrappers, all samples at once (no batching rule for the assertion).
        torch._assert_async(beneath_transforms(condition).all(), message)
    elif not bool(beneath_transforms(condition).all()):
        raise ValueError(message)


def beneath_transforms(tensor: torch.Tensor) -> torch.Tensor:
    """The plain tensor beneath ``torch.func``'s wrappers (all of a ``vmap``'s samples at once);
    ``tensor`` itself outside transforms."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(tensor):
        tensor = functorch.get_unwrapped(tensor)
    return tensor
