"""The summary a sweep trial leaves: its configuration and final metrics, in a schema of ours.

A program run by ``sodeep sweep run`` calls :func:`write_trial_summary` once at its end; the
runner tells it where through ``SODEEP_SWEEP_TRIAL_SUMMARY`` (outside a sweep the call does
nothing).  ``sodeep sweep report`` reads these files and nothing of W&B's.  The schema,
``sodeep-trial/1``::

    {"schema": "sodeep-trial/1",
     "sweep": "brainage-presets", "trial": "0003",     # from the runner; null outside a sweep
     "params": {"losses": "l1", "seeds": 1},             # the sweep's parameters of this trial
     "config": {...},                                    # the program's full configuration
     "metrics": {"mae": 4.21, "spearman": 0.93},         # final numbers (NaN and inf: null)
     "folds": [{"fold": 0, "seed": 1, "metrics": {"mae": 4.3}}, ...],   # optional
     "status": "finished",                               # or "failed"
     "seconds": 81.2}                                    # the trial's running time, all attempts

``folds`` holds repeated measurements inside one trial (cross-validation folds): every key but
``metrics`` identifies the fold, and the report averages and pairs over them.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
    >>> _ = write_trial_summary({"lr": 0.1}, {"loss": 0.5}, path)
    >>> read_trial_summary(path)["metrics"]
    {'loss': 0.5}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA = "sodeep-trial/1"
STATUSES = ("finished", "failed")
#: Set by the runner for each trial: where the summary goes, the sweep's and the trial's names,
#: the trial's parameters (JSON) and its start (seconds since the epoch; for a resumed trial, that
#: start moved back by the seconds its stopped attempts ran).
SUMMARY_VARIABLE = "SODEEP_SWEEP_TRIAL_SUMMARY"
SWEEP_VARIABLE = "SODEEP_SWEEP_NAME"
TRIAL_VARIABLE = "SODEEP_SWEEP_TRIAL"
PARAMS_VARIABLE = "SODEEP_SWEEP_PARAMS"
STARTED_VARIABLE = "SODEEP_SWEEP_STARTED"


def trial_summary(
    config: Any,
    metrics: Mapping[str, Any],
    *,
    folds: Sequence[Mapping[str, Any]] | None = None,
    status: str = "finished",
    seconds: float | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The summary as a JSON-able dict; sweep, trial, parameters and start time come from
    ``environment`` (default ``os.environ``), as the runner set them."""
    environment = os.environ if environment is None else environment
    if status not in STATUSES:
        raise ValueError(f"status must be one of {list(STATUSES)}, got {status!r}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name: number, got a {type(metrics).__name__}")
    if seconds is None and environment.get(STARTED_VARIABLE):
        seconds = time.time() - float(environment[STARTED_VARIABLE])
    _check_metric_values(metrics, "metrics")
    summary = {
        "schema": SCHEMA,
        "sweep": environment.get(SWEEP_VARIABLE),
        "trial": environment.get(TRIAL_VARIABLE),
        "params": json.loads(environment.get(PARAMS_VARIABLE) or "{}"),
        "config": _plain(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config),
        "metrics": _plain(dict(metrics)),
        "status": status,
        "seconds": seconds,
    }
    if folds is not None:
        for index, fold in enumerate(folds):
            if not isinstance(fold, Mapping) or not isinstance(fold.get("metrics"), Mapping):
                raise ValueError(f"folds[{index}] must be a mapping with a metrics mapping, got {fold!r}")
            _check_metric_values(fold["metrics"], f"folds[{index}] metrics")
        summary["folds"] = _plain([dict(fold) for fold in folds])
    return summary


def write_trial_summary(
    config: Any,
    metrics: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    folds: Sequence[Mapping[str, Any]] | None = None,
    status: str = "finished",
    seconds: float | None = None,
) -> Path | None:
    """Write the trial's summary to ``path`` (default: ``$SODEEP_SWEEP_TRIAL_SUMMARY``; unset
    outside a sweep, and then nothing is written and ``None`` returned), atomically."""
    from sodeep.files import atomic_write_json

    path = path if path is not None else os.environ.get(SUMMARY_VARIABLE)
    if not path:
        return None
    return atomic_write_json(path, trial_summary(config, metrics, folds=folds, status=status, seconds=seconds))


def read_trial_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A summary file, checked to be ours (``schema``, ``status`` and ``metrics``)."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"), parse_float=_float_in_range)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON trial summary: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(summary, dict) or summary.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a {SCHEMA} trial summary")
    if summary.get("status") not in STATUSES or not isinstance(summary.get("metrics"), dict):
        raise ValueError(f"{path}: a {SCHEMA} summary needs a status in {list(STATUSES)} and a metrics mapping")
    try:
        _check_metric_values(summary["metrics"], "metrics")
        if not isinstance(summary.get("params", {}), dict):
            raise TypeError(f"params must be a mapping of name: value, got {summary['params']!r}")
        folds = summary.get("folds", [])
        if not isinstance(folds, list):
            raise TypeError(f"folds must be a list of mappings, got {folds!r}")
        for index, fold in enumerate(folds):
            _check_metric_values(fold.get("metrics") if isinstance(fold, dict) else None, f"folds[{index}] metrics")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
    summary.setdefault("params", {})
    return summary


def _float_in_range(text: str) -> float:
    """A JSON number as a float, refused where it overflows (``1e400``) rather than read as inf."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is beyond the range of a float")
    return value


def _fits_a_float(number: int) -> bool:
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def _check_metric_values(metrics: Any, where: str) -> None:
    """Metric values are numbers (NumPy and torch scalars too) or missing (None, NaN); a bool or
    a string is refused, so that no table silently drops it."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{where} must be a mapping of name: number, got {type(metrics).__name__}")
    if "" in metrics:
        raise ValueError(f"{where}: a metric needs a name, got the empty string")
    for name, value in metrics.items():
        plain = _plain(value)
        if plain is not None and (isinstance(plain, bool) or not isinstance(plain, (int, float))):
            raise ValueError(f"{where}: {name} must be a number, got {value!r}")
        if isinstance(plain, int) and not _fits_a_float(plain):
            raise ValueError(f"{where}: {name} is beyond the range of a float")


def reaches_target(metric: Mapping[str, Any] | None, summary: Mapping[str, Any]) -> bool:
    """Whether a finished summary's value of the sweep ``metric`` (``{"name", "goal", "target"}``)
    reached its target (``<=`` when the goal is to minimize, ``>=`` to maximize)."""
    metric = metric or {}
    value, target = summary["metrics"].get(metric.get("name")), metric.get("target")
    if target is None or not isinstance(value, (int, float)) or summary["status"] != "finished":
        return False
    return value <= target if metric.get("goal", "minimize") == "minimize" else value >= target


def is_finished(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a readable summary with status ``finished``."""
    try:
        return read_trial_summary(path)["status"] == "finished"
    except (OSError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """JSON-able: non-finite floats become None, arrays lists, anything else unknown ``str``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(inner) for inner in value]
    if isinstance(value, (bool, str, int)) or value is None:
        return value
    if callable(getattr(value, "tolist", None)):  # numpy and torch scalars and arrays
        return _plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def read_sweep_record(path: Path, advice: str) -> dict[str, Any]:
    """A sweep folder's ``sweep.json``: a mapping whose ``spec``, if any, is a mapping too; a
    ``ValueError`` naming ``path`` (and ending in ``advice``) for any other file."""
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not JSON text"
        raise ValueError(f"{path} is not a sweep record ({reason}); {advice}") from None
    if not isinstance(held, dict) or not isinstance(held.get("spec", {}), dict):
        raise ValueError(f"{path} is not a sweep record (not a mapping with a spec); {advice}")
    return held


def trials_beyond_cap(folder: Path, run_cap: Any) -> list[str]:
    """The trial folders under ``folder/trials`` that a sweep capped at ``run_cap`` would not have
    started (numbered ``run_cap`` or above): left by a run with a larger cap.  ``[]`` without a cap."""
    trials = Path(folder) / "trials"
    if not isinstance(run_cap, int) or isinstance(run_cap, bool) or not trials.is_dir():
        return []
    return sorted(
        (path.name for path in trials.iterdir() if path.is_dir() and path.name.isdigit() and int(path.name) >= run_cap),
        key=int,
    )
