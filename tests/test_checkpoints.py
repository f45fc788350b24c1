import argparse
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from sodeep import load_sorter, save_sorter
from sodeep.checkpoints import (
    DEFAULT_SORTER_FILE,
    DEPTH2_SORTER_FILE,
    CheckpointError,
    default_sorter_path,
    import_original_checkpoint,
    sorter_payload,
    write_sorter_checkpoint,
)
from sodeep.evaluation import fidelity_table, summarize
from sodeep.sorters import ConvSorter, OriginalCNNSorter, OriginalLSTMLargeSorter, PairwiseSigmoidSorter


def test_round_trip_restores_config_and_weights(tmp_path):
    sorter = ConvSorter(capacity=64, softness=0.7, width=8, depth=2)
    sorter.network[-1].weight.data.normal_()
    path = save_sorter(sorter, tmp_path / "s.pt", {"note": "test"})
    loaded = load_sorter(path)
    assert loaded.config() == sorter.config() and loaded.checkpoint_metadata == {"note": "test"}
    x = torch.randn(3, 40)
    torch.testing.assert_close(loaded(x), sorter.eval()(x))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_checkpoint_helpers_take_paths_as_text(tmp_path):
    import json

    from sodeep.checkpoints import read_weights_only, recorded_command, run_folder_sorter

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"command": "pretrain", "config": {}}))
    torch.save({"weights": torch.ones(2)}, folder / "sorter.pt")
    assert recorded_command(str(folder)) == "pretrain"
    assert run_folder_sorter(str(folder)) == folder / "sorter.pt"
    assert torch.equal(read_weights_only(str(folder / "sorter.pt"))["weights"], torch.ones(2))


def test_conv_checkpoint_without_activation_is_read_as_gelu(tmp_path):
    # Checkpoints written before the activation option had GELU layers; they must not change.
    gelu = ConvSorter(width=8, depth=2, activation="gelu")
    for parameter in gelu.network.parameters():
        parameter.data.normal_()
    payload = torch.load(save_sorter(gelu, tmp_path / "g.pt"), weights_only=True)
    del payload["config"]["activation"]
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_sorter(tmp_path / "old.pt")
    assert loaded.activation == "gelu" and isinstance(loaded.network[1], torch.nn.GELU)
    x = torch.randn(4, 30)
    torch.testing.assert_close(loaded(x), gelu.eval()(x))
    assert ConvSorter().activation == "relu"


def test_wrong_corrupt_and_foreign_files_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no sorter checkpoint") as error:
        load_sorter(tmp_path / "missing.pt")
    assert "shipped" not in str(error.value)
    # The name of a shipped file, from a folder that does not hold it (an installed package's
    # model card names them): the error gives the installed file's path.
    monkeypatch.chdir(tmp_path)
    for given in ("original_cnn_n100.pt", "pretrained/conv_sorter_depth2.pt"):
        with pytest.raises(CheckpointError) as error:
            load_sorter(given)
        shipped = default_sorter_path(Path(given).name)
        assert str(error.value) == f"no sorter checkpoint at {given}; the shipped file of that name is {shipped}"
        load_sorter(shipped)
    with pytest.raises(CheckpointError) as error:  # a shipped file that is no sorter: no hint
        load_sorter("MODEL_CARD.md")
    assert str(error.value) == "no sorter checkpoint at MODEL_CARD.md"
    (tmp_path / "corrupt.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="is not a torch checkpoint") as error:
        load_sorter(tmp_path / "corrupt.pt")
    assert "trust_pickle" not in str(error.value)  # a broken file is never told to unpickle
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_sorter(tmp_path / "empty.pt")
    whole = save_sorter(ConvSorter(), tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="truncated") as error:
        load_sorter(tmp_path / "truncated.pt")
    assert "trust_pickle" not in str(error.value)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a sodeep sorter checkpoint"):
        load_sorter(tmp_path / "foreign.pt")
    payload = torch.load(save_sorter(ConvSorter(width=8, depth=2), tmp_path / "ok.pt"), weights_only=True)
    payload["config"]["width"] = 16
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_sorter(tmp_path / "mismatch.pt")


def test_pickled_namespace_needs_explicit_opt_in(tmp_path):
    original = OriginalCNNSorter(100)
    path = tmp_path / "best_cnn.pth.tar"
    torch.save(
        {"state_dict": original.state_dict(), "args_dict": argparse.Namespace(model_type="cnn", seq_len=100)}, path
    )
    with pytest.raises(CheckpointError):
        load_sorter(path)  # weights_only refuses the Namespace
    with pytest.raises(PermissionError, match="trust_pickle"):
        import_original_checkpoint(path)
    imported = import_original_checkpoint(path, trust_pickle=True)
    x = torch.randn(2, 100)
    torch.testing.assert_close(imported(x), original.eval()(x))
    assert pickle  # the module is what unpickling needs; imported here to make that explicit


def test_a_plain_pickle_is_refused_in_one_error_and_no_warning(tmp_path):
    import warnings

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError) as refused:
        warnings.simplefilter("always")
        load_sorter(path)
    assert str(refused.value).startswith(f"{path} is a pickle that a weights-only load refuses (Python objects, or")
    assert [str(warning.message) for warning in caught] == []


@pytest.mark.parametrize("file_name", [DEFAULT_SORTER_FILE, DEPTH2_SORTER_FILE])
def test_shipped_sorters_load_offline_and_meet_a_fidelity_floor(file_name):
    sorter = load_sorter(None if file_name == DEFAULT_SORTER_FILE else default_sorter_path(file_name))
    assert isinstance(sorter, ConvSorter) and sorter.max_length >= 256
    assert sorter.depth == (0 if file_name == DEFAULT_SORTER_FILE else 2)
    rows = fidelity_table(sorter, lengths=(3, 8, 100, 256), sequences_per_cell=8)
    per_length = summarize(rows, "length")
    assert all(metrics["spearman"] > 0.99 for metrics in per_length.values())
    assert per_length[100]["rank_error"] < 1.0


def test_load_sorter_is_frozen_in_eval_mode_unless_asked_to_train():
    frozen = load_sorter()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    trainable = load_sorter(trainable=True)
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    sorter = ConvSorter()
    with torch.no_grad():
        sorter.network[0].weight.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    torch.save(sorter_payload(sorter), path)  # as a diverged run or a damaged file would leave it
    with pytest.raises(CheckpointError, match="non-finite weights"):
        load_sorter(path)


def test_a_pretraining_run_folder_loads_its_sorter(tmp_path, capsys):
    import json

    from sodeep.cli import main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="neither a sorter checkpoint nor a pretraining run folder"):
        load_sorter(run)
    (run / "run.json").write_text(json.dumps({"command": "brainage tabular", "config": {}}))
    with pytest.raises(CheckpointError, match="holds a brainage tabular run, not a pretraining run"):
        load_sorter(run)
    (run / "run.json").write_text(json.dumps({"command": "pretrain", "config": {}}))
    with pytest.raises(
        CheckpointError, match="no checkpoint: .* stopped before its first checkpoint; run its pretraining again$"
    ):
        load_sorter(run)
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", str(run)])
    assert stopped.value.code == 2 and capsys.readouterr().err.endswith("run its pretraining again\n")
    # An --overwrite killed before training: the run it replaces waits in .sodeep-previous-run.
    (run / ".sodeep-previous-run").mkdir()
    save_sorter(ConvSorter(), tmp_path / "kept.pt")
    (tmp_path / "kept.pt").rename(run / ".sodeep-previous-run" / "sorter.pt")
    with pytest.raises(
        CheckpointError, match=r"the run it replaces is in .*\.sodeep-previous-run \(the next pretraining in"
    ):
        load_sorter(run)
    shutil.rmtree(run / ".sodeep-previous-run")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    # The advice names the Python function and the command, and resume=True as the caller spells it.
    with pytest.raises(CheckpointError, match="holds no sorter.pt: its pretraining run has not finished") as raised:
        load_sorter(run)
    assert "again with resume=True" in str(raised.value)
    assert "sodeep.pretraining.sorter_from_training_checkpoint" in str(raised.value)
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", str(run)])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "holds no sorter.pt" in error and "again with --resume" in error
    assert "`sodeep export`" in error
    sorter = ConvSorter(capacity=16)
    with pytest.raises(ValueError, match=r"sorter.pt is inside the run folder .*; save to a path outside it"):
        save_sorter(sorter, run / "sorter.pt")  # it would pass for the run's own
    assert not (run / "sorter.pt").exists()
    write_sorter_checkpoint(sorter, run / "sorter.pt")  # as the run writes it
    loaded = load_sorter(run)
    torch.testing.assert_close(loaded.state_dict(), sorter.state_dict())
    assert main(["evaluate", str(run), "--lengths", "5", "--sequences", "2"]) == 0
    assert "Spearman" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "bogus"] + ["mps"] * (not torch.backends.mps.is_available()))
def test_a_device_this_machine_lacks_is_named_not_blamed_on_the_file(device):
    with pytest.raises(ValueError, match=f"map_location='{device}' cannot be used on this machine: ") as raised:
        load_sorter(map_location=device)
    assert not isinstance(raised.value, CheckpointError) and "\n" not in str(raised.value)
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize(
    "location,error,message",
    [
        ("meta", ValueError, "map_location='meta' keeps no values"),
        ("hpu", ValueError, "map_location='hpu' cannot be used on this machine: "),
        (0, TypeError, "map_location must be a device .* got int 0"),
        (1.5, TypeError, "map_location must be a device .* got float 1.5"),
        (lambda storage, location: 1 / 0, ValueError, "failed on .*, which loads on the CPU: ZeroDivisionError"),
    ]
    + [({"cpu": "cuda"}, ValueError, "failed on .*, which loads on the CPU: RuntimeError")]
    * (not torch.cuda.is_available()),
)
def test_a_map_location_that_cannot_load_is_named_not_blamed_on_the_file(location, error, message):
    with pytest.raises(error, match=message) as raised:
        load_sorter(map_location=location)
    assert not isinstance(raised.value, CheckpointError) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "location", ["cpu:0", torch.device("cpu", 1), {"cpu": "cpu"}, lambda storage, location: storage]
)
def test_every_cpu_map_location_loads_the_sorter(location):
    loaded = load_sorter(map_location=location)
    torch.testing.assert_close(loaded.state_dict(), load_sorter().state_dict())


@pytest.mark.parametrize("content", [[1, 2], torch.zeros(3), {"a": torch.zeros(2)}])
def test_settings_on_a_file_of_another_kind_name_the_file(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="is not a sodeep sorter checkpoint"):
        load_sorter(path, softness=0.5)


def test_a_mapping_onto_the_meta_device_is_named():
    with pytest.raises(ValueError, match="put the weights on the meta device") as raised:
        load_sorter(map_location={"cpu": "meta"})
    assert not isinstance(raised.value, CheckpointError)


@pytest.mark.parametrize(
    "config,reason",
    [({"bogus": 1}, "unknown setting 'bogus'"), ("notadict", "config of type str"), ({"capacity": -5}, "capacity")],
)
def test_a_file_whose_config_does_not_build_is_a_checkpoint_error_naming_it(tmp_path, config, reason):
    path = tmp_path / "bad_config.pt"
    torch.save({**sorter_payload(load_sorter()), "config": config}, path)
    for settings in ({}, {"softness": 0.5}):
        with pytest.raises(CheckpointError, match=reason) as raised:
            load_sorter(path, **settings)
        assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    "settings,reason",
    [
        ({"softness": -1}, "softness must be a finite number > 0"),
        ({"band": 0}, "band must be >= 1, got 0"),
        ({"depth": 2}, "they change the shapes of its weights"),
    ],
)
def test_settings_that_do_not_fit_a_good_file_are_named_not_the_file(settings, reason):
    with pytest.raises(ValueError, match=f"sorter settings .* do not fit the sorter in .*: {reason}") as raised:
        load_sorter(**settings)
    assert not isinstance(raised.value, CheckpointError)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_sorter_comes_back_in_the_dtype_it_was_saved_in(tmp_path, dtype):
    sorter = ConvSorter(capacity=64, width=8, depth=2).to(dtype)
    loaded = load_sorter(save_sorter(sorter, tmp_path / "s.pt"))
    assert {weight.dtype for weight in loaded.state_dict().values()} == {dtype}
    scores = torch.randn(3, 40, dtype=torch.float64)
    torch.testing.assert_close(loaded(scores), sorter.eval()(scores), rtol=0, atol=0)


def test_a_compiled_sorter_saves_the_sorter_it_wraps(tmp_path):
    sorter = ConvSorter(capacity=64, width=8, depth=2)
    path = save_sorter(torch.compile(sorter), tmp_path / "s.pt")
    torch.testing.assert_close(load_sorter(path).state_dict(), sorter.state_dict())


def test_saving_a_module_that_is_not_a_sorter_is_named(tmp_path):
    with pytest.raises(TypeError, match="sorter must be a sodeep Sorter .*got Linear"):
        save_sorter(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
    assert not (tmp_path / "linear.pt").exists()


def test_a_flipped_bit_in_the_weights_is_a_checkpoint_error(tmp_path):
    import struct
    import zipfile

    path = save_sorter(load_sorter(), tmp_path / "sorter.pt")
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if "/data/" in info.filename and info.file_size >= 8)
    data = bytearray(path.read_bytes())
    # The member's bytes follow its local header (30 bytes, its name and its extra field).
    name_length, extra_length = struct.unpack_from("<HH", data, member.header_offset + 26)
    offset = member.header_offset + 30 + name_length + extra_length + 4
    data[offset] ^= 0x01
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged torch checkpoint: .* fails its checksum"):
        load_sorter(damaged)


def test_a_weight_member_marked_as_a_folder_is_a_checkpoint_error(tmp_path):
    # torch reads a member with the MS-DOS folder attribute as holding no bytes and leaves its
    # tensor's memory as it was, and the archive's checksums still pass.
    import struct
    import zipfile

    path = save_sorter(load_sorter(), tmp_path / "sorter.pt")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offset = archive.start_dir
    marked = None
    while data[offset : offset + 4] == b"PK\x01\x02":  # the central directory's entries
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        name = bytes(data[offset + 46 : offset + 46 + name_length]).decode()
        if marked is None and "/data/" in name:
            data[offset + 38] |= 0x10  # the external attributes' low byte
            marked = name
        offset += 46 + name_length + extra_length + comment_length
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with zipfile.ZipFile(damaged) as archive:
        assert archive.testzip() is None
    with pytest.raises(CheckpointError) as raised:
        load_sorter(damaged)
    assert str(raised.value) == f"{damaged} is a damaged torch checkpoint: {marked} is marked as a folder"


def test_a_checkpoint_repacked_with_folder_entries_loads_as_it_was(tmp_path):
    # Zip tools that repack an archive (zip -r) add entries for its folders, marked as folders.
    import zipfile

    path = save_sorter(load_sorter(), tmp_path / "sorter.pt")
    repacked = tmp_path / "repacked.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(repacked, "w") as target:
        names = source.namelist()
        for folder in sorted({name.rsplit("/", 1)[0] + "/" for name in names}):
            target.mkdir(folder)
        for name in names:
            target.writestr(source.getinfo(name), source.read(name))
    with zipfile.ZipFile(repacked) as archive:
        assert any(info.is_dir() and info.external_attr & 0x10 for info in archive.infolist())
    original, loaded = load_sorter(path), load_sorter(repacked)
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in original.state_dict().items())


def test_any_flipped_bit_in_the_archive_directory_is_a_checkpoint_error_or_loads(tmp_path):
    # A damaged central directory made zipfile raise NotImplementedError ("compression method"),
    # RuntimeError ("encrypted") or BadZipFile ("span multiple disks") past the checks.
    import zipfile

    from sodeep.checkpoints import read_weights_only
    from sodeep.sorters import ConvSorter

    path = save_sorter(ConvSorter(capacity=16), tmp_path / "sorter.pt")
    with zipfile.ZipFile(path) as archive:
        start = archive.start_dir
    data = path.read_bytes()
    damaged, outcomes = tmp_path / "damaged.pt", set()
    for offset in range(start, len(data)):
        flipped = bytearray(data)
        flipped[offset] ^= 1 << (offset % 8)
        damaged.write_bytes(bytes(flipped))
        try:
            read_weights_only(damaged)
            outcomes.add("loads")
        except CheckpointError:
            outcomes.add("refused")
    assert "refused" in outcomes


def test_saving_onto_a_folder_names_the_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a folder; give the path of a file"):
        save_sorter(load_sorter(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_sorter_replaces_a_sorter_checkpoint_or_an_empty_file_and_nothing_else(tmp_path):
    sorter = PairwiseSigmoidSorter(0.3)
    checkpoint = tmp_path / "sorter.pt"
    save_sorter(ConvSorter(capacity=8), checkpoint)
    save_sorter(sorter, checkpoint)
    assert isinstance(load_sorter(checkpoint), PairwiseSigmoidSorter)
    empty = tmp_path / "empty.pt"
    empty.touch()
    save_sorter(sorter, empty)
    assert isinstance(load_sorter(empty), PairwiseSigmoidSorter)
    for name, content in [("notes.txt", b"keep me"), ("weights.pt", None), ("truncated.pt", "half")]:
        other = tmp_path / name
        if content is None:
            torch.save({"weight": torch.ones(2)}, other)
        elif content == "half":
            other.write_bytes(checkpoint.read_bytes()[:100])
        else:
            other.write_bytes(content)
        before = other.read_bytes()
        with pytest.raises(ValueError, match=f"{name} exists and is not a sorter checkpoint; save to another path"):
            save_sorter(sorter, other)
        assert other.read_bytes() == before


def test_save_sorter_refuses_non_finite_weights(tmp_path):
    sorter = ConvSorter(capacity=8)
    with torch.no_grad():
        next(sorter.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite weights"):
        save_sorter(sorter, tmp_path / "nan.pt")
    assert not (tmp_path / "nan.pt").exists()


def test_an_undefined_spearman_is_null_in_json_and_a_dash_in_the_table(tmp_path, capsys):
    import json

    from sodeep.cli import main

    out = tmp_path / "fidelity.json"
    assert main(["evaluate", "--lengths", "2,3", "--sequences", "1", "--json", str(out)]) == 0
    table = capsys.readouterr().out

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    rows = json.loads(out.read_text(), parse_constant=refuse)
    undefined = [row for row in rows if row["spearman"] is None]
    assert undefined and all(row["family"] == "ties" for row in undefined)
    assert "| ties | - / 0.00 | - / 0.00 |" in table and "A Spearman of - is undefined" in table
    assert all(-1 <= row["spearman"] <= 1 for row in rows if row["spearman"] is not None)


def test_rowwise_spearman_stays_within_minus_one_and_one():
    from sodeep.metrics import rowwise_spearman

    torch.manual_seed(0)
    ranks = torch.rand(2000, 7).argsort(-1).float()
    for predicted in (ranks * 1.0000001 + 1e-3, -ranks * 3.3):
        values = rowwise_spearman(predicted, ranks)
        assert values.abs().max() <= 1 and torch.allclose(values.abs(), torch.ones(2000))


def test_constant_predictions_score_zero_and_huge_ones_do_not_overflow():
    from scipy.stats import pearsonr

    from sodeep.metrics import rowwise_spearman

    true = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    values = rowwise_spearman(torch.full((2, 4), 7.0), true)
    assert values[0] == 0 and torch.isnan(values[1])
    predicted = torch.tensor([[1e30, 3e30, 2e30, 4e30]])
    expected = pearsonr([1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0]).statistic
    torch.testing.assert_close(rowwise_spearman(predicted, true[:1]), torch.tensor([expected], dtype=torch.float32))


def test_rowwise_spearman_keeps_non_finite_predictions_nan_and_handles_the_float32_limit():
    from scipy.stats import pearsonr

    from sodeep.metrics import rowwise_spearman

    true = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    for bad in (float("nan"), float("inf")):
        assert torch.isnan(rowwise_spearman(torch.tensor([[1.0, bad, 3.0, 4.0]]), true)).all()
    huge = torch.tensor([[-3e38, -1e38, 1e38, 3e38]])
    expected = pearsonr([-3.0, -1.0, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0]).statistic
    for predicted, exact in ((huge, true), (true, huge)):
        torch.testing.assert_close(rowwise_spearman(predicted, exact), torch.tensor([expected], dtype=torch.float32))


def test_original_lstm_baseline_imports_as_the_128_unit_lstm_sorter(tmp_path):
    original = OriginalLSTMLargeSorter(length=12, hidden_size=128)
    path = tmp_path / "best_lstm.pth.tar"
    torch.save(
        {"state_dict": original.state_dict(), "args_dict": argparse.Namespace(model_type="lstm", seq_len=12)}, path
    )
    imported = import_original_checkpoint(path, trust_pickle=True)
    assert imported.hidden_size == 128
    x = torch.randn(3, 12)
    torch.testing.assert_close(imported(x), original.eval()(x))


def test_an_original_checkpoint_saved_from_data_parallel_imports_and_a_fractional_length_is_refused(tmp_path):
    original = OriginalLSTMLargeSorter(length=12, hidden_size=128)
    path = tmp_path / "best_lstm.pth.tar"
    wrapped = {f"module.{key}": value for key, value in original.state_dict().items()}  # nn.DataParallel's names
    torch.save({"state_dict": wrapped, "args_dict": argparse.Namespace(model_type="lstm", seq_len=12.0)}, path)
    x = torch.randn(3, 12)
    torch.testing.assert_close(import_original_checkpoint(path, trust_pickle=True)(x), original.eval()(x))
    for length in (12.7, True, "12"):
        torch.save({"state_dict": wrapped, "args_dict": argparse.Namespace(model_type="lstm", seq_len=length)}, path)
        with pytest.raises(CheckpointError, match=f"seq_len {length!r} does not make a lstm sorter"):
            import_original_checkpoint(path, trust_pickle=True)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", "truncated"])
def test_importing_an_unreadable_original_checkpoint_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "best.pth.tar"
    if content == "truncated":
        torch.save({"state_dict": {}, "args_dict": argparse.Namespace(model_type="cnn", seq_len=4)}, path)
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable original SoDeep checkpoint"):
        import_original_checkpoint(path, trust_pickle=True)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        import_original_checkpoint(tmp_path / "missing.pth.tar", trust_pickle=True)


@pytest.mark.parametrize("trainable", ["no", 0, None])
def test_trainable_must_be_a_bool(trainable):
    with pytest.raises(TypeError, match="trainable must be True or False"):
        load_sorter(trainable=trainable)


@pytest.mark.parametrize("n", [0, 1])
def test_rowwise_spearman_of_rows_too_short_to_correlate_is_nan(n):
    from sodeep.metrics import rowwise_spearman

    assert rowwise_spearman(torch.rand(3, n), torch.rand(3, n)).isnan().all()
    assert rowwise_spearman(torch.rand(0, n), torch.rand(0, n)).shape == (0,)


def test_original_checkpoints_with_odd_arguments_are_checkpoint_errors_and_imports_are_frozen(tmp_path):
    path = tmp_path / "best.pth.tar"
    original = OriginalCNNSorter(40)
    torch.save({"state_dict": original.state_dict(), "args_dict": {"model_type": "cnn", "seq_len": 40}}, path)
    imported = import_original_checkpoint(path, trust_pickle=True)  # args as a plain dict
    assert not imported.training and not any(p.requires_grad for p in imported.parameters())
    for arguments in (argparse.Namespace(model_type="cnn"), argparse.Namespace(model_type="cnn", seq_len=30)):
        torch.save({"state_dict": original.state_dict(), "args_dict": arguments}, path)
        with pytest.raises(CheckpointError, match="does not make a cnn sorter"):
            import_original_checkpoint(path, trust_pickle=True)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((3, 4), (4,)), "must have one shape, (B, n) or (n,), got (3, 4) and (4,)"),
        (((1, 4), (3, 4)), "must have one shape"),
        (((3, 4), (3, 5)), "must have one shape"),
        (((2, 3, 4), (2, 3, 4)), "must be (B, n) or (n,), got shape (2, 3, 4): rows of 4 are each .reshape(-1, 4)"),
        (((), ()), "must be (B, n) or (n,), got shape ()"),
    ],
)
def test_rank_metrics_refuse_pairs_of_other_shapes_rather_than_broadcast(shapes, message):
    from sodeep.metrics import mean_absolute_rank_error, rowwise_spearman

    for metric in (rowwise_spearman, mean_absolute_rank_error):
        with pytest.raises(ValueError) as refused:
            metric(torch.rand(shapes[0]), torch.rand(shapes[1]))
        assert message in str(refused.value)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_rank_metrics_refuse_values_that_are_not_real_numbers(dtype):
    from sodeep.metrics import mean_absolute_rank_error, rowwise_spearman

    ranks = torch.tensor([[1.0, 0.0, 1.0]])
    for metric in (rowwise_spearman, mean_absolute_rank_error):
        for pair in ((ranks.to(dtype), ranks), (ranks, ranks.to(dtype))):
            with pytest.raises(TypeError, match=f"must hold real numbers .*got {dtype}"):
                metric(*pair)
    integers = torch.tensor([[1, 0, 1]]), torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(rowwise_spearman(*integers), torch.tensor([-0.5]))
    low_precision = ranks.to(torch.float8_e4m3fn)
    for metric in (rowwise_spearman, mean_absolute_rank_error):
        with pytest.raises(TypeError, match="^predicted_ranks must be a float16, bfloat16, float32 or float64 tensor"):
            metric(low_precision, ranks)


@pytest.mark.parametrize("weights", [None, [1, 2], {"network.0.weight": 1.0}])
def test_a_checkpoint_without_a_dict_of_tensors_as_weights_says_so(tmp_path, weights):
    from sodeep.checkpoints import sorter_from_payload

    payload = torch.load(save_sorter(load_sorter(), tmp_path / "s.pt"), weights_only=True)
    if weights is None:
        del payload["state_dict"]
    else:
        payload["state_dict"] = weights
    with pytest.raises(CheckpointError, match=r"holds no weights \(its state_dict is"):
        sorter_from_payload(payload, "s.pt")


def test_metadata_must_be_a_dict_of_plain_json(tmp_path):
    with pytest.raises(TypeError, match="metadata must be a dict, got list"):
        save_sorter(load_sorter(), tmp_path / "s.pt", [1, 2])
    with pytest.raises(TypeError, match="metadata must be plain JSON .*Tensor is not JSON serializable"):
        save_sorter(load_sorter(), tmp_path / "s.pt", {"loss": torch.tensor(1.0)})
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("metadata", [{1: "a"}, {"runs": [{"seeds": {None: 0}}]}, {"cells": ({(2, 3): 0.5},)}])
def test_metadata_keys_that_json_would_turn_into_text_are_refused(tmp_path, metadata):
    with pytest.raises(TypeError, match=r"metadata keys must be text, got .* write it as '"):
        save_sorter(load_sorter(), tmp_path / "s.pt", metadata)
    assert not (tmp_path / "s.pt").exists()


def test_metadata_inside_itself_is_refused_as_json_refuses_it(tmp_path):
    looped, listed = {}, []
    looped["self"] = looped
    listed.append(listed)
    for metadata in (looped, {"runs": listed}):
        with pytest.raises(TypeError, match="metadata must be plain JSON .*Circular reference detected"):
            save_sorter(load_sorter(), tmp_path / "s.pt", metadata)


def test_metadata_loads_back_as_it_was_saved(tmp_path):
    metadata = {"seed": 3, "lengths": [2, 256], "validation": {"val/spearman": 0.99, "best": float("inf")}}
    assert load_sorter(save_sorter(load_sorter(), tmp_path / "s.pt", metadata)).checkpoint_metadata == metadata


@pytest.mark.parametrize("path", [123, 1.5, ["sorter.pt"]])
def test_a_path_of_the_wrong_type_is_refused_naming_the_argument(path):
    with pytest.raises(TypeError) as raised:
        load_sorter(path)
    assert str(raised.value) == f"path must be a checkpoint file, a run folder or None, got {path!r}"


def test_fidelity_table_leaves_the_sorter_in_the_mode_it_was_in():
    sorter = load_sorter(trainable=True)
    assert sorter.training
    fidelity_table(sorter, lengths=(5,), families=("uniform",), sequences_per_cell=2)
    assert sorter.training
    fidelity_table(sorter.eval(), lengths=(5,), families=("uniform",), sequences_per_cell=2)
    assert not sorter.training


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"sequences_per_cell": 2.5}, TypeError, "sequences_per_cell must be an integer, got float 2.5"),
        ({"sequences_per_cell": True}, TypeError, "sequences_per_cell must be an integer, got bool True"),
        ({"sequences_per_cell": 0}, ValueError, "sequences_per_cell must be >= 1, got 0"),
        ({"families": "uniform"}, TypeError, "families must be a list of names, e.g. ['uniform'], got str 'uniform'"),
        ({"lengths": 5}, TypeError, "lengths must be a list of integers, e.g. [5, 100], got int 5"),
        ({"lengths": []}, ValueError, "lengths must name at least one length, e.g. [5, 100]"),
        ({"lengths": [5.0]}, TypeError, "each of lengths must be an integer, got float 5.0"),
    ],
)
def test_fidelity_table_refuses_settings_it_would_misread(settings, error, message):
    with pytest.raises(error) as raised:
        fidelity_table(load_sorter(), **{"lengths": (5,), **settings})
    assert str(raised.value) == message


def test_fidelity_table_takes_a_function_of_scores_and_checks_what_it_returns():
    import numpy as np

    from sodeep import rank

    rows = fidelity_table(rank, lengths=np.array([1, 5, 100]), families=["uniform", "cauchy"], sequences_per_cell=3)
    # n = 1 has no rank correlation: a function, like a sorter, starts at n = 2.
    assert [(row.family, row.length) for row in rows] == [(f, n) for f in ("uniform", "cauchy") for n in (5, 100)]
    assert all(row.l1 == 0 and row.rank_error == 0 and row.spearman == pytest.approx(1) for row in rows)
    reversed_rows = fidelity_table(
        lambda scores: rank(-scores), lengths=[5], families=["uniform"], sequences_per_cell=3
    )
    assert reversed_rows[0].spearman == pytest.approx(-1)
    with pytest.raises(ValueError, match=r"must return ranks of the scores' shape \(2, 5\), got \(2, 2\)"):
        fidelity_table(lambda scores: scores[:, :2], lengths=[5], sequences_per_cell=2)
    with pytest.raises(TypeError, match="sorter must be a Sorter or a function of scores, got int"):
        fidelity_table(3, lengths=[5])
    with pytest.raises(TypeError, match=r"sorter is the class PairwiseSigmoidSorter, not a sorter: pass an instance"):
        fidelity_table(PairwiseSigmoidSorter, lengths=[5])
    with pytest.raises(ValueError, match="by must be 'family' or 'length', got 'n'"):
        summarize(rows, "n")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_fidelity_table_refuses_ranks_that_are_not_finite_where_a_mean_would_hide_them(bad):
    from sodeep import rank

    def some_bad(scores):
        ranks = rank(scores)
        ranks[::2, 0] = bad  # half the rows
        return ranks

    with pytest.raises(ValueError, match="the sorter returned NaN or infinite ranks for the normal scores at n=5"):
        fidelity_table(some_bad, lengths=[5], families=["normal"], sequences_per_cell=4)


def test_the_rank_error_refuses_positions_it_would_count_n_times_over():
    from sodeep.metrics import mean_absolute_rank_error

    positions = torch.tensor([[1, 2, 3]])
    with pytest.raises(TypeError, match="predicted_ranks must be normalized ranks, a floating-point tensor .*int64"):
        mean_absolute_rank_error(positions, positions.float() / 3)
    with pytest.raises(TypeError, match="true_ranks must be normalized ranks"):
        mean_absolute_rank_error(positions.float() / 3, positions)
    assert mean_absolute_rank_error(positions / 3, torch.tensor([[2, 1, 3]]) / 3).tolist() == [pytest.approx(2 / 3)]
    from sodeep import rank

    scores, predicted = torch.tensor([[3.0, 1.0, 2.0, 0.0]]), torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    unnormalized = {"normalized": False}
    with pytest.raises(ValueError, match=r"^true_ranks must be normalized ranks, at most 1 .*: divide positions by n$"):
        mean_absolute_rank_error(rank(predicted, **unnormalized), rank(scores, **unnormalized))
    assert mean_absolute_rank_error(rank(predicted), rank(scores)).tolist() == [1.0]
    with_nan = torch.tensor([[float("nan"), 0.5]])
    assert mean_absolute_rank_error(with_nan, with_nan).isnan().all()  # NaN is the result's to show


def test_a_setting_of_another_architecture_is_named_so_not_matched_to_a_lookalike(tmp_path):
    from sodeep.sorters import build_sorter

    path = tmp_path / "pairwise.pt"
    save_sorter(PairwiseSigmoidSorter(0.3), path)
    with pytest.raises(ValueError) as refused:
        load_sorter(path, temperature_floor=0.1)  # the floor is ConvSorter's, not the pairwise temperature
    assert "unknown setting 'temperature_floor' (a setting of 'conv' sorters) for sorter 'pairwise_sigmoid'" in str(
        refused.value
    )
    assert "did you mean" not in str(refused.value)
    with pytest.raises(ValueError, match=r"unknown setting 'temperatur' \(did you mean 'temperature'\?\)"):
        build_sorter("pairwise_sigmoid", temperatur=0.1)
    with pytest.raises(ValueError, match=r"unknown sorter settings 'softness' \(a setting of 'conv' sorters\); "):
        load_sorter(path, softness=0.1)
    with pytest.raises(ValueError, match=r"'temperature' \(a setting of 'pairwise_sigmoid', 'neuralsort', 'softsort' "):
        load_sorter(temperature=0.1)


@pytest.mark.parametrize("drop", [["config"], ["softness"], ["softness", "band"]])
def test_a_file_that_does_not_record_every_setting_is_refused_not_loaded_with_defaults(tmp_path, drop):
    """A setting left out would take its default (softness 0.5 ranks the shipped weights 0.1
    positions off): the weights alone do not say how the sorter was built."""
    payload = sorter_payload(load_sorter())
    if drop == ["config"]:
        del payload["config"]
        reason = "holds no config"
    else:
        payload["config"] = {key: value for key, value in payload["config"].items() if key not in drop}
        reason = f"does not record the settings? {', '.join(sorted(drop))} of its 'conv' sorter"
    path = tmp_path / "partial.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=reason) as raised:
        load_sorter(path)
    assert str(path) in str(raised.value)


def test_a_file_saved_with_meta_weights_is_named_as_the_cause_not_the_map_location(tmp_path):
    payload = sorter_payload(load_sorter())
    payload["state_dict"] = {key: value.to("meta") for key, value in payload["state_dict"].items()}
    path = tmp_path / "meta.pt"
    torch.save(payload, path)
    for map_location in (None, "cpu", {"cuda:0": "cpu"}, lambda storage, location: storage):
        with pytest.raises(CheckpointError, match=r"meta.pt holds its weights on the meta device"):
            load_sorter(path, map_location=map_location)


def test_settings_that_feed_a_trained_network_are_not_replaced():
    """The hidden layers of a depth-2 sorter read its activation and log n / log capacity."""
    path = default_sorter_path(DEPTH2_SORTER_FILE)
    recorded = load_sorter(path).config()
    for settings in ({"activation": "gelu" if recorded["activation"] == "relu" else "relu"}, {"capacity": 10}):
        with pytest.raises(ValueError, match=r"feed its trained network \(depth 2\)"):
            load_sorter(path, **settings)
    assert load_sorter(path, capacity=recorded["capacity"], softness=0.3).softness == 0.3  # the same value, or others
    assert load_sorter(capacity=10).max_length == 10  # depth 0: no hidden layer reads them
