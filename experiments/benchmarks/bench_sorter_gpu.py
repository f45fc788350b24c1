"""The shipped sorter against torchsort's ``soft_rank`` on a GPU, inside one Spearman-loss step.

Every ranker runs the same step on the same normal ``(B, n)`` predictions and targets:
``SpearmanLoss(sorter=ranker)(predictions, targets)`` (with ``--bare``, the loss's arithmetic
alone, ``MSE(ranker(predictions), sodeep.rank(targets))``, without its input checks, each of which
waits for the device), timed without gradients ("forward") and with ``.backward()``
("forward+backward").  In each cell the rankers take turns in a new shuffled order every round,
each timing a block of calls of about ``--block-seconds`` between two CUDA events (on the CPU, a
wall clock); a ranker's time is its median over rounds, and its ratio is to the first torchsort
setting in the same cell, so a burst of load on the machine hits every ranker alike.

Rankers: the shipped sorter, frozen, as ``sodeep.load_sorter()`` returns it and as the rank losses
hold it (``load_sorter(**TRAINING_SETTINGS)``, "floor=0.1"), eager and, with ``--compile``, as
``torch.compile(sorter, fullgraph=True)``, compiled anew for each cell; torchsort's ``soft_rank`` at ``--strengths``
(its CUDA kernels when torchsort was built with them), in sodeep's rank convention.  A size a
ranker refuses (above the sorter's capacity, out of memory, no CUDA kernel) shows "-", with the
reason under the table.

    python experiments/benchmarks/bench_sorter_gpu.py [--compile] [--json gpu.json]
    python experiments/benchmarks/bench_sorter_gpu.py --device cpu --quick

Without CUDA and without ``--device`` the script says so in one line and exits 1 (nothing is
timed); ``--device cpu`` runs the same measurements on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from sodeep.benchmark.rankers import Ranker, ranker_families
from sodeep.benchmark.report import script_json_problem
from sodeep.benchmark.scripts import run_script
from sodeep.checkpoints import TRAINING_SETTINGS
from sodeep.config import number_list, parse_with_quick
from sodeep.files import atomic_write_json
from sodeep.losses import SpearmanLoss
from sodeep.ranks import rank
from sodeep.wording import plural

#: The name its ``--json`` records, so that no other script's results are replaced by its own.
SCRIPT = Path(__file__).name

MODES = ("forward", "forward+backward")
#: Calls per timed block at most (tiny cells would otherwise run thousands).
MAX_REPEATS = 1000
NO_CUDA = "no CUDA device here: nothing timed (pass --device cpu to run the same measurements on the CPU)"


def build_rankers(device: torch.device, strengths: Sequence[float], compile_sorter: bool) -> tuple[list[Ranker], dict]:
    """The shipped sorter on ``device`` (eager, and compiled if asked) and torchsort at each
    strength; ``{name: reason}`` for what cannot be built here."""
    families = {family.name: family for family in ranker_families()}
    rankers = []
    for floor in (None, TRAINING_SETTINGS["temperature_floor"]):  # load_sorter(), and as the losses hold it
        shipped = families["sodeep (shipped)"].build(floor)
        shipped.rank.to(device)
        rankers.append(dataclasses.replace(shipped, setting=f"{shipped.setting} eager".strip()))
        if compile_sorter:
            compiled = torch.compile(shipped.rank, fullgraph=True)
            rankers.append(
                dataclasses.replace(shipped, setting=f"{shipped.setting} torch.compile".strip(), rank=compiled)
            )
    missing = {}
    for strength in strengths:
        try:
            rankers.append(families["torchsort"].build(strength))
        except ImportError as error:
            missing[f"torchsort eps={strength:g}"] = f"{type(error).__name__}: {error}"
    return rankers, missing


def make_step(ranker: Ranker, predictions: torch.Tensor, targets: torch.Tensor, mode: str, bare: bool) -> Callable:
    """One loss evaluation with ``ranker``, with or without backward, as a function of nothing."""
    if bare:

        def loss(scores: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(ranker.rank(scores), rank(values))

    else:
        loss = SpearmanLoss(sorter=ranker.rank)
    if mode == "forward":

        def step() -> None:
            with torch.no_grad():
                loss(predictions, targets)

        return step
    leaf = predictions.detach().clone().requires_grad_(True)

    def step() -> None:
        leaf.grad = None
        loss(leaf, targets).backward()

    return step


def seconds_per_call(step: Callable, repeats: int, device: torch.device) -> float:
    """Mean seconds of ``repeats`` calls of ``step``: between CUDA events on a GPU, else wall clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / repeats
    begin = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - begin) / repeats


def _refusal(error: Exception) -> str:
    """A short reason from an error: a ``ValueError``'s first two clauses, else the first line."""
    if isinstance(error, ValueError):
        return ";".join(str(error).split(";")[:2]).strip()
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160]}" if lines else type(error).__name__


def time_cell(
    rankers: Sequence[Ranker],
    batch: int,
    n: int,
    mode: str,
    *,
    device: torch.device,
    rounds: int,
    block_seconds: float,
    warmup: int,
    bare: bool,
    seed: int,
) -> dict[str, float | str]:
    """Median seconds per step of each ranker on one ``(B, n)`` cell, or the reason it has none."""
    # A compiled ranker is compiled for this cell's shapes alone, as in a training loop of fixed
    # shapes (after several shapes, torch.compile would otherwise switch to slower dynamic-shape code).
    torch._dynamo.reset()
    generator = torch.Generator().manual_seed(seed + n)
    predictions = torch.randn(batch, n, generator=generator).to(device)
    targets = torch.randn(batch, n, generator=generator).to(device)
    results: dict[str, float | str] = {}
    steps, repeats = {}, {}
    for ranker in rankers:
        if not ranker.accepts(n):
            results[ranker.label] = f"accepts {ranker.accepted_lengths}"
            continue
        step = make_step(ranker, predictions, targets, mode, bare)
        try:
            for _ in range(warmup):  # compilation, caches, lazy initialisation
                step()
            single = seconds_per_call(step, 1, device)
        except (ValueError, RuntimeError, MemoryError, ImportError) as error:
            # A refused n, out of memory, or no kernel for the device (torchsort built without CUDA).
            results[ranker.label] = _refusal(error)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        steps[ranker.label] = step
        repeats[ranker.label] = max(1, min(MAX_REPEATS, int(block_seconds / max(single, 1e-9))))
    samples: dict[str, list[float]] = {label: [] for label in steps}
    order = list(steps)
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for label in order:
            samples[label].append(seconds_per_call(steps[label], repeats[label], device))
    results.update({label: statistics.median(values) for label, values in samples.items()})
    return results


def format_tables(rows: Sequence[dict], reference: str | None) -> str:
    """One table per (mode, B): milliseconds per step (ratio to ``reference``), "-" with reasons."""
    parts = []
    for mode in MODES:
        for batch in dict.fromkeys(row["batch"] for row in rows):
            cell_rows = [row for row in rows if row["mode"] == mode and row["batch"] == batch]
            if not cell_rows:
                continue
            lengths = list(dict.fromkeys(row["n"] for row in cell_rows))
            lines = [
                f"{mode}, B={batch}: ms per step" + (f" (ratio to {reference})" if reference else ""),
                "",
                "| ranker | " + " | ".join(f"n={n}" for n in lengths) + " |",
                "|---|" + "---|" * len(lengths),
            ]
            reasons: dict[str, str] = {}
            for label in dict.fromkeys(row["ranker"] for row in cell_rows):
                cells = []
                for n in lengths:
                    row = next(row for row in cell_rows if row["ranker"] == label and row["n"] == n)
                    if row["seconds"] is None:
                        cells.append("-")
                        reasons.setdefault(f"{label}, n={n}", row["reason"])
                    else:
                        ratio = "" if row["ratio"] is None else f" ({row['ratio']:.2f}x)"
                        cells.append(f"{1e3 * row['seconds']:.3g}{ratio}")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines += ([""] + [f"- {where}: {reason}" for where, reason in reasons.items()]) if reasons else []
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def mode_list(text: str) -> list[str]:
    """An argparse ``type``: modes separated by commas, like the other list flags."""
    modes = text.replace(",", " ").split()
    unknown = [mode for mode in modes if mode not in MODES]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"expected modes among {', '.join(MODES)} separated by commas, got {text!r}")
    return modes


#: What ``--quick`` sets, where the flag is not typed.
QUICK = {"batches": [4], "lengths": [16, 300], "rounds": 3, "block_seconds": 0.005, "warmup": 1}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu (none: cuda if there is one, else exit)")
    parser.add_argument("--batches", type=number_list(int), default=[32, 256], help="B, e.g. 32,256")
    parser.add_argument("--lengths", type=number_list(int), default=[100, 1000, 4096], help="n, e.g. 100,1000,4096")
    parser.add_argument(
        "--strengths",
        type=number_list(float),
        default=[0.01, 1.0],
        help="torchsort strengths; the first (0.01: the speed targets' reference) is the reference",
    )
    parser.add_argument("--modes", type=mode_list, default=list(MODES), help="what to time, comma-separated")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(sorter)")
    parser.add_argument("--bare", action="store_true", help="the loss's arithmetic without SpearmanLoss's checks")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per cell")
    parser.add_argument("--block-seconds", type=float, default=0.05, help="length of a timed block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per ranker and cell")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scores")
    parser.add_argument("--quick", action="store_true", help="B=4, n in 16,300, 3 rounds of 5 ms blocks")
    parser.add_argument("--json", help="also write the settings and rows as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    arguments = parse_with_quick(build_parser(), argv, QUICK)
    if arguments.json and (problem := script_json_problem(arguments.json, SCRIPT)):
        raise SystemExit(f"--json: {problem}")
    if arguments.device is None and not torch.cuda.is_available():
        # A failure (status 1): a job that asked for GPU figures got none.
        raise SystemExit(NO_CUDA + (f"; {arguments.json} not written" if arguments.json else ""))
    if (
        arguments.rounds < 1
        or not arguments.block_seconds > 0
        or math.isinf(arguments.block_seconds)
        or arguments.warmup < 0
    ):
        raise SystemExit("--rounds must be >= 1, --block-seconds a positive number and --warmup >= 0")
    if min(arguments.batches) < 1 or min(arguments.lengths) < 2 or min(arguments.strengths) <= 0:
        raise SystemExit("--batches must be >= 1, --lengths >= 2 (a row to rank) and --strengths > 0")
    device = (
        torch.device(arguments.device or "cuda")
        if (arguments.device or "cuda").split(":")[0] in ("cpu", "cuda")
        else None
    )
    if device is None or (device.type == "cuda" and not torch.cuda.is_available()):
        raise SystemExit(f"--device must be cpu or an available cuda device, got {arguments.device!r}")
    rankers, missing = build_rankers(device, arguments.strengths, arguments.compile)
    reference = next((ranker.label for ranker in rankers if ranker.family == "torchsort"), None)

    rows = []
    for mode in dict.fromkeys(arguments.modes):
        for batch in arguments.batches:
            for n in arguments.lengths:
                results = time_cell(
                    rankers,
                    batch,
                    n,
                    mode,
                    device=device,
                    rounds=arguments.rounds,
                    block_seconds=arguments.block_seconds,
                    warmup=arguments.warmup,
                    bare=arguments.bare,
                    seed=arguments.seed,
                )
                base = results.get(reference)
                for ranker in rankers:
                    value = results[ranker.label]
                    timed = isinstance(value, float)
                    rows.append(
                        {
                            "ranker": ranker.label,
                            "mode": mode,
                            "batch": batch,
                            "n": n,
                            "seconds": value if timed else None,
                            "ratio": value / base if timed and isinstance(base, float) else None,
                            "reason": None if timed else value,
                        }
                    )
                timed = ", ".join(
                    f"{label} {1e3 * value:.3g} ms" for label, value in results.items() if isinstance(value, float)
                )
                print(f"{mode} B={batch} n={n}: {timed or 'nothing timed'}", file=sys.stderr, flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    step = "MSE(ranker(p), rank(t)), no input checks" if arguments.bare else "SpearmanLoss(sorter=ranker)(p, t)"
    title = (
        f"{name} ({device}), torch {torch.__version__}, {plural(torch.get_num_threads(), 'CPU thread')}; step: {step}; "
        f"medians of {arguments.rounds} interleaved rounds."
    )
    notes = [f"- {label}: not run ({reason})" for label, reason in missing.items()]
    text = "\n".join([title, "", format_tables(rows, reference), *([""] + notes if notes else [])])
    print(text)
    if arguments.json:
        settings = {key: value for key, value in vars(arguments).items() if key != "json"}
        atomic_write_json(
            arguments.json, {"script": SCRIPT, "device": name, "settings": settings, "rows": rows, "not_run": missing}
        )
    return text


if __name__ == "__main__":
    run_script(main)
