import math

import numpy as np
import pytest
import scipy.stats
import torch

from sodeep.brainage.synthetic_mri import GRID, SimulatorSettings, simulate_cohort, simulate_subject


def test_a_subject_is_a_pure_function_of_seed_and_index():
    first, truth = simulate_subject(0, 3)
    again, truth_again = simulate_subject(0, 3)
    other, _ = simulate_subject(1, 3)
    assert first.shape == GRID and first.dtype == torch.float32
    assert torch.equal(first, again) and truth == truth_again
    assert not torch.equal(first, other)
    inside = first[first != 0]
    assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1) < 1e-3
    assert truth["biological_age"] == pytest.approx(truth["age"] + truth["gap"])


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(range(60), seed=0)


def test_anatomy_follows_biological_age(cohort):
    truth = cohort.truth
    biological = truth["biological_age"]
    gm_fraction = truth["gm"] / (truth["gm"] + truth["wm"] + truth["csf"])
    assert np.corrcoef(biological, gm_fraction)[0, 1] < -0.6
    assert np.corrcoef(biological, truth["ventricles"])[0, 1] > 0.3
    # Ventricles about double from 20 to 80: compare a linear fit's ends (log scale).
    slope, intercept = np.polyfit(biological, np.log(truth["ventricles"]), 1)
    assert 1.4 < np.exp(slope * 60) < 2.8


def test_gap_and_age_ranges_are_the_settings(cohort):
    settings = SimulatorSettings()
    truth = cohort.truth
    assert settings.age_range[0] <= truth["age"].min() and truth["age"].max() <= settings.age_range[1]
    assert 1.5 < truth["gap"].std() < 3.5
    assert set(np.unique(truth["site"])) <= set(range(settings.sites))


def test_cohort_cache_round_trip(tmp_path):
    first = simulate_cohort(range(2), seed=5, cache_directory=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = simulate_cohort(range(2), seed=5, cache_directory=tmp_path)
    assert torch.equal(first.volumes, again.volumes)
    assert all(np.array_equal(first.truth[k], again.truth[k]) for k in first.truth)
    assert first.volumes.shape == (2, 1, *GRID)


def test_synthetic_cli_writes_baselines_and_presets(tmp_path, capsys):
    import json

    from sodeep.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "brainage",
            "synthetic",
            "--train",
            "24",
            "--test",
            "8",
            "--losses",
            "l1",
            "cheng2021",
            "--max-epochs",
            "1",
            "--batch-size",
            "8",
            "--cascade",
            "--augment",
            "flip-shift+contrast",
            "--ema-decay",
            "0.9",
            "--pooled-blocks",
            "last",
            "--out",
            str(out),
            "--wandb",
            "disabled",
        ]
    )
    wrote = capsys.readouterr().out.strip().splitlines()[-1]
    assert wrote == f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'plots'}/"  # no predictions.csv
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["augment"] == "flip-shift+contrast"
    assert results["settings"]["config"]["ema_decay"] == 0.9
    assert results["settings"]["network"] == {"pool_before_norm": True, "pool_every_block": False}
    assert set(results["baselines"]) == {
        "median",
        "ridge on voxels",
        "floor (true biological age)",
        "oracle ridge on true volumes",
    }
    # The floor is the true gap: its MAE is the mean |gap| of the test subjects.
    test = simulate_cohort(range(24, 32), seed=0)
    assert results["baselines"]["floor (true biological age)"]["mae"] == pytest.approx(
        np.abs(test.truth["gap"]).mean(), rel=1e-5
    )
    for preset in ("l1", "cheng2021"):
        (run,) = results["presets"][preset]["runs"]
        assert np.isfinite(run["mae"]) and len(run["test_predictions"]) == 8
        ceiling = run["gap_recovery_ceiling"]  # null where the corrected gap varies less than the true one
        assert (ceiling is None or 0.0 < ceiling <= 1.0) and 0.0 <= run["gap_recovery_p"] <= 1.0
    assert "| SFCN, cheng2021 |" in (out / "results.md").read_text()
    (cascade,) = results["cascade"]["l1"]["runs"]
    assert np.isfinite(cascade["mae"]) and (out / "plots" / "cascade-l1.png").is_file()
    assert set(results["presets"]["l1"]["per_site"]) <= {"0", "1", "2", "3"}


def test_synthetic_benchmark_refuses_bad_settings_before_simulating(tmp_path):
    from sodeep.brainage.synthetic_experiment import run_synthetic_benchmark

    for settings, message in (
        ({"test_size": 2}, "test_size >= 3"),
        ({"train_size": -5}, "train_size >= 4"),
        ({"max_minutes": 0.0}, "max_minutes must be None or > 0"),
        ({"seeds": ()}, "at least one seed"),
    ):
        with pytest.raises(ValueError, match=message):
            run_synthetic_benchmark(["l1"], out=tmp_path, progress=False, **{"train_size": 8, **settings})
    with pytest.raises(ValueError, match="must be known presets, got unknown ones"):
        run_synthetic_benchmark(["bogus"], out=tmp_path, train_size=8, progress=False)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "indices,seed,error,message",
    [
        ([], 0, ValueError, "indices must name at least one subject, got none"),
        ([0, 1.5], 0, TypeError, "each subject index must be an integer, got float 1.5"),
        ([-1], 0, ValueError, "each subject index must be >= 0, got -1"),
        ([0], -2, ValueError, "seed must be >= 0, got -2"),
        ([True], 0, TypeError, "each subject index must be an integer, got bool True"),
        (5, 0, TypeError, r"indices must be subject indices, such as range\(100\) or \[3, 7\], got 5"),
        ("12", 0, TypeError, r"indices must be subject indices, such as range\(100\) or \[3, 7\], got '12'"),
    ],
)
def test_a_cohort_of_no_subjects_or_of_indices_that_are_not_counts_is_refused(indices, seed, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        simulate_cohort(indices, seed)


def test_numpy_indices_name_the_subjects_python_ints_do(tmp_path):
    torch.testing.assert_close(simulate_cohort(np.arange(1, 2)).volumes, simulate_cohort([1]).volumes)
    simulate_cohort([1], np.int64(3), cache_directory=tmp_path)
    simulate_cohort(np.arange(1, 2), 3, cache_directory=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # one cohort, one cache file


def test_the_synthetic_report_averages_a_metric_over_the_runs_that_define_it():
    from sodeep.brainage.synthetic_experiment import format_synthetic_report

    nan = float("nan")
    run = {
        "seed": 0,
        "mae": 5.0,
        "spearman": 0.5,
        "gap_recovery": 0.25,
        "gap_recovery_ceiling": 0.75,
        "train_minutes": 1.0,
    }
    results = {
        "settings": {"train": 8, "test": 4, "simulator": {"gap_sd": 3.0}, "max_minutes": 2},
        "baselines": {"ridge": {"mae": 6.0, "pearson": nan, "spearman": 0.25}},
        "presets": {"l1": {"runs": [{**run, "pearson": 0.5}, {**run, "seed": 1, "mae": 7.0, "pearson": nan}]}},
    }
    report = format_synthetic_report(results)
    assert "SFCN trained <= 2 min per run, seeds [0, 1]." in report
    unlimited = format_synthetic_report({**results, "settings": {**results["settings"], "max_minutes": None}})
    assert "SFCN trained without a time limit, seeds [0, 1]." in unlimited
    assert "| ridge | 6.00 | n/a | 0.250 | n/a | n/a | n/a |" in report
    assert (
        "| SFCN, l1 | 6.00 +- 1.41 | 0.500 (1 of 2 runs) | 0.500 +- 0.000 | 0.250 +- 0.000 (0.75 +- 0.00) | 1.0 +- 0.0 | 2 |"
        in report
    )
    assert "nan" not in report
    # A preset trained on fewer of the folder's seeds names its own, as the cross-validation reports do.
    results["presets"]["mse"] = {"runs": [{**run, "pearson": 0.5}]}
    assert "| SFCN, mse | 5.00 | 0.500 | 0.500 | 0.250 (0.75) | 1.0 | 1 (seeds [0]) |" in format_synthetic_report(
        results
    )


def test_gap_recovery_against_scipy_and_undefined_where_its_premise_fails():
    from sodeep.brainage.metrics import corrected_gap
    from sodeep.brainage.synthetic_experiment import gap_recovery

    generator = np.random.default_rng(0)
    ages = generator.uniform(20, 90, 400)
    true_gap = generator.normal(0, 2.5, 400)
    noisy = ages + true_gap + generator.normal(0, 6.0, 400)  # the true gap plus independent error
    bias = (0.1, -3.0)
    found = gap_recovery(noisy, ages, bias, true_gap)
    corrected = corrected_gap(noisy, ages, bias)
    assert found["gap_recovery"] == pytest.approx(scipy.stats.pearsonr(corrected, true_gap).statistic)
    assert found["gap_recovery_ceiling"] == pytest.approx(true_gap.std() / corrected.std())
    assert found["gap_recovery"] <= found["gap_recovery_ceiling"] + 0.05
    # One age for everyone: the corrected gap is what the fit leaves, not a recovered gap.
    constant = gap_recovery(np.full(400, 55.0), ages, (-1.0, 55.0), true_gap)
    assert all(math.isnan(value) for value in constant.values())
    # Nearly one age: the corrected gap varies less than the true gap, which no added error does.
    flat = gap_recovery(55.0 + 0.01 * generator.normal(size=400), ages, (-1.0, 55.0), true_gap)
    assert math.isnan(flat["gap_recovery_ceiling"]) and not math.isnan(flat["gap_recovery"])
    assert all(math.isnan(value) for value in gap_recovery(noisy[:2], ages[:2], bias, true_gap[:2]).values())
