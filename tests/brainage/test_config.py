import pytest

from sodeep.brainage.config import NiftiConfig, SyntheticConfig, TabularConfig, load_config
from sodeep.brainage.datasets import bundled_table_path


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("folds: 3\nmax-epochs: 7\nseeds: 4\nlosses: [l1, cheng2021]\n")
    config = load_config(TabularConfig, path, max_epochs=9)
    assert (config.folds, config.max_epochs, config.seeds, config.losses) == (3, 9, [4], ["l1", "cheng2021"])
    assert config.patience == TabularConfig().patience  # untouched fields keep the defaults


def test_numbers_yaml_reads_as_text_are_numbers_as_in_pretraining(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string; `sodeep pretrain` takes it as the number it means.
    path = tmp_path / "run.yaml"
    path.write_text("finetune_learning_rate: 1e-3\n")
    assert load_config(TabularConfig, path).finetune_learning_rate == 0.001
    path.write_text("ema_decay: 9E-1\nmax_minutes: 1e1\n")
    config = load_config(SyntheticConfig, path)
    assert (config.ema_decay, config.max_minutes) == (0.9, 10.0)
    for text in ("nan", "inf", "fast"):
        path.write_text(f"finetune_learning_rate: {text}\n")
        with pytest.raises(ValueError, match="finetune_learning_rate must be float"):
            load_config(TabularConfig, path)


def test_none_in_a_yaml_file_reads_as_the_flags_read_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("init_from: none\nema_decay: None\nmax_minutes: NONE\naugment: none\nfinetune_epochs: null\n")
    config = load_config(SyntheticConfig, path)
    assert (config.init_from, config.ema_decay, config.max_minutes, config.augment, config.finetune_epochs) == (
        None,
        None,
        None,
        None,
        None,
    )
    path.write_text("id_column: none\n")  # a column may be named so: taken as written
    assert load_config(TabularConfig, path).id_column == "none"


@pytest.mark.parametrize(
    "text, message",
    [
        ("fold: 3\n", r"run.yaml: unknown setting 'fold' \(did you mean 'folds'\?\)"),
        ("MAX_EPOCHS: 3\n", r"run.yaml: unknown setting 'MAX_EPOCHS' \(did you mean 'max_epochs'\?\)"),
        ("zzz: 1\n", r"unknown setting 'zzz'; known: \['dataset', 'csv'"),
        ("folds: [3\n", "run.yaml is not valid YAML"),
        ("- 3\n", "must hold a mapping of settings, got a list"),
        ("folds: '5'\n", r"folds must be int, got '5' \(str\)"),
        ("batch_size: true\n", r"batch_size must be int, got True \(bool\)"),
        ("folds: 1\n", "folds >= 2"),
        ("losses: [l1, l2]\n", r"losses must be known presets, got unknown ones \['l2'\]; known: \['l1', 'mse'"),
        (
            "losses: [cheng2012]\n",
            r"losses must be known presets, got unknown ones \['cheng2012'\] \(did you mean 'cheng2021'\?\)",
        ),
        ("losses: [l1, l1]\n", r"losses must not repeat, got \['l1', 'l1'\]"),
        ("seeds: [0, -2]\n", r"seeds must be >= 0 and <= 4294967295 \(NumPy's seeds\), got \[0, -2\]"),
        ("seeds: [0, 99999999999999999999]\n", r"seeds must be >= 0 and <= 4294967295 .NumPy's seeds., got \[0, 9999"),
        ("seeds: [1, 1]\n", r"seeds must not repeat"),
        ("wandb: cloud\n", "wandb must be one of"),
        ("dataset: fcon1000\ncsv: mine.csv\n", "give a dataset or a csv, not both"),
        ("dataset: abide\n", "dataset must be one of"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_config(TabularConfig, path)
    assert "\n" not in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config file"):
        load_config(TabularConfig, tmp_path / "none.yaml")


def test_table_source():
    assert TabularConfig().table_path() == bundled_table_path("fcon1000")
    assert TabularConfig(dataset="fcon1000").table_path() == bundled_table_path("fcon1000")
    assert str(TabularConfig(csv="my/table.csv").table_path()) == "my/table.csv"


def test_volume_configs_check_their_own_settings():
    for config_class, settings, message in (
        (SyntheticConfig, {"train": 3}, "train >= 4"),
        (SyntheticConfig, {"augment": "mirror"}, "augment must be one of"),
        (SyntheticConfig, {"block_order": "norm"}, "block_order must be one of"),
        (SyntheticConfig, {"channels": []}, "channels must be one or more widths"),
        (SyntheticConfig, {"ema_decay": 1.5}, "ema_decay must be None or in"),
        (SyntheticConfig, {"max_minutes": 0}, "max_minutes must be None or > 0"),
        (SyntheticConfig, {"max_minutes": float("inf")}, "max_minutes must be None or > 0"),
        (SyntheticConfig, {"data_seed": -1}, "data_seed must be >= 0"),
        (NiftiConfig, {"manifest": "m.csv", "voxel_size": float("nan")}, "voxel_size > 0"),
        (NiftiConfig, {}, "manifest is required"),
        (NiftiConfig, {"manifest": "m.csv", "shape": [45, 54]}, "shape must be 3 sides"),
    ):
        with pytest.raises(ValueError, match=message):
            config_class(**settings)
    assert SyntheticConfig(max_minutes=None, ema_decay=0.99, max_epochs=3).max_minutes is None
    assert NiftiConfig(manifest="m.csv").voxel_size == 4.0


def test_wandb_modes_are_those_of_the_wandb_set_up():
    from sodeep.brainage.config import WANDB_MODES
    from sodeep.wandb_setup import WANDB_MODES as RUN_MODES

    assert WANDB_MODES == RUN_MODES


def test_numpy_numbers_and_ranges_are_settings_like_python_numbers_and_lists():
    import numpy as np

    config = TabularConfig(seeds=np.arange(2), max_epochs=np.int64(3), batch_size=np.int32(8), losses=("l1",))
    assert config.seeds == [0, 1] and config.max_epochs == 3 and config.batch_size == 8
    assert all(type(value) is int for value in (*config.seeds, config.max_epochs, config.batch_size))
    assert TabularConfig(seeds=range(3)).seeds == [0, 1, 2] and TabularConfig(seeds=np.int64(4)).seeds == [4]
    with pytest.raises(ValueError, match=r"seeds must be int or a list of them, got 1.5 \(float\)"):
        TabularConfig(seeds=np.float64(1.5))
    with pytest.raises(ValueError, match=r"losses must be str or a list of them, got \{'l1'\} \(set\)"):
        TabularConfig(losses={"l1"})
    with pytest.raises(ValueError, match=r"^seeds must be int, got 'a' \(str\)"):  # an entry of a list
        TabularConfig(seeds=[0, "a"])


def test_a_table_given_where_a_path_goes_is_named_in_one_line():
    import pandas as pd

    table = pd.DataFrame({"age": range(50), "thickness": range(50)})
    with pytest.raises(ValueError) as raised:
        TabularConfig(csv=table)
    assert (
        str(raised.value) == "csv must be str, got a DataFrame (a path is expected: write a table to a CSV file first)"
    )


@pytest.mark.parametrize(
    "settings,error,message",
    [
        ({"hidden": [0]}, ValueError, "each hidden width must be >= 1, got 0"),
        ({"hidden": [64, -3]}, ValueError, "each hidden width must be >= 1, got -3"),
        ({"hidden": "256"}, TypeError, "hidden must be a sequence of layer widths such as (256, 64), got '256'"),
        ({"hidden": [8.0]}, TypeError, "each hidden width must be an integer, got float 8.0"),
        ({"max_epochs": 2.5}, TypeError, "max_epochs must be an integer, got float 2.5"),
        ({"batch_size": True}, TypeError, "batch_size must be an integer, got bool True"),
        ({"learning_rate": True}, TypeError, "learning_rate must be a number, got bool True"),
        ({"dropout": "0.2"}, TypeError, "dropout must be a number, got str '0.2'"),
    ],
)
def test_training_settings_that_build_no_model_are_refused(settings, error, message):
    from sodeep.brainage.config import TrainingConfig
    from sodeep.brainage.models import AgeMLP

    with pytest.raises(error) as raised:
        TrainingConfig(**settings)
    assert str(raised.value) == message
    if "hidden" in settings:
        with pytest.raises(error) as raised:
            AgeMLP(3, hidden=settings["hidden"])
        assert str(raised.value) == message


def test_training_settings_from_numpy_are_recorded_as_plain_json():
    import json

    import numpy as np

    from sodeep.brainage.config import TrainingConfig
    from sodeep.brainage.cross_validation import cross_validation_settings

    config = TrainingConfig(hidden=np.array([8, 4]), max_epochs=np.int64(2), learning_rate=np.float32(0.5))
    assert config.hidden == (8, 4) and type(config.max_epochs) is int and config.learning_rate == 0.5
    recorded = json.loads(json.dumps(cross_validation_settings(10, 2, config)))["config"]
    assert recorded["hidden"] == [8, 4] and recorded["max_epochs"] == 2


def test_a_refused_value_names_the_yaml_file_only_where_the_file_gave_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("losses: l1\nfolds: 2\nseeds: 0\n")
    for overrides, message in [
        ({"seeds": [0, 0]}, r"^seeds must not repeat"),
        ({"losses": ["l2"]}, r"^losses must be known presets, got unknown ones \['l2'\]"),
        ({"max_epochs": 0}, r"^max_epochs must be >= 1"),
        ({"fold": 3}, r"^unknown setting 'fold' \(did you mean 'folds'\?\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_config(TabularConfig, path, **overrides)
    path.write_text("folds: 1\nlosses: l1\n")
    with pytest.raises(ValueError, match=f"^{path}: need folds >= 2"):
        load_config(TabularConfig, path, seeds=[0])
    # A message naming two settings: the file is named where its own value is refused.
    path.write_text("patience: 0\n")
    with pytest.raises(ValueError, match=f"^{path}: max_epochs must be >= 1 and patience >= 1, got 5 and 0"):
        load_config(TabularConfig, path, max_epochs=5)
    path.write_text("max_epochs: 5\n")
    with pytest.raises(ValueError, match="^max_epochs must be >= 1 and patience >= 1, got 5 and 0"):
        load_config(TabularConfig, path, patience=0)
    path.write_text("losses: []\n")
    with pytest.raises(ValueError, match=f"^{path}: need at least one seed and one preset"):
        load_config(TabularConfig, path, seeds=[1])
    path.write_text("folds: 3\n")  # a manifest given beside the file alone, as its flag
    with pytest.raises(ValueError, match="^need folds >= 2"):
        load_config(NiftiConfig, path, manifest="m.csv", folds=1)


def test_none_spelled_in_python_reads_as_none_as_from_flags_and_yaml(tmp_path):
    assert TabularConfig(init_from="none").init_from is None
    path = tmp_path / "run.yaml"
    path.write_text("folds: 3\n")
    assert load_config(TabularConfig, path, init_from="None").init_from is None
    config = SyntheticConfig(max_minutes="none", augment="NONE", ema_decay="none")
    assert (config.max_minutes, config.augment, config.ema_decay) == (None, None, None)


@pytest.mark.parametrize(("setting", "value"), [("csv", ""), ("init_from", " "), ("out", "")])
def test_an_empty_path_is_refused_not_read_as_the_working_folder(setting, value):
    with pytest.raises(ValueError, match=f"^{setting} must be a path, not empty text, got '{value}'"):
        TabularConfig(**{setting: value})
    with pytest.raises(ValueError, match="^manifest must be a path, not empty text, got ''"):
        NiftiConfig(manifest="")


def test_no_feature_patterns_is_one_setting_with_leaving_them_out():
    assert TabularConfig(features=[]).features is None == TabularConfig().features


def test_presets_written_as_one_text_with_commas_are_shown_as_a_list():
    with pytest.raises(
        ValueError, match=r"\['l1,mse'\] \(l1 and mse are 2 presets: give them as a list, --losses l1 mse or"
    ):
        TabularConfig(losses="l1,mse")
    with pytest.raises(ValueError, match=r"\['l1,msee'\] \(did you mean"):  # not a list of presets
        TabularConfig(losses="l1,msee")


def test_two_spellings_of_one_setting_in_a_mapping_are_refused():
    with pytest.raises(ValueError, match="^'max-epochs' and 'max_epochs' name one setting; keep one$"):
        load_config(TabularConfig, {"max-epochs": 1, "max_epochs": 2})
