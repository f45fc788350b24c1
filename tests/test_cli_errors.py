"""Bad input to the console script ends in one line on stderr and exit status 2, before anything
is written: one table of cases, walked through every core command."""

import pytest
import torch

from sodeep.checkpoints import save_sorter
from sodeep.cli import main
from sodeep.sorters import ConvSorter


def _write_inputs(folder):
    """Files a user might pass by mistake, by name."""
    whole = save_sorter(ConvSorter(), folder / "sorter.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.pt").write_bytes(b"")
    (folder / "text.pt").write_text("epoch,step\n0,1\n")
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    (folder / "bad.yaml").write_text("steps: [1, 2\n")
    (folder / "list.yaml").write_text("- 1\n")
    (folder / "typo.yaml").write_text("stpes: 10\n")


CASES = [
    # (command line, words the one line must contain)
    (["pretrain", "--steps", "0"], "steps must be an integer >= 1"),
    (
        ["pretrain", "--stepz", "3"],
        "sodeep pretrain: error: unrecognized arguments: --stepz (did you mean --steps?) 3 "
        "(options: sodeep pretrain --help)",
    ),
    (["pretrain", "--validation-sequences", "300000"], "validation_sequences must be at most 4096"),
    (["pretrain", "--learning-rate", "-1"], "learning_rate must be a finite number > 0"),
    (["pretrain", "--lengths", "1-5"], "lengths must be ints >= 2"),
    (["pretrain", "--lengths", "5-2"], "is empty"),
    (["pretrain", "--lengths", "2-20000"], "capacity is 16384"),
    (["pretrain", "--architecture", "bogus"], "unknown sorter architecture 'bogus'"),
    (["pretrain", "--sorter", '{"softnes": 0.5}'], "did you mean 'softness'"),
    (["pretrain", "--sorter", "{bad"], "sorter must be a JSON object"),
    (["pretrain", "--sorter", '{"band": 2.5}'], "band must be an integer, got float 2.5"),
    (["pretrain", "--sorter", '{"softness": "x"}'], "softness must be a finite number > 0, got str 'x'"),
    (["pretrain", "--config", "{inputs}/bad.yaml"], "is not valid YAML"),
    (["pretrain", "--config", "{inputs}/list.yaml"], "must hold a mapping of settings"),
    (["pretrain", "--config", "{inputs}/typo.yaml"], "did you mean 'steps'"),
    (["pretrain", "--config", "{inputs}/missing.yaml"], "no config file at"),
    (["pretrain", "--resume"], "holds no run to resume"),
    (["evaluate", "{inputs}/truncated.pt"], "truncated"),
    (["evaluate", "{inputs}/empty.pt"], "is empty"),
    (["evaluate", "{inputs}/text.pt"], "not a torch checkpoint"),
    (["evaluate", "{inputs}/foreign.pt"], "not a sodeep sorter checkpoint"),
    (["evaluate", "{inputs}/missing.pt"], "no sorter checkpoint at"),
    (["evaluate", "--lengths", "20000"], "no length in [20000]"),
    (["evaluate", "--sequences", "0"], "--sequences must be >= 1, got 0"),
    (["evaluate", "--lengths", "5,20000"], "lengths [20000] are outside the sorter's range"),
    (["pretrain", "--learning-rate", "inf"], "learning_rate must be a finite number"),
    (["export", "{inputs}/truncated.pt", "{out}/sorter.pt"], "truncated"),
    (["export", "{inputs}/empty.pt", "{out}/sorter.pt"], "is empty"),
    (["export", "{inputs}/text.pt", "{out}/sorter.pt"], "not a torch checkpoint"),
    (["export", "{inputs}/sorter.pt", "{out}/sorter.pt"], "not a sodeep pretraining checkpoint"),
    (["export", "{inputs}/missing.pt", "{out}/sorter.pt"], "no training checkpoint at"),
    (
        ["pretrain", "--data-workers", "x"],
        "argument --data-workers: invalid int value: 'x' (options: sodeep pretrain --help)",
    ),
    (["pretrain", "--wandb", "foo"], "argument --wandb: invalid choice: 'foo'"),
    (["evaluate", "--sequences"], "argument --sequences: expected one argument"),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_bad_input_ends_in_one_line_and_writes_nothing(tmp_path, capsys, argv, words):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    _write_inputs(inputs)
    argv = [word.replace("{inputs}", str(inputs)).replace("{out}", str(out)) for word in argv]
    if argv[0] == "pretrain":
        argv += ["--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith(f"sodeep {argv[0]}: error: ") and error.count("\n") == 1, error
    assert words in error and "Traceback" not in error
    assert not out.exists()


@pytest.mark.parametrize("text", ["", "5,x", "1.5", "nan", ","])
def test_number_lists_refuse_what_is_not_a_list_of_numbers(text):
    import argparse

    from sodeep.config import number_list

    with pytest.raises(argparse.ArgumentTypeError, match="expected ints separated by commas, e.g. 32,256"):
        number_list(int)(text)
    assert number_list(int)(" 5, 20 100") == [5, 20, 100]
    assert number_list(float)("1e-4 0.5") == [1e-4, 0.5]
    with pytest.raises(argparse.ArgumentTypeError, match="expected floats"):
        number_list(float)("0.1,inf")


def test_an_unknown_flag_of_a_nested_subcommand_is_named_by_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["brainage", "tabular", "--epochz", "3"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert error.startswith(
        "sodeep brainage tabular: error: unrecognized arguments: --epochz (did you mean --max-epochs?)"
    )
    assert error.endswith("(options: sodeep brainage tabular --help)\n")
