"""Value checks that never stall an accelerator.

A check on values (NaN, infinity, labels of 0 and 1) needs the values on the host.  On the CPU
(eager) that is free, so the check raises a ``ValueError`` at once.  On other devices, and inside
``torch.compile``, it becomes an asynchronous assertion (``torch._assert_async``): no host
synchronisation, and a ``RuntimeError`` with the same message surfaces at the next synchronising
call (e.g. ``loss.item()``).
"""

from __future__ import annotations

import torch


def require(condition: torch.Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless the boolean tensor ``condition`` is all true (see the
    module docstring for accelerators and compiled code)."""
    if condition.device.type != "cpu" or torch.compiler.is_compiling():
        torch._assert_async(condition.all(), message)
    elif not bool(condition.all()):
        raise ValueError(message)
