"""Brain-age estimation: tables of regional features, regressors, metrics and cross-validation."""

from sodeep.brainage.metrics import corrected_gap, fit_age_bias, gap_metrics, per_site_mae, regression_metrics
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.tables import AgeTable, Standardizer, read_age_table, stratified_folds

__all__ = [
    "AgeMLP",
    "AgeTable",
    "Standardizer",
    "corrected_gap",
    "fit_age_bias",
    "gap_metrics",
    "per_site_mae",
    "read_age_table",
    "regression_metrics",
    "stratified_folds",
]
