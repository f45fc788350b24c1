"""Fidelity figures, benchmark results and sorter files at their edges: a failing ranker is not
averaged away, results are strict JSON, a resume keeps what began the run, outputs stay out of
run folders, and edited or misplaced checkpoints are named."""

import json
import math

import pytest
import torch
from scipy import stats

from sodeep import load_sorter, save_sorter
from sodeep.checkpoints import CheckpointError
from sodeep.cli import main
from sodeep.evaluation import fidelity_table
from sodeep.metrics import mean_spearman
from sodeep.sorters import ConvSorter


def _strict_json(text):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_mean_spearman_matches_scipy_over_the_rows_where_it_is_defined():
    generator = torch.Generator().manual_seed(0)
    predicted = torch.rand(6, 9, generator=generator, dtype=torch.float64)
    exact = torch.randint(0, 4, (6, 9), generator=generator).double()
    exact[2] = 1.0  # all tied: Spearman is undefined there and left out
    # Spearman of rank vectors is their Pearson correlation; an all-tied row has none.
    expected = [
        stats.pearsonr(p, e).statistic if e.std() else math.nan for p, e in zip(predicted.numpy(), exact.numpy())
    ]
    defined = [value for value in expected if not math.isnan(value)]
    assert len(defined) == 5
    assert mean_spearman(predicted, exact).item() == pytest.approx(sum(defined) / len(defined), abs=1e-12)
    failing = predicted.clone()
    failing[0, 3] = math.nan  # a ranker that fails on one defined row: the mean says so
    assert math.isnan(mean_spearman(failing, exact).item())
    assert math.isnan(mean_spearman(predicted[2:3], exact[2:3]).item())  # no row defined


def test_mean_spearman_is_nan_for_non_finite_exact_ranks_and_holds_many_half_precision_rows():
    from sodeep.metrics import rowwise_spearman

    predicted = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    exact = torch.tensor([[1.0, 2.0, 3.0], [1.0, math.nan, 3.0]])
    assert math.isnan(mean_spearman(predicted, exact).item())
    rows = torch.arange(4.0).repeat(70_000, 1).half()  # a float16 sum of 70,000 ones overflows
    mean = mean_spearman(rows, rows)
    assert mean.dtype == torch.float16 and mean.item() == 1.0
    constant = torch.full((1, 3), 0.2, requires_grad=True)  # no order: 0, and no NaN gradient
    rowwise_spearman(constant, torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert torch.equal(constant.grad, torch.zeros(1, 3))


def test_the_benchmark_fidelity_of_a_ranker_that_fails_on_one_row_is_not_perfect():
    from sodeep.benchmark.fidelity import run_fidelity
    from sodeep.benchmark.rankers import Ranker
    from sodeep.ranks import rank

    def one_row_fails(scores):
        ranks = rank(scores)
        return torch.cat([torch.full_like(ranks[:1], math.nan), ranks[1:]])

    rows, _ = run_fidelity([Ranker("broken", "", "rank", one_row_fails)], [8], 4, progress=lambda line: None)
    assert rows and all(math.isnan(row["spearman"]) and math.isnan(row["rank_error"]) for row in rows)


def test_fidelity_rows_are_the_same_whether_a_cell_is_ranked_in_one_call_or_many(monkeypatch):
    import sodeep.evaluation as evaluation

    sorter, calls = load_sorter(), []

    def counted(scores):
        calls.append(scores.shape[0])
        return sorter(scores)

    whole = fidelity_table(counted, lengths=[5, 40], families=["normal", "ties"], sequences_per_cell=10)
    assert max(calls) == 10
    calls.clear()
    monkeypatch.setattr(evaluation, "ELEMENTS_PER_CALL", 120)  # 3 rows of n = 40 per call, 24 of n = 5
    split = fidelity_table(counted, lengths=[5, 40], families=["normal", "ties"], sequences_per_cell=10)
    assert max(calls) == 10 and 3 in calls and len(calls) == 2 * (1 + 4)
    for one, many in zip(whole, split):
        assert (one.family, one.length) == (many.family, many.length)
        assert many.spearman == pytest.approx(one.spearman, abs=1e-7)
        assert many.rank_error == pytest.approx(one.rank_error, abs=1e-6)


def test_held_out_cells_are_made_as_they_are_read():
    from sodeep.evaluation import held_out_cells, held_out_set

    cells = held_out_cells(range(2, 20000), ["normal"], 1)  # 19,998 cells: none made yet
    family, length, scores, ranks = next(cells)
    assert (family, length, scores.shape) == ("normal", 2, (1, 2))
    with pytest.raises(ValueError, match="families"):
        held_out_cells([5], ["no such family"])  # the settings are checked at once
    first = held_out_set([5, 7], ["ties"], 3)
    again = list(held_out_cells([5, 7], ["ties"], 3))
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[3], b[3]) for a, b in zip(first, again))


def test_a_familys_held_out_cells_do_not_depend_on_the_families_beside_it():
    from sodeep.evaluation import held_out_set

    alone = {(family, n): scores for family, n, scores, _ in held_out_set([5, 100], ["ties"], 4)}
    among = {(family, n): scores for family, n, scores, _ in held_out_set([5, 100], ["cauchy", "ties", "uniform"], 4)}
    assert all(torch.equal(alone[key], among[key]) for key in alone)
    every = {(family, n): scores for family, n, scores, _ in held_out_set([5, 100], None, 4)}
    assert all(torch.equal(every[key], among[key]) for key in among)


TINY = dict(
    seeds=(0,),
    workers=1,
    speed_lengths=(8, 300),
    speed_batches=(2,),
    speed_rounds=1,
    speed_block_seconds=0.0001,
    speed_max_call_seconds=30.0,
    fidelity_lengths=(8,),
    fidelity_sequences=4,
)


def test_results_are_strict_json_and_undefined_numbers_come_back_as_nan_on_resume(tmp_path, monkeypatch):
    import sodeep.benchmark.fidelity as fidelity
    from sodeep.benchmark.config import BenchConfig
    from sodeep.benchmark.run import run_benchmark

    real = fidelity.mean_spearman
    monkeypatch.setattr(fidelity, "mean_spearman", lambda predicted, exact: real(predicted, exact) * math.nan)
    config = BenchConfig(out=str(tmp_path / "bench"), parts=("fidelity",), **TINY)
    run_benchmark(config, command="first", progress=lambda line: None)
    results = _strict_json((tmp_path / "bench" / "results.json").read_text())
    assert results["fidelity"] and all(row["spearman"] is None for row in results["fidelity"])
    assert all(isinstance(row["rank_error"], float) for row in results["fidelity"])
    monkeypatch.setattr(fidelity, "mean_spearman", real)
    kept = run_benchmark(config, command="again", progress=lambda line: None, resume=True)
    assert all(math.isnan(row["spearman"]) for row in kept["fidelity"])  # kept, as NaN again


def test_a_resume_keeps_the_command_and_hardware_that_began_the_run_and_adds_its_own(tmp_path, monkeypatch):
    import sodeep.benchmark.run as run
    from sodeep.benchmark.config import BenchConfig

    out = tmp_path / "bench"
    config = BenchConfig(out=str(out), parts=("fidelity", "speed"), **TINY)
    original_part = run._run_part

    def stop_at_speed(part, *args, **kwargs):
        if part == "speed":
            raise KeyboardInterrupt
        return original_part(part, *args, **kwargs)

    monkeypatch.setattr(run, "_run_part", stop_at_speed)
    with pytest.raises(KeyboardInterrupt):
        run.run_benchmark(config, command="sodeep bench --first", progress=lambda line: None)
    monkeypatch.setattr(run, "_run_part", original_part)
    monkeypatch.setattr(run, "hardware", lambda: "another machine")
    # The same benchmark by another path to its folder, the parts named in another order.
    again = BenchConfig(out=f"{tmp_path}/./bench/", parts=("speed", "fidelity"), **TINY)
    results = run.run_benchmark(again, command="sodeep bench --resume", progress=lambda line: None, resume=True)
    written = _strict_json((out / "results.json").read_text())
    assert written["command"] == "sodeep bench --first" and written["hardware"] != "another machine"
    assert written["config"] == json.loads(json.dumps(config.as_dict()))  # that of the command kept
    assert written["resumed"] == [
        {"command": "sodeep bench --resume", "hardware": "another machine", "parts": ["speed"]}
    ]
    assert results["resumed"] == written["resumed"]
    text = (out / "results.md").read_text()
    assert "Command: `sodeep bench --first`" in text
    assert "Resumed with `sodeep bench --resume` on another machine: speed" in text
    # A resume with nothing left to run adds nothing.
    run.run_benchmark(config, command="sodeep bench --resume", progress=lambda line: None, resume=True)
    assert len(_strict_json((out / "results.json").read_text())["resumed"]) == 1


def test_speed_cells_left_out_name_their_mode_once_each(tmp_path, monkeypatch):
    from sodeep.benchmark.rankers import Ranker
    from sodeep.benchmark.speed import run_speed

    only_short = Ranker("short", "", "rank", lambda scores: scores.softmax(-1), lengths=(2, 10))
    _, skipped = run_speed([only_short], [8, 300], [2], 1, 0.0001, 30.0, float("inf"), lambda line: None)
    assert sorted(row["mode"] for row in skipped) == ["forward", "forward+backward"]
    assert len({json.dumps(row, sort_keys=True) for row in skipped}) == len(skipped)


def test_a_foreign_results_json_is_named_first(tmp_path):
    from sodeep.benchmark.run import claim_output_folder

    for name in ("bench_fidelity.png", "bench_speed.png", "bench_sorting.png", "results.md"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "results.json").write_text('{"schema": "x"}')
    for overwrite, resume in ((False, True), (True, False)):
        with pytest.raises(ValueError, match=r"results.json is not a sodeep benchmark's results \(no schema"):
            claim_output_folder(tmp_path, overwrite=overwrite, resume=resume)
    assert (tmp_path / "results.json").read_text() == '{"schema": "x"}'


def _run_folder(path):
    path.mkdir(parents=True)
    (path / "run.json").write_text('{"command": "pretrain", "config": {}}')
    return path


def _one_line_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "Traceback" not in error, error
    return error


def test_outputs_inside_a_run_folder_are_refused(tmp_path, capsys):
    run = _run_folder(tmp_path / "runs" / "a")
    before = sorted(run.rglob("*"))
    error = _one_line_error(["evaluate", "--lengths", "5", "--sequences", "2", "--json", str(run / "f.json")], capsys)
    assert f"--json: {run / 'f.json'} is inside the run folder {run.resolve()}" in error
    error = _one_line_error(["evaluate", "--lengths", "5", "--out", str(run / "tables" / "f.md")], capsys)
    assert f"is inside the run folder {run.resolve()}" in error
    error = _one_line_error(["bench", "--quick", "--parts", "fidelity", "--out", str(run / "bench")], capsys)
    assert f"is inside the run folder {run.resolve()}" in error
    error = _one_line_error(["pretrain", "--steps", "2", "--out", str(run / "nested")], capsys)
    assert f"is inside the run folder {run.resolve()}, whose overwrite would delete it" in error
    # A link that leads into the run folder (to a folder or file there, or to nothing there yet).
    (run / "inner").mkdir()
    (tmp_path / "to-inner").symlink_to(run / "inner")
    (tmp_path / "to-new.json").symlink_to(run / "new.json")
    before = sorted(run.rglob("*"))
    error = _one_line_error(["pretrain", "--steps", "2", "--out", str(tmp_path / "to-inner")], capsys)
    assert f"{tmp_path / 'to-inner'} is inside the run folder {run.resolve()}, whose overwrite would delete it" in error
    error = _one_line_error(
        ["evaluate", "--lengths", "5", "--sequences", "2", "--json", str(tmp_path / "to-new.json")], capsys
    )
    assert f"is inside the run folder {run.resolve()}" in error
    assert sorted(run.rglob("*")) == before


def test_a_pretraining_checkpoint_given_as_a_sorter_says_how_to_export_it(tmp_path, capsys):
    sorter = ConvSorter()
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "hyper_parameters": {"architecture": sorter.architecture, "sorter_config": sorter.config()},
            "state_dict": {f"sorter.{name}": value for name, value in sorter.state_dict().items()},
        },
        path,
    )
    with pytest.raises(CheckpointError, match=rf"training checkpoint of a pretraining run.*sodeep export {path} "):
        load_sorter(path)
    assert "sodeep export" in _one_line_error(["evaluate", str(path)], capsys)


def _edited(tmp_path, edit):
    path = tmp_path / "sorter.pt"
    save_sorter(load_sorter(), path)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["state_dict"].update({k: v.round().long() for k, v in p["state_dict"].items()}), "wrong kind"),
        (lambda p: p.update(metadata=[1, 2]), "metadata of type list"),
        (lambda p: p.update(version=True), "checkpoint version True"),
        (lambda p: p.update(version=1.0), "checkpoint version 1.0"),
    ],
    ids=["integer weights", "metadata not a dict", "version True", "version 1.0"],
)
def test_edited_checkpoints_are_refused(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        load_sorter(_edited(tmp_path, edit))


def test_a_long_evaluation_says_how_far_it_is(capsys):
    from sodeep.cli import ProgressEvery

    calls = []
    fidelity_table(
        lambda scores: scores, lengths=[5, 6], families=["normal", "ties"], progress=lambda *done: calls.append(done)
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    ticks = iter([0.0, 6.0, 12.0, 18.0, 24.0, 30.0])  # 6 s per cell
    progress = ProgressEvery(10.0, "evaluate", clock=lambda: next(ticks))
    for done in range(1, 6):
        progress(done, 5)
    assert capsys.readouterr().err.splitlines() == ["evaluate: 2 of 5 cells", "evaluate: 4 of 5 cells"]


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_fidelity_refuses_ranks_that_are_not_real_floating_point(dtype):
    from sodeep.ranks import rank

    def positions(scores):
        return (rank(scores) * scores.shape[-1]).to(dtype)

    with pytest.raises(ValueError, match=f"must return normalized ranks, a floating-point tensor .*got {dtype}"):
        fidelity_table(positions, lengths=[5], families=["normal"], sequences_per_cell=2)


@pytest.mark.parametrize(("separator", "escaped"), [("\n", "\\n"), ("\x0c", "\\x0c"), ("\u2028", "\\u2028")])
def test_an_evaluation_of_a_sorter_whose_path_holds_a_line_break_can_be_written_again(
    tmp_path, monkeypatch, separator, escaped
):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / f"a{separator}b"
    folder.mkdir()
    save_sorter(load_sorter(), folder / "sorter.pt")
    argv = ["evaluate", str(folder / "sorter.pt"), "--lengths", "3", "--sequences", "1", "--out", "table.md"]
    assert main(argv) == 0
    title = (tmp_path / "table.md").read_text().splitlines()[0]
    assert title == f"### {tmp_path}/a{escaped}b/sorter.pt"
    assert main(argv) == 0  # the table it wrote is recognised as one, and replaced


def test_default_lengths_beyond_a_small_sorter_are_named_as_left_out(capsys):
    from sodeep.cli import main

    assert main(["evaluate", "--architecture", "conv", "--sorter", '{"capacity": 64}', "--sequences", "1"]) == 0
    printed = capsys.readouterr()
    assert (
        "sodeep evaluate: the default lengths 100,128,256 are outside the sorter's range 2..64: left out" in printed.err
    )
    assert "| family | n=2 | n=3 | n=5 | n=8 | n=16 | n=32 | n=64 |" in printed.out


def test_an_evaluation_replaces_only_what_an_evaluation_wrote_whole(tmp_path, capsys):
    """A table or rows file that an evaluation wrote is replaced, with a line saying so; one with
    the user's own lines or rows added is the user's, and refused, left as it was."""
    table, rows = tmp_path / "table.md", tmp_path / "rows.json"
    argv = ["evaluate", "--lengths", "5", "--sequences", "2", "--out", str(table), "--json", str(rows)]
    assert main(argv) == 0
    assert "replaced" not in capsys.readouterr().err  # nothing was there to replace
    assert main(argv) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"sodeep evaluate: replaced the table an earlier evaluation wrote in {table}",
        f"sodeep evaluate: replaced the rows an earlier evaluation wrote in {rows}",
    ]
    written = table.read_text()
    table.write_text(written + "\n\n")  # blank lines an editor added change nothing
    assert main(argv) == 0
    assert "replaced the table" in capsys.readouterr().err
    lines = written.splitlines()
    mean_row = next(index for index, line in enumerate(lines) if line.startswith("| **mean** |"))
    last_family = lines[mean_row - 1]
    annotated = [
        written + "\nMy notes: compare with the CNN.\n",
        "\n".join([*lines[:mean_row], "| torchsort (my run) | 0.9712 / 0.31 |", *lines[mean_row:]]) + "\n",
        written.replace(" |\n| **mean**", " (good!) |\n| **mean**"),
        written.replace(last_family, last_family[: last_family.index(" | ")] + " |  |"),  # a cell emptied
        written.replace(last_family + "\n", ""),  # a family's row removed
        written.replace("worst cell: ", "worst cell: cauchy!"),
    ]
    for text in annotated:
        table.write_text(text)
        with pytest.raises(SystemExit):
            main(argv)
        assert f"--out: {table} exists and is not a fidelity table" in capsys.readouterr().err
        assert table.read_text() == text
    table.unlink()
    evaluated = json.loads(rows.read_text())
    row = {key: evaluated[0][key] for key in ("l1", "spearman", "rank_error")}
    edited = [
        [*evaluated, {"family": "mine", "length": 7, "spearman": 0.5, "note": "by hand"}],
        [*evaluated, {"sorter": "torchsort, my run", "family": "uniform", "length": 9, **row}],
        [*evaluated, evaluated[0]],  # the same cell twice
        evaluated[1:],  # a row removed
        [{**evaluated[0], "spearman": "checked by hand"}, *evaluated[1:]],
    ]
    for rows_of_the_user in edited:
        rows.write_text(json.dumps(rows_of_the_user))
        with pytest.raises(SystemExit):
            main(argv)
        assert f"--json: {rows} exists and is not fidelity rows" in capsys.readouterr().err
        assert json.loads(rows.read_text()) == rows_of_the_user
    table.write_text("\n")
    rows.write_text("[ ]\n")  # blank, or an empty list as a placeholder: replaced without a word
    assert main(argv[:-2]) == 0 and main(argv[:-4] + argv[-2:]) == 0
    assert "replaced" not in capsys.readouterr().err


def test_a_table_with_undefined_cells_is_recognised_as_an_evaluations():
    from sodeep.evaluation import FidelityRow, format_fidelity_markdown, is_fidelity_table
    from sodeep.synthetic import FAMILIES

    rows = [FidelityRow(family, 5, 0.01, math.nan if family == "ties" else 0.99, 0.1) for family in FAMILIES]
    text = format_fidelity_markdown(rows, title="mine")
    assert text.splitlines()[-1].startswith("A Spearman of - is undefined")
    assert is_fidelity_table(text + "\n") and is_fidelity_table(format_fidelity_markdown(rows))
    assert not is_fidelity_table(text + "\nmore\n") and not is_fidelity_table("\n".join(text.splitlines()[:4]))


def test_an_untrained_sorters_evaluation_is_the_same_on_every_run(capsys):
    argv = ["evaluate", "--architecture", "original_cnn", "--lengths", "100", "--sequences", "2"]
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    tables = []
    for _ in range(2):
        assert main(argv) == 0
        tables.append(capsys.readouterr().out)
        torch.rand(3)  # another global state before the second run
    assert tables[0] == tables[1]
    assert ", weights of seed 0" in tables[0].splitlines()[0]
    torch.manual_seed(123)
    assert main(argv) == 0  # the caller's random state is left as it was
    assert torch.equal(torch.random.get_rng_state(), state)
