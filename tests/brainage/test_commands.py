import json

import numpy as np

from sodeep.brainage import TabularConfig, run_tabular
from sodeep.brainage.tables import read_age_table


def _process_state():
    """What a notebook's later cells depend on, and a training run may set for itself."""
    import logging
    import os
    import random
    import warnings

    import matplotlib
    import torch

    return {
        "random": (random.getstate(), np.random.get_state()[1].tolist(), torch.random.get_rng_state().tolist()),
        "deterministic": (
            torch.are_deterministic_algorithms_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory,
        ),
        "variables": {
            name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")
        },
        "logger": logging.getLogger("lightning.pytorch").level,
        "filters": list(warnings.filters),
        "backend": matplotlib.rcParams._get_backend_or_none(),
    }


def test_run_tabular_from_python_writes_and_returns_the_results(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 80, 40)
    lines = ["sub_id,age,site,lh_a,rh_a"] + [
        f"s{i},{age:.2f},{'AB'[i % 2]},{3 - 0.01 * age + rng.normal(0, 0.05):.4f},{rng.normal(2.5, 0.1):.4f}"
        for i, age in enumerate(ages)
    ]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    config = TabularConfig(
        csv=str(tmp_path / "table.csv"),
        losses=["l1"],
        folds=2,
        seeds=[0],
        batch_size=8,
        max_epochs=2,
        out=str(tmp_path / "out"),
        wandb="disabled",
    )
    before = _process_state()
    results = run_tabular(config, progress=False)
    assert _process_state() == before  # seeded, made deterministic and quieted for the run alone
    assert results == json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(run["seed"], run["fold"]) for run in results["presets"]["l1"]["runs"]] == [(0, 0), (0, 1)]
    assert results["settings"]["features"] == 2 and set(results["presets"]["l1"]["per_site"]) == {"A", "B"}
    assert results["settings"]["feature_names"] == read_age_table(tmp_path / "table.csv").feature_names
    assert (tmp_path / "out" / "plots" / "l1.png").is_file()
    printed = capsys.readouterr().out
    assert (
        printed.startswith(f"{tmp_path / 'table.csv'}: 40 subjects, 2 features, 0 rows skipped") and "| l1 |" in printed
    )


def test_seeds_run_together_give_the_runs_of_seeds_run_apart(tmp_path):
    # Each (seed, fold) run depends on its own seed only: a sweep of one seed per trial and a run
    # of all seeds in one process report the same numbers (docs/brainage.md, "Reproducing them").
    rng = np.random.default_rng(1)
    ages = rng.uniform(20, 80, 48)
    lines = ["sub_id,age,lh_a,rh_a,lh_b"] + [
        f"s{i},{age:.2f},{3 - 0.01 * age + rng.normal(0, 0.05):.4f},{rng.normal(2.5, 0.1):.4f},"
        f"{2 + 0.005 * age + rng.normal(0, 0.05):.4f}"
        for i, age in enumerate(ages)
    ]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")

    def runs(seeds, folder):
        config = TabularConfig(
            csv=str(tmp_path / "table.csv"),
            losses=["l1+spearman"],
            folds=2,
            seeds=seeds,
            batch_size=8,
            max_epochs=3,
            out=str(tmp_path / folder),
            wandb="disabled",
        )
        results = run_tabular(config, progress=False)
        return {(run["seed"], run["fold"]): run for run in results["presets"]["l1+spearman"]["runs"]}

    together = runs([0, 1], "together")
    apart = runs([0], "seed0") | runs([1], "seed1")
    assert together.keys() == apart.keys() == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for key, run in together.items():
        assert run["test_predictions"] == apart[key]["test_predictions"] and run["mae"] == apart[key]["mae"]
    assert together[(0, 0)]["test_predictions"] != together[(1, 0)]["test_predictions"]  # seeds differ


def test_settings_changed_after_the_config_was_built_are_read_as_the_constructor_reads_them(tmp_path):
    import pytest

    rng = np.random.default_rng(2)
    lines = ["age,lh_a"] + [f"{age:.2f},{3 - 0.01 * age + rng.normal(0, 0.05):.4f}" for age in rng.uniform(20, 80, 24)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    config = TabularConfig(
        csv=str(tmp_path / "table.csv"),
        folds=2,
        batch_size=8,
        max_epochs=1,
        out=str(tmp_path / "out"),
        wandb="disabled",
    )
    config.seeds, config.losses = np.int64(1), "l1"  # as the constructor would take them
    results = run_tabular(config, progress=False)
    assert sorted(results["presets"]) == ["l1"]
    assert {run["seed"] for run in results["presets"]["l1"]["runs"]} == {1}
    config.folds = 1
    with pytest.raises(ValueError, match="folds"):
        run_tabular(config, progress=False, resume=True)


def test_the_plots_correct_each_subjects_gap_by_its_own_folds_fit(tmp_path, monkeypatch):
    """As the corrected metrics do: the plot's corrected gaps average to each run's corrected MAE."""
    import sodeep.brainage.plots

    drawn = {}
    original = sodeep.brainage.plots.plot_predictions
    monkeypatch.setattr(
        sodeep.brainage.plots,
        "plot_predictions",
        lambda ages, predictions, path, **options: (
            drawn.update(ages=ages, predictions=predictions, **options) or original(ages, predictions, path, **options)
        ),
    )
    rng = np.random.default_rng(3)
    ages = rng.uniform(20, 80, 36)
    lines = ["age,lh_a,rh_a"] + [
        f"{age:.2f},{3 - 0.01 * age + rng.normal(0, 0.1):.4f},{rng.normal():.4f}" for age in ages
    ]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    config = TabularConfig(
        csv=str(tmp_path / "table.csv"),
        losses=["l1"],
        folds=3,
        seeds=[0],
        batch_size=8,
        max_epochs=2,
        out=str(tmp_path / "out"),
        wandb="disabled",
    )
    runs = run_tabular(config, progress=False)["presets"]["l1"]["runs"]
    slope, intercept = drawn["bias"]
    corrected = (drawn["predictions"] - drawn["ages"]) - (slope * drawn["ages"] + intercept)
    start = 0
    for run in runs:
        size = len(run["test_rows"])
        np.testing.assert_allclose(np.abs(corrected[start : start + size]).mean(), run["corrected_mae"], atol=2e-3)
        start += size
    assert len({float(value) for value in slope}) == len(runs)  # one fit per fold


def test_each_runs_figures_are_logged_apart_from_the_means_in_the_wandb_summary():
    from types import SimpleNamespace

    from sodeep.brainage.commands import run_logger

    logged = []
    run = SimpleNamespace(log=logged.append, summary={})
    run_logger(run)("l1", {"seed": 0, "fold": 1, "mae": 3.5, "test_rows": [1, 2], "name": "l1"})
    assert logged == [{"l1/run/seed": 0, "l1/run/fold": 1, "l1/run/mae": 3.5}]
    run_logger(None)("l1", {"mae": 1.0})  # no W&B run: nothing


def test_the_wandb_summary_holds_each_presets_means_and_a_lone_presets_unprefixed():
    """An online W&B sweep finds its metric.name (`mae`) in the summary of a one-preset trial."""
    from types import SimpleNamespace

    from sodeep.brainage.commands import run_means, summarize_in_wandb

    runs = [{"seed": 0, "mae": 2.0, "pearson": float("nan")}, {"seed": 1, "mae": 4.0, "pearson": 0.5, "ok": True}]
    assert run_means(runs) == {"mae": 3.0, "pearson": 0.5}
    run = SimpleNamespace(summary={})
    summarize_in_wandb(run, {"l1": {"mae": 3.0}})
    assert run.summary == {"l1/mae": 3.0, "mae": 3.0}
    run = SimpleNamespace(summary={})
    summarize_in_wandb(run, {"l1": {"mae": 3.0}, "mse": {"mae": 4.0}})
    assert run.summary == {"l1/mae": 3.0, "mse/mae": 4.0}
    summarize_in_wandb(None, {"l1": {"mae": 3.0}})  # no W&B run: nothing


def test_preset_means_read_summaries_or_average_the_runs_as_synthetic_results_need():
    from sodeep.brainage.commands import preset_means

    cross_validation = {"presets": {"l1": {"summary": {"mae": {"mean": 3.0, "sd": 1.0}}, "runs": [{}]}}}
    assert preset_means(cross_validation) == {"l1": {"mae": 3.0}}
    runs = [{"seed": 0, "mae": 2.0, "epochs": 9, "train_minutes": 1.5}, {"seed": 1, "mae": 4.0, "epochs": 7}]
    synthetic = {"presets": {"l1": {"runs": runs}}, "cascade": {"l1": {"runs": runs[:1]}}}
    assert preset_means(synthetic) == {"l1": {"mae": 3.0}, "cascade l1": {"mae": 2.0}}  # results, not epochs
