"""k-fold cross-validation of brain-age loss presets on a table, resumable, with a report.

Two protocols (``split``, :data:`SPLITS`) choose the folds of each seed:

- ``"stratified"``: age-stratified folds (:func:`~sodeep.brainage.tables.stratified_folds`); for
  each test fold, a tenth of the training folds (again age-stratified) is held out for early
  stopping and for fitting the age-bias correction;
- ``"site"``: folds of whole sites (:func:`~sodeep.brainage.tables.site_folds`; as many folds as
  sites is leave-one-site-out), and the held-out tenth is whole training sites too, so no site
  is in two of fitting, validation and test.

Standardization is fitted on the remaining training rows only.  Every preset is trained on
exactly the same splits, so presets can be compared pairwise per (seed, fold); given features,
the classical baselines of :mod:`sodeep.brainage.baselines` are fitted on the same splits.

Results are a set of runs keyed by (preset, seed, fold) (:mod:`sodeep.brainage.results`): a call
trains the runs ``out/results.json`` does not hold yet, continuing one that stopped part-way from
its last epoch checkpoint, and keeps every run it finds there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch
from torch import nn

from sodeep.brainage.baselines import BASELINES, SEARCH_FOLDS, baseline_predictions
from sodeep.brainage.config import SPLITS, TrainingConfig, check_run_plan
from sodeep.brainage.finetuning import FineTuning, started_from
from sodeep.brainage.interruption import SignalStop
from sodeep.brainage.metrics import (
    fit_age_bias,
    gap_metrics,
    per_site_mae,
    per_site_spearman,
    regression_metrics,
    within_site_spearman,
)
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.results import RESULTS_FILE, add_run, is_finished, read_results, write_results
from sodeep.brainage.tables import AgeTable, Standardizer, check_folds, check_site_folds, site_folds, stratified_folds
from sodeep.brainage.training import check_resumable_run, fit_age_model, predict_ages, process_rank

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


def inner_validation_mask(ages: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of an age-stratified validation subset of about ``fraction`` of ``ages``
    (at least two subjects, which the age-bias fit needs, when there are four or more)."""
    if len(ages) < 3:
        raise ValueError(f"need >= 3 training subjects to hold some out for validation, got {len(ages)}")
    parts = max(2, min(round(1 / fraction), len(ages) // 2))
    return stratified_folds(ages, parts, seed) == 0


def inner_site_validation_mask(sites: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of whole sites holding about ``fraction`` of the subjects: one part of a
    site-grouped split into ``round(1 / fraction)`` parts (as many as there are sites, if fewer)."""
    parts = min(max(2, round(1 / fraction)), len(set(sites)))
    return site_folds(sites, parts, seed) == 0


def assign_folds(ages: np.ndarray, sites: Sequence[str], split: str, folds: int, seed: int) -> np.ndarray:
    """Fold index per subject under the protocol ``split`` (:data:`SPLITS`)."""
    if split == "site":
        return site_folds(sites, folds, seed)
    return stratified_folds(ages, folds, seed)


@dataclass(frozen=True)
class FoldRows:
    """Subject rows of one (seed, fold): a model is fitted on ``fitting``, stopped early and its
    age bias fitted on ``validation``, and scored on ``test``."""

    fitting: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def training(self) -> np.ndarray:
        """Fitting and validation rows, sorted: what a model with its own inner search fits on."""
        return np.sort(np.concatenate([self.fitting, self.validation]))


def fold_rows(
    ages: np.ndarray, sites: Sequence[str], *, split: str, folds: int, seed: int, fold: int, validation_fraction: float
) -> FoldRows:
    """The rows of test fold ``fold`` of seed ``seed`` under ``split``, with the training rows'
    inner validation drawn the same way (age-stratified, or whole training sites)."""
    sites = np.asarray(sites, dtype=str)
    fold_of = assign_folds(ages, sites, split, folds, seed)
    training, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    inner_seed = seed * 1000 + fold
    if split == "site":
        is_validation = inner_site_validation_mask(sites[training], validation_fraction, inner_seed)
    else:
        is_validation = inner_validation_mask(ages[training], validation_fraction, inner_seed)
    return FoldRows(fitting=training[~is_validation], validation=training[is_validation], test=test)


def check_split(
    ages: np.ndarray,
    sites: Sequence[str],
    *,
    split: str,
    folds: int,
    seeds: Sequence[int],
    validation_fraction: float,
) -> None:
    """Refuse a protocol the cohort cannot run, before anything is written: an unknown ``split``,
    a cohort too small for ``folds``, and for a site split fewer sites than folds or a (seed,
    fold) whose training sites cannot give up one for validation (``ValueError``, one line)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    check_cross_validation_size(len(ages), folds)
    if split != "site":
        return
    check_site_folds(sites, folds)
    sites = np.asarray(sites, dtype=str)
    ages = np.asarray(ages)
    for seed in seeds:
        fold_of = site_folds(sites, folds, seed)
        for fold in range(folds):
            where = f"site-grouped split, seed {seed}, fold {fold}"
            training_sites = sorted(set(sites[fold_of != fold]))
            if len(training_sites) < 2:
                raise ValueError(
                    f"{where}: the training split holds one site ({training_sites[0]!r}), none to hold out for "
                    "validation; use fewer folds or more sites"
                )
            rows = fold_rows(
                ages, sites, split=split, folds=folds, seed=seed, fold=fold, validation_fraction=validation_fraction
            )
            if len(rows.test) < 2 or len(rows.fitting) < 2 or np.ptp(ages[rows.validation]) == 0:
                raise ValueError(
                    f"{where}: {len(rows.test)} test, {len(rows.fitting)} fitting and {len(rows.validation)} validation "
                    "subjects; each needs 2 (validation: of two ages); use fewer folds or more subjects per site"
                )


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
    subjects: int,
    folds: int,
    config: TrainingConfig,
    description: dict[str, Any] | None = None,
    split: str = "stratified",
) -> dict[str, Any]:
    """What every run of a cross-validation shares, as ``results.json`` records it."""
    return {
        "folds": folds,
        "split": split,
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
    split: str = "stratified",
    config: TrainingConfig | None = None,
    description: dict[str, Any] | None = None,
    baseline_features: np.ndarray | None = None,
    fine_tuning: FineTuning | None = None,
    progress: bool = True,
    on_run: Callable[[str, dict[str, Any]], None] | None = None,
    stop: SignalStop | None = None,
    trainer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every preset on every (seed, fold) that ``out/results.json`` does not
    hold yet; returns the results of every run the folder holds, which are also written to
    ``out/results.json`` after each run.  A run that stopped part-way continues from its last
    epoch checkpoint; runs of other presets and seeds already in the folder are kept (and
    summarized and compared with the new ones).

    With ``trainer_options`` for several processes (DDP, docs/scaling.md), every process calls
    this alike: they train each run together, each computes the same results from the weights
    rank 0 saved, and rank 0 alone writes ``results.json``.

    Args:
        ages: ``(N,)`` chronological ages.
        sites: ``N`` site labels (per-site errors, within-site Spearman, site-grouped folds).
        presets: names from :data:`sodeep.brainage.losses.BRAIN_AGE_PRESETS`.
        split: the protocol, ``"stratified"`` (age-stratified folds) or ``"site"`` (folds of
            whole sites; ``folds`` = the number of sites is leave-one-site-out).
        make_inputs: given the rows a model is fitted on, returns ``rows -> inputs tensor``;
            anything it learns from the data (a scaler) must come from those rows only.
        make_model: given the fitting rows' ages, a fresh model ``inputs -> (B,)`` ages.
        description: JSON-able facts about the data, stored with the settings.
        baseline_features: ``(N, F)``: also fit the baselines of
            :mod:`sodeep.brainage.baselines` on the same folds (first, being fast), kept under
            ``"baselines"``; ``None``: none.
        fine_tuning: where each run starts (:class:`~sodeep.brainage.finetuning.FineTuning`):
            the model of its (seed, fold) in an earlier run folder, tested on the same rows, or one
            checkpoint; recorded in ``settings["init_from"]`` and each run's ``init_checkpoint``.
            ``None``: from scratch.
        stop: the command's :class:`~sodeep.brainage.interruption.SignalStop` (a signal ends
            the call at the end of a training step, with ``RunInterrupted``).
        trainer_options: Lightning's ``accelerator``, ``devices``, ``strategy`` and
            ``num_nodes`` for every training run (:func:`fit_age_model`); ``None``: one CPU process.

    Raises:
        ValueError: ``out/results.json`` is damaged or holds runs of other settings, an
            unfinished run's checkpoint cannot be resumed, or the cohort cannot be split so
            (:func:`check_split`); checked before anything is written.

    Returns:
        ``{"presets": {name: {"runs": [{"seed", "fold", "mae", "pearson", "spearman",
        "within_site_spearman", ...}], "summary": {metric: {"mean", "sd"}}, "per_site": {...}}},
        "baselines": {name: the same}, "settings": ..., "comparisons": ...}``
    """
    from tqdm.auto import tqdm

    config = config or TrainingConfig()
    ages = np.asarray(ages, dtype=np.float32)
    sites = np.asarray(sites, dtype=str)
    check_run_plan(presets, seeds)
    check_split(ages, sites, split=split, folds=folds, seeds=seeds, validation_fraction=config.validation_fraction)
    trainer_options = dict(trainer_options or {})
    leader = process_rank(**trainer_options) == 0
    out = Path(out)
    results_path = out / RESULTS_FILE
    if fine_tuning is not None:
        description = (description or {}) | {"init_from": fine_tuning.settings()}
    settings = cross_validation_settings(len(ages), folds, config, description, split)
    results, pending = unfinished_runs(out, settings, presets, seeds, folds)

    def save() -> None:
        if leader:  # the other processes hold the same results
            write_results(results_path, results)

    save()
    if baseline_features is not None:
        add_baseline_runs(
            results,
            ages,
            sites,
            baseline_features,
            split=split,
            folds=folds,
            seeds=seeds,
            validation_fraction=config.validation_fraction,
            progress=progress,
        )
        summarize(results, ages, sites)
        save()

    planned = len(seeds) * folds * len(presets)
    with tqdm(
        total=planned, initial=planned - len(pending), desc="brain-age CV", disable=not progress, unit="run"
    ) as bar:
        for seed, fold, name in pending:
            where = f"{name}, seed {seed}, fold {fold}"
            bar.set_postfix_str(where)
            with stop.deferred(where) if stop is not None else nullcontext():
                rows = fold_rows(
                    ages,
                    sites,
                    split=split,
                    folds=folds,
                    seed=seed,
                    fold=fold,
                    validation_fraction=config.validation_fraction,
                )
                run = train_and_test(
                    ages,
                    sites,
                    name,
                    seed,
                    fold,
                    rows,
                    make_inputs=make_inputs,
                    make_model=make_model,
                    out=out,
                    config=config,
                    fine_tuning=fine_tuning,
                    stop=stop,
                    trainer_options=trainer_options,
                )
                add_run(results, "presets", name, run)
                summarize(results, ages, sites)
                save()
                if on_run is not None:
                    on_run(name, run)
            bar.update()
    summarize(results, ages, sites)
    save()
    return results


def add_baseline_runs(
    results: dict[str, Any],
    ages: np.ndarray,
    sites: np.ndarray,
    features: np.ndarray,
    *,
    split: str,
    folds: int,
    seeds: Sequence[int],
    validation_fraction: float,
    progress: bool = True,
) -> None:
    """Fit the baselines of :mod:`sodeep.brainage.baselines` on the training rows (fitting and
    validation) of every (seed, fold) ``results`` lack them for, their grid searches on folds of
    those rows drawn under ``split``, and add their test records under ``"baselines"`` (without
    the metrics a baseline leaves undefined: the median's correlations)."""
    from tqdm.auto import tqdm

    plan = [
        (seed, fold)
        for seed in seeds
        for fold in range(folds)
        if not all(is_finished(results, "baselines", name, seed, fold) for name in BASELINES)
    ]
    for seed, fold in tqdm(plan, desc="baselines", disable=not progress or not plan, unit="fold"):
        rows = fold_rows(
            ages, sites, split=split, folds=folds, seed=seed, fold=fold, validation_fraction=validation_fraction
        )
        training = rows.training
        parts = min(SEARCH_FOLDS, len(set(sites[training]))) if split == "site" else SEARCH_FOLDS
        search_folds = assign_folds(ages[training], sites[training], split, parts, seed * 1000 + fold)
        predictions = baseline_predictions(features, ages, training, rows.test, search_folds)
        for name, predicted in predictions.items():
            record = defined(score_predictions(predicted, ages, sites, rows.test))
            add_run(results, "baselines", name, {"seed": seed, "fold": fold, **record})


def score_predictions(predicted: np.ndarray, ages: np.ndarray, sites: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """The metrics of a run's test predictions (:func:`regression_metrics`), its within-site
    Spearman (left out when it is undefined: no test site of three subjects, or constant
    predictions), the test rows and the predictions."""
    within = within_site_spearman(predicted, ages[test], sites[test])
    return {
        **regression_metrics(predicted, ages[test]),
        **defined({"within_site_spearman": within}),
        "test_rows": test.tolist(),
        "test_predictions": [round(float(value), 3) for value in predicted],
    }


def defined(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without its NaN numbers: an undefined metric is left out of ``results.json``,
    where the report shows it as n/a."""
    return {key: value for key, value in values.items() if not (isinstance(value, float) and math.isnan(value))}


def train_and_test(
    ages: np.ndarray,
    sites: np.ndarray,
    preset: str,
    seed: int,
    fold: int,
    rows: FoldRows,
    *,
    make_inputs: InputMaker,
    make_model: ModelMaker,
    out: Path,
    config: TrainingConfig,
    fine_tuning: FineTuning | None = None,
    stop: SignalStop | None = None,
    trainer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``preset`` on ``rows`` of ``(seed, fold)``, from scratch or from ``fine_tuning``'s
    model of that run (continuing from its last epoch checkpoint if it has one), where
    ``trainer_options`` say (:func:`fit_age_model`), and test it on ``rows.test``: the run's
    record for ``results.json``."""
    fitting, validation, test = rows.fitting, rows.validation, rows.test
    inputs = make_inputs(fitting)

    def tensors(chosen: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs(chosen), torch.from_numpy(ages[chosen])

    torch.manual_seed(seed)
    model = make_model(ages[fitting])
    origin = {} if fine_tuning is None else fine_tuning.start(model, seed, fold, test_rows=test)
    model, summary = fit_age_model(
        model,
        preset,
        tensors(fitting),
        tensors(validation),
        out=run_directory(out, preset, seed, fold),
        csv_directory=out / "curves" / preset / f"seed{seed}_fold{fold}",
        seed=seed,
        run={"preset": preset, "seed": seed, "fold": fold},
        resume=True,
        stop=stop,
        freeze_backbone=fine_tuning is not None and fine_tuning.freeze_backbone,
        **config.fit_options(),
        **(trainer_options or {}),
    )
    predicted_validation = predict_ages(model, inputs(validation)).numpy()
    predicted_test = predict_ages(model, inputs(test)).numpy()
    bias = fit_age_bias(predicted_validation, ages[validation])
    return {
        "seed": seed,
        "fold": fold,
        **score_predictions(predicted_test, ages, sites, test),
        **gap_metrics(predicted_test, ages[test], bias),
        "age_bias_slope": bias[0],
        "age_bias_intercept": bias[1],
        "best_val_mae": summary["best_val_mae"],
        "epochs": summary["epochs"],
        **origin,
    }


def cross_validate_table(
    table: AgeTable,
    presets: Sequence[str],
    *,
    config: TrainingConfig | None = None,
    description: dict[str, Any] | None = None,
    baselines: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """:func:`cross_validate` of :class:`AgeMLP` on a table, standardized on the fitting rows,
    beside the baselines of :mod:`sodeep.brainage.baselines` on the same folds (``baselines``);
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
        baseline_features=table.features if baselines else None,
        **options,
    )


def table_description(table: AgeTable) -> dict[str, Any]:
    """What ``results.json`` records of a table: its feature count and the rows it skipped."""
    return {
        "features": len(table.feature_names),
        "skipped_rows": [{"line": line, "reason": reason} for line, reason in table.skipped],
    }


def summarize(results: dict[str, Any], ages: np.ndarray, sites: Sequence[str]) -> None:
    """Add to each preset and baseline mean/sd summaries over runs (of the metrics every run has:
    the baselines have no age-bias fit), the metrics of the first seed's test predictions pooled
    over its folds (``out_of_fold``: :data:`POOLED_METRICS`) and per-site MAE and Spearman (the
    same predictions); then the presets' paired comparisons."""
    for group in REPORTED_GROUPS:
        for entry in results.get(group, {}).values():
            runs = entry["runs"]
            if not runs:
                continue
            entry["summary"] = {}
            for metric in REPORTED_METRICS:
                values = [r[metric] for r in runs if metric in r]
                if len(values) < len(runs):
                    continue  # undefined for some run (or not recorded by it): no summary
                sd = float(np.std(values, ddof=1)) if len(runs) > 1 else 0.0
                entry["summary"][metric] = {"mean": float(np.mean(values)), "sd": sd}
            first_seed = min(r["seed"] for r in runs)
            rows, predictions = out_of_fold(runs, first_seed)
            row_sites = [sites[i] for i in rows]
            entry["per_site"] = per_site_mae(predictions, ages[rows], row_sites)
            for site, values in per_site_spearman(predictions, ages[rows], row_sites).items():
                entry["per_site"][site] |= defined({"spearman": values["spearman"]})
            pooled = regression_metrics(predictions, ages[rows])
            pooled["within_site_spearman"] = within_site_spearman(predictions, ages[rows], row_sites)
            entry["out_of_fold"] = {"seed": first_seed} | defined({metric: pooled[metric] for metric in POOLED_METRICS})
    results["comparisons"] = paired_comparisons(results["presets"])


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


#: How the report names each protocol.
SPLIT_NAMES = {"stratified": "age-stratified", "site": "site-grouped (no site in both training and test)"}


def _summary_table(entries: dict[str, Any], label: str) -> list[str]:
    """Markdown rows of mean +- sd per entry (``n/a`` for a metric without a summary)."""
    lines = [f"| {label} | " + " | ".join(REPORTED_METRICS) + " | runs |", "|---" * (len(REPORTED_METRICS) + 2) + "|"]
    for name, entry in entries.items():
        summary = entry["summary"]
        cells = [
            f"{summary[m]['mean']:.3f} +- {summary[m]['sd']:.3f}" if m in summary else "n/a" for m in REPORTED_METRICS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(entry['runs'])} |")
    return lines


def _pooled_table(presets: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    """Markdown rows of each model's ``out_of_fold`` metrics (first seed)."""
    entries = {**presets, **{f"baseline: {name}": entry for name, entry in baselines.items()}}
    pooled = {name: entry["out_of_fold"] for name, entry in entries.items() if "out_of_fold" in entry}
    if not pooled:
        return []
    seeds = sorted({values["seed"] for values in pooled.values()})
    lines = [
        "",
        f"Out-of-fold, seed {', '.join(map(str, seeds))}: each subject's test prediction, pooled over the folds:",
        "",
        "| model | " + " | ".join(POOLED_METRICS) + " |",
        "|---" * (len(POOLED_METRICS) + 1) + "|",
    ]
    for name, values in pooled.items():
        cells = [f"{values[m]:.3f}" if m in values else "n/a" for m in POOLED_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def format_report(results: dict[str, Any], title: str) -> str:
    """Markdown: mean +- sd per preset, the baselines on the same folds, then the presets' paired
    comparisons with the reference preset."""
    settings = results["settings"]
    split = SPLIT_NAMES[settings.get("split", "stratified")]
    lines = [
        f"# {title}",
        "",
        f"{settings['folds']}-fold {split} CV x seeds {settings['seeds']}, {settings['subjects']} subjects; "
        "within_site_spearman: Spearman inside each test site of 3 or more subjects, weighted by its subjects.",
        "",
    ]
    if settings.get("init_from"):
        lines += [started_from(settings["init_from"], settings["config"]), ""]
    lines += _summary_table(results["presets"], "preset")
    baselines = {name: entry for name, entry in results.get("baselines", {}).items() if entry.get("runs")}
    if baselines:
        lines += ["", "Baselines on the same folds (features standardized on each training split):", ""]
        lines += _summary_table(baselines, "baseline")
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
            s, m = row["spearman"], row["mae"]
            lines.append(
                f"| {name} | {s['mean_difference']:+.4f} +- {s['sd_difference']:.4f} | {s['wins']}/{row['pairs']} | "
                f"{s['wilcoxon_p']:.3g} | {m['mean_difference']:+.3f} +- {m['sd_difference']:.3f} | "
                f"{m['wins']}/{row['pairs']} | {m['wilcoxon_p']:.3g} |"
            )
    return "\n".join(lines) + "\n"
