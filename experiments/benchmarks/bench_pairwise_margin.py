"""Pairwise margin ranking loss, B=256, N=1000, 10% positives: vectorized vs a double loop.

The Python double loop over every (positive, negative) pair takes minutes for the whole batch, so
it runs on the first ``--loop-rows`` rows and its time is scaled by B / loop-rows (the loop's cost
is linear in rows); values are compared on those rows.

    python experiments/benchmarks/bench_pairwise_margin.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sodeep.benchmark.scripts import run_script
from sodeep.config import number_at_least
from sodeep.losses import pairwise_margin_ranking_loss

#: Timed calls of the vectorized loss, after one of warm-up (their median is shown).
CALLS = 7


def double_loop(scores: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    total, count = scores.new_zeros(()), 0
    for b in range(scores.shape[0]):
        positives = [i for i in range(scores.shape[1]) if labels[b, i] == 1]
        negatives = [j for j in range(scores.shape[1]) if labels[b, j] == 0]
        for i in positives:
            for j in negatives:
                total = total + torch.clamp(margin - (scores[b, i] - scores[b, j]), min=0)
                count += 1
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--loop-rows", type=number_at_least(int, 1), default=1, help="rows the double loop runs (scaled to B)"
    )
    parser.add_argument("--threads", type=number_at_least(int, 1), default=2, help="torch threads")
    arguments = parser.parse_args()
    batch, items = 256, 1000
    if arguments.loop_rows > batch:
        parser.error(f"--loop-rows must be at most the batch, {batch}, got {arguments.loop_rows}")
    torch.set_num_threads(arguments.threads)
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(batch, items, generator=generator, requires_grad=True)
    labels = (torch.rand(batch, items, generator=generator) < 0.1).long()

    pairwise_margin_ranking_loss(scores, labels, margin=0.5).backward()  # warm-up
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        pairwise_margin_ranking_loss(scores, labels, margin=0.5).backward()
        times.append(time.perf_counter() - start)
    vectorized = statistics.median(times)

    rows = arguments.loop_rows
    loop_scores = scores.detach()[:rows].clone().requires_grad_(True)
    start = time.perf_counter()
    reference = double_loop(loop_scores, labels[:rows], 0.5)
    reference.backward()
    loop = (time.perf_counter() - start) * batch / rows
    ours = pairwise_margin_ranking_loss(scores.detach()[:rows], labels[:rows], margin=0.5)
    print("| method | forward+backward, B=256, N=1000 | speed-up |")
    print("|---|---|---|")
    print(f"| double loop (timed on {rows} row(s), scaled) | {loop:,.1f} s | 1x |")
    print(f"| sodeep vectorized | {vectorized * 1e3:,.1f} ms | {loop / vectorized:,.0f}x |")
    print(f"\nsame value on the looped rows: {ours.item():.6f} vs {reference.item():.6f}")


if __name__ == "__main__":
    run_script(main)
