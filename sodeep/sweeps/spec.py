"""A W&B sweep file, read and checked: the same YAML that ``wandb sweep`` takes.

The keys and the parameter forms are W&B's (https://docs.wandb.ai/models/sweeps/sweep-config-keys,
and the schema of the open-source ``sweeps`` package): ``program`` or ``command``, ``method``,
``metric``, ``parameters``, ``run_cap``, ``early_terminate`` and the descriptive keys.  Every
problem raises a one-line ``ValueError`` that names the key.

Example:
    >>> spec = sweep_from_mapping({"method": "grid", "program": "train.py",
    ...                            "parameters": {"lr": {"values": [0.1, 0.01]}, "seed": {"min": 0, "max": 2}}})
    >>> spec.name, [(p.name, p.distribution) for p in spec.parameters]
    ('sweep', [('lr', 'categorical'), ('seed', 'int_uniform')])
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sodeep.config import checking_yaml_settings, read_yaml_mapping, unknown_keys_message, yaml_reading

METHODS = ("grid", "random", "bayes")
#: The macros W&B's agent replaces in ``command`` (each must be a whole item of the list).
MACROS = (
    "env",
    "interpreter",
    "program",
    "args",
    "args_no_equals",
    "args_no_hyphens",
    "args_no_boolean_flags",
    "args_json",
    "args_json_file",
    "args_append_hydra",
    "args_override_hydra",
)
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
#: Keys W&B accepts at the top of a sweep file and that run offline as they do online.
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "program",
    "command",
    "method",
    "metric",
    "parameters",
    "run_cap",
    "early_terminate",
    "entity",
    "project",
    "controller",
    "apiVersion",
    "kind",
)
#: Keys W&B accepts that need its server (Launch, custom multi-objective schedulers).
SERVER_ONLY_KEYS = ("job", "image_uri", "metrics", "scheduler")
METRIC_KEYS = ("name", "goal", "target", "impute", "impute_while_running")
#: The keys of ``early_terminate`` (W&B's hyperband, the one type its schema has).
EARLY_TERMINATE_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

#: Each distribution: (required keys, optional keys with their W&B defaults).
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w_probabilities": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform": (("min", "max"), {}),
    "log_uniform_values": (("min", "max"), {}),
    "inv_log_uniform": (("min", "max"), {}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "q_log_uniform": (("min", "max"), {"q": 1.0}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
#: Distributions whose ``min``/``max`` are values (W&B's ``*_values``), hence > 0.
POSITIVE_BOUNDS = ("log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values")


@dataclass(frozen=True)
class Parameter:
    """One leaf of ``parameters``: its dotted ``path`` (nested names joined), its W&B
    ``distribution`` and its settings with W&B's defaults filled in."""

    path: tuple[str, ...]
    distribution: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        return ".".join(self.path)


#: Longest sweep folder name, in bytes: file systems take 255.
FOLDER_NAME_BYTES = 120


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file.  ``parameters`` are the leaves sorted by path, the order in which
    W&B's grid walks them (the last one varies fastest); ``mapping`` is the file as read."""

    name: str
    method: str
    parameters: tuple[Parameter, ...]
    command: tuple[str, ...]
    program: str | None
    metric: dict[str, Any] | None
    run_cap: int | None
    early_terminate: dict[str, Any] | None
    mapping: dict[str, Any]
    source: str

    @property
    def folder_name(self) -> str:
        """``name`` as a folder name: characters other than letters (of any script), digits and
        ``_.-`` become ``-``, then ``-`` and ``.`` at either end go (a leading one reads as a
        flag, or hides the folder); accents composed (NFC: ``é``, also where typed as ``e`` and a
        combining accent), and at most :data:`FOLDER_NAME_BYTES` bytes of UTF-8."""
        name = re.sub(r"[^\w.-]", "-", unicodedata.normalize("NFC", self.name))
        name = name.encode()[:FOLDER_NAME_BYTES].decode(errors="ignore")  # no character cut in two
        return name.strip("-.") or "sweep"

    def top_level_names(self) -> list[str]:
        """The names under ``parameters`` (a nested parameter is one name, its value a dict)."""
        return list(dict.fromkeys(parameter.path[0] for parameter in self.parameters))


#: Distributions whose ``min``/``max`` are natural logarithms of the values drawn.
LOG_BOUNDS = ("log_uniform", "inv_log_uniform", "q_log_uniform")


def spec_warnings(spec: SweepSpec) -> list[str]:
    """Lines about settings W&B accepts that are probably not meant: a natural-log distribution's
    bounds written as values, i.e. both positive and either at most 1 or a decade or more apart
    (``min: 1e-4, max: 0.1`` draws ``e**1e-4`` to ``e**0.1``, about 1 to 1.1; ``min: 16, max: 512``
    draws up to ``e**512``).

    Example:
        >>> spec = sweep_from_mapping({"method": "random", "program": "train.py", "parameters": {
        ...     "lr": {"distribution": "log_uniform", "min": 1e-4, "max": 0.1}}})
        >>> (warning,) = spec_warnings(spec)
        >>> "draws 1.0001 to 1.1052" in warning, warning.endswith("write distribution: log_uniform_values")
        (True, True)
    """
    lines = [line for parameter in spec.parameters for line in _one_rounded_value(parameter, spec.source)]
    for parameter in spec.parameters:
        low, high = parameter.settings.get("min"), parameter.settings.get("max")
        if parameter.distribution not in LOG_BOUNDS or not (_is_number(low) and _is_number(high)):
            continue
        if not (0 < low < high and (high <= 1 or high >= 10 * low)):
            continue
        ends = (-high, -low) if parameter.distribution == "inv_log_uniform" else (low, high)
        drawn = [_exp(end) for end in ends]
        described = f"{drawn[0]:.5g} to {drawn[1]:.5g}"
        if "q" in parameter.settings:
            q = parameter.settings["q"]
            rounded = [round(value / q) * q if math.isfinite(value) else value for value in drawn]
            described += f", rounded to multiples of q = {q:g}: {rounded[0]:.5g} to {rounded[1]:.5g}"
        lines.append(
            f"warning: {spec.source}: parameters.{parameter.name}: {parameter.distribution}'s min and max are "
            f"natural logarithms, so it draws {described}; for values from {low:g} to {high:g} write "
            f"distribution: {parameter.distribution}_values"
        )
    return lines


#: The ends of the values each bounded q_ distribution draws, from its min and max.
_Q_RANGES = {
    "q_uniform": lambda low, high: (low, high),
    "q_log_uniform": lambda low, high: (_exp(low), _exp(high)),
    "q_log_uniform_values": lambda low, high: (low, high),
}


def _one_rounded_value(parameter: Parameter, source: str) -> list[str]:
    """A warning when rounding to ``q`` leaves a ``q_`` distribution a single value."""
    ends = _Q_RANGES.get(parameter.distribution)
    low, high, q = (parameter.settings.get(key) for key in ("min", "max", "q"))
    if ends is None or not all(_is_number(value) for value in (low, high, q)) or q <= 0:
        return []
    drawn = ends(low, high)
    if not all(math.isfinite(value) for value in drawn):
        return []
    first, last = (round(value / q) * q for value in drawn)
    if first != last:
        return []
    return [
        f"warning: {source}: parameters.{parameter.name}: {parameter.distribution} rounds every draw to "
        f"{first:g} (q = {q:g}); lower q to draw several values"
    ]


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check the sweep YAML at ``path``; its name defaults to the file's stem."""
    path = Path(path)
    return sweep_from_mapping(read_yaml_mapping(path, "sweep"), source=str(path), default_name=path.stem)


def sweep_from_mapping(mapping: dict[str, Any], source: str = "the sweep", default_name: str = "sweep") -> SweepSpec:
    """Check a sweep mapping (as W&B's schema does, one line per problem) and build the spec.  A
    sweep is a YAML document, so a refused value is also said as YAML reads it."""
    with checking_yaml_settings():
        return _checked_sweep(mapping, source, default_name)


def _checked_sweep(mapping: dict[str, Any], source: str, default_name: str) -> SweepSpec:
    if not isinstance(mapping, dict):
        raise ValueError(f"{source} must hold a mapping, got a {type(mapping).__name__}")
    if not mapping:
        raise ValueError(f"{source} holds no settings: a sweep file gives method, parameters and a command or program")
    server_only = [key for key in SERVER_ONLY_KEYS if key in mapping]
    if server_only:
        raise ValueError(
            f"{source}: {server_only[0]!r} needs W&B's server (Launch or a custom scheduler); run it online"
        )
    unknown = sorted(set(mapping) - set(TOP_LEVEL_KEYS), key=str)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, list(TOP_LEVEL_KEYS), source))
    method = mapping.get("method")
    if method not in METHODS:
        raise ValueError(f"{source}: method must be one of {list(METHODS)}, got {method!r}")
    name = mapping.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: name must be a non-empty string, got {name!r}")
    program = mapping.get("program")
    if program is not None and not isinstance(program, str):
        raise ValueError(f"{source}: program must be a path, got {program!r}")
    command = _check_command(mapping.get("command"), program, source)
    run_cap = mapping.get("run_cap")
    if run_cap is not None and not (_is_integer(run_cap) and run_cap >= 1):
        raise ValueError(f"{source}: run_cap must be an integer >= 1, got {run_cap!r}{yaml_reading(run_cap, 'number')}")
    early_terminate = _check_early_terminate(mapping.get("early_terminate"), source)
    raw_parameters = mapping.get("parameters")
    if not isinstance(raw_parameters, dict) or not raw_parameters:
        raise ValueError(f"{source}: parameters must be a non-empty mapping of name: settings")
    parameters = sorted(_leaves(raw_parameters, (), source), key=lambda parameter: parameter.path)
    return SweepSpec(
        name=name.strip(),
        method=method,
        parameters=tuple(parameters),
        command=command,
        program=program,
        metric=_check_metric(mapping.get("metric"), method, source),
        run_cap=run_cap,
        early_terminate=early_terminate,
        mapping=mapping,
        source=source,
    )


def _check_command(command: Any, program: str | None, source: str) -> tuple[str, ...]:
    if command is None:
        if program is None:
            raise ValueError(
                f"{source}: give program (run as ${{env}} ${{interpreter}} ${{program}} ${{args}}) or command"
            )
        return DEFAULT_COMMAND
    if not isinstance(command, list) or not command:
        raise ValueError(f"{source}: command must be a non-empty list of words, got {command!r}")
    for index, word in enumerate(command):
        if isinstance(word, (dict, list)) or word is None:
            raise ValueError(f"{source}: command[{index}] must be a word, got {word!r}")
        text = str(word)
        if text.startswith("${") and text.endswith("}") and not text.startswith("${envvar:"):
            macro = text[2:-1]
            if macro not in MACROS:
                raise ValueError(f"{source}: command[{index}] is the unknown macro {text}; known: {list(MACROS)}")
            if macro == "program" and program is None:
                raise ValueError(f"{source}: command[{index}] is ${{program}} but the sweep has no program")
    return tuple(str(word) for word in command)


def _check_early_terminate(early_terminate: Any, source: str) -> dict[str, Any] | None:
    """``early_terminate`` as W&B's schema takes it (type hyperband; ``min_iter``, or ``max_iter``
    and ``s``), so that a file run offline also runs under ``wandb agent``."""
    if early_terminate is None:
        return None
    where = f"{source}: early_terminate"
    if not isinstance(early_terminate, dict):
        raise ValueError(f"{where} must be a mapping, got {early_terminate!r}")
    unknown = sorted(set(early_terminate) - set(EARLY_TERMINATE_KEYS), key=str)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, list(EARLY_TERMINATE_KEYS), where))
    if early_terminate.get("type") != "hyperband":
        raise ValueError(f"{where}.type must be hyperband, got {early_terminate.get('type')!r}")
    if "min_iter" not in early_terminate and not {"max_iter", "s"} <= set(early_terminate):
        raise ValueError(f"{where} needs min_iter, or max_iter and s")
    for key, valid, wanted in (
        ("min_iter", lambda v: _is_integer(v) and v >= 1, "an integer >= 1"),
        ("max_iter", _is_integer, "an integer"),
        ("s", _is_number, "a number"),
        ("eta", lambda v: _is_number(v) and v > 1, "a number > 1"),
        ("strict", lambda v: isinstance(v, bool), "true or false"),
    ):
        if key in early_terminate and not valid(early_terminate[key]):
            raise ValueError(
                f"{where}.{key} must be {wanted}, got {early_terminate[key]!r}{yaml_reading(early_terminate[key], 'number')}"
            )
    return early_terminate


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metric(metric: Any, method: str, source: str) -> dict[str, Any] | None:
    if metric is None:
        if method == "bayes":
            raise ValueError(f"{source}: method bayes needs metric: {{name: ..., goal: minimize|maximize}}")
        return None
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise ValueError(f"{source}: metric must be a mapping with a name, got {metric!r}")
    unknown = sorted(set(metric) - set(METRIC_KEYS), key=str)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, list(METRIC_KEYS), f"{source} metric"))
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"{source}: metric.goal must be minimize or maximize, got {goal!r}")
    target = metric.get("target")
    if target is not None and not _is_number(target):
        raise ValueError(f"{source}: metric.target must be a number, got {target!r}")
    return {**metric, "goal": goal}


def _leaves(parameters: dict[str, Any], prefix: tuple[str, ...], source: str) -> list[Parameter]:
    leaves = []
    for name, settings in parameters.items():
        path = (*prefix, str(name))
        where = f"{source}: parameters.{'.'.join(path)}"
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(f"{where}: a name must match {NAME_PATTERN.pattern}")
        if not isinstance(settings, dict):
            raise ValueError(f"{where} must be a mapping such as {{values: [...]}}, got {settings!r}")
        if "parameters" in settings and "distribution" not in settings:
            if (
                set(settings) != {"parameters"}
                or not isinstance(settings["parameters"], dict)
                or not settings["parameters"]
            ):
                raise ValueError(f"{where}: a nested parameter holds only a non-empty parameters mapping")
            leaves += _leaves(settings["parameters"], path, source)
        else:
            leaves.append(check_parameter(path, settings, where))
    return leaves


def infer_distribution(settings: dict[str, Any]) -> str | None:
    """W&B's reading of a parameter without ``distribution``: ``value`` -> constant, ``values``
    -> categorical (with ``probabilities``: categorical_w_probabilities), integer ``min``/``max``
    -> int_uniform, other numbers -> uniform."""
    if "distribution" in settings:
        return settings["distribution"]
    if "value" in settings:
        return "constant"
    if "values" in settings:
        return "categorical_w_probabilities" if "probabilities" in settings else "categorical"
    if "min" in settings and "max" in settings:
        integers = all(isinstance(settings[key], int) and not isinstance(settings[key], bool) for key in ("min", "max"))
        return "int_uniform" if integers else "uniform"
    return None


def check_parameter(path: tuple[str, ...], settings: dict[str, Any], where: str) -> Parameter:
    """One parameter's settings, checked against its distribution, defaults filled in."""
    distribution = infer_distribution(settings)
    if distribution is None:
        raise ValueError(
            f"{where}: give value, values, min and max, or a distribution; got keys {sorted(settings)} (a nested "
            "parameter puts its own under `parameters:`; a fixed dict is `value: {...}`)"
        )
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"{where}: unknown distribution {distribution!r}; known: {list(DISTRIBUTIONS)}")
    required, optional = DISTRIBUTIONS[distribution]
    missing = [key for key in required if key not in settings]
    if missing:
        raise ValueError(f"{where}: distribution {distribution} needs {missing[0]}")
    unknown = sorted(set(settings) - {"distribution", *required, *optional}, key=str)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, sorted({"distribution", *required, *optional}), where))
    filled = {**optional, **{key: value for key, value in settings.items() if key != "distribution"}}
    for key in filled.keys() - {"value", "values", "probabilities"}:
        if not _is_number(filled[key]):
            raise ValueError(
                f"{where}.{key} must be a number, got {filled[key]!r}{yaml_reading(filled[key], 'number')}"
            )
    _check_ranges(distribution, filled, where)
    return Parameter(path=path, distribution=distribution, settings=filled)


def _check_ranges(distribution: str, settings: dict[str, Any], where: str) -> None:
    if "values" in settings and (not isinstance(settings["values"], list) or not settings["values"]):
        raise ValueError(f"{where}.values must be a non-empty list, got {settings['values']!r}")
    if distribution == "categorical_w_probabilities":
        probabilities = settings["probabilities"]
        if not isinstance(probabilities, list) or len(probabilities) != len(settings["values"]):
            raise ValueError(f"{where}.probabilities must be a list as long as values, got {probabilities!r}")
        if not all(_is_number(p) and p >= 0 for p in probabilities) or not math.isclose(sum(probabilities), 1.0):
            raise ValueError(f"{where}.probabilities must be numbers >= 0 that sum to 1, got {probabilities!r}")
    if distribution == "int_uniform" and not all(float(settings[key]).is_integer() for key in ("min", "max")):
        raise ValueError(
            f"{where}: int_uniform needs integer min and max, got {settings['min']!r}, {settings['max']!r}"
        )
    if "min" in settings and not settings["min"] < settings["max"]:
        raise ValueError(f"{where}: min {settings['min']!r} is not less than max {settings['max']!r}")
    if distribution in POSITIVE_BOUNDS and not settings["min"] > 0:
        raise ValueError(
            f"{where}: {distribution} takes values as min and max, so min must be > 0, got {settings['min']!r}"
        )
    for key in ("sigma", "a", "b"):
        if key in settings and settings[key] < 0:
            raise ValueError(f"{where}.{key} must be >= 0, got {settings[key]!r}")
    if "q" in settings and not settings["q"] > 0:
        raise ValueError(f"{where}.q must be > 0, got {settings['q']!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
