"""The brain-age commands as Python functions, for scripts and notebooks.

Each takes its config (:mod:`sodeep.brainage.config`) and checks it, its data and its output
folder ``config.out`` before writing anything: every refusal is a one-line ``ValueError`` (or
``FileNotFoundError``).  A folder belongs to one configuration, recorded in ``run.json`` with the
code version (:func:`sodeep.run_folder.claim_run_folder`): every setting except the run lists
(``losses``, ``seeds``, which extend a folder), where the output goes (``out``, ``wandb``) and
where it trains (``accelerator``, ``devices``, ``strategy``, ``num_nodes``), with data files
identified by their content (``table_sha256``, ``manifest_sha256``).  A folder
already used needs ``resume=True`` (train the runs it does not hold, continue an unfinished one
from its last epoch checkpoint, keep every finished one) or ``overwrite=True`` (clear it first).

A command then trains, writes ``results.json`` after every run, ``results.md`` and ``plots/`` from
every run the folder holds, logs to the folder's one W&B run (offline by default), prints the
report and returns the results dict.  SIGINT or SIGTERM stop it cleanly with
:class:`sodeep.run_folder.RunInterrupted` (:mod:`sodeep.brainage.interruption`).  ``sodeep
brainage tabular | synthetic | nifti`` build the config from flags and YAML and call these.

With ``accelerator``, ``devices``, ``strategy`` and ``num_nodes`` for several processes (DDP,
docs/scaling.md) every process runs the command: rank 0 alone checks and claims the folder,
prints, and writes ``run.json``, ``results.json``, the report, the plots and the W&B run; the
processes train each run together, and each returns the same results.  The process group is
destroyed when the last training run ends.

Example (trains for about a minute, so not run as a doctest):
    >>> from sodeep.brainage import TabularConfig, run_tabular
    >>> config = TabularConfig(losses=["l1"], folds=2, seeds=[0], max_epochs=30, wandb="disabled")
    >>> results = run_tabular(config)  # doctest: +SKIP
    >>> results["presets"]["l1"]["summary"]["mae"]["mean"]  # doctest: +SKIP
    >>> config.losses.append("mse")
    >>> results = run_tabular(config, resume=True)  # trains mse only  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from sodeep.brainage.config import (
    CommandConfig,
    NiftiConfig,
    SyntheticConfig,
    TabularConfig,
    TrainingConfig,
    volume_training,
)
from sodeep.brainage.csv_files import DELIMITERS
from sodeep.brainage.datasets import DEFAULT_DATASET
from sodeep.config import SCALE_OUT
from sodeep.files import file_digest
from sodeep.process_state import keeps_caller_state
from sodeep.run_folder import releasing_run_folders
from sodeep.wording import advice_spelling, plural

#: Settings that are not a folder's configuration: the run lists, which extend a folder, where
#: the output goes, data paths, for which their content's digest stands, and where it trains.
NOT_CONFIGURATION = ("losses", "seeds", "out", "wandb", "csv", "manifest", "cache", *SCALE_OUT)


@releasing_run_folders
@keeps_caller_state
def run_tabular(
    config: TabularConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """k-fold cross-validation of ``config.losses`` with :class:`~sodeep.brainage.AgeMLP` on a table."""
    config = replace(config)  # coerced and checked again: settings may have been set after it was built
    config, mode_change = _with_wandb_mode(config, resume=resume and not overwrite)
    from sodeep.brainage.cross_validation import (
        cross_validate_table,
        cross_validation_settings,
        table_description,
        unfinished_runs,
    )
    from sodeep.brainage.finetuning import open_fine_tuning
    from sodeep.brainage.folds import check_site_folds
    from sodeep.brainage.interruption import SignalStop
    from sodeep.brainage.losses import check_batch_size
    from sodeep.brainage.models import AgeMLP
    from sodeep.brainage.splits import check_split
    from sodeep.brainage.tables import read_age_table
    from sodeep.run_folder import start_run_folder
    from sodeep.runs import release_process_group

    leader = _is_leader(config)
    path = config.table_path()
    table = read_age_table(
        path,
        age_column=config.age_column,
        features=config.features,
        id_column=config.id_column,
        site_column=config.site_column,
    )
    # Messages name a table as the reader's do: the path given, or the bundled table's name.
    source = path.name if config.csv is None else str(config.csv)
    if config.split == "site":  # sites before subjects: the advice on folds must fit the sites
        with _named_by(source):
            check_site_folds(table.sites, config.folds, cross_validation=True)
    _check_cohort_size(source, len(table), config.folds, table.skipped_note(source))
    check_batch_size(config.losses, config.batch_size)
    training = TrainingConfig(batch_size=config.batch_size, patience=config.patience, **config.schedule())
    with _named_by(source):
        check_split(
            table.ages,
            table.sites,
            split=config.split,
            folds=config.folds,
            seeds=config.seeds,
            validation_fraction=training.validation_fraction,
        )
    dataset = config.dataset or (None if config.csv else DEFAULT_DATASET)  # no flag: the default table
    data = {"dataset": dataset, "csv": _resolved(config.csv), "table_sha256": file_digest(path)}
    # A column named as the one found by default is recorded as the default: the same run either way.
    data |= {"id_column": table.id_column, "site_column": table.site_column}
    model = AgeMLP(len(table.feature_names), hidden=training.hidden, dropout=training.dropout)
    fine_tuning, start = open_fine_tuning(config, "tabular", data, folds=config.folds, model=model)
    description = table_description(table) | ({"init_from": fine_tuning.settings()} if fine_tuning else {})
    settings = cross_validation_settings(len(table), config.folds, training, description, config.split)
    out, record = Path(config.out), None
    if leader:
        finished = not (resume or overwrite) and _holds_every_run(
            out, settings, config.losses, config.seeds, config.folds
        )
        out, record = claim_folder(
            "tabular", config, data | start, resume=resume, overwrite=overwrite, finished=finished
        )
        planned = len(config.losses) * len(config.seeds) * config.folds
        pending = (
            planned if overwrite else len(unfinished_runs(out, settings, config.losses, config.seeds, config.folds)[1])
        )
        start_run_folder(out, record, overwrite=overwrite)
        separated = "" if table.delimiter == "," else f" ({DELIMITERS[table.delimiter]}-separated)"
        _notes(table.notes(source))
        print(
            f"{source}{separated}: {plural(len(table), 'subject')}, {plural(len(table.feature_names), 'feature')}, "
            f"{plural(len(table.skipped), 'row')} skipped; presets {config.losses}, {config.folds} folds x seeds {config.seeds}"
        )
        _say_started(fine_tuning, training)
        _say_resumed(out, resume and not overwrite, planned, pending, mode_change)
    with (
        SignalStop(resume=resume_from_python("tabular")) as stop,
        wandb_run(config.wandb if leader else "disabled", out, "tabular", record, stop) as run,
    ):
        try:
            results = cross_validate_table(
                table,
                config.losses,
                out=out,
                folds=config.folds,
                split=config.split,
                seeds=config.seeds,
                config=training,
                fine_tuning=fine_tuning,
                progress=progress and leader,
                on_run=run_logger(run),
                stop=stop,
                trainer_options=config.trainer_options(),
            )
        finally:
            release_process_group()  # the last training run has ended: every process still runs
        if leader:
            stop.where = "the report"
            report_cross_validation(results, table.ages, table.subject_ids, out, f"Brain age from {path.name}", run)
    return results


@releasing_run_folders
@keeps_caller_state
def run_synthetic(
    config: SyntheticConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """SFCN per preset and training seed on synthetic MRI, beside the baselines (fixed split)."""
    config = replace(config)  # coerced and checked again: settings may have been set after it was built
    config, mode_change = _with_wandb_mode(config, resume=resume and not overwrite)
    from sodeep.brainage.finetuning import open_fine_tuning
    from sodeep.brainage.interruption import SignalStop
    from sodeep.brainage.losses import check_batch_size
    from sodeep.brainage.models import SFCN, check_grid_fits
    from sodeep.brainage.plots import plot_predictions
    from sodeep.brainage.synthetic_experiment import (
        format_synthetic_report,
        run_synthetic_benchmark,
        synthetic_settings,
        unfinished_synthetic_runs,
    )
    from sodeep.brainage.synthetic_mri import GRID, simulate_cohort
    from sodeep.files import atomic_write_text
    from sodeep.run_folder import (
        drop_previous_run,
        holds_files_besides_its_lock,
        restore_a_killed_replacement,
        set_aside_previous_run,
        start_run_folder,
    )
    from sodeep.runs import release_process_group

    leader = _is_leader(config)
    check_batch_size(config.losses, config.batch_size)
    check_grid_fits(GRID, config.channels, "give fewer channels= (the synthetic grid is fixed)")
    training, network = volume_training(config), sfcn_network(config)
    fine_tuning, start = open_fine_tuning(config, "synthetic", {}, folds=1, model=SFCN(**network))
    out, record, previous_run = Path(config.out), None, None
    if leader:
        restore_a_killed_replacement(out)
    # The run this one replaces (--overwrite) stays until the new cohort is simulated.
    replacing = overwrite and holds_files_besides_its_lock(out)
    if leader:
        out, record = claim_folder("synthetic", config, start, resume=resume, overwrite=overwrite)
        settings = synthetic_settings(
            config.train,
            config.test,
            config.data_seed,
            training,
            config.max_minutes,
            config.augment,
            network,
            fine_tuning,
        )
        planned = len(config.losses) * len(config.seeds) * (2 if config.cascade else 1)
        pending = planned
        if not overwrite:
            pending = len(unfinished_synthetic_runs(out, settings, config.losses, config.seeds, config.cascade)[1])
        previous_run = set_aside_previous_run(out, replacing)
        start_run_folder(out, record, overwrite=False)
        _say_started(fine_tuning, training)
        _say_resumed(out, resume and not overwrite, planned, pending, mode_change)
    with (
        SignalStop(resume=resume_from_python("synthetic")) as stop,
        wandb_run(config.wandb if leader else "disabled", out, "synthetic", record, stop) as run,
    ):
        try:
            results = run_synthetic_benchmark(
                config.losses,
                out=out,
                train_size=config.train,
                test_size=config.test,
                seeds=config.seeds,
                data_seed=config.data_seed,
                config=training,
                max_minutes=config.max_minutes,
                cascade=config.cascade,
                augment=config.augment,
                network=network,
                fine_tuning=fine_tuning,
                progress=progress and leader,
                on_run=run_logger(run),
                stop=stop,
                trainer_options=config.trainer_options(),
                on_cohort=None if previous_run is None else lambda: drop_previous_run(previous_run),
            )
        except BaseException as stopped:  # a refusal, an interrupt, out of memory: the previous run comes back
            if previous_run is not None:
                _put_back_previous_run(out, previous_run, stopped)
            raise
        finally:
            release_process_group()  # the last training run has ended: every process still runs
        if not leader:
            return results
        summarize_in_wandb(run, preset_means(results))  # as the cross-validation commands do
        stop.where = "the report"
        report = format_synthetic_report(results)
        atomic_write_text(out / "results.md", report)
        test = simulate_cohort(
            range(config.train, config.train + config.test), config.data_seed, cache_directory=out / "cache"
        )
        for group, label in (("presets", "SFCN"), ("cascade", "cascade")):
            for name, entry in results.get(group, {}).items():
                for record_of_run in entry["runs"][:1]:
                    plot_predictions(
                        test.ages,
                        record_of_run["test_predictions"],
                        out / "plots" / f"{label}-{name}.png",
                        title=f"{label}, {name} (test)",
                    )
    print(report)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'plots'}/")
    return results


@releasing_run_folders
@keeps_caller_state
def run_nifti(
    config: NiftiConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """k-fold cross-validation of ``config.losses`` with SFCN on the volumes of a manifest."""
    config = replace(config)  # coerced and checked again: settings may have been set after it was built
    config, mode_change = _with_wandb_mode(config, resume=resume and not overwrite)
    from sodeep.brainage.cross_validation import cross_validate, results_to_continue, unfinished_runs
    from sodeep.brainage.csv_files import describe_left_out
    from sodeep.brainage.finetuning import open_fine_tuning
    from sodeep.brainage.interruption import SignalStop
    from sodeep.brainage.losses import check_batch_size
    from sodeep.brainage.models import SFCN, check_grid_fits
    from sodeep.brainage.splits import check_split
    from sodeep.brainage.volumes import load_cohort, read_manifest
    from sodeep.files import atomic_write
    from sodeep.run_folder import (
        RUN_RECORD,
        RunInterrupted,
        check_no_input_inside,
        drop_previous_run,
        holds_files_besides_its_lock,
        restore_a_killed_replacement,
        set_aside_previous_run,
        start_run_folder,
    )
    from sodeep.runs import release_process_group

    leader = _is_leader(config)
    check_batch_size(config.losses, config.batch_size)
    rows, problems = read_manifest(config.manifest)  # a missing or malformed manifest stops here
    name = str(config.manifest)  # as the reader's messages name it
    left_out = [describe_left_out(name, problems, len(rows) + len(problems), verb="left out")] if problems else []
    _check_cohort_size(name, len(rows), config.folds, left_out, unread=True)
    shape = tuple(config.shape)
    check_grid_fits(shape, config.channels)
    network = sfcn_network(config)
    training = volume_training(
        config, extra={"model": "sfcn", "network": network, "shape": list(shape), "voxel_size": config.voxel_size}
    )
    data = {"manifest": _resolved(config.manifest), "manifest_sha256": file_digest(Path(config.manifest))}
    fine_tuning, start = open_fine_tuning(config, "nifti", data, folds=config.folds, model=SFCN(**network))
    out, record, previous_run = Path(config.out), None, None
    if leader:
        restore_a_killed_replacement(out)
    # A new run whose cohort is refused once its volumes are read leaves no run behind, and the run
    # it replaces (--overwrite) stays until the cohort is accepted.
    new_run = not resume and not holds_files_besides_its_lock(out)
    existed = out.is_dir()
    if leader:
        if overwrite:  # the scans the manifest lists are read after the folder's run is set aside
            check_no_input_inside(out, {"manifest": [str(row.path) for row in rows]}, role="a volume listed in")
        out, record = claim_folder("nifti", config, data | start, resume=resume, overwrite=overwrite)
        # The cohort (and so the results' settings) is known once the volumes are read, into the
        # folder's cache: results and checkpoints are checked now, their settings once it is read.
        if not overwrite:
            unfinished_runs(out, None, config.losses, config.seeds, config.folds)
        previous_run = set_aside_previous_run(out, overwrite and not new_run)
        # The record of the run resumed, as it was: its results' settings are checked only once
        # the volumes are read, and a resume refused then leaves the folder's record as it found it.
        kept_record = (out / RUN_RECORD).read_bytes() if resume and (out / RUN_RECORD).is_file() else None
        start_run_folder(out, record, overwrite=False)
        _say_started(fine_tuning, training)
    results_checked = False

    def on_checked(pending: int) -> None:
        nonlocal results_checked
        results_checked = True
        _say_resumed(
            out,
            leader and resume and not overwrite,
            len(config.losses) * len(config.seeds) * config.folds,
            pending,
            mode_change,
        )

    with SignalStop(resume=resume_from_python("nifti")) as stop:
        stop.where = "the volume cache"
        try:
            cohort = load_cohort(
                config.manifest,
                config.cache or out / "cache",
                shape=shape,
                voxel_size=config.voxel_size,
                progress=progress and leader,
            )
            left_out = cohort.notes(name)  # now with the files that could not be read
            _check_cohort_size(name, len(cohort.ages), config.folds, left_out)
            with _named_by(name):
                check_split(
                    cohort.ages.numpy(),
                    cohort.sites,
                    split="stratified",
                    folds=config.folds,
                    seeds=config.seeds,
                    validation_fraction=training.validation_fraction,
                )
        except (ValueError, RunInterrupted) as refused:
            if previous_run is not None:
                _put_back_previous_run(out, previous_run, refused)
            elif leader and new_run and isinstance(refused, ValueError):
                _leave_as_found(out, existed)
            raise
        except BaseException as failed:  # out of memory, a full disk: the previous run comes back too
            if previous_run is not None:
                _put_back_previous_run(out, previous_run, failed)
            raise
        if previous_run is not None:
            drop_previous_run(previous_run)
        if leader:
            _notes([*left_out, *cohort.remarks(name)])
            print(
                f"{plural(len(cohort.ages), 'subject')}, {plural(len(cohort.problems), 'row')} left out; grid {shape} at "
                f"{config.voxel_size} mm"
            )
        description = {
            "grid": list(shape),
            "volume_files_sha256": cohort.files_digest(),
            "skipped_rows": [{"line": line, "reason": reason} for line, reason in cohort.problems],
        }
        try:  # the folder's results against the cohort's settings, before a W&B run starts
            results_to_continue(
                out, len(cohort.ages), config.losses, config.seeds, config.folds, training, description,
                fine_tuning=fine_tuning,
            )  # fmt: skip
        except ValueError:
            if leader and kept_record is not None:
                atomic_write(out / RUN_RECORD, lambda stream: stream.write(kept_record))
            raise
        with wandb_run(config.wandb if leader else "disabled", out, "nifti", record, stop) as run:
            try:
                results = cross_validate(
                    cohort.ages.numpy(),
                    cohort.sites,
                    config.losses,
                    make_inputs=lambda fitting: lambda rows: cohort.volumes[rows],  # z-scored per subject
                    make_model=lambda fitting_ages: SFCN(
                        age_offset=float(fitting_ages.mean()), age_scale=float(fitting_ages.std()), **network
                    ),
                    out=out,
                    folds=config.folds,
                    seeds=config.seeds,
                    config=training,
                    description=description,
                    fine_tuning=fine_tuning,
                    progress=progress and leader,
                    on_run=run_logger(run),
                    stop=stop,
                    trainer_options=config.trainer_options(),
                    on_checked=on_checked,
                )
            except ValueError:
                if leader and kept_record is not None and not results_checked:
                    atomic_write(out / RUN_RECORD, lambda stream: stream.write(kept_record))
                raise
            finally:
                release_process_group()  # the last training run has ended: every process still runs
            if leader:
                stop.where = "the report"
                title = f"Brain age from {Path(config.manifest).name}"
                subjects = [str(path.resolve()) for path in cohort.paths]  # wherever the command runs
                report_cross_validation(results, cohort.ages.numpy(), subjects, out, title, run)
    return results


def _put_back_previous_run(out: Path, previous_run: Path, error: BaseException) -> None:
    """:func:`sodeep.run_folder.put_back_previous_run`, after which an interrupt has saved
    nothing to resume: ``KeyboardInterrupt``."""
    from sodeep.run_folder import RunInterrupted, put_back_previous_run

    put_back_previous_run(out, previous_run)
    if isinstance(error, RunInterrupted):
        raise KeyboardInterrupt from None


def _leave_as_found(out: Path, existed: bool) -> None:
    """Undo a new run's start in ``out``: remove the folder if this command made it, else
    everything in it but its lock (which the command releases on its way out)."""
    from sodeep.run_folder import RUN_LOCK, empty_folder

    if existed:
        empty_folder(out, keep=(RUN_LOCK,))
    else:
        shutil.rmtree(out, ignore_errors=True)


def _is_leader(config: CommandConfig) -> bool:
    """Whether this process is rank 0 of those ``config`` trains with, the one that checks and
    writes the run folder; a setting Lightning refuses is a ``ValueError`` before anything is written."""
    from sodeep.brainage.training import process_rank
    from sodeep.runs import quiet_lightning

    quiet_lightning()
    return process_rank(**config.trainer_options()) == 0


@contextmanager
def _named_by(source: str) -> Iterator[None]:
    """A ``ValueError`` raised inside, as one line that starts with the file ``source``."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def _check_cohort_size(source: str, subjects: int, folds: int, left_out: list[str], *, unread: bool = False) -> None:
    """:func:`~sodeep.brainage.splits.check_cross_validation_size` for the subjects of the file
    ``source``, its one line naming the rows left out (``left_out``, the lines saying so), which
    may be why the cohort is too small.  ``unread``: the subjects are volumes found on disk and
    not read yet (some may not be usable), so the line says so."""
    from sodeep.brainage.splits import check_cross_validation_size

    if subjects == 0 and left_out:
        raise ValueError("; ".join([*left_out, "no subject is left to train on"]))
    if subjects == 0:
        raise ValueError(f"{source} has no rows below its header: add one row per subject")
    try:
        check_cross_validation_size(subjects, folds)
    except ValueError as error:
        counted = " (volumes found on disk, not yet read: some may not be usable)" if unread else ""
        raise ValueError("; ".join([f"{source}: {error}{counted}", *left_out])) from None


def claim_folder(
    command: str, config: CommandConfig, data: dict[str, Any], *, resume: bool, overwrite: bool, finished: bool = False
) -> tuple[Path, dict[str, Any]]:
    """``config.out`` and the record of the run ``sodeep brainage <command>`` may start there
    (:func:`sodeep.run_folder.claim_run_folder`): the config's settings, with ``data`` (resolved
    paths and digests of data files) over them.  ``finished``: the folder holds every run asked for."""
    from sodeep.run_folder import claim_run_folder

    out = Path(config.out)
    settings = asdict(config) | data
    record = claim_run_folder(
        out,
        f"brainage {command}",
        settings,
        resume=resume,
        overwrite=overwrite,
        ignored=NOT_CONFIGURATION,
        finished=finished,
    )
    return out, record


def _holds_every_run(out: Path, settings: dict[str, Any], presets: Any, seeds: Any, folds: int) -> bool:
    """Whether ``out``'s results hold every ``(seed, fold, preset)`` run asked for (not where they
    cannot be read or were made with other settings: the folder's claim says why)."""
    from sodeep.brainage.cross_validation import RESULTS_FILE, unfinished_runs

    if not (out / RESULTS_FILE).is_file():
        return False
    try:
        return not unfinished_runs(out, settings, presets, seeds, folds)[1]
    except ValueError:
        return False


def _resolved(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def _notes(lines: list[str]) -> None:
    """What a reader should know about the data (rows skipped, ids repeated): one line each, on stderr."""
    for line in lines:
        print(advice_spelling.get()(line), file=sys.stderr)


def _say_started(fine_tuning: Any, training: TrainingConfig) -> None:
    if fine_tuning is not None:
        print(fine_tuning.describe(training.max_epochs, training.learning_rate))


def resume_from_python(command: str) -> str:
    """How a Python caller of ``run_<command>`` goes on after an interruption."""
    return f"run_{command}(config, resume=True) goes on from there"


def _say_resumed(out: Path, resumed: bool, planned: int, pending: int, mode_change: str | None = None) -> None:
    if resumed:
        finished = planned - pending
        print(
            f"{out}: resuming; {finished} of the {planned} runs asked for {'is' if finished == 1 else 'are'} finished, "
            f"{pending} to train"
        )
        if mode_change is not None:
            print(mode_change, file=sys.stderr)


def _with_wandb_mode(config: CommandConfig, *, resume: bool) -> tuple[CommandConfig, str | None]:
    """``config`` with the W&B mode its run takes (:func:`sodeep.config.run_wandb_mode`), after
    the check that an online run has a login, and the line that a resume whose mode changes prints
    (:func:`sodeep.config.wandb_mode_change`), or ``None``."""
    from sodeep.config import run_wandb_mode, wandb_mode_change
    from sodeep.wandb_setup import check_wandb_login

    mode, chosen_by = run_wandb_mode(config.wandb, config.out, resume=resume)
    check_wandb_login(mode, chosen_by=chosen_by)
    change = wandb_mode_change(config.out, mode, chosen_by) if resume else None
    return replace(config, wandb=mode), change


@contextmanager
def wandb_run(mode: str, out: Path, command: str, record: dict[str, Any], stop: Any) -> Iterator[Any]:
    """The folder's W&B run (``None`` when disabled): the id in ``run.json``, so that a resumed
    command continues the same run; offline by default (nothing is sent).  Finished on exit."""
    if mode == "disabled":
        yield None
        return
    from sodeep.wandb_setup import wandb_environment, wandb_identity

    # Entered once the block has ended well, left last: its run finishing and W&B's service
    # shutting down (the environment's exit) are the command's closing.
    closing = ExitStack()
    with closing, wandb_environment(mode, out):
        import wandb

        run = None
        try:
            # W&B starts a service process: let it start whole.  A stop held back meanwhile is
            # raised at the block's end, and the run is finished then too.
            with stop.deferred():
                run = wandb.init(
                    **wandb_identity(f"brainage-{command}-{out.name}"),
                    dir=str(out),
                    mode=mode,
                    config=record["config"],
                    id=record["run_id"],
                    resume="allow",
                )
            yield run
            closing.enter_context(stop.closing())  # after the report, a first stop signal ends it as finished
        finally:
            if run is not None:
                run.finish()


def sfcn_network(config: SyntheticConfig | NiftiConfig) -> dict[str, Any]:
    """:class:`~sodeep.brainage.models.SFCN` keyword arguments of a config (JSON-able; unset
    widths are left to SFCN's defaults)."""
    sizes = (("channels", config.channels), ("head_channels", config.head_channels))
    return {key: value for key, value in sizes if value is not None} | {
        "pool_before_norm": config.block_order == "pool-norm",
        "pool_every_block": config.pooled_blocks == "all",
    }


def run_logger(run: Any) -> Callable[[str, dict[str, Any]], None]:
    """``(preset, run record) -> None`` logging the record's numbers to W&B as ``preset/run/key``
    (no-op without a run); the means over the runs go in the summary as ``preset/key``
    (:func:`summarize_in_wandb`), beside the last run's values."""

    def log(name: str, record: dict[str, Any]) -> None:
        if run is not None:
            run.log({f"{name}/run/{key}": value for key, value in record.items() if isinstance(value, (int, float))})

    return log


def summarize_in_wandb(run: Any, means: dict[str, dict[str, float]]) -> None:
    """Put each preset's means (``means[preset][metric]``) in the W&B run's summary as
    ``preset/metric``, and as ``metric`` too where there is one preset, as a sweep trial's
    ``summary.json`` names them (an online W&B sweep reads its ``metric.name`` there)."""
    if run is None:
        return
    for preset, values in means.items():
        run.summary.update({f"{preset}/{metric}": value for metric, value in values.items()})
    if len(means) == 1:
        run.summary.update(next(iter(means.values())))


def preset_means(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{preset: {metric: mean over its runs}}`` of a command's results: the cross-validation
    summaries' means, or (``synthetic``) the means over the seeds of each run's figures, its
    cascade presets as ``cascade PRESET``."""
    means = {}
    for group, prefix in (("presets", ""), ("cascade", "cascade ")):
        for name, entry in (results or {}).get(group, {}).items():
            if "summary" in entry:
                means[prefix + name] = {
                    metric: value["mean"]
                    for metric, value in entry["summary"].items()
                    if isinstance(value, dict) and isinstance(value.get("mean"), (int, float))
                }
            elif entry.get("runs"):
                means[prefix + name] = run_means(entry["runs"])
    return means


#: Numbers of a run's record that describe the training, not its results.
NOT_RESULTS = ("seed", "fold", "epochs", "train_minutes")


def run_means(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over ``runs`` of each result their records give (not :data:`NOT_RESULTS`), over
    the runs where it is finite."""
    keys = dict.fromkeys(
        key
        for run in runs
        for key, value in run.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in NOT_RESULTS
    )
    means = {}
    for key in keys:
        values = [run[key] for run in runs if isinstance(run.get(key), (int, float)) and math.isfinite(run[key])]
        if values:
            means[key] = sum(values) / len(values)
    return means


def report_cross_validation(
    results: dict[str, Any], ages: Any, subjects: list[str], out: Path, title: str, run: Any
) -> None:
    """Write ``results.md``, ``predictions.csv`` (every run's test predictions by ``subjects``,
    the subject of each row) and one plot per preset (out-of-fold predictions of the first seed)
    from every run in ``results``, put the summaries in the W&B run and print the report."""
    from sodeep.brainage.cv_report import format_report, out_of_fold
    from sodeep.brainage.plots import plot_predictions
    from sodeep.files import atomic_write_text

    report = format_report(results, title)
    atomic_write_text(out / "results.md", report)
    atomic_write_text(out / PREDICTIONS_FILE, predictions_table(results, np.asarray(ages), subjects))
    for name, entry in results["presets"].items():
        first_seed = min(r["seed"] for r in entry["runs"])
        first_runs = [r for r in entry["runs"] if r["seed"] == first_seed]
        rows, predictions = out_of_fold(entry["runs"], first_seed)
        # Each subject corrected by its own fold's fit, as the corrected metrics are (the same
        # order of runs as out_of_fold's).
        bias = tuple(
            np.concatenate([np.full(len(r["test_rows"]), r[key], dtype=float) for r in first_runs])
            for key in ("age_bias_slope", "age_bias_intercept")
        )
        plot_predictions(
            np.asarray(ages)[rows],
            predictions,
            out / "plots" / f"{name}.png",
            title=f"{name} (out-of-fold, seed {first_seed})",
            bias=bias,
        )
    summarize_in_wandb(run, preset_means(results))
    print(report)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / PREDICTIONS_FILE} and {out / 'plots'}/")


#: The test predictions of every run of a folder, one row per (preset, seed, subject).
PREDICTIONS_FILE = "predictions.csv"


def predictions_table(results: dict[str, Any], ages: np.ndarray, subjects: list[str]) -> str:
    """CSV text with columns ``preset, seed, fold, subject, age, predicted_age``: each finished
    run's test predictions, ``subject`` the id (tabular) or volume path (nifti) of the row.

    Example:
        >>> run = {"seed": 0, "fold": 1, "test_rows": [1], "test_predictions": [41.5]}
        >>> print(predictions_table({"presets": {"l1": {"runs": [run]}}}, np.array([30.0, 40.0]), ["a", "b"]), end="")
        preset,seed,fold,subject,age,predicted_age
        l1,0,1,b,40,41.5
    """
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["preset", "seed", "fold", "subject", "age", "predicted_age"])
    for preset, entry in results["presets"].items():
        for run in sorted(entry["runs"], key=lambda run: (run["seed"], run["fold"])):
            for row, predicted in zip(run["test_rows"], run["test_predictions"]):
                age = np.format_float_positional(np.float32(ages[row]), trim="-")
                writer.writerow([preset, run["seed"], run["fold"], subjects[row], age, predicted])
    return text.getvalue()
