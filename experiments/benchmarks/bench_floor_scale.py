"""How the rank losses' temperature floor meets the scale of a model's predictions.

The README's second quick start (a small MLP, 300 steps of ``SpearmanLoss`` on a monotone,
heavy-tailed target, held-out Spearman over the last 128 of 1,024 rows), with the model's output
multiplied by a constant ``scale`` in training and testing, which changes no rank: with and
without the L1 anchor, and with the floor raised where the scores are large.  One row per
setting: held-out Spearman for each seed.

    python experiments/benchmarks/bench_floor_scale.py [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from sodeep import SpearmanLoss, load_sorter, rank
from sodeep.benchmark.scripts import run_script
from sodeep.checkpoints import TRAINING_SETTINGS
from sodeep.config import number_list
from sodeep.metrics import rowwise_spearman
from sodeep.wording import plural

#: (scale, l1_weight, temperature_floor): the quick start as written first.
SETTINGS = (
    (1.0, 0.01, TRAINING_SETTINGS["temperature_floor"]),
    (1.0, 0.0, TRAINING_SETTINGS["temperature_floor"]),
    (1e3, 0.0, TRAINING_SETTINGS["temperature_floor"]),
    (1e4, 0.0, TRAINING_SETTINGS["temperature_floor"]),
    (1e6, 0.0, TRAINING_SETTINGS["temperature_floor"]),
    (1e5, 0.0, 1e4),
    (1e3, 0.01, TRAINING_SETTINGS["temperature_floor"]),
    (1e4, 0.01, TRAINING_SETTINGS["temperature_floor"]),
    (1e5, 0.01, 1e4),
)


def held_out_spearman(seed: int, scale: float, l1_weight: float, temperature_floor: float) -> float:
    """The quick start with ``model(...) * scale``: held-out Spearman after 300 steps."""
    torch.manual_seed(seed)
    features = torch.randn(1024, 8)
    targets = torch.exp(features[:, 0]) + features[:, 1] ** 3 + 0.1 * torch.randn(1024)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    sorter = load_sorter(**{**TRAINING_SETTINGS, "temperature_floor": temperature_floor})
    loss_fn = SpearmanLoss(sorter=sorter, l1_weight=l1_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = torch.randint(0, 896, (128,))
        loss = loss_fn(model(features[batch]).squeeze(-1) * scale, targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        held_out = model(features[896:]).squeeze(-1) * scale
    return rowwise_spearman(rank(held_out)[None], rank(targets[896:])[None]).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=number_list(int), default=[0, 1, 2], help="seeds (default 0,1,2)")
    seeds = parser.parse_args().seeds
    if min(seeds) < 0 or len(set(seeds)) < len(seeds):
        parser.error(f"--seeds must be distinct numbers >= 0, got {seeds}")
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {plural(torch.get_num_threads(), 'thread')}\n"
    )
    print("| scale of the outputs | l1_weight | temperature_floor | held-out Spearman per seed | range |")
    print("|---|---|---|---|---|")
    for scale, l1_weight, floor in SETTINGS:
        values = [held_out_spearman(seed, scale, l1_weight, floor) for seed in seeds]
        shown = ", ".join(f"{value:.2f}" for value in values)
        print(
            f"| {scale:g} | {l1_weight:g} | {floor:g} | {shown} | {min(values):.2f} to {max(values):.2f} |", flush=True
        )


if __name__ == "__main__":
    run_script(main)
