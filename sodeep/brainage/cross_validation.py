"""k-fold cross-validation of brain-age loss presets on a table, resumable.

The folds come from :mod:`sodeep.brainage.splits` (age-stratified, or whole sites), the report
from :mod:`sodeep.brainage.cv_report`.  Standardization is fitted on each split's fitting rows
only.  Every preset is trained on exactly the same splits, so presets can be compared pairwise
per (seed, fold); given features, the classical baselines of :mod:`sodeep.brainage.baselines`
are fitted on the same splits.

Results are a set of runs keyed by (preset, seed, fold) (:mod:`sodeep.brainage.results`): a call
trains the runs ``out/results.json`` does not hold yet, continuing one that stopped part-way from
its last epoch checkpoint, and keeps every run it finds there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sodeep.brainage.baselines import BASELINES, SEARCH_FOLDS, baseline_predictions
from sodeep.brainage.config import TrainingConfig, check_run_plan
from sodeep.brainage.cv_report import defined, names_sites, summarize, within_named_site_spearman
from sodeep.brainage.finetuning import FineTuning
from sodeep.brainage.interruption import SignalStop
from sodeep.brainage.metrics import (
    fit_age_bias,
    gap_metrics,
    regression_metrics,
)
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.results import PREDICTION_DECIMALS, RESULTS_FILE, add_run, is_finished, read_results, write_results
from sodeep.brainage.splits import FoldRows, assign_folds, check_split, fold_rows
from sodeep.brainage.tables import AgeTable, Standardizer
from sodeep.brainage.training import check_resumable_run, fit_age_model, predict_ages, process_rank

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


def results_to_continue(
    out: str | Path,
    subjects: int,
    presets: Sequence[str],
    seeds: Sequence[int],
    folds: int,
    config: TrainingConfig,
    description: dict[str, Any] | None = None,
    split: str = "stratified",
    fine_tuning: FineTuning | None = None,
) -> tuple[dict[str, Any], list[tuple[int, int, str]]]:
    """The results that ``out`` holds and the ``(seed, fold, preset)`` runs still to train, for a
    :func:`cross_validate` of these settings on ``subjects`` subjects: a ``ValueError`` (one line)
    where the folder holds runs of other settings.  Writes nothing."""
    if fine_tuning is not None:
        description = (description or {}) | {"init_from": fine_tuning.settings()}
    settings = cross_validation_settings(subjects, folds, config, description, split)
    return unfinished_runs(Path(out), settings, presets, seeds, folds)


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
    on_checked: Callable[[int], None] | None = None,
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
        on_checked: called with the number of runs left to train once the folder's results
            are checked to match, before anything is written.

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
    results, pending = results_to_continue(
        out, len(ages), presets, seeds, folds, config, description, split, fine_tuning
    )
    if on_checked is not None:
        on_checked(len(pending))

    def save() -> None:
        if leader:  # the other processes hold the same results
            write_results(results_path, results)

    save()
    if baseline_features is not None:
        if stop is not None:
            stop.where = "the baselines"
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
    Spearman over the subjects of named sites (left out when it is undefined: no site column, no
    test site of three subjects, or constant predictions), the test rows and the predictions."""
    within = within_named_site_spearman(predicted, ages[test], sites[test]) if names_sites(sites) else float("nan")
    return {
        **regression_metrics(predicted, ages[test]),
        **defined({"within_site_spearman": within}),
        "test_rows": test.tolist(),
        "test_predictions": [round(float(value), PREDICTION_DECIMALS) for value in predicted],
    }


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
    """What ``results.json`` records of a table: its features (count and columns) and the rows it skipped."""
    return {
        "features": len(table.feature_names),
        "feature_names": list(table.feature_names),
        "skipped_rows": [{"line": line, "reason": reason} for line, reason in table.skipped],
    }
