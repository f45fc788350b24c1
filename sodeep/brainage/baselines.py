"""Classical brain-age baselines, fitted on the folds the loss presets are trained on.

On each training split the features are z-scored on the training rows only
(:class:`~sodeep.brainage.tables.Standardizer`), then three models predict the test rows: the
training median (what knowing the age distribution alone gives), ridge regression and an RBF
support-vector regressor, the classical models of brain age from regional features.  Their
hyperparameters are chosen by a grid search on ``search_folds``, folds of the training rows
drawn under the same protocol as the test folds (whole sites under a site-grouped split), so the
choice never sees a test subject nor, under a site split, a test site.

scikit-learn (the ``brainage`` extra) is imported when a baseline is fitted.

Example:
    >>> rng = np.random.default_rng(0)
    >>> features, ages = rng.normal(size=(40, 3)), rng.uniform(20, 80, 40)
    >>> search_folds = np.arange(30) % 3
    >>> predictions = baseline_predictions(features, ages, np.arange(30), np.arange(30, 40), search_folds)
    >>> sorted(predictions), predictions["ridge"].shape
    (['median', 'ridge', 'svr'], (10,))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sodeep.brainage.tables import Standardizer

#: Ridge penalties searched: half-decades over the range where z-scored regional features go from
#: nearly unpenalized to nearly the mean.
RIDGE_ALPHAS = tuple(float(alpha) for alpha in np.logspace(-2, 4, 13))
#: SVR penalties searched, for ages in years.
SVR_C = (10.0, 30.0, 100.0)
#: Width of the SVR's insensitive tube, years: errors below a year cost nothing.
SVR_EPSILON = 1.0
#: Folds of the training rows the hyperparameter search uses (fewer when a site split has fewer
#: training sites).
SEARCH_FOLDS = 3

#: ``(training features, training ages, test features, search folds) -> test predictions``.
BaselineFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def grid_search(estimator: Any, grid: dict[str, Sequence[float]], features, ages, search_folds) -> Any:
    """``estimator`` refitted on all of ``features`` with the grid point of lowest mean absolute
    error over the predefined ``search_folds`` (one fold index per row).  A fit or score that
    raises (a stop signal among them) ends the search: it does not score its grid point NaN and
    choose among the others."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    search = GridSearchCV(
        estimator, grid, cv=PredefinedSplit(search_folds), scoring="neg_mean_absolute_error", error_score="raise"
    )
    return search.fit(features, ages)


def predict_median(features, ages, test_features, search_folds) -> np.ndarray:
    """The training median for every test subject."""
    return np.full(len(test_features), float(np.median(ages)))


def predict_ridge(features, ages, test_features, search_folds) -> np.ndarray:
    """Ridge regression, penalty from :data:`RIDGE_ALPHAS` by grid search."""
    from sklearn.linear_model import Ridge

    return grid_search(Ridge(), {"alpha": RIDGE_ALPHAS}, features, ages, search_folds).predict(test_features)


def predict_svr(features, ages, test_features, search_folds) -> np.ndarray:
    """RBF support-vector regression (``epsilon`` :data:`SVR_EPSILON`), ``C`` from :data:`SVR_C`."""
    from sklearn.svm import SVR

    svr = SVR(kernel="rbf", epsilon=SVR_EPSILON)
    return grid_search(svr, {"C": SVR_C}, features, ages, search_folds).predict(test_features)


#: The baselines by the name ``results.json`` keeps them under.
BASELINES: dict[str, BaselineFunction] = {"median": predict_median, "ridge": predict_ridge, "svr": predict_svr}


def baseline_predictions(
    features: np.ndarray, ages: np.ndarray, training: np.ndarray, test: np.ndarray, search_folds: np.ndarray
) -> dict[str, np.ndarray]:
    """Test predictions of every baseline of :data:`BASELINES`.

    Args:
        features: ``(N, F)`` of every subject.
        ages: ``(N,)`` years.
        training, test: row indices; the scaler and the models see the training rows only.
        search_folds: ``(len(training),)`` fold index of each training row for the grid searches.

    Returns:
        ``{name: (len(test),) float64 predictions}``.
    """
    training, test = np.asarray(training), np.asarray(test)
    if np.shape(search_folds) != training.shape:
        raise ValueError(
            f"search_folds must hold one fold per training row, got shape {np.shape(search_folds)} "
            f"for {len(training)} training rows"
        )
    scaler = Standardizer().fit(features[training])
    fitted, tested = scaler.transform(features[training]), scaler.transform(features[test])
    targets = np.asarray(ages, dtype=np.float64)[training]
    return {
        name: np.asarray(predict(fitted, targets, tested, np.asarray(search_folds)), dtype=np.float64)
        for name, predict in BASELINES.items()
    }
