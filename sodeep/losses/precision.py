"""Losses under autocast: in float32, as autocast runs torch's own losses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Function = TypeVar("Function", bound=Callable[..., Any])

_HALF_PRECISION = (torch.float16, torch.bfloat16)


def float32_under_autocast(loss: Function) -> Function:
    """Run ``loss`` as autocast runs ``F.mse_loss`` or ``F.margin_ranking_loss``: where autocast is
    on for the device of the first tensor argument, its float16 and bfloat16 tensor arguments go
    in as float32 and ``loss`` runs with autocast off, so that it returns float32.

    A half-precision loss value times a ``GradScaler``'s scale (65,536 at first) overflows, and the
    scaler would skip steps and shrink its scale for good.  Outside autocast nothing changes:
    losses return the scores' dtype.
    """

    @functools.wraps(loss)
    def under_autocast_in_float32(*args: Any, **kwargs: Any) -> Any:
        first = next((value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)), None)
        device_type = None if first is None else first.device.type
        if (
            device_type is None
            or not torch.amp.is_autocast_available(device_type)
            or not torch.is_autocast_enabled(device_type)
        ):
            return loss(*args, **kwargs)

        def widened(value: Any) -> Any:
            return value.float() if isinstance(value, torch.Tensor) and value.dtype in _HALF_PRECISION else value

        with torch.autocast(device_type, enabled=False):
            return loss(*map(widened, args), **{name: widened(value) for name, value in kwargs.items()})

    return under_autocast_in_float32  # type: ignore[return-value]
