"""Synthetic generation throughput: sodeep's batched generator vs the original per-item one, side
by side in one process: after a warm-up, 5 rounds in which each generator is timed in turn (one
block each), best block of each kept.  Timing them in turn, not one after the other, lets a slow
phase of this shared machine hit all of them alike.

The original SoDeep pipeline builds one sequence per ``__getitem__`` and lets a ``DataLoader``
collate them into batches; both the bare items and the collated batches are timed.  sodeep is
timed twice: as calls of ``generate_sequences``, one batch each, and as the ``SyntheticSequences``
stream that pretraining iterates (the counterpart of the original's dataset), which builds the
coming batches in blocks.  The last row draws each batch's n from 2-256, as pretraining does
(experiments/configs/pretrain.yaml), and the original's items their n likewise.  The last
column is a floor no generator of ranked sequences beats by much: one ``torch.rand`` draw and one
NumPy sort per element, nothing else.  A second table times, for one 4096x100 batch, what the
issue's 100x target allows against the parts every generator of exact ranks pays for: a draw,
and the sort order of each row (timed here as an argsort; for a generator that would build its
ranks by construction, as NumPy's per-row shuffle and as the cheapest random permutation found:
NumPy's 32-bit draw as keys, packed with the column and sorted once), and then a draw ranked exactly by
sodeep's own fast ranker, on one thread and with the batch split over both cores: what a
generator with no families at all would cost.  The last rows are sodeep's generator by part, on
one thread (random keys packed with their column, their sort, the row walk that builds values and
ranks from the sorted keys), then whole.  A third table times the row walk of each family alone.

    python experiments/benchmarks/bench_generator.py
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from original_generator import original_item
from torch.utils.data import DataLoader, Dataset

from sodeep import synthetic_kernels
from sodeep.cpu_sort import exact_ranks_cpu, sort_keys_with_order
from sodeep.synthetic import FAMILIES, SyntheticSequences, generate_sequences, make_generator


class OriginalDataset(Dataset):
    def __init__(self, length: int, size: int) -> None:
        self.length, self.size = length, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return original_item(self.length)


def best_sequences_per_second(producers: dict, rounds: int = 5) -> dict[str, float]:
    """``{name: (produce, sequences)}`` -> ``{name: sequences per second}`` of each one's best
    block, the producers timed in turn within each round."""
    for produce, _ in producers.values():
        produce()  # warm-up
    best = dict.fromkeys(producers, float("inf"))
    for _ in range(rounds):
        for name, (produce, _) in producers.items():
            start = time.perf_counter()
            produce()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: sequences / best[name] for name, (_, sequences) in producers.items()}


def main() -> None:
    torch.set_num_threads(2)
    print(
        "| n | batch | original items (seq/s) | original via DataLoader (seq/s) "
        "| sodeep calls (seq/s) | ratio to items | sodeep stream (seq/s) | ratio to items "
        "| floor: rand + sort (seq/s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    pretraining_lengths = list(range(2, 257))  # experiments/configs/pretrain.yaml: n drawn per batch
    cases = [([100], 64), ([100], 256), ([100], 4096), ([256], 256), ([256], 4096), (pretraining_lengths, 64)]
    for lengths, batch in cases:
        # Each call draws its n from `lengths` in a fixed order; the original's items likewise
        # (its DataLoader collates one n only: not timed for a mixture).
        order = np.random.default_rng(0).choice(lengths, 2048).tolist()
        loader = (
            DataLoader(OriginalDataset(lengths[0], 2048), batch_size=min(batch, 2048)) if len(lengths) == 1 else None
        )
        gen = make_generator(0)
        batches = iter(SyntheticSequences(batch, lengths))
        repeats = max(5, 40_000 // batch)

        def calls() -> None:
            for k in range(repeats):  # each batch is consumed and dropped, as in training
                generate_sequences(batch, order[k], gen)

        def stream() -> None:
            for _ in itertools.islice(batches, repeats):
                pass

        def floor() -> None:
            for k in range(repeats):
                np.sort(torch.rand(batch, order[k], generator=gen).numpy(), axis=-1)

        producers = {
            "items": (lambda: [original_item(length) for length in order[:2000]], 2000),
            "calls": (calls, repeats * batch),
            "stream": (stream, repeats * batch),
            "floor": (floor, repeats * batch),
        }
        if loader is not None:
            producers["collated"] = (lambda: [None for _ in loader], 2048)
        rates = best_sequences_per_second(producers)
        items, bound = rates["items"], rates["floor"]
        collated = f"{rates['collated']:,.0f}" if loader is not None else "n/a"
        n = lengths[0] if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
        print(
            f"| {n} | {batch} | {items:,.0f} | {collated} "
            f"| {rates['calls']:,.0f} | {rates['calls'] / items:.0f}x "
            f"| {rates['stream']:,.0f} | {rates['stream'] / items:.0f}x "
            f"| {bound:,.0f} ({bound / items:.0f}x) |"
        )
        if (lengths, batch) == ([100], 4096):
            budget_ms = 1e3 * batch / (100 * items)
    print_budget(4096, 100, budget_ms)


def best_and_median_milliseconds(operation, blocks: int = 21) -> tuple[float, float]:
    operation()  # warm-up
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        operation()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times), 1e3 * float(np.median(times))


def print_budget(batch: int, length: int, budget_ms: float) -> None:
    """What one (batch, length) batch may cost at 100x the original, against its unavoidable parts."""
    rng = np.random.default_rng(0)
    gen = make_generator(0)
    values = rng.random((batch, length), dtype=np.float32)
    positions = np.tile(np.arange(length, dtype=np.int32), (batch, 1))
    print(f"\nOne {batch}x{length} batch at 100x the original items may take {budget_ms:.2f} ms. Parts:")
    print("| part | best of 21 (ms) | median (ms) |")
    print("|---|---|---|")
    parts = {
        "torch.rand": lambda: torch.rand(batch, length, generator=gen),
        "NumPy uniform float32 draw": lambda: rng.random((batch, length), dtype=np.float32),
        "NumPy normal float32 draw": lambda: rng.standard_normal((batch, length), dtype=np.float32),
        "np.sort, values only": lambda: np.sort(values, axis=-1),
        "np.argsort (the order exact ranks need)": lambda: np.argsort(values, axis=-1),
        # A generator that knew its ranks by construction (sorted values, then shuffled) would still
        # need one random permutation per row; this is NumPy's own per-row shuffle of 0..n-1.
        "Generator.permuted, one shuffle per row": lambda: rng.permuted(positions, axis=-1),
        # The cheapest random permutation per row found here: NumPy's fast 32-bit draw as keys,
        # packed with the column and sorted once (what sort_keys_with_order does for ranks).
        "random permutation: NumPy uint32 keys + packed sort": lambda: sort_keys_with_order(
            torch.from_numpy(rng.integers(-(2**31), 2**31, (batch, length), dtype=np.int32))
        ),
        "torch.sort": lambda: torch.sort(torch.from_numpy(values), dim=-1),
        "torch.rand + exact ranks (exact_ranks_cpu), one thread": lambda: exact_ranks_cpu(
            torch.rand(batch, length, generator=gen)
        ),
    }
    half_generators = (make_generator(1), make_generator(2))

    def ranked_half(which: int) -> torch.Tensor:
        return exact_ranks_cpu(torch.rand(batch // 2, length, generator=half_generators[which]))

    # sodeep's generator by part, one thread, rows grouped by family as generate_sequences does.
    codes = np.sort(rng.integers(0, len(FAMILIES), batch)).astype(np.int64)
    seeds = rng.integers(0, 2**63, batch, dtype=np.uint64)
    # The kernels take flat arrays, row r's entries at starts[r]:starts[r + 1].
    starts = np.arange(batch + 1) * length
    keys = np.empty((batch, length), np.uint32)
    outputs = (np.empty(batch * length, np.float32), np.empty(batch * length, np.float32))
    synthetic_kernels.draw_keys(seeds, starts, keys.reshape(-1), 8)
    sorted_keys = np.sort(keys, axis=-1).reshape(-1)
    parts["sodeep part 1: random keys packed with their column"] = lambda: synthetic_kernels.draw_keys(
        seeds, starts, keys.reshape(-1), 8
    )
    parts["sodeep part 2: their sort (uint32)"] = lambda: np.sort(keys, axis=-1)
    parts["sodeep part 3: row walk to values and exact ranks"] = lambda: synthetic_kernels.finish_rows(
        codes, seeds, starts, sorted_keys, 8, 0.5, *outputs
    )
    with ThreadPoolExecutor(2) as pool:
        # Each thread draws and ranks half the batch; torch releases the GIL inside its kernels.
        parts["torch.rand + exact ranks, half the batch on each of 2 threads"] = lambda: list(
            pool.map(ranked_half, (0, 1))
        )
        parts["sodeep generate_sequences (whole batch)"] = lambda: generate_sequences(batch, length, gen)
        for name, operation in parts.items():
            best, median = best_and_median_milliseconds(operation)
            print(f"| {name} | {best:.2f} | {median:.2f} |")
    print_family_costs(seeds, starts, keys, sorted_keys, outputs)


def print_family_costs(
    seeds: np.ndarray, starts: np.ndarray, keys: np.ndarray, sorted_keys: np.ndarray, outputs: tuple
) -> None:
    """The row walk of each family alone, one thread, and each row's cost relative to a uniform
    row (keys and their sort included), next to the table the generator splits threads by."""
    batch, length = keys.shape
    common, _ = best_and_median_milliseconds(
        lambda: (synthetic_kernels.draw_keys(seeds, starts, keys.reshape(-1), 8), keys.copy().sort(-1))
    )
    print(
        f"\nRow walk by family, {batch}x{length} rows of one family, one thread (keys, a copy and its sort: {common:.2f} ms):"
    )
    print("| family | walk, best of 21 (ms) | row cost relative to uniform | ROW_COST used by the thread split |")
    print("|---|---|---|---|")
    walks = {}
    for code, name in enumerate(FAMILIES):
        codes = np.full(batch, code, np.int64)
        walks[name], _ = best_and_median_milliseconds(
            lambda codes=codes: synthetic_kernels.finish_rows(codes, seeds, starts, sorted_keys, 8, 0.5, *outputs)
        )
    for code, name in enumerate(FAMILIES):
        relative = (walks[name] + common) / (walks["uniform"] + common)
        print(f"| {name} | {walks[name]:.2f} | {relative:.1f} | {synthetic_kernels.ROW_COST[code]:.1f} |")


if __name__ == "__main__":
    main()
