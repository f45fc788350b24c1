"""``sodeep sweep run | report``: W&B sweep files run offline, and the comparison of their trials.

:func:`add_sweep_parser` registers the commands on the ``sodeep`` console script;
:func:`main` runs them alone (``main(["run", "experiments/sweeps/brainage_presets.yaml"])``).
"""

from __future__ import annotations

import argparse
import os
import select
import shlex
import sys
from pathlib import Path
from typing import Any

from sodeep.config import WANDB_MODES, number_at_least
from sodeep.run_folder import INTERRUPTED
from sodeep.wording import plural


def add_sweep_parser(commands: Any) -> None:
    """``sodeep sweep run SWEEP.yaml`` and ``sodeep sweep report DIR``."""
    sweep = commands.add_parser(
        "sweep",
        help="run a W&B sweep file offline; compare its trials",
        description="Run the trials of a W&B sweep file (grid, random; bayes with the `sweeps` package) without "
        "W&B's server, each as an offline W&B run, and report on them.  See docs/sweeps.md.",
    )
    actions = sweep.add_subparsers(dest="sweep_command", required=True, metavar="{run,report}")
    run = actions.add_parser(
        "run",
        help="run the trials not finished yet",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Expand the sweep and run each trial not finished yet in ROOT/<name>/trials/<id>/; "
        "run the same command again after an interruption to finish.",
    )
    run.add_argument("sweep_file", metavar="SWEEP.yaml", help="a W&B sweep file, e.g. experiments/sweeps/*.yaml")
    run.add_argument(
        "--root",
        type=os.path.expanduser,  # ~/sweeps in the home folder, also when quoted
        default="runs/sweeps",
        help="folder of sweeps; this one goes in ROOT/<name>",
    )
    run.add_argument(
        "--workers",
        type=number_at_least(int, 1),
        default=1,
        help="trials at once, each with OMP_NUM_THREADS (and MKL_, OPENBLAS_) = cores // workers unless you set one",
    )
    run.add_argument("--seed", type=number_at_least(int, 0), default=0, help="seed of random and bayes draws")
    run.add_argument(
        "--count", type=number_at_least(int, 1), help="trials at most (with run_cap; a random sweep needs one)"
    )
    run.add_argument("--wandb", choices=WANDB_MODES, default="offline", help="WANDB_MODE of trials")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="clear ROOT/<name> first, whatever sweep it holds: every trial runs again",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the spec and print each trial's command (marking those a run would skip) and the thread "
        "settings; run nothing",
    )
    run.set_defaults(handler=command_run)
    report = actions.add_parser(
        "report",
        help="write report.md, report.csv and plots/ for a sweep folder",
        description="Mean +- sd of every metric per parameter setting over seeds and folds, and paired "
        "differences against a baseline with a Wilcoxon signed-rank test.",
    )
    report.add_argument("folder", metavar="DIR", type=os.path.expanduser, help="a sweep folder, ROOT/<name>")
    report.add_argument(
        "--over", nargs="*", metavar="NAME", help="parameters that repeat a setting (default: seed, seeds, fold)"
    )
    report.add_argument(
        "--baseline", nargs="+", metavar="KEY=VALUE", help="the setting to compare with, e.g. losses=l1"
    )
    report.add_argument("--metric", nargs="+", dest="metrics", metavar="NAME", help="metrics (default: all)")
    report.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    report.set_defaults(handler=command_report)


def command_run(arguments: argparse.Namespace) -> int:
    from sodeep.sweeps.runner import SweepInterrupted, run_sweep
    from sodeep.sweeps.spec import load_sweep, spec_warnings

    spec = load_sweep(arguments.sweep_file)
    for line in spec_warnings(spec):
        print(line, file=sys.stderr)
    if arguments.dry_run:
        return dry_run(spec, arguments)
    try:
        outcome = run_sweep(
            spec,
            arguments.root,
            workers=arguments.workers,
            seed=arguments.seed,
            count=arguments.count,
            wandb=arguments.wandb,
            overwrite=arguments.overwrite,
            echo=lambda line: print(line, flush=True),
        )
    except SweepInterrupted as interrupted:
        print(f"{interrupted}; run the same command again to finish: {again(arguments)}", file=sys.stderr)
        return INTERRUPTED
    done = f"{plural(len(outcome.finished), 'trial')} finished, {len(outcome.skipped)} skipped (finished before), "
    done += f"{len(outcome.failed)} failed"
    if outcome.finished or outcome.skipped:
        done += f"; report: sodeep sweep report {shlex.quote(str(outcome.folder))}"
    else:
        done += f"; each trial's output.log in {shlex.quote(str(outcome.folder / 'trials'))} says why"
    print(done)
    return 1 if outcome.failed else 0


def dry_run(spec: Any, arguments: argparse.Namespace) -> int:
    """Check what a run would check, then print the trials and their commands as the runner would
    start them, marking those a run would skip (finished before) and those whose folder a command
    still runs in (an attempt left running, which a run waits for)."""
    from sodeep.run_folder import check_no_run_inside_in_use, check_not_in_use, run_in_use
    from sodeep.sweeps.expand import Trial
    from sodeep.sweeps.launcher import LEFT_RUNNING_WAIT_SECONDS, THREAD_VARIABLES, TrialLauncher, trial_threads
    from sodeep.sweeps.runner import (
        alike_trials_note,
        beyond_cap_note,
        check_sweep_folder,
        failed_before,
        stopped_before,
        trial_source,
    )
    from sodeep.sweeps.summary import is_finished, reaches_target, read_trial_summary

    source = trial_source(
        spec, workers=arguments.workers, seed=arguments.seed, count=arguments.count, wandb=arguments.wandb
    )
    folder = (Path(arguments.root) / spec.folder_name).absolute()
    check_sweep_folder(folder, spec, arguments.seed, overwrite=arguments.overwrite)
    if folder.is_dir():  # as a run would hold it: refused while a run of the sweep runs, or to clear a trial in use
        check_not_in_use(folder, "give another --root")
        if arguments.overwrite:
            check_no_run_inside_in_use(folder, "give another --root")
    if arguments.overwrite and folder.is_dir() and any(folder.iterdir()):
        held = sum(is_finished(summary) for summary in folder.glob("trials/*/summary.json"))
        print(f"--overwrite: a run first deletes {folder}, with the {plural(held, 'finished trial')} it holds")
    launcher = TrialLauncher(spec, folder, arguments.wandb, Path.cwd(), threads=trial_threads(arguments.workers))
    environment = launcher.environment(Trial(0, {}), folder)
    threads = ", ".join(f"{name}={environment.get(name) or 'unset'}" for name in THREAD_VARIABLES)
    for note in (None if arguments.overwrite else beyond_cap_note(folder, spec), alike_trials_note(spec, source)):
        if note:
            print(note)
    if spec.method == "bayes":
        finished = [] if arguments.overwrite else source.finished_ids(folder)
        print(
            f"method bayes: each trial is suggested from the finished ones ({len(finished)} so far), so none is "
            f"known in advance; each trial runs with {threads}"
        )
        return 0
    if spec.early_terminate is not None:
        print("note: early_terminate needs W&B's server; offline every trial runs to its end")
    folders = {trial.id: launcher.trial_folder(trial) for trial in source}
    finished = {
        trial.id for trial in source if not arguments.overwrite and is_finished(folders[trial.id] / "summary.json")
    }
    target = any(
        reaches_target(spec.metric, read_trial_summary(folders[trial_id] / "summary.json")) for trial_id in finished
    )
    skipped, running, started = len(finished), 0, 0
    for trial in source:
        trial_folder = folders[trial.id]
        done = trial.id in finished
        stopped = not arguments.overwrite and not done and stopped_before(trial_folder)
        started += stopped
        in_use = not done and trial_folder.is_dir() and run_in_use(trial_folder) is not None
        running += in_use
        if done:
            mark = " (finished: skipped)"
        elif in_use:
            mark = " (an attempt still runs in its folder)"
        elif target:  # after the target, only trials stopped before their end run
            if stopped:
                mark = " (stopped before: finishes)"
            elif failed_before(trial_folder):
                mark = " (failed: not run again, the target is reached)"
            else:
                mark = " (not run: the target is reached)"
        else:
            mark = ""
        print(f"{trial_folder}{mark}: {shlex.join(launcher.command(trial)[0])}")
    line = f"{plural(len(source), 'trial')}, {skipped} finished before; each trial runs with {threads}"
    if running:
        line += (
            f"; {plural(running, 'trial')} still running from an earlier run: a run waits up to "
            f"{LEFT_RUNNING_WAIT_SECONDS:.0f} s for each to end, then stops"
        )
    print(line)
    if target:
        finishing = f"; it finishes the {plural(started, 'trial')} stopped before" if started else ""
        print(f"metric {spec.metric['name']} has reached its target: a run starts no new trial{finishing}")
    return 0


#: Exit status of a command whose output's reader went away: 128 + SIGPIPE, as a shell reports a
#: writer that a closed pipe ended.
BROKEN_PIPE = 141


def quiet_broken_pipe(name: str = "sodeep") -> int:
    """:data:`BROKEN_PIPE`, without a traceback, after the reader of our output or error output
    went away (``| head``, a ``| tee`` that ended): the command stopped where it was (a training run
    resumes with ``--resume``), so a script that checks the status does not take it for done.
    What is left of the output that lost its reader goes nowhere, so that Python's flush at exit
    does not fail again; where only the error output lost it, a line on the output says so."""
    gone = {stream: _reader_gone(stream) for stream in (sys.stdout, sys.stderr)}
    if not any(gone.values()):  # no pipe of ours says so: the output's, as `| head` makes it
        gone[sys.stdout] = True
    nowhere = os.open(os.devnull, os.O_WRONLY)
    for stream in (stream for stream, lost in gone.items() if lost):
        os.dup2(nowhere, stream.fileno())
    if not gone[sys.stdout]:
        print(f"{name}: stopped: the reader of its error output went away (a closed pipe)", flush=True)
    return BROKEN_PIPE


def _reader_gone(stream: Any) -> bool:
    """Whether ``stream`` writes into a pipe that has lost its reader (``POLLERR`` on its end);
    ``False`` for files and terminals, and where that cannot be asked."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def again(arguments: argparse.Namespace) -> str:
    """The command that finishes the sweep, started as this process was (its interpreter as typed)."""
    from sodeep.cli import typed_program

    words = ["sweep", "run", arguments.sweep_file, "--root", arguments.root]
    words += ["--workers", str(arguments.workers), "--seed", str(arguments.seed)]
    words += ["--count", str(arguments.count)] if arguments.count is not None else []
    words += ["--wandb", arguments.wandb] if arguments.wandb != "offline" else []
    return f"{typed_program()} {shlex.join(words)}"


def command_report(arguments: argparse.Namespace) -> int:
    from sodeep.sweeps.report import can_plot, sweep_running, write_report

    words = ["sodeep", "sweep", "report", arguments.folder]
    words += ["--over", *arguments.over] if arguments.over is not None else []
    words += ["--baseline", *arguments.baseline] if arguments.baseline else []
    words += ["--metric", *dict.fromkeys(arguments.metrics)] if arguments.metrics else []
    words += ["--no-plots"] if arguments.no_plots else []
    written = write_report(
        arguments.folder,
        over=arguments.over,
        baseline=arguments.baseline,
        metrics=arguments.metrics,
        plots=not arguments.no_plots,
        command=shlex.join(words),
    )
    print("wrote " + ", ".join(str(path) for path in written.values()))
    if sweep_running(arguments.folder):
        print(
            f"note: the sweep, or one of its trials, runs in {arguments.folder}: the report holds the trials finished "
            "so far; report again once the sweep has ended"
        )
    if not arguments.no_plots and not can_plot():
        print("no plots: matplotlib is not installed (pip install matplotlib)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``sodeep sweep ARGV``: bad input ends with one line on stderr and exit status 2."""
    from sodeep.cli import _command_parser, assignments_as_flags

    parser = argparse.ArgumentParser(prog="sodeep")
    add_sweep_parser(parser.add_subparsers(dest="command", required=True))
    words = ["sweep", *(sys.argv[1:] if argv is None else argv)]
    arguments = parser.parse_args(words)
    try:
        return arguments.handler(arguments)
    except BrokenPipeError:  # e.g. `sodeep sweep run ... --dry-run | head`
        return quiet_broken_pipe(f"sodeep sweep {arguments.sweep_command}")
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("SODEEP_TRACEBACK"):
            raise
        message = " ".join(str(error).split())
        if isinstance(error, ValueError):  # advice in Python's words: the command's own flags
            message = assignments_as_flags(message, _command_parser(parser, words), words)
        parser.exit(2, f"sodeep sweep: error: {message}\n")


if __name__ == "__main__":
    raise SystemExit(main())
