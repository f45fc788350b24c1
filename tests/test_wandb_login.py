"""An online W&B run without credentials is refused in one line, before anything is written."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import sys
from sodeep.runs import check_wandb_login
try:
    check_wandb_login(sys.argv[1], environment_decides=sys.argv[2] == "environment")
except ValueError as error:
    print("refused:", error)
else:
    print("accepted")
"""


def check(tmp_path, mode, decides="environment", **environment):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    variables = {key: value for key, value in os.environ.items() if key not in ("WANDB_MODE", "WANDB_API_KEY")}
    variables.update(HOME=str(home), **environment)
    shown = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, decides],
        env=variables,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    assert not [path for path in home.rglob("*") if "wandb" in path.name], "W&B wrote into the user's home"
    return shown


@pytest.mark.parametrize(
    ("decides", "environment"),
    [
        ("environment", {}),
        ("environment", {"WANDB_MODE": "run"}),  # W&B's other name for online
        ("sweep", {"WANDB_MODE": "offline"}),  # a sweep sets its trials' WANDB_MODE itself
    ],
)
def test_online_without_credentials_is_refused(tmp_path, decides, environment):
    shown = check(tmp_path, "online", decides, **environment)
    assert shown == (
        "refused: wandb='online' needs a W&B login: run `wandb login` or set WANDB_API_KEY, "
        "or log locally with wandb='offline'"
    )


def test_a_malformed_key_is_refused_in_one_line(tmp_path):
    shown = check(tmp_path, "online", WANDB_API_KEY="abc")
    assert shown.startswith("refused: wandb='online': W&B refused its credentials (") and "\n" not in shown


@pytest.mark.parametrize(
    ("mode", "environment"),
    [
        ("online", {"WANDB_API_KEY": "a" * 40}),
        ("online", {"WANDB_MODE": "offline"}),
        ("online", {"WANDB_MODE": "disabled"}),
        ("offline", {}),
        ("disabled", {}),
    ],
)
def test_credentials_or_a_local_mode_are_accepted(tmp_path, mode, environment):
    assert check(tmp_path, mode, **environment) == "accepted"


def test_pretrain_refuses_before_creating_the_folder(tmp_path):
    # A fresh process: W&B keeps credentials of earlier runs in the process that made them.
    out = tmp_path / "run"
    variables = {key: value for key, value in os.environ.items() if key not in ("WANDB_MODE", "WANDB_API_KEY")}
    variables["HOME"] = str(tmp_path)
    command = [sys.executable, "-m", "sodeep", "pretrain", "--steps", "2", "--wandb", "online", "--out", str(out)]
    result = subprocess.run(
        command, env=variables, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and not out.exists()
    assert result.stderr == (
        "sodeep pretrain: error: --wandb online needs a W&B login: run `wandb login` or set WANDB_API_KEY, "
        "or log locally with --wandb offline\n"
    )


def test_a_sweep_s_wandb_name_and_project_name_the_runs_of_its_trials(tmp_path, monkeypatch):
    """`sodeep sweep run` sets WANDB_NAME and WANDB_PROJECT for each trial; sodeep's commands keep them."""
    import contextlib
    from pathlib import Path

    import wandb

    from sodeep.brainage.commands import wandb_run
    from sodeep.runs import make_loggers

    for variable in (
        "WANDB_NAME",
        "WANDB_PROJECT",
        "WANDB_DIR",
        "WANDB_CACHE_DIR",
        "WANDB_CONFIG_DIR",
        "WANDB_DATA_DIR",
    ):
        monkeypatch.delenv(variable, raising=False)
    logger = make_loggers(tmp_path / "a", "offline", "pretrain", {})[-1]
    assert (logger._wandb_init["project"], logger._wandb_init["name"]) == ("sodeep", "pretrain")
    monkeypatch.setenv("WANDB_NAME", "grid-0003")
    monkeypatch.setenv("WANDB_PROJECT", "myproject")
    logger = make_loggers(tmp_path / "b", "offline", "pretrain", {})[-1]
    assert (logger._wandb_init["project"], logger._wandb_init["name"]) == ("myproject", "grid-0003")

    started = {}

    class Run:
        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **settings: started.update(settings) or Run())
    stop = type("Stop", (), {"deferred": staticmethod(contextlib.nullcontext)})()
    with wandb_run("offline", Path(tmp_path / "c"), "tabular", {"config": {}, "run_id": "x"}, stop):
        pass
    assert (started["project"], started["name"]) == ("myproject", "grid-0003")


def test_an_open_w_and_b_run_is_refused_unless_it_is_disabled(monkeypatch):
    import wandb

    from sodeep.runs import check_wandb_login

    class OpenRun:
        id, disabled = "abc123", False

    monkeypatch.setattr(wandb, "run", OpenRun())
    with pytest.raises(ValueError) as raised:
        check_wandb_login("offline")
    assert str(raised.value) == (
        "a W&B run of this process is open (wandb.run, id abc123), which the run would take over: finish it first "
        "(wandb.finish()), or log without W&B (wandb='disabled' in the config: a CSV log alone)"
    )
    with pytest.raises(ValueError, match=r"log without W&B \(--wandb disabled: a CSV log alone\)"):
        check_wandb_login("offline", "--wandb")
    check_wandb_login("disabled")  # this run does not use W&B
    OpenRun.disabled = True  # wandb.init(mode="disabled"): nothing to take over
    check_wandb_login("offline")
