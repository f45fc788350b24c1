"""The report on fixed trial summaries gives numbers known by hand."""

import csv
import json
import math
import subprocess
import sys
import time

import pytest

from sodeep.sweeps.cli import main
from sodeep.sweeps.report import write_report
from sodeep.sweeps.summary import SCHEMA


def write_trials(folder, records, sweep_metric=None):
    """``records``: (params, metrics, folds or None, status) per trial."""
    for index, (params, metrics, folds, status) in enumerate(records):
        summary = {
            "schema": SCHEMA,
            "sweep": "s",
            "trial": f"{index:04d}",
            "params": params,
            "config": params,
            "metrics": metrics,
            "status": status,
            "seconds": 1.0,
        }
        if folds is not None:
            summary["folds"] = folds
        trial = folder / "trials" / f"{index:04d}"
        trial.mkdir(parents=True)
        (trial / "summary.json").write_text(json.dumps(summary))
    (folder / "trials" / "9999").mkdir()  # an interrupted trial: no summary
    if sweep_metric:
        (folder / "sweep.json").write_text(json.dumps({"name": "s", "metric": sweep_metric}))


def rows(folder):
    with open(folder / "report.csv") as stream:
        return list(csv.DictReader(stream))


def test_means_sds_paired_differences_and_wilcoxon(tmp_path):
    records = [({"losses": "l1", "seed": s}, {"mae": s + 1.0, "r2": 0.5}, None, "finished") for s in range(5)]
    records += [({"losses": "mse", "seed": s}, {"mae": 2.0 * (s + 1), "r2": 0.5}, None, "finished") for s in range(5)]
    records.append(({"losses": "mse", "seed": 9}, {}, None, "failed"))
    write_trials(tmp_path, records, sweep_metric={"name": "r2", "goal": "maximize"})
    write_report(tmp_path, baseline=["losses=l1"], plots=False)
    baseline, mse = rows(tmp_path)
    assert list(baseline)[:4] == ["losses", "trials", "r2_n", "r2_mean"]  # the sweep's metric first
    assert (baseline["losses"], float(baseline["mae_mean"]), baseline["mae_diff_mean"]) == ("l1", 3.0, "")
    assert float(baseline["mae_sd"]) == pytest.approx(math.sqrt(2.5))
    assert (mse["trials"], mse["mae_n"], float(mse["mae_mean"])) == ("5", "5", 6.0)
    assert float(mse["mae_sd"]) == pytest.approx(math.sqrt(10))
    # differences 1..5: mean 3, sd sqrt(2.5), exact two-sided signed-rank p = 2 / 2**5
    assert float(mse["mae_diff_mean"]) == 3.0 and float(mse["mae_diff_sd"]) == pytest.approx(math.sqrt(2.5))
    assert (mse["mae_pairs"], float(mse["mae_wilcoxon_p"])) == ("5", 0.0625)
    assert (float(mse["r2_diff_mean"]), mse["r2_wilcoxon_p"]) == (0.0, "")  # no non-zero difference: no test
    text = (tmp_path / "report.md").read_text()
    assert "## r2 (maximize)" in text and "| mse | 5 | 6 +- 3.2 | +3 +- 1.6 | 5 | 0.0625 |" in text
    assert "10 finished trials (1 failed, 1 without a summary" in text and "Partial" not in text
    # A string where a list goes (a notebook's easy slip) is refused whole, not read letter by letter.
    for name, value in (("baseline", "losses=l1"), ("metrics", "mae"), ("over", "seed")):
        with pytest.raises(
            TypeError, match=rf"^{name} must be a list of strings, got str '{value}': give \['{value}'\]$"
        ):
            write_report(tmp_path, **{name: value}, plots=False)


def test_parameters_named_as_the_reports_own_columns_keep_their_values(tmp_path):
    """Parameters called ``trials``, ``loss_n`` and ``n`` beside the report's columns of those names."""
    records = [
        ({"trials": t, "loss_n": 5, "n": 10 * t, "seed": s}, {"loss": t + 0.1 * s}, None, "finished")
        for t in (1, 2)
        for s in (0, 1)
    ]
    write_trials(tmp_path, records, sweep_metric={"name": "loss", "goal": "minimize"})
    write_report(tmp_path, plots=True)
    first, second = rows(tmp_path)
    assert (first["parameter:trials"], first["parameter:loss_n"], first["n"]) == ("1", "5", "10")
    assert (second["parameter:trials"], second["n"], second["trials"], second["loss_n"]) == ("2", "20", "2", "2")
    assert (float(first["loss_mean"]), float(second["loss_mean"])) == (pytest.approx(1.05), pytest.approx(2.05))
    text = (tmp_path / "report.md").read_text()
    assert "| trials | n | n (count) | mean +- sd |" in text
    assert "| 1 | 10 | 2 | 1.05 +- 0.071 |" in text and "| 2 | 20 | 2 | 2.05 +- 0.071 |" in text


def test_a_sweep_with_trials_not_started_says_it_is_partial(tmp_path):
    records = [({"losses": "l1", "seed": s}, {"mae": s + 1.0}, None, "finished") for s in range(2)]
    write_trials(tmp_path, records)
    planned = [{"trial": f"{index:04d}", "params": {}} for index in range(6)] + [{"trial": "9999", "params": {}}]
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "s", "metric": None, "trials": planned}))
    write_report(tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "2 finished trials (0 failed, 1 without a summary: interrupted or not run); mean +- sd over seed. " in text
    assert "**Partial:** 4 of the sweep's 7 trials have not started; `sodeep sweep run` with the same file" in text


def test_folds_are_units_paired_by_seed_and_fold_and_nested_params_flatten(tmp_path):
    records = []
    for softness, offset in ((0.5, 0.0), (1.0, 1.0)):
        for seed in (0, 1):
            folds = [{"fold": f, "metrics": {"mae": 10.0 * seed + f + offset * (f + 1)}} for f in range(3)]
            records.append(({"sorter": {"softness": softness}, "seeds": seed}, {"mae": 0.0}, folds, "finished"))
    write_trials(tmp_path, records)
    for baseline in (["sorter.softness=0.5"], ['sorter={"softness": 0.5}']):  # dotted, or the JSON of the value
        write_report(tmp_path, baseline=baseline, plots=False)
        _, sharp = rows(tmp_path)
        assert (sharp["sorter.softness"], sharp["mae_n"], sharp["mae_pairs"]) == ("1.0", "6", "6")
        assert float(sharp["mae_diff_mean"]) == pytest.approx(2.0)  # differences 1, 2, 3 for each seed


def test_report_command_with_plots_and_its_errors(tmp_path, capsys):
    records = [({"lr": lr, "seed": s}, {"loss": lr * (s + 1)}, None, "finished") for lr in (0.1, 0.2) for s in (0, 1)]
    write_trials(tmp_path, records)
    assert main(["report", str(tmp_path), "--baseline", "lr=0.1"]) == 0
    assert (tmp_path / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "![loss](plots/loss.png)" in (tmp_path / "report.md").read_text()
    for argv, words in [
        (["report", str(tmp_path), "--baseline", "lr=0.3"], "no setting has those values"),
        (
            ["report", str(tmp_path), "--baseline", "lrr=0.1"],
            "lrr is not a parameter that tells the settings apart; they differ in ['lr']",
        ),
        (["report", str(tmp_path), "--baseline", "seed=0"], "seed is not a parameter that tells the settings apart"),
        (["report", str(tmp_path), "--baseline", "lr=0.1", "lr=0.2"], "--baseline gives lr twice"),
        (["report", str(tmp_path), "--baseline", "lr={'a': 1}"], "the value is not a JSON object"),
        (["report", str(tmp_path), "--over", "sed"], "error: --over sed: not a parameter"),
        (["report", str(tmp_path), "--metric", "acc"], "error: --metric acc: in no summary"),
        (["report", str(tmp_path), "--baseline", "lr"], "error: --baseline lr: it takes KEY=VALUE items"),
        (["report", str(tmp_path / "missing")], "no sweep folder at"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and words in capsys.readouterr().err
    # From Python, the same refusals name the arguments.
    for arguments, words in [
        ({"over": ["sed"]}, "over=['sed']: not a parameter"),
        ({"metrics": ["acc"]}, "metrics=['acc']: in no summary"),
        ({"baseline": ["lr"]}, "baseline=['lr']: it takes KEY=VALUE items"),
        ({"baseline": ["lr=0.3"]}, "baseline=['lr=0.3']: no setting has those values"),
        ({"baseline": ["lr=0.1", "lr=0.2"]}, "baseline= gives lr twice"),
    ]:
        with pytest.raises(ValueError) as refused:
            write_report(tmp_path, plots=False, **arguments)
        assert str(refused.value).startswith(words)


def test_a_baseline_on_a_parameter_that_never_changes_is_refused(tmp_path, capsys):
    records = [
        ({"lr": lr, "batch": 8, "seed": s}, {"loss": lr * (s + 1)}, None, "finished")
        for lr in (0.1, 0.2)
        for s in (0, 1)
    ]
    write_trials(tmp_path, records)
    with pytest.raises(SystemExit) as exited:
        main(["report", str(tmp_path), "--baseline", "batch=8"])
    assert exited.value.code == 2
    assert (
        "--baseline batch=8: batch (8) has one value in every setting, so each setting would be compared with "
        "itself; the settings differ in ['lr']"
    ) in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--baseline", "lr=0.1"]) == 0
    # Beside a parameter that varies, a fixed one at its value narrows nothing: as a whole nested
    # value given as JSON spells out every field.
    assert main(["report", str(tmp_path), "--baseline", "lr=0.1", "batch=8"]) == 0


def test_a_report_removes_plots_it_no_longer_draws_and_says_when_it_cannot_draw(tmp_path, capsys, monkeypatch):
    records = [
        ({"lr": lr, "seed": s}, {"loss": lr + s, "acc": lr - s}, None, "finished") for lr in (0.1, 0.2) for s in (0, 1)
    ]
    write_trials(tmp_path, records)
    assert main(["report", str(tmp_path)]) == 0
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == ["acc.png", "loss.png"]
    (tmp_path / "plots" / "notes.txt").write_text("mine")  # not a plot: kept
    assert main(["report", str(tmp_path), "--metric", "loss"]) == 0
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == ["loss.png", "notes.txt"]
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == ["notes.txt"]
    assert "![" not in (tmp_path / "report.md").read_text()
    capsys.readouterr()
    monkeypatch.setattr("sodeep.sweeps.report.importlib.util.find_spec", lambda name: None)
    monkeypatch.setattr("sodeep.sweeps.plots.plot_metric", lambda *arguments: None)  # as without matplotlib
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no plots: matplotlib is not installed (pip install matplotlib)"


def test_a_baseline_names_a_parameter_whose_values_are_json_text(tmp_path, capsys):
    soft, sharp = '{"capacity": 64, "softness": 0.5}', '{"capacity": 64, "softness": 0.1}'
    records = [
        ({"sorter": sorter, "steps": 10, "seed": s}, {"loss": loss + s}, None, "finished")
        for sorter, loss in ((soft, 1.0), (sharp, 3.0))
        for s in (0, 1)
    ]
    write_trials(tmp_path, records)
    # The same JSON written otherwise (key order, spacing) names the same setting.
    write_report(tmp_path, baseline=['sorter={"softness":0.1, "capacity":64}'], plots=False)
    by_sorter = {row["sorter"]: row for row in rows(tmp_path)}
    assert by_sorter[sharp]["loss_diff_mean"] == "" and float(by_sorter[soft]["loss_diff_mean"]) == -2.0
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--baseline", "sorter.softness=0.1"])
    assert "they differ in ['sorter']" in capsys.readouterr().err  # not the constant steps


def test_an_unreadable_summary_counts_as_a_failed_trial(tmp_path):
    write_trials(tmp_path, [({"seed": 0}, {"mae": 1.0}, None, "finished"), ({"seed": 1}, {"mae": 2.0}, None, "failed")])
    broken = tmp_path / "trials" / "0002"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    write_report(tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "from 1 finished trial (2 failed, 1 without a summary" in text
    assert "1 of the failed trials wrote a summary that could not be read." in text
    (tmp_path / "trials" / "0000" / "summary.json").write_text("[]")
    with pytest.raises(ValueError, match="holds no finished trial summary .*: 3 failed, 1 without a summary"):
        write_report(tmp_path, plots=False)


def test_trials_that_started_and_left_no_results_are_counted_with_their_setting(tmp_path):
    records = [({"losses": "l1", "seed": s}, {"mae": 1.0 + s}, None, "finished") for s in range(3)]
    records += [({"losses": "mse", "seed": s}, {"mae": 2.0 + s}, None, "finished") for s in range(2)]
    records.append(({"losses": "mse", "seed": 2}, {}, None, "failed"))
    write_trials(tmp_path, records)
    for trial, params in (("0005", {"losses": "mse", "seed": 2}), ("9999", {"losses": "mse", "seed": 3})):
        (tmp_path / "trials" / trial / "trial.json").write_text(json.dumps({"trial": trial, "params": params}))
    (tmp_path / "trials" / "0000" / "trial.json").write_text(json.dumps({"trial": "0000", "params": records[0][0]}))
    write_report(tmp_path, plots=False)
    l1, mse = rows(tmp_path)
    assert (l1["trials_without_results"], mse["trials_without_results"]) == ("0", "2")
    text = (tmp_path / "report.md").read_text()
    assert "| l1 | 3 | 2 +- 1 |" in text and "| mse | 2 (+2 trials without results) | 2.5 +- 0.71 |" in text
    assert "**Trials without results:** in 1 setting, trials failed or stopped before their summary" in text
    # A setting none of whose trials finished is still a row of the report.
    (tmp_path / "trials" / "0007").mkdir()
    (tmp_path / "trials" / "0007" / "trial.json").write_text(
        json.dumps({"trial": "0007", "params": {"losses": "mae", "seed": 0}})
    )
    write_report(tmp_path, baseline=["losses=mae"], plots=False)
    assert [row["losses"] for row in rows(tmp_path)] == ["l1", "mse", "mae"]
    text = (tmp_path / "report.md").read_text()
    assert "| mae | 0 (+1 trial without results) |" in text and "in 2 settings, trials failed" in text
    assert "3 settings (2 with a finished trial) from 5 finished trials" in text


def test_a_baseline_that_no_setting_can_pair_with_is_said(tmp_path):
    # A random sweep's continuous parameter: no other setting shares the baseline's learning rate.
    records = [
        ({"ranker": "mse", "learning_rate": 0.01 * (1 + s), "seed": s}, {"r": 0.5}, None, "finished") for s in range(2)
    ]
    records += [
        ({"ranker": "sodeep", "learning_rate": 0.05 + s, "seed": s}, {"r": 0.6}, None, "finished") for s in range(2)
    ]
    write_trials(tmp_path, records)
    write_report(tmp_path, baseline=["ranker=mse"], plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "**No setting has a baseline to pair with:** none other than those at ranker=mse has a twin there" in text
    assert "4 settings from 4 finished trials" in text  # each with its finished trial
    write_report(tmp_path, baseline=["ranker=mse"], over=["seed", "learning_rate"], plots=False)
    assert "No setting has a baseline to pair with" not in (tmp_path / "report.md").read_text()


def test_summaries_that_name_no_sweep_are_reported_with_the_sweep_they_sit_in(tmp_path):
    write_trials(
        tmp_path, [({"seed": 0}, {"mae": 1.0}, None, "finished"), ({"seed": 1}, {"mae": 3.0}, None, "finished")]
    )
    path = tmp_path / "trials" / "0001" / "summary.json"
    summary = json.loads(path.read_text())
    del summary["sweep"]
    path.write_text(json.dumps(summary))
    write_report(tmp_path, plots=False)
    assert "| 2 | 2 +- 1.4 |" in (tmp_path / "report.md").read_text()


def test_a_unit_whose_metric_is_nan_is_counted_as_missing_in_the_table(tmp_path):
    records = [({"mode": "nan", "seed": 0}, {"score": math.nan}, None, "finished")]
    records += [({"mode": "nan", "seed": 1}, {"score": 3.0}, None, "finished")]
    records += [({"mode": "ok", "seed": s}, {"score": s + 1.0}, None, "finished") for s in (0, 1)]
    write_trials(tmp_path, records)
    write_report(tmp_path, baseline=["mode=ok"], plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "| nan | 1 of 2 | 3 | +1 | 1 |" in text and "| ok | 2 | 1.5 +- 0.71 |" in text
    assert '**Missing values:** n "k of m" in 1 setting' in text
    diverged, ok = rows(tmp_path)
    assert (diverged["score_n"], diverged["score_missing"], ok["score_missing"]) == ("1", "1", "0")


def test_a_folder_of_several_sweeps_is_refused_whatever_their_trials_did(tmp_path):
    for name, status in (("finished-one", "finished"), ("failed-one", "failed")):
        folder = tmp_path / name
        write_trials(folder, [({"seed": 0}, {"mae": 1.0}, None, status)])
        (folder / "sweep.json").write_text(json.dumps({"name": name, "metric": None}))
        summary = folder / "trials" / "0000" / "summary.json"
        summary.write_text(summary.read_text().replace('"sweep": "s"', f'"sweep": "{name}"'))
    with pytest.raises(ValueError, match="holds several sweep folders .failed-one, finished-one.: report one of them"):
        write_report(tmp_path, plots=False)
    (tmp_path / "finished-one" / "sweep.json").unlink()  # summaries alone still name their sweeps
    (tmp_path / "failed-one" / "sweep.json").unlink()
    with pytest.raises(ValueError, match="holds trials of several sweeps .failed-one, finished-one."):
        write_report(tmp_path, plots=False)
    assert not (tmp_path / "report.md").exists()


def test_plot_labels_stay_distinct_when_short_numbers_would_merge_settings(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import sodeep.sweeps.plots as plots

    records = [({"lr": lr, "seed": 0}, {"mae": lr}, None, "finished") for lr in (1.0000001, 1.00000012, 0.5)]
    write_trials(tmp_path, records)
    drawn, real = [], plots.plot_metric

    def remember(settings, labels, *args, **kwargs):
        drawn.append(labels)
        return real(settings, labels, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_metric", remember)
    write_report(tmp_path)
    assert len(set(drawn[0])) == 3 and "lr=1.0000001" in drawn[0]


@pytest.mark.parametrize(
    "params, fold_keys, words",
    [
        ({"losses": "l1"}, ("seed", "fold"), "seeds and folds"),  # seeds in the command, not swept
        ({"losses": "l1", "seeds": 0}, ("seed", "fold"), "seeds and folds"),  # seeds swept
        ({"losses": "l1"}, ("fold",), "folds"),
        ({"losses": "l1"}, (), "trials"),
    ],
)
def test_the_report_says_what_its_units_are(tmp_path, params, fold_keys, words):
    # A trial that ran seeds 0-1 x folds 0-1 has four units: (seed, fold) pairs, not trials.
    folds = [{"seed": seed, "fold": fold, "metrics": {"mae": 1.0 + seed + fold}} for seed in (0, 1) for fold in (0, 1)]
    folds = [{key: fold[key] for key in (*fold_keys, "metrics")} for fold in folds[: 4 if fold_keys else 0]]
    records = [({**params, "losses": losses}, {"mae": 2.0}, folds or None, "finished") for losses in ("l1", "mse")]
    write_trials(tmp_path, records)
    write_report(tmp_path, baseline=["losses=l1"], plots=False)
    text = (tmp_path / "report.md").read_text()
    assert f"mean +- sd over {words}." in text and f"over the {words} both have" in text


def test_a_metric_named_twice_is_reported_once_and_fixed_settings_say_what_they_are(tmp_path):
    records = [({"losses": "l1", "seed": s}, {"mae": s + 1.0}, None, "finished") for s in range(3)]
    write_trials(tmp_path, records)
    write_report(tmp_path, metrics=["mae", "mae"], plots=False)
    text = (tmp_path / "report.md").read_text()
    assert text.count("## mae") == 1
    assert "The same in every finished trial: `losses=l1`." in text  # swept or not: the finished trials'


def test_a_report_on_a_folder_that_is_no_sweep_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"is not a sweep folder \(no sweep.json, no trials/\)"):
        write_report(tmp_path, plots=False)


def test_a_metric_undefined_in_every_trial_is_reported_as_missing_not_absent():
    from sodeep.sweeps.compare import metric_names

    summaries = [{"metrics": {"a": 1.0, "b": None}}, {"metrics": {"a": 2.0, "b": float("nan"), "c": "text", "d": True}}]
    assert metric_names(summaries) == ["a", "b"]
    assert metric_names(summaries, first="b") == ["b", "a"]


def test_a_metric_given_for_whole_trials_alone_is_named_where_folds_are_the_units(tmp_path):
    folds = [{"fold": k, "metrics": {"mae": 1.0 + k}} for k in range(3)]
    records = [({"losses": name}, {"mae": 2.0, "other": None}, folds, "finished") for name in ("l1", "mse")]
    write_trials(tmp_path, records, sweep_metric={"name": "other"})
    write_report(tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "**Left out:** `other`, given for whole trials and in none of their folds" in text
    assert "in no finished trial's summary" not in text  # it is in every summary
    assert all(row["mae_n"] == "3" and "other_n" not in row for row in rows(tmp_path))
    with pytest.raises(ValueError) as raised:
        write_report(tmp_path, metrics=["other"], plots=False)
    assert str(raised.value) == (
        "metrics=['other']: given for whole trials, in none of their folds, the units this report compares; "
        "metrics of the folds: ['mae']"
    )


def test_booleans_read_alike_in_the_markdown_and_the_csv(tmp_path):
    records = [
        ({"nesterov": flag, "seed": s, "fail": False}, {"mae": 1.0 + s + flag}, None, "finished")
        for flag in (True, False)
        for s in range(2)
    ]
    write_trials(tmp_path, records)
    write_report(tmp_path, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "The same in every finished trial: `fail=false`." in text
    assert "| true | 2 |" in text and "| false | 2 |" in text
    assert [row["nesterov"] for row in rows(tmp_path)] == ["true", "false"]
    with pytest.raises(ValueError, match=r"values seen: \{'nesterov': \['false', 'true'\]\}"):
        write_report(tmp_path, baseline=["nesterov=1"], plots=False)


def test_a_report_of_one_setting_offers_no_baseline_and_its_command_keeps_no_plots(tmp_path):
    write_trials(tmp_path, [({"losses": "l1", "seed": s}, {"mae": s + 1.0}, None, "finished") for s in range(2)])
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "--baseline" not in text and f"Regenerate with `sodeep sweep report {tmp_path} --no-plots`" in text
    write_trials(tmp_path / "two", [({"lr": lr, "seed": 0}, {"loss": lr}, None, "finished") for lr in (0.1, 0.2)])
    assert main(["report", str(tmp_path / "two"), "--no-plots"]) == 0
    assert "No baseline: add `--baseline KEY=VALUE`" in (tmp_path / "two" / "report.md").read_text()


def test_plot_file_names_are_distinct_visible_and_short_whatever_the_metrics_names():
    """Two metrics whose safe names agree (a/b, a-b) would share one plot, and the report would show
    one metric's plot under the other's heading; a name of 300 characters would fail the write."""
    from sodeep.sweeps.report import PLOT_NAME_LENGTH, plot_names

    metrics = ["mae", "val/mae", "a/b", "a-b", "../../hidden", "m" * 300]
    names = plot_names(metrics)
    assert names["mae"] == "mae.png" and names["val/mae"] == "val-mae.png"  # names as before where they can be
    assert len(set(names.values())) == len(metrics)
    assert all(not name.startswith((".", "-")) and len(name) <= PLOT_NAME_LENGTH + 13 for name in names.values())
    assert plot_names(metrics) == names  # the same names for the same report


def test_a_metric_name_with_a_line_break_keeps_its_heading_on_one_line(tmp_path):
    records = [({"losses": "l1", "seed": s}, {"val\nmae": s + 1.0}, None, "finished") for s in range(3)]
    write_trials(tmp_path, records)
    write_report(tmp_path, plots=False)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "## val\\nmae" in lines and "mae" not in lines


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run folders are locked with flock")
def test_a_report_of_a_sweep_still_running_says_so(tmp_path, capsys):
    """The trials without a summary may be running: the report says it holds those finished so
    far, not only that they failed or stopped, and says nothing of it once the sweep has ended."""
    write_trials(tmp_path, [({"lr": lr}, {"loss": lr}, None, "finished") for lr in (0.1, 0.2)], {"name": "loss"})
    other = tmp_path / "elsewhere"  # the user's own run beside summaries, in a folder without sweep.json
    other.mkdir()
    (other / "summary.json").write_text((tmp_path / "trials" / "0000" / "summary.json").read_text())
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_PROGRAM, str(other)])
    try:
        deadline = time.monotonic() + 30
        while not (other / "held").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (other / "held").unlink()
        assert main(["report", str(other), "--no-plots"]) == 0
    finally:
        holder.kill()
        holder.wait()
    assert "note:" not in capsys.readouterr().out and "running" not in (other / "report.md").read_text()
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_PROGRAM, str(tmp_path / "trials" / "9999")])
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "trials" / "9999" / "held").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (tmp_path / "trials" / "9999" / "held").unlink()
        assert main(["report", str(tmp_path), "--no-plots"]) == 0
    finally:
        holder.kill()
        holder.wait()
    printed, text = capsys.readouterr().out, (tmp_path / "report.md").read_text()
    assert f"note: the sweep, or one of its trials, runs in {tmp_path}: the report holds the trials" in printed
    assert "**Still running:** the sweep, or one of its trials, runs in this folder: the tables hold" in text
    assert "1 without a summary: running, interrupted or not run" in text
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    printed, text = capsys.readouterr().out, (tmp_path / "report.md").read_text()
    assert "note:" not in printed and "running" not in text
    assert "1 without a summary: interrupted or not run" in text


def test_a_plain_file_given_as_the_sweep_folder_is_named_as_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(SystemExit) as exited:
        main(["report", str(tmp_path / "notes.txt")])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1
    assert f"{tmp_path / 'notes.txt'} is a file, not a sweep folder: report the folder a sweep run made" in error


HOLDING_PROGRAM = """
import fcntl, os, pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
descriptor = os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, str(os.getpid()).encode())
(folder / "held").write_text("")
time.sleep(60)
"""
