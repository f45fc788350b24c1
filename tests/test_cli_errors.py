"""Bad input to the console script ends in one line on stderr and exit status 2, before anything
is written: one table of cases, walked through every core command."""

from pathlib import Path

import pytest
import torch

import sodeep
from sodeep.checkpoints import load_sorter, save_sorter
from sodeep.cli import main
from sodeep.sorters import ConvSorter


def _write_inputs(folder):
    """Files a user might pass by mistake, by name."""
    whole = save_sorter(ConvSorter(), folder / "sorter.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.pt").write_bytes(b"")
    (folder / "text.pt").write_text("epoch,step\n0,1\n")
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    regressor = {
        "hyper_parameters": {"run": {"preset": "l1"}, "max_epochs": 3},
        "state_dict": {"model.w": torch.zeros(2)},
    }
    torch.save(regressor | {"global_step": 3}, folder / "regressor.ckpt")  # a brain-age training checkpoint
    (folder / "bad.yaml").write_text("steps: [1, 2\n")
    (folder / "list.yaml").write_text("- 1\n")
    (folder / "typo.yaml").write_text("stpes: 10\n")


CASES = [
    # (command line, words the one line must contain)
    (["pretrain", "--steps", "0"], "steps must be an integer >= 1"),
    (
        ["pretrain", "--stepz", "3"],
        "sodeep pretrain: error: unrecognized arguments: --stepz (did you mean --steps?) 3 "
        "(options: sodeep pretrain --help)",
    ),
    (["pretrain", "--validation-sequences", "300000"], "--validation-sequences must be at most 4096"),
    (
        ["pretrain", "--families", "uniform,unifrom"],
        "--families must be 'all' or a list of names from sodeep.synthetic.FAMILIES; 'unifrom' is not one "
        "(did you mean 'uniform'?)",
    ),
    (["pretrain", "--families", "ties,ties"], "a list of distinct names; 'ties' is given more than once"),
    (["pretrain", "--affine-probability", "1.5"], "--affine-probability must be a number in [0, 1], got 1.5"),
    (["pretrain", "--learning-rate", "-1"], "--learning-rate must be a finite number > 0"),
    (["pretrain", "--lengths", "1-5"], "lengths must be ints >= 2"),
    (
        ["pretrain", "--lengths", "5-2"],
        "--lengths must not be an empty range, got '5-2': give the shortest length first, e.g. '2-256'",
    ),
    (
        ["pretrain", "--lengths", "2-20000"],
        "lengths go up to 20000 but sorter 'conv' takes n <= 16384: set lengths within 2-16384",
    ),
    (
        ["pretrain", "--sorter", '{"capacity": 64}', "--lengths", "2-256"],
        "lengths go up to 256 but sorter 'conv' takes n <= 64: set lengths within 2-64, or the sorter's capacity to "
        "256 or more (at most 16384)",
    ),
    (
        ["pretrain", "--architecture", "original_cnn"],
        "sorter 'original_cnn' takes n = 100 only, not lengths 2-256: set",
    ),
    (
        ["pretrain", "--architecture", "softsort"],
        "sorter 'softsort' has no weights to train: it is analytic, used as it is; pretrain one of 'conv', "
        "'original_cnn', 'original_lstm_large'",
    ),
    (["pretrain", "--architecture", "bogus"], "unknown sorter architecture 'bogus'"),
    (["pretrain", "--sorter", '{"softnes": 0.5}'], "did you mean 'softness'"),
    (["pretrain", "--sorter", "{bad"], "sorter must be a JSON object"),
    (["pretrain", "--sorter", '{"band": 2.5}'], "band must be an integer, got float 2.5"),
    (["pretrain", "--sorter", '{"softness": "x"}'], "softness must be a finite number > 0, got str 'x'"),
    (["pretrain", "--config", "{inputs}/bad.yaml"], "is not valid YAML"),
    (["pretrain", "--config", "{inputs}/list.yaml"], "must hold a mapping of settings"),
    (["pretrain", "--config", "{inputs}/typo.yaml"], "did you mean 'steps'"),
    (["pretrain", "--config", "{inputs}/missing.yaml"], "no config file at"),
    (["pretrain", "--resume"], "holds no run to resume"),
    (["evaluate", "{inputs}/truncated.pt"], "truncated"),
    (["evaluate", "{inputs}/empty.pt"], "is empty"),
    (["evaluate", "{inputs}/text.pt"], "not a torch checkpoint"),
    (["evaluate", "{inputs}/foreign.pt"], "not a sodeep sorter checkpoint"),
    (
        ["evaluate", "{inputs}/regressor.ckpt"],
        "a Lightning checkpoint of another model (hyper-parameters ['max_epochs',",
    ),
    (
        ["export", "{inputs}/regressor.ckpt", "{out}/sorter.pt"],
        "only the checkpoints of a pretraining run (`sodeep pretrain`, pretrain()) export to",
    ),
    (["evaluate", "{inputs}/missing.pt"], "no sorter checkpoint at"),
    (["evaluate", "--lengths", "20000"], "no length in 20000 is one the sorter takes"),
    (["evaluate", "--sequences", "0"], "--sequences must be in 1..4096, got 0"),
    (
        ["evaluate", "--lengths", "5,20000"],
        "length 20000 is outside the sorter's range 2..16384; give lengths from 2 to 16384",
    ),
    (
        ["evaluate", "--lengths", "2-20000"],
        "lengths 16385-20000 are outside the sorter's range 2..16384; give lengths from 2 to 16384",
    ),
    (
        ["evaluate", "--lengths", "20000-30000"],
        "no length in 20000-30000 is one the sorter takes (n in 2..16384): give lengths in 2..16384",
    ),
    (
        ["evaluate", "--architecture", "original_cnn", "--lengths", "5,7"],
        "no length in 5,7 is one the sorter takes (n = 100 only): give lengths of 100",
    ),
    (
        ["evaluate", "{pretrained}/original_cnn_n100.pt", "--lengths", "2-300"],
        "lengths 2-99,101-300 are not the n = 100",
    ),
    (
        ["evaluate", "--lengths", "2-100000000000"],
        "--lengths must not be a range of more than 1,000,000 lengths, got '2-100000000000', 99,999,999,999 of",
    ),
    (
        ["evaluate", "--lengths", "5,,6"],
        "--lengths must be ints, a list like '8,100' or a range like '2-256', got '5,,6'",
    ),
    (["evaluate", "--lengths", ""], "--lengths is followed by an empty argument; give a value or leave it out"),
    (["evaluate", "--architecture", ""], "--architecture is followed by an empty argument"),
    (["evaluate", "--json="], "--json is given an empty value"),
    (["evaluate", " "], "an empty argument after evaluate; give a value or leave it out"),
    (["bench", "--quick", "--out", ""], "--out is followed by an empty argument"),
    (
        ["pretrain", "--devices", "2", "--strategy", "single_device", "--accelerator", "cpu"],
        "strategy 'single_device' trains on one device, and --devices 2 asks for more",
    ),
    (
        ["brainage", "tabular", "--devices", "-1", "--strategy", "Single_Device", "--out", "{out}"],
        "strategy 'single_device' trains on one device, and --devices -1 asks for more",
    ),
    (
        ["bench", "--quick", ""],
        "--quick is followed by an empty argument",
    ),  # a flag that takes none: argparse would say ''
    (["brainage", "tabular", "--overwrite", " "], "--overwrite is followed by an empty argument"),
    (["evaluate", "--sequences", "4097"], "--sequences must be in 1..4096, got 4097 (that many sequences per family"),
    (["pretrain", "--learning-rate", "inf"], "--learning-rate must be a finite number"),
    (
        ["pretrain", "--seed", "4294967296"],
        "--seed must be an integer in 0..4294967295 (NumPy's seeds), got 4294967296",
    ),
    (["export", "{inputs}/truncated.pt", "{out}/sorter.pt"], "truncated"),
    (["export", "{inputs}/empty.pt", "{out}/sorter.pt"], "is empty"),
    (["export", "{inputs}/text.pt", "{out}/sorter.pt"], "not a torch checkpoint"),
    (["export", "{inputs}/sorter.pt", "{out}/sorter.pt"], "is a sorter checkpoint already: it needs no export"),
    (["export", "{inputs}/missing.pt", "{out}/sorter.pt"], "no training checkpoint at"),
    (
        ["pretrain", "--data-workers", "x"],
        "argument --data-workers: invalid int value: 'x' (options: sodeep pretrain --help)",
    ),
    (["pretrain", "--wandb", "foo"], "argument --wandb: invalid choice: 'foo'"),
    (["evaluate", "--sequences"], "argument --sequences: expected one argument"),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_bad_input_ends_in_one_line_and_writes_nothing(tmp_path, capsys, argv, words):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    _write_inputs(inputs)
    pretrained = Path(sodeep.__file__).resolve().parents[1] / "pretrained"
    argv = [
        word.replace("{inputs}", str(inputs)).replace("{out}", str(out)).replace("{pretrained}", str(pretrained))
        for word in argv
    ]
    if argv[0] == "pretrain":
        argv += ["--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith(f"{_command_name(argv)}: error: ") and error.count("\n") == 1, error
    assert words in error and "Traceback" not in error
    assert not out.exists()


@pytest.mark.parametrize("text", ["", "5,x", "1.5", "nan", ",", "64,,128", "5,", ",5"])
def test_number_lists_refuse_what_is_not_a_list_of_numbers(text):
    import argparse

    from sodeep.config import number_list

    with pytest.raises(argparse.ArgumentTypeError, match="expected ints separated by commas, e.g. 32,256"):
        number_list(int)(text)
    assert number_list(int)(" 5, 20 100") == [5, 20, 100]
    assert number_list(float)("1e-4 0.5") == [1e-4, 0.5]
    with pytest.raises(argparse.ArgumentTypeError, match="expected floats"):
        number_list(float)("0.1,inf")


def test_an_unknown_flag_of_a_nested_subcommand_is_named_by_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["brainage", "tabular", "--epochz", "3"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert error.startswith(
        "sodeep brainage tabular: error: unrecognized arguments: --epochz (did you mean --max-epochs?)"
    )
    assert error.endswith("(options: sodeep brainage tabular --help)\n")


def _command_name(argv):
    """``sodeep brainage tabular`` for ``["brainage", "tabular", ...]``: the name errors begin with."""
    with_task = argv[0] in ("brainage", "sweep") and len(argv) > 1 and not argv[1].startswith("-")
    return " ".join(["sodeep", *argv[: 2 if with_task else 1]])


def _one_line_error(argv, capsys):
    """The line ``sodeep <command>`` ends with, having checked that it is one line, exit status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2, error
    assert error.startswith(f"{_command_name(argv)}: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error and "Errno" not in error, error
    return error


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    error = _one_line_error(
        ["pretrain", "--steps", "1", "--resume", "--overwrite", "--out", str(tmp_path / "run")], capsys
    )
    assert "argument --overwrite: not allowed with argument --resume" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["pretrain"], ["brainage", "tabular"]])
def test_overwrite_does_not_clear_a_folder_holding_the_commands_yaml_file(tmp_path, capsys, command):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"command": "x", "config": {}}')
    (out / "settings.yaml").write_text("max_epochs: 3\n" if command[0] == "brainage" else "steps: 3\n")
    error = _one_line_error(
        [*command, "--config", str(out / "settings.yaml"), "--out", str(out), "--overwrite"], capsys
    )
    assert (
        f"clearing {out} would delete {out / 'settings.yaml'}, which this run reads as --config; move it out" in error
    )
    assert (out / "settings.yaml").is_file()


@pytest.mark.parametrize(
    "argv,words",
    [
        (["{inputs}/sorter.pt", "--architecture", "conv"], "give a checkpoint or --architecture, not both"),
        (["--sorter", '{"softness": 0.5}'], "--sorter configures the untrained sorter of --architecture"),
    ],
)
def test_evaluate_refuses_arguments_it_would_ignore(tmp_path, capsys, argv, words):
    save_sorter(ConvSorter(), tmp_path / "sorter.pt")
    argv = [word.replace("{inputs}", str(tmp_path)) for word in argv]
    assert words in _one_line_error(["evaluate", *argv, "--lengths", "5", "--sequences", "2"], capsys)


def _training_checkpoint(path):
    """A Lightning checkpoint as pretraining writes it, of an untrained ConvSorter."""
    sorter = ConvSorter()
    torch.save(
        {
            "hyper_parameters": {"architecture": sorter.architecture, "sorter_config": sorter.config()},
            "state_dict": {f"sorter.{name}": value for name, value in sorter.state_dict().items()},
        },
        path,
    )
    return path


def test_export_replaces_a_sorter_checkpoint_only_when_asked_and_never_another_file(tmp_path, capsys):
    checkpoint = _training_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "sorter.pt"
    assert main(["export", str(checkpoint), str(out)]) == 0
    written = out.read_bytes()
    error = _one_line_error(["export", str(checkpoint), str(out)], capsys)
    assert f"{out} already holds a sorter checkpoint; add --overwrite to replace it" in error
    assert out.read_bytes() == written
    assert main(["export", str(checkpoint), str(out), "--overwrite"]) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for flags in ([], ["--overwrite"]):
        error = _one_line_error(["export", str(checkpoint), str(notes), *flags], capsys)
        assert f"{notes} exists and is not a sorter checkpoint; choose another path" in error
    assert notes.read_text() == "mine\n"
    before = checkpoint.read_bytes()
    error = _one_line_error(["export", str(checkpoint), str(checkpoint), "--overwrite"], capsys)
    assert "is not a sorter checkpoint" in error and checkpoint.read_bytes() == before


@pytest.mark.parametrize("inside", ["sorter.pt", "checkpoints/sorter.pt", "exported.pt"])
def test_export_writes_nothing_into_a_run_folder(tmp_path, capsys, inside):
    """A sorter exported into a run folder would pass for the run's own (``evaluate FOLDER``,
    ``load_sorter(FOLDER)``), whatever run it came from and whether that run is finished or running."""
    checkpoint = _training_checkpoint(tmp_path / "last.ckpt")
    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text('{"command": "pretrain", "config": {}}')
    before = sorted(path.relative_to(run) for path in run.rglob("*"))
    error = _one_line_error(["export", str(checkpoint), str(run / inside), "--overwrite"], capsys)
    assert (
        f"is inside the run folder {run.resolve()}, whose files its command writes; export to a path outside it"
        in error
    )
    assert sorted(path.relative_to(run) for path in run.rglob("*")) == before


def test_export_writes_beside_a_run_json_that_is_not_a_sodeep_run(tmp_path):
    checkpoint = _training_checkpoint(tmp_path / "last.ckpt")
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "run.json").write_text('{"name": "my tracker"}')
    assert main(["export", str(checkpoint), str(project / "models" / "sorter.pt")]) == 0


def test_export_to_a_link_that_leads_nowhere_replaces_the_link(tmp_path):
    checkpoint = _training_checkpoint(tmp_path / "last.ckpt")
    (tmp_path / "loop-a.pt").symlink_to(tmp_path / "loop-b.pt")
    (tmp_path / "loop-b.pt").symlink_to(tmp_path / "loop-a.pt")
    assert main(["export", str(checkpoint), str(tmp_path / "loop-a.pt")]) == 0
    assert not (tmp_path / "loop-a.pt").is_symlink() and (tmp_path / "loop-b.pt").is_symlink()
    assert main(["evaluate", str(tmp_path / "loop-a.pt"), "--lengths", "8", "--sequences", "4"]) == 0


@pytest.mark.parametrize("devices", ["-1", "0,1"])
def test_devices_a_cpu_cannot_take_are_refused_with_what_it_takes(tmp_path, capsys, devices):
    argv = ["pretrain", "--steps", "1", "--accelerator", "cpu", "--devices", devices, "--out", str(tmp_path / "run")]
    error = _one_line_error(argv, capsys)
    assert "on CPUs, --devices must be a count of processes >= 1 or 'auto'" in error, error
    assert "should be an int > 0" not in error
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator, kind", [("gpu", "GPU"), ("cuda", "CUDA")])
def test_a_gpu_asked_for_on_a_machine_without_one_is_named(tmp_path, capsys, accelerator, kind):
    argv = ["pretrain", "--steps", "1", "--accelerator", accelerator, "--out", str(tmp_path / "run")]
    error = _one_line_error(argv, capsys)
    assert f"this machine has no {kind} that torch can use; drop --accelerator or give --accelerator cpu" in error, (
        error
    )
    assert "(available here: auto, cpu)" in error
    assert not (tmp_path / "run").exists()


def _read_only_folder(folder, monkeypatch):
    """``folder``, made read-only (and seen so by ``os.access``, which lets root write anywhere)."""
    import os

    folder.mkdir()
    folder.chmod(0o555)
    access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **options: False if os.fspath(path) == str(folder) else access(path, mode, **options),
    )
    return folder


@pytest.mark.parametrize(
    "argv,words",
    [
        (
            ["evaluate", "--json", "{file}/rows.json"],
            "--json: {file} is a file, so {file}/rows.json cannot be made; choose another path",
        ),
        (
            ["evaluate", "--out", "{file}/deeper/table.md"],
            "--out: {file} is a file, so {file}/deeper/table.md cannot be made",
        ),
        (
            ["evaluate", "--out", "{read_only}/table.md"],
            "--out: {read_only} is not writable, so {read_only}/table.md cannot be made",
        ),
        (
            ["evaluate", "{inputs}/sorter.pt", "--json", "{inputs}/sorter.pt"],
            "--json: {inputs}/sorter.pt exists and is not fidelity rows; writing fidelity rows there would replace it",
        ),
        (
            ["evaluate", "--json", "{file}"],
            "--json: {file} exists and is not fidelity rows; writing fidelity rows there would replace it; choose",
        ),
        (
            ["evaluate", "--json", "{inputs}/run.json"],
            "--json: {inputs}/run.json exists and is not fidelity rows; writing fidelity rows there would replace it",
        ),
        (
            ["evaluate", "--out", "{inputs}/notes.md"],
            "--out: {inputs}/notes.md exists and is not a fidelity table; writing a fidelity table there would",
        ),
        (
            ["evaluate", "--out", "{file}"],
            "--out: {file} exists and is not a fidelity table; writing a fidelity table there would replace it",
        ),
        (
            ["evaluate", "--out", "{inputs}/rows", "--json", "{inputs}/./rows"],
            "--out and --json name the same file, {inputs}/rows; give each its own path",
        ),
        (
            ["pretrain", "--steps", "1", "--out", "{file}/run"],
            "{file} is a file, so {file}/run/run.json cannot be made; choose another folder for --out",
        ),
        (
            ["pretrain", "--steps", "1", "--out", "{read_only}/run"],
            "{read_only} is not writable, so {read_only}/run/run.json cannot be made",
        ),
        (
            ["export", "{inputs}/last.ckpt", "{file}/sorter.pt"],
            "{file} is a file, so {file}/sorter.pt cannot be made; choose another path",
        ),
    ],
)
def test_an_output_that_cannot_be_written_is_named_before_any_work(tmp_path, capsys, monkeypatch, argv, words):
    file, read_only = tmp_path / "file.txt", _read_only_folder(tmp_path / "read-only", monkeypatch)
    file.write_text("x\n")
    _training_checkpoint(tmp_path / "last.ckpt")
    save_sorter(ConvSorter(), tmp_path / "sorter.pt")
    (tmp_path / "run.json").write_text('{"command": "pretrain", "settings": {}}\n')
    heading = "Spearman with the exact ranks / mean absolute rank error (positions):"
    (tmp_path / "notes.md").write_text(f"# My notes\n\nThe table begins with\n{heading}\n")
    places = {"{file}": str(file), "{read_only}": str(read_only), "{inputs}": str(tmp_path)}
    for name, place in places.items():
        argv, words = [word.replace(name, place) for word in argv], words.replace(name, place)
    error = _one_line_error([*argv, "--lengths", "5", "--sequences", "2"] if argv[0] == "evaluate" else argv, capsys)
    assert words in error
    assert "Worst mean" not in capsys.readouterr().out  # refused before the table was computed


def test_an_operating_system_error_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import errno

    import sodeep.checkpoints

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "sorter.pt"))

    monkeypatch.setattr(sodeep.checkpoints, "load_sorter", refuse)
    error = _one_line_error(["evaluate", "--lengths", "5"], capsys)
    assert f"{tmp_path / 'sorter.pt'}: permission denied; " in error


def test_export_takes_a_pretraining_run_folder_for_its_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    checkpoint = _training_checkpoint_in(run / "checkpoints")
    assert main(["export", str(run), str(tmp_path / "from_folder.pt")]) == 0
    assert main(["export", str(checkpoint), str(tmp_path / "from_file.pt")]) == 0
    from_folder, from_file = (load_sorter(tmp_path / name) for name in ("from_folder.pt", "from_file.pt"))
    assert all(torch.equal(a, b) for a, b in zip(from_folder.state_dict().values(), from_file.state_dict().values()))


def _training_checkpoint_in(folder):
    folder.mkdir(parents=True)
    return _training_checkpoint(folder / "last.ckpt")


def test_messages_name_the_flag_typed_or_the_yaml_field(tmp_path, capsys):
    """A setting typed as a flag is named as that flag; one from a YAML config keeps its field name."""
    error = _one_line_error(["pretrain", "--batch-size", "0", "--out", str(tmp_path / "a")], capsys)
    assert "error: --batch-size must be" in error
    config = tmp_path / "pretrain.yaml"
    config.write_text("batch_size: 0\n")
    error = _one_line_error(["pretrain", "--config", str(config), "--out", str(tmp_path / "b")], capsys)
    assert f"error: {config}: batch_size must be" in error
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_flag_spelling_leaves_the_users_quoted_names_alone():
    from sodeep.cli import build_parser, in_flag_words

    parser = build_parser()
    message = "no age column 'batch_size'; columns are ['sub_id', \"max_epochs\", 'voxel_size']; batch_size must be"
    assert in_flag_words(message, parser) == (
        "no age column 'batch_size'; columns are ['sub_id', \"max_epochs\", 'voxel_size']; --batch-size must be"
    )
    # A file named as a setting is a file; a setting that ends the sentence is a flag.
    files = "--csv: batch_size.csv is not a torch checkpoint; no table at runs/init_from.csv; give batch_size."
    assert in_flag_words(files, parser) == (
        "--csv: batch_size.csv is not a torch checkpoint; no table at runs/init_from.csv; give --batch-size."
    )
    # A single word is a flag only where a condition on it follows; elsewhere it is a plain word.
    words = "max_epochs must be >= 1 and patience >= 0; the patience of 3 seeds; devices must be a count >= 1"
    assert in_flag_words(words, parser, ["brainage", "tabular", "--patience", "0"]) == (
        "--max-epochs must be >= 1 and --patience >= 0; the patience of 3 seeds; --devices must be a count >= 1"
    )  # count: a flag of `sodeep sweep run`, not of this command
    # ...or a change of its value, or a rule it breaks: all the settings of a list in one spelling.
    changes = "other settings (age_column: 'age' -> 'f1', split: 'site' -> 'stratified', patience: 5 -> 3); seeds must not repeat"
    assert in_flag_words(changes, parser, ["brainage", "tabular"]) == (
        "other settings (--age-column: 'age' -> 'f1', --split: 'site' -> 'stratified', --patience: 5 -> 3); --seeds must not repeat"
    )
    # A list value is one value: the setting before it is still a flag.
    grid = "other settings (shape: [16, 16, 16] -> [16, 16, 18], voxel_size: 4.0 -> 3.0)"
    assert in_flag_words(grid, parser, ["brainage", "nifti"]) == (
        "other settings (--shape: [16, 16, 16] -> [16, 16, 18], --voxel-size: 4.0 -> 3.0)"
    )


def test_advice_given_as_keyword_arguments_is_spelled_as_flags_on_the_command_line():
    from sodeep.cli import assignments_as_flags, build_parser

    parser = build_parser()
    message = (
        "use folds=3 or split='stratified'; run with overwrite=True instead of resume=True; "
        "choose another folder for out=; give init_from='/runs/a b' to start, or age_column='Age (years)'."
    )
    assert assignments_as_flags(message, parser) == (
        "use --folds 3 or --split stratified; run with --overwrite instead of --resume; "
        "choose another folder for --out; give --init-from '/runs/a b' to start, or --age-column 'Age (years)'."
    )
    # The user's quoted text, paths and names that are not flags stay as they are.
    untouched = "no column 'folds=3' in runs/folds=3; lr=0.1, seed_value=2"
    assert assignments_as_flags(untouched, parser) == untouched


def test_a_python_caller_reads_keyword_arguments_and_a_command_line_user_flags(tmp_path, capsys):
    from sodeep.run_folder import claim_run_folder

    with pytest.raises(ValueError, match=r"resume=True: .* holds no run to resume; run without resume=True") as error:
        claim_run_folder(tmp_path / "new", "pretrain", {"steps": 10}, resume=True)
    assert "--" not in str(error.value)
    error = _one_line_error(["pretrain", "--resume", "--out", str(tmp_path / "new")], capsys)
    assert "error: --resume: " in error and "holds no run to resume; run without --resume to start one" in error


def test_an_empty_or_non_text_run_folder_is_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("out: 5\n")
    assert "out must be the path of a run folder, got 5" in _one_line_error(
        ["pretrain", "--config", str(config)], capsys
    )
    assert "--out is followed by an empty argument; give a value or leave it out" in _one_line_error(
        ["pretrain", "--out", ""], capsys
    )
    error = _one_line_error(["brainage", "tabular", "--out", " "], capsys)
    assert "--out is followed by an empty argument" in error
    error = _one_line_error(["pretrain", "--learning-rate", "1e39", "--out", str(tmp_path / "run")], capsys)
    assert "--learning-rate must be a finite number > 0 (within float32's range), got 1e+39" in error
    assert not (tmp_path / "run").exists()


def test_a_key_given_twice_in_a_yaml_file_is_refused_not_overridden_silently(tmp_path, capsys):
    from sodeep.config import read_yaml_mapping

    config = tmp_path / "pretrain.yaml"
    config.write_text("steps: 20\nseed: 1\nsteps: 30\n")
    error = _one_line_error(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")], capsys)
    assert f"{config}: 'steps' is given twice (lines 1 and 3); keep one" in error
    assert not (tmp_path / "run").exists()
    nested = tmp_path / "nested.yaml"
    nested.write_text("sorter:\n  capacity: 4\n  capacity: 8\n")
    with pytest.raises(ValueError, match="'capacity' is given twice"):
        read_yaml_mapping(nested)
    # YAML's merge key brings in defaults that a key of the mapping may override: not a repeat.
    merged = tmp_path / "merged.yaml"
    merged.write_text("defaults: &defaults {steps: 5, seed: 2}\nrun:\n  <<: *defaults\n  steps: 7\n")
    assert read_yaml_mapping(merged)["run"] == {"steps": 7, "seed": 2}
    # Both spellings of a setting name it once; a key that is a list or a mapping is no name.
    spelled = tmp_path / "spelled.yaml"
    spelled.write_text(f"csv: {tmp_path / 'ages.csv'}\nmax_epochs: 2\nmax-epochs: 3\n")
    error = _one_line_error(["brainage", "tabular", "--config", str(spelled), "--out", str(tmp_path / "b")], capsys)
    assert f"{spelled}: 'max-epochs' is given twice (lines 2 and 3); keep one" in error
    for key in ("? [a]\n: 1\n", "? {a: 1}\n: 1\n"):
        odd = tmp_path / "odd.yaml"
        odd.write_text(f"steps: 5\n{key}")
        error = _one_line_error(["pretrain", "--config", str(odd), "--out", str(tmp_path / "run")], capsys)
        assert f"{odd}: line 2 has a " in error and "as a key; a key is a setting's name" in error


@pytest.mark.parametrize(
    "command, text, message",
    [
        ("pretrain", "wandb: off\n", "wandb must be offline, online or disabled, got False; YAML reads yes, no, on"),
        ("pretrain", "steps: 1e1\n", "steps must be an integer >= 1, got '1e1'; YAML reads 1e1 as text: write 10"),
        ("brainage", "max_epochs: 2e1\n", "max_epochs must be int, got '2e1' (str); YAML reads 2e1 as text: write 20"),
        ("brainage", "wandb: no\n", "wandb must be str, got False (bool); YAML reads yes, no, on and off as booleans"),
        (
            "pretrain",
            "seed: ~\n",
            "seed must be an integer >= 0, got None; YAML reads ~, null and an empty value",
        ),
        ("brainage", "patience:\n", "patience must be int, got None (NoneType); YAML reads ~, null and an empty value"),
        ("pretrain", "steps: yes\n", "steps must be an integer >= 1, got True; YAML reads yes, no, on, off, true an"),
        (
            "brainage",
            "batch_size: 0o10\n",
            "batch_size must be int, got '0o10' (str); YAML reads 0o10 as text: write 8",
        ),
        (
            "pretrain",
            "seed: 1e10\n",
            "seed must be an integer >= 0, got '1e10'; YAML reads 1e10 as text: write 10000000000",
        ),
        (
            "brainage",
            "batch_size: on\n",
            "batch_size must be int, got True (bool); YAML reads yes, no, on, off, true an",
        ),
        ("pretrain", "architecture: [conv]\n", "architecture must be the name of one sorter architecture, one of ["),
        ("pretrain", "architecture: {conv: 1}\n", "architecture must be the name of one sorter architecture, one of"),
        # Integers YAML reads otherwise than they look: refused where they are read.
        ("pretrain", "steps: 010\n", "line 1: YAML reads 010 as the octal number 8: write 10"),
        ("brainage", "seeds: [1, 010]\n", "line 1: YAML reads 010 as the octal number 8: write 10"),
        ("pretrain", "steps: 5\nseed: 1:30\n", "line 2: YAML reads 1:30 as 90 (base 60): write 90, or quote it if"),
        (
            "pretrain",
            "lengths: 2_8\n",
            "line 1: YAML reads 2_8 as 28, leaving out the underscores: write 28, or 2-8 for",
        ),
        (
            "brainage",
            "max_epochs: 1_0\n",
            "line 1: YAML reads 1_0 as 10, leaving out the underscores: write 10\n",  # no range 1-0
        ),
        ("pretrain", "steps: 1_0_0\n", "line 1: YAML reads 1_0_0 as 100, leaving out the underscores: write 100\n"),
        ("pretrain", "steps: 3_000\n", "line 1: YAML reads 3_000 as 3000, leaving out the underscores: write 3000\n"),
        (
            "pretrain",
            "lengths: 2_256\n",
            "line 1: YAML reads 2_256 as 2256, leaving out the underscores: write 2256, or 2-256",
        ),
        # Text that Python's float() would read without its underscores.
        ("pretrain", "learning_rate: 1_0e-3\n", "learning_rate must be a number (without underscores), got '1_0e-3'"),
        ("brainage", "finetune_learning_rate: 1_0e-3\n", "finetune_learning_rate must be float, got '1_0e-3' (str)"),
        # Numbers YAML reads as floats, or in another base, that a flag refuses.
        (
            "pretrain",
            "learning_rate: 1_0.5\n",
            "line 1: YAML reads 1_0.5 as 10.5, leaving out the underscores: write 10.5",
        ),
        (
            "brainage",
            "max_minutes: 1_5.0\n",
            "line 1: YAML reads 1_5.0 as 15.0, leaving out the underscores: write 15.0",
        ),
        ("pretrain", "steps: 0x10\n", "line 1: YAML reads 0x10 as the hexadecimal number 16: write 16"),
        ("brainage", "folds: 0b11\n", "line 1: YAML reads 0b11 as the binary number 3: write 3"),
        ("pretrain", "learning_rate: 1:30.5\n", "line 1: YAML reads 1:30.5 as 90.5 (base 60): write 90.5, or quote"),
        (
            "pretrain",
            'steps: "3"\n',
            "steps must be an integer >= 1, got '3'; YAML reads a number in quotes as text: write 3 without quotes",
        ),
        (
            "brainage",
            "folds: '5'\n",
            "folds must be int, got '5' (str); YAML reads a number in quotes as text: write 5",
        ),
        ("pretrain", "lengths: 8-2\n", "lengths must not be an empty range, got '8-2': give the shortest length"),
    ],
)
def test_what_yaml_made_of_a_value_is_said_where_it_is_refused(tmp_path, capsys, command, text, message):
    config, error = _config_file_error(tmp_path, capsys, command, text)
    assert f"{config}: {message}" in error, error  # the file that gave the value, named for either command
    assert not (tmp_path / "run").exists()


def test_settings_given_in_python_get_no_advice_about_yaml(tmp_path):
    """What YAML may have meant is said of a file's values only: in Python, '3' is what was typed."""
    from sodeep.brainage import SyntheticConfig, TabularConfig, load_config
    from sodeep.config import PretrainConfig
    from sodeep.pretraining import pretrain

    refused = (
        (lambda: pretrain(PretrainConfig(steps="3", out=str(tmp_path / "run"), wandb="disabled")), "got '3'"),
        (lambda: TabularConfig(max_epochs="3"), "got '3' (str)"),
        (lambda: SyntheticConfig(augment=True), "got True (bool)"),
        (lambda: load_config(TabularConfig, {"patience": None}), "got None (NoneType)"),
    )
    for build, ending in refused:
        with pytest.raises(ValueError) as error:
            build()
        assert str(error.value).endswith(ending), error.value
    assert not (tmp_path / "run").exists()
    # Beside a file, a value that a flag or an override gave gets none either; the file's own does.
    config = tmp_path / "run.yaml"
    config.write_text("patience: 3\n")
    with pytest.raises(ValueError) as error:
        load_config(TabularConfig, config, folds=True)
    assert str(error.value).endswith("got True (bool)"), error.value
    config.write_text("folds: yes\n")
    with pytest.raises(ValueError, match="got True .bool.; YAML reads yes, no, on, off, true and false as booleans"):
        load_config(TabularConfig, config, patience=3)


def test_the_command_line_is_told_the_sorters_it_knows_and_a_fixed_n_by_its_value(tmp_path, capsys):
    error = _one_line_error(["evaluate", "--architecture", "mine"], capsys)
    assert "unknown sorter architecture 'mine'; known: [" in error and "register" not in error
    # A checkpoint of a class of one's own, as Python saves it once registered.
    from sodeep import save_sorter
    from sodeep.sorters import SORTERS, PairwiseSigmoidSorter

    class Mine(PairwiseSigmoidSorter):
        architecture = "mine (v2)"  # a name that holds the ")" the hint ends with

    SORTERS["mine (v2)"] = Mine
    try:
        save_sorter(Mine(), tmp_path / "mine.pt")
    finally:
        del SORTERS["mine (v2)"]
    for argv in (["evaluate", str(tmp_path / "mine.pt")], ["pretrain", "--init-from", str(tmp_path / "mine.pt")]):
        error = _one_line_error([*argv, "--out", str(tmp_path / "out")], capsys)
        assert "names unknown architecture 'mine (v2)'; known: [" in error and "register" not in error, error
        assert error.rstrip().endswith("']"), error  # the known names' list ends the line
    shipped = Path(sodeep.__file__).resolve().parents[1] / "pretrained" / "original_cnn_n100.pt"
    error = _one_line_error(["evaluate", str(shipped), "--lengths", "5,100"], capsys)
    assert "length 5 is not the n = 100 the sorter takes; give --lengths 100" in error


def test_yaml_advice_is_given_for_the_settings_a_file_gave_and_no_others():
    from sodeep.config import checking_yaml_settings, yaml_reading

    with checking_yaml_settings(["steps"]):
        assert yaml_reading("1e1", "number", "steps") == "; YAML reads 1e1 as text: write 10"
        assert yaml_reading("1e1", "number", "seed") == yaml_reading("1e1", "number") == ""
    with checking_yaml_settings(set()):
        assert yaml_reading("1e1", "number") == ""
    with checking_yaml_settings():
        assert yaml_reading("1e1", "number") == "; YAML reads 1e1 as text: write 10"
    assert yaml_reading("1e1", "number", "steps") == ""


def test_a_flag_beside_a_config_file_gets_no_advice_about_yaml(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("steps: 5\n")
    argv = ["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]
    error = _one_line_error([*argv, "--families", "1e1"], capsys)
    assert error.rstrip().endswith("got '1e1'"), error
    config.write_text("families: 1e1\n")
    assert "; YAML reads 1e1 as text: write 10" in _one_line_error(argv, capsys)


@pytest.mark.parametrize("command", ["pretrain", "brainage"])
def test_a_setting_without_a_space_after_its_colon_is_shown_as_yaml_reads_it(tmp_path, capsys, command):
    config, error = _config_file_error(tmp_path, capsys, command, "steps:3\n")
    assert (
        f"{config} must hold a mapping of settings, got the text 'steps:3': put a space after each setting's colon "
        "(steps: 3, not steps:3)"
    ) in error


@pytest.mark.parametrize("command", ["pretrain", "brainage"])
def test_a_config_that_is_a_folder_or_not_utf8_is_refused_saying_what_to_give(tmp_path, capsys, command):
    argv = [command, *(["tabular"] if command == "brainage" else []), "--out", str(tmp_path / "run")]
    error = _one_line_error([*argv, "--config", str(tmp_path)], capsys)
    assert f"{tmp_path} is a folder; give the YAML file of settings in it" in error
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("out: r\xe9sultats\n".encode("latin-1"))
    error = _one_line_error([*argv, "--config", str(latin)], capsys)
    assert f"{latin} is not a text (YAML) file in UTF-8: save it as UTF-8 text" in error


def _config_file_error(tmp_path, capsys, command, text):
    """The config file ``text`` and the one line ``sodeep <command> --config`` refuses it with."""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    argv = [command, *(["tabular"] if command == "brainage" else []), "--config", str(config)]
    return config, _one_line_error([*argv, "--out", str(tmp_path / "run")], capsys)


@pytest.mark.parametrize("command", ["pretrain", "brainage"])
@pytest.mark.parametrize("action", ["resume", "overwrite"])
def test_a_run_action_in_a_config_file_points_at_its_flag(tmp_path, capsys, command, action):
    _, error = _config_file_error(tmp_path, capsys, command, f"{action}: true\n")
    assert f"'{action}' ({action} is what a run does, not a setting: give --{action}, or leave the key out)" in error


def test_export_of_another_commands_run_folder_names_its_command_as_evaluate_does(tmp_path, capsys):
    (tmp_path / "ba").mkdir()
    (tmp_path / "ba" / "run.json").write_text('{"command": "brainage tabular", "config": {}}')
    expected = f"{tmp_path / 'ba'} holds a brainage tabular run, not a pretraining run: it has no sorter"
    assert _one_line_error(["export", str(tmp_path / "ba"), str(tmp_path / "x.pt")], capsys).strip().endswith(expected)
    assert _one_line_error(["evaluate", str(tmp_path / "ba")], capsys).strip().endswith(expected)
    assert not (tmp_path / "x.pt").exists()


def test_a_pretrain_yaml_key_may_be_spelt_as_its_flag(tmp_path, capsys):
    """batch-size: as the flag is spelt, and as brain-age configs take it."""
    from sodeep.cli import build_parser, pretrain_config

    (tmp_path / "config.yaml").write_text("batch-size: 4\nvalidation-every: 7\n")
    arguments = build_parser().parse_args(["pretrain", "--config", str(tmp_path / "config.yaml")])
    config = pretrain_config(arguments)
    assert (config.batch_size, config.validation_every) == (4, 7)
    arguments = build_parser().parse_args(["pretrain", "--config", str(tmp_path / "config.yaml"), "--batch-size", "8"])
    assert pretrain_config(arguments).batch_size == 8  # the flag overrides the file


def test_an_unknown_pretrain_yaml_key_is_named_as_written(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("batch-sise: 4\n")
    error = _one_line_error(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")], capsys)
    assert "unknown key 'batch-sise' (did you mean 'batch_size'?)" in error, error


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--steps", "2_8"],
        ["pretrain", "--learning-rate", "1_0.5"],
        ["evaluate", "--sequences", "1_6"],
        ["brainage", "tabular", "--folds", "1_0"],
        ["brainage", "tabular", "--seeds", "0", "1_2"],
        ["brainage", "synthetic", "--max-minutes", "1_0"],
        ["brainage", "tabular", "--finetune-epochs", "1_0"],
    ],
)
def test_a_number_flag_with_an_underscore_is_refused_not_read_without_it(tmp_path, capsys, argv):
    error = _one_line_error([*argv, "--out", str(tmp_path / "run")], capsys)
    assert "holds an underscore: write numbers without one" in error and "lengths" not in error
    assert not (tmp_path / "run").exists()


def test_a_long_value_is_shown_cut_so_that_the_error_stays_a_line(tmp_path, capsys):
    out = str(tmp_path / "run")
    error = _one_line_error(["pretrain", "--wandb", "x" * 20_000, "--out", out], capsys)
    assert "invalid choice: 'xxxx" in error and "...' (20,000 characters)" in error and len(error) < 500
    config = tmp_path / "big.yaml"
    config.write_text("sorter: {band: [" + ", ".join(["1"] * 20_000) + "]}\n")
    error = _one_line_error(["pretrain", "--config", str(config), "--out", out], capsys)
    assert "band must be an integer, got list [1, 1, 1" in error and "...] (59,998 characters)" in error
    assert len(error) < 800


@pytest.mark.parametrize("command", ["pretrain", "brainage"])
def test_an_unknown_key_is_refused_naming_every_known_setting_and_text_is_not_told_to_drop_quotes(
    tmp_path, capsys, command
):
    _, error = _config_file_error(tmp_path, capsys, command, "zzzzz: 1\n")
    assert "known: [" in error and "'num_nodes'" in error and "characters)" not in error
    _, error = _config_file_error(tmp_path, capsys, command, 'wandb: "0"\n')
    assert "wandb must be" in error and "quotes" not in error
