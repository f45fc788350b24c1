"""Tabular brain-age data: a CSV with an age column and regional features (FreeSurfer tables).

The file is read by :mod:`sodeep.brainage.csv_files`: the delimiter (comma, semicolon, tab or
``|``) is read off the header and first rows; every row has as many fields as the header (a
delimiter ending every row and blank lines aside), and spaces around names and values are
dropped.  Feature columns are chosen by their names or glob patterns (``fnmatch``),
by default every numeric column but identifiers and covariates (:data:`NON_FEATURE_COLUMNS`).
Rows that cannot be used (missing, non-numeric or impossible age, missing or non-numeric feature)
are skipped and listed on the table (:meth:`AgeTable.notes` says so in one line, with empty site
cells and ages beyond a lifetime), so one bad row does not lose the run; a file with no usable
row is an error.  Cross-validation folds of a table: :mod:`sodeep.brainage.folds`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sodeep.brainage.csv_files import (
    age_problem,
    check_usable_rows,
    closest_column,
    describe_columns,
    describe_first,
    describe_left_out,
    describe_lines,
    find_column,
    is_missing,
    is_numeric_text,
    name_letters,
    number_problem,
    read_csv_rows,
)
from sodeep.wording import plural

#: Columns that are never features by default (compared ignoring case, spaces and punctuation:
#: ``Subject ID`` is ``subject_id``): ids and covariates, such as sex or a site coded as numbers,
#: which would otherwise pass for features.
NON_FEATURE_COLUMNS = (
    "age", "sub_id", "subject", "subject_id", "participant_id", "id", "eid", "rid", "ptid", "subjid",
    "visit", "sex", "gender", "handedness", "site", "scanner", "center", "centre", "study", "dataset",
)  # fmt: skip
#: Names of a row-index column, never a feature by default: pandas' ``to_csv`` writes its index
#: under an empty name (read back: ``Unnamed: 0``), R's ``write.csv`` its row names likewise.
INDEX_COLUMN = re.compile(r"|unnamed: ?\d+|\.\.\.1", re.IGNORECASE)
#: A feature whose Pearson or Spearman correlation with age is at least this (in absolute value)
#: is named in a note: it gives the age away (an age in months or its logarithm, a birth year, a
#: row number of a table sorted by age) rather than measure the brain.
AGE_LIKE_CORRELATION = 0.99
#: Subjects from which Spearman's correlation is read too: among fewer, a feature can share the
#: ages' order by chance.
AGE_LIKE_ORDER_FROM = 20
#: The site of a subject whose table has no site column (or whose site cell is empty); a site
#: column that names a site ``all`` or ``none`` is read as written.
NO_SITE = "(no site)"
#: Id columns looked for, in this order, when none is named (compared ignoring case, spaces and
#: punctuation: ``Subject ID`` and ``SubjectID`` are ``subject_id``).
ID_COLUMNS = ("sub_id", "subject_id", "participant_id", "subject", "id")


@dataclass
class AgeTable:
    """Subjects of a brain-age table.

    Attributes:
        features: ``(N, F)`` float32.
        ages: ``(N,)`` float32, years.
        feature_names: ``F`` column names.
        subject_ids: ``N`` identifiers (the id column's, else ``"line N"`` by CSV line, also for an
            empty id cell; an id found on several rows with its line: ``"sub-01 (line 3)"``).
        sites: ``N`` site labels (:data:`NO_SITE`, ``"(no site)"``, when the table has no site column).
        skipped: ``(csv line, reason)`` of the rows left out.
        rows: data rows in the file (kept and skipped).
        delimiter: the file's delimiter.
        repeated_ids: subject ids found on more than one row (whose rows may land in different folds).
        dropped_columns: columns left out of the default features for cells that are not plain numbers:
            column -> ``(csv line, cell)`` of each text cell.
        empty_site_lines: CSV lines of the kept rows whose site cell is empty (their site is
            :data:`NO_SITE`).
        empty_id_lines: CSV lines of the kept rows whose id cell is empty.
        index_columns: row-index columns (:data:`INDEX_COLUMN`) left out of the default features.
        empty_columns: columns left out of the default features for having no value in any row.
        age_like_features: features whose Pearson or Spearman correlation with age reaches
            :data:`AGE_LIKE_CORRELATION`: name -> (Pearson r, Spearman rho).
        id_like_features: features named like an id (``scan_id``, ``MRI ID``) that hold a
            distinct whole number per subject.
        code_like_features: features that hold a few whole numbers (2 to
            :data:`MOST_CODES`) over :data:`CODES_FROM` subjects or more, like the codes of a site,
            a group or a diagnosis.
        constant_features: features that hold one value over the kept subjects: name -> whether
            they differ in the file and float32 rounded them to one value (a large offset).
        id_column, site_column: the id and site columns read, ``None`` where none was named or the
            one named is the column found by default (``site``, the first of :data:`ID_COLUMNS`).
        site_header: the site column read, as the file names it (``None`` where there is none).
        id_header: the id column read, likewise.
        sole_blockers: features whose cell alone kept rows out: name -> how many rows.
    """

    features: np.ndarray
    ages: np.ndarray
    feature_names: list[str]
    subject_ids: list[str]
    sites: list[str]
    skipped: list[tuple[int, str]]
    rows: int = 0
    delimiter: str = ","
    repeated_ids: list[str] = field(default_factory=list)
    dropped_columns: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    empty_site_lines: list[int] = field(default_factory=list)
    empty_id_lines: list[int] = field(default_factory=list)
    index_columns: list[str] = field(default_factory=list)
    empty_columns: list[str] = field(default_factory=list)
    age_like_features: dict[str, tuple[float, float]] = field(default_factory=dict)
    id_like_features: list[str] = field(default_factory=list)
    code_like_features: list[str] = field(default_factory=list)
    constant_features: dict[str, bool] = field(default_factory=dict)
    id_column: str | None = None
    site_column: str | None = None
    site_header: str | None = None
    id_header: str | None = None
    sole_blockers: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ages)

    def skipped_note(self, source: str) -> list[str]:
        """The line naming the rows of ``source`` that were skipped, or none."""
        if not self.skipped:
            return []
        line = describe_left_out(source, self.skipped, self.rows or len(self) + len(self.skipped))
        # A feature that alone keeps out half the skipped rows or more (a mostly empty column): named.
        column, count = max(self.sole_blockers.items(), key=lambda item: item[1], default=("", 0))
        if count >= 2 and 2 * count >= len(self.skipped):
            line += f"; feature {column!r} alone keeps out {count} of them: " + (
                "name the others in features= to keep them"
                if len(self.feature_names) > 1
                else "fill in its cells to keep them"
            )
        return [line]

    def notes(self, source: str) -> list[str]:
        """One line per thing a reader of ``source`` should know: rows skipped, ids repeated,
        columns that are not features for a few text cells, empty site cells, ages beyond a
        lifetime."""
        lines = self.skipped_note(source)
        lines += repeated_ids_line(source, self.repeated_ids)
        if self.dropped_columns:
            lines.append(describe_dropped_columns(source, self.dropped_columns, self.rows or len(self)))
        if self.empty_site_lines:
            lines.append(
                f"{source}: {len(self.empty_site_lines)} of {plural(len(self), 'subject')} "
                f"{'has' if len(self.empty_site_lines) == 1 else 'have'} an empty site cell (or NA) "
                f"({describe_lines(self.empty_site_lines)}); empty site cells are one site, {NO_SITE!r}, in per-site "
                "results, and a site-grouped split (split='site') refuses them: fill in their sites"
            )
        if self.empty_id_lines:
            lines.append(
                f"{source}: {len(self.empty_id_lines)} of {plural(len(self), 'subject')} "
                f"{'has' if len(self.empty_id_lines) == 1 else 'have'} an empty id cell (or NA) "
                f"({describe_lines(self.empty_id_lines)}); each is named by its line ('line N', then 'line N #2', "
                "'line N #3' where other rows' ids are that text) in the results"
            )
        if self.index_columns:
            lines.append(
                f"{source}: {plural(len(self.index_columns), 'row-index column')} "
                f"{[str(name) for name in self.index_columns]} (as pandas and R write the index) "
                f"{'is' if len(self.index_columns) == 1 else 'are'} not a feature"
            )
        if self.empty_columns:
            lines.append(
                f"{source}: {plural(len(self.empty_columns), 'column')} with no value in any row "
                f"{'is' if len(self.empty_columns) == 1 else 'are'} not a feature: "
                f"{describe_columns(self.empty_columns)}"
            )
        if self.age_like_features:
            shown = ", ".join(
                f"{name!r} (r = {r:+.3f}, Spearman {rho:+.3f})" for name, (r, rho) in self.age_like_features.items()
            )
            lines.append(
                f"{source}: features that give the age away: {shown}; they follow the age almost exactly (an age "
                "in other units, a birth year, a row number of a table sorted by age?): leave them out with features="
            )
        if self.id_like_features:
            named = describe_columns(self.id_like_features)
            one = len(self.id_like_features) == 1
            advice = (
                f"leave {'it' if one else 'them'} out with features= (the subject ids are {self.id_header!r})"
                if self.id_header
                else f"name the id column with id_column=, or leave {'it' if one else 'them'} out with features="
            )
            lines.append(
                f"{source}: {named} {'holds' if one else 'hold'} a distinct whole number per subject, like an id, "
                f"and {'is' if one else 'are'} read as {'a feature' if one else 'features'}: {advice}"
            )
        if self.code_like_features:
            lines.append(code_like_features_note(source, self.code_like_features))
        if self.constant_features:
            lines.append(constant_features_note(source, self.constant_features, len(self)))
        lines += sites_of_one_subject_note(source, self.sites, self.site_header)
        return lines + ages_beyond_a_lifetime(source, self.ages) + ages_of_zero(source, self.ages)


def sites_of_one_subject_note(source: str, sites: Sequence[str], column: str | None = None) -> list[str]:
    """The line that says the site ``column`` (``None``: a manifest's ``site``, in any case) gives
    most of 10 or more subjects a site of their own (a measurement read as sites, say), or none."""
    counts = Counter(site for site in sites if site != NO_SITE)
    alone = sum(1 for count in counts.values() if count == 1)
    if len(sites) < 10 or 2 * alone <= len(sites):  # (a handful of subjects says little of its sites)
        return []
    named, it = (f"the site column {column!r}", repr(column)) if column else ("the site column", "it")
    return [
        f"{source}: {named} gives {alone} of {plural(len(sites), 'subject')} a site of their own "
        f"({len(counts)} sites): a site is a scanner or centre that many subjects share (is {it} a "
        "measurement?); per-site results and the Spearman inside each site need sites of several subjects"
    ]


def constant_features_note(source: str, constant: dict[str, bool], subjects: int) -> str:
    """One line naming the features that hold one value over the ``subjects`` kept."""
    shown = describe_first(
        [
            f"{name!r} ({'its values differ only past float32 precision: subtract an offset' if rounded else 'one value'})"
            for name, rounded in constant.items()
        ]
    )
    return (
        f"{source}: {plural(len(constant), 'feature')} {'holds' if len(constant) == 1 else 'hold'} one value over "
        f"the {plural(subjects, 'subject')} kept and tell{'s' if len(constant) == 1 else ''} nothing about age: "
        f"{shown}"
    )


def ages_beyond_a_lifetime(source: str, ages: np.ndarray) -> list[str]:
    """One line naming the ages above :data:`OLDEST_AGE` in the file ``source``, or none."""
    beyond = np.asarray(ages, dtype=np.float32)
    beyond = beyond[beyond > OLDEST_AGE]
    if not len(beyond):
        return []
    return [
        f"{source}: {plural(len(beyond), 'age')} {'is' if len(beyond) == 1 else 'are'} above {OLDEST_AGE} "
        f"years (largest {np.format_float_positional(beyond.max(), trim='-')}); ages are read as years: convert "
        "months or days to years"
    ]


def ages_of_zero(source: str, ages: np.ndarray) -> list[str]:
    """One line counting the ages of 0 in the file ``source`` (most often a code for a missing
    age), or none."""
    zeros = int(np.count_nonzero(np.asarray(ages) == 0))
    if not zeros:
        return []
    return [
        f"{source}: {plural(zeros, 'age')} {'is' if zeros == 1 else 'are'} 0, read as newborns: where 0 stands "
        "for a missing age, leave the cell empty (its row is skipped)"
    ]


#: Ages above this many years are noted, not refused (a study of infants may count in months): no
#: one is known to have lived past 122, so a larger age is most likely in months or days.
OLDEST_AGE = 130


def describe_dropped_columns(source: str, dropped: dict[str, list[tuple[int, str]]], rows: int) -> str:
    """One line: ``my.csv: columns with cells that are not plain numbers are not features: 'g' (2 of 4 cells,
    line 4: 'fail'); ...``."""
    shown = describe_first(
        [
            f"{column!r} ({len(cells)} of {rows} cells, line {cells[0][0]}: {cells[0][1]!r})"
            for column, cells in dropped.items()
        ]
    )
    return (
        f"{source}: columns with cells that are not plain numbers are not features: {shown}; "
        "name them in features= to keep them (their rows with text are then skipped)"
    )


def find_id_and_site_columns(
    columns: Sequence[str], id_column: str | None, site_column: str | None
) -> tuple[str | None, str | None]:
    """The header's id column (``id_column``, else the first of :data:`ID_COLUMNS`) and site
    column (``site_column``, else ``site``), each ``None`` when absent, matched
    case-insensitively, and a default also ignoring spaces and punctuation (:func:`find_column`);
    ``ValueError`` when a named column is absent."""
    found = []
    for role, named, defaults in (("id", id_column, ID_COLUMNS), ("site", site_column, ("site",))):
        try:
            column = find_column(columns, [named] if named else defaults, role, loose=not named, named=bool(named))
        except ValueError as error:  # two columns match a name alike
            if named:
                raise
            raise ValueError(f"{error}, or name the {role} column with {role}_column=") from None
        if named and not column:
            match = closest_column(named, columns)
            hint = f" (did you mean {match!r}?)" if match else ""
            raise ValueError(f"no {role} column {named!r}{hint}; columns are {describe_columns(columns)}")
        found.append(column)
    return found[0], found[1]


#: :data:`NON_FEATURE_COLUMNS` as :func:`name_letters` reads them.
_NON_FEATURE_LETTERS = frozenset(name_letters(name) for name in NON_FEATURE_COLUMNS)


def is_left_out(column: str, reserved: Sequence[str]) -> bool:
    """Whether ``column`` is never a default feature by its name: one of ``reserved`` (the age,
    id and site columns read, in any case) or of :data:`NON_FEATURE_COLUMNS` (ignoring case,
    spaces and punctuation)."""
    return column.lower() in {name.lower() for name in reserved} or name_letters(column) in _NON_FEATURE_LETTERS


def _found_by_default(columns: Sequence[str], role: str) -> str | None:
    """The ``role`` column (``"id"`` or ``"site"``) found where none is named, or ``None``, also
    where two columns match a default name alike (naming the column settles that)."""
    try:
        return find_column(columns, ID_COLUMNS if role == "id" else ("site",), role, loose=True)
    except ValueError:
        return None


def select_feature_columns(
    columns: Sequence[str],
    patterns: Sequence[str] | None,
    rows: Sequence[dict[str, str]],
    reserved: Sequence[str],
    lines: Sequence[int],
) -> list[str]:
    """Columns named in or matching any glob of ``patterns`` (in file order) but the ``reserved`` ones (age,
    id and site, which are never features; a pattern that matches no other column is refused), or
    by default every column with a value whose non-empty cells all read as numbers, except the
    ``reserved`` columns, :data:`NON_FEATURE_COLUMNS` and row-index columns (an empty cell, NaN or
    a marker such as ``NA`` is a missing value: :func:`read_age_table` skips its row); ``lines`` are the rows' CSV lines."""
    if patterns:
        candidates = [c for c in columns if c not in reserved]
        for pattern in patterns:
            if _selected(pattern, candidates):
                continue
            matched = _selected(pattern, list(reserved))
            why = f" but {matched}: the age, id and site columns are never features" if matched else ""
            raise ValueError(
                f"feature pattern {pattern!r} matches no column{why}; columns are {describe_columns(columns)}"
            )
        chosen = {column for pattern in patterns for column in _selected(pattern, candidates)}
        return [c for c in candidates if c in chosen]
    chosen = [
        c
        for c in columns
        if not is_left_out(c, reserved)
        and not INDEX_COLUMN.fullmatch(c)
        and not all(is_missing(row[c]) for row in rows)
        and all(is_numeric_text(row[c]) for row in rows if not is_missing(row[c]))
    ]
    if not chosen:
        texts = text_cells_among_numbers(columns, rows, reserved, lines)
        hint = ""
        if texts:
            shown = ", ".join(f"{column!r} (line {cells[0][0]}: {cells[0][1]!r})" for column, cells in texts.items())
            hint = (
                f"; columns with cells that are not plain numbers: {shown[:300]}: name them in features= "
                "(e.g. features='lh_*') to keep them, and their rows with such cells are skipped"
            )
        empty = [c for c in columns if not is_left_out(c, reserved) and all(is_missing(row[c]) for row in rows)]
        if empty:
            hint += f"; {describe_columns(empty)} {'has' if len(empty) == 1 else 'have'} no value in any row"
        others = [c for c in columns if not is_left_out(c, reserved)]
        held = (
            f"no numeric feature column among {describe_columns(others)}"
            if others
            else f"no feature column: {describe_columns(columns)} {'is' if len(columns) == 1 else 'are'} the age, ids "
            "and covariates"
        )
        raise ValueError(f"{held}{hint}; add columns of numbers to predict the age from")
    return chosen


def text_cells_among_numbers(
    columns: Sequence[str], rows: Sequence[dict[str, str]], reserved: Sequence[str], lines: Sequence[int]
) -> dict[str, list[tuple[int, str]]]:
    """``(csv line, cell)`` of the cells that are not plain numbers in each column but those left out
    by name (:func:`is_left_out`)
    that a reader would take for a feature: one that also holds numbers (``2.61`` above ``n/a``),
    or whose cells all look like numbers in another format (``1.100.000``, ``45%``: digits, no
    letters); ``lines`` are the rows' CSV lines."""
    found = {}
    for column in (c for c in columns if not is_left_out(c, reserved) and not INDEX_COLUMN.fullmatch(c)):
        cells = [(line, row[column]) for line, row in zip(lines, rows)]
        texts = [(line, cell) for line, cell in cells if not is_missing(cell) and not is_numeric_text(cell)]
        numbers = any(is_numeric_text(cell) and not is_missing(cell) for _, cell in cells)
        if texts and (numbers or all(_looks_numeric(cell) for _, cell in texts)):
            found[column] = texts
    return found


def _looks_numeric(cell: str) -> bool:
    """A cell with digits and no letters (``1.100.000``, ``45%``, ``1 100 000``)."""
    return any(char.isdigit() for char in cell) and not any(char.isalpha() for char in cell)


def read_age_table(
    path: str | os.PathLike,
    *,
    age_column: str = "age",
    features: Sequence[str] | None = None,
    id_column: str | None = None,
    site_column: str | None = None,
) -> AgeTable:
    """Read a brain-age CSV.

    Args:
        path: CSV with a header row.
        age_column: column of chronological ages (years).
        features: names or glob patterns of feature columns, e.g. ``["lh_*", "rh_*"]`` (default: every
            numeric column but ids and covariates).
        id_column: subject id column (default: the first of :data:`ID_COLUMNS` present).
        site_column: site/scanner column, for per-site metrics (default: ``site`` if present).
            Id and site columns are matched case-insensitively (``Site``, ``SUB_ID``) and are
            never features; a column named here must be in the file.

    Returns:
        An :class:`AgeTable`; unusable rows are skipped and listed in its ``skipped``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a file that is not a text table, has no usable row, lacks the age column
            (naming a column of another case or a close spelling: ``age_column='Age'``) or the
            named id column, names the age column as the id or site column, has two id or site
            columns differing in case, or writes numbers with decimal commas.
    """
    path = Path(path)
    features = [features] if isinstance(features, str) else features  # one pattern, not its letters
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the table in it, a CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    columns, rows, lines, delimiter = read_csv_rows(path)
    if age_column not in columns:
        match = closest_column(age_column, columns)
        hint = f" (did you mean age_column={match!r}?)" if match else ""
        raise ValueError(f"{path}: no age column {age_column!r}{hint}; columns are {describe_columns(columns)}")
    if not rows:
        raise ValueError(f"{path}: the table has a header but no rows")
    alike = [column for column in columns if column.lower() == age_column.lower()]
    if len(alike) > 1:  # one would be taken as the ages, the other left out as an age column
        raise ValueError(
            f"{path}: columns {alike} both match the age column {age_column!r} (names are compared "
            "case-insensitively); rename one of them"
        )
    try:
        given = {"id": id_column, "site": site_column}
        id_column, site_column = find_id_and_site_columns(columns, id_column, site_column)
        # As named, or None where the name is the column the defaults find: a run names its columns
        # the same way with the flag or without it.
        named_columns = tuple(
            None if column == _found_by_default(columns, role) else column
            for role, column in (("id", id_column), ("site", site_column))
        )
        for role, column in (("id", id_column), ("site", site_column)):
            if column == age_column and given[role] is not None:
                raise ValueError(
                    f"the age column {age_column!r} cannot also be the {role} column; name another with {role}_column="
                )
            if column == age_column:  # found by its name: the age column is the one to check
                raise ValueError(
                    f"age_column={age_column!r} names the table's {role} column (found by its name); give the "
                    f"column of ages with age_column="
                )
        reserved = [age_column, *(c for c in (id_column, site_column) if c)]
        feature_names = select_feature_columns(columns, features, rows, reserved, lines)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    dropped = {} if features else text_cells_among_numbers(columns, rows, reserved, lines)
    index_columns = [] if features else [c for c in columns if INDEX_COLUMN.fullmatch(c) and c not in reserved]
    empty_columns = (
        []
        if features
        else [
            c
            for c in columns
            if not is_left_out(c, reserved) and c not in index_columns and all(is_missing(row[c]) for row in rows)
        ]
    )

    kept_features, kept_ages, ids, sites, skipped, empty_site_lines, empty_id_lines = [], [], [], [], [], [], []
    kept_lines: list[int] = []
    sole_blockers: dict[str, int] = {}  # feature -> rows kept out by it alone
    for line, row in zip(lines, rows):
        problem = age_problem(row[age_column])
        if problem:
            skipped.append((line, f"age {row[age_column]!r} {problem}"))
            continue
        reasons = ((column, number_problem(row[column])) for column in feature_names)
        bad = next(((column, reason) for column, reason in reasons if reason), None)
        if bad is not None:
            column, reason = bad
            shown = f"missing ({row[column]!r})" if reason == "missing" else f"{row[column]!r}, {reason}"
            skipped.append((line, f"feature {column!r} is {shown}"))
            if not any(number_problem(row[other]) for other in feature_names if other != column):
                sole_blockers[column] = sole_blockers.get(column, 0) + 1
            continue
        kept_ages.append(float(row[age_column]))
        kept_features.append([float(row[c]) for c in feature_names])
        kept_lines.append(line)
        if id_column and not is_missing(row[id_column].strip()):
            ids.append(row[id_column])
        else:  # named by its CSV line below, as its notes name it (a bare number, or NA, would read as an id)
            ids.append(None)
            if id_column:
                empty_id_lines.append(line)
        # An empty site cell, or a missing-value marker (NA), as for ids.
        has_site = bool(site_column) and not is_missing(row[site_column])
        sites.append(row[site_column] if has_site else NO_SITE)
        if site_column and not has_site:
            empty_site_lines.append(line)
    blocked_by_features = any(reason.startswith("feature ") for _, reason in skipped)
    advice = ""
    if features and blocked_by_features and not kept_ages:  # every column that keeps a row out
        aged = [row for row in rows if not age_problem(row[age_column])]
        blocking = [column for column in feature_names if any(number_problem(row[column]) for row in aged)]
        named = ", ".join(repr(column) for column in blocking[:5]) + (
            f" and {len(blocking) - 5} more" if len(blocking) > 5 else ""
        )
        advice = f"name only columns of numbers in features= (not numbers in every row: {named})"
    with_units = (
        re.search(r"\d", row[age_column]) and re.search(r"[^\W\d_]", row[age_column])  # '25y', '30 years'
        for row in rows
    )
    if not advice and not kept_ages and any(with_units):  # (only a refusal needs the advice)
        advice = "write each age as a plain number of years (25.5, not '25y')"
    check_usable_rows(path, skipped, kept=len(kept_ages), advice=advice)
    repeated_ids = repeated_values([subject for subject in ids if subject is not None])
    ids = row_labels(ids, kept_lines, set(repeated_ids))
    exact = np.asarray(kept_features, dtype=np.float64).reshape(len(kept_ages), len(feature_names))
    kept_features = exact.astype(np.float32)
    kept_ages = np.asarray(kept_ages, dtype=np.float32)
    constant = {}
    if len(kept_ages) > 1:
        for column in np.flatnonzero(np.ptp(kept_features, axis=0) == 0):
            constant[feature_names[column]] = bool(np.ptp(exact[:, column]) > 0)
    return AgeTable(
        features=kept_features,
        ages=kept_ages,
        feature_names=feature_names,
        subject_ids=ids,
        sites=sites,
        skipped=skipped,
        rows=len(rows),
        delimiter=delimiter,
        repeated_ids=repeated_ids,
        dropped_columns=dropped,
        empty_site_lines=empty_site_lines,
        empty_id_lines=empty_id_lines,
        index_columns=index_columns,
        empty_columns=empty_columns,
        age_like_features=age_like_features(kept_features, kept_ages, feature_names),
        id_like_features=id_like_features(exact, feature_names),
        code_like_features=code_like_features(exact, feature_names),
        constant_features=constant,
        id_column=named_columns[0],
        site_column=named_columns[1],
        site_header=site_column,
        id_header=id_column,
        sole_blockers=sole_blockers,
    )


def row_labels(ids: list[str | None], lines: list[int], repeated: set[str]) -> list[str]:
    """Each row's own name, so that its predictions stay its own: its id where no other row has
    it; a repeated id with its CSV line (``sub-01 (line 3)``, ``sub-01 (line 9)``); ``line 7`` for a
    row without an id (``None``); and ``#2``, ... after such a name where a row's id is that text."""
    taken = {subject for subject in ids if subject is not None and subject not in repeated}
    labels = []
    for subject, line in zip(ids, lines):
        if subject is not None and subject not in repeated:
            labels.append(subject)
            continue
        named = f"line {line}" if subject is None else f"{subject} (line {line})"
        label, count = named, 2
        while label in taken:
            label, count = f"{named} #{count}", count + 1
        taken.add(label)
        labels.append(label)
    return labels


def repeated_values(values: Sequence[str]) -> list[str]:
    """The values found more than once, in the order of their second appearance."""
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def repeated_ids_note(source: str, subject_ids: Sequence[str]) -> list[str]:
    """A line saying which subject ids of the file ``source`` appear on more than one row (empty
    ids aside), or none."""
    return repeated_ids_line(source, repeated_values([subject for subject in subject_ids if subject]))


def repeated_ids_line(source: str, repeated: Sequence[str]) -> list[str]:
    """The line of :func:`repeated_ids_note` for the ids ``repeated``, or none."""
    if not repeated:
        return []
    return [
        f"{source}: {plural(len(repeated), 'subject id')} {'appears' if len(repeated) == 1 else 'appear'} on more "
        f"than one row (e.g. {repeated[:5]}); rows of one subject may land in different cross-validation folds"
    ]


def age_like_features(features: np.ndarray, ages: np.ndarray, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Features (``(N, F)``) whose Pearson correlation with ``ages`` (``(N,)``), or from
    :data:`AGE_LIKE_ORDER_FROM` rows their Spearman correlation, reaches
    :data:`AGE_LIKE_CORRELATION` in absolute value: name -> (Pearson r, Spearman rho).  Needs 3
    rows and varying ages."""
    if len(ages) < 3 or np.ptp(ages) == 0:
        return {}
    features, ages = features.astype(np.float64), ages.astype(np.float64)
    pearson = _correlations(features, ages)
    import scipy.stats

    spearman = _correlations(scipy.stats.rankdata(features, axis=0), scipy.stats.rankdata(ages))
    ordered = np.abs(np.nan_to_num(spearman)) if len(ages) >= AGE_LIKE_ORDER_FROM else 0.0
    flagged = np.maximum(np.abs(np.nan_to_num(pearson)), ordered) >= AGE_LIKE_CORRELATION
    return {names[index]: (float(pearson[index]), float(spearman[index])) for index in np.flatnonzero(flagged)}


def _correlations(features: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``features`` (``(N, F)``) with ``ages``: ``(F,)``,
    NaN for a constant column."""
    centred = features - features.mean(0)
    age_centred = ages - ages.mean()
    norms = np.linalg.norm(centred, axis=0) * np.linalg.norm(age_centred)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred.T @ age_centred) / norms


#: A feature named like this (:func:`name_letters`) that holds a distinct whole number per subject
#: is taken for an id in a note: ``scan_id``, ``MRI ID``, ``subj``, ``Subj No``, ``Scan_Number``,
#: ``Subject Code``, ``Proband``.
ID_LIKE_NAME = re.compile(r".*(id|subj|subject|no|nr|num|number|index|idx|code|proband|participant)")


def id_like_features(features: np.ndarray, names: Sequence[str]) -> list[str]:
    """Features (``(N, F)``, float64 as read) named like an id (:data:`ID_LIKE_NAME`) that hold a
    distinct whole number in each of 3 rows or more."""
    if len(features) < 3:
        return []
    whole = np.all(features == np.round(features), axis=0)
    distinct = np.all(np.diff(np.sort(features, axis=0), axis=0) != 0, axis=0)
    return [
        name
        for name, is_whole, is_distinct in zip(names, whole, distinct)
        if is_whole and is_distinct and ID_LIKE_NAME.fullmatch(name_letters(name))
    ]


#: A feature of whole numbers with at least 2 and at most this many distinct values is noted as
#: looking like codes (:func:`code_like_features`), in tables of :data:`CODES_FROM` subjects or more.
MOST_CODES = 10
CODES_FROM = 20


def code_like_features(features: np.ndarray, names: Sequence[str]) -> list[str]:
    """Features (``(N, F)``, float64 as read) of whole numbers with 2 to :data:`MOST_CODES`
    distinct values, among :data:`CODES_FROM` rows or more: numbers that code a site, a group or
    a diagnosis read as measurements, which a model would learn from."""
    if len(features) < CODES_FROM:
        return []
    whole = np.all(features == np.round(features), axis=0)
    ordered = np.sort(features, axis=0)
    distinct = 1 + np.count_nonzero(np.diff(ordered, axis=0), axis=0)
    return [name for name, is_whole, count in zip(names, whole, distinct) if is_whole and 2 <= count <= MOST_CODES]


def code_like_features_note(source: str, names: Sequence[str]) -> str:
    """The line naming features that look like codes (:func:`code_like_features`)."""
    one = len(names) == 1
    site_like = [
        name for name in names if any(word in name_letters(name) for word in ("site", "scanner", "center", "centre"))
    ]
    advice = "leave it out with features=" if one else "leave out those that do, with features="
    if site_like:
        advice += f"; a site column is named with site_column= (e.g. site_column={site_like[0]!r})"
    return (
        f"{source}: {describe_columns(list(names))} {'holds' if one else 'hold'} a few whole numbers, like the codes "
        f"of a site, a group or a diagnosis, and {'is' if one else 'are'} read as {'a feature' if one else 'features'}: "
        f"if {'it codes' if one else 'they code'} such labels, {advice}"
    )


def _selected(pattern: str, columns: Sequence[str]) -> list[str]:
    """The ``columns`` a ``--features`` pattern selects: the column of that very name (``Volume
    [mm3]``, whose brackets a glob reads as a set of characters), else those the glob matches."""
    return [pattern] if pattern in columns else [column for column in columns if fnmatch.fnmatchcase(column, pattern)]


class Standardizer:
    """Per-feature z-scoring fitted on training rows only (never on validation or test rows).

    Example:
        >>> scaler = Standardizer().fit(np.array([[0.0], [2.0]]))
        >>> scaler.transform(np.array([[4.0]]))
        array([[3.]], dtype=float32)
    """

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> Standardizer:
        """Fit on ``(N >= 2, F)`` finite training features."""
        features = np.asarray(features, dtype=np.float64)  # float32 sums overflow beyond about 1e19
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"fit needs (N >= 2, F) features, got shape {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError(
                f"fit needs finite features, got {int((~np.isfinite(features)).sum())} NaN or infinite values"
            )
        self.mean = features.mean(0)
        spread = features.std(0)
        self.std = np.where(spread > 0, spread, 1.0)  # a constant column stays constant (0)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """``(N, F)`` features z-scored with the fitted means and deviations, as float32."""
        if self.mean is None:
            raise ValueError("this Standardizer is not fitted: call fit(training_features) first")
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise ValueError(f"transform needs (N, {len(self.mean)}) features, as fitted, got shape {features.shape}")
        return ((features - self.mean) / self.std).astype(np.float32)
