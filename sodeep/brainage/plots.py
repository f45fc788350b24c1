"""Figures of a brain-age evaluation: predicted vs chronological age, and the gap vs age."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sodeep.files import atomic_write


def plot_predictions(
    true_ages: np.ndarray,
    predicted_ages: np.ndarray,
    path: str | Path,
    *,
    title: str,
    bias: tuple[float, float] | tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Two panels written to ``path`` (PNG): predictions against age with the identity line, and
    the brain-age gap against age (raw, and bias-corrected when ``bias = (slope, intercept)``:
    numbers, or ``(N,)`` arrays that give each subject its own, such as its fold's fit);
    written atomically."""
    from matplotlib.figure import Figure  # outside pyplot: the caller's backend and figures are left alone

    true_ages, predicted_ages = np.asarray(true_ages, dtype=float), np.asarray(predicted_ages, dtype=float)
    gap = predicted_ages - true_ages
    figure = Figure(figsize=(10, 4.5))
    left, right = figure.subplots(1, 2)
    low, high = float(min(true_ages.min(), predicted_ages.min())), float(max(true_ages.max(), predicted_ages.max()))
    left.scatter(true_ages, predicted_ages, s=6, alpha=0.5)
    left.plot([low, high], [low, high], color="black", linewidth=1, label="identity")
    left.set(xlabel="chronological age (years)", ylabel="predicted age (years)", title=title)
    left.legend(loc="upper left")
    right.scatter(true_ages, gap, s=6, alpha=0.5, label="gap")
    if bias is not None:
        slope, intercept = bias
        right.scatter(true_ages, gap - (slope * true_ages + intercept), s=6, alpha=0.5, label="bias-corrected gap")
    right.axhline(0, color="black", linewidth=1)
    right.set(xlabel="chronological age (years)", ylabel="predicted - chronological (years)", title="brain-age gap")
    right.legend(loc="upper right")
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=110))
    return path
