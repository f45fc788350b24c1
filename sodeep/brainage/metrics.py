"""Brain-age metrics: error, correlation, the brain-age gap and its linear age-bias correction.

The brain-age gap (predicted minus chronological age) of a regressor correlates negatively with
age (regression to the mean).  The usual correction (Smith et al., NeuroImage 2019; Beheshti et
al., NeuroImage: Clinical 2019) fits ``gap = a * age + b`` on held-out validation subjects and
subtracts it; the corrected gap should then be uncorrelated with age.

Pooled over sites, a correlation with age rewards telling sites apart when sites differ in age
range; :func:`within_site_spearman` ranks subjects inside each site only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from sodeep.ranks import rank


def _tensor(values) -> torch.Tensor:
    # A copy: pandas' columns are read-only arrays, which torch warns of sharing.
    return torch.from_numpy(np.array(values, dtype=np.float64))


def spearman_rho(p: torch.Tensor, t: torch.Tensor) -> float:
    """Spearman's rho of two float64 ``(N,)`` tensors: Pearson's r of their tie-averaged ranks,
    as ``scipy.stats.spearmanr``; NaN when either is constant.  (torchmetrics'
    ``spearman_corrcoef`` reads 0.9999995, not 1, for a perfect ranking, and 0, not NaN, for
    constant predictions.)"""
    if _is_constant(p) or _is_constant(t):
        return float("nan")  # torchmetrics would warn, then give NaN
    from torchmetrics.functional import pearson_corrcoef

    ascending = {"descending": False, "normalized": False}
    return float(pearson_corrcoef(rank(p, **ascending), rank(t, **ascending)))


#: Fewest subjects a correlation is reported for: two points are +-1 whatever the model.
CORRELATION_SUBJECTS = 3


def _is_constant(values: torch.Tensor) -> bool:
    return bool((values == values[0]).all())


def regression_metrics(predicted, true) -> dict[str, float]:
    """MAE, RMSE, Pearson r, R2 (torchmetrics), Spearman rho (:func:`spearman_rho`) and the mean
    gap.  Constant predictions have no correlation, and two subjects none that says anything
    (+-1 whatever the model): Pearson and Spearman are then NaN.  True ages all of one value have
    neither a correlation nor a variance to explain: Pearson, Spearman and R2 are NaN.

    Args:
        predicted, true: ``(N,)`` ages, ``N >= 2``; ``true`` finite.

    Returns:
        The six metrics by name; all NaN if a prediction is NaN or infinite (a diverged run is
        reported as such, not scored: torchmetrics' Spearman alone would still read ~1).
    """
    # torchmetrics imports matplotlib when it is installed: loaded here, not with the package.
    from torchmetrics.functional import mean_absolute_error, mean_squared_error, pearson_corrcoef, r2_score

    p, t = _tensor(predicted), _tensor(true)
    if p.shape != t.shape or p.dim() != 1 or len(p) < 2:
        raise ValueError(f"predicted and true must be (N,) with N >= 2, got {tuple(p.shape)} and {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("true ages contain NaN or infinite values")
    if not torch.isfinite(p).all():
        return dict.fromkeys(("mae", "rmse", "pearson", "spearman", "r2", "mean_gap"), float("nan"))
    uncorrelated = len(p) < CORRELATION_SUBJECTS or _is_constant(p) or _is_constant(t)
    return {
        "mae": float(mean_absolute_error(p, t)),
        "rmse": float(mean_squared_error(p, t, squared=False)),
        "pearson": float("nan") if uncorrelated else float(pearson_corrcoef(p, t)),
        "spearman": float("nan") if uncorrelated else spearman_rho(p, t),
        # Undefined for test ages all alike (no variance to explain): NaN, where torchmetrics gives 0.
        "r2": float("nan") if _is_constant(t) else float(r2_score(p, t)),
        "mean_gap": float((p - t).mean()),
    }


def fit_age_bias(predicted, true) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``gap = predicted - true`` on ``true``.

    Args:
        predicted, true: ``(N,)`` ages; ``true`` must hold at least two different ages.
    """
    t = np.asarray(true, dtype=np.float64)
    gap = np.asarray(predicted, dtype=np.float64) - t
    if not (np.isfinite(t).all() and np.isfinite(gap).all()):
        raise ValueError("the age bias needs finite ages: predicted or true ages hold NaN or infinite values")
    if t.ndim != 1 or gap.shape != t.shape or t.size == 0 or not np.ptp(t) > 0:
        raise ValueError(
            f"the age bias needs (N,) ages with at least two different true ages, got shape {t.shape} "
            f"and {len(np.unique(t))} distinct ages"
        )
    slope, intercept = np.polyfit(t, gap, 1)
    return float(slope), float(intercept)


def corrected_gap(predicted, true, bias: tuple[float, float]) -> np.ndarray:
    """Gap minus the fitted age bias: ``(predicted - true) - (slope * true + intercept)``."""
    t = np.asarray(true, dtype=np.float64)
    try:
        slope, intercept = np.asarray(bias, dtype=np.float64).reshape(2)
    except (TypeError, ValueError):
        raise ValueError(f"bias must be (slope, intercept), as fit_age_bias returns, got {bias!r}") from None
    return np.asarray(predicted, dtype=np.float64) - t - (slope * t + intercept)


def gap_metrics(predicted, true, bias: tuple[float, float]) -> dict[str, float]:
    """Correlation of the raw and the bias-corrected gap with age, and the corrected MAE.

    The corrected MAE is not an accuracy measure: the correction reads the true ages, so a model
    that predicts one age for everyone (a gap of slope -1 in age) gets one near 0."""
    t = np.asarray(true, dtype=np.float64)
    predictions = np.asarray(predicted, dtype=np.float64)
    raw = predictions - t
    fixed = corrected_gap(predicted, true, bias)
    # Predictions of one age for everyone leave a corrected gap of rounding noise, not of age.
    constant = not np.ptp(predictions) > 0
    return {
        "gap_age_correlation": _correlation(raw, t),
        "corrected_gap_age_correlation": float("nan") if constant else _correlation(fixed, t),
        "corrected_mae": float(np.abs(fixed).mean()),
    }


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two ``(N,)`` arrays; NaN (undefined, without numpy's warning) when one of them
    is constant, as the gap of a model that predicts one age for everyone, or for fewer than
    :data:`CORRELATION_SUBJECTS` subjects."""
    if len(a) < CORRELATION_SUBJECTS or not (np.ptp(a) > 0 and np.ptp(b) > 0):
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def per_site_mae(predicted, true, sites: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{site: {"n": count, "mae": ..., "mean_gap": ...}}``; one site per subject."""
    if not len(predicted) == len(true) == len(sites):
        raise ValueError(
            f"predicted, true and sites must have one entry per subject, got {len(predicted)}, {len(true)} and {len(sites)}"
        )
    groups: dict[str, list[int]] = defaultdict(list)
    for index, site in enumerate(sites):
        groups[site].append(index)
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return {
        site: {
            "n": len(rows),
            "mae": float(np.abs(p[rows] - t[rows]).mean()),
            "mean_gap": float((p[rows] - t[rows]).mean()),
        }
        for site, rows in sorted(groups.items())
    }


#: The fewest test subjects of a site whose within-site Spearman is computed: with two, rho is
#: always +-1.
WITHIN_SITE_SUBJECTS = 3


def _site_rows(sites: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, site in enumerate(sites):
        groups[site].append(index)
    return dict(sorted(groups.items()))


def per_site_spearman(
    predicted, true, sites: Sequence[str], min_subjects: int = WITHIN_SITE_SUBJECTS
) -> dict[str, dict[str, float]]:
    """``{site: {"n": count, "spearman": rho}}`` (:func:`spearman_rho` of the site's subjects) for
    each site with at least ``min_subjects`` subjects and two different true ages; a site whose
    predictions are all equal has rho NaN."""
    if not len(predicted) == len(true) == len(sites):
        raise ValueError(
            f"predicted, true and sites must have one entry per subject, got {len(predicted)}, {len(true)} and {len(sites)}"
        )
    p = _tensor(predicted)
    return {
        site: {"n": len(rows), "spearman": spearman_rho(p[rows], _tensor(true)[rows])}
        for site, rows in correlatable_sites(true, sites, min_subjects).items()
    }


def correlatable_sites(true, sites: Sequence[str], min_subjects: int = WITHIN_SITE_SUBJECTS) -> dict[str, list[int]]:
    """``{site: rows}`` of the sites with at least ``min_subjects`` subjects and two different true
    ages: those a within-site correlation can use, whatever the predictions."""
    t = _tensor(true)
    return {
        site: rows
        for site, rows in _site_rows(sites).items()
        if len(rows) >= min_subjects and float(t[rows].max()) > float(t[rows].min())
    }


def within_site_spearman(predicted, true, sites: Sequence[str], min_subjects: int = WITHIN_SITE_SUBJECTS) -> float:
    """Spearman's rho of predicted and true age inside each site (:func:`per_site_spearman`),
    averaged over the sites weighted by their subjects.  NaN when no site qualifies, and when a
    site's predictions are all equal (they order none of its subjects: its rho is NaN), so that a
    model that fails at one site does not pass on the others' figures.

    Example:
        >>> predicted, true = [1, 2, 3, 9, 8, 7, 5], [10, 20, 30, 40, 50, 60, 70]
        >>> within_site_spearman(predicted, true, ["a"] * 3 + ["b"] * 4)  # (3 * 1 + 4 * -1) / 7
        -0.14285714285714285
    """
    sites_rho = per_site_spearman(predicted, true, sites, min_subjects)
    if not sites_rho:
        return float("nan")
    weights = np.array([entry["n"] for entry in sites_rho.values()], dtype=np.float64)
    values = np.array([entry["spearman"] for entry in sites_rho.values()])
    return float(np.sum(weights * values) / weights.sum())
