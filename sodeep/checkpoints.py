"""Self-describing sorter checkpoints: a JSON-able config plus a ``state_dict``.

A checkpoint is a dict ``{"format": "sodeep-sorter", "version": 1, "architecture": str,
"config": dict, "state_dict": dict, "metadata": dict}`` written atomically (temporary file in the
same folder, then ``os.replace``) and read with ``torch.load(..., weights_only=True)``, so loading
never runs code from the file.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from importlib import resources
from numbers import Integral
from pathlib import Path
from typing import Any

import torch

from sodeep.files import atomic_torch_save
from sodeep.sorters import (
    REGISTER_HINT_END,
    REGISTER_HINT_START,
    SORTERS,
    OriginalCNNSorter,
    OriginalLSTMLargeSorter,
    Sorter,
    build_sorter,
    settings_problem,
)
from sodeep.sorters.base import UNSET_WEIGHTS

CHECKPOINT_FORMAT = "sodeep-sorter"
CHECKPOINT_VERSION = 1
#: First byte of a pickle of protocol 2 or later (torch's legacy, non-zip file format).
PICKLE_PROTOCOL_MARK = b"\x80"
DEFAULT_SORTER_FILE = "conv_sorter.pt"
#: The sorter a finished pretraining run writes in its folder.
RUN_SORTER = "sorter.pt"
#: The same design with two hidden layers: a little more faithful, slower (model card).
#: ``load_sorter(default_sorter_path(DEPTH2_SORTER_FILE))``.
DEPTH2_SORTER_FILE = "conv_sorter_depth2.pt"
#: Settings of the shipped sorter inside the rank losses (``SpearmanLoss()`` and the others with
#: ``sorter=None``): a temperature floor, in the units of the scores, that makes the ranks teach
#: (chosen on the learning-to-sort benchmark, docs/sorter.md).  ``load_sorter()`` alone gives the
#: sharp, scale-free ranks for evaluation.
TRAINING_SETTINGS: dict[str, Any] = {"temperature_floor": 0.1}


class CheckpointError(ValueError):
    """A file is not a usable sodeep sorter checkpoint (wrong kind, corrupt or mismatched)."""


def sorter_payload(sorter: Sorter, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of ``sorter`` (weights moved to CPU, in their dtype), or of the sorter
    inside ``torch.compile(sorter)``."""
    compiled = getattr(sorter, "_orig_mod", None)  # torch.compile's wrapper of a module
    if isinstance(compiled, Sorter):
        sorter = compiled
    if not isinstance(sorter, Sorter):
        raise TypeError(
            f"sorter must be a sodeep Sorter (see sodeep.sorters.SORTERS), got {type(sorter).__name__}; "
            "other modules are saved with torch.save(module.state_dict(), path)"
        )
    if any(value.is_meta for value in sorter.state_dict().values()):
        raise ValueError(
            "the sorter's weights are on the meta device, which holds no values: give them memory first "
            "(sorter.to_empty(device='cpu'), then sorter.reset_parameters() or load_state_dict)"
        )
    if sorter.weights_unset:
        raise ValueError(UNSET_WEIGHTS)
    _check_loadable(sorter)
    config = sorter.config()
    try:
        json.dumps(config)  # configs must stay plain JSON so checkpoints describe themselves
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{type(sorter).__name__}.config() must be plain JSON (numbers, text, lists, dicts): {error}"
        ) from None
    problem = settings_problem(type(sorter), config, sorter.architecture)
    if problem:  # as load_sorter would find it
        raise TypeError(
            f"{type(sorter).__name__}.config() gives {sorted(config)}, which would not rebuild it ({problem}): its "
            "keys must be the class's own named arguments, as a checkpoint rebuilds it with them"
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    for key in _keys_not_text(metadata):  # JSON would turn it into text: the metadata loaded back would differ
        raise TypeError(f"metadata keys must be text, got {key!r} ({type(key).__name__}): write it as {str(key)!r}")
    try:
        metadata = json.loads(json.dumps(metadata or {}))
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be plain JSON (numbers, text, lists, dicts): {error}") from None
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "architecture": sorter.architecture,
        "config": config,
        "state_dict": {key: value.detach().cpu() for key, value in sorter.state_dict().items()},
        "metadata": metadata,
    }


def _check_loadable(sorter: Sorter) -> None:
    """Refuse to save a sorter whose checkpoint would load as another class, or not at all: its
    ``architecture`` must name its own class in :data:`sodeep.sorters.SORTERS`."""
    name, cls = sorter.architecture, type(sorter)
    registered = SORTERS.get(name)
    if registered is cls:
        return
    if registered is None and name:
        raise ValueError(
            f"architecture {name!r} ({cls.__name__}) is not registered, so its checkpoint would not load: "
            f"sodeep.sorters.SORTERS[{name!r}] = {cls.__name__} (before saving and before loading)"
        )
    found = (
        f"{cls.__name__} has no architecture name"
        if not name
        else (f"{cls.__name__} saves as architecture {name!r}, which loads as {registered.__name__}")
    )
    raise ValueError(
        f"{found}: set architecture = '<name>' on {cls.__name__}, a name of its own, and register it, "
        f"sodeep.sorters.SORTERS['<name>'] = {cls.__name__} (before saving and before loading)"
    )


def _keys_not_text(value: Any, enclosing: frozenset[int] = frozenset()) -> Iterator[Any]:
    """The dict keys in ``value`` (nested in dicts, lists and tuples) that are not strings.  A
    container inside itself is not entered again (JSON refuses it as a circular reference)."""
    if id(value) in enclosing or not isinstance(value, (dict, list, tuple)):
        return
    enclosing = enclosing | {id(value)}
    for key, item in value.items() if isinstance(value, dict) else enumerate(value):
        if isinstance(value, dict) and not isinstance(key, str):
            yield key
        yield from _keys_not_text(item, enclosing)


def save_sorter(sorter: Sorter, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``sorter`` as a self-describing checkpoint at ``path`` (atomically).

    ``path`` may hold a sorter checkpoint (replaced) or an empty file; any other file is refused
    (``ValueError``), as are non-finite weights, which :func:`load_sorter` would refuse to load,
    and a path inside a run folder, whose files are its command's (a sorter saved there would
    pass for the run's own, and the run's ``--overwrite`` would delete it).  A folder at ``path``
    raises ``IsADirectoryError``.
    """
    from sodeep.run_folder import enclosing_run_folder

    run_folder = enclosing_run_folder(path)
    if run_folder is not None:
        raise ValueError(
            f"{path} is inside the run folder {run_folder}, whose files its command writes; save to a path outside it"
        )
    return write_sorter_checkpoint(sorter, path, metadata)


def write_sorter_checkpoint(sorter: Sorter, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """:func:`save_sorter` without the run-folder rule: how a pretraining run writes its own
    ``sorter.pt``."""
    payload = sorter_payload(sorter, metadata)
    if not all(torch.isfinite(value).all() for value in payload["state_dict"].values() if value.is_floating_point()):
        raise ValueError("the sorter has non-finite weights (NaN or inf); its checkpoint would not load")
    target = Path(path)
    if target.is_file() and target.stat().st_size > 0:
        try:
            _check_sorter_format(read_weights_only(target), str(target))
        except (CheckpointError, ValueError, OSError):
            raise ValueError(f"{target} exists and is not a sorter checkpoint; save to another path") from None
    return atomic_torch_save(payload, path)


def _check_sorter_format(payload: Any, source: str) -> None:
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        kind = type(payload).__name__ if not isinstance(payload, dict) else f"dict with keys {sorted(payload)[:8]}"
        hyper_parameters = payload.get("hyper_parameters") if isinstance(payload, dict) else None
        if isinstance(hyper_parameters, dict) and "sorter_config" in hyper_parameters:
            raise CheckpointError(
                f"{source} is a training checkpoint of a pretraining run, not a sorter checkpoint: turn it into one "
                f"with `sodeep export {source} sorter.pt` (sodeep.pretraining.sorter_from_training_checkpoint in "
                "Python), or give the run's folder, whose sorter.pt a finished run holds"
            )
        if isinstance(hyper_parameters, dict):
            # A Lightning checkpoint of another model, such as a brain-age regressor: nothing exports it.
            raise CheckpointError(
                f"{source} is a Lightning checkpoint of another model (hyper-parameters "
                f"{sorted(hyper_parameters)[:6]}), not of a sorter: only the checkpoints of a pretraining run become "
                "sorters (`sodeep export`, or sodeep.pretraining.sorter_from_training_checkpoint)"
            )
        raise CheckpointError(
            f"{source} is not a sodeep sorter checkpoint (found {kind}). The training checkpoints of a "
            "pretraining run become sorters with `sodeep export` (sodeep.pretraining.sorter_from_training_checkpoint "
            "in Python); original SoDeep/TSAN .pth.tar "
            "files are imported with sodeep.checkpoints.import_original_checkpoint(..., trust_pickle=True)."
        )
    version = payload.get("version")
    if type(version) is not int or version != CHECKPOINT_VERSION:  # True == 1, 1.0 == 1: not a version
        raise CheckpointError(f"{source} has checkpoint version {version!r}, expected {CHECKPOINT_VERSION}")


def sorter_from_payload(payload: Any, source: str = "checkpoint") -> Sorter:
    """Rebuild a sorter from a checkpoint dict, checking it against the architecture."""
    _check_sorter_format(payload, source)
    architecture = payload.get("architecture")
    if architecture not in SORTERS:
        raise CheckpointError(
            f"{source} names unknown architecture {architecture!r}; known: {sorted(SORTERS)}{REGISTER_HINT_START} "
            f"loads once registered in the process: sodeep.sorters.SORTERS[{architecture!r}{REGISTER_HINT_END}"
        )
    if "config" not in payload:
        raise CheckpointError(
            f"{source} holds no config (its sorter's settings), which the weights alone do not give: "
            "save sorters with sodeep.save_sorter"
        )
    config = payload["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{source} has a config of type {type(config).__name__}, not a dict of settings")
    config = dict(config)
    if architecture == "conv":
        config.setdefault("activation", "gelu")  # a conv checkpoint without the setting holds a GELU sorter
        config.setdefault("temperature_floor", None)
    try:
        sorter = build_sorter(architecture, **config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source} has a config that does not fit {architecture!r}: {error}") from error
    # Every setting is recorded (save_sorter writes them all): one left out would silently take
    # the default, which need not be what the weights were trained with.
    settings = inspect.signature(SORTERS[architecture]).parameters
    missing = sorted(name for name in settings if name not in config)
    if missing:
        raise CheckpointError(
            f"{source} does not record the setting{'s' if len(missing) > 1 else ''} {', '.join(missing)} of its "
            f"{architecture!r} sorter, which the weights alone do not give: the file was edited, or not written "
            "by sodeep.save_sorter"
        )
    weights = payload.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(value, torch.Tensor) for value in weights.values()):
        found = "none" if weights is None else type(weights).__name__
        raise CheckpointError(f"{source} holds no weights (its state_dict is {found}, not a dict of tensors)")
    expected = sorter.state_dict()
    mistyped = sorted(
        key
        for key, value in weights.items()
        if key in expected and value.is_floating_point() != expected[key].is_floating_point()
    )
    if mistyped:
        raise CheckpointError(
            f"{source} holds weights of the wrong kind ({', '.join(mistyped[:3])}: integer where the sorter has "
            "floating point, or the reverse): the file was edited, or not written by sodeep.save_sorter"
        )
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{source} has metadata of type {type(metadata).__name__}, not a dict")
    dtypes = {value.dtype for value in weights.values() if value.is_floating_point()}
    if len(dtypes) == 1 and dtypes != {torch.float32}:
        sorter.to(dtypes.pop())  # a sorter saved in float64 (or half) comes back in its dtype
    try:
        with warnings.catch_warnings():
            # Under a meta device context the sorter is built without memory, and copying into it is
            # a no-op, of which torch warns: reset_parameters() loads the weights after to_empty.
            warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model, which is a no-op")
            sorter.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise CheckpointError(f"{source}: weights do not match architecture {architecture!r}: {reason}") from error
    weights = payload["state_dict"].values()  # the file's own tensors (the sorter may be on the meta device)
    if not all(torch.isfinite(value).all() for value in weights if value.is_floating_point()):
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or inf): the training that wrote it diverged, or the file is damaged"
        )
    sorter.checkpoint_metadata = metadata
    # Kept for reset_parameters(): a sorter built on the meta device gets its weights after to_empty.
    sorter.checkpoint_weights = {key: value.detach() for key, value in payload["state_dict"].items()}
    return sorter.eval()


def default_sorter_path(file_name: str = DEFAULT_SORTER_FILE) -> Path:
    """Path of a shipped sorter: the default (``pretrained/conv_sorter.pt``) or another file of
    ``pretrained/`` such as :data:`DEPTH2_SORTER_FILE`."""
    try:
        return Path(str(resources.files("sodeep.pretrained") / file_name))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "pretrained" / file_name


def resolve_map_location(map_location: Any) -> Any:
    """``map_location`` as ``torch.load`` takes it: a device this machine can hold tensors on
    (``"cpu:0"`` is ``"cpu"``), a dict or a function (passed on).  Anything else is a
    ``ValueError`` or ``TypeError`` naming it, not a :class:`CheckpointError`: the file is not at
    fault (e.g. ``"cuda"`` without a GPU, or ``"meta"``, which keeps no weights)."""
    if map_location is None or isinstance(map_location, dict) or callable(map_location):
        return map_location
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(
            "map_location must be a device (e.g. 'cpu', 'cuda:0' or a torch.device), a dict or a function, "
            f"got {type(map_location).__name__} {map_location!r}"
        )
    named = f"map_location={str(map_location)!r}"
    try:
        device = torch.device(map_location)
        torch.empty(0, device=device)
    except NotImplementedError:  # PyTorch's message lists every backend it does have
        reason = f"this PyTorch build has no {torch.device(map_location).type} backend"
        raise ValueError(f"{named} cannot be used on this machine: {reason}") from None
    except Exception as error:  # RuntimeError, AssertionError, ModuleNotFoundError (e.g. "hpu")...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{named} cannot be used on this machine: {reason}") from None
    if device.type == "meta":
        raise ValueError(f"{named} keeps no values, and a checkpoint is loaded for its weights: use 'cpu' or a GPU")
    return "cpu" if device.type == "cpu" else map_location


def read_weights_only(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a :class:`CheckpointError` that says what is
    wrong with a file that cannot be read: empty, truncated or not a torch file, or a pickle of
    Python objects that a weights-only load refuses to build.  A ``map_location`` that fails on
    a readable file is a ``ValueError`` naming it (see :func:`resolve_map_location`)."""
    path = Path(path)
    map_location = resolve_map_location(map_location)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint")
    with open(path, "rb") as stream:
        pickled = stream.read(1) == PICKLE_PROTOCOL_MARK  # the legacy torch format: a bare pickle
    try:
        archived = zipfile.is_zipfile(path)
    except Exception as error:  # a damaged central directory: BadZipFile, NotImplementedError...
        raise CheckpointError(f"{path} is a damaged torch checkpoint ({type(error).__name__})") from error
    if not archived and not pickled:
        raise CheckpointError(f"{path} is not a torch checkpoint (truncated, corrupt or another kind of file)")
    if archived:
        # torch.load does not check the archive's CRCs: a flipped bit would load as other weights.
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
                # A file's member marked as a folder (the MS-DOS attribute) is read by torch as holding
                # no bytes: its tensor would load with whatever its memory held.  (Folder entries, named
                # with a final "/", are harmless: torch reads members by their files' names.)
                emptied = next(
                    (info.filename for info in archive.infolist() if info.external_attr & 0x10 and not info.is_dir()),
                    None,
                )
        except Exception as error:  # BadZipFile, "encrypted", "compression method is not supported"...
            raise CheckpointError(f"{path} is a damaged torch checkpoint ({type(error).__name__})") from error
        if damaged is not None:
            raise CheckpointError(f"{path} is a damaged torch checkpoint: {damaged} fails its checksum")
        if emptied is not None:
            raise CheckpointError(f"{path} is a damaged torch checkpoint: {emptied} is marked as a folder")
    try:
        with warnings.catch_warnings():
            # torch's note on a bare pickle of another protocol: the error below says what the file is.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} is a pickle that a weights-only load refuses (Python objects, or a pickle that torch did not "
            "write), so it is not a sodeep checkpoint; "
            "an original SoDeep/TSAN .pth.tar from a source you trust can be imported with "
            "sodeep.checkpoints.import_original_checkpoint(path, trust_pickle=True)"
        ) from error
    except Exception as error:  # a damaged archive: torch raises RuntimeError, EOFError, KeyError...
        if map_location not in (None, "cpu") and _loads_on_cpu(path):
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(
                f"map_location={map_location!r} failed on {path}, which loads on the CPU: {type(error).__name__}: {reason}"
            ) from error
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt: {type(error).__name__})"
        ) from error


def _loads_on_cpu(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def load_sorter(
    path: str | os.PathLike | None = None,
    map_location: Any = "cpu",
    *,
    trainable: bool = False,
    **settings: Any,
) -> Sorter:
    """Load a sorter checkpoint; ``path=None`` loads the shipped default, offline, and a
    pretraining run folder loads the ``sorter.pt`` it wrote.

    The result is in eval mode and frozen (no gradient to its weights), as a loss uses it;
    ``trainable=True`` returns it in train mode with gradients, to fine-tune it (outside a loss: a
    rank loss freezes the sorter given to it, in place, and warns when it was loaded so).  ``settings``
    replace entries of the checkpoint's architecture config that change no weight shape (and,
    for a sorter with hidden layers, that those layers do not read: its activation and capacity
    stay), e.g.
    ``load_sorter(**TRAINING_SETTINGS)`` (what the rank losses use) or ``load_sorter(softness=0.5)``.
    ``map_location`` is ``torch.load``'s (a device, a dict or a function).  Raises
    :class:`CheckpointError` (a ``ValueError``) for a file that is missing, corrupt, of another
    kind, or whose weights do not fit its declared architecture, and a plain ``ValueError`` (or
    ``TypeError``) for a ``map_location`` this machine cannot load onto.  Under a meta device
    context (``with torch.device("meta")``) the sorter is built without memory, as torch's modules
    are; after ``to_empty``, :meth:`~sodeep.sorters.Sorter.reset_parameters` gives it the
    checkpoint's weights.  The sorter is built with random initial weights, then given the
    checkpoint's: loading it (or building a rank loss with its default sorter) draws from torch's
    global random generator, so two runs whose models should start alike build their model right
    after seeding, or seed again after building their losses.

    Example:
        >>> sorter = load_sorter()
        >>> sorter(torch.tensor([3.0, 1.0, 2.0, 2.0])).detach()  # exact: [0.25, 1, 0.625, 0.625]
        tensor([0.2500, 1.0000, 0.6250, 0.6250])
    """
    if not isinstance(trainable, bool):
        raise TypeError(f"trainable must be True or False, got {trainable!r}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a checkpoint file, a run folder or None, got {path!r}")
    path = Path(path) if path is not None else default_sorter_path()
    if path.is_dir():
        path = run_folder_sorter(path)
    if not path.is_file():
        _check_missing_sorter(path)
    payload = read_weights_only(path, map_location)
    _check_sorter_format(payload, str(path))
    if _holds_meta_weights(payload):
        if map_location is None or (
            torch.device(map_location).type != "meta"
            if isinstance(map_location, (str, torch.device))
            else _holds_meta_weights(read_weights_only(path, "cpu"))  # a dict or a function: read as saved
        ):
            raise CheckpointError(
                f"{path} holds its weights on the meta device, which keeps no values: save the sorter "
                "after its weights are set (reset_parameters or load_state_dict)"
            )
        raise ValueError(f"map_location={map_location!r} put the weights on the meta device, which keeps no values")
    if not settings:
        sorter = sorter_from_payload(payload, source=str(path))
    else:
        known = payload.get("config", {})
        if not isinstance(known, dict):
            raise CheckpointError(f"{path} has a config of type {type(known).__name__}, not a dict of settings")
        unknown = sorted(set(settings) - set(known) - {"temperature_floor"})
        if unknown:
            sorter_from_payload(payload, source=str(path))  # raises if the file itself is at fault
            from sodeep.sorters import unknown_setting_hint

            described = ", ".join(f"{name!r}{unknown_setting_hint(name, sorted(known))}" for name in unknown)
            raise ValueError(f"unknown sorter settings {described}; {path} has {sorted(known)}")
        if payload.get("architecture") == "conv" and isinstance(known.get("depth"), int) and known["depth"] > 0:
            # Inputs of a trained hidden layer: the activation, and capacity through the log n / log capacity feature.
            fed = sorted(
                name for name in ("activation", "capacity") if name in settings and settings[name] != known.get(name)
            )
            if fed:
                raise ValueError(
                    f"sorter settings {fed} of {path} feed its trained network (depth {known['depth']}): another value "
                    "changes what the network computes; only settings outside it can be replaced (softness, band, "
                    "temperature_floor)"
                )
        try:
            sorter = sorter_from_payload({**payload, "config": {**known, **settings}}, source=str(path))
        except CheckpointError as error:
            sorter_from_payload(payload, source=str(path))  # raises if the file itself is at fault
            if isinstance(error.__cause__, (RuntimeError, KeyError)):  # from load_state_dict
                reason = "they change the shapes of its weights (only settings that keep them can be replaced)"
            else:
                reason = " ".join(str(error.__cause__ or error).split())
            raise ValueError(f"sorter settings {settings} do not fit the sorter in {path}: {reason}") from None
    sorter.loaded_to_fine_tune = trainable  # a rank loss given it warns that it freezes it
    return sorter.train().requires_grad_(True) if trainable else sorter.requires_grad_(False)


def recorded_command(folder: str | os.PathLike) -> str | None:
    """The command whose run the folder ``folder`` holds (its ``run.json``), or ``None``."""
    from sodeep.run_folder import RUN_RECORD

    try:
        command = json.loads((Path(folder) / RUN_RECORD).read_text(encoding="utf-8"))["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return command if isinstance(command, str) else None


def check_pretraining_folder(folder: Path) -> None:
    """A :class:`CheckpointError` if ``folder`` holds another command's run."""
    command = recorded_command(folder)
    if command is not None and command != "pretrain":
        raise CheckpointError(f"{folder} holds a {command} run, not a pretraining run: it has no sorter")


def _holds_meta_weights(payload: Any) -> bool:
    weights = payload.get("state_dict") if isinstance(payload, dict) else None
    return isinstance(weights, dict) and any(
        isinstance(value, torch.Tensor) and value.is_meta for value in weights.values()
    )


def _check_missing_sorter(path: Path) -> None:
    """The :class:`CheckpointError` for no file at ``path``: where it is the ``sorter.pt`` of a
    pretraining run folder, why that run holds none yet (:func:`run_folder_sorter`); where it is
    named like a shipped sorter, that file's path."""
    if path.name == RUN_SORTER and recorded_command(path.parent) == "pretrain":
        run_folder_sorter(path.parent)  # raises, saying why the run holds no sorter and what to do
    shipped = default_sorter_path(path.name)
    hint = f"; the shipped file of that name is {shipped}" if path.suffix == ".pt" and shipped.is_file() else ""
    raise CheckpointError(f"no sorter checkpoint at {path}{hint}")


def run_folder_sorter(folder: str | os.PathLike) -> Path:
    """The sorter a pretraining run folder holds; a :class:`CheckpointError` that says why not
    (not a run folder, another command's run, a run not finished)."""
    from sodeep.run_folder import PREVIOUS_RUN, RUN_RECORD, check_not_being_cleared, check_not_in_use

    folder = Path(folder)
    check_not_being_cleared(folder, error=CheckpointError)
    if recorded_command(folder) is None:
        raise CheckpointError(
            f"{folder} is a folder, neither a sorter checkpoint nor a pretraining run folder (no readable {RUN_RECORD})"
        )
    check_pretraining_folder(folder)
    if not (folder / RUN_SORTER).is_file():
        last = folder / "checkpoints" / "last.ckpt"
        try:
            check_not_in_use(folder, f"turn its last checkpoint, {last}, into a sorter with `sodeep export`")
        except ValueError as running:
            raise CheckpointError(
                f"{folder} holds no {RUN_SORTER} yet and {str(running).removeprefix(f'{folder} ')}"
            ) from None
        aside = folder / PREVIOUS_RUN
        if not last.is_file() and (aside / RUN_SORTER).is_file():
            raise CheckpointError(
                f"{folder} holds no {RUN_SORTER}: an --overwrite was stopped before training, and the run it "
                f"replaces is in {aside} (the next pretraining in {folder} puts it back); load {aside}, or run the "
                "pretraining again"
            )
        if not last.is_file():
            raise CheckpointError(
                f"{folder} holds no {RUN_SORTER} and no checkpoint: its pretraining run stopped before its first "
                "checkpoint; run its pretraining again"
            )
        raise CheckpointError(
            f"{folder} holds no {RUN_SORTER}: its pretraining run has not finished (stopped or failed); resume it "
            "by running its pretraining again with resume=True, or turn its last checkpoint, "
            f"{last}, into a sorter (`sodeep export`, or sodeep.pretraining.sorter_from_training_checkpoint)"
        )
    return folder / RUN_SORTER


#: The original code's ``model_type`` -> the sorter that has its weights (``lstm``, its baseline,
#: is ``lstm_large`` with 128 units instead of 512).
_ORIGINAL_ARCHITECTURES = {
    "cnn": OriginalCNNSorter,
    "lstm": functools.partial(OriginalLSTMLargeSorter, hidden_size=128),
    "lstmla": OriginalLSTMLargeSorter,
}


def import_original_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> Sorter:
    """Import a sorter trained with the original SoDeep code (or TSAN's copy of it).

    Those ``.pth.tar`` files pickle an ``argparse.Namespace`` (``args_dict``) next to the
    ``state_dict``; unpickling can run arbitrary code, so it happens only with
    ``trust_pickle=True``, for files you trust.  Supported ``model_type``: ``cnn``, ``lstm``,
    ``lstmla``.  A file that cannot be read, or is of another kind, raises :class:`CheckpointError`;
    without ``trust_pickle=True``, ``PermissionError`` (the file is not opened).
    Save the result with :func:`save_sorter` to get a safe, self-describing checkpoint.
    """
    if not trust_pickle:
        raise PermissionError(
            f"importing {path} requires unpickling, which can execute code from the file; "
            "pass trust_pickle=True only for a file you trust"
        )
    import argparse  # noqa: F401  (the pickle refers to argparse.Namespace)

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated, corrupt or not a torch file: torch raises many kinds
        raise CheckpointError(
            f"{path} is not a readable original SoDeep checkpoint (empty, truncated, corrupt or another "
            f"kind of file: {type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or "state_dict" not in payload or "args_dict" not in payload:
        raise CheckpointError(f"{path} is not an original SoDeep checkpoint (needs 'state_dict' and 'args_dict')")
    arguments = payload["args_dict"]
    if isinstance(arguments, dict):  # a copy that kept the Namespace's fields as a dict
        arguments = argparse.Namespace(**{str(key): value for key, value in arguments.items()})
    model_type, length = getattr(arguments, "model_type", None), getattr(arguments, "seq_len", None)
    if model_type not in _ORIGINAL_ARCHITECTURES:
        raise CheckpointError(
            f"{path}: model_type {model_type!r} is not importable; supported: {sorted(_ORIGINAL_ARCHITECTURES)}"
        )
    whole = isinstance(length, Integral) or (isinstance(length, float) and length.is_integer())
    try:
        if isinstance(length, bool) or not whole:
            raise ValueError("it must be a whole number")
        sorter = _ORIGINAL_ARCHITECTURES[model_type](length=int(length))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: seq_len {length!r} does not make a {model_type} sorter: {error}") from None
    state_dict = payload["state_dict"]
    if isinstance(state_dict, dict) and state_dict and all(str(key).startswith("module.") for key in state_dict):
        # Saved from inside nn.DataParallel / DistributedDataParallel, which prefix every name.
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    try:
        sorter.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match {model_type} at seq_len={length}: {error}") from error
    return sorter.eval().requires_grad_(False)  # frozen, as load_sorter returns a sorter


def same_sorter_source(given: Any, recorded: Any) -> bool:
    """Whether two spellings of ``init_from`` name one sorter file (a run folder names its
    ``sorter.pt``; relative paths are read from the working folder)."""
    if not isinstance(given, str) or not isinstance(recorded, str):
        return False

    def sorter_file(text: str) -> Path:
        path = Path(text).expanduser().resolve()
        return path / RUN_SORTER if path.is_dir() else path

    return sorter_file(given) == sorter_file(recorded)
