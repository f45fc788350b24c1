"""Which gradient teaches? Variants of the ranks' backward, trained on learning to sort and on
downstream regression.

Every variant is a ranker in sodeep's convention (descending, normalized by n) used inside the
Spearman surrogate (MSE of the ranks to the exact ranks of the targets, as
:class:`sodeep.SpearmanLoss` computes it); what differs is the forward and the gradient it
passes back to the scores:

* ``sorter``: the shipped sorter at the rank losses' temperature floor (0.1), its own gradient;
* ``pairwise``, ``cauchy``: all pairs compared by a logistic sigmoid, or by the Cauchy CDF
  (heavy tails: a misordered pair far apart still passes a gradient), at T = 0.1 in score units;
* ``mixture``: 0.8 of the pairwise ranks at T = 0.1 plus 0.2 of those at T = 1, its own gradient;
* ``sorter+wide``: the sorter's ranks forward, the gradient of the pairwise ranks at T = 3
  backward (straight-through: ``ranks.detach() + wide - wide.detach()``);
* ``sorter+identity``: the sorter's ranks forward; backward, each score receives its own rank's
  gradient, negated and centred over the row (the limit of ``sorter+wide`` as T grows);
* ``torchsort``: ``soft_rank`` at regularization 0.1 (skipped when torchsort is missing);
* ``sorter@F``, ``torchsort@S``: the same at another floor ``F`` or regularization ``S``
  (e.g. ``sorter@0.3,torchsort@0.03``), for a small grid of each;
* ``diffsort``, ``diffsort-rank``: steepness 10, trained with its native loss (the binary
  cross-entropy of the soft permutation matrix) or with the rank MSE like the others (learning to
  sort only: its odd-even network at the regression's n = 100 is too costly; skipped when
  diffsort is missing).

Learning to sort is the task of ``sodeep bench`` (:mod:`sodeep.benchmark.learning_to_sort`: a
small CNN scores images of 4-digit numbers, ``--steps`` steps of 256 images, test exact match and
element-wise accuracy on 1,000 sequences); regression is its downstream part
(:mod:`sodeep.benchmark.regression`: a linear model on the bundled fcon1000 table and on a
synthetic monotone task, batches of 100, test Spearman).  Each training runs on one thread; the
jobs are shared among ``--workers`` processes.

    python experiments/benchmarks/bench_learning_signal.py [--seeds 8] [--json signal.json] [--paired-with torchsort]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sodeep.benchmark.config import BenchConfig
from sodeep.benchmark.learning_to_sort import SortingTask, train_and_test
from sodeep.benchmark.rankers import Ranker, ranker_families
from sodeep.benchmark.report import script_json_problem
from sodeep.benchmark.scripts import run_in_processes
from sodeep.config import number_list
from sodeep.files import atomic_write_json

#: The name its ``--json`` records, so that no other script's results are replaced by its own.
SCRIPT = Path(__file__).name

#: Temperatures in score units: the compared pairs', the mixture's soft part, the wide backward's.
PAIR_TEMPERATURE = 0.1
MIXTURE_TEMPERATURE = 1.0
MIXTURE_WEIGHT = 0.2
WIDE_TEMPERATURE = 3.0
#: The sorter's temperature floor: what the rank losses use.
SORTER_FLOOR = 0.1

VARIANTS = {
    "sorter": "sorter, floor 0.1 (the rank losses' default)",
    "pairwise": "pairwise sigmoid, T = 0.1",
    "cauchy": "pairwise Cauchy CDF, T = 0.1",
    "mixture": "0.8 pairwise T = 0.1 + 0.2 pairwise T = 1",
    "sorter+wide": "sorter forward, gradient of the pairwise sigmoid at T = 3",
    "sorter+identity": "sorter forward, identity gradient",
    "torchsort": "torchsort soft_rank, regularization 0.1",
    "diffsort": "diffsort, steepness 10, its own permutation loss",
    "diffsort-rank": "diffsort, steepness 10, rank MSE",
}
#: What a variant that cannot be built here needs.
INSTALL_HINTS = {
    "torchsort": "pip install torchsort (docs/benchmarks.md: building it on a CPU)",
    "diffsort": "pip install --no-deps diffsort",
    "diffsort-rank": "pip install --no-deps diffsort",
}
#: Variants left out of the regression.
SORTING_ONLY = ("diffsort", "diffsort-rank")
#: Variants that take another setting after ``@``: what the setting is.
SETTINGS = {"sorter": "floor", "torchsort": "regularization"}


def parse_variant(name: str) -> tuple[str, float | None]:
    """``("sorter", 0.3)`` for ``sorter@0.3``, ``(name, None)`` for a name of :data:`VARIANTS`;
    ``ValueError`` for anything else."""
    base, at, setting = name.partition("@")
    if not at:
        if name not in VARIANTS:
            raise ValueError(name)
        return name, None
    try:
        value = float(setting)
    except ValueError:
        value = math.nan
    if base not in SETTINGS or not math.isfinite(value) or value <= 0:
        raise ValueError(name)
    return base, value


def variant_label(name: str) -> str:
    """What a variant is: its line of :data:`VARIANTS`, or ``"sorter, floor 0.3"`` for ``sorter@0.3``."""
    base, setting = parse_variant(name)
    if setting is None:
        return VARIANTS[name]
    return f"{'torchsort soft_rank' if base == 'torchsort' else base}, {SETTINGS[base]} {setting:g}"


def pairwise_ranks(scores: torch.Tensor, temperature: float, cdf: str = "logistic") -> torch.Tensor:
    """``rank_i = (1/2 + sum_j F((x_j - x_i) / T)) / n`` over all ``j`` (``F(0) = 1/2`` for
    ``j = i``), ``F`` the logistic sigmoid or the Cauchy CDF: ``(B, n) -> (B, n)``."""
    logits = (scores.unsqueeze(-2) - scores.unsqueeze(-1)) / temperature
    if cdf == "logistic":
        above = torch.sigmoid(logits)
    else:
        above = 0.5 + torch.atan(logits) / math.pi
    return (0.5 + above.sum(-1)) / scores.shape[-1]


def identity_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Ranks whose derivative is ``-(I - 1/n) / (4 T)``, the limit of the pairwise sigmoid's as
    ``T`` (here :data:`WIDE_TEMPERATURE`) grows: ``(B, n) -> (B, n)``, used for its gradient only."""
    return -(scores - scores.mean(-1, keepdim=True)) / (4 * WIDE_TEMPERATURE)


def straight_through(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """The values of ``forward`` with the gradient of ``backward``."""
    return forward.detach() + (backward - backward.detach())


def build_variant(name: str) -> tuple[Ranker, str]:
    """``(ranker, loss)`` of a key of :data:`VARIANTS`; ``loss`` is ``"rank"`` or ``"native"``."""
    families = {family.name: family for family in ranker_families()}
    base, setting = parse_variant(name)
    if base == "torchsort":
        return families["torchsort"].build(0.1 if setting is None else setting), "rank"
    if name in SORTING_ONLY:
        return families["diffsort"].build(10.0), "native" if name == "diffsort" else "rank"
    functions: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "pairwise": lambda scores: pairwise_ranks(scores, PAIR_TEMPERATURE),
        "cauchy": lambda scores: pairwise_ranks(scores, PAIR_TEMPERATURE, "cauchy"),
        "mixture": lambda scores: (
            (1 - MIXTURE_WEIGHT) * pairwise_ranks(scores, PAIR_TEMPERATURE)
            + MIXTURE_WEIGHT * pairwise_ranks(scores, MIXTURE_TEMPERATURE)
        ),
    }
    if name not in functions:
        floor = SORTER_FLOOR if setting is None else setting
        sorter = families["sodeep (shipped)"].build(floor).rank.requires_grad_(False).eval()
        backward = {
            "sorter": None,
            "sorter+wide": lambda scores: pairwise_ranks(scores, WIDE_TEMPERATURE),
            "sorter+identity": identity_ranks,
        }[base]
        functions[name] = (
            sorter if backward is None else lambda scores: straight_through(sorter(scores), backward(scores))
        )
    return Ranker(name, "", "rank", functions[name]), "rank"


def available_variants(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The variants of ``names`` that build here, and ``{name: why not, with what to install}``."""
    usable, missing = [], {}
    for name in names:
        try:
            build_variant(name)
        except ImportError as error:
            hint = INSTALL_HINTS.get(parse_variant(name)[0], "see its docstring")
            missing[name] = f"{type(error).__name__}: {error}; {hint}"
        else:
            usable.append(name)
    return usable, missing


def run_job(job: tuple) -> dict:
    """One training: ``("sorting", variant, n, seed, steps)`` or ``("regression", variant, task,
    seed, steps)``; one thread."""
    from sodeep.benchmark.learning_to_sort import digit_pools
    from sodeep.benchmark.regression import load_task, split, train_regression

    torch.set_num_threads(1)
    part, name, where, seed, steps = job
    ranker, loss = build_variant(name)
    config = BenchConfig()
    if part == "sorting":
        task = SortingTask(
            config.sorting_digits,
            steps,
            config.sorting_images_per_step,
            config.sorting_learning_rate,
            config.sorting_test_sequences,
            config.sorting_validation_sequences,
        )
        result = train_and_test(ranker, loss, where, seed, task, *digit_pools(None))
        figures = {"exact_match": result["exact_match"], "element_wise": result["element_wise"]}
    else:
        data = split(*load_task(where), seed)
        result = train_regression(ranker, data, seed, steps, config.regression_batch, config.regression_learning_rate)
        figures = {"spearman": result["spearman"]}
    return {"part": part, "variant": name, "where": where, "seed": seed, **figures}


def jobs_for(names, lengths, seeds, steps, regression_seeds, regression_steps) -> list[tuple]:
    from sodeep.benchmark.regression import TASKS

    jobs = [("sorting", name, n, seed, steps) for seed in seeds for n in lengths for name in names]
    jobs += [
        ("regression", name, task, seed, regression_steps)
        for seed in regression_seeds
        for task in TASKS
        for name in names
        if name not in SORTING_ONLY
    ]
    return jobs


def summary_table(rows: list[dict], names: Sequence[str], lengths: Sequence[int], regression: bool = True) -> str:
    """Markdown: a row per variant; test exact match (element-wise) per n and, with
    ``regression``, test Spearman per regression task; mean +- sd over seeds (the mean alone
    for one seed; ``-`` where a variant has no result)."""
    from sodeep.benchmark.regression import TASKS

    def cell(values: list[float]) -> str:
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    tasks = TASKS if regression else ()
    header = [f"n = {n}: exact (element-wise)" for n in lengths] + [f"{task}: Spearman" for task in tasks]
    lines = ["| variant (mean ± sd over seeds) | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for name in names:
        cells = []
        for n in lengths:
            mine = [row for row in rows if row["variant"] == name and row["part"] == "sorting" and row["where"] == n]
            element = statistics.mean(row["element_wise"] for row in mine) if mine else math.nan
            cells.append(f"{cell([row['exact_match'] for row in mine])} ({element:.3f})" if mine else "-")
        for task in tasks:
            mine = [
                row for row in rows if row["variant"] == name and row["part"] == "regression" and row["where"] == task
            ]
            cells.append(cell([row["spearman"] for row in mine]))
        lines.append(f"| {variant_label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(rows: list[dict], names: Sequence[str], lengths: Sequence[int], baseline: str) -> str:
    """Markdown: per variant other than ``baseline`` and per n, its exact match minus the
    baseline's, and its element-wise accuracy minus the baseline's, paired by seed: mean +-
    standard error over the seeds both have (the difference alone for one seed, ``-`` for none)."""

    def figure(name: str, n: int, key: str) -> dict[int, float]:
        return {
            row["seed"]: row[key]
            for row in rows
            if row["variant"] == name and row["part"] == "sorting" and row["where"] == n
        }

    def cell(name: str, n: int, key: str) -> str:
        mine, theirs = figure(name, n, key), figure(baseline, n, key)
        differences = [mine[seed] - theirs[seed] for seed in sorted(mine.keys() & theirs.keys())]
        if not differences:
            return "-"
        if len(differences) == 1:
            return f"{differences[0]:+.3f} (1 seed)"
        error = statistics.stdev(differences) / math.sqrt(len(differences))
        return f"{statistics.mean(differences):+.3f} ± {error:.3f}"

    header = [f"n = {n}: {what}" for n in lengths for what in ("exact", "element-wise")]
    lines = [
        f"| variant minus {variant_label(baseline)} (paired by seed; mean ± standard error) | "
        + " | ".join(header)
        + " |",
        "|---" * (len(header) + 1) + "|",
    ]
    for name in names:
        if name != baseline:
            cells = [cell(name, n, key) for n in lengths for key in ("exact_match", "element_wise")]
            lines.append(f"| {variant_label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_jobs(jobs: list[tuple], workers: int) -> tuple[list[dict], bool]:
    """``(rows, complete)``: the result of every job, in order, or on Ctrl-C those finished so
    far and ``False``.  One worker runs the jobs in this process."""

    def progress(index: int, row: dict) -> None:
        print(f"{index}/{len(jobs)} {row['part']} {row['variant']} {row['where']} seed {row['seed']}", file=sys.stderr)

    rows: list[dict] = []
    if workers == 1:
        try:
            for index, job in enumerate(jobs, 1):
                rows.append(run_job(job))
                progress(index, rows[-1])
        except KeyboardInterrupt:
            return rows, False
        return rows, True

    def keep(index: int, row: dict) -> None:
        rows.append(row)
        progress(index, row)

    try:
        run_in_processes(run_job, jobs, workers, keep)
    except KeyboardInterrupt:
        return rows, False
    return rows, True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="Variants: " + "; ".join(f"{name}: {label}" for name, label in VARIANTS.items()),
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated names from the list below (default: all); sorter@FLOOR and torchsort@REGULARIZATION "
        "run those rankers at another setting, e.g. sorter@0.3,torchsort@1",
    )
    parser.add_argument("--lengths", type=number_list(int), default=[5, 15], help="learning-to-sort n (default 5,15)")
    parser.add_argument("--seeds", type=int, default=8, help="learning-to-sort seeds 0..K-1 (default 8)")
    parser.add_argument("--steps", type=int, default=600, help="learning-to-sort steps (default 600)")
    parser.add_argument("--regression-seeds", type=int, default=5, help="regression seeds (default 5; 0: none)")
    parser.add_argument("--regression-steps", type=int, default=300, help="regression steps (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each (default 2)")
    parser.add_argument("--json", help="also write the settings and rows as JSON here")
    parser.add_argument(
        "--paired-with", metavar="VARIANT", help="also print each variant's learning-to-sort figures minus this one's"
    )
    return parser


def partial_path(json_path: str) -> str:
    """Where an interrupted run writes its rows when ``json_path`` holds a finished run."""
    return str(Path(json_path).with_suffix(".partial.json"))


def main(argv: Sequence[str] | None = None) -> str:
    parser = build_parser()
    args = parser.parse_args(argv)
    requested = list(dict.fromkeys(name.strip() for name in args.variants.split(",") if name.strip()))
    if not requested:
        parser.error(f"--variants names no variant; known: {', '.join(VARIANTS)}")
    known = f"known: {', '.join(VARIANTS)}, and sorter@FLOOR or torchsort@REGULARIZATION (a number > 0)"
    unknown = [name for name in requested if not _is_variant(name)]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; {known}")
    if args.paired_with is not None and args.paired_with not in requested:
        parser.error(f"--paired-with {args.paired_with} is not among --variants {','.join(requested)}")
    for option in ("seeds", "steps", "regression_steps", "workers"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.regression_seeds < 0:
        parser.error(f"--regression-seeds must be >= 0, got {args.regression_seeds}")
    lengths = list(dict.fromkeys(args.lengths))
    if min(lengths) < 2:
        parser.error(f"--lengths must all be >= 2 (a sequence to sort), got {args.lengths}")
    most = 10 ** BenchConfig().sorting_digits  # a sequence holds distinct numbers of that many digits
    if max(lengths) > most:
        parser.error(
            f"--lengths must all be <= {most} (distinct {BenchConfig().sorting_digits}-digit numbers), got {args.lengths}"
        )
    if args.json and (problem := script_json_problem(args.json, SCRIPT)):
        parser.error(f"--json: {problem}")
    if args.json and (problem := script_json_problem(partial_path(args.json), SCRIPT)):
        parser.error(f"--json: an interrupted run writes its rows beside it, and {problem}")
    names, missing = available_variants(requested)
    for name, reason in missing.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not names:
        needs = "; ".join(f"{name} needs {INSTALL_HINTS[parse_variant(name)[0]]}" for name in missing)
        parser.error(f"no variant left to run: {needs}")
    jobs = jobs_for(names, lengths, range(args.seeds), args.steps, range(args.regression_seeds), args.regression_steps)
    rows, complete = run_jobs(jobs, args.workers)
    table = summary_table(rows, names, lengths, regression=args.regression_seeds > 0)
    print(table)
    if args.paired_with in names:
        print()
        print(paired_table(rows, names, lengths, args.paired_with))
    elif args.paired_with is not None:
        print(f"no paired table: {args.paired_with} was skipped", file=sys.stderr)
    # An interrupted run leaves a finished one's file as it was: its rows to a file beside it.
    target = args.json
    if args.json and not complete and _holds_a_complete_run(args.json):
        target = partial_path(args.json)
    if target:
        settings = {**vars(args), "variants": names, "lengths": lengths}
        atomic_write_json(
            target, {"script": SCRIPT, "settings": settings, "skipped": missing, "complete": complete, "rows": rows}
        )
    if not complete:
        kept = f"; {args.json} keeps its finished run, these rows are in {target}" if target != args.json else ""
        print(
            f"interrupted after {len(rows)} of {len(jobs)} trainings: the table holds those "
            f"(run the same command again for all){kept}",
            file=sys.stderr,
        )
        raise SystemExit(130)
    return table


def _holds_a_complete_run(path: str) -> bool:
    """Whether ``path`` holds the JSON of a finished run of this script."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def _is_variant(name: str) -> bool:
    try:
        parse_variant(name)
    except ValueError:
        return False
    return True


def _stop_once(number: int, frame: object) -> None:
    """The first SIGINT or SIGTERM stops the run (``KeyboardInterrupt``); later ones are ignored
    while it keeps what finished (``timeout`` signals a command and its process group both)."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.SIG_IGN)
    raise KeyboardInterrupt


if __name__ == "__main__":
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stop_once)
    try:
        main()
    except KeyboardInterrupt:  # before the first training
        print("interrupted before any training finished", file=sys.stderr)
        raise SystemExit(130) from None
