"""Fidelity tables: how close a sorter's ranks are to the exact ranks, per family and per n."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sodeep.checks import check_integer
from sodeep.metrics import mean_absolute_rank_error, mean_spearman
from sodeep.sorters import Sorter
from sodeep.synthetic import FAMILIES, checked_families, generate_sequences, make_generator

#: Lengths of the held-out fidelity table.
EVALUATION_LENGTHS = (2, 3, 5, 8, 16, 32, 64, 100, 128, 256)
#: Held-out data come from seeds far from any training seed.
HELD_OUT_SEED = 2_000_000_000
#: A sorter ranks a cell's sequences in calls of about this many scores (rows of n = 16,384 in
#: sixteens): its working memory stays bounded whatever ``sequences_per_cell`` is.
ELEMENTS_PER_CALL = 2**18


@dataclass
class FidelityRow:
    family: str
    length: int
    l1: float
    spearman: float
    rank_error: float  # mean absolute error in positions


def held_out_set(
    lengths: Sequence[int] = EVALUATION_LENGTHS,
    families: Sequence[str] = tuple(FAMILIES),
    sequences_per_cell: int = 64,
    seed: int = HELD_OUT_SEED,
) -> list[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """Fixed ``(family, n, scores, ranks)`` cells, each ``(sequences_per_cell, n)``, natural scale."""
    return list(held_out_cells(lengths, families, sequences_per_cell, seed))


def held_out_cells(
    lengths: Sequence[int] = EVALUATION_LENGTHS,
    families: Sequence[str] = tuple(FAMILIES),
    sequences_per_cell: int = 64,
    seed: int = HELD_OUT_SEED,
) -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
    """The cells of :func:`held_out_set`, made one at a time as they are read (the settings are
    checked at once): memory holds one cell, however many lengths are asked for."""
    families, lengths = checked_families(families), _checked_lengths(lengths)
    check_integer(sequences_per_cell, "sequences_per_cell", 1)
    check_integer(seed, "seed", 0, 2**63 - 1)

    def cells() -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
        for family in families:
            # Seeded by the family's place in FAMILIES, not in the list: a family's cells are the
            # same sequences whichever families are evaluated with it.
            family_index = list(FAMILIES).index(family)
            for length in lengths:
                gen = make_generator(seed + 1000 * family_index + length)
                scores, ranks, _ = generate_sequences(
                    sequences_per_cell, length, gen, families=[family], affine_probability=0.0
                )
                yield family, length, scores, ranks

    return cells()


def _checked_lengths(lengths: Sequence[int]) -> list[int]:
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, Iterable):
        raise TypeError(f"lengths must be a list of integers, e.g. [5, 100], got {type(lengths).__name__} {lengths!r}")
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must name at least one length, e.g. [5, 100]")
    for length in lengths:
        check_integer(length, "each of lengths", 1)
    return list(dict.fromkeys(int(length) for length in lengths))  # a length given twice: its rows once


@torch.no_grad()
def fidelity_table(
    sorter: Sorter | Callable[[torch.Tensor], torch.Tensor],
    lengths: Sequence[int] = EVALUATION_LENGTHS,
    families: Sequence[str] = tuple(FAMILIES),
    sequences_per_cell: int = 64,
    seed: int = HELD_OUT_SEED,
    progress: Callable[[int, int], None] | None = None,
) -> list[FidelityRow]:
    """Evaluate ``sorter`` on :func:`held_out_set`: a :class:`Sorter` in eval mode (its mode is
    restored after), with the lengths outside its range skipped, or any function that maps scores
    ``(B, n)`` to ranks ``(B, n)`` normalized as :func:`sodeep.rank` gives them (descending,
    divided by ``n``): ``fidelity_table(sodeep.rank)`` is exact.  ``progress(done, total)`` is
    called after each (family, n) cell."""
    lengths = _checked_lengths(lengths)
    if isinstance(sorter, type):
        raise TypeError(
            f"sorter is the class {sorter.__name__}, not a sorter: pass an instance, e.g. {sorter.__name__}()"
        )
    if not isinstance(sorter, torch.nn.Module):
        if not callable(sorter):
            raise TypeError(f"sorter must be a Sorter or a function of scores, got {type(sorter).__name__}")
        return _fidelity_rows(sorter, lengths, families, sequences_per_cell, seed, progress)
    was_training = sorter.training
    try:
        return _fidelity_rows(sorter.eval(), lengths, families, sequences_per_cell, seed, progress)
    finally:
        sorter.train(was_training)


def _fidelity_rows(
    sorter: Callable[[torch.Tensor], torch.Tensor],
    lengths: list[int],
    families: Sequence[str],
    sequences_per_cell: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[FidelityRow]:
    parameters = sorter.parameters() if isinstance(sorter, torch.nn.Module) else iter(())
    parameter = next(iter(parameters), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    low, high = getattr(sorter, "min_length", 2), getattr(sorter, "max_length", None)
    usable = [n for n in lengths if n >= low and (high is None or n <= high)]
    if not usable:
        from sodeep.config import lengths_summary

        if low == high:
            takes, give = f"n = {low} only", f"of {low}"
        elif high is None:
            takes, give = f"n >= {low}", f"of {low} or more"
        else:
            takes, give = f"n in {low}..{high}", f"in {low}..{high}"
        raise ValueError(
            f"no length in {lengths_summary(lengths)} is one the sorter takes ({takes}): give lengths {give}"
        )
    rows, total = [], len(usable) * len(checked_families(families))
    for family, length, scores, ranks in held_out_cells(usable, families, sequences_per_cell, seed):
        rows_per_call = max(1, ELEMENTS_PER_CALL // length)
        predicted = torch.cat([_ranks_of(sorter, part, device) for part in scores.split(rows_per_call)])
        predicted = predicted.to(ranks.dtype)
        if not torch.isfinite(predicted).all():
            raise ValueError(
                f"the sorter returned NaN or infinite ranks for the {family} scores at n={length}: fidelity is "
                "measured on finite ranks"
            )
        rows.append(
            FidelityRow(
                family=family,
                length=length,
                l1=(predicted - ranks).abs().mean().item(),
                spearman=mean_spearman(predicted, ranks).item(),
                rank_error=mean_absolute_rank_error(predicted, ranks).mean().item(),
            )
        )
        if progress is not None:
            progress(len(rows), total)
    return rows


def _ranks_of(
    sorter: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """``sorter(scores)`` on ``device``, checked to be ranks of the scores' shape, back on the CPU."""
    predicted = sorter(scores.to(device))
    if not isinstance(predicted, torch.Tensor) or predicted.shape != scores.shape:
        shape = tuple(predicted.shape) if isinstance(predicted, torch.Tensor) else type(predicted).__name__
        raise ValueError(f"the sorter must return ranks of the scores' shape {tuple(scores.shape)}, got {shape}")
    if not predicted.is_floating_point():  # positions (1, 2, 3) would count as n times the rank
        raise ValueError(
            f"the sorter must return normalized ranks, a floating-point tensor (positions divided by n, as "
            f"sodeep.rank gives them), got {predicted.dtype}"
        )
    return predicted.detach().to("cpu")


def _mean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else math.nan


def summarize(rows: list[FidelityRow], by: str) -> dict:
    """Average rows grouped by ``"family"`` or ``"length"``: key -> {l1, spearman, rank_error}."""
    if by not in ("family", "length"):
        raise ValueError(f"by must be 'family' or 'length', got {by!r}")
    groups: dict = {}
    for row in rows:
        groups.setdefault(getattr(row, by), []).append(row)
    return {
        key: {metric: _mean([getattr(row, metric) for row in group]) for metric in ("l1", "spearman", "rank_error")}
        for key, group in groups.items()
    }


#: The line that opens the fidelity table (after an optional title).
FIDELITY_TABLE_HEADING = "Spearman with the exact ranks / mean absolute rank error (positions):"


#: A cell of the table: Spearman (``-`` where undefined) / rank error.
_CELL = r"(?:-|-?\d+\.\d{4}) / (?:-?\d+\.\d{2}|nan|inf)"
_WORST_LINE = re.compile(r"Worst mean Spearman over n: (?:-|-?\d+\.\d{4}); worst cell: (?:-|-?\d+\.\d{4})\.")
_UNDEFINED_LINE = (
    "A Spearman of - is undefined: every sequence of that cell is constant (all tied); the means leave such cells out."
)


def _cells(line: str) -> list[str] | None:
    """The cells of a markdown table line ``| a | b |`` (``None`` for another line)."""
    return line[2:-2].split(" | ") if line.startswith("| ") and line.endswith(" |") else None


def is_fidelity_table(text: str) -> bool:
    """Whether ``text`` is, whole, a table :func:`format_fidelity_markdown` wrote for ``sodeep
    evaluate`` (one that an evaluation may replace), or nothing but blank lines: an optional
    title, the heading, increasing lengths, a row per synthetic family in order with every cell
    in the evaluation's format, the means and the closing lines, and nothing else.  A line added
    to such a file, a row of another name, a row removed or an edited cell make it the user's."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return True
    if lines[0].startswith("### ") and lines[1:2] == [""]:
        lines = lines[2:]
    body = lines[2:-1] if lines[-1:] == [_UNDEFINED_LINE] else lines[2:]
    if lines[:2] != [FIDELITY_TABLE_HEADING, ""] or len(body) < 5:
        return False
    header, separator, *rows, blank, worst = body
    names = _cells(header)
    if not names or names[0] != "family" or not all(re.fullmatch(r"n=\d+", name) for name in names[1:]):
        return False
    lengths = [int(name[2:]) for name in names[1:]]
    family_rows = [_cells(row) for row in rows[:-1]]
    means = _cells(rows[-1])
    return (
        lengths == sorted(set(lengths))
        and separator == "|---|" + "---|" * len(lengths)
        and all(cells is not None and len(cells) == len(names) for cells in family_rows)
        and [cells[0] for cells in family_rows] == list(FAMILIES)
        and all(re.fullmatch(_CELL, cell) for cells in family_rows for cell in cells[1:])
        and means is not None
        and len(means) == len(names)
        and means[0] == "**mean**"
        and all(re.fullmatch(rf"\*\*{_CELL}\*\*", cell) for cell in means[1:])
        and blank == ""
        and _WORST_LINE.fullmatch(worst) is not None
    )


#: The keys of a row that ``sodeep evaluate --json`` writes (``sorter`` names what was evaluated).
FIDELITY_ROW_KEYS = frozenset({"family", "length", "l1", "spearman", "rank_error"})


def is_fidelity_rows(data: Any) -> bool:
    """Whether ``data`` (parsed JSON) is a list of fidelity rows as ``sodeep evaluate --json``
    writes them, and nothing else (or an empty list): rows of exactly its keys, with or without
    ``sorter`` (text, one for all rows); a number or ``null`` per metric; every synthetic family
    at every length, once.  A row added by hand with another sorter's name, a family of another
    name, a row removed, a value of another type or a key of its own make the file the user's."""
    if not isinstance(data, list) or not all(
        isinstance(row, dict) and row.keys() - {"sorter"} == FIDELITY_ROW_KEYS for row in data
    ):
        return False
    if not data:
        return True
    lengths = {row["length"] for row in data if isinstance(row["length"], int) and not isinstance(row["length"], bool)}
    cells = [(row["family"], row["length"]) for row in data]
    sorters = {repr(row.get("sorter")) for row in data}
    return (
        sorted(cells, key=repr) == sorted(((family, n) for family in FAMILIES for n in lengths), key=repr)
        and all(n >= 2 for n in lengths)
        and len(sorters) == 1
        and all(isinstance(row.get("sorter", ""), str) for row in data)
        and all(
            row[metric] is None or (isinstance(row[metric], (int, float)) and not isinstance(row[metric], bool))
            for row in data
            for metric in ("l1", "spearman", "rank_error")
        )
    )


def _one_line(text: str) -> str:
    """``text`` with each character that breaks a line (any that ``str.splitlines`` splits at: a
    path may hold one) written as its escape, ``\\n``, ``\\x0c``, ``\\u2028``, ..."""
    return "".join(
        character.encode("unicode_escape").decode() if len(f"a{character}a".splitlines()) > 1 else character
        for character in text
    )


def format_fidelity_markdown(rows: list[FidelityRow], title: str = "") -> str:
    """Two markdown tables: per family at every n (Spearman / rank error), and means per n."""
    lengths = sorted({row.length for row in rows})
    families = list(dict.fromkeys(row.family for row in rows))
    cell = {(row.family, row.length): row for row in rows}
    title = _one_line(title)
    lines = [f"### {title}", ""] if title else []
    lines.append(FIDELITY_TABLE_HEADING)
    lines.append("")
    lines.append("| family | " + " | ".join(f"n={n}" for n in lengths) + " |")
    lines.append("|---|" + "---|" * len(lengths))
    for family in families:
        entries = []
        for n in lengths:
            row = cell.get((family, n))
            entries.append("" if row is None else f"{_shown(row.spearman)} / {row.rank_error:.2f}")
        lines.append(f"| {family} | " + " | ".join(entries) + " |")
    per_length = summarize(rows, "length")
    lines.append(
        "| **mean** | "
        + " | ".join(f"**{_shown(per_length[n]['spearman'])} / {per_length[n]['rank_error']:.2f}**" for n in lengths)
        + " |"
    )
    lines.append("")
    defined = [row.spearman for row in rows if not math.isnan(row.spearman)]
    means = [metrics["spearman"] for metrics in per_length.values() if not math.isnan(metrics["spearman"])]
    lines.append(
        f"Worst mean Spearman over n: {_shown(min(means, default=math.nan))}; "
        f"worst cell: {_shown(min(defined, default=math.nan))}."
    )
    if len(defined) < len(rows):
        lines.append(_UNDEFINED_LINE)
    return "\n".join(lines)


def _shown(spearman: float) -> str:
    return "-" if math.isnan(spearman) else f"{spearman:.4f}"


def fidelity_rows_json(rows: list[FidelityRow]) -> list[dict[str, Any]]:
    """``rows`` as plain JSON: an undefined (NaN) value is ``null``, which every JSON reader accepts."""
    return [
        {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in asdict(row).items()}
        for row in rows
    ]
