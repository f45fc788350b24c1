import numpy as np
import pytest

from sodeep.brainage.datasets import BUNDLED_DATASETS, bundled_table_path
from sodeep.brainage.tables import read_age_table


def test_bundled_fcon1000_table_reads_whole():
    path = bundled_table_path("fcon1000")
    assert path.name == BUNDLED_DATASETS["fcon1000"] and (path.parent / "README.md").is_file()
    table = read_age_table(path)
    assert len(table) == 1078 and not table.skipped
    assert len(table.feature_names) == 150 and all(name[:3] in ("lh_", "rh_") for name in table.feature_names)
    assert len(set(table.sites)) == 23 and len(set(table.subject_ids)) == 1078
    assert (table.ages.min(), table.ages.max()) == pytest.approx((7.88, 85.0))
    assert np.isfinite(table.features).all() and 0.5 < table.features.mean() < 4.0  # thickness in mm


def test_unknown_dataset_names_the_close_one():
    with pytest.raises(ValueError, match=r"unknown dataset 'fcon100' \(did you mean 'fcon1000'\?\)"):
        bundled_table_path("fcon100")
