"""``results.json`` (schema :data:`SCHEMA`), the markdown tables and the PNG plots of a run.

``results.json`` keys: ``schema``, ``command``, ``hardware``, ``config``, ``rankers`` (label,
family, kind), ``skipped`` (ranker, part, reason...), ``speed``, ``fidelity``, ``sorting``,
``sorting_summary``, ``regression`` (lists of flat rows; see each part's module),
``wall_seconds`` per part and ``resumed`` (``command``, ``hardware`` and ``parts`` of each resume
that ran parts; ``command`` and ``hardware`` are those of the run that began it).  A part that did
not run has an empty list.  Undefined numbers are ``null``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from sodeep.files import atomic_write_text, finite_or_null, json_output_problem

SCHEMA = "sodeep-bench/1"
RESULT_KEYS = (
    "schema", "command", "hardware", "config", "rankers", "skipped",
    "speed", "fidelity", "sorting", "sorting_summary", "regression", "wall_seconds", "resumed",
)  # fmt: skip
#: Batch size of the speed table and plot, and the length of the fidelity-vs-time plot.
REFERENCE_BATCH = 32
REFERENCE_LENGTH = 100


def reference_batch(rows: list[dict]) -> int:
    """:data:`REFERENCE_BATCH` if timed, else the nearest batch size that was."""
    batches = {row["batch"] for row in rows} or {REFERENCE_BATCH}
    return min(batches, key=lambda batch: (abs(batch - REFERENCE_BATCH), batch))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the values that are not NaN; NaN where undefined (no
    values; the spread of one)."""
    values = [value for value in values if not math.isnan(value)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _primary_loss(rows: list[dict]) -> str:
    return "native" if any(row["loss"] == "native" for row in rows) else "rank"


def summarize_sorting(rows: list[dict]) -> list[dict]:
    """Per family and n: the default setting (native loss for permutation rankers) and the best
    (setting, loss) by mean *validation* exact match, each with test mean and sd over seeds."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row["family"], row["n"], row["setting"], row["loss"]].append(row)
    summary = []
    for family, n in sorted({(row["family"], row["n"]) for row in rows}, key=lambda key: (key[0], key[1])):
        variants = {key[2:]: members for key, members in groups.items() if key[:2] == (family, n)}
        primary = _primary_loss([row for members in variants.values() for row in members])
        default_key = next(key for key, members in variants.items() if members[0]["is_default"] and key[1] == primary)

        def score(key):
            return (
                mean_sd([row["validation_exact_match"] for row in variants[key]])[0],
                mean_sd([row["validation_element_wise"] for row in variants[key]])[0],
            )

        best_key = max(variants, key=score)
        entry = {"family": family, "n": n}
        for name, key in (("default", default_key), ("best", best_key)):
            members = variants[key]
            exact, exact_sd = mean_sd([row["exact_match"] for row in members])
            element, element_sd = mean_sd([row["element_wise"] for row in members])
            entry[name] = {
                "setting": key[0], "loss": key[1], "seeds": len(members),
                "exact_match": exact, "exact_match_sd": exact_sd,
                "element_wise": element, "element_wise_sd": element_sd,
                "train_seconds": mean_sd([row["train_seconds"] for row in members])[0],
            }  # fmt: skip
        summary.append(entry)
    return summary


def write_results(results: dict, out: Path) -> Path:
    missing = sorted(set(RESULT_KEYS) - set(results))
    if missing:
        raise ValueError(f"results lack the key(s) {missing}")
    path = out / "results.json"
    atomic_write_text(path, json_text({key: results[key] for key in RESULT_KEYS}, indent=1) + "\n")
    return path


#: Number fields of the rows and summaries that may be undefined: NaN in memory, ``null`` in JSON.
#: (The speed rows' ratios are ``None`` where their reference is absent, and stay so.)
UNDEFINED_AS_NULL = frozenset(
    {
        "spearman", "rank_error", "seconds",
        "exact_match", "exact_match_sd", "element_wise", "element_wise_sd",
        "validation_exact_match", "validation_element_wise", "train_seconds", "final_loss",
    }
)  # fmt: skip


def json_text(payload: object, indent: int | None = None) -> str:
    """``payload`` as strict JSON: NaN and infinities written as ``null`` (:func:`null_as_nan`
    reads them back)."""
    return json.dumps(finite_or_null(payload), indent=indent, default=str, allow_nan=False)


def null_as_nan(payload: object) -> object:
    """``payload`` read back from :func:`json_text`: the ``null`` of a field of
    :data:`UNDEFINED_AS_NULL`, in nested dicts and lists, becomes NaN again."""
    if isinstance(payload, dict):
        return {
            key: math.nan if value is None and key in UNDEFINED_AS_NULL else null_as_nan(value)
            for key, value in payload.items()
        }
    if isinstance(payload, list):
        return [null_as_nan(value) for value in payload]
    return payload


def _pm(mean: float, sd: float, seeds: int) -> str:
    """``mean ± sd``; the mean alone from one seed (which has no spread to show)."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if seeds < 2 else f"{mean:.3f} ± {sd:.3f}"


def sorting_markdown(summary: list[dict]) -> list[str]:
    if not summary:
        return []
    lengths = sorted({entry["n"] for entry in summary})
    lines = [
        "### Learning to sort multi-digit images: test exact match (element-wise), mean ± sd over seeds",
        "",
        "Default: the family's default setting; best: the setting and loss with the highest validation",
        "exact match (validation sequences use training images).",
        "",
        "| ranker | setting | " + " | ".join(f"n={n}" for n in lengths) + " |",
        "|---|---|" + "---|" * len(lengths),
    ]
    cells = {(entry["family"], entry["n"]): entry for entry in summary}
    for family in dict.fromkeys(entry["family"] for entry in summary):
        for which in ("default", "best"):
            values, lengths_of = [], {}  # setting -> the n it was chosen at
            for n in lengths:
                entry = cells.get((family, n))
                if entry is None:
                    values.append("")
                    continue
                chosen = entry[which]
                lengths_of.setdefault(f"{chosen['setting'] or '-'} {chosen['loss']}", []).append(n)
                values.append(
                    f"{_pm(chosen['exact_match'], chosen['exact_match_sd'], chosen['seeds'])} ({chosen['element_wise']:.3f})"
                )
            described = ", ".join(
                setting if len(lengths_of) == 1 else f"{setting} (n={', '.join(map(str, chosen_at))})"
                for setting, chosen_at in lengths_of.items()
            )
            lines.append(f"| {family} | {which}: {described} | " + " | ".join(values) + " |")
    return lines + [""]


def speed_markdown(rows: list[dict]) -> list[str]:
    batch = reference_batch(rows)
    chosen = [row for row in rows if row["batch"] == batch]
    lines = []
    for mode in ("forward", "forward+backward"):
        selected = [row for row in chosen if row["mode"] == mode]
        if not selected:
            continue
        lengths = sorted({row["n"] for row in selected})
        cell = {(row["ranker"], row["n"]): row for row in selected}
        ratios = " (ratio to torchsort eps=1)" if any(row["ratio_to_torchsort"] for row in selected) else ""
        lines += [
            f"### Speed, {mode}, B={batch}: milliseconds per call{ratios}",
            "",
            "| ranker | " + " | ".join(f"n={n}" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for ranker in dict.fromkeys(row["ranker"] for row in selected):
            entries = []
            for n in lengths:
                row = cell.get((ranker, n))
                if row is None:
                    entries.append("-")
                    continue
                ratio = f" ({times(row['ratio_to_torchsort'])})" if row["ratio_to_torchsort"] else ""
                entries.append(f"{written_out(row['seconds'] * 1e3, 3)}{ratio}")
            lines.append(f"| {ranker} | " + " | ".join(entries) + " |")
        lines.append("")
    return lines


def fidelity_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    distributions = list(dict.fromkeys(row["distribution"] for row in rows))
    lines = []
    for n in sorted({row["n"] for row in rows}):
        cell = {(row["ranker"], row["distribution"]): row for row in rows if row["n"] == n}
        lines += [
            f"### Fidelity at n={n}: Spearman with the exact ranks / mean rank error (positions)",
            "",
            "| ranker | " + " | ".join(distributions) + " |",
            "|---|" + "---|" * len(distributions),
        ]
        for ranker in dict.fromkeys(row["ranker"] for row in rows if row["n"] == n):
            entries = [
                f"{cell[ranker, name]['spearman']:.4f} / {cell[ranker, name]['rank_error']:.2f}"
                for name in distributions
            ]
            lines.append(f"| {ranker} | " + " | ".join(entries) + " |")
        lines.append("")
    return lines


def regression_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    lines = [
        "### Downstream regression with SpearmanLoss: test Spearman (mean ± sd over seeds), training seconds",
        "",
        "| loss built on | " + " | ".join(f"{task} Spearman | {task} s" for task in tasks) + " |",
        "|---|" + "---|---|" * len(tasks),
    ]
    for ranker in dict.fromkeys(row["ranker"] for row in rows):
        entries = []
        for task in tasks:
            members = [row for row in rows if row["ranker"] == ranker and row["task"] == task]
            spearman = [row["spearman"] for row in members if not math.isnan(row["spearman"])]
            entries.append(_pm(*mean_sd(spearman), len(spearman)))
            entries.append(f"{mean_sd([row['seconds'] for row in members])[0]:.2f}")
        lines.append(f"| {ranker} | " + " | ".join(entries) + " |")
    return lines + [""]


def skipped_markdown(skipped: list[dict]) -> list[str]:
    """One line per ranker and part: why it was left out, and in how many cells."""
    if not skipped:
        return []
    groups: dict = defaultdict(lambda: defaultdict(int))
    for row in skipped:
        # Speed and fidelity reasons name each cell's numbers; their kind (before ':') is what a reader needs.
        kind = row["reason"].split(":")[0] if row["part"] in ("speed", "fidelity") else row["reason"]
        groups[row["ranker"], row["part"]][kind] += 1
    lines = ["### Left out", ""]
    for (ranker, part), reasons in groups.items():
        described = "; ".join(f"{reason} ({count} cells)" if count > 1 else reason for reason, count in reasons.items())
        lines.append(f"- {ranker} ({part}): {described}")
    return lines + [""]


def _resumption_line(entry: dict) -> str:
    """``Resumed with `COMMAND` on HARDWARE: PARTS`` (a markdown line that breaks after it)."""
    command = f" with `{entry['command']}`" if entry["command"] else ""
    return f"Resumed{command} on {entry['hardware']}: {', '.join(entry['parts'])}  "


def markdown(results: dict) -> str:
    """All tables of a run as one markdown document."""
    hardware = results["hardware"]
    lines = [
        "## sodeep bench",
        "",
        *([f"Command: `{results['command']}`  "] if results["command"] else []),
        f"Hardware: {hardware}  ",
        *(_resumption_line(entry) for entry in results.get("resumed", [])),
        f"Wall time per part (s): {json.dumps({k: round(v, 1) for k, v in results['wall_seconds'].items()})}",
        "",
    ]
    lines += sorting_markdown(results["sorting_summary"])
    lines += speed_markdown(results["speed"])
    lines += fidelity_markdown(results["fidelity"])
    lines += regression_markdown(results["regression"])
    lines += skipped_markdown(results["skipped"])
    return "\n".join(lines)


def is_script_json(data: object, script: str | None = None) -> bool:
    """Whether ``data`` (parsed JSON) is what a benchmark script's ``--json`` writes: an object
    with its ``settings`` and ``rows`` (a file that a later run of a script may replace), and with
    ``script`` given, not one that names another script (:func:`script_json_problem`)."""
    return (
        isinstance(data, dict)
        and {"settings", "rows"} <= data.keys()
        and (script is None or data.get("script", script) == script)
    )


def script_json_problem(path: str, script: str) -> str | None:
    """Why the benchmark script ``script`` (a file name) should not write its ``--json`` to
    ``path`` (one line), or ``None``: a file there that is not a benchmark's JSON, or the results
    of another script, would be lost.  The scripts write ``{"script": script, ...}``."""
    problem = json_output_problem(path, is_script_json, "a benchmark's JSON")
    if problem is not None or json_output_problem(path, lambda data: is_script_json(data, script), "") is None:
        return problem
    other = json.loads(Path(path).read_text(encoding="utf-8"))["script"]
    whose = other if isinstance(other, str) else "another script"
    return f"{path} holds the results of {whose}; writing {script}'s there would replace them"


def written_out(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits without an exponent from 1e-4 up: ``1050``, not
    ``1.05e+03``; ``n/a`` where it is not finite."""
    if not math.isfinite(value):
        return "n/a"
    rounded = float(format(value, f".{digits}g"))
    return f"{rounded:.0f}" if abs(rounded) >= 10**digits else f"{rounded:g}"


def times(ratio: float) -> str:
    """A ratio to two significant digits, written out: ``2.8x``, ``32x``, ``140x`` (not ``1.4e+02x``)."""
    shown = written_out(ratio, 2)
    return shown if shown == "n/a" else f"{shown}x"
