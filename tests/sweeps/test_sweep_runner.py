"""Offline sweeps end to end: trials run as W&B's agent would run them, leave summaries, and a
second run skips finished trials and finishes the interrupted one."""

import csv
import json
import os
import re
import sys
import textwrap
import threading
import time
import types
from enum import Enum
from pathlib import Path

import pytest

from sodeep.sweeps import runner as runner_module
from sodeep.sweeps.cli import main
from sodeep.sweeps.expand import expand_trials
from sodeep.sweeps.launcher import TrialLauncher, trial_threads
from sodeep.sweeps.runner import SweepInterrupted, run_sweep
from sodeep.sweeps.spec import load_sweep

#: Fits ``age = scale * thickness`` on a table and reports the MAE through write_trial_summary.
TABLE_PROGRAM = """
import argparse, csv, os
from sodeep.sweeps import write_trial_summary

parser = argparse.ArgumentParser()
parser.add_argument("--table")
parser.add_argument("--scale", type=float)
arguments = parser.parse_args()
with open(arguments.table) as stream:
    rows = [(float(r["thickness"]), float(r["age"])) for r in csv.DictReader(stream)]
mae = sum(abs(arguments.scale * x - y) for x, y in rows) / len(rows)
seen = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_RUN_GROUP", "WANDB_SWEEP_PARAM_PATH", "SODEEP_WANDB")}
seen |= {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
write_trial_summary({"arguments": vars(arguments), "environment": seen}, {"mae": mae})
"""

#: Logs its call; blocks while a file exists (to be interrupted); exits with --exit.
QUICK_PROGRAM = """
import argparse, os, pathlib, time
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
parser.add_argument("--calls")
parser.add_argument("--exit", type=int, default=0)
arguments = parser.parse_args()
calls = pathlib.Path(arguments.calls)
with calls.open("a") as stream:
    stream.write(f"{arguments.seed}\\n")
while arguments.seed == 1 and (calls.parent / "block").exists():
    time.sleep(0.05)
raise SystemExit(arguments.exit)
"""


def write_sweep(folder, program, body):
    """The program and the sweep file in ``folder``, which must be the current folder (a relative
    program is found there, as by W&B's agent)."""
    (folder / "program.py").write_text(textwrap.dedent(program))
    path = folder / "sweep.yaml"
    path.write_text("program: program.py\n" + textwrap.dedent(body))
    return path


def test_two_trial_offline_sweep_on_a_tiny_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the runner shares the cores out
    (tmp_path / "table.csv").write_text("thickness,age\n10,20\n15,33\n20,40\n")
    sweep = write_sweep(
        tmp_path,
        TABLE_PROGRAM,
        f"""
        name: tiny table
        method: grid
        metric: {{name: mae, goal: minimize}}
        parameters:
          scale: {{values: [1.0, 2.0]}}
          table: {{value: {tmp_path / "table.csv"}}}
        """,
    )
    argv = ["run", str(sweep), "--root", str(tmp_path / "runs"), "--workers", "2"]
    assert main(argv) == 0
    folder = tmp_path / "runs" / "tiny-table"
    summaries = [json.loads((folder / "trials" / t / "summary.json").read_text()) for t in ("0000", "0001")]
    assert [s["metrics"]["mae"] for s in summaries] == pytest.approx([(10 + 18 + 20) / 3, (0 + 3 + 0) / 3])
    assert summaries[1]["params"] == {"scale": 2.0, "table": str(tmp_path / "table.csv")}
    environment = summaries[0]["config"]["environment"]
    assert environment["WANDB_MODE"] == "offline" and environment["WANDB_RUN_GROUP"] == "tiny table"
    assert environment["SODEEP_WANDB"] == "offline" and environment["WANDB_SWEEP_PARAM_PATH"].endswith(
        "sweep-params.yaml"
    )
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert [environment[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")] == [share] * 3
    command = json.loads((folder / "trials" / "0001" / "trial.json").read_text())["command"]
    assert command[:3] == ["/usr/bin/env", sys.executable, str(tmp_path / "program.py")] and "--scale=2.0" in command
    assert main(["report", str(folder), "--baseline", "scale=1.0", "--no-plots"]) == 0
    with open(folder / "report.csv") as stream:
        reported = list(csv.DictReader(stream))
    assert float(reported[1]["mae_mean"]) == pytest.approx(1.0) and reported[1]["mae_pairs"] == "1"
    assert main(argv) == 0
    assert "2 of 2 trials already finished: skipped" in capsys.readouterr().out


def test_resume_skips_finished_trials_and_finishes_the_interrupted_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    sweep = write_sweep(
        tmp_path,
        QUICK_PROGRAM,
        f"method: grid\nparameters:\n  seed: {{values: [0, 1, 2]}}\n  calls: {{value: {calls}}}\n",
    )
    (tmp_path / "block").write_text("")
    lines = []

    def interrupt_when_blocked(line):
        lines.append(line)
        if line.startswith("trial 0001") and "started" in line:
            deadline = time.monotonic() + 10
            while len(calls.read_text().split()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)  # until trial 0001 runs (and blocks)
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as interrupted:
        run_sweep(load_sweep(sweep), tmp_path / "runs", echo=interrupt_when_blocked)
    assert (interrupted.value.finished, interrupted.value.total, interrupted.value.stopped) == (1, 3, 1)
    trials = tmp_path / "runs" / "sweep" / "trials"
    assert (trials / "0000" / "summary.json").exists() and not (trials / "0001" / "summary.json").exists()
    assert not (trials / "0002").exists()
    (tmp_path / "block").unlink()
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append)
    assert (outcome.skipped, outcome.finished, outcome.failed) == (["0000"], ["0001", "0002"], [])
    assert calls.read_text().split() == ["0", "1", "1", "2"]
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append).skipped == ["0000", "0001", "0002"]
    assert calls.read_text().split() == ["0", "1", "1", "2"]


#: Writes its finished summary, then blocks while a file exists: stopped after its work is done.
LATE_PROGRAM = """
import argparse, pathlib, time
from sodeep.sweeps import write_trial_summary
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
parser.add_argument("--block")
arguments = parser.parse_args()
write_trial_summary(vars(arguments), {"value": float(arguments.seed)})
while pathlib.Path(arguments.block).exists():
    time.sleep(0.05)
"""


def test_a_trial_stopped_after_writing_its_summary_counts_as_finished(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = tmp_path / "block"
    block.write_text("")
    sweep = write_sweep(
        tmp_path, LATE_PROGRAM, f"method: grid\nparameters:\n  seed: {{values: [0, 1]}}\n  block: {{value: {block}}}\n"
    )
    summary = tmp_path / "runs" / "sweep" / "trials" / "0000" / "summary.json"

    lines = []

    def interrupt_once_summarized(line):
        lines.append(line)
        if line.startswith("trial 0000") and "started" in line:
            deadline = time.monotonic() + 20
            while not summary.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as interrupted:
        run_sweep(load_sweep(sweep), tmp_path / "runs", echo=interrupt_once_summarized)
    assert (interrupted.value.finished, interrupted.value.stopped) == (1, 0)
    assert lines[-1] == "trial 0000 finished: it wrote its summary before the stop"
    assert "returncode" in json.loads((summary.parent / "trial.json").read_text())
    block.unlink()
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
    assert (outcome.skipped, outcome.finished) == (["0000"], ["0001"])


def test_failed_trials_ctrl_c_and_a_changed_sweep_through_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"name: quick\nmethod: grid\nparameters:\n  seed: {{values: [0]}}\n  calls: {{value: {calls}}}\n"
    sweep = write_sweep(tmp_path, QUICK_PROGRAM, body + "  exit: {value: 3}\n")
    root = str(tmp_path / "runs")
    assert main(["run", str(sweep), "--root", root]) == 1
    assert "trial 0000 failed (exit 3)" in capsys.readouterr().out
    failed = json.loads((tmp_path / "runs" / "quick" / "trials" / "0000" / "summary.json").read_text())
    assert failed["status"] == "failed" and failed["metrics"] == {}

    sweep.write_text(sweep.read_text().replace("[0]", "[0, 1]"))
    with pytest.raises(SystemExit) as exited:
        main(["run", str(sweep), "--root", root])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and "holds another sweep (a different sweep file: " in error
    assert "parameters.seed.values: [0] -> [0, 1]); give another --root or name, or add --overwrite" in error

    def ctrl_c(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module._Scheduler, "collect", ctrl_c)
    assert main(["run", str(sweep), "--root", str(tmp_path / "other"), "--workers", "2"]) == 130
    error = capsys.readouterr().err
    assert (
        "0 of 2 trials finished, 2 stopped" in error
        and "run the same command again to finish: sodeep sweep run" in error
    )


def test_overwrite_clears_a_sweep_folder_but_never_other_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"name: quick\nmethod: grid\nparameters:\n  seed: {{values: [0]}}\n  calls: {{value: {calls}}}\n"
    sweep = write_sweep(tmp_path, QUICK_PROGRAM, body)
    root = str(tmp_path / "runs")
    assert main(["run", str(sweep), "--root", root]) == 0
    sweep.write_text(sweep.read_text().replace("[0]", "[0, 2]"))
    assert main(["run", str(sweep), "--root", root, "--dry-run", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "2 trials, 0 finished before" in printed
    assert (
        f"--overwrite: a run first deletes {tmp_path / 'runs' / 'quick'}, with the 1 finished trial it holds" in printed
    )
    assert calls.read_text().split() == ["0"]
    assert main(["run", str(sweep), "--root", root, "--overwrite"]) == 0
    assert calls.read_text().split() == ["0", "0", "2"]  # every trial again, in a cleared folder
    held = json.loads((tmp_path / "runs" / "quick" / "sweep.json").read_text())
    assert held["spec"]["parameters"]["seed"] == {"values": [0, 2]}

    other = tmp_path / "other" / "quick"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    for overwrite in ([], ["--overwrite"]):  # neither taken over nor cleared
        with pytest.raises(SystemExit) as exited:
            main(["run", str(sweep), "--root", str(tmp_path / "other"), *overwrite])
        assert exited.value.code == 2 and "not a sweep folder" in capsys.readouterr().err
        assert sorted(path.name for path in other.iterdir()) == ["notes.txt"]

    sweep.write_text(sweep.read_text().replace("program: program.py", f"program: {tmp_path / 'program.py'}"))
    monkeypatch.chdir(tmp_path / "runs" / "quick" / "trials")
    with pytest.raises(SystemExit) as exited:
        main(["run", str(sweep), "--root", root, "--overwrite"])
    assert exited.value.code == 2 and "which holds the working folder" in capsys.readouterr().err  # a parent
    assert (tmp_path / "runs" / "quick" / "sweep.json").is_file()


def test_a_sweep_folder_whose_overwrite_was_cut_short_is_cleared_by_the_next_overwrite_only(
    tmp_path, capsys, monkeypatch
):
    """What an overwrite cut short while it cleared the folder leaves (no sweep.json, some trials)
    is refused to a plain run, with a line that says to overwrite, and cleared by an overwrite."""
    from sodeep.run_folder import CLEARING

    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"name: quick\nmethod: grid\nparameters:\n  seed: {{values: [0]}}\n  calls: {{value: {calls}}}\n"
    sweep = write_sweep(tmp_path, QUICK_PROGRAM, body)
    root, folder = str(tmp_path / "runs"), tmp_path / "runs" / "quick"
    assert main(["run", str(sweep), "--root", root]) == 0
    (folder / CLEARING).touch()
    (folder / "sweep.json").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["run", str(sweep), "--root", root])
    assert exited.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"{folder} holds what is left of a run that an overwrite was clearing when it was cut short; add --overwrite "
            "to finish clearing it and start again"
        )
    )
    from sodeep.sweeps.report import write_report

    with pytest.raises(ValueError, match="is being cleared by a command that overwrites it"):
        write_report(folder)
    assert not (folder / "report.md").exists()
    assert main(["run", str(sweep), "--root", root, "--overwrite"]) == 0
    assert calls.read_text().split() == ["0", "0"] and not (folder / CLEARING).exists()


def test_a_sweep_folder_in_use_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    sweep = write_sweep(
        tmp_path, QUICK_PROGRAM, f"method: grid\nparameters:\n  seed: {{values: [0]}}\n  calls: {{value: {calls}}}\n"
    )
    refusals = []

    def run_in_another_thread():
        try:
            run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
        except ValueError as refused:
            refusals.append(str(refused))

    def run_again(line):
        if "started" in line and not refusals:
            second = threading.Thread(target=run_in_another_thread)
            second.start()
            second.join()

    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=run_again).finished == ["0000"]
    assert refusals and "is in use by a running sodeep command" in refusals[0]
    assert refusals[0].endswith("give another root=")  # from Python; --root on the command line
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None).skipped == ["0000"]


#: Writes its summary itself (a program need not import sodeep): loss = seed.
SUMMARY_PROGRAM = """
import argparse, json, os, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
seed = parser.parse_args().seed
summary = {"schema": "sodeep-trial/1", "params": {"seed": seed}, "config": {}, "metrics": {"loss": seed},
           "status": "finished", "seconds": 0}
pathlib.Path(os.environ["SODEEP_SWEEP_TRIAL_SUMMARY"]).write_text(json.dumps(summary))
"""


def test_no_new_trial_once_the_metric_target_is_reached(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    body = "method: grid\nmetric: {name: loss, target: 1}\nparameters:\n  seed: {values: [3, 2, 1, 0]}\n"
    sweep = write_sweep(tmp_path, SUMMARY_PROGRAM, body)
    lines = []
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append)
    assert outcome.finished == ["0000", "0001", "0002"] and outcome.target_reached
    assert "metric loss reached its target: no new trials" in lines
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append).finished == []
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == "metric loss has reached its target: a run starts no new trial"
    # A trial stopped before its end (its record says so, and it has no summary) had started
    # before the target was reached: a run finishes it, as it would have finished running, and
    # starts no other.  A trial that failed is not run again.
    for trial, ending in (("0001", {"stopped": True, "returncode": -2}), ("0000", {"returncode": 1})):
        record = outcome.folder / "trials" / trial / "trial.json"
        record.write_text(json.dumps(json.loads(record.read_text()) | ending))
        (record.parent / "summary.json").unlink()
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert (
        printed[-1]
        == "metric loss has reached its target: a run starts no new trial; it finishes the 1 trial stopped before"
    )
    marks = [re.match(r".*/(\d{4}(?: \([^)]*\))?): ", line).group(1) for line in printed[:4]]
    assert marks == [
        "0000 (failed: not run again, the target is reached)",
        "0001 (stopped before: finishes)",
        "0002 (finished: skipped)",
        "0003 (not run: the target is reached)",
    ]
    assert main(["report", str(outcome.folder), "--no-plots"]) == 0
    assert (
        "with the target reached, `sodeep sweep run` with the same file runs again only those stopped before their "
        "end, not those that failed." in (outcome.folder / "report.md").read_text()
    )
    capsys.readouterr()
    lines.clear()
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append).finished == ["0001"]
    assert (
        lines[1] == "metric loss reached its target in a finished trial: no new trials; 1 trial stopped before finishes"
    )


def fake_sweeps_package(suggested):
    """A stand-in for W&B's `sweeps`: suggests x = number of runs it was shown."""

    class RunState(str, Enum):
        running = "running"
        finished = "finished"
        failed = "failed"

    def next_run(config, runs):
        suggested.append([(run.name, run.state.value, run.summary_metrics) for run in runs])
        return types.SimpleNamespace(config={"seed": {"value": len(runs)}, "calls": {"value": config["calls"]}})

    def sweep_run(**fields):
        return types.SimpleNamespace(**fields)

    return types.SimpleNamespace(RunState=RunState, SweepRun=sweep_run, next_run=next_run)


def test_bayes_suggests_from_the_trials_so_far_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"""
    method: bayes
    run_cap: 3
    metric: {{name: loss}}
    parameters:
      seed: {{min: 0, max: 9}}
      calls: {{value: {calls}}}
    """
    sweep = write_sweep(tmp_path, QUICK_PROGRAM, body)
    monkeypatch.setitem(sys.modules, "sweeps", None)
    with pytest.raises(ValueError, match="method bayes needs W&B's open-source `sweeps` package"):
        run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
    suggested = []
    package = fake_sweeps_package(suggested)
    original_next_run = package.next_run
    package.next_run = lambda config, runs: original_next_run({**config, "calls": str(calls)}, runs)
    monkeypatch.setitem(sys.modules, "sweeps", package)
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
    assert outcome.finished == ["0000", "0001", "0002"]
    assert [len(history) for history in suggested] == [0, 1, 2]
    assert suggested[2][0] == ("0000", "finished", {})
    (tmp_path / "runs" / "sweep" / "trials" / "0001" / "summary.json").unlink()
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
    assert (outcome.skipped, outcome.finished, len(suggested)) == (["0000", "0002"], ["0001"], 3)
    assert calls.read_text().split() == ["0", "1", "2", "1"]
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert "suggested from the finished ones (3 so far)" in capsys.readouterr().out
    (tmp_path / "program.py").unlink()  # the dry run checks the program as a run does
    with pytest.raises(SystemExit) as exited:
        main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"])
    assert exited.value.code == 2 and "program program.py is not a file" in capsys.readouterr().err
    absolute = tmp_path / "nowhere" / "program.py"
    sweep.write_text(sweep.read_text().replace("program: program.py", f"program: {absolute}"))
    with pytest.raises(SystemExit) as exited:
        main(["run", str(sweep), "--root", str(tmp_path / "other-runs"), "--dry-run"])
    assert capsys.readouterr().err.rstrip().endswith(f"program {absolute} is not a file")


def test_trials_share_the_cores_unless_the_environment_sets_threads(tmp_path, monkeypatch):
    spec = load_sweep(write_sweep(tmp_path, QUICK_PROGRAM, "method: grid\nparameters:\n  seed: {values: [0]}\n"))
    trial = expand_trials(spec)[0]
    assert [trial_threads(w, cores=8) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        trial_threads(0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    shared = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path, threads=3).command(trial)[1]
    assert (shared["OMP_NUM_THREADS"], shared["MKL_NUM_THREADS"], shared["OPENBLAS_NUM_THREADS"]) == ("3",) * 3
    for variable in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty: not a setting
    assert (
        TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path, threads=3).command(trial)[1]["MKL_NUM_THREADS"]
        == "3"
    )
    monkeypatch.setenv("MKL_NUM_THREADS", "5")  # one of them set: the trials inherit them all as they are
    chosen = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path, threads=3).command(trial)[1]
    assert (chosen["OMP_NUM_THREADS"], chosen["MKL_NUM_THREADS"], chosen.get("OPENBLAS_NUM_THREADS")) == ("", "5", None)
    untouched = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path).command(trial)[1]
    assert untouched["MKL_NUM_THREADS"] == "5" and "OPENBLAS_NUM_THREADS" not in untouched


def test_dry_run_checks_what_a_run_checks_and_marks_finished_trials(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    (tmp_path / "table.csv").write_text("thickness,age\n10,20\n15,33\n")
    body = f"""
        name: dry
        method: random
        run_cap: 2
        metric: {{name: mae, goal: minimize}}
        parameters:
          scale: {{distribution: uniform, min: 1.0, max: 2.0}}
          table: {{value: {tmp_path / "table.csv"}}}
        """
    sweep = write_sweep(tmp_path, TABLE_PROGRAM, body)
    run = ["run", str(sweep), "--root", str(tmp_path / "runs")]
    for extra, words in [
        (["--count", "-2"], "argument --count: must be >= 1, got '-2'"),
        (["--count", "0"], "argument --count: must be >= 1, got '0'"),
        (["--workers", "0"], "argument --workers: must be >= 1, got '0'"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main([*run, "--dry-run", *extra])
        assert exited.value.code == 2 and words in capsys.readouterr().err
    assert main([*run, "--count", "1"]) == 0
    capsys.readouterr()
    assert main([*run, "--dry-run", "--workers", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(finished: skipped)" in lines[0] and "(finished" not in lines[1]
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert (
        lines[-1] == f"2 trials, 1 finished before; each trial runs with OMP_NUM_THREADS={share}, "
        f"MKL_NUM_THREADS={share}, OPENBLAS_NUM_THREADS={share}"
    )
    for argv in ([*run, "--dry-run", "--seed", "3"], [*run, "--seed", "3"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and "drawn with --seed 0, not 3; run it with --seed 0" in capsys.readouterr().err


@pytest.mark.parametrize("blocked", ["file", "broken link"])
def test_a_root_that_cannot_hold_the_sweep_is_refused_by_a_run_and_its_dry_run(tmp_path, capsys, monkeypatch, blocked):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    if blocked == "file":
        root.write_text("notes")
        why = f"{root} is a file"
    else:
        root.symlink_to(tmp_path / "moved-away")
        why = f"{root} is a link to {tmp_path / 'moved-away'}, which leads to no file or folder"
    sweep = write_sweep(tmp_path, TABLE_PROGRAM, "name: blocked\nmethod: grid\nparameters: {scale: {value: 1.0}}\n")
    for dry_run in (["--dry-run"], []):
        with pytest.raises(SystemExit) as exited:
            main(["run", str(sweep), "--root", str(root), *dry_run])
        error = capsys.readouterr().err
        assert exited.value.code == 2 and f"{why}, so {root / 'blocked' / 'sweep.json'} cannot be made" in error
        assert error.rstrip().endswith("; give another --root")
    assert root.is_symlink() or root.read_text() == "notes"


def test_a_run_and_its_dry_run_warn_of_log_bounds_written_as_values(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = """
        name: warned
        method: random
        run_cap: 1
        parameters:
          scale: {distribution: log_uniform, min: 0.0001, max: 0.1}
        """
    sweep = write_sweep(tmp_path, TABLE_PROGRAM, body)
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    error = capsys.readouterr().err
    assert (
        error.startswith("warning: ") and "parameters.scale: log_uniform's min and max are natural logarithms" in error
    )


def test_a_grid_run_with_count_is_reported_as_part_of_the_sweep(tmp_path, monkeypatch):
    from sodeep.sweeps.report import write_report

    monkeypatch.chdir(tmp_path)
    block = tmp_path / "no-block"  # absent: each trial ends at once
    sweep = write_sweep(
        tmp_path,
        LATE_PROGRAM,
        f"method: grid\nparameters:\n  seed: {{values: [0, 1, 2, 3]}}\n  block: {{value: {block}}}\n",
    )
    run_sweep(load_sweep(sweep), tmp_path / "runs", count=2, echo=lambda line: None)
    write_report(tmp_path / "runs" / "sweep", plots=False)
    text = (tmp_path / "runs" / "sweep" / "report.md").read_text()
    assert "**Partial:** 2 of the sweep's 4 trials have not started" in text
    run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
    write_report(tmp_path / "runs" / "sweep", plots=False)
    assert "Partial" not in (tmp_path / "runs" / "sweep" / "report.md").read_text()


#: Writes, by seed: 0 a good summary of `loss`, 1 text that is not JSON, 2 a metric that is no
#: number, 3 a good summary of `other` only; 3 exits 5, the others 0.
ODD_SUMMARY_PROGRAM = """
import argparse, json, os, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
seed = parser.parse_args().seed
path = pathlib.Path(os.environ["SODEEP_SWEEP_TRIAL_SUMMARY"])
metrics = {0: {"loss": 0.5}, 2: {"loss": "abc"}, 3: {"other": 1.0}}.get(seed)
summary = {"schema": "sodeep-trial/1", "params": {"seed": seed}, "config": {}, "metrics": metrics,
           "status": "finished", "seconds": 0}
path.write_text("{not json" if seed == 1 else json.dumps(summary))
raise SystemExit(5 if seed == 3 else 0)
"""


def test_an_unreadable_summary_fails_its_trial_with_the_reason_and_the_report_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = "method: grid\nmetric: {name: loss}\nparameters:\n  seed: {values: [0, 1, 2, 3]}\n"
    sweep = write_sweep(tmp_path, ODD_SUMMARY_PROGRAM, body)
    lines = []
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append)
    assert outcome.finished == ["0000", "0003"] and outcome.failed == ["0001", "0002"]
    failed = [line for line in lines if " failed " in line]
    assert "is not a JSON trial summary" in failed[0] and "loss must be a number, got 'abc'" in failed[1]
    assert "0001/summary.unreadable.json" in failed[0] and "summary.json " not in failed[0]  # where the file is now
    assert "note: trial 0003 reported no loss, the sweep's metric (it reported other)" in lines
    assert any(line.startswith("note: trial 0003 wrote its finished summary, then exited 5: see") for line in lines)
    trials = tmp_path / "runs" / "sweep" / "trials"
    kept = json.loads((trials / "0001" / "summary.json").read_text())
    assert kept["status"] == "failed" and "summary.unreadable.json" in kept["error"]
    assert (trials / "0001" / "summary.unreadable.json").read_text() == "{not json"
    assert main(["report", str(tmp_path / "runs" / "sweep"), "--no-plots"]) == 0
    text = (tmp_path / "runs" / "sweep" / "report.md").read_text()
    assert "1 setting from 2 finished trials (2 failed" in text
    # A second run reruns the failed trials only.
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append).failed == ["0001", "0002"]


def test_reports_say_when_the_sweep_metric_is_missing_and_when_no_metric_was_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = "method: grid\nmetric: {name: never_logged, goal: maximize}\nparameters:\n  seed: {values: [0, 3]}\n"
    sweep = write_sweep(tmp_path, ODD_SUMMARY_PROGRAM, body)
    run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None)
    assert main(["report", str(tmp_path / "runs" / "sweep"), "--no-plots"]) == 0
    text = (tmp_path / "runs" / "sweep" / "report.md").read_text()
    assert "the sweep's metric `never_logged` is in no finished trial's summary; they report `loss`, `other`" in text
    (tmp_path / "quiet").mkdir()
    monkeypatch.chdir(tmp_path / "quiet")
    sweep = write_sweep(
        tmp_path / "quiet", "print('no summary')\n", "method: grid\nparameters:\n  seed: {values: [0]}\n"
    )
    run_sweep(load_sweep(sweep), tmp_path / "quiet" / "runs", echo=lambda line: None)
    assert main(["report", str(tmp_path / "quiet" / "runs" / "sweep"), "--no-plots"]) == 0
    assert (
        "**No metrics:** no finished trial reported a number"
        in (tmp_path / "quiet" / "runs" / "sweep" / "report.md").read_text()
    )


def test_the_report_of_a_sweep_stopped_at_its_target_is_not_partial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = "method: grid\nmetric: {name: loss, target: 1}\nparameters:\n  seed: {values: [3, 1, 0, 2]}\n"
    sweep = write_sweep(tmp_path, SUMMARY_PROGRAM, body)
    lines = []
    run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append)
    assert main(["report", str(tmp_path / "runs" / "sweep"), "--no-plots"]) == 0
    text = (tmp_path / "runs" / "sweep" / "report.md").read_text()
    assert "Partial" not in text
    assert (
        "**Target reached:** a trial's `loss` <= 1, so the sweep stops: its 2 trials not started will not run." in text
    )
    run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append)
    assert lines[-1] == "metric loss reached its target in a finished trial: no new trials"


#: Ignores SIGINT, writes its pid, then sleeps: only SIGKILL stops it.
STUBBORN_PROGRAM = """
import argparse, os, pathlib, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
parser = argparse.ArgumentParser()
parser.add_argument("--pid")
arguments = parser.parse_args()
pathlib.Path(arguments.pid).write_text(str(os.getpid()))
time.sleep(60)
"""


def test_a_second_sigterm_stops_the_trials_at_once_and_leaves_none_running(tmp_path, monkeypatch):
    import signal
    import subprocess

    monkeypatch.chdir(tmp_path)
    pid = tmp_path / "trial.pid"
    sweep = write_sweep(tmp_path, STUBBORN_PROGRAM, f"method: grid\nparameters:\n  pid: {{value: {pid}}}\n")
    command = [sys.executable, "-m", "sodeep", "sweep", "run", str(sweep), "--root", str(tmp_path / "runs")]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid.exists() and pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the runner is waiting out the trial's grace period
    runner.send_signal(signal.SIGTERM)
    _, error = runner.communicate(timeout=30)
    assert runner.returncode == 130, error
    assert time.monotonic() - started < runner_module.STOP_GRACE_SECONDS  # no grace period after the second
    assert "1 stopped" in error
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid.read_text()), 0)  # the trial is gone


#: Writes its pid, then sleeps; a ctrl-C ends it.
SLEEPING_PROGRAM = """
import argparse, os, pathlib, time
parser = argparse.ArgumentParser()
parser.add_argument("--pid")
arguments = parser.parse_args()
pathlib.Path(arguments.pid).write_text(str(os.getpid()))
time.sleep(60)
"""


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the runner's death reaches a trial through Linux's prctl"
)
def test_a_trial_stops_when_its_runner_is_killed(tmp_path, monkeypatch):
    import signal
    import subprocess

    monkeypatch.chdir(tmp_path)
    pid = tmp_path / "trial.pid"
    sweep = write_sweep(tmp_path, SLEEPING_PROGRAM, f"method: grid\nparameters:\n  pid: {{value: {pid}}}\n")
    command = [sys.executable, "-m", "sodeep", "sweep", "run", str(sweep), "--root", str(tmp_path / "runs")]
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (pid.exists() and pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    trial = int(pid.read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _running(trial) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(trial)


@pytest.mark.parametrize("record", ["not json", "[1, 2]", '{"spec": []}'])
def test_a_damaged_sweep_record_is_named_in_one_line(tmp_path, capsys, monkeypatch, record):
    monkeypatch.chdir(tmp_path)
    sweep = write_sweep(tmp_path, QUICK_PROGRAM, "name: quick\nmethod: grid\nparameters:\n  seed: {values: [0]}\n")
    folder = tmp_path / "runs" / "quick"
    (folder / "trials").mkdir(parents=True)
    (folder / "sweep.json").write_text(record)
    for argv in (["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"], ["report", str(folder)]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        error = capsys.readouterr().err
        assert exited.value.code == 2 and f"{folder / 'sweep.json'} is not a sweep record (" in error, error
        assert error.count("\n") == 1


def test_every_wandb_folder_of_a_trial_is_inside_the_trial_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "home-cache"))  # the user's own: not for the trials
    spec = load_sweep(write_sweep(tmp_path, QUICK_PROGRAM, "method: grid\nparameters:\n  seed: {values: [0]}\n"))
    trial = expand_trials(spec)[0]
    launcher = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path)
    environment = launcher.command(trial)[1]
    folder = launcher.trial_folder(trial)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        assert Path(environment[variable]).is_relative_to(folder), variable
    assert environment["WANDB_ERROR_REPORTING"] == "false"


def test_a_report_on_a_sweeps_trials_folder_names_the_sweep_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"name: quick\nmethod: grid\nparameters:\n  seed: {{values: [0]}}\n  calls: {{value: {calls}}}\n"
    assert main(["run", str(write_sweep(tmp_path, QUICK_PROGRAM, body)), "--root", str(tmp_path / "runs")]) == 0
    folder = tmp_path / "runs" / "quick"
    for inside in (folder / "trials", folder / "trials" / "0000"):
        with pytest.raises(SystemExit) as exited:
            main(["report", str(inside), "--no-plots"])
        assert (
            exited.value.code == 2
            and f"is inside the sweep folder {folder}: report that folder" in capsys.readouterr().err
        )
        assert not (inside / "report.md").exists()


def test_a_negative_seed_is_refused_naming_the_option(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("program: x.py\nmethod: grid\nparameters:\n  a:\n    values: [1]\n")
    with pytest.raises(SystemExit) as raised:
        main(["run", str(spec), "--root", str(tmp_path / "root"), "--seed", "-1"])
    assert raised.value.code == 2 and "argument --seed: must be >= 0, got '-1'" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def _sodeep_sweep(tmp_path, steps=40):
    """A one-trial sweep of ``python -m sodeep pretrain`` with frequent checkpoints."""
    (tmp_path / "program.py").write_text("")  # W&B asks for a program; the command runs sodeep
    path = tmp_path / "sweep.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: resumable
            program: program.py
            method: grid
            parameters:
              seed: {{values: [0]}}
            command:
              - ${{env}}
              - ${{interpreter}}
              - -m
              - sodeep
              - pretrain
              - --steps={steps}
              - --batch-size=8
              - --lengths=2-8
              - --validation-every=1000
              - --checkpoint-every=2
              - --data-workers=0
              - --out=run
              - --wandb=disabled
              - ${{args}}
            """
        )
    )
    return path


@pytest.mark.parametrize(
    "command, resumes",
    [
        (["/usr/bin/env", "sodeep", "pretrain", "--out=x"], True),
        (["/usr/bin/env", "/venv/bin/python", "-m", "sodeep", "brainage", "tabular"], True),
        (["sodeep", "bench", "--quick"], True),
        (["/usr/bin/env", "sodeep", "export", "a", "b"], False),  # nothing to resume: starts again
        (["/usr/bin/env", "python", "train.py", "sodeep"], False),
        (["/usr/bin/env", "python", "-m", "other", "pretrain"], False),
    ],
)
def test_only_sodeeps_commands_that_resume_their_run_are_resumed(command, resumes):
    from sodeep.sweeps.launcher import resumes_its_run

    assert resumes_its_run(command) == resumes


@pytest.mark.parametrize(
    "sodeep_command, resumes", [("bench", True), ("export", False), ("bench --overwrite=True", False)]
)
@pytest.mark.parametrize("how", ["stopped", "cut short", "failed"])
def test_a_stopped_trial_keeps_its_folder_and_log_where_its_command_resumes(tmp_path, sodeep_command, resumes, how):
    spec = load_sweep(write_sweep(tmp_path, QUICK_PROGRAM, "method: grid\nparameters:\n  seed: {values: [0]}\n"))
    trial = expand_trials(spec)[0]
    launcher = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path)
    command = [sys.executable, "-m", "sodeep", *sodeep_command.split(), "--help"]  # harmless, and sodeep's
    launcher.command = lambda trial, _command=launcher.command: (command, _command(trial)[1])
    folder = launcher.trial_folder(trial)
    folder.mkdir(parents=True)
    (folder / "work.txt").write_text("the earlier attempt's files")
    (folder / "output.log").write_text("first attempt\n")
    ending = {"stopped": {"returncode": 130, "stopped": True}, "cut short": {}, "failed": {"returncode": 1}}[how]
    record = {"trial": trial.id, "params": trial.params, "command": command, "seconds": 1000.0, **ending}
    (folder / "trial.json").write_text(json.dumps(record))
    kept = resumes and how != "failed"
    running = launcher.start(trial)
    assert running.environment.get("SODEEP_RESUME_STARTED") == ("1" if kept else None)
    running.process.wait()
    launcher.finish(running, running.process.returncode)
    assert (folder / "work.txt").exists() == kept
    assert (folder / "output.log").read_text().startswith("first attempt") == kept
    finished = json.loads((folder / "trial.json").read_text())
    assert finished["resumed"] == kept
    # A resumed trial's time adds up its attempts; one started again counts from its new start.
    summary = json.loads((folder / "summary.json").read_text())
    assert (finished["seconds"] > 1000) == kept and (summary["seconds"] > 1000) == kept
    assert finished["seconds"] < 1100


def test_a_sweep_stopped_during_a_pretraining_trial_resumes_it_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SODEEP_RESUME_STARTED", raising=False)
    sweep = _sodeep_sweep(tmp_path)
    trial = tmp_path / "runs" / "resumable" / "trials" / "0000"

    def stop_once_checkpointed(line):
        if "started" in line:
            deadline = time.monotonic() + 120
            while not (trial / "run" / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted) as interrupted:
        run_sweep(load_sweep(sweep), tmp_path / "runs", echo=stop_once_checkpointed)
    assert interrupted.value.stopped == 1 and "sodeep's commands resume their run" in str(interrupted.value)
    record = json.loads((trial / "trial.json").read_text())
    assert record["stopped"] is True and record["returncode"] == 130 and record["seconds"] > 0
    first_log = (trial / "output.log").read_text()
    assert "interrupted at step" in first_log, first_log
    lines = []
    outcome = run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append)
    assert outcome.finished == ["0000"] and lines[0].startswith("trial 0000 (1/1) resumed: ")
    log = (trial / "output.log").read_text()
    assert log.startswith(first_log) and "resuming this trial after a stop" in log
    assert "resuming run from step" in log and (trial / "run" / "sorter.pt").is_file()
    summary = json.loads((trial / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["seconds"] > record["seconds"]


def test_an_attempt_cut_short_by_a_killed_runner_counts_until_its_last_line(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, QUICK_PROGRAM, "method: grid\nparameters:\n  seed: {values: [0]}\n"))
    trial = expand_trials(spec)[0]
    launcher = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path)
    command = [sys.executable, "-m", "sodeep", "bench", "--help"]  # harmless, and one of sodeep's that resume
    launcher.command = lambda trial, _command=launcher.command: (command, _command(trial)[1])
    folder = launcher.trial_folder(trial)
    folder.mkdir(parents=True)
    started = time.time() - 1000
    record = {
        "trial": trial.id,
        "params": trial.params,
        "command": command,
        "started": started,
        "earlier_seconds": 50.0,
    }
    (folder / "trial.json").write_text(json.dumps(record))  # no exit status: the runner was killed
    (folder / "output.log").write_text("the attempt's lines\n")
    os.utime(folder / "output.log", (started + 30, started + 30))  # its last line, 30 s in
    running = launcher.start(trial)
    running.process.wait()
    launcher.finish(running, running.process.returncode)
    seconds = json.loads((folder / "trial.json").read_text())["seconds"]
    assert 80 <= seconds < 90  # 50 before it, 30 of it, and the last attempt's


HOLDING_PROGRAM = """
import fcntl, os, pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
descriptor = os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.ftruncate(descriptor, 0)  # as sodeep does: a shorter pid must not leave a longer one's last digits
os.write(descriptor, str(os.getpid()).encode())
(folder / "held").write_text("")
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run folders are locked with flock")
@pytest.mark.parametrize("holds_for", [1.0, 30.0])
def test_a_trial_waits_for_an_attempt_left_running_in_its_folder(tmp_path, monkeypatch, holds_for):
    import subprocess

    from sodeep.sweeps import launcher as launcher_module

    monkeypatch.setattr(launcher_module, "LEFT_RUNNING_WAIT_SECONDS", 5.0)
    spec = load_sweep(write_sweep(tmp_path, QUICK_PROGRAM, "method: grid\nparameters:\n  seed: {values: [0]}\n"))
    trial = expand_trials(spec)[0]
    lines = []
    launcher = TrialLauncher(spec, tmp_path / "runs", "offline", tmp_path, echo=lines.append)
    run = launcher.trial_folder(trial) / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_PROGRAM, str(run), str(holds_for)])
    try:
        deadline = time.monotonic() + 30
        while not (run / "held").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if holds_for < 5:
            running = launcher.start(trial)  # once the left attempt has ended
            assert holder.poll() is not None
            running.process.wait()
            launcher.finish(running, running.process.returncode)
        else:
            with pytest.raises(ValueError) as refused:
                launcher.start(trial)
            assert str(refused.value).startswith(
                f"trial 0000: a sodeep command (process {holder.pid}) still runs in its folder (an attempt left running"
            )
            assert (run / "held").exists()  # its folder is not cleared under it
    finally:
        holder.kill()
        holder.wait()
    assert lines == [
        f"trial 0000: a sodeep command (process {holder.pid}) still runs in its folder; waiting up to 5 s for it to end"
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run folders are locked with flock")
def test_dry_run_marks_a_trial_whose_attempt_still_runs(tmp_path, capsys, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"method: grid\nparameters:\n  seed: {{values: [0, 1]}}\n  calls: {{value: {calls}}}\n"
    spec_file = write_sweep(tmp_path, QUICK_PROGRAM, body)
    spec = load_sweep(spec_file)
    assert main(["run", str(spec_file), "--root", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    trial_folder = TrialLauncher(spec, tmp_path / "runs" / spec.folder_name, "offline", tmp_path).trial_folder(
        expand_trials(spec)[1]
    )
    (trial_folder / "summary.json").unlink()  # trial 1 did not finish: its runner was killed
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_PROGRAM, str(trial_folder / "run"), "30"])
    try:
        deadline = time.monotonic() + 30
        while not (trial_folder / "run" / "held").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(["run", str(spec_file), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
        lines = capsys.readouterr().out.splitlines()
        with pytest.raises(SystemExit) as exited:  # as a run would: a folder in use is not cleared
            main(["run", str(spec_file), "--root", str(tmp_path / "runs"), "--dry-run", "--overwrite"])
        error = capsys.readouterr().err
        assert (
            exited.value.code == 2
            and "which holds a run folder in use" in error
            and error.endswith("give another --root\n")
        )
    finally:
        holder.kill()
        holder.wait()
    assert "(finished: skipped)" in lines[0]
    assert lines[1].startswith(f"{trial_folder} (an attempt still runs in its folder): ")
    assert (
        "; 1 trial still running from an earlier run: a run waits up to 60 s for each to end, then stops" in lines[-1]
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run folders are locked with flock")
def test_dry_run_of_a_sweep_that_runs_is_refused_as_a_run_would_be(tmp_path, capsys, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    body = f"method: grid\nparameters:\n  seed: {{values: [0]}}\n  calls: {{value: {tmp_path / 'calls.txt'}}}\n"
    spec_file = write_sweep(tmp_path, QUICK_PROGRAM, body)
    assert main(["run", str(spec_file), "--root", str(tmp_path / "runs")]) == 0
    folder = tmp_path / "runs" / load_sweep(spec_file).folder_name
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_PROGRAM, str(folder), "30"])  # a second run of it
    try:
        deadline = time.monotonic() + 30
        while not (folder / "held").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (folder / "held").unlink()
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["run", str(spec_file), "--root", str(tmp_path / "runs"), "--dry-run"])
    finally:
        holder.kill()
        holder.wait()
    error = capsys.readouterr().err
    assert exited.value.code == 2 and f"{folder} is in use by a running sodeep command (process {holder.pid})" in error


def test_a_dry_run_and_a_run_both_say_that_early_terminate_waits_for_the_server(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    body = "method: grid\nearly_terminate: {type: hyperband, min_iter: 3}\nparameters:\n  seed: {values: [3]}\n"
    sweep = write_sweep(tmp_path, SUMMARY_PROGRAM, body)
    note = "note: early_terminate needs W&B's server; offline every trial runs to its end"
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert note in capsys.readouterr().out.splitlines()
    lines = []
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lines.append).finished == ["0000"]
    assert note in lines


def test_a_missing_sweep_file_is_named_as_such(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "absent.yaml"), "--dry-run"])
    assert exit_info.value.code == 2
    assert f"no sweep file at {tmp_path / 'absent.yaml'}" in capsys.readouterr().err
    (tmp_path / "given.yaml").write_text("method: grid\n")
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "given.yaml")])
    assert (
        "given.yaml is a sweep file: report the folder a sweep run made, ROOT/<the sweep's name>"
        in capsys.readouterr().err
    )


def test_an_interrupt_counts_the_trials_that_failed():
    message = str(SweepInterrupted(Path("runs/s"), 1, 6, 1, failed=2))
    assert message.startswith("sweep interrupted: 1 of 6 trials finished, 1 stopped, 2 failed (")


def test_a_lowered_run_cap_keeps_the_trials_beyond_it_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "table.csv").write_text("thickness,age\n10,20\n15,33\n")
    body = f"""
        name: capped
        method: grid
        run_cap: {{cap}}
        metric: {{{{name: mae, goal: minimize}}}}
        parameters:
          scale: {{{{values: [1.0, 1.5, 2.0, 2.5]}}}}
          table: {{{{value: {tmp_path / "table.csv"}}}}}
        """
    root = tmp_path / "runs"
    sweep = write_sweep(tmp_path, TABLE_PROGRAM, body.format(cap=4))
    assert main(["run", str(sweep), "--root", str(root)]) == 0
    sweep = write_sweep(tmp_path, TABLE_PROGRAM, body.format(cap=2))
    capsys.readouterr()
    assert main(["run", str(sweep), "--root", str(root), "--dry-run"]) == 0  # the checks a run makes, and its notes
    assert "note: 2 trials (0002-0003) from a run with a larger run_cap" in capsys.readouterr().out
    assert main(["run", str(sweep), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert (
        "note: 2 trials (0002-0003) from a run with a larger run_cap than 2 stay in the folder and in its report" in out
    )
    assert main(["report", str(root / "capped"), "--no-plots"]) == 0
    text = (root / "capped" / "report.md").read_text()
    assert "**Beyond run_cap:** 2 trials of the folder were started by a run with a larger `run_cap`" in text
    assert "Partial" not in text and "4 settings from 4 finished trials" in text


def test_a_sweep_root_inside_a_run_folder_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('{"command": "pretrain", "config": {}}')
    sweep = write_sweep(tmp_path, QUICK_PROGRAM, "name: nested\nmethod: grid\nparameters: {seed: {value: 0}}\n")
    for dry_run in (["--dry-run"], []):
        with pytest.raises(SystemExit) as exited:
            main(["run", str(sweep), "--root", str(tmp_path / "run" / "sweeps"), *dry_run])
        error = capsys.readouterr().err
        assert exited.value.code == 2
        assert f"{tmp_path / 'run' / 'sweeps' / 'nested'} is inside the run folder {tmp_path / 'run'}" in error
    # A root that is a link into the run folder, and a sweep folder that is one.
    (tmp_path / "run" / "inner").mkdir()
    (tmp_path / "linked-root").symlink_to(tmp_path / "run" / "inner")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "nested").symlink_to(tmp_path / "run" / "inner")
    for root in ("linked-root", "root"):
        with pytest.raises(SystemExit) as exited:
            main(["run", str(sweep), "--root", str(tmp_path / root)])
        assert exited.value.code == 2
        assert f"is inside the run folder {tmp_path / 'run'}" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "run").rglob("*")) == ["inner", "run.json"]


def test_grid_values_a_command_line_spells_alike_are_noted_in_a_dry_run_and_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    body = f"name: alike\nmethod: grid\nparameters:\n  seed: {{values: [1, 1.0, 2, '2', '1']}}\n  calls: {{value: {calls}}}\n"
    sweep = write_sweep(tmp_path, QUICK_PROGRAM.replace("seed == 1", "seed == -1"), body)
    note = (
        "note: 2 trials (0002 as 0001, 0003 as 0000) pass the same command-line arguments as an earlier trial "
        "(values such as 2 and '2' in the sweep file)"
    )
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert note in capsys.readouterr().out.splitlines()
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs")]) == 0
    assert note in capsys.readouterr().out.splitlines()
    assert calls.read_text().split() == ["1", "2", "2", "1"]  # W&B's grid keeps them apart: each runs
    # A command that passes the parameters as JSON tells them apart: no note.
    json_command = (
        body.replace("name: alike", "name: alike-json") + 'command: ["${interpreter}", "-c", "pass", "${args_json}"]\n'
    )
    sweep.write_text("program: program.py\n" + json_command)
    assert main(["run", str(sweep), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert "the same command-line arguments" not in capsys.readouterr().out


def test_the_changes_of_a_sweep_file_are_named_key_by_key():
    from sodeep.sweeps.runner import spec_changes

    held = {"method": "grid", "parameters": {"seed": {"values": [0, 1]}, "lr": {"value": 1}}}
    given = {"method": "grid", "description": None, "parameters": {"seed": {"values": [0, 1, 2]}, "wd": {"value": 2}}}
    assert spec_changes(held, given) == [
        "parameters.seed.values: [0, 1] -> [0, 1, 2]",
        'parameters.lr: {"value": 1} -> (absent)',
        'parameters.wd: (absent) -> {"value": 2}',
        "description: (absent) -> null",  # a key added as null is a change too
    ]
    assert spec_changes(held, held) == []


def test_a_change_inside_a_long_list_of_a_sweep_file_is_named_by_its_place():
    from sodeep.sweeps.runner import spec_changes

    command = ["${env}", "sodeep", "brainage", "tabular", "--folds=2", "--max-epochs=2", "${args}"]
    changed = [*command[:5], "--max-epochs=3", command[6]]
    assert spec_changes({"command": command}, {"command": changed}) == [
        'command[5]: "--max-epochs=2" -> "--max-epochs=3"'
    ]
    # A short list is shown whole; a long one of another length from where it differs.
    assert spec_changes({"values": [0, 1]}, {"values": [0, 2]}) == ["values: [0, 1] -> [0, 2]"]
    seeds = list(range(30))
    assert spec_changes({"values": seeds}, {"values": [*seeds, 30]}) == ["values[30:]: [] -> [30]"]
    assert spec_changes({"values": seeds}, {"values": [*seeds[:5], 99]}) == [
        "values[5:]: [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1... -> [99]"
    ]


def test_the_advice_to_finish_a_sweep_runs_the_program_as_it_was_started(monkeypatch):
    import argparse
    import sys

    from sodeep.sweeps.cli import again

    arguments = argparse.Namespace(sweep_file="s.yaml", root="sweeps", workers=1, seed=0, count=None, wandb="offline")
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "sodeep", "sweep", "run", "s.yaml"])
    assert again(arguments) == "python3 -m sodeep sweep run s.yaml --root sweeps --workers 1 --seed 0"


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (1.5, ValueError), (True, ValueError)])
def test_a_bad_seed_from_python_is_refused_naming_it_before_any_folder(tmp_path, seed, error):
    sweep = write_sweep(
        tmp_path, TABLE_PROGRAM, "name: seeded\nmethod: random\nrun_cap: 2\nparameters: {scale: {values: [1, 2]}}\n"
    )
    with pytest.raises(error, match=rf"^seed must be an integer >= 0, got {re.escape(repr(seed))}$"):
        run_sweep(load_sweep(sweep), tmp_path / "runs", seed=seed)
    assert not (tmp_path / "runs").exists()


def test_a_sweep_is_given_as_its_file_or_as_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.txt"
    sweep = write_sweep(
        tmp_path,
        QUICK_PROGRAM,
        f"name: by-path\nmethod: grid\nparameters: {{seed: {{value: 0}}, calls: {{value: '{calls}'}}}}\n",
    )
    assert run_sweep(str(sweep), tmp_path / "runs", echo=lambda line: None).finished == ["0000"]
    assert run_sweep(load_sweep(sweep), tmp_path / "runs", echo=lambda line: None).skipped == ["0000"]
    with pytest.raises(
        TypeError, match=r"^spec must be a sweep \(load_sweep\(path\)\) or the path of its file, got dict$"
    ):
        run_sweep({"method": "grid"}, tmp_path / "runs")
    assert calls.read_text() == "0\n"  # the one trial ran once
