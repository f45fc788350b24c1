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
from sodeep.run_folder import CHOOSE_ANOTHER_OUT, describe_change, describe_value

#: The file of a folder's results.
RESULTS_FILE = "results.json"
#: Groups of runs a results file may hold.
GROUPS = ("presets", "cascade")
#: Groups whose runs' numbers are read back with NaN for ``null`` (the baselines are made again
#: by each command, but a report may read them).
NUMBER_GROUPS = (*GROUPS, "baselines")
#: Settings that list what the folder holds: they grow with its runs, so they are not compared.
GROWING_SETTINGS = ("presets", "seeds")
#: Settings whose name in a message is not their key: ``features`` counts the feature columns
#: (the command's ``features`` setting, patterns, is another).
SETTING_NAMES = {"features": "feature count"}
#: Settings a results file may lack, compared only where it holds them: the feature columns,
#: which the table's digest, its feature count and the settings that choose them also fix.
OPTIONAL_SETTINGS = ("feature_names",)

#: Decimals of the test predictions (years) that runs keep, and ``predictions.csv`` with them:
#: metrics recomputed from them agree with the recorded ones to about 1e-6.
PREDICTION_DECIMALS = 6

#: What a refusal of a folder's results says to do.
RESTART_ADVICE = "run with overwrite=True instead of resume=True to start the folder again"
#: What changed when a digest of a run's input files differs.
DIGEST_MEANINGS = {
    "table_sha256": "the table's content changed",
    "manifest_sha256": "the manifest's content changed",
    "volume_files_sha256": (
        "the volumes read are not the same files: a scan moved, was edited or touched, or was unreadable then and "
        "is read now, or the reverse"
    ),
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


#: Run fields that hold text (a fine-tuned run's starting checkpoint); the other fields are numbers.
TEXT_FIELDS = ("init_checkpoint", "init_checkpoint_sha256")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _run_problem(run: dict[str, Any], folds: int | None) -> str | None:
    """What makes ``run`` one the folder cannot hold, or ``None``.  ``folds``: the folder's, whose
    runs record their test subjects' rows; ``None`` for the synthetic command's one split (fold 0),
    whose test subjects are its own."""
    rows_recorded = folds is not None
    folds = 1 if folds is None else folds
    seed, fold = run.get("seed"), run.get("fold")
    if not _is_whole(fold) or not 0 <= fold < folds:
        return f"a run of fold {fold!r}, and the folder has folds 0 to {folds - 1}"
    if not _is_whole(seed):  # (the folder's seeds are recorded as runs finish: a run's may not be there yet)
        return f"a run of seed {seed!r}, not a whole number"
    rows, predictions = run.get("test_rows"), run.get("test_predictions")
    if rows_recorded and (not isinstance(rows, list) or not rows or not all(_is_whole(r) and r >= 0 for r in rows)):
        return f"a run (seed {seed}, fold {fold}) without its test subjects' rows"
    expected = len(rows) if rows_recorded else None
    if (
        not isinstance(predictions, list)
        or not predictions
        or (expected is not None and len(predictions) != expected)
        or not all(map(_is_number, predictions))
    ):
        return f"a run (seed {seed}, fold {fold}) without one test prediction per test subject"
    if "mae" not in run:
        return f"a run (seed {seed}, fold {fold}) without its mae"
    odd = next(
        (
            key
            for key, value in run.items()
            if key not in (*TEXT_FIELDS, "test_rows", "test_predictions") and not _is_number(value)
        ),
        None,
    )
    if odd is not None:
        return f"a run (seed {seed}, fold {fold}) whose {odd} is {run[odd]!r}, not a number"
    return None


def _check_runs(path: Path, results: dict[str, Any]) -> None:
    """Refuse (``ValueError``, as damaged) a results file whose runs could not all be the folder's:
    a (seed, fold) twice in one preset or baseline (a bad merge of two folders would count it
    twice), a fold beyond the folder's ``folds`` (the synthetic command's one split is fold 0), a
    run without its test rows, one prediction each, or its MAE, a field of the wrong type, or a
    preset sodeep does not have."""
    from sodeep.brainage.losses import BRAIN_AGE_PRESETS

    settings = results["settings"]
    folds = settings["folds"] if _is_whole(settings.get("folds")) else None
    for group in NUMBER_GROUPS:
        entries = results.get(group, {})
        for name, entry in entries.items() if isinstance(entries, dict) else ():
            if group in GROUPS and name not in BRAIN_AGE_PRESETS:
                raise ValueError(f"{path} is damaged: it holds runs of {name!r}, not a preset; {RESTART_ADVICE}")
            seen = set()
            for run in entry.get("runs", []) if isinstance(entry, dict) else ():
                problem = _run_problem(run, folds)
                if problem is not None:
                    raise ValueError(f"{path} is damaged: {name} has {problem}; {RESTART_ADVICE}")
                key = (run["seed"], run["fold"])
                if key in seen:
                    raise ValueError(
                        f"{path} is damaged: it holds the run of {name}, seed {key[0]}, fold {key[1]} twice; "
                        f"{RESTART_ADVICE}"
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
        key
        for key in set(held) | set(settings)
        if key not in GROWING_SETTINGS
        and held.get(key) != settings.get(key)
        and not (key in OPTIONAL_SETTINGS and key not in held)
    )
    if settings and differing:
        named = ", ".join(_setting_change(key, held, settings) for key in differing)
        raise ValueError(
            f"{path} holds runs of other settings ({named}); resume with those settings and files, {CHOOSE_ANOTHER_OUT}, "
            f"or {RESTART_ADVICE}"
        )
    for key in OPTIONAL_SETTINGS:  # recorded from now on, as a folder that began with them records them
        if key not in held and key in settings:
            held[key] = settings[key]
    return results


def _setting_change(key: str, held: dict[str, Any], given: dict[str, Any]) -> str:
    """How setting ``key`` of a results file's settings ``held`` differs from those ``given``: what
    a digest's change means, or both values as a run record's changes show them (``folds: 3 ->
    2``; ``not recorded`` where a side lacks it)."""
    if key.endswith("_sha256"):
        return f"{key} ({DIGEST_MEANINGS.get(key, 'the files changed')})"
    name = SETTING_NAMES.get(key, key)
    if key in held and key in given:
        return f"{name}: {describe_change(held[key], given[key])}"
    there, here = (describe_value(side[key]) if key in side else "not recorded" for side in (held, given))
    return f"{name}: {there} -> {here}"


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
