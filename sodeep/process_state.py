"""The process-wide state a run sets for itself, put back for the code that called it.

A training run seeds the random generators, Lightning's ``Trainer(deterministic=...)`` switches
torch to deterministic algorithms (and sets ``CUBLAS_WORKSPACE_CONFIG``), sodeep quiets
Lightning's loggers and some of its warnings, and W&B hooks ``sys.exit`` and ``sys.excepthook``.
A run also computes in float32 whatever default dtype its caller set, so that its results do not
depend on it.  Called from a notebook, none of that may outlive the call: :func:`caller_state_kept`
restores it when the block ends, normally or not.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch

#: Environment variables a run sets: Lightning's seed (``seed_everything``), cuBLAS's
#: workspace setting (deterministic algorithms on CUDA) and the cache folder torch's Inductor
#: sets the first time it compiles.
RUN_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG", "TORCHINDUCTOR_CACHE_DIR")
#: Loggers whose levels a run sets (:func:`sodeep.runs.quiet_lightning`).
RUN_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


@contextlib.contextmanager
def caller_state_kept() -> Iterator[None]:
    """Within the block a run may seed and configure the process for itself, and torch's default
    dtype is float32; on exit the caller finds, as they were before it: the random states of Python,
    NumPy and torch (CPU and CUDA), :data:`RUN_VARIABLES`, torch's deterministic-algorithm settings
    (warn-only, uninitialized memory filled) and cuDNN's flags, the levels of :data:`RUN_LOGGERS`,
    the warning filters, torch's default dtype, and ``sys.exit`` and ``sys.excepthook``.

    Example:
        >>> before = torch.are_deterministic_algorithms_enabled()
        >>> with caller_state_kept():
        ...     torch.use_deterministic_algorithms(not before)
        >>> torch.are_deterministic_algorithms_enabled() == before
        True
    """
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    variables = {name: os.environ.get(name) for name in RUN_VARIABLES}
    deterministic = _deterministic_settings()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    levels = {name: logging.getLogger(name).level for name in RUN_LOGGERS}
    default_dtype, hooks = torch.get_default_dtype(), (sys.exit, sys.excepthook)
    with warnings.catch_warnings():  # the warning filters as they were, on exit (the restoring's own too)
        try:
            torch.set_default_dtype(torch.float32)  # a model built in the run: float32, as its data
            yield
        finally:
            torch.set_default_dtype(default_dtype)
            sys.exit, sys.excepthook = hooks
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.random.set_rng_state(states[2])
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)
            for name, value in variables.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if _deterministic_settings() != deterministic:
                _set_deterministic_settings(*deterministic)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _deterministic_settings() -> tuple[bool, bool, bool, bool | None]:
    """torch's deterministic algorithms (on, warn-only), whether uninitialized memory is filled,
    and Inductor's own switch where Inductor is loaded (``None`` otherwise: not loaded here)."""
    inductor = sys.modules.get("torch._inductor.config")
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
        None if inductor is None else inductor.deterministic,
    )


def _set_deterministic_settings(enabled: bool, warn_only: bool, fill: bool, inductor: bool | None) -> None:
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)  # (which also sets Inductor's switch)
    torch.utils.deterministic.fill_uninitialized_memory = fill
    if inductor is not None:
        sys.modules["torch._inductor.config"].deterministic = inductor


Function = TypeVar("Function", bound=Callable)


def keeps_caller_state(function: Function) -> Function:
    """``function`` run within :func:`caller_state_kept`."""

    @functools.wraps(function)
    def kept(*arguments, **keywords):
        with caller_state_kept():
            return function(*arguments, **keywords)

    return kept  # type: ignore[return-value]
