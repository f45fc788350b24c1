import os
import signal
import subprocess
import sys
import time

import pytest

from sodeep.benchmark.scripts import INTERRUPTED, run_in_processes, run_script


def test_an_interrupted_script_ends_in_one_line_and_status_130(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench_example.py"])

    def main():
        print("| table | done |")
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run_script(main)
    assert signal.getsignal(signal.SIGTERM) is before
    printed = capsys.readouterr()
    assert stopped.value.code == INTERRUPTED == 130
    assert printed.out == "| table | done |\n"
    assert printed.err == (
        "bench_example.py: interrupted; nothing was written, and only a table printed above in full is complete\n"
    )


def test_a_script_whose_run_stops_on_the_signal_ends_in_one_line_too(capsys, monkeypatch):
    """pretrain() and the brain-age runs take Ctrl-C themselves, save, and raise RunInterrupted."""
    from sodeep.run_folder import RunInterrupted

    monkeypatch.setattr("sys.argv", ["bench_generator.py"])

    def main():
        raise RunInterrupted(80, "pretrain(config, resume=True) goes on from there")

    with pytest.raises(SystemExit) as stopped:
        run_script(main, kept="the tables printed above are complete")
    assert stopped.value.code == INTERRUPTED
    assert capsys.readouterr().err == (
        "bench_generator.py: a run it started was interrupted at step 80; the tables printed above are complete\n"
    )


JOBS_MODULE = """
import os, signal, time
from pathlib import Path


class TwoPartError(Exception):
    def __init__(self, first, second):
        super().__init__(first)


def slow_square(job):
    number, folder = job
    if number == 7:
        raise TwoPartError("seven", "parts")
    signal.signal(signal.SIGTERM, lambda *_: None)  # as a job that takes signals itself (a brain-age run)
    signal.signal(signal.SIGINT, lambda *_: None)
    if number == 0:
        raise ValueError("no square of zero here")
    if number < 0:
        (Path(folder) / f"{os.getpid()}.pid").write_text("")
        while True:
            time.sleep(0.1)
    return number * number
"""

SCRIPT = """
import sys
from jobs import slow_square
from sodeep.benchmark.scripts import run_in_processes, run_script


def main():
    numbers = [int(word) for word in sys.argv[1:]]
    shown = lambda index, result: print(index, result, flush=True)
    print(run_in_processes(slow_square, [(number, sys.argv[0] + ".d") for number in numbers], 2, shown))


if __name__ == "__main__":
    run_script(main)
"""


def _script(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS_MODULE)
    (tmp_path / "bench_jobs.py").write_text(SCRIPT)
    (tmp_path / "bench_jobs.py.d").mkdir()
    return [sys.executable, str(tmp_path / "bench_jobs.py")]


def test_jobs_in_worker_processes_come_back_in_order(tmp_path):
    finished = subprocess.run([*_script(tmp_path), "3", "1", "2"], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "1 9\n2 1\n3 4\n[9, 1, 4]\n"


def test_a_job_that_raises_ends_the_script_with_its_error_while_the_others_run(tmp_path):
    finished = subprocess.run([*_script(tmp_path), "3", "0", "2", "-1"], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1 and finished.stderr.endswith("ValueError: no square of zero here\n")
    assert "[" not in finished.stdout  # no list of results: the call ended with the error
    # The job's own lines, from its worker, above the call's.
    worker_part = finished.stderr.split("The above exception was the direct cause of the following exception")[0]
    assert 'jobs.py", line' in worker_part and "in slow_square" in worker_part


def test_a_job_error_that_cannot_be_rebuilt_here_is_named_with_the_jobs_traceback(tmp_path):
    finished = subprocess.run([*_script(tmp_path), "7"], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1
    assert finished.stderr.endswith(
        "RuntimeError: job 1 raised TwoPartError('seven'), and it cannot be read back here: "
        "TypeError(\"TwoPartError.__init__() missing 1 required positional argument: 'second'\")\n"
    )
    assert "in slow_square" in finished.stderr.split("The above exception was the direct cause")[0]


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_a_pool_of_no_whole_number_of_workers_is_refused(workers):
    with pytest.raises(ValueError, match=rf"^workers must be an integer >= 1, got {workers!r}$"):
        run_in_processes(abs, [1], workers)


def test_a_stopped_script_kills_its_workers_even_where_their_jobs_take_signals(tmp_path):
    """SIGTERM, which run_script takes as Ctrl-C: the same stop."""
    process = subprocess.Popen(
        [*_script(tmp_path), "-1", "-2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "bench_jobs.py.d").glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(path.stem) for path in (tmp_path / "bench_jobs.py.d").glob("*.pid")]
        assert len(workers) == 2, "the workers did not start"
        process.send_signal(signal.SIGTERM)
        _, error = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == INTERRUPTED
    assert (
        error == "bench_jobs.py: interrupted; nothing was written, and only a table printed above in full is complete\n"
    )
    time.sleep(0.5)
    for worker in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
