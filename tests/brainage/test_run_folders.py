"""A brain-age output folder holds one configuration whose results grow; --resume continues,
--overwrite starts again, and SIGINT/SIGTERM stop cleanly with the command that resumes."""

import json
import os
import shlex
import signal

import pytest
import torch
from brainage_inputs import folder_state, remembering, tiny_argv, write_inputs

import sodeep.brainage.cross_validation as cross_validation
import sodeep.brainage.synthetic_mri as synthetic_mri
from sodeep.brainage.training import AgeRegression
from sodeep.cli import main


@pytest.fixture(scope="module")
def brainage_inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def simulated_once(monkeypatch):
    """Synthetic subjects simulated once per session (see ``brainage_inputs.remembering``)."""
    monkeypatch.setattr(synthetic_mri, "simulate_subject", remembering(synthetic_mri.simulate_subject))


def wandb_variables():
    """The process's W&B variables but ``WANDB_SERVICE``, W&B's own note of its service process."""
    return {name: value for name, value in os.environ.items() if name.startswith("WANDB") and name != "WANDB_SERVICE"}


def brainage(command, out, inputs, *flags, wandb="disabled"):
    return main(["brainage", command, *tiny_argv(command, inputs), "--out", str(out), "--wandb", wandb, *flags])


@pytest.fixture
def trained(monkeypatch):
    """The (preset, seed, fold) of every training run started, in order."""
    runs = []
    original = cross_validation.fit_age_model

    def spy(*arguments, **options):
        runs.append(tuple(options["run"].values()))
        return original(*arguments, **options)

    monkeypatch.setattr(cross_validation, "fit_age_model", spy)
    return runs


def _without_wandb(state, out):
    return {path: mtime for path, mtime in state.items() if not path.is_relative_to(out / "wandb")}


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_more_presets_and_seeds_train_only_the_new_runs_and_keep_every_finished_one(
    tmp_path, brainage_inputs, trained, capsys
):
    out = tmp_path / "out"
    assert brainage("tabular", out, brainage_inputs, "--losses", "l1", "l1+spearman", wandb="offline") == 0
    first = _results(out)
    checkpoints = folder_state(out / "checkpoints")
    record = json.loads((out / "run.json").read_text())
    trained.clear()
    capsys.readouterr()

    # Another preset list must not replace the folder's results: without --resume it is refused...
    untouched = folder_state(out)
    with pytest.raises(SystemExit) as exit_info:
        brainage("tabular", out, brainage_inputs, "--losses", "l1", "mse")
    assert exit_info.value.code == 2 and "already holds this run; add --resume" in capsys.readouterr().err
    # The same presets again: nothing to continue.
    with pytest.raises(SystemExit) as exit_info:
        brainage("tabular", out, brainage_inputs, "--losses", "l1", "l1+spearman")
    assert "already holds this run, finished: nothing to train; add --overwrite to train it again" in (
        capsys.readouterr().err
    )
    # (W&B's background service may still append to its own debug log under wandb/.)
    assert _without_wandb(folder_state(out), out) == _without_wandb(untouched, out) and not trained

    # ...and with --resume it trains mse alone, keeping l1 and l1+spearman (results, plots, checkpoints),
    # where training every run again, finished ones included, would waste them.
    environment = wandb_variables()
    assert brainage("tabular", out, brainage_inputs, "--losses", "l1", "mse", "--resume", wandb="offline") == 0
    assert wandb_variables() == environment
    assert trained == [("mse", 0, 0), ("mse", 0, 1)]
    assert "out: resuming; 2 of the 4 runs asked for are finished, 2 to train" in capsys.readouterr().out
    results = _results(out)
    assert list(results["presets"]) == ["l1", "l1+spearman", "mse"]
    assert results["presets"]["l1"]["runs"] == first["presets"]["l1"]["runs"]
    assert results["presets"]["l1+spearman"]["runs"] == first["presets"]["l1+spearman"]["runs"]
    assert set(results["comparisons"]) == {"baseline", "l1+spearman", "mse"}
    assert all(folder_state(out / "checkpoints")[path] == mtime for path, mtime in checkpoints.items())
    report = (out / "results.md").read_text()
    assert all(f"| {name} |" in report for name in ("l1", "l1+spearman", "mse"))
    assert sorted(path.name for path in (out / "plots").iterdir()) == ["l1+spearman.png", "l1.png", "mse.png"]
    # One W&B run per folder: the resumed command logged to the run of run.json.
    assert json.loads((out / "run.json").read_text())["run_id"] == record["run_id"]
    runs = {path.stem.removeprefix("run-") for path in (out / "wandb").glob("offline-run-*/run-*.wandb")}
    assert runs == {record["run_id"]}

    # A seed more: its runs alone.
    trained.clear()
    assert brainage("tabular", out, brainage_inputs, "--losses", "l1", "--seeds", "0", "1", "--resume") == 0
    assert trained == [("l1", 1, 0), ("l1", 1, 1)]
    results = _results(out)
    assert results["settings"]["seeds"] == [0, 1] and len(results["presets"]["l1"]["runs"]) == 4
    assert len(results["presets"]["mse"]["runs"]) == 2


def test_overwrite_clears_the_folder_first(tmp_path, brainage_inputs):
    out = tmp_path / "out"
    assert brainage("tabular", out, brainage_inputs, "--losses", "l1", "l1+spearman") == 0
    record = json.loads((out / "run.json").read_text())
    (out / "notes.txt").write_text("from before")
    assert brainage("tabular", out, brainage_inputs, "--losses", "mse", "--max-epochs", "3", "--overwrite") == 0
    assert not (out / "notes.txt").exists()
    assert list(_results(out)["presets"]) == ["mse"]
    assert sorted(path.name for path in (out / "plots").iterdir()) == ["mse.png"]
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["mse"]
    again = json.loads((out / "run.json").read_text())
    assert again["run_id"] != record["run_id"] and again["config"]["max_epochs"] == 3
    assert again["command"] == "brainage tabular" and "sodeep_version" in again


def _interrupt_at(monkeypatch, number, fold, epoch):
    """Send ``number`` to this process, once, in the first training step of ``epoch`` (0-based) of
    ``fold``; returns the epochs of every training step taken."""
    epochs, sent = [], []
    original = AgeRegression.training_step

    def step(self, batch, batch_index):
        epochs.append(self.current_epoch)
        if self.hparams.run["fold"] == fold and self.current_epoch == epoch and not sent:
            sent.append(number)
            os.kill(os.getpid(), number)
        return original(self, batch, batch_index)

    monkeypatch.setattr(AgeRegression, "training_step", step)
    return epochs


@pytest.mark.parametrize(
    "command,number", [("tabular", signal.SIGINT), ("tabular", signal.SIGTERM), ("nifti", signal.SIGINT)]
)
def test_a_signal_stops_cleanly_and_the_printed_command_resumes_to_the_same_results(
    tmp_path, brainage_inputs, monkeypatch, capsys, command, number
):
    # Not exit status 1 without a word, nor a run that starts again from epoch 0 (Lightning's own Ctrl-C).
    straight, out = tmp_path / "straight", tmp_path / "out"
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a job a shell started in the background
    assert brainage(command, straight, brainage_inputs, "--max-epochs", "4") == 0
    epochs = _interrupt_at(monkeypatch, number, fold=1, epoch=2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        brainage(command, out, brainage_inputs, "--max-epochs", "4")
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 130
    prefix = "interrupted at l1, seed 0, fold 1, epoch 3; resume with: sodeep "
    assert last_line.startswith(prefix) and last_line.endswith(f"--out {out} --wandb disabled --max-epochs 4 --resume")
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers given back
    # Nothing half-written: no temporary file, every file whole.
    assert not [path for path in out.rglob("*") if path.name.endswith(".tmp")]
    assert [(run["seed"], run["fold"]) for run in _results(out)["presets"]["l1"]["runs"]] == [(0, 0)]
    for path in out.rglob("*.ckpt"):
        torch.load(path, weights_only=True)

    epochs.clear()
    argv = shlex.split(last_line.split("resume with: sodeep ", 1)[1])
    assert main(argv) == 0
    assert epochs and min(epochs) == 2  # continued from its last epoch checkpoint, not from epoch 0
    resumed, expected = _results(out)["presets"]["l1"], _results(straight)["presets"]["l1"]
    for run, same in zip(resumed["runs"], expected["runs"], strict=True):
        assert run["test_predictions"] == same["test_predictions"] and run["epochs"] == same["epochs"] == 4
    rows = [line.split(",")[0] for line in (out / "curves/l1/seed0_fold1/metrics.csv").read_text().splitlines()[1:]]
    straight_rows = (straight / "curves/l1/seed0_fold1/metrics.csv").read_text().splitlines()[1:]
    assert rows == [line.split(",")[0] for line in straight_rows]  # every epoch logged once, in order


@pytest.mark.usefixtures("simulated_once")
def test_a_synthetic_run_interrupted_mid_training_continues_from_its_last_epoch(
    tmp_path, brainage_inputs, monkeypatch, capsys
):
    # An interrupted synthetic-MRI run must not start again from epoch 0.
    flags = ["--max-epochs", "3", "--augment", "--ema-decay", "0.9"]
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert brainage("synthetic", straight, brainage_inputs, *flags) == 0
    epochs = _interrupt_at(monkeypatch, signal.SIGINT, fold=0, epoch=1)
    with pytest.raises(SystemExit) as exit_info:
        brainage("synthetic", out, brainage_inputs, *flags)
    assert exit_info.value.code == 130
    assert "interrupted at l1, seed 0, epoch 2; resume with: " in capsys.readouterr().err
    epochs.clear()
    assert brainage("synthetic", out, brainage_inputs, *flags, "--resume") == 0
    assert min(epochs) == 1
    (run,) = _results(out)["presets"]["l1"]["runs"]
    (same,) = _results(straight)["presets"]["l1"]["runs"]
    assert run["test_predictions"] == same["test_predictions"]  # augmentation and EMA state resumed too


def _interrupt_the_simulation_at_subject_5(monkeypatch):
    """SIGINT to this process while subject 5 of the synthetic cohort is simulated; returns the
    simulator it replaces."""
    original = synthetic_mri.simulate_subject

    def simulate(seed, index, *arguments, **options):
        if index == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return original(seed, index, *arguments, **options)

    monkeypatch.setattr(synthetic_mri, "simulate_subject", simulate)
    return original


@pytest.mark.usefixtures("simulated_once")
def test_a_signal_while_data_is_prepared_stops_at_once_and_leaves_no_partial_file(
    tmp_path, brainage_inputs, monkeypatch, capsys
):
    original = _interrupt_the_simulation_at_subject_5(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        brainage("synthetic", out, brainage_inputs)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted at the synthetic cohort; resume")
    assert sorted(path.name for path in out.iterdir()) == ["run.json", "run.lock"]
    monkeypatch.setattr(synthetic_mri, "simulate_subject", original)
    assert brainage("synthetic", out, brainage_inputs, "--resume") == 0
    assert len(_results(out)["presets"]["l1"]["runs"]) == 1


@pytest.mark.usefixtures("simulated_once")
def test_synthetic_overwrite_keeps_the_previous_run_until_the_new_cohort_is_simulated(
    tmp_path, brainage_inputs, monkeypatch, capsys
):
    out = tmp_path / "out"
    assert brainage("synthetic", out, brainage_inputs) == 0
    before = {path: mtime for path, mtime in folder_state(out).items() if path.name != "run.lock"}
    original = _interrupt_the_simulation_at_subject_5(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        brainage("synthetic", out, brainage_inputs, "--max-epochs", "3", "--overwrite")
    assert exit_info.value.code == 130
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("interrupted before this command saved anything; run the same command again")
    after = {path: mtime for path, mtime in folder_state(out).items() if path.name != "run.lock"}
    assert after == before  # every file of the previous run, untouched
    monkeypatch.setattr(synthetic_mri, "simulate_subject", original)
    assert brainage("synthetic", out, brainage_inputs, "--max-epochs", "3", "--overwrite") == 0
    assert not (out / ".sodeep-previous-run").exists()
    assert json.loads((out / "run.json").read_text())["config"]["max_epochs"] == 3


def test_resuming_a_nifti_run_whose_volumes_changed_is_refused(tmp_path, capsys, monkeypatch):
    from brainage_inputs import write_manifest

    from sodeep.brainage import commands

    write_manifest(tmp_path)
    out = tmp_path / "out"
    assert brainage("nifti", out, tmp_path, "--max-epochs", "1") == 0
    assert brainage("nifti", out, tmp_path, "--max-epochs", "1", "--seeds", "0", "1", "--resume") == 0
    status = (tmp_path / "s3.nii.gz").stat()
    os.utime(tmp_path / "s3.nii.gz", ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # rewritten in place
    capsys.readouterr()
    record = (out / "run.json").read_bytes()
    # Refused before a W&B run starts (an offline run would leave an empty segment in the folder).
    monkeypatch.setattr(commands, "wandb_run", lambda *args: pytest.fail("a W&B run started before the refusal"))
    with pytest.raises(SystemExit) as exit_info:
        brainage("nifti", out, tmp_path, "--max-epochs", "1", "--seeds", "0", "1", "2", "--resume")
    assert (out / "run.json").read_bytes() == record  # the refused command's seeds are not recorded
    printed = capsys.readouterr()
    error = printed.err
    assert exit_info.value.code == 2
    assert "resuming" not in printed.out  # said only once the volumes are checked to be the run's
    assert (
        "holds runs of other settings (volume_files_sha256 (the volumes read are not the same files: a scan moved, "
        "was edited or touched, or was unreadable then and is read now, or the reverse)); resume with those settings "
        "and files, choose another folder for --out, or run with --overwrite instead of --resume"
    ) in error


def test_a_resume_under_another_wandb_mode_says_that_the_mode_changes(tmp_path, brainage_inputs, monkeypatch, capsys):
    out = tmp_path / "out"
    assert brainage("tabular", out, brainage_inputs, "--losses", "l1") == 0  # --wandb disabled
    capsys.readouterr()
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = ["brainage", "tabular", *tiny_argv("tabular", brainage_inputs), "--out", str(out)]
    assert main([*argv, "--losses", "l1", "mse", "--resume"]) == 0  # no --wandb: WANDB_MODE decides
    error = capsys.readouterr().err
    assert (
        f"note: the run in {out} logged to W&B as disabled; from here it logs as offline (WANDB_MODE=offline)" in error
    )
    assert json.loads((out / "run.json").read_text())["config"]["wandb"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert main([*argv, "--losses", "l1", "mse", "l1+spearman", "--resume"]) == 0  # neither: the run's own
    assert "note: the run in" not in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["config"]["wandb"] == "offline"
