"""The report of a brain-age cross-validation: summaries, pooled out-of-fold metrics, paired
comparisons against a baseline preset, and ``results.md``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from sodeep.brainage.finetuning import started_from
from sodeep.brainage.metrics import (
    CORRELATION_SUBJECTS,
    correlatable_sites,
    per_site_mae,
    per_site_spearman,
    regression_metrics,
    within_site_spearman,
)
from sodeep.brainage.tables import NO_SITE

#: Metrics summarized as mean +- sd in the report, in this order.
REPORTED_METRICS = (
    "mae",
    "rmse",
    "pearson",
    "spearman",
    "within_site_spearman",
    "r2",
    "corrected_gap_age_correlation",
)
#: Metrics of the pooled out-of-fold predictions (of each subject, the model that had it in its
#: test fold): under leave-one-site-out, a fold's Spearman is a within-site one.
POOLED_METRICS = ("mae", "spearman", "within_site_spearman")
#: Groups of ``results.json`` a report summarizes: trained presets, and baselines on the same folds.
REPORTED_GROUPS = ("presets", "baselines")


def defined(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without its NaN numbers: an undefined metric is left out of ``results.json``,
    where the report shows it as n/a."""
    return {key: value for key, value in values.items() if not (isinstance(value, float) and math.isnan(value))}


def names_sites(sites: Sequence[str]) -> bool:
    """Whether ``sites`` name any site: a table without a site column gives every subject
    :data:`~sodeep.brainage.tables.NO_SITE`, where a within-site Spearman means nothing."""
    return any(str(site) != NO_SITE for site in sites)


def named_site_rows(sites: Sequence[str]) -> list[int]:
    """Indices of the subjects whose site is named (not :data:`~sodeep.brainage.tables.NO_SITE`,
    an empty site cell: such subjects may come from any scanner, and are no site's)."""
    return [index for index, site in enumerate(sites) if str(site) != NO_SITE]


def within_named_site_spearman(predicted: Sequence[float], true: Sequence[float], sites: Sequence[str]) -> float:
    """:func:`~sodeep.brainage.metrics.within_site_spearman` over the subjects of named sites
    (:func:`named_site_rows`); NaN when none qualifies."""
    known = named_site_rows(sites)
    predicted, true = np.asarray(predicted)[known], np.asarray(true)[known]
    return within_site_spearman(predicted, true, [sites[index] for index in known])


def too_small_to_correlate(run: dict[str, Any], ages: np.ndarray | None = None) -> bool:
    """Whether the run's test fold has no correlation to measure, whatever the model: too few
    subjects (+-1), or, given the table's ``ages``, subjects all of one age (undefined)."""
    rows = list(run.get("test_rows", ()))
    if len(rows) < CORRELATION_SUBJECTS:
        return True
    return ages is not None and bool(np.all(np.asarray(ages)[rows] == np.asarray(ages)[rows[0]]))


def too_small_for(run: dict[str, Any], metric: str, ages: np.ndarray, sites: Sequence[str]) -> bool:
    """Whether ``metric`` of the run may be undefined by the size of its test fold, whatever the
    model: a fold of fewer than :data:`CORRELATION_SUBJECTS`; for the within-site Spearman, a fold
    without a test site of three subjects of different ages."""
    if metric == "within_site_spearman":
        rows = [row for row in run.get("test_rows", ()) if str(sites[row]) != NO_SITE]
        return not correlatable_sites(ages[rows], [sites[i] for i in rows])
    return too_small_to_correlate(run, ages)


def undefined(run: dict[str, Any], metric: str) -> bool:
    return metric not in run or math.isnan(run[metric])


def ranks_nobody(run: dict[str, Any], ages: np.ndarray) -> bool:
    """Whether the run's test predictions carry no order: its Spearman is undefined although its
    fold could be correlated (:func:`too_small_to_correlate`), or its fold's predictions are all
    one value (a fold of two predicted alike)."""
    if not undefined(run, "spearman"):
        return False
    predictions = run.get("test_predictions", ())
    return not too_small_to_correlate(run, ages) or (len(predictions) > 1 and len(set(predictions)) == 1)


def summarize(results: dict[str, Any], ages: np.ndarray, sites: Sequence[str]) -> None:
    """Add to each preset and baseline mean/sd summaries over runs (of the metrics every run has:
    the baselines have no age-bias fit; correlations leave out the runs whose test fold is too
    small to correlate, and then say over how many ``runs`` they are), the metrics of the first seed's test predictions pooled
    over its folds (``out_of_fold``: :data:`POOLED_METRICS`) and per-site MAE and Spearman (the
    same predictions); then the presets' paired comparisons."""
    for group in REPORTED_GROUPS:
        for entry in results.get(group, {}).values():
            runs = entry["runs"]
            if not runs:
                continue
            entry["summary"] = {}
            for metric in REPORTED_METRICS:
                values = [r[metric] for r in runs if not undefined(r, metric)]
                if not values or any(undefined(r, metric) and not too_small_for(r, metric, ages, sites) for r in runs):
                    continue  # undefined for some run (or not recorded by it): no summary
                sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan  # n/a: one value has no spread
                entry["summary"][metric] = {"mean": float(np.mean(values)), "sd": sd}
                if len(values) < len(runs):
                    entry["summary"][metric]["runs"] = len(values)
            first_seed = min(r["seed"] for r in runs)
            rows, predictions = out_of_fold(runs, first_seed)
            row_sites = [sites[i] for i in rows]
            entry["per_site"] = per_site_mae(predictions, ages[rows], row_sites)
            ordered = not any(ranks_nobody(run, ages) for run in runs if run["seed"] == first_seed)
            for site, values in per_site_spearman(predictions, ages[rows], row_sites).items():
                if ordered:  # (a site's subjects from several folds would be ranked by the folds' offsets)
                    entry["per_site"][site] |= defined({"spearman": values["spearman"]})
            pooled = regression_metrics(predictions, ages[rows])
            if names_sites(row_sites):
                pooled["within_site_spearman"] = within_named_site_spearman(predictions, ages[rows], row_sites)
            if not ordered:
                # A fold whose predictions rank nobody (a constant): pooled, the folds' offsets
                # alone would make a correlation.
                pooled = {metric: value for metric, value in pooled.items() if "spearman" not in metric}
            entry["out_of_fold"] = {"seed": first_seed} | defined(
                {metric: pooled[metric] for metric in POOLED_METRICS if metric in pooled}
            )
    results["comparisons"] = paired_comparisons(results["presets"], ages=ages)


def out_of_fold(runs: list[dict[str, Any]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Subject rows and pooled test predictions of one seed's folds."""
    chosen = [r for r in runs if r["seed"] == seed]
    rows = np.concatenate([np.asarray(r["test_rows"], dtype=np.int64) for r in chosen])
    predictions = np.concatenate([np.asarray(r["test_predictions"]) for r in chosen])
    return rows, predictions


def paired_comparisons(presets: dict[str, Any], baseline: str = "l1", ages: np.ndarray | None = None) -> dict[str, Any]:
    """Each preset against ``baseline`` (else the first preset), paired by (seed, fold): mean
    difference of MAE and Spearman, its sd, wins, and a Wilcoxon signed-rank p-value.  Spearman
    leaves out the folds :func:`too_small_to_correlate` (given the table's ``ages``)."""
    if not presets:
        return {}
    baseline = baseline if baseline in presets else next(iter(presets))
    reference = {(r["seed"], r["fold"]): r for r in presets[baseline]["runs"]}
    comparisons: dict[str, Any] = {"baseline": baseline}
    for name, entry in presets.items():
        if name == baseline:
            continue
        pairs = [(r, reference[(r["seed"], r["fold"])]) for r in entry["runs"] if (r["seed"], r["fold"]) in reference]
        row: dict[str, Any] = {"pairs": len(pairs)}
        for metric, better in (("spearman", 1), ("mae", -1)):
            # Correlations leave out the folds too small to correlate (+-1 whatever the model).
            used = [(a, b) for a, b in pairs if metric != "spearman" or not too_small_to_correlate(a, ages)]
            differences = np.array([a[metric] - b[metric] for a, b in used])
            p_value = math.nan
            if len(differences) >= 2 and np.any(differences != 0):
                p_value = float(scipy.stats.wilcoxon(differences).pvalue)
            row[metric] = {
                "pairs": len(used),
                "mean_difference": float(differences.mean()) if len(used) else math.nan,
                "sd_difference": float(differences.std(ddof=1)) if len(used) > 1 else math.nan,
                "wins": int(np.sum(better * differences > 0)),
                "wilcoxon_p": p_value,
            }
        comparisons[name] = row
    return comparisons


#: How the report names each protocol.
SPLIT_NAMES = {"stratified": "age-stratified", "site": "site-grouped (no site in both training and test)"}


def _seeds_of(entry: dict[str, Any]) -> list[int]:
    return sorted({run["seed"] for run in entry.get("runs", [])})


def _summary_table(entries: dict[str, Any], label: str, seeds: list[int]) -> list[str]:
    """Markdown rows of mean +- sd per entry (``n/a`` for a metric without a summary); an entry
    whose runs cover other seeds than ``seeds`` (the report's) names its own."""
    lines = [f"| {label} | " + " | ".join(REPORTED_METRICS) + " | runs |", "|---" * (len(REPORTED_METRICS) + 2) + "|"]
    partial = False
    for name, entry in entries.items():
        summary = entry["summary"]
        cells = []
        for metric in REPORTED_METRICS:
            if metric not in summary:
                cells.append("n/a")
                continue
            value = summary[metric]
            of_runs = f" ({value['runs']} of {len(entry['runs'])} runs)" if "runs" in value else ""
            partial |= bool(of_runs)
            cells.append(f"{value['mean']:.3f} +- {_shown(value['sd'], '.3f')}{of_runs}")
        own = _seeds_of(entry)
        runs = f"{len(entry['runs'])}" + (f" (seeds {own})" if own != seeds else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {runs} |")
    if partial:
        lines += [
            "",
            f"(k of N runs): the correlation of a test fold of fewer than {CORRELATION_SUBJECTS} subjects is +-1 "
            "whatever the model, and that of subjects all of one age (as the R2) is undefined, as is the "
            "within-site Spearman of a test fold without a site of 3 or more subjects of different ages, so those "
            "runs are left out of it.",
        ]
    return lines


def _pooled_table(presets: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    """Markdown rows of each model's ``out_of_fold`` metrics (first seed)."""
    entries = {**presets, **{f"baseline: {name}": entry for name, entry in baselines.items()}}
    pooled = {name: entry["out_of_fold"] for name, entry in entries.items() if "out_of_fold" in entry}
    if not pooled:
        return []
    seeds = sorted({values["seed"] for values in pooled.values()})
    which = f"seed {seeds[0]}" if len(seeds) == 1 else "each model's first seed"
    lines = [
        "",
        f"Out-of-fold, {which}: each subject's test prediction, pooled over the folds:",
        "",
        "| model | " + " | ".join(POOLED_METRICS) + " |",
        "|---" * (len(POOLED_METRICS) + 1) + "|",
    ]
    for name, values in pooled.items():
        cells = [f"{values[m]:.3f}" if m in values else "n/a" for m in POOLED_METRICS]
        shown = name if len(seeds) == 1 else f"{name} (seed {values['seed']})"
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return lines


def format_report(results: dict[str, Any], title: str) -> str:
    """Markdown: mean +- sd per preset, the baselines on the same folds, then the presets' paired
    comparisons with the reference preset."""
    settings = results["settings"]
    split = SPLIT_NAMES[settings.get("split", "stratified")]
    # The seeds the folder's runs hold: a folder extended with other seeds or presets keeps them all.
    seeds = sorted({seed for entry in results["presets"].values() for seed in _seeds_of(entry)}) or settings["seeds"]
    entries = [*results["presets"].values(), *results.get("baselines", {}).values()]
    if any(names_sites(list(entry.get("per_site", {}))) for entry in entries):
        unnamed = any(NO_SITE in entry.get("per_site", {}) for entry in entries)
        legend = (
            "within_site_spearman: Spearman inside each test site of 3 or more subjects, weighted by its subjects"
            + (" (subjects without a site left out)." if unnamed else ".")
        )
    else:
        legend = "no site is named, so within_site_spearman is n/a."
    lines = [
        f"# {title}",
        "",
        f"{settings['folds']}-fold {split} CV x seeds {seeds}, {settings['subjects']} subjects; {legend}",
        "",
    ]
    if settings.get("init_from"):
        lines += [started_from(settings["init_from"], settings["config"]), ""]
    lines += _summary_table(results["presets"], "preset", seeds)
    baselines = {name: entry for name, entry in results.get("baselines", {}).items() if entry.get("runs")}
    if baselines:
        lines += ["", "Baselines on the same folds (features standardized on each training split):", ""]
        lines += _summary_table(baselines, "baseline", seeds)
    lines += _pooled_table(results["presets"], baselines)
    comparisons = results.get("comparisons", {})
    if len(comparisons) > 1:
        lines += [
            "",
            f"Paired by (seed, fold) against `{comparisons['baseline']}` "
            f"(difference = preset - `{comparisons['baseline']}`):",
            "",
        ]
        lines.append(
            "| preset | d Spearman (mean +- sd) | wins | Wilcoxon p | d MAE (mean +- sd) | wins | Wilcoxon p |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name, row in comparisons.items():
            if name == "baseline":
                continue
            if not row["pairs"]:
                lines.append(f"| {name} | no (seed, fold) in common | 0/0 | n/a | n/a | 0/0 | n/a |")
                continue
            s, m = row["spearman"], row["mae"]
            lines.append(
                f"| {name} | {_shown(s['mean_difference'], '+.4f')} +- {_shown(s['sd_difference'], '.4f')} | "
                f"{s['wins']}/{s.get('pairs', row['pairs'])} | {_shown(s['wilcoxon_p'], '.3g')} | "
                f"{m['mean_difference']:+.3f} +- {_shown(m['sd_difference'], '.3f')} | "
                f"{m['wins']}/{row['pairs']} | {_shown(m['wilcoxon_p'], '.3g')} |"
            )
    return "\n".join(lines) + "\n"


def _shown(value: float, spec: str) -> str:
    """A number as ``spec`` formats it; ``n/a`` where it is undefined (NaN: one pair, no test)."""
    return "n/a" if math.isnan(value) else format(value, spec)
