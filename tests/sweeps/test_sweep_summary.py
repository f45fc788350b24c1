"""The trial summary: written where the runner says, a no-op outside a sweep, a stable schema."""

import json
import math

import numpy as np
import pytest

from sodeep.sweeps import summary as summary_module
from sodeep.sweeps.summary import SCHEMA, is_finished, read_trial_summary, trial_summary, write_trial_summary


def test_no_op_outside_a_sweep(monkeypatch):
    monkeypatch.delenv(summary_module.SUMMARY_VARIABLE, raising=False)
    assert write_trial_summary({"lr": 0.1}, {"loss": 1.0}) is None


def test_written_where_the_environment_says_with_the_runners_fields(tmp_path, monkeypatch):
    path = tmp_path / "trial" / "summary.json"
    monkeypatch.setenv(summary_module.SUMMARY_VARIABLE, str(path))
    monkeypatch.setenv(summary_module.SWEEP_VARIABLE, "presets")
    monkeypatch.setenv(summary_module.TRIAL_VARIABLE, "0003")
    monkeypatch.setenv(summary_module.PARAMS_VARIABLE, json.dumps({"losses": "l1", "seeds": 1}))
    monkeypatch.setenv(summary_module.STARTED_VARIABLE, "0")
    folds = [{"fold": 0, "seed": 1, "metrics": {"mae": np.float32(4.5)}}]
    assert write_trial_summary({"lr": 0.1}, {"mae": np.float64(4.25), "r2": math.nan}, folds=folds) == path
    written = json.loads(path.read_text())
    assert set(written) == {"schema", "sweep", "trial", "params", "config", "metrics", "folds", "status", "seconds"}
    assert written["schema"] == SCHEMA and (written["sweep"], written["trial"]) == ("presets", "0003")
    assert written["params"] == {"losses": "l1", "seeds": 1} and written["status"] == "finished"
    assert written["metrics"] == {"mae": 4.25, "r2": None} and written["folds"][0]["metrics"] == {"mae": 4.5}
    assert written["seconds"] > 0 and is_finished(path)


def test_bad_input_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="status must be one of"):
        trial_summary({}, {}, status="done", environment={})
    with pytest.raises(ValueError, match=r"folds\[0\] must be a mapping with a metrics mapping"):
        trial_summary({}, {}, folds=[{"fold": 0, "mae": 1.0}], environment={})
    (tmp_path / "other.json").write_text('{"loss": 1}')
    with pytest.raises(ValueError, match="is not a sodeep-trial/1 trial summary"):
        read_trial_summary(tmp_path / "other.json")
    assert not is_finished(tmp_path / "other.json") and not is_finished(tmp_path / "missing.json")


def test_metrics_must_be_numbers_in_written_and_read_summaries(tmp_path):
    import json

    import numpy as np

    from sodeep.sweeps.summary import read_trial_summary, write_trial_summary

    path = tmp_path / "summary.json"
    write_trial_summary({}, {"a": np.float32(0.5), "b": 3, "c": float("nan"), "d": None}, path)
    assert read_trial_summary(path)["metrics"] == {"a": 0.5, "b": 3, "c": None, "d": None}
    for bad in ("abc", True, [1.0]):
        with pytest.raises(ValueError, match="metrics: loss must be a number"):
            write_trial_summary({}, {"loss": bad}, path)
        summary = {"schema": "sodeep-trial/1", "config": {}, "metrics": {"loss": bad}, "status": "finished"}
        path.write_text(json.dumps(summary))
        with pytest.raises(ValueError, match=f"{path}: metrics: loss must be a number"):
            read_trial_summary(path)
    with pytest.raises(ValueError, match=r"folds\[0\] metrics: mae must be a number"):
        write_trial_summary({}, {}, path, folds=[{"fold": 0, "metrics": {"mae": "x"}}])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"params": 5}, "params must be a mapping"),
        ({"folds": [{"fold": 0}]}, r"folds\[0\] metrics must be a mapping"),
        ({"folds": 5}, "folds must be a list of mappings"),
        ({"metrics": {"loss": 10**400}}, "loss is beyond the range of a float"),
        ({"metrics": {"": 1.0}}, "a metric needs a name"),
    ],
)
def test_summaries_the_report_could_not_read_are_refused_when_read(tmp_path, changes, message):
    path = tmp_path / "summary.json"
    summary = {"schema": SCHEMA, "config": {}, "metrics": {"loss": 1.0}, "status": "finished", **changes}
    path.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=message):
        read_trial_summary(path)
    assert not is_finished(path)


def test_a_metric_written_beyond_the_range_of_a_float_is_refused_not_read_as_infinite(tmp_path):
    path = tmp_path / "summary.json"
    text = json.dumps({"schema": SCHEMA, "config": {}, "metrics": {"loss": 1.0}, "status": "finished"})
    path.write_text(text.replace('"loss": 1.0', '"loss": 1e400'))
    with pytest.raises(ValueError, match=f"{path}: 1e400 is beyond the range of a float"):
        read_trial_summary(path)
    assert not is_finished(path)


def test_integers_a_float_holds_are_read_and_larger_ones_refused(tmp_path):
    path = tmp_path / "summary.json"
    for loss, readable in ((2**1023, True), (2**1024 - 2**971, True), (2**1024, False)):
        path.write_text(json.dumps({"schema": SCHEMA, "config": {}, "metrics": {"loss": loss}, "status": "finished"}))
        if readable:
            assert read_trial_summary(path)["metrics"]["loss"] == loss
        else:
            with pytest.raises(ValueError, match="loss is beyond the range of a float"):
                read_trial_summary(path)
