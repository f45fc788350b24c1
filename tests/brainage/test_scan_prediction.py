"""``sodeep brainage predict RUN --manifest``: a nifti run folder's models on new scans."""

import json
import shutil

import nibabel
import numpy as np
import pytest
import torch
from brainage_inputs import folder_state, tiny_argv, write_manifest

from sodeep.brainage.models import SFCN
from sodeep.brainage.prediction import predict_new_subjects, run_prediction
from sodeep.brainage.scan_prediction import predict_new_scans
from sodeep.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished nifti run of one preset (seed 0, 2 folds) and a folder of other scans."""
    folder = tmp_path_factory.mktemp("scans")
    write_manifest(folder, subjects=8)
    assert (
        main(["brainage", "nifti", *tiny_argv("nifti", folder), "--out", str(folder / "run"), "--wandb", "disabled"])
        == 0
    )
    new = folder / "new"
    new.mkdir()
    rng = np.random.default_rng(1)
    for index in range(4):  # other scans: the training volumes with noise of their own, and other shapes
        image = nibabel.load(folder / f"s{index}.nii.gz")
        data = np.asarray(image.dataobj, dtype=np.float32)
        data = np.where(data > 0, data + rng.normal(0, 0.1, data.shape).astype(np.float32), 0)
        data = np.pad(data, index % 2)  # a grid one voxel wider on each side: cropped back to the run's
        nibabel.save(nibabel.Nifti1Image(data, image.affine), str(new / f"n{index}.nii"))
    return folder


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _reference_ages(folder, files):
    """Each model loaded by hand into a fresh SFCN (its network from results.json) on the scans
    ``files`` as the run's loader makes them: the mean over models, and the results."""
    from sodeep.brainage.volumes import load_volume

    results = json.loads((folder / "run" / "results.json").read_text())
    extra = results["settings"]["config"]["extra"]
    volumes = torch.stack([torch.from_numpy(load_volume(file, extra["shape"], extra["voxel_size"])) for file in files])
    ages = []
    for run in results["presets"]["l1"]["runs"]:
        state = torch.load(
            folder / "run" / "checkpoints" / "l1" / f"seed{run['seed']}_fold{run['fold']}" / "best.ckpt",
            weights_only=True,
        )["state_dict"]
        model = SFCN(**extra["network"])
        model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
        with torch.no_grad():
            ages.append(model.eval()(volumes[:, None]).double().numpy())
    return np.mean(ages, axis=0), results


def test_each_preset_predicts_the_mean_of_its_models_and_scans_load_as_in_training(trained):
    new = trained / "new"
    manifest = _write(new / "scans.csv", ["path,age"] + [f"n{index}.nii,{30 + index}" for index in range(4)])
    predictions = predict_new_scans(trained / "run", manifest, progress=False)
    expected, _ = _reference_ages(trained, [new / f"n{index}.nii" for index in range(4)])
    np.testing.assert_allclose(predictions.ages["l1"], expected, atol=1e-4)
    assert predictions.models == {"l1": 2} and predictions.subjects.subject_ids == [f"n{i}.nii" for i in range(4)]
    np.testing.assert_allclose(predictions.subjects.ages, [30, 31, 32, 33])
    # The run's own scans, as the reference loads them, give each model's recorded test predictions.
    files = [trained / f"s{index}.nii.gz" for index in range(8)]
    _, results = _reference_ages(trained, files)
    for run in results["presets"]["l1"]["runs"]:
        state = torch.load(
            trained / "run" / "checkpoints" / "l1" / f"seed0_fold{run['fold']}" / "best.ckpt", weights_only=True
        )["state_dict"]
        model = SFCN(**results["settings"]["config"]["extra"]["network"])
        model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
        from sodeep.brainage.volumes import load_volume

        extra = results["settings"]["config"]["extra"]
        tested = torch.stack(
            [torch.from_numpy(load_volume(files[row], extra["shape"], 4.0)) for row in run["test_rows"]]
        )
        with torch.no_grad():
            np.testing.assert_allclose(model.eval()(tested[:, None]).numpy(), run["test_predictions"], atol=1e-3)


def test_ids_ages_and_unreadable_scans(trained):
    new = trained / "new"
    (new / "broken.nii.gz").write_bytes(b"not a volume")
    manifest = _write(
        new / "mixed.csv",
        [
            "participant_id,Path,age,notes",
            f"p3,{new / 'n3.nii'},,absolute path",
            "p1,n1.nii,41.5,",
            "p9,missing.nii,50,",
            "p0,broken.nii.gz,50,",
            "p1,n0.nii,unknown,",
        ],
    )
    predictions = predict_new_scans(trained / "run", manifest, progress=False)
    subjects = predictions.subjects
    assert subjects.subject_ids == ["p3", "p1 (line 3)", "p1 (line 6)"]
    assert [line for line, _ in subjects.skipped] == [4, 5]
    assert "no file at" in subjects.skipped[0][1] and "cannot read" in subjects.skipped[1][1]
    assert np.isnan(subjects.ages[0]) and subjects.ages[1] == 41.5 and np.isnan(subjects.ages[2])
    assert any("appears on more than one row" in note for note in predictions.notes)
    assert any("found no usable age on 2 of 3" in note for note in predictions.notes)
    expected, _ = _reference_ages(trained, [new / "n3.nii", new / "n1.nii", new / "n0.nii"])
    np.testing.assert_allclose(predictions.ages["l1"], expected, atol=1e-4)
    text = predictions.to_csv().splitlines()
    assert text[0] == "preset,subject,predicted_age,predicted_age_sd,models,age,gap,corrected_gap"
    assert text[1].startswith("l1,p3,") and text[1].endswith(",2,,,")
    without_ages = _write(new / "plain.csv", ["path", "n2.nii"])
    predicted = predict_new_scans(trained / "run", without_ages, progress=False)
    assert predicted.subjects.ages is None and predicted.subjects.subject_ids == ["n2.nii"]
    with pytest.raises(ValueError, match=r"no age column 'years'"):
        predict_new_scans(trained / "run", without_ages, age_column="years", progress=False)
    with pytest.raises(ValueError, match=r"needs a 'path' column \(did you mean 'paths'\?\)"):
        predict_new_scans(trained / "run", _write(new / "bad.csv", ["paths,age", "n2.nii,30"]), progress=False)
    with pytest.raises(
        ValueError, match=r"skipped 1 of 1 rows \(line 2: no file at .*gone.nii\): no scan could be read$"
    ):
        predict_new_scans(trained / "run", _write(new / "none.csv", ["path", "gone.nii"]), progress=False)


def test_scans_are_read_and_predicted_a_few_at_a_time(trained, monkeypatch):
    """Memory holds a chunk of volumes, not the manifest's: each chunk is predicted before the
    next is read, a scan that cannot be read leaves its chunk short of nothing else, and the
    ages do not depend on the chunk's size."""
    import sodeep.brainage.scan_prediction as scan_prediction
    import sodeep.brainage.volumes as volumes
    from sodeep.brainage.scan_prediction import read_new_scans

    new = trained / "new"
    (new / "corrupt.nii").write_bytes(b"not a volume")
    listed = [f"n{index % 4}.nii" for index in range(5)]
    manifest = _write(new / "chunks.csv", ["path", *listed[:2], "corrupt.nii", *listed[2:]])
    events = []
    original = volumes.load_volume
    monkeypatch.setattr(volumes, "load_volume", lambda *args: events.append("read") or original(*args))

    def predict(scans):
        events.append(len(scans))
        return np.stack([scans.abs().sum((1, 2, 3, 4)).numpy(), (scans**3).sum((1, 2, 3, 4)).numpy()])

    grid = json.loads((trained / "run" / "results.json").read_text())["settings"]["config"]["extra"]
    shape, voxel_size = grid["shape"], grid["voxel_size"]
    subjects, paths, values = read_new_scans(
        manifest, shape=shape, voxel_size=voxel_size, predict=predict, scans_at_a_time=2, progress=False
    )
    assert events == ["read", "read", 2, "read", "read", "read", 2, "read", 1]
    assert [line for line, _ in subjects.skipped] == [4] and subjects.lines == [2, 3, 5, 6, 7]
    assert paths == [new / name for name in listed] and subjects.features.shape == (5, 0)
    reference = np.stack([original(path, shape, voxel_size) for path in paths])
    np.testing.assert_allclose(values, [np.abs(reference).sum((1, 2, 3)), (reference**3).sum((1, 2, 3))], rtol=1e-4)
    for wrong in (0, "3", 2.0):
        with pytest.raises(ValueError, match=f"scans_at_a_time must be an integer >= 1, got {wrong!r}"):
            read_new_scans(manifest, shape=shape, voxel_size=voxel_size, predict=predict, scans_at_a_time=wrong)
    with pytest.raises(ValueError, match=r"predict must return \(M, 2\) values for 2 scans, got \(2, 3\)"):
        read_new_scans(
            manifest, shape=shape, voxel_size=voxel_size, predict=lambda scans: np.zeros((2, 3)), scans_at_a_time=2
        )

    whole = predict_new_scans(trained / "run", manifest, progress=False)
    monkeypatch.setattr(scan_prediction, "SCANS_AT_A_TIME", 1)
    checks, check_models = [], scan_prediction._checked_models
    monkeypatch.setattr(scan_prediction, "_checked_models", lambda *args: checks.append(1) or check_models(*args))
    one_by_one = predict_new_scans(trained / "run", manifest, progress=False)
    assert checks == [1]  # the models load and are checked once, not once a chunk
    np.testing.assert_allclose(one_by_one.ages["l1"], whole.ages["l1"], atol=1e-5)
    assert one_by_one.to_csv().count("\n") == whole.to_csv().count("\n") == 6


def test_an_age_column_of_another_name_and_rows_without_ids_are_noted_as_such(trained, tmp_path, capsys):
    new = trained / "new"
    manifest = _write(
        new / "years.csv",
        ["participant_id,image_id,path,age_years", ",i0,n0.nii,40", ",i1,n0.nii,41", "p2,i2,n1.nii,50"],
    )
    predictions = predict_new_scans(trained / "run", manifest, progress=False)
    assert predictions.subjects.ages is None
    assert any(
        "years.csv: no age column 'age' (did you mean 'age_years'?); predicting without ages (age_column= names it)"
        in note
        for note in predictions.notes
    )
    assert not any("subject id" in note for note in predictions.notes)  # the two rows have no id, one path
    assert any(
        "1 scan is listed on more than one row" in note
        and note.endswith("rows of one path are named with their CSV lines")
        for note in predictions.notes
    )
    assert predictions.subjects.subject_ids[:2] == ["n0.nii (line 2)", "n0.nii (line 3)"]
    unnamed = predict_new_scans(
        trained / "run", _write(new / "ids.csv", ["image_id,path", "i0,n0.nii"]), progress=False
    )
    assert not any("no age column" in note for note in unnamed.notes)  # image_id holds no age
    # Every skipped row is named on the command line, past the first few of the summary line.
    broken = [f"gone{index}.nii" for index in range(5)]
    manifest = _write(new / "gaps.csv", ["path", "n0.nii", *broken])
    assert (
        main(
            ["brainage", "predict", str(trained / "run"), "--manifest", str(manifest), "--out", str(tmp_path / "a.csv")]
        )
        == 0
    )
    printed = capsys.readouterr().err
    assert "gaps.csv: skipped 5 of 6 rows (line 3: no file at" in printed and "and 2 more)" in printed
    assert f"\n  line 6: no file at {new / 'gone3.nii'}\n  line 7: no file at {new / 'gone4.nii'}\n" in printed


def test_a_manifest_of_unreadable_scans_is_refused_before_the_models_load(trained, monkeypatch):
    import sodeep.brainage.scan_prediction as scan_prediction

    new = trained / "new"
    (new / "garbled.nii").write_bytes(b"not a volume")
    manifest = _write(new / "unreadable.csv", ["path", "garbled.nii", "absent.nii"])
    loads = []
    monkeypatch.setattr(scan_prediction, "_training_cohort", lambda *args: loads.append(args) or (None, "none"))
    with pytest.raises(ValueError, match=r"skipped 2 of 2 rows \(line 2: cannot read.*; line 3: no file at"):
        predict_new_scans(trained / "run", manifest, progress=False)
    assert not loads


def test_a_changed_checkpoint_is_refused_and_a_missing_cohort_is_said_unchecked(trained, tmp_path):
    run = tmp_path / "run"  # the run folder, copied; its training scans stay where they were
    shutil.copytree(trained / "run", run)
    manifest = _write(tmp_path / "scans.csv", [f"path\n{trained / 'new' / 'n0.nii'}\n{trained / 'new' / 'n1.nii'}"])
    before = folder_state(run)
    checked = predict_new_scans(run, manifest, progress=False)
    assert not any("not checked" in note for note in checked.notes)
    assert folder_state(run) == before  # the run's cache is read, not written
    shutil.rmtree(run / "cache")  # read from the scans instead, still not written
    predict_new_scans(run, manifest, progress=False)
    assert not (run / "cache").exists()
    checkpoint = run / "checkpoints" / "l1" / "seed0_fold1" / "best.ckpt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"]["model.age_offset"] = payload["state_dict"]["model.age_offset"] + 1.0
    torch.save(payload, checkpoint)
    with pytest.raises(ValueError, match="seed0_fold1/best.ckpt does not reproduce the test predictions"):
        predict_new_scans(run, manifest, progress=False)
    # Without the training cohort as the run read it, the check cannot be made, and a note says so.
    shutil.copytree(trained, tmp_path / "moved", ignore=shutil.ignore_patterns("run", "new"))
    for manifest_now, reason in (
        (tmp_path / "gone.csv", "gone.csv is missing"),
        (tmp_path / "moved" / "manifest.csv", "are not the files the run read (path, size or modification time)"),
    ):
        record = json.loads((run / "run.json").read_text())
        record["config"]["manifest"] = str(manifest_now)
        (run / "run.json").write_text(json.dumps(record))
        unchecked = predict_new_scans(run, manifest, progress=False)
        assert any(
            note.endswith(f"{reason}: the models' recorded test predictions were not checked")
            for note in unchecked.notes
        )
        np.testing.assert_allclose(unchecked.ages["l1"], checked.ages["l1"] + 0.5, atol=1e-4)  # 1 of 2 models moved


def test_training_scans_repeated_scans_and_ages_in_months_are_noted(trained, tmp_path):
    """Training scans are named by path also where the cohort is not read (a touched volume);
    a scan listed twice by two relative paths, and an age that looks like months, are noted."""
    import os

    manifest = _write(
        trained / "new" / "notes.csv",
        ["path,age", "n1.nii,40", "./n1.nii,480", f"{trained / 's2.nii.gz'},30", "../s3.nii.gz,41"],
    )
    status = (trained / "s5.nii.gz").stat()
    os.utime(trained / "s5.nii.gz", ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # touched after the run
    try:
        notes = predict_new_scans(trained / "run", manifest, progress=False).notes
    finally:
        os.utime(trained / "s5.nii.gz", ns=(status.st_atime_ns, status.st_mtime_ns))
    assert any(note.endswith("the models' recorded test predictions were not checked") for note in notes)
    assert any("notes.csv: 2 scans of the run's training cohort" in note for note in notes)
    assert any("notes.csv: 1 scan is listed on more than one row" in note and "n1.nii" in note for note in notes)
    assert any("notes.csv: 1 age is above 130 years (largest 480)" in note for note in notes)
    with pytest.raises(ValueError, match=r"n0.nii is a scan; the manifest is a CSV file that lists the scans"):
        predict_new_scans(trained / "run", trained / "new" / "n0.nii", progress=False)


def test_the_command_names_the_input_each_run_kind_takes(trained, tmp_path, capsys):
    manifest = _write(trained / "new" / "cli.csv", ["path,age", "n0.nii,40", f"{trained / 's0.nii.gz'},20"])
    argv = ["brainage", "predict", str(trained / "run"), "--manifest", str(manifest)]
    out = tmp_path / "ages.csv"
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().err
    assert "cli.csv: 2 subjects predicted" in printed and "l1: mean of 2 models; MAE " in printed
    assert "against the manifest's ages" in printed and "1 scan of the run's training cohort" in printed
    assert out.read_text() == predict_new_scans(trained / "run", manifest, progress=False).to_csv()
    for arguments, message in (
        (["--csv", str(manifest)], "holds a brainage nifti run: its models predict from a manifest of scans"),
        ([], "one of the arguments --csv --manifest is required"),
        (["--manifest", str(manifest), "--csv", str(manifest)], "not allowed with argument"),
        (["--manifest", str(manifest), "--training-csv", str(manifest)], "--training-csv is for tabular runs"),
    ):
        with pytest.raises(SystemExit) as refused:
            main(["brainage", "predict", str(trained / "run"), *arguments])
        assert refused.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(
        ValueError,
        match=r"holds a brainage nifti run: its models predict from a manifest of scans \(predict_new_scans\)$",
    ):
        predict_new_subjects(trained / "run", manifest)
    with pytest.raises(ValueError, match="give the new subjects as a table of features"):
        run_prediction(trained / "run")
