"""``run_benchmark(config)``: every part in one process, then results.json, markdown and plots."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sodeep.benchmark.config import BenchConfig
from sodeep.benchmark.rankers import Ranker, available_families
from sodeep.benchmark.report import json_text, null_as_nan
from sodeep.files import atomic_write_text
from sodeep.process_state import keeps_caller_state
from sodeep.run_folder import interrupts_held, releasing_run_folders
from sodeep.stream_loader import available_cores
from sodeep.wording import plural


def hardware() -> str:
    threads = torch.get_num_threads()
    device = "no GPU" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    return (
        f"{platform.machine()}, {available_cores()} CPU cores, {device}, torch {torch.__version__}, "
        f"{threads} thread{'' if threads == 1 else 's'}"
    )


def benchmark_rankers(families, settings: str = "default+sharp") -> list[Ranker]:
    return [family.build(value) for family in families for value in family.settings(settings)]


#: What a benchmark writes into its output folder.
OUTPUT_FILES = (
    "results.json",
    "results.md",
    "bench_speed.png",
    "bench_fidelity.png",
    "bench_sorting.png",
    "sorting_rows.jsonl",
)


def claim_output_folder(out: Path, overwrite: bool, resume: bool = False) -> Path:
    """Create ``out``, or take an empty one, and hold it (its lock, ``run.lock``, until the process
    ends or the benchmark returns): a folder in use by a running command is refused.  A folder
    holding a benchmark's results (a ``results.json`` of :data:`~sodeep.benchmark.report.SCHEMA`,
    or the rows of an interrupted first part) is refused unless ``overwrite``, which deletes those
    results first, or ``resume``, which keeps them; a folder holding anything else is always
    refused: a benchmark never mixes its files with a user's, nor takes a user's ``results.json``
    for its own."""
    from sodeep.run_folder import RUN_LOCK, check_not_in_use, hold_folder, inside_a_run_folder, is_file_manager_file

    if overwrite and resume:
        raise ValueError("overwrite=True replaces the folder's results and resume=True keeps them: give one of the two")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; give out= a new or empty folder")
    problem = inside_a_run_folder(out)
    if problem is not None:
        raise ValueError(f"{problem}; give out= a folder outside it")
    around = next((folder for folder in out.absolute().parents if _holds_benchmark_results(folder)), None)
    if around is not None:
        raise ValueError(
            f"{out} is inside the benchmark folder {around}, which then could be neither resumed nor replaced; "
            "give out= a folder outside it"
        )
    if out.is_dir():  # before any advice to resume or replace what it holds
        check_not_in_use(out, "give another out=")
    present = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    ours = [name for name in present if name in OUTPUT_FILES or _is_temporary_output(name)]
    others = [name for name in present if name not in (*ours, RUN_LOCK) and not is_file_manager_file(name)]
    named = [name for name in ours if not _is_temporary_output(name)]
    if "results.json" in named and not others and _damaged_json(out / "results.json"):
        raise ValueError(
            f"{out / 'results.json'} is not readable JSON (damaged); give another out=, or delete {out} "
            "if it holds nothing else you need"
        )
    if not others and "results.json" in named and not _holds_benchmark_results(out):
        raise ValueError(
            f"{out / 'results.json'} is not a sodeep benchmark's results (no schema 'sodeep-bench/...'), and a "
            "benchmark never replaces a file of yours; give out= a new or empty folder"
        )
    if not others and named and not _holds_benchmark_results(out):
        # The file that decides (the rows) first: the plots are named as ours.
        others = sorted(named, key=lambda name: name != "sorting_rows.jsonl")
    if others:
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        raise ValueError(
            f"{out} holds files that are not a sodeep benchmark's ({', '.join(others[:3])}{more}); "
            "give out= a new or empty folder"
        )
    if not (out / "results.json").is_file() and named and not overwrite:
        # Rows or plots without the results.json that records their settings: nothing to resume.
        raise ValueError(
            f"{out} holds a benchmark's files ({', '.join(named[:3])}) but not its results.json, which records "
            "its settings, so it cannot be resumed; pass overwrite=True to replace them, or give another out="
        )
    if resume and not (out / "results.json").is_file():
        raise ValueError(f"{out} holds no benchmark to resume; run without resume=True to start one")
    if ours and not (overwrite or resume):
        raise ValueError(
            f"{out} holds benchmark results; pass resume=True to continue them, overwrite=True to replace them, "
            "or give another out="
        )
    hold_folder(out, instead="give another out=")
    for name in [] if resume else ours:
        (out / name).unlink()
    return out


def _is_temporary_output(name: str) -> bool:
    """A file an atomic write of an output file left behind (``.results.json.<random>.tmp``)."""
    return (
        name.startswith(".")
        and name.endswith(".tmp")
        and any(name[1:].startswith(f"{output}.") for output in OUTPUT_FILES)
    )


def _damaged_json(path: Path) -> bool:
    """Whether the file at ``path`` cannot be read as JSON."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return False


def _holds_benchmark_results(out: Path) -> bool:
    """Whether ``out/results.json`` is a benchmark's, or, without one, ``out/sorting_rows.jsonl``
    holds the rows of an interrupted learning-to-sort part."""
    from sodeep.benchmark.report import SCHEMA

    if (out / "results.json").is_file():
        try:
            schema = json.loads((out / "results.json").read_text(encoding="utf-8")).get("schema")
        except (OSError, ValueError, AttributeError):
            return False
        # This version's, or another version's (which a resume then names as such).
        return isinstance(schema, str) and schema.split("/")[0] == SCHEMA.split("/")[0]
    rows = _finished_rows(out / "sorting_rows.jsonl")
    return bool(rows) and all({"ranker", "seed"} <= set(row) for row in rows)


def check_extras(config: BenchConfig) -> None:
    """Refuse, before anything runs, a benchmark whose packages are missing: matplotlib for the
    plots, scikit-learn for the bundled digits of learning to sort (``pip install '.[bench]'``)."""
    import importlib.util

    needed = ["matplotlib"]
    if "sorting" in config.parts and config.mnist is None:
        needed.append("sklearn")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    missing = ["scikit-learn" if name == "sklearn" else name for name in missing]  # the package to install
    if missing:
        raise ValueError(
            f"sodeep bench needs {', '.join(missing)}: in a clone of sodeep, pip install -c constraints.txt -e "
            "'.[bench]'; elsewhere, install sodeep with its bench extra, or the packages named"
        )


@releasing_run_folders
@keeps_caller_state
def run_benchmark(
    config: BenchConfig,
    command: str = "",
    progress: Callable[[str], None] = print,
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> dict:
    """Run ``config.parts`` and write ``results.json``, ``results.md`` and PNG plots into
    ``config.out`` (a new or empty folder, or one of benchmark results with ``overwrite``).
    ``resume`` continues the benchmark of the same settings that the folder holds: its finished
    parts and its finished learning-to-sort trainings are kept, the rest runs; parts that
    ``config`` adds run after the folder's (:func:`_previous_results` says which settings may differ)."""
    from sodeep.benchmark import plots, report

    check_extras(config)
    _check_sorting_inputs(config)  # before anything is written
    out = claim_output_folder(Path(config.out), overwrite, resume)
    previous, recorded = _previous_results(out, config) if resume else (None, None)
    if previous is not None and tuple(recorded["parts"]) != tuple(config.parts):
        added = [part for part in config.parts if part not in previous["config"]["parts"]]
        config = dataclasses.replace(config, parts=tuple(recorded["parts"]))
        _check_sorting_inputs(config)
        progress(f"parts: {' '.join(config.parts)} (the folder's{', then those added' if added else ''})")
    families, missing = available_families()
    rankers = benchmark_rankers(families)
    if previous is not None:
        _check_same_rankers(out, previous, rankers)
    results: dict = {key: [] for key in ("speed", "fidelity", "sorting", "sorting_summary", "regression")}
    results.update(
        schema=report.SCHEMA,
        command=command,
        hardware=hardware(),
        config=config.as_dict(),
        rankers=[{"label": ranker.label, "family": ranker.family, "kind": ranker.kind} for ranker in rankers],
        skipped=[{"ranker": name, "part": "all", "reason": reason} for name, reason in missing.items()],
        wall_seconds={},
        resumed=[],
    )
    if previous is None:
        report.write_results(results, out)  # the settings, for --resume
    else:  # the command and machine that began it stay; each resume that runs a part is added
        # (its config too: the resume's differs at most in where it runs, the workers and the parts' order)
        results.update(
            command=previous["command"],
            hardware=previous["hardware"],
            config=recorded,
            resumed=previous["resumed"],
        )
    resumption = {"command": command, "hardware": hardware(), "parts": []}  # recorded once it runs a part
    for part in config.parts:
        if previous is not None and part in previous["wall_seconds"]:
            progress(f"== {part}: kept from {out / 'results.json'}")
            _keep_part(part, previous, results)
        else:
            start = time.perf_counter()
            progress(f"== {part}")
            _run_part(part, config, families, rankers, results, progress, resume=previous is not None)
            results["wall_seconds"][part] = time.perf_counter() - start
            if previous is not None:
                resumption["parts"].append(part)
                results["resumed"] = [*previous["resumed"], resumption]
        # A part's results survive a later part's failure or an interruption, in both files and
        # in the plots: a stop signal while they are written waits for the last of them.
        with interrupts_held():
            report.write_results(results, out)
            atomic_write_text(out / "results.md", report.markdown(results) + "\n")
            plots.plot_speed(results["speed"], out / "bench_speed.png")
            plots.plot_fidelity_vs_time(results["fidelity"], results["speed"], out / "bench_fidelity.png")
            plots.plot_sorting(results["sorting_summary"], out / "bench_sorting.png")
    return results


#: The keys of ``results.json`` that each part fills (besides its ``skipped`` entries).
PART_KEYS = {
    "speed": ("speed",),
    "fidelity": ("fidelity",),
    "sorting": ("sorting", "sorting_summary"),
    "regression": ("regression",),
}


def _check_sorting_inputs(config: BenchConfig) -> None:
    """Where ``config`` runs the learning-to-sort part: that its worker processes can start and
    that its MNIST files (if any) are whole (``ValueError``)."""
    if "sorting" in config.parts and config.workers > 1:
        from sodeep.benchmark.learning_to_sort import check_workers_can_start

        check_workers_can_start()
    if config.mnist is not None:  # named as the part needs them whatever the parts: the settings record them
        files = _mnist_files(config.mnist)
        if "sorting" in config.parts:
            from sodeep.benchmark.learning_to_sort import digit_pools

            digit_pools(files)  # whole files (counts, shapes, truncation), kept for the sorting part


#: The settings each part reads; ``out``, ``workers`` and ``parts`` change no part's results.
PART_SETTINGS = {
    "speed": (
        "speed_lengths",
        "speed_batches",
        "speed_rounds",
        "speed_block_seconds",
        "speed_max_call_seconds",
        "max_elements",
    ),
    "fidelity": ("fidelity_lengths", "fidelity_sequences", "max_elements"),
    "sorting": (
        "seeds",
        "sorting_lengths",
        "sorting_digits",
        "sorting_steps",
        "sorting_images_per_step",
        "sorting_learning_rate",
        "sorting_test_sequences",
        "sorting_validation_sequences",
        "sorting_settings",
        "mnist",
        "max_elements",
    ),
    "regression": ("seeds", "regression_steps", "regression_batch", "regression_learning_rate", "max_elements"),
}


def _previous_results(out: Path, config: BenchConfig) -> tuple[dict, dict]:
    """The results ``out`` holds, checked against ``config`` (``ValueError`` else), and the
    settings the resumed benchmark records: the folder's parts and then those ``config`` adds.
    The folder's parts (finished or not) continue with the folder's settings; a part it adds may
    read other values of settings that none of the folder's parts reads."""
    from sodeep.benchmark import report
    from sodeep.benchmark.report import SCHEMA

    path = out / "results.json"
    damaged = ValueError(f"{path} is damaged; run with overwrite=True instead of resume=True")
    try:
        previous = null_as_nan(json.loads(path.read_text(encoding="utf-8")))
        held = previous["config"]
        for key, unknown in (("command", ""), ("hardware", "not recorded"), ("resumed", [])):
            previous.setdefault(key, unknown)
        if not isinstance(held, dict):
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise damaged from None
    if previous.get("schema") != SCHEMA:
        raise ValueError(
            f"{out} holds a benchmark of another format (schema {previous.get('schema')!r}; this sodeep writes "
            f"{SCHEMA!r}): run with overwrite=True instead of resume=True"
        )
    held_parts = held.get("parts")
    if not isinstance(held_parts, list) or not held_parts or not set(held_parts) <= set(PART_SETTINGS):
        raise damaged
    wanted = json.loads(json.dumps(config.as_dict()))  # as JSON reads it back: tuples are lists
    added = [part for part in wanted["parts"] if part not in held_parts]
    held_reads = {key for part in held_parts for key in PART_SETTINGS[part]}
    # Where it runs, how many processes train and the parts' order change no result; a setting
    # that none of the folder's parts reads may change, and a part added reads its new value.
    differing = sorted(
        key
        for key in set(held) | set(wanted)
        if key not in ("out", "workers", "parts")
        and not (key in PART_SETTINGS_KEYS and key not in held_reads)
        and _as_compared(key, held.get(key)) != _as_compared(key, wanted.get(key))
    )
    added_reads = {key for part in added for key in PART_SETTINGS[part]}
    recorded = {**held, "parts": held_parts + added} | {
        key: wanted[key] for key in added_reads - held_reads if key in wanted
    }
    if differing:
        changes = ", ".join(
            f"{key}: {_as_words(held[key]) if key in held else '(not recorded)'} -> {_as_words(wanted.get(key))}"
            for key in differing
        )
        raise ValueError(
            f"{out} holds a benchmark of other settings ({changes}); resume it with its own "
            f"settings{_preset_of(held, differing)}, or run with overwrite=True instead of resume=True"
        )
    try:
        if not _well_formed(previous):
            raise ValueError
        # Every row it keeps, read as the resume's report reads them.
        report.markdown({key: [] for keys in PART_KEYS.values() for key in keys} | previous)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise damaged from None
    return previous, recorded


#: Every setting that some part reads.
PART_SETTINGS_KEYS = frozenset(key for keys in PART_SETTINGS.values() for key in keys)


def _well_formed(previous: dict) -> bool:
    """Whether a benchmark's ``results.json`` has what a resume reads: its settings, the rankers,
    what was left out, and the rows of each part it finished (``wall_seconds`` names them)."""

    def rows(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(row, dict) for row in value)

    finished = previous.get("wall_seconds")
    return (
        isinstance(previous.get("config"), dict)
        and isinstance(finished, dict)
        and all(part in PART_KEYS and _real(seconds) for part, seconds in finished.items())
        and all(isinstance(previous.get(key), str) for key in ("command", "hardware"))
        and rows(previous.get("skipped"))
        and rows(previous.get("rankers"))
        and bool(previous["rankers"])
        and all(isinstance(ranker.get("family"), str) for ranker in previous["rankers"])
        and all(_typed(row, ROW_TYPES[part]) for part in ROW_TYPES for row in previous.get(part, []))
        and rows(previous.get("resumed"))
        and all(rows(previous.get(key)) for part in finished for key in PART_KEYS[part])
    )


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> bool:
    return isinstance(value, str)


#: The fields of a speed and a fidelity row, each with its test (a ratio may be null: no reference).
ROW_TYPES = {
    "speed": {
        "ranker": _text,
        "n": _whole,
        "batch": _whole,
        "mode": _text,
        "seconds": _real,
        "ratio_to_exact": lambda value: value is None or _real(value),
        "ratio_to_torchsort": lambda value: value is None or _real(value),
    },
    "fidelity": {"ranker": _text, "n": _whole, "distribution": _text, "spearman": _real, "rank_error": _real},
}


def _typed(row: dict, fields: dict) -> bool:
    return all(key in row and test(row[key]) for key, test in fields.items())


def _check_same_rankers(out: Path, previous: dict, rankers: list) -> None:
    """Refuse to resume where other rankers can run than when the folder's benchmark started (an
    optional package installed or removed since): its parts would compare different rankers."""
    held = list(dict.fromkeys(ranker["family"] for ranker in previous.get("rankers", [])))
    here = list(dict.fromkeys(ranker.family for ranker in rankers))
    if held != here:
        changes = [
            f"{', '.join(families)} {what}"
            for families, what in (
                ([family for family in held if family not in here], "ran then and cannot run here"),
                ([family for family in here if family not in held], "can run here and could not then"),
            )
            if families
        ]
        raise ValueError(
            f"{out} holds a benchmark of other rankers ({'; '.join(changes) or 'another order'}): resume it "
            "with the packages it ran with, or run with overwrite=True instead of resume=True"
        )


def _as_compared(key: str, value: object) -> object:
    """A setting as a resume compares it: the parts and the seeds as sets (the jobs run by seed)."""
    return sorted(value) if key in ("parts", "seeds") and isinstance(value, list) else value


def _as_words(value: object) -> str:
    """A setting's value as the command line takes it: a list as its words (``speed fidelity``)."""
    if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        return " ".join(str(item) for item in value)
    return str(value)


def _preset_of(held: dict, differing: list[str]) -> str:
    """Where the settings a benchmark folder holds differ only as :meth:`BenchConfig.quick` and
    the full defaults do: which of the two it ran, as advice (or ``""``)."""
    quick, full = (json.loads(json.dumps(preset.as_dict())) for preset in (BenchConfig.quick(), BenchConfig()))
    # Seeds and training steps have flags of their own, which either preset takes.
    preset_keys = [
        key for key in differing if key not in ("seeds", "sorting_steps") and quick.get(key) != full.get(key)
    ]
    if preset_keys and all(held.get(key) == quick[key] for key in preset_keys):
        return " (it ran with --quick: BenchConfig.quick() from Python)"
    if preset_keys and all(held.get(key) == full[key] for key in preset_keys):
        return " (it ran without --quick: BenchConfig() from Python)"
    return ""


def _keep_part(part: str, previous: dict, results: dict) -> None:
    """Copy a finished part's results (and what it left out) from ``previous`` into ``results``."""
    for key in PART_KEYS[part]:
        results[key] = previous[key]
    results["skipped"] += [row for row in previous["skipped"] if row.get("part") == part]
    results["wall_seconds"][part] = previous["wall_seconds"][part]


def _run_part(part: str, config: BenchConfig, families, rankers, results: dict, progress, resume=False) -> None:
    if part == "speed":
        from sodeep.benchmark.speed import run_speed

        rows, skipped = run_speed(
            rankers,
            config.speed_lengths,
            config.speed_batches,
            config.speed_rounds,
            config.speed_block_seconds,
            config.speed_max_call_seconds,
            config.max_elements,
            progress,
        )
        results["speed"], results["skipped"] = rows, results["skipped"] + skipped
    elif part == "fidelity":
        from sodeep.benchmark.fidelity import run_fidelity

        results["fidelity"], skipped = run_fidelity(
            rankers, config.fidelity_lengths, config.fidelity_sequences, config.max_elements, progress
        )
        results["skipped"] = results["skipped"] + skipped
    elif part == "sorting":
        from sodeep.benchmark.learning_to_sort import SortingTask, rows_of_jobs, run_sorting, sorting_jobs
        from sodeep.benchmark.report import summarize_sorting

        jobs, skipped = sorting_jobs(
            families,
            config.sorting_settings,
            config.sorting_lengths,
            config.seeds,
            config.sorting_images_per_step,
            config.max_elements,
        )
        task = SortingTask(
            digits=config.sorting_digits,
            steps=config.sorting_steps,
            images_per_step=config.sorting_images_per_step,
            learning_rate=config.sorting_learning_rate,
            test_sequences=config.sorting_test_sequences,
            validation_sequences=config.sorting_validation_sequences,
        )
        mnist = None if config.mnist is None else _mnist_files(config.mnist)
        rows_path = Path(config.out) / "sorting_rows.jsonl"
        done = rows_of_jobs(_finished_rows(rows_path), jobs) if resume else []
        if done:
            progress(f"sorting: {plural(len(done), 'finished training')} kept from {rows_path}")
            # Without a line the interruption cut short, which the new rows would otherwise extend.
            atomic_write_text(rows_path, "".join(json_text(row) + "\n" for row in done))
        else:
            rows_path.unlink(missing_ok=True)
        results["sorting"] = run_sorting(jobs, task, config.workers, mnist, progress, rows_path, done=done)
        results["sorting_summary"] = summarize_sorting(results["sorting"])
        results["skipped"] += skipped
    elif part == "regression":
        from sodeep.benchmark.regression import run_regression

        default_rankers = [family.build(family.default) for family in families]
        rows, skipped = run_regression(
            default_rankers,
            config.seeds,
            config.regression_steps,
            config.regression_batch,
            config.regression_learning_rate,
            config.max_elements,
            progress,
        )
        results["regression"], results["skipped"] = rows, results["skipped"] + skipped


def finished_trainings(out: Path) -> list[dict]:
    """The learning-to-sort trainings an interrupted sorting part finished in ``out`` (kept by a resume)."""
    return _finished_rows(out / "sorting_rows.jsonl")


def _finished_rows(path: Path) -> list[dict]:
    """The rows of ``sorting_rows.jsonl`` (the trainings an interrupted part finished); a line cut
    short by the interruption is dropped."""
    rows = []
    try:  # (bytes that are not UTF-8 make lines that do not parse, and are dropped)
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(null_as_nan(row))
    return rows


def _mnist_files(folder_files) -> tuple:
    """``(images, labels)`` of MNIST's training set -> train and test (t10k) file pairs, same folder."""
    images, labels = (Path(path) for path in folder_files)
    for path in (images, labels):
        if "train" not in path.name:
            raise ValueError(
                f"MNIST file {path}: mnist= takes the training files, named train-* (the test files, t10k-*, "
                "are found beside them by that name)"
            )
    test_images = images.with_name(images.name.replace("train", "t10k"))
    test_labels = labels.with_name(labels.name.replace("train", "t10k"))
    for path in (images, labels, test_images, test_labels):
        if not path.is_file():
            raise FileNotFoundError(f"MNIST file {path} not found (expected train-* and t10k-* side by side)")
    return ((str(images), str(labels)), (str(test_images), str(test_labels)))
