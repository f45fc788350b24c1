"""The brain-age commands as Python functions, for scripts and notebooks.

Each takes its config (:mod:`sodeep.brainage.config`), checks it, trains, writes
``results.json`` (after every run: a repeated call resumes), ``results.md`` and ``plots/`` under
``config.out``, prints the report and returns the results dict.  ``sodeep brainage tabular |
synthetic | nifti`` build the config from flags and YAML and call these.

Example (trains for about a minute, so not run as a doctest):
    >>> from sodeep.brainage import TabularConfig, run_tabular
    >>> config = TabularConfig(losses=["l1"], folds=2, seeds=[0], max_epochs=30, wandb="disabled")
    >>> results = run_tabular(config)  # doctest: +SKIP
    >>> results["presets"]["l1"]["summary"]["mae"]["mean"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sodeep.brainage.config import NiftiConfig, SyntheticConfig, TabularConfig, TrainingConfig
from sodeep.brainage.tables import check_folds


def run_tabular(config: TabularConfig, *, progress: bool = True) -> dict[str, Any]:
    """k-fold cross-validation of ``config.losses`` with :class:`~sodeep.brainage.AgeMLP` on a table."""
    from sodeep.brainage.cross_validation import cross_validate_table
    from sodeep.brainage.tables import read_age_table
    from sodeep.runs import quiet_lightning, start_wandb_run

    config.check()
    path = config.table_path()
    table = read_age_table(path, age_column=config.age_column, features=config.features)
    check_folds(config.folds, len(table))  # before the run folder is made
    training = TrainingConfig(batch_size=config.batch_size, max_epochs=config.max_epochs, patience=config.patience)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_lightning()
    print(
        f"{path.name}: {len(table)} subjects, {len(table.feature_names)} features, {len(table.skipped)} rows "
        f"skipped; presets {config.losses}, {config.folds} folds x seeds {config.seeds}"
    )
    run = start_wandb_run(config.wandb, out, f"brainage-tabular-{out.name}", asdict(config))
    results = cross_validate_table(
        table,
        config.losses,
        out=out,
        folds=config.folds,
        seeds=config.seeds,
        config=training,
        progress=progress,
        on_run=run_logger(run),
    )
    report_cross_validation(results, table.ages, out, f"Brain age from {path.name}", run)
    return results


def run_synthetic(config: SyntheticConfig, *, progress: bool = True) -> dict[str, Any]:
    """SFCN per preset and training seed on synthetic MRI, beside the baselines (fixed split)."""
    from sodeep.brainage.plots import plot_predictions
    from sodeep.brainage.synthetic_experiment import format_synthetic_report, run_synthetic_benchmark
    from sodeep.brainage.synthetic_mri import simulate_cohort
    from sodeep.files import atomic_write_text
    from sodeep.runs import quiet_lightning, start_wandb_run

    config.check()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_lightning()
    run = start_wandb_run(config.wandb, out, f"brainage-synthetic-{out.name}", asdict(config))
    results = run_synthetic_benchmark(
        config.losses,
        out=out,
        train_size=config.train,
        test_size=config.test,
        seeds=config.seeds,
        data_seed=config.data_seed,
        config=volume_training(config),
        max_minutes=config.max_minutes,
        cascade=config.cascade,
        augment=config.augment,
        network=sfcn_network(config),
        progress=progress,
        on_run=run_logger(run),
    )
    report = format_synthetic_report(results)
    atomic_write_text(out / "results.md", report)
    test = simulate_cohort(
        range(config.train, config.train + config.test), config.data_seed, cache_directory=out / "cache"
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
    return results


def run_nifti(config: NiftiConfig, *, progress: bool = True) -> dict[str, Any]:
    """k-fold cross-validation of ``config.losses`` with SFCN on the volumes of a manifest."""
    from sodeep.brainage.cross_validation import cross_validate
    from sodeep.brainage.models import SFCN
    from sodeep.brainage.volumes import load_cohort
    from sodeep.runs import quiet_lightning, start_wandb_run

    config.check()
    shape = tuple(config.shape)
    network = sfcn_network(config)
    training = volume_training(
        config, extra={"model": "sfcn", "network": network, "shape": list(shape), "voxel_size": config.voxel_size}
    )
    out = Path(config.out)
    # The manifest is read first: a missing or malformed one leaves no empty run folder behind.
    cohort = load_cohort(
        config.manifest, config.cache or out / "cache", shape=shape, voxel_size=config.voxel_size, progress=progress
    )
    check_folds(config.folds, len(cohort.ages))
    out.mkdir(parents=True, exist_ok=True)
    quiet_lightning()
    print(f"{len(cohort.ages)} subjects, {len(cohort.problems)} rows left out; grid {shape} at {config.voxel_size} mm")
    run = start_wandb_run(config.wandb, out, f"brainage-nifti-{out.name}", asdict(config))
    results = cross_validate(
        cohort.ages.numpy(),
        cohort.sites,
        config.losses,
        make_inputs=lambda fitting: lambda rows: cohort.volumes[rows],  # z-scored per subject: nothing to fit
        make_model=lambda fitting_ages: SFCN(
            age_offset=float(fitting_ages.mean()), age_scale=float(fitting_ages.std()), **network
        ),
        out=out,
        folds=config.folds,
        seeds=config.seeds,
        config=training,
        description={"grid": list(shape)},
        progress=progress,
        on_run=run_logger(run),
    )
    report_cross_validation(results, cohort.ages.numpy(), out, f"Brain age from {Path(config.manifest).name}", run)
    return results


def sfcn_network(config: SyntheticConfig | NiftiConfig) -> dict[str, Any]:
    """:class:`~sodeep.brainage.models.SFCN` keyword arguments of a config (JSON-able; unset
    widths are left to SFCN's defaults)."""
    sizes = (("channels", config.channels), ("head_channels", config.head_channels))
    return {key: value for key, value in sizes if value is not None} | {
        "pool_before_norm": config.block_order == "pool-norm",
        "pool_every_block": config.pooled_blocks == "all",
    }


def volume_training(config: SyntheticConfig | NiftiConfig, **options: Any) -> TrainingConfig:
    """The 3D CNN's :class:`TrainingConfig` (no hidden layers: the network is SFCN)."""
    return TrainingConfig(
        hidden=(),
        batch_size=config.batch_size,
        max_epochs=config.max_epochs,
        patience=config.patience,
        ema_decay=config.ema_decay,
        **options,
    )


def run_logger(run: Any) -> Callable[[str, dict[str, Any]], None]:
    """``(preset, run record) -> None`` logging the record's numbers to W&B (no-op without a run)."""

    def log(name: str, record: dict[str, Any]) -> None:
        if run is not None:
            run.log({f"{name}/{key}": value for key, value in record.items() if isinstance(value, (int, float))})

    return log


def report_cross_validation(results: dict[str, Any], ages: Any, out: Path, title: str, run: Any) -> None:
    """Write ``results.md`` and one plot per preset (out-of-fold predictions of the first seed),
    close the W&B run and print the report."""
    from sodeep.brainage.cross_validation import format_report, out_of_fold
    from sodeep.brainage.plots import plot_predictions
    from sodeep.files import atomic_write_text

    report = format_report(results, title)
    atomic_write_text(out / "results.md", report)
    for name, entry in results["presets"].items():
        first_seed = min(r["seed"] for r in entry["runs"])
        first_runs = [r for r in entry["runs"] if r["seed"] == first_seed]
        rows, predictions = out_of_fold(entry["runs"], first_seed)
        bias = (
            float(np.mean([r["age_bias_slope"] for r in first_runs])),
            float(np.mean([r["age_bias_intercept"] for r in first_runs])),
        )
        plot_predictions(
            np.asarray(ages)[rows],
            predictions,
            out / "plots" / f"{name}.png",
            title=f"{name} (out-of-fold, seed {first_seed})",
            bias=bias,
        )
    if run is not None:
        for name, entry in results["presets"].items():
            run.summary.update({f"{name}/{m}": v["mean"] for m, v in entry["summary"].items()})
        run.finish()
    print(report)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'plots'}/")
