import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import sodeep
from sodeep import load_sorter
from sodeep.cli import main
from sodeep.config import PretrainConfig, config_to_dict, parse_lengths
from sodeep.evaluation import EVALUATION_LENGTHS
from sodeep.pretraining import SorterPretraining, held_out_lengths, pretrain, sorter_from_training_checkpoint

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained"


def wandb_variables():
    """The process's W&B variables but ``WANDB_SERVICE``, W&B's own note of its service process."""
    return {name: value for name, value in os.environ.items() if name.startswith("WANDB") and name != "WANDB_SERVICE"}


def _pretrain(out, steps, *extra):
    return main(
        [
            "pretrain",
            "--steps",
            str(steps),
            "--batch-size",
            "8",
            "--lengths",
            "2-24",
            "--validation-every",
            "4",
            "--out",
            str(out),
            "--wandb",
            "offline",
            "--sorter",
            '{"capacity": 32}',
            *extra,
        ]
    )


def _assert_same_weights(straight_run, resumed_run):
    """The sorters of two runs have the same weights; returns the second's state dict."""
    straight = load_sorter(straight_run / "sorter.pt").state_dict()
    resumed = load_sorter(resumed_run / "sorter.pt").state_dict()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)
    return resumed


def interrupt_at_step(monkeypatch, step):
    """A SIGINT to this process during training step ``step`` (0-based); returns the original step
    function, to put back."""
    original_step = SorterPretraining.training_step

    def interrupted_step(self, batch, batch_index):
        if self.global_step == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original_step(self, batch, batch_index)

    monkeypatch.setattr(SorterPretraining, "training_step", interrupted_step)
    return original_step


def test_tiny_run_writes_logs_and_a_loadable_sorter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    environment = wandb_variables()
    assert _pretrain(tmp_path / "run", 6) == 0
    # W&B's variables are as they were, and so is W&B: the caller's own runs do not land in the run folder.
    assert wandb_variables() == environment
    import wandb

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "mine"))
    (tmp_path / "mine").mkdir()
    own = wandb.init(project="mine", mode="offline")
    try:
        assert Path(own.dir).is_relative_to(tmp_path / "mine")
        with pytest.raises(SystemExit):  # an open run would be taken over and finished
            _pretrain(tmp_path / "second", 2)
        assert not (tmp_path / "second").exists()
        assert f"a W&B run of this process is open (wandb.run, id {own.id})" in capsys.readouterr().err
    finally:
        own.finish()
    sorter = load_sorter(tmp_path / "run" / "sorter.pt")
    assert sorter.max_length == 32
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "val/spearman" in metrics and "val_family/rank_error/cauchy" in metrics
    # The offline W&B run on disk, directly in the run folder's wandb/ (where `wandb sync` looks).
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert not (tmp_path / "run" / "wandb" / "wandb").exists()
    summary = json.loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    assert summary["steps"] == 6
    # Plain YAML that any reader loads (no Python-specific tags).
    hyperparameters = yaml.safe_load((tmp_path / "run" / "csv" / "hparams.yaml").read_text())
    assert hyperparameters["families"][:2] == ["uniform", "normal"]
    assert hyperparameters["architecture"] == "conv" and hyperparameters["sorter_config"]["capacity"] == 32


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _pretrain(tmp_path / "straight", 8, "--checkpoint-every", "2")

    original_step = SorterPretraining.training_step

    def interrupted_step(self, batch, batch_index):
        if self.global_step == 5:
            raise RuntimeError("simulated crash")
        return original_step(self, batch, batch_index)

    monkeypatch.setattr(SorterPretraining, "training_step", interrupted_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _pretrain(tmp_path / "interrupted", 8, "--checkpoint-every", "2")
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    assert _pretrain(tmp_path / "interrupted", 8, "--checkpoint-every", "2", "--resume") == 0

    resumed = _assert_same_weights(tmp_path / "straight", tmp_path / "interrupted")
    exported = sorter_from_training_checkpoint(tmp_path / "interrupted" / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(exported.state_dict()["network.0.weight"], resumed["network.0.weight"])
    # Frozen, as load_sorter returns a sorter; trainable=True to fine-tune it.
    assert not exported.training and not any(weight.requires_grad for weight in exported.parameters())
    last = tmp_path / "interrupted" / "checkpoints" / "last.ckpt"
    tuned = sorter_from_training_checkpoint(last, trainable=True)
    assert tuned.training and all(weight.requires_grad for weight in tuned.parameters())
    training = exported.checkpoint_metadata.pop("training")
    assert exported.checkpoint_metadata == {"step": 8, "of_steps": 8}
    assert training["total_steps"] == 8 and training["batch_size"] == 8 and training["lengths"] == list(range(2, 25))
    assert training["seed"] == 0 and training["learning_rate"] == 3e-3 and len(training["families"]) == 15
    (tmp_path / "exported.pt").touch()  # an empty file may be replaced, as save_sorter allows
    monkeypatch.chdir(tmp_path)
    assert main(["export", "interrupted", "exported.pt"]) == 0
    summary = json.loads((tmp_path / "interrupted" / "pretrain_summary.json").read_text())
    assert load_sorter(tmp_path / "exported.pt").checkpoint_metadata == {
        **summary,  # the finished run's command, settings and validation, as its sorter.pt has them
        "exported_from": str((tmp_path / "interrupted").resolve()),
        "step": 8,
        "of_steps": 8,
        "training": training,
    }
    # The log continues: every step logged once, from the start, in one CSV and one W&B run id.
    steps = [int(row["step"]) for row in csv.DictReader(open(tmp_path / "interrupted" / "csv" / "metrics.csv"))]
    logged = [step for step in steps if step % 10 == 9 or step == 7]
    assert logged == sorted(logged) and min(steps) < 4 and max(steps) == 7
    run_ids = {path.stem.removeprefix("run-") for path in (tmp_path / "interrupted" / "wandb").rglob("run-*.wandb")}
    assert len(run_ids) == 1
    (tmp_path / "interrupted" / "checkpoints" / "last.ckpt").unlink()  # a finished run's: its sorter.pt is the export
    with pytest.raises(FileNotFoundError) as raised:
        sorter_from_training_checkpoint(tmp_path / "interrupted")
    assert str(raised.value) == (
        f"no training checkpoint in {tmp_path / 'interrupted'}, whose run has finished: its sorter is "
        f"{tmp_path / 'interrupted' / 'sorter.pt'} (load or evaluate it as it is)"
    )


def test_training_seconds_of_a_resumed_run_count_its_earlier_parts(tmp_path, monkeypatch):
    import time

    original_step = SorterPretraining.training_step

    def slow_then_crash(self, batch, batch_index):
        if self.global_step == 5:
            raise RuntimeError("simulated crash")
        time.sleep(0.5)
        return original_step(self, batch, batch_index)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(SorterPretraining, "training_step", slow_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "4", "--wandb", "disabled")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4 and checkpoint["training_seconds"] >= 2.0  # four steps of 0.5 s
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    assert _pretrain(tmp_path / "run", 8, "--checkpoint-every", "4", "--wandb", "disabled", "--resume") == 0
    summary = json.loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    assert summary["training_seconds"] >= round(checkpoint["training_seconds"], 1)
    assert (
        load_sorter(tmp_path / "run" / "sorter.pt").checkpoint_metadata["training_seconds"]
        == summary["training_seconds"]
    )


def test_sigint_saves_stops_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _pretrain(tmp_path / "straight", 8, "--checkpoint-every", "100")
    original_step = interrupt_at_step(monkeypatch, 3)
    with pytest.raises(SystemExit) as exit_info:  # --overwrite as W&B sweeps spell it
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100", "--overwrite=True")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 130
    assert error.startswith("interrupted at step 4; resume with: sodeep pretrain --steps 8") and error.endswith(
        "--resume"
    )
    assert "--overwrite" not in error
    assert not (tmp_path / "run" / "sorter.pt").exists()
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    with pytest.raises(SystemExit):  # unfinished: offered to resume
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100")
    assert "already holds this run; add --resume to continue it" in capsys.readouterr().err
    assert _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100", "--resume") == 0
    assert f"resuming {tmp_path / 'run'} from step 4 of 8" in capsys.readouterr().err
    _assert_same_weights(tmp_path / "straight", tmp_path / "run")


def test_a_second_sigint_during_validation_stops_at_once_and_resumes_from_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    _pretrain(tmp_path / "straight", 8, "--checkpoint-every", "2")
    original_validation = SorterPretraining.validation_step
    signals = []

    def interrupted_validation(self, batch, batch_index):
        # The validation after step 4 (checkpointed at step 4): two Ctrl-C's in its first batch.
        if self.global_step == 4 and not signals:
            signals.append(self.global_step)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original_validation(self, batch, batch_index)

    monkeypatch.setattr(SorterPretraining, "validation_step", interrupted_validation)
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "2")
    assert signals == [4]
    assert exit_info.value.code == 130
    error = capsys.readouterr().err.strip().splitlines()[-1]
    # The validation did not finish: the run resumes from the checkpoint of step 4.
    assert error.startswith("interrupted at step 4; resume with: sodeep pretrain --steps 8"), error
    monkeypatch.setattr(SorterPretraining, "validation_step", original_validation)
    assert _pretrain(tmp_path / "run", 8, "--checkpoint-every", "2", "--resume") == 0
    _assert_same_weights(tmp_path / "straight", tmp_path / "run")


def test_a_second_sigint_during_the_cleanup_after_saving_still_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import sodeep.pretraining as pretraining

    monkeypatch.chdir(tmp_path)
    original_step, original_finish = SorterPretraining.training_step, pretraining._finish_loggers

    def interrupted_step(self, batch, batch_index):
        if self.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the first: save at the end of the step and stop
        return original_step(self, batch, batch_index)

    def finish_interrupted(trainer):
        os.kill(os.getpid(), signal.SIGINT)  # the second, while the loggers close
        original_finish(trainer)

    monkeypatch.setattr(SorterPretraining, "training_step", interrupted_step)
    monkeypatch.setattr(pretraining, "_finish_loggers", finish_interrupted)
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 130
    assert error.startswith("interrupted at step 4; resume with: sodeep pretrain --steps 8"), error


@pytest.mark.filterwarnings("default::sodeep.runs.SetupWarning")
def test_a_warmup_as_long_as_the_run_gets_one_warning_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "run", 4, "--wandb", "disabled", "--data-workers", "0") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "sodeep pretrain: warning: --warmup-steps 100 is more than --steps 4: the learning rate rises for the whole "
        "run and never reaches --learning-rate 0.003; lower it, e.g. --warmup-steps 0"
    ]
    assert _pretrain(tmp_path / "run2", 4, "--wandb", "disabled", "--data-workers", "0", "--warmup-steps", "4") == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.filterwarnings("default::sodeep.runs.SetupWarning")
def test_data_workers_that_leave_no_core_get_one_warning_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sodeep.pretraining.available_cores", lambda: 1)
    assert _pretrain(tmp_path / "run", 2, "--wandb", "disabled", "--data-workers", "2", "--warmup-steps", "1") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "sodeep pretrain: warning: --data-workers 2 leaves none of the 1 CPU core this process may use to the "
        "training, and processes sharing a core slow each other; use --data-workers 0 (0 makes "
        "the batches in the training process)"
    ]


@pytest.mark.parametrize("damage", ["truncate", "empty", "text", "foreign"])
def test_a_broken_resume_checkpoint_ends_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    (run / "sorter.pt").unlink()  # as a run stopped after its last checkpoint leaves it: unfinished
    last = run / "checkpoints" / "last.ckpt"
    content = last.read_bytes()
    if damage == "truncate":
        last.write_bytes(content[: len(content) // 2])
    elif damage == "empty":
        last.write_bytes(b"")
    elif damage == "text":
        last.write_text("hello")
    else:
        torch.save({"state_dict": {}}, last)
    before = _files(run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(run, 2, "--resume")
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "--overwrite" in error
    assert _files(run) == before


def test_a_damaged_checkpoint_is_named_where_a_run_is_offered_to_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = _files(run)
    capsys.readouterr()
    # Finished: the run needs nothing from its checkpoint.
    assert _pretrain(run, 2, "--wandb", "disabled", "--resume") == 0
    assert "holds a finished run: nothing to train" in capsys.readouterr().out and _files(run) == before
    (run / "sorter.pt").unlink()  # unfinished: resuming would need the checkpoint
    before = _files(run)
    for resume in ([], ["--resume"]):
        with pytest.raises(SystemExit) as exit_info:
            _pretrain(run, 2, "--wandb", "disabled", *resume)
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1, error
        assert f"{last} is not a torch checkpoint" in error and "cannot be resumed" in error
        assert "--overwrite" in error and "add --resume" not in error
    assert _files(run) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_interrupt_before_training_names_only_a_checkpoint_of_this_run(tmp_path, monkeypatch, capsys, overwrite):
    import sodeep.pretraining as pretraining

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    (run / "sorter.pt").unlink()  # as a run stopped after its checkpoint at step 2 leaves it
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # a ctrl-C while the trainer is built, before the folder is claimed

    monkeypatch.setattr(pretraining, "_make_trainer", interrupted)
    flags = ["--overwrite"] if overwrite else []
    # Another run's settings: its checkpoint is not this command's to resume.
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(run, 2, "--wandb", "disabled", "--seed", "3", *flags)
    error = capsys.readouterr().err
    assert exit_info.value.code == 130 and "interrupted before this command saved anything" in error, error
    # The same settings: resumable, unless --overwrite was to replace that run.
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(run, 2, "--wandb", "disabled", *flags)
    error = capsys.readouterr().err
    assert exit_info.value.code == 130
    if overwrite:
        assert "interrupted before this command saved anything" in error, error
    else:
        assert error.startswith("interrupted at step 2; resume with: sodeep pretrain --steps 2"), error
        assert error.rstrip().endswith("--resume")


def test_the_resume_advice_names_the_program_as_it_was_started(monkeypatch):
    from sodeep.cli import typed_program

    monkeypatch.setattr("sys.orig_argv", ["/usr/bin/python3", "-m", "sodeep.cli", "pretrain"])
    assert typed_program() == "/usr/bin/python3 -m sodeep.cli"  # as typed: PATH may lead to another python
    monkeypatch.setattr("sys.orig_argv", ["python", "-u", "-m", "sodeep", "pretrain"])
    assert typed_program() == "python -u -m sodeep"
    monkeypatch.setattr("sys.orig_argv", [])
    monkeypatch.setattr("sys.argv", ["/venv/lib/python3.11/site-packages/sodeep/__main__.py", "pretrain"])
    assert typed_program() == "python -m sodeep"
    for started in ("/venv/bin/sodeep", "/venv/lib/python3.11/site-packages/pytest/__main__.py"):
        monkeypatch.setattr("sys.argv", [started, "pretrain"])
        assert typed_program() == "sodeep"


def test_resuming_a_finished_run_that_lost_its_sorter_or_summary_rewrites_them_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 4, "--wandb", "disabled", "--warmup-steps", "1") == 0
    log = (run / "csv" / "metrics.csv").read_text()
    weights = load_sorter(run / "sorter.pt").state_dict()
    for lost in ("sorter.pt", "pretrain_summary.json", "damaged sorter.pt"):
        summary = (run / "pretrain_summary.json").read_text()
        if lost.startswith("damaged"):
            lost = lost.split()[1]
            (run / lost).write_bytes((run / lost).read_bytes()[:100])
        else:
            (run / lost).unlink()
        capsys.readouterr()
        assert _pretrain(run, 4, "--wandb", "disabled", "--warmup-steps", "1", "--resume") == 0
        out = capsys.readouterr().out
        assert "sorter written to" in out and "nothing to train" not in out, out
        assert (run / "csv" / "metrics.csv").read_text() == log  # the last validation is not logged twice
        assert (run / lost).is_file()
        if lost == "sorter.pt":  # the summary of the run that trained stays as it was
            assert (run / "pretrain_summary.json").read_text() == summary
        rewritten = load_sorter(run / "sorter.pt").state_dict()
        assert all(torch.equal(rewritten[name], weight) for name, weight in weights.items())


def test_a_run_on_chosen_families_trains_validates_and_records_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    flags = ["--wandb", "disabled", "--warmup-steps", "1", "--families", "ties, cauchy", "--affine-probability", "0"]
    assert _pretrain(run, 4, *flags) == 0
    assert json.loads((run / "run.json").read_text())["config"]["families"] == ["ties", "cauchy"]
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert sorted(name.rsplit("/", 1)[1] for name in header if name.startswith("val_family/l1/")) == ["cauchy", "ties"]
    training = sorter_from_training_checkpoint(run).checkpoint_metadata["training"]
    assert training["families"] == ["ties", "cauchy"] and training["affine_probability"] == 0.0
    (run / "sorter.pt").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _pretrain(run, 4, *flags[:-4], "--resume")  # all families, affine maps: another stream
    assert 'families: ["ties", "cauchy"] -> "all"' in capsys.readouterr().err


def test_a_run_whose_record_leaves_out_settings_at_their_defaults_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 4, "--wandb", "disabled", "--warmup-steps", "1") == 0
    (run / "sorter.pt").unlink()  # unfinished: the resume trains from its last checkpoint
    record = json.loads((run / "run.json").read_text())
    for key in ("families", "affine_probability"):
        del record["config"][key]
    (run / "run.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert _pretrain(run, 4, "--wandb", "disabled", "--warmup-steps", "1", "--resume") == 0
    assert "sorter written to" in capsys.readouterr().out


def test_sorter_settings_that_spell_out_defaults_resume_the_run_and_others_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ("--wandb", "disabled", "--warmup-steps", "1", "--lengths", "2-16")
    # _pretrain's sorter setting, with ConvSorter's defaults spelled out.
    spelled_out = ("--sorter", '{"capacity": 32, "softness": 0.5, "band": 8}')
    for run, started_with, resumed_with in (("plain", (), spelled_out), ("spelled", spelled_out, ())):
        assert _pretrain(tmp_path / run, 4, *flags, *started_with) == 0
        (tmp_path / run / "sorter.pt").unlink()  # unfinished: the resume trains from its last checkpoint
        with pytest.raises(SystemExit):
            _pretrain(tmp_path / run, 4, *flags, "--sorter", '{"capacity": 32, "softness": 0.3}', "--resume")
        assert re.search(r"other settings \((--)?sorter: ", capsys.readouterr().err)
        assert _pretrain(tmp_path / run, 4, *flags, *resumed_with, "--resume") == 0
        assert "sorter written to" in capsys.readouterr().out
    # The record keeps the spelling the run started with.
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["config"]["sorter"] == {"capacity": 32}


def test_a_record_without_a_sorter_setting_matches_a_spelled_out_default_and_an_unbuildable_one_does_not(tmp_path):
    from sodeep.pretraining import _settings_as_recorded
    from sodeep.run_folder import differing_settings

    recorded = {key: value for key, value in config_to_dict(PretrainConfig()).items() if key != "sorter"}
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"command": "pretrain", "config": recorded}))
    for sorter, same in (({"softness": 0.5, "band": 8}, True), ({"softness": 0.3}, False), ({"no_such": 1}, False)):
        settings = _settings_as_recorded(config_to_dict(PretrainConfig(sorter=sorter)), record)
        assert (differing_settings(recorded, settings) == []) == same, sorter


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "none", 2, "--resume")
    assert exit_info.value.code == 2 and "holds no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def _files(folder):
    """Every file of a folder and its modification time.  (Runs compared with it use no W&B: its
    service process may still write a finished run's files.)"""
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_a_folder_holding_another_run_is_refused_and_left_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    before = _files(run)
    capsys.readouterr()
    for extra, message in (
        (["--seed", "1"], "other settings (--seed: 0 -> 1)"),
        (["--seed", "1", "--resume"], "other settings (--seed: 0 -> 1)"),
        ([], "already holds this run, finished: nothing to train; add --overwrite to train it again"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            _pretrain(run, 2, *extra)
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and error.count("\n") == 1
    assert _files(run) == before  # nothing rewritten, nothing added
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own work")
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "mine", 2)
    assert "not a sodeep run folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my own work"


def test_overwrite_clears_the_folder_and_starts_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 4) == 0
    (run / "stale.txt").write_text("from before")
    assert _pretrain(run, 2, "--seed", "1", "--overwrite") == 0
    assert not (run / "stale.txt").exists() and not (run / ".sodeep-previous-run").exists()
    summary = json.loads((run / "pretrain_summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["seed"] == 1


def test_an_overwrite_stopped_before_training_puts_the_previous_run_back(tmp_path, monkeypatch, capsys):
    import sodeep.pretraining as pretraining
    from sodeep.run_folder import set_aside

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    before = {path.relative_to(run): path.read_bytes() for path in run.rglob("*") if path.is_file()}
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # a ctrl-C after the folder was claimed, before training started

    with monkeypatch.context() as patched:
        patched.setattr(pretraining, "make_loggers", interrupted)
        with pytest.raises(SystemExit) as exit_info:
            _pretrain(run, 2, "--wandb", "disabled", "--seed", "3", "--overwrite")
    assert exit_info.value.code == 130
    assert "interrupted before this command saved anything" in capsys.readouterr().err
    after = {path.relative_to(run): path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert after == before  # the finished run, as it was (its lock aside, which was there before too)
    # A failure in the first step (out of memory, say), before any checkpoint: the same.
    with monkeypatch.context() as patched:
        patched.setattr(pretraining.SorterPretraining, "training_step", lambda *args: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            pretraining.pretrain(
                PretrainConfig(
                    steps=2,
                    batch_size=8,
                    lengths="2-24",
                    validation_every=4,
                    out=str(run),
                    wandb="disabled",
                    seed=3,
                    sorter={"capacity": 32},
                ),
                overwrite=True,
            )
    after = {path.relative_to(run): path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert after == before
    # Killed there instead: the next command finds the run set aside and puts it back first.
    set_aside(run)
    (run / "run.json").write_text('{"command": "pretrain", "config": {"seed": 3}}')
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(run, 2, "--wandb", "disabled")
    error = capsys.readouterr().err
    assert f"note: {run}: the run an --overwrite stopped early had set aside is back in place\n" in error
    assert "already holds this run, finished: nothing to train" in error
    after = {path.relative_to(run): path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert after == before
    # Killed once the replacement had saved a checkpoint: the replacement is what the folder keeps.
    set_aside(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"the replacement's checkpoint")
    (run / "run.json").write_text('{"command": "pretrain", "config": {"seed": 3}}')
    from sodeep.run_folder import restore_a_killed_replacement

    restore_a_killed_replacement(run, saved=pretraining.holds_a_checkpoint)
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"the replacement's checkpoint"
    assert not (run / "sorter.pt").exists() and not any(path.name.startswith(".sodeep") for path in run.iterdir())
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(
    ("given", "typed"), [([2, 8], "2,8"), (8, "8"), ([2, 3, 4, 5, 6, 7, 8], "2-8"), ("2,3,4", "2-4")]
)
def test_a_python_run_resumes_from_the_command_line(tmp_path, given, typed):
    """Lengths given from Python (a list, a number) take the form the command line types."""
    from pathlib import Path

    from sodeep.config import PretrainConfig
    from sodeep.pretraining import pretrain

    out = Path(tmp_path / "run")  # a Path, as a notebook passes it
    config = PretrainConfig(steps=2, batch_size=4, lengths=given, validation_every=2, validation_sequences=2)
    config.out, config.wandb, config.sorter = out, "disabled", {"capacity": 8}
    sorter = pretrain(config)
    assert not sorter.training and not any(p.requires_grad for p in sorter.parameters())  # as load_sorter gives it
    # The folder is let go when pretrain() returns: another process may use it while this one lives on.
    check = "from pathlib import Path; from sodeep.run_folder import check_not_in_use; check_not_in_use(Path(r'%s'))"
    subprocess.run([sys.executable, "-c", check % out], check=True, capture_output=True, timeout=120)
    flags = ["--steps", "2", "--batch-size", "4", "--lengths", typed, "--validation-every", "2"]
    flags += ["--validation-sequences", "2", "--sorter", '{"capacity": 8}', "--wandb", "disabled"]
    assert main(["pretrain", *flags, "--out", str(out), "--resume"]) == 0  # finished: nothing to train
    assert json.loads((out / "run.json").read_text())["config"]["lengths"] == typed


def test_a_run_recorded_with_another_spelling_of_its_lengths_resumes(tmp_path):
    out = tmp_path / "run"
    flags = ["--steps", "2", "--batch-size", "4", "--validation-every", "2", "--validation-sequences", "2"]
    flags += ["--sorter", '{"capacity": 8}', "--wandb", "disabled", "--out", str(out)]
    assert main(["pretrain", *flags, "--lengths", "2-4"]) == 0
    record = json.loads((out / "run.json").read_text())
    record["config"]["lengths"] = " 2, 3,4"  # as typed, before lengths had one spelling
    (out / "run.json").write_text(json.dumps(record))
    assert main(["pretrain", *flags, "--lengths", "2-4", "--resume"]) == 0
    with pytest.raises(SystemExit):
        main(["pretrain", *flags, "--lengths", "2-5", "--resume"])


def test_parse_lengths():
    import numpy as np

    assert parse_lengths(range(2, 6)) == parse_lengths(np.arange(2, 6)) == parse_lengths([np.int64(2), 3, 4, 5])
    assert parse_lengths(np.int64(5)) == parse_lengths(np.array(5)) == [5]
    assert parse_lengths("2-5") == [2, 3, 4, 5]
    assert parse_lengths("8,100") == [8, 100]
    assert parse_lengths([3, 4]) == [3, 4]
    for bad in ("1-5", "", [1], "5-2", "2_8", ["2_8"], "1_0-2_0"):  # int() would read 2_8 as 28
        with pytest.raises(ValueError, match="length"):
            parse_lengths(bad)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["pretrain", "--lengths", "1-5"], "--lengths must be ints >= 2"),
        (["pretrain", "--steps", "0"], "--steps must be an integer >= 1"),
        (["pretrain", "--learning-rate", "-1"], "--learning-rate must be a finite number > 0"),
        (["pretrain", "--init-from", "missing.pt"], "--init-from: no sorter checkpoint at missing.pt"),
        (["pretrain", "--init-from", "README.md"], "--init-from: README.md is not a torch checkpoint"),
        (
            ["pretrain", "--init-from", str(SHIPPED / "original_cnn_n100.pt")],
            f"--init-from: {SHIPPED / 'original_cnn_n100.pt'} holds a sorter of architecture 'original_cnn', not "
            "'conv'; give --architecture original_cnn",
        ),
        (
            ["pretrain", "--init-from", str(SHIPPED / "conv_sorter.pt"), "--sorter", '{"depth": 2}'],
            "--init-from: sorter settings {'depth': 2} do not fit the sorter in",
        ),
    ],
)
def test_bad_pretraining_values_end_in_one_line_before_anything_is_written(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith(f"sodeep pretrain: error: {message}") and error.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "config_text,flags,message",
    [
        ("bogus_key: 3\n", [], "unknown key 'bogus_key' in"),
        ("[1, 2\n", [], "is not valid YAML"),
        ("- a\n", [], "must hold a mapping of settings, got a list"),
        ("steps: 1\n", ["--architecture", "bogus"], "unknown sorter architecture 'bogus'"),
        ("steps: 1\n", ["--lengths", "2-20000"], "sorter 'conv' takes n <= 16384"),
        ("steps: 1\n", ["--resume"], "holds no run to resume"),
        ("steps: 1\n", ["--sorter", '{"softnes": 0.5}'], "did you mean 'softness'"),
        (
            "sorter: {softnes: 0.5}\n",
            [],
            "config.yaml: sorter {\"softnes\": 0.5}: unknown setting 'softnes' (did you mean",
        ),
        ("stpes: 1\n", [], "unknown key 'stpes' (did you mean 'steps'?)"),
        ("STEPS: 1\n", [], "unknown key 'STEPS' (did you mean 'steps'?)"),
        (
            "steps: 1\n",
            ["--sorter", '{"architecture": "conv"}'],
            "the architecture is a setting of its own: --architecture conv, not --sorter {'architecture': ...}",
        ),
    ],
)
def test_bad_pretraining_configs_end_in_one_line_and_leave_nothing(tmp_path, capsys, config_text, flags, message):
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--config", str(config), *flags, "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith("sodeep pretrain: error: ") and message in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sorter", '{"band": 4}'], {"architecture": "conv", "sorter": {"softness": 0.1, "band": 4, "capacity": 64}}),
        (["--architecture", "pairwise_sigmoid", "--sorter", '{"temperature": 0.5}'], {"sorter": {"temperature": 0.5}}),
        (["--architecture", "pairwise_sigmoid"], {"architecture": "pairwise_sigmoid", "sorter": {}}),
    ],
)
def test_sorter_flags_override_the_config_key_by_key_for_the_same_architecture(tmp_path, flags, expected):
    from sodeep.cli import build_parser, pretrain_config

    for text in (
        'architecture: conv\nsorter: {"capacity": 64, "softness": 0.1}\n',
        'sorter: {"capacity": 64, "softness": 0.1}\n',  # conv by default
        'sorter: \'{"capacity": 64, "softness": 0.1}\'\n',  # a JSON string, as the flag takes
    ):
        config = tmp_path / "config.yaml"
        config.write_text(text)
        for extra in ([], ["--architecture", "conv"]) if "pairwise_sigmoid" not in flags else ([],):
            arguments = build_parser().parse_args(["pretrain", "--config", str(config), *flags, *extra])
            settings = pretrain_config(arguments)
            for key, value in expected.items():
                assert getattr(settings, key) == value, text


def test_a_foreign_checkpoint_ends_in_one_line(tmp_path, capsys):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(path)])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith("sodeep evaluate: error: ") and "not a sodeep sorter checkpoint" in error
    assert error.count("\n") == 1 and "Traceback" not in error


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--lengths", "20000"], "no length in 20000 is one the sorter takes (n in 2..16384)"),
        (["--lengths", "abc"], "lengths must be ints"),
        (["--sequences", "0"], "--sequences must be in 1..4096, got 0"),
        (["--architecture", "conv", "--sorter", "{bad"], "--sorter must be a JSON object"),
        (["--architecture", "conv", "--sorter", "[1]"], "--sorter must be a JSON object"),
    ],
)
def test_bad_evaluation_values_end_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *flags])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith("sodeep evaluate: error: ") and message in error and error.count("\n") == 1


def test_evaluate_prints_a_table(capsys):
    assert main(["evaluate", "--lengths", "5,100", "--sequences", "4"]) == 0
    out = capsys.readouterr().out
    assert "| cauchy |" in out and "n=100" in out


def test_evaluate_replaces_its_own_outputs(tmp_path, capsys):
    table, rows = tmp_path / "table.md", tmp_path / "rows.json"
    table.touch()  # an empty file, or one evaluate wrote, may be replaced
    rows.write_text("[]\n")
    for lengths in ("5", "7"):
        arguments = ["evaluate", "--lengths", lengths, "--sequences", "2", "--out", str(table), "--json", str(rows)]
        assert main(arguments) == 0
        assert f"n={lengths}" in table.read_text() and json.loads(rows.read_text())[0]["length"] == int(lengths)
    # Each row names the sorter it measured, as the table's title does.
    assert {row["sorter"] for row in json.loads(rows.read_text())} == {"the shipped sorter (conv_sorter.pt)"}
    assert (
        main(
            [
                "evaluate",
                "--architecture",
                "pairwise_sigmoid",
                "--lengths",
                "5",
                "--sequences",
                "2",
                "--json",
                str(rows),
            ]
        )
        == 0
    )
    assert json.loads(rows.read_text())[0]["sorter"].startswith("untrained pairwise_sigmoid {")


def test_inside_a_sweep_pretraining_leaves_a_trial_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SODEEP_SWEEP_TRIAL_SUMMARY", str(tmp_path / "summary.json"))
    assert _pretrain(tmp_path / "run", 4, "--wandb", "disabled") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["schema"] == "sodeep-trial/1" and summary["status"] == "finished"
    assert summary["config"]["steps"] == 4 and 0.9 < summary["metrics"]["val/spearman"] <= 1


def test_the_seed_sets_the_initial_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    depth2 = ["--sorter", '{"capacity": 32, "depth": 2, "width": 4}', "--wandb", "disabled"]
    for name in ("a", "b"):
        torch.manual_seed(len(name) * 1000 + ord(name))  # whatever the global state was before
        assert _pretrain(tmp_path / name, 3, *depth2) == 0
    _assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_a_diverging_run_stops_with_one_line_and_no_sorter(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        # The conv sorter's temperatures and logits are bounded, so it stays finite at any learning
        # rate; the original CNN does not.
        _pretrain(
            tmp_path / "run", 8, "--learning-rate", "1e30", "--wandb", "disabled",
            "--architecture", "original_cnn", "--sorter", '{"length": 40}', "--lengths", "40",
        )  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and "diverged" in error and "lower the learning rate" in error
    assert not (tmp_path / "run" / "sorter.pt").exists()
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "inf", 8, "--learning-rate", "inf")
    assert "--learning-rate must be a finite number" in capsys.readouterr().err


def test_a_run_whose_loss_goes_to_nan_stops_at_once_and_keeps_its_last_finite_checkpoint(tmp_path, monkeypatch, capsys):
    """The loss is read every LOG_EVERY_STEPS steps and a checkpoint is never written with weights
    that are not finite: the run ends long before its first validation (step 1000 here)."""
    from sodeep.pretraining import LOG_EVERY_STEPS

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "pretrain", "--steps", "2000", "--batch-size", "8", "--lengths", "2-24", "--wandb", "disabled",
                "--validation-every", "1000", "--checkpoint-every", "3", "--warmup-steps", "0",
                "--learning-rate", "1e30", "--weight-decay", "1e10", "--sorter", '{"capacity": 32, "depth": 1}',
                "--out", str(tmp_path / "run"),
            ]
        )  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and error.startswith("sodeep pretrain: error: pretraining diverged: ")
    step = int(error.split(" at step ")[1].split(";")[0])
    assert step <= LOG_EVERY_STEPS and error.endswith("and run again with --overwrite")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    if last.exists():  # weights that rank: finite, and finite ranks from them
        from sodeep.pretraining import sorter_from_training_checkpoint

        weights = torch.load(last, weights_only=True)["state_dict"]
        assert all(torch.isfinite(value).all() for value in weights.values())
        assert torch.isfinite(sorter_from_training_checkpoint(last)(torch.randn(4, 16))).all()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a step outside a Trainer
def test_a_checkpoint_is_not_written_after_a_step_whose_loss_is_not_finite(tmp_path):
    from sodeep.pretraining import SorterPretraining
    from sodeep.sorters import ConvSorter

    module = SorterPretraining(ConvSorter(capacity=16))
    module.training_step((torch.randn(4, 8), torch.full((4, 8), float("nan"))), 0)
    with pytest.raises(ValueError, match="pretraining diverged: the L1 loss is nan at step 0; lower the learning"):
        module.on_save_checkpoint({})


def test_validation_ranks_each_length_in_one_call_and_gives_each_cell_its_own_metrics(monkeypatch):
    """Cells of one length go through the sorter together; each cell's metrics equal those of the
    cell on its own (mean_spearman over rows not all tied, L1, rank error), including cells whose
    rows are all tied and a family whose ranks come out NaN."""
    from sodeep.evaluation import held_out_set
    from sodeep.metrics import mean_absolute_rank_error, mean_spearman
    from sodeep.pretraining import HeldOutCells
    from sodeep.sorters import ConvSorter

    families, lengths = ["uniform", "ties", "near_constant", "sorted"], [2, 3, 16, 100]
    cells = HeldOutCells(lengths, 6, families)
    assert len(cells) == len(lengths)  # one batch per length at this size

    class CountedSorter(torch.nn.Module):
        """A fresh sorter, but NaN for the rows of the "sorted" family (increasing scores)."""

        def __init__(self) -> None:
            super().__init__()
            self.sorter, self.calls = ConvSorter(capacity=128), 0

        def forward(self, scores: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            ranks = self.sorter(scores)
            increasing = (scores.diff(dim=-1) >= 0).all(-1, keepdim=True) & (scores.shape[-1] > 2)
            return torch.where(increasing, float("nan"), ranks)

    module = SorterPretraining(ConvSorter(capacity=16), families=families)
    module.sorter = CountedSorter()
    with torch.no_grad():
        for index in range(len(cells)):
            module.validation_step(cells[index], index)
    assert module.sorter.calls == len(lengths)
    noted = dict(module._validation)

    with torch.no_grad():
        for family, length, scores, ranks in held_out_set(lengths, families, 6):
            predicted = module.sorter(scores)
            expected = {
                "l1": (predicted - ranks).abs().mean(),
                "spearman": mean_spearman(predicted, ranks),
                "rank_error": mean_absolute_rank_error(predicted, ranks).mean(),
            }
            place = lengths.index(length)  # each family's cells are noted in the order of the lengths
            for name, value in expected.items():
                got = noted[f"val_family/{name}/{family}"][place]
                assert got == pytest.approx(value.item(), rel=1e-5, abs=1e-7, nan_ok=True), (family, length, name)
                assert got in noted[f"val_n/{name}/{length}"] or (got != got)  # NaN is not equal to itself
    assert all(value != value for value in noted["val_family/l1/sorted"][1:])  # the NaN rows stay NaN

    # A cell whose rows are all tied has no Spearman correlation (NaN) but an L1; beside it, a cell
    # with one tied row of three averages the other two.
    module = SorterPretraining(ConvSorter(capacity=16), families=families)
    scores = torch.cat([torch.ones(3, 5), torch.randn(2, 5), torch.ones(1, 5)])
    family_of_row = torch.tensor([0, 0, 0, 1, 1, 1])
    module.validation_step((scores, sodeep.rank(scores), family_of_row, 5), 0)
    predicted = module.sorter(scores).detach()
    expected = mean_spearman(predicted[3:], sodeep.rank(scores)[3:]).item()
    assert module._validation["val_family/spearman/uniform"][0] != module._validation["val_family/spearman/uniform"][0]
    assert module._validation["val_family/l1/uniform"][0] < 1e-3
    assert module._validation["val_family/spearman/ties"] == [pytest.approx(expected, rel=1e-6)]
    assert "val_family/l1/near_constant" not in module._validation  # no rows, no cell


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a validation outside a Trainer
def test_a_validation_cell_of_nan_ranks_ends_the_run_naming_its_length(monkeypatch):
    """NaN ranks at one length are not averaged away with the finite ones of the others; a cell
    of equal scores (Spearman NaN, finite ranks) is not a divergence."""
    from sodeep.pretraining import SorterPretraining
    from sodeep.sorters import ConvSorter

    module = SorterPretraining(ConvSorter(capacity=16))
    module.families = ["uniform"]
    for scores in (torch.randn(2, 8), torch.ones(2, 4)):
        module.validation_step((scores, sodeep.rank(scores), 0, scores.shape[-1]), 0)
    module.on_validation_epoch_end()  # finite ranks everywhere

    class NaNAtSix(torch.nn.Module):
        def forward(self, scores: torch.Tensor) -> torch.Tensor:
            return torch.full_like(scores, float("nan")) if scores.shape[-1] == 6 else sodeep.rank(scores)

    monkeypatch.setattr(module, "sorter", NaNAtSix())
    for length in (6, 8):
        scores = torch.randn(2, length)
        module.validation_step((scores, sodeep.rank(scores), 0, length), 0)
    with pytest.raises(
        ValueError, match=r"^pretraining diverged: the sorter's ranks are NaN at step 0 \(n = 6\); lower"
    ):
        module.on_validation_epoch_end()


def test_a_used_folder_names_a_bad_sorter_setting_as_such_and_a_changed_one_by_its_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    sorter = '{"capacity": 32, "softness": 0.1, "band": 8, "radius": 4, "width": 16}'
    assert _pretrain(run, 2, "--wandb", "disabled", "--sorter", sorter) == 0
    capsys.readouterr()
    for extra, expected in (
        (["--architecture", "no_such_sorter"], "unknown sorter architecture 'no_such_sorter'"),
        (["--sorter", '{"capacity": 1}'], "capacity"),
        (["--sorter", sorter.replace('"band": 8', '"band": 4')], 'other settings (sorter: {"band": 8} -> {"band": 4})'),
    ):
        with pytest.raises(SystemExit):
            _pretrain(run, 2, "--wandb", "disabled", "--sorter", sorter, *extra, "--resume")
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert expected in error, error
        assert ("other settings" in error) == (extra[0] == "--sorter" and "band" in extra[1])


def test_a_finished_run_checkpoints_and_validates_its_last_step_and_a_resume_rewrites_nothing(
    tmp_path, monkeypatch, capsys
):
    """With --checkpoint-every and --validation-every not dividing --steps, the checkpoint (which
    export reads) and the summary's validation are still those of the final weights."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 5, "--wandb", "disabled", "--checkpoint-every", "3", "--validation-every", "2") == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    summary = json.loads((run / "pretrain_summary.json").read_text())
    validated = [row for row in csv.DictReader((run / "csv" / "metrics.csv").open()) if row.get("val/l1")]
    assert [int(row["step"]) for row in validated] == [1, 3, 4]  # steps 2, 4 and the last, 5 (counted from 0)
    assert summary["validation"]["val/l1"] == pytest.approx(float(validated[-1]["val/l1"]))
    before = _files(run)
    capsys.readouterr()
    assert (
        _pretrain(run, 5, "--wandb", "disabled", "--checkpoint-every", "3", "--validation-every", "2", "--resume") == 0
    )
    assert _files(run) == before and "holds a finished run: nothing to train" in capsys.readouterr().out


def test_resuming_a_finished_run_rewrites_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    before = _files(run)
    assert _pretrain(run, 2, "--wandb", "disabled", "--resume") == 0
    assert _files(run) == before


def test_resuming_a_finished_run_whose_checkpoint_was_deleted_rewrites_nothing(tmp_path, monkeypatch, capsys):
    # Its sorter and summary say it finished: advice to --overwrite would delete the result.
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    (run / "checkpoints" / "last.ckpt").unlink()
    before = _files(run)
    capsys.readouterr()
    assert _pretrain(run, 2, "--wandb", "disabled", "--resume") == 0
    assert _files(run) == before and "holds a finished run: nothing to train" in capsys.readouterr().out
    (run / "sorter.pt").unlink()  # no result and no checkpoint: nothing to resume from
    with pytest.raises(SystemExit):
        _pretrain(run, 2, "--wandb", "disabled", "--resume")
    assert "holds a run that finished (2 steps) but lost its sorter.pt and checkpoint; run with --overwrite" in (
        capsys.readouterr().err
    )


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 2, "--wandb", "disabled") == 0
    for leftover in ("sorter.pt", "pretrain_summary.json", "checkpoints/last.ckpt"):
        (run / leftover).unlink()
    assert _pretrain(run, 2, "--wandb", "disabled") == 0  # no --resume, no --overwrite needed
    assert (run / "sorter.pt").exists()
    # With --resume (a job script that always passes it): nothing to continue, so it starts.
    weights = load_sorter(run).state_dict()
    for leftover in ("sorter.pt", "pretrain_summary.json", "checkpoints/last.ckpt"):
        (run / leftover).unlink()
    capsys.readouterr()
    assert _pretrain(run, 2, "--wandb", "disabled", "--resume") == 0
    assert f"resuming {run} from step 0 of 2: it stopped before saving any" in capsys.readouterr().err
    # The same run, from its start (to float rounding: the process's thread count may differ).
    torch.testing.assert_close(load_sorter(run).state_dict(), weights)


def test_progress_lines_show_each_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "run", 8, "--wandb", "disabled") == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("validation")] == [
        "validation at step 4",
        "validation at step 8",
    ]
    last_step = next(line for line in lines if line.startswith("step 8/8"))
    assert "train/l1=" in last_step and "val/" not in last_step  # the validation after it has its own line
    # Six significant digits, as the metrics file holds them rounded: a Spearman of 0.99997 is not shown as 1.
    import csv

    with open(tmp_path / "run" / "csv" / "metrics.csv") as file:
        spearman = [float(row["val/spearman"]) for row in csv.DictReader(file) if row.get("val/spearman")][-1]
    assert f"val/spearman={spearman:.6g}" in next(line for line in lines if line.startswith("validation at step 8"))


def test_the_signal_handlers_are_those_of_before_once_a_run_ends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert _pretrain(tmp_path / "run", 2, "--wandb", "disabled") == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def _interrupt_at(hook: str, exception: type[BaseException], monkeypatch) -> None:
    def interrupted(self):
        raise exception

    monkeypatch.setattr(SorterPretraining, hook, interrupted, raising=False)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_stop_before_training_starts_ends_in_one_line_and_status_130(signal_name, tmp_path, monkeypatch, capsys):
    """Until the first step Lightning handles the signals itself: SIGTERMException, a SystemExit
    whose status is 0, as if the run had succeeded; for Ctrl-C, status 1 and no message."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    monkeypatch.chdir(tmp_path)
    _interrupt_at("on_fit_start", {"SIGTERM": SIGTERMException, "SIGINT": KeyboardInterrupt}[signal_name], monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "run", 4)
    assert exit_info.value.code == 130
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.endswith("interrupted before this command saved anything; run the same command again")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "run", 3) == 0  # nothing was saved: a command of other settings starts afresh
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["steps"] == 3


def test_a_ctrl_c_after_the_last_checkpoint_prints_the_resume_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _interrupt_at("on_fit_end", KeyboardInterrupt, monkeypatch)  # last.ckpt is written by then
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "run", 4)
    assert exit_info.value.code == 130
    assert "resume with: sodeep pretrain" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "run", 4, "--resume") == 0
    assert (tmp_path / "run" / "sorter.pt").exists()


def test_overwrite_trains_a_finished_run_again_and_resume_with_it_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "run", 2, "--wandb", "disabled") == 0
    first_id = json.loads((tmp_path / "run" / "run.json").read_text()).get("run_id")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # continue it and clear it: one of them
        _pretrain(tmp_path / "run", 2, "--wandb", "disabled", "--resume", "--overwrite")
    assert exit_info.value.code == 2 and "not allowed with argument --resume" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "run.json").read_text()).get("run_id") == first_id
    assert _pretrain(tmp_path / "run", 2, "--wandb", "disabled", "--overwrite") == 0
    output = capsys.readouterr().out
    assert "nothing to train" not in output and "sorter written to" in output
    assert json.loads((tmp_path / "run" / "run.json").read_text()).get("run_id") != first_id


def test_lengths_below_the_sorters_minimum_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--architecture", "original_cnn", "--lengths", "2-32", "--steps", "2", "--out", str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "sodeep pretrain: error: sorter 'original_cnn' takes n = 100 only, not lengths 2-32: set lengths to 100"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "settings,several",
    [
        (dict(devices=1, num_nodes=1), False),
        (dict(devices=2, num_nodes=1), True),
        (dict(devices="2", num_nodes=1), True),
        (dict(devices="0,", num_nodes=1), False),
        (dict(devices="0,1", num_nodes=1), True),
        (dict(devices=[3], num_nodes=1), False),
        (dict(devices=1, num_nodes=2), True),
        (dict(devices="auto", num_nodes=1, accelerator="cpu"), False),
    ],
)
def test_several_processes_reads_lightnings_device_settings(settings, several):
    from sodeep.pretraining import several_processes

    assert several_processes(**{"accelerator": "auto", **settings}) is several


def test_validation_covers_the_trained_lengths_within_what_the_sorter_accepts():
    assert held_out_lengths(range(2, 257), 2, 16384) == list(EVALUATION_LENGTHS)
    assert held_out_lengths([512, 700, 1024], 2, 16384) == [*EVALUATION_LENGTHS, 512, 1024]
    assert held_out_lengths([3000], 2, None) == [*EVALUATION_LENGTHS, 3000]
    assert held_out_lengths([100], 100, 100) == [100]  # a sorter of one fixed length
    assert held_out_lengths(range(2, 50), 2, 40) == [n for n in EVALUATION_LENGTHS if n <= 40]


def test_a_sigterm_as_the_run_folder_is_made_ends_in_one_line_and_status_130(tmp_path):
    """Between the run folder's record and Lightning's own handler (importing and starting W&B
    takes a second), SIGTERM is an interrupt too, not the default death by the signal."""
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_ERROR_REPORTING="false", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "sodeep", "pretrain", "--steps", "20", "--validation-every", "10"]
    process = subprocess.Popen([*command, "--out", str(out)], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert (
        error.strip()
        .splitlines()[-1]
        .endswith("interrupted before this command saved anything; run the same command again")
    )


@pytest.mark.parametrize(
    ("other_run", "named"),
    [
        (["--sorter", '{"band": 4}'], ['sorter_config: {"capacity": 16384, "band": 4} -> {"capacity": 32, "band": 8}']),
        (["--seed", "1"], ["seed: 1 -> 0"]),
        (["--lengths", "2-30"], ["lengths: [2, 3, ..., 30] (29 values) -> [2, 3, ..., 24] (23 values)"]),
    ],
)
def test_resuming_from_a_checkpoint_of_another_run_is_refused(tmp_path, monkeypatch, capsys, other_run, named):
    import shutil

    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "other", 2, "--wandb", "disabled", *other_run) == 0
    assert _pretrain(tmp_path / "run", 2, "--wandb", "disabled") == 0
    (tmp_path / "run" / "sorter.pt").unlink()
    shutil.copy(tmp_path / "other" / "checkpoints" / "last.ckpt", tmp_path / "run" / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "run", 2, "--wandb", "disabled", "--resume")
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert "was saved by a run of other settings (" in error and all(text in error for text in named), error


def test_a_stop_on_a_signal_runs_no_validation_off_schedule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    interrupt_at_step(monkeypatch, 1)  # validation is every 4 steps: none is due at step 2
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100")
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    assert rows and not any(row.get("val/l1") for row in rows)


def test_pretrain_from_python_names_a_config_of_the_wrong_kind(tmp_path):
    with pytest.raises(
        TypeError, match=r"config must be a PretrainConfig, e.g. PretrainConfig\(\*\*settings\), got dict"
    ):
        pretrain({"steps": 2, "out": str(tmp_path / "run")})
    config = PretrainConfig(steps=2, out=str(tmp_path / "run"), wandb="disabled", sorter={"architecture": "conv"})
    with pytest.raises(ValueError, match=r"architecture='conv', not sorter=\{'architecture': ...\}"):
        pretrain(config)
    assert not (tmp_path / "run").exists()


def test_a_batch_beyond_the_machine_s_memory_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import sodeep.config

    monkeypatch.setattr(sodeep.config, "physical_memory", lambda: 2**30)  # a machine of 1 GiB
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "run", 2, "--lengths", "2-256", "--batch-size", "10000")
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert "--batch-size 10000 at n up to 256 needs about 1 GiB per step" in error
    assert "more than this machine's 1 GiB; lower --batch-size (about 3,883 takes half of it)" in error
    assert not (tmp_path / "run").exists()
    config = PretrainConfig(batch_size=7767, lengths="2-256")
    config.validate()  # within it


def test_checking_a_pretraining_config_leaves_the_random_state_as_it_was():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    PretrainConfig(sorter={"depth": 2}).validate()  # builds the sorter to check its settings
    torch.testing.assert_close(torch.rand(3), expected)


def test_sorter_settings_in_e_notation_from_yaml_are_numbers(tmp_path):
    from sodeep.cli import build_parser, pretrain_config

    config = tmp_path / "config.yaml"
    config.write_text("sorter: {softness: 1e-1, temperature_floor: 1E-2, activation: gelu}\n")
    arguments = build_parser().parse_args(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")])
    assert pretrain_config(arguments).sorter == {"softness": 0.1, "temperature_floor": 0.01, "activation": "gelu"}


def test_numpy_integers_are_integers_for_every_count_setting(tmp_path):
    import dataclasses

    import numpy as np

    counts = ("steps", "batch_size", "validation_every", "checkpoint_every", "validation_sequences", "seed")
    config = PretrainConfig(out=str(tmp_path), **{key: np.int64(3) for key in counts})
    config.validate()
    assert all(type(getattr(config, key)) is int and getattr(config, key) == 3 for key in counts)
    json.dumps(dataclasses.asdict(config))  # what run.json records


def test_an_interrupted_python_run_says_how_to_resume_it_from_python(tmp_path, monkeypatch):
    from sodeep.run_folder import RunInterrupted

    original_step = interrupt_at_step(monkeypatch, 2)
    settings = dict(steps=6, batch_size=4, lengths="2-8", validation_every=3, validation_sequences=2)
    config = PretrainConfig(**settings, out=str(tmp_path / "run"), wandb="disabled", sorter={"capacity": 8})
    with pytest.raises(RunInterrupted) as raised:
        pretrain(config)
    assert str(raised.value) == "interrupted at step 3; pretrain(config, resume=True) goes on from there"
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    resumed = PretrainConfig(**settings, out=str(tmp_path / "run"), wandb="disabled", sorter={"capacity": 8})
    assert pretrain(resumed, resume=True) is not None  # ...and it does


def test_a_ctrl_c_that_python_drops_in_a_finalizer_stops_the_run_at_the_step_end_resumably(tmp_path, monkeypatch):
    """A Ctrl-C that lands in a finalizer (a data loader's, or what runs in the parent as a data
    worker forks), which Python would print as "Exception ignored" and drop, stops the run."""
    import gc

    from sodeep.run_folder import RunInterrupted

    original_step = SorterPretraining.training_step

    class Finalizer:
        def __del__(self):
            raise KeyboardInterrupt  # as the signal handler would, inside the finalizer

    def dropped_at_step_two(self, batch, batch_index):
        if self.global_step == 2:
            Finalizer()
            gc.collect()
        return original_step(self, batch, batch_index)

    monkeypatch.setattr(SorterPretraining, "training_step", dropped_at_step_two)
    settings = dict(steps=6, batch_size=4, lengths="2-8", validation_every=3, validation_sequences=2, wandb="disabled")
    config = PretrainConfig(**settings, out=str(tmp_path / "run"), sorter={"capacity": 8})
    with pytest.raises(RunInterrupted, match="^interrupted at step 3; "):
        pretrain(config)
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    resumed = pretrain(config, resume=True)
    straight = pretrain(PretrainConfig(**settings, out=str(tmp_path / "straight"), sorter={"capacity": 8}))
    for name, weight in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], weight), name


def test_a_length_given_twice_counts_once():
    from sodeep import rank
    from sodeep.evaluation import fidelity_table

    assert parse_lengths("5,5,3") == parse_lengths([5, 3, 5]) == [5, 3]
    rows = fidelity_table(rank, lengths=[5, 5], families=["uniform"], sequences_per_cell=2)
    assert len(rows) == 1


def test_numpy_numbers_of_nodes_are_settings_as_python_ints_are():
    import numpy as np

    config = PretrainConfig(num_nodes=np.int64(1), steps=np.int64(3))
    config.validate()
    assert type(config.num_nodes) is int and type(config.steps) is int


def test_pretrain_leaves_the_callers_random_state_as_it_was(tmp_path):
    import random

    import numpy as np

    from sodeep.pretraining import pretrain

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    before = os.environ.get("PL_GLOBAL_SEED")
    for _ in range(2):  # a new run, then one that overwrites it
        random.seed(123), np.random.seed(123), torch.manual_seed(123)
        expected = draws()
        random.seed(123), np.random.seed(123), torch.manual_seed(123)
        config = PretrainConfig(
            steps=2,
            batch_size=4,
            lengths="2-8",
            sorter={"capacity": 8},
            validation_every=2,
            validation_sequences=2,
            out=str(tmp_path / "run"),
            wandb="disabled",
            data_workers=0,
        )
        pretrain(config, overwrite=True)
        assert draws() == expected
    assert os.environ.get("PL_GLOBAL_SEED") == before


def test_a_resume_from_a_checkpoint_of_the_last_step_validates_its_weights_for_the_summary(tmp_path, monkeypatch):
    """The run ended (its checkpoint is at the last step) before its sorter was written: the resume
    trains nothing, and writes the sorter with the same validation as the run would have."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert _pretrain(run, 4, "--wandb", "disabled", "--checkpoint-every", "2") == 0
    finished = json.loads((run / "pretrain_summary.json").read_text())
    (run / "sorter.pt").unlink()
    assert _pretrain(run, 4, "--wandb", "disabled", "--checkpoint-every", "2", "--resume") == 0
    resumed = json.loads((run / "pretrain_summary.json").read_text())
    assert resumed["validation"] == finished["validation"] and set(finished["validation"]) >= {"val/l1"}
    assert load_sorter(run / "sorter.pt") is not None


def test_a_strategy_is_read_in_any_case_as_lightning_reads_it():
    """DDP is ddp, which pretraining runs with its unused-weights search; any case of a spawning
    strategy is refused."""
    from sodeep.brainage.config import TabularConfig

    config = PretrainConfig(strategy=" DDP ")
    config.validate()
    assert config.strategy == "ddp" and TabularConfig(strategy="Ddp").strategy == "ddp"
    config = PretrainConfig(accelerator=" CPU ")
    config.validate()
    assert config.accelerator == "cpu" and TabularConfig(accelerator="Cpu").accelerator == "cpu"
    with pytest.raises(ValueError, match="starts its processes inside fit"):
        PretrainConfig(strategy="Ddp_Spawn").validate()


def test_a_stop_on_a_step_that_validates_keeps_that_validation_and_a_resume_logs_each_row_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _pretrain(tmp_path / "straight", 8, "--checkpoint-every", "100")
    original_step = interrupt_at_step(monkeypatch, 3)  # validation is every 4 steps: due after this one
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100")
    validated = [
        row["step"] for row in csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")) if row.get("val/l1")
    ]
    assert validated == ["3"]
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    assert _pretrain(tmp_path / "run", 8, "--checkpoint-every", "100", "--resume") == 0
    _assert_same_weights(tmp_path / "straight", tmp_path / "run")

    def logged(run):
        rows = list(csv.DictReader(open(tmp_path / run / "csv" / "metrics.csv")))
        return sorted((row["step"], sorted(key for key, value in row.items() if value)) for row in rows)

    # The same rows, none lost, none twice: the training row Lightning logs on stopping (step 3,
    # off the grid of every 10 steps) is dropped on resuming.
    assert logged("run") == logged("straight")


def test_a_stop_during_the_last_step_lets_the_run_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _pretrain(tmp_path / "straight", 6, "--checkpoint-every", "100")
    interrupt_at_step(monkeypatch, 5)  # the last of 6 steps; its validation is not on the schedule
    assert _pretrain(tmp_path / "run", 6, "--checkpoint-every", "100") == 0
    assert "interrupted" not in capsys.readouterr().err
    _assert_same_weights(tmp_path / "straight", tmp_path / "run")

    def validated(run):
        return [
            row["step"] for row in csv.DictReader(open(tmp_path / run / "csv" / "metrics.csv")) if row.get("val/l1")
        ]

    assert validated("run") == validated("straight") == ["3", "5"]


def test_a_stop_while_the_last_checkpoint_is_saved_lets_the_run_finish(tmp_path, monkeypatch, capsys):
    from sodeep.pretraining import FinishAtTheLastStep

    monkeypatch.chdir(tmp_path)
    original_end = FinishAtTheLastStep.on_train_end

    def interrupted_end(self, trainer, module):
        os.kill(os.getpid(), signal.SIGINT)
        return original_end(self, trainer, module)

    monkeypatch.setattr(FinishAtTheLastStep, "on_train_end", interrupted_end)
    assert _pretrain(tmp_path / "run", 6, "--checkpoint-every", "4") == 0
    assert "interrupted" not in capsys.readouterr().err
    assert (tmp_path / "run" / "sorter.pt").exists()


def test_a_resumed_log_keeps_its_rows_on_the_grid_and_its_validations_only(tmp_path):
    """Each stop left a training row off the logging grid (Lightning logs the step it stops at):
    after two stops and a resume, the log holds the rows an uninterrupted run has."""
    from sodeep.runs import _AppendingWriter

    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/l1,val/l1\n"
        "0,9,0.5,\n"
        "0,13,0.4,\n"  # the first stop
        "0,19,0.3,\n"
        "0,19,,0.2\n"
        "0,23,,0.1\n"  # a validation off the training grid stays
        "0,24,0.25,\n"  # the second stop
        "0,29,0.2,\n"  # logged again by the resumed run
    )
    _AppendingWriter(str(tmp_path), keep_below=25, log_every=10)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(row["step"], row["train/l1"], row["val/l1"]) for row in rows] == [
        ("9", "0.5", ""),
        ("19", "0.3", ""),
        ("19", "", "0.2"),
        ("23", "", "0.1"),
    ]


def test_a_strategy_that_forbids_unused_weights_is_refused_where_the_sorter_leaves_some_out(tmp_path, capsys):
    """The depth-0 conv sorter's head bias gets no gradient (a constant shift of every value
    changes no rank): DDP without the search for unused weights would fail in its first step."""
    from sodeep.pretraining import weights_left_out_of_the_loss
    from sodeep.sorters import build_sorter

    sorter = build_sorter("conv")
    assert weights_left_out_of_the_loss(sorter, 5) == ["network.0.bias"]
    assert all(weight.grad is None for weight in sorter.parameters())  # nothing left behind
    assert weights_left_out_of_the_loss(build_sorter("conv", width=16, depth=2), 5) == []
    argv = ["pretrain", "--steps", "2", "--strategy", "ddp_find_unused_parameters_false", "--devices", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--accelerator", "cpu", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1, error
    assert "leaves out network.0.bias; use strategy 'ddp'" in error and not (tmp_path / "run").exists()


@pytest.mark.parametrize("rank, said", [(0, True), (1, False)])
def test_an_interrupt_before_anything_was_saved_is_said_once_in_a_distributed_run(monkeypatch, capsys, rank, said):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    import sodeep.evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sodeep.evaluation, "fidelity_table", interrupted)
    monkeypatch.setattr(rank_zero_only, "rank", rank, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--lengths", "5"])
    assert exit_info.value.code == 130
    assert ("interrupted before this command saved anything" in capsys.readouterr().err) == said


def test_init_from_drops_the_config_files_sorter_settings_and_none_is_fresh_weights(tmp_path):
    from sodeep.cli import build_parser, pretrain_config

    config = tmp_path / "config.yaml"
    config.write_text("steps: 5\nsorter: {softness: 0.1, depth: 0}\n")
    start = str(SHIPPED / "conv_sorter_depth2.pt")

    def parsed(*flags):
        return pretrain_config(build_parser().parse_args(["pretrain", "--config", str(config), *flags]))

    assert parsed().sorter == {"softness": 0.1, "depth": 0}
    assert parsed("--init-from", start).sorter == {}  # the file's sorter, depth 2, with its own settings
    assert parsed("--init-from", start, "--sorter", '{"softness": 0.3}').sorter == {"softness": 0.3}
    config.write_text(f"init_from: {start}\nsorter: {{softness: 0.3}}\n")  # written together: kept
    assert parsed().sorter == {"softness": 0.3} == parsed("--init-from", start).sorter
    assert parsed("--init-from", f"{SHIPPED}/../pretrained/conv_sorter_depth2.pt").sorter == {"softness": 0.3}
    # ... and replaced together: another file's sorter has its own settings.
    assert parsed("--init-from", str(SHIPPED / "conv_sorter.pt")).sorter == {}
    config.write_text("sorter: {softness: 0.1}\n")
    assert parsed("--init-from", "none").init_from is None and parsed("--init-from", "NONE").sorter == {"softness": 0.1}
    from_python = PretrainConfig(init_from=" None ")
    from_python.validate()
    assert from_python.init_from is None


def test_a_run_from_init_from_starts_from_its_weights_and_resumes_without_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    start = tmp_path / "start.pt"
    start.write_bytes((SHIPPED / "conv_sorter.pt").read_bytes())
    shipped = load_sorter(start).state_dict()
    tuning = ("--init-from", str(start), "--learning-rate", "1e-6", "--warmup-steps", "0", "--checkpoint-every", "2")
    assert _pretrain(tmp_path / "straight", 6, *tuning) == 0
    assert _pretrain(tmp_path / "fresh", 6, *tuning[2:]) == 0
    tuned, fresh = load_sorter(tmp_path / "straight").state_dict(), load_sorter(tmp_path / "fresh").state_dict()
    weight = "network.0.weight"
    # AdamW moves each weight by about the learning rate a step: 6e-6 from where the run started.
    torch.testing.assert_close(tuned[weight], shipped[weight], rtol=0, atol=1e-5)
    assert (fresh[weight] - shipped[weight]).abs().max() > 0.05
    summary = json.loads((tmp_path / "straight" / "pretrain_summary.json").read_text())
    assert summary["config"]["init_from"] == str(start)
    # The file's bytes as the run started, in the run's record, its summary and its sorter.
    digest = hashlib.sha256(start.read_bytes()).hexdigest()
    assert summary["init_from_sha256"] == digest
    assert json.loads((tmp_path / "straight" / "run.json").read_text())["init_from_sha256"] == digest
    assert load_sorter(tmp_path / "straight").checkpoint_metadata["init_from_sha256"] == digest
    assert "init_from_sha256" not in json.loads((tmp_path / "fresh" / "pretrain_summary.json").read_text())

    original_step = interrupt_at_step(monkeypatch, 3)
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "resumed", 6, *tuning)
    assert exit_info.value.code == 130
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    # The weights come from the run's checkpoint: the file may have changed since, or gone.
    start.write_bytes((SHIPPED / "conv_sorter_depth2.pt").read_bytes())
    assert _pretrain(tmp_path / "resumed", 6, *tuning, "--resume") == 0
    _assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    resumed_summary = json.loads((tmp_path / "resumed" / "pretrain_summary.json").read_text())
    assert resumed_summary["init_from_sha256"] == digest  # the file it started from, not the one there now
    start.unlink()
    assert _pretrain(tmp_path / "resumed", 6, *tuning, "--resume") == 0  # finished: nothing to train
    capsys.readouterr()
    # A fresh run needs the file, and a run folder it starts from is not cleared under it.
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "again", 6, *tuning)
    assert "--init-from: no sorter checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "straight", 6, "--init-from", str(tmp_path / "straight"), "--overwrite")
    assert (
        f"{tmp_path / 'straight'} is what this run reads as --init-from: clearing it would delete it"
        in capsys.readouterr().err
    )
    assert (tmp_path / "straight" / "sorter.pt").is_file()


def test_another_spelling_of_the_sorter_a_run_started_from_resumes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "source", 2) == 0
    original_step = interrupt_at_step(monkeypatch, 2)
    with pytest.raises(SystemExit) as exit_info:
        _pretrain(tmp_path / "tuned", 4, "--init-from", "source", "--checkpoint-every", "1")
    assert exit_info.value.code == 130
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    for spelling in ("./source/sorter.pt", str(tmp_path / "source") + "/"):
        assert _pretrain(tmp_path / "tuned", 4, "--init-from", spelling, "--checkpoint-every", "1", "--resume") == 0
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["config"]["init_from"] == "source"
    capsys.readouterr()
    with pytest.raises(SystemExit):  # another sorter is another run
        _pretrain(tmp_path / "tuned", 4, "--init-from", str(SHIPPED / "conv_sorter.pt"), "--resume")
    error = capsys.readouterr().err
    assert "with other settings (" in error and "init-from" in error, error


def test_export_of_a_finished_run_carries_what_its_sorter_file_records(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _pretrain(tmp_path / "run", 4) == 0
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "exported.pt")]) == 0
    own = load_sorter(tmp_path / "run" / "sorter.pt").checkpoint_metadata
    exported = load_sorter(tmp_path / "exported.pt").checkpoint_metadata
    for key in ("command", "config", "validation", "steps", "training_seconds", "world_size"):
        assert exported[key] == own[key], key
    assert (exported["step"], exported["of_steps"]) == (4, 4)
    # A checkpoint of a run that went on since is not described by the run's summary.
    summary = json.loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    (tmp_path / "run" / "pretrain_summary.json").write_text(json.dumps({**summary, "steps": 9}))
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "mid.pt")]) == 0
    assert "validation" not in load_sorter(tmp_path / "mid.pt").checkpoint_metadata


def test_a_resume_that_changes_the_wandb_mode_says_so(tmp_path, monkeypatch, capsys):
    original_step = interrupt_at_step(monkeypatch, 3)
    with pytest.raises(SystemExit):
        _pretrain(tmp_path / "run", 6, "--checkpoint-every", "2", "--wandb", "disabled")
    monkeypatch.setattr(SorterPretraining, "training_step", original_step)
    capsys.readouterr()
    assert _pretrain(tmp_path / "run", 6, "--checkpoint-every", "2", "--resume") == 0  # the helper's --wandb offline
    note = f"note: the run in {tmp_path / 'run'} logged to W&B as disabled; from here it logs as offline (the setting)"
    assert note in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["wandb"] == "offline"


def test_export_of_a_folder_without_a_training_checkpoint_says_why_and_what_to_do(tmp_path):
    import threading

    from sodeep.run_folder import PREVIOUS_RUN, hold_folder, releasing_run_folders

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "sorter.pt").write_bytes(b"")  # a folder that is no run, whatever it holds
    with pytest.raises(FileNotFoundError) as raised:
        sorter_from_training_checkpoint(plain)
    assert str(raised.value) == (
        f"{plain} is a folder, neither a training checkpoint nor a pretraining run folder (no readable run.json): "
        "give a run folder of `sodeep pretrain` or its checkpoints/last.ckpt"
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"command": "pretrain", "config": {}}))
    with pytest.raises(FileNotFoundError) as raised:
        sorter_from_training_checkpoint(run)
    assert str(raised.value) == (
        f"no training checkpoint in {run}: its pretraining run stopped before its first checkpoint; "
        "run its pretraining again"
    )
    held, release = threading.Event(), threading.Event()

    @releasing_run_folders
    def hold():  # as a pretraining that has not written its first checkpoint yet
        hold_folder(run)
        held.set()
        release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(FileNotFoundError) as raised:
            sorter_from_training_checkpoint(run)
    finally:
        release.set()
        holder.join()
    assert str(raised.value) == (
        f"no training checkpoint in {run} yet, which is in use by a running sodeep command (this process, another "
        "thread); wait for it to end or export it once its first checkpoint is written"
    )
    (run / PREVIOUS_RUN / "checkpoints").mkdir(parents=True)
    (run / PREVIOUS_RUN / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as raised:
        sorter_from_training_checkpoint(run)
    assert str(raised.value).endswith(
        f"(the next pretraining in {run} puts it back); export or load {run / PREVIOUS_RUN}, or run the pretraining again"
    )


def test_a_ctrl_c_while_the_fit_starts_leaves_ctrl_c_working_afterwards(tmp_path, monkeypatch):
    """Lightning ignores Ctrl-C from the interrupt it handles on; a notebook's later cells must
    still take it."""
    import _thread
    import signal

    import lightning.pytorch.loggers.csv_logs as csv_logs

    real = csv_logs.CSVLogger.log_hyperparams

    def interrupted_while_the_fit_starts(self, *arguments, **keywords):
        _thread.interrupt_main()
        return real(self, *arguments, **keywords)

    monkeypatch.setattr(csv_logs.CSVLogger, "log_hyperparams", interrupted_while_the_fit_starts)
    config = PretrainConfig(
        steps=4, batch_size=4, lengths="2-8", sorter={"capacity": 8}, validation_every=2,
        validation_sequences=1, data_workers=0, out=str(tmp_path / "run"), wandb="disabled",
    )  # fmt: skip
    # A notebook's handlers, whatever the tests before this one left.
    left = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(config)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (
            signal.default_int_handler,
            signal.SIG_DFL,
        )
    finally:
        signal.signal(signal.SIGINT, left[0])
        signal.signal(signal.SIGTERM, left[1])


def test_the_model_cards_command_without_a_clone_trains_what_the_shipped_config_does():
    """``--sorter '{"softness": 0.1}' --validation-every 500`` (the model card, for an installed
    package) sets what experiments/configs/pretrain.yaml sets: the same settings, the same sorter."""
    from sodeep.sorters import build_sorter

    shipped = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "pretrain.yaml"
    from_file = PretrainConfig(**yaml.safe_load(shipped.read_text()))
    from_flags = PretrainConfig(sorter={"softness": 0.1}, validation_every=500)
    file_settings, flag_settings = config_to_dict(from_file), config_to_dict(from_flags)
    assert {key: value for key, value in file_settings.items() if key != "sorter"} == {
        key: value for key, value in flag_settings.items() if key != "sorter"
    }
    assert build_sorter("conv", **from_file.sorter).config() == build_sorter("conv", **from_flags.sorter).config()
    card = (shipped.parents[2] / "pretrained" / "MODEL_CARD.md").read_text()
    assert "`sodeep pretrain --sorter '{\"softness\": 0.1}'\n  --validation-every 500 --out runs/pretrain`" in card
