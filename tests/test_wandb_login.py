"""An online W&B run without credentials is refused in one line, before anything is written."""

import os
import subprocess
import sys

import pytest

PROGRAM = """
import sys
from sodeep.wandb_setup import check_wandb_login
try:
    chosen_by = sys.argv[3] if len(sys.argv) > 3 else None
    check_wandb_login(sys.argv[1], logs_in_this_process=sys.argv[2] == "environment", chosen_by=chosen_by)
except ValueError as error:
    print("refused:", error)
else:
    print("accepted")
"""


def check(tmp_path, mode, decides="environment", chosen_by=None, **environment):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    variables = {key: value for key, value in os.environ.items() if key not in ("WANDB_MODE", "WANDB_API_KEY")}
    variables.update(HOME=str(home), **environment)
    shown = run_check(variables, mode, decides, *([chosen_by] if chosen_by else []))
    assert not [path for path in home.rglob("*") if "wandb" in path.name], "W&B wrote into the user's home"
    return shown


def run_check(variables, *arguments):
    """What :data:`PROGRAM` prints, run with ``arguments`` in the environment ``variables``."""
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, *arguments],
        env=variables,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()


@pytest.mark.parametrize(
    ("decides", "environment"),
    [
        ("environment", {}),
        ("environment", {"WANDB_MODE": "run"}),  # W&B's other name for online
        # The setting wins over the caller's WANDB_MODE, as W&B's own mode= does: the run is online.
        ("environment", {"WANDB_MODE": "offline"}),
        ("environment", {"WANDB_MODE": "disabled"}),
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
    # Where WANDB_MODE chose online, the message names it, in a sentence either way.
    shown = check(tmp_path, "online", chosen_by="WANDB_MODE=run", WANDB_API_KEY="abc")
    assert shown.startswith(
        "refused: WANDB_MODE=run (with no wandb= setting) asks for an online run: W&B refused its credentials ("
    )
    assert shown.endswith("; or log locally with wandb='offline'")
    shown = check(tmp_path, "online", chosen_by="WANDB_MODE=run")
    assert shown == (
        "refused: WANDB_MODE=run (with no wandb= setting) asks for an online run, which needs a W&B login: "
        "run `wandb login` or set WANDB_API_KEY, or log locally with wandb='offline'"
    )


@pytest.mark.parametrize(
    ("mode", "environment"),
    [
        ("online", {"WANDB_API_KEY": "a" * 40}),
        ("offline", {"WANDB_MODE": "online"}),
        ("offline", {}),
        ("disabled", {}),
    ],
)
def test_credentials_or_a_local_mode_are_accepted(tmp_path, mode, environment):
    assert check(tmp_path, mode, **environment) == "accepted"


@pytest.mark.parametrize(
    ("command", "environment"),
    [
        (["pretrain", "--steps", "2", "--wandb", "online"], {}),
        # The flag wins over the caller's WANDB_MODE: the run would be online, so it needs a login.
        (["brainage", "tabular", "--max-epochs", "1", "--wandb", "online"], {"WANDB_MODE": "offline"}),
        (["pretrain", "--steps", "2"], {"WANDB_MODE": "run"}),  # no flag: the environment's mode
        # No flag, a config file's setting: the file is named.
        (["pretrain", "--steps", "2", "--config", "{config}"], {"WANDB_MODE": "offline"}),
        (["brainage", "tabular", "--max-epochs", "1", "--config", "{config}"], {}),
    ],
)
def test_a_command_refuses_before_creating_the_folder(tmp_path, command, environment):
    # A fresh process: W&B keeps credentials of earlier runs in the process that made them.
    out = tmp_path / "run"
    config = tmp_path / "online.yaml"
    config.write_text("wandb: online\n")
    command = [str(config) if word == "{config}" else word for word in command]
    variables = {key: value for key, value in os.environ.items() if key not in ("WANDB_MODE", "WANDB_API_KEY")}
    variables.update(HOME=str(tmp_path), **environment)
    # `python -m sodeep`, telling at exit whether Lightning was loaded: the login is checked first.
    loaded = (
        "import atexit, runpy, sys; atexit.register(lambda: print('lightning' in sys.modules)); "
        "runpy.run_module('sodeep', run_name='__main__', alter_sys=True)"
    )
    command = [sys.executable, "-c", loaded, *command, "--out", str(out)]
    result = subprocess.run(
        command, env=variables, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and not out.exists()
    chose = (
        "--wandb online"
        if "--wandb" in command
        else f"wandb: online in {config} (with no --wandb setting) asks for an online run, which"
        if "--config" in command
        else "WANDB_MODE=run (with no --wandb setting) asks for an online run, which"
    )
    assert result.stderr.endswith(
        f" error: {chose} needs a W&B login: run `wandb login` or set WANDB_API_KEY, "
        "or log locally with --wandb offline\n"
    )
    assert result.stderr.count("\n") == 1
    assert result.stdout == "False\n"  # refused in a second or two, not after Lightning's load


def test_a_wandb_setting_wins_over_wandb_mode_which_decides_where_none_is_given(tmp_path, monkeypatch):
    """As a sweep's trials take its --wandb: through WANDB_MODE, unless their command names one."""
    import json

    from sodeep.brainage.config import TabularConfig
    from sodeep.config import PretrainConfig, run_wandb_mode
    from sodeep.pretraining import pretrain

    monkeypatch.setenv("WANDB_MODE", "disabled")
    settings = {"steps": 2, "batch_size": 4, "lengths": "5", "validation_every": 2}
    pretrain(PretrainConfig(**settings, out=str(tmp_path / "named"), wandb="offline"))
    assert list((tmp_path / "named" / "wandb").glob("offline-run-*")), "the offline run asked for was not written"
    pretrain(PretrainConfig(**settings, out=str(tmp_path / "unnamed")))
    assert not (tmp_path / "unnamed" / "wandb").exists()
    assert json.loads((tmp_path / "unnamed" / "run.json").read_text())["config"]["wandb"] == "disabled"
    assert os.environ["WANDB_MODE"] == "disabled"  # the caller's own, as it was
    for value, chosen in (("run", ("online", "WANDB_MODE=run")), ("DryRun", ("offline", "WANDB_MODE=DryRun"))):
        monkeypatch.setenv("WANDB_MODE", value)
        assert run_wandb_mode(TabularConfig().wandb, tmp_path / "new") == chosen
    monkeypatch.setenv("WANDB_MODE", "")
    assert run_wandb_mode(None, tmp_path / "new") == ("offline", None)
    # A typo of a mode is refused, not read as offline; a setting makes WANDB_MODE irrelevant.
    monkeypatch.setenv("WANDB_MODE", "onlne")
    with pytest.raises(
        ValueError,
        match=r"^WANDB_MODE=onlne is not a W&B mode that sodeep runs with \(online, run, offline, dryrun, disabled\)",
    ):
        run_wandb_mode(None, tmp_path / "new")
    assert run_wandb_mode("disabled", tmp_path / "new") == ("disabled", None)
    # A run that resumes with neither a setting nor WANDB_MODE keeps its own mode; WANDB_MODE
    # (a sweep's offline, say) keeps a run recorded online local.
    monkeypatch.delenv("WANDB_MODE")
    kept = run_wandb_mode(None, tmp_path / "unnamed", resume=True)
    assert kept == ("disabled", str(tmp_path / "unnamed" / "run.json"))
    assert run_wandb_mode(None, tmp_path / "unnamed") == ("offline", None)  # not resuming: the default
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_wandb_mode(None, tmp_path / "unnamed", resume=True) == ("offline", "WANDB_MODE=offline")
    assert run_wandb_mode("online", tmp_path / "unnamed", resume=True) == ("online", None)


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
    stop = type(
        "Stop", (), {"deferred": staticmethod(contextlib.nullcontext), "closing": staticmethod(contextlib.nullcontext)}
    )()
    with wandb_run("offline", Path(tmp_path / "c"), "tabular", {"config": {}, "run_id": "x"}, stop):
        pass
    assert (started["project"], started["name"]) == ("myproject", "grid-0003")


def test_an_open_w_and_b_run_is_refused_unless_it_is_disabled(monkeypatch):
    import wandb

    from sodeep.wandb_setup import check_wandb_login

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


def test_an_online_run_reads_the_users_own_wandb_settings(tmp_path, monkeypatch):
    """A login to the server that the user's W&B settings name (a self-hosted one) is a login;
    only W&B's local files (runs, cache) are kept under the run folder for an online run."""
    home = tmp_path / "home"
    (home / ".config" / "wandb").mkdir(parents=True)
    (home / ".config" / "wandb" / "settings").write_text("[default]\nbase_url = https://wandb.example.com\n")
    (home / ".netrc").write_text(f"machine wandb.example.com\n  login user\n  password {'a' * 40}\n")
    (home / ".netrc").chmod(0o600)
    variables = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    variables.update(HOME=str(home), WANDB_ERROR_REPORTING="false")
    assert run_check(variables, "online", "environment") == "accepted"

    from sodeep.wandb_setup import wandb_environment

    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    with wandb_environment("online", tmp_path / "run"):
        assert os.environ["WANDB_CONFIG_DIR"] == str(home / ".config" / "wandb")
        assert os.environ["WANDB_CACHE_DIR"] == str(tmp_path / "run" / "wandb" / "cache")
    with wandb_environment("offline", tmp_path / "run"):  # nothing of the user's is read or written
        assert os.environ["WANDB_CONFIG_DIR"] == str(tmp_path / "run" / "wandb" / "cache")


def test_a_w_and_b_server_out_of_reach_ends_in_one_line(tmp_path, monkeypatch, capsys):
    import wandb

    import sodeep.pretraining
    from sodeep.cli import main

    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError("Failed to get resume status for run abc: context deadline exceeded\nmore")

    monkeypatch.setattr(sodeep.pretraining, "pretrain", unreachable)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--steps", "2", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "sodeep pretrain: error: W&B's server did not take the run (Failed to get resume status for run abc: "
        "context deadline exceeded); check the network, the W&B login and the entity and project, or run it again "
        "with --wandb offline (`wandb sync` sends an offline run later)\n"
    )


def test_a_wandb_run_the_block_left_open_is_finished_and_the_callers_own_is_left_alone(tmp_path, monkeypatch):
    """A run that a Ctrl-C inside ``wandb.init`` leaves open (``wandb.run``) is finished, so that
    the process's later runs are not refused for it."""
    import sys
    import types

    from sodeep.wandb_setup import wandb_environment

    events = []

    class Run:
        def __init__(self, name):
            self.name = name

        def finish(self):
            events.append(f"finished {self.name}")
            fake.run = None

    fake = types.SimpleNamespace(run=None, teardown=lambda: events.append("teardown"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with pytest.raises(KeyboardInterrupt), wandb_environment("offline", tmp_path / "run"):
        fake.run = Run("started inside")
        raise KeyboardInterrupt
    assert events == ["finished started inside", "teardown"] and fake.run is None
    events.clear()
    fake.run = Run("the caller's")
    with wandb_environment("offline", tmp_path / "run"):
        pass
    assert events == [] and fake.run.name == "the caller's"
