"""Brain age on a FreeSurfer table: classical baselines on the same folds as `sodeep brainage
tabular`, printed beside its results (default table: the bundled FCON1000 thickness table).

    sodeep brainage tabular --dataset fcon1000 \
        --losses l1 mse l1+spearman l1+agediff l1+spearman+agediff cheng2021 --out runs/brainage-fcon1000
    python experiments/benchmarks/bench_brainage_tabular.py --results runs/brainage-fcon1000/results.json

Baselines (scikit-learn, the `bench` extra), fitted on the training folds with the same
train-only standardization: the training median; ridge (alpha by inner CV); an RBF SVR (C by inner
CV).  Folds: `sodeep.brainage.stratified_folds` with the same seeds.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVR

from sodeep.brainage import Standardizer, bundled_table_path, read_age_table, regression_metrics, stratified_folds
from sodeep.config import number_at_least

REPORTED = ("mae", "pearson", "spearman")


def baselines(features: np.ndarray, ages: np.ndarray, folds: int, seeds: list[int]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"median": [], "ridge": [], "svr (rbf)": []}
    for seed in seeds:
        fold_of = stratified_folds(ages, folds, seed)
        for fold in range(folds):
            train, test = fold_of != fold, fold_of == fold
            scaler = Standardizer().fit(features[train])
            x_train, x_test = scaler.transform(features[train]), scaler.transform(features[test])
            predictions = {
                "median": np.full(test.sum(), np.median(ages[train])),
                "ridge": RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x_train, ages[train]).predict(x_test),
                "svr (rbf)": GridSearchCV(SVR(kernel="rbf", epsilon=1.0), {"C": [10.0, 30.0, 100.0]}, cv=3)
                .fit(x_train, ages[train])
                .predict(x_test),
            }
            for name, predicted in predictions.items():
                metrics = (
                    regression_metrics(predicted, ages[test])
                    if name != "median"
                    else {
                        "mae": float(np.abs(predicted - ages[test]).mean()),
                        "pearson": float("nan"),
                        "spearman": float("nan"),
                    }
                )
                runs[name].append({"seed": seed, "fold": fold, **metrics})
    return runs


def row(name: str, runs: list[dict]) -> str:
    cells = []
    for metric in REPORTED:
        values = np.array([run[metric] for run in runs])
        cells.append("n/a" if np.isnan(values).all() else f"{values.mean():.3f} +- {values.std(ddof=1):.3f}")
    return f"| {name} | " + " | ".join(cells) + f" | {len(runs)} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()), formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--csv", help="a brain-age table (none: the bundled fcon1000 table)")
    parser.add_argument("--results", help="results.json of `sodeep brainage tabular` on the same CSV")
    parser.add_argument("--folds", type=number_at_least(int, 2), default=5, help="cross-validation folds")
    parser.add_argument("--seeds", type=number_at_least(int, 0), nargs="+", default=[0, 1, 2], help="fold seeds")
    arguments = parser.parse_args()
    results = None
    if arguments.results:
        try:
            results = json.loads(open(arguments.results, encoding="utf-8").read())
            settings, presets = results["settings"], results["presets"]
            settings["folds"], settings["seeds"], dict(presets)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            parser.error(f"--results: {arguments.results} is not a results.json of `sodeep brainage tabular`")
    try:
        table = read_age_table(arguments.csv or bundled_table_path("fcon1000"))
    except (OSError, ValueError) as error:
        parser.error(str(error))
    print("| model | MAE (years) | Pearson r | Spearman rho | runs |\n|---|---|---|---|---|")
    try:
        rows = baselines(table.features, table.ages, arguments.folds, arguments.seeds)
    except ValueError as error:  # more folds than the table has subjects for
        parser.error(str(error))
    for name, runs in rows.items():
        print(row(name, runs))
    if results is not None:
        settings = results["settings"]
        if settings["folds"] != arguments.folds or settings["seeds"] != arguments.seeds:
            print(f"(results use folds={settings['folds']} seeds={settings['seeds']}: not the same splits)")
        for name, entry in results["presets"].items():
            print(row(f"sodeep MLP, {name}", entry["runs"]))


if __name__ == "__main__":
    main()
