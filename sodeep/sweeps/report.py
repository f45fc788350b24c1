"""``sodeep sweep report``: compare the settings of a sweep from its trial summaries.

Reads ``trials/*/summary.json`` (:mod:`sodeep.sweeps.summary`), groups the trials into settings
and computes means and paired differences (:mod:`sodeep.sweeps.compare`), and writes
``report.csv`` (one row per setting), ``report.md`` and ``plots/<metric>.png``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from sodeep.files import atomic_write_text
from sodeep.run_folder import check_not_being_cleared, run_in_use
from sodeep.sweeps.compare import (
    Setting,
    add_lost_trials,
    describe,
    flatten,
    group_settings,
    metric_names,
    parameter_column,
    parse_baseline,
    setting_rows,
    shown_value,
    trial_only_metrics,
    varying,
)
from sodeep.sweeps.summary import reaches_target, read_trial_summary, trials_beyond_cap
from sodeep.wording import plural

DEFAULT_OVER = ("seed", "seeds", "fold")


def read_summaries(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The finished summaries under a sweep folder (``trials/*/summary.json``, else any
    ``summary.json`` of our schema below ``folder``) and counts by status."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.is_file():
            what = "a sweep file" if folder.suffix in (".yaml", ".yml") else "a file, not a sweep folder"
            raise ValueError(f"{folder} is {what}: report the folder a sweep run made, ROOT/<the sweep's name>")
        raise FileNotFoundError(f"no sweep folder at {folder}")
    for sweep in (folder.parent, folder.parent.parent):  # the trials folder, or one trial's
        if (
            folder.resolve() != sweep.resolve()
            and (sweep / "sweep.json").is_file()
            and folder.is_relative_to(sweep / "trials")
        ):
            raise ValueError(f"{folder} is inside the sweep folder {sweep}: report that folder")
    trials = folder / "trials"
    if not (folder / "sweep.json").is_file():
        inner = sorted(str(path.parent.relative_to(folder)) for path in folder.rglob("sweep.json"))
        if len(inner) > 1:
            raise ValueError(f"{folder} holds several sweep folders ({', '.join(inner)}): report one of them")
    paths = sorted(trials.glob("*/summary.json")) if trials.is_dir() else sorted(folder.rglob("summary.json"))
    summaries, counts = [], {"finished": 0, "failed": 0, "no summary": 0}
    named: set[str] = set()  # the sweeps that every summary read names, finished or not
    for path in paths:
        try:
            summary = read_trial_summary(path)
        except ValueError:
            if trials.is_dir():  # a trial's program wrote something else: that trial failed
                counts["failed"] += 1
                counts["unreadable"] = counts.get("unreadable", 0) + 1
            continue
        if summary.get("sweep") is not None:
            named.add(str(summary["sweep"]))
        counts[summary["status"]] += 1
        if summary["status"] == "finished":
            summaries.append({**summary, "trial": summary.get("trial") or path.parent.name})
    if trials.is_dir():
        counts["no summary"] = sum(
            1 for path in trials.iterdir() if path.is_dir() and not (path / "summary.json").exists()
        )
    record = _sweep_record(folder)
    beyond = trials_beyond_cap(folder, (record.get("spec") or {}).get("run_cap"))
    counts["beyond the cap"] = len(beyond)
    listed = record.get("trials")  # the trials of the last run (fewer with --count); None for Bayes
    size = record.get("size") if isinstance(record.get("size"), int) else None
    if isinstance(listed, list) or size is not None:
        started = (
            sum(1 for path in trials.iterdir() if path.is_dir() and path.name not in beyond) if trials.is_dir() else 0
        )
        counts["planned"] = max(size or 0, len(listed or []))
        counts["not started"] = max(counts["planned"] - started, 0)
    # A summary that names no sweep (written by a program outside the runner) belongs to this one.
    if len(named) > 1:
        raise ValueError(
            f"{folder} holds trials of several sweeps ({', '.join(sorted(named))}): report one sweep folder"
        )
    return summaries, counts


def lost_trial_params(folder: Path) -> dict[str, dict[str, Any]]:
    """``{trial: params}`` of the trials under ``folder/trials`` that started (``trial.json``) but
    left no finished summary: failed, or stopped before it."""
    lost: dict[str, dict[str, Any]] = {}
    for record_path in sorted((folder / "trials").glob("*/trial.json")):
        try:
            finished = read_trial_summary(record_path.parent / "summary.json")["status"] == "finished"
        except (OSError, ValueError):
            finished = False
        if finished:
            continue
        try:
            params = json.loads(record_path.read_text(encoding="utf-8")).get("params")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(params, dict):
            lost[record_path.parent.name] = params
    return lost


def default_over(summaries: list[dict[str, Any]]) -> list[str]:
    names = {name for s in summaries for name in flatten(s["params"] or {})}
    return [name for name in DEFAULT_OVER if name in names]


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV (columns in first-seen order; NaN and missing cells empty)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


#: Longest plot file name kept from a metric's name (a file system takes 255 bytes).
PLOT_NAME_LENGTH = 100


def safe_name(metric: str) -> str:
    """A metric name as a file name: ``val/rank_error`` -> ``val-rank_error``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", metric)


def plot_names(metrics: list[str]) -> dict[str, str]:
    """Each metric's plot file name: its :func:`safe_name`, made unique among ``metrics`` (``a/b``
    and ``a-b`` would share one), visible (no leading dot, nor a dash that reads as an option) and at most about
    :data:`PLOT_NAME_LENGTH` characters, by a short digest of the metric's own name where needed.

    Example:
        >>> plot_names(["mae", "a/b", "a-b"])
        {'mae': 'mae.png', 'a/b': 'a-b.png', 'a-b': 'a-b-d44362d6.png'}
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for metric in metrics:
        name = safe_name(metric)
        if name.startswith(".") or len(name) > PLOT_NAME_LENGTH or name in taken:
            digest = hashlib.sha256(metric.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            name = f"{name.lstrip('.-')[:PLOT_NAME_LENGTH] or 'metric'}-{digest}"
        taken.add(name)
        names[metric] = f"{name}.png"
    return names


def one_line(text: str) -> str:
    """``text`` with line breaks and other characters that are not printed shown as escapes
    (``a\\nb``), so that it stays on its Markdown line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # lossless, and a parameter reads as its flag does (1.0, not 1)
    return value if isinstance(value, str) else json.dumps(value)


def repeated_over(settings: list[Setting], over: list[str]) -> str:
    """What repeats a setting, in words: ``"seed"``, ``"seeds and folds"``, ``"trials"``: the
    parameters in ``over``, then the keys that tell apart the folds of a trial's summary, such as
    the seeds and folds of a trial that ran several seeds (``"trials"`` where nothing else does)."""
    words = list(over)
    if any(len(setting.units) > len(setting.trials) for setting in settings):
        for key in dict.fromkeys(key for setting in settings for key in setting.fold_keys):
            plural = key if key.endswith("s") else f"{key}s"
            if key not in words and plural not in words:
                words.append(plural)
        if len(words) == len(over):  # folds that name nothing
            words.append("folds")
    words = words or ["trials"]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0]


def markdown(
    name: str,
    settings: list[Setting],
    rows: list[dict[str, Any]],
    metrics: list[str],
    *,
    over: list[str],
    baseline: dict[str, str],
    counts: dict[str, int],
    goals: dict[str, str],
    plots: dict[str, str],
    command: str,
    notes: list[str] = (),
) -> str:
    """``report.md``: what was run (with ``notes``), then per metric a table of settings and its plot."""
    changing, fixed = varying(settings)
    repeats = repeated_over(settings, over)
    with_results = sum(1 for setting in settings if setting.trials)
    only_lost = f" ({with_results} with a finished trial)" if with_results < len(settings) else ""
    lines = [
        f"# Sweep {name}",
        "",
        f"Regenerate with `{command}`.",
        "",
        f"{len(settings)} setting{'' if len(settings) == 1 else 's'}{only_lost} from {counts['finished']} finished "
        f"trial{'' if counts['finished'] == 1 else 's'} "
        f"({counts['failed']} failed, {counts['no summary']} without a summary: "
        f"{'running, ' if counts.get('running') else ''}interrupted or not run); "
        f"mean +- sd over {repeats}.",
    ]
    if counts.get("unreadable"):
        lines[-1] += f" {counts['unreadable']} of the failed trials wrote a summary that could not be read."
    if counts.get("not started") and not counts.get("target reached"):
        lines[-1] += (
            f" **Partial:** {counts['not started']} of the sweep's {counts['planned']} trials {'has' if counts['not started'] == 1 else 'have'} not started; "
            "`sodeep sweep run` with the same file continues it."
        )
    lines += [line for note in notes for line in ("", note)]
    if fixed:
        lines += [
            "",
            "The same in every finished trial: "
            + ", ".join(f"`{key}={shown_value(value)}`" for key, value in fixed.items())
            + ".",
        ]
    if baseline:
        against = ", ".join(f"{key}={value}" for key, value in baseline.items())
        lines += [
            "",
            f"Differences are paired with the setting at {against} (other parameters equal), "
            f"over the {repeats} both have; p: two-sided Wilcoxon signed-rank test.",
        ]
        # A setting without a baseline twin (the baseline's own included) has no pairs at all: NaN.
        if rows and metrics and all(math.isnan(row[f"{metrics[0]}_pairs"]) for row in rows):
            lines[-1] += (
                f" **No setting has a baseline to pair with:** none other than those at {against} has a twin "
                "there with its other parameters equal (a random sweep's continuous parameters give none)."
            )
    elif changing:  # one setting has nothing to be paired with
        lines += ["", "No baseline: add `--baseline KEY=VALUE` for paired differences."]
    for metric in metrics:
        goal = f" ({goals[metric]})" if metric in goals else ""
        count_header = "n" if "n" not in changing else "n (count)"  # beside a parameter named n
        header = [*changing, count_header, "mean +- sd"] + (["difference +- sd", "pairs", "p"] if baseline else [])
        heading = f"## {one_line(metric)}{goal}"
        lines += ["", heading, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [shown_value(row.get(parameter_column(key, metrics))) for key in changing]
            missing = row[f"{metric}_missing"]
            count = f"{row[f'{metric}_n']} of {row[f'{metric}_n'] + missing}" if missing else str(row[f"{metric}_n"])
            lost = row["trials_without_results"]
            count += f" (+{lost} trial{'' if lost == 1 else 's'} without results)" if lost else ""
            cells += [count, _pm(row[f"{metric}_mean"], row[f"{metric}_sd"])]
            if baseline:
                cells += [
                    _pm(row[f"{metric}_diff_mean"], row[f"{metric}_diff_sd"], signed=True),
                    _number(row[f"{metric}_pairs"]),
                    _number(row[f"{metric}_wilcoxon_p"]),
                ]
            lines.append("| " + " | ".join(cells) + " |")
        incomplete = sum(1 for row in rows if row[f"{metric}_missing"])
        if incomplete:
            lines += [
                "",
                f'**Missing values:** n "k of m" in {incomplete} setting{"" if incomplete == 1 else "s"}: '
                f"of the m units it repeats over ({repeats}), m - k reported `{metric}` as NaN or infinite "
                "(a diverged run?) or not at all; mean and sd are over the other k.",
            ]
        losing = sum(1 for row in rows if row["trials_without_results"])
        if losing:
            again = (
                "with the target reached, `sodeep sweep run` with the same file runs again only those stopped "
                "before their end, not those that failed"
                if counts.get("target reached")
                else "`sodeep sweep run` with the same file runs them again"
            )
            again = "report again once the sweep has ended" if counts.get("running") else again
            lines += [
                "",
                f"**Trials without results:** in {losing} setting{'' if losing == 1 else 's'}, trials "
                f"{'are running, ' if counts.get('running') else ''}failed or stopped before their summary "
                "(`trials/<id>/output.log` says why): their units are in neither n "
                f"nor its m; {again}.",
            ]
        if metric in plots:
            lines += ["", f"![{metric}]({plots[metric]})"]
    return "\n".join(lines) + "\n"


def report_notes(
    counts: dict[str, int], metric: dict[str, Any] | None, available: list[str], trial_only: list[str] = ()
) -> list[str]:
    """Lines for what a reader of the tables would otherwise miss: a sweep still runs in the folder
    (``counts["running"]``), the sweep's metric reached its
    target (``counts["target reached"]``: the trials not started will not run), is in no summary
    (nor among the ``trial_only`` metrics, which the report names itself), or no trial reported a
    metric at all."""
    notes = []
    name = (metric or {}).get("name")
    if counts.get("running"):
        notes.append(
            "**Still running:** the sweep, or one of its trials, runs in this folder: the tables hold the trials "
            "finished so far."
        )
    if counts.get("target reached"):
        comparison = "<=" if metric.get("goal", "minimize") == "minimize" else ">="
        waiting = counts.get("not started", 0)
        rest = f": its {plural(waiting, 'trial')} not started will not run" if waiting else ""
        notes.append(
            f"**Target reached:** a trial's `{name}` {comparison} {metric['target']}, so the sweep stops{rest}."
        )
    if counts.get("beyond the cap"):
        beyond = counts["beyond the cap"]
        notes.append(
            f"**Beyond run_cap:** {plural(beyond, 'trial')} of the folder {'was' if beyond == 1 else 'were'} started "
            f"by a run with a larger `run_cap` than the sweep file's; {'it is' if beyond == 1 else 'they are'} "
            "reported with the others."
        )
    if not available:
        notes.append(
            "**No metrics:** no finished trial reported a number; its program writes them with "
            "`sodeep.sweeps.write_trial_summary(config, metrics)`."
        )
    elif name and name not in available and name not in trial_only:
        notes.append(
            f"**Note:** the sweep's metric `{name}` is in no finished trial's summary; they report "
            f"{', '.join(f'`{other}`' for other in available)}."
        )
    return notes


def write_report(
    folder: str | Path,
    *,
    over: list[str] | None = None,
    baseline: list[str] | None = None,
    metrics: list[str] | None = None,
    plots: bool = True,
    command: str | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.csv`` and ``plots/`` into the sweep ``folder``; their paths.

    ``over``: parameters that repeat a setting (default: ``seed``, ``seeds``, ``fold`` where
    present).  ``baseline``: ``KEY=VALUE`` items.  ``metrics``: those to report (default: every
    numeric one, the sweep's metric first).  ``plots``: also draw them (matplotlib, if installed).
    PNGs in ``plots/`` that this report does not draw are removed.
    """
    folder = Path(folder)
    check_not_being_cleared(folder)
    for name, value in (("over", over), ("baseline", baseline), ("metrics", metrics)):
        if isinstance(value, (str, bytes)):  # a list of one, e.g. baseline=["losses=l1"]
            hint = f": give [{value!r}]" if isinstance(value, str) else ""
            raise TypeError(f"{name} must be a list of strings, got {type(value).__name__} {value!r}{hint}")
    summaries, counts = read_summaries(folder)
    counts["running"] = int(sweep_running(folder))  # trials without a summary may be running now
    if not summaries and not (folder / "sweep.json").is_file() and not (folder / "trials").is_dir():
        raise ValueError(
            f"{folder} is not a sweep folder (no sweep.json, no trials/) and holds no trial summary "
            "(summary.json): report the folder a sweep run made for the sweep, its root's <name> folder"
        )
    if not summaries:
        raise ValueError(
            f"{folder} holds no finished trial summary (trials/*/summary.json): {counts['failed']} failed, "
            f"{counts['no summary']} without a summary"
            + ("; a sweep is running in it: report it once trials have finished" if counts["running"] else "")
        )
    sweep = _sweep_record(folder)
    over = default_over(summaries) if over is None else list(over)
    known = sorted({name for s in summaries for name in flatten(s["params"] or {})})
    unknown = [name for name in over if name not in known]
    if unknown:
        raise ValueError(f"over=[{unknown[0]!r}]: not a parameter of the sweep; parameters: {known}")
    chosen = parse_baseline(baseline, known)
    sweep_metric = (sweep.get("metric") or {}).get("name")
    available = metric_names(summaries, sweep_metric)
    names = available if metrics is None else list(dict.fromkeys(metrics))  # a metric named twice: once
    missing = [name for name in names if name not in available]
    trial_only = trial_only_metrics(summaries)
    if missing and missing[0] in trial_only:
        raise ValueError(
            f"metrics=[{missing[0]!r}]: given for whole trials, in none of their folds, the units this report "
            f"compares; metrics of the folds: {available}"
        )
    if missing:
        raise ValueError(f"metrics=[{missing[0]!r}]: in no summary; metrics: {available}")
    settings = group_settings(summaries, over)
    add_lost_trials(settings, lost_trial_params(folder), over)
    rows = setting_rows(settings, names, chosen)
    drawn: dict[str, str] = {}
    if plots:
        from sodeep.sweeps.plots import plot_metric

        shown = varying(settings)[0]
        labels = [describe({k: setting.params.get(k) for k in shown}) or "all" for setting in settings]
        if len(set(labels)) < len(labels):  # 4 significant digits would merge settings: in full
            labels = [" ".join(f"{k}={setting.params.get(k)}" for k in shown) for setting in settings]
        files = plot_names(names)
        for metric in names:
            path = plot_metric(
                settings, labels, metric, folder / "plots" / files[metric], repeated_over(settings, over)
            )
            if path is not None:
                drawn[metric] = path.relative_to(folder).as_posix()
    goals = {sweep_metric: sweep["metric"].get("goal", "minimize")} if sweep_metric else {}
    counts["target reached"] = int(any(reaches_target(sweep.get("metric"), summary) for summary in summaries))
    notes = report_notes(counts, sweep.get("metric"), available, trial_only)
    if trial_only:
        notes.append(
            f"**Left out:** {', '.join(f'`{name}`' for name in trial_only)}, given for whole trials and in none of "
            "their folds, the units compared here."
        )
    command = command or f"sodeep sweep report {folder}"
    name = sweep.get("name") or str(summaries[0].get("sweep") or folder.name)
    text = markdown(
        name,
        settings,
        rows,
        names,
        over=over,
        baseline=chosen,
        counts=counts,
        goals=goals,
        plots=drawn,
        command=command,
        notes=notes,
    )
    written = {
        "csv": atomic_write_text(folder / "report.csv", csv_text(rows)),
        "markdown": atomic_write_text(folder / "report.md", text),
    }
    written.update({f"plot {metric}": folder / path for metric, path in drawn.items()})
    # Plots of an earlier report that this one did not draw (--no-plots, fewer metrics) would
    # sit beside it looking current.
    for stale in sorted((folder / "plots").glob("*.png")):
        if stale.relative_to(folder).as_posix() not in drawn.values():
            stale.unlink()
    return written


def sweep_running(folder: str | Path) -> bool:
    """Whether a command holds the sweep ``folder`` (one with ``sweep.json``) or one of its trials'
    run folders: then its trials without a summary may be running."""
    folder = Path(folder)
    return (folder / "sweep.json").is_file() and run_in_use(folder) is not None


def can_plot() -> bool:
    """Whether matplotlib, which draws the report's plots, is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _sweep_record(folder: Path) -> dict[str, Any]:
    from sodeep.sweeps.summary import read_sweep_record

    path = folder / "sweep.json"
    return read_sweep_record(path, "run the sweep again under another root") if path.exists() else {}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def _pm(mean: float, sd: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return ""
    shown = f"{mean:+.4g}" if signed else f"{mean:.4g}"
    return shown if math.isnan(sd) else f"{shown} +- {sd:.2g}"
