"""Sweep files are read as W&B reads them, and each mistake is one line naming the key."""

import pytest

from sodeep.sweeps.spec import DEFAULT_COMMAND, load_sweep, sweep_from_mapping


def sweep(**changes):
    mapping = {"method": "grid", "program": "train.py", "parameters": {"lr": {"values": [0.1]}}}
    mapping.update(changes)
    return mapping


@pytest.mark.parametrize(
    "settings, distribution",
    [
        ({"value": 3}, "constant"),
        ({"values": [1, 2]}, "categorical"),
        ({"values": [1, 2], "probabilities": [0.3, 0.7]}, "categorical_w_probabilities"),
        ({"min": 1, "max": 4}, "int_uniform"),
        ({"min": 1, "max": 4.0}, "uniform"),
        ({"min": 0.1, "max": 0.2}, "uniform"),
        ({"distribution": "uniform", "min": 1, "max": 4}, "uniform"),
        ({"distribution": "log_uniform_values", "min": 1e-4, "max": 0.1}, "log_uniform_values"),
        ({"distribution": "normal"}, "normal"),
    ],
)
def test_distribution_inferred_as_wandb_does(settings, distribution):
    spec = sweep_from_mapping(sweep(parameters={"x": settings}))
    assert spec.parameters[0].distribution == distribution


def test_defaults_filled_and_nested_parameters_flattened_in_sorted_order():
    spec = sweep_from_mapping(
        sweep(
            parameters={
                "z": {"distribution": "q_normal"},
                "sorter": {"parameters": {"softness": {"values": [0.5]}, "band": {"value": 8}}},
            }
        )
    )
    assert [p.name for p in spec.parameters] == ["sorter.band", "sorter.softness", "z"]
    assert spec.parameters[2].settings == {"mu": 0.0, "sigma": 1.0, "q": 1.0}
    assert spec.top_level_names() == ["sorter", "z"]


def test_name_defaults_to_the_file_stem_and_command_to_wandb_default(tmp_path):
    path = tmp_path / "my sweep.yaml"
    path.write_text("method: random\nprogram: t.py\nparameters:\n  a: {min: 0.0, max: 1.0}\n")
    spec = load_sweep(path)
    assert (spec.name, spec.folder_name, spec.command) == ("my sweep", "my-sweep", DEFAULT_COMMAND)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"method": "hyperband"}, "method must be one of"),
        ({"metod": "grid"}, "did you mean 'method'"),
        ({"job": "entity/project/job:v0"}, "'job' needs W&B's server"),
        ({"program": None}, "give program"),
        ({"command": ["${env}", "${interpreter}", "${trial_dir}"]}, "command[2] is the unknown macro ${trial_dir}"),
        ({"run_cap": 0}, "run_cap must be an integer >= 1"),
        ({"method": "bayes"}, "method bayes needs metric"),
        ({"metric": {"name": "loss", "goal": "lowest"}}, "metric.goal must be minimize or maximize"),
        ({"parameters": {}}, "parameters must be a non-empty mapping"),
        ({"parameters": {"lr": [0.1, 0.2]}}, "parameters.lr must be a mapping"),
        ({"parameters": {"lr": {"vals": [1]}}}, "parameters.lr: give value, values"),
        (
            {"parameters": {"sorter": {"softness": 0.1, "band": 8}}},
            "a nested parameter puts its own under `parameters:`; a fixed dict is `value: {...}`",
        ),
        ({"parameters": {"lr": {"min": 1, "max": 1}}}, "min 1 is not less than max 1"),
        (
            {"parameters": {"lr": {"min": "1e-6", "max": 0.1}}},
            "parameters.lr.min must be a number, got '1e-6'; YAML reads 1e-6 as text: write 1.0e-06",
        ),
        ({"parameters": {"lr": {"min": "fast", "max": 0.1}}}, "parameters.lr.min must be a number, got 'fast'"),
        ({"run_cap": "1e1"}, "run_cap must be an integer >= 1, got '1e1'; YAML reads 1e1 as text: write 10"),
        ({"run_cap": True}, "run_cap must be an integer >= 1, got True; YAML reads yes, no, on, off, true and false"),
        (
            {"early_terminate": {"type": "hyperband", "min_iter": "2e1"}},
            "min_iter must be an integer >= 1, got '2e1'; YAML reads 2e1 as text: write 20",
        ),
        ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}}, "min must be > 0"),
        ({"parameters": {"lr": {"distribution": "lognormal"}}}, "unknown distribution 'lognormal'"),
        (
            {"parameters": {"lr": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}}},
            "parameters.lr.q must be > 0",
        ),
        ({"parameters": {"lr": {"distribution": "uniform", "min": 0, "max": 1, "mu": 0}}}, "unknown key 'mu'"),
        ({"parameters": {"lr": {"values": [1, 2], "probabilities": [0.5, 0.6]}}}, "sum to 1"),
        ({"parameters": {"1lr": {"value": 1}}}, "parameters.1lr: a name must match"),
        ({"parameters": {"a": {"parameters": {}}}}, "nested parameter holds only a non-empty parameters"),
        ({"early_terminate": {"type": "envelope", "min_iter": 3}}, "early_terminate.type must be hyperband"),
        ({"early_terminate": {"type": "hyperband"}}, "early_terminate needs min_iter, or max_iter and s"),
        ({"early_terminate": {"type": "hyperband", "max_iter": 27}}, "needs min_iter, or max_iter and s"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 0}}, "early_terminate.min_iter must be an integer >= 1"),
        (
            {"early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 1}},
            "early_terminate.eta must be a number > 1",
        ),
        ({"early_terminate": {"type": "hyperband", "min_iter": "3"}}, "min_iter must be an integer >= 1, got '3'"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 3, "strict": "yes"}}, "strict must be true or false"),
        ({"early_terminate": {"type": "hyperband", "min_itr": 3}}, "did you mean 'min_iter'"),
    ],
)
def test_mistakes_raise_one_line_naming_the_key(changes, words):
    with pytest.raises(ValueError) as raised:
        sweep_from_mapping(sweep(**changes), source="s.yaml")
    message = str(raised.value)
    assert words in message and "\n" not in message and message.startswith(("s.yaml", "unknown"))
    assert "quote the word" not in message  # quoting makes text, which no number setting takes


@pytest.mark.parametrize(
    "distribution, low, high, warned",
    [
        ("log_uniform", 1e-4, 0.1, "draws 1.0001 to 1.1052"),
        ("q_log_uniform", 0.001, 1, "draws 1.001 to 2.7183, rounded to multiples of q = 1: 1 to 3"),
        ("inv_log_uniform", 0.01, 0.5, "draws 0.60653 to 0.99005"),
        ("log_uniform", 0.001, 0.005, "draws 1.001 to 1.005"),  # both at most 1
        ("log_uniform", 16, 512, "draws 8.8861e+06 to 2.2844e+222"),  # a decade or more apart
        ("log_uniform", 1e-4, 10, "draws 1.0001 to 22026"),
        ("log_uniform", -9.2, -2.3, None),  # natural logs, as W&B means them
        ("log_uniform", 1.5, 4.0, None),  # above 1 and less than a decade apart: may be meant
        ("log_uniform_values", 1e-4, 0.1, None),
        ("uniform", 1e-4, 0.1, None),
    ],
)
def test_log_bounds_written_as_values_are_warned_of(distribution, low, high, warned):
    from sodeep.sweeps.spec import spec_warnings

    parameters = {"optimizer": {"parameters": {"lr": {"distribution": distribution, "min": low, "max": high}}}}
    warnings = spec_warnings(sweep_from_mapping(sweep(method="random", parameters=parameters), source="s.yaml"))
    if warned is None:
        assert warnings == []
    else:
        (line,) = warnings
        assert line.startswith(f"warning: s.yaml: parameters.optimizer.lr: {distribution}'s min and max")
        assert warned in line and line.endswith(f"write distribution: {distribution}_values")


@pytest.mark.parametrize(
    "settings, warned",
    [
        ({"distribution": "q_log_uniform", "min": -9.2, "max": -2.3, "q": 1}, "rounds every draw to 0 (q = 1)"),
        ({"distribution": "q_uniform", "min": 0.1, "max": 0.3, "q": 1}, "rounds every draw to 0 (q = 1)"),
        ({"distribution": "q_log_uniform_values", "min": 1e-4, "max": 0.1, "q": 1}, "rounds every draw to 0"),
        ({"distribution": "q_log_uniform", "min": -9.2, "max": -2.3, "q": 1e-4}, None),
        ({"distribution": "q_uniform", "min": 0, "max": 10}, None),  # W&B's default q = 1
    ],
)
def test_a_q_that_leaves_one_value_is_warned_of(settings, warned):
    from sodeep.sweeps.spec import spec_warnings

    warnings = spec_warnings(sweep_from_mapping(sweep(method="random", parameters={"lr": settings})))
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warned in warnings[0] and "parameters.lr" in warnings[0]


@pytest.mark.parametrize(
    "early_terminate",
    [
        {"type": "hyperband", "min_iter": 3},
        {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3, "strict": False},
    ],
)
def test_early_termination_as_wandb_takes_it_is_accepted(early_terminate):
    spec = sweep_from_mapping(sweep(early_terminate=early_terminate), source="s.yaml")
    assert spec.early_terminate == early_terminate


@pytest.mark.parametrize(
    "name, folder",
    [("α", "α"), ("β", "β"), ("ünï-sweep ☃", "ünï-sweep"), ("-x", "x"), ("..hidden", "hidden"), ("☃", "sweep")],
)
def test_folder_names_keep_letters_of_any_script_and_never_look_like_a_flag(name, folder):
    assert sweep_from_mapping(sweep(name=name)).folder_name == folder


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}"])
def test_an_empty_sweep_file_says_it_holds_no_settings(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"empty.yaml holds no settings: a sweep file gives method, parameters"):
        load_sweep(path)


def test_folder_names_compose_accents_and_stay_short_enough_for_any_file_system():
    decomposed = "cafe\u0301-re\u0301sume\u0301"  # as macOS may store "café-résumé"
    assert sweep_from_mapping(sweep(name=decomposed)).folder_name == "café-résumé"
    long = sweep_from_mapping(sweep(name="扫" * 96)).folder_name  # 288 bytes of UTF-8
    assert long == "扫" * 40 and len(long.encode()) == 120
