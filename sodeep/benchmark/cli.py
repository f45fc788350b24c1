"""``sodeep bench``: registered on the main parser by :func:`add_bench_parser`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from sodeep.benchmark.config import PARTS, BenchConfig
from sodeep.config import integer
from sodeep.run_folder import INTERRUPTED, resumes_started_run, stop_signals_as_interrupts


def add_bench_parser(commands) -> argparse.ArgumentParser:
    """Add ``bench`` to ``commands`` (the main parser's subparsers); ``args.handler(args)`` runs it."""
    defaults = BenchConfig()
    parser = commands.add_parser(
        "bench",
        help="compare every differentiable ranker: speed, fidelity, learning to sort, regression",
        description="Compare the differentiable rankers in one process and write results.json, "
        "results.md and PNG plots into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run of every part: 1-2 minutes on 2 idle CPU cores")
    parser.add_argument("--out", default=defaults.out, help="output folder")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(defaults.parts), help="parts to run")
    folder = parser.add_mutually_exclusive_group()
    folder.add_argument(
        "--overwrite", action="store_true", help="replace the benchmark results that --out holds (nothing else)"
    )
    folder.add_argument(
        "--resume",
        action="store_true",
        help="continue the benchmark that --out holds (same settings): its finished parts and "
        "learning-to-sort trainings are kept, and --parts may add parts",
    )
    quick = BenchConfig.quick()
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=integer,
        default=argparse.SUPPRESS,
        help=f"seeds (default: {' '.join(map(str, defaults.seeds))}; with --quick: {' '.join(map(str, quick.seeds))})",
    )
    parser.add_argument("--workers", type=integer, default=defaults.workers, help="processes for learning to sort")
    parser.add_argument(
        "--sorting-steps",
        type=integer,
        default=argparse.SUPPRESS,
        help=f"training steps per learning-to-sort run (default: {defaults.sorting_steps}; "
        f"with --quick: {quick.sorting_steps})",
    )
    parser.add_argument(
        "--mnist",
        nargs=2,
        metavar=("IMAGES", "LABELS"),
        default=None,
        help="MNIST train IDX files (t10k-* beside them) instead of scikit-learn's 8x8 digits",
    )
    parser.set_defaults(handler=run_bench_command)
    return parser


def config_from_arguments(arguments: argparse.Namespace) -> BenchConfig:
    overrides = {"out": arguments.out, "parts": tuple(arguments.parts), "workers": arguments.workers}
    if "seeds" in arguments:
        overrides["seeds"] = tuple(arguments.seeds)
    if "sorting_steps" in arguments:
        overrides["sorting_steps"] = arguments.sorting_steps
    if arguments.mnist is not None:
        overrides["mnist"] = tuple(arguments.mnist)
    return BenchConfig.quick(**overrides) if arguments.quick else BenchConfig(**overrides)


def run_bench_command(arguments: argparse.Namespace) -> int:
    from sodeep.benchmark.run import run_benchmark

    config = config_from_arguments(arguments)
    words = getattr(arguments, "argv", None)  # as sodeep's main parsed them
    command = "sodeep " + shlex.join(words) if words else "sodeep bench"
    try:
        with stop_signals_as_interrupts():
            run_benchmark(
                config,
                command=command,
                progress=lambda line: print(line, flush=True),
                overwrite=arguments.overwrite,
                # Under a sweep that stopped it, a benchmark continues the results its folder holds.
                resume=arguments.resume
                or resumes_started_run(config.out, arguments.overwrite, lambda out: (out / "results.json").is_file()),
            )
    except KeyboardInterrupt:
        from sodeep.benchmark.run import OUTPUT_FILES, finished_trainings

        finished = _finished_parts(Path(config.out))
        kept = (
            f"{config.out}/results.json and results.md keep the finished parts ({', '.join(finished)})"
            if finished
            else ""
        )
        trainings = len(finished_trainings(Path(config.out))) if "sorting" not in finished else 0
        if trainings:
            plural = "s" if trainings > 1 else ""
            kept = f"{kept}{'; ' if kept else ''}{trainings} finished learning-to-sort training{plural} kept"

        if kept or any((Path(config.out) / name).exists() for name in OUTPUT_FILES):
            from sodeep.cli import typed_program

            # As this process was started (its interpreter as typed).
            words = [word for word in shlex.split(command)[1:] if word != "--overwrite"]
            words += [] if "--resume" in words else ["--resume"]
            again = f"continue with: {typed_program()} {shlex.join(words)}"
        else:
            again = "run the same command again"
        print(f"sodeep bench: interrupted; {kept or 'no part finished'}; {again}", file=sys.stderr)
        return INTERRUPTED
    written = sorted(path.name for path in Path(config.out).glob("bench_*.png"))
    written += ["sorting_rows.jsonl"] if (Path(config.out) / "sorting_rows.jsonl").is_file() else []
    print(f"results in {config.out}: {', '.join(['results.json', 'results.md', *written])}")
    if config.mnist is not None and "sorting" not in config.parts:
        print(
            "note: --mnist is read by the sorting part only, which --parts leaves out: these results use no MNIST",
            file=sys.stderr,
        )
    return 0


def _finished_parts(out: Path) -> list[str]:
    try:
        return list(json.loads((out / "results.json").read_text())["wall_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def main(argv: list[str] | None = None) -> int:
    """``python -m sodeep.benchmark.cli [ARGS]`` runs ``sodeep bench [ARGS]`` (bad input in one
    line, as ``sodeep`` does).  From Python, ``main(["bench", ...])`` runs the command and lets a
    ``ValueError`` for bad input propagate."""
    from sodeep.cli import empty_argument_problem
    from sodeep.cli import main as sodeep_main

    if argv is None:
        return sodeep_main(["bench", *sys.argv[1:]])
    parser = argparse.ArgumentParser(prog="sodeep")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    empty = empty_argument_problem(list(argv))
    if empty:
        parser.error(empty)
    arguments = parser.parse_args(argv)
    arguments.argv = list(argv)
    return arguments.handler(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
