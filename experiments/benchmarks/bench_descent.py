"""Is a sorter's gradient a descent direction of the Spearman loss built on it?

For each ranker, score distribution and length n, ``--draws`` pairs (predictions, targets) of
shape (B, n) are drawn in float64 (float32 for a ranker that refuses float64).  The loss of a
draw is the Spearman surrogate of :func:`sodeep.losses.spearman_loss`, the MSE between the
ranker's ranks of the predictions and the exact normalized ranks of the targets, with the ranker
frozen as :class:`sodeep.SpearmanLoss` holds it.  With ``g`` its autograd gradient, the same
forward is evaluated again at ``predictions - eps * s * g / ||g||`` (``s``: the draw's mean row
standard deviation, ``||g||`` over the draw's B n entries) for each relative step ``eps``, and the
draw counts as down, up or same by the exact comparison of the two losses in float64; a draw
whose gradient is exactly zero counts as same, and is also counted on its own.

The last columns compare ``g`` with central finite differences of the same loss,
``(L(p + h u) - L(p - h u)) / 2h`` with ``h = --fd-step * s``: along ``--directions`` random unit
directions ``u``, the cosine between those slopes and ``g . u``; along ``u = g / ||g||``, the
slope divided by ``||g||``.  Both are 1 when autograd returns the derivative of the forward; a
sorter that treats a quantity its forward depends on as a constant (a temperature, a scale)
gives less, and a negative slope ratio means that ``-g`` climbs.  Random directions see an error
spread over the entries; the slope along ``g`` also sees one concentrated on a few entries (a
close pair).  Median and 5th percentile over draws.

Scores: ``normal`` N(0, 1); ``clustered`` about n / 10 centres N(0, 1), each element its centre
plus 1e-3 N(0, 1) (near-ties); ``tied`` the same centres, each element exactly its centre
(groups of equal scores, as quantized or ReLU outputs give); ``heavy_tailed`` standard Cauchy.  Targets share
``--correlation`` with the predictions' ranks: ``c z + sqrt(1 - c^2) N(0, 1)``, ``z`` the
standardized exact ranks of the predictions.

    python experiments/benchmarks/bench_descent.py [--quick] [--json descent.json]

Rankers: the shipped sorter at each temperature floor of ``--floors`` (0: none, the sharp
``load_sorter()``; 0.1: what the rank losses use), the pairwise sigmoid at
``--temperatures`` and torchsort's ``soft_rank`` at ``--strengths`` (skipped when torchsort is
missing), built by :mod:`sodeep.benchmark.rankers` in sodeep's rank convention.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sodeep.benchmark.rankers import Ranker, ranker_families
from sodeep.benchmark.report import script_json_problem
from sodeep.benchmark.scripts import run_script
from sodeep.checkpoints import load_sorter
from sodeep.config import number_at_least, number_list, parse_with_quick
from sodeep.files import atomic_write_json
from sodeep.losses import SpearmanLoss
from sodeep.ranks import rank

#: The name its ``--json`` records, so that no other script's results are replaced by its own.
SCRIPT = Path(__file__).name

#: Clustered scores: elements per cluster (about) and a cluster's spread relative to the centres'.
ELEMENTS_PER_CLUSTER = 10
CLUSTER_WIDTH = 1e-3
#: Scores per sorter call, n times the rows: bounds the (rows, n, n) intermediates of pairwise
#: rankers at 32 MiB in float64.
ELEMENT_BUDGET = 2**22


def _normal(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _clustered(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    n = shape[-1]
    clusters = max(2, n // ELEMENTS_PER_CLUSTER)
    centres = _normal(generator, (*shape[:-1], clusters))
    membership = torch.randint(0, clusters, shape, generator=generator)
    return centres.gather(-1, membership) + CLUSTER_WIDTH * _normal(generator, shape)


def _tied(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    n = shape[-1]
    centres = _normal(generator, (*shape[:-1], max(2, n // ELEMENTS_PER_CLUSTER)))
    return centres.gather(-1, torch.randint(0, centres.shape[-1], shape, generator=generator))


def _heavy_tailed(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float64).cauchy_(generator=generator)


DISTRIBUTIONS: dict[str, Callable[[torch.Generator, tuple[int, ...]], torch.Tensor]] = {
    "normal": _normal,
    "clustered": _clustered,
    "tied": _tied,
    "heavy_tailed": _heavy_tailed,
}


def correlated_targets(predictions: torch.Tensor, correlation: float, generator: torch.Generator) -> torch.Tensor:
    """Targets whose exact ranks correlate with those of ``predictions`` ``(..., n)``."""
    ranks = rank(predictions)
    spread = ranks.std(-1, keepdim=True).clamp_min(1e-12)
    standardized = (ranks - ranks.mean(-1, keepdim=True)) / spread
    noise = _normal(generator, tuple(predictions.shape))
    return correlation * standardized + math.sqrt(1.0 - correlation**2) * noise


def draw_losses(sorter: Callable, predictions: torch.Tensor, target_ranks: torch.Tensor) -> torch.Tensor:
    """The Spearman surrogate of each draw, ``(..., B, n) -> (...)``: the MSE of
    :func:`sodeep.losses.spearman_loss` taken per draw, with the sorter called on at most
    :data:`ELEMENT_BUDGET` scores at a time."""
    n = predictions.shape[-1]
    rows = predictions.reshape(-1, n)
    step = max(1, ELEMENT_BUDGET // (n * n))
    ranks = torch.cat([sorter(chunk) for chunk in rows.split(step)]).reshape(predictions.shape)
    return (ranks - target_ranks.to(ranks.dtype)).square().flatten(-2).mean(-1)


@dataclass
class DescentRow:
    ranker: str
    scores: str
    n: int
    dtype: str
    draws: int
    zero_gradient: float
    down: dict[str, float]
    up: dict[str, float]
    same: dict[str, float]
    cosine_median: float | None
    cosine_p05: float | None
    slope_ratio_median: float | None
    slope_ratio_p05: float | None


def probe_draws(
    sorter: Callable,
    predictions: torch.Tensor,
    target_ranks: torch.Tensor,
    directions: torch.Tensor,
    steps: Sequence[float],
    fd_step: float,
) -> dict[str, torch.Tensor]:
    """Per-draw figures of ``predictions`` ``(D, B, n)`` against ``target_ranks``: the loss, the
    losses after each step against the gradient ``(steps, D)``, the gradient's norm, and the
    directional derivatives along ``directions`` ``(K, D, B, n)`` (unit per draw) by central
    finite differences and by autograd, each ``(K, D)``."""
    leaf = predictions.clone().requires_grad_(True)
    losses = draw_losses(sorter, leaf, target_ranks)
    (gradient,) = torch.autograd.grad(losses.sum(), leaf)  # draws are independent: each its own gradient
    norm = gradient.flatten(-2).norm(dim=-1)[:, None, None]
    scale = predictions.std(-1).mean(-1)[:, None, None]
    unit = torch.where(norm > 0, gradient / torch.where(norm > 0, norm, 1.0), 0.0)
    h = fd_step * scale
    with torch.no_grad():
        stepped = torch.stack([predictions - eps * scale * unit for eps in steps])
        along = torch.cat([directions, unit.unsqueeze(0)])  # the random directions, then the gradient's
        probes = torch.cat([predictions + h * along, predictions - h * along])
        stepped_losses = draw_losses(sorter, stepped, target_ranks)
        probe_losses = draw_losses(sorter, probes, target_ranks)
    count = along.shape[0]
    slopes = (probe_losses[:count] - probe_losses[count:]) / (2 * h[:, 0, 0])
    return {
        "loss": losses.detach(),
        "stepped": stepped_losses,
        "norm": norm.flatten(),
        "finite_difference": slopes[:-1],
        "autograd": (directions * gradient).flatten(-2).sum(-1),
        "slope_along_gradient": slopes[-1],
    }


def descent_cell(
    ranker: Ranker,
    distribution: str,
    n: int,
    *,
    draws: int,
    batch: int,
    steps: Sequence[float],
    directions: int,
    fd_step: float,
    correlation: float,
    dtype: torch.dtype,
    seed: int,
) -> DescentRow:
    """Descent and finite-difference figures of one ranker on one (distribution, n)."""
    generator = torch.Generator().manual_seed(seed)
    predictions = DISTRIBUTIONS[distribution](generator, (draws, batch, n))
    target_ranks = rank(correlated_targets(predictions, correlation, generator))
    random_directions = _normal(generator, (directions, draws, batch, n))
    random_directions = random_directions / random_directions.flatten(-2).norm(dim=-1)[..., None, None]
    predictions, target_ranks, random_directions = (t.to(dtype) for t in (predictions, target_ranks, random_directions))
    sorter = SpearmanLoss(sorter=ranker.rank).rank  # the ranker frozen, as the loss holds it

    # Draws in groups, so that a pairwise ranker's (rows, n, n) graph stays within the budget.
    group = max(1, ELEMENT_BUDGET // (batch * n * n))
    parts = [
        probe_draws(sorter, *chunk, steps, fd_step)
        for chunk in zip(predictions.split(group), target_ranks.split(group), random_directions.split(group, dim=1))
    ]
    figures = {key: torch.cat([part[key] for part in parts], dim=-1) for key in parts[0]}
    losses, stepped = figures["loss"], figures["stepped"]
    cosine = torch.nn.functional.cosine_similarity(figures["finite_difference"], figures["autograd"], dim=0, eps=0.0)
    cosine = cosine[torch.isfinite(cosine)]
    moving = figures["norm"] > 0
    slope_ratio = figures["slope_along_gradient"][moving] / figures["norm"][moving]

    def share(mask: torch.Tensor) -> float:
        return float(mask.double().mean())

    names = [f"{eps:g}" for eps in steps]
    return DescentRow(
        ranker=ranker.label,
        scores=distribution,
        n=n,
        dtype=str(dtype).removeprefix("torch."),
        draws=draws,
        zero_gradient=share(figures["norm"] == 0),
        down={name: share(after < losses) for name, after in zip(names, stepped)},
        up={name: share(after > losses) for name, after in zip(names, stepped)},
        same={name: share(after == losses) for name, after in zip(names, stepped)},
        cosine_median=float(cosine.quantile(0.5)) if cosine.numel() else None,  # the mean of the middle two
        cosine_p05=float(cosine.quantile(0.05)) if cosine.numel() else None,
        slope_ratio_median=float(slope_ratio.quantile(0.5)) if slope_ratio.numel() else None,
        slope_ratio_p05=float(slope_ratio.quantile(0.05)) if slope_ratio.numel() else None,
    )


def build_rankers(
    floors: Sequence[float],
    temperatures: Sequence[float],
    strengths: Sequence[float],
    families: Sequence[str],
    sorter_band: int | None | str = "shipped",
) -> tuple[list[Ranker], dict[str, str]]:
    """The rankers compared, and ``{name: reason}`` for those that cannot be built here;
    ``sorter_band``: the shipped sorter's band as shipped, or another (``None``: every pair)."""
    by_name = {family.name: family for family in ranker_families()}
    wanted = {
        "sodeep": [("sodeep (shipped)", value) for value in floors],
        "pairwise": [("pairwise_sigmoid", value) for value in temperatures],
        "torchsort": [("torchsort", value) for value in strengths],
    }
    rankers, missing = [], {}
    for key in families:
        for name, value in wanted[key]:
            try:
                if key == "sodeep" and sorter_band != "shipped":
                    rankers.append(shipped_with_band(value, sorter_band))
                    continue
                rankers.append(by_name[name].build(value))
            except (ImportError, FileNotFoundError, ValueError) as error:
                missing[f"{name} {'' if value is None else value}".strip()] = f"{type(error).__name__}: {error}"
    return rankers, missing


def shipped_with_band(floor: float, band: int | None) -> Ranker:
    """The shipped sorter at temperature ``floor`` (0: none) comparing ``band`` distinct values
    softly on each side (``None``: every pair, ``B n^2`` memory)."""
    sorter = load_sorter(temperature_floor=floor or None, band=band)
    setting = f"floor={floor:g}, band={'all' if band is None else band}"
    return Ranker("sodeep (shipped)", setting, "rank", sorter, lengths=(2, sorter.max_length))


def supported_dtype(ranker: Ranker) -> torch.dtype:
    """float64 if the ranker returns float64 ranks for float64 scores, else float32."""
    try:
        probe = ranker.rank(torch.linspace(0.0, 1.0, 8, dtype=torch.float64).reshape(2, 4))
    except (RuntimeError, TypeError):
        return torch.float32
    return torch.float64 if probe.dtype == torch.float64 else torch.float32


def format_table(rows: Sequence[DescentRow], steps: Sequence[float]) -> str:
    names = [f"{eps:g}" for eps in steps]
    header = ["ranker", "scores", "n", "zero gradient", *[f"eps={name}: down / up / same" for name in names]]
    header += ["FD cosine median (5th pct)", "FD slope along g / norm of g: median (5th pct)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.ranker + ("" if row.dtype == "float64" else f" ({row.dtype})"), row.scores, str(row.n)]
        cells.append(f"{100 * row.zero_gradient:.1f}%")
        cells += [f"{100 * row.down[k]:.1f} / {100 * row.up[k]:.1f} / {100 * row.same[k]:.1f}%" for k in names]
        for median, low in ((row.cosine_median, row.cosine_p05), (row.slope_ratio_median, row.slope_ratio_p05)):
            cells.append("-" if median is None else f"{median:.6f} ({low:.6f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _band(text: str) -> int | None | str:
    if text in ("shipped", "none"):
        return None if text == "none" else text
    return number_at_least(int, 1)(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--draws", type=number_at_least(int, 1), default=500, help="(predictions, targets) pairs per cell"
    )
    parser.add_argument("--batch", type=number_at_least(int, 1), default=4, help="rows B of a draw")
    parser.add_argument("--lengths", type=number_list(int, 2), default=[5, 20, 100], help="n, e.g. 5,20,100")
    parser.add_argument("--distributions", default=",".join(DISTRIBUTIONS), help=f"of {list(DISTRIBUTIONS)}")
    parser.add_argument(
        "--steps", type=number_list(float, 0, above=True), default=[1e-4, 1e-3, 1e-2], help="relative steps eps"
    )
    parser.add_argument(
        "--directions", type=number_at_least(int, 1), default=8, help="random directions for finite differences"
    )
    parser.add_argument(
        "--fd-step",
        type=number_at_least(float, 0, above=True),
        default=1e-6,
        help="finite-difference step, relative",
    )
    parser.add_argument("--correlation", type=float, default=0.5, help="targets' correlation with predictions")
    parser.add_argument("--rankers", default="sodeep,pairwise,torchsort", help="of sodeep, pairwise, torchsort")
    parser.add_argument(
        "--floors",
        type=number_list(float, 0),
        default=[0.0, 0.1],
        help="shipped sorter at these temperature floors (0: none)",
    )
    parser.add_argument(
        "--sorter-band",
        type=_band,
        default="shipped",
        metavar="BAND",
        help="distinct values the shipped sorter compares softly on each side (none: every pair); default: as shipped",
    )
    parser.add_argument(
        "--temperatures", type=number_list(float, 0, above=True), default=[0.01, 0.1], help="pairwise sigmoid T"
    )
    parser.add_argument(
        "--strengths",
        type=number_list(float, 0, above=True),
        default=[0.01, 1.0],
        help="torchsort regularization_strength",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="30 draws, n in 5,20, 4 directions")
    parser.add_argument("--json", help="also write the settings and rows as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    arguments = parse_with_quick(build_parser(), argv, {"draws": 30, "lengths": [5, 20], "directions": 4})
    if arguments.json and (problem := script_json_problem(arguments.json, SCRIPT)):
        raise SystemExit(f"--json: {problem}")
    distributions = [name.strip() for name in arguments.distributions.split(",") if name.strip()]
    unknown = sorted(set(distributions) - set(DISTRIBUTIONS))
    if not distributions:
        raise SystemExit(f"--distributions names none; known: {list(DISTRIBUTIONS)}")
    if unknown:
        raise SystemExit(f"unknown distributions {unknown}; known: {list(DISTRIBUTIONS)}")
    families = [name.strip() for name in arguments.rankers.split(",") if name.strip()]
    if not families or not set(families) <= {"sodeep", "pairwise", "torchsort"}:
        raise SystemExit(f"--rankers takes sodeep, pairwise, torchsort; got {arguments.rankers!r}")
    if not 0.0 <= arguments.correlation <= 1.0:
        raise SystemExit(f"--correlation must be in [0, 1], got {arguments.correlation}")
    rankers, missing = build_rankers(
        arguments.floors, arguments.temperatures, arguments.strengths, families, arguments.sorter_band
    )

    rows, refused = [], {}
    cells = [(r, d, n) for r in rankers for d in distributions for n in arguments.lengths]
    for index, (ranker, distribution, n) in enumerate(cells, 1):
        if not ranker.accepts(n):
            refused[f"{ranker.label} n={n}"] = f"accepts {ranker.accepted_lengths}"
            continue
        row = descent_cell(
            ranker,
            distribution,
            n,
            draws=arguments.draws,
            batch=arguments.batch,
            steps=arguments.steps,
            directions=arguments.directions,
            fd_step=arguments.fd_step,
            correlation=arguments.correlation,
            dtype=supported_dtype(ranker),
            seed=arguments.seed + 1000 * list(DISTRIBUTIONS).index(distribution) + n,
        )
        rows.append(row)
        print(f"[{index}/{len(cells)}] {ranker.label} {distribution} n={n}", file=sys.stderr, flush=True)

    title = (
        f"Spearman loss after a step against its gradient: share of {arguments.draws} draws of (B={arguments.batch}, n) "
        f"where it went down / up / stayed the same, per relative step eps; targets' rank correlation "
        f"{arguments.correlation:g}; finite differences along {arguments.directions} random directions."
    )
    notes = [f"- {name}: not run ({reason})" for name, reason in {**missing, **refused}.items()]
    text = "\n".join([title, "", format_table(rows, arguments.steps), *([""] + notes if notes else [])])
    print(text)
    if arguments.json:
        settings = {key: value for key, value in vars(arguments).items() if key != "json"}
        payload = {
            "script": SCRIPT,
            "settings": settings,
            "rows": [asdict(row) for row in rows],
            "not_run": {**missing, **refused},
        }
        atomic_write_json(arguments.json, payload)
    return text


if __name__ == "__main__":
    run_script(main)
