"""A trial's command line is what W&B's agent would run (wandb/sdk/launch/sweeps/utils.py)."""

import json

import yaml

from sodeep.sweeps.macros import build_command, flag_words, resolve_program, sweep_param_text

PARAMS = {"lr": 0.001, "augment": False, "fast": True, "sorter.softness": 0.5, "sorter": {"band": 8}, "name": "a b"}


def test_flag_words_write_values_with_str_as_wandb_does():
    words = flag_words(PARAMS)
    assert words["args"] == [
        "--lr=0.001",
        "--augment=False",
        "--fast=True",
        "--sorter.softness=0.5",
        "--sorter={'band': 8}",
        "--name=a b",
    ]
    assert words["args_no_hyphens"][0] == "lr=0.001"
    assert words["args_no_equals"][:4] == ["--lr", "0.001", "--augment", "False"]
    assert words["args_no_boolean_flags"][:3] == ["--lr=0.001", "--fast", "--sorter.softness=0.5"]
    assert words["args_append_hydra"][0] == "+lr=0.001" and words["args_override_hydra"][0] == "++lr=0.001"
    assert json.loads(words["args_json"][0]) == PARAMS


def test_build_command_replaces_whole_word_macros_and_envvars():
    command = build_command(
        ["${env}", "${interpreter}", "${program}", "-x", "--mode=${envvar:MODE}", "${args_json_file}", "${args}"],
        {"lr": 0.1},
        interpreter="/venv/bin/python",
        program="/work/train.py",
        args_json_file="/trial/args.json",
        environment={"MODE": "offline"},
    )
    assert command == [
        "/usr/bin/env",
        "/venv/bin/python",
        "/work/train.py",
        "-x",
        "--mode=offline",
        "/trial/args.json",
        "--lr=0.1",
    ]
    unset = build_command(
        ["--mode=${envvar:UNSET}"], {}, interpreter="p", program=None, args_json_file="a", environment={}
    )
    assert unset == ["--mode=UNSET"]  # W&B leaves the variable's name


def test_program_is_found_where_the_sweep_starts(tmp_path):
    (tmp_path / "train.py").write_text("")
    assert resolve_program("train.py", tmp_path) == str(tmp_path / "train.py")
    assert resolve_program("sodeep", tmp_path) == "sodeep"


def test_sweep_param_file_is_wandbs_config_format():
    loaded = yaml.safe_load(sweep_param_text({"lr": 0.1, "sorter": {"band": 8}}))
    assert loaded == {"wandb_version": 1, "lr": {"value": 0.1}, "sorter": {"value": {"band": 8}}}
