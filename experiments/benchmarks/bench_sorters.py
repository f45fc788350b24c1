"""Sorters side by side in one process: fidelity on held-out synthetic data and the time of a
forward+backward pass at B=32, n=100 (ratios to torchsort's ``soft_rank`` when it is installed).

    python experiments/benchmarks/bench_sorters.py [--sequences 64] [--extra runs/x/sorter.pt ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

import torch

from sodeep import load_sorter
from sodeep.checkpoints import DEPTH2_SORTER_FILE, default_sorter_path
from sodeep.evaluation import fidelity_table, summarize
from sodeep.losses import descending_normalized
from sodeep.sorters import (
    ConvSorter,
    NeuralSortSorter,
    OriginalCNNSorter,
    PairwiseSigmoidSorter,
    SoftSortSorter,
    Sorter,
)

BARE_TORCHSORT = "torchsort.soft_rank 0.01, bare call"


class CallableSorter(Sorter):
    """Wrap a plain sorter function (torchsort) in the Sorter interface for the fidelity table."""

    architecture = "callable"

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        return self.function(scores)

    def config(self) -> dict:
        return {}


def forward_backward_microseconds(rankers: dict, batch: int = 32, length: int = 100, rounds: int = 40) -> dict:
    """Microseconds per forward+backward call of each ranker: the fastest of ``rounds`` blocks of
    about 20 ms each.  The rankers take turns block by block, so a burst of load on the machine
    slows one block of each, not the whole measurement of one of them, and in a new random order
    every round (a block's time can depend on which ranker ran just before it)."""
    scores = torch.randn(batch, length, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def call(ranker) -> None:
        ranker(scores).sum().backward()

    repeats = {}
    for name, ranker in rankers.items():
        for _ in range(10):
            call(ranker)
        start = time.perf_counter()
        call(ranker)
        repeats[name] = max(1, int(0.02 / (time.perf_counter() - start)))
    best = dict.fromkeys(rankers, float("inf"))
    shuffler = random.Random(0)
    names = list(rankers)
    for _ in range(rounds):
        shuffler.shuffle(names)
        for name in names:
            ranker = rankers[name]
            start = time.perf_counter()
            for _ in range(repeats[name]):
                call(ranker)
            best[name] = min(best[name], (time.perf_counter() - start) / repeats[name] * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--extra", nargs="*", default=[], help="more sorter checkpoints to compare")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )

    sorters: dict[str, Sorter] = {
        "conv (shipped)": load_sorter(),
        "conv depth 2 (shipped too)": load_sorter(default_sorter_path(DEPTH2_SORTER_FILE)),
        "conv (untrained, h=0)": ConvSorter(**load_sorter().config()),
        "conv (shipped, all pairs)": load_sorter(),
        "pairwise sigmoid T=0.01": PairwiseSigmoidSorter(0.01),
        "NeuralSort T=0.01": NeuralSortSorter(0.01),
        "SoftSort T=0.01": SoftSortSorter(0.01),
        "original cnn (untrained, n=100)": OriginalCNNSorter(100),
    }
    sorters["conv (shipped, all pairs)"].band = None
    for path in arguments.extra:
        sorters[path] = load_sorter(path)
    try:
        import torchsort

        sorters["torchsort soft_rank 0.01"] = CallableSorter(
            descending_normalized(lambda s: torchsort.soft_rank(s, regularization_strength=0.01))
        )
    except ImportError:
        print("torchsort not installed (pip install '.[bench]'): its rows are skipped\n")
    for sorter in sorters.values():
        sorter.eval().requires_grad_(False)

    print(f"Fidelity, held-out synthetic sequences ({arguments.sequences} per family and n):\n")
    print(
        "| sorter | mean Spearman n=100 | worst family n=100 | rank error n=100 (positions) | worst mean Spearman over n | worst n |"
    )
    print("|---|---|---|---|---|---|")
    for name, sorter in sorters.items():
        rows = fidelity_table(sorter, sequences_per_cell=arguments.sequences)
        at_100 = [row for row in rows if row.length == 100]
        per_length = summarize(rows, "length")
        worst_n = min(per_length, key=lambda n: per_length[n]["spearman"])
        worst_family = min(at_100, key=lambda row: row.spearman)
        print(
            f"| {name} | {per_length[100]['spearman']:.5f} | {worst_family.family} {worst_family.spearman:.5f} | "
            f"{per_length[100]['rank_error']:.3f} | {per_length[worst_n]['spearman']:.5f} | {worst_n} |"
        )

    print(
        "\nForward+backward, B=32, n=100 (fastest of 40 interleaved ~20-ms blocks in shuffled order, same process):\n"
    )
    rankers: dict = dict(sorters)
    if "torchsort soft_rank 0.01" in sorters:
        # The bare call (ascending ranks in [1, n], no checks): the stricter reference.  The row
        # above it adds what sodeep's sorters do too: input checks, descending and normalized ranks.
        rankers[BARE_TORCHSORT] = lambda s: torchsort.soft_rank(s, regularization_strength=0.01)
    timings = forward_backward_microseconds(rankers)
    wrapped, bare = timings.get("torchsort soft_rank 0.01"), timings.get(BARE_TORCHSORT)
    print("| sorter | microseconds | ratio to torchsort (bare call) | ratio to torchsort (sodeep's convention) |")
    print("|---|---|---|---|")
    for name, value in timings.items():
        ratios = [f"{value / reference:.2f}x" if reference else "n/a" for reference in (bare, wrapped)]
        print(f"| {name} | {value:,.0f} | {ratios[0]} | {ratios[1]} |")


if __name__ == "__main__":
    main()
