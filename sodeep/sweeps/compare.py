"""The statistics of a sweep report: settings, their units, means and paired differences.

A *setting* is one combination of the sweep's parameters other than those that repeat it
(``over``: seeds, folds); its *units* are its repeated measurements: one per trial, or one per
fold where a summary lists ``folds``.  For every numeric metric: mean +- sd (``ddof=1``) over the
units and, against a baseline setting (the same setting with some parameters at given values),
the paired differences over the units both share, their sd and a two-sided Wilcoxon signed-rank
p-value (:func:`scipy.stats.wilcoxon`; none with fewer than two pairs or no non-zero difference).

Example:
    >>> summaries = [{"trial": str(s), "params": {"lr": lr, "seed": s}, "metrics": {"loss": lr * (s + 1)}}
    ...              for lr in (0.1, 0.2) for s in range(3)]
    >>> rows = setting_rows(group_settings(summaries, ["seed"]), ["loss"], {"lr": "0.1"})
    >>> round(rows[1]["loss_mean"], 3), round(rows[1]["loss_diff_mean"], 3), rows[1]["loss_pairs"]
    (0.4, 0.2, 3)
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sodeep.sweeps.expand import value_key


@dataclass
class Setting:
    """One parameter setting: ``params`` (flattened, ``over`` left out) and its units' metrics."""

    params: dict[str, Any]
    trials: list[str] = field(default_factory=list)
    units: dict[str, dict[str, float]] = field(default_factory=dict)
    #: What tells apart the units within a trial: the keys of its summary's folds (``seed``, ``fold``).
    fold_keys: list[str] = field(default_factory=list)
    #: Trials of this setting that started but left no finished summary (failed or stopped): their
    #: units are in neither ``n`` nor its missing values.
    lost_trials: list[str] = field(default_factory=list)

    def values(self, metric: str) -> dict[str, float]:
        """``{unit: value}`` of the units that have a finite value of ``metric``."""
        return {unit: metrics[metric] for unit, metrics in self.units.items() if _finite(metrics.get(metric))}


def shown_value(value: Any) -> str:
    """A parameter's value as the report shows it: ``true``/``false``/``null`` as YAML and the CSV
    write them (and as a sweep file names them), anything else as Python prints it."""
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted names: ``{"sorter": {"band": 8}}`` -> ``{"sorter.band": 8}``."""
    flat: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def group_settings(summaries: list[dict[str, Any]], over: list[str]) -> list[Setting]:
    """Settings in the order their first trial appears, each with its units."""
    settings: dict[str, Setting] = {}
    for summary in summaries:
        params = flatten(summary["params"] or summary.get("config") or {})
        kept = {name: value for name, value in params.items() if name not in over}
        setting = settings.setdefault(value_key(kept), Setting(kept))
        setting.trials.append(summary["trial"])
        repeat = {name: params.get(name) for name in over}
        for fold in summary.get("folds") or [{"metrics": summary["metrics"]}]:
            within = {key: value for key, value in fold.items() if key != "metrics"}
            setting.fold_keys += [key for key in within if key not in setting.fold_keys]
            identity = {**repeat, **within}
            unit = value_key(identity)
            if unit in setting.units:  # the same setting and repeat twice (say, a random sweep's draw)
                unit = f"{unit}#{summary['trial']}"
            setting.units[unit] = {name: value for name, value in fold["metrics"].items() if _finite(value)}
    return list(settings.values())


def add_lost_trials(settings: list[Setting], lost: dict[str, dict[str, Any]], over: list[str]) -> None:
    """Note ``lost`` trials (``{trial: params}``, started without a finished summary) in the
    :attr:`Setting.lost_trials` of the setting their parameters (``over`` aside) belong to; a
    setting none of whose trials finished is added, without units."""
    by_key = {value_key(setting.params): setting for setting in settings}
    for trial, params in lost.items():
        kept = {name: value for name, value in flatten(params).items() if name not in over}
        key = value_key(kept)
        if key not in by_key:
            by_key[key] = Setting(kept)
            settings.append(by_key[key])
        by_key[key].lost_trials.append(trial)


def metric_names(summaries: list[dict[str, Any]], first: str | None = None) -> list[str]:
    """Numeric metrics in the order they first appear, ``first`` (the sweep's metric) leading: a
    metric undefined in every trial (``null``, NaN) is one, whose values are all missing."""
    names: dict[str, None] = {}
    for summary in summaries:
        for fold in summary.get("folds") or [{"metrics": summary["metrics"]}]:
            names.update({name: None for name, value in fold["metrics"].items() if _number_or_undefined(value)})
    ordered = list(names)
    return sorted(ordered, key=lambda name: name != first) if first in names else ordered


def trial_only_metrics(summaries: list[dict[str, Any]]) -> list[str]:
    """Metrics that summaries with ``folds`` give for the whole trial alone, in none of its folds:
    the folds are then the units compared, and these metrics have none."""
    names: dict[str, None] = {}
    for summary in summaries:
        if summary.get("folds"):
            in_folds = {name for fold in summary["folds"] for name in fold["metrics"]}
            names.update({name: None for name in summary["metrics"] if name not in in_folds})
    return [name for name in names if name not in metric_names(summaries)]


def baseline_given(baseline: dict[str, str]) -> str:
    """The baseline as it is given: ``baseline=['losses=l1']`` (``--baseline losses=l1`` on the
    command line)."""
    return f"baseline={[f'{key}={value}' for key, value in baseline.items()]!r}"


def parse_baseline(items: list[str] | None, names: list[str] | None = None) -> dict[str, str]:
    """``["losses=l1"]`` -> ``{"losses": "l1"}``.  A JSON object value names nested parameters,
    as settings do (:func:`flatten`): ``['sorter={"band": 8}']`` -> ``{"sorter.band": "8"}``,
    unless ``KEY`` is itself one of the parameter ``names`` (whose values are then JSON text)."""
    baseline = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"baseline=[{item!r}]: it takes KEY=VALUE items, e.g. 'losses=l1'")
        try:
            nested = json.loads(value)
        except json.JSONDecodeError:
            if value.lstrip().startswith("{"):
                dotted = "" if key in (names or []) else f", or give {key}.NAME=VALUE"
                raise ValueError(
                    f"baseline=[{item!r}]: the value is not a JSON object (double quotes, e.g. "
                    f"'{key}={{\"softness\": 0.1}}'){dotted}"
                ) from None
            nested = None
        expand = isinstance(nested, dict) and nested and key not in (names or [])
        named = (
            {name: json.dumps(leaf) for name, leaf in flatten(nested, f"{key}.").items()} if expand else {key: value}
        )
        repeated = sorted(set(named) & set(baseline))
        if repeated:
            raise ValueError(f"baseline= gives {', '.join(repeated)} twice; give each parameter once")
        baseline.update(named)
    return baseline


def matches(value: Any, text: str) -> bool:
    """Whether a parameter value is what ``text`` names (as a flag writes it, or as JSON; a value
    that is JSON text matches the same JSON written otherwise)."""
    if str(value) == text:
        return True
    try:
        wanted = value_key(json.loads(text))
    except json.JSONDecodeError:
        return False
    if value_key(value) == wanted:
        return True
    try:
        return isinstance(value, str) and value_key(json.loads(value)) == wanted
    except json.JSONDecodeError:
        return False


def reference_for(setting: Setting, settings: list[Setting], baseline: dict[str, str]) -> Setting | None:
    """The setting equal to ``setting`` except for the baseline's parameters, at their values."""
    if not baseline:
        return None
    for candidate in settings:
        same = all(
            matches(candidate.params.get(name), baseline[name])
            if name in baseline
            else value_key(candidate.params.get(name)) == value_key(setting.params.get(name))
            for name in set(candidate.params) | set(setting.params)
        )
        if same:
            return candidate
    return None


def paired(setting: Setting, reference: Setting, metric: str) -> dict[str, float]:
    """Mean and sd of ``setting - reference`` over the units both have, with a Wilcoxon p-value."""
    mine, theirs = setting.values(metric), reference.values(metric)
    differences = np.array([mine[unit] - theirs[unit] for unit in mine if unit in theirs], dtype=float)
    p_value = math.nan
    if len(differences) >= 2 and np.any(differences != 0):
        import scipy.stats

        with warnings.catch_warnings():  # scipy's note that zero differences force the normal approximation
            warnings.simplefilter("ignore")
            p_value = float(scipy.stats.wilcoxon(differences).pvalue)
    return {
        "diff_mean": float(differences.mean()) if len(differences) else math.nan,
        "diff_sd": float(differences.std(ddof=1)) if len(differences) > 1 else math.nan,
        "pairs": len(differences),
        "wilcoxon_p": p_value,
    }


#: The statistics a report gives of each metric ``m``, as its columns ``m_n``, ``m_mean``, ...
STATISTICS = ("n", "mean", "sd", "missing", "diff_mean", "diff_sd", "pairs", "wilcoxon_p")


def parameter_column(name: str, metrics: list[str]) -> str:
    """The report's column of the parameter ``name``: its name, or ``parameter:NAME`` where the
    name is one of the report's own columns (``trials``, ``loss_n``, ...).

    Example:
        >>> [parameter_column(name, ["loss"]) for name in ("lr", "trials", "loss_n")]
        ['lr', 'parameter:trials', 'parameter:loss_n']
    """
    own = {"trials", "trials_without_results"} | {f"{metric}_{stat}" for metric in metrics for stat in STATISTICS}
    return f"parameter:{name}" if name in own else name


def setting_rows(settings: list[Setting], metrics: list[str], baseline: dict[str, str]) -> list[dict[str, Any]]:
    """One dict per setting: its parameters (each under :func:`parameter_column`), ``trials``,
    ``trials_without_results`` (started, without a finished summary) and, per metric, ``{m}_n``
    (units with a finite value), ``{m}_missing`` (units without: NaN, infinite or not reported),
    ``{m}_mean``, ``{m}_sd`` and, with a baseline, ``{m}_diff_mean``, ``{m}_diff_sd``,
    ``{m}_pairs`` and ``{m}_wilcoxon_p``."""
    names = sorted({name for setting in settings for name in setting.params})
    unknown = [key for key in baseline if key not in names]
    if unknown:
        differing = sorted(varying(settings)[0])
        raise ValueError(
            f"{baseline_given(baseline)}: {', '.join(unknown)} is not a "
            f"parameter that tells the settings apart; they differ in {differing or 'nothing (one setting)'} "
            "(parameters averaged over, over=, are not among them)"
        )
    changing, fixed = varying(settings)
    if baseline and not any(key in changing for key in baseline):  # each setting would be its own reference
        shown = ", ".join(f"{key} ({shown_value(fixed.get(key))})" for key in baseline)
        raise ValueError(
            f"{baseline_given(baseline)}: {shown} "
            f"{'has one value' if len(baseline) == 1 else 'have one value each'} in every setting, so each setting "
            f"would be compared with itself; the settings differ in {changing or 'nothing (one setting)'}"
        )
    if baseline and not any(all(matches(s.params.get(k), v) for k, v in baseline.items()) for s in settings):
        seen = {key: sorted({shown_value(s.params.get(key)) for s in settings}) for key in baseline}
        raise ValueError(f"{baseline_given(baseline)}: no setting has those values; values seen: {seen}")
    rows = []
    for setting in settings:
        row: dict[str, Any] = {parameter_column(name, metrics): value for name, value in setting.params.items()}
        row["trials"] = len(setting.trials)
        reference = reference_for(setting, settings, baseline)
        for metric in metrics:
            values = np.array(list(setting.values(metric).values()), dtype=float)
            row[f"{metric}_n"] = len(values)
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{metric}_missing"] = len(setting.units) - len(values)  # NaN, infinite or not reported
            if baseline:
                comparison = paired(setting, reference, metric) if reference not in (None, setting) else {}
                for key in ("diff_mean", "diff_sd", "pairs", "wilcoxon_p"):
                    row[f"{metric}_{key}"] = comparison.get(key, math.nan)
        row["trials_without_results"] = len(setting.lost_trials)
        rows.append(row)
    return rows


def varying(settings: list[Setting]) -> tuple[list[str], dict[str, Any]]:
    """Parameter names that differ between settings, and the fixed ones with their values."""
    names = list(dict.fromkeys(name for s in settings for name in s.params))
    changing = [name for name in names if len({value_key(s.params.get(name)) for s in settings}) > 1]
    fixed = {name: settings[0].params.get(name) for name in names if name not in changing}
    return changing, fixed


def _number_or_undefined(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe(values: dict[str, Any]) -> str:
    """``a=1.0 b=0.5 c=0.1235``: long floats to 4 significant digits."""
    return " ".join(f"{key}={_short(value)}" for key, value in values.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and len(repr(value)) > 8 else str(value)
