"""Start one sweep trial as W&B's agent would: its folder, parameter files, environment and
command, as a subprocess in its own process group; and record how it ended.

The trial runs inside ``ROOT/<sweep>/trials/<id>/`` (relative outputs of its program land there)
with ``WANDB_MODE``, ``WANDB_RUN_GROUP`` (the sweep), ``WANDB_SWEEP_PARAM_PATH`` (so that
``wandb.init`` reads the parameters into ``wandb.config``) and the ``SODEEP_SWEEP_*`` variables
that :func:`sodeep.sweeps.write_trial_summary` reads.  ``WANDB_SWEEP_ID`` is not set: ``wandb
sync`` would look for that sweep on the server and leave the run out (wandb/wandb#8115).

Trials that run side by side share the machine's cores: each gets ``OMP_NUM_THREADS`` (and the
MKL and OpenBLAS equivalents) of ``cores // workers`` (:func:`trial_threads`), unless the sweep's
own environment sets one of them (to a non-empty value): then the trials inherit them as they
are.  Without a share every trial's PyTorch and scikit-learn start one thread per core, and two
2-thread trials on 2 cores run about 4x slower than two 1-thread ones (docs/sweeps.md).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sodeep.files import atomic_write_json, atomic_write_text
from sodeep.run_folder import RESUME_STARTED_VARIABLE, run_in_use
from sodeep.stream_loader import available_cores
from sodeep.sweeps.expand import Trial
from sodeep.sweeps.macros import build_command, resolve_program, sweep_param_text
from sodeep.sweeps.spec import SweepSpec
from sodeep.sweeps.summary import (
    PARAMS_VARIABLE,
    STARTED_VARIABLE,
    SUMMARY_VARIABLE,
    SWEEP_VARIABLE,
    TRIAL_VARIABLE,
    is_finished,
    read_trial_summary,
    trial_summary,
)

#: Where a trial's summary goes when the program wrote one that cannot be read (the trial fails).
UNREADABLE_SUMMARY = "summary.unreadable.json"

#: The thread-count variables a trial's libraries read (PyTorch, NumPy and scikit-learn's BLAS).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


#: Seconds a trial's start waits for a command still running in its folder (an attempt left by a
#: runner that was killed, stopping on the SIGINT it got then) to end.
LEFT_RUNNING_WAIT_SECONDS = 60.0


#: sodeep's commands that continue the run in their output folder under
#: :data:`~sodeep.run_folder.RESUME_STARTED_VARIABLE` (as with ``--resume``).
RESUMING_COMMANDS = ("pretrain", "brainage", "bench")


def resumes_its_run(command: list[str]) -> bool:
    """Whether a trial's ``command`` is one of sodeep's :data:`RESUMING_COMMANDS`: the ``sodeep``
    console script, as the command or after ``env``, or ``python -m sodeep``, then the command.

    Example:
        >>> resumes_its_run(["/usr/bin/env", "sodeep", "pretrain"]), resumes_its_run(["python", "-m", "sodeep", "bench"])
        (True, True)
        >>> resumes_its_run(["/usr/bin/env", "sodeep", "export"]), resumes_its_run(["env", "python", "train.py", "sodeep"])
        (False, False)
    """
    words = list(command[:6])
    after = next((words[index + 1 :] for index, word in enumerate(words[:2]) if Path(word).name == "sodeep"), None)
    if after is None:
        after = next(
            (
                words[index + 2 :]
                for index in range(len(words) - 1)
                if words[index] == "-m" and words[index + 1] in ("sodeep", "sodeep.cli")
            ),
            None,
        )
    return bool(after) and after[0] in RESUMING_COMMANDS


def _overwrites(command: list[str]) -> bool:
    """Whether ``command`` passes ``--overwrite`` (as a flag, or ``--overwrite=True`` as W&B writes
    a parameter): its run starts again whatever its folder holds."""
    return any(
        word == "--overwrite"
        or (word.startswith("--overwrite=") and word.split("=", 1)[1].lower() not in ("false", "0"))
        for word in command
    )


def trial_threads(workers: int, cores: int | None = None) -> int:
    """Threads per trial when ``workers`` trials share ``cores`` (default: :func:`available_cores`):
    an equal share, at least one.

    Example:
        >>> trial_threads(2, cores=2), trial_threads(3, cores=8), trial_threads(4, cores=2)
        (1, 2, 1)
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return max(1, (available_cores() if cores is None else cores) // workers)


#: Linux's ``prctl`` option that sends the calling process a signal when its parent exits.
_PR_SET_PDEATHSIG = 1


def _seconds(value: object) -> float:
    """``value`` as a finite number of seconds >= 0 (0 for anything else)."""
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
    return float(value) if finite else 0.0


def _interrupt_with_the_runner() -> Callable[[], None] | None:
    """What a trial's process runs before its command (Linux; elsewhere ``None``): a request for
    SIGINT, as the runner's own stop sends, when the runner exits for any reason (SIGKILL included),
    so that no trial is left running beside the next run of the sweep.  The C library is looked up
    here, in the runner: nothing but the system call runs in the new process."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    runner = os.getpid()

    def request() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
        if os.getppid() != runner:  # the runner exited before the request took effect
            os.kill(os.getpid(), signal.SIGINT)

    return request


@dataclass
class RunningTrial:
    """A started trial: its process, open log, environment and start time."""

    trial: Trial
    process: subprocess.Popen
    log: IO[bytes]
    environment: dict[str, str]
    started: float
    #: Why the trial failed although its program exited 0 (an unreadable summary), once finished.
    problem: str | None = None
    #: It continues an attempt a stop cut short (:meth:`TrialLauncher.resumable`).
    resumed: bool = False


class TrialLauncher:
    """Starts one trial: folder, parameter files, environment, command, subprocess."""

    def __init__(
        self,
        spec: SweepSpec,
        folder: Path,
        wandb: str,
        launch_directory: Path,
        *,
        threads: int | None = None,
        echo: Callable[[str], None] = lambda line: None,
    ) -> None:
        """``threads``: the thread variables of each trial (:data:`THREAD_VARIABLES`) where the
        environment sets none of them; ``None`` leaves them as they are.  ``echo``: receives a
        line while a start waits for an attempt left running."""
        self.spec, self.folder, self.wandb, self.threads, self.echo = spec, folder, wandb, threads, echo
        self.program = resolve_program(spec.program, launch_directory)
        if "${program}" in spec.command and not Path(self.program).is_file():
            if Path(spec.program).is_absolute():
                raise ValueError(f"{spec.source}: program {spec.program} is not a file")
            raise ValueError(
                f"{spec.source}: program {spec.program} is not a file in {launch_directory}; a relative program is "
                "found from where the sweep starts, as by W&B's agent"
            )

    def trial_folder(self, trial: Trial) -> Path:
        return self.folder / "trials" / trial.id

    def environment(self, trial: Trial, directory: Path) -> dict[str, str]:
        environment = dict(os.environ)
        if self.threads is not None and not any(environment.get(name) for name in THREAD_VARIABLES):
            environment.update(dict.fromkeys(THREAD_VARIABLES, str(self.threads)))
        environment.update(
            {
                SUMMARY_VARIABLE: str(directory / "summary.json"),
                SWEEP_VARIABLE: self.spec.name,
                TRIAL_VARIABLE: trial.id,
                PARAMS_VARIABLE: json.dumps(trial.params),
                STARTED_VARIABLE: repr(time.time()),
                "WANDB_MODE": self.wandb,
                # For sodeep's own commands, whose --wandb flag wins over WANDB_MODE: the sweep
                # files pass --wandb=${envvar:SODEEP_WANDB}.
                "SODEEP_WANDB": self.wandb,
                "WANDB_DIR": str(directory),
                # W&B's cache, artifacts and service logs stay in the trial's folder too.
                "WANDB_CACHE_DIR": str(directory / "wandb" / "cache"),
                "WANDB_DATA_DIR": str(directory / "wandb" / "cache"),
                "WANDB_ERROR_REPORTING": "false",
                "WANDB_RUN_GROUP": self.spec.name,
                "WANDB_NAME": f"{self.spec.name}-{trial.id}",
                "WANDB_SWEEP_PARAM_PATH": str(directory / "sweep-params.yaml"),
                # The console scripts beside this Python (`sodeep`), even from an unactivated venv.
                "PATH": os.path.dirname(sys.executable) + os.pathsep + environment.get("PATH", ""),
            }
        )
        for key in ("project", "entity"):
            if isinstance(self.spec.mapping.get(key), str):
                environment[f"WANDB_{key.upper()}"] = self.spec.mapping[key]
        return environment

    def command(self, trial: Trial) -> tuple[list[str], dict[str, str]]:
        """The trial's argument list and environment."""
        directory = self.trial_folder(trial)
        environment = self.environment(trial, directory)
        command = build_command(
            self.spec.command,
            trial.params,
            interpreter=sys.executable,
            program=self.program,
            args_json_file=directory / "args.json",
            environment=environment,
        )
        return command, environment

    def start(self, trial: Trial) -> RunningTrial:
        """Start ``trial`` in a cleared folder; or, where a stop cut short a sodeep command of the
        same parameters there (:meth:`resumable`), in its folder as it is, with
        :data:`~sodeep.run_folder.RESUME_STARTED_VARIABLE` set: the command continues its run."""
        directory = self.trial_folder(trial)
        self._wait_for_a_left_attempt(trial, directory)
        command, environment = self.command(trial)
        resumed = self.resumable(trial, command)
        # The seconds of the attempts a stop cut short count towards the trial's time.
        earlier = self._seconds_so_far(trial) if resumed else 0.0
        if directory.exists() and not resumed:
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if resumed:
            environment[RESUME_STARTED_VARIABLE] = "1"
            environment[STARTED_VARIABLE] = repr(time.time() - earlier)
            (directory / "summary.json").unlink(missing_ok=True)  # the stopped attempt's "failed"
        atomic_write_text(directory / "sweep-params.yaml", sweep_param_text(trial.params))
        atomic_write_json(directory / "args.json", trial.params)
        record = {"trial": trial.id, "params": trial.params, "command": command, "resumed": resumed}
        # When this attempt began, and the seconds of those before it: what a runner killed during
        # the attempt leaves to count it by.
        record |= {"started": time.time(), "earlier_seconds": earlier}
        atomic_write_json(directory / "trial.json", record)
        log = open(directory / "output.log", "ab" if resumed else "wb")  # noqa: SIM115 (closed when the trial ends)
        if resumed:
            log.write(b"\n--- sodeep sweep run: resuming this trial after a stop ---\n")
            log.flush()
        try:
            process = subprocess.Popen(
                command,
                cwd=directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # ctrl-C reaches the runner, which stops the trials itself
                preexec_fn=_interrupt_with_the_runner(),
            )
        except OSError as error:
            log.close()
            raise ValueError(f"trial {trial.id}: cannot run {command[0]!r}: {error}") from None
        return RunningTrial(trial, process, log, environment, time.monotonic() - earlier, resumed=resumed)

    def _wait_for_a_left_attempt(self, trial: Trial, directory: Path) -> None:
        """Wait up to :data:`LEFT_RUNNING_WAIT_SECONDS` for a run folder in the trial's folder that
        a running command holds to be let go; a ``ValueError`` naming it if it is not."""
        deadline, said = time.monotonic() + LEFT_RUNNING_WAIT_SECONDS, False
        while (problem := run_in_use(directory)) is not None:
            holder = re.search(r"\(process [^)]*\)", problem)
            what = f"a sodeep command{' ' + holder.group(0) if holder else ''} still runs in its folder"
            if time.monotonic() > deadline:
                raise ValueError(
                    f"trial {trial.id}: {what} (an attempt left running, as by a sweep runner that was killed); run "
                    "the sweep again once it has ended, or stop it"
                )
            if not said:
                self.echo(f"trial {trial.id}: {what}; waiting up to {LEFT_RUNNING_WAIT_SECONDS:.0f} s for it to end")
                said = True
            time.sleep(0.2)

    def _seconds_so_far(self, trial: Trial) -> float:
        """The seconds its attempts ran: as :meth:`stopped` recorded them; for an attempt cut short
        without a record (its runner killed, the machine gone down), until the last line it wrote
        to ``output.log``."""
        directory = self.trial_folder(trial)
        try:
            record = json.loads((directory / "trial.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0.0
        if not isinstance(record, dict):
            return 0.0
        if "seconds" in record:
            return _seconds(record["seconds"])
        try:
            last_written = (directory / "output.log").stat().st_mtime
        except OSError:
            last_written = None
        started = _seconds(record.get("started"))
        cut_short = max(0.0, last_written - started) if last_written is not None and started else 0.0
        return _seconds(record.get("earlier_seconds")) + cut_short

    def resumable(self, trial: Trial, command: list[str]) -> bool:
        """Whether the trial's folder holds an attempt of the same parameters that a stop cut short
        (``sodeep sweep run`` interrupted, or the machine going down: no exit status recorded, or
        :meth:`stopped`), and the command is one of sodeep's that resume their run
        (:func:`resumes_its_run`).  Any other program starts again in a cleared folder, as it cannot
        be told to resume."""
        try:
            record = json.loads((self.trial_folder(trial) / "trial.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("params") != trial.params:
            return False
        cut_short = "returncode" not in record or record.get("stopped") is True
        return cut_short and resumes_its_run(command) and not _overwrites(command)

    def stopped(self, running: RunningTrial) -> None:
        """Record that the sweep stopped the trial before it finished (its log is closed)."""
        running.log.close()
        path = self.trial_folder(running.trial) / "trial.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        returncode, seconds = running.process.returncode, time.monotonic() - running.started
        atomic_write_json(path, {**record, "returncode": returncode, "stopped": True, "seconds": seconds})

    def finish(self, running: RunningTrial, returncode: int) -> str:
        """Record the end of a trial; its status: ``finished`` or ``failed``."""
        running.log.close()
        directory = self.trial_folder(running.trial)
        seconds = time.monotonic() - running.started
        record = json.loads((directory / "trial.json").read_text(encoding="utf-8"))
        atomic_write_json(directory / "trial.json", {**record, "returncode": returncode, "seconds": seconds})
        summary_path = directory / "summary.json"
        running.problem = None
        if summary_path.exists():
            try:
                read_trial_summary(summary_path)
            except (OSError, ValueError) as error:
                # Kept aside for a look; the trial failed, and its summary says why.
                os.replace(summary_path, directory / UNREADABLE_SUMMARY)
                # The message names the file where it now is.
                running.problem = " ".join(str(error).split()).replace(
                    str(summary_path), str(directory / UNREADABLE_SUMMARY)
                )
        if returncode == 0 and running.problem is None and not summary_path.exists():
            # The program does not call write_trial_summary: the trial still counts as done.
            summary = trial_summary(running.trial.params, {}, seconds=seconds, environment=running.environment)
            atomic_write_json(summary_path, summary)
        elif (returncode != 0 or running.problem) and not is_finished(summary_path):
            summary = trial_summary(
                running.trial.params, {}, status="failed", seconds=seconds, environment=running.environment
            )
            if running.problem:
                summary["error"] = f"the program's summary was unreadable ({UNREADABLE_SUMMARY}): {running.problem}"
            atomic_write_json(summary_path, summary)
        return "finished" if is_finished(summary_path) else "failed"
