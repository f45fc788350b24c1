"""Tabular brain-age data: a CSV with an age column and regional features (FreeSurfer tables).

The delimiter (comma, semicolon, tab or ``|``) is read off the header and first rows; every row
has as many fields as the header (a delimiter ending every row and blank lines aside), and spaces
around names and values are dropped.  Feature columns are chosen by glob patterns (``fnmatch``),
by default every numeric column but identifiers and covariates (:data:`NON_FEATURE_COLUMNS`).
Rows that cannot be used (missing, non-numeric or impossible age, missing or non-numeric feature)
are skipped and listed on the table (:meth:`AgeTable.notes` says so in one line, with empty site
cells and ages beyond a lifetime), so one bad row does not lose the run; a file with no usable
row is an error.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import io
import math
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Columns that are never features by default (compared case-insensitively).
NON_FEATURE_COLUMNS = ("age", "sub_id", "subject", "subject_id", "participant_id", "id", "sex", "site", "scanner")
#: The site of a subject whose table has no site column (or whose site cell is empty).
NO_SITE = "all"
#: Id columns looked for, in this order, when none is named (compared case-insensitively).
ID_COLUMNS = ("sub_id", "subject_id", "participant_id", "subject", "id")


@dataclass
class AgeTable:
    """Subjects of a brain-age table.

    Attributes:
        features: ``(N, F)`` float32.
        ages: ``(N,)`` float32, years.
        feature_names: ``F`` column names.
        subject_ids: ``N`` identifiers (the id column, else the CSV line number).
        sites: ``N`` site labels (:data:`NO_SITE`, ``"all"``, when the table has no site column).
        skipped: ``(csv line, reason)`` of the rows left out.
        rows: data rows in the file (kept and skipped).
        delimiter: the file's delimiter.
        repeated_ids: subject ids found on more than one row (whose rows may land in different folds).
        dropped_columns: columns left out of the default features for holding text among numbers:
            column -> ``(csv line, cell)`` of each text cell.
        empty_site_lines: CSV lines of the kept rows whose site cell is empty (their site is
            :data:`NO_SITE`).
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

    def __len__(self) -> int:
        return len(self.ages)

    def notes(self, source: str) -> list[str]:
        """One line per thing a reader of ``source`` should know: rows skipped, ids repeated,
        columns that are not features for a few text cells, empty site cells, ages beyond a
        lifetime."""
        lines = []
        if self.skipped:
            lines.append(describe_left_out(source, self.skipped, self.rows or len(self) + len(self.skipped)))
        if self.repeated_ids:
            repeated = len(self.repeated_ids)
            lines.append(
                f"{source}: {plural(repeated, 'subject id')} {'appears' if repeated == 1 else 'appear'} on more than "
                f"one row (e.g. {self.repeated_ids[:5]}); rows of one subject may land in different "
                "cross-validation folds"
            )
        if self.dropped_columns:
            lines.append(describe_dropped_columns(source, self.dropped_columns, self.rows or len(self)))
        if self.empty_site_lines:
            lines.append(
                f"{source}: {len(self.empty_site_lines)} of {plural(len(self), 'subject')} "
                f"{'has' if len(self.empty_site_lines) == 1 else 'have'} an empty site cell "
                f"({describe_lines(self.empty_site_lines)}); empty site cells are one site, {NO_SITE!r}, in per-site "
                "results, and a site-grouped split (--split site) refuses them: fill in their sites"
            )
        beyond = self.ages[self.ages > OLDEST_AGE]
        if len(beyond):
            lines.append(
                f"{source}: {plural(len(beyond), 'age')} {'is' if len(beyond) == 1 else 'are'} above {OLDEST_AGE} "
                f"years (largest {float(beyond.max()):.10g}); ages are read as years: convert months or days to years"
            )
        return lines


#: Ages above this many years are noted, not refused (a study of infants may count in months): no
#: one is known to have lived past 122, so a larger age is most likely in months or days.
OLDEST_AGE = 130


def plural(count: int, noun: str) -> str:
    """``"1 row"``, ``"2 rows"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe_lines(lines: Sequence[int]) -> str:
    """``"line 3"``, ``"lines 3, 5, 8 and 2 more"``: the first :data:`SHOWN_PROBLEMS` CSV lines."""
    shown = ", ".join(map(str, lines[:SHOWN_PROBLEMS]))
    more = f" and {len(lines) - SHOWN_PROBLEMS} more" if len(lines) > SHOWN_PROBLEMS else ""
    return f"{'line' if len(lines) == 1 else 'lines'} {shown}{more}"


#: Column names an error shows before "and N more".
SHOWN_COLUMNS = 12


def describe_columns(columns: Sequence[str]) -> str:
    """``"['age', 'f']"``, or the first :data:`SHOWN_COLUMNS` names and how many more."""
    more = f" and {len(columns) - SHOWN_COLUMNS} more" if len(columns) > SHOWN_COLUMNS else ""
    return f"{list(columns)[:SHOWN_COLUMNS]}{more}"


def describe_dropped_columns(source: str, dropped: dict[str, list[tuple[int, str]]], rows: int) -> str:
    """One line: ``my.csv: columns holding text among numbers are not features: 'g' (2 of 4 cells,
    line 4: 'n/a'); ...``."""
    shown = ", ".join(
        f"{column!r} ({len(cells)} of {rows} cells, line {cells[0][0]}: {cells[0][1]!r})"
        for column, cells in list(dropped.items())[:SHOWN_PROBLEMS]
    )
    more = f", and {len(dropped) - SHOWN_PROBLEMS} more" if len(dropped) > SHOWN_PROBLEMS else ""
    return (
        f"{source}: columns holding text among numbers are not features: {shown}{more}; "
        "name them in --features to keep them (their rows with text are then skipped)"
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _is_numeric_text(text: str) -> bool:
    """Text that reads as a number, NaN, infinity and values beyond float32 included."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_missing(text: str) -> bool:
    """An empty or NaN cell (pandas writes a missing value as either)."""
    return not text or (_is_numeric_text(text) and math.isnan(float(text)))


def number_problem(text: str) -> str | None:
    """Why the cell ``text`` is not a finite number that float32 (the dtype of the tables) holds
    (``"not a number"``, ``"infinite"``, ``"beyond float32's range"``), or ``None``."""
    if not _is_numeric_text(text) or math.isnan(float(text)):
        return "not a number"
    if "inf" in text.lower():
        return "infinite"
    if abs(float(text)) > FLOAT32_MAX:
        return "beyond float32's range"
    return None


def age_problem(text: str) -> str | None:
    """Why the cell ``text`` is not a usable age in years (``"is negative"``, ...), or ``None``."""
    problem = number_problem(text)
    if problem:
        return f"is {problem}"
    if float(text) < 0:
        return "is negative"
    return None


#: Delimiters a table may use, by name.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
#: Rows :func:`csv.Sniffer` reads to tell the delimiter.
SNIFFED_LINES = 20


def read_text_table(path: Path) -> str:
    """The text of a CSV file (UTF-8, a spreadsheet's byte-order mark dropped); ``ValueError``
    naming the file when it is empty, binary or in another encoding."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror})") from None
    if not data.strip():
        raise ValueError(f"{path} is empty: a table needs a header row and one row per subject")
    if b"\x00" in data[:65536]:
        raise ValueError(f"{path} is not a text CSV file (it holds binary data)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not a text CSV file in UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as CSV UTF-8"
        ) from None


def sniff_delimiter(path: Path, text: str) -> str:
    """The delimiter of a CSV file's ``text``: the only one of :data:`DELIMITERS` its header holds
    (none: one column, a comma), else the one :class:`csv.Sniffer` finds that splits the header
    and the first rows into the same number of fields; ``ValueError`` naming the header when no
    delimiter does."""
    lines = [line for line in text.splitlines() if line.strip()][:SNIFFED_LINES]
    header = lines[0]
    present = [candidate for candidate in DELIMITERS if candidate in header]
    if len(present) <= 1:
        return present[0] if present else ","
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(present)).delimiter
    except csv.Error:
        delimiter = None
    if delimiter is not None and len(lines) > 1:
        widths = {len(fields) for fields in csv.reader(lines, delimiter=delimiter)}
        if len(widths) == 1:
            return delimiter
    names = " or ".join(DELIMITERS[candidate] for candidate in present)
    raise ValueError(
        f"{path}: cannot tell whether the columns are separated by {names}: the header is {header[:100]!r} "
        "and the rows do not settle it; use one delimiter"
    )


def read_csv_records(path: Path) -> tuple[list[str], list[dict[str, str]], str]:
    """The header, the rows (as dicts) and the delimiter of a CSV file (:func:`read_csv_rows`)."""
    columns, rows, _, delimiter = read_csv_rows(path)
    return columns, rows, delimiter


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]], list[int], str]:
    """The header, the rows (as dicts), the CSV line of each row and the delimiter of a CSV file.

    The delimiter is sniffed (:func:`sniff_delimiter`); a leading byte-order mark (spreadsheet
    "CSV UTF-8" exports) is dropped, where it would otherwise become part of the first column's
    name; spaces around names and values are dropped (``id, age``); blank lines are skipped.
    Refused (``ValueError``, one line): a row with another number of fields than the header
    (:func:`fit_to_header`), where ``csv.DictReader`` would drop or invent cells silently;
    repeated column names, of which it would keep the last; numbers written with commas
    (:func:`check_decimal_point`).
    """
    text = read_text_table(path)
    delimiter = sniff_delimiter(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    columns: list[str] | None = None
    rows, lines, misfits, previous = [], [], [], 0
    for fields in reader:
        line, previous = previous + 1, reader.line_num
        fields = [value.strip() for value in fields]
        if columns is None:
            if any(fields):
                columns = header_names(fields)
            continue
        fitted = fit_to_header(fields, columns)
        if fitted is None:
            if any(fields):  # else a blank line
                misfits.append((line, len(fields)))
            continue
        rows.append(dict(zip(columns, fitted)))
        lines.append(line)
    columns = columns or []
    if misfits:
        raise ValueError(describe_misfits(path, len(columns), misfits, delimiter))
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: repeated column names {repeated[:5]}; each column needs its own name")
    check_decimal_point(path, columns, rows, delimiter, lines)
    return columns, rows, lines, delimiter


def header_names(fields: list[str]) -> list[str]:
    """The column names of a header row, without the empty names a delimiter ending it leaves."""
    while len(fields) > 1 and not fields[-1]:
        fields = fields[:-1]
    return fields


def fit_to_header(fields: list[str], columns: Sequence[str]) -> list[str] | None:
    """A row's ``fields``, one per column: a row longer by empty fields only (a delimiter ending it)
    is cut to the header; anything else of another length is ``None``."""
    if len(fields) > len(columns) and not any(fields[len(columns) :]):
        return fields[: len(columns)]
    return fields if len(fields) == len(columns) else None


def describe_misfits(path: Path, width: int, misfits: list[tuple[int, int]], delimiter: str) -> str:
    """One line: ``t.csv: the header has 6 fields but line 2 has 8; unquoted commas ...``, with the
    likely cause of longer rows (a delimiter inside a value: decimal commas) and of shorter ones."""
    shown = ", ".join(f"line {line} has {count}" for line, count in misfits[:SHOWN_PROBLEMS])
    left = len(misfits) - SHOWN_PROBLEMS
    more = f" (and {plural(left, 'more row')} of another length)" if left > 0 else ""
    name = DELIMITERS[delimiter]
    causes = []
    if any(count > width for _, count in misfits):
        if delimiter == ",":
            causes.append(
                "unquoted commas inside values, e.g. decimal commas (58,2 for 58.2), split them in two: quote such "
                "values or write numbers with '.' as the decimal mark"
            )
        else:
            causes.append(f"unquoted {name}s inside values split them in two: quote such values")
    if any(count < width for _, count in misfits):
        causes.append(f"each row needs a field per column: an empty cell still needs its {name}")
    return f"{path}: the header has {width} fields but {shown}{more}; {'; '.join(causes)}"


#: A number written with commas: decimal commas, as spreadsheets in many European locales save
#: them (``23,5``, ``1.234,5``), or thousands separators (``1,234``, ``12,345.5``).
COMMA_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d*),\d+|[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def check_decimal_point(
    path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]], delimiter: str, lines: Sequence[int]
) -> None:
    """Refuse a table with a column of numbers written with commas (``23,5``, ``1,234``: quoted in a
    comma-separated file), which would otherwise be read as text; ``lines`` are the rows' CSV lines."""
    for column in columns:
        cells = [(line, row[column]) for line, row in zip(lines, rows) if row[column]]
        commas = [(line, cell) for line, cell in cells if COMMA_NUMBER.fullmatch(cell)]
        if commas and all(COMMA_NUMBER.fullmatch(cell) or _is_numeric_text(cell) for _, cell in cells):
            line, cell = commas[0]
            raise ValueError(
                f"{path} ({DELIMITERS[delimiter]}-separated) writes numbers with commas, as decimal commas or "
                f"thousands separators (column {column!r}, line {line}: {cell!r}); save it with '.' as the decimal "
                "mark and no thousands separators"
            )


def closest_column(name: str, columns: Sequence[str]) -> str | None:
    """The column ``name`` was probably meant to be: the same but for case, else a close spelling."""
    folded = {column.lower(): column for column in columns}
    if name.lower() in folded:
        return folded[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(folded), n=1)
    return folded[close[0]] if close else None


def find_column(columns: Sequence[str], names: Sequence[str], role: str) -> str | None:
    """The column named like the first of ``names`` the header holds, compared case-insensitively
    (``Site`` for ``site``); ``ValueError`` when two columns match that name in different cases."""
    for name in names:
        matches = [column for column in columns if column.lower() == name.lower()]
        if len(matches) > 1:
            raise ValueError(
                f"columns {matches} both match the {role} column {name!r} (names are compared "
                "case-insensitively); rename one of them"
            )
        if matches:
            return matches[0]
    return None


def find_id_and_site_columns(
    columns: Sequence[str], id_column: str | None, site_column: str | None
) -> tuple[str | None, str | None]:
    """The header's id column (``id_column``, else the first of :data:`ID_COLUMNS`) and site
    column (``site_column``, else ``site``), each ``None`` when absent, matched
    case-insensitively (:func:`find_column`); ``ValueError`` when a named column is absent."""
    found = []
    for role, named, defaults in (("id", id_column, ID_COLUMNS), ("site", site_column, ("site",))):
        column = find_column(columns, [named] if named else defaults, role)
        if named and not column:
            match = closest_column(named, columns)
            hint = f" (did you mean {match!r}?)" if match else ""
            raise ValueError(f"no {role} column {named!r}{hint}; columns are {describe_columns(columns)}")
        found.append(column)
    return found[0], found[1]


def select_feature_columns(
    columns: Sequence[str], patterns: Sequence[str] | None, rows: Sequence[dict[str, str]], reserved: Sequence[str]
) -> list[str]:
    """Columns matching any glob in ``patterns`` (in file order) but ``reserved[0]`` (the age), or
    by default every column with a value whose non-empty cells all read as numbers, except the
    ``reserved`` columns and :data:`NON_FEATURE_COLUMNS` (an empty or NaN cell is a missing value:
    :func:`read_age_table` skips its row)."""
    excluded = {name.lower() for name in (*NON_FEATURE_COLUMNS, *reserved)}
    if patterns:
        chosen = [c for c in columns if c != reserved[0] and any(fnmatch.fnmatchcase(c, p) for p in patterns)]
        if not chosen:
            raise ValueError(
                f"feature patterns {list(patterns)} match no column; columns are {describe_columns(columns)}"
            )
        return chosen
    chosen = [
        c
        for c in columns
        if c.lower() not in excluded
        and not all(_is_missing(row[c]) for row in rows)
        and all(_is_numeric_text(row[c]) for row in rows if row[c])
    ]
    if not chosen:
        raise ValueError(
            f"no numeric feature column besides {sorted(excluded)}; columns are {describe_columns(columns)}"
        )
    return chosen


def text_cells_among_numbers(
    columns: Sequence[str], rows: Sequence[dict[str, str]], excluded: Sequence[str], lines: Sequence[int]
) -> dict[str, list[tuple[int, str]]]:
    """``(csv line, cell)`` of the text cells of each column but ``excluded`` that also holds
    numbers (``2.61`` above ``n/a``): the columns the default feature choice leaves out for a few
    cells, where a reader would expect a feature; ``lines`` are the rows' CSV lines."""
    left_out = {name.lower() for name in excluded}
    found = {}
    for column in (c for c in columns if c.lower() not in left_out):
        cells = [(line, row[column]) for line, row in zip(lines, rows)]
        texts = [(line, cell) for line, cell in cells if cell and not _is_numeric_text(cell)]
        if texts and any(_is_numeric_text(cell) and not _is_missing(cell) for _, cell in cells):
            found[column] = texts
    return found


def check_usable_rows(source: str | os.PathLike, problems: list[tuple[int, str]], *, kept: int) -> None:
    """Refuse a file of which no row was usable, naming the first problems."""
    if not kept:
        shown = "; ".join(f"line {line}: {reason}" for line, reason in problems[:3])
        raise ValueError(f"{source}: no usable row ({shown})")


#: Problems a summary line names before "and N more".
SHOWN_PROBLEMS = 3


def describe_left_out(source: str, problems: list[tuple[int, str]], total: int, verb: str = "skipped") -> str:
    """One line: ``my.csv: skipped 2 of 4 rows (line 3: age '' is not a number; line 4: ...)``."""
    shown = "; ".join(f"line {line}: {reason}" for line, reason in problems[:SHOWN_PROBLEMS])
    more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return f"{source}: {verb} {len(problems)} of {total} rows ({shown}{more})"


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
        features: glob patterns of feature columns, e.g. ``["lh_*", "rh_*"]`` (default: every
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
            (naming a column of another case or a close spelling: ``--age-column Age``) or the
            named id column, has two id or site columns differing in case, or writes numbers
            with decimal commas.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}")
    columns, rows, lines, delimiter = read_csv_rows(path)
    if age_column not in columns:
        match = closest_column(age_column, columns)
        hint = f" (did you mean --age-column {shlex.quote(match)}?)" if match else ""
        raise ValueError(f"{path}: no age column {age_column!r}{hint}; columns are {describe_columns(columns)}")
    if not rows:
        raise ValueError(f"{path}: the table has a header but no rows")
    try:
        id_column, site_column = find_id_and_site_columns(columns, id_column, site_column)
        reserved = [age_column, *(c for c in (id_column, site_column) if c)]
        feature_names = select_feature_columns(columns, features, rows, reserved)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    excluded = [*reserved, *NON_FEATURE_COLUMNS]
    dropped = {} if features else text_cells_among_numbers(columns, rows, excluded, lines)

    kept_features, kept_ages, ids, sites, skipped, empty_site_lines = [], [], [], [], [], []
    for line, row in zip(lines, rows):
        problem = age_problem(row[age_column])
        if problem:
            skipped.append((line, f"age {row[age_column]!r} {problem}"))
            continue
        reasons = ((column, number_problem(row[column])) for column in feature_names)
        bad = next(((column, reason) for column, reason in reasons if reason), None)
        if bad is not None:
            column, reason = bad
            skipped.append((line, f"feature {column!r} is {row[column]!r}, {reason}"))
            continue
        kept_ages.append(float(row[age_column]))
        kept_features.append([float(row[c]) for c in feature_names])
        ids.append(row[id_column] if id_column else str(line))
        sites.append((row[site_column] if site_column else "") or NO_SITE)
        if site_column and not row[site_column]:
            empty_site_lines.append(line)
    check_usable_rows(path, skipped, kept=len(kept_ages))
    seen: set[str] = set()
    repeated_ids: list[str] = []
    for subject in ids if id_column else []:
        if subject in seen and subject not in repeated_ids:
            repeated_ids.append(subject)
        seen.add(subject)
    return AgeTable(
        features=np.asarray(kept_features, dtype=np.float32),
        ages=np.asarray(kept_ages, dtype=np.float32),
        feature_names=feature_names,
        subject_ids=ids,
        sites=sites,
        skipped=skipped,
        rows=len(rows),
        delimiter=delimiter,
        repeated_ids=repeated_ids,
        dropped_columns=dropped,
        empty_site_lines=empty_site_lines,
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


#: Random orders of the sites :func:`site_folds` deals out; it keeps the most even deal.  On
#: FCON1000 (23 sites, 5 folds) a hundred give a largest fold of 218-224 subjects (an exact split:
#: 216) in ~10 ms.
SITE_ORDERS = 100


def check_site_folds(sites: Sequence[str], folds: int) -> None:
    """Refuse a site-grouped split of ``sites`` into ``folds`` folds when there are fewer distinct
    sites than folds (naming a table without a site column as such), or when some subjects have no
    site (:data:`NO_SITE` among other sites: empty site cells), which would form one made-up site."""
    check_folds(folds)
    names = sorted({str(site) for site in sites})
    if names == [NO_SITE]:
        raise ValueError(
            f"a site-grouped split needs a site column; the table has none (every subject's site is {NO_SITE!r})"
        )
    if NO_SITE in names:
        unknown = sum(str(site) == NO_SITE for site in sites)
        known = [name for name in names if name != NO_SITE]
        raise ValueError(
            f"a site-grouped split needs every subject's site; {plural(unknown, 'subject')} "
            f"{'has' if unknown == 1 else 'have'} no site (an empty site cell, read as {NO_SITE!r}) among the sites "
            f"{known[:5]}{' ...' if len(known) > 5 else ''}; fill in their sites, leave those rows out, or split by "
            "age (--split stratified)"
        )
    if len(names) < folds:
        raise ValueError(
            f"a site-grouped split into {folds} folds needs at least {folds} sites, got {len(names)} ({names[:5]}); "
            "use fewer folds"
        )


def site_folds(sites: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold index per subject, grouped by site: all subjects of a site share one fold.

    Sites are dealt in a random order, each to the fold that holds the fewest subjects so far;
    of :data:`SITE_ORDERS` random orders the one whose largest fold is smallest is kept.  With as
    many folds as sites, every fold is one site (leave-one-site-out).

    Args:
        sites: ``N`` site labels with at least ``folds`` distinct values.
        folds: ``k >= 2``.
        seed: the only source of randomness.

    Returns:
        ``(N,)`` ints in ``[0, folds)``; every fold holds at least one site.

    Example:
        >>> site_folds(["a", "a", "b", "c", "c", "c"], 3, seed=0).tolist()
        [1, 1, 2, 0, 0, 0]
    """
    check_site_folds(sites, folds)
    _, site_of, counts = np.unique(np.asarray(sites, dtype=str), return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    best_fold_of_site, best_largest = None, None
    for _ in range(SITE_ORDERS):
        fold_of_site = np.empty(len(counts), dtype=np.int64)
        load = np.zeros(folds, dtype=np.int64)
        for site in rng.permutation(len(counts)):
            fold_of_site[site] = np.argmin(load)
            load[fold_of_site[site]] += counts[site]
        if best_largest is None or load.max() < best_largest:
            best_fold_of_site, best_largest = fold_of_site, load.max()
    return best_fold_of_site[site_of]
