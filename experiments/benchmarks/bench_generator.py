"""Cost of synthetic data against the pretraining step it feeds, in one process.

First table: batches of the :class:`~sodeep.synthetic.SyntheticSequences` stream as pretraining
draws them (64 sequences, n uniform in 2..256, experiments/configs/pretrain.yaml) against a full
training step of the shipped sorter on the same batch (forward, L1 to the exact ranks, backward,
AdamW update).  The two are timed in turn, batch after batch, so that drifts of the machine hit
both alike; medians are reported.  Second table: what a pretraining iteration costs when batches are
made beforehand or made in line between steps (what pretraining does), the two taking turns
iteration by iteration.
Data's share is the iteration's time beyond that with batches made beforehand, relative to the
iteration.  The target: data under 5% of a pretraining iteration.  Third table:
:func:`~sodeep.synthetic.generate_sequences` throughput at n = 100.

    python experiments/benchmarks/bench_generator.py [--rounds 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Iterator

import torch

from sodeep import load_sorter, rank
from sodeep.synthetic import SyntheticSequences, generate_sequences, make_generator

PRETRAINING_LENGTHS = list(range(2, 257))
TARGET_SHARE = 5.0  # percent of an iteration


def interleaved_medians(rounds: int, warmup: int = 20) -> tuple[float, float, float]:
    """Median seconds of one stream batch, of ranking its scores again with :func:`sodeep.rank`
    (the part of generation that sorts), and of one training step on it, timed in turn."""
    sorter, optimizer = trainable_shipped_sorter()
    batches = iter(SyntheticSequences(64, PRETRAINING_LENGTHS, seed=0))
    generation, ranking, training = [], [], []
    for round_index in range(warmup + rounds):
        start = time.perf_counter()
        scores, ranks = next(batches)
        generated = time.perf_counter()
        rank(scores)
        ranked = time.perf_counter()
        training_step(sorter, optimizer, scores, ranks)
        end = time.perf_counter()
        if round_index >= warmup:
            generation.append(generated - start)
            ranking.append(ranked - generated)
            training.append(end - ranked)
    return statistics.median(generation), statistics.median(ranking), statistics.median(training)


def trainable_shipped_sorter() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    sorter = load_sorter(trainable=True)
    return sorter, torch.optim.AdamW(sorter.parameters(), lr=3e-3)


def training_step(sorter: torch.nn.Module, optimizer: torch.optim.Optimizer, scores, ranks) -> None:
    """One pretraining step: L1 to the exact ranks, backward, AdamW."""
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.l1_loss(sorter(scores), ranks).backward()
    optimizer.step()


def iteration_medians(sources: dict[str, Iterator], rounds: int, warmup: int = 20) -> dict[str, tuple[float, float]]:
    """For each source of batches, the median seconds an iteration waits for its batch and the
    median seconds of a whole iteration (wait + training step of the shipped sorter).  The sources
    take turns iteration by iteration, each with its own sorter and optimizer."""
    trainers = {name: trainable_shipped_sorter() for name in sources}
    waits: dict[str, list[float]] = {name: [] for name in sources}
    iterations: dict[str, list[float]] = {name: [] for name in sources}
    for round_index in range(warmup + rounds):
        for name, batches in sources.items():
            sorter, optimizer = trainers[name]
            start = time.perf_counter()
            scores, ranks = next(batches)
            received = time.perf_counter()
            training_step(sorter, optimizer, scores, ranks)
            end = time.perf_counter()
            if round_index >= warmup:
                waits[name].append(received - start)
                iterations[name].append(end - start)
    return {name: (statistics.median(waits[name]), statistics.median(iterations[name])) for name in sources}


def sequences_per_second(batch_size: int, length: int, calls: int) -> float:
    """Sequences per second of ``generate_sequences(batch_size, length)``, median over ``calls``."""
    generator = make_generator(0)
    generate_sequences(batch_size, length, generator)  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        generate_sequences(batch_size, length, generator)
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="timed batches (after 20 of warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    arguments = parser.parse_args()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )

    generation, ranking, training = interleaved_medians(arguments.rounds)
    iteration = generation + training
    share = 100 * generation / iteration
    print(f"Pretraining batches (64 x n, n uniform in 2..256), medians of {arguments.rounds}:\n")
    print("| part | median (ms) | share of the iteration |")
    print("|---|---|---|")
    print(f"| generate a batch (stream) | {1e3 * generation:.3f} | {share:.1f}% (target < {TARGET_SHARE:.0f}%) |")
    print(f"| of which exact ranks (sodeep.rank) | {1e3 * ranking:.3f} | {100 * ranking / iteration:.1f}% |")
    print(f"| training step (forward, L1, backward, AdamW) | {1e3 * training:.3f} | {100 - share:.1f}% |")
    print(f"| iteration (generation + step) | {1e3 * iteration:.3f} | 100% |")

    print(f"\nA pretraining iteration by where its batches come from, medians of {arguments.rounds}:\n")
    print("| batches | wait for the batch (ms) | iteration (ms) | data's share of the iteration |")
    print("|---|---|---|---|")
    stream = SyntheticSequences(64, PRETRAINING_LENGTHS, seed=0)
    baseline = "made beforehand (no data cost)"
    sources = {
        baseline: iter([stream.batch(k) for k in range(arguments.rounds + 20)]),
        "the stream, in line (pretraining's DataModule)": iter(stream),
    }
    medians = iteration_medians(sources, arguments.rounds)
    for name, (wait, whole) in medians.items():
        # The share counts all that data costs an iteration: its wait and, for the thread, any
        # slowing of the step by the work beside it.
        share = 100 * max(0.0, whole - medians[baseline][1]) / whole
        verdict = (
            ""
            if name == baseline
            else f" (target < {TARGET_SHARE:.0f}%: {'met' if share < TARGET_SHARE else 'not met'})"
        )
        print(f"| {name} | {1e3 * wait:.3f} | {1e3 * whole:.3f} | {share:.1f}%{verdict} |")

    print("\ngenerate_sequences at n = 100, medians:\n")
    print("| batch | sequences/s | ms per batch |")
    print("|---|---|---|")
    for batch_size, calls in ((64, 300), (256, 100), (4096, 15)):
        rate = sequences_per_second(batch_size, 100, calls)
        print(f"| {batch_size} | {rate:,.0f} | {1e3 * batch_size / rate:.3f} |")


if __name__ == "__main__":
    main()
