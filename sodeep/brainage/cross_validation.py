"""k-fold cross-validation of brain-age loss presets on a table, resumable, with a report.

For each seed the subjects are split into age-stratified folds; for each test fold, a tenth of the
training folds (again age-stratified) is held out for early stopping and for fitting the age-bias
correction; standardization is fitted on the remaining training rows only.  Every preset is
trained on exactly the same splits, so presets can be compared pairwise per (seed, fold).

Results are a set of runs keyed by (preset, seed, fold) (:mod:`sodeep.brainage.results`): a call
trains the runs ``out/results.json`` does not hold yet, continuing one that stopped part-way from
its last epoch checkpoint, and keeps every run it finds there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch
from torch import nn

from sodeep.brainage.config import TrainingConfig, check_run_plan
from sodeep.brainage.interruption import SignalStop
from sodeep.brainage.metrics import fit_age_bias, gap_metrics, per_site_mae, regression_metrics
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.results import RESULTS_FILE, add_run, is_finished, read_results, write_results
from sodeep.brainage.tables import AgeTable, Standardizer, check_folds, stratified_folds
from sodeep.brainage.training import check_resumable_run, fit_age_model, predict_ages

#: Metrics summarized as mean +- sd in the report, in this order.
REPORTED_METRICS = ("mae", "rmse", "pearson", "spearman", "r2", "corrected_gap_age_correlation")


def inner_validation_mask(ages: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of an age-stratified validation subset of about ``fraction`` of ``ages``
    (at least two subjects, which the age-bias fit needs, when there are four or more)."""
    if len(ages) < 3:
        raise ValueError(f"need >= 3 training subjects to hold some out for validation, got {len(ages)}")
    parts = max(2, min(round(1 / fraction), len(ages) // 2))
    return stratified_folds(ages, parts, seed) == 0


#: The fewest subjects a training split may hold: two to fit on (a scaler, a batch to rank) and
#: two held out (early stopping and the age-bias line).
FEWEST_TRAINING_SUBJECTS = 4


def check_cross_validation_size(subjects: int, folds: int) -> None:
    """Refuse a cohort too small for ``folds`` folds: each test fold needs two subjects (the
    correlations) and each training split :data:`FEWEST_TRAINING_SUBJECTS`."""
    check_folds(folds, subjects)
    smallest_training = subjects - math.ceil(subjects / folds)
    if subjects < 2 * folds or smallest_training < FEWEST_TRAINING_SUBJECTS:
        raise ValueError(
            f"{subjects} subjects are too few for {folds} folds: each test fold needs 2 and each training split "
            f"{FEWEST_TRAINING_SUBJECTS} (2 to fit, 2 to validate); use fewer folds or more subjects"
        )


InputMaker = Callable[[np.ndarray], Callable[[np.ndarray], torch.Tensor]]
ModelMaker = Callable[[np.ndarray], nn.Module]


def cross_validation_settings(
    subjects: int, folds: int, config: TrainingConfig, description: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What every run of a cross-validation shares, as ``results.json`` records it."""
    return {
        "folds": folds,
        "subjects": subjects,
        **(description or {}),
        "config": asdict(config) | {"hidden": list(config.hidden)},
    }


def run_directory(out: Path, preset: str, seed: int, fold: int) -> Path:
    """Where the training run ``(preset, seed, fold)`` keeps its checkpoints."""
    return Path(out) / "checkpoints" / preset / f"seed{seed}_fold{fold}"


def unfinished_runs(
    out: str | Path, settings: dict[str, Any] | None, presets: Sequence[str], seeds: Sequence[int], folds: int
) -> tuple[dict[str, Any], list[tuple[int, int, str]]]:
    """The results ``out`` holds and the ``(seed, fold, preset)`` runs of the plan they lack, in
    training order, after checking (writing nothing) that the results file has ``settings``
    (``None``: not compared) and that each unfinished run can continue from its checkpoints;
    ``ValueError`` otherwise."""
    results = read_results(Path(out) / RESULTS_FILE, settings)
    plan = [(seed, fold, name) for seed in seeds for fold in range(folds) for name in presets]
    pending = [(seed, fold, name) for seed, fold, name in plan if not is_finished(results, "presets", name, seed, fold)]
    for seed, fold, name in pending:
        check_resumable_run(run_directory(Path(out), name, seed, fold), {"preset": name, "seed": seed, "fold": fold})
    return results, pending


def cross_validate(
    ages: np.ndarray,
    sites: Sequence[str],
    presets: Sequence[str],
    *,
    make_inputs: InputMaker,
    make_model: ModelMaker,
    out: str | Path,
    folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    config: TrainingConfig | None = None,
    description: dict[str, Any] | None = None,
    progress: bool = True,
    on_run: Callable[[str, dict[str, Any]], None] | None = None,
    stop: SignalStop | None = None,
) -> dict[str, Any]:
    """Train and evaluate every preset on every (seed, fold) that ``out/results.json`` does not
    hold yet; returns the results of every run the folder holds, which are also written to
    ``out/results.json`` after each run.  A run that stopped part-way continues from its last
    epoch checkpoint; runs of other presets and seeds already in the folder are kept (and
    summarized and compared with the new ones).

    Args:
        ages: ``(N,)`` chronological ages.
        sites: ``N`` site labels (per-site errors).
        presets: names from :data:`sodeep.brainage.losses.BRAIN_AGE_PRESETS`.
        make_inputs: given the rows a model is fitted on, returns ``rows -> inputs tensor``;
            anything it learns from the data (a scaler) must come from those rows only.
        make_model: given the fitting rows' ages, a fresh model ``inputs -> (B,)`` ages.
        description: JSON-able facts about the data, stored with the settings.
        stop: the command's :class:`~sodeep.brainage.interruption.SignalStop` (a signal ends
            the call at the end of a training step, with ``RunInterrupted``).

    Raises:
        ValueError: ``out/results.json`` is damaged or holds runs of other settings, or an
            unfinished run's checkpoint cannot be resumed (checked before anything is written).

    Returns:
        ``{"presets": {name: {"runs": [{"seed", "fold", "mae", "pearson", "spearman", ...}],
        "summary": {metric: {"mean", "sd"}}, "per_site": {...}}}, "settings": ..., "comparisons": ...}``
    """
    from tqdm.auto import tqdm

    config = config or TrainingConfig()
    ages = np.asarray(ages, dtype=np.float32)
    check_cross_validation_size(len(ages), folds)
    check_run_plan(presets, seeds)
    out = Path(out)
    results_path = out / RESULTS_FILE
    settings = cross_validation_settings(len(ages), folds, config, description)
    results, pending = unfinished_runs(out, settings, presets, seeds, folds)
    write_results(results_path, results)

    planned = len(seeds) * folds * len(presets)
    with tqdm(
        total=planned, initial=planned - len(pending), desc="brain-age CV", disable=not progress, unit="run"
    ) as bar:
        for seed, fold, name in pending:
            where = f"{name}, seed {seed}, fold {fold}"
            bar.set_postfix_str(where)
            with stop.deferred(where) if stop is not None else nullcontext():
                run = train_and_test(
                    ages,
                    name,
                    seed,
                    fold,
                    folds,
                    make_inputs=make_inputs,
                    make_model=make_model,
                    out=out,
                    config=config,
                    stop=stop,
                )
                add_run(results, "presets", name, run)
                summarize(results, ages, sites)
                write_results(results_path, results)
                if on_run is not None:
                    on_run(name, run)
            bar.update()
    summarize(results, ages, sites)
    write_results(results_path, results)
    return results


def train_and_test(
    ages: np.ndarray,
    preset: str,
    seed: int,
    fold: int,
    folds: int,
    *,
    make_inputs: InputMaker,
    make_model: ModelMaker,
    out: Path,
    config: TrainingConfig,
    stop: SignalStop | None = None,
) -> dict[str, Any]:
    """Train ``preset`` on the training folds of ``(seed, fold)`` (continuing from its last epoch
    checkpoint if it has one) and test it on fold ``fold``: the run's record for ``results.json``."""
    fold_of = stratified_folds(ages, folds, seed)
    training = np.flatnonzero(fold_of != fold)
    test = np.flatnonzero(fold_of == fold)
    is_validation = inner_validation_mask(ages[training], config.validation_fraction, seed * 1000 + fold)
    validation, fitting = training[is_validation], training[~is_validation]
    inputs = make_inputs(fitting)

    def tensors(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs(rows), torch.from_numpy(ages[rows])

    torch.manual_seed(seed)
    model, summary = fit_age_model(
        make_model(ages[fitting]),
        preset,
        tensors(fitting),
        tensors(validation),
        out=run_directory(out, preset, seed, fold),
        csv_directory=out / "curves" / preset / f"seed{seed}_fold{fold}",
        seed=seed,
        run={"preset": preset, "seed": seed, "fold": fold},
        resume=True,
        stop=stop,
        **config.fit_options(),
    )
    predicted_validation = predict_ages(model, inputs(validation)).numpy()
    predicted_test = predict_ages(model, inputs(test)).numpy()
    bias = fit_age_bias(predicted_validation, ages[validation])
    run = {"seed": seed, "fold": fold}
    run |= regression_metrics(predicted_test, ages[test])
    run |= gap_metrics(predicted_test, ages[test], bias)
    return run | {
        "age_bias_slope": bias[0],
        "age_bias_intercept": bias[1],
        "best_val_mae": summary["best_val_mae"],
        "epochs": summary["epochs"],
        "test_rows": test.tolist(),
        "test_predictions": [round(float(value), 3) for value in predicted_test],
    }


def cross_validate_table(
    table: AgeTable,
    presets: Sequence[str],
    *,
    config: TrainingConfig | None = None,
    description: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`cross_validate` of :class:`AgeMLP` on a table, standardized on the fitting rows;
    ``description`` adds to the table's (:func:`table_description`)."""
    config = config or TrainingConfig()

    def make_inputs(fitting: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
        scaler = Standardizer().fit(table.features[fitting])
        return lambda rows: torch.from_numpy(scaler.transform(table.features[rows]))

    def make_model(fitting_ages: np.ndarray) -> nn.Module:
        return AgeMLP(
            len(table.feature_names),
            hidden=config.hidden,
            dropout=config.dropout,
            age_offset=float(np.median(fitting_ages)),
        )

    return cross_validate(
        table.ages,
        table.sites,
        presets,
        make_inputs=make_inputs,
        make_model=make_model,
        config=config,
        description=table_description(table) | (description or {}),
        **options,
    )


def table_description(table: AgeTable) -> dict[str, Any]:
    """What ``results.json`` records of a table: its feature count and the rows it skipped."""
    return {
        "features": len(table.feature_names),
        "skipped_rows": [{"line": line, "reason": reason} for line, reason in table.skipped],
    }


def summarize(results: dict[str, Any], ages: np.ndarray, sites: Sequence[str]) -> None:
    """Add mean/sd summaries, per-site errors (out-of-fold, first seed) and paired comparisons."""
    presets = results["presets"]
    for entry in presets.values():
        runs = entry["runs"]
        if not runs:
            continue
        entry["summary"] = {
            metric: {
                "mean": float(np.mean([r[metric] for r in runs])),
                "sd": float(np.std([r[metric] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
            }
            for metric in REPORTED_METRICS
        }
        first_seed = min(r["seed"] for r in runs)
        rows, predictions = out_of_fold(runs, first_seed)
        entry["per_site"] = per_site_mae(predictions, ages[rows], [sites[i] for i in rows])
    results["comparisons"] = paired_comparisons(presets)


def out_of_fold(runs: list[dict[str, Any]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Subject rows and pooled test predictions of one seed's folds."""
    chosen = [r for r in runs if r["seed"] == seed]
    rows = np.concatenate([np.asarray(r["test_rows"], dtype=np.int64) for r in chosen])
    predictions = np.concatenate([np.asarray(r["test_predictions"]) for r in chosen])
    return rows, predictions


def paired_comparisons(presets: dict[str, Any], baseline: str = "l1") -> dict[str, Any]:
    """Each preset against ``baseline`` (else the first preset), paired by (seed, fold): mean
    difference of MAE and Spearman, its sd, wins, and a Wilcoxon signed-rank p-value."""
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
            differences = np.array([a[metric] - b[metric] for a, b in pairs])
            p_value = math.nan
            if len(differences) >= 2 and np.any(differences != 0):
                p_value = float(scipy.stats.wilcoxon(differences).pvalue)
            row[metric] = {
                "mean_difference": float(differences.mean()) if len(pairs) else math.nan,
                "sd_difference": float(differences.std(ddof=1)) if len(pairs) > 1 else math.nan,
                "wins": int(np.sum(better * differences > 0)),
                "wilcoxon_p": p_value,
            }
        comparisons[name] = row
    return comparisons


def format_report(results: dict[str, Any], title: str) -> str:
    """Markdown: mean +- sd per preset, then the paired comparisons with the baseline."""
    lines = [
        f"# {title}",
        "",
        f"{results['settings']['folds']}-fold CV x seeds {results['settings']['seeds']}, "
        f"{results['settings']['subjects']} subjects.",
        "",
    ]
    lines.append("| preset | " + " | ".join(REPORTED_METRICS) + " | runs |")
    lines.append("|---" * (len(REPORTED_METRICS) + 2) + "|")
    for name, entry in results["presets"].items():
        cells = [f"{entry['summary'][m]['mean']:.3f} +- {entry['summary'][m]['sd']:.3f}" for m in REPORTED_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(entry['runs'])} |")
    comparisons = results.get("comparisons", {})
    if len(comparisons) > 1:
        lines += [
            "",
            f"Paired by (seed, fold) against `{comparisons['baseline']}` (difference = preset - baseline):",
            "",
        ]
        lines.append(
            "| preset | d Spearman (mean +- sd) | wins | Wilcoxon p | d MAE (mean +- sd) | wins | Wilcoxon p |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name, row in comparisons.items():
            if name == "baseline":
                continue
            s, m = row["spearman"], row["mae"]
            lines.append(
                f"| {name} | {s['mean_difference']:+.4f} +- {s['sd_difference']:.4f} | {s['wins']}/{row['pairs']} | "
                f"{s['wilcoxon_p']:.3g} | {m['mean_difference']:+.3f} +- {m['sd_difference']:.3f} | "
                f"{m['wins']}/{row['pairs']} | {m['wilcoxon_p']:.3g} |"
            )
    return "\n".join(lines) + "\n"
