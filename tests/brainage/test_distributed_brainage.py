"""Brain age under DDP: `sodeep brainage tabular` as two CPU processes (gloo) started by Lightning,
as `--devices 2 --strategy ddp` does; and the checks of the scale-out settings."""

import json
import os
import signal
import textwrap

import numpy as np
import pytest
import torch
from brainage_inputs import tiny_argv, write_inputs, write_table
from ddp_launch import DDP, run_entry_point

from sodeep.brainage.commands import claim_folder
from sodeep.brainage.config import TabularConfig, TrainingConfig, load_config
from sodeep.brainage.interruption import SignalStop
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.splits import fold_rows
from sodeep.brainage.tables import Standardizer, read_age_table
from sodeep.brainage.training import AgeRegression, SubjectShare, fit_age_model, load_age_model, predict_ages
from sodeep.cli import main
from sodeep.run_folder import RunInterrupted, start_run_folder

# `sodeep <argv>` with spies in every process: each training run's record goes to
# SEEN/rank<r>.jsonl and each file written through sodeep.files to SEEN/writes.txt, with the rank.
# The launching process (rank 0) then waits for the processes Lightning started and records
# their exit statuses.
ENTRY_POINT = textwrap.dedent(
    """
    import gc, json, os, signal, subprocess, sys

    import sodeep.brainage.cross_validation as cross_validation
    import sodeep.brainage.plots as plots
    import sodeep.files as files
    from sodeep.brainage.training import AgeRegression
    from sodeep.cli import main
    from sodeep.runs import global_rank

    seen = os.environ["SODEEP_TEST_SEEN"]
    stop_at = os.environ.get("SODEEP_TEST_STOP_AT", "::")  # "rank:epoch:SIGNAL": that process gets it there, once
    train_and_test, training_step, atomic_write = (
        cross_validation.train_and_test, AgeRegression.training_step, files.atomic_write
    )

    def spied_train_and_test(*args, **kwargs):
        record = train_and_test(*args, **kwargs)
        with open(os.path.join(seen, f"rank{global_rank()}.jsonl"), "a") as log:
            log.write(json.dumps(record) + "\\n")
        return record

    sent = []

    def spied_training_step(self, batch, batch_index):
        rank, epoch, name = stop_at.split(":")
        if f"{self.global_rank}:{self.current_epoch}" == f"{rank}:{epoch}" and not sent:
            sent.append(os.kill(os.getpid(), getattr(signal, name)))
        return training_step(self, batch, batch_index)

    def spied_atomic_write(path, write):
        with open(os.path.join(seen, "writes.txt"), "a") as log:
            log.write(f"{global_rank()} {path}\\n")
        return atomic_write(path, write)

    cross_validation.train_and_test = spied_train_and_test
    AgeRegression.training_step = spied_training_step
    files.atomic_write = plots.atomic_write = spied_atomic_write
    try:
        status = main()
    except SystemExit as exit:
        status = exit.code
    started = [p for p in gc.get_objects() if isinstance(p, subprocess.Popen) and __file__ in map(str, p.args)]
    with open(os.path.join(seen, "children.json"), "w") as record:
        record.write(json.dumps([p.wait(timeout=120) for p in started]))
    sys.exit(status)
    """
)

TINY_CV = ["--losses", "l1", "--seeds", "0", "--folds", "2", "--max-epochs", "4", "--batch-size", "8"]


def _run(folder, *argv, stop_at=None):
    """Run ``sodeep argv`` as two processes under the spies; returns (completed process, seconds)."""
    return run_entry_point(folder, ENTRY_POINT, *argv, stop_at=stop_at)


def _records(folder, rank):
    """The run records ``rank`` computed, in order."""
    path = folder / "seen" / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _mae_from_saved_weights(table_path, out, run):
    """The test MAE of ``run`` (seed 0, preset l1) computed here, in one process, from its best.ckpt."""
    table, config = read_age_table(table_path), TrainingConfig()
    rows = fold_rows(
        table.ages,
        table.sites,
        split="stratified",
        folds=2,
        seed=0,
        fold=run["fold"],
        validation_fraction=config.validation_fraction,
    )
    scaler = Standardizer().fit(table.features[rows.fitting])
    model = AgeMLP(len(table.feature_names), hidden=config.hidden, dropout=config.dropout)
    load_age_model(model, out / "checkpoints" / "l1" / f"seed0_fold{run['fold']}" / "best.ckpt")
    predicted = predict_ages(model, torch.from_numpy(scaler.transform(table.features[rows.test]))).numpy()
    assert run["test_rows"] == rows.test.tolist()
    return float(np.abs(predicted.astype(np.float64) - table.ages[rows.test]).mean())


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A two-process tabular cross-validation (W&B offline): (folder, table, out, completed process, seconds)."""
    folder = tmp_path_factory.mktemp("ddp")
    table = write_table(folder / "table.csv")
    out = folder / "run"
    done, seconds = _run(folder, "brainage", "tabular", "--csv", str(table), *TINY_CV, *DDP, "--out", str(out))
    return folder, table, out, done, seconds


@pytest.mark.slow  # 15-40 s on 2 busy CPU cores: both processes import torch and Lightning
def test_two_processes_agree_and_rank_0_alone_writes(ddp_run):
    folder, table, out, done, _ = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((folder / "seen" / "children.json").read_text()) == [0]  # rank 1 exited 0 too
    # Each process computed every run's record, and they are the same.
    ranks = [_records(folder, rank) for rank in (0, 1)]
    assert [(r["seed"], r["fold"]) for r in ranks[0]] == [(0, 0), (0, 1)] and ranks[0] == ranks[1]
    assert all(np.isfinite([r["mae"], r["best_val_mae"], r["spearman"]]).all() for r in ranks[0])
    # Rank 0 alone wrote: run.json, results.json, the report, the plot (and the checkpoints, through Lightning).
    writes = [line.split(" ", 1) for line in (folder / "seen" / "writes.txt").read_text().splitlines()]
    assert {rank for rank, _ in writes} == {"0"}
    assert {"run.json", "results.json", "results.md", "l1.png"} <= {os.path.basename(path) for _, path in writes}
    assert done.stdout.count(f"wrote {out / 'results.json'}") == 1 and done.stdout.count("# Brain age from") == 1
    assert len(list((out / "wandb").rglob("run-*.wandb"))) == 1  # one W&B run: rank 0's
    # What results.json holds is what one process computes from the weights the run saved.
    results = json.loads((out / "results.json").read_text())
    for run, record in zip(results["presets"]["l1"]["runs"], ranks[0]):
        assert run["mae"] == pytest.approx(_mae_from_saved_weights(table, out, run), abs=1e-6)
        assert run["mae"] == record["mae"] and run["test_predictions"] == record["test_predictions"]
    record = json.loads((out / "run.json").read_text())["config"]
    assert (record["devices"], record["strategy"], record["accelerator"], record["num_nodes"]) == (2, "ddp", "cpu", 1)


@pytest.mark.slow  # 30-60 s on 2 busy CPU cores: two DDP runs (and the fixture's, when run alone)
def test_a_signal_to_one_process_stops_both_and_the_resumed_run_ends_as_an_uninterrupted_one(ddp_run, tmp_path):
    _, table, reference, _, _ = ddp_run
    out = tmp_path / "run"
    argv = ["brainage", "tabular", "--csv", str(table), *TINY_CV, *DDP, "--wandb", "disabled", "--out", str(out)]
    # SIGTERM, as SLURM sends at a time limit, here to one process only; Lightning's own handler must not act.
    stopped, _ = _run(tmp_path, *argv, stop_at="1:2:SIGTERM")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert json.loads((tmp_path / "seen" / "children.json").read_text()) == [0]
    # Both stopped in the third epoch of the first run, and the resume command is printed once.
    assert stopped.stderr.count("resume with: sodeep brainage tabular") == 1
    assert "interrupted at l1, seed 0, fold 0, epoch 3; resume with:" in stopped.stderr
    assert _records(tmp_path, 0) == _records(tmp_path, 1) == []
    assert torch.load(out / "checkpoints" / "l1" / "seed0_fold0" / "last.ckpt", weights_only=True)["epoch"] == 1

    resumed, _ = _run(tmp_path, *argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    finished = json.loads((out / "results.json").read_text())["presets"]["l1"]["runs"]
    expected = json.loads((reference / "results.json").read_text())["presets"]["l1"]["runs"]
    assert [(run["mae"], run["test_predictions"]) for run in finished] == [
        (run["mae"], run["test_predictions"]) for run in expected
    ]


@pytest.fixture(scope="module")
def brainage_inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("inputs"))


BAD_FLAGS = [
    (["--devices", "0"], "--devices must be a count >= 1, 'auto', -1 or indices like '0,2', got '0'"),
    (["--devices", "two"], "--devices must be a count >= 1"),
    (["--num-nodes", "0"], "--num-nodes must be an integer >= 1, got 0"),
    (["--strategy", "ddp_spawn"], "strategy 'ddp_spawn' starts its processes inside fit"),
    (["--strategy", "DDP_SPAWN"], "strategy 'DDP_SPAWN' starts its processes inside fit"),
    (["--strategy", "bogus"], "'bogus' is not a Lightning strategy; strategies sodeep runs under: auto, ddp,"),
    (["--accelerator", "tpu"], "cannot train with --accelerator tpu, --devices 1, --strategy auto, --num-nodes 1: "),
    (["--accelerator", "gpu", "--devices", "64"], "cannot train with --accelerator gpu, --devices 64"),
    (
        ["--accelerator", "cpu", "--devices", "4096"],
        "4096 CPU processes on the",
    ),
]


@pytest.mark.parametrize("command", ["tabular", "synthetic", "nifti"])
@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(flags) for flags, _ in BAD_FLAGS])
def test_bad_scale_out_settings_end_in_one_line_and_leave_nothing(
    tmp_path, capsys, brainage_inputs, command, flags, message
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["brainage", command, *tiny_argv(command, brainage_inputs), *flags, "--out", str(out)])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and message in error, error
    assert not out.exists()


def test_scale_out_settings_in_yaml_and_their_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("devices: [0, 2]\nstrategy: ddp\nnum-nodes: 2\naccelerator: gpu\n")
    config = load_config(TabularConfig, path)
    assert config.trainer_options() == {"accelerator": "gpu", "devices": "0,2", "strategy": "ddp", "num_nodes": 2}
    assert load_config(TabularConfig, {"devices": "4"}).devices == 4
    assert TabularConfig().trainer_options() == {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1}
    with pytest.raises(ValueError, match=r"num_nodes must be int, got True \(bool\)"):
        load_config(TabularConfig, {"num_nodes": True})


def test_a_folder_may_be_resumed_on_other_hardware(tmp_path):
    table = write_table(tmp_path / "table.csv")
    data = {"table_sha256": "0" * 64}
    first = TabularConfig(csv=str(table), out=str(tmp_path / "run"))
    out, record = claim_folder("tabular", first, data, resume=False, overwrite=False)
    start_run_folder(out, record, overwrite=False)
    elsewhere = TabularConfig(csv=str(table), out=str(out), accelerator="gpu", devices="0,1", strategy="ddp")
    assert claim_folder("tabular", elsewhere, data, resume=True, overwrite=False)[1]["run_id"] == record["run_id"]
    with pytest.raises(ValueError, match="other settings"):
        claim_folder(
            "tabular", TabularConfig(csv=str(table), out=str(out), folds=3), data, resume=True, overwrite=False
        )


def test_the_processes_share_out_each_epoch_and_one_process_shuffles_as_random_sampler():
    def share(rank, world_size):
        return SubjectShare(11, torch.Generator().manual_seed(5), rank=rank, world_size=world_size)

    alone = torch.utils.data.RandomSampler(range(11), generator=torch.Generator().manual_seed(5))
    single = share(0, 1)
    for _ in range(3):  # epoch after epoch
        assert list(single) == list(alone)
    parts = [list(share(rank, 3)) for rank in range(3)]
    order = list(torch.utils.data.RandomSampler(range(11), generator=torch.Generator().manual_seed(5)))
    assert [len(part) for part in parts] == [3, 3, 3]
    assert [order[rank:9:3] for rank in range(3)] == parts  # places r, r + 3, r + 6 of the epoch's shuffle
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        SubjectShare(4, torch.Generator(), rank=2, world_size=2)


def test_sigterm_during_a_fit_stops_it_cleanly(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(24, 3, generator=generator)
    ages = inputs[:, 0] * 10 + 50
    original = AgeRegression.training_step

    def step(self, batch, batch_index):
        if self.current_epoch == 1 and batch_index == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning has a SIGTERM handler of its own during a fit
        return original(self, batch, batch_index)

    monkeypatch.setattr(AgeRegression, "training_step", step)
    with pytest.raises(RunInterrupted, match="^interrupted at l1, seed 0, fold 0, epoch 2$"):
        with SignalStop() as stop, stop.deferred("l1, seed 0, fold 0"):
            fit_age_model(
                AgeMLP(3, hidden=(4,)),
                "l1",
                (inputs[:18], ages[:18]),
                (inputs[18:], ages[18:]),
                out=tmp_path,
                batch_size=6,
                max_epochs=4,
                stop=stop,
            )
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 0
