"""One PNG per metric of a sweep report: each setting's units as dots, its mean +- sd as a bar
(matplotlib, imported lazily and drawn without pyplot, so the caller's backend is left alone; no plot
when it is not installed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sodeep.files import atomic_write

if TYPE_CHECKING:
    from sodeep.sweeps.compare import Setting

#: Vertical spread of the dots of one setting, so that equal values stay visible.
JITTER = 0.12


def plot_metric(
    settings: list[Setting], labels: list[str], metric: str, path: Path, repeats: str = "trials"
) -> Path | None:
    """Horizontal dot plot of ``metric``, one row per setting (the first on top), a dot per
    repetition (``repeats``, in words: ``"seed and folds"``)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = [(label, np.array(list(s.values(metric).values()), dtype=float)) for label, s in zip(labels, settings)]
    if not any(len(values) for _, values in rows):
        return None
    figure = Figure(figsize=(7, 1.2 + 0.35 * len(rows)))
    axes = figure.subplots()
    offsets = np.random.default_rng(0)  # fixed jitter: the same report draws the same picture
    for position, (_, values) in enumerate(rows):
        y = -position
        if not len(values):
            continue
        axes.scatter(values, y + offsets.uniform(-JITTER, JITTER, len(values)), s=10, alpha=0.6, color="tab:blue")
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        axes.errorbar(values.mean(), y, xerr=spread, fmt="o", color="black", markersize=4, capsize=3)
    axes.set_yticks([-position for position in range(len(rows))], [label for label, _ in rows], fontsize=7)
    axes.set(xlabel=metric, title=f"{metric}: one dot per repetition ({repeats}), mean +- sd")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    # "tight": the figure grows to hold long setting labels rather than cutting them off.
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=110, bbox_inches="tight"))
    return path
