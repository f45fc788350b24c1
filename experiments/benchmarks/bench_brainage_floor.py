"""The temperature floor of the Spearman term in brain-age training, measured on the bundled table.

The rank losses load the shipped sorter with a temperature floor in the units of the scores
(``sodeep.checkpoints.TRAINING_SETTINGS``, 0.1), here years of predicted age.  This script runs
``sodeep brainage tabular``'s cross-validation (fcon1000, 5 age-stratified folds x seeds, the
command's defaults) with the ``l1+spearman`` preset once per floor, and with ``l1`` as the
reference, each a job of a pool of ``--workers`` processes of one thread (a job sets the floor
the losses load before it builds them), and prints the mean +- sd over (seed, fold) runs and the
paired difference against ``l1`` with a two-sided Wilcoxon signed-rank p.

    python experiments/benchmarks/bench_brainage_floor.py [--floors 0 0.01 0.03 0.1 0.3 1 3 10 30] [--seeds 0 1 2] [--workers 2]

Floor 0 is the sharp sorter (``load_sorter()``'s default, no floor).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sodeep.benchmark.scripts import run_in_processes, run_script
from sodeep.config import number_at_least

METRICS = ("mae", "spearman", "within_site_spearman")


def cross_validate(job: tuple[str, float, list[int], str]) -> tuple[float, dict[tuple, dict]]:
    """Runs of one preset at one floor, ``(preset, floor, seeds, folder)``: ``(floor, {(seed, fold): metrics})``."""
    preset, floor, seeds, folder = job
    import torch

    import sodeep.checkpoints
    from sodeep.brainage import TabularConfig, run_tabular

    torch.set_num_threads(1)
    sodeep.checkpoints.TRAINING_SETTINGS["temperature_floor"] = floor  # what the rank losses load
    out = Path(folder) / f"{preset}-{floor}"
    config = TabularConfig(dataset="fcon1000", losses=[preset], folds=5, seeds=seeds, out=str(out), wandb="disabled")
    with contextlib.redirect_stdout(io.StringIO()):
        results = run_tabular(config, overwrite=True, progress=False)
    runs = results["presets"][preset]["runs"]
    return floor, {(run["seed"], run["fold"]): {name: run[name] for name in METRICS} for run in runs}


def paired(runs: dict[tuple, dict], reference: dict[tuple, dict], metric: str) -> tuple[float, float]:
    """Mean difference ``runs - reference`` over shared (seed, fold) units and its Wilcoxon p."""
    import scipy.stats

    differences = [runs[unit][metric] - reference[unit][metric] for unit in runs if unit in reference]
    p_value = scipy.stats.wilcoxon(differences).pvalue if any(differences) else float("nan")
    return statistics.mean(differences), float(p_value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--floors",
        type=number_at_least(float, 0),
        nargs="+",
        default=[0, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30],
        help="temperature floors of the sorter (0: none)",
    )
    parser.add_argument("--seeds", type=number_at_least(int, 0), nargs="+", default=[0, 1, 2], help="seeds")
    parser.add_argument("--workers", type=number_at_least(int, 1), default=2, help="processes, one thread each")
    arguments = parser.parse_args()
    if min(arguments.floors) < 0 or arguments.workers < 1:
        parser.error("floors must be >= 0 and workers >= 1")
    for flag, values in (("--floors", arguments.floors), ("--seeds", arguments.seeds)):
        if len(set(values)) < len(values):  # each floor has its own run folder, each seed its own runs
            parser.error(f"{flag} must not repeat a value, got {values}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    print(f"CPU: {platform.machine()}, {os.cpu_count()} cores; {arguments.workers} workers, 1 thread each")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        jobs = [("l1", 0.1, arguments.seeds, folder)]
        jobs += [("l1+spearman", floor, arguments.seeds, folder) for floor in arguments.floors]
        (_, l1), *floors = run_in_processes(cross_validate, jobs, arguments.workers)
        by_floor = dict(floors)
    print(f"{len(arguments.floors) + 1} cross-validations in {time.perf_counter() - start:.0f} s\n")
    units = len(l1)
    print(f"`l1+spearman` by temperature floor (years), fcon1000, 5 folds x seeds {arguments.seeds} ({units} runs):\n")
    print("| floor | MAE | d MAE vs `l1` (p) | Spearman rho | d rho vs `l1` (p) | within-site rho |")
    print("|---|---|---|---|---|---|")

    def spread(runs: dict[tuple, dict], metric: str, digits: int) -> str:
        values = [run[metric] for run in runs.values()]
        return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"

    print(
        f"| `l1` (no rank term) | {spread(l1, 'mae', 2)} | | {spread(l1, 'spearman', 3)} | | {spread(l1, 'within_site_spearman', 3)} |"
    )
    for floor, runs in by_floor.items():
        mae_difference, mae_p = paired(runs, l1, "mae")
        rho_difference, rho_p = paired(runs, l1, "spearman")
        shown = "0 (sharp)" if floor == 0 else f"{floor:g}"
        print(
            f"| {shown} | {spread(runs, 'mae', 2)} | {mae_difference:+.2f} ({mae_p:.2f}) | {spread(runs, 'spearman', 3)} "
            f"| {rho_difference:+.3f} ({rho_p:.2f}) | {spread(runs, 'within_site_spearman', 3)} |"
        )


if __name__ == "__main__":
    run_script(main)
