import json

import numpy as np
import pytest

import sodeep.brainage.cross_validation as cross_validation
from sodeep.brainage.config import TrainingConfig
from sodeep.brainage.cross_validation import cross_validate_table
from sodeep.brainage.tables import AgeTable, Standardizer
from sodeep.cli import main

TINY = TrainingConfig(hidden=(8,), batch_size=16, max_epochs=3, patience=2)


def tiny_table(subjects: int = 60, seed: int = 0) -> AgeTable:
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, subjects).astype(np.float32)
    thickness = 3.0 - 0.01 * ages[:, None] + rng.normal(0, 0.05, (subjects, 4))
    # Column 0 is the row index: it tells which rows a scaler was fitted on.
    features = np.column_stack([np.arange(subjects), thickness]).astype(np.float32)
    return AgeTable(
        features=features,
        ages=ages,
        feature_names=["row", "a", "b", "c", "d"],
        subject_ids=[str(i) for i in range(subjects)],
        sites=["A" if i % 2 else "B" for i in range(subjects)],
        skipped=[],
    )


def test_scaler_never_sees_test_or_validation_rows(tmp_path, monkeypatch):
    fitted: list[set[int]] = []

    class SpyStandardizer(Standardizer):
        def fit(self, features):
            fitted.append({int(row) for row in features[:, 0]})
            return super().fit(features)

    monkeypatch.setattr(cross_validation, "Standardizer", SpyStandardizer)
    table = tiny_table()
    results = cross_validate_table(table, ["l1"], out=tmp_path, folds=3, seeds=[0], config=TINY, progress=False)
    runs = results["presets"]["l1"]["runs"]
    assert len(runs) == len(fitted) == 3
    for run, rows in zip(runs, fitted):
        assert rows.isdisjoint(run["test_rows"])
        assert len(rows) < len(table) - len(run["test_rows"])  # the inner validation rows are left out too
    # Test folds partition the subjects.
    assert sorted(row for run in runs for row in run["test_rows"]) == list(range(len(table)))


def test_interrupted_cross_validation_resumes_the_missing_runs(tmp_path):
    table = tiny_table()
    first = cross_validate_table(
        table, ["l1", "l1+spearman"], out=tmp_path, folds=2, seeds=[0], config=TINY, progress=False
    )
    path = tmp_path / "results.json"
    saved = json.loads(path.read_text())
    dropped = saved["presets"]["l1+spearman"]["runs"].pop()
    path.write_text(json.dumps(saved))
    retrained = []
    again = cross_validate_table(
        table,
        ["l1", "l1+spearman"],
        out=tmp_path,
        folds=2,
        seeds=[0],
        config=TINY,
        progress=False,
        on_run=lambda name, run: retrained.append((name, run["seed"], run["fold"])),
    )
    assert retrained == [("l1+spearman", dropped["seed"], dropped["fold"])]
    assert again["presets"]["l1"]["runs"] == first["presets"]["l1"]["runs"]
    assert again["presets"]["l1+spearman"]["runs"][-1]["mae"] == pytest.approx(dropped["mae"])  # deterministic


def test_results_grow_and_a_call_with_other_settings_is_refused_keeping_them(tmp_path):
    table = tiny_table()
    first = cross_validate_table(table, ["l1"], out=tmp_path, folds=2, seeds=[0], config=TINY, progress=False)
    both = cross_validate_table(table, ["mse"], out=tmp_path, folds=2, seeds=[0], config=TINY, progress=False)
    assert list(both["presets"]) == ["l1", "mse"] and both["presets"]["l1"]["runs"] == first["presets"]["l1"]["runs"]
    assert both["settings"]["presets"] == ["l1", "mse"] and both["comparisons"]["mse"]["pairs"] == 2
    before = (tmp_path / "results.json").read_text()
    # Other settings must not drop the finished runs from results.json: they are refused.
    with pytest.raises(
        ValueError,
        match=r"results.json holds runs of other settings \(folds: 2 -> 3\); resume with those settings and files, choose "
        r"another folder for out=, or run with overwrite=True instead of resume=True",
    ):
        cross_validate_table(table, ["l1"], out=tmp_path, folds=3, seeds=[0], config=TINY, progress=False)
    assert (tmp_path / "results.json").read_text() == before


def test_cli_smoke_on_a_tiny_csv(tmp_path, capsys, recwarn):
    table = tiny_table(50)
    csv_path = tmp_path / "tiny.csv"
    header = "sub_id,age,sex,site," + ",".join(f"lh_{name}" for name in "abcd")
    lines = [header] + [
        f"s{i},{table.ages[i]},{i % 2},{table.sites[i]}," + ",".join(f"{v}" for v in table.features[i, 1:])
        for i in range(len(table))
    ]
    lines.insert(3, "broken,not-a-number,0,A,1,2,3,4")
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            "brainage",
            "tabular",
            "--csv",
            str(csv_path),
            "--losses",
            "l1",
            "cheng2021",
            "--folds",
            "2",
            "--seeds",
            "0",
            "--max-epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    assert code == 0
    # Skipped rows: one plain line on stderr (not a Python warning) and a record in results.json.
    error_lines = capsys.readouterr().err.splitlines()
    assert f"{csv_path}: skipped 1 of 51 rows (line 4: age 'not-a-number' is not a number)" in error_lines
    assert not recwarn.list
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["skipped_rows"] == [{"line": 4, "reason": "age 'not-a-number' is not a number"}]
    for preset in ("l1", "cheng2021"):
        runs = results["presets"][preset]["runs"]
        assert [(r["seed"], r["fold"]) for r in runs] == [(0, 0), (0, 1)]
        assert all(np.isfinite([r["mae"], r["pearson"], r["spearman"]]).all() for r in runs)
        assert (out / "plots" / f"{preset}.png").stat().st_size > 10_000
    assert results["comparisons"]["baseline"] == "l1"
    curve = (out / "curves" / "l1" / "seed0_fold0" / "metrics.csv").read_text().splitlines()
    assert "val/mae" in curve[0] and len(curve) >= 2  # per-epoch curves in CSV
    assert "| cheng2021 |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--losses", "bogus"], "must be known presets, got unknown ones"),
        (["--max-epochs", "0"], "--max-epochs must be >= 1"),  # no epoch: no checkpoint to restore
        (["--patience", "0"], "patience >= 1"),  # Lightning would treat it as 1
        (["--batch-size", "1"], "--batch-size must be >= 2"),
        (["--folds", "1"], "folds >= 2"),
        (["--folds", "61"], "too few for 61 folds"),
    ],
)
def test_cli_refuses_bad_settings_before_any_run(tmp_path, capsys, flags, message):
    table = tiny_table(60)
    csv_path = tmp_path / "tiny.csv"
    lines = ["age,a,b"] + [f"{age},{row[1]},{row[2]}" for age, row in zip(table.ages, table.features)]
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["brainage", "tabular", "--csv", str(csv_path), "--out", str(out), "--wandb", "disabled"]
    with pytest.raises(SystemExit) as stopped:
        main(argv + flags)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("sodeep brainage tabular: error:") and message in error
    assert not (out / "checkpoints").exists()  # nothing trained


def test_training_config_is_checked_when_built():
    for settings in (
        {"learning_rate": 0.0},
        {"learning_rate": float("nan")},
        {"weight_decay": -1.0},
        {"validation_fraction": 1.0},
        {"dropout": 1.0},
        {"ema_decay": 1.0},
    ):
        with pytest.raises(ValueError, match="must be"):
            TrainingConfig(**settings)
