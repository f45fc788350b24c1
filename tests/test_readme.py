"""Every code block of the README runs as written: ``>>>`` examples print what they show, other
Python blocks run, and shell blocks (after the set-up commands) run in a fresh folder."""

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


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
