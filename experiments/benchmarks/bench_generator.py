"""Synthetic generation throughput: sodeep's batched generator vs the original per-item one.

python experiments/benchmarks/bench_generator.py
"""

from __future__ import annotations

import time

import torch
from original_generator import original_item

from sodeep.synthetic import generate_sequences, make_generator


def sequences_per_second(produce, sequences: int) -> float:
    start = time.perf_counter()
    produce()
    return sequences / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(2)
    print("| n | batch | original (seq/s) | sodeep (seq/s) | ratio |")
    print("|---|---|---|---|---|")
    for length, batch in ((100, 64), (100, 256), (100, 4096), (256, 4096)):
        original = sequences_per_second(lambda: [original_item(length) for _ in range(2000)], 2000)
        gen = make_generator(0)
        repeats = max(4, 20_000 // batch)
        ours = sequences_per_second(
            lambda: [generate_sequences(batch, length, gen) for _ in range(repeats)], repeats * batch
        )
        print(f"| {length} | {batch} | {original:,.0f} | {ours:,.0f} | {ours / original:.0f}x |")


if __name__ == "__main__":
    main()
