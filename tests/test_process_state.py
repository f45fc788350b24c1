"""What a run sets for itself is put back for its caller, and nothing else is touched."""

import logging
import os
import random
import subprocess
import sys
import warnings

import numpy as np
import torch

from sodeep.process_state import caller_state_kept


def test_what_a_run_sets_is_put_back():
    torch.manual_seed(5)
    os.environ.pop("PL_GLOBAL_SEED", None)  # (as a test before may have left it)
    inductor_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    before = random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state()
    filters, level = list(warnings.filters), logging.getLogger("lightning.pytorch").level
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    with caller_state_kept():
        torch.manual_seed(0), np.random.seed(0), random.seed(0)
        torch.use_deterministic_algorithms(not deterministic[0], warn_only=not deterministic[1])
        os.environ["PL_GLOBAL_SEED"] = "0"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = "/tmp/torchinductor_run"  # as Inductor's first compile does
        logging.getLogger("lightning.pytorch").setLevel(level + 7)
        warnings.filterwarnings("ignore", message="a run's own filter")
    assert random.getstate() == before[0] and (np.random.get_state()[1] == before[1]).all()
    assert torch.equal(torch.random.get_rng_state(), before[2])
    assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == (
        deterministic
    )
    assert "PL_GLOBAL_SEED" not in os.environ and os.environ.get("TORCHINDUCTOR_CACHE_DIR") == inductor_cache
    assert logging.getLogger("lightning.pytorch").level == level and warnings.filters == filters


UNTOUCHED = """
import sys, warnings
import torch
from sodeep.process_state import caller_state_kept
filters = list(warnings.filters)
with caller_state_kept():
    pass
print("torch._dynamo" in sys.modules, warnings.filters == filters)
import torch._inductor.config as inductor
inductor.deterministic = True
with caller_state_kept():
    pass
print(inductor.deterministic)
"""


def test_settings_the_run_left_alone_are_not_set_again():
    """Setting torch's deterministic switch loads Inductor (a second, sympy's warning filter) and
    resets Inductor's own switch: done only where the run changed it."""
    shown = subprocess.run([sys.executable, "-c", UNTOUCHED], capture_output=True, text=True, timeout=120)
    assert shown.stdout.split() == ["False", "True", "True"], shown.stderr


def test_a_run_computes_in_float32_and_the_callers_default_dtype_and_exit_hooks_come_back():
    def hook(*arguments):
        pass

    exit_hook, except_hook = sys.exit, sys.excepthook
    torch.set_default_dtype(torch.float64)
    try:
        with caller_state_kept():
            assert torch.get_default_dtype() == torch.float32
            sys.exit, sys.excepthook = hook, hook  # as W&B's run does
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    assert sys.exit is exit_hook and sys.excepthook is except_hook
