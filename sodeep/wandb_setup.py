"""W&B set-up shared by every training command: local by default (nothing is sent, no account
is needed), its files under the run folder, and a login check before an online run.

It loads neither Lightning nor, unless a run goes online, W&B, so a command can refuse a missing
login before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sodeep.config import WANDB_MODES


def configure_wandb_environment(mode: str, out: Path) -> None:
    """Keep W&B local unless asked otherwise (nothing is sent, no account is needed), with its
    files (runs, cache; settings too, unless the run is online) under the run folder's ``out/wandb/``.

    W&B puts its runs in a ``wandb/`` folder under the directory it is given: pass it ``out``
    (``wandb.init(dir=out)``), and the runs land in ``out/wandb/offline-run-*``, its cache,
    settings and service logs in ``out/wandb/cache/``.  An online run reads the user's own W&B
    settings (``WANDB_CONFIG_DIR``, ``~/.config/wandb``): they say which server to send it to."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
    os.environ["WANDB_MODE"] = mode  # the mode the run takes (run_wandb_mode), for W&B and Lightning alike
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    cache = out / "wandb" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    # Set for every run, not only the first of a process: each run keeps its files in its own folder.
    os.environ["WANDB_DIR"] = str(out)
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR") + (() if mode == "online" else ("WANDB_CONFIG_DIR",)):
        os.environ[variable] = str(cache)


#: The variables :func:`configure_wandb_environment` sets.
WANDB_VARIABLES = (
    "WANDB_MODE",
    "WANDB_ERROR_REPORTING",
    "WANDB_SILENT",
    "WANDB_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_DATA_DIR",
)


@contextlib.contextmanager
def wandb_environment(mode: str, out: Path) -> Iterator[None]:
    """:func:`configure_wandb_environment` for the block; on exit the variables are as they were,
    so W&B runs the caller starts afterwards do not land in the run folder.  A W&B run the block
    started and left open (a Ctrl-C inside ``wandb.init``) is finished, so that the process's next
    run is not refused for it."""
    before = {name: os.environ.get(name) for name in WANDB_VARIABLES}
    open_before = getattr(sys.modules.get("wandb"), "run", None)
    configure_wandb_environment(mode, out)
    try:
        yield
    finally:
        try:
            wandb = sys.modules.get("wandb")
            if wandb is not None and wandb.run is not None and wandb.run is not open_before:
                with contextlib.suppress(Exception):  # a run cut short as it started may not finish cleanly
                    wandb.run.finish()
            if wandb is not None and wandb.run is None:
                # W&B keeps the settings it read when it first ran in this process: without this, its
                # next run in the caller's code would read them again and land in the run folder.
                wandb.teardown()
        finally:  # a Ctrl-C in W&B's shutdown too
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


#: The W&B project of sodeep's runs where ``WANDB_PROJECT`` names none.
WANDB_PROJECT = "sodeep"


def wandb_identity(name: str) -> dict[str, str]:
    """``project`` and ``name`` of a W&B run: those ``WANDB_PROJECT`` and ``WANDB_NAME`` give (a
    sweep sets them for its trials), else :data:`WANDB_PROJECT` and ``name``."""
    return {"project": os.environ.get("WANDB_PROJECT") or WANDB_PROJECT, "name": os.environ.get("WANDB_NAME") or name}


def check_wandb_login_before_a_run(
    setting: str | None, out: str | os.PathLike, *, resume: bool, config_file: str | os.PathLike | None = None
) -> None:
    """:func:`check_wandb_login` for a command's run into ``out`` before its folder is touched, for
    the mode the ``setting`` chooses (:func:`sodeep.config.run_wandb_mode`); ``config_file``: the
    YAML file that gave the setting (no flag did), which a refusal names."""
    from sodeep.config import run_wandb_mode

    mode, chosen_by = run_wandb_mode(setting, out, resume=resume)
    if config_file is not None and setting is not None:
        chosen_by = f"wandb: {setting} in {config_file}"
    check_wandb_login(mode, chosen_by=chosen_by)


def check_wandb_login(
    mode: str, flag: str = "wandb", *, logs_in_this_process: bool = True, chosen_by: str | None = None
) -> None:
    """For an online W&B run (``mode``, as :func:`sodeep.config.run_wandb_mode` chose it), a
    one-line ``ValueError`` unless W&B has usable credentials (``wandb login`` or
    ``WANDB_API_KEY``), raised before a run folder is touched.  Nothing is sent: the key is not
    verified.  ``flag``: the setting's name as the caller gives it, a keyword argument or a
    ``--flag``.  ``chosen_by``: what chose the mode where no setting did (``WANDB_MODE=run``, a
    resumed run's ``run.json``), which the message names.  Where ``logs_in_this_process`` (this
    process logs; a sweep, whose trials log, passes ``False``), a run that logs to W&B is also
    refused while the process has a W&B run open, which Lightning would log into and finish."""
    open_run = getattr(sys.modules.get("wandb"), "run", None)
    if (
        open_run is not None
        and not getattr(open_run, "disabled", False)
        and mode != "disabled"
        and logs_in_this_process
    ):
        # Lightning would log into it, and finish it at the end.
        disabled = f"{flag} disabled" if flag.startswith("--") else f"{flag}='disabled' in the config"
        raise ValueError(
            f"a W&B run of this process is open (wandb.run, id {open_run.id}), which the run would take over: "
            f"finish it first (wandb.finish()), or log without W&B ({disabled}: a CSV log alone)"
        )
    if mode != "online":
        return
    import wandb

    # The setting as the caller gives it: a keyword argument (wandb='online') or a flag (--wandb online).
    online, offline = (
        f"{flag} {value}" if flag.startswith("--") else f"{flag}={value!r}" for value in ("online", "offline")
    )
    # A Python keyword as wandb= (which the command line spells --wandb).
    setting = flag if flag.startswith("--") else f"{flag}="
    asked = online if chosen_by is None else f"{chosen_by} (with no {setting} setting) asks for an online run"
    saved = {name: os.environ.get(name) for name in ("WANDB_CACHE_DIR", "WANDB_SILENT", "WANDB_MODE")}
    try:
        # W&B's debug log of the check goes to a scratch cache, not the user's; the user's settings
        # (their WANDB_CONFIG_DIR: which server, hence which login) are read as they are.
        with tempfile.TemporaryDirectory() as scratch:
            os.environ.update(WANDB_CACHE_DIR=scratch, WANDB_SILENT="true", WANDB_MODE="online")
            wandb.login(verify=False)
    except wandb.errors.UsageError:
        raise ValueError(
            f"{asked}{'' if chosen_by is None else ', which'} needs a W&B login: run `wandb login` or set "
            f"WANDB_API_KEY, or log locally with {offline}"
        ) from None
    except wandb.errors.Error as error:  # a malformed key, say
        reason = " ".join(str(error).split())
        raise ValueError(f"{asked}: W&B refused its credentials ({reason}); or log locally with {offline}") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
