"""Fidelity, time and memory of one sorter at large n, on the pretraining families and on hard scores.

For each length n and each set of scores (every family of :data:`sodeep.synthetic.FAMILIES`,
drawn as pretraining draws them, then ``heavy_tailed`` standard Cauchy, ``clustered`` four tight
clusters, and ``tied`` integers 0..n/4), ``--sequences`` rows are ranked ``--batch`` rows per
call, without gradients, and compared with the exact ranks of :func:`sodeep.rank`:

* Spearman: mean over rows of :func:`sodeep.metrics.rowwise_spearman` (rows that are all tied left out);
* rank error, in positions: mean and largest ``n |r_hat - r|``;
* tie spread, in positions: the largest ``n (max - min)`` of the sorter's ranks within a group of
  equal scores ("-" where the set has no ties);
* non-finite: ranks that are NaN or infinite, and gradients that are, on the timed batch;
* time per call: median over the fidelity calls (forward, no gradient) and over ``--repeats``
  forward+backward calls of ``MSE(sorter(x), rank(x))`` on the first batch;
* peak MiB: the largest total of tensors made during one forward+backward call (storages made
  inside the call, counted while alive; inputs excluded), on any device.

A length the sorter refuses (``ValueError``, e.g. above a ``ConvSorter``'s capacity) gets a row
of "-" and the first two clauses of the message (what was seen, what is accepted); a set that
fails with a ``RuntimeError`` (out of memory) gets "-" and the error's first line.

    python experiments/benchmarks/bench_sorter_fidelity_large_n.py [--lengths 512,1024,4096,16384]
        [--checkpoint sorter.pt | --architecture pairwise_sigmoid --sorter '{"temperature": 0.01}']
        [--device cuda] [--quick] [--json fidelity.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sodeep.benchmark.report import script_json_problem
from sodeep.benchmark.scripts import run_script
from sodeep.checkpoints import default_sorter_path, load_sorter
from sodeep.config import parse_json_object, parse_lengths, parse_with_quick
from sodeep.files import atomic_write_json
from sodeep.metrics import rowwise_spearman
from sodeep.ranks import rank
from sodeep.sorters import build_sorter
from sodeep.synthetic import FAMILIES, generate_sequences, make_generator

#: The name its ``--json`` records, so that no other script's results are replaced by its own.
SCRIPT = Path(__file__).name

DEFAULT_LENGTHS = (512, 1024, 4096, 16384)
#: Clustered scores: this many centres N(0, 1), each element its centre plus CLUSTER_WIDTH N(0, 1).
CLUSTERS = 4
CLUSTER_WIDTH = 1e-3


def _heavy_tailed(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(rows, n).cauchy_(generator=generator)


def _clustered(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.randn(rows, CLUSTERS, generator=generator)
    membership = torch.randint(0, CLUSTERS, (rows, n), generator=generator)
    return centres.gather(-1, membership) + CLUSTER_WIDTH * torch.randn(rows, n, generator=generator)


def _tied(rows: int, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n // 4 + 1, (rows, n), generator=generator).float()


#: Score sets beyond the pretraining families: (description, sampler(rows, n, generator)).
EXTRA_SETS: dict[str, tuple[str, Callable[[int, int, torch.Generator], torch.Tensor]]] = {
    "heavy_tailed": ("standard Cauchy", _heavy_tailed),
    "clustered": (f"{CLUSTERS} centres N(0, 1), each element its centre + {CLUSTER_WIDTH:g} N(0, 1)", _clustered),
    "tied": ("integers 0..n/4", _tied),
}


def draw_set(name: str, rows: int, n: int, seed: int) -> torch.Tensor:
    """``(rows, n)`` float32 scores of a pretraining family or of :data:`EXTRA_SETS`."""
    generator = make_generator(seed)
    if name in EXTRA_SETS:
        return EXTRA_SETS[name][1](rows, n, generator)
    return generate_sequences(rows, n, generator, families=[name])[0]


class PeakTensorBytes(TorchDispatchMode):
    """While active, tracks the total bytes of tensor storages made by operations (forward and
    backward) that are still alive, and its peak: ``with PeakTensorBytes() as meter: ...``."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in tree_flatten(result)[0]:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()  # views share their base's storage object
                key = id(storage)
                if key not in self._tracked:
                    self._tracked.add(key)
                    size = storage.nbytes()
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._release, key, size)
        return result


def largest_tie_spread(scores: torch.Tensor, predicted: torch.Tensor) -> float | None:
    """Largest ``n (max - min)`` of ``predicted`` ranks within a group of equal ``scores``
    ``(B, n)``; ``None`` when no row has a tie."""
    sorted_scores, order = scores.sort(-1)
    in_order = predicted.gather(-1, order)
    starts = torch.ones_like(sorted_scores, dtype=torch.bool)
    starts[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    group = starts.long().cumsum(-1) - 1
    size = torch.zeros_like(in_order).scatter_add_(-1, group, torch.ones_like(in_order))
    high = torch.full_like(in_order, -math.inf).scatter_reduce_(-1, group, in_order, "amax")
    low = torch.full_like(in_order, math.inf).scatter_reduce_(-1, group, in_order, "amin")
    spread = torch.where(size >= 2, high - low, -math.inf).amax()
    return None if spread == -math.inf else float(spread) * scores.shape[-1]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loss_step(sorter: Callable, scores: torch.Tensor) -> torch.Tensor:
    """One forward+backward of ``MSE(sorter(scores), rank(scores))``; returns the gradient."""
    leaf = scores.clone().requires_grad_(True)
    F.mse_loss(sorter(leaf), rank(scores)).backward()
    return leaf.grad


@dataclass
class FidelityRow:
    scores: str
    n: int
    spearman: float | None = None
    mean_error: float | None = None
    max_error: float | None = None
    tie_spread: float | None = None
    non_finite_ranks: int | None = None
    non_finite_gradients: int | None = None
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    peak_mib: float | None = None
    refused: str | None = None


def measure_set(sorter: Callable, scores: torch.Tensor, name: str, batch: int, repeats: int) -> FidelityRow:
    """Every figure of one ``(name, n)`` cell; ``scores`` ``(rows, n)`` on the sorter's device."""
    n = scores.shape[-1]
    device = scores.device
    predicted, forward_seconds = [], []
    with torch.no_grad():
        for chunk in scores.split(batch):
            _synchronize(device)
            start = time.perf_counter()
            predicted.append(sorter(chunk))
            _synchronize(device)
            forward_seconds.append(time.perf_counter() - start)
    predicted = torch.cat(predicted).double()
    exact = rank(scores).double()
    finite = torch.isfinite(predicted)
    error = (torch.where(finite, predicted, 0.0) - exact).abs() * n

    first = scores[:batch]
    with PeakTensorBytes() as meter:
        gradient = loss_step(sorter, first)
    step_seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        loss_step(sorter, first)
        _synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    spearman = rowwise_spearman(predicted, exact)
    return FidelityRow(
        scores=name,
        n=n,
        spearman=float(spearman.nanmean()) if bool(spearman.isfinite().any()) else None,
        mean_error=float(error.mean()),
        max_error=float(error.max()),
        tie_spread=largest_tie_spread(scores, predicted),
        non_finite_ranks=int((~finite).sum()),
        non_finite_gradients=int((~torch.isfinite(gradient)).sum()),
        forward_ms=1e3 * statistics.median(forward_seconds),
        forward_backward_ms=1e3 * statistics.median(step_seconds) if step_seconds else None,
        peak_mib=meter.peak / 2**20,
    )


def refusal(sorter: Callable, n: int, device: torch.device, dtype: torch.dtype) -> str | None:
    """What the sorter says when it refuses a row of length n (a ``ValueError``), if it does: the
    message's first two clauses, what it saw and what it accepts."""
    try:
        with torch.no_grad():
            sorter(torch.linspace(0.0, 1.0, n, device=device, dtype=dtype).unsqueeze(0))
    except ValueError as error:
        return ";".join(str(error).split(";")[:2]).strip()
    return None


def run(
    sorter: Callable,
    lengths: Sequence[int],
    sets: Sequence[str],
    *,
    sequences: int,
    batch: int,
    repeats: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[FidelityRow]:
    rows = []
    for n in lengths:
        refused = refusal(sorter, n, device, dtype)
        if refused is not None:
            rows.append(FidelityRow(scores="all sets", n=n, refused=refused))
            progress(f"n={n}: refused ({refused})")
            continue
        for index, name in enumerate(sets):
            scores = draw_set(name, sequences, n, seed + 1000 * index + n).to(device=device, dtype=dtype)
            try:
                rows.append(measure_set(sorter, scores, name, batch, repeats))
            except (RuntimeError, MemoryError) as error:  # out of memory, on the CPU or the GPU
                rows.append(FidelityRow(scores=name, n=n, refused=str(error).splitlines()[0][:120]))
            progress(f"n={n} {name}")
    return rows


def _number(value: float | None, digits: str) -> str:
    return "-" if value is None else format(value, digits)


def format_tables(rows: Sequence[FidelityRow], batch: int) -> str:
    header = (
        "| scores | Spearman | mean error (pos.) | max error (pos.) | tie spread (pos.) | non-finite ranks / grads "
        f"| forward ms (B={batch}) | forward+backward ms | peak MiB |"
    )
    parts = []
    for n in dict.fromkeys(row.n for row in rows):
        lines = [f"n = {n}", "", header, "|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for row in (row for row in rows if row.n == n):
            if row.refused is not None:
                lines.append(f"| {row.scores} | - | - | - | - | - | - | - | - |")
                notes.append(f"- {row.scores}: {row.refused}")
                continue
            lines.append(
                f"| {row.scores} | {_number(row.spearman, '.6f')} | {_number(row.mean_error, '.3g')} "
                f"| {_number(row.max_error, '.3g')} | {_number(row.tie_spread, '.3g')} "
                f"| {row.non_finite_ranks} / {row.non_finite_gradients} | {_number(row.forward_ms, '.3g')} "
                f"| {_number(row.forward_backward_ms, '.3g')} | {_number(row.peak_mib, '.3g')} |"
            )
        parts.append("\n".join(lines + ([""] + notes if notes else [])))
    return "\n\n".join(parts)


def chosen_sorter(arguments: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    if arguments.architecture:
        sorter = build_sorter(arguments.architecture, **parse_json_object(arguments.sorter or "{}", "--sorter"))
        return sorter.requires_grad_(False).eval(), f"untrained {arguments.architecture} {sorter.config()}"
    if arguments.sorter:
        raise SystemExit("--sorter configures --architecture; pass --architecture too")
    sorter = load_sorter(arguments.checkpoint)
    return sorter, arguments.checkpoint or f"the shipped sorter ({default_sorter_path().name})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="sorter checkpoint (none: the shipped sorter)")
    source.add_argument("--architecture", help="an untrained sorter of this architecture instead")
    parser.add_argument("--sorter", help="JSON config for --architecture, e.g. '{\"temperature\": 0.01}'")
    parser.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)), help="n, e.g. 512,4096")
    parser.add_argument("--families", default=",".join(FAMILIES), help="pretraining families")
    parser.add_argument("--sets", default=",".join(EXTRA_SETS), help=f"other score sets, of {list(EXTRA_SETS)}")
    parser.add_argument("--sequences", type=int, default=16, help="rows per (set, n)")
    parser.add_argument("--batch", type=int, default=4, help="rows per sorter call")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward+backward calls per cell")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=2_000_000_000, help="far from pretraining's seeds")
    parser.add_argument("--quick", action="store_true", help="n in 64,256, 4 rows per cell, 1 repeat")
    parser.add_argument("--json", help="also write the settings and rows as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    arguments = parse_with_quick(build_parser(), argv, {"lengths": "64,256", "sequences": 4, "repeats": 1})
    if arguments.json and (problem := script_json_problem(arguments.json, SCRIPT)):
        raise SystemExit(f"--json: {problem}")
    try:
        lengths = parse_lengths(arguments.lengths)
    except ValueError as error:
        raise SystemExit(f"--lengths: {error}") from None
    families = [name.strip() for name in arguments.families.split(",") if name.strip()]
    extra = [name.strip() for name in arguments.sets.split(",") if name.strip()]
    for flag, names, known in (("--families", families, FAMILIES), ("--sets", extra, EXTRA_SETS)):
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise SystemExit(f"unknown {flag} {unknown}; known: {list(known)}")
    if not families and not extra:
        raise SystemExit(f"--families and --sets name nothing to rank; known: {list(FAMILIES)} and {list(EXTRA_SETS)}")
    if arguments.sequences < 1 or arguments.batch < 1 or arguments.repeats < 0:
        raise SystemExit("--sequences and --batch must be >= 1 and --repeats >= 0")
    try:
        device = torch.device(arguments.device)
        torch.empty(0, device=device)  # a device this torch has
    except (RuntimeError, AssertionError) as error:
        raise SystemExit(f"--device {arguments.device}: not available here ({str(error).splitlines()[0]})") from None
    dtype = getattr(torch, arguments.dtype)
    try:
        sorter, title = chosen_sorter(arguments)
    except (ValueError, TypeError, OSError) as error:  # checkpoint errors are ValueErrors
        raise SystemExit(f"{' '.join(str(error).split())}") from None
    sorter = sorter.to(device)
    rows = run(
        sorter,
        lengths,
        families + extra,
        sequences=arguments.sequences,
        batch=arguments.batch,
        repeats=arguments.repeats,
        device=device,
        dtype=dtype,
        seed=arguments.seed,
    )
    text = (
        f"Fidelity of {title}, {arguments.sequences} rows per cell, {arguments.dtype} on {device}; "
        "errors and spreads in positions.\n\n" + format_tables(rows, min(arguments.batch, arguments.sequences))
    )
    print(text)
    if arguments.json:
        settings = {key: value for key, value in vars(arguments).items() if key != "json"}
        atomic_write_json(
            arguments.json, {"script": SCRIPT, "sorter": title, "settings": settings, "rows": [asdict(r) for r in rows]}
        )
    return text


if __name__ == "__main__":
    run_script(main)
