"""Every code block of the README runs as written: ``>>>`` examples print what they show, other
Python blocks run, and shell blocks (after the set-up commands) run in a fresh folder.  The guide
to the losses (docs/losses.md) runs and prints what its comments show."""

import contextlib
import doctest
import importlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
LOSSES_GUIDE = README.parent / "docs" / "losses.md"


def _blocks(language: str, document: Path = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", document.read_text(), flags=re.DOTALL)


def test_readme_examples_show_real_output():
    examples = [block for block in _blocks("python") if block.lstrip().startswith(">>>")]
    assert examples, "the README has no >>> example any more"
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for number, block in enumerate(examples):
        runner.run(parser.get_doctest(block, {}, f"README example {number}", str(README), 0))
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    programs = [block for block in _blocks("python") if not block.lstrip().startswith(">>>")]
    assert programs, "the README has no Python program any more"
    monkeypatch.chdir(tmp_path)
    for block in programs:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_api_table_imports_what_it_names():
    """Every ``from X import a, b`` of the API table imports, and each dotted name it mentions exists."""
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    statements = [code for row in rows for code in re.findall(r"`(from [\w.]+ import [^`]+)`", row)]
    assert len(statements) >= 8, "the README's API table lost its imports"
    for statement in statements:
        if "..." not in statement:
            exec(statement, {})
    for dotted in {name for row in rows for name in re.findall(r"`(sodeep(?:\.\w+)+)`", row)}:
        module, _, attribute = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), dotted


def test_readme_set_up_commands_come_first():
    first = _blocks("bash")[0]
    assert "pip install -c constraints.txt" in first and "python -m pytest" in first


def test_readme_shell_blocks_run(tmp_path):
    """The quick starts' commands, each block in a fresh folder with the installed console script."""
    blocks = _blocks("bash")[1:]
    assert blocks, "the README has no quick-start commands any more"
    environment = dict(os.environ, WANDB_MODE="offline", WANDB_ERROR_REPORTING="false", WANDB_SILENT="true")
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    for number, block in enumerate(blocks):
        folder = tmp_path / f"block{number}"
        folder.mkdir()
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block], cwd=folder, env=environment, capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.fail(
                f"README shell block {number} failed:\n{block}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            )


def test_losses_guide_runs_and_prints_what_it_says(tmp_path, monkeypatch):
    from sodeep.sorters import SORTERS

    (program,) = _blocks("python", LOSSES_GUIDE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(SORTERS, "my_sigmoid_ranks", None)  # the guide registers its own; undone after
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(program, str(LOSSES_GUIDE), "exec"), {"__name__": "__guide__"})
    assert printed.getvalue().splitlines() == [
        "['layer.weight', 'layer.bias']",
        "True",
        "SpearmanLoss(sorter=MySigmoidRanks(temperature=0.05), l1_weight=0.0)",
    ]
    for shown in ("# ['layer.weight', 'layer.bias']", "# True", "# SpearmanLoss(sorter=MySigmoidRanks"):
        assert shown in program
