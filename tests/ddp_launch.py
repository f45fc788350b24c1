"""Start a ``sodeep`` command as two DDP processes on this machine (gloo over loopback), through
a test's entry-point script that installs its spies: what both distributed test modules share."""

import os
import socket
import subprocess
import sys
import time

import pytest

from sodeep.stream_loader import available_cores

#: Lightning's settings of two CPU processes on this machine.
DDP = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_entry_point(folder, entry_point: str, *argv, stop_at=None, fresh: bool = True):
    """Run ``entry_point`` (the source of a script that runs ``sodeep argv`` under a test's spies)
    in ``folder``, the spies writing into ``folder/seen`` (emptied first when ``fresh``, else
    added to: a resumed run's records follow the interrupted one's); ``stop_at`` reaches them as
    ``SODEEP_TEST_STOP_AT``.  Returns ``(completed process, seconds)``."""
    if available_cores() < 2:
        pytest.skip("two training processes need two CPU cores (sodeep refuses more processes than cores)")
    entry = folder / "entry.py"
    entry.write_text(entry_point)
    seen = folder / "seen"
    seen.mkdir(exist_ok=True)
    for old in seen.iterdir() if fresh else ():
        old.unlink()
    environment = {
        **os.environ,
        "SODEEP_TEST_SEEN": str(seen),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    environment.pop("SODEEP_TEST_STOP_AT", None)
    if stop_at is not None:
        environment["SODEEP_TEST_STOP_AT"] = stop_at
    started = time.time()
    done = subprocess.run(
        [sys.executable, str(entry), *argv], env=environment, cwd=folder, capture_output=True, text=True, timeout=300
    )
    return done, time.time() - started
