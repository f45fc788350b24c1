"""Run a sweep's trials offline, each as W&B's agent would run it, in its own folder.

``ROOT/<sweep>/sweep.json`` records the sweep file, the seed and the trials;
``ROOT/<sweep>/trials/<id>/`` holds one trial: ``trial.json`` (parameters, command, exit
status), ``output.log``, the program's own files (it runs there, so relative outputs such as
``runs/...`` land there) and ``summary.json`` (:mod:`sodeep.sweeps.summary`).  A trial whose
summary says ``finished`` is skipped when the sweep runs again; one the sweep stopped resumes, if
its program is sodeep's (:meth:`~sodeep.sweeps.launcher.TrialLauncher.start`); any other is started
afresh in a cleared folder.  Up to ``workers`` trials run at once, each a subprocess in its own process group
with its share of the cores (:func:`sodeep.sweeps.launcher.trial_threads`):
ctrl-C (or SIGTERM) passes SIGINT on to them, waits, and raises :class:`SweepInterrupted`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sodeep.config import WANDB_MODES
from sodeep.files import atomic_write_json, writable_file_problem
from sodeep.run_folder import (
    CLEARING,
    check_not_cut_short,
    check_not_the_working_folder,
    describe_change,
    describe_value,
    enclosing_run_folder,
    hold_folder,
    holds_files_besides_its_lock,
    releasing_run_folders,
)
from sodeep.sweeps.compare import describe
from sodeep.sweeps.expand import Trial, expand_trials, grid_axes
from sodeep.sweeps.launcher import RunningTrial, TrialLauncher, trial_threads
from sodeep.sweeps.macros import build_command
from sodeep.sweeps.spec import SweepSpec, load_sweep
from sodeep.sweeps.summary import (
    is_finished,
    reaches_target,
    read_sweep_record,
    read_trial_summary,
    trials_beyond_cap,
)
from sodeep.wording import plural

#: Seconds a stopped trial gets to exit after SIGINT (to close its files) before SIGKILL.
STOP_GRACE_SECONDS = 20.0
POLL_SECONDS = 0.05
#: The signals that stop a sweep: the first stops it after a grace period, the next at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(Exception):
    """The sweep stopped on ctrl-C or SIGTERM; ``finished`` of ``total`` trials are done."""

    def __init__(self, folder: Path, finished: int, total: int | None, stopped: int, failed: int = 0) -> None:
        self.folder, self.finished, self.total, self.stopped, self.failed = folder, finished, total, stopped, failed
        of = f" of {total}" if total is not None else ""
        failures = f", {failed} failed" if failed else ""
        super().__init__(
            f"sweep interrupted: {finished}{of} trials finished, {stopped} stopped{failures} (sodeep's commands "
            "resume their run when the sweep runs again; other programs start again)"
        )


@dataclass
class SweepOutcome:
    """What a run of :func:`run_sweep` did: trial ids by what became of them."""

    folder: Path
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    target_reached: bool = False


@releasing_run_folders
def run_sweep(
    spec: SweepSpec | str | os.PathLike,
    root: str | os.PathLike = "runs/sweeps",
    *,
    workers: int = 1,
    seed: int = 0,
    count: int | None = None,
    wandb: str = "offline",
    overwrite: bool = False,
    launch_directory: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> SweepOutcome:
    """Run the trials of ``spec`` not finished yet under ``root/<sweep name>/``.

    Args:
        spec: the sweep (:func:`~sodeep.sweeps.spec.load_sweep`), or the path of its YAML file.
        workers: trials at once, each with ``OMP_NUM_THREADS`` (and the MKL and OpenBLAS
            equivalents) of ``cores // workers`` unless the environment sets one.
        seed: of the random (and bayes) draws.
        count: trials at most, with ``run_cap``.
        wandb: ``WANDB_MODE`` of the trials.
        overwrite: clear the sweep folder first (whatever sweep it holds): every trial runs again.
        launch_directory: where a relative ``program`` is found (default: the current folder, as
            for W&B's agent).
        echo: receives one line per event (start, end, notes).

    The sweep folder is held (``run.lock``) while the sweep runs: a second run of it, from this
    process or another, is refused.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_sweep(spec)
    elif not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a sweep (load_sweep(path)) or the path of its file, got {type(spec).__name__}")
    source = trial_source(spec, workers=workers, seed=seed, count=count, wandb=wandb)
    folder = Path(root).expanduser() / spec.folder_name
    # Absolute: each trial runs in its own folder, and reads these paths from there.
    launcher = TrialLauncher(
        spec,
        folder.absolute(),
        wandb,
        Path(launch_directory or os.getcwd()).resolve(),
        threads=trial_threads(workers),
        echo=echo,
    )
    check_sweep_folder(folder, spec, seed, overwrite=overwrite)
    hold_folder(folder, clear=overwrite, instead="give another root=")
    record_sweep(folder, spec, seed, source if isinstance(source, list) else None)
    for note in (beyond_cap_note(folder, spec), alike_trials_note(spec, source)):
        if note:
            echo(note)
    if spec.early_terminate is not None:
        echo("note: early_terminate needs W&B's server; offline every trial runs to its end")
    return _Scheduler(spec, folder, source, launcher, workers, echo).run()


def beyond_cap_note(folder: Path, spec: SweepSpec) -> str | None:
    """The line that says which trials of ``folder`` a run with a larger ``run_cap`` than
    ``spec``'s left there (they stay, and the report counts them), or ``None``."""
    beyond = trials_beyond_cap(folder, spec.run_cap)
    if not beyond:
        return None
    return (
        f"note: {plural(len(beyond), 'trial')} ({_id_span(beyond)}) from a run with a larger run_cap than "
        f"{spec.run_cap} {'stays' if len(beyond) == 1 else 'stay'} in the folder and in its report"
    )


def alike_trials_note(spec: SweepSpec, source: Any) -> str | None:
    """For a grid whose values a command line spells alike (``2`` and ``"2"``, which W&B's grid
    keeps apart): the line that names the trials whose command-line arguments (the sweep's
    ``command`` with their parameters, an ``${args_json_file}``'s content included) are an earlier
    trial's; else ``None``."""
    if spec.method != "grid" or not isinstance(source, list):
        return None
    reads_file = any("${args_json_file}" in str(word) for word in spec.command)
    seen: dict[str, str] = {}
    alike: list[str] = []
    for trial in source:
        words = build_command(spec.command, trial.params, interpreter="", program="", args_json_file="", environment={})
        spelling = json.dumps([words, json.dumps(trial.params, sort_keys=True) if reads_file else None])
        first = seen.setdefault(spelling, trial.id)
        if first != trial.id:
            alike.append(f"{trial.id} as {first}")
    if not alike:
        return None
    shown = ", ".join(alike[:3]) + (f" and {len(alike) - 3} more" if len(alike) > 3 else "")
    return (
        f"note: {plural(len(alike), 'trial')} ({shown}) {'passes' if len(alike) == 1 else 'pass'} the same "
        "command-line arguments as an earlier trial (values such as 2 and '2' in the sweep file)"
    )


def _id_span(ids: list[str]) -> str:
    """``0006``, ``0006-0009`` (every id between), or ``0006, 0008`` (at most three, then a count)
    for trial ids in numeric order."""
    if len(ids) == 1:
        return ids[0]
    if int(ids[-1]) - int(ids[0]) + 1 == len(ids):
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _trial_record(trial_folder: Path) -> dict | None:
    """The trial's ``trial.json``, or ``None`` where there is none to read."""
    try:
        record = json.loads((trial_folder / "trial.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stopped_before(trial_folder: Path) -> bool:
    """Whether the trial of ``trial_folder`` started and was stopped before its end: its record
    (``trial.json``) says the sweep stopped it, or has no exit status (its runner was killed)."""
    record = _trial_record(trial_folder)
    return record is not None and (bool(record.get("stopped")) or "returncode" not in record)


def failed_before(trial_folder: Path) -> bool:
    """Whether the trial of ``trial_folder`` ran to its end without a finished summary: its record
    has an exit status, and the sweep did not stop it."""
    record = _trial_record(trial_folder)
    return record is not None and "returncode" in record and not record.get("stopped")


def trial_source(
    spec: SweepSpec, *, workers: int = 1, seed: int = 0, count: int | None = None, wandb: str = "offline"
) -> Any:
    """Check the settings of a run of ``spec`` (``ValueError``, one line) and return where its
    trials come from: the list of a grid or random sweep, or the bayes suggester (which needs the
    ``sweeps`` package)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if wandb not in WANDB_MODES:
        raise ValueError(f"wandb must be one of {list(WANDB_MODES)}, got {wandb!r}")
    from sodeep.wandb_setup import check_wandb_login

    check_wandb_login(wandb, "--wandb", logs_in_this_process=False)  # the runner sets each trial's WANDB_MODE
    if spec.method == "bayes":
        from sodeep.sweeps.bayes import BayesTrials

        return BayesTrials(spec, seed=seed, count=count)  # checks that `sweeps` is there
    return expand_trials(spec, seed=seed, count=count)


def spec_changes(held: Any, given: Any, where: str = "") -> list[str]:
    """What differs between a folder's sweep specification and the file given, key by key down
    to each parameter: ``["parameters.seed.values: [0, 1] -> [0, 1, 2]"]``, ``(absent)`` for a
    key on one side only; long lists, whose shortened whole could show the same start on both
    sides, item by item where of one length (``command[7]: ...``), else from the first item that
    differs (``values[30:]: [] -> [30]``)."""
    cut = describe_value(held) != json.dumps(held) or describe_value(given) != json.dumps(given)
    if isinstance(held, list) and isinstance(given, list) and where and cut:
        if len(held) == len(given):
            return [
                change
                for index, (before, after) in enumerate(zip(held, given, strict=True))
                if before != after
                for change in spec_changes(before, after, f"{where}[{index}]")
            ]
        first = next((i for i, (a, b) in enumerate(zip(held, given)) if a != b), min(len(held), len(given)))
        return [f"{where}[{first}:]: {describe_change(held[first:], given[first:])}"]
    if not (isinstance(held, dict) and isinstance(given, dict)):
        return [f"{where or 'the file'}: {describe_change(held, given)}"]
    changes = []
    for key in [*held, *(key for key in given if key not in held)]:
        inner = f"{where}.{key}" if where else str(key)
        if key not in held or key not in given:
            before, after = (describe_value(side[key]) if key in side else "(absent)" for side in (held, given))
            changes.append(f"{inner}: {before} -> {after}")
        elif held[key] != given[key]:
            changes += spec_changes(held[key], given[key], inner)
    return changes


def check_sweep_folder(folder: Path, spec: SweepSpec, seed: int, *, overwrite: bool = False) -> None:
    """Refuse (``ValueError``, one line) a sweep folder that holds a different sweep: another
    file, or another seed of a random or bayes sweep (only ``run_cap`` may change, to extend or
    shorten it).  With ``overwrite``, any sweep folder is accepted, to be cleared, but never a
    folder of other files, nor the working folder or one of its parents.  Writes nothing."""
    path = folder / "sweep.json"
    problem = writable_file_problem(path)
    if problem:
        raise ValueError(f"{problem}; give another root=")
    around = enclosing_run_folder(folder)
    if around is not None:  # its trials' run folders would be refused there, one by one
        raise ValueError(
            f"{folder} is inside the run folder {around}, whose overwrite would delete it; give another root="
        )
    check_not_cut_short(folder, overwrite)
    holds_files = holds_files_besides_its_lock(folder)
    # Never taken over, nor cleared (unless what is left of a clearing cut short): not a sweep's files.
    if holds_files and not path.is_file() and not (folder / CLEARING).exists():
        raise ValueError(f"{folder} holds files but no sweep.json: not a sweep folder; give another root= or name")
    if overwrite and holds_files:
        check_not_the_working_folder(folder, "give another root=")
        return
    if not path.exists():
        return
    held = read_sweep_record(path, "remove that folder or give another root=")
    comparable = {key: value for key, value in spec.mapping.items() if key != "run_cap"}
    held_comparable = {key: value for key, value in held.get("spec", {}).items() if key != "run_cap"}
    advice = "give another root= or name, or add overwrite=True to clear that folder"
    if held_comparable != json.loads(json.dumps(comparable)):
        changes = "; ".join(spec_changes(held_comparable, json.loads(json.dumps(comparable))))
        raise ValueError(f"{folder} holds another sweep (a different sweep file: {changes}); {advice}")
    if spec.method != "grid" and held.get("seed") != seed:
        raise ValueError(
            f"{folder} holds this sweep drawn with seed={held.get('seed')}, not {seed}; "
            f"run it with seed={held.get('seed')} to continue it, or {advice}"
        )


def record_sweep(folder: Path, spec: SweepSpec, seed: int, trials: list[Trial] | None) -> None:
    """Write ``sweep.json`` (after :func:`check_sweep_folder`)."""
    path = folder / "sweep.json"
    atomic_write_json(
        path,
        {
            "schema": "sodeep-sweep/1",
            "name": spec.name,
            "method": spec.method,
            "metric": spec.metric,
            "seed": seed,
            "source": spec.source,
            "spec": spec.mapping,
            "trials": None if trials is None else [{"trial": t.id, "params": t.params} for t in trials],
            "size": sweep_size(spec, seed),
        },
    )


def sweep_size(spec: SweepSpec, seed: int) -> int | None:
    """The trials of the whole sweep, whatever ``--count`` runs of it: a grid's combinations or a
    random sweep's ``run_cap`` (each capped by ``run_cap``); ``None`` where unknown (Bayes, or a
    random sweep drawn only with ``--count``)."""
    if spec.method == "grid":
        size = math.prod(map(len, grid_axes(spec.parameters, f"{spec.source}: ")))
        return size if spec.run_cap is None else min(size, spec.run_cap)
    return spec.run_cap if spec.method == "random" else None


class _Scheduler:
    """Keeps up to ``workers`` trials running until none is left, or ctrl-C."""

    def __init__(self, spec: SweepSpec, folder: Path, source: Any, launcher: TrialLauncher, workers: int, echo) -> None:
        self.spec, self.folder, self.source, self.launcher = spec, folder, source, launcher
        self.workers, self.echo = workers, echo
        self.outcome = SweepOutcome(folder)
        self.running: list[RunningTrial] = []
        self.stop_now = False  # a second stop signal came: no grace period for the trials
        self.total = len(source) if isinstance(source, list) else source.total

    def pending(self) -> list[Trial]:
        """Trials not finished, after reporting those that are (and noting a reached target)."""
        if not isinstance(self.source, list):
            self.outcome.skipped = self.source.finished_ids(self.folder)
            if self.outcome.skipped:
                self.echo(f"{len(self.outcome.skipped)} of {self.total} trials already finished: skipped")
            return []
        waiting = []
        for trial in self.source:
            summary_path = self.launcher.trial_folder(trial) / "summary.json"
            if is_finished(summary_path):
                self.outcome.skipped.append(trial.id)
                self.outcome.target_reached |= reaches_target(self.spec.metric, read_trial_summary(summary_path))
            else:
                waiting.append(trial)
        if self.outcome.skipped:
            self.echo(f"{len(self.outcome.skipped)} of {self.total} trials already finished: skipped")
        return waiting

    def started_before(self, trial: Trial) -> bool:
        """Whether ``trial`` started in an earlier run of the sweep and was stopped before its end
        (not a trial that failed): :func:`stopped_before`."""
        return stopped_before(self.launcher.trial_folder(trial))

    def next_trial(self, waiting: list[Trial]) -> Trial | None:
        if self.outcome.target_reached:  # no new trials; those stopped before finish, as running ones do
            started = next((trial for trial in waiting if self.started_before(trial)), None)
            if started is not None:
                waiting.remove(started)
            return started
        if isinstance(self.source, list):
            return waiting.pop(0) if waiting else None
        return self.source.next_trial(self.folder, running=[r.trial for r in self.running])

    def run(self) -> SweepOutcome:
        waiting = self.pending()
        if self.outcome.target_reached:
            started = sum(self.started_before(trial) for trial in waiting)
            finishing = f"; {plural(started, 'trial')} stopped before {'finishes' if started == 1 else 'finish'}"
            self.echo(
                f"metric {self.spec.metric['name']} reached its target in a finished trial: no new trials"
                + (finishing if started else "")
            )
        previous = self._take_stop_signals(self._first_stop)
        try:
            while True:
                while len(self.running) < self.workers and (trial := self.next_trial(waiting)) is not None:
                    self.running.append(self.launcher.start(trial))
                    how = "resumed" if self.running[-1].resumed else "started"
                    self.echo(f"trial {trial.id} ({trial.index + 1}/{self.total}) {how}: {describe(trial.params)}")
                if not self.running:
                    break
                self.collect()
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            stopped = self.stop_all()
            done = len(self.outcome.finished) + len(self.outcome.skipped)
            raise SweepInterrupted(self.folder, done, self.total, stopped, len(self.outcome.failed)) from None
        except ValueError:  # a trial that cannot start: the others stop as on ctrl-C, to resume
            self.stop_all()
            raise
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return self.outcome

    def _take_stop_signals(self, handler: Any) -> dict[int, Any]:
        """Make SIGINT and SIGTERM ``handler``'s; returns the handlers they had (none outside the
        main thread, where Python sets no handlers)."""
        try:
            return {number: signal.signal(number, handler) for number in STOP_SIGNALS}
        except ValueError:
            return {}

    def _first_stop(self, number: int, frame: Any) -> None:
        """The first SIGINT or SIGTERM stops the sweep; later ones, however soon they come (``timeout``
        signals a command twice), ask :meth:`stop_all` to stop the trials at once."""
        self._take_stop_signals(self._later_stop)
        raise KeyboardInterrupt

    def _later_stop(self, number: int, frame: Any) -> None:
        self.stop_now = True

    def collect(self) -> None:
        for running in list(self.running):
            returncode = running.process.poll()
            if returncode is None:
                continue
            self.running.remove(running)
            status = self.launcher.finish(running, returncode)
            trial, seconds = running.trial, time.monotonic() - running.started
            if status == "finished":
                summary = read_trial_summary(self.launcher.trial_folder(trial) / "summary.json")
                self.outcome.finished.append(trial.id)
                # A summary writes NaN as null (JSON has no NaN).
                metrics = {key: math.nan if value is None else value for key, value in summary["metrics"].items()}
                shown = describe(metrics) or "no metrics"
                self.echo(f"trial {trial.id} finished in {seconds:.1f} s: {shown}")
                if returncode != 0:
                    log = self.launcher.trial_folder(trial) / "output.log"
                    self.echo(f"note: trial {trial.id} wrote its finished summary, then exited {returncode}: see {log}")
                name = (self.spec.metric or {}).get("name")
                if name and summary["metrics"] and name not in summary["metrics"]:
                    self.echo(
                        f"note: trial {trial.id} reported no {name}, the sweep's metric "
                        f"(it reported {', '.join(summary['metrics'])})"
                    )
                if reaches_target(self.spec.metric, summary) and not self.outcome.target_reached:
                    self.outcome.target_reached = True
                    self.echo(f"metric {self.spec.metric['name']} reached its target: no new trials")
            elif running.problem:
                self.outcome.failed.append(trial.id)
                self.echo(f"trial {trial.id} failed in {seconds:.1f} s (exit {returncode}): {running.problem}")
            else:
                self.outcome.failed.append(trial.id)
                log = self.launcher.trial_folder(trial) / "output.log"
                self.echo(f"trial {trial.id} failed (exit {returncode}) in {seconds:.1f} s: see {log}")

    def stop_all(self) -> int:
        """SIGINT to every running trial, SIGKILL to those still alive after the grace period; the
        number stopped before their summary (a trial that wrote it counts as finished)."""
        for running in self.running:
            _signal_group(running.process, signal.SIGINT)
        if self.running:
            self.echo(
                f"stopping {len(self.running)} running trial(s): up to {STOP_GRACE_SECONDS:.0f} s for them to "
                "close their files (ctrl-C or SIGTERM again stops them at once)"
            )
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        try:
            while (
                any(r.process.poll() is None for r in self.running)
                and time.monotonic() < deadline
                and not self.stop_now
            ):
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            pass  # a second ctrl-C where this runner could not take the signals: stop waiting
        stopped = 0
        for running in self.running:
            if running.process.poll() is None:
                _signal_group(running.process, signal.SIGKILL)
                running.process.wait()
            if is_finished(self.launcher.trial_folder(running.trial) / "summary.json"):
                # It wrote its summary before the stop came: finished, and skipped by the next run.
                self.launcher.finish(running, running.process.returncode)
                self.outcome.finished.append(running.trial.id)
                self.echo(f"trial {running.trial.id} finished: it wrote its summary before the stop")
            else:
                self.launcher.stopped(running)  # resumed by the next run where its program can
                stopped += 1
        return stopped


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except (ProcessLookupError, PermissionError):
        pass
