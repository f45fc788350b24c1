import math

import pytest
import torch

from sodeep.benchmark.digits import sklearn_digit_pools
from sodeep.benchmark.learning_to_sort import (
    ScoreNetwork,
    SortingTask,
    sorting_accuracy,
    sorting_jobs,
    sorting_loss,
    train_and_test,
)
from sodeep.benchmark.rankers import available_families


def slow_accuracy(scores, numbers):
    exact, element_wise = [], []
    for score_row, number_row in zip(scores.tolist(), numbers.tolist()):
        # NaN last, below every number: it takes no other element's place.
        predicted = sorted(range(len(score_row)), key=lambda i: math.inf if math.isnan(score_row[i]) else -score_row[i])
        truth = sorted(range(len(number_row)), key=lambda i: -number_row[i])
        # A tied or non-finite score orders nothing: its position counts as wrong.
        ordered = [score_row.count(s) == 1 and abs(s) < float("inf") for s in score_row]
        hits = [p == t and ordered[p] for p, t in zip(predicted, truth)]
        exact.append(all(hits))
        element_wise.append(sum(hits) / len(hits))
    return exact, element_wise


def test_accuracy_metrics_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    numbers = torch.stack([torch.randperm(6, generator=generator) for _ in range(50)])
    scores = numbers + 2.5 * torch.randn(50, 6, generator=generator)
    scores[:5] = numbers[:5].float()  # some rows exactly right
    scores[5:8] = numbers[5:8].float().clamp_max(3)  # right, but three or more tied at the top
    scores[8] = 1.0  # a collapsed network: in the sequence's own order, which is never credited
    numbers[8] = torch.arange(5, -1, -1)
    scores[9, 2] = torch.nan  # a diverged network
    scores[10] = numbers[10].float()
    scores[10, numbers[10].argmin()] = -torch.inf  # the lowest, ordered right, but not finite
    exact, element_wise = sorting_accuracy(scores, numbers)
    expected_exact, expected_element_wise = slow_accuracy(scores, numbers)
    assert exact.tolist() == expected_exact and exact[:5].all() and not exact[5:11].any()
    torch.testing.assert_close(element_wise, torch.tensor(expected_element_wise))
    assert element_wise[8] == 0 and element_wise[10] == 5 / 6
    assert element_wise[5:8].tolist() == [3 / 6] * 3  # the three below the tie
    # A NaN costs its own position only, wherever it stands.
    exact, element_wise = sorting_accuracy(torch.tensor([[torch.nan, 0.9, 0.8, 0.7]]), torch.tensor([[1, 40, 30, 20]]))
    assert element_wise.tolist() == [0.75] and not exact.any()


def test_score_network_maps_images_to_one_score_each():
    network = ScoreNetwork(height=8, digits=4)
    assert network(torch.rand(3, 5, 8, 32)).shape == (3, 5)


def test_losses_prefer_the_right_order():
    families, _ = available_families()
    numbers = torch.tensor([[5, 1, 9, 3]])
    right, wrong = numbers.float(), -numbers.float()
    for family in families:
        ranker = family.build(family.default)
        if ranker.kind == "exact" or not ranker.accepts(4):
            continue
        losses = ["rank"] + (["native"] if ranker.kind == "permutation" else [])
        for loss in losses:
            assert sorting_loss(ranker, loss, right, numbers) < sorting_loss(ranker, loss, wrong, numbers), ranker.label


def test_jobs_cover_every_setting_seed_and_length():
    families, _ = available_families()
    jobs, skipped = sorting_jobs(families, "grid", (3, 5), (0, 1))
    names = {job.family for job in jobs}
    assert "exact" not in names and "pairwise_sigmoid" in names
    assert all(job.loss == "rank" for job in jobs if job.family == "pairwise_sigmoid")
    assert {job.loss for job in jobs if job.family == "neuralsort"} == {"rank", "native"}
    assert len(jobs) % 4 == 0
    assert all(row["part"] == "sorting" for row in skipped)
    # A footprint past the budget for a training step's batch (64 images: 21 sequences of 3) is left out.
    budget = 250  # the pairwise rankers' B n^2: 189 at n = 3 (21 sequences), 300 at n = 5 (12 sequences)
    within, skipped = sorting_jobs(families, "grid", (3,), (0,), images_per_step=64, max_elements=budget)
    assert {"pairwise_sigmoid", "neuralsort"} <= {job.family for job in within}
    jobs, skipped = sorting_jobs(families, "grid", (3, 5), (0,), images_per_step=64, max_elements=budget)
    pairwise = next(row for row in skipped if row["ranker"] == "pairwise_sigmoid")
    assert pairwise["reason"] == f"memory: ~{12 * 5 * 5:.2g} elements > {budget:.2g}"
    assert "pairwise_sigmoid" not in {job.family for job in jobs}


def test_no_worker_process_starts_without_a_job_to_run(monkeypatch):
    import multiprocessing

    from sodeep.benchmark.learning_to_sort import SortingJob, run_sorting

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(multiprocessing, "get_context", no_pool)
    job = SortingJob("exact", None, "rank", 3, 0)
    row = {"family": "exact", "value": None, "loss": "rank", "n": 3, "seed": 0, "ranker": "exact", "kept": True}
    assert run_sorting([job], task=None, workers=16, done=[row]) == [row]


def test_a_short_training_runs_and_reports_metrics():
    families, _ = available_families()
    family = next(family for family in families if family.name == "pairwise_sigmoid")
    train, test = sklearn_digit_pools()
    task = SortingTask(
        digits=2, steps=3, images_per_step=32, learning_rate=1e-3, test_sequences=20, validation_sequences=10
    )
    result = train_and_test(family.build(0.1), "rank", 3, 0, task, train, test)
    assert 0 <= result["exact_match"] <= result["element_wise"] <= 1
    assert {"validation_exact_match", "validation_element_wise", "train_seconds"} <= set(result)


def test_a_training_job_runs_on_one_thread_and_gives_the_caller_its_threads_back(monkeypatch):
    import sodeep.benchmark.learning_to_sort as learning_to_sort

    threads = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(learning_to_sort, "digit_pools", lambda mnist: (None, None))
    monkeypatch.setattr(learning_to_sort, "train_and_test", lambda *args: seen.append(torch.get_num_threads()) or {})
    torch.set_num_threads(2)
    try:
        learning_to_sort.run_job(learning_to_sort.SortingJob("pairwise_sigmoid", 0.01, "rank", 3, 0), task=None)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_the_regression_budget_counts_the_batch_as_the_one_row_the_loss_ranks():
    from sodeep.benchmark.rankers import available_families
    from sodeep.benchmark.regression import run_regression

    families, _ = available_families()
    pairwise = next(family for family in families if family.name == "pairwise_sigmoid").build(0.01)
    # B n^2: 100 for one row of 10, 1,000 for ten rows of 10.
    rows, skipped = run_regression([pairwise], [0], steps=2, batch=10, learning_rate=0.01, max_elements=500)
    assert skipped == [] and {row["ranker"] for row in rows} >= {pairwise.label}
    rows, skipped = run_regression([pairwise], [0], steps=2, batch=10, learning_rate=0.01, max_elements=50)
    assert skipped == [{"ranker": pairwise.label, "part": "regression", "reason": "memory at n=10"}]


def test_workers_are_refused_to_a_program_read_from_standard_input(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "bench"
    program = (
        "from sodeep.benchmark import BenchConfig\n"
        "from sodeep.benchmark.learning_to_sort import SortingJob, run_sorting\n"
        "from sodeep.benchmark.run import run_benchmark\n"
        "jobs = [SortingJob('pairwise_sigmoid', 0.01, 'rank', 3, seed) for seed in (0, 1)]\n"
        "for attempt in (lambda: run_sorting(jobs, task=None, workers=2),\n"
        f"        lambda: run_benchmark(BenchConfig.quick(out={str(out)!r}, parts=('fidelity', 'sorting'), workers=2))):\n"
        "    try:\n"
        "        attempt()\n"
        "    except ValueError as error:\n"
        "        print(error)\n"
    )
    done = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=120)
    refusal = (
        "worker processes cannot start from a program without a file (<stdin>: standard input?), as each runs the "
        "program's file again; save the program to a file and run that, or use workers=1"
    )
    assert done.stdout.splitlines() == [refusal, refusal], done.stderr
    assert not out.exists()  # refused before the benchmark wrote anything


def test_worker_processes_ignore_ctrl_c_from_their_start_and_the_parent_takes_it_back():
    import multiprocessing
    import signal

    from sodeep.benchmark.learning_to_sort import children_ignore_ctrl_c

    before = signal.getsignal(signal.SIGINT)
    with children_ignore_ctrl_c():
        pool = multiprocessing.get_context("spawn").Pool(1)  # no initializer: as started
    with pool:
        assert pool.apply(signal.getsignal, (signal.SIGINT,)) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before


def test_training_through_a_ranker_without_a_gradient_or_for_no_step_is_refused():
    from sodeep.benchmark.rankers import Ranker

    train, test = sklearn_digit_pools()
    task = SortingTask(
        digits=2, steps=1, images_per_step=32, learning_rate=1e-3, test_sequences=4, validation_sequences=4
    )
    exact = Ranker(family="mine", setting="", kind="exact", rank=lambda scores: scores)
    with pytest.raises(ValueError, match="ranker 'mine' gives exact ranks, with no gradient to train through"):
        train_and_test(exact, "rank", 3, 0, task, train, test)
    pairwise = next(family for family in available_families()[0] if family.name == "pairwise_sigmoid").build(0.1)
    idle = SortingTask(
        digits=2, steps=0, images_per_step=32, learning_rate=1e-3, test_sequences=4, validation_sequences=4
    )
    for length, task_of in ((3, idle), (1, task)):
        with pytest.raises(ValueError, match="^need length >= 2 and steps, test and validation sequences >= 1"):
            train_and_test(pairwise, "rank", length, 0, task_of, train, test)
