"""``sodeep.argsort`` against ``torch.sort`` on the CPU, the two taking turns, in one process.

For each batch ``B`` and row length ``n``: medians over ``--rounds`` rounds of the time per call,
the two taking turns in blocks of calls of about ``--block-seconds``; float32 normal scores.

    python experiments/benchmarks/bench_argsort.py [--threads 1] [--batches 4,64] [--lengths 64,128,129,256,1024,4096,16384]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from sodeep.argsort import argsort
from sodeep.benchmark.scripts import run_script
from sodeep.config import number_list
from sodeep.wording import plural


def block_seconds_per_call(call: Callable[[], object], seconds: float) -> float:
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batches", type=number_list(int), default=[4, 64], help="batch sizes B, comma-separated")
    parser.add_argument(
        "--lengths",
        type=number_list(int),
        default=[64, 128, 129, 256, 1024, 4096, 16384],
        help="row lengths n, comma-separated",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (medians of them)")
    parser.add_argument("--block-seconds", type=float, default=0.02, help="seconds of repeated calls timed per block")
    arguments = parser.parse_args()
    if min(arguments.threads, arguments.rounds, *arguments.batches, *arguments.lengths) < 1:
        parser.error("--threads, --rounds, --batches and --lengths must be >= 1")
    if not 0 < arguments.block_seconds < math.inf:
        parser.error(f"--block-seconds must be a positive number, got {arguments.block_seconds}")
    torch.set_num_threads(arguments.threads)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {plural(torch.get_num_threads(), 'thread')}\n"
    )
    print("| B | n | torch.sort (us) | sodeep.argsort (us) | speed-up |")
    print("|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for batch in arguments.batches:
        for length in arguments.lengths:
            scores = torch.randn(batch, length, generator=generator)
            calls = {"torch": lambda: torch.sort(scores, dim=-1), "ours": lambda: argsort(scores)}
            times: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(arguments.rounds):
                for name, call in calls.items():
                    times[name].append(block_seconds_per_call(call, arguments.block_seconds))
            torch_sort, ours = (statistics.median(times[name]) for name in calls)
            print(f"| {batch} | {length} | {1e6 * torch_sort:.1f} | {1e6 * ours:.1f} | {torch_sort / ours:.2f}x |")


if __name__ == "__main__":
    run_script(main)
