"""Brain age of new scans from a finished ``sodeep brainage nifti`` run folder.

Every trained SFCN of the folder (a preset's seeds and folds) predicts the scans of a manifest; a
preset's prediction is the mean over its models, with their standard deviation beside it.  Each
scan is brought to the run's grid and z-scored inside the brain as the run's volumes were
(:func:`sodeep.brainage.volumes.load_volume`), which needs nothing of the training cohort.  Where
the run's training manifest and volumes are found as the run read them, each model must first
reproduce the test predictions the folder recorded for it, so a changed checkpoint is refused
rather than predicted with; where they are not, a note says the check was not made.

Example (a folder of ``sodeep brainage nifti``, a manifest with a ``path`` column)::

    predictions = predict_new_scans("runs/my-cohort", "new_scans.csv")
    predictions.ages["l1"]  # (N,) years, the mean over the folder's l1 models
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sodeep.brainage.csv_files import (
    age_problem,
    closest_column,
    describe_left_out,
    find_column,
    is_missing,
    read_csv_rows,
)
from sodeep.brainage.prediction import (
    NIFTI_COMMAND,
    REPRODUCTION_TOLERANCE,
    BrainAgePredictions,
    NewSubjects,
    choose_presets,
    ensemble,
    folder_notes,
    load_trained_model,
    read_run_folder,
)
from sodeep.brainage.results import RESULTS_FILE
from sodeep.brainage.tables import ages_beyond_a_lifetime, find_id_and_site_columns, repeated_values, row_labels
from sodeep.process_state import keeps_caller_state
from sodeep.wording import plural

#: File names of scans, which a manifest lists (case aside).
SCAN_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".img", ".hdr")


#: A column name holding the word "age" (``age_years``, ``Age (years)``, not ``image_id``).
AGE_WORD = re.compile(r"(?<![a-z])age(?![a-z])")

#: Scans read, and predicted by every model, at a time: memory holds this many volumes whatever
#: the manifest's length.
SCANS_AT_A_TIME = 32


def read_new_scans(
    manifest: str | Path,
    *,
    shape: Sequence[int],
    voxel_size: float,
    predict: Callable[[torch.Tensor], np.ndarray],
    id_column: str | None = None,
    age_column: str | None = None,
    progress: bool = True,
    scans_at_a_time: int | None = None,
) -> tuple[NewSubjects, list[Path], np.ndarray]:
    """The scans of ``manifest`` that can be read, each brought to ``shape`` at ``voxel_size`` mm
    and given to ``predict`` with the others of its chunk, so that memory holds
    ``scans_at_a_time`` volumes at a time, not the manifest's.

    Args:
        manifest: CSV with a ``path`` column (absolute, or relative to the manifest's folder), as
            ``sodeep brainage nifti`` reads; an age column is optional here.
        shape, voxel_size: the run's grid.
        predict: volumes ``(n, 1, D, H, W)`` float32 -> ``(M, n)`` values (the ages of ``M`` models).
        id_column: column of subject ids (default: the first of the usual id columns; else each
            scan is named by its path as the manifest lists it).
        age_column: column of chronological ages (default: ``age`` if the manifest has it); with
            ages the predictions add each subject's gap.
        progress: a progress bar while the scans are read.
        scans_at_a_time: volumes read before they are predicted (default :data:`SCANS_AT_A_TIME`).

    Returns:
        :class:`~sodeep.brainage.prediction.NewSubjects` of the ``N`` scans read (``features``
        ``(N, 0)``: the volumes are not kept), their ``N`` resolved files, and ``predict``'s
        values ``(M, N)``.

    Raises:
        FileNotFoundError: no file at ``manifest``.
        ValueError: no ``path`` column, a named column is missing, or no scan can be read.
    """
    from tqdm.auto import tqdm

    from sodeep.brainage.volumes import brain_litres, load_volume, unmasked_note

    scans_at_a_time = SCANS_AT_A_TIME if scans_at_a_time is None else scans_at_a_time
    if isinstance(scans_at_a_time, bool) or not isinstance(scans_at_a_time, int) or scans_at_a_time < 1:
        raise ValueError(f"scans_at_a_time must be an integer >= 1, got {scans_at_a_time!r}")
    listed = _list_new_scans(Path(manifest), id_column, age_column)
    files, lines, skipped, total = listed.files, listed.lines, list(listed.skipped), listed.rows
    kept, chunk, values, litres = [], [], [], []

    def predict_the_chunk() -> None:
        volumes = torch.from_numpy(np.stack([volume for _, volume in chunk])).unsqueeze(1)
        predicted = np.asarray(predict(volumes), dtype=np.float64)
        if predicted.ndim != 2 or predicted.shape[1] != len(chunk):
            raise ValueError(
                f"predict must return (M, {len(chunk)}) values for {len(chunk)} scans, got {predicted.shape}"
            )
        values.append(predicted)
        litres.append(brain_litres(volumes, voxel_size))
        kept.extend(index for index, _ in chunk)
        chunk.clear()

    for index in tqdm(range(len(files)), desc="scans", disable=not progress, unit="scan"):
        try:
            chunk.append((index, load_volume(files[index], shape, voxel_size)))
        except Exception as error:  # a corrupt file must not lose the others: reported by line
            reason = " ".join(str(error).split())
            problem = (
                f"cannot read: {reason}" if str(files[index]) in reason else f"cannot read {files[index]}: {reason}"
            )
            skipped.append((lines[index], problem))
        if len(chunk) >= scans_at_a_time:
            predict_the_chunk()
    if chunk:
        predict_the_chunk()
    skipped.sort()
    if not kept:
        raise ValueError(f"{describe_left_out(str(manifest), skipped, total)}: no scan could be read")
    paths = [files[index] for index in kept]
    names = [listed.names[index] for index in kept]
    kept_lines = [lines[index] for index in kept]
    notes = list(listed.notes)
    repeated = repeated_values(names)
    repeated_ids = repeated_values(
        [subject for subject in (listed.ids[index] for index in kept) if subject is not None]
    )
    if repeated_ids:
        notes.append(
            f"{manifest}: {plural(len(repeated_ids), 'subject id')} {'appears' if len(repeated_ids) == 1 else 'appear'} "
            f"on more than one row (e.g. {repeated_ids[:5]}); those rows are named with their CSV lines"
        )
    listed_again = repeated_values([str(path.resolve()) for path in paths])
    if listed_again:
        notes.append(
            f"{manifest}: {plural(len(listed_again), 'scan')} {'is' if len(listed_again) == 1 else 'are'} listed on "
            f"more than one row (e.g. {listed_again[:3]}), each predicted once per row"
            + ("; rows of one path are named with their CSV lines" if set(repeated) - set(repeated_ids) else "")
        )
    notes += unmasked_note(str(manifest), torch.cat(litres), paths)
    ages = None
    if listed.ages is not None:
        ages = np.asarray([listed.ages[index] for index in kept], dtype=np.float64)
        notes += ages_beyond_a_lifetime(str(manifest), ages)
    kept_set = set(kept_lines)
    subjects = NewSubjects(
        features=np.empty((len(kept), 0), dtype=np.float32),
        subject_ids=row_labels(names, kept_lines, set(repeated)),
        ages=ages,
        lines=kept_lines,
        ids=[listed.ids[index] for index in kept],
        skipped=skipped,
        rows=total,
        notes=notes,
        unusable_ages=[(line, reason) for line, reason in listed.unusable_ages if line in kept_set],
    )
    return subjects, paths, np.concatenate(values, axis=1)


@dataclass
class _ListedScans:
    """The rows of a manifest whose path names a file, one entry each: the ``files``, their CSV
    ``lines``, ``names`` (the id, else the path as listed), ``ids`` and ``ages`` (``None``
    without an age column); and the rows ``skipped`` (no such file), the ``unusable_ages``, the
    number of data ``rows``, the ``id_column`` found and ``notes`` on the columns."""

    rows: int
    id_column: str | None
    ages: list[float] | None
    files: list[Path] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    unusable_ages: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _list_new_scans(manifest: Path, id_column: str | None, age_column: str | None) -> _ListedScans:
    """The rows of ``manifest`` whose ``path`` names a file (not read yet); refuses what is not
    a manifest, or one of which no row names a file, in one line."""
    from sodeep.brainage.volumes import listed_file

    if manifest.is_dir():
        raise ValueError(f"{manifest} is a folder; give the manifest in it, a CSV file")
    if not manifest.is_file():
        raise FileNotFoundError(f"no manifest at {manifest}")
    if manifest.name.lower().endswith(SCAN_SUFFIXES):
        raise ValueError(
            f"{manifest} is a scan; the manifest is a CSV file that lists the scans in a 'path' column (one row each)"
        )
    columns, rows, lines, _ = read_csv_rows(manifest)
    if not rows:
        raise ValueError(f"{manifest}: the manifest has a header but no rows")
    try:
        path_column = find_column(columns, ["path"], "path")
        id_column, _ = find_id_and_site_columns(columns, id_column, None)
    except ValueError as error:
        raise ValueError(f"{manifest}: {error}") from None
    if path_column is None:
        close = closest_column("path", columns)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(f"{manifest}: a manifest of scans needs a 'path' column{hint}; columns are {columns}")
    if age_column is not None:
        if age_column not in columns:
            close = closest_column(age_column, columns)
            raise ValueError(
                f"{manifest}: no age column {age_column!r}" + (f" (did you mean {close!r}?)" if close else "")
            )
    else:
        age_column = find_column(columns, ["age"], "age")
    # A column named with the word "age" (age_years, Age (years)): a close spelling would take image_id.
    close = None if age_column else next((name for name in columns if AGE_WORD.search(name.lower())), None)
    listed = _ListedScans(rows=len(rows), id_column=id_column, ages=[] if age_column else None)
    if close:
        listed.notes.append(
            f"{manifest}: no age column 'age' (did you mean {close!r}?); predicting without ages (age_column= names it)"
        )
    for line, row in zip(lines, rows):
        file, problem = listed_file(manifest, row[path_column] or "")
        if problem is not None:
            listed.skipped.append((line, problem))
            continue
        listed.files.append(file)
        listed.lines.append(line)
        subject = None if not id_column or is_missing(row[id_column]) else row[id_column].strip()
        listed.ids.append(subject)
        listed.names.append(subject if subject is not None else row[path_column].strip())
        if age_column:
            problem = age_problem(row[age_column])
            listed.ages.append(np.nan if problem else float(row[age_column]))
            if problem:
                listed.unusable_ages.append((line, f"age {row[age_column]!r} {problem}"))
    if not listed.files:
        raise ValueError(f"{describe_left_out(str(manifest), listed.skipped, len(rows))}: no scan could be read")
    return listed


def _training_cohort(folder: Path, config: dict[str, Any], settings: dict[str, Any], progress: bool) -> Any:
    """The run's training cohort, read as the run read it (through its volume cache, which is not
    written), or the reason it cannot be: the manifest is missing or changed, or its volumes are
    not the files the run read (path, size or modification time)."""
    from sodeep.brainage.volumes import load_cohort
    from sodeep.files import file_digest

    manifest = Path(config.get("manifest") or "")
    if not manifest.is_file():
        return None, f"the run's training manifest {manifest} is missing"
    if file_digest(manifest) != config.get("manifest_sha256"):
        return None, f"the run's training manifest {manifest} has changed since the run (another SHA-256)"
    cache = Path(config.get("cache") or folder / "cache")
    extra = settings["config"]["extra"]
    try:
        cohort = load_cohort(
            manifest,
            cache,
            shape=extra["shape"],
            voxel_size=extra["voxel_size"],
            progress=progress,
            read_only_cache=True,
            progress_label="training volumes, to check the models",
        )
    except ValueError as error:
        return None, f"the run's training volumes cannot be read ({error})"
    if cohort.files_digest() != settings.get("volume_files_sha256"):
        return None, f"the volumes {manifest} lists are not the files the run read (path, size or modification time)"
    return cohort, None


def _scans_of_the_run(folder: Path) -> set[Path]:
    """The files of the scans a run trained on, by the paths its ``predictions.csv`` names them
    with (none where it cannot be read)."""
    import csv

    try:
        with open(folder / "predictions.csv", newline="", encoding="utf-8") as file:
            return {Path(row["subject"]) for row in csv.DictReader(file) if row.get("subject")}
    except (OSError, ValueError, KeyError, csv.Error):
        return set()


def _checked_models(
    folder: Path, settings: dict[str, Any], runs: list[tuple[str, dict[str, Any]]], cohort: Any
) -> list[torch.nn.Module]:
    """The ``M`` runs' models in eval mode, each after it reproduced its recorded test predictions
    on the training ``cohort`` (where given)."""
    from sodeep.brainage.cross_validation import run_directory
    from sodeep.brainage.models import SFCN
    from sodeep.brainage.training import BEST_CHECKPOINT, predict_ages

    options = settings["config"]
    batch = int(options.get("batch_size") or 8)
    models = []
    with torch.no_grad():
        for preset, run in runs:
            checkpoint = run_directory(folder, preset, run["seed"], run["fold"]) / BEST_CHECKPOINT
            model = load_trained_model(SFCN(**options["extra"]["network"]), checkpoint)
            if cohort is not None:
                again = predict_ages(model, cohort.volumes[run["test_rows"]], batch).double().numpy()
                differing = np.abs(again - np.asarray(run["test_predictions"], dtype=np.float64))
                if not differing.max(initial=0.0) <= REPRODUCTION_TOLERANCE:
                    raise ValueError(
                        f"{checkpoint} does not reproduce the test predictions {folder / RESULTS_FILE} records for it "
                        f"(up to {differing.max():.3g} years apart): the checkpoint changed after the run"
                    )
            models.append(model)
    return models


class _RunModels:
    """Scans ``(n, 1, D, H, W)`` -> ``(M, n)`` float64 ages by each of the ``M`` ``runs``' models.

    The models are loaded, and checked against the run's training cohort where it is found as
    the run read it, at the first scans: a manifest none of whose scans can be read is refused
    before any of that.  Then ``unchecked`` says why the check was not made (or is ``None``) and
    ``trained_on`` holds the training scans' files.
    """

    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        settings: dict[str, Any],
        runs: list[tuple[str, dict[str, Any]]],
        progress: bool,
    ) -> None:
        self.folder, self.config, self.settings, self.runs, self.progress = folder, config, settings, runs, progress
        self.unchecked: str | None = None
        self.trained_on: set[Path] = set()
        self._models: list[torch.nn.Module] | None = None

    def __call__(self, scans: torch.Tensor) -> np.ndarray:
        from sodeep.brainage.training import predict_ages

        if self._models is None:
            cohort, self.unchecked = _training_cohort(self.folder, self.config, self.settings, self.progress)
            self._models = _checked_models(self.folder, self.settings, self.runs, cohort)
            self.trained_on = (
                {path.resolve() for path in cohort.paths} if cohort is not None else _scans_of_the_run(self.folder)
            )
        batch = int(self.settings["config"].get("batch_size") or 8)
        with torch.no_grad():
            return torch.stack([predict_ages(model, scans, batch) for model in self._models]).double().numpy()


@keeps_caller_state
def predict_new_scans(
    folder: str | Path,
    manifest: str | Path,
    *,
    presets: Sequence[str] | None = None,
    id_column: str | None = None,
    age_column: str | None = None,
    progress: bool = True,
) -> BrainAgePredictions:
    """Predict the ages of the scans of ``manifest`` with every model of a nifti run folder.

    Args:
        folder: the ``--out`` folder of a ``sodeep brainage nifti`` run (finished runs are used; a
            note says how many of the planned runs finished).
        manifest: CSV with a ``path`` column, optionally ages and ids (:func:`read_new_scans`);
            scans that cannot be read are skipped (listed in ``subjects.skipped``).
        presets: which of the folder's presets (default: every preset with a finished run).
        id_column, age_column: as :func:`read_new_scans`.
        progress: progress bars while volumes are read.

    Returns:
        :class:`~sodeep.brainage.prediction.BrainAgePredictions`, ``(N,)`` per preset.  The scans
        are read and predicted :data:`SCANS_AT_A_TIME` at a time, so memory holds the models and
        that many volumes whatever the manifest's length (and, while the models are checked at
        the first of them, the run's training volumes).

    Raises:
        ValueError: (one line) the folder is not a finished nifti run, a preset is not in it, a
            model is damaged or does not reproduce its recorded test predictions, or no scan of
            the manifest can be read.
    """
    folder = Path(folder)
    config, results = read_run_folder(folder, NIFTI_COMMAND)
    settings = results["settings"]
    finished, chosen = choose_presets(folder, results, presets)
    extra = settings["config"]["extra"]
    runs = [(preset, run) for preset in chosen for run in finished[preset]]
    in_use, unfinished = folder_notes(folder, config, settings, {name: finished[name] for name in chosen})
    models = _RunModels(folder, config, settings, runs, progress)
    subjects, paths, predictions = read_new_scans(
        manifest,
        shape=extra["shape"],
        voxel_size=extra["voxel_size"],
        predict=models,
        id_column=id_column,
        age_column=age_column,
        progress=progress,
    )
    notes = in_use + subjects.notes + unfinished
    if models.unchecked:
        notes.append(f"{models.unchecked}: the models' recorded test predictions were not checked")
    notes += subjects.unusable_ages_note(manifest)
    shared = [str(path) for path in paths if path.resolve() in models.trained_on]
    if shared:
        notes.append(
            f"{manifest}: {plural(len(shared), 'scan')} of the run's training cohort (e.g. {shared[:2]}): the "
            "models trained on them, so their ages are not out-of-sample (the run's predictions.csv holds each "
            "training scan's age from the model that had it in its test fold)"
        )
    return ensemble(subjects, runs, predictions, np.zeros(len(subjects.subject_ids), dtype=bool), notes)
