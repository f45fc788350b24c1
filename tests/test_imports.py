"""``import sodeep`` costs torch and numpy: no Lightning, W&B, Numba, SciPy or brain-age packages."""

import subprocess
import sys

HEAVY = ("numba", "lightning", "wandb", "nilearn", "nibabel", "matplotlib", "scipy", "torchmetrics", "sklearn")


def test_import_sodeep_loads_nothing_heavy():
    code = f"import sodeep, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
