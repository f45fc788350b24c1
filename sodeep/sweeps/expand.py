"""The trials of a grid or random sweep, drawn here instead of by W&B's server.

Semantics follow W&B's open-source ``sweeps`` package: the grid walks the parameters sorted by
name with the last varying fastest, takes ``value``, ``values``, ``int_uniform`` (``min`` to
``max`` inclusive) and ``q_uniform`` (``min`` up to, not including, ``max`` in steps of ``q``),
and skips repeated values; random search draws every parameter from one uniform number through
its inverse distribution function.  ``log_uniform``'s ``min``/``max`` are natural logarithms,
``log_uniform_values``' are the values themselves.  A seeded generator makes the draws
reproducible, and trial ``i`` is the same whatever the number of trials, so raising
``run_cap`` extends a sweep without changing the trials already run.

Example:
    >>> from sodeep.sweeps.spec import sweep_from_mapping
    >>> spec = sweep_from_mapping({"method": "grid", "program": "t.py",
    ...     "parameters": {"b": {"values": [1, 2]}, "a": {"values": ["x", "y"]}}})
    >>> [trial.params for trial in expand_trials(spec)]
    [{'a': 'x', 'b': 1}, {'a': 'x', 'b': 2}, {'a': 'y', 'b': 1}, {'a': 'y', 'b': 2}]
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sodeep.sweeps.spec import Parameter, SweepSpec

GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")
#: Most values a grid takes for one q_uniform or int_uniform parameter.
MAX_AXIS_VALUES = 1_000_000
#: Most trials a sweep lists at once (a larger grid runs in parts, with run_cap or --count).
MAX_LISTED_TRIALS = 100_000
#: Keeps the normal quantile finite at a draw of exactly 0.
SMALLEST_DRAW = 1e-12


@dataclass(frozen=True)
class Trial:
    """One run of the sweep: its position and its parameters (a nested parameter is a dict)."""

    index: int
    params: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.index:04d}"


def expand_trials(spec: SweepSpec, seed: int = 0, count: int | None = None) -> list[Trial]:
    """The trials of a grid or random sweep: at most ``run_cap`` and at most ``count``.

    A random sweep needs one of them (W&B's agent would draw forever).  Bayes suggestions depend on
    finished trials: :mod:`sodeep.sweeps.runner` asks for them one at a time.
    """
    cap = min((limit for limit in (spec.run_cap, count) if limit is not None), default=None)
    if spec.method == "grid":
        axes = grid_axes(spec.parameters, f"{spec.source}: ")
        size = math.prod(map(len, axes))
        if min(size, cap or size) > MAX_LISTED_TRIALS:
            raise ValueError(
                f"{spec.source}: the grid has {size:,} trials, more than {MAX_LISTED_TRIALS:,} to list; "
                "set run_cap (or run with count=) to run part of it, or give fewer values"
            )
        combinations = grid_combinations(spec.parameters, axes)
    elif spec.method == "random":
        if cap is None:
            raise ValueError(f"{spec.source}: a random sweep needs run_cap (or count=): it never runs out of trials")
        combinations = random_combinations(spec.parameters, seed)
    else:
        raise ValueError(f"{spec.source}: method {spec.method} is suggested trial by trial, not expanded")
    chosen = combinations if cap is None else itertools.islice(combinations, cap)
    return [Trial(index, params) for index, params in enumerate(chosen)]


def grid_values(parameter: Parameter, where: str = "") -> list[Any]:
    """The values a grid takes for ``parameter``, without repeats (``1`` and ``1.0`` are one)."""
    settings = parameter.settings
    if parameter.distribution == "constant":
        values = [settings["value"]]
    elif parameter.distribution == "categorical":
        values = list(settings["values"])
    elif parameter.distribution == "int_uniform":
        count = int(settings["max"]) - int(settings["min"]) + 1
        if count > MAX_AXIS_VALUES:
            raise ValueError(
                f"{where}parameters.{parameter.name}: int_uniform from {settings['min']} to {settings['max']} is "
                f"{count:,} values, more than {MAX_AXIS_VALUES:,}; use method: random to draw from it"
            )
        values = list(range(int(settings["min"]), int(settings["max"]) + 1))
    elif parameter.distribution == "q_uniform":
        values = q_uniform_grid(settings["min"], settings["max"], settings["q"], f"{where}parameters.{parameter.name}")
    else:
        raise ValueError(
            f"{where}parameters.{parameter.name} is {parameter.distribution}: a grid takes value, values, "
            f"int_uniform or q_uniform (use method: random for distributions)"
        )
    unique: dict[str, Any] = {}
    for value in values:
        unique.setdefault(value_key(value), value)
    return list(unique.values())


def q_uniform_grid(low: float, high: float, q: float, where: str = "q_uniform") -> list[float | int]:
    """``low, low + q, ...`` below ``high``, each rounded to the decimals ``low`` and ``q`` are
    written with (``0.1 + 2 * 0.1`` is ``0.3``), ints where both are ints; a ``ValueError`` beyond
    :data:`MAX_AXIS_VALUES` values.

    Example:
        >>> q_uniform_grid(0.1, 0.4, 0.1), q_uniform_grid(1, 1.3, 0.1), q_uniform_grid(0, 6, 2)
        ([0.1, 0.2, 0.3], [1.0, 1.1, 1.2], [0, 2, 4])
    """
    steps = math.ceil((high - low) / q) if high > low else 0
    if steps > MAX_AXIS_VALUES:
        raise ValueError(
            f"{where}: q_uniform from {low} to {high} in steps of {q} is {steps:,} values, more than "
            f"{MAX_AXIS_VALUES:,}; take a larger q"
        )
    decimals = max(_decimals(low), _decimals(q))
    values = [round(low + step * q, decimals) for step in range(steps + 1)]
    values = [value for value in values if value < high]
    return [int(value) for value in values] if isinstance(low, int) and isinstance(q, int) else values


def _decimals(number: float) -> int:
    """Decimals of ``number`` as Python writes it: ``0.25`` -> 2, ``1e-05`` -> 5, ``3`` -> 0."""
    mantissa, _, exponent = repr(float(number)).partition("e")
    fraction = mantissa.partition(".")[2].rstrip("0")
    return max(0, len(fraction) - int(exponent or 0))


def grid_axes(parameters: tuple[Parameter, ...], where: str = "") -> list[list[Any]]:
    """:func:`grid_values` of each parameter: a grid's size is the product of their lengths,
    counted without listing the combinations."""
    return [grid_values(parameter, where) for parameter in parameters]


def grid_combinations(parameters: tuple[Parameter, ...], axes: list[list[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of the parameters' values (:func:`grid_axes`), the last parameter varying
    fastest."""
    for values in itertools.product(*axes):
        yield nest({parameter.path: value for parameter, value in zip(parameters, values)})


def random_combinations(parameters: tuple[Parameter, ...], seed: int) -> Iterator[dict[str, Any]]:
    """Endless independent draws, one uniform number per parameter per trial."""
    generator = np.random.default_rng(seed)
    while True:
        draws = generator.random(len(parameters))
        yield nest({parameter.path: sample(parameter, float(u)) for parameter, u in zip(parameters, draws)})


def sample(parameter: Parameter, u: float) -> Any:
    """The value of ``parameter`` at quantile ``u`` in [0, 1) of its distribution (W&B's ``ppf``)."""
    from scipy import special

    settings, distribution = parameter.settings, parameter.distribution
    low, high = settings.get("min"), settings.get("max")
    if distribution == "constant":
        return settings["value"]
    if distribution == "categorical":
        values = settings["values"]
        return values[min(int(u * len(values)), len(values) - 1)]
    if distribution == "categorical_w_probabilities":
        index = int(np.searchsorted(np.cumsum(settings["probabilities"]), u, side="right"))
        return settings["values"][min(index, len(settings["values"]) - 1)]
    if distribution == "int_uniform":
        low, high = int(low), int(high)
        return low + min(int(u * (high - low + 1)), high - low)
    if distribution in ("uniform", "q_uniform"):
        value = low + u * (high - low)
    elif distribution in ("log_uniform", "q_log_uniform"):
        value = math.exp(low + u * (high - low))
    elif distribution in ("log_uniform_values", "q_log_uniform_values"):
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    elif distribution == "inv_log_uniform":
        value = math.exp(-(low + (1 - u) * (high - low)))
    elif distribution == "inv_log_uniform_values":
        value = math.exp(math.log(high) - (1 - u) * (math.log(high) - math.log(low)))
    elif distribution in ("normal", "q_normal"):
        value = settings["mu"] + settings["sigma"] * float(special.ndtri(max(u, SMALLEST_DRAW)))
    elif distribution in ("log_normal", "q_log_normal"):
        value = math.exp(settings["mu"] + settings["sigma"] * float(special.ndtri(max(u, SMALLEST_DRAW))))
    elif distribution in ("beta", "q_beta"):
        value = float(special.betaincinv(settings["a"], settings["b"], u))
    else:
        raise ValueError(f"parameters.{parameter.name}: unknown distribution {distribution!r}")
    return quantize(value, settings["q"]) if distribution.startswith("q_") else value


def quantize(value: float, q: float | int) -> float | int:
    """``round(value / q) * q``, an int when ``q`` is an int (as W&B returns it)."""
    rounded = round(value / q) * q
    return int(rounded) if isinstance(q, int) else round(float(rounded), _decimals(q))


def nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """``{("a", "b"): 1, ("c",): 2}`` -> ``{"a": {"b": 1}, "c": 2}``."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        level = nested
        for key in path[:-1]:
            level = level.setdefault(key, {})
        level[path[-1]] = value
    return nested


def value_key(value: Any) -> str:
    """A key equal for equal values, ``1`` and ``1.0`` alike, ``True`` apart from ``1``."""

    def plain(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {str(key): plain(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [plain(inner) for inner in item]
        return item

    return json.dumps(plain(value), sort_keys=True, default=str)
