"""Synthetic generation throughput: sodeep's batched generator vs the original per-item one, side
by side in one process (best of 3 timed blocks each, after a warm-up).

The original SoDeep pipeline builds one sequence per ``__getitem__`` and lets a ``DataLoader``
collate them into batches; both the bare items and the collated batches are timed.  The last
column is a floor no generator of ranked sequences beats by much: one ``torch.rand`` draw and one
NumPy sort per element, nothing else.

    python experiments/benchmarks/bench_generator.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from original_generator import original_item
from torch.utils.data import DataLoader, Dataset

from sodeep.synthetic import generate_sequences, make_generator


class OriginalDataset(Dataset):
    def __init__(self, length: int, size: int) -> None:
        self.length, self.size = length, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return original_item(self.length)


def best_sequences_per_second(produce, sequences: int, blocks: int = 3) -> float:
    produce()  # warm-up
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        produce()
        best = min(best, time.perf_counter() - start)
    return sequences / best


def main() -> None:
    torch.set_num_threads(2)
    print(
        "| n | batch | original items (seq/s) | original via DataLoader (seq/s) | sodeep (seq/s) | ratio to items | floor: rand + sort (seq/s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for length, batch in ((100, 64), (100, 256), (100, 4096), (256, 256), (256, 4096)):
        items = best_sequences_per_second(lambda: [original_item(length) for _ in range(2000)], 2000)
        loader = DataLoader(OriginalDataset(length, 2048), batch_size=min(batch, 2048))
        collated = best_sequences_per_second(lambda: [None for _ in loader], 2048)
        gen = make_generator(0)
        repeats = max(5, 40_000 // batch)

        def stream() -> None:
            for _ in range(repeats):  # each batch is consumed and dropped, as in training
                generate_sequences(batch, length, gen)

        ours = best_sequences_per_second(stream, repeats * batch)

        def floor() -> None:
            for _ in range(repeats):
                np.sort(torch.rand(batch, length, generator=gen).numpy(), axis=-1)

        bound = best_sequences_per_second(floor, repeats * batch)
        print(
            f"| {length} | {batch} | {items:,.0f} | {collated:,.0f} | {ours:,.0f} | {ours / items:.0f}x "
            f"| {bound:,.0f} ({bound / items:.0f}x) |"
        )


if __name__ == "__main__":
    main()
