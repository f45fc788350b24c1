"""Fine-tuning: brain-age training runs that start from trained regressors.

The runs of a ``sodeep brainage`` command start from random weights, or, with ``init_from``,
from those of a trained model (:class:`FineTuning`), which is either

- the output folder of an earlier run of the same command on the same data and folds (its
  ``run.json`` and ``results.json`` say so): the run of each (seed, fold) starts from the model
  the folder's run of that (seed, fold) kept (``checkpoints/<preset>/seed<k>_fold<f>/best.ckpt``;
  ``seed<k>`` for ``synthetic``), so a fine-tuned model is still tested on subjects none of its
  training saw.  The preset is the folder's only one, or chosen by giving
  ``FOLDER/checkpoints/<preset>``;
- a checkpoint file, the start of every run: a ``best.ckpt`` or ``last.ckpt`` that
  :func:`~sodeep.brainage.training.fit_age_model` wrote, or a model's ``state_dict`` saved with
  ``torch.save``.  The checkpoint of one run of a cross-validation on these same data and folds
  is refused: that model has seen the other folds' test subjects.

Files are read with ``weights_only=True`` and their weights checked against the command's model
before anything is written; each refusal is a one-line ``ValueError``.

Example:
    >>> FineTuning.open("no/such/folder", command="tabular", settings={}, seeds=[0], folds=2,
    ...                 model=torch.nn.Linear(2, 1))
    Traceback (most recent call last):
    ...
    ValueError: init_from: no file or folder at no/such/folder to start the runs from
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sodeep.brainage.results import RESTART_ADVICE, RESULTS_FILE, read_results
from sodeep.brainage.training import BEST_CHECKPOINT
from sodeep.checkpoints import CHECKPOINT_FORMAT, CheckpointError, read_weights_only
from sodeep.files import file_digest
from sodeep.run_folder import CHOOSE_ANOTHER_OUT, PREVIOUS_RUN, RUN_RECORD, check_not_being_cleared

#: The settings (``run.json``) that fix a command's subjects and folds: a run folder's models can
#: start this command's runs only when these agree.
SAME_DATA = {
    "tabular": ("table_sha256", "age_column", "id_column", "site_column", "features", "folds", "split"),
    "nifti": ("manifest_sha256", "shape", "voxel_size", "folds", "split"),
    "synthetic": ("train", "test", "data_seed"),
}
#: What a training checkpoint's ``state_dict`` keys of the regressor start with (``AgeRegression.model``).
MODEL_PREFIX = "model."


@dataclass(frozen=True)
class FineTuning:
    """Where the training runs of ``sodeep brainage <command>`` start.

    Attributes:
        source: a run folder (then ``preset`` names its models) or a checkpoint file, resolved.
        sha256: the source's identity: of the file's bytes, or of the folder's ``run.json``
            record (command, configuration and run id, which a resumed or extended folder keeps).
        command: ``"tabular"``, ``"nifti"`` or ``"synthetic"``.
        preset: the run folder's preset whose models are used (``None`` for a file).
        freeze_backbone: train the regression head only
            (:func:`~sodeep.brainage.training.regression_head`).
        source_tests: test rows of each ``(seed, fold)`` run of the folder's preset.
    """

    source: Path
    sha256: str
    command: str
    preset: str | None = None
    freeze_backbone: bool = False
    source_tests: Mapping[tuple[int, int], list[int]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        command: str,
        settings: Mapping[str, Any],
        seeds: Sequence[int],
        folds: int,
        model: nn.Module,
        freeze_backbone: bool = False,
    ) -> FineTuning:
        """Check ``path`` as the start of the runs ``seeds x range(folds)`` (``folds=1`` for
        ``synthetic``) of ``command`` with ``settings`` (those ``run.json`` records), reading every
        checkpoint they will start from and checking it against ``model`` (an untrained model of
        the command's architecture); writes nothing."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"init_from: no file or folder at {path} to start the runs from")
        if path.is_file():
            checkpoint_weights(path, model)
            if command != "synthetic":
                _refuse_a_fold_of_the_same_data(path, command, settings)
            return cls(path.resolve(), file_digest(path), command, None, freeze_backbone)
        folder, preset = path, None
        if not (path / RUN_RECORD).is_file() and path.parent.name == "checkpoints":
            folder, preset = path.parent.parent, path.name
        record = _run_record(folder, command)
        _check_same_data(folder, record["config"], settings, command)
        preset, runs = _preset_runs(folder, preset)
        tests = {(run["seed"], run["fold"]): run.get("test_rows") for run in runs}
        _check_runs_held(folder, preset, tests, seeds, folds, command)
        fine_tuning = cls(folder.resolve(), _record_sha256(record), command, preset, freeze_backbone, tests)
        for seed in seeds:
            for fold in range(folds):
                checkpoint_weights(fine_tuning.checkpoint(seed, fold), model)
        return fine_tuning

    def checkpoint(self, seed: int, fold: int = 0) -> Path:
        """The file the run ``(seed, fold)`` starts from."""
        if self.preset is None:
            return self.source
        run = f"seed{seed}" if self.command == "synthetic" else f"seed{seed}_fold{fold}"
        return self.source / "checkpoints" / self.preset / run / BEST_CHECKPOINT

    def settings(self) -> dict[str, Any]:
        """What ``results.json`` records of the start (``settings["init_from"]``)."""
        return {
            "path": str(self.source),
            "sha256": self.sha256,
            "preset": self.preset,
            "freeze_backbone": self.freeze_backbone,
        }

    def describe(self, epochs: int, learning_rate: float) -> str:
        """One line for a command's output: where its runs start and what they train."""
        if self.preset is None:
            start = f"every run starts from {self.source}"
        else:
            same = "seed" if self.command == "synthetic" else "seed and fold"
            start = f"each run starts from the {self.preset} model of its {same} in {self.source}"
        trained = "the head only (backbone frozen)" if self.freeze_backbone else "every layer"
        epochs_text = f"{epochs} epoch{'s' * (epochs != 1)}"
        return f"fine-tuning: {start}; training {trained}, at most {epochs_text} at learning rate {learning_rate:g}"

    def start(self, model: nn.Module, seed: int, fold: int = 0, test_rows: Sequence[int] | None = None) -> dict:
        """Load into ``model`` the weights the run ``(seed, fold)`` starts from, after checking
        that a run folder's model of that run was tested on ``test_rows`` too (``None``: not
        checked).  Returns the provenance the run records: ``{"init_checkpoint",
        "init_checkpoint_sha256"}``."""
        path = self.checkpoint(seed, fold)
        if self.preset is not None:
            if (seed, fold) not in self.source_tests:
                run = f"seed {seed}" if self.command == "synthetic" else f"seed {seed} fold {fold}"
                raise ValueError(f"init_from: {self.source} has no finished {self.preset} run for {run}")
            tested = self.source_tests[(seed, fold)]
            if test_rows is not None and tested is not None and list(tested) != [int(row) for row in test_rows]:
                raise ValueError(
                    f"init_from: {path} was tested on other subjects than this run (seed {seed}, fold {fold}): the "
                    "folds differ, so that model may have trained on this run's test subjects"
                )
        model.load_state_dict(checkpoint_weights(path, model))
        return {"init_checkpoint": str(path), "init_checkpoint_sha256": file_digest(path)}


#: The settings ``run.json`` records of a command's fine-tuning (``None`` when it trains from scratch).
FOLDER_SETTINGS = (
    "init_from",
    "init_from_sha256",
    "init_from_preset",
    "freeze_backbone",
    "finetune_learning_rate",
    "finetune_epochs",
)


def open_fine_tuning(
    config: Any, command: str, data: Mapping[str, Any], *, folds: int, model: nn.Module
) -> tuple[FineTuning | None, dict[str, Any]]:
    """The :class:`FineTuning` of a command config (``None`` without ``init_from``), checked
    against the config's settings with ``data`` over them, and the settings the run folder's
    ``run.json`` records of it: the source resolved, its digest and preset, and the fine-tuning
    settings; all ``None`` for runs from scratch, where they do not apply."""
    if config.init_from is None:
        return None, dict.fromkeys(FOLDER_SETTINGS)
    out, source = Path(config.out).resolve(), Path(config.init_from).resolve()
    if source == out or out in source.parents:
        raise ValueError(f"init_from: {config.init_from} is in the output folder {config.out}; {CHOOSE_ANOTHER_OUT}")
    fine_tuning = FineTuning.open(
        config.init_from,
        command=command,
        settings={name: getattr(config, name) for name in SAME_DATA[command] if hasattr(config, name)} | dict(data),
        seeds=config.seeds,
        folds=folds,
        model=model,
        freeze_backbone=config.freeze_backbone,
    )
    return fine_tuning, {
        "init_from": str(fine_tuning.source),
        "init_from_sha256": fine_tuning.sha256,
        "init_from_preset": fine_tuning.preset,
    }


def started_from(init_from: Mapping[str, Any], config: Mapping[str, Any], *, folds: bool = True) -> str:
    """A report's sentence on where its runs started, from the results' ``settings["init_from"]``
    (:meth:`FineTuning.settings`) and ``settings["config"]`` (the training's); ``folds``: whether
    the runs are cross-validation folds (not those of ``synthetic``, one split per seed)."""
    path, preset = init_from["path"], init_from.get("preset")
    own = "seed and fold" if folds else "seed"
    source = f"the `{preset}` model of its own {own} in `{path}`" if preset else f"`{path}`"
    trained = "its head alone (backbone frozen)" if init_from.get("freeze_backbone") else "every layer"
    return (
        f"Fine-tuned: each run started from {source} (sha256 {init_from['sha256'][:12]}) and trained {trained}, "
        f"at most {config.get('max_epochs')} epochs at learning rate {config.get('learning_rate', 1e-3):g}."
    )


def checkpoint_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The regressor weights ``path`` holds (a training checkpoint's ``model.*`` weights, or a
    plain ``state_dict``), checked to fit ``model``; one-line ``ValueError`` otherwise."""
    try:
        payload = read_weights_only(Path(path))
    except CheckpointError as error:
        if isinstance(error.__cause__, pickle.UnpicklingError):  # a whole pickled model, say
            raise ValueError(
                f"init_from: {path} is a pickle of Python objects that a weights-only load refuses (a whole model "
                "saved with torch.save(model)?); save the model's weights, torch.save(model.state_dict(), path)"
            ) from None
        raise ValueError(f"init_from: {error}") from None
    except OSError as error:
        raise ValueError(f"init_from: {path} cannot be read ({error.strerror})") from None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        raise ValueError(
            f"init_from: {path} is a sodeep sorter checkpoint, not a brain-age regressor; give the output "
            "folder of a sodeep brainage run or a best.ckpt of one of its runs"
        )
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if isinstance(state, dict):
        weights = {key[len(MODEL_PREFIX) :]: value for key, value in state.items() if str(key).startswith(MODEL_PREFIX)}
    elif isinstance(payload, dict) and payload and all(torch.is_tensor(value) for value in payload.values()):
        weights = dict(payload)
    else:
        weights = {}
    if not weights:
        raise ValueError(
            f"init_from: {path} holds no regressor weights (neither a sodeep brainage training checkpoint "
            "nor a model's state_dict)"
        )
    _check_fits(weights, model, path)
    return weights


def _check_fits(weights: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    expected = model.state_dict()
    reshaped = [key for key in expected if key in weights and tuple(weights[key].shape) != tuple(expected[key].shape)]
    missing = [key for key in expected if key not in weights]
    extra = [key for key in weights if key not in expected]
    if reshaped:
        key = reshaped[0]
        detail = f"{key} is {tuple(weights[key].shape)} there, {tuple(expected[key].shape)} here"
    elif missing:
        detail = f"it lacks {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    elif extra:
        detail = f"it has {extra[0]}, which this {type(model).__name__} has not"
    else:
        return
    raise ValueError(
        f"init_from: {path} holds a model of another architecture or shape than this command's {type(model).__name__} ({detail})"
    )


def _run_record(folder: Path, command: str) -> dict[str, Any]:
    """The ``run.json`` record of a run folder of ``sodeep brainage <command>``."""
    check_not_being_cleared(folder, prefix="init_from: ")
    aside = folder / PREVIOUS_RUN
    if aside.is_dir():  # the record in the folder is then that of a replacement stopped early
        raise ValueError(
            f"init_from: an --overwrite of {folder} was stopped before its cohort was ready, and the run it replaces "
            f"is in {aside}; run a brain-age command with out={folder} (which puts it back first), or give init_from={aside}"
        )
    path = folder / RUN_RECORD
    if not path.is_file():
        raise ValueError(
            f"init_from: {folder} is not a run folder ({RUN_RECORD} is missing) nor a checkpoint file; give the "
            "output folder of a sodeep brainage run, FOLDER/checkpoints/PRESET, or a checkpoint file"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        held = record["command"], record["config"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"init_from: {path} is damaged") from None
    if held[0] != f"brainage {command}":
        raise ValueError(f"init_from: {folder} holds a {held[0]} run, not a brainage {command} run")
    return record


def _check_same_data(folder: Path, held: Mapping[str, Any], settings: Mapping[str, Any], command: str) -> None:
    differing = [key for key in SAME_DATA[command] if held.get(key) != settings.get(key)]
    if differing:
        changes = ", ".join(f"{key}: {held.get(key)!r} there, {settings.get(key)!r} here" for key in differing)
        data, own = (
            ("other data", "their own data") if command == "synthetic" else ("other data or folds", "their own folds")
        )
        raise ValueError(
            f"init_from: {folder} was trained on {data} ({changes}); its models can start runs on {own} only (a "
            "single checkpoint file starts every run from one model)"
        )


def _preset_runs(folder: Path, preset: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The preset whose models start the runs (``preset``, else the folder's only one) and its
    finished runs."""
    runs = _finished_runs(folder)
    if not runs:
        raise ValueError(
            f"init_from: {folder} holds no finished run yet; finish it first (the command that started it, with "
            "--resume), or start from another folder"
        )
    if preset is None and len(runs) != 1:
        names = " or ".join(f"{folder / 'checkpoints' / name}" for name in runs)
        raise ValueError(f"init_from: {folder} holds the presets {list(runs)}; give {names}")
    preset = preset if preset is not None else next(iter(runs))
    if preset not in runs:
        raise ValueError(f"init_from: {folder} holds no finished {preset!r} run; its presets: {list(runs)}")
    return preset, runs[preset]


def _check_runs_held(
    folder: Path, preset: str, held: Mapping[tuple[int, int], Any], seeds: Sequence[int], folds: int, command: str
) -> None:
    missing = [(seed, fold) for seed in seeds for fold in range(folds) if (seed, fold) not in held]
    if missing:
        # synthetic runs one split per seed: no folds to name
        name = (
            (lambda seed, fold: f"seed {seed}")
            if command == "synthetic"
            else (lambda seed, fold: f"seed {seed} fold {fold}")
        )
        shown = ", ".join(name(seed, fold) for seed, fold in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(
            f"init_from: {folder} has no finished {preset} run for {shown}{more} (it holds seeds "
            f"{sorted({seed for seed, _ in held})}); train them there first (resume it with those seeds) or "
            "fine-tune the seeds it holds"
        )


def _finished_runs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Preset -> finished runs of a run folder's ``results.json``."""
    if not (folder / RESULTS_FILE).is_file():
        raise ValueError(f"init_from: {folder} holds no finished run ({RESULTS_FILE} is missing)")
    try:
        results = read_results(folder / RESULTS_FILE, None)
    except ValueError as error:
        raise ValueError(f"init_from: {error}".split(f"; {RESTART_ADVICE}")[0]) from None
    return {name: entry["runs"] for name, entry in results["presets"].items() if entry["runs"]}


#: The setting of a run folder that names its subjects: the digest of its table or manifest.
SAME_SUBJECTS = {"tabular": "table_sha256", "nifti": "manifest_sha256"}


def _refuse_a_fold_of_the_same_data(path: Path, command: str, settings: Mapping[str, Any]) -> None:
    """Refuse ``path`` when it is ``FOLDER/checkpoints/<preset>/<run>/*.ckpt`` of a run folder
    of ``command`` on the same table or manifest (whatever its folds, columns or grid): that model
    was trained on subjects that these runs test."""
    parents = path.resolve().parents
    if len(parents) < 4 or parents[2].name != "checkpoints" or not (parents[3] / RUN_RECORD).is_file():
        return
    folder = parents[3]
    try:
        record = _run_record(folder, command)
    except ValueError:
        return  # another command's folder: not these subjects
    if record["config"].get(SAME_SUBJECTS[command]) != settings.get(SAME_SUBJECTS[command]):
        return
    differing = [key for key in SAME_DATA[command] if record["config"].get(key) != settings.get(key)]
    if not differing:
        raise ValueError(
            f"init_from: {path} is the model of one run of {folder}, on these same data and folds, so it has "
            f"seen the other folds' test subjects; give init_from={str(parents[1])!r} to start each run from the "
            "model of its own (seed, fold)"
        )
    changes = ", ".join(f"{key}: {record['config'].get(key)!r} there, {settings.get(key)!r} here" for key in differing)
    raise ValueError(
        f"init_from: {path} is the model of one run of {folder}, on these same subjects with other settings "
        f"({changes}), so it has seen test subjects of these runs; start from a model of another cohort, or give "
        "that folder with its settings to fine-tune each run from the model of its own (seed, fold)"
    )


def _record_sha256(record: Mapping[str, Any]) -> str:
    """Digest of a run folder's command, configuration and run id: what a resumed or extended
    folder keeps (its finished runs are never trained again), and an overwritten one changes."""
    from sodeep.brainage.commands import NOT_CONFIGURATION

    config = {key: value for key, value in record["config"].items() if key not in NOT_CONFIGURATION}
    identity = {"command": record["command"], "config": config, "run_id": record.get("run_id")}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
