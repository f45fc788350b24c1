"""How close each ranker's ranks are to the exact ones, on several score distributions.

Metrics come from :mod:`sodeep.metrics` (one place for fidelity metrics): Spearman correlation
with the exact ranks and the mean absolute rank error in positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sodeep.benchmark.rankers import Ranker, check_rankers
from sodeep.metrics import mean_absolute_rank_error, mean_spearman
from sodeep.ranks import rank
from sodeep.synthetic import generate_sequences

#: Distribution name -> (family of :mod:`sodeep.synthetic`, scale, shift) of the scores.
DISTRIBUTIONS: dict[str, tuple[str, float, float]] = {
    "normal": ("normal", 1.0, 0.0),
    "heavy-tailed (Cauchy)": ("cauchy", 1.0, 0.0),
    "tied integers": ("ties", 1.0, 0.0),
    "large scale (1e4 N + 1e5)": ("normal", 1e4, 1e5),
}
#: Far from any seed the training code uses.
FIDELITY_SEED = 3_000_000_000


def distribution_scores(name: str, sequences: int, n: int, seed: int = FIDELITY_SEED) -> torch.Tensor:
    """``(sequences, n)`` float32 scores of the distribution ``name`` (a key of :data:`DISTRIBUTIONS`)."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r}; known: {list(DISTRIBUTIONS)}")
    family, scale, shift = DISTRIBUTIONS[name]
    generator = torch.Generator().manual_seed(seed + 7919 * list(DISTRIBUTIONS).index(name) + n)
    scores, _, _ = generate_sequences(sequences, n, generator, families=[family], affine_probability=0.0)
    return scores * scale + shift


@torch.no_grad()
def run_fidelity(
    rankers: Sequence[Ranker],
    lengths: Sequence[int],
    sequences: int,
    max_elements: float = float("inf"),
    progress: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict]]:
    """``(rows, skipped)``: rows ``{ranker, distribution, n, spearman, rank_error}`` (means over
    sequences), and ``{ranker, part, n, reason}`` for each ``n`` a ranker is left out at: one it
    does not accept, or where its footprint exceeds ``max_elements``."""
    check_rankers(rankers)
    if sequences < 1 or not lengths:
        raise ValueError(f"need sequences >= 1 and one length or more, got {sequences} and {list(lengths)}")
    rows, skipped = [], []
    for n in lengths:
        running = []
        for ranker in rankers:
            reason = ranker.refusal(sequences, n, max_elements)
            if reason:
                skipped.append({"ranker": ranker.label, "part": "fidelity", "n": n, "reason": reason})
            else:
                running.append(ranker)
        for name in DISTRIBUTIONS:
            scores = distribution_scores(name, sequences, n)
            exact = rank(scores)
            for ranker in running:
                predicted = ranker.checked_rank(scores).to(exact.dtype)
                rows.append(
                    {
                        "ranker": ranker.label,
                        "distribution": name,
                        "n": n,
                        "spearman": mean_spearman(predicted, exact).item(),
                        "rank_error": mean_absolute_rank_error(predicted, exact).mean().item(),
                    }
                )
        progress(f"fidelity n={n}: done")
    return rows, skipped
