"""Learning to sort multi-digit numbers from images, trained only through a ranking operator.

The task of NeuralSort (Grover et al., ICLR 2019), also used by Cuturi et al. (2019) and diffsort
(Petersen et al., 2021/2022): a sequence of ``n`` images of multi-digit numbers goes through a
small CNN, one score per image; the scores go through the ranker, and the loss compares the soft
ranks (MSE to the true normalized ranks) or, for permutation rankers with ``loss="native"``, the
soft permutation (the ranker's own loss) with the true order.  The CNN never sees a number.
Test metrics: exact match (the whole predicted order right) and element-wise accuracy (the share
of positions holding the right element).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sodeep.benchmark.digits import DigitPool, sample_sequences
from sodeep.benchmark.rankers import Ranker, check_rankers, true_permutation
from sodeep.benchmark.report import json_text
from sodeep.ranks import rank


class ScoreNetwork(nn.Module):
    """A small CNN: number images ``(..., H, digits * H)`` -> scores ``(...)``, the same for every
    ranker.  Its first convolution reads one square digit at a time (kernel and stride ``H``), a
    1x1 convolution mixes features per digit, and an MLP over the digit positions gives the score:
    a few thousand multiply-adds per image, so the benchmark's many trainings fit on a CPU.
    """

    def __init__(self, height: int, digits: int, channels: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=height, stride=height),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(channels * digits, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch_shape = images.shape[:-2]
        flat = images.reshape(-1, 1, *images.shape[-2:])
        return self.head(self.features(flat).flatten(1)).reshape(batch_shape)


def sorting_accuracy(scores: torch.Tensor, numbers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact match and element-wise accuracy of the order that ``scores`` imply.

    Args:
        scores, numbers: ``(B, n)``; ``numbers`` without ties in a row.

    Returns:
        ``(exact (B,) bool, element_wise (B,) float)``: whether the whole descending order is
        right, and the share of positions that hold the right element.  A score tied with
        another of its row, or not finite, orders nothing: its position counts as wrong (a
        network that gives every image one score, or NaN, gets no credit from the order the
        sequence happens to come in).
    """
    # NaN last, as -inf (sorted first descending, it would move every other element by one place).
    ordered = torch.where(scores.isnan(), float("-inf"), scores)
    predicted = ordered.argsort(dim=-1, descending=True)
    truth = numbers.argsort(dim=-1, descending=True)
    in_order = ordered.gather(-1, predicted)
    same_as_next = in_order[:, 1:] == in_order[:, :-1]
    tied = F.pad(same_as_next, (1, 0)) | F.pad(same_as_next, (0, 1))
    correct = (predicted == truth) & ~tied & in_order.isfinite()
    return correct.all(-1), correct.float().mean(-1)


@dataclass(frozen=True)
class SortingTask:
    """Data and training settings shared by every ranker (one source: ``BenchConfig``)."""

    digits: int
    steps: int
    images_per_step: int
    learning_rate: float
    test_sequences: int
    validation_sequences: int


def sorting_loss(ranker: Ranker, loss: str, scores: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
    """``"rank"``: MSE of soft ranks to the true normalized ranks; ``"native"``: the ranker's own
    loss on its soft permutation against the true permutation."""
    if loss == "native":
        if ranker.permutation is None or ranker.native_loss is None:
            raise ValueError(f"{ranker.label} has no native permutation loss")
        permutation = ranker.permutation(scores)
        return ranker.native_loss(permutation, true_permutation(numbers).to(permutation.dtype))
    if loss != "rank":
        raise ValueError(f"loss must be 'rank' or 'native', got {loss!r}")
    return F.mse_loss(ranker.checked_rank(scores), rank(numbers.to(scores.dtype)))


@torch.no_grad()
def evaluate(network: ScoreNetwork, images: torch.Tensor, numbers: torch.Tensor, chunk: int = 256) -> dict:
    network.eval()
    scores = torch.cat([network(images[start : start + chunk]) for start in range(0, len(images), chunk)])
    exact, element_wise = sorting_accuracy(scores, numbers)
    return {"exact_match": exact.float().mean().item(), "element_wise": element_wise.mean().item()}


def train_and_test(
    ranker: Ranker,
    loss: str,
    length: int,
    seed: int,
    task: SortingTask,
    train_pool: DigitPool,
    test_pool: DigitPool,
) -> dict:
    """Train a fresh :class:`ScoreNetwork` (seeded by ``seed``) through ``ranker`` on sequences of
    ``length`` numbers; return test and validation metrics and the training wall time.

    The test set depends on ``length`` only (the same for every ranker and seed); validation
    sequences use training images and pick the best setting of a grid without touching the test set.
    """
    check_rankers([ranker])
    if ranker.kind == "exact":
        raise ValueError(f"ranker {ranker.label!r} gives exact ranks, with no gradient to train through")
    if length < 2 or task.steps < 1 or task.test_sequences < 1 or task.validation_sequences < 1:
        raise ValueError(
            f"need length >= 2 and steps, test and validation sequences >= 1, got {length}, {task.steps}, "
            f"{task.test_sequences} and {task.validation_sequences}"
        )
    torch.manual_seed(seed)
    network = ScoreNetwork(train_pool.images.shape[1], task.digits)
    optimizer = torch.optim.Adam(network.parameters(), lr=task.learning_rate)
    data = torch.Generator().manual_seed(10_000 + seed)
    sequences = sequences_per_step(task.images_per_step, length)
    start = time.perf_counter()
    for _ in range(task.steps):
        images, numbers = sample_sequences(sequences, length, task.digits, train_pool, data)
        network.train()
        value = sorting_loss(ranker, loss, network(images), numbers)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    test = evaluate(network, *sample_sequences(task.test_sequences, length, task.digits, test_pool, _fixed(length)))
    validation = evaluate(
        network, *sample_sequences(task.validation_sequences, length, task.digits, train_pool, _fixed(length + 500))
    )
    return {
        **test,
        "validation_exact_match": validation["exact_match"],
        "validation_element_wise": validation["element_wise"],
        "train_seconds": seconds,
        "final_loss": value.item(),
    }


def _fixed(offset: int) -> torch.Generator:
    # Evaluation sets far from the training streams' seeds (10_000 + seed).
    return torch.Generator().manual_seed(1_000_000 + offset)


@dataclass(frozen=True)
class SortingJob:
    """One training: a family at one setting value, a loss, a length and a seed."""

    family: str
    value: float | None
    loss: str
    length: int
    seed: int


def sequences_per_step(images_per_step: int, length: int) -> int:
    """Sequences of ``length`` numbers in one training step of about ``images_per_step`` images."""
    return max(2, images_per_step // length)


def sorting_jobs(
    families, settings: str, lengths, seeds, images_per_step: int = 0, max_elements: float = float("inf")
) -> tuple[list[SortingJob], list[dict]]:
    """Every training the benchmark runs, and the rankers it leaves out (with the reason): those
    that refuse one of the ``lengths``, or whose footprint for a training step's batch passes
    ``max_elements``.

    Rank-vector rankers train with the rank loss; permutation rankers with their native loss at
    every setting and with the rank loss at their default setting.
    """
    jobs, skipped = [], []
    for family in families:
        ranker = family.build(family.default)
        if ranker.kind == "exact":
            continue
        refusals = (ranker.refusal(sequences_per_step(images_per_step, n), n, max_elements) for n in lengths)
        reason = next((refusal for refusal in refusals if refusal is not None), None)
        if reason is not None:
            skipped.append({"ranker": ranker.family, "part": "sorting", "reason": reason})
            continue
        variants = [(value, "rank") for value in family.settings(settings)]
        if ranker.kind == "permutation":
            variants = [(family.default, "rank")] + [(value, "native") for value in family.settings(settings)]
        jobs.extend(
            SortingJob(family.name, value, loss, n, seed) for value, loss in variants for n in lengths for seed in seeds
        )
    # Seed-major order: a run stopped early still covers every ranker and length, with fewer seeds.
    jobs.sort(key=lambda job: job.seed)
    return jobs, skipped


_POOLS: dict = {}


def digit_pools(mnist) -> tuple[DigitPool, DigitPool]:
    """The (train, test) digit images: scikit-learn's 8x8 digits for ``mnist=None``, else the MNIST
    files ``((train images, labels), (test images, labels))``; read once per process."""
    if mnist not in _POOLS:
        from sodeep.benchmark.digits import mnist_pool, sklearn_digit_pools

        if mnist is None:
            _POOLS[mnist] = sklearn_digit_pools()
        else:
            (train_images, train_labels), (test_images, test_labels) = mnist
            train, test = mnist_pool(train_images, train_labels), mnist_pool(test_images, test_labels)
            if train.images.shape[1:] != test.images.shape[1:]:  # one scoring network reads both
                train_size, test_size = ("x".join(map(str, pool.images.shape[1:])) for pool in (train, test))
                raise ValueError(
                    f"the train and test digits must have one size, got {train_size} ({train_images}) "
                    f"and {test_size} ({test_images})"
                )
            _POOLS[mnist] = (train, test)
    return _POOLS[mnist]


def run_job(job: SortingJob, task: SortingTask, mnist=None) -> dict:
    """Run one :class:`SortingJob` on one thread (the caller's thread count is restored after it)
    and return its result row."""
    from sodeep.benchmark.rankers import ranker_families, setting_name

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        family = next(family for family in ranker_families() if family.name == job.family)
        ranker = family.build(job.value)
        train_pool, test_pool = digit_pools(mnist)
        result = train_and_test(ranker, job.loss, job.length, job.seed, task, train_pool, test_pool)
    finally:
        torch.set_num_threads(threads)
    return {
        "ranker": ranker.label,
        "family": job.family,
        "setting": setting_name(family.parameter, job.value),
        "value": job.value,
        "is_default": job.value == family.default,
        "loss": job.loss,
        "n": job.length,
        "seed": job.seed,
        **result,
    }


def job_of_row(row: dict) -> SortingJob:
    """The job whose result ``row`` is."""
    return SortingJob(row["family"], row["value"], row["loss"], row["n"], row["seed"])


#: The fields of a training's result row (:func:`run_job`), by type: text, whole numbers, and
#: real numbers (NaN where undefined).
ROW_TEXT = ("ranker", "family", "setting", "loss")
ROW_COUNTS = ("n", "seed")
ROW_NUMBERS = (
    "exact_match",
    "element_wise",
    "validation_exact_match",
    "validation_element_wise",
    "train_seconds",
    "final_loss",
)


def is_result_row(row: object) -> bool:
    """Whether ``row`` has every field of a training's result, each of its type."""
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(key), str) for key in ROW_TEXT)
        and all(isinstance(row.get(key), int) and not isinstance(row.get(key), bool) for key in ROW_COUNTS)
        and all(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool) for key in ROW_NUMBERS)
        and isinstance(row.get("is_default"), bool)
        and "value" in row
    )


def rows_of_jobs(rows: list[dict], jobs: list[SortingJob]) -> list[dict]:
    """The first row of each of ``jobs`` among ``rows``; rows of no such job (another run's, or
    not a whole result row, :func:`is_result_row`) are left out."""
    wanted, found = set(jobs), {}
    for row in rows:
        if not is_result_row(row):
            continue
        try:
            job = job_of_row(row)
            if job in wanted:
                found.setdefault(job, row)
        except TypeError:  # a value that cannot be hashed (a list): no job of this run's
            continue
    return list(found.values())


def run_sorting(
    jobs: list[SortingJob],
    task: SortingTask,
    workers: int,
    mnist=None,
    progress=print,
    rows_path=None,
    done: list[dict] = (),
) -> list[dict]:
    """Run ``jobs`` on ``workers`` processes (in this process when ``workers == 1``); each result
    row is also appended to the JSON-lines file ``rows_path`` as soon as it exists.  The jobs
    whose rows are in ``done`` (an interrupted run's) are not run again: their rows are kept."""
    kept: dict[SortingJob, dict] = {}
    for row in done:
        try:
            kept[job_of_row(row)] = row
        except (KeyError, TypeError):
            continue
    everything, jobs = jobs, [job for job in jobs if job not in kept]

    def finished(row: dict, index: int) -> None:
        if rows_path is not None:
            with open(rows_path, "a") as file:
                file.write(json_text(row) + "\n")
        progress(f"sorting {index}/{len(jobs)}: {row['ranker']} ({row['loss']}) n={row['n']} seed={row['seed']}")

    rows = []
    workers = min(workers, len(jobs))  # no process without a job (none at all when every job is kept)
    if workers <= 1:
        for index, job in enumerate(jobs, 1):
            rows.append(run_job(job, task, mnist))
            finished(rows[-1], index)
        return _in_job_order(everything, kept, dict(zip(jobs, rows)))
    import multiprocessing

    check_workers_can_start()
    # "spawn": a forked child inherits the parent's torch thread pool state, which can deadlock.
    # Leaving the block terminates the workers, also on ctrl-C or SIGTERM: none outlives the run.
    results: dict[int, dict] = {}
    numbered = [(position, job, task, mnist) for position, job in enumerate(jobs)]
    with children_ignore_ctrl_c():  # from their first instruction: a Ctrl-C while they import torch too
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_leave_ctrl_c_to_the_parent)
    with pool:
        for index, (position, row) in enumerate(pool.imap_unordered(_run_numbered_job, numbered), 1):
            results[position] = row
            finished(row, index)
    return _in_job_order(everything, kept, {jobs[position]: row for position, row in results.items()})


def check_workers_can_start() -> None:
    """A ``ValueError`` where worker processes cannot start: a spawned worker runs this program's
    main file again, which a program read from standard input does not have."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not os.path.isfile(main_file):
        raise ValueError(
            f"worker processes cannot start from a program without a file ({main_file}: standard input?), as "
            "each runs the program's file again; save the program to a file and run that, or use workers=1"
        )


def _in_job_order(jobs: list[SortingJob], *found: dict[SortingJob, dict]) -> list[dict]:
    """The rows of ``jobs``, in their order, from the mappings ``found`` (job -> row)."""
    rows = {}
    for mapping in found:
        rows.update(mapping)
    return [rows[job] for job in jobs]


@contextlib.contextmanager
def children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore ctrl-C from their start (the ignored disposition is
    inherited, and Python then installs no KeyboardInterrupt handler); this process ignores it
    only for as long as they take to start.  Outside the main thread, where no handler can be
    set, nothing changes."""
    import signal

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _leave_ctrl_c_to_the_parent() -> None:
    """In a worker: ignore ctrl-C, which the whole process group receives; the parent stops the
    run and terminates the pool (a worker's own traceback would only add noise)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_numbered_job(numbered: tuple) -> tuple[int, dict]:
    """:func:`run_job` in a worker process, with the job's position (results arrive in any order)."""
    position, *arguments = numbered
    return position, run_job(*arguments)
