"""Brain-age estimation, an application of sodeep's rank losses: loss presets, tables of regional
features (with a bundled FreeSurfer table), synthetic MRI and NIfTI volumes, MLP and SFCN
regressors, metrics, cross-validation and the ``sodeep brainage`` commands (as Python functions
in :mod:`sodeep.brainage.commands`), and the prediction of new subjects with the models of a
tabular run (:func:`predict_new_subjects`) or a nifti run (:func:`predict_new_scans`).

Importing it loads torch, numpy and the core library only; Lightning, nibabel, nilearn,
matplotlib, SciPy, scikit-learn and W&B are imported when training, reading volumes or plotting starts.
"""

from sodeep.brainage.commands import run_nifti, run_synthetic, run_tabular
from sodeep.brainage.config import NiftiConfig, SyntheticConfig, TabularConfig, TrainingConfig, load_config
from sodeep.brainage.datasets import BUNDLED_DATASETS, bundled_table_path
from sodeep.brainage.folds import stratified_folds
from sodeep.brainage.losses import BRAIN_AGE_PRESETS, BrainAgeLoss, BrainAgeLossPreset
from sodeep.brainage.metrics import corrected_gap, fit_age_bias, gap_metrics, per_site_mae, regression_metrics
from sodeep.brainage.models import SFCN, AgeMLP, CascadeAgeNet
from sodeep.brainage.prediction import predict_new_subjects
from sodeep.brainage.scan_prediction import predict_new_scans
from sodeep.brainage.tables import AgeTable, Standardizer, read_age_table

__all__ = [
    "BRAIN_AGE_PRESETS",
    "BUNDLED_DATASETS",
    "SFCN",
    "AgeMLP",
    "AgeTable",
    "BrainAgeLoss",
    "BrainAgeLossPreset",
    "CascadeAgeNet",
    "NiftiConfig",
    "Standardizer",
    "SyntheticConfig",
    "TabularConfig",
    "TrainingConfig",
    "bundled_table_path",
    "corrected_gap",
    "fit_age_bias",
    "gap_metrics",
    "load_config",
    "per_site_mae",
    "predict_new_scans",
    "predict_new_subjects",
    "read_age_table",
    "regression_metrics",
    "run_nifti",
    "run_synthetic",
    "run_tabular",
    "stratified_folds",
]
