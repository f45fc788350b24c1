import csv

import numpy as np
import pytest

from sodeep.brainage.tables import Standardizer, read_age_table, stratified_folds


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_default_features_are_numeric_columns_but_ids_and_covariates(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        ["sub_id", "age", "sex", "site", "lh_a", "rh_a", "note"],
        [["s1", 20, 0, "A", 2.5, 2.4, "x"], ["s2", 40, 1, "B", 2.3, 2.2, "y"]],
    )
    table = read_age_table(path)
    assert table.feature_names == ["lh_a", "rh_a"]
    assert table.subject_ids == ["s1", "s2"] and table.sites == ["A", "B"]
    np.testing.assert_allclose(table.features, [[2.5, 2.4], [2.3, 2.2]])
    assert read_age_table(path, features=["rh_*"]).feature_names == ["rh_a"]


def test_bad_rows_are_skipped_and_named(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        ["age", "f1", "f2"],
        [[20, 1, 2], ["unknown", 1, 2], [30, "", 2], [40, 3, 4]],
    )
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 rows \(line 3: age 'unknown'.*line 4: feature 'f1'"):
        table = read_age_table(path, features=["f*"])
    np.testing.assert_array_equal(table.ages, [20, 40])
    assert [line for line, _ in table.skipped] == [3, 4]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no table"):
        read_age_table(tmp_path / "missing.csv")
    path = write_csv(tmp_path / "t.csv", ["years", "f"], [[20, 1]])
    with pytest.raises(ValueError, match="no age column 'age'"):
        read_age_table(path)
    with pytest.raises(ValueError, match="match no column"):
        read_age_table(path, age_column="years", features=["lh_*"])
    path = write_csv(tmp_path / "u.csv", ["age", "f"], [["x", 1]])
    with pytest.raises(ValueError, match="no usable row"):
        read_age_table(path, features=["f"])


@pytest.mark.parametrize("subjects, folds", [(10, 2), (103, 5), (1078, 5)])
def test_stratified_folds_are_balanced_in_size_and_age(subjects, folds):
    ages = np.random.default_rng(0).gamma(2.0, 12.0, subjects)
    assignment = stratified_folds(ages, folds, seed=3)
    sizes = np.bincount(assignment, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    # Each fold's median age is close to the whole sample's (finest stratification).
    order = np.argsort(ages)
    for fold in range(folds):
        ranks = np.flatnonzero(assignment[order] == fold)
        assert abs(np.median(ranks) - subjects / 2) <= folds + 1
    np.testing.assert_array_equal(assignment, stratified_folds(ages, folds, seed=3))
    assert not np.array_equal(assignment, stratified_folds(ages, folds, seed=4))


def test_standardizer_uses_only_what_it_was_fitted_on():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    scaler = Standardizer().fit(train)
    np.testing.assert_allclose(scaler.transform(train), [[-1, 0], [1, 0]])
    np.testing.assert_allclose(scaler.transform(np.array([[101.0, 7.0]])), [[99, 2]])
    with pytest.raises(ValueError, match="N >= 2"):
        Standardizer().fit(np.ones((1, 2)))


def test_spreadsheet_quirks_are_read_or_refused(tmp_path):
    # A byte-order mark (spreadsheet "CSV UTF-8" export) must not become part of the first column's name.
    path = tmp_path / "bom.csv"
    path.write_text("age,f\n20,1.5\n40,2.5\n", encoding="utf-8-sig")
    np.testing.assert_array_equal(read_age_table(path).ages, [20, 40])
    # Two columns with one name: csv.DictReader would keep the last one silently.
    path = write_csv(tmp_path / "dup.csv", ["age", "f", "f"], [[20, 1, 2], [40, 3, 4]])
    with pytest.raises(ValueError, match=r"repeated column names \['f'\]"):
        read_age_table(path)
    # A value beyond float32's range is not a usable number (it would be inf in the features).
    path = write_csv(tmp_path / "big.csv", ["age", "f"], [[20, 1], [40, "1e39"], [60, 2]])
    with pytest.warns(UserWarning, match="line 3: feature 'f' is '1e39'"):
        table = read_age_table(path, features=["f"])
    assert np.isfinite(table.features).all() and len(table) == 2


def test_repeated_subject_ids_are_reported(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["sub_id", "age", "f"], [["a", 20, 1], ["b", 30, 2], ["a", 21, 3]])
    with pytest.warns(UserWarning, match=r"1 rows repeat a 'sub_id' already seen \(e.g. \['a'\]\)"):
        table = read_age_table(path)
    assert table.subject_ids == ["a", "b", "a"]
