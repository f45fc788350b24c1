"""Tabular brain-age data: a CSV with an age column and regional features (FreeSurfer tables).

Feature columns are chosen by glob patterns (``fnmatch``), by default every numeric column but
identifiers and covariates (:data:`NON_FEATURE_COLUMNS`).  Rows that cannot be used (missing or
non-numeric age or feature) are skipped and reported by CSV line, so one bad row does not lose the
run; a file with no usable row is an error.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Columns that are never features by default (compared case-insensitively).
NON_FEATURE_COLUMNS = ("age", "sub_id", "subject", "subject_id", "participant_id", "id", "sex", "site", "scanner")


@dataclass
class AgeTable:
    """Subjects of a brain-age table.

    Attributes:
        features: ``(N, F)`` float32.
        ages: ``(N,)`` float32, years.
        feature_names: ``F`` column names.
        subject_ids: ``N`` identifiers (the id column, else the CSV line number).
        sites: ``N`` site labels (``"all"`` when the table has no site column).
        skipped: ``(csv line, reason)`` of the rows left out.
    """

    features: np.ndarray
    ages: np.ndarray
    feature_names: list[str]
    subject_ids: list[str]
    sites: list[str]
    skipped: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.ages)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_number(text: str) -> bool:
    """A finite number that float32 (the dtype of the tables) holds without overflow."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def read_csv_records(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows (as dicts) of a CSV file.

    A leading byte-order mark (spreadsheet "CSV UTF-8" exports) is dropped, where it would
    otherwise become part of the first column's name; repeated column names are refused, where
    ``csv.DictReader`` would keep the last of them silently.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: repeated column names {repeated[:5]}; each column needs its own name")
    return columns, rows


def select_feature_columns(
    columns: Sequence[str], patterns: Sequence[str] | None, rows: Sequence[dict[str, str]], age_column: str
) -> list[str]:
    """Columns matching any glob in ``patterns`` (in file order), or by default every column whose
    non-empty values are all numbers, except ``age_column`` and :data:`NON_FEATURE_COLUMNS`."""
    excluded = {name.lower() for name in NON_FEATURE_COLUMNS} | {age_column.lower()}
    if patterns:
        chosen = [c for c in columns if c != age_column and any(fnmatch.fnmatchcase(c, p) for p in patterns)]
        if not chosen:
            raise ValueError(f"feature patterns {list(patterns)} match no column; columns are {list(columns)[:12]} ...")
        return chosen
    chosen = [
        c
        for c in columns
        if c.lower() not in excluded
        and any(row[c] for row in rows)
        and all(_is_number(row[c]) for row in rows if row[c])
    ]
    if not chosen:
        raise ValueError(f"no numeric feature column besides {sorted(excluded)}; columns are {list(columns)[:12]} ...")
    return chosen


def report_unusable_rows(
    source: str | os.PathLike, problems: list[tuple[int, str]], *, kept: int, summary: str
) -> None:
    """Raise if no row of ``source`` was usable; else warn once with ``summary`` (e.g. "skipped 2
    of 40 rows"), naming the first problem lines."""
    if not kept:
        raise ValueError(f"{source}: no usable row; first problems: {problems[:3]}")
    if problems:
        shown = "; ".join(f"line {line}: {reason}" for line, reason in problems[:5])
        warnings.warn(f"{source}: {summary} ({shown})", stacklevel=3)


def read_age_table(
    path: str | os.PathLike,
    *,
    age_column: str = "age",
    features: Sequence[str] | None = None,
    id_column: str | None = None,
    site_column: str = "site",
) -> AgeTable:
    """Read a brain-age CSV.

    Args:
        path: CSV with a header row.
        age_column: column of chronological ages (years).
        features: glob patterns of feature columns, e.g. ``["lh_*", "rh_*"]`` (default: every
            numeric column but ids and covariates).
        id_column: subject id column (default: the first of ``sub_id``, ``subject_id``,
            ``participant_id``, ``subject``, ``id`` present).
        site_column: site/scanner column, used for per-site metrics if present.

    Returns:
        An :class:`AgeTable`; unusable rows are skipped with a warning naming their CSV lines.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    columns, rows = read_csv_records(path)
    if age_column not in columns:
        raise ValueError(f"{path}: no age column {age_column!r}; columns are {columns[:12]} ...")
    if not rows:
        raise ValueError(f"{path}: the table has a header but no rows")
    feature_names = select_feature_columns(columns, features, rows, age_column)
    if id_column is None:
        id_column = next((c for c in ("sub_id", "subject_id", "participant_id", "subject", "id") if c in columns), None)

    kept_features, kept_ages, ids, sites, skipped = [], [], [], [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if not _is_number(row[age_column] or ""):
            skipped.append((line, f"age {row[age_column]!r} is not a number"))
            continue
        bad = next((c for c in feature_names if not _is_number(row[c] or "")), None)
        if bad is not None:
            skipped.append((line, f"feature {bad!r} is {row[bad]!r}, not a number"))
            continue
        kept_ages.append(float(row[age_column]))
        kept_features.append([float(row[c]) for c in feature_names])
        ids.append(row[id_column] if id_column else str(line))
        sites.append(row.get(site_column) or "all")
    report_unusable_rows(path, skipped, kept=len(kept_ages), summary=f"skipped {len(skipped)} of {len(rows)} rows")
    if id_column:
        seen, repeated_ids = set(), []
        for subject in ids:
            if subject in seen:
                repeated_ids.append(subject)
            seen.add(subject)
        if repeated_ids:
            warnings.warn(
                f"{path}: {len(repeated_ids)} rows repeat a {id_column!r} already seen (e.g. "
                f"{sorted(set(repeated_ids))[:5]}); rows of one subject may land in different "
                "cross-validation folds",
                stacklevel=2,
            )
    return AgeTable(
        features=np.asarray(kept_features, dtype=np.float32),
        ages=np.asarray(kept_ages, dtype=np.float32),
        feature_names=feature_names,
        subject_ids=ids,
        sites=sites,
        skipped=skipped,
    )


class Standardizer:
    """Per-feature z-scoring fitted on training rows only (never on validation or test rows).

    Example:
        >>> scaler = Standardizer().fit(np.array([[0.0], [2.0]]))
        >>> scaler.transform(np.array([[4.0]]))
        array([[3.]], dtype=float32)
    """

    def fit(self, features: np.ndarray) -> Standardizer:
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"fit needs (N >= 2, F) features, got shape {features.shape}")
        self.mean = features.mean(0)
        spread = features.std(0)
        self.std = np.where(spread > 0, spread, 1.0)  # a constant column stays constant (0)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)


def check_folds(folds: int, subjects: int | None = None) -> None:
    """Refuse fewer than 2 folds and, where the cohort's size is known, fewer subjects than folds."""
    if folds < 2 or (subjects is not None and subjects < folds):
        known = "" if subjects is None else f", N={subjects}"
        raise ValueError(f"need folds >= 2 and at least `folds` subjects, got folds={folds}{known}")


def stratified_folds(ages: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per subject, stratified by age: subjects sorted by age are cut into consecutive
    blocks of ``folds`` (the finest age bins), and each block sends one subject to every fold in a
    random order.  Fold sizes differ by at most one; each fold spans the whole age range.

    Args:
        ages: ``(N,)``, ``N >= folds``.
        folds: ``k >= 2``.
        seed: the only source of randomness.

    Returns:
        ``(N,)`` ints in ``[0, folds)``.
    """
    ages = np.asarray(ages)
    check_folds(folds, len(ages))
    rng = np.random.default_rng(seed)
    # Random tie-break so subjects of equal age are not always binned in file order.
    order = np.lexsort((rng.random(len(ages)), ages))
    blocks = -(-len(ages) // folds)
    assignment = rng.permuted(np.tile(np.arange(folds), (blocks, 1)), axis=1).ravel()
    # The last block is partial: keep only its first entries, which are a random subset of folds.
    result = np.empty(len(ages), dtype=np.int64)
    result[order] = assignment[: len(ages)]
    return result
