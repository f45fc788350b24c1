"""``python -m sodeep`` is the ``sodeep`` console script."""

import subprocess
import sys


def test_python_m_sodeep_runs_the_console_script():
    shown = subprocess.run([sys.executable, "-m", "sodeep", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: sodeep ") and "pretrain" in shown.stdout
    wrong = subprocess.run([sys.executable, "-m", "sodeep", "pretrian"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.startswith("sodeep: error: argument command: invalid choice")
