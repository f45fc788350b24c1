"""The results of a brain-age run folder: a set of finished training runs that only grows.

``results.json`` holds the ``settings`` every run of the folder shares (data, model, training),
and per group (``presets``; ``cascade`` for the synthetic cascades) and preset the finished
``runs``, each identified by its ``seed`` and ``fold``.  A command adds the runs it finishes and
never drops one: presets or seeds given later are trained beside those already there, and
``settings["presets"]``/``settings["seeds"]`` list what the folder holds.  The file is strict
JSON: an undefined metric (NaN, such as a correlation over a test fold of two subjects) is
written as ``null`` and read back as NaN.

Example:
    >>> results = read_results(Path("no-such-folder/results.json"), {"folds": 2})
    >>> add_run(results, "presets", "l1", {"seed": 1, "fold": 0, "mae": 4.0})
    >>> add_run(results, "presets", "l1", {"seed": 0, "fold": 1, "mae": 5.0})
    >>> [(run["seed"], run["fold"]) for run in results["presets"]["l1"]["runs"]], results["settings"]
    ([(0, 1), (1, 0)], {'folds': 2, 'presets': ['l1'], 'seeds': [0, 1]})
    >>> is_finished(results, "presets", "l1", 0, 1), is_finished(results, "presets", "mse", 0, 1)
    (True, False)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sodeep.files import atomic_write_json, finite_or_null
from sodeep.run_folder import CHOOSE_ANOTHER_OUT

#: The file of a folder's results.
RESULTS_FILE = "results.json"
#: Groups of runs a results file may hold.
GROUPS = ("presets", "cascade")
#: Groups whose runs' numbers are read back with NaN for ``null`` (the baselines are made again
#: by each command, but a report may read them).
NUMBER_GROUPS = (*GROUPS, "baselines")
#: Settings that list what the folder holds: they grow with its runs, so they are not compared.
GROWING_SETTINGS = ("presets", "seeds")

#: Decimals of the test predictions (years) that runs keep, and ``predictions.csv`` with them:
#: metrics recomputed from them agree with the recorded ones to about 1e-6.
PREDICTION_DECIMALS = 6

#: What a refusal of a folder's results says to do.
RESTART_ADVICE = "run with overwrite=True instead of resume=True to start the folder again"
#: What changed when a digest of a run's input files differs.
DIGEST_MEANINGS = {
    "table_sha256": "the table's content changed",
    "manifest_sha256": "the manifest's content changed",
    "volume_files_sha256": "a volume file's size or modification time changed, as after an edit or a touch",
}


def _well_formed(results: Any) -> bool:
    if not isinstance(results, dict) or not isinstance(results.get("settings"), dict):
        return False
    groups = [results.get(group, {}) for group in GROUPS]
    return isinstance(results.get("presets"), dict) and all(
        isinstance(group, dict)
        and all(
            isinstance(entry, dict)
            and isinstance(entry.get("runs"), list)
            and all(isinstance(run, dict) and "seed" in run and "fold" in run for run in entry["runs"])
            for entry in group.values()
        )
        for group in groups
    )


def _check_runs(path: Path, results: dict[str, Any]) -> None:
    """Refuse (``ValueError``, as damaged) a results file whose runs could not all be the folder's:
    a (seed, fold) twice in one preset or baseline (a bad merge of two folders would count it
    twice), or a fold beyond the folder's ``folds`` (the synthetic command's one split is fold 0)."""
    folds = results["settings"].get("folds", 1)
    folds = folds if isinstance(folds, int) and not isinstance(folds, bool) else 1
    for group in NUMBER_GROUPS:
        entries = results.get(group, {})
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            seen = set()
            for run in entry.get("runs", []) if isinstance(entry, dict) else ():
                seed, fold = run.get("seed"), run.get("fold")
                if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
                    raise ValueError(
                        f"{path} is damaged: {name} has a run of fold {fold!r}, and the folder has folds 0 to "
                        f"{folds - 1}; {RESTART_ADVICE}"
                    )
                key = json.dumps([seed, fold])
                if key in seen:
                    raise ValueError(
                        f"{path} is damaged: it holds the run of {name}, seed {seed}, fold {fold} twice; {RESTART_ADVICE}"
                    )
                seen.add(key)


def read_results(path: Path, settings: dict[str, Any] | None) -> dict[str, Any]:
    """The results in ``path``, checked to be a results file of runs with ``settings`` (``None``:
    any), or new empty results with ``settings`` when there is no file.  Writes nothing;
    ``ValueError`` (one line) for a damaged file or one of other settings."""
    settings = json.loads(json.dumps(settings or {}))  # as JSON reads it back: tuples are lists
    if not path.is_file():
        return {"settings": {**settings, "presets": [], "seeds": []}, "presets": {}}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path} is damaged (not JSON text); {RESTART_ADVICE}") from None
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror})") from None
    if not _well_formed(results):
        raise ValueError(f"{path} is not a brain-age results file; {RESTART_ADVICE}")
    _check_runs(path, results)
    for group in NUMBER_GROUPS:
        for entry in results.get(group, {}).values() if isinstance(results.get(group), dict) else ():
            for run in entry.get("runs", []) if isinstance(entry, dict) else ():
                run.update({key: math.nan for key, value in run.items() if value is None})
    held = results["settings"]
    differing = sorted(
        key for key in set(held) | set(settings) if key not in GROWING_SETTINGS and held.get(key) != settings.get(key)
    )
    if settings and differing:
        named = ", ".join(
            f"{key} ({DIGEST_MEANINGS.get(key, 'the files changed')})" if key.endswith("_sha256") else key
            for key in differing
        )
        raise ValueError(
            f"{path} holds runs of other settings ({named}); resume with those settings and files, {CHOOSE_ANOTHER_OUT}, "
            f"or {RESTART_ADVICE}"
        )
    return results


def is_finished(results: dict[str, Any], group: str, preset: str, seed: int, fold: int) -> bool:
    """Whether ``results`` hold the run ``(preset, seed, fold)`` of ``group``."""
    runs = results.get(group, {}).get(preset, {}).get("runs", [])
    return any(run["seed"] == seed and run["fold"] == fold for run in runs)


def add_run(results: dict[str, Any], group: str, preset: str, run: dict[str, Any]) -> None:
    """Add (or replace) the run ``(preset, run["seed"], run["fold"])`` of ``group``; runs stay
    sorted by seed and fold, and ``settings`` list the presets and seeds held."""
    entry = results.setdefault(group, {}).setdefault(preset, {"runs": []})
    kept = [other for other in entry["runs"] if (other["seed"], other["fold"]) != (run["seed"], run["fold"])]
    entry["runs"] = sorted([*kept, run], key=lambda item: (item["seed"], item["fold"]))
    seeds = {item["seed"] for name in GROUPS for entry in results.get(name, {}).values() for item in entry["runs"]}
    results["settings"]["presets"] = list(results["presets"])
    results["settings"]["seeds"] = sorted(seeds)


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write ``results`` to ``path`` atomically, NaN as ``null``."""
    return atomic_write_json(path, finite_or_null(results))
