"""Flags as W&B sweeps pass their parameters: spelled with underscores (``--name=value``), and
nested parameters written as Python dicts."""

import pytest

from sodeep.cli import build_parser, main


def test_a_flag_spelled_as_its_config_field_is_the_flag():
    parser = build_parser()
    hyphens = parser.parse_args(["brainage", "tabular", "--max-epochs=7", "--batch-size", "16"])
    underscores = parser.parse_args(["brainage", "tabular", "--max_epochs=7", "--batch_size", "16"])
    assert vars(underscores) == vars(hyphens)
    assert underscores.max_epochs == 7
    assert parser.parse_args(["pretrain", "--validation_every=5"]).validation_every == 5


def test_a_misspelled_flag_with_underscores_is_still_named(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["pretrain", "--max_length=5"])
    assert stopped.value.code == 2
    assert "sodeep pretrain: error: unrecognized arguments: --max_length=5" in capsys.readouterr().err


def test_words_after_a_double_dash_are_left_as_they_are():
    parser = build_parser()
    assert parser._spelled_for_argparse(["pretrain", "--", "--validation_every=5"])[-1] == "--validation_every=5"


def test_a_nested_sweep_parameter_as_w_and_b_writes_it_is_a_sorter_config():
    from sodeep.cli import pretrain_config

    written_by_the_agent = build_parser().parse_args(["pretrain", "--sorter={'softness': 0.5, 'band': 4}"])
    as_json = build_parser().parse_args(["pretrain", '--sorter={"softness": 0.5, "band": 4}'])
    assert (
        pretrain_config(written_by_the_agent).sorter == pretrain_config(as_json).sorter == {"softness": 0.5, "band": 4}
    )


def test_list_and_boolean_sweep_parameters_as_w_and_b_writes_them(capsys):
    parser = build_parser()
    written = ["brainage", "tabular", "--losses=['l1', 'mse']", "--seeds=[0, 1]", "--freeze_backbone=True"]
    spelled = ["brainage", "tabular", "--losses", "l1", "mse", "--seeds", "0", "1", "--freeze-backbone"]
    assert vars(parser.parse_args(written)) == vars(parser.parse_args(spelled))
    off = parser.parse_args(["brainage", "tabular", "--freeze-backbone=False", "--overwrite=False"])
    assert off.freeze_backbone is False and off.overwrite is False
    assert parser.parse_args(["pretrain", "--resume=True"]).resume is True
    # A flag of a fixed number of values, and a list whose number would lose its underscore.
    assert parser.parse_args(["brainage", "nifti", "--shape=[40, 48, 40]"]).shape == [40, 48, 40]
    with pytest.raises(SystemExit):
        main(["brainage", "tabular", "--seeds=[0, 1_0]"])
    assert "holds an underscore" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["brainage", "tabular", "--fold", "3"], "--fold (did you mean --folds?)"),
        (["pretrain", "--step", "3"], "--step (did you mean --steps?)"),
        (["bench", "--quic"], "--quic (did you mean --quick?)"),
    ],
)
def test_an_abbreviated_flag_is_refused_not_taken_for_the_full_one(argv, flag, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_flags_after_a_double_dash_are_said_to_be_past_the_options_not_misspelled(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "run", "--", "spec.yaml", "--root", "runs", "--dry-run"])
    error = capsys.readouterr().err
    assert "unrecognized arguments: --root (after --, which ends the options) runs --dry-run (after --" in error
    assert "did you mean" not in error


def test_a_quoted_tilde_is_the_home_folder_in_every_path_a_command_takes(tmp_path, monkeypatch):
    """As the shell would expand it unquoted: no folder named ~ in the working folder."""
    from sodeep.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    parser = build_parser()
    home = str(tmp_path)
    evaluate = parser.parse_args(["evaluate", "~/a.pt", "--out", "~/a.md", "--json", "~/a.json"])
    assert (evaluate.checkpoint, evaluate.out, evaluate.json) == (f"{home}/a.pt", f"{home}/a.md", f"{home}/a.json")
    export = parser.parse_args(["export", "~/run", "~/sorter.pt"])
    assert (export.checkpoint, export.out) == (f"{home}/run", f"{home}/sorter.pt")
    assert parser.parse_args(["pretrain", "--config", "~/p.yaml"]).config == f"{home}/p.yaml"
    assert parser.parse_args(["brainage", "tabular", "--config", "~/b.yaml"]).config == f"{home}/b.yaml"


@pytest.mark.parametrize(
    ("command", "message", "typed", "shown"),
    [
        # A folder or file the user named with a '=' stays as typed; the advice after it becomes flags.
        (
            ["sweep", "run", "r.yaml"],
            "seed=3/rnd holds this sweep drawn with seed=0, not 4; run it with seed=0 to continue it",
            ["sweep", "run", "r.yaml", "--root", "seed=3", "--seed", "4"],
            "seed=3/rnd holds this sweep drawn with --seed 0, not 4; run it with --seed 0 to continue it",
        ),
        (
            ["sweep", "run", "count=1.yaml"],
            "count=1.yaml: a random sweep needs run_cap (or count=)",
            ["sweep", "run", "count=1.yaml"],
            "count=1.yaml: a random sweep needs run_cap (or --count)",
        ),
        (
            ["sweep", "report", "over=1"],
            "over=1 holds no trial",
            ["sweep", "report", "over=1"],
            "over=1 holds no trial",
        ),
        # List items with commas, brackets and JSON become one shell word each.
        (
            ["sweep", "report", "S"],
            "baseline=['lr=a, b', 'seed=[0, 1]']: no setting has those values",
            [],
            "--baseline 'lr=a, b' 'seed=[0, 1]': no setting has those values",
        ),
        (["sweep", "report", "S"], "baseline=['lr=x]']: no", [], "--baseline 'lr=x]': no"),
        # A sweep parameter named like a flag, in a quoted example, is the user's, not the flag.
        (
            ["sweep", "report", "S"],
            """baseline=['over={a: 1}']: not a JSON object (e.g. 'over={"softness": 0.1}')""",
            [],
            """--baseline 'over={a: 1}': not a JSON object (e.g. 'over={"softness": 0.1}')""",
        ),
        (["pretrain"], "with seeds=[] nothing", [], "with seeds=[] nothing"),
    ],
)
def test_advice_in_python_words_becomes_the_commands_flags_and_nothing_else(command, message, typed, shown):
    from sodeep.cli import _command_parser, assignments_as_flags

    parser = build_parser()
    assert assignments_as_flags(message, _command_parser(parser, command), typed) == shown
