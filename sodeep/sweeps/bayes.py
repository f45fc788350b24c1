"""Bayesian search offline, through W&B's open-source ``sweeps`` package (the code behind its
server's suggestions), when it is installed.

``sweeps`` pins NumPy < 2, so it is not a dependency of sodeep; install it and its own
dependencies without theirs (:data:`INSTALL_HINT`; scikit-learn and pydantic it needs too).  Each suggestion sees
every trial so far, with its summary's metrics, as W&B's controller does; the global ``random``
and NumPy generators it draws from are seeded with the sweep seed and the trial's index.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sodeep.sweeps.expand import Trial
from sodeep.sweeps.spec import SweepSpec
from sodeep.sweeps.summary import is_finished, read_trial_summary

#: ``sweeps`` and what it imports, without their pins (``sweeps`` pins NumPy < 2).
INSTALL_HINT = "pip install --no-deps sweeps jsonref jsonschema jsonschema-specifications referencing rpds-py"


def import_sweeps() -> Any:
    try:
        import sweeps
    except ImportError as error:
        missing = f"`{error.name}`, which `sweeps` imports, is missing" if error.name != "sweeps" else "it is missing"
        raise ValueError(
            f"method bayes needs W&B's open-source `sweeps` package and {missing}: {INSTALL_HINT} (--no-deps: "
            "sweeps pins NumPy < 2), or W&B's server: run it online with wandb sweep / wandb agent"
        ) from None
    return sweeps


class BayesTrials:
    """Trials suggested one at a time: interrupted ones again first, then new suggestions, until
    ``run_cap`` (or ``count``) trials exist."""

    def __init__(self, spec: SweepSpec, seed: int = 0, count: int | None = None) -> None:
        self.sweeps = import_sweeps()
        self.total = min((limit for limit in (spec.run_cap, count) if limit is not None), default=None)
        if self.total is None:
            raise ValueError(f"{spec.source}: a bayes sweep needs run_cap (or count=): it never runs out of trials")
        self.spec, self.seed = spec, seed
        self.started: set[str] = set()

    def existing(self, folder: Path) -> list[tuple[str, dict[str, Any]]]:
        """``(id, params)`` of every trial begun in ``folder``, in order."""
        found = []
        for record in sorted((folder / "trials").glob("*/trial.json")):
            found.append((record.parent.name, json.loads(record.read_text(encoding="utf-8"))["params"]))
        return found

    def finished_ids(self, folder: Path) -> list[str]:
        return [trial for trial, _ in self.existing(folder) if is_finished(folder / "trials" / trial / "summary.json")]

    def next_trial(self, folder: Path, running: list[Trial]) -> Trial | None:
        existing = self.existing(folder)
        for trial, params in existing:
            if trial not in self.started and not is_finished(folder / "trials" / trial / "summary.json"):
                self.started.add(trial)
                return Trial(int(trial), params)
        if len(existing) >= self.total:
            return None
        index = max((int(trial) for trial, _ in existing), default=-1) + 1
        running_ids = {t.id for t in running}
        params = self.suggest(folder, existing, running_ids, index)
        trial = Trial(index, params)
        self.started.add(trial.id)
        return trial

    def suggest(self, folder: Path, existing: list, running_ids: set[str], index: int) -> dict[str, Any]:
        runs = []
        for trial, params in existing:
            summary_path = folder / "trials" / trial / "summary.json"
            if trial in running_ids:
                state, metrics = self.sweeps.RunState.running, {}
            elif summary_path.exists():
                summary = read_trial_summary(summary_path)
                state, metrics = self.sweeps.RunState(summary["status"]), summary["metrics"]
            else:
                continue
            config = {name: {"value": value} for name, value in params.items()}
            runs.append(self.sweeps.SweepRun(name=trial, config=config, summary_metrics=metrics, state=state))
        random.seed(self.seed * 1_000_003 + index)
        import numpy as np

        np.random.seed((self.seed * 1_000_003 + index) % 2**32)
        config = {key: self.spec.mapping[key] for key in ("method", "metric", "parameters")}
        suggestion = self.sweeps.next_run(config, runs)
        return {name: _plain(entry["value"]) for name, entry in suggestion.config.items()}


def _plain(value: Any) -> Any:
    """NumPy scalars in a suggestion as Python numbers (they are written into flags and JSON)."""
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
