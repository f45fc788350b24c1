"""Brain age of new subjects from a finished ``sodeep brainage tabular`` run folder.

Every trained model of the folder (a preset's seeds and folds) predicts the new subjects; a
preset's prediction is the mean over its models, with their standard deviation beside it.  Each
model reads the features as its own training did: z-scored with the means and deviations of its
fold's fitting rows, which come from the training table the folder records (found again by its
SHA-256).  Before it predicts anyone new, each model must reproduce the test predictions the
folder recorded for it, so a changed table, a changed checkpoint or another feature order is
refused rather than predicted with.

Example (a folder of the quick start in docs/brainage.md, a table with the same feature columns)::

    predictions = predict_new_subjects("runs/fcon1000-5fold", "new_subjects.csv")
    predictions.ages["l1"]  # (N,) years, the mean over the folder's l1 models
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sodeep.brainage.csv_files import age_problem, closest_column, number_problem, read_csv_rows
from sodeep.brainage.metrics import corrected_gap
from sodeep.brainage.results import RESULTS_FILE, read_results
from sodeep.brainage.tables import Standardizer, find_id_and_site_columns, read_age_table
from sodeep.run_folder import RUN_RECORD

#: The command whose folders this module reads.
TABULAR_COMMAND = "brainage tabular"
#: A model whose predictions on its own test rows differ from the recorded ones by more than this
#: many years was not trained on the table and features found now.
REPRODUCTION_TOLERANCE = 0.01


@dataclass
class NewSubjects:
    """Rows of a table of new subjects.

    Attributes:
        features: ``(N, F)`` float32, columns in the order of the run's features.
        subject_ids: ``N`` ids (the id column's, else ``"line N"`` by CSV line).
        ages: ``(N,)`` float32 chronological ages, NaN where unknown; ``None`` without an age column.
        skipped: ``(csv line, reason)`` of rows left out (a feature missing or not a number).
    """

    features: np.ndarray
    subject_ids: list[str]
    ages: np.ndarray | None
    skipped: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class BrainAgePredictions:
    """Predicted ages of new subjects, by preset.

    Attributes:
        subjects: the subjects predicted (:class:`NewSubjects`).
        ages: preset -> ``(N,)`` mean predicted age over the preset's models.
        spread: preset -> ``(N,)`` standard deviation over those models (0 for a single model).
        corrected_gaps: preset -> ``(N,)`` gap minus each model's age bias (fitted on its
            validation rows), averaged over the models; NaN where the true age is unknown.
        models: preset -> number of models averaged.
    """

    subjects: NewSubjects
    ages: dict[str, np.ndarray]
    spread: dict[str, np.ndarray]
    corrected_gaps: dict[str, np.ndarray]
    models: dict[str, int]

    def to_csv(self) -> str:
        """A row per preset and subject: ``preset, subject, predicted_age, predicted_age_sd,
        models``, then ``age, gap, corrected_gap`` when the table has ages (empty where unknown)."""
        import csv

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        with_ages = self.subjects.ages is not None
        header = ["preset", "subject", "predicted_age", "predicted_age_sd", "models"]
        writer.writerow(header + (["age", "gap", "corrected_gap"] if with_ages else []))
        for preset, predicted in self.ages.items():
            for index, subject in enumerate(self.subjects.subject_ids):
                row = [preset, subject, _number(predicted[index]), _number(self.spread[preset][index])]
                row.append(self.models[preset])
                if with_ages:
                    age = self.subjects.ages[index]
                    known = bool(np.isfinite(age))
                    row += [_number(age), _number(predicted[index] - age), _number(self.corrected_gaps[preset][index])]
                    row[-3:] = row[-3:] if known else ["", "", ""]
                writer.writerow(row)
        return text.getvalue()


def _number(value: float) -> str:
    return np.format_float_positional(np.float32(value), trim="-")


def read_new_subjects(
    path: str | Path, feature_names: Sequence[str], *, id_column: str | None = None, age_column: str = "age"
) -> NewSubjects:
    """Read the rows of ``path`` that hold a number in every one of ``feature_names``.

    Args:
        path: CSV with a header row (the formats ``sodeep brainage tabular`` reads).
        feature_names: the columns a run's models read, in their order; other columns are ignored.
        id_column: subject ids (default: the first of the id columns the tabular command finds).
        age_column: chronological ages, optional: with them the output adds each subject's gap.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a feature column is missing, or no row has all features.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the table in it, a CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    columns, rows, lines, _ = read_csv_rows(path)
    missing = [name for name in feature_names if name not in columns]
    if missing:
        named = ", ".join(repr(name) for name in missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        # One renamed column: the closest of the columns the models do not read.
        others = [column for column in columns if column not in feature_names]
        close = closest_column(missing[0], others) if len(missing) == 1 else None
        hint = f" (is {close!r} that column renamed?)" if close else ""
        raise ValueError(
            f"{path} lacks {len(missing)} of the {len(feature_names)} feature columns the models read: {named}{hint}"
        )
    try:
        id_column, _ = find_id_and_site_columns(columns, id_column, None)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    has_ages = age_column in columns
    features, ids, ages, skipped = [], [], [], []
    for line, row in zip(lines, rows):
        bad = next(((name, problem) for name in feature_names if (problem := number_problem(row[name]))), None)
        if bad is not None:
            skipped.append((line, f"feature {bad[0]!r} is {bad[1]} ({row[bad[0]]!r})"))
            continue
        features.append([float(row[name]) for name in feature_names])
        subject = row[id_column].strip() if id_column else ""
        ids.append(subject or f"line {line}")
        if has_ages:
            ages.append(np.nan if age_problem(row[age_column]) else float(row[age_column]))
    if not features:
        first = f": line {skipped[0][0]}, {skipped[0][1]}" if skipped else ""
        raise ValueError(f"{path} has no row with a number in every feature column{first}")
    return NewSubjects(
        features=np.asarray(features, dtype=np.float32),
        subject_ids=ids,
        ages=np.asarray(ages, dtype=np.float32) if has_ages else None,
        skipped=skipped,
    )


def read_tabular_run(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``run.json`` config and the ``results.json`` of a ``sodeep brainage tabular`` folder;
    ``ValueError`` (one line) for a folder of another command or with no finished run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder at {folder}")
    try:
        record = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no {RUN_RECORD}: give the --out folder of a brainage tabular run") from None
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{folder / RUN_RECORD} is damaged (not JSON text)") from None
    command = record.get("command") if isinstance(record, dict) else None
    if command != TABULAR_COMMAND:
        raise ValueError(
            f"{folder} holds a {command or 'non-sodeep'} run; predicting new subjects reads {TABULAR_COMMAND} folders "
            "(the volume commands' models need the volumes' preprocessing)"
        )
    results = read_results(folder / RESULTS_FILE, None)
    if not any(entry.get("runs") for entry in results["presets"].values()):
        raise ValueError(f"{folder} holds no finished training run yet; finish it with --resume first")
    return record["config"], results


def training_table_path(config: dict[str, Any]) -> Path:
    """The table a tabular run read: its ``--csv``, else the bundled dataset."""
    from sodeep.brainage.datasets import DEFAULT_DATASET, bundled_table_path

    if config.get("csv"):
        return Path(config["csv"])
    return bundled_table_path(config.get("dataset") or DEFAULT_DATASET)


def predict_new_subjects(
    folder: str | Path,
    table: str | Path,
    *,
    presets: Sequence[str] | None = None,
    id_column: str | None = None,
    age_column: str = "age",
) -> BrainAgePredictions:
    """Predict the ages of the subjects in ``table`` with every model of a tabular run folder.

    Args:
        folder: the ``--out`` folder of a ``sodeep brainage tabular`` run (finished runs are used;
            an interrupted one is left out).
        table: CSV of new subjects holding the run's feature columns (any order, other columns
            ignored); rows that lack a feature are skipped (listed in ``subjects.skipped``).
        presets: which of the folder's presets (default: every preset with a finished run).
        id_column, age_column: as :func:`read_new_subjects`.

    Returns:
        :class:`BrainAgePredictions`, ``(N,)`` per preset.

    Raises:
        ValueError: (one line) the folder is not a finished tabular run, its training table is
            missing or changed, a preset is not in it, or a model does not reproduce its recorded
            test predictions.
    """
    from sodeep.brainage.cross_validation import run_directory
    from sodeep.brainage.models import AgeMLP
    from sodeep.brainage.splits import fold_rows
    from sodeep.brainage.training import BEST_CHECKPOINT, load_age_model, predict_ages
    from sodeep.files import file_digest

    folder = Path(folder)
    config, results = read_tabular_run(folder)
    settings = results["settings"]
    finished = {name: entry["runs"] for name, entry in results["presets"].items() if entry.get("runs")}
    chosen = list(finished) if presets is None else list(dict.fromkeys(presets))
    unknown = [name for name in chosen if name not in finished]
    if unknown:
        raise ValueError(f"{folder} holds no finished run of {unknown}; it holds {sorted(finished)}")

    training_path = training_table_path(config)
    if not training_path.is_file() or file_digest(training_path) != config.get("table_sha256"):
        where = "is missing" if not training_path.is_file() else "has changed since the run (another SHA-256)"
        raise ValueError(
            f"the run's training table {training_path} {where}: each model standardizes features with its "
            "training rows' means, so predicting needs that table as the run read it"
        )
    training = read_age_table(
        training_path,
        age_column=config.get("age_column") or "age",
        features=config.get("features"),
        id_column=config.get("id_column"),
        site_column=config.get("site_column"),
    )
    if list(training.feature_names) != list(settings.get("feature_names", [])):
        raise ValueError(
            f"the features read from {training_path} are not those {folder} recorded; predict with the version that trained it"
        )
    subjects = read_new_subjects(table, training.feature_names, id_column=id_column, age_column=age_column)
    new_inputs = subjects.features
    training_options = settings["config"]
    ages: dict[str, np.ndarray] = {}
    spread: dict[str, np.ndarray] = {}
    gaps: dict[str, np.ndarray] = {}
    for preset in chosen:
        predictions, corrected = [], []
        for run in finished[preset]:
            seed, fold = run["seed"], run["fold"]
            rows = fold_rows(
                training.ages,
                training.sites,
                split=settings["split"],
                folds=settings["folds"],
                seed=seed,
                fold=fold,
                validation_fraction=training_options["validation_fraction"],
            )
            scaler = Standardizer().fit(training.features[rows.fitting])
            checkpoint = run_directory(folder, preset, seed, fold) / BEST_CHECKPOINT
            if not checkpoint.is_file():
                raise ValueError(
                    f"{checkpoint} is missing: the folder's {preset} run (seed {seed}, fold {fold}) lost its model"
                )
            model = AgeMLP(
                len(training.feature_names), hidden=training_options["hidden"], dropout=training_options["dropout"]
            )
            model = load_age_model(model, checkpoint)
            recorded = np.asarray(run["test_rows"], dtype=np.int64)
            again = predict_ages(model, torch.from_numpy(scaler.transform(training.features[recorded]))).numpy()
            differing = np.abs(again - np.asarray(run["test_predictions"], dtype=np.float64))
            if not differing.max(initial=0.0) <= REPRODUCTION_TOLERANCE:
                raise ValueError(
                    f"{checkpoint} does not reproduce the test predictions {folder / RESULTS_FILE} records for it (up to "
                    f"{differing.max():.3g} years apart): the checkpoint or the table changed after the run"
                )
            predicted = predict_ages(model, torch.from_numpy(scaler.transform(new_inputs))).numpy().astype(np.float64)
            predictions.append(predicted)
            if subjects.ages is not None:
                bias = (run["age_bias_slope"], run["age_bias_intercept"])
                corrected.append(corrected_gap(predicted, subjects.ages, bias))
        stacked = np.stack(predictions)
        ages[preset] = stacked.mean(0)
        spread[preset] = stacked.std(0)
        gaps[preset] = np.stack(corrected).mean(0) if corrected else np.full(len(new_inputs), np.nan)
    return BrainAgePredictions(
        subjects=subjects,
        ages=ages,
        spread=spread,
        corrected_gaps=gaps,
        models={preset: len(finished[preset]) for preset in chosen},
    )


def is_prediction_table(text: str) -> bool:
    """Whether ``text`` is a table :meth:`BrainAgePredictions.to_csv` wrote (which ``--out`` may replace)."""
    return text.startswith("preset,subject,predicted_age,")


def run_prediction(
    folder: str | Path,
    table: str | Path,
    *,
    out: str | Path | None = None,
    presets: Sequence[str] | None = None,
    id_column: str | None = None,
    age_column: str = "age",
) -> BrainAgePredictions:
    """``sodeep brainage predict``: :func:`predict_new_subjects`, a summary on stderr and the
    table (:meth:`BrainAgePredictions.to_csv`) written atomically to ``out``, or to stdout."""
    import sys

    from sodeep.files import atomic_write_text, replaceable_output_problem
    from sodeep.run_folder import enclosing_run_folder

    if out is not None:
        problem = replaceable_output_problem(out, is_prediction_table, "a brain-age prediction table")
        if problem:
            raise ValueError(f"--out: {problem}; choose another path")
        inside = enclosing_run_folder(out)
        if inside is not None:
            raise ValueError(
                f"--out: {out} is inside the run folder {inside}, whose files its command writes (and its --overwrite "
                "deletes); choose a path outside it"
            )
    predictions = predict_new_subjects(folder, table, presets=presets, id_column=id_column, age_column=age_column)
    subjects = predictions.subjects
    skipped = subjects.skipped
    skipped_text = f"; {len(skipped)} skipped (line {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
    print(f"{table}: {len(subjects.subject_ids)} subjects{skipped_text}", file=sys.stderr)
    known = np.isfinite(subjects.ages) if subjects.ages is not None else np.zeros(len(subjects.subject_ids), bool)
    for preset, predicted in predictions.ages.items():
        line = f"{preset}: mean of {predictions.models[preset]} models"
        if known.any():
            error = float(np.abs(predicted[known] - subjects.ages[known]).mean())
            line += f"; MAE {error:.3f} years against the table's ages ({int(known.sum())} subjects)"
        print(line, file=sys.stderr)
    text = predictions.to_csv()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    return predictions
