"""Input checks shared by the losses: clear errors that name the argument and the shape seen."""

from __future__ import annotations

import math
from numbers import Integral, Rational, Real
from typing import Any

import torch

from sodeep.checks import beneath_transforms, check_dense, check_float_dtype, python_scalar, require, require_number


def check_tensor(value, name: str, *, floating: bool = True) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    check_dense(value, name)
    if value.is_complex():
        raise TypeError(f"{name} must be real, got dtype {value.dtype}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.is_floating_point():
        check_float_dtype(value, name)
    if value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)})")
    if value.is_floating_point():
        require(torch.isfinite(value), f"{name} contains NaN or infinite values")


def check_same_shape(first: torch.Tensor, second: torch.Tensor, names: str) -> None:
    """The same shape and the same device."""
    if first.shape != second.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    if first.device != second.device:
        raise ValueError(f"{names} must be on the same device, got {first.device} and {second.device}")


def check_binary(labels: torch.Tensor, name: str = "labels") -> None:
    check_tensor(labels, name, floating=False)
    binary = (labels == 0) | (labels == 1)
    if labels.device.type == "cpu" and not torch.compiler.is_compiling():
        # Beneath torch.func's wrappers: under vmap, every sample's labels at once.
        if not bool(beneath_transforms(binary).all()):
            found = beneath_transforms(labels).unique()[:8].tolist()
            raise ValueError(f"{name} must contain only 0 and 1, found values {found}")
    require(binary, f"{name} must contain only 0 and 1")


def check_rank(value: torch.Tensor, name: str, dims: tuple[int, ...], meaning: str, rows: bool = False) -> None:
    """``value`` has one of ``dims`` dimensions (``meaning`` spells the shapes in errors); with
    ``rows`` (a loss over independent rows), more dimensions are told how to become rows."""
    if value.dim() not in dims:
        shape = tuple(value.shape)
        hint = f": rows of {shape[-1]} are {name}.reshape(-1, {shape[-1]})" if rows and value.dim() > max(dims) else ""
        raise ValueError(f"{name} must have shape {meaning}, got shape {shape}{hint}")


def check_finite_margin(margin, name: str = "margin") -> None:
    """A margin is a finite number or a tensor of finite values (NaN would make every loss NaN).
    A tensor is checked through :func:`sodeep.checks.require` (no host synchronisation), and so is
    a number under ``torch.compile``, where it may be symbolic (:func:`sodeep.checks.require_number`)."""
    if isinstance(margin, torch.Tensor):
        if margin.dtype == torch.bool or margin.is_complex():
            raise TypeError(f"{name} must be a real number or a tensor of real numbers, got dtype {margin.dtype}")
        require(torch.isfinite(margin), f"{name} must be finite")
    elif isinstance(margin, bool) or not isinstance(margin, Real):
        raise TypeError(f"{name} must be a number or a tensor, got {type(margin).__name__}")
    elif torch.compiler.is_compiling():  # the number may be symbolic: checked without a graph break
        require_number(margin, torch.isfinite, f"{name} must be finite")
    elif not math.isfinite(float(margin)):
        raise ValueError(f"{name} must be finite, got {margin}")


def check_setting_device(value, name: str, device: torch.device) -> None:
    """A tensor setting (a margin, a weight) on the scores' ``device``, or 0-d on the CPU, which
    PyTorch takes as a number beside tensors of any device."""
    if (
        isinstance(value, torch.Tensor)
        and value.device != device
        and not (value.dim() == 0 and value.device.type == "cpu")
    ):
        raise ValueError(
            f"{name} is on {value.device}, the scores on {device}: move it (or the loss module that holds it) "
            f"with .to({str(device)!r})"
        )


def check_fixed_setting(value, name: str, module: str, function: str | None = None) -> None:
    """A loss module holds its settings as fixed numbers or buffers: a tensor that requires grad
    (or a list of them) would be detached there without a word, so it is refused, pointing at the
    function form where there is one."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    if any(isinstance(item, torch.Tensor) and item.requires_grad for item in items):
        advice = (
            f"to learn it, call {function}(..., {name}={name}) in your forward instead"
            if function
            else "pass numbers or a tensor that does not require grad"
        )
        raise TypeError(
            f"{name} of {module} is a fixed setting, and a tensor that requires grad would be detached: {advice}"
        )


def check_scalar_margin(margin, name: str = "margin") -> None:
    """One margin for every pair: a finite number or a finite 0-d tensor."""
    if isinstance(margin, torch.Tensor) and margin.dim() != 0:
        raise ValueError(f"{name} must be a number or a 0-d tensor, got shape {tuple(margin.shape)}")
    check_finite_margin(margin, name)


def number_tensors_take(margin: Any) -> Any:
    """A number in a form that tensor arithmetic accepts: a ``fractions.Fraction`` (a rational
    number type other than the integers) as its float, a NumPy scalar as its Python number, and
    each item of a list or tuple so; anything else (floats, integers, tensors, what the checks
    refuse) as it is.

    Example:
        >>> from fractions import Fraction
        >>> import numpy as np
        >>> number_tensors_take(Fraction(1, 2)), number_tensors_take(np.float32(0.25)), number_tensors_take(3)
        (0.5, 0.25, 3)
        >>> number_tensors_take([Fraction(1, 4), 2])
        [0.25, 2]
    """
    if isinstance(margin, (list, tuple)):
        return type(margin)(number_tensors_take(item) for item in margin)
    margin = python_scalar(margin)
    if isinstance(margin, Rational) and not isinstance(margin, (Integral, torch.Tensor)):
        return float(margin)
    return margin
