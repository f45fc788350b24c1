"""Cost of a rank-loss training step on the 3D CNN, relative to an L1-only step, same process.

One step = forward of an SFCN on a batch of 4 mm volumes (45 x 54 x 45, the MNI grid), the
loss preset, backward and an AdamW update.  Presets are timed in interleaved rounds (best round
each) so that drifts of the machine hit all of them alike.

    python experiments/benchmarks/bench_brainage_step.py [--batch-sizes 8 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from sodeep.benchmark.scripts import run_script
from sodeep.brainage.losses import BrainAgeLoss
from sodeep.brainage.models import SFCN
from sodeep.config import number_at_least

PRESETS = ("l1", "l1+spearman", "l1+agediff", "l1+spearman+agediff", "cheng2021")


def step_seconds(model, optimizer, loss, volumes, ages, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss(model(volumes), ages).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--batch-sizes", type=number_at_least(int, 2), nargs="+", default=[8, 16], help="volumes per step"
    )
    parser.add_argument("--rounds", type=number_at_least(int, 1), default=5, help="interleaved rounds (best taken)")
    parser.add_argument("--steps", type=number_at_least(int, 1), default=3, help="timed steps per preset and round")
    parser.add_argument("--threads", type=number_at_least(int, 1), default=2, help="torch threads")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    print("| batch | preset | step (ms) | ratio to l1 |\n|---|---|---|---|")
    for batch in arguments.batch_sizes:
        model = SFCN(age_offset=40.0).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        volumes = torch.randn(batch, 1, 45, 54, 45)
        ages = 20 + 60 * torch.rand(batch)
        losses = {name: BrainAgeLoss.from_preset(name) for name in PRESETS}
        for loss in losses.values():
            step_seconds(model, optimizer, loss, volumes, ages, 1)  # warm-up
        best = {name: float("inf") for name in PRESETS}
        for _ in range(arguments.rounds):
            for name, loss in losses.items():
                best[name] = min(best[name], step_seconds(model, optimizer, loss, volumes, ages, arguments.steps))
        for name in PRESETS:
            print(f"| {batch} | {name} | {best[name] * 1e3:,.1f} | {best[name] / best['l1']:.3f}x |")


if __name__ == "__main__":
    run_script(main)
