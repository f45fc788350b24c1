"""The ``sodeep`` console script: ``pretrain``, ``evaluate``, ``export`` and ``brainage
{tabular, synthetic, nifti}``.

This module is an entry point: it is the only place in the package that parses arguments and
YAML configs, sets W&B's environment and starts loggers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PRETRAIN_CONFIG: dict[str, Any] = {
    "architecture": "conv",
    "sorter": {},  # keyword config of the architecture, e.g. {"softness": 0.5}
    "lengths": "2-256",  # a range "a-b" or a list of lengths (a mixture)
    "steps": 3000,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "seed": 0,
    "validation_every": 500,
    "checkpoint_every": 100,
    "validation_sequences": 32,
    "out": "runs/pretrain",
    "wandb": "offline",
}


def parse_lengths(value: Any) -> list[int]:
    """``"2-256"`` -> [2, ..., 256]; ``"100"`` or ``[8, 100]`` -> those lengths (each >= 2)."""
    is_range = isinstance(value, str) and "-" in value
    try:
        if isinstance(value, int):
            lengths = [value]
        elif isinstance(value, (list, tuple)):
            lengths = [int(item) for item in value]
        elif is_range:
            low, high = (int(part) for part in value.strip().split("-", 1))
            lengths = list(range(low, high + 1))
        else:
            lengths = [int(part) for part in str(value).replace(",", " ").split()]
    except ValueError as error:
        raise ValueError(f"lengths must be ints, a list like '8,100' or a range like '2-256', got {value!r}") from error
    if is_range and not lengths:
        raise ValueError(f"length range {value!r} is empty")
    if not lengths or min(lengths) < 2:
        raise ValueError(f"lengths must be ints >= 2 (a ranking needs two values), got {value!r}")
    return lengths


def parse_sorter_options(value: Any, name: str) -> dict[str, Any]:
    """An architecture's keyword settings from a mapping or a JSON object string (``name`` is the
    flag or key they came from, for the error message)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} must be a JSON object, e.g. '{{\"band\": 8}}': {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"band\": 8}}', got {value!r}")
    return value


def configure_wandb_environment(mode: str, directory: Path) -> None:
    """Keep W&B local unless asked otherwise: nothing is sent, no account is needed."""
    os.environ.setdefault("WANDB_MODE", mode if mode != "disabled" else "disabled")
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    directory.mkdir(parents=True, exist_ok=True)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ.setdefault(variable, str(directory))


def make_loggers(out: Path, mode: str, name: str, config: dict[str, Any]) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers: list = [CSVLogger(save_dir=str(out), name="csv", version="")]
    if mode != "disabled":
        configure_wandb_environment(mode, out / "wandb")
        loggers.append(
            WandbLogger(
                project="sodeep", name=name, save_dir=str(out / "wandb"), offline=mode == "offline", config=config
            )
        )
    return loggers


def command_pretrain(arguments: argparse.Namespace) -> int:
    import yaml

    config = dict(DEFAULT_PRETRAIN_CONFIG)
    if arguments.config:
        try:
            loaded = yaml.safe_load(Path(arguments.config).read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{arguments.config} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ValueError(f"{arguments.config} must hold a mapping of settings, got a {type(loaded).__name__}")
        unknown = set(loaded) - set(config)
        if unknown:
            raise ValueError(f"unknown keys in {arguments.config}: {sorted(unknown)}; known: {sorted(config)}")
        config.update(loaded)
    for key in DEFAULT_PRETRAIN_CONFIG:
        value = getattr(arguments, key, None)
        if value is not None:
            config[key] = value
    config["sorter"] = parse_sorter_options(config["sorter"], "sorter")
    lengths = parse_lengths(config["lengths"])
    for key in ("steps", "batch_size", "validation_every", "checkpoint_every", "validation_sequences"):
        if int(config[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {config[key]}")
    if not float(config["learning_rate"]) > 0:
        raise ValueError(f"learning_rate must be > 0, got {config['learning_rate']}")
    out = Path(config["out"])
    checkpoints = out / "checkpoints"
    last = checkpoints / "last.ckpt"
    if arguments.resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}")

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sodeep.checkpoints import save_sorter
    from sodeep.evaluation import EVALUATION_LENGTHS
    from sodeep.pretraining import AtomicCheckpointIO, SequenceDataModule, SorterPretraining
    from sodeep.sorters import build_sorter

    L.seed_everything(config["seed"], workers=True, verbose=False)
    # Built before the output folder exists: a wrong architecture or capacity leaves nothing behind.
    sorter = build_sorter(config["architecture"], **config["sorter"])
    if sorter.max_length is not None and max(lengths) > sorter.max_length:
        raise ValueError(f"lengths go up to {max(lengths)} but the sorter's capacity is {sorter.max_length}")
    out.mkdir(parents=True, exist_ok=True)
    validation_lengths = [
        n
        for n in EVALUATION_LENGTHS
        if n >= sorter.min_length and (sorter.max_length is None or n <= sorter.max_length)
    ]
    module = SorterPretraining(
        sorter,
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"],
        total_steps=config["steps"],
    )
    data = SequenceDataModule(
        batch_size=config["batch_size"],
        lengths=lengths,
        seed=config["seed"],
        validation_lengths=validation_lengths,
        validation_sequences=config["validation_sequences"],
    )
    resume_from = str(last) if arguments.resume else None
    trainer = L.Trainer(
        max_steps=config["steps"],
        val_check_interval=min(config["validation_every"], config["steps"]),
        check_val_every_n_epoch=None,
        logger=make_loggers(out, config["wandb"], out.name, config),
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoints,
                save_last=True,
                every_n_train_steps=min(config["checkpoint_every"], config["steps"]),
                save_top_k=0,
            )
        ],
        plugins=[AtomicCheckpointIO()],
        accelerator="auto",
        devices=1,
        log_every_n_steps=10,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    started = time.time()
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    elapsed = time.time() - started
    metadata = {
        "command": " ".join(sys.argv),
        "config": config,
        "steps": int(trainer.global_step),
        "wall_clock_seconds_this_session": round(elapsed, 1),
        "resumed": resume_from is not None,
    }
    path = save_sorter(module.sorter.cpu(), out / "sorter.pt", metadata)
    (out / "pretrain_summary.json").write_text(json.dumps(metadata, indent=2))
    print(f"trained {trainer.global_step} steps in {elapsed:.0f} s; sorter written to {path}")
    return 0


def command_evaluate(arguments: argparse.Namespace) -> int:
    import torch

    from sodeep.checkpoints import default_sorter_path, load_sorter
    from sodeep.evaluation import EVALUATION_LENGTHS, fidelity_table, format_fidelity_markdown
    from sodeep.sorters import build_sorter

    if arguments.architecture:
        sorter = build_sorter(arguments.architecture, **parse_sorter_options(arguments.sorter or "{}", "--sorter"))
        title = f"untrained {arguments.architecture} {sorter.config()}"
    else:
        sorter = load_sorter(arguments.checkpoint)
        title = str(arguments.checkpoint or default_sorter_path())
    lengths = parse_lengths(arguments.lengths) if arguments.lengths else list(EVALUATION_LENGTHS)
    torch.set_grad_enabled(False)
    rows = fidelity_table(sorter, lengths=lengths, sequences_per_cell=arguments.sequences)
    text = format_fidelity_markdown(rows, title=title)
    print(text)
    if arguments.out:
        Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.out).write_text(text + "\n")
    if arguments.json:
        Path(arguments.json).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.json).write_text(json.dumps([row.__dict__ for row in rows], indent=1))
    return 0


def command_export(arguments: argparse.Namespace) -> int:
    from sodeep.checkpoints import save_sorter
    from sodeep.pretraining import sorter_from_training_checkpoint

    sorter = sorter_from_training_checkpoint(arguments.checkpoint)
    print(f"wrote {save_sorter(sorter, arguments.out, {'exported_from': str(arguments.checkpoint)})}")
    return 0


def start_wandb_run(mode: str, out: Path, name: str, config: dict[str, Any]):
    """One W&B run for a whole command (offline by default: nothing is sent); ``None`` if disabled."""
    if mode == "disabled":
        return None
    configure_wandb_environment(mode, out / "wandb")
    import wandb

    return wandb.init(project="sodeep", name=name, dir=str(out / "wandb"), mode=mode, config=config)


def check_run_plan(arguments: argparse.Namespace) -> None:
    """The presets (``--losses``) and ``--seeds`` of a ``brainage`` command, checked before any work."""
    from sodeep.brainage.cross_validation import check_run_plan as check

    check(arguments.losses, arguments.seeds)


def run_logger(run: Any):
    """``(preset, run record) -> None`` logging the record's numbers to W&B (no-op without a run)."""

    def log(name: str, record: dict[str, Any]) -> None:
        if run is not None:
            run.log({f"{name}/{key}": value for key, value in record.items() if isinstance(value, (int, float))})

    return log


def quiet_lightning() -> None:
    """Many short fits: keep Lightning's per-fit banners (accelerator, tips) out of the output."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def report_cross_validation(results: dict[str, Any], ages: Any, out: Path, title: str, run: Any) -> None:
    """Write results.md and one plot per preset (out-of-fold predictions of the first seed)."""
    import numpy as np

    from sodeep.brainage.cross_validation import format_report, out_of_fold
    from sodeep.brainage.plots import plot_predictions

    report = format_report(results, title)
    (out / "results.md").write_text(report)
    for name, entry in results["presets"].items():
        first_seed = min(r["seed"] for r in entry["runs"])
        rows, predictions = out_of_fold(entry["runs"], first_seed)
        slope = float(np.mean([r["age_bias_slope"] for r in entry["runs"] if r["seed"] == first_seed]))
        intercept = float(np.mean([r["age_bias_intercept"] for r in entry["runs"] if r["seed"] == first_seed]))
        plot_predictions(
            np.asarray(ages)[rows],
            predictions,
            out / "plots" / f"{name}.png",
            title=f"{name} (out-of-fold, seed {first_seed})",
            bias=(slope, intercept),
        )
    if run is not None:
        for name, entry in results["presets"].items():
            run.summary.update({f"{name}/{m}": v["mean"] for m, v in entry["summary"].items()})
        run.finish()
    print(report)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'plots'}/")


def command_brainage_nifti(arguments: argparse.Namespace) -> int:
    from sodeep.brainage.cross_validation import cross_validate
    from sodeep.brainage.models import SFCN
    from sodeep.brainage.tables import check_folds
    from sodeep.brainage.volumes import load_cohort

    check_run_plan(arguments)
    shape = tuple(arguments.shape)
    network = sfcn_options(arguments)
    config = volume_training_config(
        arguments,
        extra={"model": "sfcn", "network": network, "shape": list(shape), "voxel_size": arguments.voxel_size},
    )
    check_folds(arguments.folds)  # before the cohort is loaded
    out = Path(arguments.out)
    # The manifest is read first: a missing or malformed one leaves no empty run folder behind.
    cohort = load_cohort(
        arguments.manifest, arguments.cache or out / "cache", shape=shape, voxel_size=arguments.voxel_size
    )
    out.mkdir(parents=True, exist_ok=True)
    quiet_lightning()
    print(
        f"{len(cohort.ages)} subjects, {len(cohort.problems)} rows left out; grid {shape} at {arguments.voxel_size} mm"
    )
    run = start_wandb_run(arguments.wandb, out, f"brainage-nifti-{out.name}", {"manifest": str(arguments.manifest)})

    results = cross_validate(
        cohort.ages.numpy(),
        cohort.sites,
        arguments.losses,
        make_inputs=lambda fitting: lambda rows: cohort.volumes[rows],  # z-scored per subject: nothing to fit
        make_model=lambda fitting_ages: SFCN(
            age_offset=float(fitting_ages.mean()), age_scale=float(fitting_ages.std()), **network
        ),
        out=out,
        folds=arguments.folds,
        seeds=arguments.seeds,
        config=config,
        description={"grid": list(shape)},
        on_run=run_logger(run),
    )
    report_cross_validation(results, cohort.ages.numpy(), out, f"Brain age from {Path(arguments.manifest).name}", run)
    return 0


def volume_training_config(arguments: argparse.Namespace, **options: Any) -> Any:
    """The 3D CNN's :class:`TrainingConfig` from the flags ``brainage synthetic`` and ``nifti`` share."""
    from sodeep.brainage.cross_validation import TrainingConfig

    return TrainingConfig(
        hidden=(),
        batch_size=arguments.batch_size,
        max_epochs=arguments.max_epochs,
        patience=arguments.patience,
        ema_decay=arguments.ema_decay,
        **options,
    )


def command_brainage_synthetic(arguments: argparse.Namespace) -> int:
    from sodeep.brainage.plots import plot_predictions
    from sodeep.brainage.synthetic_experiment import format_synthetic_report, run_synthetic_benchmark
    from sodeep.brainage.synthetic_mri import simulate_cohort

    check_run_plan(arguments)
    config = volume_training_config(arguments)
    quiet_lightning()
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    run = start_wandb_run(arguments.wandb, out, f"brainage-synthetic-{out.name}", vars(arguments) | {"handler": None})

    results = run_synthetic_benchmark(
        arguments.losses,
        out=out,
        train_size=arguments.train,
        test_size=arguments.test,
        seeds=arguments.seeds,
        data_seed=arguments.data_seed,
        config=config,
        max_minutes=arguments.max_minutes,
        cascade=arguments.cascade,
        augment=arguments.augment,
        network=sfcn_options(arguments),
        on_run=run_logger(run),
    )
    report = format_synthetic_report(results)
    (out / "results.md").write_text(report)
    test = simulate_cohort(
        range(arguments.train, arguments.train + arguments.test), arguments.data_seed, cache_directory=out / "cache"
    )
    for group, label in (("presets", "SFCN"), ("cascade", "cascade")):
        for name, entry in results[group].items():
            for record in entry["runs"][:1]:
                plot_predictions(
                    test.ages,
                    record["test_predictions"],
                    out / "plots" / f"{label}-{name}.png",
                    title=f"{label}, {name} (test)",
                )
    if run is not None:
        run.finish()
    print(report)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'plots'}/")
    return 0


def command_brainage_tabular(arguments: argparse.Namespace) -> int:
    from sodeep.brainage.cross_validation import TrainingConfig, cross_validate_table
    from sodeep.brainage.tables import read_age_table

    check_run_plan(arguments)
    config = TrainingConfig(
        batch_size=arguments.batch_size, max_epochs=arguments.max_epochs, patience=arguments.patience
    )
    table = read_age_table(arguments.csv, age_column=arguments.age_column, features=arguments.features)
    quiet_lightning()
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(table)} subjects, {len(table.feature_names)} features, {len(table.skipped)} rows skipped; "
        f"presets {arguments.losses}, {arguments.folds} folds x seeds {arguments.seeds}"
    )
    run = start_wandb_run(
        arguments.wandb, out, f"brainage-tabular-{out.name}", {"csv": str(arguments.csv), **vars(config)}
    )

    results = cross_validate_table(
        table,
        arguments.losses,
        out=out,
        folds=arguments.folds,
        seeds=arguments.seeds,
        config=config,
        on_run=run_logger(run),
    )
    report_cross_validation(results, table.ages, out, f"Brain age from {Path(arguments.csv).name}", run)
    return 0


def add_sfcn_flags(parser: argparse.ArgumentParser) -> None:
    """The 3D CNN's architecture flags, shared by ``brainage synthetic`` and ``nifti``."""
    parser.add_argument("--channels", type=int, nargs="+", help="SFCN 3^3 block widths (default 8 16 48 128 256)")
    parser.add_argument("--head-channels", dest="head_channels", type=int, help="SFCN 1^3 block (default 128)")
    parser.add_argument(
        "--block-order",
        dest="block_order",
        choices=["pool-norm", "norm-pool"],
        default="pool-norm",
        help="SFCN blocks: conv, max-pool, BatchNorm (1.8x faster on a CPU) or the paper's conv, BatchNorm, max-pool",
    )
    parser.add_argument(
        "--pooled-blocks",
        dest="pooled_blocks",
        choices=["all", "last"],
        default="all",
        help="SFCN: the regressor sees every block's mean over the volume, or only the last block's (the paper's)",
    )


def sfcn_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """:class:`SFCN` keyword arguments from the flags of :func:`add_sfcn_flags` (JSON-able)."""
    sizes = (("channels", arguments.channels), ("head_channels", arguments.head_channels))
    return {key: value for key, value in sizes if value is not None} | {
        "pool_before_norm": arguments.block_order == "pool-norm",
        "pool_every_block": arguments.pooled_blocks == "all",
    }


def add_ema_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ema-decay", dest="ema_decay", type=float, help="validate and keep an EMA of the weights (e.g. 0.99)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sodeep", description="Differentiable sorting with learned sorters.")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", help="pretrain a sorter on synthetic sequences (Lightning)")
    pretrain.add_argument("--config", help="YAML file; flags override it (see experiments/configs/pretrain.yaml)")
    pretrain.add_argument("--architecture", help="conv, pairwise_sigmoid, original_cnn, original_lstm_large")
    pretrain.add_argument("--sorter", help="JSON config of the architecture, e.g. '{\"softness\": 0.5}'")
    pretrain.add_argument("--lengths", help='a range "2-256" or a list "8,100" (a mixture)')
    pretrain.add_argument("--steps", type=int)
    pretrain.add_argument("--batch-size", dest="batch_size", type=int)
    pretrain.add_argument("--learning-rate", dest="learning_rate", type=float)
    pretrain.add_argument("--seed", type=int)
    pretrain.add_argument("--validation-every", dest="validation_every", type=int)
    pretrain.add_argument(
        "--checkpoint-every", dest="checkpoint_every", type=int, help="steps between resumable checkpoints"
    )
    pretrain.add_argument("--out", help="output directory (checkpoints, CSV and W&B logs, sorter.pt)")
    pretrain.add_argument("--wandb", choices=["offline", "online", "disabled"], help="default offline: nothing sent")
    pretrain.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    pretrain.set_defaults(handler=command_pretrain)

    evaluate = commands.add_parser("evaluate", help="print the fidelity table of a sorter")
    evaluate.add_argument("checkpoint", nargs="?", help="sorter checkpoint (default: the shipped sorter)")
    evaluate.add_argument("--architecture", help="evaluate an untrained sorter of this architecture instead")
    evaluate.add_argument("--sorter", help="JSON config for --architecture")
    evaluate.add_argument("--lengths", help='e.g. "2,3,5,8,16,32,64,100,128,256" (the default)')
    evaluate.add_argument("--sequences", type=int, default=64, help="held-out sequences per (family, n)")
    evaluate.add_argument("--out", help="also write the markdown table here")
    evaluate.add_argument("--json", help="also write the rows as JSON here")
    evaluate.set_defaults(handler=command_evaluate)

    export = commands.add_parser("export", help="turn a Lightning pretraining checkpoint into a sorter checkpoint")
    export.add_argument("checkpoint")
    export.add_argument("out")
    export.set_defaults(handler=command_export)

    brainage = commands.add_parser("brainage", help="brain-age estimation with rank and age-difference losses")
    tasks = brainage.add_subparsers(dest="data", required=True)
    tabular = tasks.add_parser("tabular", help="k-fold CV of loss presets on a CSV of regional features")
    tabular.add_argument("--csv", required=True, help="table with an age column and feature columns")
    tabular.add_argument("--age-column", dest="age_column", default="age")
    tabular.add_argument(
        "--features", nargs="+", help='glob patterns of feature columns, e.g. "lh_*" "rh_*" (default: all numeric)'
    )
    tabular.add_argument("--losses", nargs="+", default=["l1", "l1+spearman", "l1+agediff", "cheng2021"])
    tabular.add_argument("--folds", type=int, default=5)
    tabular.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    tabular.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    tabular.add_argument("--max-epochs", dest="max_epochs", type=int, default=300)
    tabular.add_argument("--patience", type=int, default=30, help="early stopping on validation MAE")
    tabular.add_argument(
        "--out", default="runs/brainage-tabular", help="results.json, results.md, plots/, checkpoints/"
    )
    tabular.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline")
    tabular.set_defaults(handler=command_brainage_tabular)

    synthetic = tasks.add_parser(
        "synthetic", help="SFCN on synthetic MRI (no data to fetch) beside median, ridge, floor and oracle"
    )
    synthetic.add_argument("--train", type=int, default=1200, help="training subjects")
    synthetic.add_argument("--test", type=int, default=400, help="test subjects")
    synthetic.add_argument("--losses", nargs="+", default=["l1", "l1+spearman+agediff"])
    synthetic.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    synthetic.add_argument("--data-seed", dest="data_seed", type=int, default=0, help="the simulated cohort")
    synthetic.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    # About 11 s an epoch on 2 CPU cores: 70 epochs let the cosine schedule anneal within 15 minutes.
    synthetic.add_argument("--max-epochs", dest="max_epochs", type=int, default=70)
    synthetic.add_argument("--patience", type=int, default=25)
    synthetic.add_argument("--max-minutes", dest="max_minutes", type=float, default=15.0, help="per training run")
    synthetic.add_argument(
        "--cascade", action="store_true", help="also train Cheng et al.'s second stage on each trained SFCN"
    )
    synthetic.add_argument(
        "--augment",
        nargs="?",
        const="flip-shift",
        choices=["flip-shift", "flip-shift+contrast"],  # sodeep.brainage.augmentation.AUGMENTATIONS
        help="augment training volumes: mirror and shift (the default when given alone), plus scanner-like contrast",
    )
    add_sfcn_flags(synthetic)
    add_ema_flag(synthetic)
    synthetic.add_argument("--out", default="runs/brainage-synthetic")
    synthetic.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline")
    synthetic.set_defaults(handler=command_brainage_synthetic)

    nifti = tasks.add_parser("nifti", help="k-fold CV of loss presets with a 3D CNN (SFCN) on NIfTI volumes")
    nifti.add_argument("--manifest", required=True, help="CSV with columns path, age, optional sex and site")
    nifti.add_argument("--losses", nargs="+", default=["l1", "l1+spearman", "l1+agediff", "cheng2021"])
    nifti.add_argument("--folds", type=int, default=5)
    nifti.add_argument("--seeds", type=int, nargs="+", default=[0])
    nifti.add_argument("--shape", type=int, nargs=3, default=[45, 54, 45], help="grid in voxels (MNI at 4 mm)")
    nifti.add_argument("--voxel-size", dest="voxel_size", type=float, default=4.0, help="mm")
    nifti.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    nifti.add_argument("--max-epochs", dest="max_epochs", type=int, default=60)
    nifti.add_argument("--patience", type=int, default=10)
    add_sfcn_flags(nifti)
    add_ema_flag(nifti)
    nifti.add_argument("--cache", help="preprocessed volumes (default: OUT/cache)")
    nifti.add_argument("--out", default="runs/brainage-nifti")
    nifti.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline")
    nifti.set_defaults(handler=command_brainage_nifti)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command.  Bad input (a missing or foreign file, an invalid value; ``ValueError``
    and ``FileNotFoundError``, of which ``CheckpointError`` is one) ends with one line on stderr
    and exit status 2, as argparse does for bad flags; set ``SODEEP_TRACEBACK=1`` for the
    traceback."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        return arguments.handler(arguments)
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("SODEEP_TRACEBACK"):
            raise
        parser.exit(2, f"sodeep {arguments.command}: error: {error}\n")


if __name__ == "__main__":
    raise SystemExit(main())
