"""``sodeep brainage tabular | synthetic | nifti``: flags (over an optional ``--config`` YAML file)
into a config of :mod:`sodeep.brainage.config`, then a function of :mod:`sodeep.brainage.commands`.
``sodeep brainage predict``: a tabular or nifti run folder's models on new subjects
(:mod:`sodeep.brainage.prediction`, :mod:`sodeep.brainage.scan_prediction`).

Every flag's default is its config field's default; a flag that is not given leaves the YAML
value (or that default) alone.  Training code is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from sodeep.brainage.augmentation import AUGMENTATIONS
from sodeep.brainage.config import (
    BLOCK_ORDERS,
    POOLED_BLOCKS,
    SPLITS,
    WANDB_MODES,
    CommandConfig,
    NiftiConfig,
    SyntheticConfig,
    TabularConfig,
    TrainingConfig,
    load_config,
)
from sodeep.brainage.datasets import BUNDLED_DATASETS, DEFAULT_DATASET
from sodeep.brainage.losses import BRAIN_AGE_PRESETS
from sodeep.brainage.models import SFCN
from sodeep.config import WANDB_DEFAULT_TEXT, UnderscoreInNumber, integer, real


def add_brainage_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``brainage`` and its three sub-commands on ``commands``, the sub-parsers object of
    the ``sodeep`` console script; each sub-command sets ``handler``: ``Namespace -> exit status``."""
    brainage = commands.add_parser(
        "brainage",
        help="brain-age estimation with rank and age-difference losses",
        description="Brain age from a table of regional features, synthetic MRI or NIfTI volumes "
        "(docs/brainage.md). Each command writes results.json, results.md and plots/ (tabular and nifti also predictions.csv) under --out; a folder "
        "holds one configuration (run.json): add --resume to extend or continue it, --overwrite to start again.",
    )
    tasks = brainage.add_subparsers(dest="brainage_command", required=True, metavar="{tabular,synthetic,nifti,predict}")

    tabular = _command(tasks, "tabular", TabularConfig, "k-fold CV of loss presets with an MLP on a table of features")
    add = _adder(tabular, TabularConfig)
    add(
        "dataset",
        choices=sorted(BUNDLED_DATASETS),
        help="a table shipped with sodeep",
        shown=f"{DEFAULT_DATASET} unless --csv is given",
    )
    add("csv", metavar="PATH", help="your own table: a header row, an age column and feature columns")
    add("age_column", metavar="NAME", help="column of chronological ages (years)")
    add(
        "id_column",
        metavar="NAME",
        help="column of subject ids",
        shown="the first of sub_id, subject_id, participant_id, subject, id",
    )
    add(
        "site_column",
        metavar="NAME",
        help="column of sites or scanners (per-site results, --split site)",
        shown="site, if present",
    )
    add(
        "features",
        nargs="+",
        metavar="GLOB",
        help='feature columns: their names or glob patterns, e.g. "lh_*" "rh_*"',
        shown="every numeric column but ids and covariates",
    )
    _add_plan_flags(add, folds=True, sfcn=False)
    add(
        "split",
        choices=SPLITS,
        help="folds: age-stratified, or whole sites (no site in both training and test; --folds as many as "
        "sites: leave-one-site-out; needs a site column)",
    )
    _add_fine_tuning_flags(add)
    add(
        "out",
        metavar="DIR",
        help="run.json, results.json, results.md, predictions.csv, plots/, curves/, checkpoints/, wandb/",
    )
    add("wandb", choices=WANDB_MODES, help="W&B logging (offline: nothing is sent)", shown=WANDB_DEFAULT_TEXT)
    _add_scale_out_flags(add)
    tabular.set_defaults(handler=_handler(TabularConfig, "run_tabular"))

    synthetic = _command(
        tasks,
        "synthetic",
        SyntheticConfig,
        "SFCN on synthetic MRI (no data to fetch) beside median, ridge, floor and oracle",
    )
    add = _adder(synthetic, SyntheticConfig)
    add("train", type=integer, metavar="N", help="training subjects")
    add("test", type=integer, metavar="N", help="test subjects")
    _add_plan_flags(add, folds=False, sfcn=True)
    add("data_seed", type=integer, metavar="SEED", help="the simulated cohort")
    add("max_minutes", type=_number_or_none, metavar="MINUTES", help="wall-clock cap per training run ('none': no cap)")
    add(
        "cascade",
        action=argparse.BooleanOptionalAction,
        help="also train Cheng et al.'s second stage on each trained SFCN",
    )
    add(
        "augment",
        nargs="?",
        const=AUGMENTATIONS[0],
        choices=[*AUGMENTATIONS, "none"],
        help=f"augment training volumes ({AUGMENTATIONS[0]} when given alone)",
    )
    _add_network_flags(add)
    _add_fine_tuning_flags(add)
    add("out", metavar="DIR", help="run.json, results.json, results.md, plots/, curves/, cache/, checkpoints/, wandb/")
    add("wandb", choices=WANDB_MODES, help="W&B logging (offline: nothing is sent)", shown=WANDB_DEFAULT_TEXT)
    _add_scale_out_flags(add)
    synthetic.set_defaults(handler=_handler(SyntheticConfig, "run_synthetic"))

    nifti = _command(tasks, "nifti", NiftiConfig, "k-fold CV of loss presets with a 3D CNN (SFCN) on NIfTI volumes")
    add = _adder(nifti, NiftiConfig)
    add(
        "manifest",
        metavar="PATH",
        help="CSV with columns path (relative to the CSV's folder), age, optional sex and site; required here or in --config",
        shown="",
    )
    _add_plan_flags(add, folds=True, sfcn=True)
    add("shape", type=integer, nargs=3, metavar="N", help="grid in voxels (MNI at 4 mm)")
    add("voxel_size", type=real, metavar="MM", help="voxel side, mm")
    _add_network_flags(add)
    add("cache", metavar="DIR", help="preprocessed volumes", shown="OUT/cache")
    _add_fine_tuning_flags(add)
    add(
        "out",
        metavar="DIR",
        help="run.json, results.json, results.md, predictions.csv, plots/, curves/, cache/ (with no --cache), "
        "checkpoints/, wandb/",
    )
    add("wandb", choices=WANDB_MODES, help="W&B logging (offline: nothing is sent)", shown=WANDB_DEFAULT_TEXT)
    _add_scale_out_flags(add)
    nifti.set_defaults(handler=_handler(NiftiConfig, "run_nifti"))
    _add_predict_parser(tasks)
    return brainage


def _add_predict_parser(tasks: Any) -> None:
    predict = tasks.add_parser(
        "predict",
        help="brain age of new subjects with the models of a tabular or nifti run folder",
        description="Predict the ages of new subjects with every model a finished brainage tabular run (from a "
        "table, --csv) or brainage nifti run (from scans, --manifest) trained (each preset's mean over its seeds and "
        "folds, their SD beside it; docs/brainage.md). A tabular model standardizes the features as its training "
        "did, from the run's training table; a scan is brought to the run's grid and z-scored in the brain. Each "
        "model must first reproduce its recorded test predictions (for a nifti run, where its training volumes "
        "are found as it read them).",
    )
    predict.add_argument(
        "folder", type=os.path.expanduser, metavar="RUN", help="the --out folder of a brainage tabular or nifti run"
    )
    new_subjects = predict.add_mutually_exclusive_group(required=True)
    new_subjects.add_argument(
        "--csv",
        dest="table",
        type=os.path.expanduser,
        metavar="PATH",
        help="for a tabular run, the new subjects: a header row and the run's feature columns (other columns are "
        "ignored)",
    )
    new_subjects.add_argument(
        "--manifest",
        type=os.path.expanduser,
        metavar="PATH",
        help="for a nifti run, the new scans: a CSV with a path column (absolute, or relative to the manifest), "
        "optionally age and an id column",
    )
    predict.add_argument(
        "--out",
        type=os.path.expanduser,
        metavar="FILE",
        help="write the predictions here (CSV: preset, subject, predicted_age, predicted_age_sd, models, and age, gap, "
        "corrected_gap when the table has ages) (default: to stdout)",
    )
    predict.add_argument(
        "--losses", nargs="+", metavar="PRESET", help="presets of the folder to predict with (default: all it holds)"
    )
    predict.add_argument(
        "--id-column",
        metavar="NAME",
        help="column of subject ids (default: the run's, else the first of sub_id, subject_id, participant_id, "
        "subject, id; else the CSV line, or a scan's path)",
    )
    predict.add_argument(
        "--age-column",
        metavar="NAME",
        help="column of chronological ages, optional: adds each subject's gap (default: the run's, if the table has it)",
    )
    predict.add_argument(
        "--training-csv",
        dest="training_table",
        type=os.path.expanduser,
        metavar="PATH",
        help="for a tabular run, where its training table is now, if it moved (checked by the SHA-256 the run "
        "recorded) (default: where the run read it)",
    )
    predict.set_defaults(handler=_predict)


def _predict(arguments: argparse.Namespace) -> int:
    check_brainage_extra()
    from sodeep.brainage.prediction import run_prediction

    run_prediction(
        arguments.folder,
        arguments.table,
        manifest=arguments.manifest,
        out=arguments.out,
        presets=arguments.losses,
        id_column=arguments.id_column,
        age_column=arguments.age_column,
        training_table=arguments.training_table,
    )
    return 0


def _command(tasks: Any, name: str, config_class: type, summary: str) -> argparse.ArgumentParser:
    # The config's docstring, "``sodeep brainage NAME``: what it does", describes the command.
    description = " ".join(config_class.__doc__.split(":", 1)[1].replace("``", "").split())
    parser = tasks.add_parser(name, help=summary, description=description)
    parser.add_argument(
        "--config",
        metavar="YAML",
        type=os.path.expanduser,  # ~ in the home folder, also when quoted
        help="settings file (keys: the settings' long flags in snake case, e.g. max_epochs; not resume or "
        "overwrite); flags override it",
    )
    folder = parser.add_mutually_exclusive_group()
    folder.add_argument(
        "--resume",
        action="store_true",
        help="continue in OUT, which holds these settings: train the runs it lacks (more presets or seeds "
        "extend it), continue an interrupted one from its last epoch, keep the finished ones",
    )
    folder.add_argument("--overwrite", action="store_true", help="clear OUT first, whatever run it holds")
    return parser


def _adder(parser: argparse.ArgumentParser, config_class: type[CommandConfig]) -> Callable[..., None]:
    """``add(field, help=..., **argparse options)``: the flag ``--field-name``, left out of the
    namespace unless given, its help ending with the config's default (or ``shown``; ``""``: none)."""
    defaults = config_class.defaults()

    def add(name: str, *, help: str, shown: str | None = None, **options: Any) -> None:
        if shown is None:
            default = defaults[name]
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            shown = "none" if default is None else shown
        text = f"{help} (default: {shown})" if shown else help
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS, help=text, **options)

    return add


def _add_plan_flags(add: Callable[..., None], *, folds: bool, sfcn: bool) -> None:
    """Presets, seeds and the training budget, which every command has."""
    presets = "; ".join(f"{name} = {_describe(preset)}" for name, preset in BRAIN_AGE_PRESETS.items())
    add("losses", nargs="+", metavar="PRESET", help=f"loss presets to compare: {presets}")
    if folds:
        add("folds", type=integer, metavar="K", help="cross-validation folds (age-stratified)")
    add(
        "seeds",
        type=integer,
        nargs="+",
        metavar="SEED",
        help="training seeds (and fold splits)" if folds else "training seeds",
    )
    pairs = "2 or more: SFCN's BatchNorm needs them" if sfcn else "2 or more with rank or age-difference presets"
    add("batch_size", type=integer, metavar="N", help=f"subjects per step ({pairs})")
    add("max_epochs", type=integer, metavar="N", help="epochs at most (cosine schedule over them)")
    add("patience", type=integer, metavar="N", help="stop after N validation epochs (N >= 1) without a lower MAE")


def _add_network_flags(add: Callable[..., None]) -> None:
    """The 3D CNN's architecture and weight averaging, shared by ``synthetic`` and ``nifti``."""
    sfcn = inspect.signature(SFCN).parameters
    channels, head = " ".join(map(str, sfcn["channels"].default)), sfcn["head_channels"].default
    add("channels", type=integer, nargs="+", metavar="C", help="SFCN 3^3 block widths", shown=f"SFCN's, {channels}")
    add("head_channels", type=integer, metavar="C", help="SFCN 1^3 block width", shown=f"SFCN's, {head}")
    add(
        "block_order",
        choices=BLOCK_ORDERS,
        help="SFCN blocks: conv, max-pool, BatchNorm, or the paper's conv, BatchNorm, max-pool",
    )
    add(
        "pooled_blocks",
        choices=POOLED_BLOCKS,
        help="the regressor sees every block's mean over the volume, or the last block's only (the paper's)",
    )
    add(
        "ema_decay",
        type=_number_or_none,
        metavar="DECAY",
        help="validate and keep an EMA of the weights, e.g. 0.99 ('none': raw weights)",
    )


def _add_scale_out_flags(add: Callable[..., None]) -> None:
    """Where the training runs: Lightning's settings, as ``sodeep pretrain`` takes them (docs/scaling.md)."""
    add("accelerator", metavar="NAME", help="Lightning accelerator: cpu, gpu, auto, ... (docs/scaling.md)")
    add(
        "devices",
        metavar="N",
        help="processes per machine: a count, auto, or (GPUs) -1 for all or indices like 0,2; each trains on its "
        "own share of every epoch's subjects",
    )
    add(
        "strategy",
        metavar="NAME",
        help="Lightning strategy: ddp for one process per device (auto: Lightning's choice, DDP where there are several devices)",
    )
    add("num_nodes", type=integer, metavar="N", help="machines (srun or torchrun starts their processes)")


def _add_fine_tuning_flags(add: Callable[..., None]) -> None:
    """Where the training runs start, and how a trained regressor is fine-tuned."""
    add(
        "init_from",
        type=_path_or_none,
        metavar="PATH",
        help="start from trained regressors: the output folder of an earlier run of this command on the same data "
        "and splits (each run from the model of its own seed and split; FOLDER/checkpoints/PRESET picks a preset), "
        "or one checkpoint file for every run ('none': from scratch)",
        shown="none",
    )
    add(
        "freeze_backbone",
        action=argparse.BooleanOptionalAction,
        help="with --init-from, train only the model's last linear layer",
    )
    add(
        "finetune_learning_rate",
        type=_number_or_none,
        metavar="LR",
        help="learning rate of runs started from --init-from ('none': as from scratch)",
        shown=f"{TrainingConfig.learning_rate:g}, as from scratch",
    )
    add(
        "finetune_epochs",
        type=_integer_or_none,
        metavar="N",
        help="epochs at most of runs started from --init-from ('none': as from scratch)",
        shown="--max-epochs",
    )


def _path_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _describe(preset: Any) -> str:
    """``MSE + 10 Spearman + 10 AgeDiff`` for a :class:`~sodeep.brainage.losses.BrainAgeLossPreset`."""
    terms = [preset.main.upper()]
    terms += [f"{preset.spearman_weight:g} Spearman"] if preset.spearman_weight else []
    terms += [f"{preset.age_difference_weight:g} AgeDiff"] if preset.age_difference_weight else []
    return " + ".join(terms)


def _or_none(convert: Callable[[str], Any], kind: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)``, or ``None`` for ``none``."""

    def parse(text: str) -> Any:
        if text.lower() == "none":
            return None
        try:
            return convert(text)
        except UnderscoreInNumber:
            raise
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind} or 'none', got {text!r}") from None

    return parse


_number_or_none = _or_none(real, "a number")
_integer_or_none = _or_none(integer, "an integer")


#: Modules of the ``[brainage]`` extra, by the package name pip installs.
EXTRA_MODULES = {
    "torchmetrics": "torchmetrics",
    "nibabel": "nibabel",
    "nilearn": "nilearn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "sklearn": "scikit-learn",
}


def check_brainage_extra() -> None:
    """One-line ``ValueError`` naming the packages of the ``[brainage]`` extra that are missing."""
    missing = [package for module, package in EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ValueError(
            f"sodeep brainage needs {', '.join(missing)} (the [brainage] extra): "
            "in a clone of sodeep, pip install -c constraints.txt -e '.[brainage]'; elsewhere, install sodeep with "
            "its brainage extra, or the packages named"
        )


def _handler(config_class: type[CommandConfig], function: str) -> Callable[[argparse.Namespace], int]:
    names = {item.name for item in fields(config_class)}

    def handle(arguments: argparse.Namespace) -> int:
        check_brainage_extra()
        from sodeep.brainage import commands

        flags = {name: value for name, value in vars(arguments).items() if name in names}
        if flags.get("augment") == "none":
            flags["augment"] = None
        if config_class is TabularConfig and ("csv" in flags or "dataset" in flags):
            # A table chosen by a flag replaces the one a YAML file names.
            flags = {"csv": None, "dataset": None} | flags
        config = load_config(config_class, arguments.config, **flags)
        from sodeep.run_folder import RunInterrupted, check_no_input_inside, resumes_started_run

        if arguments.overwrite and arguments.config:  # the YAML file is read: clearing OUT must not delete it
            check_no_input_inside(Path(config.out), {"config": arguments.config})
        resume = arguments.resume or resumes_started_run(config.out, arguments.overwrite)
        if arguments.config and "wandb" not in flags:  # an online run the file asks for, refused naming it
            from sodeep.wandb_setup import check_wandb_login_before_a_run

            check_wandb_login_before_a_run(
                config.wandb, config.out, resume=resume and not arguments.overwrite, config_file=arguments.config
            )
        try:
            results = getattr(commands, function)(config, resume=resume, overwrite=arguments.overwrite)
        except RunInterrupted:
            from sodeep.runs import global_rank  # (Lightning: loaded by the run, after its W&B login check)

            if global_rank() == 0:
                raise  # status 130, and the command that resumes
            # Every process stopped at the same step; rank 0 tells.  A process Lightning started
            # that exits non-zero makes Lightning kill rank 0 before it could.
            return 0
        from sodeep.runs import global_rank

        if global_rank() == 0:  # under DDP, rank 0 reports for every process
            _write_trial_summary(config, results)
        return 0

    return handle


def _write_trial_summary(config: CommandConfig, results: Any) -> None:
    """Inside ``sodeep sweep run``, the trial's summary: each preset's mean metrics (unprefixed when
    the trial has one preset, else ``"<preset>/<metric>"``) and every training run as a fold."""
    from dataclasses import asdict

    from sodeep.brainage.commands import preset_means
    from sodeep.config import run_wandb_mode
    from sodeep.sweeps.summary import write_trial_summary

    presets = {name: entry for name, entry in (results or {}).get("presets", {}).items() if entry.get("runs")}
    means = preset_means(results)  # the presets' and (synthetic) the cascade's, as in the W&B summary
    single = len(means) == 1
    metrics = {
        metric if single else f"{name}/{metric}": value
        for name, values in means.items()
        for metric, value in values.items()
    }
    folds = []
    for name, entry in presets.items():
        prefix = "" if single else f"{name}/"
        for run in entry["runs"]:
            numbers = {prefix + key: value for key, value in run.items() if isinstance(value, float)}
            # A trial of one preset pairs its folds with other trials' by (seed, fold) alone.
            named = {"preset": name} if prefix else {}
            folds.append(named | {"seed": run.get("seed"), "fold": run.get("fold", 0), "metrics": numbers})
    settings = asdict(config)
    if settings.get("wandb") is None:  # the mode the run took, as its run.json records it
        settings["wandb"] = run_wandb_mode(None, config.out, resume=True)[0]
    write_trial_summary(settings, metrics, folds=folds or None)
