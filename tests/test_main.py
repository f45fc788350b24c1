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
