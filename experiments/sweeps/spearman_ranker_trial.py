"""One trial of ``spearman_rankers.yaml``: a linear model trained with ``SpearmanLoss`` built on one
ranker (or with MSE, ``--ranker mse``), scored by the Spearman correlation on a held-out split.

It is the benchmark's regression part (:mod:`sodeep.benchmark.regression`) for a single ranker,
task and seed, so that a sweep can spread them over processes and seeds; it writes the sweep
trial summary (:func:`sodeep.sweeps.write_trial_summary`) and one W&B run in the trial's folder
(``$WANDB_DIR``, which ``sodeep sweep`` sets) or ``--wandb-dir``: in ``$WANDB_MODE``, else online
under ``wandb agent`` (which sets ``WANDB_SWEEP_ID``) and offline otherwise.  Run alone without
either, it keeps no W&B run.

    python experiments/sweeps/spearman_ranker_trial.py --ranker neuralsort --seed 0
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from sodeep.benchmark.config import BenchConfig
from sodeep.benchmark.rankers import ranker_families
from sodeep.benchmark.regression import TASKS, load_task, split, train_regression
from sodeep.benchmark.scripts import run_script
from sodeep.files import make_folder, os_error_line
from sodeep.sweeps import write_trial_summary

MSE = "mse"


def build_parser() -> argparse.ArgumentParser:
    defaults = BenchConfig()
    names = [family.name for family in ranker_families() if family.name != "exact"]  # exact ranks: no gradient
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranker", required=True, help=f"{MSE} (no ranker) or one of {names}")
    parser.add_argument("--setting", type=float, help="the ranker's sharpness parameter (default: its default)")
    parser.add_argument("--task", default=TASKS[0], choices=TASKS)
    parser.add_argument("--seed", type=int, default=0, help="split and initialization")
    parser.add_argument("--steps", type=int, default=defaults.regression_steps)
    parser.add_argument("--batch", type=int, default=defaults.regression_batch, help="rows per step (the n ranked)")
    parser.add_argument("--learning-rate", "--learning_rate", type=float, default=defaults.regression_learning_rate)
    parser.add_argument(
        "--wandb-dir", "--wandb_dir", help="keep the W&B run here (default: $WANDB_DIR; neither: no W&B run)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.steps < 1 or arguments.batch < 2 or not arguments.learning_rate > 0:
        print("--steps must be >= 1, --batch >= 2 (a ranking) and --learning-rate > 0", file=sys.stderr)
        return 2
    if arguments.setting is not None and not math.isfinite(arguments.setting):
        print(f"--setting must be a finite number, got {arguments.setting}", file=sys.stderr)
        return 2
    data = split(*load_task(arguments.task), arguments.seed)
    if arguments.batch > len(data[0]):
        print(
            f"--batch {arguments.batch} is more than the {len(data[0])} training rows of {arguments.task}",
            file=sys.stderr,
        )
        return 2
    ranker = None
    if arguments.ranker != MSE:
        families = {family.name: family for family in ranker_families() if family.name != "exact"}
        if arguments.ranker not in families:
            print(f"unknown ranker {arguments.ranker!r}; known: {[MSE, *families]}", file=sys.stderr)
            return 2
        family = families[arguments.ranker]
        try:
            ranker = family.build(family.default if arguments.setting is None else arguments.setting)
        except (ImportError, FileNotFoundError, ValueError) as error:
            print(f"{arguments.ranker} does not build here: {type(error).__name__}: {error}", file=sys.stderr)
            return 2
        if not ranker.accepts(arguments.batch):
            print(f"{ranker.label} does not take n={arguments.batch}: give another --batch", file=sys.stderr)
            return 2
    if arguments.ranker == MSE and arguments.setting is not None:  # a sweep's grid may give it to every trial
        print(f"note: --setting {arguments.setting} is not used: --ranker {MSE} has no ranker", file=sys.stderr)
    wandb_folder = arguments.wandb_dir or os.environ.get("WANDB_DIR") or None
    if wandb_folder is not None and _keeps_a_wandb_run(wandb_folder):
        try:  # before the training, which a folder that cannot be made would waste
            make_folder(wandb_folder)
        except OSError as error:
            print(f"{'--wandb-dir' if arguments.wandb_dir else 'WANDB_DIR'}: {os_error_line(error)}", file=sys.stderr)
            return 2
    result = train_regression(ranker, data, arguments.seed, arguments.steps, arguments.batch, arguments.learning_rate)
    print(f"{arguments.ranker} on {arguments.task}, seed {arguments.seed}: test Spearman {result['spearman']:.4f}")
    settings = {key: value for key, value in vars(arguments).items() if key != "wandb_dir"}
    # The W&B run first, the summary last: a trial with a summary is complete, and a stop before
    # it leaves a trial that the sweep runs again. A W&B failure other than a stop keeps the metrics.
    try:
        log_to_wandb(settings, result, wandb_folder)
        wandb_failure = None
    except Exception as error:
        wandb_failure = f"{type(error).__name__}: {' '.join(str(error).split())}"
    if write_trial_summary(settings, result) is not None:
        _written.append("its summary")
    if wandb_failure is not None:
        kept = "the trial's summary holds its metrics" if _written else "its metrics are in the result line it printed"
        print(f"note: no W&B run was written ({wandb_failure}); {kept}", file=sys.stderr)
    return 0


#: What the trial has written, for the line of a stop.
_written: list[str] = []


def _kept() -> str:
    return f"{_written[0]} was written" if _written else "no summary was written"


def _wandb_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_SWEEP_ID") else "offline")


def _keeps_a_wandb_run(folder: str | None) -> bool:
    return _wandb_mode() != "disabled" and (folder is not None or bool(os.environ.get("WANDB_SWEEP_ID")))


def log_to_wandb(config: dict, result: dict, folder: str | None) -> None:
    if not _keeps_a_wandb_run(folder):
        return
    import wandb

    if folder is not None:
        make_folder(folder)
    run = wandb.init(project="sodeep", job_type="spearman-ranker", mode=_wandb_mode(), config=config, dir=folder)
    run.summary.update(result)
    run.finish()


if __name__ == "__main__":
    # Ctrl-C or SIGTERM: one line, status 130 (a sweep runs the trial again).
    run_script(lambda: sys.exit(main()), kept=_kept)
