"""Cross-validation folds of a cohort: age-stratified (:func:`stratified_folds`) or grouped by
site (:func:`site_folds`), each from a seed alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sodeep.brainage.tables import NO_SITE
from sodeep.checks import check_integer
from sodeep.wording import plural


def check_folds(folds: int, subjects: int | None = None) -> None:
    """Refuse fewer than 2 folds and, where the cohort's size is known, fewer subjects than folds."""
    if folds < 2:
        raise ValueError(f"need folds >= 2, got folds={folds}")
    if subjects is not None and subjects < folds:
        advice = f"use folds={subjects} or fewer" if subjects >= 2 else "cross-validation needs more subjects"
        raise ValueError(f"{folds} folds need at least {folds} subjects, got {subjects}; {advice}")


def stratified_folds(ages: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per subject, stratified by age: subjects sorted by age are cut into consecutive
    blocks of ``folds`` (the finest age bins), and each block sends one subject to every fold in a
    random order.  Fold sizes differ by at most one; each fold spans the whole age range.

    Args:
        ages: ``(N,)``, ``N >= folds``.
        folds: ``k >= 2``.
        seed: the only source of randomness.

    Returns:
        ``(N,)`` ints in ``[0, folds)``.
    """
    ages = np.asarray(ages, dtype=np.float64)
    if ages.ndim != 1:
        raise ValueError(f"ages must be 1-D, one per subject, got shape {ages.shape}")
    if not np.isfinite(ages).all():
        raise ValueError(f"ages must be finite, got {int((~np.isfinite(ages)).sum())} NaN or infinite")
    check_integer(folds, "folds", 2)
    check_folds(folds, len(ages))
    try:
        rng = np.random.default_rng(seed)  # an integer, a sequence of them or a SeedSequence
    except (TypeError, ValueError):
        raise ValueError(
            f"seed must be an integer >= 0 (or what numpy.random.default_rng takes), got {seed!r}"
        ) from None
    # Random tie-break so subjects of equal age are not always binned in file order.
    order = np.lexsort((rng.random(len(ages)), ages))
    blocks = -(-len(ages) // folds)
    assignment = rng.permuted(np.tile(np.arange(folds), (blocks, 1)), axis=1).ravel()
    # The last block is partial: keep only its first entries, which are a random subset of folds.
    result = np.empty(len(ages), dtype=np.int64)
    result[order] = assignment[: len(ages)]
    return result


#: Random orders of the sites :func:`site_folds` deals out; it keeps the most even deal.  On
#: FCON1000 (23 sites, 5 folds) a hundred give a largest fold of 218-224 subjects (an exact split:
#: 216) in ~10 ms.
SITE_ORDERS = 100


def check_site_folds(sites: Sequence[str], folds: int, *, cross_validation: bool = False) -> None:
    """Refuse a site-grouped split of ``sites`` into ``folds`` folds when there are fewer distinct
    sites than folds, or, for a ``cross_validation`` (which holds out a validation site in every
    training split), than :data:`FEWEST_SITES` (naming a table without a site column as such), or
    when some subjects have no site (:data:`NO_SITE` among other sites: empty site cells), which
    would form one made-up site."""
    check_folds(folds)
    if isinstance(sites, (str, bytes)) or any(site is None for site in sites):
        raise ValueError("sites must be a sequence of site labels, one per subject, none of them None")
    names = sorted({str(site) for site in sites})
    if names == [NO_SITE]:
        raise ValueError(
            f"a site-grouped split needs a site column; the table has none (every subject's site is {NO_SITE!r}): "
            "name yours with site_column="
        )
    if NO_SITE in names:
        unknown = sum(str(site) == NO_SITE for site in sites)
        known = [name for name in names if name != NO_SITE]
        raise ValueError(
            f"a site-grouped split needs every subject's site; {plural(unknown, 'subject')} "
            f"{'has' if unknown == 1 else 'have'} no site (an empty site cell or NA, read as {NO_SITE!r}) among the sites "
            f"{known[:5]}{' ...' if len(known) > 5 else ''}; fill in their sites, leave those rows out, or split by "
            "age (split='stratified')"
        )
    if cross_validation and len(names) < FEWEST_SITES:
        raise ValueError(
            f"a site-grouped split needs {FEWEST_SITES} sites at least (one to test, and in each training split one "
            f"to fit on and one to hold out for validation), got {len(names)} ({names}); split by age "
            "(split='stratified')"
        )
    if len(names) < folds:
        raise ValueError(
            f"a site-grouped split into {folds} folds needs at least {folds} sites, got {len(names)} "
            f"({names[:5]}{' ...' if len(names) > 5 else ''}); "
            f"use folds={len(names)} or split by age (split='stratified')"
        )


#: The fewest sites a site-grouped cross-validation takes: a test site, and two sites in every
#: training split.
FEWEST_SITES = 3


def site_folds(sites: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold index per subject, grouped by site: all subjects of a site share one fold.

    Sites are dealt in a random order, each to the fold that holds the fewest subjects so far;
    of :data:`SITE_ORDERS` random orders the one whose largest fold is smallest is kept.  With as
    many folds as sites, every fold is one site (leave-one-site-out).

    Args:
        sites: ``N`` site labels with at least ``folds`` distinct values.
        folds: ``k >= 2``.
        seed: the only source of randomness.

    Returns:
        ``(N,)`` ints in ``[0, folds)``; every fold holds at least one site.

    Example:
        >>> site_folds(["a", "a", "b", "c", "c", "c"], 3, seed=0).tolist()
        [1, 1, 2, 0, 0, 0]
    """
    check_site_folds(sites, folds)
    _, site_of, counts = np.unique(np.asarray(sites, dtype=str), return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    best_fold_of_site, best_largest = None, None
    for _ in range(SITE_ORDERS):
        fold_of_site = np.empty(len(counts), dtype=np.int64)
        load = np.zeros(folds, dtype=np.int64)
        for site in rng.permutation(len(counts)):
            fold_of_site[site] = np.argmin(load)
            load[fold_of_site[site]] += counts[site]
        if best_largest is None or load.max() < best_largest:
            best_fold_of_site, best_largest = fold_of_site, load.max()
    return best_fold_of_site[site_of]
