"""Pretraining under DDP: two CPU processes (gloo) started by Lightning, as `--devices 2 --strategy ddp` does."""

import hashlib
import json
import textwrap

import pytest
import torch
from ddp_launch import DDP, run_entry_point

from sodeep import load_sorter
from sodeep.cli import main
from sodeep.config import PretrainConfig, config_from_mapping
from sodeep.pretraining import SequenceDataModule
from sodeep.synthetic import SyntheticSequences

# `sodeep <argv>` with a spy in every process: each training batch's step and fingerprint go to
# SEEN/rank<r>.txt.  The launching process (rank 0) then waits for the processes Lightning started
# and exits non-zero if one of them failed, at exit included, so one exit status covers them all.
ENTRY_POINT = textwrap.dedent(
    """
    import gc, hashlib, os, signal, subprocess, sys

    from sodeep.cli import main
    from sodeep.pretraining import SorterPretraining

    seen = os.environ["SODEEP_TEST_SEEN"]
    stop_at = os.environ.get("SODEEP_TEST_STOP_AT")  # "rank:step": that process gets SIGINT there
    original = SorterPretraining.training_step

    def training_step(self, batch, batch_index):
        digest = hashlib.sha256(batch[0].numpy().tobytes()).hexdigest()
        with open(os.path.join(seen, f"rank{self.global_rank}.txt"), "a") as log:
            log.write(f"{self.global_step} {digest}\\n")
        if stop_at == f"{self.global_rank}:{self.global_step}":
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, batch_index)

    SorterPretraining.training_step = training_step
    try:
        status = main()
    except SystemExit as exit:
        status = exit.code
    started = [p for p in gc.get_objects() if isinstance(p, subprocess.Popen) and __file__ in map(str, p.args)]
    children = [p.wait(timeout=120) for p in started]
    with open(os.path.join(seen, "children.json"), "w") as record:
        record.write(str(children))
    sys.exit(status if all(code == status for code in children) else 99)
    """
)

TINY_RUN = [
    "pretrain", "--steps", "6", "--batch-size", "8", "--lengths", "2-24", "--sorter", '{"capacity": 32}',
    "--validation-every", "3", "--checkpoint-every", "2", "--validation-sequences", "2",
]  # fmt: skip


def _run(folder, *argv, stop_at=None):
    """Run ``sodeep argv`` as two processes under the spies, whose records of earlier runs in
    ``folder`` are kept; returns (completed process, seconds)."""
    return run_entry_point(folder, ENTRY_POINT, *argv, stop_at=stop_at, fresh=False)


def _seen(tmp_path, rank):
    """(step, fingerprint) of each batch ``rank`` trained on, in order."""
    lines = (tmp_path / "seen" / f"rank{rank}.txt").read_text().split()
    return [(int(step), digest) for step, digest in zip(lines[0::2], lines[1::2])]


def _stream_indices(seen, count=40):
    """Which batches of the one seeded stream (seed 0, batch 8, lengths 2-24) ``seen`` were."""
    stream = SyntheticSequences(8, list(range(2, 25)), seed=0)
    index_of = {hashlib.sha256(stream.batch(k)[0].numpy().tobytes()).hexdigest(): k for k in range(count)}
    return [index_of.get(digest) for _, digest in seen]


@pytest.mark.slow  # 20-35 s on 2 busy CPU cores: both processes import torch and Lightning
def test_ddp_on_two_cpu_processes_shares_out_the_stream_and_rank_0_writes(tmp_path):
    out = tmp_path / "run"
    done, _ = _run(tmp_path, *TINY_RUN, *DDP, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "seen" / "children.json").read_text()) == [0]  # rank 1 exited 0 too
    assert done.stdout.count("sorter written to") == 1  # reported by rank 0 only
    # Rank r trained on stream batches r, r + 2, r + 4, ...: different data, the whole stream.
    assert _stream_indices(_seen(tmp_path, 0)) == [0, 2, 4, 6, 8, 10]
    assert _stream_indices(_seen(tmp_path, 1)) == [1, 3, 5, 7, 9, 11]
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert (summary["steps"], summary["world_size"], summary["sequences_per_step"]) == (6, 2, 16)
    assert load_sorter(out / "sorter.pt").max_length == 32
    assert (
        torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["SequenceDataModule"]["batches_consumed"] == 12
    )
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoints", "csv", "pretrain_summary.json", "run.json", "run.lock", "sorter.pt", "wandb",
    ]  # fmt: skip
    assert len(list((out / "wandb").rglob("run-*.wandb"))) == 1  # one W&B run: rank 0's


def test_each_process_draws_its_own_share_of_the_stream():
    stream = SyntheticSequences(4, [5, 9], seed=3, start_batch=6)
    shares = [SyntheticSequences(4, [5, 9], seed=3, start_batch=6, rank=rank, world_size=3) for rank in range(3)]
    firsts = [[batch for _, batch in zip(range(2), share)] for share in shares]
    for rank, batches in enumerate(firsts):
        for j, (scores, ranks) in enumerate(batches):
            expected = stream.batch(6 + rank + 3 * j)
            assert torch.equal(scores, expected[0]) and torch.equal(ranks, expected[1])
    with pytest.raises(ValueError, match="rank must be in"):
        SyntheticSequences(4, [5], rank=2, world_size=2)


def test_the_stream_state_counts_batches_of_every_process():
    class FakeTrainer:
        global_rank, world_size, global_step = 1, 4, 10

    data = SequenceDataModule(batch_size=2, lengths=[3])
    data.load_state_dict({"batches_consumed": 24})  # a run resumed at step 12 of 2 processes
    data.trainer = FakeTrainer()
    data.train_dataloader()
    data.trainer.global_step = 15  # 5 steps later on 4 processes
    assert data.state_dict()["batches_consumed"] == 24 + 5 * 4


@pytest.mark.slow  # 30-60 s on 2 busy CPU cores: two DDP runs
def test_a_signal_to_one_process_stops_both_and_the_run_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "run"
    stopped, _ = _run(tmp_path, *TINY_RUN, *DDP, "--out", str(out), "--wandb", "disabled", stop_at="1:2")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "interrupted at step 3; resume with: sodeep" in stopped.stderr and not (out / "sorter.pt").exists()
    assert stopped.stderr.count("interrupted at step") == 1  # said by rank 0 only
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["SequenceDataModule"]["batches_consumed"] == 6

    resumed, _ = _run(tmp_path, *TINY_RUN, *DDP, "--out", str(out), "--wandb", "disabled", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Each process went on with its own share of the stream, from where the run stopped.
    assert _stream_indices(_seen(tmp_path, 0)) == [0, 2, 4, 6, 8, 10]
    assert _stream_indices(_seen(tmp_path, 1)) == [1, 3, 5, 7, 9, 11]
    assert [step for step, _ in _seen(tmp_path, 1)] == [0, 1, 2, 3, 4, 5]
    assert json.loads((out / "pretrain_summary.json").read_text())["resumed"] is True


def test_ctrl_c_while_waiting_for_other_machines_ends_in_one_line_and_the_run_starts_again(tmp_path, capsys):
    """--num-nodes 2 on one machine waits for a second machine inside torch.distributed, where
    Python's Ctrl-C handling cannot run: the wait ends at once, in one line, with status 130, and
    the same run started on this machine alone goes ahead without --overwrite."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ddp_launch import free_port

    out = tmp_path / "run"
    environment = {
        **os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }  # fmt: skip
    waiting = subprocess.Popen(
        [sys.executable, "-m", "sodeep.cli", *TINY_RUN, "--num-nodes", "2", "--accelerator", "cpu", "--out", str(out)],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default action even where this test runs with SIGINT ignored (a background job).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not (out / "run.json").exists() and waiting.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # into the wait for the other machine
    waiting.send_signal(signal.SIGINT)
    try:
        _, error = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 130, error
    assert error.count("\n") == 1 and "interrupted while waiting for the run's 2 processes to join" in error
    assert main([*TINY_RUN, "--out", str(out), "--wandb", "disabled"]) == 0
    capsys.readouterr()
    assert (out / "sorter.pt").is_file()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--devices", "0"], "--devices must be a count >= 1, 'auto', -1 or indices like '0,2', got '0'"),
        (["--devices", "two"], "--devices must be a count >= 1"),
        (["--num-nodes", "0"], "--num-nodes must be an integer >= 1, got 0"),
        (["--strategy", "ddp_spawn"], "strategy 'ddp_spawn' starts its processes inside fit"),
        (["--strategy", "DDP_SPAWN"], "strategy 'DDP_SPAWN' starts its processes inside fit"),
        (["--strategy", "bogus"], "--strategy bogus, --num-nodes 1: 'bogus' is not a Lightning strategy; strategies"),
        (
            ["--strategy", "dp"],
            "'dp' is not a Lightning strategy; did you mean 'ddp'? strategies sodeep runs under: auto, ddp,",
        ),
        (
            ["--accelerator", "tpu"],
            "cannot train with --accelerator tpu, --devices 1, --strategy auto, --num-nodes 1: ",
        ),
        (["--accelerator", "gpu", "--devices", "64"], "cannot train with --accelerator gpu, --devices 64"),
        (
            ["--accelerator", "bogus"],
            "accelerator 'bogus' is not one Lightning knows (auto, cpu, cuda, gpu, mps, tpu; available here: auto, cpu",
        ),
        (
            ["--accelerator", "cpu", "--devices", "4096"],
            "cannot train with --accelerator cpu, --devices 4096, --strategy auto, --num-nodes 1: 4096 CPU processes on the",
        ),
    ],
)
def test_bad_scale_out_settings_end_in_one_line_and_leave_nothing(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--steps", "1", *flags, "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and message in error
    assert "ddp_spawn," not in error or "inside fit" in error  # a strategy sodeep refuses is not offered
    assert not (tmp_path / "run").exists()


def test_devices_in_yaml_may_be_a_count_or_indices():
    config = config_from_mapping(PretrainConfig, {"devices": [0, 2], "strategy": "ddp", "num_nodes": 2}, "test")
    assert config.trainer_options() == {"accelerator": "auto", "devices": "0,2", "strategy": "ddp", "num_nodes": 2}
    assert config_from_mapping(PretrainConfig, {"devices": "4"}, "test").devices == 4


@pytest.mark.parametrize(("nodes", "advice"), [(1, "Run the same command again"), (2, "with fewer --num-nodes")])
def test_a_signal_while_the_processes_join_names_what_to_do_on_one_machine_or_several(nodes, advice):
    import subprocess
    import sys

    program = (
        "import os, signal, time\n"
        "from sodeep.runs import _exit_on_signal_until_joined\n"
        f"with _exit_on_signal_until_joined(2, {nodes}):\n"
        "    signal.signal(signal.SIGINT, lambda *_: None)  # as torch.distributed's C++ wait: no Python handler runs\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(60)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130
    assert done.stderr.startswith("sodeep: interrupted while waiting for the run's 2 processes to join; nothing")
    assert advice in done.stderr and done.stderr.count("\n") == 1


def test_a_sigterm_while_two_processes_join_ends_both(tmp_path):
    """Before the process group is up, the launching process ends itself from a watcher thread;
    the process Lightning started from it must not be left waiting for it (30 minutes)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    environment = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "sodeep", "pretrain", "--steps", "40", "--accelerator", "cpu", "--devices", "2"]
    command += ["--strategy", "ddp", "--data-workers", "0", "--wandb", "disabled", "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, env=environment, cwd=tmp_path, stderr=subprocess.PIPE, text=True)

    def children():
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == process.pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found

    deadline = time.monotonic() + 120
    while not children() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    started = children()
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    try:
        _, error = process.communicate(timeout=90)  # the pipe stays open while a child lives
    finally:
        for pid in children() + started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode == 130, error
    assert started and "interrupted" in error.strip().splitlines()[-1]


@pytest.mark.parametrize("program", ["-c", "", "-"])
def test_ddp_from_a_program_that_cannot_run_again_is_refused_before_anything_is_written(tmp_path, monkeypatch, program):
    """Lightning starts the other processes by running ``sys.argv`` again: ``python -c`` or a
    prompt cannot be, and the run would hang, then die without a word."""
    import sys

    from sodeep.pretraining import pretrain

    monkeypatch.setattr(sys, "argv", [program])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    config = PretrainConfig(steps=2, out=str(tmp_path / "run"), wandb="disabled", accelerator="cpu", devices=2)
    with pytest.raises(ValueError, match="running this program again, and a program given to python -c"):
        pretrain(config)
    assert not (tmp_path / "run").exists()


def test_ddp_from_a_script_or_a_module_is_not_refused(tmp_path, monkeypatch):
    import sys

    from sodeep.runs import program_runs_again

    script = tmp_path / "train.py"
    script.write_text("")
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    assert program_runs_again()
    monkeypatch.setattr(sys, "argv", ["-c"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", object())  # python -m
    assert program_runs_again()
