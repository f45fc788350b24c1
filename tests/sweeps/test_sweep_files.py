"""The shipped sweep files expand as documented and every trial's command is one that sodeep's
console script (or the sweep's own program) accepts."""

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest

from sodeep.brainage.losses import BRAIN_AGE_PRESETS
from sodeep.cli import build_parser, pretrain_config
from sodeep.sorters import build_sorter
from sodeep.sweeps.expand import expand_trials
from sodeep.sweeps.launcher import TrialLauncher
from sodeep.sweeps.spec import load_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "experiments" / "sweeps"


def commands(name, tmp_path):
    spec = load_sweep(SWEEPS / name)
    launcher = TrialLauncher(spec, tmp_path, "offline", SWEEPS.parents[1])
    return spec, [launcher.command(trial)[0] for trial in expand_trials(spec)]


def test_brainage_presets_cover_every_preset_by_seed(tmp_path):
    spec, argvs = commands("brainage_presets.yaml", tmp_path)
    assert len(argvs) == 6 * 3 and spec.metric == {"name": "mae", "goal": "minimize"}
    parser = build_parser()
    presets = set()
    for argv in argvs:
        assert argv[:2] == ["/usr/bin/env", "sodeep"] and "--wandb=offline" in argv
        arguments = parser.parse_args(argv[2:])
        presets.update(arguments.losses)
    assert presets == {"l1", "mse", "l1+spearman", "l1+agediff", "l1+spearman+agediff", "cheng2021"}
    assert presets <= set(BRAIN_AGE_PRESETS)


def test_pretrain_sweep_builds_each_sorter(tmp_path):
    _, argvs = commands("pretrain_sorter.yaml", tmp_path)
    assert len(argvs) == 7 * 2 * 2
    parser = build_parser()
    settings = set()
    for argv in argvs:
        config = pretrain_config(parser.parse_args(argv[2:]))
        settings.add((config.sorter["softness"], config.sorter["band"], config.sorter["depth"], config.steps))
    assert len(settings) == 14
    build_sorter("conv", **config.sorter)


def test_the_trial_program_takes_its_flags_spelled_as_sodeep_commands_take_them():
    parser = _trial_program().build_parser()
    spelled = parser.parse_args(["--ranker", "mse", "--learning_rate=0.5", "--wandb_dir", "wb"])
    assert vars(spelled) == vars(parser.parse_args(["--ranker", "mse", "--learning-rate=0.5", "--wandb-dir", "wb"]))


def test_spearman_rankers_program_accepts_its_trials(tmp_path):
    spec, argvs = commands("spearman_rankers.yaml", tmp_path)
    assert len(argvs) == 8 * 5 and spec.metric["goal"] == "maximize"
    parser = _trial_program().build_parser()
    for argv in argvs:
        assert argv[2] == str(SWEEPS / "spearman_ranker_trial.py")
        parser.parse_args(argv[3:])


def _trial_program():
    location = importlib.util.spec_from_file_location("spearman_ranker_trial", SWEEPS / "spearman_ranker_trial.py")
    program = importlib.util.module_from_spec(location)
    location.loader.exec_module(program)
    return program


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--ranker", "mse", "--steps", "0"], "--steps must be >= 1, --batch >= 2"),
        (["--ranker", "mse", "--batch", "1"], "--steps must be >= 1, --batch >= 2"),
        (["--ranker", "torchsort"], "torchsort does not build here: ImportError: "),
        (["--ranker", "mse", "--setting", "nan"], "--setting must be a finite number, got nan"),
        (["--ranker", "mse", "--batch", "100000"], "--batch 100000 is more than the "),
    ],
)
def test_the_trial_program_refuses_what_it_cannot_run_in_one_line(argv, words, capsys, monkeypatch):
    program = _trial_program()
    family = next(family for family in program.ranker_families() if family.name == "torchsort")

    def missing(setting):
        raise ImportError("torchsort is not installed: pip install torchsort")

    monkeypatch.setattr(program, "ranker_families", lambda: [dataclasses.replace(family, build=missing)])
    assert program.main(argv) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1


def test_the_trial_program_alone_keeps_no_wandb_run_in_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("WANDB_DIR", "WANDB_SWEEP_ID", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    assert _trial_program().main(["--ranker", "mse", "--steps", "2"]) == 0
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert _trial_program().main(["--ranker", "mse", "--steps", "2", "--wandb-dir", str(tmp_path / "wb")]) == 0
    assert [path.name for path in tmp_path.iterdir()] == ["wb"] and list(
        (tmp_path / "wb" / "wandb").glob("offline-run-*")
    )


@pytest.mark.parametrize("name", sorted(path.name for path in SWEEPS.glob("*.yaml")))
def test_header_commands_name_the_file(name):
    text = (SWEEPS / name).read_text()
    assert f"sodeep sweep run experiments/sweeps/{name}" in text and f"wandb sweep experiments/sweeps/{name}" in text


@pytest.mark.parametrize("arguments", [["--workers", "3", "extra"], ["--workers", "x"], ["--workers=0"], ["--bogus"]])
def test_the_report_script_refuses_arguments_it_does_not_take(arguments, tmp_path):
    import subprocess

    script = SWEEPS / "brainage_presets_report.sh"
    done = subprocess.run(["bash", str(script), *arguments], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage: bash experiments/sweeps/brainage_presets_report.sh" in done.stderr
    assert not list(tmp_path.iterdir())  # refused before the sweep ran


def test_the_trial_program_refuses_a_wandb_folder_it_cannot_make_before_training(tmp_path, monkeypatch, capsys):
    program = _trial_program()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(program, "train_regression", lambda *args: pytest.fail("trained before the folder was checked"))
    precious = tmp_path / "precious.txt"
    precious.write_text("notes\n")
    assert program.main(["--ranker", "mse", "--steps", "2", "--wandb-dir", str(precious)]) == 2
    assert capsys.readouterr().err == f"--wandb-dir: {precious} is a file, not a folder; choose another path\n"
    assert precious.read_text() == "notes\n"
    monkeypatch.setenv("WANDB_DIR", str(precious))  # as a sweep sets it: the message names where it came from
    assert program.main(["--ranker", "mse", "--steps", "2"]) == 2
    assert capsys.readouterr().err == f"WANDB_DIR: {precious} is a file, not a folder; choose another path\n"


def test_the_trial_program_stopped_while_it_logs_to_wandb_writes_no_summary(tmp_path, monkeypatch):
    """A summary marks a complete trial: a stop during the W&B logging leaves none, so that the
    sweep runs the trial again rather than keep a W&B run without its metrics."""
    program = _trial_program()
    monkeypatch.setattr(program, "log_to_wandb", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setenv("SODEEP_SWEEP_TRIAL_SUMMARY", str(tmp_path / "summary.json"))
    assert program._kept() == "no summary was written"
    with pytest.raises(KeyboardInterrupt):
        program.main(["--ranker", "mse", "--steps", "2"])
    assert not (tmp_path / "summary.json").exists()
    assert program._kept() == "no summary was written"


def test_the_trial_program_keeps_its_metrics_when_wandb_fails(tmp_path, monkeypatch, capsys):
    program = _trial_program()
    monkeypatch.setattr(program, "log_to_wandb", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    monkeypatch.setenv("SODEEP_SWEEP_TRIAL_SUMMARY", str(tmp_path / "summary.json"))
    assert program.main(["--ranker", "mse", "--steps", "2"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"].keys() >= {"spearman"}
    assert capsys.readouterr().err.endswith(
        "note: no W&B run was written (OSError: disk full); the trial's summary holds its metrics\n"
    )
    assert program._kept() == "its summary was written"
    # Outside a sweep there is no summary: the printed line holds the metrics. W&B's own
    # message, over several lines, is one line here.
    monkeypatch.delenv("SODEEP_SWEEP_TRIAL_SUMMARY")
    program = _trial_program()
    monkeypatch.setattr(program, "log_to_wandb", lambda *args: (_ for _ in ()).throw(ValueError("bad\n  mode")))
    assert program.main(["--ranker", "mse", "--steps", "2"]) == 0
    printed = capsys.readouterr()
    assert "test Spearman" in printed.out
    assert printed.err.endswith(
        "note: no W&B run was written (ValueError: bad mode); its metrics are in the result line it printed\n"
    )


def test_the_trial_program_ends_a_stop_in_one_line(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    program = subprocess.Popen(
        [sys.executable, str(SWEEPS / "spearman_ranker_trial.py"), "--ranker", "mse", "--steps", "100000000"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a background job of a script starts
    )  # fmt: skip
    # Started with Ctrl-C ignored, the program takes it once its imports are done: then stop it.
    status = Path(f"/proc/{program.pid}/status")
    if not status.is_file():
        program.kill()
        pytest.skip("no /proc here to tell when the program takes Ctrl-C")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and program.poll() is None:
            caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
            if int(caught.split()[1], 16) >> (signal.SIGINT - 1) & 1:
                break
            time.sleep(0.1)
        program.send_signal(signal.SIGINT)
        _, error = program.communicate(timeout=60)
    finally:
        program.kill()  # whatever happened: no training left running
        program.wait()
    assert program.returncode == 130
    assert error == "spearman_ranker_trial.py: interrupted; no summary was written\n"
