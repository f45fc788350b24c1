import argparse
import subprocess
import sys
from dataclasses import asdict

import pytest

import sodeep.brainage.commands as commands
from sodeep.brainage.cli import add_brainage_parser
from sodeep.brainage.config import NiftiConfig, SyntheticConfig, TabularConfig


def run_brainage(argv: list[str]) -> int:
    """``sodeep brainage ...`` on a parser built here the way the console script builds its own."""
    parser = argparse.ArgumentParser(prog="sodeep")
    add_brainage_parser(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["brainage", *argv])
    return arguments.handler(arguments)


@pytest.fixture
def built(monkeypatch):
    """The config each command would run, captured instead of training."""
    configs = []
    for name in ("run_tabular", "run_synthetic", "run_nifti"):
        monkeypatch.setattr(commands, name, lambda config, **options: configs.append(config))
    return configs


def test_flags_default_to_the_configs(built):
    run_brainage(["tabular"])
    run_brainage(["synthetic"])
    run_brainage(["nifti", "--manifest", "m.csv"])
    assert built == [TabularConfig(), SyntheticConfig(), NiftiConfig(manifest="m.csv")]


def test_help_shows_defaults_and_presets(capsys):
    with pytest.raises(SystemExit):
        run_brainage(["tabular", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cheng2021 = MSE + 10 Spearman + 10 AgeDiff" in text and "l1+agediff = L1 + 0.1 AgeDiff" in text
    assert "(default: 5)" in text and "(default: l1 l1+spearman l1+agediff cheng2021)" in text
    assert "(default: fcon1000 unless --csv is given)" in text


def test_flags_override_the_yaml_file(tmp_path, built):
    path = tmp_path / "run.yaml"
    path.write_text("folds: 3\nmax_epochs: 7\ncsv: mine.csv\n")
    run_brainage(["tabular", "--config", str(path), "--folds", "4"])
    run_brainage(["tabular", "--config", str(path), "--dataset", "fcon1000"])  # a flag's table replaces the file's
    assert (built[0].folds, built[0].max_epochs, built[0].csv, built[0].dataset) == (4, 7, "mine.csv", None)
    assert (built[1].folds, built[1].csv, built[1].dataset) == (3, None, "fcon1000")


def test_optional_values_can_be_set_and_unset(tmp_path, built):
    path = tmp_path / "run.yaml"
    path.write_text("augment: flip-shift+contrast\nema_decay: 0.99\ncascade: true\nmax_minutes: 5\n")
    run_brainage(["synthetic", "--config", str(path)])
    run_brainage(["synthetic", "--config", str(path), "--augment", "none", "--ema-decay", "none", "--no-cascade"])
    run_brainage(["synthetic", "--augment", "--max-minutes", "none", "--channels", "4", "8"])
    first, unset, alone = built
    assert (first.augment, first.ema_decay, first.cascade, first.max_minutes) == (
        "flip-shift+contrast",
        0.99,
        True,
        5.0,
    )
    assert (unset.augment, unset.ema_decay, unset.cascade) == (None, None, False)
    assert (alone.augment, alone.max_minutes, alone.channels) == ("flip-shift", None, [4, 8])


def test_dataset_flag_reads_the_bundled_table(tmp_path):
    # Too many folds for the table: the command stops after reading it, before any training.
    out = tmp_path / "out"
    argv = ["tabular", "--dataset", "fcon1000", "--folds", "2000", "--out", str(out), "--wandb", "disabled"]
    with pytest.raises(ValueError, match="1078 subjects are too few for 2000 folds, which need 4000"):
        run_brainage(argv)
    assert not out.exists()


def test_a_yaml_file_reproduces_a_run_config(tmp_path, built):
    import yaml

    config = SyntheticConfig(train=8, test=4, losses=["l1"], channels=[4, 8], augment="flip-shift")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(asdict(config)))
    run_brainage(["synthetic", "--config", str(path)])
    assert built == [config]


def test_importing_brain_age_loads_no_training_plotting_or_imaging_package():
    # torch itself imports tqdm (torch.hub), so tqdm is compared with a bare `import torch`.
    code = (
        "import sys, torch; before = set(sys.modules); import sodeep.brainage, sodeep.brainage.cli; "
        "heavy = ('nibabel', 'nilearn', 'matplotlib', 'tqdm', 'wandb', 'lightning', 'yaml'); "
        "print(sorted(m for m in heavy if m in sys.modules and m not in before))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_core_library_never_imports_brain_age():
    code = (
        "import sys, sodeep, sodeep.losses, sodeep.sorters, sodeep.checkpoints, sodeep.synthetic, sodeep.pretraining; "
        "print(sorted(m for m in sys.modules if m.startswith('sodeep.brainage')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_inside_a_sweep_the_tabular_command_leaves_a_trial_summary(tmp_path, monkeypatch):
    import json

    import numpy as np

    from sodeep.cli import main

    generator = np.random.default_rng(0)
    ages = generator.uniform(20, 80, 40)
    features = ages[:, None] * 0.01 + generator.normal(size=(40, 3))
    rows = ["age,f0,f1,f2"] + [f"{a:.2f}," + ",".join(f"{v:.3f}" for v in x) for a, x in zip(ages, features)]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("SODEEP_SWEEP_TRIAL_SUMMARY", str(tmp_path / "summary.json"))
    argv = ["brainage", "tabular", "--csv", str(tmp_path / "table.csv"), "--losses", "l1", "--folds", "2"]
    assert (
        main([*argv, "--seeds", "0", "--max-epochs", "2", "--wandb", "disabled", "--out", str(tmp_path / "out")]) == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["metrics"]["mae"] == results["presets"]["l1"]["summary"]["mae"]["mean"]
    assert sorted((fold["seed"], fold["fold"]) for fold in summary["folds"]) == [(0, 0), (0, 1)]


def test_predictions_csv_names_each_subject_of_every_test_prediction(tmp_path):
    import csv
    import json

    import numpy as np

    from sodeep.cli import main

    generator = np.random.default_rng(1)
    ages = generator.uniform(20, 80, 30)
    lines = ["participant_id,age,f0,f1"]
    for index, age in enumerate(ages):
        shown = "" if index in (3, 7) else f"{age:.2f}"  # two rows skipped: rows and lines no longer agree
        lines.append(f"sub-{index:02d},{shown},{age * 0.01 + generator.normal():.3f},{generator.normal():.3f}")
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["brainage", "tabular", "--csv", str(tmp_path / "table.csv"), "--losses", "l1", "--folds", "2"]
    assert main([*argv, "--seeds", "0", "1", "--max-epochs", "1", "--wandb", "disabled", "--out", str(out)]) == 0
    with open(out / "predictions.csv", newline="") as stream:
        written = list(csv.DictReader(stream))
    results = json.loads((out / "results.json").read_text())
    runs = results["presets"]["l1"]["runs"]
    assert len(written) == sum(len(run["test_rows"]) for run in runs) == 2 * 28
    by_subject = {(row["seed"], row["subject"]): row for row in written}
    assert len(by_subject) == 56 and not {"sub-03", "sub-07"} & {row["subject"] for row in written}
    for row in written:
        index = int(row["subject"].removeprefix("sub-"))
        assert float(row["age"]) == pytest.approx(ages[index], abs=0.006)
    run = runs[0]
    first = next(r for r in written if (int(r["seed"]), int(r["fold"])) == (run["seed"], run["fold"]))
    assert float(first["predicted_age"]) == run["test_predictions"][0]


def test_notes_on_the_data_name_flags_on_the_command_line_and_keyword_arguments_in_python(tmp_path, capsys):
    import numpy as np

    from sodeep.cli import main

    generator = np.random.default_rng(2)
    lines = ["age,f0,f1,notes"]
    for index, age in enumerate(generator.uniform(20, 80, 20)):
        note = "fail" if index in (2, 5) else f"{generator.normal():.3f}"  # a column with text: not a feature
        lines.append(f"{age:.2f},{age * 0.01 + generator.normal():.3f},{generator.normal():.3f},{note}")
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    argv = ["brainage", "tabular", "--csv", str(tmp_path / "table.csv"), "--losses", "l1", "--folds", "2"]
    capsys.readouterr()
    assert main([*argv, "--seeds", "0", "--max-epochs", "1", "--wandb", "disabled", "--out", str(tmp_path / "a")]) == 0
    noted = [line for line in capsys.readouterr().err.splitlines() if "not plain numbers" in line]
    assert len(noted) == 1 and "name them in --features to keep them" in noted[0], noted
    config = TabularConfig(
        csv=str(tmp_path / "table.csv"),
        losses=["l1"],
        folds=2,
        seeds=[0],
        max_epochs=1,
        wandb="disabled",
        out=str(tmp_path / "b"),
    )
    commands.run_tabular(config, progress=False)
    noted = [line for line in capsys.readouterr().err.splitlines() if "not plain numbers" in line]
    assert len(noted) == 1 and "name them in features= to keep them" in noted[0], noted


def test_results_json_is_strict_json_and_predictions_csv_gives_back_the_recorded_metrics(tmp_path):
    import csv
    import json

    import numpy as np

    from sodeep.cli import main

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    generator = np.random.default_rng(3)
    ages = generator.uniform(20, 80, 10)
    lines = ["age,f0,f1"] + [
        f"{age:.2f},{age * 0.01 + generator.normal():.3f},{generator.normal():.3f}" for age in ages
    ]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    # Test folds of 2 subjects: their correlations are undefined (NaN in the runs and the comparisons).
    argv = ["brainage", "tabular", "--csv", str(tmp_path / "table.csv"), "--losses", "l1", "mse", "--folds", "5"]
    argv += ["--max-epochs", "1", "--wandb", "disabled", "--out", str(out)]
    assert main([*argv, "--seeds", "0"]) == 0
    results = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    assert results["presets"]["l1"]["runs"][0]["pearson"] is None
    assert main([*argv, "--seeds", "0", "1", "--resume"]) == 0  # reads the nulls back
    results = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    assert [run["pearson"] for run in results["presets"]["mse"]["runs"]] == [None] * 10
    assert "pearson" not in results["presets"]["mse"]["summary"]  # undefined in every run: no summary
    with open(out / "predictions.csv", newline="") as stream:
        written = list(csv.DictReader(stream))
    for preset in ("l1", "mse"):
        for run in results["presets"][preset]["runs"]:
            rows = [
                r
                for r in written
                if (r["preset"], int(r["seed"]), int(r["fold"])) == (preset, run["seed"], run["fold"])
            ]
            errors = [abs(float(r["predicted_age"]) - float(r["age"])) for r in rows]
            assert len(rows) == 2 and np.mean(errors) == pytest.approx(run["mae"], abs=2e-5)
