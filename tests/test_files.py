import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from sodeep.files import atomic_torch_save, atomic_write, atomic_write_text, os_error_line, writable_file_problem


def test_a_failed_write_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_bytes(b"old")

    def fail(stream):
        stream.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("folder", ["plain", "Ordner-mit-Umlaut-ä"])
def test_a_saved_payload_loads_back_with_shareable_permissions(tmp_path, folder):
    path = atomic_torch_save({"weights": torch.arange(5.0), "step": 3}, tmp_path / folder / "last.ckpt")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["weights"], torch.arange(5.0)) and loaded["step"] == 3
    assert path.stat().st_mode & 0o777 == 0o644 and len(list(path.parent.iterdir())) == 1


def test_a_saved_payload_is_the_same_bytes_whatever_its_path(tmp_path):
    import io
    import zipfile

    payload = {"weights": torch.arange(5.0), "step": 3}
    first = atomic_torch_save(payload, tmp_path / "a" / "sorter.pt").read_bytes()
    second = atomic_torch_save(payload, tmp_path / "b" / "other name.ckpt").read_bytes()
    stream = io.BytesIO()
    torch.save(payload, stream)
    # No temporary name inside the file: the records torch gives a stream, the same bytes everywhere.
    assert first == second == stream.getvalue()
    assert all(name.startswith("archive/") for name in zipfile.ZipFile(io.BytesIO(first)).namelist())
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a", "b", "other name.ckpt", "sorter.pt"]


def test_a_file_name_near_the_file_system_limit_is_written(tmp_path):
    target = tmp_path / ("r" * 250 + ".json")
    assert atomic_write_text(target, "{}").read_text() == "{}" and sorted(tmp_path.iterdir()) == [target]


def test_a_file_in_the_way_of_the_folder_is_named_in_one_line(tmp_path):
    (tmp_path / "file.pt").write_bytes(b"weights")
    with pytest.raises(NotADirectoryError) as raised:
        atomic_write_text(tmp_path / "file.pt" / "deeper" / "x.json", "{}")
    assert os_error_line(raised.value) == (
        f"{tmp_path / 'file.pt' / 'deeper' / 'x.json'}: {tmp_path / 'file.pt'} is a file, not a folder; choose another path"
    )
    assert (tmp_path / "file.pt").read_bytes() == b"weights"


def test_an_exception_while_torch_holds_its_writer_does_not_abort_the_process_at_exit(tmp_path):
    # A signal handler's exception (a killed DataLoader worker's, during a checkpoint) can land
    # after torch made its file writer and before the ``with`` that finishes it: the writer is
    # then finished when it is destroyed, at exit, which must not write to a closed stream.
    program = f"""
import torch, torch.serialization
from sodeep.files import atomic_torch_save
def raise_as_a_signal_handler_would(self):
    raise RuntimeError("a data worker ended")
torch.serialization._opener.__enter__ = raise_as_a_signal_handler_would
try:
    atomic_torch_save({{"w": torch.ones(3)}}, {str(tmp_path / "last.ckpt")!r})
except RuntimeError as error:
    print(error, flush=True)
raise SystemExit(130)
"""
    ended = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert (ended.returncode, ended.stdout.strip()) == (130, "a data worker ended"), ended.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_long_name_of_many_byte_characters_is_written(tmp_path):
    target = tmp_path / ("\N{GRINNING FACE}" * 61 + ".json")
    assert len(target.name.encode()) == 249
    assert atomic_write_text(target, "{}").read_text() == "{}" and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("failing", ["mkstemp", "replace"])
def test_a_refused_write_names_the_file_asked_for_not_its_temporary_file(tmp_path, monkeypatch, failing):
    # As a read-only folder refuses it (the tests may run as root, whom permissions do not stop).
    def refuse(*args, **kwargs):
        temporary = args[0] if failing == "replace" else tmp_path / ".report.csv.k3j2.tmp"
        raise PermissionError(errno.EACCES, "Permission denied", str(temporary))

    monkeypatch.setattr(tempfile if failing == "mkstemp" else os, failing, refuse)
    with pytest.raises(PermissionError) as raised:
        atomic_write_text(tmp_path / "report.csv", "a,b\n")
    assert os_error_line(raised.value) == (
        f"{tmp_path / 'report.csv'}: permission denied; choose another path or change its permissions"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_turns_read_only_during_a_write_names_the_file_asked_for(tmp_path, monkeypatch):
    """The temporary file cannot be removed either: the error reported is the write's, on the
    file asked for."""
    refused = PermissionError(errno.EPERM, "Operation not permitted")

    def refuse(*args, **kwargs):
        raise refused

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(PermissionError) as raised:
        atomic_write_text(tmp_path / "last.csv", "a\n")
    assert os_error_line(raised.value).startswith(f"{tmp_path / 'last.csv'}: operation not permitted; ")


def test_a_broken_link_in_the_way_of_the_folder_is_named(tmp_path):
    (tmp_path / "results").symlink_to(tmp_path / "moved-away")
    target = tmp_path / "results" / "run" / "x.json"
    with pytest.raises(FileNotFoundError) as raised:
        atomic_write_text(target, "{}")
    assert os_error_line(raised.value) == (
        f"{tmp_path / 'results'}: link to {tmp_path / 'moved-away'}, which leads to no file or folder; check the path"
    )
    assert writable_file_problem(target) == (
        f"{tmp_path / 'results'} is a link to {tmp_path / 'moved-away'}, which leads to no file or folder, so {target} cannot be made"
    )
    assert sorted(tmp_path.iterdir()) == [tmp_path / "results"]


def test_a_name_beyond_the_file_system_limit_under_a_missing_folder_is_named_before_anything_is_made(tmp_path):
    target = tmp_path / "new" / ("\N{GRINNING FACE}" * 64) / "run.json"
    problem = writable_file_problem(target)
    assert problem.startswith(f"{target}: the name ") and problem.endswith("is longer than the file system's 255 bytes")
    assert list(tmp_path.iterdir()) == []
    assert writable_file_problem(tmp_path / "new" / ("\N{GRINNING FACE}" * 63) / "run.json") is None


def test_a_full_disk_while_torch_saves_is_named_as_such(tmp_path, monkeypatch):
    import shutil

    def fail_as_a_full_disk_does(payload, name):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", fail_as_a_full_disk_does)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OSError) as raised:
        atomic_torch_save({"w": torch.ones(3)}, tmp_path / "sorter.pt")
    assert (
        os_error_line(raised.value)
        == f"{tmp_path / 'sorter.pt'}: no space left on device; free some space or choose another path"
    )
    assert list(tmp_path.iterdir()) == []


FILE_SIZE_LIMITED = """
import resource, sys
import torch
from sodeep.files import atomic_torch_save, os_error_line
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))  # ulimit -f 16
try:
    atomic_torch_save({"w": torch.zeros(100_000)}, sys.argv[1])
except OSError as error:
    print(os_error_line(error))
"""


def test_a_file_size_limit_while_torch_saves_is_named_as_such(tmp_path):
    """torch reports the failed write as a RuntimeError ("iostream error"); a file-size limit or a
    quota leaves free space, so it is told by writing on from Python."""
    shown = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED, str(tmp_path / "sorter.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.stdout == (
        f"{tmp_path / 'sorter.pt'}: file too large; a limit on file sizes stopped it (ulimit -f, the file system's): "
        "raise the limit or choose another path\n"
    ), shown.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_write_limit_on_a_librarys_stream_names_the_folder_written_in():
    full = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))  # no file: a logger's stream
    assert os_error_line(full, "runs/a") == (
        f"writing in runs/a: {os.strerror(errno.EDQUOT).lower()}; free some space under the quota or choose another path"
    )
    assert os_error_line(OSError(errno.EIO, "Input/output error"), "runs/a") == "input/output error; check the path"


@pytest.mark.parametrize("written", ["", "  ", "out/", "deeper/out/"])
def test_a_path_written_as_a_folder_or_empty_is_refused_not_read_as_a_file(tmp_path, monkeypatch, written):
    monkeypatch.chdir(tmp_path)
    problem = writable_file_problem(written)
    assert problem == ("the path is empty" if not written.strip() else f"{written} ends with /, which names a folder")
    with pytest.raises(IsADirectoryError, match="; give the path of a file to write$"):
        atomic_write_text(written, "text")
    with pytest.raises(IsADirectoryError):
        atomic_torch_save({"a": 1}, written)
    assert list(tmp_path.iterdir()) == []


def test_an_output_path_is_checked_by_making_a_file_there_and_a_dash_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert writable_file_problem("-") == "- (standard output) is not written to (./- names a file of that name)"
    assert writable_file_problem("./-") is None and writable_file_problem(" -") is None
    # A folder where no file can be made, whatever its permission bits say (root, /proc, read-only mounts).
    real_mkstemp = tempfile.mkstemp

    def refuse_in(folder):
        def mkstemp(*arguments, dir=None, **options):
            if Path(dir) == folder:
                raise OSError(errno.EROFS, "Read-only file system")
            return real_mkstemp(*arguments, dir=dir, **options)

        return mkstemp

    monkeypatch.setattr(tempfile, "mkstemp", refuse_in(tmp_path / "mounted"))
    (tmp_path / "mounted").mkdir()
    assert writable_file_problem(tmp_path / "mounted" / "new" / "results.json") == (
        f"{tmp_path / 'mounted'}: no file can be made there (read-only file system), so "
        f"{tmp_path / 'mounted' / 'new' / 'results.json'} cannot be made"
    )
    assert writable_file_problem(tmp_path / "results.json") is None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mounted"]  # the check leaves nothing behind
    if Path("/proc").is_dir():  # a file system of no files: its ENOENT is no reason to show
        assert writable_file_problem("/proc/results.json") in (
            "/proc: no file can be made there, so /proc/results.json cannot be made",  # as root
            "/proc is not writable, so /proc/results.json cannot be made",
        )


def test_a_link_to_a_file_is_written_through_and_a_pipe_or_device_is_refused(tmp_path):
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "real.json").chmod(0o600)
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert atomic_write_text(tmp_path / "link.json", "new") == tmp_path / "link.json"
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"
    assert (tmp_path / "real.json").stat().st_mode & 0o777 == 0o600  # a private file stays private
    if Path("/proc/self/fd/1").exists():  # as /dev/stdout is: its file is this process's output
        (tmp_path / "stdout").symlink_to("/proc/self/fd/1")
        problem = (
            f"{tmp_path / 'stdout'} leads to /proc/self/fd/1, a process's open file, not a file that can be replaced"
        )
        assert writable_file_problem(tmp_path / "stdout") == problem
        with pytest.raises(FileExistsError, match="a process's open file"):
            atomic_write_text(tmp_path / "stdout", "text")
        assert (tmp_path / "stdout").is_symlink()
        (tmp_path / "stdout").unlink()
        # The open files themselves, and through a link to their folder: each leads to the file
        # this process's output goes to (pytest's capture file), which a write would replace.
        (tmp_path / "fds").symlink_to("/proc/self/fd")
        for given in ("/dev/fd/1", "/proc/self/fd/1", tmp_path / "fds" / "1", "/dev/fd/../fd/2"):
            assert writable_file_problem(given) == f"{given} is a process's open file, not a file that can be replaced"
            with pytest.raises(FileExistsError, match="a process's open file"):
                atomic_write_text(given, "text")
        (tmp_path / "to-fd").symlink_to(Path("fds") / "1")  # a link to a link into the folder
        assert writable_file_problem(tmp_path / "to-fd") == (
            f"{tmp_path / 'to-fd'} leads to {tmp_path / 'fds' / '1'}, a process's open file, not a file that can be "
            "replaced"
        )
        (tmp_path / "fds").unlink()
        (tmp_path / "to-fd").unlink()
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to-pipe").symlink_to(tmp_path / "pipe")
    for special in (tmp_path / "pipe", tmp_path / "to-pipe", Path("/dev/null")):
        assert writable_file_problem(special) == f"{special} is a named pipe, not a file that can be replaced" or (
            special == Path("/dev/null") and "is a character device, not a file" in writable_file_problem(special)
        )
    with pytest.raises(FileExistsError, match="is a named pipe, not a file that can be replaced"):
        atomic_write_text(tmp_path / "to-pipe", "text")
    assert (tmp_path / "to-pipe").is_symlink() and not (tmp_path / "pipe").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.json", "pipe", "real.json", "to-pipe"]


def test_a_loop_of_links_is_named_in_one_line_and_never_followed_forever(tmp_path):
    from sodeep.run_folder import enclosing_run_folder

    (tmp_path / "self").symlink_to("self")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    for given in (tmp_path / "self" / "x.json", tmp_path / "a" / "x.json"):
        assert writable_file_problem(given) == (
            f"{given.parent} is a link to {given.parent.name if given.parent.name == 'self' else 'b'}, which leads "
            f"to no file or folder, so {given} cannot be made"
        )
        assert enclosing_run_folder(given) is None
    assert enclosing_run_folder(tmp_path / "a") is None
    assert atomic_write_text(tmp_path / "a", "text") == tmp_path / "a"  # a link to no file: replaced by the file
    assert (tmp_path / "a").read_text() == "text" and (tmp_path / "b").is_symlink()


def test_a_path_ending_in_dot_dot_names_the_folder_above_not_one_inside_the_folder_before_it(tmp_path):
    import json

    from sodeep.run_folder import enclosing_run_folder

    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"command": "pretrain", "config": {}}))
    assert enclosing_run_folder(run / "checkpoints" / "..") is None  # the run folder itself
    assert enclosing_run_folder(run / "checkpoints" / ".." / "x") == run
    assert enclosing_run_folder(run / "checkpoints" / "...") == run  # a name, not the folder above
