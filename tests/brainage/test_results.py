import json

import pytest

from sodeep.brainage.losses import check_batch_size
from sodeep.brainage.results import add_run, read_results


def test_a_run_trained_again_replaces_its_record(tmp_path):
    results = read_results(tmp_path / "results.json", {"folds": 2})
    add_run(results, "presets", "l1", {"seed": 0, "fold": 0, "mae": 5.0})
    add_run(results, "presets", "l1", {"seed": 0, "fold": 0, "mae": 4.0})
    assert results["presets"]["l1"]["runs"] == [{"seed": 0, "fold": 0, "mae": 4.0}]


def test_settings_are_compared_as_json_reads_them(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"settings": {"grid": [4, 4], "presets": ["l1"], "seeds": [0]}, "presets": {}}))
    assert read_results(path, {"grid": (4, 4)})["settings"]["seeds"] == [0]  # the growing lists are not compared
    with pytest.raises(ValueError, match=r"holds runs of other settings \(grid: \[4, 4\] -> \[8, 8\]\)"):
        read_results(path, {"grid": (8, 8)})


def test_feature_columns_are_compared_where_the_results_record_them(tmp_path):
    path = tmp_path / "results.json"
    held = {"features": 2, "presets": ["l1"], "seeds": [0]}
    path.write_text(json.dumps({"settings": held, "presets": {}}))
    # Recorded from the resume on, as a folder that began with them records them.
    assert read_results(path, {"features": 2, "feature_names": ["a", "b"]})["settings"] == {
        **held,
        "feature_names": ["a", "b"],
    }
    with pytest.raises(ValueError, match=r"holds runs of other settings \(feature count: 2 -> 3\)"):
        read_results(path, {"features": 3, "feature_names": ["a", "b", "c"]})
    path.write_text(json.dumps({"settings": {**held, "feature_names": ["a", "b"]}, "presets": {}}))
    read_results(path, {"features": 2, "feature_names": ["a", "b"]})
    with pytest.raises(
        ValueError, match=r'holds runs of other settings \(feature_names: \["a", "b"\] -> \["a", "c"\]\)'
    ):
        read_results(path, {"features": 2, "feature_names": ["a", "c"]})


def test_a_batch_larger_than_the_sorter_ranks_is_refused_for_rank_presets_only():
    check_batch_size(["l1", "mse"], 20000)
    with pytest.raises(ValueError, match=r"batch_size must be <= 16384 with presets \['cheng2021'\]"):
        check_batch_size(["l1", "cheng2021"], 16385)


def test_a_setting_one_side_does_not_record_is_said_so(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"settings": {"folds": 2, "presets": [], "seeds": []}, "presets": {}}))
    with pytest.raises(
        ValueError,
        match=r'other settings \(folds: 2 -> not recorded, split: not recorded -> "site"\)',
    ):
        read_results(path, {"split": "site"})
