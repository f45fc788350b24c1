"""Downstream regression with :class:`sodeep.losses.SpearmanLoss` built on each ranker.

A linear model is trained with the Spearman surrogate alone (batches of ``batch`` rows, the
original sorters' length) and scored by the test Spearman correlation of its predictions; a
model trained with MSE is the reference.  Two tasks: brain age from the bundled fcon1000 cortical
thickness table, and a synthetic monotone task ``y = exp(x . w) + noise``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sodeep.benchmark.rankers import Ranker, check_rankers
from sodeep.losses import SpearmanLoss
from sodeep.metrics import rowwise_spearman
from sodeep.ranks import rank

TASKS = ("fcon1000", "synthetic monotone")
#: Share of subjects held out for the test Spearman.
TEST_FRACTION = 0.2
MSE_REFERENCE = "MSE (no ranker)"


def synthetic_monotone(samples: int = 3000, features: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ N(0, I)``, ``y = exp(x . w) + 0.5 N(0, 1)`` with a fixed ``|w| = 1``: a monotone link
    that MSE fits poorly and a rank loss ignores."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(features, generator=torch.Generator().manual_seed(12345))
    x = torch.randn(samples, features, generator=generator)
    y = torch.exp(x @ (weights / weights.norm())) + 0.5 * torch.randn(samples, generator=generator)
    return x, y


def load_task(task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, F), targets (N,))`` of ``task`` (one of :data:`TASKS`)."""
    if task == "fcon1000":
        from sodeep.brainage.datasets import bundled_table_path
        from sodeep.brainage.tables import read_age_table

        table = read_age_table(bundled_table_path("fcon1000"))
        return torch.as_tensor(table.features, dtype=torch.float32), torch.as_tensor(table.ages, dtype=torch.float32)
    if task == "synthetic monotone":
        return synthetic_monotone()
    raise ValueError(f"unknown task {task!r}; known: {list(TASKS)}")


def split(features: torch.Tensor, targets: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded train/test split; features standardized with the training statistics."""
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    test_count = int(round(TEST_FRACTION * len(targets)))
    test, train = order[:test_count], order[test_count:]
    mean, std = features[train].mean(0), features[train].std(0).clamp_min(1e-6)
    standardized = (features - mean) / std
    return standardized[train], targets[train], standardized[test], targets[test]


def train_regression(
    ranker: Ranker | None,
    data: tuple[torch.Tensor, ...],
    seed: int,
    steps: int,
    batch: int,
    learning_rate: float,
) -> dict:
    """Train a linear model with ``SpearmanLoss(sorter=ranker.rank)`` (MSE on standardized targets
    when ``ranker`` is ``None``); return ``{spearman, seconds}`` on the test split."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(seed)
    model = nn.Linear(train_x.shape[1], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss = SpearmanLoss(sorter=ranker.checked_rank) if ranker is not None else None
    target_mean, target_std = train_y.mean(), train_y.std()
    batches = torch.Generator().manual_seed(20_000 + seed)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randperm(len(train_y), generator=batches)[:batch]
        predictions = model(train_x[index]).squeeze(-1)
        if loss is None:
            value = F.mse_loss(predictions, (train_y[index] - target_mean) / target_std)
        else:
            value = loss(predictions, train_y[index])
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predictions = model(test_x).squeeze(-1)
    spearman = rowwise_spearman(rank(predictions).unsqueeze(0), rank(test_y).unsqueeze(0)).item()
    return {"spearman": spearman, "seconds": seconds}


def run_regression(
    rankers: Sequence[Ranker],
    seeds: Sequence[int],
    steps: int,
    batch: int,
    learning_rate: float,
    max_elements: float = float("inf"),
    progress: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict]]:
    """Rows ``{ranker, task, seed, spearman, seconds}`` and skipped ``{ranker, part, reason}``."""
    check_rankers(rankers)
    if not seeds or steps < 1 or batch < 1:
        raise ValueError(f"need one seed or more, steps >= 1 and batch >= 1, got {list(seeds)}, {steps} and {batch}")
    rows, skipped = [], []
    usable = []
    for ranker in rankers:
        if ranker.kind == "exact":
            skipped.append({"ranker": ranker.label, "part": "regression", "reason": "no gradient"})
        elif not ranker.accepts(batch):
            skipped.append(
                {
                    "ranker": ranker.label,
                    "part": "regression",
                    "reason": f"accepts {ranker.accepted_lengths}, not the batch of {batch}",
                }
            )
        elif ranker.footprint(1, batch) > max_elements:  # SpearmanLoss ranks the batch as one row
            skipped.append({"ranker": ranker.label, "part": "regression", "reason": f"memory at n={batch}"})
        else:
            usable.append(ranker)
    for task in TASKS:
        features, targets = load_task(task)
        for seed in seeds:
            data = split(features, targets, seed)
            for ranker in [None, *usable]:
                result = train_regression(ranker, data, seed, steps, batch, learning_rate)
                label = MSE_REFERENCE if ranker is None else ranker.label
                rows.append({"ranker": label, "task": task, "seed": seed, **result})
            progress(f"regression {task} seed {seed}: done")
    return rows, skipped
