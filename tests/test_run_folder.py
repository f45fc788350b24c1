"""A run folder in use by a running command is refused to every other command, even with
--overwrite, and released when the command ends."""

import subprocess
import sys
from pathlib import Path

import pytest

from sodeep.run_folder import RUN_LOCK, claim_run_folder, releasing_run_folders, start_run_folder

pytest.importorskip("fcntl")

HOLD_FOR_A_WHILE = """
import sys, time
from sodeep.run_folder import claim_run_folder, start_run_folder
record = claim_run_folder(sys.argv[1], "pretrain", {"steps": 10})
start_run_folder(sys.argv[1], record, overwrite=False)
print("started", flush=True)
sys.stdin.readline()  # held until the test closes stdin
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOR_A_WHILE, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "started"
    yield out, holder
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_folder_in_use_is_refused_even_with_overwrite(held_by_another_process):
    out, holder = held_by_another_process
    contents = sorted(path.name for path in out.iterdir())
    expected = f"in use by a running sodeep command \\(process {holder.pid}\\)"
    for options in ({"resume": True}, {"overwrite": True}):
        with pytest.raises(ValueError, match=expected):
            claim_run_folder(out, "pretrain", {"steps": 10}, **options)
    with pytest.raises(ValueError, match=expected):
        start_run_folder(out, {"command": "pretrain", "config": {}, "run_id": "x"}, overwrite=True)
    assert sorted(path.name for path in out.iterdir()) == contents  # nothing cleared
    holder.stdin.close()
    holder.wait(timeout=30)
    # Ended (however it ends, the operating system drops the lock): the run can be resumed.
    assert claim_run_folder(out, "pretrain", {"steps": 10}, resume=True)["command"] == "pretrain"


def test_a_command_releases_its_folder_when_it_ends(tmp_path):
    out = tmp_path / "run"

    @releasing_run_folders
    def command(fail: bool) -> None:
        record = claim_run_folder(out, "pretrain", {"steps": 10}, overwrite=True)
        start_run_folder(out, record, overwrite=True)
        # Its own process may claim it again (a resumed run in the same notebook).
        claim_run_folder(out, "pretrain", {"steps": 10}, resume=True)
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(out)], capture_output=True, text=True, timeout=60, check=True
        )
        assert "in use" in probe.stdout
        if fail:
            raise RuntimeError("stopped")

    command(fail=False)
    with pytest.raises(RuntimeError, match="stopped"):
        command(fail=True)
    probe = subprocess.run([sys.executable, "-c", PROBE, str(out)], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "free"


PROBE = """
import sys
from sodeep.run_folder import claim_run_folder
try:
    claim_run_folder(sys.argv[1], "pretrain", {"steps": 10}, resume=True)
    print("free")
except ValueError as error:
    print(error)
"""


def test_a_folder_holding_only_its_lock_file_is_empty(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_LOCK).write_text("")
    assert claim_run_folder(out, "pretrain", {"steps": 10})["config"] == {"steps": 10}


def test_another_thread_of_the_same_process_is_refused_the_folder(tmp_path):
    import threading

    out = tmp_path / "run"
    started, finish = threading.Event(), threading.Event()

    @releasing_run_folders
    def command() -> None:
        record = claim_run_folder(out, "pretrain", {"steps": 10})
        start_run_folder(out, record, overwrite=False)
        started.set()
        finish.wait(timeout=60)

    worker = threading.Thread(target=command)
    worker.start()
    assert started.wait(timeout=60)
    try:
        with pytest.raises(ValueError, match="in use by a running sodeep command \\(this process, another thread\\)"):
            claim_run_folder(out, "pretrain", {"steps": 10}, overwrite=True)
        with pytest.raises(ValueError, match="another thread"):
            start_run_folder(out, {"command": "pretrain", "config": {}, "run_id": "x"}, overwrite=True)
        assert (out / "run.json").is_file()
    finally:
        finish.set()
        worker.join(timeout=60)
    assert claim_run_folder(out, "pretrain", {"steps": 10}, resume=True)["command"] == "pretrain"


def test_overwrite_never_clears_the_working_folder_or_a_folder_that_is_not_a_run(tmp_path, monkeypatch):
    (tmp_path / "precious.txt").write_text("keep")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    (tmp_path / "sub" / "notes.txt").write_text("keep")
    for out, where in ((Path("."), "is"), (Path(".."), "holds"), (Path(""), "is")):
        with pytest.raises(ValueError, match=f"clearing the folder would delete .*, which {where} the working folder"):
            claim_run_folder(out, "pretrain", {}, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep" and (tmp_path / "sub" / "notes.txt").is_file()


def test_overwrite_never_clears_a_folder_holding_a_file_the_run_reads(tmp_path):
    out = tmp_path / "run"
    start_run_folder(out, claim_run_folder(out, "tabular", {"csv": "elsewhere.csv"}), overwrite=False)
    (out / "table.csv").write_text("age,f\n20,1\n")
    (tmp_path / "outside.csv").write_text("age,f\n20,1\n")
    for config, setting in (
        ({"csv": str(out / "table.csv")}, "csv"),
        ({"inputs": [str(tmp_path / "outside.csv"), str(out / "table.csv")]}, "inputs"),
    ):
        with pytest.raises(ValueError, match=f"would delete {out / 'table.csv'}, which this run reads as {setting}="):
            claim_run_folder(out, "tabular", config, overwrite=True)
    assert (out / "table.csv").is_file()
    # A run folder read as a whole (a run to start from), named as written or through a link.
    (tmp_path / "link").symlink_to(out)
    for named in (out, tmp_path / "link", out / ".", f"{out}/../{out.name}"):
        with pytest.raises(ValueError, match=f"^{out} is what this run reads as init_from=: clearing it would delete"):
            claim_run_folder(out, "tabular", {"init_from": str(named)}, overwrite=True)
    claim_run_folder(out, "tabular", {"csv": str(tmp_path / "outside.csv"), "note": "not a path"}, overwrite=True)
    # A link outside to a file inside names the file; a link inside is deleted itself; a cache is written.
    (tmp_path / "link.csv").symlink_to(out / "table.csv")
    with pytest.raises(ValueError, match=f"would delete {out / 'table.csv'} \\(where {tmp_path / 'link.csv'} leads\\)"):
        claim_run_folder(out, "tabular", {"csv": str(tmp_path / "link.csv")}, overwrite=True)
    (out / "inside.csv").symlink_to(tmp_path / "outside.csv")
    with pytest.raises(ValueError, match=f"would delete {out / 'inside.csv'}, which this run reads as csv="):
        claim_run_folder(out, "tabular", {"csv": str(out / "inside.csv")}, overwrite=True)
    claim_run_folder(out, "nifti", {"cache": str(out), "out": str(out)}, overwrite=True)


def test_a_run_in_the_working_folder_is_not_told_to_overwrite_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start_run_folder(Path("."), claim_run_folder(Path("."), "pretrain", {"steps": 10}), overwrite=False)
    refusals = {
        "same settings": lambda: claim_run_folder(Path("."), "pretrain", {"steps": 10}),
        "other settings": lambda: claim_run_folder(Path("."), "pretrain", {"steps": 20}),
        "other command": lambda: claim_run_folder(Path("."), "bench", {"steps": 10}),
    }
    for refusal in refusals.values():
        with pytest.raises(ValueError) as raised:
            refusal()
        assert "overwrite=True" not in str(raised.value) and "choose another folder for out=" in str(raised.value)
    # Elsewhere the advice stands.
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ValueError, match="add resume=True to continue it or overwrite=True to start again"):
        claim_run_folder(tmp_path, "pretrain", {"steps": 10})


def test_resume_and_overwrite_together_are_refused(tmp_path):
    out = tmp_path / "run"
    start_run_folder(out, claim_run_folder(out, "pretrain", {"steps": 10}), overwrite=False)
    with pytest.raises(ValueError, match="resume and overwrite contradict each other"):
        claim_run_folder(out, "pretrain", {"steps": 10}, resume=True, overwrite=True)
    assert (out / "run.json").is_file()


def test_a_folder_that_cannot_be_made_is_named_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("x\n")
    with pytest.raises(
        ValueError, match=f"{tmp_path / 'file'} is a file, so .* cannot be made; choose another folder for out="
    ):
        claim_run_folder(tmp_path / "file" / "run", "pretrain", {"steps": 10})


def test_a_changed_file_and_long_settings_are_described_in_balanced_json(tmp_path):
    out = tmp_path / "run"
    held = {"table_sha256": "a" * 64, "features": [f"f{i}" for i in range(30)]}
    start_run_folder(out, claim_run_folder(out, "brainage tabular", held), overwrite=False)
    changed = {"table_sha256": "b" * 64, "features": held["features"]}
    with pytest.raises(ValueError) as refused:
        claim_run_folder(out, "brainage tabular", changed, resume=True)
    assert f'table_sha256 (the file content): "{"a" * 12}..." -> "{"b" * 12}..."' in str(refused.value)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_within_the_block_both_stop_signals_raise_an_interrupt_of_its_own_class(name):
    """Not a plain KeyboardInterrupt, which CPython's own exit code checks for by exact type (see
    Interrupted); the handlers before the block come back after it."""
    import os
    import signal
    import time

    from sodeep.run_folder import Interrupted, stop_signals_as_interrupts

    number = getattr(signal, name)
    before = signal.getsignal(number)
    with pytest.raises(Interrupted, match=name) as raised, stop_signals_as_interrupts():
        os.kill(os.getpid(), number)
        time.sleep(5)
    assert isinstance(raised.value, KeyboardInterrupt) and type(raised.value) is not KeyboardInterrupt
    assert signal.getsignal(number) is before


def test_a_held_stop_signal_raises_at_the_blocks_end_and_a_second_at_once():
    import os
    import signal

    from sodeep.run_folder import Interrupted, interrupts_held

    before = signal.getsignal(signal.SIGINT)
    finished = []
    with pytest.raises(Interrupted, match="SIGTERM"):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGTERM)
            finished.append("after the signal")
    assert finished == ["after the signal"] and signal.getsignal(signal.SIGINT) is before
    with pytest.raises(Interrupted, match="SIGINT"):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("not reached")
    assert finished == ["after the signal"] and signal.getsignal(signal.SIGINT) is before


def test_a_folder_holding_only_what_a_file_manager_leaves_is_empty_to_a_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._notes.txt"):
        (out / name).write_bytes(b"\0")
    (out / ".ipynb_checkpoints").mkdir()
    start_run_folder(out, claim_run_folder(out, "pretrain", {"steps": 10}), overwrite=False)
    assert (out / "run.json").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".DS_Store").write_bytes(b"\0")
    (other / "notes.txt").write_text("keep")  # a user's file beside it: still not a run folder
    for name in ("a.txt", "b.txt", "c.txt"):
        (other / name).write_text("keep")
    with pytest.raises(ValueError, match=r"holds files but no run.json \(a.txt, b.txt, c.txt and 1 more\)"):
        claim_run_folder(other, "pretrain", {"steps": 10})


def test_a_leading_tilde_in_any_command_s_paths_is_the_home_folder(tmp_path, monkeypatch):
    # Lightning and W&B read ~ as the home folder: a run's files must not split between ./~ and it.
    from sodeep.benchmark.config import BenchConfig
    from sodeep.brainage.config import NiftiConfig, TabularConfig
    from sodeep.config import PretrainConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    config = PretrainConfig(out="~/runs/pretrain")
    config.validate()
    assert config.out == str(tmp_path / "runs/pretrain")
    assert BenchConfig(out="~/bench").out == str(tmp_path / "bench")
    tabular = TabularConfig(out="~/bt", csv="~/table.csv", init_from="~/runs/l1")
    assert (tabular.out, tabular.csv, tabular.init_from) == tuple(
        str(tmp_path / name) for name in ("bt", "table.csv", "runs/l1")
    )
    assert NiftiConfig(manifest="~/volumes.csv").manifest == str(tmp_path / "volumes.csv")
    from sodeep.cli import build_parser

    parsed = build_parser().parse_args(["sweep", "run", "s.yaml", "--root", "~/sweeps"])
    assert parsed.root == str(tmp_path / "sweeps")
    assert build_parser().parse_args(["sweep", "report", "~/sweeps/a"]).folder == str(tmp_path / "sweeps/a")
    inner = PretrainConfig(out="runs/~x")
    inner.validate()
    assert inner.out == "runs/~x"  # only a leading ~ is the home folder


def test_an_empty_working_folder_can_be_started_with_overwrite(tmp_path, monkeypatch):
    from sodeep.run_folder import RUN_RECORD

    monkeypatch.chdir(tmp_path)

    @releasing_run_folders
    def start():
        return start_run_folder(Path("."), {"command": "pretrain", "config": {}}, overwrite=True)

    start()  # a folder in use cannot be removed: it is emptied instead
    assert (tmp_path / RUN_RECORD).is_file() and Path.cwd() == tmp_path


def test_signals_after_a_run_saved_its_stop_let_the_closing_down_finish():
    import os
    import signal

    from sodeep.run_folder import Interrupted, stop_saved, stop_signals_as_interrupts

    with pytest.raises(Interrupted), stop_signals_as_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
    with stop_signals_as_interrupts():
        stop_saved()
        os.kill(os.getpid(), signal.SIGINT)  # would end a data loader's shutdown with a traceback
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Interrupted), stop_signals_as_interrupts():  # the next block stops again
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_that_lands_in_a_finalizer_is_kept_for_where_the_command_can_stop(name, monkeypatch):
    """Python prints an exception raised in ``__del__`` and drops it: a Ctrl-C that lands in a
    finalizer (a data loader's iterator as it is collected) is kept, and stops the command."""
    import gc
    import os
    import signal
    import sys

    from sodeep.run_folder import Interrupted, interrupts_in_finalizers_kept, stop_saved, stop_signals_as_interrupts

    number, dropped, went_on = getattr(signal, name), [], []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # what Python would print and drop

    class ShutsDown:
        def __del__(self):
            os.kill(os.getpid(), number)  # the handler raises here, inside the finalizer

    with pytest.raises(Interrupted, match=name), stop_signals_as_interrupts():
        with interrupts_in_finalizers_kept() as kept:
            ShutsDown()
            gc.collect()
        went_on.append("to where the command looks")
        assert [type(interrupt) for interrupt in kept] == [Interrupted]
        raise kept[0]
    with pytest.raises(Interrupted, match=name), stop_signals_as_interrupts():
        ShutsDown()
        gc.collect()
        went_on.append("to the block's end")
    assert went_on == ["to where the command looks", "to the block's end"]
    assert dropped == [] and sys.unraisablehook == dropped.append
    with stop_signals_as_interrupts():  # a stop saved since: the run is closing down
        ShutsDown()
        gc.collect()
        stop_saved()
    with stop_signals_as_interrupts():  # no signal, no stop; and an ordinary error in a finalizer goes on as before
        ShutsDown.__del__ = lambda self: 1 / 0
        ShutsDown()
        gc.collect()
    assert [type(unraisable.exc_value) for unraisable in dropped] == [ZeroDivisionError]


def test_overwriting_a_folder_that_holds_a_run_in_use_deeper_down_is_refused(held_by_another_process):
    """Clearing an outer folder would delete the files of the run still writing inside it."""
    inner, holder = held_by_another_process
    outer = inner.parent
    (outer / "notes.txt").write_text("kept")
    contents = sorted(path.name for path in inner.iterdir())
    expected = rf"^cannot clear {outer}, which holds a run folder in use: {inner} is in use by a running sodeep command \(process {holder.pid}\)"
    with pytest.raises(ValueError, match=expected):
        start_run_folder(outer, {"command": "pretrain", "config": {}, "run_id": "x"}, overwrite=True)
    from sodeep.run_folder import set_aside

    with pytest.raises(ValueError, match=expected):
        set_aside(outer)
    assert sorted(path.name for path in inner.iterdir()) == contents and (outer / "notes.txt").exists()
    holder.stdin.close()
    holder.wait(timeout=30)
    releasing_run_folders(start_run_folder)(outer, {"command": "pretrain", "config": {}, "run_id": "x"}, overwrite=True)
    assert not inner.exists()  # ended: cleared


def test_loading_the_sorter_of_a_pretraining_run_still_in_use_says_it_is_running(held_by_another_process):
    from sodeep.checkpoints import CheckpointError, load_sorter

    out, holder = held_by_another_process
    with pytest.raises(CheckpointError) as raised:
        load_sorter(out)
    message = str(raised.value)
    assert message.startswith(f"{out} holds no sorter.pt yet and is in use by a running sodeep command")
    assert f"in use by a running sodeep command (process {holder.pid})" in message
    assert message.endswith(
        f"wait for it to end, stop it, or turn its last checkpoint, {out}/checkpoints/last.ckpt, into a sorter with `sodeep export`"
    )
    assert "resume" not in message


def test_loading_the_sorter_file_of_a_pretraining_run_still_in_use_says_it_is_running(held_by_another_process):
    """``RUN/sorter.pt`` that is not there yet gets what loading ``RUN`` says: why, and what to do."""
    from sodeep.checkpoints import CheckpointError, load_sorter

    out, holder = held_by_another_process
    with pytest.raises(CheckpointError) as raised:
        load_sorter(out / "sorter.pt")
    assert str(raised.value) == (
        f"{out} holds no sorter.pt yet and is in use by a running sodeep command (process {holder.pid}); wait for "
        f"it to end, stop it, or turn its last checkpoint, {out}/checkpoints/last.ckpt, into a sorter with "
        "`sodeep export`"
    )
    holder.stdin.close()
    holder.wait(timeout=30)
    with pytest.raises(CheckpointError) as raised:
        load_sorter(out / "sorter.pt")
    assert str(raised.value) == (
        f"{out} holds no sorter.pt and no checkpoint: its pretraining run stopped before its first checkpoint; run "
        "its pretraining again"
    )
    # Another command's run folder: no word of a pretraining.
    (out / "run.json").write_text('{"command": "brainage tabular", "config": {}}')
    with pytest.raises(CheckpointError) as raised:
        load_sorter(out / "sorter.pt")
    assert str(raised.value) == f"no sorter checkpoint at {out}/sorter.pt"


def _run_with_files(out: Path) -> dict:
    record = claim_run_folder(out, "pretrain", {"steps": 10})
    releasing_run_folders(start_run_folder)(out, record, overwrite=False)
    for name in ("a", "wandb", "z"):
        (out / name).mkdir()
        (out / name / "file.txt").write_text("x")
    for name in ("metrics.csv", "results.json"):
        (out / name).write_text("{}")
    return record


def test_overwrite_empties_the_folder_under_its_lock_and_a_mark_that_it_is_clearing(tmp_path, monkeypatch):
    """While an overwrite clears a folder, its lock stays (another command finds it in use) beside a
    mark that it is being cleared, which goes once everything else has gone."""
    import shutil

    import sodeep.run_folder as run_folder

    out = tmp_path / "run"
    _run_with_files(out)
    lock_inode = (out / RUN_LOCK).stat().st_ino
    deleted = []
    real_rmtree, real_unlink = shutil.rmtree, Path.unlink

    def rmtree(path, *args, **kwargs):
        assert (out / run_folder.CLEARING).is_file() and (out / RUN_LOCK).is_file()
        deleted.append(Path(path).name)
        return real_rmtree(path, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        assert (out / run_folder.CLEARING).is_file() and (out / RUN_LOCK).is_file()
        deleted.append(path.name)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(run_folder.shutil, "rmtree", rmtree)
    monkeypatch.setattr(Path, "unlink", unlink)
    releasing_run_folders(start_run_folder)(out, {"command": "pretrain", "config": {}, "run_id": "y"}, overwrite=True)
    assert deleted[-1] == run_folder.CLEARING
    assert sorted(deleted[:-1]) == ["a", "metrics.csv", "results.json", "run.json", "wandb", "z"]
    assert (out / RUN_LOCK).stat().st_ino == lock_inode  # the lock file was never deleted
    assert sorted(path.name for path in out.iterdir()) == ["run.json", RUN_LOCK]


def test_an_overwrite_cut_short_while_clearing_is_refused_to_all_but_the_next_overwrite(tmp_path, monkeypatch):
    """What a clearing cut short leaves (some of a finished run's files) is no run's: a
    plain run or a resume is refused with a line that says to overwrite; an overwrite clears it."""
    import shutil

    import sodeep.run_folder as run_folder

    out = tmp_path / "run"
    _run_with_files(out)
    real_rmtree = shutil.rmtree

    def killed_after_the_first(path, *args, **kwargs):
        real_rmtree(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_folder.shutil, "rmtree", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        releasing_run_folders(start_run_folder)(
            out, {"command": "pretrain", "config": {}, "run_id": "y"}, overwrite=True
        )
    monkeypatch.setattr(run_folder.shutil, "rmtree", real_rmtree)
    assert (out / run_folder.CLEARING).is_file() and len(list(out.iterdir())) > 3  # the mark, the lock and more
    cut_short = (
        f"{out} holds what is left of a run that an overwrite was clearing when it was cut short; add overwrite=True "
        "to finish clearing it and start again"
    )
    with pytest.raises(ValueError) as raised:
        claim_run_folder(out, "pretrain", {"steps": 10})
    assert str(raised.value) == cut_short
    with pytest.raises(ValueError) as raised:
        claim_run_folder(out, "pretrain", {"steps": 10}, resume=True)
    assert str(raised.value) == cut_short.replace(
        "add overwrite=True", "run with overwrite=True instead of resume=True"
    )
    from sodeep.checkpoints import CheckpointError, load_sorter
    from sodeep.pretraining import sorter_from_training_checkpoint

    with pytest.raises(CheckpointError, match="is being cleared by a command that overwrites it"):
        load_sorter(out)
    with pytest.raises(ValueError, match="is being cleared by a command that overwrites it"):
        sorter_from_training_checkpoint(out)
    (out / "run.json").unlink(missing_ok=True)  # also where the record had gone already
    record = claim_run_folder(out, "pretrain", {"steps": 10}, overwrite=True)
    releasing_run_folders(start_run_folder)(out, record, overwrite=True)
    assert sorted(path.name for path in out.iterdir()) == ["run.json", RUN_LOCK]


@releasing_run_folders
def test_overwrite_through_a_link_to_a_run_folder_empties_the_folder_and_keeps_the_link(tmp_path):
    run = tmp_path / "run"
    start_run_folder(run, claim_run_folder(run, "pretrain", {"steps": 1}), overwrite=False)
    (run / "old.txt").write_text("old")
    (tmp_path / "link").symlink_to(run)
    record = claim_run_folder(tmp_path / "link", "pretrain", {"steps": 2}, overwrite=True)
    start_run_folder(tmp_path / "link", record, overwrite=True)  # before: "Cannot call rmtree on a symbolic link"
    assert (tmp_path / "link").is_symlink() and not (run / "old.txt").exists()
    assert sorted(path.name for path in run.iterdir()) == ["run.json", "run.lock"]


def _a_finished_run(out):
    (out / "checkpoints").mkdir(parents=True)
    (out / "run.json").write_text('{"command": "pretrain", "config": {}}')
    (out / "sorter.pt").write_text("weights")
    (out / "checkpoints" / "last.ckpt").write_text("checkpoint")
    return {path.relative_to(out): path.read_text() for path in out.rglob("*") if path.is_file()}


def _files_of(out):
    """The folder's files and their text, its lock aside."""
    return {
        path.relative_to(out): path.read_text() for path in out.rglob("*") if path.is_file() and path.name != "run.lock"
    }


def test_a_set_aside_or_put_back_cut_short_at_any_rename_leaves_the_run_whole(tmp_path, monkeypatch):
    """A kill between any two renames of a set-aside, then the next command's restore: the run is
    whole again (an empty .sodeep-previous-run, or one that lacks its marker, never empties the folder)."""
    from sodeep.run_folder import put_back, restore_a_killed_replacement, set_aside

    real_rename = Path.rename
    for cut_at in range(6):
        out = tmp_path / f"run{cut_at}"
        kept = _a_finished_run(out)
        calls = []

        def rename(self, target, calls=calls, cut_at=cut_at):
            if len(calls) == cut_at:
                raise KeyboardInterrupt  # as a kill there: nothing after it runs
            calls.append(self)
            return real_rename(self, target)

        with monkeypatch.context() as patched:
            patched.setattr(Path, "rename", rename)
            try:
                set_aside(out)
            except KeyboardInterrupt:
                pass
        restore_a_killed_replacement(out)
        assert _files_of(out) == kept, cut_at
    # A put-back cut short after its last move leaves an empty .sodeep-previous-run: removed, run kept.
    out = tmp_path / "put-back"
    kept = _a_finished_run(out)
    aside = set_aside(out)
    put_back(out, aside)
    aside.mkdir()
    restore_a_killed_replacement(out)
    assert _files_of(out) == kept and not aside.exists()


def test_a_replaced_run_is_renamed_before_it_is_deleted_and_never_put_back(tmp_path, monkeypatch, capsys):
    import sodeep.run_folder as run_folder

    out = tmp_path / "run"
    _a_finished_run(out)
    aside = run_folder.set_aside(out)
    (out / "run.json").write_text("the new run's")
    (out / "sorter.pt").write_text("new weights")
    new = _files_of(out)
    new = {path: text for path, text in new.items() if not str(path).startswith(".sodeep-previous-run")}
    with monkeypatch.context() as patched:  # a deletion the file system refuses, or one cut short
        patched.setattr(run_folder.shutil, "rmtree", lambda path, ignore_errors=False: None)
        run_folder.drop_previous_run(aside)
    assert "note: part of the run replaced in" in capsys.readouterr().err
    (leftover,) = [path for path in out.iterdir() if path.name.startswith(".sodeep-replaced-run-")]
    run_folder.restore_a_killed_replacement(out)  # the next command: the new run stays, the leftover goes
    assert _files_of(out) == new and not leftover.exists() and not aside.exists()


def test_only_the_exact_leftovers_of_a_replacement_are_removed(tmp_path):
    from sodeep.run_folder import MOVING, REPLACED_RUN_PREFIX, STAGING, restore_a_killed_replacement

    out = tmp_path / "run"
    _a_finished_run(out)
    for name in (f"{REPLACED_RUN_PREFIX}notes", f"{REPLACED_RUN_PREFIX}0123abcd", STAGING, ".moving", "user"):
        (out / name).mkdir()
    (out / f"{REPLACED_RUN_PREFIX}0123abcd" / "half-deleted.txt").write_text("x")
    (out / STAGING / MOVING).touch()
    (out / "user" / MOVING).write_text("a user's file of that name")
    restore_a_killed_replacement(out)
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == [
        ".moving",
        f"{REPLACED_RUN_PREFIX}notes",
    ]
    (out / STAGING).mkdir()
    (out / STAGING / "kept.txt").write_text("not a marker: not ours")
    restore_a_killed_replacement(out)
    assert (out / STAGING / "kept.txt").exists()


def test_sigterm_while_a_run_is_set_aside_puts_it_back_and_raises_an_interrupt(tmp_path, monkeypatch):
    import os
    import signal

    import sodeep.run_folder as run_folder

    out = tmp_path / "run"
    kept = _a_finished_run(out)
    real_rename = Path.rename
    calls = []

    def rename(self, target):
        calls.append(self)
        if len(calls) == 3:  # midway through the moves
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rename(self, target)

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a command's process starts
    try:
        with monkeypatch.context() as patched:
            patched.setattr(Path, "rename", rename)
            with pytest.raises(KeyboardInterrupt):
                run_folder.set_aside_previous_run(out, True)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _files_of(out) == kept and not (out / run_folder.PREVIOUS_RUN).exists()


def test_leftovers_in_a_folder_in_use_are_left_to_the_command_using_it(held_by_another_process):
    from sodeep.run_folder import MOVING, STAGING, restore_a_killed_replacement

    out, holder = held_by_another_process
    (out / STAGING).mkdir()  # as that command stages its set-aside
    (out / STAGING / MOVING).touch()
    with pytest.raises(ValueError, match=f"in use by a running sodeep command \\(process {holder.pid}\\)"):
        restore_a_killed_replacement(out)
    assert (out / STAGING / MOVING).exists()


@pytest.mark.parametrize("planted", ["link", "folder of other files", "file"])
def test_a_set_aside_run_that_sodeep_did_not_make_is_refused_and_nothing_moves(tmp_path, planted):
    """Putting back a set-aside run empties the folder and moves the set-aside files in: only a
    folder that set_aside made (with the run's record) is taken for one."""
    from sodeep.run_folder import PREVIOUS_RUN, restore_a_killed_replacement

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("the user's")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    aside = out / PREVIOUS_RUN
    if planted == "link":
        aside.symlink_to(elsewhere)
    elif planted == "file":
        aside.write_text("not a folder")
    else:
        aside.mkdir()
        (aside / "old.txt").write_text("not a run")
    with pytest.raises(ValueError, match=f"^{aside} is not a run that sodeep set aside .*; move it out of {out}$"):
        restore_a_killed_replacement(out)
    assert (out / "notes.txt").read_text() == "mine" and (elsewhere / "data.txt").read_text() == "the user's"
    assert sorted(path.name for path in elsewhere.iterdir()) == ["data.txt"]


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_left_alone(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("important")
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_LOCK).symlink_to(victim)
    with pytest.raises(ValueError, match="run.lock is a link, not the folder's own lock file: delete the link$"):
        start_run_folder(out, {"command": "x", "config": {}, "run_id": "0"}, overwrite=False)
    assert victim.read_text() == "important"
