"""Cost of synthetic data against the pretraining step it feeds, in one process.

First table: batches of the :class:`~sodeep.synthetic.SyntheticSequences` stream as pretraining
draws them (64 sequences, n uniform in 2..256, experiments/configs/pretrain.yaml) against a full
training step of the shipped sorter on the same batch (forward, L1 to the exact ranks, backward,
AdamW update).  The two are timed in turn, batch after batch, so that drifts of the machine hit
both alike; medians are reported.  Second table: what a pretraining iteration costs when batches are
made beforehand or made in line between steps, the two taking turns iteration by iteration.
Data's share is the iteration's time beyond that with batches made beforehand, relative to the
iteration.  Third table: the whole pretraining job, :func:`sodeep.pretraining.pretrain` with the
default settings for ``--job-steps`` steps (Lightning, the learning-rate schedule, validation and
checkpoints included): with its batches from a data worker process (the default), made in line,
and made beforehand with the training threads of either, the four taking turns for
``--job-repeats`` rounds; medians of the wall time per step.  Data's share pairs each job with the
made-beforehand job of its round at the same training threads (in brackets: with the faster of
the two made-beforehand jobs).  Fourth table: :func:`~sodeep.synthetic.generate_sequences`
throughput at n = 100.

    python experiments/benchmarks/bench_generator.py [--rounds 300] [--threads 2] [--job-steps 2000] [--job-repeats 5]
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
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

from sodeep import load_sorter, rank
from sodeep.benchmark.scripts import run_script
from sodeep.config import PretrainConfig, number_at_least
from sodeep.pretraining import pretrain, threads_beside
from sodeep.synthetic import SyntheticSequences, generate_sequences, make_generator
from sodeep.wording import plural

PRETRAINING_LENGTHS = list(range(2, 257))


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


#: The pretraining jobs timed: (batches, data workers, training threads as beside one worker).
JOB_KINDS = {
    "the stream from a data worker (`sodeep pretrain`'s default)": ("stream", 1, True),
    "made beforehand, training threads as beside a worker": ("made", 0, True),
    "the stream in line (`--data-workers 0`)": ("stream", 0, False),
    "made beforehand, all threads": ("made", 0, False),
}


def pretraining_job_seconds(steps: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds per step of :func:`pretrain` with the default settings for ``steps`` steps (no
    W&B), for each of :data:`JOB_KINDS`, taking turns ``repeats`` times.  "Made beforehand" jobs
    train on every batch of their stream made before the job starts: the same batches, so the
    same training, with no data cost."""
    config = PretrainConfig()
    stream = SyntheticSequences(config.batch_size, config.length_list(), seed=config.seed)
    made = [stream.batch(index) for index in range(steps + 1)]
    timings: dict[str, list[float]] = {name: [] for name in JOB_KINDS}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for kind_index, (name, (batches, workers, beside_worker)) in enumerate(JOB_KINDS.items()):
                out = Path(folder) / f"job-{kind_index}-{repeat}"
                job = PretrainConfig(steps=steps, out=str(out), wandb="disabled", data_workers=workers)
                with contextlib.ExitStack() as stack:
                    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the job's progress lines
                    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
                    if batches == "made":
                        stack.enter_context(mock.patch.object(SyntheticSequences, "batch", lambda self, k: made[k]))
                    if beside_worker and not workers:
                        stack.enter_context(threads_beside(1))
                    start = time.perf_counter()
                    pretrain(job)
                    timings[name].append((time.perf_counter() - start) / steps)
    return timings


def data_share(with_data: list[float], without: list[float]) -> float:
    """Median over rounds of the share of a job's time beyond that of its partner without data
    cost (0 when the partner was as slow)."""
    return statistics.median(max(0.0, (data - free) / data) for data, free in zip(with_data, without))


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
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=number_at_least(int, 1), default=300, help="timed batches (after 20 of warm-up)"
    )
    parser.add_argument(
        "--threads", type=number_at_least(int, 1), default=None, help="torch threads (omitted: torch's own)"
    )
    parser.add_argument(
        "--job-steps", type=number_at_least(int, 1), default=2000, help="steps of each pretraining job timed"
    )
    parser.add_argument(
        "--job-repeats", type=number_at_least(int, 1), default=5, help="timed jobs of each kind, alternating"
    )
    arguments = parser.parse_args()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {plural(torch.get_num_threads(), 'thread')}\n"
    )

    generation, ranking, training = interleaved_medians(arguments.rounds)
    iteration = generation + training
    share = 100 * generation / iteration
    print(f"Pretraining batches (64 x n, n uniform in 2..256), medians of {arguments.rounds}:\n")
    print("| part | median (ms) | share of the iteration |")
    print("|---|---|---|")
    print(f"| generate a batch (stream) | {1e3 * generation:.3f} | {share:.1f}% |")
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
        "the stream, in line (`--data-workers 0`)": iter(stream),
    }
    medians = iteration_medians(sources, arguments.rounds)
    for name, (wait, whole) in medians.items():
        share = 100 * max(0.0, whole - medians[baseline][1]) / whole
        shown = "" if name == baseline else f"{share:.1f}%"
        print(f"| {name} | {1e3 * wait:.3f} | {1e3 * whole:.3f} | {shown} |")

    print(
        f"\nThe pretraining job (`pretrain()`, default settings, {arguments.job_steps} steps), "
        f"medians of {plural(arguments.job_repeats, 'job')} of each kind, taking turns:\n"
    )
    job = pretraining_job_seconds(arguments.job_steps, arguments.job_repeats)
    names = list(JOB_KINDS)
    worker, made_beside, in_line, made_all = (job[name] for name in names)
    fastest_made = [min(pair) for pair in zip(made_beside, made_all)]
    shares = {
        names[0]: f"{100 * data_share(worker, made_beside):.1f}% ({100 * data_share(worker, fastest_made):.1f}%)",
        names[2]: f"{100 * data_share(in_line, made_all):.1f}% ({100 * data_share(in_line, fastest_made):.1f}%)",
    }
    print(
        "| batches | training threads | ms per step | data's share of the job (against the faster made-beforehand job) |"
    )
    print("|---|---|---|---|")
    for name, (_, _, beside_worker) in JOB_KINDS.items():
        with threads_beside(1 if beside_worker else 0):
            threads = torch.get_num_threads()
        print(f"| {name} | {threads} | {1e3 * statistics.median(job[name]):.2f} | {shares.get(name, '')} |")

    print("\ngenerate_sequences at n = 100, medians:\n")
    print("| batch | sequences/s | ms per batch |")
    print("|---|---|---|")
    for batch_size, calls in ((64, 300), (256, 100), (4096, 15)):
        rate = sequences_per_second(batch_size, 100, calls)
        print(f"| {batch_size} | {rate:,.0f} | {1e3 * batch_size / rate:.3f} |")


if __name__ == "__main__":
    run_script(main)
