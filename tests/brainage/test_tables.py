import csv
import re

import numpy as np
import pytest
import scipy.stats

from sodeep.brainage.folds import stratified_folds
from sodeep.brainage.tables import Standardizer, read_age_table


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


def test_bad_rows_are_skipped_and_named_in_one_line_without_a_warning(tmp_path, recwarn):
    path = write_csv(
        tmp_path / "t.csv",
        ["age", "f1", "f2"],
        [[20, 1, 2], ["unknown", 1, 2], [30, "", 2], [40, 3, 4]],
    )
    table = read_age_table(path, features=["f*"])
    np.testing.assert_array_equal(table.ages, [20, 40])
    assert [line for line, _ in table.skipped] == [3, 4] and table.rows == 4
    assert table.notes("t.csv") == [
        "t.csv: skipped 2 of 4 rows (line 3: age 'unknown' is not a number; line 4: feature 'f1' is missing (''))"
    ]
    assert not recwarn.list  # not a Python warning with a source line


def test_many_skipped_rows_are_summarized(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [[20, 1]] + [["x", 1]] * 5)
    (line,) = read_age_table(path).notes("t.csv")
    assert line.startswith("t.csv: skipped 5 of 6 rows (line 3: age 'x'") and line.endswith("; and 2 more)")


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no table"):
        read_age_table(tmp_path / "missing.csv")
    path = write_csv(tmp_path / "t.csv", ["years", "f"], [[20, 1]])
    with pytest.raises(ValueError, match=r"no age column 'age'; columns are \['years', 'f'\]"):
        read_age_table(path)
    with pytest.raises(ValueError, match="feature pattern 'lh_\\*' matches no column"):
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


def test_standardizer_takes_lists_and_refuses_what_it_cannot_scale_in_one_line():
    np.testing.assert_allclose(Standardizer().fit([[1.0, 5.0], [3.0, 5.0]]).transform([[3.0, 6.0]]), [[1, 1]])
    with pytest.raises(ValueError, match=r"not fitted: call fit\(training_features\) first"):
        Standardizer().transform(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"transform needs \(N, 2\) features, as fitted, got shape \(1, 3\)"):
        Standardizer().fit(np.eye(2)).transform(np.ones((1, 3)))
    with pytest.raises(ValueError, match="fit needs finite features, got 1 NaN or infinite values"):
        Standardizer().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))


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
    table = read_age_table(path, features=["f"])
    assert table.skipped == [(3, "feature 'f' is '1e39', beyond float32's range")]
    assert np.isfinite(table.features).all() and len(table) == 2


def test_repeated_subject_ids_are_reported(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["sub_id", "age", "f"], [["a", 20, 1], ["b", 30, 2], ["a", 21, 3]])
    table = read_age_table(path)
    # Each row's predictions keep their own name: the repeated id with its CSV line.
    assert table.subject_ids == ["a (line 2)", "b", "a (line 4)"] and table.repeated_ids == ["a"]
    # An id that is already such a label keeps its name, and the repeated id's label moves aside.
    rows = [["a", 20, 1], ["a (line 4)", 30, 2], ["a", 21, 3]]
    labels = read_age_table(write_csv(tmp_path / "u.csv", ["sub_id", "age", "f"], rows)).subject_ids
    assert labels == ["a (line 2)", "a (line 4)", "a (line 4) #2"]
    # A row without an id is named by its line, which a real id may be too: no id is repeated.
    rows = [["", 20, 1], ["line 2", 30, 2], ["x", 21, 3]]
    unnamed = read_age_table(write_csv(tmp_path / "e.csv", ["sub_id", "age", "f"], rows))
    assert unnamed.subject_ids == ["line 2 #2", "line 2", "x"] and unnamed.repeated_ids == []
    assert table.notes("t.csv") == [
        "t.csv: 1 subject id appears on more than one row (e.g. ['a']); rows of one subject may land in "
        "different cross-validation folds"
    ]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_the_delimiter_is_sniffed(tmp_path, delimiter):
    # Read with commas, a semicolon file would have one column named "age;f1;f2".
    path = tmp_path / "t.csv"
    path.write_text(
        "\n".join(delimiter.join(row) for row in [["age", "f1", "f2"], ["20", "1.5", "2"], ["40", "3", "4"]])
    )
    table = read_age_table(path)
    assert table.delimiter == delimiter and table.feature_names == ["f1", "f2"]
    np.testing.assert_allclose(table.features, [[1.5, 2], [3, 4]])


@pytest.mark.parametrize("features", [None, ["thick"]])
@pytest.mark.parametrize("delimiter, name", [(";", "semicolon"), ("\t", "tab")])
def test_a_semicolon_table_with_decimal_commas_is_refused_with_a_hint(tmp_path, features, delimiter, name):
    # European spreadsheets write "23,5": not a number, and not to be read as two columns either.
    path = tmp_path / "t.csv"
    path.write_text("sub_id;age;thick\ns1;23,5;2,71\ns2;40;2,5\n".replace(";", delimiter))
    hint = f"({name}-separated) writes numbers with commas, as decimal commas or thousands separators (column 'age'"
    with pytest.raises(ValueError, match=re.escape(f"{path} {hint}, line 2: '23,5'); save it with '.' as")):
        read_age_table(path, features=features)
    path.write_text("sub_id;age;note;f\ns1;23;a,b;1\ns2;40;1,5 cm;2\n")  # commas in text are no decimal commas
    table = read_age_table(path)
    assert table.ages.tolist() == [23, 40] and table.feature_names == ["f"] and not table.notes("t.csv")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),  # an empty sheet saved as CSV UTF-8: its byte-order mark alone
        (b"\xef\xbb\xbf\r\n\r\n", "is empty"),
        (b"\xef\xbb\xbf\xef\xbb\xbf", "is empty"),  # a mark saved twice
        ("\ufeffage,f\n20,caf\xe9\n".encode("utf-8")[:-3] + b"\xe9\n", "in UTF-8 (byte 0xe9 at offset 15)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text CSV file (it holds binary data)"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "is gzip-compressed, not a text CSV file; decompress it (gunzip)"),
        ("age,f\n20,caf\xe9\n".encode("latin-1"), "is not a text CSV file in UTF-8 (byte 0xe9 at offset 12)"),
        (b"age,f;g\n", "cannot tell whether the columns are separated by comma or semicolon"),
        # Rows that split alike on either delimiter: both separate columns, and one would be lost.
        (b"id,age;f1\ns0,20;0\ns1,30;1\n", "cannot tell whether the columns are separated by comma or semicolon"),
        (b"id;site,age,f1\nS0;A,20,0.1\nS1;B,30,0.2\n", "cannot tell whether the columns are separated by comma or"),
    ],
)
def test_files_that_are_not_text_tables_are_named(tmp_path, content, message):
    # Not a bare UTF-8 decode error that does not say which file.
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_age_table(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


@pytest.mark.parametrize(
    "header, hint",
    [("sub_id,Age,f", "(did you mean age_column='Age'?)"), ("id,ages,f", "(did you mean age_column='ages'?)")],
)
def test_an_age_column_of_another_case_or_spelling_is_named(tmp_path, header, hint):
    path = tmp_path / "t.csv"
    path.write_text(header + "\ns1,20,1\n")
    with pytest.raises(ValueError, match=r"no age column 'age' " + re.escape(hint)):
        read_age_table(path)


def test_id_and_site_columns_are_found_in_any_case_and_are_never_features(tmp_path):
    path = write_csv(
        tmp_path / "t.csv", ["Participant_ID", "age", "Site", "f"], [["s1", 20, "A", 1], ["s2", 30, "B", 2]]
    )
    table = read_age_table(path)
    assert table.subject_ids == ["s1", "s2"] and table.sites == ["A", "B"] and table.feature_names == ["f"]
    # A numeric id or site column of another name must not become a feature.
    path = write_csv(tmp_path / "u.csv", ["eid", "age", "Centre", "f"], [[1001, 20, 1, 1.5], [1002, 30, 2, 2.5]])
    table = read_age_table(path, id_column="EID", site_column="centre")
    assert table.subject_ids == ["1001", "1002"] and table.sites == ["1", "2"] and table.feature_names == ["f"]
    with pytest.raises(ValueError, match=r"no id column 'eids' \(did you mean 'eid'\?\)"):
        read_age_table(path, id_column="eids")
    with pytest.raises(ValueError, match=r"no site column 'center' \(did you mean 'Centre'\?\)"):
        read_age_table(path, site_column="center")
    assert read_age_table(path, id_column="eid").sites == ["(no site)", "(no site)"]  # no column `site`: one site
    path = write_csv(tmp_path / "v.csv", ["site", "age", "SITE", "f"], [["A", 20, "a", 1]])
    with pytest.raises(ValueError, match=r"columns \['site', 'SITE'\] both match the site column 'site'"):
        read_age_table(path)


def test_nan_cells_leave_rows_out_and_text_cells_among_numbers_are_named(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        ["age", "f", "g", "note", "blank"],
        [[20, 1, 2, "x", ""], [30, "NaN", 3, "y", "nan"], [40, 2, "fail", "z", ""], [50, 3, "?", "w", ""]],
    )
    table = read_age_table(path)
    # An empty or NaN cell is a missing value (its row is left out), not text that drops the column.
    assert table.feature_names == ["f"] and table.ages.tolist() == [20, 40, 50]
    assert table.dropped_columns == {"g": [(4, "fail"), (5, "?")]}
    assert table.notes("t.csv") == [
        "t.csv: skipped 1 of 4 rows (line 3: feature 'f' is missing ('NaN'))",
        "t.csv: columns with cells that are not plain numbers are not features: 'g' (2 of 4 cells, line 4: 'fail'); "
        "name them in features= to keep them (their rows with text are then skipped)",
        "t.csv: 1 column with no value in any row is not a feature: ['blank']",
    ]


@pytest.mark.parametrize(
    "age, reason",
    [
        ("-5", "age '-5' is negative"),
        ("1e40", "age '1e40' is beyond float32's range"),
        ("1e30", "age '1e30' is above 1e18, whose squared errors pass float32's range"),
        ("inf", "age 'inf' is infinite"),
        ("nan", "age 'nan' is missing"),
    ],
)
def test_impossible_ages_are_named(tmp_path, age, reason):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [[20, 1], [age, 2]])
    assert read_age_table(path).skipped == [(3, reason)]


@pytest.mark.parametrize(
    "text, message",
    [
        # Unquoted decimal commas: "58,2" would otherwise train as the sex '2' and the site 'M'.
        (
            "id,age,sex,site,f1,f2\nsub-00,58,2,M,siteA,2,3962\nsub-01,40.5,F,siteB,2.1,3.2\n",
            "t.csv: the header has 6 fields but line 2 has 7; unquoted commas inside values, e.g. decimal commas",
        ),
        ("age,f1,f2\n20,1,2\n30,1\n40\n50,1,2\n", "t.csv: the header has 3 fields but line 3 has 2, line 4 has 1;"),
        ("age;f\n20;1\n\n30;1;2\n40;1;2\n", "t.csv: the header has 2 fields but line 4 has 3, line 5 has 3;"),
        # A quote left open swallows the lines after it into one row.
        (
            'id,age,f\na,20,1\nb,"30,2\nc,40,3\nd,50,4\n',
            't.csv: the header has 3 fields but line 3 has 2; a quote (") on line 3 runs to line 5, so lines 3-5 were '
            "read as one row: close it",
        ),
        (
            'id,age,f\na,20,1\nb,"30,2\n',
            't.csv: the header has 3 fields but line 3 has 2; a quote (") on line 3 is not closed',
        ),
        ('id,"age,f\na,20,1\nb,30,2\n', 't.csv: a quote (") in the header, line 1, is not closed, so the lines after'),
    ],
)
def test_rows_of_another_width_than_the_header_are_refused(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="^[^\n]*$") as error:
        read_age_table(path)
    assert str(error.value).startswith(str(path.parent / message))
    if "20,1,2\n30,1\n" in text:
        assert "an empty cell still needs its comma" in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "age,f\n20,1,\n40,2,\n",  # a delimiter ending every row
        "age,f,\n20,1,\n40,2,\n",  # ... and the header
        "age,f,\n20,1\n40,2\n",  # ... or the header only
        "\nage,f\n20,1\n\n   \n40,2\n\n\n",  # blank lines
        "age,f\r\n20,1\r\n40,2\r\n",
    ],
)
def test_trailing_delimiters_and_blank_lines_are_read(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    table = read_age_table(path)
    assert table.ages.tolist() == [20, 40] and table.feature_names == ["f"] and table.features.tolist() == [[1], [2]]
    assert not table.notes("t.csv")


@pytest.mark.parametrize(
    "text, cell",
    [
        ('id,age,f1\ns1,"58,2","2,5"\ns2,40,"3,1"\n', "(column 'age', line 2: '58,2')"),
        ('id,age,f1\ns1,58,"1,234"\ns2,40,"12,345.5"\n', "(column 'f1', line 2: '1,234')"),
    ],
)
def test_a_comma_table_with_quoted_comma_numbers_is_refused_with_a_hint(tmp_path, text, cell):
    path = tmp_path / "t.csv"
    path.write_text(text)
    hint = (
        f"{path} (comma-separated) writes numbers with commas, as decimal commas or thousands separators {cell}; "
        "save it with '.' as the decimal mark and no thousands separators"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(hint)}$"):
        read_age_table(path)


@pytest.mark.parametrize(
    "cell, reason",
    [
        ("1e40", "feature 'f' is '1e40', beyond float32's range"),
        ("inf", "feature 'f' is 'inf', infinite"),
        ("-Infinity", "feature 'f' is '-Infinity', infinite"),
        ("nan", "feature 'f' is missing ('nan')"),
        ("NA", "feature 'f' is missing ('NA')"),
        ("", "feature 'f' is missing ('')"),
    ],
)
def test_unusable_features_are_named_like_ages(tmp_path, cell, reason):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [[20, -1.5], [30, cell], [40, 2]])
    table = read_age_table(path, features=["f"])
    assert table.skipped == [(3, reason)] and table.features.ravel().tolist() == [-1.5, 2]


def test_spaces_around_names_and_values_are_stripped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id, age, Site, f1 \n s1 , 23.5, A, "1.5"\ns2, 40 , B , 2\n')
    table = read_age_table(path)
    assert table.feature_names == ["f1"] and table.subject_ids == ["s1", "s2"] and table.sites == ["A", "B"]
    assert table.ages.tolist() == [23.5, 40] and table.features.ravel().tolist() == [1.5, 2]
    path.write_text("id, Age, f1\ns1, 20, 1\n")
    with pytest.raises(ValueError, match=re.escape("no age column 'age' (did you mean age_column='Age'?)")):
        read_age_table(path)


def test_empty_site_cells_are_noted(tmp_path):
    path = write_csv(
        tmp_path / "t.csv", ["age", "site", "f"], [[20, "A", 1], [30, "", 3], [40, "B", 2], [50, "NA", 4], ["x", "", 5]]
    )
    table = read_age_table(path)
    assert table.sites == ["A", "(no site)", "B", "(no site)"]  # NA, as R writes a missing value, is no site
    assert table.notes("t.csv") == [
        "t.csv: skipped 1 of 5 rows (line 6: age 'x' is not a number)",
        "t.csv: 2 of 4 subjects have an empty site cell (or NA) (lines 3, 5); empty site cells are one site, '(no site)', in "
        "per-site results, and a site-grouped split (split='site') refuses them: fill in their sites",
    ]


def test_ages_above_a_human_lifetime_are_noted(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [[20, 1], [1000000, 2], [131.5, 3], [130, 4], [957.99, 5]])
    table = read_age_table(path)
    assert table.ages.tolist()[:4] == [20, 1000000, 131.5, 130]  # infant studies may count in months
    assert table.notes("t.csv") == [
        "t.csv: 3 ages are above 130 years (largest 1000000); ages are read as years: convert months or days to years"
    ]


def test_listed_columns_end_in_how_many_more_only_when_cut(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["years", "f"], [[20, 1]])
    with pytest.raises(ValueError, match=r"columns are \['years', 'f'\]$"):
        read_age_table(path)
    path = write_csv(tmp_path / "u.csv", ["years", *(f"f{index}" for index in range(20))], [[20] * 21])
    with pytest.raises(ValueError, match=r"columns are \['years', 'f0', .*'f10'\] and 9 more$"):
        read_age_table(path)


def test_index_columns_covariates_and_age_like_columns_are_not_taken_for_brain_features(tmp_path):
    ages = [21.0, 35.5, 48.0, 63.0, 77.5]
    rows = [
        [index, f"s{index}", age, age * 12, index % 2, 1 + index % 3, 2.5 + 0.1 * ((index * 7) % 5)]
        for index, age in enumerate(ages)
    ]
    path = write_csv(tmp_path / "t.csv", ["", "participant_id", "age", "age_months", "gender", "center", "f"], rows)
    table = read_age_table(path)  # as pandas' to_csv writes it: the index first, under an empty name
    assert table.feature_names == ["age_months", "f"] and table.index_columns == [""]
    assert list(table.age_like_features) == ["age_months"]
    assert table.age_like_features["age_months"] == pytest.approx((1.0, 1.0))
    notes = table.notes("t.csv")
    assert "t.csv: 1 row-index column [''] (as pandas and R write the index) is not a feature" in notes
    assert any("features that give the age away: 'age_months' (r = +1.000, Spearman +1.000)" in line for line in notes)


def test_a_feature_in_the_order_of_the_ages_but_not_in_proportion_gives_the_age_away(tmp_path):
    ages = np.linspace(6.0, 85.0, 40)
    noise = np.random.default_rng(0).normal(0.0, 0.1, 40)
    rows = [[age, np.log(age), index + 1, 2.5 + n] for index, (age, n) in enumerate(zip(ages, noise))]
    path = write_csv(tmp_path / "t.csv", ["age", "log_age", "No", "thickness"], rows)  # a row number, sorted by age
    table = read_age_table(path)
    pearson, spearman = table.age_like_features["log_age"]
    assert pearson < 0.99 and spearman == pytest.approx(1.0)
    assert scipy.stats.spearmanr(ages, np.arange(40)).statistic == pytest.approx(table.age_like_features["No"][1])
    assert list(table.age_like_features) == ["log_age", "No"]
    assert any("'log_age' (r = +0.9" in line and "Spearman +1.000)" in line for line in table.notes("t.csv"))


@pytest.mark.parametrize("header", ["Subject ID", "ParticipantID", "SUBJECT-ID", "sub id"])
def test_an_id_column_spelled_with_spaces_or_no_underscore_is_the_id_column_not_a_feature(tmp_path, header):
    rows = [[1000 + index, 20.0 + 3 * index, 2.5 + 0.01 * ((7 * index) % 11)] for index in range(12)]
    table = read_age_table(write_csv(tmp_path / "t.csv", [header, "age", "thickness"], rows))
    assert table.feature_names == ["thickness"] and table.subject_ids[:2] == ["1000", "1001"]
    assert table.id_like_features == [] and table.id_column is None  # the one found by default


@pytest.mark.parametrize("header", ["MRI_ID", "scan id", "subj", "ScanID", "Subject Code", "Code", "Proband"])
def test_a_numeric_feature_named_and_numbered_like_an_id_is_named_in_a_note(tmp_path, header):
    rows = [[5000 - 7 * index, 20.0 + 3 * index, 2.5 + 0.01 * ((7 * index) % 11)] for index in range(12)]
    path = write_csv(tmp_path / "t.csv", [header, "age", "thickness"], rows)
    table = read_age_table(path)
    assert table.feature_names == [header, "thickness"] and table.id_like_features == [header]
    assert (
        f"t.csv: [{header!r}] holds a distinct whole number per subject, like an id, and is read as a feature: "
        "name the id column with id_column=, or leave it out with features=" in table.notes("t.csv")
    )
    assert read_age_table(path, id_column=header).id_like_features == []
    # Not an id: repeated numbers, or numbers that are not whole, or another name.
    for changed in (
        [[1 + index % 3, *row[1:]] for index, row in enumerate(rows)],
        [[row[0] + 0.5, *row[1:]] for row in rows],
    ):
        assert (
            read_age_table(write_csv(tmp_path / "u.csv", [header, "age", "thickness"], changed)).id_like_features == []
        )
    assert read_age_table(write_csv(tmp_path / "v.csv", ["eTIV", "age", "thickness"], rows)).id_like_features == []


def test_a_table_whose_every_column_holds_a_text_cell_says_which_and_how_to_keep_them(tmp_path):
    rows = [[20 + 10 * i, 2.1 + i / 10, 3.2 - i / 10] for i in range(4)] + [[60, "fail", "fail"]]
    path = write_csv(tmp_path / "t.csv", ["age", "roi_1", "roi_2"], rows)
    with pytest.raises(ValueError, match=r"columns with cells that are not plain numbers: 'roi_1' \(line 6: 'fail'\)"):
        read_age_table(path)
    assert read_age_table(path, features=["roi_*"]).ages.tolist() == [20, 30, 40, 50]


def test_columns_of_numbers_in_another_format_are_named(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "f", "etiv"], [[20, 1.5, "1.100.000"], [30, 1.2, "1.250.000"]])
    table = read_age_table(path)
    assert table.feature_names == ["f"] and list(table.dropped_columns) == ["etiv"]


def test_spreadsheet_exports_read_or_refused_for_what_they_are(tmp_path):
    emptied = tmp_path / "emptied.csv"
    emptied.write_text("age,f\n20,1\n,\n30,2\n")  # a row emptied in a spreadsheet: delimiters only
    table = read_age_table(emptied)
    assert table.ages.tolist() == [20, 30] and table.notes("emptied.csv") == []
    titled = tmp_path / "titled.csv"
    titled.write_text("# exported by a script\nid,age,f\ns1,20,1\ns2,30,2\n")
    with pytest.raises(
        ValueError, match="the header has 1 field but .*remove a title or comment line above the header"
    ):
        read_age_table(titled)
    unicode_text = tmp_path / "unicode.csv"
    unicode_text.write_bytes("age,f\n20,1\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"is in UTF-16 .*save it as CSV UTF-8"):
        read_age_table(unicode_text)
    units = tmp_path / "units.csv"
    units.write_text("id,Age (years),f\ns1,20,1\n")
    with pytest.raises(ValueError, match=re.escape("(did you mean age_column='Age (years)'?)")):
        read_age_table(units)


def test_features_that_name_the_age_only_say_why_they_match_nothing(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [[20, 1.5], [30, 1.2]])
    with pytest.raises(
        ValueError, match=r"'age' matches no column but \['age'\]: the age, id and site columns are never features"
    ):
        read_age_table(path, features=["age"])


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["sub_id", "f*"], r"feature pattern 'sub_id' matches no column but \['sub_id'\]: the age, id and site"),
        (["f1", "lh_*"], r"feature pattern 'lh_\*' matches no column; columns are"),
    ],
)
def test_each_feature_pattern_must_match_a_feature_column(tmp_path, patterns, message):
    rows = [[i, 20 + 3 * i, 0.1 * i, 2.0 - 0.1 * i] for i in range(6)]
    path = write_csv(tmp_path / "t.csv", ["sub_id", "age", "f1", "f2"], rows)
    with pytest.raises(ValueError, match=message):
        read_age_table(path, features=patterns)
    assert read_age_table(path, features=["f*", "f1"]).feature_names == ["f1", "f2"]


def test_a_column_named_with_glob_brackets_is_selected_by_its_own_name(tmp_path):
    rows = [[20 + 3 * i, 0.1 * i, 2.0 - 0.1 * i, 1.0 + i] for i in range(6)]
    path = write_csv(tmp_path / "t.csv", ["age", "Volume [mm3]", "Volume m", "f[1]"], rows)
    # As globs, "Volume [mm3]" matches "Volume m" only, and "f[1]" nothing.
    assert read_age_table(path, features=["Volume [mm3]"]).feature_names == ["Volume [mm3]"]
    assert read_age_table(path, features=["f[1]", "Volume ?"]).feature_names == ["Volume m", "f[1]"]
    assert read_age_table(path, features=["Volume [[]*"]).feature_names == ["Volume [mm3]"]


def test_feature_patterns_never_take_the_id_or_site_column(tmp_path):
    rows = [[i, 20 + 3 * i, i % 2, 1 + i % 3, 0.1 * i, 2.0 - 0.1 * i] for i in range(12)]
    path = write_csv(tmp_path / "t.csv", ["Subject_ID", "age", "sex", "Site", "f1", "f2"], rows)
    table = read_age_table(path, features=["*"])
    assert table.feature_names == ["sex", "f1", "f2"]  # sex is a covariate one may ask for by name
    with pytest.raises(ValueError, match=r"'Site' matches no column but \['Site'\]: the age, id and site columns"):
        read_age_table(path, features=["f1", "Site", "age"])


def test_only_numbers_as_a_csv_writes_them_are_read_as_numbers(tmp_path):
    # Python's float() also reads "2_5" as 25 and Arabic-Indic digits; a table must not.
    rows = [[20, 1.0], ["2_5", 2.0], ["٣٤", 3.0], [40, "1_000"], [" 50 ", "-1e-3"], [60, ".5"]]
    path = tmp_path / "t.csv"
    path.write_text("age,f\n" + "".join(f"{age},{f}\n" for age, f in rows), encoding="utf-8")
    table = read_age_table(path, features=["f"])
    assert table.ages.tolist() == [20, 50, 60] and table.features[:, 0].tolist() == pytest.approx([1.0, -1e-3, 0.5])
    assert [line for line, _ in table.skipped] == [3, 4, 5]
    assert table.skipped[0][1] == "age '2_5' is not a number" and "'1_000', not a number" in table.skipped[2][1]


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e20, 1e37])
def test_standardizing_is_scale_free_up_to_float32s_range(scale):
    from sodeep.brainage.tables import Standardizer

    features = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    scaled = (features.astype(np.float64) * scale).astype(np.float32)
    expected = Standardizer().fit(features).transform(features)
    result = Standardizer().fit(scaled).transform(scaled)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, expected, atol=1e-4)


def test_id_and_visit_columns_coded_as_numbers_are_not_default_features(tmp_path):
    rows = [[1000 + i, i % 3, 20 + 3 * i, 0.1 * i] for i in range(8)]
    path = write_csv(tmp_path / "adni.csv", ["RID", "VISIT", "age", "thickness"], rows)
    assert read_age_table(path).feature_names == ["thickness"]


def test_one_feature_pattern_may_be_given_as_a_string(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "lh_a", "rh_a"], [[20 + i, 0.1 * i, 1.0 - 0.1 * i] for i in range(4)])
    assert read_age_table(path, features="lh_*").feature_names == ["lh_a"]


@pytest.mark.parametrize("role", ["site", "id"])
def test_the_age_column_named_as_the_site_or_id_column_is_refused(tmp_path, role):
    path = tmp_path / "t.csv"
    path.write_text("age,f\n30,1\n40,2\n50,3\n")
    with pytest.raises(ValueError, match=f"the age column 'age' cannot also be the {role} column; name another"):
        read_age_table(path, **{f"{role}_column": "AGE"})  # matched as the header spells it


@pytest.mark.parametrize("role", ["site", "id"])
def test_an_age_column_that_is_the_site_or_id_column_found_by_name_points_at_the_age_column(tmp_path, role):
    path = tmp_path / "t.csv"
    path.write_text(f"age,{role},f\n30,1,1\n40,2,2\n50,3,3\n")
    with pytest.raises(ValueError) as raised:
        read_age_table(path, age_column=role)
    assert str(raised.value) == (
        f"{path}: age_column={role!r} names the table's {role} column (found by its name); give the column of "
        "ages with age_column="
    )
    assert read_age_table(path).ages.tolist() == [30, 40, 50]  # the advice taken


def test_a_column_with_no_value_in_any_row_is_noted_as_not_a_feature(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("age,f,blank,g,\n30,1,,4,\n40,2,NaN,3,\n50,4,,1,\n")  # and a trailing delimiter: no column
    table = read_age_table(path)
    assert table.feature_names == ["f", "g"] and table.empty_columns == ["blank"]
    assert "t.csv: 1 column with no value in any row is not a feature: ['blank']" in table.notes("t.csv")
    assert read_age_table(path, features=["f", "g"]).empty_columns == []  # chosen features: nothing to note


def test_a_table_whose_only_features_are_empty_says_so_in_its_refusal(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,age,f1,f2\ns1,30,, \ns2,40,,\ns3,50,,\n")
    with pytest.raises(
        ValueError,
        match=r"no numeric feature column among .*; \['f1', 'f2'\] have no value in any row; add columns of numbers",
    ):
        read_age_table(path)


def test_empty_id_cells_are_named_by_their_line_and_noted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,age,f\n,30,1\ns2,40,2\n ,50,3\n,60,4\n")
    table = read_age_table(path)
    assert table.subject_ids == ["line 2", "s2", "line 4", "line 5"] and table.empty_id_lines == [2, 4, 5]
    assert table.repeated_ids == []  # blank cells are not one subject seen three times
    assert any("3 of 4 subjects have an empty id cell (or NA) (lines 2, 4, 5)" in line for line in table.notes("t.csv"))


def test_missing_value_markers_in_the_id_column_are_no_ids(tmp_path):
    """``NA`` as an id would be read back as a missing value (pandas): such rows are named by line."""
    path = tmp_path / "t.csv"
    path.write_text("id,age,f\nNA,30,1\ns2,40,2\nNULL,50,3\nnan,60,4\n")
    table = read_age_table(path)
    assert table.subject_ids == ["line 2", "s2", "line 4", "line 5"] and table.empty_id_lines == [2, 4, 5]
    assert table.repeated_ids == []


@pytest.mark.parametrize("marker", ["NA", "N/A", "n/a", "#N/A", "NULL", "null", "None", "<NA>", " NA "])
def test_missing_value_markers_of_r_pandas_and_spreadsheets_leave_their_row_out_not_their_column(tmp_path, marker):
    """R's write.csv writes a missing value as NA: one gap must not cost the table a feature."""
    rows = [[20 + 10 * i, 2.1 + i / 10, 3.2 - i / 10] for i in range(4)] + [[60, marker, 2.0], [70, 2.5, 2.0]]
    path = write_csv(tmp_path / "t.csv", ["age", "roi_1", "roi_2"], rows)
    table = read_age_table(path)
    assert table.feature_names == ["roi_1", "roi_2"] and table.ages.tolist() == [20, 30, 40, 50, 70]
    assert table.dropped_columns == {}
    assert table.notes("t.csv") == [
        f"t.csv: skipped 1 of 6 rows (line 6: feature 'roi_1' is missing ({marker.strip()!r}))"
    ]
    # The same in the age column.
    rows[0][0] = marker
    path = write_csv(tmp_path / "t.csv", ["age", "roi_1", "roi_2"], rows)
    assert read_age_table(path).ages.tolist() == [30, 40, 50, 70]


def test_subjects_of_a_table_without_an_id_column_are_named_by_their_line_as_empty_id_cells_are(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [[20, 1.0], ["", 2.0], [40, 3.0]])
    table = read_age_table(path)
    assert table.subject_ids == ["line 2", "line 4"] and table.empty_id_lines == []
    assert not any("empty id cell" in line for line in table.notes("t.csv"))


def test_features_of_one_value_are_named_also_where_float32_rounds_a_large_offset_away(tmp_path):
    rows = [[20 + 10 * i, 2.1 + i / 10, 5.0, 1e9 + i + 0.5] for i in range(4)]
    path = write_csv(tmp_path / "t.csv", ["age", "roi", "flat", "offset"], rows)
    table = read_age_table(path)
    assert table.constant_features == {"flat": False, "offset": True}
    assert np.ptp(np.asarray([row[3] for row in rows])) > 0 and np.ptp(table.features[:, 2]) == 0
    (line,) = [line for line in table.notes("t.csv") if "one value" in line]
    assert line == (
        "t.csv: 2 features hold one value over the 4 subjects kept and tell nothing about age: 'flat' (one value), "
        "'offset' (its values differ only past float32 precision: subtract an offset)"
    )
    varied = write_csv(tmp_path / "v.csv", ["age", "roi"], [[20, 1.0], [30, 2.0]])
    assert read_age_table(varied).constant_features == {}


def test_a_feature_that_alone_keeps_most_skipped_rows_out_is_named(tmp_path):
    rows = [[20 + i, i, "NA" if i % 4 else 1.5] for i in range(12)] + [["x", 1, 2]]
    path = write_csv(tmp_path / "t.csv", ["age", "f", "wmh"], rows)
    table = read_age_table(path)
    assert len(table) == 3 and table.sole_blockers == {"wmh": 9}
    assert table.skipped_note("t.csv")[0].endswith(
        "; feature 'wmh' alone keeps out 9 of them: name the others in features= to keep them"
    )
    rows = [[20 + i, "NA" if i % 2 else i, "NA" if i % 4 else 1.5] for i in range(12)]  # f is missing as often
    assert (
        "alone keeps out"
        not in read_age_table(write_csv(tmp_path / "u.csv", ["age", "f", "wmh"], rows)).skipped_note("u.csv")[0]
    )
    # The only feature: no others to name.
    rows = [[20 + i, "NA" if i % 4 else 1.5] for i in range(12)] + [["x", 2]]
    only = read_age_table(write_csv(tmp_path / "w.csv", ["age", "wmh"], rows))
    assert only.skipped_note("w.csv")[0].endswith(
        "; feature 'wmh' alone keeps out 9 of them: fill in its cells to keep them"
    )


def test_a_text_column_named_in_features_that_leaves_no_row_says_what_to_do(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "sex", "f"], [[20, "M", 1], [30, "F", 2]])
    with pytest.raises(
        ValueError, match=r"no usable row \(line 2: feature 'sex' is 'M'.*\); name only columns of numbers in"
    ):
        read_age_table(path, features=["*"])


def test_a_table_saved_with_its_byte_order_mark_twice_reads_as_one_saved_once(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbfage,f\n20,1\n30,2\n")
    table = read_age_table(path)
    assert table.ages.tolist() == [20, 30] and table.feature_names == ["f"]


def test_every_feature_column_that_blocks_the_rows_is_named(tmp_path):
    header = ["age", "f", "sex", "g", "hand", "h"]
    path = write_csv(
        tmp_path / "t.csv", header, [[20, 1, "M", 2, "L", 3], [30, 2, "F", "", "R", 4], [40, 3, "M", 5, "R", 6]]
    )
    with pytest.raises(ValueError) as raised:
        read_age_table(path, features=["*"])
    assert str(raised.value).endswith(
        "name only columns of numbers in features= (not numbers in every row: 'sex', 'g', 'hand')"
    )


def test_a_semicolon_table_with_a_comma_in_a_column_name_is_read_as_semicolon_separated(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id;age;lh,thickness\ns0;20;2.5\ns1;30;2.25\ns2;40;3\n")
    table = read_age_table(path)
    assert table.feature_names == ["lh,thickness"] and table.features.ravel().tolist() == [2.5, 2.25, 3.0]


def test_two_age_columns_differing_only_in_case_are_refused(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["id", "age", "Age", "f1"], [["s0", 20, 30, 1], ["s1", 30, 40, 2]])
    with pytest.raises(ValueError, match=re.escape("columns ['age', 'Age'] both match the age column 'age'")):
        read_age_table(path)


def test_ages_written_with_units_are_told_to_be_plain_years(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["id", "age", "f"], [["s0", "20y", 1], ["s1", "30 years", 2]])
    with pytest.raises(ValueError) as raised:
        read_age_table(path)
    assert str(raised.value).endswith(
        "(line 2: age '20y' is not a number; line 3: age '30 years' is not a number); write each age as a plain "
        "number of years (25.5, not '25y')"
    )


def test_a_table_of_ages_alone_is_told_to_add_features(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["id", "age"], [["s0", 20], ["s1", 30]])
    with pytest.raises(ValueError) as raised:
        read_age_table(path)
    assert str(raised.value) == (
        f"{path}: no feature column: ['id', 'age'] are the age, ids and covariates; add columns of numbers to "
        "predict the age from"
    )


def test_a_table_with_no_usable_row_counts_the_problems_it_does_not_name(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["age", "f"], [["x", 1]] * 5)
    with pytest.raises(ValueError, match=r"no usable row \(line 2: .*; line 4: [^;]*; and 2 more\)"):
        read_age_table(path)


def test_missing_ages_are_not_told_to_drop_units(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["id", "age", "f"], [["s0", "NA", 1], ["s1", "", 2]])
    with pytest.raises(ValueError) as raised:
        read_age_table(path)
    assert "no usable row" in str(raised.value) and "plain number of years" not in str(raised.value)


def test_a_quoted_column_name_holding_another_delimiter_is_a_column_name(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,age,"vol;lh",note\n' + "".join(f"s{i},{20 + i},2.{i},a;b\n" for i in range(12)))
    assert read_age_table(path).feature_names == ["vol;lh"]


def test_a_site_column_that_gives_most_subjects_a_site_of_their_own_is_noted(tmp_path):
    rows = [[20 + i, i * 0.5, f"{0.1 * i:.3f}"] for i in range(12)]
    table = read_age_table(write_csv(tmp_path / "t.csv", ["age", "f", "scanner"], rows), site_column="scanner")
    (line,) = [line for line in table.notes("t.csv") if "a site of their own" in line]
    assert line == (
        "t.csv: the site column 'scanner' gives 12 of 12 subjects a site of their own (12 sites): a site is a scanner "
        "or centre that many subjects share (is 'scanner' a measurement?); per-site results and the Spearman inside "
        "each site need sites of several subjects"
    )
    found = read_age_table(write_csv(tmp_path / "s.csv", ["age", "f", "Site"], rows))  # found by default
    (line,) = [line for line in found.notes("s.csv") if "a site of their own" in line]
    assert line.startswith("s.csv: the site column 'Site' gives 12 of 12 subjects") and "(is 'Site' a" in line
    shared = [[20 + i, i * 0.5, "AB"[i % 2] if i < 8 else f"C{i}"] for i in range(12)]  # 4 alone of 12: no note
    table = read_age_table(write_csv(tmp_path / "u.csv", ["age", "f", "site"], shared))
    assert not [line for line in table.notes("u.csv") if "a site of their own" in line]


def test_a_header_repeated_below_as_two_joined_tables_have_it_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "sub_id,age,thickness\ns1,20,2.5\ns2,30,2.4\nsub_id,age,thickness\ns3,40,2.3\nSUB_ID,Age,thickness\n"
    )
    with pytest.raises(
        ValueError, match=r"t.csv: lines 4, 6 repeat the header \(tables joined one after the other\?\); delete them$"
    ):
        read_age_table(path)


def test_headers_in_other_scripts_stay_features_and_a_name_in_any_case_wins_over_a_loose_one(tmp_path):
    rows = [
        [f"s{index}", 20.0 + 3 * index, 2.5 + 0.01 * ((7 * index) % 11), 1.0 + 0.02 * ((5 * index) % 7)]
        for index in range(12)
    ]
    greek = read_age_table(write_csv(tmp_path / "g.csv", ["id", "ηλικία", "όγκος", "πάχος"], rows), age_column="ηλικία")
    assert greek.feature_names == ["όγκος", "πάχος"]
    chinese = read_age_table(
        write_csv(tmp_path / "c.csv", ["编号", "年龄", "左海马", "右海马"], rows), age_column="年龄"
    )
    assert chinese.feature_names == ["左海马", "右海马"]  # 编号 holds text ids
    numbered = [[1000 + index, *row[1:]] for index, row in enumerate(rows)]
    table = read_age_table(write_csv(tmp_path / "i.csv", ["ID", "age", "ID#", "thickness"], numbered))
    assert table.subject_ids[0] == "1000" and table.feature_names == ["thickness"]  # ID# is spelt as an id
    sites = [[*row, "AB"[index % 2], "x"] for index, row in enumerate(rows)]
    table = read_age_table(write_csv(tmp_path / "s.csv", ["id", "age", "a", "b", "site", "Site."], sites))
    assert table.site_header == "site"
    # The age column named is left out as it is spelt, not another column spelt like it.
    aged = [[*row, row[1] * 12 + (index % 3)] for index, row in enumerate(rows)]
    table = read_age_table(
        write_csv(tmp_path / "a.csv", ["id", "Age (years)", "a", "b", "AGE_YEARS"], aged), age_column="Age (years)"
    )
    assert table.feature_names == ["a", "b", "AGE_YEARS"] and "AGE_YEARS" in table.age_like_features


def test_a_numbered_column_beside_the_ids_is_named_with_advice_to_leave_it_out(tmp_path):
    rows = [[f"sub-{index}", 500 - index, 20.0 + 3 * index, 2.5 + 0.01 * ((7 * index) % 11)] for index in range(12)]
    table = read_age_table(write_csv(tmp_path / "t.csv", ["Subject ID", "Subj No", "age", "thickness"], rows))
    assert table.subject_ids[0] == "sub-0" and table.id_like_features == ["Subj No"]
    assert (
        "t.csv: ['Subj No'] holds a distinct whole number per subject, like an id, and is read as a feature: "
        "leave it out with features= (the subject ids are 'Subject ID')"
    ) in table.notes("t.csv")


def test_two_columns_spelt_like_one_id_are_settled_by_naming_one(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("SubjectID,Subject ID,age,x\n1,a,20,1.5\n2,b,30,2.5\n3,c,40,3.1\n")
    with pytest.raises(
        ValueError,
        match=r"columns \['SubjectID', 'Subject ID'\] both match the id column 'subject_id' \(names are compared "
        r"ignoring case, spaces and punctuation\); rename one of them, or name the id column with id_column=$",
    ):
        read_age_table(path)
    table = read_age_table(path, id_column="SubjectID")
    assert table.subject_ids == ["1", "2", "3"] and table.feature_names == ["x"]


def test_a_column_named_as_spelt_wins_over_one_in_another_case(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("ID,id,Site,SITE,age,x\n1,s1,A,B,20,1.5\n2,s2,A,B,30,2.5\n3,s3,A,B,40,3.1\n")
    with pytest.raises(ValueError, match=r"columns \['ID', 'id'\] both match the id column 'id' .* or name the id"):
        read_age_table(path)
    table = read_age_table(path, id_column="id", site_column="SITE")
    assert table.subject_ids == ["s1", "s2", "s3"] and table.sites == ["B"] * 3
    assert read_age_table(path, id_column="ID", site_column="Site").subject_ids == ["1", "2", "3"]


def test_features_of_a_few_whole_numbers_are_named_as_possible_codes(tmp_path):
    """Number-coded labels (a diagnosis, a site not named ``site``) read as features are named in a
    note; measurements, whole numbers with many values, and small tables are not."""
    rng = np.random.default_rng(0)
    rows = [
        [20.0 + index, index % 2, 1 + index % 5, 2.5 + rng.normal(0, 0.1), 1000 + int(rng.integers(0, 500))]
        for index in range(40)
    ]
    header = ["age", "DX", "SiteID", "thickness", "eTIV"]
    path = write_csv(tmp_path / "t.csv", header, rows)
    table = read_age_table(path)
    assert table.feature_names == ["DX", "SiteID", "thickness", "eTIV"]  # read as they were: only a note
    assert table.code_like_features == ["DX", "SiteID"]
    assert (
        "t.csv: ['DX', 'SiteID'] hold a few whole numbers, like the codes of a site, a group or a diagnosis, and are "
        "read as features: if they code such labels, leave out those that do, with features=; a site column is "
        "named with site_column= (e.g. site_column='SiteID')" in table.notes("t.csv")
    )
    with_site = read_age_table(path, site_column="SiteID")
    assert with_site.feature_names == ["DX", "thickness", "eTIV"] and with_site.code_like_features == ["DX"]
    assert (
        "t.csv: ['DX'] holds a few whole numbers, like the codes of a site, a group or a diagnosis, and is read as a "
        "feature: if it codes such labels, leave it out with features=" in with_site.notes("t.csv")
    )
    # Eleven values, or fewer than 20 subjects: no note.
    rows_eleven = [[row[0], index % 11, *row[2:]] for index, row in enumerate(rows)]
    assert read_age_table(write_csv(tmp_path / "u.csv", header, rows_eleven)).code_like_features == ["SiteID"]
    assert read_age_table(write_csv(tmp_path / "v.csv", header, rows[:19])).code_like_features == []


def test_ages_of_zero_are_counted_in_a_note(tmp_path):
    rows = [[0 if index < 3 else 20 + index, 2.5 + 0.01 * index] for index in range(12)]
    table = read_age_table(write_csv(tmp_path / "t.csv", ["age", "thickness"], rows))
    assert len(table) == 12
    assert (
        "t.csv: 3 ages are 0, read as newborns: where 0 stands for a missing age, leave the cell empty (its row is "
        "skipped)" in table.notes("t.csv")
    )
    rows[0][0] = 0.5
    assert not any(
        "are 0" in note or "is 0" in note
        for note in read_age_table(write_csv(tmp_path / "u.csv", ["age", "thickness"], rows[:1] + rows[3:])).notes(
            "u.csv"
        )
    )
