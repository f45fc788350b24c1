"""Settings of brain-age training and of the ``sodeep brainage`` commands, with their checks.

Each command has one dataclass (:class:`TabularConfig`, :class:`SyntheticConfig`,
:class:`NiftiConfig`) whose field defaults are the command's defaults: the command line, YAML
files (:func:`load_config`) and the Python API (:mod:`sodeep.brainage.commands`) all read them.
A config is checked when it is built: a bad value raises ``ValueError`` with one line that names
the field, the value seen and what is expected.

Example:
    >>> config = load_config(TabularConfig, {"folds": 3, "seeds": 0}, losses=["l1"])
    >>> config.folds, config.seeds, config.losses
    (3, [0], ['l1'])
    >>> load_config(TabularConfig, {"fold": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown setting 'fold' (did you mean 'folds'?)
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any

from sodeep.brainage.augmentation import AUGMENTATIONS
from sodeep.brainage.datasets import BUNDLED_DATASETS, DEFAULT_DATASET, bundled_table_path
from sodeep.brainage.folds import check_folds
from sodeep.brainage.losses import BRAIN_AGE_PRESETS, check_batch_pairs
from sodeep.brainage.metrics import CORRELATION_SUBJECTS
from sodeep.brainage.models import hidden_widths
from sodeep.checks import check_integer, python_scalar
from sodeep.config import (
    MAX_SEED,
    SCALE_OUT,
    WANDB_MODES,
    check_scale_out,
    checking_yaml_settings,
    close_names,
    parse_devices,
    read_yaml_mapping,
    run_action_hint,
    yaml_reading,
)

#: SFCN block orders (``--block-order``) and the blocks whose means reach the regressor (``--pooled-blocks``).
BLOCK_ORDERS = ("pool-norm", "norm-pool")
POOLED_BLOCKS = ("all", "last")
#: Cross-validation protocols of ``tabular`` (``--split``): age-stratified folds, or folds of whole sites.
SPLITS = ("stratified", "site")


def check_fit_settings(
    batch_size: int,
    max_epochs: int,
    patience: int,
    learning_rate: float,
    weight_decay: float,
    ema_decay: float | None,
    max_minutes: float | None = None,
) -> None:
    """Refuse settings of :func:`sodeep.brainage.training.fit_age_model` that cannot train (a
    batch of one subject is checked against the loss by :func:`~sodeep.brainage.losses.check_batch_pairs`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise ValueError(f"max_minutes must be None or > 0, got {max_minutes}")
    if max_epochs < 1 or patience < 1:
        # No epoch would leave no checkpoint to restore.  Patience counts validation epochs without
        # improvement before training stops: 1 stops at the first, and there is nothing sooner.
        raise ValueError(f"max_epochs must be >= 1 and patience >= 1, got {max_epochs} and {patience}")
    if not (math.isfinite(learning_rate) and learning_rate > 0) or not weight_decay >= 0:
        raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, got {learning_rate} and {weight_decay}")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay must be None or in (0, 1), got {ema_decay}")


def check_run_plan(presets: Sequence[str], seeds: Sequence[int]) -> None:
    """Refuse an empty plan, repeats, seeds outside ``0..MAX_SEED`` and preset names not in
    :data:`sodeep.brainage.losses.BRAIN_AGE_PRESETS` (naming the closest)."""
    if not list(seeds) or not list(presets):
        raise ValueError(f"need at least one seed and one preset, got seeds {list(seeds)} and presets {list(presets)}")
    unknown = [name for name in presets if name not in BRAIN_AGE_PRESETS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(BRAIN_AGE_PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        parts = [part.strip() for part in unknown[0].split(",")]
        if len(parts) > 1 and all(part in BRAIN_AGE_PRESETS for part in parts):  # "l1,mse": a list was meant
            hint = f" ({' and '.join(parts)} are {len(parts)} presets: give them as a list, --losses {' '.join(parts)} or [{', '.join(parts)}] in YAML)"
        raise ValueError(
            f"losses must be known presets, got unknown ones {unknown}{hint}; known: {list(BRAIN_AGE_PRESETS)}"
        )
    for name, values in (("losses", list(presets)), ("seeds", list(seeds))):
        repeated = sorted({value for value in values if values.count(value) > 1}, key=str)
        if repeated:
            raise ValueError(f"{name} must not repeat, got {values} ({repeated} twice)")
    if min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise ValueError(f"seeds must be >= 0 and <= {MAX_SEED} (NumPy's seeds), got {list(seeds)}")


@dataclass
class TrainingConfig:
    """Model and optimisation settings shared by every preset of a cross-validation."""

    hidden: Sequence[int] = (256, 64)
    dropout: float = 0.2
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 30
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    validation_fraction: float = 0.1
    ema_decay: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for item in fields(self):  # NumPy scalars as the Python numbers they hold (results.json records them)
            setattr(self, item.name, python_scalar(getattr(self, item.name)))
        self.hidden = hidden_widths(self.hidden)
        for name in ("batch_size", "max_epochs", "patience"):
            check_integer(getattr(self, name), name, 1)
        for name in ("learning_rate", "weight_decay", "dropout", "validation_fraction", "ema_decay"):
            value = getattr(self, name)
            if not (value is None and name == "ema_decay") and (isinstance(value, bool) or not isinstance(value, Real)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        check_fit_settings(**self.fit_options())
        if not 0.0 < self.validation_fraction < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1) and dropout in [0, 1), got {self.validation_fraction} "
                f"and {self.dropout}"
            )

    def fit_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`sodeep.brainage.training.fit_age_model` it sets."""
        names = ("batch_size", "max_epochs", "patience", "learning_rate", "weight_decay", "ema_decay")
        return {name: getattr(self, name) for name in names}


def _finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the annotated type ``hint`` (int, float, str, bool, ``list[...]``, ``... | None``)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        hint = next(option for option in options if option is not type(None))
    value = python_scalar(value)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        many = isinstance(value, (list, tuple, range)) or type(value).__module__ == "numpy"  # NumPy arrays too
        items = list(value) if many else [value]
        try:
            return [_coerce(entry, item, name) for entry in items]
        except ValueError as error:
            if many:
                raise
            one = f"{name} must be {item.__name__}"  # a value that is neither a list nor an item
            raise ValueError(str(error).replace(one, f"{one} or a list of them", 1)) from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _finite_number(value) and "_" not in value:
        return float(value)  # YAML reads 1e-3 (no dot) as text
    if hint is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        reading = yaml_reading(value, "number" if hint in (int, float) else "text", name)
        shown = repr(value)
        # A table, an array: its type alone, in one line (its repr would take dozens).
        got = (
            f"{shown} ({type(value).__name__})"
            if len(shown) <= 80 and "\n" not in shown
            else f"a {type(value).__name__}"
        )
        if name in PATH_SETTINGS and hasattr(value, "to_csv"):
            got += " (a path is expected: write a table to a CSV file first)"
        raise ValueError(f"{name} must be {hint.__name__}, got {got}{reading}")
    return value


#: Settings a command cannot run without (no default).
REQUIRED_SETTINGS = ("manifest",)

#: Settings that are paths: a leading ``~`` is the home folder.
PATH_SETTINGS = ("out", "csv", "manifest", "cache", "init_from")


@dataclass
class CommandConfig:
    """Settings and behaviour every command config shares: fine-tuning, W&B and where it trains;
    coercion to the annotated types, then :meth:`check`.

    Every command trains where ``accelerator``, ``devices``, ``strategy`` and ``num_nodes`` say
    (Lightning's settings, read as :class:`sodeep.config.PretrainConfig` reads them;
    docs/scaling.md): by default in one CPU process.  They are not part of a run folder's
    configuration, so a run may be resumed on other hardware.

    Every command can fine-tune (:mod:`sodeep.brainage.finetuning`): ``init_from`` (a run folder
    of the same command on the same data and folds, or a checkpoint file) is where its runs start;
    ``freeze_backbone`` trains the regression head alone; ``finetune_learning_rate`` and
    ``finetune_epochs`` replace the learning rate and ``max_epochs`` of runs that start from
    ``init_from`` (``None``: the same as from scratch), and do not apply without it.
    """

    init_from: str | None = None
    freeze_backbone: bool = False
    finetune_learning_rate: float | None = None
    finetune_epochs: int | None = None
    #: ``offline``, ``online`` or ``disabled``; ``None``: ``WANDB_MODE``'s, else a resumed run's own,
    #: else offline (:func:`sodeep.config.run_wandb_mode`).
    wandb: str | None = None
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in NONE_SPELLED and _spells_none(value):  # as the flags and YAML read it
                setattr(self, item.name, None)
            elif item.name != "devices":  # a count, "auto" or indices: read by check()
                setattr(self, item.name, _coerce(value, hints[item.name], item.name))
        for name in PATH_SETTINGS:
            value = getattr(self, name, None)
            if isinstance(value, str) and not value.strip():  # not the working folder, which nobody wrote
                raise ValueError(f"{name} must be a path, not empty text, got {value!r}")
            # ~/runs is a folder in the home folder (Lightning and W&B read it so), also from YAML.
            if isinstance(value, str):
                setattr(self, name, os.path.expanduser(value))
        self.check()

    def check(self) -> None:
        """Settings every command has: presets, seeds, batch size (of 2 or more subjects where a
        preset compares them), epochs, patience, W&B mode."""
        check_run_plan(self.losses, self.seeds)
        if not str(self.out).strip():
            raise ValueError(f"out must be the path of a run folder, got {self.out!r}")
        optimiser = TrainingConfig.learning_rate, TrainingConfig.weight_decay  # not command settings
        check_fit_settings(
            self.batch_size, self.max_epochs, self.patience, *optimiser, getattr(self, "ema_decay", None)
        )
        check_batch_pairs(self.losses, self.batch_size)
        if self.wandb is not None:  # None: WANDB_MODE's, else the run's own on a resume, else offline
            _check_choice(self.wandb, WANDB_MODES, "wandb")
        _check_fine_tuning(self)
        self.devices = parse_devices(self.devices)
        check_scale_out(self.accelerator, self.strategy, self.num_nodes, self.devices)
        self.strategy = self.strategy.strip().lower()  # DDP is ddp, as Lightning reads it
        self.accelerator = self.accelerator.strip().lower()  # CPU is cpu, as the strategy's names

    def trainer_options(self) -> dict[str, Any]:
        """The keyword arguments of Lightning's ``Trainer`` that say where the command trains
        (:func:`sodeep.brainage.training.fit_age_model` takes them too)."""
        return {name: getattr(self, name) for name in SCALE_OUT}

    def schedule(self) -> dict[str, Any]:
        """``max_epochs`` and ``learning_rate`` of the command's training runs: the fine-tuning
        ones where given and the runs start from ``init_from``, else ``max_epochs`` and
        :class:`TrainingConfig`'s learning rate."""
        tuning = self.init_from is not None
        epochs = self.finetune_epochs if tuning and self.finetune_epochs is not None else self.max_epochs
        rate = self.finetune_learning_rate if tuning and self.finetune_learning_rate is not None else None
        return {"max_epochs": epochs, "learning_rate": TrainingConfig.learning_rate if rate is None else rate}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Field name -> default value (``None`` for a required field)."""
        result = {}
        for item in fields(cls):
            if item.default_factory is not MISSING:
                result[item.name] = item.default_factory()
            else:
                result[item.name] = None if item.default is MISSING else item.default
        return result


def _check_choice(value: Any, choices: Sequence[Any], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_fine_tuning(config: CommandConfig) -> None:
    if config.freeze_backbone and config.init_from is None:
        raise ValueError("freeze_backbone needs init_from: it keeps a trained model's backbone as it is")
    rate, epochs = config.finetune_learning_rate, config.finetune_epochs
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"finetune_learning_rate must be None or > 0, got {rate}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"finetune_epochs must be None or >= 1, got {epochs}")


def _check_network(config: SyntheticConfig | NiftiConfig) -> None:
    if config.batch_size < 2:
        # Its deepest grid is a voxel or so: one subject leaves BatchNorm one value per channel.
        raise ValueError(
            f"batch_size must be >= 2 for SFCN: its BatchNorm layers normalize over the subjects of a batch; "
            f"got {config.batch_size}"
        )
    _check_choice(config.block_order, BLOCK_ORDERS, "block_order")
    _check_choice(config.pooled_blocks, POOLED_BLOCKS, "pooled_blocks")
    if config.channels is not None and (not config.channels or min(config.channels) < 1):
        raise ValueError(f"channels must be one or more widths >= 1, got {config.channels}")
    if config.head_channels is not None and config.head_channels < 1:
        raise ValueError(f"head_channels must be >= 1, got {config.head_channels}")


@dataclass
class TabularConfig(CommandConfig):
    """``sodeep brainage tabular``: k-fold cross-validation of loss presets with an MLP on a table
    of regional features, the bundled ``dataset`` or a ``csv`` of your own (not both; neither:
    the bundled ``fcon1000``)."""

    dataset: str | None = None
    csv: str | None = None
    age_column: str = "age"
    id_column: str | None = None
    site_column: str | None = None
    features: list[str] | None = None
    losses: list[str] = field(default_factory=lambda: ["l1", "l1+spearman", "l1+agediff", "cheng2021"])
    folds: int = 5
    split: str = "stratified"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 30
    out: str = "runs/brainage-tabular"

    def check(self) -> None:
        super().check()
        if self.features == []:  # no patterns: every feature, as when left out (one setting, one spelling)
            self.features = None
        check_folds(self.folds)
        _check_choice(self.split, SPLITS, "split")
        if self.dataset is not None and self.csv is not None:
            raise ValueError(f"give a dataset or a csv, not both (got dataset={self.dataset!r}, csv={self.csv!r})")
        if self.dataset is not None:
            _check_choice(self.dataset, list(BUNDLED_DATASETS), "dataset")

    def table_path(self) -> Path:
        """The CSV to read: ``csv``, else the bundled ``dataset`` (default ``fcon1000``)."""
        if self.csv is not None:
            return Path(self.csv)
        return bundled_table_path(self.dataset or DEFAULT_DATASET)


@dataclass
class SyntheticConfig(CommandConfig):
    """``sodeep brainage synthetic``: SFCN trained with each preset on synthetic MRI (fixed
    train/test split), beside the median, ridge, floor and oracle baselines."""

    train: int = 1200
    test: int = 400
    losses: list[str] = field(default_factory=lambda: ["l1", "l1+spearman+agediff"])
    seeds: list[int] = field(default_factory=lambda: [0])
    data_seed: int = 0
    batch_size: int = 16
    max_epochs: int = 70
    patience: int = 25
    max_minutes: float | None = 15.0
    cascade: bool = False
    augment: str | None = None
    channels: list[int] | None = None
    head_channels: int | None = None
    block_order: str = "pool-norm"
    pooled_blocks: str = "all"
    ema_decay: float | None = None
    out: str = "runs/brainage-synthetic"

    def check(self) -> None:
        super().check()
        if self.train < 4 or self.test < CORRELATION_SUBJECTS:
            why = " (fewer test subjects correlate +-1 whatever the model)" if self.test < CORRELATION_SUBJECTS else ""
            raise ValueError(
                f"need train >= 4 and test >= {CORRELATION_SUBJECTS} subjects{why}, got {self.train} and {self.test}"
            )
        if self.data_seed < 0:
            raise ValueError(f"data_seed must be >= 0, got {self.data_seed}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ValueError(f"max_minutes must be None or > 0, got {self.max_minutes}")
        if self.augment is not None:
            _check_choice(self.augment, AUGMENTATIONS, "augment")
        if self.cascade and self.init_from is not None:
            raise ValueError("cascade trains its second stage from scratch: give it without init_from")
        _check_network(self)


#: Most voxels a NIfTI command's grid may have (1 GiB of float32 per volume).
MAX_GRID_VOXELS = 2**28
#: Finest voxel size a NIfTI command resamples to, in mm.
MIN_VOXEL_SIZE = 0.1


@dataclass
class NiftiConfig(CommandConfig):
    """``sodeep brainage nifti``: k-fold cross-validation of loss presets with SFCN on the T1
    volumes of a ``manifest`` CSV (columns ``path``, ``age``, optional ``sex`` and ``site``)."""

    manifest: str | None = None
    losses: list[str] = field(default_factory=lambda: ["l1", "l1+spearman", "l1+agediff", "cheng2021"])
    folds: int = 5
    seeds: list[int] = field(default_factory=lambda: [0])
    shape: list[int] = field(default_factory=lambda: [45, 54, 45])
    voxel_size: float = 4.0
    batch_size: int = 16
    max_epochs: int = 60
    patience: int = 10
    channels: list[int] | None = None
    head_channels: int | None = None
    block_order: str = "pool-norm"
    pooled_blocks: str = "all"
    ema_decay: float | None = None
    cache: str | None = None
    out: str = "runs/brainage-nifti"

    def check(self) -> None:
        super().check()
        if self.manifest is None:
            raise ValueError("manifest is required: a CSV with columns path, age, optional sex and site")
        check_folds(self.folds)
        if len(self.shape) != 3 or min(self.shape) < 1 or not (math.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise ValueError(f"shape must be 3 sides >= 1 and voxel_size > 0, got {self.shape} and {self.voxel_size}")
        if math.prod(self.shape) > MAX_GRID_VOXELS:
            raise ValueError(
                f"shape {self.shape} has {math.prod(self.shape):,} voxels, more than {MAX_GRID_VOXELS:,} (1 GiB of float32 "
                "per volume); a 1 mm MNI grid is 182 x 218 x 182"
            )
        if self.voxel_size < MIN_VOXEL_SIZE:
            raise ValueError(f"voxel_size must be at least {MIN_VOXEL_SIZE} mm, got {self.voxel_size}")
        _check_network(self)


#: Settings whose flags read ``none`` as ``None`` (no cap, no EMA, from scratch, ...); a config
#: file's ``none`` reads the same.
NONE_SPELLED = ("max_minutes", "ema_decay", "init_from", "finetune_learning_rate", "finetune_epochs", "augment")


def load_config(config_class: type, source: str | os.PathLike | Mapping[str, Any] | None = None, **overrides: Any):
    """A ``config_class`` instance from a YAML file or mapping, then ``overrides`` (e.g. flags).

    Keys are field names (``max_epochs``; ``max-epochs`` is read the same); an unknown key is
    refused, naming the closest known one.  The settings of :data:`NONE_SPELLED` read ``none``
    (any case) as ``None``, as their flags do, as well as YAML's ``null``.

    Args:
        config_class: :class:`TabularConfig`, :class:`SyntheticConfig` or :class:`NiftiConfig`.
        source: path of a YAML file holding a mapping, a mapping, or ``None``.
        overrides: field values applied last.
    """
    where = ""
    if source is None or isinstance(source, Mapping):
        values = dict(source or {})
    else:
        where = f"{source}: "
        values = read_yaml_mapping(source)
    spelled = [str(key).replace("-", "_") for key in values]
    for name in {name for name in spelled if spelled.count(name) > 1}:  # max-epochs and max_epochs
        given = [key for key in values if str(key).replace("-", "_") == name]
        raise ValueError(f"{where}{' and '.join(map(repr, given))} name one setting; keep one")
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    # "none" where a setting may be None, as its flag reads it ("--init-from none"); YAML's own is null.
    from_file, values = values, values | overrides  # "none" of NONE_SPELLED, from either, is None to the config
    names = [item.name for item in fields(config_class)]
    shared = {item.name for item in fields(CommandConfig)}
    known = [name for name in names if name not in shared] + [name for name in names if name in shared]  # own first
    for key in values:
        if key not in known:
            close = close_names(key, known, n=2)
            hint = f" (did you mean {' or '.join(repr(name) for name in close)}?)" if close else f"; known: {known}"
            hint = run_action_hint(key) or hint
            raise ValueError(f"{'' if key in overrides else where}unknown setting {key!r}{hint}")
    try:
        with checking_yaml_settings(set(from_file) - set(overrides) if where else False):
            return config_class(**values)
    except ValueError as error:
        raise ValueError(f"{where if _file_refused(config_class, from_file, overrides) else ''}{error}") from None


def _file_refused(config_class: type, from_file: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Whether a config refused with ``overrides`` is refused for the file's settings alone too
    (then its message names the file), rather than for a value the overrides (flags) gave.  The
    file alone has the required settings that only the overrides give (a manifest)."""
    if not overrides:
        return True
    given = {name: overrides[name] for name in REQUIRED_SETTINGS if name in overrides and name not in from_file}
    try:
        config_class(**from_file, **given)
    except ValueError:
        return True
    return False


def _spells_none(value: Any) -> bool:
    """``"none"`` in any case: how a flag, a YAML file or Python says a setting of
    :data:`NONE_SPELLED` is ``None``."""
    return isinstance(value, str) and value.strip().lower() == "none"


def volume_training(config: SyntheticConfig | NiftiConfig, **options: Any) -> TrainingConfig:
    """The 3D CNN's :class:`TrainingConfig` (no hidden layers: the network is SFCN)."""
    return TrainingConfig(
        hidden=(),
        batch_size=config.batch_size,
        patience=config.patience,
        ema_decay=config.ema_decay,
        **config.schedule(),
        **options,
    )
