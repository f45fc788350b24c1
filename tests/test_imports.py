"""``import sodeep`` costs torch and numpy: no Lightning, W&B, Numba, SciPy or brain-age packages."""

import subprocess
import sys

import pytest

HEAVY = ("numba", "lightning", "wandb", "nilearn", "nibabel", "matplotlib", "scipy", "torchmetrics", "sklearn")


def test_import_sodeep_loads_nothing_heavy():
    code = f"import sodeep, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_import_sodeep_brainage_loads_nothing_heavy_either():
    """The application's packages load when its commands run, not at its import (a notebook's)."""
    code = f"import sodeep.brainage, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_the_names_of_sodeep_load_on_first_use_and_list_as_before():
    import sodeep

    code = "import sodeep, sys; print('torch' in sys.modules); sodeep.rank; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
    from sodeep.ranks import rank
    from sodeep.sorters import ConvSorter

    assert sodeep.rank is rank and sodeep.ConvSorter is ConvSorter
    assert set(sodeep.__all__) == set(sodeep._EXPORTS) and set(sodeep.__all__) <= set(dir(sodeep))
    assert all(getattr(sodeep, name) is not None for name in sodeep.__all__)
    with pytest.raises(AttributeError, match="^module 'sodeep' has no attribute 'no_such_name'$"):
        _ = sodeep.no_such_name


@pytest.mark.parametrize("module_name", ["sodeep.losses", "sodeep.metrics", "sodeep.reducers", "sodeep.sorters"])
def test_public_modules_export_their_own_names_only(module_name):
    """A star import gives the module's public names, not the helpers it imports."""
    import importlib

    module = importlib.import_module(module_name)
    assert module.__all__ and all(getattr(module, name) is not None for name in module.__all__)
    assert not {"torch", "nn", "require", "check_dense", "check_scores", "check_float_dtype"} & set(module.__all__)


def test_submodules_load_on_first_use_after_a_plain_import():
    """The README's dotted names (sodeep.losses.descending_normalized) work after `import sodeep`."""
    code = (
        "import sodeep, sys; print('sodeep.losses' in sys.modules); "
        "print(sodeep.losses.descending_normalized.__module__, sodeep.checkpoints.TRAINING_SETTINGS['temperature_floor'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "sodeep.losses.rank", "0.1"]
    import sodeep

    assert not hasattr(sodeep, "cli.x") and not hasattr(sodeep, "no_such_module")


def test_a_stop_while_the_command_loads_ends_in_one_line():
    """Ctrl-C or SIGTERM while torch loads: one line and status 130, not a traceback or a silent end."""
    import signal
    import time

    for number in (signal.SIGINT, signal.SIGTERM):
        command = subprocess.Popen(
            [sys.executable, "-m", "sodeep", "evaluate", "--lengths", "5", "--sequences", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # python has started; the command's modules (torch) take longer to load
        command.send_signal(number)
        out, error = command.communicate(timeout=120)
        if command.returncode == 0:  # a machine fast enough to finish first: nothing to check
            continue
        assert command.returncode == 130 and "Traceback" not in error, error
        assert error.count("\n") == 1 and "interrupted" in error, error


def test_the_console_script_starts_from_the_module_that_takes_a_stop_while_loading():
    from pathlib import Path

    script = Path(sys.executable).with_name("sodeep")
    if not script.is_file():
        pytest.skip("sodeep is not installed as a console script here")
    assert "from sodeep.__main__ import main" in script.read_text(encoding="utf-8")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "pretrain" in result.stdout


def test_ctrl_c_stops_a_command_started_with_it_ignored_once_the_command_has_loaded():
    """A job that a shell script starts in the background inherits Ctrl-C ignored; the command's
    runs take Ctrl-C once they start, so it must not be ignored while the command sets them up."""
    import signal

    code = (
        "import signal, sodeep.cli, sodeep.__main__\n"
        "sodeep.cli.main = lambda parser: print(signal.getsignal(signal.SIGINT)) or 0\n"
        "sodeep.__main__.main()\n"
    )
    for disposition in (signal.SIG_IGN, signal.default_int_handler):
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda disposition=disposition: signal.signal(signal.SIGINT, disposition),
        )
        assert result.returncode == 0 and result.stdout == "<built-in function default_int_handler>\n", result
