"""``sodeep brainage predict``: a tabular run folder's models on new subjects."""

import contextlib
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from brainage_inputs import write_table

from sodeep.brainage.commands import run_tabular
from sodeep.brainage.config import TabularConfig
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.prediction import predict_new_subjects, read_new_subjects, run_prediction
from sodeep.brainage.splits import fold_rows
from sodeep.brainage.tables import read_age_table
from sodeep.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tabular run of one preset, 2 seeds x 2 folds, and a table of other subjects."""
    folder = tmp_path_factory.mktemp("prediction")
    write_table(folder / "table.csv", subjects=40, seed=0)
    write_table(folder / "new.csv", subjects=12, seed=1)
    # Other subjects, with ids of their own.
    (folder / "new.csv").write_text((folder / "new.csv").read_text().replace("\ns", "\nn"))
    config = TabularConfig(
        csv=str(folder / "table.csv"),
        losses=["l1"],
        folds=2,
        seeds=[0, 1],
        batch_size=8,
        max_epochs=2,
        out=str(folder / "run"),
        wandb="disabled",
    )
    run_tabular(config, progress=False)
    return folder


def _reference_ages(folder, new_features):
    """Each model's predictions built by hand: its fold's z-scoring in float64, its state dict loaded
    into a fresh AgeMLP; their mean and the list of (model predictions, run record)."""
    results = json.loads((folder / "run" / "results.json").read_text())
    table = read_age_table(folder / "table.csv")
    settings = results["settings"]
    models = []
    for run in results["presets"]["l1"]["runs"]:
        rows = fold_rows(
            table.ages,
            table.sites,
            split="stratified",
            folds=2,
            seed=run["seed"],
            fold=run["fold"],
            validation_fraction=settings["config"]["validation_fraction"],
        )
        fitting = table.features[rows.fitting].astype(np.float64)
        std = fitting.std(0)
        z = (new_features - fitting.mean(0)) / np.where(std > 0, std, 1.0)
        state = torch.load(
            folder / "run" / "checkpoints" / "l1" / f"seed{run['seed']}_fold{run['fold']}" / "best.ckpt",
            weights_only=True,
        )["state_dict"]
        model = AgeMLP(2, hidden=settings["config"]["hidden"], dropout=settings["config"]["dropout"])
        model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
        with torch.no_grad():
            models.append((model.eval()(torch.tensor(z, dtype=torch.float32)).double().numpy(), run))
    return np.mean([predicted for predicted, _ in models], axis=0), models


def test_each_preset_predicts_the_mean_of_its_models_on_their_own_fold_scaling(trained):
    predictions = predict_new_subjects(trained / "run", trained / "new.csv")
    new = read_age_table(trained / "new.csv")
    expected, models = _reference_ages(trained, new.features.astype(np.float64))
    assert predictions.models == {"l1": 4}
    assert predictions.subjects.subject_ids == new.subject_ids
    np.testing.assert_allclose(predictions.ages["l1"], expected, atol=1e-4)
    spread = np.std([predicted for predicted, _ in models], axis=0)
    np.testing.assert_allclose(predictions.spread["l1"], spread, atol=1e-4)
    # The gap corrected by each model's own age-bias line, then averaged.
    corrected = np.mean(
        [
            (predicted - new.ages) - (run["age_bias_slope"] * new.ages + run["age_bias_intercept"])
            for predicted, run in models
        ],
        axis=0,
    )
    np.testing.assert_allclose(predictions.corrected_gaps["l1"], corrected, atol=1e-3)
    assert len({round(float(value), 3) for value in expected}) == len(expected)  # the models tell subjects apart


def test_column_order_other_columns_and_row_order_do_not_change_a_subjects_age(trained, tmp_path):
    lines = (trained / "new.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    order = [4, 0, 3, 2]  # rh_a, sub_id, lh_a, site: no age column
    shuffled = [",".join([*(header[i] for i in order), "scanner"])]
    shuffled += [",".join([*(row[i] for i in order), "x"]) for row in reversed(rows)]
    (tmp_path / "shuffled.csv").write_text("\n".join(shuffled) + "\n")
    plain = predict_new_subjects(trained / "run", trained / "new.csv")
    moved = predict_new_subjects(trained / "run", tmp_path / "shuffled.csv")
    assert moved.subjects.ages is None and moved.subjects.subject_ids == plain.subjects.subject_ids[::-1]
    np.testing.assert_array_equal(moved.ages["l1"], plain.ages["l1"][::-1])
    assert moved.to_csv().splitlines()[0] == "preset,subject,predicted_age,predicted_age_sd,models"


def test_rows_without_a_feature_are_skipped_and_unknown_ages_leave_the_gap_empty(trained, tmp_path):
    lines = (trained / "new.csv").read_text().splitlines()
    cells = [line.split(",") for line in lines]
    cells[2][3] = "NA"  # line 3: lh_a missing
    cells[4][1] = ""  # line 5: age unknown
    cells[5][0] = ""  # line 6: no id
    (tmp_path / "gaps.csv").write_text("\n".join(",".join(row) for row in cells) + "\n")
    predictions = predict_new_subjects(trained / "run", tmp_path / "gaps.csv")
    assert predictions.subjects.skipped == [(3, "feature 'lh_a' is missing ('NA')")]
    assert len(predictions.subjects.subject_ids) == 11 and "line 6" in predictions.subjects.subject_ids
    table = predictions.to_csv().splitlines()
    assert table[0] == "preset,subject,predicted_age,predicted_age_sd,models,age,gap,corrected_gap"
    unknown = next(line for line in table if line.startswith(f"l1,{cells[4][0]},"))
    assert unknown.endswith(",4,,,")
    known = next(line for line in table if line.startswith(f"l1,{cells[1][0]},")).split(",")
    assert float(known[6]) == pytest.approx(float(known[2]) - float(cells[1][1]), abs=1e-4)


def test_ages_that_look_like_months_are_noted(trained, tmp_path):
    table = tmp_path / "months.csv"
    lines = (trained / "new.csv").read_text().splitlines()
    head = lines[0].split(",")
    first = lines[1].split(",")
    first[head.index("age")] = "540"
    table.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")
    notes = predict_new_subjects(trained / "run", table).notes
    assert any("months.csv: 1 age is above 130 years (largest 540)" in note for note in notes)


def test_a_table_without_the_models_features_is_refused_naming_them(trained, tmp_path):
    text = (trained / "new.csv").read_text().replace("lh_a", "lh-a")
    (tmp_path / "renamed.csv").write_text(text)
    with pytest.raises(
        ValueError,
        match=r"lacks 1 of the 2 feature columns the models read: 'lh_a' \(is 'lh-a' that column renamed\?\)",
    ):
        read_new_subjects(tmp_path / "renamed.csv", ["lh_a", "rh_a"])
    (tmp_path / "empty.csv").write_text("sub_id,lh_a,rh_a\ns1,NA,2.5\n")
    with pytest.raises(ValueError, match=r"skipped 1 of 1 rows \(line 2: feature 'lh_a' is missing \('NA'\)\): no row"):
        read_new_subjects(tmp_path / "empty.csv", ["lh_a", "rh_a"])
    (tmp_path / "header.csv").write_text("sub_id,lh_a,rh_a\n")
    with pytest.raises(ValueError, match="header.csv: the table has a header but no rows"):
        read_new_subjects(tmp_path / "header.csv", ["lh_a", "rh_a"])
    (tmp_path / "upper.csv").write_text("SUB_ID,LH_A,RH_A\ns1,2.5,2.5\n")
    with pytest.raises(ValueError, match=r"lacks 2 of the 2 .*\(the table names them in another case, e.g. 'LH_A'"):
        read_new_subjects(tmp_path / "upper.csv", ["lh_a", "rh_a"])


def test_a_changed_training_table_or_checkpoint_is_refused(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    predict_new_subjects(copy / "run", copy / "new.csv")  # the copy, as it was, predicts
    checkpoint = copy / "run" / "checkpoints" / "l1" / "seed1_fold0" / "best.ckpt"
    payload = torch.load(checkpoint, weights_only=True)
    bias = next(key for key in payload["state_dict"] if key.endswith(".bias"))
    payload["state_dict"][bias] = payload["state_dict"][bias] + 1.0
    torch.save(payload, checkpoint)
    with pytest.raises(ValueError, match="seed1_fold0/best.ckpt does not reproduce the test predictions"):
        predict_new_subjects(copy / "run", copy / "new.csv")
    with (copy / "table.csv").open("a") as table:
        table.write("s99,50.00,A,2.5000,2.5000\n")
    with pytest.raises(ValueError, match="training table .*table.csv has changed since the run"):
        predict_new_subjects(copy / "run", copy / "new.csv")
    (copy / "table.csv").unlink()
    with pytest.raises(ValueError, match="training table .*table.csv is missing"):
        predict_new_subjects(copy / "run", copy / "new.csv")


def test_folders_of_other_commands_or_without_finished_runs_are_refused(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="no run folder"):
        predict_new_subjects(tmp_path / "nowhere", trained / "new.csv")
    with pytest.raises(ValueError, match="holds no run.json"):
        predict_new_subjects(tmp_path, trained / "new.csv")
    (tmp_path / "run.json").write_text(json.dumps({"command": "brainage synthetic", "config": {}}))
    with pytest.raises(
        ValueError, match="holds a brainage synthetic run; predicting new subjects reads brainage tabular"
    ):
        predict_new_subjects(tmp_path, trained / "new.csv")
    (tmp_path / "run.json").write_text(json.dumps({"command": "brainage tabular", "config": {}}))
    with pytest.raises(ValueError, match="holds no results.json: no training run of it has finished; finish its"):
        predict_new_subjects(tmp_path, trained / "new.csv")
    (tmp_path / "results.json").write_text('{"settings": {"folds": 2')
    with pytest.raises(ValueError, match=r"results.json is damaged \(not JSON text\): it cannot be predicted with$"):
        predict_new_subjects(tmp_path, trained / "new.csv")
    with pytest.raises(ValueError, match=r"holds no finished run of \['mse'\]; it holds \['l1'\]"):
        predict_new_subjects(trained / "run", trained / "new.csv", presets=["mse"])


def test_the_command_writes_its_table_and_replaces_only_its_own_output(trained, tmp_path, capsys):
    argv = ["brainage", "predict", str(trained / "run"), "--csv", str(trained / "new.csv")]
    assert main(argv) == 0
    printed = capsys.readouterr()
    expected = predict_new_subjects(trained / "run", trained / "new.csv").to_csv()
    assert printed.out == expected
    assert "new.csv: 12 subjects" in printed.err and "l1: mean of 4 models; MAE " in printed.err
    out = tmp_path / "ages.csv"
    assert main([*argv, "--out", str(out)]) == 0 and out.read_text() == expected
    assert main([*argv, "--out", str(out)]) == 0  # its own output is replaced
    capsys.readouterr()
    for out, message in (
        (
            trained / "table.csv",
            "error: --out must be another path: {out} exists and is not a brain-age prediction table",
        ),
        (
            trained / "run" / "ages.csv",
            "error: --out must be a path outside run folders: {out} is inside the run folder",
        ),
        (  # the run's own predictions: named as a run's file, not as a table of another kind
            trained / "run" / "predictions.csv",
            "error: --out must be a path outside run folders: {out} is inside the run folder",
        ),
    ):
        message = message.format(out=out)
        with pytest.raises(SystemExit) as refused:
            main([*argv, "--out", str(out)])
        assert refused.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["brainage", "predict", str(trained / "run"), "--manifest", str(trained / "new.csv")])
    message = "holds a brainage tabular run: its models predict from a table of features (--csv)"
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_a_damaged_checkpoint_is_refused_in_one_line(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    checkpoint = copy / "run" / "checkpoints" / "l1" / "seed0_fold1" / "best.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match="seed0_fold1/best.ckpt is .*; the run folder's model cannot be used$"):
        predict_new_subjects(copy / "run", copy / "new.csv")
    payload = {"state_dict": {"model.network.0.weight": torch.zeros(3, 3)}}
    torch.save(payload, checkpoint)
    with pytest.raises(ValueError, match="does not hold the model this run trained"):
        predict_new_subjects(copy / "run", copy / "new.csv")


def _copy(trained, tmp_path):
    """The trained folder and its tables, copied, with the run pointing at the copied table."""
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    record = json.loads((copy / "run" / "run.json").read_text())
    record["config"]["csv"] = str(copy / "table.csv")
    (copy / "run" / "run.json").write_text(json.dumps(record))
    return copy


def test_an_unfinished_folder_predicts_with_its_finished_runs_and_says_so(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    results = json.loads((copy / "run" / "results.json").read_text())
    runs = results["presets"]["l1"]["runs"]

    def predicted_with(kept, seeds, losses=("l1",)):
        results["presets"]["l1"]["runs"], results["settings"]["seeds"] = kept, seeds
        (copy / "run" / "results.json").write_text(json.dumps(results))
        record = json.loads((copy / "run" / "run.json").read_text())
        record["config"]["losses"] = list(losses)
        (copy / "run" / "run.json").write_text(json.dumps(record))
        return predict_new_subjects(copy / "run", copy / "new.csv", presets="l1")

    one_lost = predicted_with(runs[:3], [0, 1])
    assert one_lost.models == {"l1": 3}
    assert any(note.startswith("l1: 3 of its 4 runs (seeds [0, 1]) finished in ") for note in one_lost.notes)
    # The command that trains the others, in Python's words and the command line's.
    from sodeep.cli import assignments_as_flags, build_parser

    (note,) = [note for note in one_lost.notes if "trains the others" in note]
    assert note.endswith("(the folder's command with resume=True, losses=['l1'] and seeds=[0, 1] trains the others)")
    assert assignments_as_flags(note, build_parser()).endswith(
        "(the folder's command with --resume, --losses l1 and --seeds 0 1 trains the others)"
    )
    # Stopped before its second seed began: results.json knows seed 0 only, run.json both.
    seed_lost = predicted_with([run for run in runs if run["seed"] == 0], [0])
    assert any(note.startswith("l1: 2 of its 4 runs (seeds [0, 1]) finished in ") for note in seed_lost.notes)
    # Grown by a later command for another preset: l1 was only ever asked for seed 0.
    grown = predicted_with([run for run in runs if run["seed"] == 0], [0, 1], losses=("mse",))
    assert grown.models == {"l1": 2} and not any("runs (seeds" in note for note in grown.notes)
    with pytest.raises(ValueError, match="presets is empty"):
        predict_new_subjects(copy / "run", copy / "new.csv", presets=[])


def test_a_folder_that_does_not_record_its_feature_names_predicts_alike(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    results = json.loads((copy / "run" / "results.json").read_text())
    del results["settings"]["feature_names"]
    (copy / "run" / "results.json").write_text(json.dumps(results))
    np.testing.assert_array_equal(
        predict_new_subjects(copy / "run", copy / "new.csv").ages["l1"],
        predict_new_subjects(trained / "run", trained / "new.csv").ages["l1"],
    )


def test_ids_and_ages_are_read_from_the_runs_own_columns(tmp_path, capsys):
    rng = np.random.default_rng(2)
    ages = rng.uniform(20, 80, 24)
    rows = [f"k{i},{age:.2f},{3 - 0.01 * age + rng.normal(0, 0.05):.4f}" for i, age in enumerate(ages)]
    (tmp_path / "own.csv").write_text("\n".join(["scan_code,AGE_yrs,thick", *rows]) + "\n")
    config = TabularConfig(
        csv=str(tmp_path / "own.csv"),
        id_column="scan_code",
        age_column="AGE_yrs",
        losses=["l1"],
        folds=2,
        seeds=[0],
        batch_size=8,
        max_epochs=1,
        out=str(tmp_path / "run"),
        wandb="disabled",
    )
    run_tabular(config, progress=False)
    new = ["scan_code,AGE_yrs,thick", "n1,30,2.7", "n1,40,2.6", "NA,50,2.5", "n3,old,2.4", "n4,60,3e38", "n5,70,1e3"]
    (tmp_path / "new.csv").write_text("\n".join(new) + "\n")
    predictions = predict_new_subjects(tmp_path / "run", tmp_path / "new.csv")
    subjects = predictions.subjects
    assert subjects.subject_ids == ["n1 (line 2)", "n1 (line 3)", "line 4", "n3", "n5"]
    np.testing.assert_array_equal(subjects.ages[[0, 1, 2, 4]], [30, 40, 50, 70])
    assert np.isnan(subjects.ages[3])
    assert subjects.skipped == [
        (6, "a model gives no finite age ('thick' = 3e+38, " + subjects.skipped[0][1].split(", ")[1])
    ]
    notes = "\n".join(predictions.notes)
    assert "1 subject id appears on more than one row (e.g. ['n1'])" in notes
    assert "found no usable age on 1 of 5 rows (line 5: age 'old' is not a number)" in notes
    assert (
        "1 subject has a feature more than 10 training SDs from the training mean, or off a value a model's "
        "training subjects all shared (line 7: 'thick' = 1000"
    ) in notes
    assert np.isfinite(predictions.ages["l1"]).all() and np.isnan(predictions.corrected_gaps["l1"][3])
    assert predictions.extrapolated.tolist() == [False, False, False, False, True]
    run_prediction(tmp_path / "run", tmp_path / "new.csv")
    mae = float(np.abs(predictions.ages["l1"][:3] - [30, 40, 50]).mean())
    assert (
        f"l1: mean of 2 models; MAE {mae:.3f} years against the table's ages (3 subjects; 1 far from the training range left out)"
        in capsys.readouterr().err
    )
    # A table without the run's columns: ids by line, no ages, each said in a note.
    (tmp_path / "bare.csv").write_text("thick,age_years\n2.7,30\n")
    bare = predict_new_subjects(tmp_path / "run", tmp_path / "bare.csv")
    assert bare.subjects.subject_ids == ["line 2"] and bare.subjects.ages is None
    assert "no age column 'AGE_yrs' (the run's) (did you mean 'age_years'?); predicting without ages" in "\n".join(
        bare.notes
    )
    assert "no id column 'scan_code' (the run's); subjects are named by their CSV lines (id_column= names one)" in (
        "\n".join(bare.notes)
    )
    assert predict_new_subjects(tmp_path / "run", tmp_path / "bare.csv", age_column="age_years").subjects.ages == [30]
    with pytest.raises(ValueError, match=r"bare.csv: no age column 'agee' \(did you mean 'age_years'\?\)"):
        predict_new_subjects(tmp_path / "run", tmp_path / "bare.csv", age_column="agee")


def test_another_value_of_a_feature_constant_in_training_is_an_extrapolation(tmp_path):
    """A feature every training subject shared (z-scored with an SD of 1): any other value is named
    as far from the training range, however close."""
    rng = np.random.default_rng(3)
    ages = rng.uniform(20, 80, 24)
    rows = [f"{age:.2f},{3 - 0.01 * age + rng.normal(0, 0.05):.4f},1.0" for age in ages]
    (tmp_path / "flat.csv").write_text("\n".join(["age,thick,flat", *rows]) + "\n")
    config = TabularConfig(
        csv=str(tmp_path / "flat.csv"), losses=["l1"], folds=2, seeds=[0], batch_size=8, max_epochs=1,
        out=str(tmp_path / "run"), wandb="disabled",
    )  # fmt: skip
    run_tabular(config, progress=False)
    (tmp_path / "new.csv").write_text("age,thick,flat\n40,2.6,1.0\n45,2.6,1.000001\n50,2.5,1.0001\n")
    predictions = predict_new_subjects(tmp_path / "run", tmp_path / "new.csv")
    assert predictions.extrapolated.tolist() == [False, False, True]  # 1.000001: 1 as a CSV rounds it
    assert "(line 4: 'flat' = 1.0001, where every training subject of a model had 1)" in "\n".join(predictions.notes)
    # Constant at another value in each fold's fitting rows: a note names the value of the model it is off.
    from sodeep.brainage.splits import fold_rows

    flat = np.full(24, 5.0)
    for fold, value in ((0, 7.0), (1, 2.0)):
        rows = fold_rows(ages, ["s"] * 24, split="stratified", folds=2, seed=0, fold=fold, validation_fraction=0.1)
        flat[rows.fitting] = value
    lines = [f"{age:.2f},{3 - 0.01 * age:.4f},{value}" for age, value in zip(ages, flat)]
    (tmp_path / "two.csv").write_text("\n".join(["age,thick,flat", *lines]) + "\n")
    config.csv, config.out = str(tmp_path / "two.csv"), str(tmp_path / "two")
    run_tabular(config, progress=False)
    (tmp_path / "seven.csv").write_text("age,thick,flat\n40,2.6,7.0\n50,2.5,2.0\n")
    notes = "\n".join(predict_new_subjects(tmp_path / "two", tmp_path / "seven.csv").notes)
    assert "2 subjects have" in notes and "(line 2: 'flat' = 7, where every training subject of a model had 2)" in notes


def test_a_moved_training_table_is_given_by_path_and_checked_by_its_digest(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    shutil.move(copy / "table.csv", copy / "elsewhere.csv")  # run.json names it where it was
    with pytest.raises(ValueError, match="table.csv is missing: .*training_table= gives where it is now"):
        predict_new_subjects(copy / "run", copy / "new.csv")
    moved = predict_new_subjects(copy / "run", copy / "new.csv", training_table=copy / "elsewhere.csv")
    expected = predict_new_subjects(trained / "run", trained / "new.csv")
    np.testing.assert_array_equal(moved.ages["l1"], expected.ages["l1"])
    with pytest.raises(ValueError, match=r"^training_table: .*new.csv is not the table the run read \(another SHA"):
        predict_new_subjects(copy / "run", copy / "new.csv", training_table=copy / "new.csv")
    with pytest.raises(ValueError, match=r"^training_table: .*gone.csv is missing$"):
        predict_new_subjects(copy / "run", copy / "new.csv", training_table=copy / "gone.csv")
    with pytest.raises(ValueError, match="^training_table: .* is a folder; give the table in it"):
        predict_new_subjects(copy / "run", copy / "new.csv", training_table=copy)


def test_messages_name_python_arguments_and_the_command_line_its_flags(trained, tmp_path, capsys):
    """A Python caller reads the keyword arguments (training_table=, table=, out=); the command
    line, the flags that set them (--training-csv, --csv, --out)."""
    copy = _copy(trained, tmp_path)
    shutil.move(copy / "table.csv", copy / "elsewhere.csv")
    for call, python, typed in (
        ({}, "(training_table= gives where it is now)", "(--training-csv gives where it is now)"),
        ({"training_table": copy / "gone.csv"}, "training_table: ", "error: --training-csv: "),
        ({"manifest": copy / "new.csv"}, "(table=)", "(--csv)"),
        ({"out": copy / "run" / "ages.csv"}, "out must be a path outside", "error: --out must be a path outside"),
    ):
        table = None if "manifest" in call else copy / "new.csv"
        with pytest.raises(ValueError) as refused:
            run_prediction(copy / "run", table, **call)
        assert python in str(refused.value)
        flags = {"training_table": "--training-csv", "manifest": "--manifest", "out": "--out"}
        argv = ["brainage", "predict", str(copy / "run")] + ([] if table is None else ["--csv", str(table)])
        with pytest.raises(SystemExit) as stopped:
            main(argv + [word for name, value in call.items() for word in (flags[name], str(value))])
        assert stopped.value.code == 2 and typed in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"give the folder that a brainage tabular or brainage nifti run wrote$"):
        predict_new_subjects(tmp_path, copy / "new.csv")
    from sodeep.brainage import predict_new_scans

    with pytest.raises(ValueError, match=r"its models predict from a table of features \(predict_new_subjects\)$"):
        predict_new_scans(copy / "run", copy / "new.csv")
    # A note's advice: the argument from Python, the flag on the command line.
    (tmp_path / "no_id.csv").write_text(
        "\n".join(line.split(",", 1)[1] for line in (copy / "new.csv").read_text().splitlines())
    )
    note = "subjects are named by their CSV lines ({} names one)"
    assert note.format("id_column=") in "\n".join(
        predict_new_subjects(copy / "run", tmp_path / "no_id.csv", training_table=copy / "elsewhere.csv").notes
    )
    assert (
        main(
            [
                "brainage",
                "predict",
                str(copy / "run"),
                "--csv",
                str(tmp_path / "no_id.csv"),
                "--training-csv",
                str(copy / "elsewhere.csv"),
            ]
        )
        == 0
    )
    assert note.format("--id-column") in capsys.readouterr().err


def test_a_notebook_with_a_float64_default_trains_and_predicts_and_finds_its_state_again(trained, tmp_path):
    """torch.set_default_dtype(torch.float64) in the caller: the run and the prediction compute in
    float32, as without it (the same ages), and the caller's default dtype, random state and exit
    hooks (W&B's offline run sets its own) are as they were."""
    import sys

    config = TabularConfig(
        csv=str(trained / "table.csv"), losses=["l1"], folds=2, seeds=[0], batch_size=8, max_epochs=2,
        out=str(tmp_path / "run64"), wandb="offline",
    )  # fmt: skip
    expected = predict_new_subjects(trained / "run", trained / "new.csv")
    hooks = sys.exit, sys.excepthook
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(3)
        state = torch.random.get_rng_state()
        results = run_tabular(config, progress=False)
        predicted = predict_new_subjects(trained / "run", trained / "new.csv")
        assert torch.get_default_dtype() == torch.float64 and torch.equal(torch.random.get_rng_state(), state)
    finally:
        torch.set_default_dtype(torch.float32)
    assert (sys.exit, sys.excepthook) == hooks
    assert np.isfinite(results["presets"]["l1"]["summary"]["mae"]["mean"])
    np.testing.assert_array_equal(predicted.ages["l1"], expected.ages["l1"])


def test_training_subjects_are_said_not_to_be_out_of_sample(trained, tmp_path):
    itself = predict_new_subjects(trained / "run", trained / "table.csv")
    assert any(
        "table.csv is the run's training table: the models trained on its subjects, so their ages are not" in note
        for note in itself.notes
    )
    lines = (trained / "table.csv").read_text().splitlines()
    new_rows = (trained / "new.csv").read_text().splitlines()[1:]
    # A training subject, twice (its rows named by their lines), among new ones.
    (tmp_path / "mixed.csv").write_text("\n".join([lines[0], lines[3], lines[3], *new_rows]) + "\n")
    mixed = predict_new_subjects(trained / "run", tmp_path / "mixed.csv")
    shared = lines[3].split(",")[0]
    assert any(
        f"1 subject has an id of the run's training table (e.g. ['{shared}']); if they are the same subjects, the models"
        in note
        for note in mixed.notes
    )
    assert not any(
        "training table" in note for note in predict_new_subjects(trained / "run", trained / "new.csv").notes
    )


@contextlib.contextmanager
def _held_by_another_thread(folder):
    """``folder`` held by a command of another thread, as one of another process would hold it."""
    from sodeep.run_folder import hold_folder, releasing_run_folders

    held, finish = threading.Event(), threading.Event()

    @releasing_run_folders
    def training() -> None:
        hold_folder(folder)
        held.set()
        finish.wait(timeout=60)

    worker = threading.Thread(target=training)
    worker.start()
    assert held.wait(timeout=60)
    try:
        yield
    finally:
        finish.set()
        worker.join(timeout=60)


def test_a_folder_still_training_says_so_and_offers_no_resume(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    results = json.loads((copy / "run" / "results.json").read_text())
    results["presets"]["l1"]["runs"] = results["presets"]["l1"]["runs"][:3]
    (copy / "run" / "results.json").write_text(json.dumps(results))
    with _held_by_another_thread(copy / "run"):
        notes = predict_new_subjects(copy / "run", copy / "new.csv").notes
    assert notes[0].endswith("is in use by a running sodeep command: the ages are from the runs finished so far")
    assert any(note.startswith("l1: 3 of its 4 runs") and "--resume" not in note for note in notes)


def test_a_lock_that_no_command_holds_says_nothing_of_training(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    (copy / "run" / "run.lock").unlink(missing_ok=True)
    (copy / "run" / "run.lock").symlink_to(copy / "table.csv")  # a link: no command's lock
    notes = predict_new_subjects(copy / "run", copy / "new.csv").notes
    assert not any("in use" in note for note in notes)


def test_a_run_replaced_while_its_models_are_read_is_named_as_such(trained, tmp_path, monkeypatch):
    """An overwrite of the folder that starts while predict reads it (a new run record) ends the
    prediction with a line that says so, whether the reading failed or not."""
    import sodeep.brainage.prediction as prediction

    copy = _copy(trained, tmp_path)
    real_predict = prediction.predict_new_subjects

    def replaced_while_reading(fails):
        def predict(folder, *args, **kwargs):
            record = json.loads((copy / "run" / "run.json").read_text())
            (copy / "run" / "run.json").write_text(json.dumps({**record, "run_id": record["run_id"] + "-new"}))
            if fails:
                raise ValueError(f"{folder}/checkpoints/l1/seed0_fold0/best.ckpt is missing")
            return real_predict(folder, *args, **kwargs)

        return predict

    for fails in (True, False):
        monkeypatch.setattr(prediction, "predict_new_subjects", replaced_while_reading(fails))
        with pytest.raises(ValueError) as raised:
            run_prediction(copy / "run", copy / "new.csv", out=tmp_path / "ages.csv")
        assert str(raised.value) == (
            f"the run in {copy / 'run'} was replaced while its models were read (a command that overwrites it is "
            "running); predict once that command has finished"
        )
        assert not (tmp_path / "ages.csv").exists()
    monkeypatch.setattr(prediction, "predict_new_subjects", real_predict)
    run_prediction(copy / "run", copy / "new.csv", out=tmp_path / "ages.csv")  # the same run throughout


def test_a_folder_in_use_with_no_finished_run_yet_says_it_is_training(trained, tmp_path):
    copy = _copy(trained, tmp_path)
    (copy / "run" / "results.json").unlink()
    with _held_by_another_thread(copy / "run"), pytest.raises(ValueError) as raised:
        predict_new_subjects(copy / "run", copy / "new.csv")
    assert str(raised.value) == (
        f"{copy / 'run'} holds no results.json: no training run of it has finished; a running sodeep command is "
        "training it: predict once it has finished a run"
    )


def test_a_missing_feature_is_not_taken_for_its_other_hemispheres_column_renamed(tmp_path):
    from sodeep.brainage.prediction import _check_feature_columns

    with pytest.raises(ValueError) as raised:
        _check_feature_columns(
            tmp_path / "new.csv", ["age", "rh_G_cuneus", "lh_S_calcarine"], ["lh_G_cuneus", "lh_S_calcarine"]
        )
    assert str(raised.value).endswith("feature columns the models read: 'lh_G_cuneus'")
    with pytest.raises(ValueError, match=r"'Left-Hippocampus'$"):
        _check_feature_columns(tmp_path / "new.csv", ["Right-Hippocampus"], ["Left-Hippocampus"])
    with pytest.raises(ValueError, match=r"\(is 'lh_G_cuneus_thick' that column renamed\?\)$"):
        _check_feature_columns(tmp_path / "new.csv", ["rh_G_cuneus", "lh_G_cuneus_thick"], ["lh_G_cuneus"])


def test_a_folder_an_overwrite_is_clearing_predicts_nothing_and_says_why(trained, tmp_path):
    from sodeep.run_folder import CLEARING

    copy = _copy(trained, tmp_path)
    (copy / "run" / CLEARING).touch()  # run.json and the results are still there, part of the models gone
    with pytest.raises(ValueError) as raised:
        predict_new_subjects(copy / "run", copy / "new.csv")
    assert str(raised.value) == (
        f"{copy / 'run'} is being cleared by a command that overwrites it, or holds what is left of a clearing that "
        "was cut short: its results are gone; read it once that command (run again with overwrite=True if it was "
        "cut short) has finished"
    )
    # Nor do the folder's models start another run.
    from sodeep.brainage.finetuning import _run_record

    with pytest.raises(ValueError, match=r"^init_from: .* is being cleared by a command that overwrites it"):
        _run_record(copy / "run", "tabular")
