"""Fine-tuning: each run starts from the trained model of its own (seed, fold), or from one
checkpoint; a frozen backbone keeps its weights while the head trains; a wrong source is refused
in one line before anything is written; results record where runs started; a fine-tuned folder
resumes."""

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from brainage_inputs import remembering, tiny_argv, write_inputs, write_table

import sodeep.brainage.synthetic_mri as synthetic_mri
from sodeep.brainage import TabularConfig, run_tabular
from sodeep.brainage.config import SyntheticConfig
from sodeep.brainage.finetuning import FineTuning
from sodeep.brainage.models import SFCN, AgeMLP
from sodeep.brainage.training import AgeRegression, fit_age_model, regression_head
from sodeep.checkpoints import default_sorter_path
from sodeep.cli import build_parser, main
from sodeep.sweeps.expand import expand_trials
from sodeep.sweeps.launcher import TrialLauncher
from sodeep.sweeps.spec import load_sweep

#: Fine-tuning that leaves the weights where they start: what a run started from proves itself by.
STILL = ["--finetune-learning-rate", "1e-9", "--finetune-epochs", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


def brainage(command, out, inputs, *flags):
    return main(["brainage", command, *tiny_argv(command, inputs), "--out", str(out), "--wandb", "disabled", *flags])


@pytest.fixture(scope="module")
def source(inputs, tmp_path_factory):
    """An ``l1`` run folder of ``tabular`` on the small table: 2 folds, seed 0, 3 epochs."""
    out = tmp_path_factory.mktemp("source") / "l1"
    assert brainage("tabular", out, inputs, "--max-epochs", "3") == 0
    return out


def _runs(out, preset):
    return json.loads((Path(out) / "results.json").read_text())["presets"][preset]["runs"]


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_each_run_starts_from_the_model_of_its_own_fold_and_records_it(tmp_path, inputs, source, capsys):
    config = TabularConfig(
        csv=str(inputs / "table.csv"),
        losses=["l1+spearman"],
        folds=2,
        seeds=[0],
        batch_size=8,
        init_from=str(source),
        finetune_learning_rate=1e-9,
        finetune_epochs=1,
        out=str(tmp_path / "tuned"),
        wandb="disabled",
    )
    results = run_tabular(config, progress=False)
    for run, start in zip(results["presets"]["l1+spearman"]["runs"], _runs(source, "l1"), strict=True):
        assert run["test_rows"] == start["test_rows"]
        np.testing.assert_allclose(run["test_predictions"], start["test_predictions"], atol=2e-3)
        checkpoint = (source / "checkpoints" / "l1" / f"seed0_fold{run['fold']}" / "best.ckpt").resolve()
        assert run["init_checkpoint"] == str(checkpoint) and run["init_checkpoint_sha256"] == _sha256(checkpoint)
    origin = results["settings"]["init_from"]
    assert origin | {"sha256": None} == {
        "path": str(source.resolve()),
        "sha256": None,
        "preset": "l1",
        "freeze_backbone": False,
    }
    assert (results["settings"]["config"]["max_epochs"], results["settings"]["config"]["learning_rate"]) == (1, 1e-9)
    record = json.loads((tmp_path / "tuned" / "run.json").read_text())["config"]
    assert (record["init_from"], record["init_from_preset"]) == (str(source.resolve()), "l1")
    assert record["init_from_sha256"] == origin["sha256"] and record["finetune_epochs"] == 1
    started = f"each run started from the `l1` model of its own seed and fold in `{source.resolve()}`"
    assert started in (tmp_path / "tuned" / "results.md").read_text()
    assert f"fine-tuning: each run starts from the l1 model of its seed and fold in {source.resolve()}" in (
        capsys.readouterr().out
    )


def test_a_checkpoint_file_starts_every_run(tmp_path, inputs, source, monkeypatch):
    # Out of its run folder, one fold's model is any model: every run starts from it.
    weights = shutil.copy(source / "checkpoints" / "l1" / "seed0_fold0" / "best.ckpt", tmp_path / "model.ckpt")
    monkeypatch.setenv("SODEEP_SWEEP_TRIAL_SUMMARY", str(tmp_path / "summary.json"))
    assert brainage("tabular", tmp_path / "tuned", inputs, "--init-from", str(weights), *STILL) == 0
    # As a sweep trial of one preset, its folds pair with other trials' (other presets, from scratch).
    folds = json.loads((tmp_path / "summary.json").read_text())["folds"]
    assert [set(fold) for fold in folds] == [{"seed", "fold", "metrics"}] * 2
    tuned, start = _runs(tmp_path / "tuned", "l1"), _runs(source, "l1")
    np.testing.assert_allclose(tuned[0]["test_predictions"], start[0]["test_predictions"], atol=2e-3)
    assert {run["init_checkpoint"] for run in tuned} == {str(Path(weights).resolve())}
    settings = json.loads((tmp_path / "tuned" / "results.json").read_text())["settings"]["init_from"]
    assert settings["preset"] is None and settings["sha256"] == _sha256(weights)


@pytest.mark.parametrize(
    "model,shape",
    [
        (lambda: AgeMLP(5, hidden=(8, 4), dropout=0.2, age_offset=50.0), (5,)),
        (lambda: SFCN(channels=(2, 4), head_channels=4, age_offset=50.0, age_scale=10.0), (1, 8, 8, 8)),
    ],
    ids=["mlp", "sfcn"],
)
def test_a_frozen_backbone_keeps_its_weights_and_statistics_while_the_head_trains(tmp_path, model, shape):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(24, *shape, generator=generator)
    ages = 50 + 10 * inputs.flatten(1).mean(1) + torch.randn(24, generator=generator)
    model = model()
    head = next(name for name, module in model.named_modules() if module is regression_head(model))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fitted, _ = fit_age_model(
        model,
        "l1",
        (inputs[:16], ages[:16]),
        (inputs[16:], ages[16:]),
        out=tmp_path,
        batch_size=8,
        max_epochs=3,
        learning_rate=0.05,
        freeze_backbone=True,
    )
    after = fitted.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {f"{head}.weight", f"{head}.bias"}  # BatchNorm statistics included
    saved = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    assert {key.removeprefix("model.") for key in saved if key.startswith("model.")} == set(before)


def _two_presets(source, folder):
    """A copy of ``source`` whose results also hold an ``mse`` preset."""
    shutil.copytree(source, folder)
    results = json.loads((folder / "results.json").read_text())
    results["presets"]["mse"] = results["presets"]["l1"]
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def _no_finished_run(source, folder):
    """A copy of ``source`` interrupted before any run finished."""
    shutil.copytree(source, folder)
    results = json.loads((folder / "results.json").read_text())
    results["presets"] = {}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def _foreign(folder, command):
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"command": command, "config": {}, "run_id": "x"}))
    return folder


@pytest.mark.parametrize(
    "flags,message",
    [
        (lambda paths: ["--init-from", str(default_sorter_path())], "is a sodeep sorter checkpoint, not a brain-age"),
        (
            lambda paths: ["--init-from", str(paths["small"])],
            r"small.pt holds a model of another architecture or shape than this command's AgeMLP "
            r"\(network.1.weight is \(256, 3\) there, \(256, 2\) here\)",
        ),
        (lambda paths: ["--init-from", str(paths["inputs"] / "table.csv")], "table.csv is not a torch checkpoint"),
        (lambda paths: ["--init-from", str(paths["pretrain"])], "holds a pretrain run, not a brainage tabular run"),
        (
            lambda paths: ["--init-from", str(paths["source"]), "--folds", "3"],
            r"was trained on other data or folds \(folds: 2 there, 3 here\)",
        ),
        (
            lambda paths: ["--init-from", str(paths["source"]), "--csv", str(paths["other_table"])],
            r"was trained on other data or folds \(table_sha256: '",
        ),
        (
            lambda paths: ["--init-from", str(paths["source"]), "--seeds", "0", "1"],
            r"has no finished l1 run for seed 1 fold 0, seed 1 fold 1 \(it holds seeds \[0\]\)",
        ),
        (
            lambda paths: ["--init-from", str(paths["source"] / "checkpoints" / "l1" / "seed0_fold1" / "best.ckpt")],
            "best.ckpt is the model of one run of .*, on these same data and folds, .*; give --init-from "
            ".*checkpoints/l1 to start each run from the model of its own",
        ),
        (  # other folds of the same subjects: that model has seen test subjects of these runs
            lambda paths: [
                "--init-from",
                str(paths["source"] / "checkpoints" / "l1" / "seed0_fold1" / "best.ckpt"),
                "--folds",
                "3",
            ],
            r"best.ckpt is the model of one run of .*, on these same subjects with other settings \(folds: 2 "
            r"there, 3 here\), so it has seen test subjects of these runs; start from a model of another cohort",
        ),
        (
            lambda paths: ["--init-from", str(paths["two"] / "nowhere")],
            "error: --init-from: no file or folder at .*nowhere to start the runs from$",
        ),
        (
            lambda paths: ["--init-from", str(paths["two"])],
            r"holds the presets \['l1', 'mse'\]; give .*checkpoints/l1 or",
        ),
        (lambda paths: ["--init-from", str(paths["two"] / "checkpoints" / "cheng2021")], "no file or folder at"),
        (
            lambda paths: ["--init-from", str(paths["unfinished"])],
            r"unfinished holds no finished run yet; finish it first \(the command that started it, with --resume\)",
        ),
        (lambda paths: ["--freeze-backbone"], "--freeze-backbone needs --init-from"),
        (
            lambda paths: ["--init-from", str(paths["set_aside"])],
            r"an --overwrite of .*killed was stopped before its cohort was ready, and the run it replaces is in "
            r".*killed/.sodeep-previous-run; run a brain-age command with --out .*killed \(which puts it back first\), "
            r"or give --init-from .*killed/.sodeep-previous-run$",
        ),
        (
            lambda paths: ["--init-from", str(paths["source"]), "--out", str(paths["source"]), "--overwrite"],
            "is in the output folder .*; choose another folder for --out",
        ),
    ],
    ids=[
        "sorter",
        "shape",
        "not-a-checkpoint",
        "other-command",
        "other-folds",
        "other-table",
        "missing-runs",
        "a-fold-of-the-same-data",
        "a-fold-of-the-same-subjects-in-other-folds",
        "no-such-path",
        "two-presets",
        "no-such-preset",
        "no-finished-run",
        "freeze-from-scratch",
        "set-aside",
        "source-in-out",
    ],
)
def test_a_wrong_source_is_refused_in_one_line_before_anything_is_written(
    tmp_path, inputs, source, capsys, flags, message
):
    torch.save(AgeMLP(3).state_dict(), tmp_path / "small.pt")
    paths = {
        "inputs": inputs,
        "source": source,
        "small": tmp_path / "small.pt",
        "pretrain": _foreign(tmp_path / "pretrain", "pretrain"),
        "other_table": write_table(tmp_path / "other.csv", seed=1),
        "two": _two_presets(source, tmp_path / "two"),
        "unfinished": _no_finished_run(source, tmp_path / "unfinished"),
        "set_aside": _foreign(tmp_path / "killed", "brainage tabular"),
    }
    (paths["set_aside"] / ".sodeep-previous-run").mkdir()  # an --overwrite killed before its data were ready
    with pytest.raises(SystemExit) as exit_info:
        brainage("tabular", tmp_path / "out", inputs, *flags(paths))
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(error) == 1
    assert re.search(message, error[0]), error[0]
    assert not (tmp_path / "out").exists()


def test_a_plain_state_dict_is_a_checkpoint_too(tmp_path):
    trained = AgeMLP(2, hidden=(4,), age_offset=40.0)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    start = FineTuning.open(
        tmp_path / "weights.pt", command="tabular", settings={}, seeds=[0], folds=2, model=AgeMLP(2, hidden=(4,))
    )
    model = AgeMLP(2, hidden=(4,))
    origin = start.start(model, seed=0, fold=1)
    assert all(torch.equal(value, trained.state_dict()[key]) for key, value in model.state_dict().items())
    assert origin == {
        "init_checkpoint": str((tmp_path / "weights.pt").resolve()),
        "init_checkpoint_sha256": _sha256(tmp_path / "weights.pt"),
    }


def test_a_whole_pickled_model_is_refused_with_the_way_to_save_its_weights(tmp_path):
    torch.save(AgeMLP(2, hidden=(4,)), tmp_path / "whole.pt")
    with pytest.raises(ValueError) as raised:
        FineTuning.open(
            tmp_path / "whole.pt", command="tabular", settings={}, seeds=[0], folds=2, model=AgeMLP(2, hidden=(4,))
        )
    assert str(raised.value).endswith("save the model's weights, torch.save(model.state_dict(), path)")
    assert "import_original_checkpoint" not in str(raised.value)


def _interrupt_at(monkeypatch, fold, epoch):
    """SIGINT to this process, once, in the first training step of ``epoch`` of ``fold``."""
    original, sent = AgeRegression.training_step, []

    def step(self, batch, batch_index):
        if self.hparams.run["fold"] == fold and self.current_epoch == epoch and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return original(self, batch, batch_index)

    monkeypatch.setattr(AgeRegression, "training_step", step)


def test_a_fine_tuned_folder_resumes_and_refuses_another_source(tmp_path, inputs, source, monkeypatch, capsys):
    start = shutil.copytree(source, tmp_path / "start")
    flags = [
        "--init-from",
        str(start),
        "--freeze-backbone",
        "--finetune-epochs",
        "3",
        "--finetune-learning-rate",
        "0.01",
    ]
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert brainage("tabular", straight, inputs, *flags) == 0
    _interrupt_at(monkeypatch, fold=1, epoch=1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        brainage("tabular", out, inputs, *flags)
    assert exit_info.value.code == 130
    again = capsys.readouterr().err.strip().splitlines()[-1].split("resume with: sodeep ", 1)[1]
    assert main(shlex.split(again)) == 0
    for run, same in zip(_runs(out, "l1"), _runs(straight, "l1"), strict=True):
        assert run["test_predictions"] == same["test_predictions"] and run["init_checkpoint"] == same["init_checkpoint"]
    assert json.loads((out / "results.json").read_text())["settings"]["init_from"]["freeze_backbone"] is True

    capsys.readouterr()
    for change, differing in (
        (["--finetune-epochs", "4"], "--finetune-epochs: 3 -> 4"),
        (["--no-freeze-backbone"], "--freeze-backbone: true -> false"),
    ):
        with pytest.raises(SystemExit):
            brainage("tabular", out, inputs, *flags, *change, "--resume")
        assert differing in capsys.readouterr().err
    # The source folder overwritten by another run (a new run id): not the models these runs started from.
    record = json.loads((start / "run.json").read_text())
    (start / "run.json").write_text(json.dumps(record | {"run_id": "another"}))
    with pytest.raises(SystemExit):
        brainage("tabular", out, inputs, *flags, "--resume")
    assert (
        "with other settings (init_from_sha256 (the source's digest: a file's content, or a run folder's command, "
        "settings and run id, which a new run in that folder changes): "
    ) in capsys.readouterr().err


@pytest.fixture
def simulated_once(monkeypatch):
    monkeypatch.setattr(synthetic_mri, "simulate_subject", remembering(synthetic_mri.simulate_subject))


@pytest.mark.usefixtures("simulated_once")
@pytest.mark.parametrize("command", ["synthetic", "nifti"])
def test_the_volume_commands_start_from_their_source_models(tmp_path, inputs, command, capsys):
    # A frozen backbone keeps SFCN's BatchNorm statistics: with no step size the predictions stay.
    assert brainage(command, tmp_path / "source", inputs) == 0
    flags = ["--init-from", str(tmp_path / "source"), "--freeze-backbone", *STILL]
    assert brainage(command, tmp_path / "tuned", inputs, *flags) == 0
    for run, start in zip(_runs(tmp_path / "tuned", "l1"), _runs(tmp_path / "source", "l1"), strict=True):
        np.testing.assert_allclose(run["test_predictions"], start["test_predictions"], atol=2e-3)
        assert Path(run["init_checkpoint"]).parent.name == (
            "seed0" if command == "synthetic" else f"seed0_fold{run['fold']}"
        )
    # synthetic has one split per seed: its messages and report name seeds, not folds.
    own = "seed" if command == "synthetic" else "seed and fold"
    assert f"started from the `l1` model of its own {own} in" in (tmp_path / "tuned" / "results.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        brainage(command, tmp_path / "more", inputs, *flags, "--seeds", "1")
    missing = "seed 1" if command == "synthetic" else "seed 1 fold 0"
    assert f"has no finished l1 run for {missing}" in capsys.readouterr().err


def test_fine_tuning_settings_apply_only_to_runs_started_from_a_model():
    scratch = TabularConfig(finetune_epochs=5, finetune_learning_rate=1e-4)
    assert scratch.schedule() == {"max_epochs": 300, "learning_rate": 1e-3}
    tuned = TabularConfig(init_from="runs/l1", finetune_epochs=5, finetune_learning_rate=1e-4)
    assert tuned.schedule() == {"max_epochs": 5, "learning_rate": 1e-4}
    assert TabularConfig(init_from="runs/l1", max_epochs=40).schedule() == {"max_epochs": 40, "learning_rate": 1e-3}
    with pytest.raises(ValueError, match="finetune_epochs must be None or >= 1, got 0"):
        TabularConfig(init_from="runs/l1", finetune_epochs=0)
    with pytest.raises(ValueError, match="cascade trains its second stage from scratch"):
        SyntheticConfig(init_from="runs/l1", cascade=True)


def test_finetune_sweep_trains_the_l1_source_first_and_fine_tunes_from_its_folder(tmp_path):
    sweeps = Path(__file__).resolve().parents[2] / "experiments" / "sweeps"
    spec = load_sweep(sweeps / "brainage_finetune.yaml")
    launcher = TrialLauncher(spec, tmp_path, "offline", sweeps.parents[1])
    trials = expand_trials(spec)
    parser = build_parser()
    parsed = [parser.parse_args(launcher.command(trial)[0][2:]) for trial in trials]
    first = parsed[0]
    assert (first.losses, getattr(first, "init_from", None)) == (["l1"], None)
    source = launcher.trial_folder(trials[0]) / "runs" / "brainage-tabular"  # the default --out, in its trial folder
    tuned = [(trial, arguments) for trial, arguments in zip(trials, parsed) if getattr(arguments, "init_from", None)]
    assert tuned and {arguments.losses[0] for _, arguments in tuned} >= {"l1", "l1+spearman"}
    for trial, arguments in tuned:
        assert (launcher.trial_folder(trial) / arguments.init_from).resolve() == source.resolve()
        assert arguments.seeds == first.seeds and arguments.folds == first.folds
