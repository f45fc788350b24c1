import warnings

import numpy as np
import pytest
import scipy.stats

from sodeep.brainage.metrics import corrected_gap, fit_age_bias, gap_metrics, per_site_mae, regression_metrics


def test_regression_metrics_match_scipy_and_numpy():
    rng = np.random.default_rng(0)
    true = rng.uniform(20, 80, 200)
    predicted = 0.7 * true + 12 + rng.normal(0, 5, 200)
    metrics = regression_metrics(predicted, true)
    assert metrics["mae"] == pytest.approx(np.abs(predicted - true).mean())
    assert metrics["rmse"] == pytest.approx(np.sqrt(((predicted - true) ** 2).mean()))
    assert metrics["pearson"] == pytest.approx(scipy.stats.pearsonr(predicted, true)[0])
    assert metrics["spearman"] == pytest.approx(scipy.stats.spearmanr(predicted, true)[0])
    residual = ((predicted - true) ** 2).sum() / ((true - true.mean()) ** 2).sum()
    assert metrics["r2"] == pytest.approx(1 - residual)
    with pytest.raises(ValueError, match="N >= 2"):
        regression_metrics([1.0], [2.0])


def test_age_bias_correction_removes_the_gap_age_correlation():
    rng = np.random.default_rng(1)
    true = rng.uniform(20, 80, 500)
    predicted = 0.6 * true + 20 + rng.normal(0, 4, 500)  # regression to the mean
    bias = fit_age_bias(predicted, true)
    assert bias[0] == pytest.approx(-0.4, abs=0.05)
    gaps = gap_metrics(predicted, true, bias)
    assert gaps["gap_age_correlation"] < -0.5
    assert abs(gaps["corrected_gap_age_correlation"]) < 1e-6


def test_per_site_mae():
    result = per_site_mae([1.0, 2.0, 10.0], [0.0, 0.0, 13.0], ["a", "a", "b"])
    assert result == {"a": {"n": 2, "mae": 1.5, "mean_gap": 1.5}, "b": {"n": 1, "mae": 3.0, "mean_gap": -3.0}}


def test_diverged_predictions_give_nan_metrics_and_bad_input_is_refused():
    true = np.array([20.0, 30.0, 40.0, 50.0])
    diverged = regression_metrics(np.array([21.0, np.nan, 39.0, 52.0]), true)
    assert all(np.isnan(value) for value in diverged.values())
    with pytest.raises(ValueError, match="true ages"):
        regression_metrics(true, np.array([20.0, np.inf, 40.0, 50.0]))
    with pytest.raises(ValueError, match="one entry per subject"):
        per_site_mae(true, true, ["a", "b"])


def test_age_bias_needs_two_different_true_ages():
    with pytest.raises(ValueError, match="two different true ages"):
        fit_age_bias([30.0, 31.0, 32.0], [40.0, 40.0, 40.0])


def test_age_bias_refuses_non_finite_ages_and_a_bias_that_is_not_a_line():
    with pytest.raises(ValueError, match="needs finite ages: predicted or true ages hold NaN or infinite values"):
        fit_age_bias([np.nan, 40.0, 3.0], [31.0, 32.0, 33.0])
    with pytest.raises(ValueError, match=r"bias must be \(slope, intercept\), as fit_age_bias returns, got \(1.0,\)"):
        corrected_gap([30.0, 40.0], [31.0, 42.0], (1.0,))
    for bias in (0.5, None, {"slope": 0.1, "intercept": 2.0}):
        with pytest.raises(ValueError, match=r"bias must be \(slope, intercept\)"):
            corrected_gap([30.0, 40.0], [31.0, 42.0], bias)
    np.testing.assert_allclose(corrected_gap([30.0, 40.0], [31.0, 42.0], np.array([0.5, 1.0])), [-17.5, -24.0])


def test_metrics_of_read_only_columns_give_no_warning():
    predicted, true = np.array([21.0, 33.0, 39.0]), np.array([20.0, 30.0, 40.0])
    predicted.flags.writeable = true.flags.writeable = False  # as pandas' columns are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert regression_metrics(predicted, true)["mae"] == pytest.approx(5 / 3)


def test_spearman_is_exact_and_undefined_for_constant_predictions():
    true = np.array([20.0, 30.0, 40.0, 50.0, 60.0])
    assert regression_metrics(true + 1, true)["spearman"] == pytest.approx(
        1.0, abs=1e-12
    )  # torchmetrics' spearman_corrcoef: 0.9999995
    assert regression_metrics([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])["spearman"] == pytest.approx(1.0, abs=1e-12)
    assert regression_metrics(-true, true)["spearman"] == pytest.approx(-1.0, abs=1e-12)
    tied = np.array([20.0, 20.0, 40.0, 41.0, 60.0])
    assert regression_metrics(tied, true)["spearman"] == pytest.approx(scipy.stats.spearmanr(tied, true)[0], abs=1e-12)
    # A constant predictor (the mean age for everyone): both correlations are undefined (NaN, not 0), silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        constant = regression_metrics(np.full(5, 40.0), true)
    assert np.isnan(constant["pearson"]) and np.isnan(constant["spearman"])
    assert constant["mae"] == pytest.approx(12.0)


def test_gap_correlations_of_a_constant_gap_are_undefined_without_a_warning():
    true = np.array([20.0, 30.0, 40.0, 50.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaps = gap_metrics(true + 3.0, true, fit_age_bias(true + 3.0, true))
    assert np.isnan(gaps["gap_age_correlation"]) and np.isnan(gaps["corrected_gap_age_correlation"])
    assert gaps["corrected_mae"] == pytest.approx(0.0, abs=1e-9)


def test_correlations_of_two_subjects_are_undefined_as_they_are_plus_or_minus_one_whatever_the_model():
    """A test fold of 2 subjects (10 subjects, 5 folds): a correlation would read +-1 for any model."""
    true, predicted = np.array([30.0, 60.0]), np.array([61.0, 20.0])
    metrics = regression_metrics(predicted, true)
    assert np.isnan(metrics["pearson"]) and np.isnan(metrics["spearman"])
    assert metrics["mae"] == pytest.approx(np.abs(predicted - true).mean())
    gaps = gap_metrics(predicted, true, (0.1, -2.0))
    assert np.isnan(gaps["gap_age_correlation"]) and np.isnan(gaps["corrected_gap_age_correlation"])
    three = regression_metrics(np.array([61.0, 20.0, 50.0]), np.array([30.0, 60.0, 45.0]))
    assert three["spearman"] == pytest.approx(scipy.stats.spearmanr([61, 20, 50], [30, 60, 45])[0])
    assert three["pearson"] == pytest.approx(scipy.stats.pearsonr([61, 20, 50], [30, 60, 45])[0])


def test_within_site_spearman_leaves_out_the_subjects_without_a_site():
    from sodeep.brainage.cv_report import within_named_site_spearman
    from sodeep.brainage.tables import NO_SITE

    generator = np.random.default_rng(0)
    true = generator.uniform(20, 80, 30)
    predicted = true + generator.normal(0, 15, 30)
    sites = np.array(["a"] * 8 + ["b"] * 12 + [NO_SITE] * 10)
    expected = sum(
        count * scipy.stats.spearmanr(predicted[rows], true[rows]).statistic
        for count, rows in ((8, slice(0, 8)), (12, slice(8, 20)))
    ) / (8 + 12)
    assert within_named_site_spearman(predicted, true, sites) == pytest.approx(expected)
    assert np.isnan(within_named_site_spearman(predicted, true, [NO_SITE] * 30))
