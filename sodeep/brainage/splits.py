"""How the subjects of a table are split into folds for cross-validation.

Two protocols (``split``, :data:`~sodeep.brainage.config.SPLITS`):

- ``"stratified"``: age-stratified folds (:func:`~sodeep.brainage.folds.stratified_folds`); for
  each test fold, a tenth of the training folds (again age-stratified) is held out for early
  stopping and for fitting the age-bias correction;
- ``"site"``: folds of whole sites (:func:`~sodeep.brainage.folds.site_folds`; as many folds as
  sites is leave-one-site-out), and the held-out tenth is whole training sites too, so no site
  is in two of fitting, validation and test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sodeep.brainage.config import SPLITS
from sodeep.brainage.folds import check_folds, check_site_folds, site_folds, stratified_folds
from sodeep.wording import plural


def inner_validation_mask(ages: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of an age-stratified validation subset of about ``fraction`` of ``ages``
    (at least two subjects, which the age-bias fit needs, when there are four or more)."""
    if len(ages) < 3:
        raise ValueError(f"need >= 3 training subjects to hold some out for validation, got {len(ages)}")
    parts = max(2, min(round(1 / fraction), len(ages) // 2))
    held_out = stratified_folds(ages, parts, seed) == 0
    ages = np.asarray(ages)
    if np.ptp(ages[held_out]) == 0 and np.ptp(ages) > 0:
        # Mostly one age: the age-bias line needs two, so one held-out subject gives its place
        # to the subject farthest in age from them.
        farthest = np.argmax(np.abs(ages - ages[held_out][0]))
        if held_out.sum() >= 2:
            held_out[np.flatnonzero(held_out)[0]] = False
        held_out[farthest] = True
    return held_out


def inner_site_validation_mask(sites: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of whole sites holding about ``fraction`` of the subjects: one part of a
    site-grouped split into ``round(1 / fraction)`` parts (as many as there are sites, if fewer)."""
    parts = min(max(2, round(1 / fraction)), len(set(sites)))
    return site_folds(sites, parts, seed) == 0


def assign_folds(ages: np.ndarray, sites: Sequence[str], split: str, folds: int, seed: int) -> np.ndarray:
    """Fold index per subject under the protocol ``split`` (:data:`SPLITS`)."""
    if split == "site":
        return site_folds(sites, folds, seed)
    return stratified_folds(ages, folds, seed)


@dataclass(frozen=True)
class FoldRows:
    """Subject rows of one (seed, fold): a model is fitted on ``fitting``, stopped early and its
    age bias fitted on ``validation``, and scored on ``test``."""

    fitting: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def training(self) -> np.ndarray:
        """Fitting and validation rows, sorted: what a model with its own inner search fits on."""
        return np.sort(np.concatenate([self.fitting, self.validation]))


def fold_rows(
    ages: np.ndarray, sites: Sequence[str], *, split: str, folds: int, seed: int, fold: int, validation_fraction: float
) -> FoldRows:
    """The rows of test fold ``fold`` of seed ``seed`` under ``split``, with the training rows'
    inner validation drawn the same way (age-stratified, or whole training sites)."""
    sites = np.asarray(sites, dtype=str)
    fold_of = assign_folds(ages, sites, split, folds, seed)
    training, test = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    inner_seed = seed * 1000 + fold
    if split == "site":
        is_validation = inner_site_validation_mask(sites[training], validation_fraction, inner_seed)
    else:
        is_validation = inner_validation_mask(ages[training], validation_fraction, inner_seed)
    return FoldRows(fitting=training[~is_validation], validation=training[is_validation], test=test)


def check_split(
    ages: np.ndarray,
    sites: Sequence[str],
    *,
    split: str,
    folds: int,
    seeds: Sequence[int],
    validation_fraction: float,
) -> None:
    """Refuse a protocol the cohort cannot run, before anything is written: an unknown ``split``,
    a cohort too small for ``folds``, a (seed, fold) whose training subjects are all of one age,
    and for a site split fewer sites than folds or a (seed, fold) whose training sites cannot give
    up one for validation (``ValueError``, one line)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    check_cross_validation_size(len(ages), folds)
    ages = np.asarray(ages)
    if np.ptp(ages) == 0:
        raise ValueError(
            f"every subject is aged {ages[0]:g}: brain age needs subjects of different ages (the age-bias "
            "line is fitted on two ages at least)"
        )
    if split != "site":
        for seed in seeds:
            for fold in range(folds):
                rows = fold_rows(
                    ages, sites, split=split, folds=folds, seed=seed, fold=fold, validation_fraction=validation_fraction
                )
                if np.ptp(ages[rows.validation]) == 0:
                    # One subject of another age: whatever the folds, its test fold leaves none in training.
                    _, counts = np.unique(ages, return_counts=True)
                    fewer_folds = _fewer_folds_or(folds) if len(ages) - counts.max() > 1 else "give "
                    raise ValueError(
                        f"age-stratified split, seed {seed}, fold {fold}: every training subject is aged "
                        f"{ages[rows.training][0]:g}, and the age-bias line needs two different ages; "
                        f"{fewer_folds}a table with more spread in age"
                    )
        return
    check_site_folds(sites, folds, cross_validation=True)
    sites = np.asarray(sites, dtype=str)
    for seed in seeds:
        problem = _site_split_problem(ages, sites, folds, seed, validation_fraction)
        if problem is None:
            continue
        message, drawn = problem
        other = None
        if drawn:  # the seed's draw of validation sites: another draw may split the cohort
            other = next(
                (other for other in range(SEEDS_TRIED) if other not in seeds
                 and _site_split_problem(ages, sites, folds, other, validation_fraction) is None),
                None,
            )  # fmt: skip
        advice = f"try seed {other} (its draw of validation sites splits the cohort), " if other is not None else ""
        raise ValueError(message.replace("{seed advice}", advice))


#: Seeds tried for one whose site split works, where the seeds asked for draw validation sites
#: too small or of one age.
SEEDS_TRIED = 100


def _site_split_problem(
    ages: np.ndarray, sites: np.ndarray, folds: int, seed: int, validation_fraction: float
) -> tuple[str, bool] | None:
    """Why a site split of ``seed`` cannot run (one line, with ``{seed advice}`` where advice on
    another seed belongs), and whether the seed's draw of validation sites is the cause; ``None``
    where every fold can run."""
    fold_of = site_folds(sites, folds, seed)
    for fold in range(folds):
        where = f"site-grouped split, seed {seed}, fold {fold}"
        training_sites = sorted({str(site) for site in sites[fold_of != fold]})
        if len(training_sites) < 2:
            return (
                f"{where}: the training split holds one site ({training_sites[0]!r}), none to hold out for "
                f"validation; {_fewer_folds_or(folds)}more sites, or split by age (split='stratified')"
            ), False
        rows = fold_rows(
            ages, sites, split="site", folds=folds, seed=seed, fold=fold, validation_fraction=validation_fraction
        )
        if len(rows.test) < 2 or len(rows.fitting) < 2 or len(rows.validation) < 2:
            return (
                f"{where}: {len(rows.test)} test, {len(rows.fitting)} fitting and {len(rows.validation)} validation "
                f"subjects; each needs 2 (validation: of two ages); {{seed advice}}{_fewer_folds_or(folds)}more "
                "subjects per site, or split by age (split='stratified')"
            ), min(len(rows.test), len(rows.fitting)) >= 2
        if np.ptp(ages[rows.validation]) == 0:  # more folds or subjects would not help: the site's ages
            held_out = sorted({str(site) for site in sites[rows.validation]})
            return (
                f"{where}: the validation site{'s' if len(held_out) > 1 else ''} {held_out} "
                f"{'hold' if len(held_out) > 1 else 'holds'} subjects aged {ages[rows.validation][0]:g} only, "
                "and the age-bias line needs two different ages; {seed advice}split by age (split='stratified')"
            ), True
    return None


def _fewer_folds_or(folds: int) -> str:
    """The start of advice: ``"use fewer folds or "``, or ``"give "`` at 2 folds, the fewest."""
    return "use fewer folds or " if folds > 2 else "give "


#: The fewest subjects a training split may hold: two to fit on (a scaler, a batch to rank) and
#: two held out (early stopping and the age-bias line).
FEWEST_TRAINING_SUBJECTS = 4


def check_cross_validation_size(subjects: int, folds: int) -> None:
    """Refuse a cohort too small for ``folds`` folds: each test fold needs two subjects (the
    correlations) and each training split :data:`FEWEST_TRAINING_SUBJECTS`.  The message names
    the fewest subjects these folds need, and the most folds these subjects allow."""
    check_folds(folds)
    if subjects < fewest_subjects(folds):
        # Fewer folds do not always need fewer subjects (2 folds need 8, 3 need 6): every count that fits.
        allowed = [k for k in range(2, max(subjects // 2, 2) + 1) if fewest_subjects(k) <= subjects]
        if allowed:
            contiguous = allowed == list(range(allowed[0], allowed[-1] + 1))
            counts = (
                f"{allowed[0]} to {allowed[-1]}" if contiguous and len(allowed) > 1 else ", ".join(map(str, allowed))
            )
            advice = f"use folds={counts}"
        else:
            smallest = min(range(2, 8), key=fewest_subjects)
            advice = f"a cross-validation needs {fewest_subjects(smallest)} subjects at least (folds={smallest})"
        raise ValueError(
            f"{plural(subjects, 'subject')} {'is' if subjects == 1 else 'are'} too few for {folds} folds, which need {fewest_subjects(folds)} (each test fold "
            f"2, each training split {FEWEST_TRAINING_SUBJECTS}: 2 to fit, 2 to validate); {advice}"
        )


def fewest_subjects(folds: int) -> int:
    """The fewest subjects ``folds`` folds can split (:func:`check_cross_validation_size`).

    Example:
        >>> fewest_subjects(2), fewest_subjects(5)
        (8, 10)
    """
    check_folds(folds)  # one fold could never leave a training split
    subjects = 2 * folds
    while subjects - math.ceil(subjects / folds) < FEWEST_TRAINING_SUBJECTS:
        subjects += 1
    return subjects
