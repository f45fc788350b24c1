"""W&B sweep files run offline: expansion (grid, random; bayes through the ``sweeps`` package),
a runner that starts each trial as W&B's agent would, the summary each trial leaves, and the
report that compares the settings.  The ``sodeep sweep`` commands live in :mod:`sodeep.sweeps.cli`;
``docs/sweeps.md`` is the guide.  The core library does not import this package.
"""

from sodeep.sweeps.expand import Trial, expand_trials
from sodeep.sweeps.report import write_report
from sodeep.sweeps.runner import SweepInterrupted, SweepOutcome, run_sweep
from sodeep.sweeps.spec import SweepSpec, load_sweep, sweep_from_mapping
from sodeep.sweeps.summary import SCHEMA, read_trial_summary, write_trial_summary

__all__ = [
    "SCHEMA",
    "SweepInterrupted",
    "SweepOutcome",
    "SweepSpec",
    "Trial",
    "expand_trials",
    "load_sweep",
    "read_trial_summary",
    "run_sweep",
    "sweep_from_mapping",
    "write_report",
    "write_trial_summary",
]
