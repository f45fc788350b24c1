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
        predicted = sorted(range(len(score_row)), key=lambda i: -score_row[i])
        truth = sorted(range(len(number_row)), key=lambda i: -number_row[i])
        hits = [p == t for p, t in zip(predicted, truth)]
        exact.append(all(hits))
        element_wise.append(sum(hits) / len(hits))
    return exact, element_wise


def test_accuracy_metrics_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    numbers = torch.stack([torch.randperm(6, generator=generator) for _ in range(50)])
    scores = numbers + 2.5 * torch.randn(50, 6, generator=generator)
    scores[:5] = numbers[:5].float()  # some rows exactly right
    exact, element_wise = sorting_accuracy(scores, numbers)
    expected_exact, expected_element_wise = slow_accuracy(scores, numbers)
    assert exact.tolist() == expected_exact and exact[:5].all()
    torch.testing.assert_close(element_wise, torch.tensor(expected_element_wise))


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
