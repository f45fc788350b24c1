"""Bad input to ``sodeep brainage tabular | synthetic | nifti`` ends in one line on stderr and
exit status 2, before anything is written: one table of cases, walked through every command.

Fresh cases run into a folder that does not exist, with W&B on (offline, the default): a check
made after the run folder or the W&B run is created would leave ``out`` behind.  Resume cases
damage a copy of a finished tiny run (one run of it made unfinished) and run ``--resume`` on it:
the folder must keep every file and modification time.
"""

import json
import shutil

import pytest
import torch
from brainage_inputs import folder_state, remembering, tiny_argv, write_inputs

import sodeep.brainage.synthetic_mri as synthetic_mri
from sodeep.cli import main

COMMANDS = ("tabular", "synthetic", "nifti")


@pytest.fixture(scope="module")
def brainage_inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


def _write_inputs(folder):
    """Files a user might pass by mistake, by name."""
    (folder / "typo.yaml").write_text("max_epoch: 3\n")
    (folder / "bad.yaml").write_text("losses: [l1\n")
    (folder / "list.yaml").write_text("- l1\n")
    (folder / "binary.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01")
    (folder / "latin1.csv").write_bytes("age,f\n20,caf\xe9\n".encode("latin-1"))
    (folder / "empty.csv").write_bytes(b"")
    (folder / "header.csv").write_text("age,f\n")
    (folder / "capital.csv").write_text("sub_id;Age;f\ns1;20;1\ns2;30;2\n")
    (folder / "mixed.csv").write_text("age,f;g\n")
    (folder / "capital_manifest.csv").write_text("Paths,Ages\nx.nii.gz,30\n")
    (folder / "six.csv").write_text("age,f\n" + "".join(f"{20 + 10 * row},{row}\n" for row in range(6)))


# (commands, flags, words the one line must contain); "{inputs}" is the folder of _write_inputs.
FRESH_CASES = [
    (COMMANDS, ["--max-epochs", "0"], "--max-epochs must be >= 1"),
    (COMMANDS, ["--max-epochs", "-3"], "--max-epochs must be >= 1"),
    (COMMANDS, ["--patience", "0"], "patience >= 1"),
    (COMMANDS, ["--batch-size", "0"], "--batch-size must be >= 1"),
    (
        COMMANDS,
        ["--batch-size", "1", "--losses", "l1", "l1+agediff", "cheng2021"],
        "--batch-size must be >= 2 with presets ['l1+agediff', 'cheng2021']: their rank and age-difference terms "
        "compare the subjects of a batch; got 1",
    ),
    (("synthetic", "nifti"), ["--batch-size", "1"], "--batch-size must be >= 2 for SFCN"),
    (
        ("nifti",),
        ["--shape", "2", "2", "2", "--channels", "4", "8"],
        "the grid (2, 2, 2) is too small for SFCN's 2 blocks (channels [4, 8]), each of which halves it: each side "
        "needs >= 4 voxels; give fewer --channels or a larger --shape",
    ),
    (
        ("synthetic",),
        ["--channels", *["4"] * 8],
        "the grid (45, 54, 45) is too small for SFCN's 8 blocks (channels [4, 4, 4, 4, 4, 4, 4, 4]), each of which "
        "halves it: each side needs >= 256 voxels; give fewer --channels (the synthetic grid is fixed)",
    ),
    (COMMANDS, ["--batch-size", "20000", "--losses", "l1+spearman"], "--batch-size must be <= 16384"),
    (COMMANDS, ["--seeds", "-1"], "seeds must be >= 0"),
    (COMMANDS, ["--seeds", "0", "0"], "seeds must not repeat"),
    (COMMANDS, ["--losses", "l1", "l1"], "losses must not repeat"),
    (
        COMMANDS,
        ["--losses", "l1+spearmen"],
        "--losses must be known presets, got unknown ones ['l1+spearmen'] (did you mean 'l1+spearman'?)",
    ),
    (COMMANDS, ["--config", "{inputs}/typo.yaml"], "unknown setting 'max_epoch' (did you mean 'max_epochs'?)"),
    (COMMANDS, ["--config", "{inputs}/bad.yaml"], "not valid YAML"),
    (COMMANDS, ["--config", "{inputs}/list.yaml"], "must hold a mapping of settings, got a list"),
    (COMMANDS, ["--config", "{inputs}/binary.bin"], "binary.bin is not a text (YAML) file"),
    (COMMANDS, ["--config", "{inputs}/missing.yaml"], "no config file at"),
    (COMMANDS, ["--resume"], "holds no run to resume"),
    (COMMANDS, ["--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
    (("tabular", "nifti"), ["--folds", "1"], "folds >= 2"),
    (("tabular",), ["--folds", "41"], "40 subjects are too few for 41 folds, which need 82 (each test fold 2"),
    (("tabular",), ["--dataset", "fcon1000", "--csv", "{inputs}/capital.csv"], "give a dataset or a csv, not both"),
    (("tabular",), ["--csv", "{inputs}/missing.csv"], "no table at"),
    (("tabular",), ["--csv", "{inputs}"], "is a folder; give the table in it, a CSV file"),
    (("nifti",), ["--manifest", "{inputs}"], "is a folder; give the manifest in it, a CSV file"),
    (("tabular",), ["--site-column", "centre"], "no site column 'centre'"),
    (("tabular",), ["--id-column", "eid"], "no id column 'eid'"),
    (("tabular",), ["--csv", "{inputs}/binary.bin"], "binary.bin is not a text CSV file (it holds binary data)"),
    (("tabular",), ["--csv", "{inputs}/latin1.csv"], "latin1.csv is not a text CSV file in UTF-8"),
    (("tabular",), ["--csv", "{inputs}/empty.csv"], "empty.csv is empty"),
    (("tabular",), ["--csv", "{inputs}/header.csv"], "has a header but no rows"),
    (("tabular",), ["--csv", "{inputs}/mixed.csv"], "separated by comma or semicolon: the header is 'age,f;g'"),
    (("tabular",), ["--csv", "{inputs}/capital.csv"], "no age column 'age' (did you mean --age-column Age?)"),
    (("tabular",), ["--features", "zz*"], "feature pattern 'zz*' matches no column"),
    (("tabular",), ["--split", "site", "--folds", "3"], "table.csv: a site-grouped split needs 3 sites at least"),
    (("synthetic",), ["--train", "1", "--test", "1"], "need --train >= 4 and --test >= 3 subjects (fewer test"),
    (("synthetic",), ["--train", "4", "--test", "2"], "subjects correlate +-1 whatever the model), got 4 and 2"),
    (("synthetic",), ["--train", "3", "--test", "3"], "need --train >= 4 and --test >= 3 subjects, got 3 and 3"),
    (("synthetic",), ["--max-minutes", "0"], "--max-minutes must be 'none' or > 0, got 0.0"),
    (("synthetic",), ["--max-minutes", "inf"], "--max-minutes must be 'none' or > 0, got inf"),
    (("synthetic",), ["--data-seed", "-1"], "--data-seed must be >= 0"),
    (("synthetic", "nifti"), ["--channels", "0"], "channels must be one or more widths >= 1"),
    (("synthetic", "nifti"), ["--ema-decay", "1"], "--ema-decay must be 'none' or in (0, 1)"),
    (("nifti",), ["--folds", "9"], "8 subjects are too few for 9 folds, which need 18"),
    (("nifti",), ["--shape", "1000", "1000", "1000"], "shape [1000, 1000, 1000] has 1,000,000,000 voxels, more than"),
    (("nifti",), ["--voxel-size", "0.001"], "--voxel-size must be at least 0.1 mm, got 0.001"),
    (
        ("nifti",),
        ["--folds", "5"],
        "8 subjects are too few for 5 folds, which need 10 (each test fold 2, each training split 4: 2 to fit, 2 to "
        "validate); use --folds 2 to 4 (volumes found on disk, not yet read: some may not be usable)",
    ),
    (
        ("tabular",),
        ["--csv", "{inputs}/six.csv"],
        "6 subjects are too few for 2 folds, which need 8 (each test fold 2, each training split 4: 2 to fit, 2 to validate); use --folds 3",
    ),
    (("nifti",), ["--voxel-size", "0"], "--voxel-size > 0"),
    (("nifti",), ["--voxel-size", "nan"], "--voxel-size > 0"),
    (("nifti",), ["--manifest", "{inputs}/missing.csv"], "no manifest at"),
    (("nifti",), ["--manifest", "{inputs}/binary.bin"], "binary.bin is not a text CSV file"),
    (
        ("nifti",),
        ["--manifest", "{inputs}/capital_manifest.csv"],
        "missing ['age', 'path'] (rename 'Ages' and 'Paths')",
    ),
]
FRESH = [(command, flags, words) for commands, flags, words in FRESH_CASES for command in commands]


def _run_and_check_one_line(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2, error
    # The sub-command is named as argparse names it in its own errors.
    assert error.startswith(f"sodeep brainage {argv[1]}: error: "), error
    assert error.count("\n") == 1, error
    assert "Traceback" not in error
    return error


@pytest.mark.parametrize("command,flags,words", FRESH, ids=[f"{c} {' '.join(f)}" for c, f, _ in FRESH])
def test_bad_input_ends_in_one_line_and_writes_nothing(tmp_path, capsys, brainage_inputs, command, flags, words):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    _write_inputs(inputs)
    flags = [word.replace("{inputs}", str(inputs)) for word in flags]
    error = _run_and_check_one_line(
        ["brainage", command, *tiny_argv(command, brainage_inputs), *flags, "--out", str(out)], capsys
    )
    assert words in error
    assert not out.exists()  # no run folder, no W&B run, no cache


def test_a_batch_of_one_subject_trains_when_no_preset_compares_subjects(tmp_path, capsys, brainage_inputs):
    argv = tiny_argv("tabular", brainage_inputs) + ["--batch-size", "1", "--max-epochs", "1", "--wandb", "disabled"]
    assert main(["brainage", "tabular", *argv, "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["presets"]["l1"]["runs"]) == 2


def _make_unfinished(out):
    """Take the last run out of results.json, so that --resume would continue it from its checkpoints;
    returns that run's checkpoint folder and another run's."""
    results = json.loads((out / "results.json").read_text())
    runs = results["presets"]["l1"]["runs"]
    dropped = runs.pop()
    (out / "results.json").write_text(json.dumps(results))
    folders = sorted(path.parent for path in (out / "checkpoints" / "l1").rglob("last.ckpt"))
    fold = f"_fold{dropped['fold']}" if len(folders) > 1 else ""
    unfinished = out / "checkpoints" / "l1" / f"seed{dropped['seed']}{fold}"
    return unfinished, next((folder for folder in folders if folder != unfinished), None)


def _damage_run_record(out, unfinished, other):
    (out / "run.json").write_text('{"command": "brainage')


def _other_command(out, unfinished, other):
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(record | {"command": "pretrain"}))


def _truncate_results(out, unfinished, other):
    text = (out / "results.json").read_bytes()
    (out / "results.json").write_bytes(text[: len(text) // 2])


def _binary_results(out, unfinished, other):
    (out / "results.json").write_bytes(b"\x00\xff\x00")


def _foreign_results(out, unfinished, other):
    (out / "results.json").write_text('{"accuracy": 0.9}')


def _truncate_checkpoint(out, unfinished, other):
    data = (unfinished / "last.ckpt").read_bytes()
    (unfinished / "last.ckpt").write_bytes(data[: len(data) // 2])


def _empty_checkpoint(out, unfinished, other):
    (unfinished / "last.ckpt").write_bytes(b"")


def _text_checkpoint(out, unfinished, other):
    (unfinished / "last.ckpt").write_text("epoch,step\n0,1\n")


def _foreign_checkpoint(out, unfinished, other):
    torch.save({"weights": torch.zeros(2)}, unfinished / "last.ckpt")


def _another_runs_checkpoint(out, unfinished, other):
    shutil.copy(other / "last.ckpt", unfinished / "last.ckpt")


def _no_best_checkpoint(out, unfinished, other):
    (unfinished / "best.ckpt").unlink()


def _notes_folder(out, unfinished, other):
    shutil.rmtree(out)
    out.mkdir()
    (out / "notes.txt").write_text("my own work")


def _file_for_folder(out, unfinished, other):
    shutil.rmtree(out)
    out.write_text("not a folder")


# (damage, extra flags, words), each run on a copy of a finished tiny run with one run made unfinished.
RESUME_CASES = [
    (_damage_run_record, ["--resume"], "run.json is damaged; run with --overwrite instead of --resume to clear"),
    (_other_command, ["--resume"], "holds a pretrain run, not a brainage"),
    (None, ["--resume", "--max-epochs", "3"], "other settings (--max-epochs: 2 -> 3)"),
    (None, [], "already holds this run; add --resume"),
    (_truncate_results, ["--resume"], "results.json is damaged (not JSON text)"),
    (_binary_results, ["--resume"], "results.json is damaged (not JSON text)"),
    (_foreign_results, ["--resume"], "results.json is not a brain-age results file"),
    (_truncate_checkpoint, ["--resume"], "last.ckpt is not a torch checkpoint (truncated, corrupt"),
    (_empty_checkpoint, ["--resume"], "last.ckpt is empty (0 bytes)"),
    (_text_checkpoint, ["--resume"], "last.ckpt is not a torch checkpoint"),
    (_foreign_checkpoint, ["--resume"], "last.ckpt is not a checkpoint of a brain-age training run"),
    (_no_best_checkpoint, ["--resume"], "holds last.ckpt but no best.ckpt"),
    (_notes_folder, [], "holds files but no run.json (notes.txt): not a sodeep run folder"),
    (_file_for_folder, [], "is a file, not a run folder"),
]


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, brainage_inputs):
    """A finished tiny run folder of each command (W&B off)."""
    folders = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic_mri, "simulate_subject", remembering(synthetic_mri.simulate_subject))
        for command in COMMANDS:
            out = tmp_path_factory.mktemp(command) / "out"
            argv = ["brainage", command, *tiny_argv(command, brainage_inputs), "--wandb", "disabled", "--out", str(out)]
            assert main(argv) == 0
            folders[command] = out
    return folders


RESUME = [(command, *case) for case in RESUME_CASES for command in COMMANDS]


@pytest.mark.parametrize(
    "command,damage,flags,words",
    RESUME,
    ids=[f"{c} {d.__name__.strip('_') if d else 'none'} {' '.join(f)}" for c, d, f, _ in RESUME],
)
def test_a_folder_that_cannot_be_resumed_ends_in_one_line_and_is_left_untouched(
    tmp_path, capsys, brainage_inputs, finished_runs, command, damage, flags, words
):
    out = tmp_path / "out"
    shutil.copytree(finished_runs[command], out)
    unfinished, other = _make_unfinished(out)
    if damage is not None:
        damage(out, unfinished, other)
    before = folder_state(out) if out.is_dir() else out.read_text()
    argv = ["brainage", command, *tiny_argv(command, brainage_inputs), "--wandb", "disabled", "--out", str(out)]
    error = _run_and_check_one_line([*argv, *flags], capsys)
    assert words in error
    assert (folder_state(out) if out.is_dir() else out.read_text()) == before


@pytest.mark.parametrize("command", ("tabular", "nifti"))
def test_another_runs_checkpoint_is_refused(tmp_path, capsys, brainage_inputs, finished_runs, command):
    out = tmp_path / "out"
    shutil.copytree(finished_runs[command], out)
    unfinished, other = _make_unfinished(out)
    _another_runs_checkpoint(out, unfinished, other)
    before = folder_state(out)
    argv = ["brainage", command, *tiny_argv(command, brainage_inputs), "--wandb", "disabled", "--out", str(out)]
    error = _run_and_check_one_line([*argv, "--resume"], capsys)
    assert "belongs to training run {'preset': 'l1', 'seed': 0, 'fold': 0}, not" in error
    assert folder_state(out) == before


def test_a_damaged_checkpoint_of_an_unfinished_run_names_a_way_that_keeps_the_finished_runs(
    tmp_path, capsys, brainage_inputs, finished_runs
):
    out = tmp_path / "out"
    shutil.copytree(finished_runs["tabular"], out)
    unfinished, other = _make_unfinished(out)
    _truncate_checkpoint(out, unfinished, other)
    finished = json.loads((out / "results.json").read_text())["presets"]["l1"]["runs"]
    argv = ["brainage", "tabular", *tiny_argv("tabular", brainage_inputs), "--wandb", "disabled", "--out", str(out)]
    error = _run_and_check_one_line([*argv, "--resume"], capsys)
    advice = f"delete {unfinished / 'last.ckpt'} to train this run again from its start, or run with --overwrite"
    assert advice in error
    (unfinished / "last.ckpt").unlink()
    assert main([*argv, "--resume"]) == 0
    runs = json.loads((out / "results.json").read_text())["presets"]["l1"]["runs"]
    assert runs[: len(finished)] == finished and len(runs) == len(finished) + 1


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_brainage_extra_is_named_in_one_line(command, tmp_path, capsys, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("sklearn", "nilearn") else found(name, *a)
    )
    with pytest.raises(SystemExit) as exited:
        main(["brainage", command, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in error
    assert (
        "needs nilearn, scikit-learn (the [brainage] extra): in a clone of sodeep, pip install -c constraints.txt -e "
        "'.[brainage]'; elsewhere, install sodeep with its brainage extra, or the packages named" in error
    )
    assert not (tmp_path / "out").exists()


def test_a_cohort_too_small_once_unreadable_rows_are_left_out_names_them(tmp_path, capsys, brainage_inputs):
    pytest.importorskip("nibabel")
    lines = (brainage_inputs / "manifest.csv").read_text().splitlines()
    header, rows = lines[0], [f"{brainage_inputs}/{line}" for line in lines[1:6]]  # 5 readable scans
    missing = [f"{brainage_inputs / f'gone{index}.nii.gz'},{40 + index},A" for index in range(3)]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join([header, *rows, *missing]) + "\n")
    argv = tiny_argv("nifti", brainage_inputs)
    argv[argv.index("--manifest") + 1] = str(manifest)
    with pytest.raises(SystemExit) as stopped:
        main(["brainage", "nifti", *argv, "--wandb", "disabled", "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "5 subjects are too few for 2 folds" in error
    assert "manifest.csv: left out 3 of 8 rows" in error and "no file at" in error


def test_a_cohort_too_small_after_skipping_rows_names_the_file_and_the_skipped_rows(tmp_path, capsys):
    rows = [f"{20 + 3 * index},{'' if index < 6 else 20 + 3 * index},{0.1 * index}" for index in range(10)]
    table = tmp_path / "mostly_empty.csv"
    table.write_text("\n".join(["id,age,f", *(f"s{index},{row.split(',', 1)[1]}" for index, row in enumerate(rows))]))
    with pytest.raises(SystemExit) as stopped:
        main(["brainage", "tabular", "--csv", str(table), "--folds", "2", "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "mostly_empty.csv: 4 subjects are too few for 2 folds" in error
    assert "mostly_empty.csv: skipped 6 of 10 rows (line 2: age '' is missing" in error
    assert not (tmp_path / "out").exists()


def test_a_manifest_whose_files_are_all_missing_says_so_first(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,age\ngone1.nii.gz,30\n,40\n")
    with pytest.raises(SystemExit):
        main(["brainage", "nifti", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--wandb", "disabled"])
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"sodeep brainage nifti: error: {manifest}: left out 2 of 2 rows (line 2: no file at ")
    assert error.endswith("line 3: the path is empty); no subject is left to train on")


@pytest.mark.parametrize("flag", ["--finetune-epochs", "--finetune-learning-rate", "--max-minutes", "--ema-decay"])
def test_settings_whose_errors_offer_none_take_none(flag):
    from sodeep.cli import build_parser

    command = "synthetic"
    arguments = build_parser().parse_args(["brainage", command, flag, "none"])
    assert getattr(arguments, flag[2:].replace("-", "_")) is None


def test_naming_the_columns_found_by_default_resumes_the_same_run(tmp_path, capsys, brainage_inputs, finished_runs):
    out = tmp_path / "out"
    shutil.copytree(finished_runs["tabular"], out)
    argv = ["brainage", "tabular", *tiny_argv("tabular", brainage_inputs), "--wandb", "disabled", "--out", str(out)]
    assert main([*argv, "--site-column", "SITE", "--id-column", "sub_id", "--resume"]) == 0  # the table's own columns
    capsys.readouterr()
    error = _run_and_check_one_line([*argv, "--id-column", "site", "--resume"], capsys)
    assert 'other settings (--id-column: null -> "site")' in error


def test_overwrite_does_not_clear_a_folder_holding_scans_the_manifest_lists(
    tmp_path, capsys, brainage_inputs, finished_runs
):
    out = tmp_path / "out"
    shutil.copytree(finished_runs["nifti"], out)
    (out / "scans").mkdir()
    lines = (brainage_inputs / "manifest.csv").read_text().splitlines()
    for index in (1, 5):  # two of the scans moved into the run folder
        shutil.copy(brainage_inputs / f"s{index}.nii.gz", out / "scans" / f"s{index}.nii.gz")
        lines[1 + index] = lines[1 + index].replace(f"s{index}.nii.gz", str(out / "scans" / f"s{index}.nii.gz"))
    lines = [lines[0]] + [
        line if str(out) in line else str(brainage_inputs / line.split(",")[0]) + line[line.index(",") :]
        for line in lines[1:]
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    argv = ["brainage", "nifti", *tiny_argv("nifti", brainage_inputs), "--wandb", "disabled", "--out", str(out)]
    argv[argv.index("--manifest") + 1] = str(manifest)
    before = folder_state(out)
    error = _run_and_check_one_line([*argv, "--overwrite"], capsys)
    assert (
        f"clearing {out} would delete {out / 'scans' / 's1.nii.gz'}, which this run reads as a volume listed in --manifest"
        in error
    )
    assert folder_state(out) == before


def test_overwrite_keeps_the_scans_of_a_run_folder_whose_run_json_is_damaged(
    tmp_path, capsys, brainage_inputs, finished_runs
):
    """A damaged record is still a run folder that --overwrite clears: the scans it holds are looked for."""
    out = tmp_path / "out"
    shutil.copytree(finished_runs["nifti"], out)
    (out / "run.json").write_text('{"command": "brainage nifti", "conf')
    shutil.copy(brainage_inputs / "s1.nii.gz", out / "s1.nii.gz")
    lines = (brainage_inputs / "manifest.csv").read_text().splitlines()
    rows = [str(out / "s1.nii.gz") + line[line.index(",") :] if line.startswith("s1.") else line for line in lines[1:]]
    rows = [
        row if row.startswith("/") else str(brainage_inputs / row.split(",")[0]) + row[row.index(",") :] for row in rows
    ]
    (tmp_path / "manifest.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    argv = ["brainage", "nifti", *tiny_argv("nifti", brainage_inputs), "--wandb", "disabled", "--out", str(out)]
    argv[argv.index("--manifest") + 1] = str(tmp_path / "manifest.csv")
    before = folder_state(out)
    error = _run_and_check_one_line([*argv, "--overwrite"], capsys)
    assert f"would delete {out / 's1.nii.gz'}, which this run reads as a volume listed in --manifest" in error
    assert folder_state(out) == before


def test_a_config_file_in_a_folder_that_is_no_run_gets_the_no_run_refusal(tmp_path, capsys, brainage_inputs):
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(brainage_inputs / "table.csv", folder / "table.csv")
    (folder / "run.yaml").write_text(
        f"csv: {folder / 'table.csv'}\nlosses: [l1]\nfolds: 2\nseeds: [0]\nmax_epochs: 1\n"
    )
    before = folder_state(folder)
    error = _run_and_check_one_line(
        ["brainage", "tabular", "--config", str(folder / "run.yaml"), "--out", str(folder), "--overwrite"], capsys
    )
    assert "holds files but no run.json" in error and "move it out" not in error
    assert folder_state(folder) == before


def test_overwrite_of_a_folder_of_scans_that_is_no_run_says_it_is_no_run_folder(tmp_path, capsys, brainage_inputs):
    """Not "move the scans out first", which would only lead to this refusal."""
    shutil.copytree(brainage_inputs, tmp_path / "cohort")
    argv = ["brainage", "nifti", *tiny_argv("nifti", tmp_path / "cohort"), "--wandb", "disabled"]
    before = folder_state(tmp_path / "cohort")
    error = _run_and_check_one_line([*argv, "--out", str(tmp_path / "cohort"), "--overwrite"], capsys)
    assert "holds files but no run.json" in error and "not a sodeep run folder" in error
    assert folder_state(tmp_path / "cohort") == before
