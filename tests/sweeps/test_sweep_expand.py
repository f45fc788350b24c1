"""Grid and random expansion follow W&B's semantics: counts, order, value sets, ranges, seeding.
Quantiles are checked against scipy's distributions, an independent reference."""

import math

import numpy as np
import pytest
import scipy.stats

from sodeep.sweeps.expand import expand_trials, sample
from sodeep.sweeps.spec import check_parameter, sweep_from_mapping


def spec(method, parameters, **extra):
    return sweep_from_mapping({"method": method, "program": "t.py", "parameters": parameters, **extra})


def test_grid_is_the_product_of_sorted_parameters_last_fastest():
    trials = expand_trials(spec("grid", {"seed": {"values": [0, 1]}, "lr": {"values": [0.1, 0.01]}, "k": {"value": 3}}))
    assert [t.id for t in trials] == ["0000", "0001", "0002", "0003"]
    assert [(t.params["lr"], t.params["seed"]) for t in trials] == [(0.1, 0), (0.1, 1), (0.01, 0), (0.01, 1)]
    assert all(t.params["k"] == 3 for t in trials)


def test_grid_int_uniform_is_inclusive_q_uniform_excludes_max_and_repeats_are_dropped():
    trials = expand_trials(
        spec(
            "grid",
            {
                "depth": {"min": 1, "max": 3},
                "q": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25},
                "v": {"values": [1, 1.0, True, "1"]},
            },
        )
    )
    assert sorted({t.params["depth"] for t in trials}) == [1, 2, 3]
    assert sorted({t.params["q"] for t in trials}) == [0.0, 0.25, 0.5, 0.75]
    assert [t.params["v"] for t in trials[:3]] == [1, True, "1"]
    assert len(trials) == 3 * 4 * 3


def test_grid_nests_dict_parameters_and_run_cap_and_count_cut_it():
    parameters = {"sorter": {"parameters": {"band": {"values": [4, 8]}, "softness": {"value": 0.5}}}}
    trials = expand_trials(spec("grid", parameters))
    assert [t.params for t in trials] == [
        {"sorter": {"band": 4, "softness": 0.5}},
        {"sorter": {"band": 8, "softness": 0.5}},
    ]
    assert len(expand_trials(spec("grid", {"a": {"values": [1, 2, 3]}}, run_cap=2))) == 2
    assert len(expand_trials(spec("grid", {"a": {"values": [1, 2, 3]}}, run_cap=2), count=1)) == 1


def test_grid_refuses_continuous_distributions():
    with pytest.raises(ValueError, match="parameters.lr is log_uniform_values: a grid takes"):
        expand_trials(spec("grid", {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}}))


def test_random_needs_a_cap_and_draws_reproducibly_with_stable_prefixes():
    parameters = {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}, "seed": {"values": [0, 1]}}
    with pytest.raises(ValueError, match="needs run_cap"):
        expand_trials(spec("random", parameters))
    ten = expand_trials(spec("random", parameters, run_cap=10), seed=3)
    assert len(ten) == 10
    assert ten == expand_trials(spec("random", parameters, run_cap=10), seed=3)
    assert ten[:4] == expand_trials(spec("random", parameters), seed=3, count=4)
    assert ten != expand_trials(spec("random", parameters, run_cap=10), seed=4)


def test_random_value_sets_and_ranges():
    parameters = {
        "cat": {"values": ["a", "b", "c"]},
        "int": {"min": -2, "max": 2},
        "ln": {"distribution": "log_uniform", "min": -3, "max": 0},
        "lv": {"distribution": "log_uniform_values", "min": 0.001, "max": 0.1},
        "qu": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
        "unif": {"min": 0.5, "max": 1.5},
    }
    trials = expand_trials(spec("random", parameters, run_cap=400), seed=0)
    column = {name: [t.params[name] for t in trials] for name in parameters}
    assert set(column["cat"]) == {"a", "b", "c"}
    assert set(column["int"]) == {-2, -1, 0, 1, 2}
    assert min(column["ln"]) >= math.exp(-3) and max(column["ln"]) <= 1.0
    assert 0.001 <= min(column["lv"]) and max(column["lv"]) <= 0.1
    assert set(column["qu"]) <= {0, 2, 4, 6, 8, 10} and all(isinstance(v, int) for v in column["qu"])
    assert 0.5 <= min(column["unif"]) and max(column["unif"]) <= 1.5
    # log-uniform: the logarithms are uniform over [ln min, ln max]
    logs = (np.log(column["lv"]) - math.log(0.001)) / (math.log(0.1) - math.log(0.001))
    assert scipy.stats.kstest(logs, "uniform").pvalue > 0.01


QUANTILES = [0.01, 0.2, 0.5, 0.77, 0.99]


@pytest.mark.parametrize(
    "settings, reference",
    [
        ({"distribution": "uniform", "min": -1.0, "max": 3.0}, scipy.stats.uniform(-1, 4)),
        ({"distribution": "log_uniform", "min": -4.0, "max": 1.0}, scipy.stats.loguniform(math.exp(-4), math.e)),
        ({"distribution": "log_uniform_values", "min": 1e-3, "max": 10.0}, scipy.stats.loguniform(1e-3, 10)),
        ({"distribution": "inv_log_uniform_values", "min": 1e-3, "max": 10.0}, scipy.stats.loguniform(1e-3, 10)),
        ({"distribution": "normal", "mu": 2.0, "sigma": 0.5}, scipy.stats.norm(2, 0.5)),
        ({"distribution": "log_normal", "mu": 0.3, "sigma": 0.7}, scipy.stats.lognorm(s=0.7, scale=math.exp(0.3))),
        ({"distribution": "beta", "a": 2.0, "b": 5.0}, scipy.stats.beta(2, 5)),
    ],
)
def test_quantiles_match_scipy(settings, reference):
    parameter = check_parameter(("x",), settings, "x")
    assert [sample(parameter, u) for u in QUANTILES] == pytest.approx(reference.ppf(QUANTILES), rel=1e-9)


def test_inverse_log_uniform_takes_exponents_and_quantized_draws_round():
    inverse = check_parameter(("x",), {"distribution": "inv_log_uniform", "min": 0.0, "max": 2.0}, "x")
    assert sample(inverse, 0.0) == pytest.approx(math.exp(-2)) and sample(inverse, 1.0) == pytest.approx(1.0)
    quantized = check_parameter(("x",), {"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 10}, "x")
    assert sample(quantized, 0.5) == 30  # 10**1.5 = 31.6 -> 30, an int because q is
    assert sample(check_parameter(("x",), {"distribution": "q_normal", "q": 0.5}, "x"), 0.9) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("low", "high", "q", "expected"),
    [
        (0.1, 0.4, 0.1, [0.1, 0.2, 0.3]),
        (1, 1.3, 0.1, [1.0, 1.1, 1.2]),
        (0, 6, 2, [0, 2, 4]),
        (0, 1e-4, 4e-5, [0.0, 4e-5, 8e-5]),
    ],
)
def test_grid_q_uniform_values_are_written_as_q_is_and_stop_below_max(low, high, q, expected):
    values = [
        t.params["x"]
        for t in expand_trials(spec("grid", {"x": {"distribution": "q_uniform", "min": low, "max": high, "q": q}}))
    ]
    assert values == expected and [type(value) for value in values] == [type(value) for value in expected]


def test_a_huge_grid_runs_in_parts_and_is_counted_without_listing_it():
    from sodeep.sweeps.runner import sweep_size

    parameters = {f"p{index}": {"min": 0, "max": 9} for index in range(10)}  # 10^10 combinations
    assert len(expand_trials(spec("grid", parameters), count=3)) == 3
    assert sweep_size(spec("grid", parameters), seed=0) == 10**10
    assert sweep_size(spec("grid", parameters, run_cap=5), seed=0) == 5
    with pytest.raises(ValueError, match=r"the grid has 10,000,000,000 trials, more than 100,000 to list; set run_cap"):
        expand_trials(spec("grid", parameters))
    with pytest.raises(ValueError, match=r"parameters.x: q_uniform from 0 to 1000000000000.0 in steps of 1 is"):
        expand_trials(spec("grid", {"x": {"distribution": "q_uniform", "min": 0, "max": 1e12, "q": 1}}), count=1)
    with pytest.raises(ValueError, match=r"parameters.x: int_uniform from 0 to 10000000 is 10,000,001 values"):
        expand_trials(spec("grid", {"x": {"min": 0, "max": 10**7}}), count=1)
