"""``python -m sodeep`` is the ``sodeep`` console script."""

import os
import signal
import subprocess
import sys
import time


def test_python_m_sodeep_runs_the_console_script():
    shown = subprocess.run([sys.executable, "-m", "sodeep", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: sodeep ") and "pretrain" in shown.stdout
    wrong = subprocess.run([sys.executable, "-m", "sodeep", "pretrian"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.startswith("sodeep: error: argument command: invalid choice")


def test_ctrl_c_once_the_work_is_saved_ends_with_the_command_status(tmp_path):
    # After "sorter written" the interpreter still shuts down W&B's service and Lightning's threads.
    command = [sys.executable, "-m", "sodeep", "pretrain", "--steps", "2", "--validation-every", "2"]
    command += ["--validation-sequences", "2", "--lengths", "2-16", "--out", str(tmp_path / "run")]
    unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the line arrives when printed, as on a terminal
    process = subprocess.Popen(
        command, cwd=tmp_path, env=unbuffered, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in process.stdout:
            if line.startswith("sorter written"):
                break
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:  # Ctrl-C all through the shutdown
            process.send_signal(signal.SIGINT)
            time.sleep(0.1)
        _, error = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0 and "KeyboardInterrupt" not in error and "Traceback" not in error, error
    assert (tmp_path / "run" / "sorter.pt").is_file()


def test_version():
    from sodeep import __version__

    shown = subprocess.run([sys.executable, "-m", "sodeep", "--version"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stdout == f"sodeep {__version__}\n"


def test_a_command_whose_output_reader_went_away_ends_quietly_with_the_broken_pipe_status(tmp_path):
    """Not 0: a script that checks the status must not take a command its reader cut short for done."""
    from pathlib import Path

    sorter = Path(__file__).resolve().parents[1] / "pretrained" / "conv_sorter.pt"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the command wrote (`| head -0`)
    command = [sys.executable, "-m", "sodeep", "evaluate", str(sorter), "--lengths", "5", "--sequences", "2"]
    try:
        finished = subprocess.run(
            command, cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    assert finished.returncode == 128 + signal.SIGPIPE and finished.stderr == ""


def test_a_command_whose_error_outputs_reader_went_away_says_so_on_its_output(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = [
        sys.executable,
        "-m",
        "sodeep",
        "pretrain",
        "--steps",
        "2",
        "--lengths",
        "2-8",
        "--out",
        str(tmp_path / "run"),
    ]
    try:  # the run warns on stderr at once: 100 warmup steps are more than 2 steps
        finished = subprocess.run(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=write_end, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    assert finished.returncode == 128 + signal.SIGPIPE
    assert finished.stdout.endswith(
        "sodeep pretrain: stopped: the reader of its error output went away (a closed pipe)\n"
    )


TERMINATED_AS_THE_COMMAND_STARTS = """
import os, signal, sys
import sodeep.cli as cli
read_settings = cli.pretrain_config
def terminated(*arguments, **keywords):  # a SIGTERM once the parser is built, before the run sets its handlers
    os.kill(os.getpid(), signal.SIGTERM)
    return read_settings(*arguments, **keywords)
cli.pretrain_config = terminated
sys.argv = ["sodeep", *sys.argv[1:]]
from sodeep.__main__ import main
raise SystemExit(main())
"""


def test_a_sigterm_as_the_command_starts_ends_in_one_line(tmp_path):
    """Between the loaded command line and the run's own handlers (Lightning loads meanwhile), a
    SIGTERM is taken as Ctrl-C is: one line and status 130, not a silent end."""
    out = tmp_path / "run"
    command = [sys.executable, "-c", TERMINATED_AS_THE_COMMAND_STARTS, "pretrain", "--steps", "2", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert (
        result.stderr == "sodeep pretrain: interrupted before this command saved anything; run the same command again\n"
    )
    assert not out.exists()


def test_a_file_size_limit_during_a_run_ends_in_one_line(tmp_path):
    """The first file past the limit is W&B's debug log, whose handler would print a traceback per
    record; the command's own error names the folder written in."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))  # ulimit -f 1

    words = "pretrain --steps 4 --lengths 2-8 --batch-size 4 --warmup-steps 0 --validation-every 2"
    words += " --validation-sequences 1 --data-workers 0 --out run"
    command = [sys.executable, "-m", "sodeep", *words.split()]
    variables = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        command, cwd=tmp_path, env=variables, preexec_fn=limited, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        ": file too large; a limit on file sizes stopped it (ulimit -f, the file system's): raise the limit or choose "
        "another path\n"
    )
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sodeep pretrain: error: "), result.stderr[:2000]
