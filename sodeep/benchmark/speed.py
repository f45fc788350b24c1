"""Wall time of every ranker, forward and forward+backward, over a grid of ``(n, B)``.

In each cell the rankers take turns in a new shuffled order every round, each timed over a block
of repeated calls of about ``block_seconds``; a ranker's time is the median over rounds.  A burst
of load on the machine then slows one block of each ranker, not all of one ranker's, and ratios
between rankers of one cell stay meaningful on a busy machine.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from sodeep.benchmark.rankers import Ranker, check_rankers

MODES = ("forward", "forward+backward")
#: The reference of the ``ratio_to_torchsort`` column: torchsort's ``soft_rank`` at its default.
TORCHSORT_REFERENCE = "torchsort eps=1"


def _call(ranker: Ranker, scores: torch.Tensor, mode: str) -> None:
    if mode == "forward" or ranker.kind == "exact":
        with torch.no_grad():
            ranker.rank(scores)
    else:
        ranker.rank(scores).sum().backward()


def _check_ranks(ranker: Ranker, scores: torch.Tensor, mode: str) -> None:
    """The ranker's ranks of ``scores`` checked (:meth:`Ranker.checked_rank`), outside the timings."""
    with torch.set_grad_enabled(mode != "forward" and ranker.kind != "exact"):
        ranker.checked_rank(scores)


def time_cell(
    rankers: Sequence[Ranker], batch: int, n: int, mode: str, rounds: int, block_seconds: float, seed: int = 0
) -> dict[str, float]:
    """Median seconds per call of each ranker on ``(batch, n)`` normal scores (interleaved)."""
    scores = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))
    scores.requires_grad_(mode != "forward")
    repeats = {}
    for ranker in rankers:
        _check_ranks(ranker, scores, mode)
        _call(ranker, scores, mode)  # warm-up: caches, lazy initialisation
        start = time.perf_counter()
        _call(ranker, scores, mode)
        repeats[ranker.label] = max(1, int(block_seconds / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {ranker.label: [] for ranker in rankers}
    order = list(rankers)
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for ranker in order:
            start = time.perf_counter()
            for _ in range(repeats[ranker.label]):
                _call(ranker, scores, mode)
            samples[ranker.label].append((time.perf_counter() - start) / repeats[ranker.label])
    return {label: statistics.median(values) for label, values in samples.items()}


def run_speed(
    rankers: Sequence[Ranker],
    lengths: Sequence[int],
    batches: Sequence[int],
    rounds: int,
    block_seconds: float,
    max_call_seconds: float,
    max_elements: float,
    progress: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict]]:
    """Time every ranker in every cell it fits.

    Returns:
        ``(rows, skipped)``: rows ``{ranker, n, batch, mode, seconds, ratio_to_exact,
        ratio_to_torchsort}`` (ratios to ``exact`` and to the default torchsort in the same cell,
        ``None`` where absent) and ``{ranker, part, mode, n, batch, reason}`` for cells left out.
    """
    check_rankers(rankers)
    if rounds < 1 or not lengths or not batches:
        raise ValueError(
            f"need rounds >= 1 and one length and batch or more, got {rounds}, {list(lengths)} and {list(batches)}"
        )
    rows, skipped = [], []
    too_slow: dict[tuple[str, str, int], int] = {}  # (label, mode, batch) -> the n it got too slow at
    for mode in MODES:
        for batch in batches:
            for n in lengths:
                active = []
                for ranker in rankers:
                    reason = ranker.refusal(batch, n, max_elements)
                    if reason is None and (ranker.label, mode, batch) in too_slow:
                        reason = f"over {max_call_seconds} s per call at n={too_slow[ranker.label, mode, batch]}"
                    if reason:
                        skipped.append(
                            {
                                "ranker": ranker.label,
                                "part": "speed",
                                "mode": mode,
                                "n": n,
                                "batch": batch,
                                "reason": reason,
                            }
                        )
                    else:
                        active.append(ranker)
                # One call decides, and is what a ranker too slow to time in blocks reports.
                single = {ranker.label: _single_call_seconds(ranker, batch, n, mode) for ranker in active}
                slow = [ranker for ranker in active if single[ranker.label] > max_call_seconds]
                for ranker in slow:
                    too_slow[ranker.label, mode, batch] = n
                fast = [ranker for ranker in active if ranker not in slow]
                timings = time_cell(fast, batch, n, mode, rounds, block_seconds)
                timings.update({ranker.label: single[ranker.label] for ranker in slow})
                rows.extend(_cell_rows(timings, n, batch, mode))
                progress(f"speed {mode} B={batch} n={n}: {len(timings)} rankers")
    return rows, skipped


def _single_call_seconds(ranker: Ranker, batch: int, n: int, mode: str) -> float:
    scores = torch.randn(batch, n, generator=torch.Generator().manual_seed(0), requires_grad=mode != "forward")
    _check_ranks(ranker, scores, mode)
    start = time.perf_counter()
    _call(ranker, scores, mode)
    return time.perf_counter() - start


def _cell_rows(timings: dict[str, float], n: int, batch: int, mode: str) -> list[dict]:
    floor = timings.get("exact")
    torchsort = timings.get(TORCHSORT_REFERENCE)
    return [
        {
            "ranker": label,
            "n": n,
            "batch": batch,
            "mode": mode,
            "seconds": seconds,
            "ratio_to_exact": seconds / floor if floor else None,
            "ratio_to_torchsort": seconds / torchsort if torchsort else None,
        }
        for label, seconds in timings.items()
    ]
