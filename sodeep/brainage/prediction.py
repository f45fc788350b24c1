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
from torch import nn

from sodeep.brainage.csv_files import (
    SHOWN_PROBLEMS,
    age_problem,
    closest_column,
    describe_left_out,
    is_missing,
    number_problem,
    read_csv_rows,
)
from sodeep.brainage.metrics import corrected_gap
from sodeep.brainage.results import RESTART_ADVICE, RESULTS_FILE, read_results
from sodeep.brainage.tables import (
    ages_beyond_a_lifetime,
    find_id_and_site_columns,
    read_age_table,
    repeated_values,
    row_labels,
)
from sodeep.process_state import keeps_caller_state
from sodeep.run_folder import RUN_RECORD, check_not_being_cleared
from sodeep.wording import advice_spelling, plural

#: The commands whose folders' models predict new subjects: from a table, and from scans
#: (:mod:`sodeep.brainage.scan_prediction`).
TABULAR_COMMAND, NIFTI_COMMAND = "brainage tabular", "brainage nifti"
PREDICTING_COMMANDS = (TABULAR_COMMAND, NIFTI_COMMAND)
#: A model whose predictions on its own test rows differ from the recorded ones by more than this
#: many years was not trained on the table and features found now.
REPRODUCTION_TOLERANCE = 0.01
#: A subject with a feature more than this many training standard deviations from the training
#: mean is named in a note: its age is an extrapolation.
FAR_FROM_TRAINING = 10.0
#: Values of a feature constant in training that differ from it by less than this share of it are
#: that value (a CSV export's rounding); others are extrapolations.
SAME_VALUE_RTOL = 1e-5


@dataclass
class NewSubjects:
    """Rows of a table of new subjects.

    Attributes:
        features: ``(N, F)`` float32 (as the training table's), columns in the order of the run's
            features; for scans (:mod:`sodeep.brainage.scan_prediction`), ``(N, 0)``: the volumes
            are read and predicted a few at a time and not kept.
        subject_ids: ``N`` names: the id column's, ``"line N"`` by CSV line for a row without an
            id, and ``"sub-01 (line 3)"`` for an id found on several rows.
        ages: ``(N,)`` float64 chronological ages, NaN where unknown; ``None`` without an age column.
        lines: ``N`` CSV lines of the rows.
        ids: ``N`` ids as the id column holds them (``None`` where a row has none).
        skipped: ``(csv line, reason)`` of rows left out (a feature missing or not a number).
        rows: data rows in the file (kept and skipped).
        notes: lines a reader of the table should know (columns not found, repeated ids).
        unusable_ages: ``(csv line, reason)`` of the rows kept whose age is not a usable number.
    """

    features: np.ndarray
    subject_ids: list[str]
    ages: np.ndarray | None
    lines: list[int]
    ids: list[str | None] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    rows: int = 0
    notes: list[str] = field(default_factory=list)
    unusable_ages: list[tuple[int, str]] = field(default_factory=list)

    def unusable_ages_note(self, source: str | Path) -> list[str]:
        """A line naming the rows of the file ``source`` kept without a usable age (their gaps are
        left empty), or none."""
        if not self.unusable_ages:
            return []
        named = describe_left_out(str(source), self.unusable_ages, len(self.subject_ids), verb="found no usable age on")
        return [named + "; their gaps are left empty"]

    def keep(self, kept: np.ndarray, reasons: dict[int, str]) -> None:
        """Keep the rows where ``kept`` ``(N,)`` is true; the others join ``skipped`` with
        ``reasons`` (row index -> reason)."""
        self.skipped = sorted(self.skipped + [(self.lines[index], reasons[index]) for index in np.flatnonzero(~kept)])
        self.features = self.features[kept]
        self.subject_ids = [subject for subject, keep in zip(self.subject_ids, kept) if keep]
        self.ids = [subject for subject, keep in zip(self.ids, kept) if keep]
        self.ages = None if self.ages is None else self.ages[kept]
        self.lines = [line for line, keep in zip(self.lines, kept) if keep]
        kept_lines = set(self.lines)
        self.unusable_ages = [(line, reason) for line, reason in self.unusable_ages if line in kept_lines]


@dataclass
class BrainAgePredictions:
    """Predicted ages of new subjects, by preset.

    Attributes:
        subjects: the subjects predicted (:class:`NewSubjects`).
        ages: preset -> ``(N,)`` mean predicted age over the preset's models.
        spread: preset -> ``(N,)`` standard deviation over those models, as of a population
            (``ddof=0``: 0 for a single model).
        corrected_gaps: preset -> ``(N,)`` gap minus each model's age bias (fitted on its
            validation rows), averaged over the models; NaN where the true age is unknown.
        models: preset -> number of models averaged.
        extrapolated: ``(N,)`` bool, subjects with a feature more than :data:`FAR_FROM_TRAINING`
            training standard deviations from the training mean.
        notes: lines a user should read: an unfinished folder, subjects far from the training
            range, and the table's own notes.
    """

    subjects: NewSubjects
    ages: dict[str, np.ndarray]
    spread: dict[str, np.ndarray]
    corrected_gaps: dict[str, np.ndarray]
    models: dict[str, int]
    extrapolated: np.ndarray
    notes: list[str] = field(default_factory=list)

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
                    if np.isfinite(age):
                        gap = predicted[index] - age
                        row += [_number(age), _number(gap), _number(self.corrected_gaps[preset][index])]
                    else:
                        row += ["", "", ""]
                writer.writerow(row)
        return text.getvalue()


def _number(value: float) -> str:
    return np.format_float_positional(np.float32(value), trim="-")


def read_new_subjects(
    path: str | Path,
    feature_names: Sequence[str],
    *,
    id_column: str | None = None,
    age_column: str | None = None,
    run_id_column: str | None = None,
    run_age_column: str = "age",
) -> NewSubjects:
    """Read the rows of ``path`` that hold a number in every one of ``feature_names``.

    Args:
        path: CSV with a header row (the formats ``sodeep brainage tabular`` reads).
        feature_names: the columns a run's models read, in their order; other columns are ignored.
        id_column, age_column: columns of subject ids and of chronological ages, which must be in
            the table when given.  Ages are optional: with them the output adds each subject's gap.
        run_id_column, run_age_column: the columns the run read (its ``run.json``), used where
            ``id_column`` or ``age_column`` is not given; a table without them is read without
            (a note says so), ids then from the default id columns or CSV lines.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a feature column or a named column is missing, or no row has all features.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the table in it, a CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    columns, rows, lines, _ = read_csv_rows(path)
    _check_feature_columns(path, columns, feature_names)
    notes: list[str] = []
    if not rows:
        raise ValueError(f"{path}: the table has a header but no rows")
    try:
        folded = {column.casefold() for column in columns}
        lacks_the_runs = id_column is None and run_id_column is not None and run_id_column.casefold() not in folded
        id_column, _ = find_id_and_site_columns(columns, id_column or (None if lacks_the_runs else run_id_column), None)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if lacks_the_runs:
        named = f"by its {id_column!r} column" if id_column else "by their CSV lines"
        notes.append(
            f"{path}: no id column {run_id_column!r} (the run's); subjects are named {named} (id_column= names one)"
        )
    age_column = _age_column(path, columns, age_column, run_age_column, notes)

    features, ids, ages, kept_lines, skipped, unusable_ages = [], [], [], [], [], []
    for line, row in zip(lines, rows):
        bad = next(((name, problem) for name in feature_names if (problem := number_problem(row[name]))), None)
        if bad is not None:
            skipped.append((line, f"feature {bad[0]!r} is {bad[1]} ({row[bad[0]]!r})"))
            continue
        features.append([float(row[name]) for name in feature_names])
        kept_lines.append(line)
        ids.append(None if not id_column or is_missing(row[id_column]) else row[id_column].strip())
        if age_column:
            problem = age_problem(row[age_column])
            ages.append(np.nan if problem else float(row[age_column]))
            if problem:
                unusable_ages.append((line, f"age {row[age_column]!r} {problem}"))
    if not features:
        raise ValueError(
            f"{describe_left_out(str(path), skipped, len(rows))}: no row has a number in every feature column"
        )
    if age_column:
        notes += ages_beyond_a_lifetime(str(path), np.asarray(ages, dtype=np.float64))
    repeated = repeated_values([subject for subject in ids if subject is not None])
    if repeated:
        notes.append(
            f"{path}: {plural(len(repeated), 'subject id')} {'appears' if len(repeated) == 1 else 'appear'} on more "
            f"than one row (e.g. {repeated[:5]}); those rows are named with their CSV lines"
        )
    return NewSubjects(
        features=np.asarray(features, dtype=np.float64).astype(np.float32),
        subject_ids=row_labels(ids, kept_lines, set(repeated)),
        ids=ids,
        ages=np.asarray(ages, dtype=np.float64) if age_column else None,
        lines=kept_lines,
        skipped=skipped,
        rows=len(rows),
        notes=notes,
        unusable_ages=unusable_ages,
    )


def _check_feature_columns(path: Path, columns: Sequence[str], feature_names: Sequence[str]) -> None:
    missing = [name for name in feature_names if name not in columns]
    if not missing:
        return
    named = ", ".join(repr(name) for name in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    folded = {column.casefold(): column for column in columns}
    others = [column for column in columns if column not in feature_names]
    if all(name.casefold() in folded for name in missing):
        them, example = ("it" if len(missing) == 1 else "them"), folded[missing[0].casefold()]
        hint = f" (the table names {them} in another case, e.g. {example!r}; names must match exactly)"
    elif len(missing) == 1 and (
        close := closest_column(missing[0], [column for column in others if not _other_side(missing[0], column)])
    ):
        hint = f" (is {close!r} that column renamed?)"
    else:
        hint = ""
    raise ValueError(
        f"{path} lacks {len(missing)} of the {len(feature_names)} feature columns the models read: {named}{hint}"
    )


def _other_side(name: str, column: str) -> bool:
    """Whether ``column`` names the same measure as ``name`` in the other hemisphere
    (``lh_G_cuneus`` and ``rh_G_cuneus``, ``Left-Hippocampus`` and ``Right-Hippocampus``): not a
    renamed column, though its name is close."""
    name, column = name.lower(), column.lower()
    return any(
        name.replace(one, other) == column
        for one, other in (("lh", "rh"), ("rh", "lh"), ("left", "right"), ("right", "left"))
    )


def _age_column(path: Path, columns: Sequence[str], given: str | None, run_column: str, notes: list[str]) -> str | None:
    """The age column to read: ``given`` (an error where the table lacks it), else the run's, else
    none (a note, with the column it may be)."""
    name = given or run_column
    if name in columns:
        return name
    close = closest_column(name, columns)
    hint = f" (did you mean {close!r}?)" if close else ""
    if given:
        raise ValueError(f"{path}: no age column {given!r}{hint}")
    notes.append(f"{path}: no age column {name!r} (the run's){hint}; predicting without ages (age_column= names it)")
    return None


def run_folder_command(folder: str | Path) -> str | None:
    """The command that made a run folder (``run.json``'s ``command``; ``None`` for no sodeep run);
    ``FileNotFoundError`` for no folder, ``ValueError`` (one line) without a readable ``run.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no run folder at {folder}")
    check_not_being_cleared(folder)
    try:
        record = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{folder} holds no {RUN_RECORD}: give the folder that a {TABULAR_COMMAND} or {NIFTI_COMMAND} run wrote"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{folder / RUN_RECORD} is damaged (not JSON text)") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return None
    command = record.get("command")
    return command if isinstance(command, str) else None


def read_run_folder(folder: str | Path, command: str = TABULAR_COMMAND) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``run.json`` config and the ``results.json`` of a finished ``sodeep <command>`` folder
    (:data:`TABULAR_COMMAND` or :data:`NIFTI_COMMAND`); ``ValueError`` (one line) for a folder of
    another command or with no finished run."""
    folder = Path(folder)
    found = run_folder_command(folder)
    if found != command:
        if found in PREDICTING_COMMANDS:
            given = (
                "a table of features (predict_new_subjects)"
                if found == TABULAR_COMMAND
                else "a manifest of scans (predict_new_scans)"
            )
            raise ValueError(f"{folder} holds a {found} run: its models predict from {given}")
        why = " (a synthetic run's models learned synthetic volumes)" if found == "brainage synthetic" else ""
        raise ValueError(
            f"{folder} holds a {found or 'non-sodeep'} run; predicting new subjects reads {TABULAR_COMMAND} and "
            f"{NIFTI_COMMAND} folders{why}"
        )
    record = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
    unfinished = "finish its training first (the command that started it, with resume=True)"
    if _in_use(folder):
        unfinished = "a running sodeep command is training it: predict once it has finished a run"
    if not (folder / RESULTS_FILE).is_file():
        raise ValueError(f"{folder} holds no {RESULTS_FILE}: no training run of it has finished; {unfinished}")
    try:
        results = read_results(folder / RESULTS_FILE, None)
    except ValueError as error:  # without the training command's advice, which would start the folder again
        raise ValueError(f"{str(error).removesuffix('; ' + RESTART_ADVICE)}: it cannot be predicted with") from None
    if not any(entry.get("runs") for entry in results["presets"].values()):
        raise ValueError(f"{folder} holds no finished training run yet; {unfinished}")
    return record["config"], results


def training_table_path(config: dict[str, Any]) -> Path:
    """The table a tabular run read: its ``--csv``, else the bundled dataset."""
    from sodeep.brainage.datasets import DEFAULT_DATASET, bundled_table_path

    if config.get("csv"):
        return Path(config["csv"])
    return bundled_table_path(config.get("dataset") or DEFAULT_DATASET)


def load_trained_model(model: nn.Module, checkpoint: Path) -> nn.Module:
    """``model`` with the weights of a ``best.ckpt``, in eval mode; ``ValueError`` (one line) for a
    file that is damaged or holds another model."""
    from sodeep.checkpoints import CheckpointError, read_weights_only

    if not checkpoint.is_file():
        raise ValueError(f"{checkpoint} is missing: the run folder lost a trained model")
    try:
        payload = read_weights_only(checkpoint)
    except CheckpointError as error:
        raise ValueError(f"{error}; the run folder's model cannot be used") from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    weights = {key.removeprefix("model."): value for key, value in (state or {}).items() if key.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise ValueError(
            f"{checkpoint} does not hold the model this run trained (its weights differ in names or shapes)"
        ) from None
    return model.eval()


def planned_seeds(config: dict[str, Any], preset: str, runs: Sequence[dict[str, Any]]) -> list[int]:
    """The seeds a folder's runs of ``preset`` are meant to cover: those of its finished ``runs``,
    and those its last command (``run.json``'s ``config``) asked for where that included the preset."""
    asked = (config.get("seeds") or []) if preset in (config.get("losses") or []) else []
    return sorted({int(run["seed"]) for run in runs} | {int(seed) for seed in asked})


def _training_table(folder: Path, config: dict[str, Any], settings: dict[str, Any], moved_to: str | Path | None) -> Any:
    """The run's training table (an :class:`~sodeep.brainage.tables.AgeTable`), read as the run
    read it, from where ``run.json`` records it or from ``moved_to``, checked by its SHA-256."""
    from sodeep.files import file_digest

    path = Path(moved_to) if moved_to is not None else training_table_path(config)
    if not path.is_file() or file_digest(path) != config.get("table_sha256"):
        if moved_to is not None:
            if path.is_dir():
                raise ValueError(f"training_table: {path} is a folder; give the table in it, a CSV file")
            where = "is missing" if not path.exists() else "is not the table the run read (another SHA-256)"
            raise ValueError(f"training_table: {path} {where}")
        where = "is missing" if not path.is_file() else "has changed since the run (another SHA-256)"
        raise ValueError(
            f"the run's training table {path} {where}: each model standardizes features with its "
            "training rows' means, so predicting needs that table as the run read it (training_table= gives "
            "where it is now)"
        )
    training = read_age_table(
        path,
        age_column=config.get("age_column") or "age",
        features=config.get("features"),
        id_column=config.get("id_column"),
        site_column=config.get("site_column"),
    )
    # (A folder that does not record its feature columns is checked by its models' test predictions.)
    if list(training.feature_names) != list(settings.get("feature_names", training.feature_names)):
        raise ValueError(f"the features read from {path} are not those {folder} recorded")
    return training


def _unfinished_notes(
    folder: Path, config: dict[str, Any], settings: dict[str, Any], finished: dict[str, list], in_use: bool
) -> list[str]:
    """A line for each preset of ``finished`` (preset -> its finished runs) with fewer runs than
    planned; where no command holds the folder, with the command that trains the others."""
    notes = []
    for preset, runs in finished.items():
        seeds = planned_seeds(config, preset, runs)
        planned = len(seeds) * settings["folds"]
        if len(runs) < planned:
            resume = f"resume=True, losses=[{preset!r}] and seeds={seeds}"
            resume = "" if in_use else f" (the folder's command with {resume} trains the others)"
            notes.append(
                f"{preset}: {len(runs)} of its {planned} runs (seeds {seeds}) finished in {folder}; the mean is over "
                f"those{resume}"
            )
    return notes


def _each_models_ages(
    folder: Path, training: Any, settings: dict[str, Any], runs: list[tuple[str, dict[str, Any]]], subjects: NewSubjects
) -> tuple[np.ndarray, np.ndarray]:
    """``(M, N)`` ages of the subjects by each of the ``M`` runs' models (after each reproduced its
    recorded test predictions), and ``(N, F)`` the largest ``|z|`` of each feature over the models."""
    from sodeep.brainage.cross_validation import run_directory
    from sodeep.brainage.models import AgeMLP
    from sodeep.brainage.splits import fold_rows
    from sodeep.brainage.tables import Standardizer
    from sodeep.brainage.training import BEST_CHECKPOINT, predict_ages

    options = settings["config"]
    predictions = np.empty((len(runs), len(subjects.features)))
    largest_z = np.zeros(subjects.features.shape)
    shared = np.full(subjects.features.shape, np.nan)
    for index, (preset, run) in enumerate(runs):
        seed, fold = run["seed"], run["fold"]
        rows = fold_rows(
            training.ages,
            training.sites,
            split=settings["split"],
            folds=settings["folds"],
            seed=seed,
            fold=fold,
            validation_fraction=options["validation_fraction"],
        )
        scaler = Standardizer().fit(training.features[rows.fitting])  # as the run's inputs were made
        checkpoint = run_directory(folder, preset, seed, fold) / BEST_CHECKPOINT
        model = AgeMLP(len(training.feature_names), hidden=options["hidden"], dropout=options["dropout"])
        model = load_trained_model(model, checkpoint)
        recorded = np.asarray(run["test_rows"], dtype=np.int64)
        again = predict_ages(model, torch.from_numpy(scaler.transform(training.features[recorded]))).numpy()
        differing = np.abs(again - np.asarray(run["test_predictions"], dtype=np.float64))
        if not differing.max(initial=0.0) <= REPRODUCTION_TOLERANCE:
            raise ValueError(
                f"{checkpoint} does not reproduce the test predictions {folder / RESULTS_FILE} records for it (up to "
                f"{differing.max():.3g} years apart): the checkpoint or the table changed after the run"
            )
        values = subjects.features.astype(np.float64)
        z = (values - scaler.mean) / scaler.std
        # A feature every fitting row held at one value: another value (beyond a CSV export's
        # rounding) is infinitely far from it.
        constant = ~(training.features[rows.fitting].astype(np.float64).std(0) > 0)
        other = ~np.isclose(values, scaler.mean, rtol=SAME_VALUE_RTOL, atol=0.0)
        far = np.where(constant & other, np.inf, np.where(constant, 0.0, np.abs(z)))
        largest_z = np.maximum(largest_z, far)
        # The value this model's training subjects shared, where a subject's value is another.
        shared = np.where(np.isinf(far) & np.isnan(shared), np.broadcast_to(scaler.mean, far.shape), shared)
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, then no finite age
            inputs = torch.from_numpy(z.astype(np.float32))
        predictions[index] = predict_ages(model, inputs).numpy()
    return predictions, largest_z, shared


@keeps_caller_state
def predict_new_subjects(
    folder: str | Path,
    table: str | Path,
    *,
    presets: Sequence[str] | None = None,
    id_column: str | None = None,
    age_column: str | None = None,
    training_table: str | Path | None = None,
) -> BrainAgePredictions:
    """Predict the ages of the subjects in ``table`` with every model of a tabular run folder.

    Args:
        folder: the ``--out`` folder of a ``sodeep brainage tabular`` run (finished runs are used;
            an interrupted one is left out, and a note says how many of the planned runs finished).
        table: CSV of new subjects holding the run's feature columns (any order, other columns
            ignored); rows that lack a feature are skipped (listed in ``subjects.skipped``), as are
            rows whose features lie so far from the training range that a model's age is not finite.
        presets: which of the folder's presets (default: every preset with a finished run).
        id_column, age_column: as :func:`read_new_subjects` (default: the run's own columns).
        training_table: where the run's training table is now (default: where the run read it),
            checked by the SHA-256 the run recorded.

    Returns:
        :class:`BrainAgePredictions`, ``(N,)`` per preset.

    Raises:
        ValueError: (one line) the folder is not a finished tabular run, its training table is
            missing or changed, a preset is not in it, or a model is damaged or does not reproduce
            its recorded test predictions.
    """
    from sodeep.files import file_digest

    folder = Path(folder)
    config, results = read_run_folder(folder, TABULAR_COMMAND)
    finished, chosen = choose_presets(folder, results, presets)
    training = _training_table(folder, config, results["settings"], training_table)
    subjects = read_new_subjects(
        table,
        training.feature_names,
        id_column=id_column,
        age_column=age_column,
        run_id_column=training.id_header,
        run_age_column=config.get("age_column") or "age",
    )
    in_use, unfinished = folder_notes(folder, config, results["settings"], {name: finished[name] for name in chosen})
    notes = in_use + subjects.notes + unfinished
    runs = [(preset, run) for preset in chosen for run in finished[preset]]
    predictions, largest_z, shared = _each_models_ages(folder, training, results["settings"], runs, subjects)

    finite = np.isfinite(predictions).all(0)
    if not finite.all():
        reasons = {
            row: f"a model gives no finite age ({_far_feature(subjects, training.feature_names, largest_z, shared, row)})"
            for row in np.flatnonzero(~finite)
        }
        subjects.keep(finite, reasons)
        predictions, largest_z, shared = predictions[:, finite], largest_z[finite], shared[finite]
        if not subjects.subject_ids:
            raise ValueError(f"{table}: no subject has features a model can predict from ({subjects.skipped[0][1]})")
    extrapolated = largest_z.max(1, initial=0.0) > FAR_FROM_TRAINING
    far = np.flatnonzero(extrapolated)
    if len(far):
        farthest = _far_feature(subjects, training.feature_names, largest_z, shared, far[0])
        notes.append(
            f"{table}: {plural(len(far), 'subject')} {'has' if len(far) == 1 else 'have'} a feature more than "
            f"{FAR_FROM_TRAINING:g} training SDs from the training mean, or off a value a model's training subjects all shared "
            f"(line {subjects.lines[far[0]]}: {farthest}): their ages are extrapolations"
        )
    notes += subjects.unusable_ages_note(table)
    same_table = file_digest(Path(table)) == config.get("table_sha256")
    notes += _training_subjects_note(table, subjects, training, same_table=same_table)
    return ensemble(subjects, runs, predictions, extrapolated, notes)


def choose_presets(
    folder: Path, results: dict[str, Any], presets: str | Sequence[str] | None
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The folder's finished runs by preset, and the presets to predict with: ``presets`` (each
    with a finished run; ``ValueError`` otherwise), or all with one."""
    finished = {name: entry["runs"] for name, entry in results["presets"].items() if entry.get("runs")}
    chosen = (
        list(finished) if presets is None else list(dict.fromkeys([presets] if isinstance(presets, str) else presets))
    )
    if not chosen:
        raise ValueError(f"presets is empty; give presets of {folder}: {sorted(finished)}")
    unknown = [name for name in chosen if name not in finished]
    if unknown:
        raise ValueError(f"{folder} holds no finished run of {unknown}; it holds {sorted(finished)}")
    return finished, chosen


def folder_notes(
    folder: Path, config: dict[str, Any], settings: dict[str, Any], chosen_runs: dict[str, list[dict[str, Any]]]
) -> tuple[list[str], list[str]]:
    """Lines on the folder's state: where a running command holds it, a line that says so; and a
    line for each preset of ``chosen_runs`` (preset -> its finished runs) with fewer runs than planned."""
    in_use = _in_use(folder)
    held = [f"{folder} is in use by a running sodeep command: the ages are from the runs finished so far"]
    return held if in_use else [], _unfinished_notes(folder, config, settings, chosen_runs, in_use)


def ensemble(
    subjects: NewSubjects,
    runs: list[tuple[str, dict[str, Any]]],
    predictions: np.ndarray,
    extrapolated: np.ndarray,
    notes: list[str],
) -> BrainAgePredictions:
    """Each preset's mean and SD over its models' ages ``predictions`` ``(M, N)`` (row ``m`` by
    ``runs[m]``, a ``(preset, run record)``), and its gaps corrected by each model's age bias."""
    presets = list(dict.fromkeys(preset for preset, _ in runs))
    ages, spread, gaps, models = {}, {}, {}, {}
    for preset in presets:
        own = [index for index, (name, _) in enumerate(runs) if name == preset]
        ages[preset], spread[preset], models[preset] = predictions[own].mean(0), predictions[own].std(0), len(own)
        gaps[preset] = np.full(len(subjects.subject_ids), np.nan)
        if subjects.ages is not None:
            biases = [(runs[index][1]["age_bias_slope"], runs[index][1]["age_bias_intercept"]) for index in own]
            corrected = [corrected_gap(predictions[index], subjects.ages, bias) for index, bias in zip(own, biases)]
            gaps[preset] = np.mean(corrected, axis=0)
    return BrainAgePredictions(
        subjects=subjects,
        ages=ages,
        spread=spread,
        corrected_gaps=gaps,
        models=models,
        extrapolated=extrapolated,
        notes=notes,
    )


def _run_id(folder: str | Path) -> str | None:
    """The ``run_id`` of the run ``folder`` holds (``None`` for none readable)."""
    try:
        record = json.loads((Path(folder) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record.get("run_id") if isinstance(record, dict) else None


def _check_same_run(folder: str | Path, started: str | None) -> None:
    """A ``ValueError`` if ``folder`` holds another run than the one (``run_id`` ``started``) that
    the prediction began to read: a command that overwrote it was clearing or training it."""
    check_not_being_cleared(folder)
    if started is not None and _run_id(folder) != started:
        raise ValueError(
            f"the run in {folder} was replaced while its models were read (a command that overwrites it is "
            "running); predict once that command has finished"
        )


def _in_use(folder: Path) -> bool:
    """Whether a running command holds ``folder``'s lock (its training may still add runs).  A
    folder whose lock cannot be read (none, a link, a read-only or another user's folder) shows no
    running command: ``False``."""
    import os

    from sodeep.run_folder import RUN_LOCK

    try:
        import fcntl
    except ImportError:  # no advisory locks on this system: nothing to tell
        return False
    try:
        descriptor = os.open(folder / RUN_LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while a command holds it
    except OSError:
        return True
    finally:
        os.close(descriptor)  # (which lets go of the shared lock at once)
    return False


def _training_subjects_note(table: str | Path, subjects: NewSubjects, training: Any, *, same_table: bool) -> list[str]:
    """A line where the subjects predicted include the run's training subjects (the same file, or
    ids of its table), whose ages are not out-of-sample; else none."""
    after = "so their ages are not out-of-sample (the run's predictions.csv holds each training subject's age "
    after += "from the model that had it in its test fold)"
    if same_table:
        return [f"{table} is the run's training table: the models trained on its subjects, {after}"]
    known = set(training_ids(training))
    shared = list(dict.fromkeys(subject for subject in subjects.ids if subject is not None and subject in known))
    if not shared:
        return []
    ids = "has an id" if len(shared) == 1 else "have ids"
    return [
        f"{table}: {plural(len(shared), 'subject')} {ids} of the run's training table (e.g. {shared[:3]}); if they "
        f"are the same subjects, the models trained on them, {after}"
    ]


def training_ids(training: Any) -> list[str]:
    """The ids of a training table's subjects as its id column holds them: its subject names without
    the CSV lines that tell repeated ids apart, and without the rows named by their line alone."""
    import re

    named = (re.sub(r" \(line \d+\)( #\d+)?$", "", subject) for subject in training.subject_ids)
    return [subject for subject in named if not re.fullmatch(r"line \d+( #\d+)?", subject)]


def _far_feature(
    subjects: NewSubjects, names: Sequence[str], largest_z: np.ndarray, shared: np.ndarray, row: int
) -> str:
    """``'lh_x' = 1e+30, 3.2e+29 training SDs from its mean``: the feature of the subject in ``row``
    farthest from the training range (``largest_z``: ``(N, F)``, the largest ``|z|`` over the models,
    infinite for another value of a feature whose training rows all held one value of a model,
    which ``shared`` ``(N, F)`` gives)."""
    column = int(np.argmax(largest_z[row]))
    value, far = subjects.features[row, column], largest_z[row, column]
    if np.isinf(far):  # (z-scores of float32 values in float64 are finite)
        return f"{names[column]!r} = {value:.7g}, where every training subject of a model had {shared[row, column]:.7g}"
    return f"{names[column]!r} = {value:g}, {far:.3g} training SDs from its mean"


def is_prediction_table(text: str) -> bool:
    """Whether ``text`` is a table :meth:`BrainAgePredictions.to_csv` wrote (which ``--out`` may replace)."""
    return text.startswith("preset,subject,predicted_age,")


def run_prediction(
    folder: str | Path,
    table: str | Path | None = None,
    *,
    manifest: str | Path | None = None,
    out: str | Path | None = None,
    presets: Sequence[str] | None = None,
    id_column: str | None = None,
    age_column: str | None = None,
    training_table: str | Path | None = None,
    progress: bool = True,
) -> BrainAgePredictions:
    """``sodeep brainage predict``: :func:`predict_new_subjects` on a ``table`` of features, or
    :func:`~sodeep.brainage.scan_prediction.predict_new_scans` on a ``manifest`` of scans (one of
    the two, as the folder's command trained on); a summary and notes on stderr and the table
    (:meth:`BrainAgePredictions.to_csv`) written atomically to ``out``, or to stdout."""
    import sys

    from sodeep.files import atomic_write_text, replaceable_output_problem
    from sodeep.run_folder import inside_a_run_folder

    if (table is None) == (manifest is None):
        raise ValueError("give the new subjects as a table of features (table=) or a manifest of scans (manifest=)")
    command = run_folder_command(folder)
    if manifest is not None and command == TABULAR_COMMAND:
        raise ValueError(f"{folder} holds a {command} run: its models predict from a table of features (table=)")
    if table is not None and command == NIFTI_COMMAND:
        raise ValueError(f"{folder} holds a {command} run: its models predict from a manifest of scans (manifest=)")
    if manifest is not None and training_table is not None:
        raise ValueError("training_table is for tabular runs; a nifti run finds its training manifest itself")
    if out is not None:  # a run's own files first: a run's predictions.csv is not for us to replace
        problem = inside_a_run_folder(out)
        if problem is not None:
            raise ValueError(f"out must be a path outside run folders: {problem}")
        problem = replaceable_output_problem(out, is_prediction_table, "a brain-age prediction table")
        if problem:
            raise ValueError(f"out must be another path: {problem}")
    started = _run_id(folder)
    try:
        if manifest is not None:
            from sodeep.brainage.scan_prediction import predict_new_scans

            source = manifest
            predictions = predict_new_scans(
                folder, manifest, presets=presets, id_column=id_column, age_column=age_column, progress=progress
            )
        else:
            source = table
            predictions = predict_new_subjects(
                folder,
                table,
                presets=presets,
                id_column=id_column,
                age_column=age_column,
                training_table=training_table,
            )
    except (ValueError, OSError):
        _check_same_run(folder, started)
        raise
    _check_same_run(folder, started)
    subjects = predictions.subjects
    print(f"{source}: {plural(len(subjects.subject_ids), 'subject')} predicted", file=sys.stderr)
    if subjects.skipped:
        print(describe_left_out(str(source), subjects.skipped, subjects.rows), file=sys.stderr)
        for line, reason in subjects.skipped[SHOWN_PROBLEMS:]:  # the line above names the first few
            print(f"  line {line}: {reason}", file=sys.stderr)
    for note in predictions.notes:  # (advice in the caller's words: flags on the command line)
        print(advice_spelling.get()(note), file=sys.stderr)
    known = np.isfinite(subjects.ages) if subjects.ages is not None else np.zeros(len(subjects.subject_ids), bool)
    scored = known & ~predictions.extrapolated
    left_out = int((known & predictions.extrapolated).sum())
    for preset, predicted in predictions.ages.items():
        line = f"{preset}: mean of {plural(predictions.models[preset], 'model')}"
        if scored.any():
            error = float(np.abs(predicted[scored] - subjects.ages[scored]).mean())
            line += f"; MAE {error:.3f} years against the {'table' if manifest is None else 'manifest'}'s ages ({plural(int(scored.sum()), 'subject')}"
            line += f"; {left_out} far from the training range left out)" if left_out else ")"
        print(line, file=sys.stderr)
    text = predictions.to_csv()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    return predictions
