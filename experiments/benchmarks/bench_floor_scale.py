"""How the rank losses' temperature floor meets the scale of a model's predictions.

Regression: the README's second quick start (a small MLP, 300 steps of ``SpearmanLoss`` on a
monotone, heavy-tailed target, held-out Spearman over the last 128 of 1,024 rows), with the
model's output multiplied by a constant ``scale`` in training and testing, which changes no rank:
with and without the L1 anchor, and with the floor raised where the scores are large.

Retrieval: a linear embedding (64 -> 32) of noisy class prototypes trained with
``RecallRankLoss`` on the (32, 32) similarities of 32 pairs of distinct classes, 300 steps;
held-out mean average precision over 32 classes never trained on (each of their 640 items a
query against the others), with cosine similarities of normalized embeddings or dot products of
raw embeddings times ``scale`` (dot products times ``scale**2``), which changes no ranking.
Each table gives the standard deviation of the untrained model's scores, which the floor is
measured against.

One row per setting: the held-out figure for each seed.

    python experiments/benchmarks/bench_floor_scale.py [--seeds 0,1,2] [--parts regression,retrieval]
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F

from sodeep import SpearmanLoss, load_sorter, rank
from sodeep.benchmark.scripts import run_script
from sodeep.checkpoints import TRAINING_SETTINGS
from sodeep.config import number_list
from sodeep.losses import RecallRankLoss
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


def held_out_spearman(seed: int, scale: float, l1_weight: float, temperature_floor: float) -> tuple[float, float]:
    """The quick start with ``model(...) * scale``: held-out Spearman after 300 steps, and the
    standard deviation of the untrained model's (scaled) predictions on the training rows."""
    torch.manual_seed(seed)
    features = torch.randn(1024, 8)
    targets = torch.exp(features[:, 0]) + features[:, 1] ** 3 + 0.1 * torch.randn(1024)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    with torch.no_grad():
        starting_spread = (model(features[:896]).squeeze(-1) * scale).std().item()
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
    return rowwise_spearman(rank(held_out)[None], rank(targets[896:])[None]).item(), starting_spread


#: (scores, scale of the embeddings, temperature_floor) of the retrieval part: cosine
#: similarities first.
RETRIEVAL_SETTINGS = (
    ("cosine", 1.0, TRAINING_SETTINGS["temperature_floor"]),
    ("dot", 1.0, TRAINING_SETTINGS["temperature_floor"]),
    ("dot", 1.0, 1.0),
    ("dot", 1.0, 4.0),
    ("dot", 10.0, TRAINING_SETTINGS["temperature_floor"]),
    ("dot", 10.0, 10.0),
    ("dot", 10.0, 100.0),
)
#: Classes, items per class, classes trained on (the rest are held out), input and signal sizes.
CLASSES, PER_CLASS, TRAINED_CLASSES, INPUTS, SIGNAL = 96, 20, 64, 64, 16


def retrieval_items(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CLASSES * PER_CLASS, INPUTS)`` items and their classes: a class prototype in ``SIGNAL``
    dimensions plus noise, beside larger noise in the others, mixed by a random rotation."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    prototypes = torch.randn(CLASSES, SIGNAL, generator=generator)
    signal = prototypes[classes] + 0.5 * torch.randn(len(classes), SIGNAL, generator=generator)
    nuisance = 2.0 * torch.randn(len(classes), INPUTS - SIGNAL, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(INPUTS, INPUTS, generator=generator))
    return torch.cat([signal, nuisance], dim=1) @ rotation, classes


def mean_average_precision(embeddings: torch.Tensor, classes: torch.Tensor) -> float:
    """Each item a query against all the others, ranked by dot product: the mean of its average
    precision (the mean, over its relevant items, of the precision at each one's position), over
    the queries that have a relevant item.  Items of equal similarity share a position, the last
    of their group, as in ``sklearn.metrics.average_precision_score``: no order among them counts."""
    similarities = embeddings @ embeddings.T
    if similarities.isnan().any():  # a training that diverged: its row shows nan
        return float("nan")
    similarities.fill_diagonal_(-torch.inf)  # the query itself is last, and not relevant
    order = similarities.argsort(dim=1, descending=True)
    relevant = (classes[order] == classes[:, None]).float()
    relevant[:, -1] = 0.0
    hits = relevant.cumsum(dim=1)
    # Each item's position is the last of its group of equal similarities.
    group_end = rank(similarities.gather(1, order), descending=True, ties="max", normalized=False)
    precision = hits.gather(1, group_end.long() - 1) / group_end
    found = relevant.sum(dim=1)
    precision_at_hits = (precision * relevant).sum(dim=1)[found > 0] / found[found > 0]
    return precision_at_hits.mean().item()


def held_out_map(
    seed: int, scores: str, scale: float, temperature_floor: float, steps: int = 300
) -> tuple[float, float]:
    """Held-out mean average precision after ``steps`` steps of ``RecallRankLoss`` on ``scores``,
    and the standard deviation of the untrained model's similarities among the training items."""
    items, classes = retrieval_items(seed)
    trained = classes < TRAINED_CLASSES
    torch.manual_seed(seed)
    model = torch.nn.Linear(INPUTS, 32)

    def embed(inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(model(inputs), dim=-1) if scores == "cosine" else model(inputs) * scale

    with torch.no_grad():
        starting = embed(items[trained])
        starting_spread = (starting @ starting.T).std().item()
    loss_fn = RecallRankLoss(sorter=load_sorter(**{**TRAINING_SETTINGS, "temperature_floor": temperature_floor}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first_item = torch.arange(TRAINED_CLASSES) * PER_CLASS
    for _ in range(steps):
        chosen = torch.randperm(TRAINED_CLASSES)[:32]
        pairs = first_item[chosen, None] + torch.stack([torch.randperm(PER_CLASS)[:2] for _ in chosen])
        loss = loss_fn(embed(items[pairs[:, 0]]) @ embed(items[pairs[:, 1]]).T)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return mean_average_precision(embed(items[~trained]), classes[~trained]), starting_spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=number_list(int), default=[0, 1, 2], help="seeds (default 0,1,2)")
    parser.add_argument(
        "--parts", default="both", help="regression, retrieval or both (default both; also regression,retrieval)"
    )
    arguments = parser.parse_args()
    seeds = arguments.seeds
    parts = ["regression", "retrieval"] if arguments.parts == "both" else arguments.parts.split(",")
    if min(seeds) < 0 or len(set(seeds)) < len(seeds):
        parser.error(f"--seeds must be distinct numbers >= 0, got {seeds}")
    if not parts or not set(parts) <= {"regression", "retrieval"} or len(set(parts)) < len(parts):
        parser.error(f"--parts must name regression, retrieval or both, got {arguments.parts!r}")
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {plural(torch.get_num_threads(), 'thread')}\n"
    )
    if "regression" in parts:
        print(
            "| scale of the outputs | sd of the untrained predictions | l1_weight | temperature_floor "
            "| held-out Spearman per seed | range |"
        )
        print("|---|---|---|---|---|---|")
        for scale, l1_weight, floor in SETTINGS:
            values, spreads = zip(*(held_out_spearman(seed, scale, l1_weight, floor) for seed in seeds))
            shown = ", ".join(f"{value:.2f}" for value in values)
            print(
                f"| {scale:g} | {_spread(spreads)} | {l1_weight:g} | {floor:g} | {shown} "
                f"| {min(values):.2f} to {max(values):.2f} |",
                flush=True,
            )
    if "retrieval" in parts:
        if "regression" in parts:
            print()
        print("| scores | sd of the untrained similarities | temperature_floor | held-out mAP per seed | range |")
        print("|---|---|---|---|---|")
        floor = TRAINING_SETTINGS["temperature_floor"]
        untrained = [held_out_map(seed, "cosine", 1.0, floor, steps=0)[0] for seed in seeds]
        shown = ", ".join(f"{value:.3f}" for value in untrained)
        print(f"| untrained model (cosine) | | | {shown} | {min(untrained):.3f} to {max(untrained):.3f} |")
        for scores, scale, floor in RETRIEVAL_SETTINGS:
            values, spreads = zip(*(held_out_map(seed, scores, scale, floor) for seed in seeds))
            shown = ", ".join(f"{value:.3f}" for value in values)
            label = "cosine similarity" if scores == "cosine" else f"dot product of embeddings x {scale:g}"
            print(
                f"| {label} | {_spread(spreads)} | {floor:g} | {shown} | {min(values):.3f} to {max(values):.3f} |",
                flush=True,
            )


def _spread(values: tuple[float, ...]) -> str:
    """Standard deviations over seeds, as one figure or a range."""
    low, high = min(values), max(values)
    return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g} to {high:.3g}"


if __name__ == "__main__":
    run_script(main)
