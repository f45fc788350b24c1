"""Site-grouped validation of brain age: folds of whole sites, baselines on the same folds and
within-site Spearman, checked against slow loops, scipy and scikit-learn."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from sodeep.brainage.baselines import RIDGE_ALPHAS, SVR_C, SVR_EPSILON, baseline_predictions
from sodeep.brainage.config import TabularConfig, TrainingConfig
from sodeep.brainage.cross_validation import cross_validate_table, score_predictions
from sodeep.brainage.cv_report import format_report
from sodeep.brainage.folds import site_folds
from sodeep.brainage.metrics import per_site_spearman, within_site_spearman
from sodeep.brainage.splits import assign_folds, check_split, fold_rows
from sodeep.brainage.tables import NO_SITE, AgeTable, read_age_table
from sodeep.cli import build_parser, main
from sodeep.sweeps.expand import expand_trials
from sodeep.sweeps.launcher import TrialLauncher
from sodeep.sweeps.spec import load_sweep

TINY = TrainingConfig(hidden=(8,), batch_size=16, max_epochs=3, patience=2)


def site_labels(sizes, seed=0):
    """Site labels with ``sizes[i]`` subjects of site ``s<i>``, shuffled."""
    labels = np.repeat([f"s{index}" for index in range(len(sizes))], sizes)
    return list(np.random.default_rng(seed).permutation(labels))


def site_table(sizes=(9, 12, 7, 10, 8, 11, 6), seed=0):
    """Ages whose mean shifts per site (as across real scanners), features that follow age."""
    rng = np.random.default_rng(seed)
    sites = site_labels(sizes, seed)
    offset = {site: rng.uniform(-10, 10) for site in sorted(set(sites))}
    ages = np.array([rng.uniform(25, 65) + offset[site] for site in sites], dtype=np.float32)
    features = (3.0 - 0.01 * ages[:, None] + rng.normal(0, 0.05, (len(ages), 4))).astype(np.float32)
    return AgeTable(
        features=features,
        ages=ages,
        feature_names=["a", "b", "c", "d"],
        subject_ids=[str(i) for i in range(len(ages))],
        sites=sites,
        skipped=[],
    )


@pytest.mark.parametrize("sizes,folds", [((5, 1, 30, 7, 7, 12, 3, 9), 3), ((4, 4, 4, 4), 2), ((50, 2, 3, 8, 20), 5)])
@pytest.mark.parametrize("seed", [0, 7])
def test_site_folds_keep_each_site_whole_and_balance_fold_sizes(sizes, folds, seed):
    sites = site_labels(sizes, seed)
    fold_of = site_folds(sites, folds, seed)
    assert fold_of.shape == (len(sites),) and set(fold_of.tolist()) == set(range(folds))
    for site in set(sites):  # slow loop: one fold per site
        assert len({int(fold_of[i]) for i, other in enumerate(sites) if other == site}) == 1
    # Dealing each site to the lightest fold never overfills a fold by more than the largest site.
    assert np.bincount(fold_of).max() <= len(sites) / folds + max(sizes)
    np.testing.assert_array_equal(fold_of, site_folds(sites, folds, seed))


def test_site_folds_depend_on_the_seed_and_as_many_folds_as_sites_is_leave_one_site_out():
    sites = site_labels(range(3, 23))
    assert not np.array_equal(site_folds(sites, 4, seed=0), site_folds(sites, 4, seed=1))
    fold_of = site_folds(sites, 20, seed=3)
    pairs = {(site, int(fold)) for site, fold in zip(sites, fold_of)}
    assert len(pairs) == len({site for site, _ in pairs}) == len({fold for _, fold in pairs}) == 20


@pytest.mark.parametrize("folds", [3, 7])
def test_fold_rows_keep_every_site_in_one_of_fitting_validation_test_and_test_each_subject_once(folds):
    table = site_table()
    sites = np.asarray(table.sites)
    for seed in (0, 1):
        splits = [
            fold_rows(table.ages, sites, split="site", folds=folds, seed=seed, fold=fold, validation_fraction=0.1)
            for fold in range(folds)
        ]
        tested = np.concatenate([rows.test for rows in splits])
        assert sorted(tested.tolist()) == list(range(len(table)))  # every subject tested exactly once
        for rows in splits:
            parts = [set(sites[rows.fitting]), set(sites[rows.validation]), set(sites[rows.test])]
            assert all(parts)
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
            everything = np.concatenate([rows.fitting, rows.validation, rows.test])
            assert sorted(everything.tolist()) == list(range(len(table)))
        again = fold_rows(table.ages, sites, split="site", folds=folds, seed=seed, fold=1, validation_fraction=0.1)
        np.testing.assert_array_equal(again.validation, splits[1].validation)
        np.testing.assert_array_equal(again.test, splits[1].test)


def test_stratified_split_is_unchanged_and_mixes_sites():
    table = site_table()
    rows = fold_rows(table.ages, table.sites, split="stratified", folds=3, seed=0, fold=0, validation_fraction=0.1)
    sites = np.asarray(table.sites)
    assert set(sites[rows.test]) & set(sites[rows.fitting])  # the protocol site splits exist to avoid


@pytest.mark.parametrize(
    "sites,folds,words",
    [
        ([NO_SITE] * 40, 2, "needs a site column; the table has none"),
        (["a"] * 20 + ["b"] * 20, 2, "needs 3 sites at least (one to test, and in each training split one to fit"),
        (["a"] * 20 + ["b"] * 20, 3, "to hold out for validation), got 2 (['a', 'b']); split by age (split="),
        (["a"] * 40, 2, "needs 3 sites at least (one to test, and in each training split one to fit on and one"),
        (
            ["a"] * 14 + ["b"] * 13 + ["c"] * 13,
            4,
            "into 4 folds needs at least 4 sites, got 3 (['a', 'b', 'c']); use folds=3",
        ),
        (
            [f"s{index}" for index in range(7) for _ in range(6)],
            8,
            "needs at least 8 sites, got 7 (['s0', 's1', 's2', 's3', 's4'] ...); use folds=7",
        ),
        (
            ["a"] * 20 + ["b"] * 10 + ["c"] * 10,
            2,
            "none to hold out for validation; give more sites, or split by age (split='stratified')",
        ),
        (["a"] * 20 + ["b"] * 19 + ["c"], 3, "1 test"),
        (["a"] * 20 + ["b"] * 19 + ["c"], 3, "use fewer folds or more subjects per site, or split by age"),
        (
            ["a"] * 20 + ["b"] * 20 + ["c"] * 18 + [NO_SITE] * 2,
            3,
            "2 subjects have no site (an empty site cell or NA, read as '(no site)') among the sites ['a', 'b', 'c']",
        ),
    ],
)
def test_site_split_refuses_tables_it_cannot_split(sites, folds, words):
    ages = np.linspace(20, 80, len(sites))
    for labels in (sites, np.asarray(sites)):
        with pytest.raises(ValueError, match="^[^\n]*$") as error:
            check_split(ages, labels, split="site", folds=folds, seeds=[0], validation_fraction=0.1)
        assert words in str(error.value) and "np.str_" not in str(error.value)  # sites shown as plain strings


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        check_split(np.arange(40.0), ["a"] * 40, split="sites", folds=2, seeds=[0], validation_fraction=0.1)
    with pytest.raises(ValueError, match=r"split must be one of \['stratified', 'site'\], got 'sites'"):
        TabularConfig(split="sites")


def _slow_within_site_spearman(predicted, true, sites):
    values, weights = [], []
    for site in sorted(set(sites)):
        rows = [i for i, other in enumerate(sites) if other == site]
        if len(rows) >= 3 and len({true[i] for i in rows}) > 1:
            values.append(scipy.stats.spearmanr([predicted[i] for i in rows], [true[i] for i in rows])[0])
            weights.append(len(rows))
    return sum(v * w for v, w in zip(values, weights)) / sum(weights)


@pytest.mark.parametrize("seed", range(4))
def test_within_site_spearman_is_scipy_per_site_weighted_by_subjects(seed):
    rng = np.random.default_rng(seed)
    sites = site_labels((2, 3, 9, 15, 4, 1), seed) + ["flat"] * 4
    true = np.round(rng.uniform(20, 80, len(sites)))  # whole years: ties
    true[-4:] = 30.0  # a site of one age has no ranking to recover: left out
    predicted = np.round(true + rng.normal(0, 15, len(sites)))
    assert within_site_spearman(predicted, true, sites) == pytest.approx(
        _slow_within_site_spearman(predicted, true, sites), abs=1e-12
    )
    per_site = per_site_spearman(predicted, true, sites)
    assert set(per_site) == {"s1", "s2", "s3", "s4"}
    for site, entry in per_site.items():
        rows = [i for i, other in enumerate(sites) if other == site]
        assert entry["n"] == len(rows)
        assert entry["spearman"] == pytest.approx(scipy.stats.spearmanr(predicted[rows], true[rows])[0], abs=1e-12)


def test_within_site_spearman_without_a_site_of_three_or_of_constant_predictions_is_nan():
    assert np.isnan(within_site_spearman([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"]))
    assert np.isnan(within_site_spearman([5.0] * 3, [1.0, 2.0, 3.0], ["a"] * 3))
    with pytest.raises(ValueError, match="one entry per subject"):
        within_site_spearman([1.0, 2.0], [1.0, 2.0, 3.0], ["a"] * 3)


def _sklearn_baselines(features, ages, training, test, search_folds):
    """The baselines written directly in scikit-learn, float64 throughout."""
    scaler = StandardScaler().fit(features[training].astype(np.float64))
    fitted, tested = scaler.transform(features[training]), scaler.transform(features[test])
    cv = PredefinedSplit(search_folds)
    search = {"scoring": "neg_mean_absolute_error", "cv": cv}
    ridge = GridSearchCV(Ridge(), {"alpha": list(RIDGE_ALPHAS)}, **search).fit(fitted, ages[training])
    svr = GridSearchCV(SVR(epsilon=SVR_EPSILON), {"C": list(SVR_C)}, **search).fit(fitted, ages[training])
    return {
        "median": np.full(len(test), np.median(ages[training])),
        "ridge": ridge.predict(tested),
        "svr": svr.predict(tested),
    }


def test_baselines_equal_scikit_learn_fitted_directly_on_a_fold():
    table = site_table()
    ages = table.ages.astype(np.float64)
    rows = fold_rows(table.ages, table.sites, split="site", folds=3, seed=0, fold=1, validation_fraction=0.1)
    training = rows.training
    search_folds = assign_folds(ages[training], np.asarray(table.sites)[training], "site", 3, seed=5)
    ours = baseline_predictions(table.features, ages, training, rows.test, search_folds)
    reference = _sklearn_baselines(table.features, ages, training, rows.test, search_folds)
    for name in ("median", "ridge", "svr"):
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="one fold per training row"):
        baseline_predictions(table.features, ages, training, rows.test, search_folds[:-1])


def test_site_cross_validation_fits_presets_and_baselines_on_the_same_folds(tmp_path):
    table = site_table()
    results = cross_validate_table(
        table, ["l1"], out=tmp_path, folds=3, split="site", seeds=[0], config=TINY, progress=False
    )
    assert results["settings"]["split"] == "site"
    presets, baselines = results["presets"]["l1"]["runs"], results["baselines"]
    assert set(baselines) == {"median", "ridge", "svr"}
    sites, ages = np.asarray(table.sites), table.ages.astype(np.float64)
    for fold, run in enumerate(presets):
        test = np.asarray(run["test_rows"])
        training = np.setdiff1d(np.arange(len(table)), test)
        assert not set(sites[test]) & set(sites[training])
        search_folds = assign_folds(ages[training], sites[training], "site", 3, seed=fold)
        reference = _sklearn_baselines(table.features, ages, training, test, search_folds)
        for name, entry in baselines.items():
            record = entry["runs"][fold]
            assert (record["seed"], record["fold"], record["test_rows"]) == (0, fold, run["test_rows"])
            np.testing.assert_allclose(record["test_predictions"], reference[name], atol=2e-3)
        assert run["within_site_spearman"] == pytest.approx(
            _slow_within_site_spearman(run["test_predictions"], ages[test].tolist(), sites[test].tolist()), abs=0.02
        )
    pooled_errors = [abs(p - ages[row]) for run in presets for row, p in zip(run["test_rows"], run["test_predictions"])]
    assert results["presets"]["l1"]["out_of_fold"]["mae"] == pytest.approx(np.mean(pooled_errors), abs=1e-3)
    # The median ranks nobody: its correlations are left out (n/a), not NaN.
    assert "spearman" not in baselines["median"]["summary"] and "pearson" not in baselines["median"]["runs"][0]
    assert "NaN" not in (tmp_path / "results.json").read_text()
    assert "within_site_spearman" in results["presets"]["l1"]["summary"]
    report = format_report(results, "sites")
    assert "3-fold site-grouped (no site in both training and test) CV" in report
    assert "within_site_spearman: Spearman inside each test site of 3 or more subjects" in report
    assert "| ridge |" in report and "| median |" in report and "| baseline: svr |" in report and "n/a" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["baselines"]["ridge"]["runs"] == baselines["ridge"]["runs"]


def test_a_folder_of_one_protocol_refuses_the_other_and_keeps_its_baselines(tmp_path):
    table = site_table()
    options = {"out": tmp_path, "folds": 3, "seeds": [0], "config": TINY, "progress": False}
    first = cross_validate_table(table, ["l1"], split="site", **options)
    with pytest.raises(ValueError, match=r'other settings \(split: "site" -> "stratified"\)'):
        cross_validate_table(table, ["l1"], split="stratified", **options)
    again = cross_validate_table(table, ["l1", "mse"], split="site", **options)
    assert again["baselines"]["svr"]["runs"] == first["baselines"]["svr"]["runs"]


def test_cli_split_site_runs_and_refuses_a_table_without_sites(tmp_path, capsys):
    table = site_table()
    lines = ["sub_id,age,site,a,b"] + [
        f"{i},{age:.2f},{site},{row[0]:.4f},{row[1]:.4f}"
        for i, (age, site, row) in enumerate(zip(table.ages, table.sites, table.features))
    ]
    (tmp_path / "sites.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "no_sites.csv").write_text(
        "\n".join(line.split(",", 3)[0] + "," + line.split(",", 3)[1] + "," + line.split(",", 3)[3] for line in lines)
        + "\n"
    )
    common = ["brainage", "tabular", "--losses", "l1", "--seeds", "0", "--max-epochs", "2", "--batch-size", "8"]
    common += ["--split", "site", "--folds", "3", "--wandb", "disabled"]
    assert main([*common, "--csv", str(tmp_path / "sites.csv"), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["settings"]["split"] == "site" and len(results["baselines"]["ridge"]["runs"]) == 3
    assert "Baselines on the same folds" in (tmp_path / "out" / "results.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--csv", str(tmp_path / "no_sites.csv"), "--out", str(tmp_path / "refused")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "needs a site column" in error
    assert not (tmp_path / "refused").exists()


def test_split_sweep_runs_every_preset_and_seed_under_both_protocols(tmp_path):
    sweeps = Path(__file__).resolve().parents[2] / "experiments" / "sweeps"
    spec = load_sweep(sweeps / "brainage_split.yaml")
    launcher = TrialLauncher(spec, tmp_path, "offline", sweeps.parents[1])
    parser = build_parser()
    plans = set()
    for trial in expand_trials(spec):
        arguments = parser.parse_args(launcher.command(trial)[0][2:])
        plans.add((arguments.split, tuple(arguments.losses), tuple(arguments.seeds), arguments.folds))
    assert {split for split, *_ in plans} == {"stratified", "site"} and len(plans) == 2 * 6 * 3


def test_a_table_of_mostly_one_age_keeps_two_ages_in_every_validation_split():
    """27 subjects aged 30 and 3 aged 60: the age-bias line is fitted on two different ages."""
    ages = np.array([30.0] * 27 + [60.0] * 3)
    sites = [NO_SITE] * len(ages)
    settings = {"split": "stratified", "folds": 3, "validation_fraction": 0.1}
    check_split(ages, sites, seeds=[0, 1, 2], **settings)
    for seed in (0, 1, 2):
        for fold in range(3):
            rows = fold_rows(ages, sites, seed=seed, fold=fold, **settings)
            assert np.ptp(ages[rows.validation]) > 0 and len(rows.fitting) >= 2
            assert len(np.unique(np.concatenate([rows.fitting, rows.validation, rows.test]))) == len(ages)


def test_training_subjects_all_of_one_age_are_refused_before_anything_runs():
    ages = np.array([30.0] * 29 + [60.0])
    # One subject of another age: its test fold leaves training one age whatever the folds.
    with pytest.raises(
        ValueError,
        match="every training subject is aged 30, and the age-bias line needs two different ages; give a table",
    ):
        check_split(ages, [NO_SITE] * 30, split="stratified", folds=3, seeds=[0], validation_fraction=0.1)
    # Every subject of one age: fewer folds cannot help, and the message does not say they would.
    with pytest.raises(ValueError, match=r"^every subject is aged 50: brain age needs subjects of different ages"):
        check_split(np.full(30, 50.0), [NO_SITE] * 30, split="stratified", folds=3, seeds=[0], validation_fraction=0.1)


def test_folds_refuse_input_they_cannot_split():
    from sodeep.brainage.folds import stratified_folds

    with pytest.raises(ValueError, match="ages must be finite, got 1 NaN or infinite"):
        stratified_folds(np.array([20.0, np.nan, 40.0, 50.0]), 2, seed=0)
    with pytest.raises(ValueError, match=r"ages must be 1-D, one per subject, got shape \(2, 2\)"):
        stratified_folds(np.ones((2, 2)), 2, seed=0)
    ages = np.arange(20.0, 30.0)
    for folds, seed, message in [
        (3.0, 0, "folds must be an integer, got float 3.0"),
        (3, -1, r"seed must be an integer >= 0 \(or what numpy.random.default_rng takes\), got -1"),
        (3, 0.5, r"seed must be an integer >= 0 \(or what numpy.random.default_rng takes\), got 0.5"),
    ]:
        with pytest.raises((TypeError, ValueError), match=f"^{message}$"):
            stratified_folds(ages, folds, seed)
    # Seeds numpy takes: a NumPy integer, as the same Python one; a sequence of integers.
    np.testing.assert_array_equal(stratified_folds(ages, 3, np.int64(5)), stratified_folds(ages, 3, 5))
    assert stratified_folds(ages, 3, [1, 2]).shape == (10,)
    for sites in ("abc", ["a", None, "b"]):
        with pytest.raises(ValueError, match="sites must be a sequence of site labels"):
            site_folds(sites, 2, seed=0)


def test_too_few_subjects_for_the_folds_names_the_most_folds_they_allow():
    from sodeep.brainage.folds import check_folds
    from sodeep.brainage.splits import check_cross_validation_size, fewest_subjects

    # The fewest subjects, against a loop over the rule: 2 per test fold, 4 per training split.
    for folds in range(2, 12):
        allowed = [n for n in range(1, 200) if n >= 2 * folds and all(n - len(f) >= 4 for f in _folds_of(n, folds))]
        assert fewest_subjects(folds) == allowed[0]
    with pytest.raises(ValueError, match=r"9 subjects are too few for 5 folds, which need 10 .*; use folds=2 to 4"):
        check_cross_validation_size(9, 5)
    with pytest.raises(ValueError, match=r"a cross-validation needs 6 subjects at least \(folds=3\)"):
        check_cross_validation_size(3, 2)
    with pytest.raises(ValueError, match="use folds=3$"):
        check_cross_validation_size(7, 2)  # 2 folds need 8 subjects, 3 folds only 6
    # The advice names exactly the fold counts that these subjects allow.
    for subjects in range(2, 30):
        for folds in range(2, 12):
            try:
                check_cross_validation_size(subjects, folds)
            except ValueError as error:
                advice = str(error).rsplit("; ", 1)[1]
                fits = [k for k in range(2, 40) if fewest_subjects(k) <= subjects]
                if not fits:
                    assert advice.startswith("a cross-validation needs 6 subjects at least")
                    continue
                named = advice.removeprefix("use folds=")
                low, _, high = named.partition(" to ")
                assert fits == (list(range(int(low), int(high) + 1)) if high else [int(k) for k in named.split(", ")])
    with pytest.raises(ValueError, match="9 folds need at least 9 subjects, got 8; use folds=8 or fewer"):
        check_folds(9, 8)
    for folds in (1, 0):
        with pytest.raises(ValueError, match="need folds >= 2"):
            fewest_subjects(folds)


def _folds_of(subjects, folds):
    """Fold sizes as stratified folds make them: sizes differing by one at most."""
    return [range(subjects // folds + (index < subjects % folds)) for index in range(folds)]


def test_a_site_named_all_is_a_site(tmp_path):
    # Words such as "all" or "none" in a site column are sites, not the absence of one.
    path = tmp_path / "t.csv"
    rows = [f"{site},{20 + index},{index % 7}" for index, site in enumerate(["all", "none", "c"] * 10)]
    path.write_text("site,age,thickness\n" + "\n".join(rows) + "\n")
    table = read_age_table(path)
    assert sorted(set(table.sites)) == ["all", "c", "none"] and not table.empty_site_lines
    check_split(table.ages, table.sites, split="site", folds=3, seeds=[0], validation_fraction=0.1)


def test_a_folder_extended_with_other_seeds_reports_each_presets_own_seeds(tmp_path):
    """Finished runs are kept when a folder is resumed with other presets and seeds; the report's
    heading gives the seeds the folder holds and a preset with fewer names its own."""
    table = site_table()
    options = {"out": tmp_path, "folds": 3, "split": "site", "config": TINY, "progress": False}
    cross_validate_table(table, ["l1", "mse"], seeds=[0], **options)
    results = cross_validate_table(table, ["l1"], seeds=[0, 1], **options)
    assert len(results["presets"]["mse"]["runs"]) == 3 and len(results["presets"]["l1"]["runs"]) == 6
    report = format_report(results, "extended")
    assert "CV x seeds [0, 1]," in report
    assert [line for line in report.splitlines() if line.startswith("| mse |")][0].endswith("| 3 (seeds [0]) |")
    assert [line for line in report.splitlines() if line.startswith("| l1 |")][0].endswith("| 6 |")


def test_the_report_says_subjects_without_a_site_are_left_out_only_where_there_are_some(tmp_path):
    table = site_table()
    results = cross_validate_table(
        table, ["l1"], out=tmp_path / "named", folds=3, seeds=[0], config=TINY, progress=False
    )
    legend = "Spearman inside each test site of 3 or more subjects, weighted by its subjects"
    assert format_report(results, "sites").splitlines()[2].endswith(f"{legend}.")
    table.sites = [NO_SITE if index % 5 == 0 else site for index, site in enumerate(table.sites)]
    results = cross_validate_table(
        table, ["l1"], out=tmp_path / "some", folds=3, seeds=[0], config=TINY, progress=False
    )
    assert format_report(results, "sites").splitlines()[2].endswith(f"{legend} (subjects without a site left out).")


def test_a_table_without_sites_reports_no_within_site_spearman(tmp_path):
    table = site_table()
    table.sites = [NO_SITE] * len(table)
    results = cross_validate_table(table, ["l1"], out=tmp_path, folds=3, seeds=[0], config=TINY, progress=False)
    for entry in (results["presets"]["l1"], results["baselines"]["ridge"]):
        assert all("within_site_spearman" not in run for run in entry["runs"])
        assert "within_site_spearman" not in entry["summary"] and "within_site_spearman" not in entry["out_of_fold"]
        assert "spearman" in entry["out_of_fold"]
    assert "spearman" not in results["baselines"]["median"]["out_of_fold"]  # constant per fold: ranks nobody
    report = format_report(results, "no sites")
    assert report.splitlines()[2].endswith(" subjects; no site is named, so within_site_spearman is n/a.")
    assert "Spearman inside each test site" not in report
    pooled = [line for line in report.splitlines() if line.startswith("| baseline: median")]
    assert pooled == [
        "| baseline: median | " + f"{results['baselines']['median']['out_of_fold']['mae']:.3f} | n/a | n/a |"
    ]


def test_presets_without_shared_runs_are_not_compared_and_each_pooled_row_names_its_seed(tmp_path):
    table = site_table()
    options = {"out": tmp_path, "folds": 3, "split": "site", "config": TINY, "progress": False}
    cross_validate_table(table, ["l1"], seeds=[0], **options)
    results = cross_validate_table(table, ["mse"], seeds=[1], **options)
    report = format_report(results, "apart")
    assert "| mse | no (seed, fold) in common | 0/0 | n/a | n/a | 0/0 | n/a |" in report and "nan" not in report
    assert "Out-of-fold, each model's first seed:" in report
    assert any(line.startswith("| l1 (seed 0) |") for line in report.splitlines())
    assert any(line.startswith("| mse (seed 1) |") for line in report.splitlines())


def test_a_site_split_checks_the_sites_before_the_subjects_so_its_advice_on_folds_fits_them(tmp_path, capsys):
    from sodeep.cli import main

    ages = np.linspace(20, 80, 40)
    rows = ["age,site,f"] + [f"{age:.1f},{'AB'[index % 2]},{index % 7}" for index, age in enumerate(ages)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(SystemExit):
        main(["brainage", "tabular", "--csv", str(tmp_path / "t.csv"), "--split", "site", "--folds", "50"])
    error = capsys.readouterr().err
    assert "needs 3 sites at least" in error and "split by age (--split stratified)" in error, error
    assert "--folds 2 to" not in error  # the subjects' advice, which no site split of 2 sites can follow


def test_a_test_fold_too_small_to_correlate_is_left_out_of_the_correlations_and_said_so(tmp_path):
    """Leave-one-site-out with a site of 2 subjects: that fold's correlations are undefined, the
    others' still summarize, over the runs that have them."""
    table = site_table(sizes=(9, 12, 2, 10))
    results = cross_validate_table(
        table, ["l1"], out=tmp_path, folds=4, split="site", seeds=[0], config=TINY, progress=False
    )
    ridge = results["baselines"]["ridge"]
    small = [run for run in ridge["runs"] if len(run["test_rows"]) == 2]
    assert len(small) == 1 and "spearman" not in small[0] and "pearson" not in small[0]
    defined = [run["spearman"] for run in ridge["runs"] if "spearman" in run]
    assert len(defined) == 3
    assert ridge["summary"]["spearman"] == {
        "mean": pytest.approx(np.mean(defined)),
        "sd": pytest.approx(np.std(defined, ddof=1)),
        "runs": 3,
    }
    assert "runs" not in ridge["summary"]["mae"]
    assert "spearman" in results["presets"]["l1"]["out_of_fold"]  # pooled over all subjects, still defined
    report = format_report(results, "sites")
    assert f"{np.mean(defined):.3f} +- {np.std(defined, ddof=1):.3f} (3 of 4 runs)" in report
    assert "the correlation of a test fold of fewer than 3 subjects is +-1 whatever the model" in report


def test_folds_all_too_small_to_correlate_give_no_correlation_of_a_constant_model(tmp_path):
    """10 subjects in 5 folds of 2: the median baseline predicts one value per fold, so pooled over
    the folds its 'correlation' is the folds' offsets alone (n/a); the presets' paired Spearman has
    no fold to compare, and a summary of a single value has no spread."""
    table = site_table(sizes=(10,))
    table.sites = [NO_SITE] * len(table)
    results = cross_validate_table(table, ["l1", "mse"], out=tmp_path, folds=5, seeds=[0], config=TINY, progress=False)
    median = results["baselines"]["median"]
    assert all(len(run["test_rows"]) == 2 for run in median["runs"])
    assert "spearman" not in median["out_of_fold"]
    assert "spearman" in results["baselines"]["ridge"]["out_of_fold"]  # its folds' predictions differ
    spearman = results["comparisons"]["mse"]["spearman"]
    assert spearman["pairs"] == 0 and np.isnan(spearman["mean_difference"])
    assert results["comparisons"]["mse"]["mae"]["pairs"] == 5
    report = format_report(results, "tiny folds")
    assert "| mse | n/a +- n/a | 0/0 | n/a |" in report, report
    assert "nan" not in report, report


def test_a_summary_of_one_run_shows_no_spread(tmp_path):
    """Leave-one-site-out where one site alone has 3 subjects: its correlation summarizes one run."""
    table = site_table(sizes=(2, 3, 2))
    results = cross_validate_table(
        table, ["l1"], out=tmp_path, folds=3, split="site", seeds=[0], config=TINY, progress=False
    )
    summary = results["baselines"]["ridge"]["summary"]["spearman"]
    assert summary["runs"] == 1 and np.isnan(summary["sd"])
    assert f"{summary['mean']:.3f} +- n/a (1 of 3 runs)" in format_report(results, "sites")


def test_a_within_site_spearman_is_summarized_over_the_runs_with_a_site_to_correlate():
    """A fold of six subjects in pairs of three sites has no site to rank within; the other folds do."""
    from sodeep.brainage.cv_report import summarize

    ages = np.arange(20.0, 32.0)
    sites = ["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["d"] * 2 + ["e"] * 3
    folds = {0: [0, 1, 2, 3, 4], 1: [3, 4, 5, 6, 7, 8], 2: [9, 10, 11, 0, 1]}
    runs = []
    for fold, rows in folds.items():
        predicted = ages[rows] + np.sin(ages[rows])
        runs.append({"seed": 0, "fold": fold, **score_predictions(predicted, ages, np.array(sites), np.array(rows))})
    assert ["within_site_spearman" in run for run in runs] == [True, False, True]
    results = {"presets": {"l1": {"runs": runs}}}
    summarize(results, ages, sites)
    summary = results["presets"]["l1"]["summary"]["within_site_spearman"]
    expected = [runs[0]["within_site_spearman"], runs[2]["within_site_spearman"]]
    assert summary["runs"] == 2 and summary["mean"] == pytest.approx(np.mean(expected))


def test_a_run_that_diverges_says_so_and_names_the_run_and_its_learning_rate(tmp_path):
    """Not "predictions contains NaN or infinite values", which reads as bad input."""
    config = TrainingConfig(hidden=(8,), batch_size=16, max_epochs=3, patience=2, learning_rate=1e30)
    with pytest.raises(ValueError) as raised:
        cross_validate_table(site_table(), ["mse"], out=tmp_path, folds=3, seeds=[0], config=config, progress=False)
    assert str(raised.value) == (
        "training diverged (preset mse, seed 0, fold 0): the model's predictions are not finite at epoch 1; "
        "lower the learning rate (it was 1e+30)"
    )


def test_a_run_whose_predictions_grow_far_beyond_any_age_says_it_diverged(tmp_path):
    """Finite predictions of 1e17 years: a learning rate too high by orders, not a model."""
    config = TrainingConfig(hidden=(8,), batch_size=16, max_epochs=3, patience=2, learning_rate=1e4)
    with pytest.raises(ValueError) as raised:
        cross_validate_table(site_table(), ["l1"], out=tmp_path, folds=3, seeds=[0], config=config, progress=False)
    message = str(raised.value)
    assert message.startswith("training diverged (preset l1, seed 0, fold 0): the model's predictions reach ")
    oldest = float(np.abs(site_table().ages).max())
    assert message.endswith(
        f", beyond 10 times the oldest age ({oldest:.3g}), at epoch 1; lower the learning rate (it was 10000)"
    )


def test_the_divergence_check_scales_with_the_training_subjects_too(recwarn):
    """A fold whose few validation subjects are young while the training subjects are not:
    a prediction of 1.5e5 is within 10 times the table's oldest age (9e5), not a divergence."""
    import torch
    from torch import nn

    from sodeep.brainage.training import AgeRegression

    for oldest_age, diverges in ((9e5, False), (90.0, True)):
        module = AgeRegression(nn.Linear(1, 1), nn.L1Loss(), oldest_age=oldest_age, run={"preset": "l1"})
        module._validation.append((torch.tensor([1.5e5, 30.0]), torch.tensor([25.0, 98.0])))
        if diverges:
            with pytest.raises(ValueError, match=r"reach 1.5e\+05, beyond 10 times the oldest age \(98\), at epoch 1"):
                module.on_validation_epoch_end()
        else:
            module.on_validation_epoch_end()


def test_a_run_whose_last_step_of_an_epoch_breaks_the_weights_says_it_diverged(tmp_path):
    """One step per epoch: the step that breaks the weights is the epoch's last, so no later loss
    sees the predictions; the validation does."""
    config = TrainingConfig(hidden=(8,), batch_size=64, max_epochs=3, patience=3, learning_rate=1e30)
    with pytest.raises(ValueError, match=r"^training diverged \(preset l1, seed 0, fold 0\): the model's predictions"):
        cross_validate_table(site_table(), ["l1"], out=tmp_path, folds=3, seeds=[0], config=config, progress=False)


def test_constant_predictions_have_no_corrected_gap_correlation_nor_per_site_spearman(tmp_path):
    from sodeep.brainage.metrics import fit_age_bias, gap_metrics

    ages = np.linspace(20, 80, 20)
    constant = gap_metrics(np.full(20, 50.0), ages, fit_age_bias(np.full(5, 50.0), ages[:5]))
    assert np.isnan(constant["corrected_gap_age_correlation"]) and constant["gap_age_correlation"] == pytest.approx(-1)
    varied = gap_metrics(ages + np.sin(ages), ages, (0.0, 0.0))
    assert np.isfinite(varied["corrected_gap_age_correlation"])
    table = site_table(sizes=(10, 10, 10, 10))
    results = cross_validate_table(table, ["l1"], out=tmp_path, folds=5, seeds=[0], config=TINY, progress=False)
    median, ridge = results["baselines"]["median"], results["baselines"]["ridge"]
    assert all("spearman" not in values for values in median["per_site"].values())  # the folds' offsets alone
    assert any("spearman" in values for values in ridge["per_site"].values())


def test_a_test_fold_of_one_age_has_no_r2_nor_correlation_and_the_others_still_summarize(tmp_path):
    """Leave-one-site-out where every subject of one site has the same age: that fold's R2 and
    correlations are undefined (no variance to explain), not 0; the summaries, the pooled and the
    per-site Spearman use the other folds, as for a fold too small to correlate."""
    table = site_table(sizes=(12, 4, 4, 4, 4, 4, 4))  # the large site is a fold alone; the others pair up
    first_site = [index for index, site in enumerate(table.sites) if site == table.sites[0]]
    table.ages[first_site] = 30.0
    results = cross_validate_table(
        table, ["l1"], out=tmp_path, folds=4, split="site", seeds=[0], config=TINY, progress=False
    )
    for entry in (results["presets"]["l1"], results["baselines"]["ridge"]):
        constant = [run for run in entry["runs"] if set(run["test_rows"]) == set(first_site)]
        assert len(constant) == 1
        assert all(np.isnan(constant[0].get(metric, np.nan)) for metric in ("r2", "pearson", "spearman"))
        others = [run for run in entry["runs"] if run is not constant[0]]
        for metric in ("r2", "spearman", "pearson"):
            values = [run[metric] for run in others]
            assert entry["summary"][metric] == {
                "mean": pytest.approx(np.mean(values)),
                "sd": pytest.approx(np.std(values, ddof=1)),
                "runs": 3,
            }
        rows, predictions = (
            np.concatenate([r["test_rows"] for r in entry["runs"]]),
            np.concatenate([r["test_predictions"] for r in entry["runs"]]),
        )
        pooled = scipy.stats.spearmanr(predictions, table.ages[rows]).statistic
        assert entry["out_of_fold"]["spearman"] == pytest.approx(pooled, abs=1e-6)
        with_spearman = {site for site, values in entry["per_site"].items() if "spearman" in values}
        assert with_spearman == set(entry["per_site"]) - {table.sites[0]} and len(with_spearman) == 6
    report = format_report(results, "sites")
    assert "(3 of 4 runs)" in report and "that of subjects all of one age (as the R2) is undefined" in report


@pytest.mark.parametrize(
    "group, name, edit, message",
    [
        ("presets", "l1", lambda run: run, "it holds the run of l1, seed 0, fold 0 twice"),
        ("baselines", "ridge", lambda run: run, "it holds the run of ridge, seed 0, fold 0 twice"),
        ("presets", "l1", lambda run: {**run, "fold": 99}, "l1 has a run of fold 99, and the folder has folds 0 to 2"),
        ("baselines", "svr", lambda run: {**run, "fold": "0"}, "svr has a run of fold '0'"),
        ("presets", "l1", lambda run: {**run, "seed": "0"}, "l1 has a run of seed '0', not a whole number"),
        ("presets", "l1", lambda run: {**run, "fold": 1, "test_rows": []}, "without its test subjects' rows"),
        (
            "presets",
            "l1",
            lambda run: {**run, "fold": 1, "test_predictions": run["test_predictions"][:-1]},
            "without one test prediction per test subject",
        ),
        ("presets", "l1", lambda run: {k: v for k, v in {**run, "fold": 1}.items() if k != "mae"}, "without its mae"),
        ("presets", "l1", lambda run: {**run, "fold": 1, "rmse": "4.5"}, "whose rmse is '4.5', not a number"),
    ],
    ids=[
        "preset twice",
        "baseline twice",
        "fold out of range",
        "fold not a number",
        "seed as text",
        "no test rows",
        "a prediction short",
        "no mae",
        "a metric as text",
    ],
)
def test_a_results_file_with_a_run_that_cannot_be_the_folders_is_refused_as_damaged(
    tmp_path, group, name, edit, message
):
    from sodeep.brainage.results import read_results

    table = site_table(sizes=(10, 10, 10))
    cross_validate_table(table, ["l1"], out=tmp_path, folds=3, split="site", seeds=[0], config=TINY, progress=False)
    path = tmp_path / "results.json"
    results = json.loads(path.read_text())
    runs = results[group][name]["runs"]
    edited = edit(next(run for run in runs if run["fold"] == 0))
    runs[:] = [run for run in runs if run["fold"] != edited["fold"] or edited["fold"] == 0] + [edited]
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=rf"is damaged: .*{re.escape(message)}.*; run with overwrite"):
        read_results(path, None)


def test_a_validation_site_of_one_age_is_named_with_advice_that_helps():
    """Fewer folds or more subjects per site cannot help when the held-out validation site has
    one age: the message says which site, and a seed that holds out other sites."""
    table = site_table(sizes=(12, 4, 4, 4, 4, 4, 4))
    constant = table.sites[0]
    table.ages[[index for index, site in enumerate(table.sites) if site == constant]] = 30.0
    messages = []
    for seed in range(12):
        try:
            check_split(table.ages, table.sites, split="site", folds=4, seeds=[seed], validation_fraction=0.2)
        except ValueError as error:
            messages.append(str(error))
    assert messages and len(messages) < 12  # some seeds hold that site out for validation, others do not
    assert all(f"the validation site ['{constant}'] holds subjects aged 30 only" in text for text in messages)
    assert all("(its draw of validation sites splits the cohort), split by age" in text for text in messages)
    assert all("fewer folds" not in text for text in messages)
    named = {int(re.search(r"; try seed (\d+) \(its draw", text).group(1)) for text in messages}
    for seed in named:
        check_split(table.ages, table.sites, split="site", folds=4, seeds=[seed], validation_fraction=0.2)


def test_validation_sites_too_small_for_the_seed_name_a_seed_whose_draw_works():
    """Many one-subject sites: a seed whose validation draw is one subject is refused, naming a
    seed that splits the cohort; where no seed can, no seed is named."""
    sites = [f"one{i}" for i in range(10)] + [f"big{i}" for i in range(10) for _ in range(5)] + ["c"] * 3
    ages = np.linspace(20, 80, len(sites))
    with pytest.raises(ValueError, match=r"1 validation subjects; .*; try seed \d+ \(its draw of validation") as raised:
        check_split(ages, sites, split="site", folds=2, seeds=[0], validation_fraction=0.1)
    seed = int(re.search(r"try seed (\d+)", str(raised.value)).group(1))
    check_split(ages, sites, split="site", folds=2, seeds=[seed], validation_fraction=0.1)
    for sizes in ((1, 1, 10), (1, 5, 10), (3, 3, 1)):  # too few to fit on or test: no seed is named
        labels = [f"site{index}" for index, size in enumerate(sizes) for _ in range(size)]
        for seed in range(4):
            try:
                check_split(np.linspace(20, 80, len(labels)), labels, split="site", folds=2, seeds=[seed],
                            validation_fraction=0.1)  # fmt: skip
            except ValueError as error:
                assert "{" not in str(error) and "try seed" not in str(error)
    singles = [f"one{i}" for i in range(8)]  # validation sites are always of one subject
    with pytest.raises(ValueError, match=r"validation subjects; each needs 2 \(validation: of two ages\); give more"):
        check_split(np.linspace(20, 80, 8), singles, split="site", folds=2, seeds=[0], validation_fraction=0.1)


def test_a_results_file_with_runs_of_an_unknown_preset_is_refused_as_damaged(tmp_path):
    from sodeep.brainage.results import read_results

    table = site_table(sizes=(10, 10, 10))
    cross_validate_table(table, ["l1"], out=tmp_path, folds=3, split="site", seeds=[0], config=TINY, progress=False)
    path = tmp_path / "results.json"
    results = json.loads(path.read_text())
    results["presets"]["bogus"] = results["presets"]["l1"]
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"is damaged: it holds runs of 'bogus', not a preset; run with overwrite"):
        read_results(path, None)
