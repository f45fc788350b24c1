"""CSV files as people and spreadsheets write them: the delimiter sniffed, a byte-order mark
dropped, every row checked against the header, numbers written with commas refused, and cells
judged as numbers and ages; the one-line descriptions of what was wrong, by CSV line.  Used by
the brain-age tables (:mod:`sodeep.brainage.tables`) and manifests (:mod:`sodeep.brainage.volumes`).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sodeep.wording import plural


def describe_lines(lines: Sequence[int]) -> str:
    """``"line 3"``, ``"lines 3, 5, 8 and 2 more"``: the first :data:`SHOWN_PROBLEMS` CSV lines."""
    shown = ", ".join(map(str, lines[:SHOWN_PROBLEMS]))
    more = f" and {len(lines) - SHOWN_PROBLEMS} more" if len(lines) > SHOWN_PROBLEMS else ""
    return f"{'line' if len(lines) == 1 else 'lines'} {shown}{more}"


def describe_first(parts: Sequence[str]) -> str:
    """``"a, b, c"``, or the first :data:`SHOWN_PROBLEMS` parts and ``", and N more"``."""
    more = f", and {len(parts) - SHOWN_PROBLEMS} more" if len(parts) > SHOWN_PROBLEMS else ""
    return ", ".join(parts[:SHOWN_PROBLEMS]) + more


#: Column names an error shows before "and N more".
SHOWN_COLUMNS = 12


def describe_columns(columns: Sequence[str]) -> str:
    """``"['age', 'f']"``, or the first :data:`SHOWN_COLUMNS` names and how many more."""
    more = f" and {len(columns) - SHOWN_COLUMNS} more" if len(columns) > SHOWN_COLUMNS else ""
    return f"{list(columns)[:SHOWN_COLUMNS]}{more}"


FLOAT32_MAX = float(np.finfo(np.float32).max)


#: A number as a CSV writes it: ASCII digits, an optional sign, decimal point and exponent, or
#: NaN or infinity; not Python's other spellings (``1_000``, digits of other scripts).
NUMBER = re.compile(r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)\s*", re.IGNORECASE)


def is_numeric_text(text: str) -> bool:
    """Text that reads as a number, NaN, infinity and values beyond float32 included.

    Example:
        >>> [is_numeric_text(text) for text in ("2.5", " -1e3 ", "NaN", "1_000", "2,5", "٣٤")]
        [True, True, True, False, False, False]
    """
    return NUMBER.fullmatch(text) is not None


#: Cells that mean "no value" in a numeric column, as pandas reads them by default: R writes ``NA``,
#: spreadsheets ``#N/A``, databases ``NULL`` (besides empty cells and NaN).
MISSING_MARKERS = frozenset(
    {
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "n/a",
        "NULL",
        "null",
        "None",
    }
)


def is_missing(text: str) -> bool:
    """An empty cell, NaN or a missing-value marker (:data:`MISSING_MARKERS`).

    Example:
        >>> [is_missing(text) for text in ("", " ", "NaN", "NA", "#N/A", "NULL", "2.5", "fail")]
        [True, True, True, True, True, True, False, False]
    """
    text = text.strip()
    return not text or text in MISSING_MARKERS or (is_numeric_text(text) and math.isnan(float(text)))


def number_problem(text: str) -> str | None:
    """Why the cell ``text`` is not a finite number that float32 (the dtype of the tables) holds
    (``"missing"``: empty, NaN or a marker such as ``NA``; ``"not a number"``, ``"infinite"``,
    ``"beyond float32's range"``), or ``None``."""
    if is_missing(text):
        return "missing"
    if not is_numeric_text(text):
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
    if float(text) > LARGEST_AGE:
        return f"is above {LARGEST_AGE_TEXT}, whose squared errors pass float32's range"
    return None


#: Ages above this are left out: the losses square age errors in float32 (largest 3.4e38).
LARGEST_AGE, LARGEST_AGE_TEXT = 1e18, "1e18"


UTF8_BOM = b"\xef\xbb\xbf"

#: Delimiters a table may use, by name.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
#: Rows :func:`csv.Sniffer` reads to tell the delimiter.
SNIFFED_LINES = 20


def read_text_table(path: Path) -> str:
    """The text of a CSV file (UTF-8, a spreadsheet's byte-order marks dropped); ``ValueError``
    naming the file when it is empty, binary or in another encoding."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror})") from None
    body = data
    while body.startswith(UTF8_BOM):  # a spreadsheet's byte-order mark, once or more
        body = body[len(UTF8_BOM) :]
    if not body.strip():
        raise ValueError(f"{path} is empty: a table needs a header row and one row per subject")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ValueError(f'{path} is in UTF-16 (a spreadsheet\'s "Unicode Text"); save it as CSV UTF-8')
    if data[:2] == b"\x1f\x8b":
        raise ValueError(f"{path} is gzip-compressed, not a text CSV file; decompress it (gunzip) and give the .csv")
    if b"\x00" in data[:65536]:
        raise ValueError(f"{path} is not a text CSV file (it holds binary data)")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not a text CSV file in UTF-8 (byte 0x{body[error.start]:02x} at offset "
            f"{len(data) - len(body) + error.start}); "
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
        # Another delimiter in the header outside quotes that splits every row alike as well: both
        # separate columns ("id;site,age"), and a column would be lost without a word.
        unquoted = re.sub(r'"[^"]*"', "", header)
        mixed = any(
            other in unquoted and len({len(row) for row in csv.reader(lines, delimiter=other)}) == 1
            for other in present
            if other != delimiter
        )
        if len(widths) == 1 and not mixed:
            return delimiter
    names = " or ".join(DELIMITERS[candidate] for candidate in present)
    raise ValueError(
        f"{path}: cannot tell whether the columns are separated by {names}: the header is {header[:100]!r} "
        "and the rows do not settle it; use one delimiter (and '.' as the decimal mark), and quote names that hold "
        "another"
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
    repeated column names, of which it would keep the last; a row that repeats the header (two
    tables joined); numbers written with commas
    (:func:`check_decimal_point`).
    """
    text = read_text_table(path)
    delimiter = sniff_delimiter(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    physical_lines = text.splitlines()

    def quote_left_open(line: int) -> bool:  # a record read on from `line` to the reader's line
        return reader.line_num > line or physical_lines[line - 1].count('"') % 2 == 1

    columns: list[str] | None = None
    rows, lines, misfits, headers, previous = [], [], [], [], 0
    for fields in reader:
        line, previous = previous + 1, reader.line_num
        fields = [value.strip() for value in fields]
        if columns is None:
            if any(fields) and quote_left_open(line):
                raise ValueError(
                    f'{path}: a quote (") in the header, line {line}, is not closed, so the lines after it were '
                    "read as its column names: close it"
                )
            if any(fields):
                columns = header_names(fields)
            continue
        fitted = fit_to_header(fields, columns)
        if fitted is None:
            if any(fields):  # else a blank line
                misfits.append((line, len(fields), reader.line_num if quote_left_open(line) else None))
            continue
        if not any(fitted):  # a row of delimiters only, as spreadsheets write an emptied row
            continue
        if [name.lower() for name in fitted] == [name.lower() for name in columns]:
            headers.append(line)
            continue
        rows.append(dict(zip(columns, fitted)))
        lines.append(line)
    columns = columns or []
    if misfits:
        raise ValueError(describe_misfits(path, len(columns), misfits, delimiter))
    if headers:
        shown = ", ".join(str(line) for line in headers[:3]) + (
            f" and {len(headers) - 3} more" if len(headers) > 3 else ""
        )
        raise ValueError(
            f"{path}: {'line' if len(headers) == 1 else 'lines'} {shown} {'repeats' if len(headers) == 1 else 'repeat'} "
            "the header (tables joined one after the other?); delete "
            f"{'it' if len(headers) == 1 else 'them'}"
        )
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


def describe_misfits(path: Path, width: int, misfits: list[tuple[int, int, int | None]], delimiter: str) -> str:
    """One line: ``t.csv: the header has 6 fields but line 2 has 8; unquoted commas ...``, with the
    likely cause of longer rows (a delimiter inside a value: decimal commas), of shorter ones, and
    of a row with a quote left open.  ``misfits``: ``(first line, fields, last line)`` of each row of
    another length, the last line ``None`` unless a quote was left open in it."""
    open_quotes = [(line, end) for line, _, end in misfits if end is not None]
    misfits = [(line, count) for line, count, _ in misfits]
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
    if width == 1 and all(count > width for _, count in misfits):  # the header is another line
        causes = ["the first line is taken as the header: remove a title or comment line above the header"]
    if open_quotes:  # the quote's row swallowed the lines after it: its count says nothing
        line, end = open_quotes[0]
        runs = f"runs to line {end}, so lines {line}-{end} were read as one row" if end > line else "is not closed"
        quote = f'a quote (") on line {line} {runs}: close it'
        causes = [quote] if len(open_quotes) == len(misfits) else [quote, *causes]
    return f"{path}: the header has {plural(width, 'field')} but {shown}{more}; {'; '.join(causes)}"


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
        if commas and all(COMMA_NUMBER.fullmatch(cell) or is_numeric_text(cell) for _, cell in cells):
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
    if close:
        return folded[close[0]]
    holding = [column for column in columns if name.lower() in column.lower()]  # `Age (years)`, `AGE_AT_SCAN`
    return holding[0] if len(holding) == 1 else None


def name_letters(name: str) -> str:
    """``name`` in lower case without spaces or punctuation (letters and digits of any script
    kept): ``"Subject ID"`` -> ``"subjectid"``, ``"Âge"`` -> ``"âge"``; a name of neither, such
    as ``"#"``, as it is in lower case."""
    return "".join(char for char in name.casefold() if char.isalnum()) or name.casefold()


def find_column(
    columns: Sequence[str], names: Sequence[str], role: str, *, loose: bool = False, named: bool = False
) -> str | None:
    """The column named like the first of ``names`` the header holds, compared case-insensitively
    (``Site`` for ``site``), and with ``loose``, where no column has any of the names in any case,
    also without spaces and punctuation (``Subject ID`` and ``SubjectID`` for ``subject_id``:
    :func:`name_letters`); ``ValueError`` when two columns match that name alike.  Where the user
    ``named`` the column, one spelt as named wins over others in another case."""
    passes = [(str.lower, "case-insensitively"), (name_letters, "ignoring case, spaces and punctuation")]
    passes = [(str, "")] * named + passes[: 2 if loose else 1]
    for same, compared in passes:
        for name in names:
            matches = [column for column in columns if same(column) == same(name)]
            if len(matches) > 1:
                raise ValueError(
                    f"columns {matches} both match the {role} column {name!r} (names are compared "
                    f"{compared}); rename one of them"
                )
            if matches:
                return matches[0]
    return None


def check_usable_rows(
    source: str | os.PathLike, problems: list[tuple[int, str]], *, kept: int, advice: str = ""
) -> None:
    """Refuse a file of which no row was usable, naming the first problems (then ``advice``)."""
    if not kept:
        raise ValueError(f"{source}: no usable row ({_first_problems(problems)}){'; ' + advice if advice else ''}")


#: Problems a summary line names before "and N more".
SHOWN_PROBLEMS = 3


def _first_problems(problems: list[tuple[int, str]]) -> str:
    """``line 3: age '' is missing; line 4: ...; and 2 more``."""
    shown = "; ".join(f"line {line}: {reason}" for line, reason in problems[:SHOWN_PROBLEMS])
    return shown + (f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else "")


def describe_left_out(source: str, problems: list[tuple[int, str]], total: int, verb: str = "skipped") -> str:
    """One line: ``my.csv: skipped 2 of 4 rows (line 3: age '' is missing; line 4: ...)``."""
    return f"{source}: {verb} {len(problems)} of {total} rows ({_first_problems(problems)})"
