import re

import nibabel
import numpy as np
import pytest

import sodeep.brainage.volumes as volumes_module
from sodeep.brainage.volumes import fit_to_shape, load_cohort, load_volume, read_manifest, zscore_in_brain


def write_volume(path, data, voxel_size):
    nibabel.save(nibabel.Nifti1Image(data.astype(np.float32), np.diag([voxel_size] * 3 + [1.0])), str(path))
    return path


def blob(shape, seed):
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, dtype=np.float32)
    inner = tuple(slice(2, side - 2) for side in shape)
    data[inner] = 1 + rng.random(data[inner].shape)
    return data


def test_round_trip_on_the_target_grid_is_a_zscore():
    data = blob((12, 14, 12), 0)
    assert fit_to_shape(data, (12, 14, 12)).shape == (12, 14, 12)
    brain = data > 0
    expected = np.where(brain, (data - data[brain].mean()) / data[brain].std(), 0)
    np.testing.assert_allclose(zscore_in_brain(data), expected, atol=1e-5)


def test_nifti_is_resampled_cropped_and_normalized(tmp_path):
    path = write_volume(tmp_path / "a.nii.gz", blob((24, 28, 24), 1), voxel_size=2.0)
    volume = load_volume(path, shape=(10, 10, 10), voxel_size=4.0)
    assert volume.shape == (10, 10, 10) and volume.dtype == np.float32
    inside = volume[volume != 0]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
    same_grid = write_volume(tmp_path / "b.nii.gz", blob((10, 10, 10), 2), voxel_size=4.0)
    np.testing.assert_allclose(
        load_volume(same_grid, (10, 10, 10), 4.0), zscore_in_brain(blob((10, 10, 10), 2)), atol=1e-5
    )


def test_nan_voxels_are_outside_the_brain_and_infinite_ones_are_refused(tmp_path):
    data = blob((24, 28, 24), 3)
    masked = np.where(data > 0, data, np.nan).astype(np.float32)
    for voxel_size in (2.0, 4.0):  # with and without resampling
        clean = load_volume(write_volume(tmp_path / "zero.nii.gz", data, voxel_size), (10, 10, 10), 4.0)
        volume = load_volume(write_volume(tmp_path / "nan.nii.gz", masked, voxel_size), (10, 10, 10), 4.0)
        assert np.isfinite(volume).all()
        np.testing.assert_allclose(volume, clean, atol=1e-5)
    data[5, 5, 5] = np.inf
    with pytest.raises(ValueError, match=r"inf.nii.gz: 1 of 16128 voxels are infinite"):
        load_volume(write_volume(tmp_path / "inf.nii.gz", data, 2.0), (10, 10, 10), 4.0)


def test_voxel_size_comes_from_the_affine_when_the_header_zooms_disagree(tmp_path):
    data = blob((24, 28, 24), 4)
    truthful = write_volume(tmp_path / "truthful.nii.gz", data, voxel_size=2.0)
    image = nibabel.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_zooms((4.0, 4.0, 4.0))  # the affine (which places the voxels) says 2 mm
    nibabel.save(image, str(tmp_path / "zooms.nii.gz"))
    expected = load_volume(truthful, (10, 10, 10), 4.0)
    np.testing.assert_allclose(load_volume(tmp_path / "zooms.nii.gz", (10, 10, 10), 4.0), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.where(blob((10, 10, 10), 5) > 0, 700.0, 0.0), "100% of the brain's voxels have one intensity: a mask"),
        ((blob((10, 10, 10), 5) > 0).astype(np.float32), "a mask or a constant image, not a T1"),
        (np.pad(blob((5, 5, 5), 5), ((0, 5), (0, 5), (0, 5))), "only 1 of the grid's 1000 voxels are above 0"),
        (np.ceil(blob((10, 10, 10), 5) * 3) - 3, r"its voxels above 0 take only 3 values \(1, 2, 3\): a label map"),
        (np.zeros((10, 10, 10)), r"no voxel is above 0 \(the image is empty: 0, NaN or negative everywhere\)$"),
        (np.full((10, 10, 10), np.nan), r"no voxel is above 0 \(the image is empty"),
    ],
    ids=["constant", "mask", "patch", "segmentation", "zeros", "nan"],
)
def test_volumes_that_would_z_score_to_nothing_are_refused(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        load_volume(write_volume(tmp_path / "odd.nii.gz", data, 4.0), (10, 10, 10), 4.0)


def test_voxels_beyond_float32_and_complex_voxels_are_refused(tmp_path):
    data = blob((10, 10, 10), 6).astype(np.float64)
    data[5, 5, 5] = 1e300
    nibabel.save(nibabel.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])), str(tmp_path / "huge.nii.gz"))
    with pytest.raises(ValueError, match=r"1 of 1000 voxels are infinite or beyond float32's range"):
        load_volume(tmp_path / "huge.nii.gz", (10, 10, 10), 4.0)
    complex_data = blob((10, 10, 10), 6).astype(np.complex64)
    nibabel.save(nibabel.Nifti1Image(complex_data, np.diag([4.0, 4.0, 4.0, 1.0])), str(tmp_path / "complex.nii.gz"))
    with pytest.raises(ValueError, match=r"the voxels are complex numbers \(complex64\)"):
        load_volume(tmp_path / "complex.nii.gz", (10, 10, 10), 4.0)


def aseg_like(shape, seed):
    """Blocks of 40 FreeSurfer aseg labels inside a brain-shaped blob."""
    labels = np.array([2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 30, 31])
    labels = np.concatenate([labels, labels + 39])
    i, j, k = np.indices(shape) // 6
    blocks = (i + 5 * j + 25 * k) % len(labels)
    return np.where(blob(shape, seed) > 0, labels[blocks], 0).astype(np.float32)


def test_a_label_map_of_many_labels_is_refused_and_an_8_bit_t1_is_not(tmp_path):
    path = write_volume(tmp_path / "aseg.nii.gz", aseg_like((30, 30, 30), 7), 4.0)
    with pytest.raises(ValueError, match=r"aseg.nii.gz: its voxels are integers equal to their neighbours' in \d+%"):
        load_volume(path, (30, 30, 30), 4.0)
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2).get_fdata()
    eight_bit = np.round(np.clip(template, 0, None) / template.max() * 255)
    loaded = load_volume(write_volume(tmp_path / "t1.nii.gz", eight_bit, 4.0), (45, 54, 45), 4.0)
    assert loaded.shape == (45, 54, 45) and np.isfinite(loaded).all()


@pytest.mark.parametrize("shape", [(0, 10, 10), (10, 10, 0), (0, 0, 0), (0, 10, 10, 1)])
@pytest.mark.parametrize("voxel_size", [4.0, 2.0])  # read as it is, or resampled first
def test_a_volume_without_voxels_is_named_as_such(tmp_path, shape, voxel_size):
    path = write_volume(tmp_path / "empty.nii.gz", np.zeros(shape), voxel_size)
    with pytest.raises(ValueError, match=rf"empty.nii.gz: the volume has no voxels \(shape {re.escape(str(shape))}\)"):
        load_volume(path, (10, 10, 10), 4.0)


def test_a_cache_that_cannot_be_written_stops_the_cohort_and_names_the_cache(tmp_path):
    for index in range(4):
        write_volume(tmp_path / f"s{index}.nii.gz", blob((10, 10, 10), index), voxel_size=4.0)
    (tmp_path / "manifest.csv").write_text("path,age\n" + "".join(f"s{i}.nii.gz,{20 + i}\n" for i in range(4)))
    (tmp_path / "afile").write_text("")
    with pytest.raises(
        ValueError, match=r"cannot make the volume cache .*afile: file exists; choose another folder for cache="
    ):
        load_cohort(tmp_path / "manifest.csv", tmp_path / "afile", shape=(10, 10, 10), progress=False)
    cache = volumes_module.VolumeCache(tmp_path / "cache", (10, 10, 10), 4.0)
    (tmp_path / "cache" / f"{cache.key(tmp_path / 's2.nii.gz')}.npy").mkdir(parents=True)  # an entry in the way
    with pytest.raises(
        ValueError, match=r"cannot write the volume cache .*cache: .*; choose another folder for cache="
    ):
        load_cohort(tmp_path / "manifest.csv", tmp_path / "cache", shape=(10, 10, 10), progress=False)


def test_a_subject_id_on_several_manifest_rows_is_noted(tmp_path):
    lines = ["path,age,participant_id"]
    for index in range(4):
        write_volume(tmp_path / f"s{index}.nii.gz", blob((10, 10, 10), index), voxel_size=4.0)
        lines.append(f"s{index}.nii.gz,{20 + index},{'sub-0' if index < 2 else f'sub-{index}'}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    cohort = load_cohort(tmp_path / "manifest.csv", tmp_path / "cache", shape=(10, 10, 10), progress=False)
    assert cohort.subjects == ["sub-0", "sub-0", "sub-2", "sub-3"]
    assert cohort.remarks("manifest.csv") == [
        "manifest.csv: 1 subject id appears on more than one row (e.g. ['sub-0']); rows of one subject may land "
        "in different cross-validation folds"
    ]


def test_bad_manifest_rows_are_named_and_the_rest_loads(tmp_path, monkeypatch):
    for index in range(3):
        write_volume(tmp_path / f"s{index}.nii.gz", blob((10, 10, 10), index), voxel_size=4.0)
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not a nifti file")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,age,sex,site\n"
        "s0.nii.gz,30,F,A\n"
        "missing.nii.gz,40,M,A\n"
        "s1.nii.gz,forty,M,B\n"
        "corrupt.nii.gz,50,F,B\n"
        "s2.nii.gz,60,M,B\n"
        "folder,70,F,B\n"
    )
    (tmp_path / "folder").mkdir()
    rows, problems = read_manifest(manifest)
    assert problems[-1] == (7, f"{tmp_path / 'folder'} is a folder, not a volume file")
    assert [row.line for row in rows] == [2, 5, 6]
    assert problems[0][0] == 3 and "no file" in problems[0][1]
    assert problems[1][0] == 4 and "'forty' is not a number" in problems[1][1]
    cohort = load_cohort(manifest, tmp_path / "cache", shape=(8, 8, 8), progress=False)
    assert cohort.volumes.shape == (2, 1, 8, 8, 8)
    assert cohort.ages.tolist() == [30.0, 60.0] and cohort.sites == ["A", "B"]
    assert [line for line, _ in cohort.problems] == [3, 4, 5, 7]
    (note,) = cohort.notes("manifest.csv")
    assert note.startswith("manifest.csv: left out 4 of 6 rows (line 3: no file at ") and "line 5: cannot read" in note
    corrupt_reason = dict(cohort.problems)[5]
    assert corrupt_reason.count("corrupt.nii.gz") == 1, corrupt_reason  # the file is named once

    # Second load: everything comes from the cache, nibabel is not touched.
    def refuse(*args, **kwargs):
        raise AssertionError("re-read a cached file")

    monkeypatch.setattr(volumes_module, "load_volume", refuse)
    again = load_cohort(manifest, tmp_path / "cache", shape=(8, 8, 8), progress=False)
    assert np.array_equal(again.volumes.numpy(), cohort.volumes.numpy())


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,years\nx,1\n")
    with pytest.raises(ValueError, match="'path' and 'age'"):
        read_manifest(bad)
    near = tmp_path / "near.csv"
    near.write_text("Paths;Ages\nx;1\n")
    with pytest.raises(ValueError, match=r"missing \['age', 'path'\] \(rename 'Ages' and 'Paths'\)"):
        read_manifest(near)
    (tmp_path / "x.nii.gz").write_bytes(b"")
    capitals = tmp_path / "capitals.csv"
    capitals.write_text("PATH;Age;SITE\nx.nii.gz;41;A\n")  # the columns are found in any case
    rows, problems = read_manifest(capitals)
    assert [(row.path.name, row.age, row.site) for row in rows] == [("x.nii.gz", 41.0, "A")] and not problems
    both = tmp_path / "both.csv"
    both.write_text("path,Path,age\nx.nii.gz,x.nii.gz,41\n")
    with pytest.raises(ValueError, match=r"columns \['path', 'Path'\] both match the path column"):
        read_manifest(both)
    # A spreadsheet's byte-order mark must not rename the first column to '\ufeffpath'.
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    marked = tmp_path / "bom.csv"
    marked.write_text("path,age\nscan.nii.gz,30\n", encoding="utf-8-sig")
    rows, problems = read_manifest(marked)
    assert [(row.path.name, row.age) for row in rows] == [("scan.nii.gz", 30.0)] and not problems
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("path,age,age\nscan.nii.gz,30,31\n")
    with pytest.raises(ValueError, match="repeated column names"):
        read_manifest(repeated)


def test_a_volume_listed_twice_is_refused(tmp_path):
    # The same scan twice could sit in a training fold and a test fold.
    (tmp_path / "sub").mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,age\na.nii.gz,20\nb.nii.gz,30\n{tmp_path / 'a.nii.gz'},21\nsub/../a.nii.gz,22\n")
    with pytest.raises(ValueError, match=rf"manifest.csv: {tmp_path / 'a.nii.gz'} is listed on lines 2, 4 and 5; "):
        read_manifest(manifest)


def test_manifest_ages_and_site_columns_follow_the_table_rules(tmp_path):
    from sodeep.brainage.tables import NO_SITE

    for name in "abc":
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,age,Site\na.nii.gz,-5,A\na.nii.gz,1e400,A\na.nii.gz,30,B\nb.nii.gz,40,NA\nc.nii.gz,50,\n")
    rows, problems = read_manifest(manifest)
    assert [(row.age, row.site) for row in rows] == [(30.0, "B"), (40.0, NO_SITE), (50.0, NO_SITE)]
    assert problems == [(2, "age '-5' is negative"), (3, "age '1e400' is beyond float32's range")]
    manifest.write_text("path;age\na.nii.gz;30,5\n")
    with pytest.raises(ValueError, match=r"\(semicolon-separated\) writes numbers with commas, as decimal commas"):
        read_manifest(manifest)


@pytest.mark.parametrize("manifest_text", [None, "file,years\nx,1\n"])
def test_nifti_cli_with_a_bad_manifest_stops_before_making_the_run_folder(tmp_path, capsys, manifest_text):
    from sodeep.cli import main

    manifest = tmp_path / "manifest.csv"
    if manifest_text is not None:
        manifest.write_text(manifest_text)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        main(["brainage", "nifti", "--manifest", str(manifest), "--out", str(out), "--wandb", "disabled"])
    assert stopped.value.code == 2 and "sodeep brainage nifti: error:" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("existed", [False, True])
def test_a_cohort_refused_once_its_volumes_are_read_leaves_the_folder_as_it_was(tmp_path, capsys, existed):
    from sodeep.cli import main

    lines = ["path,age"]
    for index in range(8):
        name = f"s{index}.nii.gz"
        if index < 5:  # 3 corrupt files leave 5 subjects, too few for 2 folds
            write_volume(tmp_path / name, blob((8, 8, 8), index), voxel_size=4.0)
        else:
            (tmp_path / name).write_bytes(b"not a volume")
        lines.append(f"{name},{20 + 5 * index}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    if existed:
        out.mkdir()
    command = ["brainage", "nifti", "--manifest", str(tmp_path / "manifest.csv"), "--shape", "8", "8", "8"]
    command += ["--channels", "4", "8", "--folds", "2", "--out", str(out), "--wandb", "disabled"]
    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 2
    assert "5 subjects are too few for 2 folds" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["run.lock"] if existed else not out.exists()
    for index in range(5, 8):
        write_volume(tmp_path / f"s{index}.nii.gz", blob((8, 8, 8), index), voxel_size=4.0)
    lines = ["path,age"] + [f"s{index}.nii.gz,40" for index in range(8)]  # readable, but all of one age
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit):
        main(command)
    assert (
        f"error: {tmp_path / 'manifest.csv'}: every subject is aged 40" in capsys.readouterr().err
    )  # named by its file
    assert sorted(path.name for path in out.iterdir()) == ["run.lock"] if existed else not out.exists()


def _small_cohort(folder, readable=8):
    lines = ["path,age"]
    for index in range(8):
        name = f"s{index}.nii.gz"
        if index < readable:
            write_volume(folder / name, blob((8, 8, 8), index), voxel_size=4.0)
        else:
            (folder / name).write_bytes(b"not a volume")
        lines.append(f"{name},{20 + 5 * index}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    command = ["brainage", "nifti", "--manifest", str(folder / "manifest.csv"), "--shape", "8", "8", "8"]
    return command + ["--channels", "4", "8", "--folds", "2", "--out", str(folder / "out"), "--wandb", "disabled"]


def _previous_run(out):
    out.mkdir()
    (out / "run.json").write_text('{"command": "nifti", "config": {"epochs": 3}}')
    (out / "l1").mkdir()
    (out / "l1" / "results.json").write_text("finished")
    return {"l1", "run.json"}


def _contents(out):
    return {path.name for path in out.iterdir()} - {"run.lock"}


def test_overwrite_keeps_the_previous_run_when_the_new_cohort_is_refused(tmp_path, capsys):
    from sodeep.cli import main

    command = _small_cohort(tmp_path, readable=5)  # 5 readable subjects are too few for 2 folds
    out = tmp_path / "out"
    kept = _previous_run(out)
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--overwrite"])
    assert stopped.value.code == 2 and "5 subjects are too few for 2 folds" in capsys.readouterr().err
    assert _contents(out) == kept and (out / "l1" / "results.json").read_text() == "finished"
    assert "epochs" in (out / "run.json").read_text()


def test_overwrite_interrupted_while_reading_volumes_keeps_the_previous_run(tmp_path, capsys, monkeypatch):
    from sodeep.cli import main
    from sodeep.run_folder import RunInterrupted

    def interrupted(*args, **kwargs):
        raise RunInterrupted("the volume cache")

    monkeypatch.setattr(volumes_module, "load_cohort", interrupted)
    command = _small_cohort(tmp_path)
    out = tmp_path / "out"
    kept = _previous_run(out)
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--overwrite"])
    assert stopped.value.code == 130
    assert "interrupted before this command saved anything; run the same command again" in capsys.readouterr().err
    assert _contents(out) == kept


def test_overwrite_replaces_the_previous_run_once_the_cohort_is_accepted(tmp_path, monkeypatch):
    from sodeep.brainage import cross_validation
    from sodeep.cli import main

    def stop_before_training(*args, **kwargs):
        raise ValueError("stopped before training")

    monkeypatch.setattr(cross_validation, "cross_validate", stop_before_training)
    command = _small_cohort(tmp_path)
    out = tmp_path / "out"
    _previous_run(out)
    with pytest.raises(SystemExit):
        main([*command, "--overwrite"])
    assert _contents(out) == {"run.json", "cache"}
    assert '"epochs": 3' not in (out / "run.json").read_text()


def test_nifti_cli_smoke(tmp_path, capsys):
    import json

    from sodeep.cli import main

    lines = ["path,age,site"]
    for index in range(12):
        write_volume(tmp_path / f"s{index}.nii.gz", blob((32, 32, 32), index) * (1 + index / 10), voxel_size=4.0)
        lines.append(f"s{index}.nii.gz,{20 + 5 * index},{'AB'[index % 2]}")
    lines.append("gone.nii.gz,50,A")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            "brainage",
            "nifti",
            "--manifest",
            str(tmp_path / "manifest.csv"),
            "--shape",
            "32",
            "32",
            "32",
            "--losses",
            "l1+spearman",
            "--folds",
            "2",
            "--max-epochs",
            "1",
            "--batch-size",
            "4",
            "--channels",
            "4",
            "8",
            "--head-channels",
            "8",
            "--block-order",
            "norm-pool",
            "--pooled-blocks",
            "last",
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    assert code == 0
    assert "manifest.csv: left out 1 of 13 rows (line 14: no file at " in capsys.readouterr().err
    written = json.loads((out / "results.json").read_text())
    assert [row["line"] for row in written["settings"]["skipped_rows"]] == [14]
    assert written["settings"]["config"]["extra"]["network"] == {
        "channels": [4, 8],
        "head_channels": 8,
        "pool_before_norm": False,
        "pool_every_block": False,
    }
    runs = written["presets"]["l1+spearman"]["runs"]
    assert len(runs) == 2 and all(np.isfinite(run["mae"]) for run in runs)
    assert (out / "plots" / "l1+spearman.png").is_file()
    predicted = (out / "predictions.csv").read_text().splitlines()
    assert predicted[0] == "preset,seed,fold,subject,age,predicted_age" and len(predicted) == 1 + 12
    assert sorted(line.split(",")[3] for line in predicted[1:]) == sorted(
        str(tmp_path / f"s{i}.nii.gz") for i in range(12)
    )


def test_a_cohort_remarks_on_ages_beyond_a_lifetime_and_empty_site_cells_as_a_table_does():
    import torch

    from sodeep.brainage.tables import NO_SITE
    from sodeep.brainage.volumes import Cohort

    def cohort(ages, sites):
        return Cohort(torch.zeros(len(ages), 1, 2, 2, 2), torch.tensor(ages), sites, [None] * len(ages))

    remarks = cohort([240.0, 30.0, 960.0], ["A", NO_SITE, "B"]).remarks("m.csv")
    assert remarks == [
        "m.csv: 2 ages are above 130 years (largest 960); ages are read as years: convert months or days to years",
        "m.csv: 1 of 3 subjects has an empty site cell (or NA); empty site cells are one site, '(no site)', in per-site "
        "results: fill in their sites",
    ]
    assert cohort([20.0, 30.0], [NO_SITE, NO_SITE]).remarks("m.csv") == []  # no site column at all


def test_a_manifest_reads_the_same_from_any_working_folder(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.nii.gz").write_bytes(b"")
    (tmp_path / "data" / "manifest.csv").write_text("path,age\na.nii.gz,30\ngone.nii.gz,40\n")
    monkeypatch.chdir(tmp_path)
    first = read_manifest("data/manifest.csv")
    monkeypatch.chdir(tmp_path / "data")
    assert read_manifest("manifest.csv") == first  # a resumed run compares the rows left out
    assert first[1] == [(3, f"no file at {tmp_path / 'data' / 'gone.nii.gz'}")]


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e17, 1e36])
def test_intensities_of_any_scale_z_score_as_ordinary_ones(tmp_path, scale):
    data = blob((10, 10, 10), 7)
    ordinary = load_volume(write_volume(tmp_path / "a.nii.gz", data, 4.0), (10, 10, 10), 4.0)
    huge = load_volume(write_volume(tmp_path / "b.nii.gz", data * np.float32(scale), 4.0), (10, 10, 10), 4.0)
    np.testing.assert_allclose(huge, ordinary, atol=1e-4)


@pytest.mark.parametrize("cut_short", [False, True])
def test_the_run_a_killed_replacement_set_aside_is_put_back_by_the_next_command(tmp_path, capsys, cut_short):
    from sodeep.cli import main
    from sodeep.run_folder import MOVING, PREVIOUS_RUN

    command = _small_cohort(tmp_path)
    out = tmp_path / "out"
    kept = _previous_run(out)
    aside = out / PREVIOUS_RUN
    aside.mkdir()
    for name in kept:
        (out / name).rename(aside / name)
    if cut_short:  # killed while moving: part of the previous run is still in out
        (aside / MOVING).touch()
        (aside / "run.json").rename(out / "run.json")
    else:  # killed while reading the new cohort: out holds the replacement's record and cache
        (out / "run.json").write_text('{"command": "brainage nifti", "config": {"epochs": 9}}')
        (out / "cache").mkdir()
    with pytest.raises(SystemExit):
        main(command)  # refused: the folder holds the previous run, of other settings
    assert "holds a nifti run, not a brainage nifti run" in capsys.readouterr().err
    assert _contents(out) == kept and (out / "l1" / "results.json").read_text() == "finished"
    assert "epochs" in (out / "run.json").read_text() and '"epochs": 9' not in (out / "run.json").read_text()


def test_set_aside_then_put_back_restores_every_file(tmp_path):
    from sodeep.run_folder import put_back, set_aside

    out = tmp_path / "out"
    kept = _previous_run(out)
    aside = set_aside(out)
    assert _contents(out) == {".sodeep-previous-run"}
    (out / "run.json").write_text("the replacement's")
    put_back(out, aside)
    assert _contents(out) == kept and (out / "l1" / "results.json").read_text() == "finished"


def test_a_thin_mask_at_a_voxel_size_to_resample_is_refused_before_resampling_blurs_it(tmp_path):
    # A shell two voxels thick at 1.2 mm: trilinear resampling to 4 mm spreads its edges over many values.
    n = 48
    radius = np.sqrt(((np.indices((n, n, n)) - (n - 1) / 2) ** 2).sum(0))
    path = write_volume(tmp_path / "ribbon.nii.gz", ((radius < 22) & (radius > 18)).astype(np.uint8), 1.2)
    with pytest.raises(ValueError, match="100% of the brain's voxels have one intensity: a mask or a constant image"):
        load_volume(path, (12, 12, 12), 4.0)


def test_a_volume_whose_affine_places_nothing_is_refused(tmp_path):
    image = nibabel.Nifti1Image(blob((10, 10, 10), 5).astype(np.float32), np.eye(4))
    image.set_sform(np.diag([3.0, 3.0, 0.0, 1.0]), code=1)  # the affine read first: it has no z extent
    image.set_qform(np.eye(4), code=0)
    nibabel.save(image, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(ValueError, match=r"flat.nii.gz: its affine is singular \(a voxel of no size along some axis\)"):
        load_volume(tmp_path / "flat.nii.gz", (10, 10, 10), 4.0)


def test_a_mask_is_refused_naming_its_file(tmp_path):
    path = write_volume(tmp_path / "mask.nii.gz", (blob((10, 10, 10), 5) > 0).astype(np.float32), 4.0)
    with pytest.raises(ValueError) as raised:
        load_volume(path, (10, 10, 10), 4.0)
    assert str(raised.value).startswith(f"{path}: 100% of the brain's voxels have one intensity")


def test_a_single_frame_in_four_or_five_dimensions_is_the_volume_and_a_series_of_frames_is_refused(tmp_path):
    data = blob((24, 28, 24), 3)
    expected = load_volume(write_volume(tmp_path / "a.nii.gz", data, voxel_size=2.0))
    for extra in ((1,), (1, 1)):
        path = write_volume(tmp_path / f"x{len(extra)}.nii.gz", data.reshape(*data.shape, *extra), voxel_size=2.0)
        np.testing.assert_array_equal(load_volume(path), expected)
    series = write_volume(tmp_path / "bold.nii.gz", np.stack([data] * 3, axis=-1), voxel_size=2.0)
    with pytest.raises(ValueError, match=r"shape \(24, 28, 24, 3\): give one 3-D T1 volume per subject"):
        load_volume(series)
    flat = write_volume(tmp_path / "slice.nii.gz", data[:, :, 12], voxel_size=2.0)
    with pytest.raises(
        ValueError, match=r"shape \(24, 28\): a single slice or image; give one 3-D T1 volume per subject$"
    ):
        load_volume(flat)


def test_volumes_that_are_not_skull_stripped_are_noted(tmp_path):
    """A raw T1 (head and a noisy background above 0) is z-scored as if it were all brain; a masked
    brain of any size on any grid is not noted."""
    rng = np.random.default_rng(0)
    grid = np.indices((40, 40, 40)) - 19.5
    ball = (np.square(grid).sum(0) < 17**2).astype(np.float32)  # 1.3 litres at 4 mm
    lines = ["path,age"]
    for index in range(3):
        data = ball * (1 + rng.random(ball.shape)).astype(np.float32)
        if index > 0:  # the background of a scan that is not masked
            data = np.where(data > 0, data, 1 + 4 * rng.random(data.shape)).astype(np.float32)
        write_volume(tmp_path / f"s{index}.nii.gz", data, voxel_size=4.0)
        lines.append(f"s{index}.nii.gz,{20 + index}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    cohort = load_cohort(tmp_path / "manifest.csv", tmp_path / "cache", shape=(40, 40, 40), progress=False)
    (remark,) = cohort.remarks("manifest.csv")
    assert remark == (
        f"manifest.csv: 2 of 3 volumes have more than 2.5 litres of voxels above 0 (first {tmp_path / 's1.nii.gz'}: "
        "4.1; a brain is 1.1 to 1.9): give skull-stripped or brain-masked T1s, whose outside is 0, or the head and "
        "background are z-scored and learned as brain"
    )
    # A grid that crops the brain (as small test grids do) is never taken for a head.
    small = load_cohort(tmp_path / "manifest.csv", tmp_path / "cache", shape=(12, 12, 12), progress=False)
    assert small.remarks("manifest.csv") == []


def _rotated_pair(tmp_path, degrees):
    """One asymmetric blob at 2 mm and, block-averaged, at 4 mm, both on a grid rotated by
    ``degrees`` about z (the same voxels in the world): their loaded grids, at 4 mm."""
    x, y, z = (axis - centre for axis, centre in zip(np.mgrid[0:40, 0:40, 0:40].astype(np.float64), (23, 17, 20)))
    fine = np.exp(-(x**2 / 120 + y**2 / 30 + z**2 / 60)) * (1 + 0.5 * (x > 0))
    fine = np.where(fine > 0.05, fine, 0).astype(np.float32)
    coarse = fine.reshape(20, 2, 20, 2, 20, 2).mean(axis=(1, 3, 5))
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    grids = []
    for name, data, size in (("fine", fine, 2.0), ("coarse", coarse, 4.0)):
        affine = np.eye(4)
        affine[:3, :3] = rotation * size
        affine[:3, 3] = rotation @ np.full(3, (size - 2.0) / 2)  # a coarse voxel's centre between two fine ones
        nibabel.save(nibabel.Nifti1Image(data, affine), str(tmp_path / f"{name}.nii.gz"))
        grids.append(load_volume(tmp_path / f"{name}.nii.gz", (16, 16, 16), 4.0))
    return np.corrcoef(grids[0].ravel(), grids[1].ravel())[0, 1]


def test_a_rotated_grid_is_resampled_onto_the_world_axes_whatever_its_voxel_size(tmp_path):
    """At the target voxel size an oblique volume still needs resampling: its grid comes out as
    that of the same volume at another voxel size, as an axis-aligned one does."""
    aligned, rotated = _rotated_pair(tmp_path, 0), _rotated_pair(tmp_path, 25)
    assert aligned > 0.9 and rotated > aligned - 0.06, (aligned, rotated)


def test_a_manifest_path_from_the_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "a.nii.gz").write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,age\n~/a.nii.gz,30\n")
    rows, problems = read_manifest(manifest)
    assert problems == [] and [row.path for row in rows] == [tmp_path / "home" / "a.nii.gz"]


def test_an_already_z_scored_volume_is_refused_and_edge_ringing_is_not(tmp_path):
    data = blob((24, 28, 24), 6)
    brain = data > 0
    zscored = np.where(brain, (data - data[brain].mean()) / data[brain].std(), 0.0)
    with pytest.raises(
        ValueError, match=r"z.nii.gz: (4\d|5\d)% of its nonzero voxels are well below 0 .*\(z-scored, or scaled"
    ):
        load_volume(write_volume(tmp_path / "z.nii.gz", zscored, 2.0), (10, 10, 10), 4.0)
    ringing = data.copy()
    ringing[1, 2:-2, 2:-2] = -0.01  # a thin negative rim, as sinc interpolation leaves
    assert np.count_nonzero(ringing < 0) < 0.1 * np.count_nonzero(ringing)
    assert load_volume(write_volume(tmp_path / "ring.nii.gz", ringing, 2.0), (10, 10, 10), 4.0).shape == (10, 10, 10)
    # A masked brain resampled with cubic splines: small negatives over much of the background.
    from scipy import ndimage

    spline = ndimage.rotate(data, 7, axes=(0, 1), reshape=False, order=3)
    assert np.count_nonzero(spline < 0) > 0.1 * np.count_nonzero(spline)
    assert load_volume(write_volume(tmp_path / "spline.nii.gz", spline, 2.0), (10, 10, 10), 4.0).shape == (10, 10, 10)


def test_a_manifest_of_a_header_alone_says_it_has_no_rows(tmp_path, capsys):
    from sodeep.cli import main

    (tmp_path / "manifest.csv").write_text("path,age\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(
            [
                "brainage",
                "nifti",
                "--manifest",
                str(tmp_path / "manifest.csv"),
                "--out",
                str(out),
                "--wandb",
                "disabled",
            ]
        )
    assert "manifest.csv has no rows below its header: add one row per subject" in capsys.readouterr().err
    assert not out.exists()
