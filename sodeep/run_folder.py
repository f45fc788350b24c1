"""An output folder belongs to one run: its command and settings, recorded in ``run.json`` when
the run starts.

:func:`claim_run_folder` decides, before anything is written, whether a command may use a
folder: a new or empty folder starts a run; a folder holding the same run needs ``resume`` (or
``overwrite``); a folder holding another run needs ``overwrite``, which clears it first.  A
folder holding files but no run record, and the working folder or one of its parents, are never
cleared.  A folder in use by a running command (of this process or another) is
refused, even with ``overwrite``.  Every refusal is a ``ValueError`` of one line that says what
to do.

:func:`start_run_folder` takes the folder's lock (an exclusive ``flock`` on ``run.lock``, where
the platform has one) for as long as the run lasts: the operating system releases it when the
process ends, however it ends, and :func:`releasing_run_folders` releases it when the command
returns.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "run"
    >>> record = claim_run_folder(out, "pretrain", {"steps": 10})
    >>> start_run_folder(out, record, overwrite=False).name
    'run.json'
    >>> claim_run_folder(out, "pretrain", {"steps": 20}, resume=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... holds a pretrain run with other settings (steps: 10 -> 20); ...
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # no flock (Windows): folders are not locked
    fcntl = None

from sodeep.files import atomic_write_json, make_folder, writable_file_problem

#: What a refusal of a folder says to do besides waiting, by default.
CHOOSE_ANOTHER_OUT = "choose another folder for out="
#: The record of the run a folder holds.
RUN_RECORD = "run.json"
#: The lock a running command holds on its folder (the file stays; the lock goes with the process).
RUN_LOCK = "run.lock"
#: Exit status after SIGINT or SIGTERM (128 + SIGINT, as shells report an interrupted command).
INTERRUPTED = 130


class RunInterrupted(Exception):
    """A run stopped after saving its checkpoint: on SIGINT or SIGTERM, or as a data worker ended.

    ``where`` says where: a step number (``"interrupted at step 40"``) or a description such as
    ``"l1, seed 0, fold 2, epoch 7"``; ``resume`` how a Python caller goes on, added to the
    message.  The console script prints :attr:`summary` with the command that resumes the run and
    exits with status 130.
    """

    def __init__(self, where: int | str, resume: str = "") -> None:
        self.where = where
        self.summary = f"interrupted at {'step ' if isinstance(where, int) else ''}{where}"
        super().__init__(f"{self.summary}; {resume}" if resume else self.summary)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM within :func:`stop_signals_as_interrupts`: a ``KeyboardInterrupt`` of its
    own class.  CPython's own exit code checks for a plain ``KeyboardInterrupt`` (by exact type) and
    then ends the process by sending itself SIGINT, whatever status the program chose: a signal
    that came while W&B was starting (its imports run code strings through ``exec``) ended
    ``sodeep pretrain`` that way in about one run in five, after its one-line message."""


#: Set once a run has saved its checkpoint on a stop signal (:func:`stop_saved`).
_STOP_SAVED = threading.Event()


def stop_saved() -> None:
    """Say that the run has saved its checkpoint on a stop signal and is closing down: until the
    block of :func:`stop_signals_as_interrupts` ends, further signals are let pass, where they
    would only cut the closing short (in a data loader's shutdown, with a traceback) and the run
    resumes from that checkpoint all the same."""
    _STOP_SAVED.set()


@contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM raise :class:`Interrupted` (a ``KeyboardInterrupt``),
    so the same clean stop (finished results kept, children stopped, one line) follows either;
    the previous handlers come back after.  Outside the main thread, where Python sets no
    handlers, nothing changes.  After :func:`stop_saved`, signals are let pass.  One that lands
    in a finalizer is raised at the block's end (:func:`interrupts_in_finalizers_kept`)."""

    def interrupt(number: int, frame: Any) -> None:
        if not _STOP_SAVED.is_set():
            raise Interrupted(signal.Signals(number).name)

    _STOP_SAVED.clear()
    try:
        with interrupts_in_finalizers_kept() as kept, _stop_signals_go_to(interrupt):
            yield
            if kept and not _STOP_SAVED.is_set():
                raise kept[0]
    finally:
        _STOP_SAVED.clear()


@contextmanager
def interrupts_in_finalizers_kept() -> Iterator[list[KeyboardInterrupt]]:
    """Within the block, a ``KeyboardInterrupt`` (Ctrl-C, or a stop signal as :class:`Interrupted`)
    raised in a finalizer of the main thread, such as a data loader's ``__del__`` or what runs in
    the parent as a data worker forks, where Python would print it and drop it, is added to the
    list the block gets, for the caller to raise where it can stop.  Other errors in finalizers,
    and every one outside the main thread (where no signal handler runs), are left to the hook
    that was there.  Outside the main thread the list stays empty."""
    kept: list[KeyboardInterrupt] = []
    if threading.current_thread() is not threading.main_thread():
        yield kept
        return
    previous_hook = sys.unraisablehook

    def keep(unraisable: Any) -> None:
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and isinstance(unraisable.exc_value, KeyboardInterrupt):
            kept.append(unraisable.exc_value)
        else:
            previous_hook(unraisable)

    sys.unraisablehook = keep
    try:
        yield kept
    finally:
        if sys.unraisablehook is keep:  # one set inside the block since stays
            sys.unraisablehook = previous_hook


@contextmanager
def _stop_signals_go_to(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM call ``handler``; the previous handlers come back
    after.  Outside the main thread, where Python sets no handlers, nothing changes."""
    try:
        previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Within the block (files that belong together being written), a first Ctrl-C or SIGTERM
    waits for its end and is raised there as :class:`Interrupted`; a second raises at once.
    Outside the main thread nothing changes."""
    received: list[str] = []

    def hold(number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if received:
            raise Interrupted(name)
        received.append(name)

    with _stop_signals_go_to(hold):
        yield
    if received:
        raise Interrupted(received[0])


#: What a change of a recorded digest means, where it is not a file's content.
DIGEST_MEANINGS = {
    "init_from_sha256": " (the source's digest: a file's content, or a run folder's command, settings and run id, "
    "which a new run in that folder changes)",
}


def describe_value(value: Any, limit: int = 40) -> str:
    """A setting's value in JSON, cut to ``limit`` characters: ``"3277bba6d1ea..."`` for a long
    string (its quotes kept), ``[1, 2, 3, ...`` for a long list."""
    text = json.dumps(value)
    if len(text) <= limit:
        return text
    return json.dumps(value[:12] + "...") if isinstance(value, str) else text[: limit - 3] + "..."


def describe_change(before: Any, after: Any) -> str:
    """``before -> after`` in :func:`describe_value`'s form; of two mappings, only the keys whose
    values differ (so that a change deep in a long setting shows).

    Example:
        >>> describe_change({"capacity": 16384, "softness": 0.1, "band": 8}, {"capacity": 16384, "softness": 0.1, "band": 4})
        '{"band": 8} -> {"band": 4}'
    """
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [key for key in {**before, **after} if before.get(key, _MISSING) != after.get(key, _MISSING)]
        before = {key: before[key] for key in keys if key in before}
        after = {key: after[key] for key in keys if key in after}
        return f"{describe_value(before, 160)} -> {describe_value(after, 160)}"  # every key that differs, as a rule
    return f"{describe_value(before)} -> {describe_value(after)}"


_MISSING = object()


def claim_run_folder(
    out: Path,
    command: str,
    config: dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    ignored: tuple[str, ...] = ("out", "wandb"),
    resume_problem: str | None = None,
    finished: bool = False,
) -> dict[str, Any]:
    """Check that ``command`` with ``config`` may run in ``out``; return the run's record.

    Args:
        out: the run folder.
        command: the command's name, e.g. ``"pretrain"``.
        config: the resolved, JSON-able settings of the run.
        resume: continue the run the folder holds (its settings must match).
        overwrite: clear the folder first, whatever run it holds (done by :func:`start_run_folder`);
            not with ``resume``.
        ignored: settings that may differ between a run and its resumption.
        resume_problem: why the run ``out`` holds cannot be resumed (e.g. a damaged checkpoint), as
            the command found it; the folder's run is then offered to be started again, not resumed.
        finished: the folder's run, as the command found it, has nothing left to do: it is not
            offered to be resumed.

    Returns:
        ``{"command", "config", "run_id"}``: the folder's own record when resuming (with what else
        the run recorded when it started), else a new one.
    """
    out = Path(out)
    if resume and overwrite:
        raise ValueError(
            f"resume and overwrite contradict each other: resume continues the run in {out}, overwrite clears it; "
            "choose one"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; {CHOOSE_ANOTHER_OUT}")
    around = enclosing_run_folder(out)
    if around is not None:
        raise ValueError(
            f"{out} is inside the run folder {around}, whose overwrite would delete it; {CHOOSE_ANOTHER_OUT} outside it"
        )
    record_path = out / RUN_RECORD
    problem = writable_file_problem(record_path)
    if problem:
        raise ValueError(f"{problem}; {CHOOSE_ANOTHER_OUT}")
    check_not_in_use(out)
    check_not_cut_short(out, overwrite, resume=resume)
    holds_files = holds_files_besides_its_lock(out)
    fresh = {"command": command, "config": config, "run_id": uuid.uuid4().hex[:16]}
    if holds_files and overwrite:
        check_not_the_working_folder(out, CHOOSE_ANOTHER_OUT)
        check_no_input_inside(out, config)
    # Never cleared (unless what is left of a clearing cut short): the files are not a run's.
    if holds_files and not record_path.is_file() and not (out / CLEARING).exists():
        raise ValueError(
            f"{out} holds files but no {RUN_RECORD} ({_first_names(files_besides_its_lock(out))}): not a sodeep "
            "run folder; choose a new or empty folder for out="
        )
    if overwrite or not holds_files:
        if resume:
            raise ValueError(f"resume=True: {out} holds no run to resume; run without resume=True to start one")
        return fresh
    clear = "run with overwrite=True instead of resume=True" if resume else "add overwrite=True"
    # overwrite=True would be refused where clearing the folder deletes the working folder: not offered.
    clearable = not _holds_the_working_folder(out)
    or_clear = f" or {clear} to clear it" if clearable else ""
    try:
        existing = json.loads(record_path.read_text(encoding="utf-8"))
        existing_command, existing_config = existing["command"], existing["config"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        start_again = f"{clear} to clear {out} and start again" if clearable else CHOOSE_ANOTHER_OUT
        raise ValueError(f"{record_path} is damaged; {start_again}") from None
    if existing_command != command:
        raise ValueError(f"{out} holds a {existing_command} run, not a {command} run; {CHOOSE_ANOTHER_OUT}{or_clear}")
    differing = differing_settings(existing_config, config, ignored)
    if differing:
        changes = ", ".join(
            f"{key}{DIGEST_MEANINGS.get(key, ' (the file content)' if key.endswith('_sha256') else '')}: "
            f"{describe_change(existing_config.get(key), config.get(key))}"
            for key in differing
        )
        raise ValueError(
            f"{out} holds a {command} run with other settings ({changes}); resume it with its own settings, "
            f"{CHOOSE_ANOTHER_OUT}{',' if clearable else ''}{or_clear}"
        )
    if resume_problem:
        start_again = f"{clear} to start it again" if clearable else f"{CHOOSE_ANOTHER_OUT} to start another"
        raise ValueError(f"{out} holds this run, but it cannot be resumed: {resume_problem}; {start_again}")
    if not resume and finished:
        start_again = "add overwrite=True to train it again" if clearable else f"{CHOOSE_ANOTHER_OUT} for another"
        raise ValueError(f"{out} already holds this run, finished: nothing to train; {start_again}")
    if not resume:
        raise ValueError(
            f"{out} already holds this run; add resume=True to continue it or "
            + ("overwrite=True to start again" if clearable else f"{CHOOSE_ANOTHER_OUT} to start another")
        )
    kept = {
        key: value for key, value in existing.items() if key not in ("command", "config", "run_id", "sodeep_version")
    }
    return {**kept, "command": command, "config": config, "run_id": existing.get("run_id") or fresh["run_id"]}


def differing_settings(recorded: dict[str, Any], config: dict[str, Any], ignored: tuple[str, ...] = ()) -> list[str]:
    """The keys, sorted, whose values differ between a run's ``recorded`` settings and ``config``
    (one missing counts as ``None``), those of ``ignored`` aside."""
    return sorted(
        key for key in set(recorded) | set(config) if key not in ignored and recorded.get(key) != config.get(key)
    )


def holds_a_run_record(folder: Path) -> bool:
    """Whether ``folder`` holds the ``run.json`` of a sodeep run (a command and its config)."""
    try:
        record = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "command" in record and "config" in record


#: Set to ``1`` in a command's environment (``sodeep sweep run`` does, for a trial it stopped):
#: continue the run its output folder holds, as ``--resume`` would, or start one where it holds none.
RESUME_STARTED_VARIABLE = "SODEEP_RESUME_STARTED"


def resumes_started_run(
    out: str | os.PathLike, overwrite: bool = False, holds_one: Callable[[Path], bool] | None = None
) -> bool:
    """Whether a command writing to ``out`` resumes the run there although ``--resume`` was not
    given: :data:`RESUME_STARTED_VARIABLE` is set, ``overwrite`` is not, and ``out`` holds a run
    (:func:`holds_a_run_record`, or ``holds_one`` for a command whose folder says so otherwise)."""
    holds_one = holds_a_run_record if holds_one is None else holds_one
    return os.environ.get(RESUME_STARTED_VARIABLE) == "1" and not overwrite and holds_one(Path(out))


def inside_a_run_folder(path: str | os.PathLike) -> str | None:
    """Why an output at ``path`` may not be written there, where it lies inside a run folder
    (:func:`enclosing_run_folder`) and would pass for the run's own files; ``None`` elsewhere."""
    run_folder = enclosing_run_folder(path)
    if run_folder is None:
        return None
    return (
        f"{path} is inside the run folder {run_folder}, whose files its command writes (and its overwrite=True deletes)"
    )


def check_output_outside_run_folders(path: str | os.PathLike, flag: str) -> None:
    """A one-line ``ValueError`` if the output file ``path`` (given as ``flag``) lies inside a run
    folder (:func:`inside_a_run_folder`)."""
    problem = inside_a_run_folder(path)
    if problem is not None:
        raise ValueError(f"{flag}: {problem}; choose a path outside it")


def enclosing_run_folder(path: str | os.PathLike) -> Path | None:
    """The nearest folder above ``path`` (a file or folder, not necessarily there yet), or above
    where it leads if it is a link, that holds a run (:func:`holds_a_run_record`), or ``None``:
    what is written there would pass for the run's own files, and its ``--overwrite`` would
    delete it."""
    given = Path(path).expanduser().absolute()
    if given.name == "..":  # the folder it names, not one inside the folder written before it
        given = Path(os.path.realpath(given))
    # Above the path as written, and above where it leads (a link into a run folder, or a link
    # to nowhere yet: realpath follows links as far as they go, and stops at a loop of them).
    above = [Path(os.path.realpath(given.parent)), Path(os.path.realpath(given)).parent]
    folders = dict.fromkeys(folder for where in above for folder in (where, *where.parents))
    return next((folder for folder in folders if holds_a_run_record(folder)), None)


#: Files a file manager or a notebook leaves in any folder it shows (macOS Finder, Windows
#: Explorer, Jupyter): a folder holding only these (and macOS's ``._name`` files) is empty to a run.
FILE_MANAGER_FILES = (".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints")


def is_file_manager_file(name: str) -> bool:
    """Whether a file ``name`` is one a file manager leaves: :data:`FILE_MANAGER_FILES` and macOS's
    ``._name`` files (the metadata of ``name`` on a non-Apple disk)."""
    return name in FILE_MANAGER_FILES or name.startswith("._")


def files_besides_its_lock(folder: Path) -> list[str]:
    """The names in ``folder`` (sorted; none if it does not exist) but its lock file and the files
    of :func:`is_file_manager_file`."""
    if not folder.is_dir():
        return []
    return sorted(
        path.name for path in folder.iterdir() if path.name != RUN_LOCK and not is_file_manager_file(path.name)
    )


def holds_files_besides_its_lock(folder: Path) -> bool:
    """Whether ``folder`` exists and holds anything but its lock file and file managers' files."""
    return bool(files_besides_its_lock(folder))


def check_not_the_working_folder(folder: Path, instead: str) -> None:
    """A ``ValueError`` (ending in ``instead``) if clearing ``folder`` would delete the working
    folder: it is the working folder or one of its parents."""
    if _holds_the_working_folder(folder):
        where = "is" if folder.resolve() == Path.cwd().resolve() else "holds"
        raise ValueError(
            f"clearing the folder would delete {folder.resolve()}, which {where} the working folder; {instead}"
        )


def check_no_input_inside(out: Path, config: dict[str, Any], *, role: str = "") -> None:
    """A ``ValueError`` if clearing ``out`` would delete a file or folder that the run reads: a
    setting of ``config`` (a string, or a list of strings) naming ``out`` itself or an existing path
    inside it, as written or where a link leads.  The settings a run writes (``out``, a ``cache``) aside.
    ``role``: what the paths are to the setting, where they are not its value (``"a volume listed in"``).
    A folder without a ``run.json`` is never cleared (:func:`claim_run_folder` refuses a folder of
    files that is no run), so nothing in it is looked for: moving an input out would not help."""
    folder = Path(out)
    if not (folder / RUN_RECORD).is_file():
        return
    for key, value in config.items():
        if key in WRITTEN_SETTINGS:
            continue
        for word in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(word, str) or not word.strip():
                continue
            try:
                path = Path(word).expanduser()
                if not (path.exists() or path.is_symlink()):
                    continue
                # As written, with "." and ".." taken away (a link inside the folder is deleted
                # itself), and where the links lead (their targets are).
                written, written_folder = (
                    Path(os.path.normpath(path.absolute())),
                    Path(os.path.normpath(folder.absolute())),
                )
                inside = [
                    found
                    for found, around in ((written, written_folder), (path.resolve(), folder.resolve()))
                    if found == around or around in found.parents
                ]
            except (OSError, ValueError, RuntimeError):  # not a path this system can look up
                continue
            if inside and inside[0] in (written_folder, folder.resolve()):
                raise ValueError(
                    f"{out} is what this run reads as {role + ' ' if role else ''}{key}=: clearing it would delete it; "
                    f"{CHOOSE_ANOTHER_OUT}"
                )
            if inside:
                shown = word if inside[0] == written else f"{inside[0]} (where {word} leads)"
                raise ValueError(
                    f"clearing {out} would delete {shown}, which this run reads as {role + ' ' if role else ''}{key}=; "
                    f"move it out of {out} "
                    f"first, or {CHOOSE_ANOTHER_OUT}"
                )


#: Settings that name what a run writes, not what it reads: clearing the folder may delete them.
WRITTEN_SETTINGS = ("out", "cache")


def _first_names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _holds_the_working_folder(folder: Path) -> bool:
    here, target = Path.cwd().resolve(), Path(folder).resolve()
    return target == here or target in here.parents


def start_run_folder(out: Path, record: dict[str, Any], *, overwrite: bool) -> Path:
    """Clear ``out`` if ``overwrite``, then write the run's record; returns the record's path.
    The folder's lock is held from the start (before the folder is cleared) to the end of the
    process or of the command decorated with :func:`releasing_run_folders`.

    Call it after every other check, so that a refused run leaves the folder as it was.
    """
    out = Path(out)
    hold_folder(out, clear=overwrite)
    from sodeep import __version__

    return atomic_write_json(out / RUN_RECORD, {**record, "sodeep_version": __version__}, indent=2)


#: Where a folder keeps the run it held while a command that replaces it checks its data
#: (:func:`set_aside`).
PREVIOUS_RUN = ".sodeep-previous-run"


#: Inside ``.sodeep-previous-run`` while its files move (:func:`set_aside`, :func:`put_back`): whatever
#: ``out`` holds besides then belongs to the previous run too.
MOVING = ".sodeep-moving"

#: Where :func:`set_aside` makes ``.sodeep-previous-run``, with :data:`MOVING` in it, before renaming it
#: into place: ``.sodeep-previous-run`` never exists without its marker while the moves have not begun.
STAGING = ".sodeep-previous-run.new"

#: What a replaced run is renamed to before it is deleted (:func:`drop_previous_run`): a
#: deletion cut short leaves this name, which is never put back over the new run.
REPLACED_RUN_PREFIX = ".sodeep-replaced-run-"


def set_aside(out: Path) -> Path:
    """Move everything in ``out`` but its lock into ``out/.sodeep-previous-run`` (renames, no copies) and
    return that folder: the run a replacing command keeps until it knows its own run can start.
    :func:`put_back` undoes it, also after a set-aside cut short; :func:`drop_previous_run`
    completes the replacement."""
    check_no_run_inside_in_use(out)
    aside, staging = out / PREVIOUS_RUN, out / STAGING
    if staging.exists() or staging.is_symlink():
        if not _is_a_leftover(staging):
            raise ValueError(f"{staging} is not sodeep's (it holds files of its own); move it out of {out}")
        shutil.rmtree(staging)  # a set-aside cut short before it began
    staging.mkdir()
    (staging / MOVING).touch()
    staging.rename(aside)
    for path in list(out.iterdir()):
        if path.name not in (RUN_LOCK, PREVIOUS_RUN):
            path.rename(aside / path.name)
    (aside / MOVING).unlink()
    return aside


def put_back(out: Path, aside: Path) -> None:
    """Replace what ``out`` holds (but its lock) with the run :func:`set_aside` kept in ``aside``.
    A move cut short (by a kill) leaves the previous run split between ``out`` and ``aside``, with
    :data:`MOVING` in ``aside``: then nothing in ``out`` is deleted, and the moving goes on.  An
    empty ``aside`` is what a put-back cut short at its very end leaves: it is removed, and
    ``out`` left as it is."""
    if not any(aside.iterdir()):
        aside.rmdir()
        return
    if not (aside / MOVING).exists():
        empty_folder(out, keep=(RUN_LOCK, aside.name))  # the replacing run's files
        (aside / MOVING).touch()
    for path in list(aside.iterdir()):
        if path.name != MOVING:
            path.rename(out / path.name)
    (aside / MOVING).unlink()
    aside.rmdir()


def drop_previous_run(aside: Path) -> None:
    """Delete the run :func:`set_aside` kept in ``aside``, now that the new run is under way: renamed
    first (:data:`REPLACED_RUN_PREFIX`), so that a deletion cut short or refused by the file
    system is never taken for a run to put back.  What cannot be deleted stays under that name,
    and a line on stderr says so."""
    if not aside.is_dir():
        return
    doomed = aside.with_name(f"{REPLACED_RUN_PREFIX}{uuid.uuid4().hex[:8]}")
    aside.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    if doomed.exists():
        print(
            f"note: part of the run replaced in {aside.parent} could not be deleted; it is in {doomed}: delete it by "
            "hand",
            file=sys.stderr,
        )


def restore_a_killed_replacement(out: Path, saved: Callable[[Path], bool] | None = None) -> None:
    """A replacement (``--overwrite``) killed before it was under way left the run it replaced in
    ``out/.sodeep-previous-run``: put that run back before anything else reads the folder (the
    replacement had saved nothing); or, where ``saved(out)`` says that the replacement had saved
    something to continue (a checkpoint) and the set-aside was complete, delete it.  A folder in
    use by a running command is refused.  Leftovers of a set-aside or a deletion cut short
    (:data:`STAGING`, :data:`REPLACED_RUN_PREFIX`) go."""
    aside = out / PREVIOUS_RUN
    if (aside.exists() or aside.is_symlink()) and not _is_set_aside(aside):
        # Putting it back would empty out and move its files in: only what set_aside made is.
        raise ValueError(
            f"{aside} is not a run that sodeep set aside (a link, a file, or a folder without its {RUN_RECORD}); "
            f"move it out of {out}"
        )
    if aside.is_dir():
        hold_folder(out)
        # While files move (the marker), out holds no replacement's files worth keeping.
        if saved is not None and not (aside / MOVING).exists() and any(aside.iterdir()) and saved(out):
            drop_previous_run(aside)
            print(
                f"note: {out}: the run an --overwrite replaced is deleted, its replacement had saved", file=sys.stderr
            )
        elif any(aside.iterdir()):
            put_back(out, aside)
            print(f"note: {out}: the run an --overwrite stopped early had set aside is back in place", file=sys.stderr)
        else:
            aside.rmdir()  # a put-back cut short at its very end
    leftovers = [path for path in out.iterdir() if _is_a_leftover(path)] if out.is_dir() else []
    if leftovers:
        hold_folder(out)  # not while a command stages its own set-aside there
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)


def _is_set_aside(aside: Path) -> bool:
    """Whether ``aside`` is what :func:`set_aside` makes: a folder (not a link) holding the run's
    record, or its marker while files move, or nothing (a put-back cut short at its very end)."""
    if aside.is_symlink() or not aside.is_dir():
        return False
    return not any(aside.iterdir()) or (aside / MOVING).exists() or (aside / RUN_RECORD).is_file()


def _is_a_leftover(path: Path) -> bool:
    """Whether ``path`` is what a set-aside or a deletion cut short left: a staging folder holding
    at most its marker, or a replaced run's folder under its exact name (8 hex digits)."""
    if path.is_symlink() or not path.is_dir():
        return False
    if path.name == STAGING:
        return {child.name for child in path.iterdir()} <= {MOVING}
    return re.fullmatch(re.escape(REPLACED_RUN_PREFIX) + "[0-9a-f]{8}", path.name) is not None


def set_aside_previous_run(out: Path, replacing: bool) -> Path | None:
    """Where the run that a command replaces waits (:func:`set_aside`) until the new run is under
    way: ``out/.sodeep-previous-run`` when ``replacing`` (``--overwrite`` of a folder that holds files),
    else ``None``.  The folder is held from here on; a stop while the files move puts them back."""
    if not replacing:
        return None
    hold_folder(out)
    try:
        with _sigterm_as_interrupt():
            return set_aside(out)
    except BaseException:
        put_back_previous_run(out, out / PREVIOUS_RUN)
        raise


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` where it would end the process at once
    (its default handler), so that the caller can undo what it started; other handlers stay."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(number: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(number).name)


def put_back_previous_run(out: Path, previous_run: Path) -> None:
    """The new run stopped before it was under way: ``out`` holds the run it was to replace again
    (where ``previous_run`` is still there), moved back with SIGINT and SIGTERM held off."""
    if not previous_run.is_dir():
        return
    try:
        held = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not ours to hold
        held = {}
    try:
        put_back(out, previous_run)
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)


#: What a folder holds while an overwrite empties it (:func:`hold_folder`): where a clearing was
#: cut short, what is left is no run's.
CLEARING = ".sodeep-clearing"


def check_not_cut_short(out: Path, overwrite: bool, *, resume: bool = False) -> None:
    """A ``ValueError`` if an overwrite that was clearing ``out`` was cut short (what it left is
    no run's), unless this command clears it (``overwrite``)."""
    if (Path(out) / CLEARING).exists() and not overwrite:
        clear = "run with overwrite=True instead of resume=True" if resume else "add overwrite=True"
        raise ValueError(
            f"{out} holds what is left of a run that an overwrite was clearing when it was cut short; {clear} "
            "to finish clearing it and start again"
        )


def check_not_being_cleared(
    folder: str | os.PathLike, *, error: type[Exception] = ValueError, prefix: str = ""
) -> None:
    """Raise ``error`` (its message after ``prefix``) where a command that reads ``folder``'s
    results must not: an overwrite is clearing it, or one was cut short (what is left is no run's)."""
    if (Path(folder) / CLEARING).exists():
        raise error(
            f"{prefix}{folder} is being cleared by a command that overwrites it, or holds what is left of a clearing "
            "that was cut short: its results are gone; read it once that command (run again with overwrite=True if it "
            "was cut short) has finished"
        )


def empty_folder(folder: Path, keep: tuple[str, ...]) -> None:
    """Delete everything in ``folder`` but the entries named in ``keep``."""
    for path in list(folder.iterdir()):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def hold_folder(out: Path, *, clear: bool = False, instead: str = CHOOSE_ANOTHER_OUT) -> None:
    """Create ``out`` and hold its lock (``out/run.lock``) until the process ends or
    :func:`releasing_run_folders` lets it go; with ``clear``, empty it first, under the lock.

    A folder held by another process or thread is a ``ValueError`` that names the holder and ends
    with ``instead``, what the user can do besides waiting."""
    if out.is_dir():
        _hold(out, instead)  # refuses a folder in use; held while the folder is cleared
    if clear and out.is_dir():
        check_no_run_inside_in_use(out, instead)
        # Emptied under its lock, not removed (a folder in use cannot be, and a link to a folder
        # stays a link), after a mark that it is being cleared: while it empties, another command
        # finds it in use, and a clearing cut short leaves the mark, which the next overwrite
        # clears and every other command refuses (check_not_cut_short).
        (out / CLEARING).touch()
        empty_folder(out, keep=(RUN_LOCK, CLEARING))
        (out / CLEARING).unlink()
    make_folder(out)
    _hold(out, instead)


#: Run folders whose lock this process holds: resolved path -> (the lock file's descriptor, the
#: thread whose command holds it).  Another thread of this process is refused the folder too.
_HELD: dict[Path, tuple[int, int]] = {}
_HELD_GUARD = threading.Lock()

_Function = TypeVar("_Function", bound=Callable[..., Any])


def releasing_run_folders(function: _Function) -> _Function:
    """Decorate a command: the run folders it starts are released when it returns or raises."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        held_before = _held_by_this_thread()
        try:
            return function(*args, **kwargs)
        finally:
            with _HELD_GUARD:
                for folder in _held_by_this_thread() - held_before:
                    os.close(_HELD.pop(folder)[0])

    return run  # type: ignore[return-value]


def _held_by_this_thread() -> set[Path]:
    return {folder for folder, (_, thread) in _HELD.items() if thread == threading.get_ident()}


def _refuse_to_other_threads(out: Path, instead: str = CHOOSE_ANOTHER_OUT) -> tuple[int, int] | None:
    """This process's hold on ``out``, if any; a ``ValueError`` if another thread has it."""
    held = _HELD.get(out.resolve())
    if held is not None and held[1] != threading.get_ident():
        raise ValueError(
            f"{out} is in use by a running sodeep command (this process, another thread); "
            f"wait for it to end or {instead}"
        )
    return held


def _hold(out: Path, instead: str = CHOOSE_ANOTHER_OUT) -> None:
    """Hold the folder's lock until the process ends or :func:`releasing_run_folders` lets it go."""
    if fcntl is None:
        return
    with _HELD_GUARD:
        held = _refuse_to_other_threads(out, instead)
        if held is not None:
            try:
                if os.fstat(held[0]).st_ino == os.stat(out / RUN_LOCK).st_ino:
                    return
            except FileNotFoundError:
                pass
        descriptor = _take(out, instead)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        if held is not None:
            os.close(held[0])
        _HELD[out.resolve()] = (descriptor, threading.get_ident())


def _take(out: Path, instead: str = CHOOSE_ANOTHER_OUT) -> int:
    """Lock ``out/run.lock`` (created if missing) and return its descriptor; a ``ValueError`` that
    names the holder if another process has it."""
    lock = out / RUN_LOCK
    try:  # the folder's own file: never through a link, which would write the process id elsewhere
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as error:
        if not lock.is_symlink():
            raise
        raise ValueError(f"{lock} is a link, not the folder's own lock file: delete the link") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ValueError(
            f"{out} is in use by a running sodeep command (process {holder}); wait for it to end, stop it, or {instead}"
        ) from None
    return descriptor


def check_no_run_inside_in_use(out: Path, instead: str = CHOOSE_ANOTHER_OUT) -> None:
    """A ``ValueError`` (ending in ``instead``) if a run folder inside ``out`` (at any depth) is
    in use by a running command: clearing ``out`` would delete that run's files under it."""
    problem = run_in_use(out, inside_only=True, instead=instead)
    if problem:
        raise ValueError(f"cannot clear {out}, which holds a run folder in use: {problem}")


def run_in_use(folder: Path, *, inside_only: bool = False, instead: str = CHOOSE_ANOTHER_OUT) -> str | None:
    """Why a run folder at or under ``folder`` (only under it, with ``inside_only``) is in use by a
    running command (the message that names it, ending in ``instead``), or ``None``."""
    for lock in Path(folder).rglob(RUN_LOCK):
        if not (inside_only and lock.parent == Path(folder)):
            try:
                check_not_in_use(lock.parent, instead)
            except ValueError as error:
                return str(error)
    return None


def check_not_in_use(out: Path, instead: str = CHOOSE_ANOTHER_OUT) -> None:
    """What holding ``out`` would refuse, without holding it: a ``ValueError`` (ending in
    ``instead``) if another process, or another thread of this one, holds the folder."""
    out = Path(out)
    if fcntl is None:
        return
    with _HELD_GUARD:
        if _refuse_to_other_threads(out, instead) is not None or not (out / RUN_LOCK).is_file():
            return
        os.close(_take(out, instead))
