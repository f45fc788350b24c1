"""Smoke tests of the sorter benchmark scripts in experiments/benchmarks/, on tiny sizes, and
checks of their measuring functions against independent references."""

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

from sodeep.benchmark.rankers import Ranker
from sodeep.losses import SpearmanLoss
from sodeep.ranks import rank
from sodeep.sorters import PairwiseSigmoidSorter

SCRIPTS = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def descent():
    return load_script("bench_descent")


@pytest.fixture(scope="module")
def gpu():
    return load_script("bench_sorter_gpu")


@pytest.fixture(scope="module")
def fidelity():
    return load_script("bench_sorter_fidelity_large_n")


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the markdown tables in ``text``, as lists of cells."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| ranker") and not line.startswith("| scores")
    ]


# bench_descent


def test_draw_losses_are_the_spearman_loss_of_each_draw(descent):
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randn(3, 2, 6, generator=generator, dtype=torch.float64)
    targets = torch.randn(3, 2, 6, generator=generator, dtype=torch.float64)
    sorter = PairwiseSigmoidSorter(0.1)
    losses = descent.draw_losses(sorter, predictions, rank(targets))
    expected = torch.stack([SpearmanLoss(sorter=sorter)(p, t) for p, t in zip(predictions, targets)])
    torch.testing.assert_close(losses, expected, rtol=1e-12, atol=0)


def test_tied_scores_are_groups_of_equal_values(descent):
    scores = descent.DISTRIBUTIONS["tied"](torch.Generator().manual_seed(0), (3, 40))
    assert scores.dtype == torch.float64
    assert all(2 <= len(row.unique()) <= 4 for row in scores)  # about n / 10 distinct values a row


def test_a_smooth_ranker_descends_and_matches_finite_differences(descent):
    # A smooth map with an exact autograd gradient: every small step against it goes down.
    smooth = Ranker("smooth", "", "rank", lambda scores: torch.sigmoid(scores) / scores.shape[-1])
    row = descent.descent_cell(
        smooth,
        "normal",
        5,
        draws=20,
        batch=2,
        steps=[1e-4],
        directions=3,
        fd_step=1e-6,
        correlation=0.5,
        dtype=torch.float64,
        seed=0,
    )
    assert row.down["0.0001"] == 1.0 and row.up["0.0001"] == 0.0 and row.zero_gradient == 0.0
    assert row.cosine_p05 > 1 - 1e-6 and abs(row.slope_ratio_p05 - 1) < 1e-6


def test_flags_typed_beside_quick_keep_their_values(descent, fidelity, gpu, tmp_path):
    out = tmp_path / "descent.json"
    descent.main(["--quick", "--draws", "2", "--lengths", "5", "--rankers", "pairwise", "--temperatures", "0.1"]
                 + ["--distributions", "normal", "--json", str(out)])  # fmt: skip
    settings = json.loads(out.read_text())["settings"]
    assert (settings["draws"], settings["lengths"], settings["directions"]) == (2, [5], 4)  # directions: --quick's
    out = tmp_path / "fidelity.json"  # a file of its own: one script does not replace another's results
    fidelity.main(["--quick", "--lengths", "32", "--architecture", "pairwise_sigmoid", "--sets", "", "--families",
                   "normal", "--json", str(out)])  # fmt: skip
    settings = json.loads(out.read_text())["settings"]
    assert (settings["lengths"], settings["sequences"], settings["repeats"]) == ("32", 4, 1)
    arguments = gpu.parse_with_quick(gpu.build_parser(), ["--quick", "--device", "cpu", "--lengths", "50"], gpu.QUICK)
    assert (arguments.lengths, arguments.batches, arguments.rounds) == ([50], [4], 3)


def test_descent_main_prints_a_row_per_cell_and_writes_json(descent, tmp_path):
    out = tmp_path / "descent.json"
    text = descent.main(
        ["--draws", "3", "--lengths", "5", "--directions", "2", "--rankers", "sodeep,pairwise"]
        + ["--floors", "0", "--temperatures", "0.1", "--distributions", "normal,clustered", "--json", str(out)]
    )
    rows = table_rows(text)
    assert [row[:3] for row in rows] == [
        ["sodeep (shipped) floor=0", "normal", "5"],
        ["sodeep (shipped) floor=0", "clustered", "5"],
        ["pairwise_sigmoid T=0.1", "normal", "5"],
        ["pairwise_sigmoid T=0.1", "clustered", "5"],
    ]
    payload = json.loads(out.read_text())
    for row in payload["rows"]:
        for eps in row["down"]:
            assert math.isclose(row["down"][eps] + row["up"][eps] + row["same"][eps], 1.0)


def test_the_sorter_band_option_compares_every_pair_softly_or_as_many_as_given(descent):
    (every,), _ = descent.build_rankers([0.1], [], [], ["sodeep"], None)
    (wide,), _ = descent.build_rankers([0.1], [], [], ["sodeep"], 32)
    (shipped,), _ = descent.build_rankers([0.1], [], [], ["sodeep"])
    assert (every.rank.band, wide.rank.band, shipped.rank.band) == (None, 32, 8)
    assert (every.label, shipped.label) == ("sodeep (shipped) floor=0.1, band=all", "sodeep (shipped) floor=0.1")
    assert every.rank.temperature_floor == wide.rank.temperature_floor == 0.1
    # Scores packed closer than the floor: the shipped band compares values beyond 8 distinct
    # values away exactly, every pair softly compares them all at the floor's temperature.
    scores = torch.arange(40, dtype=torch.float64).mul(0.01).unsqueeze(0)
    exact = rank(scores)
    assert (every.rank(scores) - exact).abs().max() > (shipped.rank(scores) - exact).abs().max() + 0.05
    with pytest.raises(SystemExit):
        descent.build_parser().parse_args(["--sorter-band", "0"])


# bench_sorter_gpu


def test_gpu_script_without_cuda_says_so_times_nothing_and_fails(gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stopped:  # status 1, the line on stderr
        gpu.main([])
    assert stopped.value.code == gpu.NO_CUDA and capsys.readouterr().out == ""


def test_a_script_refuses_to_replace_another_scripts_results(descent, gpu, tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"script": descent.SCRIPT, "settings": {}, "rows": []}))
    with pytest.raises(SystemExit) as stopped:
        gpu.main(["--device", "cpu", "--json", str(path)])
    assert stopped.value.code == (
        f"--json: {path} holds the results of bench_descent.py; writing bench_sorter_gpu.py's there would replace them"
    )
    assert json.loads(path.read_text())["script"] == "bench_descent.py"
    path.write_text(json.dumps({"script": None, "settings": {}, "rows": []}))  # edited by hand
    with pytest.raises(SystemExit) as stopped:
        gpu.main(["--device", "cpu", "--json", str(path)])
    assert stopped.value.code == (
        f"--json: {path} holds the results of another script; writing bench_sorter_gpu.py's there would replace them"
    )


def test_gpu_script_on_the_cpu_reports_sizes_above_capacity_as_dashes(gpu, tmp_path):
    out = tmp_path / "gpu.json"
    text = gpu.main(
        ["--device", "cpu", "--batches", "2", "--lengths", "8,300", "--rounds", "1", "--block-seconds", "0.001"]
        + ["--warmup", "1", "--json", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    shipped = [row for row in rows if row["ranker"] == "sodeep (shipped) eager"]
    assert {(row["mode"], row["n"]) for row in shipped} == {(m, n) for m in gpu.MODES for n in (8, 300)}
    capacity = next(r for r in gpu.build_rankers(torch.device("cpu"), [], False)[0]).lengths[1]
    for row in shipped:
        refused = capacity is not None and row["n"] > capacity
        assert (row["seconds"] is None) == refused and (row["reason"] is not None) == refused
    assert "| sodeep (shipped) eager |" in text


def test_gpu_script_times_only_the_modes_asked_and_prints_each_cell(gpu, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    text = gpu.main(
        ["--device", "cpu", "--batches", "2", "--lengths", "8", "--rounds", "1", "--block-seconds", "0.001"]
        + ["--warmup", "1", "--modes", "forward+backward,forward+backward", "--json", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    assert rows and {row["mode"] for row in rows} == {"forward+backward"}
    assert "forward, B=2" not in text and "forward+backward, B=2" in text
    progress = capsys.readouterr().err
    assert "forward+backward B=2 n=8: sodeep (shipped) eager " in progress and " ms" in progress


def test_time_cell_gives_reasons_for_refused_and_failing_rankers(gpu):
    def refuse(scores):
        raise ValueError("scores has length n=8; this ranker accepts n <= 4; more advice")

    def no_kernel(scores):
        raise ImportError("torchsort was not built with CUDA")

    rankers = [
        Ranker("short", "", "rank", PairwiseSigmoidSorter(0.1), lengths=(2, 4)),
        Ranker("refusing", "", "rank", refuse),
        Ranker("no kernel", "", "rank", no_kernel),
        Ranker("pairwise", "", "rank", PairwiseSigmoidSorter(0.1)),
    ]
    results = gpu.time_cell(
        rankers,
        2,
        8,
        "forward+backward",
        device=torch.device("cpu"),
        rounds=2,
        block_seconds=0.001,
        warmup=1,
        bare=True,
        seed=0,
    )
    assert results["short"] == "accepts n in 2..4"
    assert results["refusing"] == "scores has length n=8; this ranker accepts n <= 4"
    assert results["no kernel"] == "ImportError: torchsort was not built with CUDA"
    assert isinstance(results["pairwise"], float) and results["pairwise"] > 0


# bench_sorter_fidelity_large_n


def test_largest_tie_spread_matches_a_loop_over_groups(fidelity):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (3, 9), generator=generator).double()
    scores[2] = torch.arange(9.0)  # a row without ties
    predicted = torch.rand(3, 9, generator=generator, dtype=torch.float64)
    spreads = [
        float(predicted[b][scores[b] == value].max() - predicted[b][scores[b] == value].min())
        for b in range(3)
        for value in scores[b].unique()
        if int((scores[b] == value).sum()) >= 2
    ]
    assert fidelity.largest_tie_spread(scores, predicted) == pytest.approx(9 * max(spreads), rel=1e-12)
    assert fidelity.largest_tie_spread(scores[2:], predicted[2:]) is None


def test_peak_tensor_bytes_counts_what_is_alive_at_once(fidelity):
    with fidelity.PeakTensorBytes() as meter:
        first = torch.ones(1024, dtype=torch.float64)  # 8 KiB
        second = first * 2  # 8 KiB more
        del first, second
        torch.ones(256, dtype=torch.float64)  # 2 KiB, after the others were freed
    assert meter.peak == 2 * 8192


def test_run_reports_a_refused_length_with_the_reason(fidelity):
    def short_sorter(scores):
        if scores.shape[-1] > 8:
            raise ValueError("scores has length n=16 (shape (1, 16)); this sorter accepts n <= 8; use another")
        return PairwiseSigmoidSorter(0.01)(scores)

    rows = fidelity.run(
        short_sorter,
        [8, 16],
        ["normal", "tied"],
        sequences=2,
        batch=2,
        repeats=0,
        device=torch.device("cpu"),
        dtype=torch.float32,
        seed=0,
        progress=lambda line: None,
    )
    assert [(row.scores, row.n) for row in rows] == [("normal", 8), ("tied", 8), ("all sets", 16)]
    assert rows[-1].refused == "scores has length n=16 (shape (1, 16)); this sorter accepts n <= 8"
    assert rows[0].refused is None and rows[0].spearman > 0.99 and rows[0].non_finite_ranks == 0


def test_fidelity_main_on_a_pairwise_sorter(fidelity, tmp_path):
    out = tmp_path / "fidelity.json"
    text = fidelity.main(
        ["--architecture", "pairwise_sigmoid", "--sorter", '{"temperature": 0.001}', "--lengths", "16"]
        + ["--families", "normal,ties", "--sets", "tied,clustered", "--sequences", "4", "--batch", "2"]
        + ["--repeats", "1", "--json", str(out)]
    )
    assert [row[0] for row in table_rows(text)] == ["normal", "ties", "tied", "clustered"]
    rows = {row["scores"]: row for row in json.loads(out.read_text())["rows"]}
    # Equal scores get bitwise equal pairwise-sigmoid ranks; continuous scores have no tie group.
    assert rows["tied"]["tie_spread"] == 0.0 and rows["normal"]["tie_spread"] is None
    assert all(row["non_finite_ranks"] == 0 and row["peak_mib"] > 0 for row in rows.values())


# bench_learning_signal


@pytest.fixture(scope="module")
def signal():
    return load_script("bench_learning_signal")


def test_pairwise_ranks_match_exact_ranks_and_the_cauchy_cdf(signal):
    scipy_stats = pytest.importorskip("scipy.stats")
    scores = torch.tensor([[0.3, -1.2, 2.5, 0.9, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(signal.pairwise_ranks(scores, 1e-6), rank(scores), rtol=0, atol=1e-12)
    # A slow loop over pairs, with scipy's Cauchy CDF.
    temperature = 0.7
    expected = [
        (0.5 + sum(scipy_stats.cauchy.cdf((xj - xi) / temperature) for xj in scores[0].tolist())) / 5
        for xi in scores[0].tolist()
    ]
    torch.testing.assert_close(
        signal.pairwise_ranks(scores, temperature, "cauchy")[0], torch.tensor(expected, dtype=torch.float64)
    )


def test_identity_backward_is_the_wide_pairwise_limit(signal):
    scores = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def gradient(function, scale=1.0):
        leaf = scores.clone().requires_grad_(True)
        (function(leaf) * weights).sum().backward()
        return leaf.grad * scale

    wide = 1e5
    limit = gradient(lambda s: signal.pairwise_ranks(s, wide), wide / signal.WIDE_TEMPERATURE)
    torch.testing.assert_close(gradient(signal.identity_ranks), limit, rtol=1e-6, atol=1e-12)


def test_straight_through_variants_keep_the_sorters_values(signal):
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    sorter, _ = signal.build_variant("sorter")
    expected = sorter.rank(scores).detach()
    for name in ("sorter+wide", "sorter+identity"):
        ranker, loss = signal.build_variant(name)
        ranks = ranker.rank(scores)
        assert loss == "rank"
        torch.testing.assert_close(ranks.detach(), expected, rtol=0, atol=0)
    # The identity variant's gradient: the upstream gradient, centred and negated, over 4 T.
    (gradient,) = torch.autograd.grad((ranks * scores.detach()).sum(), scores)
    centred = scores.detach() - scores.detach().mean(-1, keepdim=True)
    torch.testing.assert_close(gradient, -centred / (4 * signal.WIDE_TEMPERATURE))


def test_summary_table_gives_means_over_seeds(signal):
    rows = [
        {"part": "sorting", "variant": "sorter", "where": 5, "seed": 0, "exact_match": 0.5, "element_wise": 0.7},
        {"part": "sorting", "variant": "sorter", "where": 5, "seed": 1, "exact_match": 0.7, "element_wise": 0.9},
        {"part": "regression", "variant": "sorter", "where": "fcon1000", "seed": 0, "spearman": 0.6},
    ]
    cells = table_rows(signal.summary_table(rows, ["sorter"], [5]))[1:]  # after the header
    assert cells == [[signal.VARIANTS["sorter"], "0.600 ± 0.141 (0.800)", "0.600", "-"]]
    no_regression = table_rows(signal.summary_table(rows, ["sorter"], [5], regression=False))
    assert no_regression[1] == [signal.VARIANTS["sorter"], "0.600 ± 0.141 (0.800)"]


def test_variants_at_another_setting_build_that_ranker(signal):
    scores = torch.tensor([[0.0, 0.05, 1.0, 3.0]])
    sorter = signal.build_variant("sorter@0.7")[0].rank(scores)
    families = {family.name: family for family in signal.ranker_families()}
    torch.testing.assert_close(sorter, families["sodeep (shipped)"].build(0.7).rank(scores), rtol=0, atol=0)
    assert not torch.allclose(sorter, signal.build_variant("sorter")[0].rank(scores))
    assert signal.variant_label("sorter@0.7") == "sorter, floor 0.7"
    assert signal.variant_label("torchsort@1e-2") == "torchsort soft_rank, regularization 0.01"
    for bad in ("sorter@0", "sorter@-1", "sorter@nan", "sorter@x", "pairwise@0.3", "bogus"):
        with pytest.raises(ValueError):
            signal.parse_variant(bad)


def test_paired_table_gives_differences_by_seed_with_their_standard_error(signal):
    def row(variant, n, seed, exact, element):
        return {
            "part": "sorting",
            "variant": variant,
            "where": n,
            "seed": seed,
            "exact_match": exact,
            "element_wise": element,
        }

    rows = [row("torchsort", 5, seed, 0.5, 0.7) for seed in range(3)]
    rows += [row("sorter", 5, 0, 0.6, 0.7), row("sorter", 5, 1, 0.5, 0.8), row("sorter", 5, 2, 0.7, 0.9)]
    rows += [row("sorter", 5, 3, 0.0, 0.0)]  # a seed the baseline lacks: left out of the pairs
    cells = table_rows(signal.paired_table(rows, ["torchsort", "sorter"], [5], "torchsort"))[1:]
    exact, element = [0.1, 0.0, 0.2], [0.0, 0.1, 0.2]
    expected = [
        f"{sum(values) / 3:+.3f} ± {statistics.stdev(values) / math.sqrt(3):.3f}" for values in (exact, element)
    ]
    assert cells == [["sorter, floor 0.1 (the rank losses' default)", *expected]]
    one_seed = [row for row in rows if row["seed"] in (0, 3)]  # one seed in common: its difference alone
    cells = table_rows(signal.paired_table(one_seed, ["torchsort", "sorter"], [5], "torchsort"))[1:]
    assert cells == [["sorter, floor 0.1 (the rank losses' default)", "+0.100 (1 seed)", "+0.000 (1 seed)"]]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--variants", "sorter,bogus"], "unknown bogus"),
        (["--variants", "sorter,sorter@0"], "unknown sorter@0"),
        (["--variants", "sorter", "--paired-with", "pairwise"], "--paired-with pairwise is not among --variants"),
        (["--variants", ","], "names no variant"),
        (["--lengths", "1,5"], "--lengths must all be >= 2"),
        (["--regression-seeds", "-1"], "--regression-seeds must be >= 0, got -1"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--json", "."], "is a folder"),
        (["--json", "{csv}"], "ages.csv exists and is not a benchmark's JSON; writing a benchmark's JSON there"),
        (["--json", "{run}"], "run.json exists and is not a benchmark's JSON; writing a benchmark's JSON there"),
        (["--json", "{mine}"], "an interrupted run writes its rows beside it, and {partial} exists and is not a "),
    ],
)
def test_learning_signal_main_refuses_bad_arguments_in_one_line(signal, capsys, tmp_path, arguments, message):
    (tmp_path / "ages.csv").write_text("age,thickness\n31,2.5\n")
    (tmp_path / "run.json").write_text('{"command": "pretrain"}\n')
    (tmp_path / "mine.partial.json").write_text("my notes\n")  # beside a new --json mine.json
    paths = {"{csv}": "ages.csv", "{run}": "run.json", "{mine}": "mine.json", "{partial}": "mine.partial.json"}
    for placeholder, name in paths.items():
        arguments = [argument.replace(placeholder, str(tmp_path / name)) for argument in arguments]
        message = message.replace(placeholder, str(tmp_path / name))
    with pytest.raises(SystemExit) as exit_info:
        signal.main(arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_learning_signal_main_refuses_when_every_variant_is_missing(signal, capsys, monkeypatch):
    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(signal, "build_variant", missing)
    with pytest.raises(SystemExit) as exit_info:
        signal.main(["--variants", "torchsort,diffsort"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "skipped torchsort" in error and "no variant left to run" in error.splitlines()[-1]


def test_learning_signal_main_trains_and_writes_json(signal, tmp_path, capsys):
    path = tmp_path / "new" / "signal.json"
    arguments = ["--variants", "sorter,pairwise,sorter", "--lengths", "3,3", "--seeds", "2", "--steps", "2"]
    arguments += ["--regression-seeds", "1", "--regression-steps", "2", "--workers", "1", "--json", str(path)]
    table = signal.main(arguments)
    body = table_rows(table)[1:]
    assert [row[0] for row in body] == [signal.VARIANTS["sorter"], signal.VARIANTS["pairwise"]]  # duplicates once
    assert all(len(row) == 4 for row in body)  # n = 3 once, two regression tasks
    payload = json.loads(path.read_text())
    assert payload["complete"] is True and payload["settings"]["lengths"] == [3]
    assert len([row for row in payload["rows"] if row["part"] == "sorting"]) == 2 * 2
    assert len([row for row in payload["rows"] if row["part"] == "regression"]) == 2 * 2
    for row in payload["rows"]:
        figures = [row[key] for key in ("exact_match", "element_wise", "spearman") if key in row]
        assert figures and all(-1 <= value <= 1 for value in figures)


def test_learning_signal_main_keeps_the_finished_rows_on_ctrl_c(signal, tmp_path, monkeypatch, capsys):
    finished = []

    def interrupted_after_one(job):
        if finished:
            raise KeyboardInterrupt
        finished.append(job)
        return {
            "part": job[0],
            "variant": job[1],
            "where": job[2],
            "seed": job[3],
            "exact_match": 0.5,
            "element_wise": 0.75,
        }

    monkeypatch.setattr(signal, "run_job", interrupted_after_one)
    path = tmp_path / "signal.json"
    arguments = ["--variants", "sorter", "--lengths", "3", "--seeds", "2", "--regression-seeds", "0"]
    with pytest.raises(SystemExit) as exit_info:
        signal.main([*arguments, "--workers", "1", "--json", str(path)])
    assert exit_info.value.code == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith("interrupted after 1 of 2 trainings")
    assert table_rows(captured.out)[1] == [signal.VARIANTS["sorter"], "0.500 (0.750)"]
    payload = json.loads(path.read_text())
    assert payload["complete"] is False and len(payload["rows"]) == 1


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("bench_descent", ["--draws", "0"], "argument --draws: must be >= 1, got '0'"),
        ("bench_descent", ["--steps", "-0.01"], "argument --steps: each must be > 0, got '-0.01'"),
        ("bench_descent", ["--fd-step", "0"], "argument --fd-step: must be > 0, got '0'"),
        ("bench_generator", ["--rounds", "0"], "argument --rounds: must be >= 1, got '0'"),
        ("bench_pairwise_margin", ["--loop-rows", "300"], "--loop-rows must be at most the batch, 256, got 300"),
        ("bench_brainage_floor", ["--floors", "nan"], "argument --floors: must be a finite number >= 0, got 'nan'"),
        ("bench_brainage_step", ["--batch-sizes", "1"], "argument --batch-sizes: must be >= 2, got '1'"),
        ("bench_learning_signal", ["--lengths", "20000"], "--lengths must all be <= 10000 (distinct 4-digit"),
        ("bench_sorter_fidelity_large_n", ["--lengths", "1"], "--lengths: lengths must be ints >= 2"),
        ("bench_sorter_fidelity_large_n", ["--checkpoint", "{tmp}/x.json"], "x.json is not a torch checkpoint"),
        ("bench_sorter_fidelity_large_n", ["--architecture", "nope"], "unknown sorter architecture 'nope'"),
        ("bench_sorter_fidelity_large_n", ["--families", "foo"], "unknown --families ['foo']; known: ["),
        ("bench_sorter_fidelity_large_n", ["--sets", "bar"], "unknown --sets ['bar']; known: ["),
        ("bench_brainage_floor", ["--floors", "inf"], "argument --floors: must be a finite number >= 0, got 'inf'"),
    ],
)
def test_bad_script_flags_end_in_one_line(tmp_path, monkeypatch, capsys, script, argv, message):
    (tmp_path / "x.json").write_text('{"mine": 1}')
    argv = [word.replace("{tmp}", str(tmp_path)) for word in argv]
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as stopped:
        load_script(script).main()
    said = str(stopped.value.code) if isinstance(stopped.value.code, str) else capsys.readouterr().err
    assert stopped.value.code != 0 and message in said


def test_the_floor_scale_script_starts_from_the_readme_quick_start():
    """Its first setting is the quick start as written, which prints held-out Spearman 0.96; a
    scale of the outputs changes no rank, so only the loss can make it differ."""
    floor_scale = load_script("bench_floor_scale")
    scale, l1_weight, floor = floor_scale.SETTINGS[0]
    assert (scale, l1_weight, floor) == (1.0, 0.01, 0.1)
    assert round(floor_scale.held_out_spearman(0, scale, l1_weight, floor)[0], 2) == 0.96


def test_the_floor_scale_scripts_mean_average_precision_matches_a_slow_loop():
    floor_scale = load_script("bench_floor_scale")
    generator = torch.Generator().manual_seed(0)
    embeddings, classes = torch.randn(30, 4, generator=generator), torch.randint(0, 4, (30,), generator=generator)
    precisions = []
    for query in range(30):
        others = [item for item in range(30) if item != query]
        ranked = sorted(others, key=lambda item: -float(embeddings[query] @ embeddings[item]))
        hits, at_hits = 0, []
        for position, item in enumerate(ranked, 1):
            if classes[item] == classes[query]:
                hits += 1
                at_hits.append(hits / position)
        precisions.append(sum(at_hits) / len(at_hits))
    assert floor_scale.mean_average_precision(embeddings, classes) == pytest.approx(sum(precisions) / 30, rel=1e-6)


def test_the_floor_scale_scripts_mean_average_precision_is_sklearns_with_ties():
    """Equal similarities share a position (sklearn's average precision); a query without a
    relevant item is left out."""
    from sklearn.metrics import average_precision_score

    floor_scale = load_script("bench_floor_scale")
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(40, 3, generator=generator).sign()  # few distinct similarities
    classes = torch.randint(0, 3, (40,), generator=generator)
    classes[0] = 7  # the only item of its class
    precisions = []
    for query in range(1, 40):
        others = [item for item in range(40) if item != query]
        similarity = (embeddings[others] @ embeddings[query]).numpy()
        precisions.append(average_precision_score((classes[others] == classes[query]).numpy(), similarity))
    assert floor_scale.mean_average_precision(embeddings, classes) == pytest.approx(sum(precisions) / 39, rel=1e-6)
    embeddings[3, 1] = torch.nan  # a diverged training: nan in its row, not a stopped script
    assert math.isnan(floor_scale.mean_average_precision(embeddings, classes))


def test_the_floor_scale_scripts_retrieval_learns_on_cosine_similarities():
    floor_scale = load_script("bench_floor_scale")
    untrained = floor_scale.held_out_map(0, "cosine", 1.0, 0.1, steps=0)[0]
    assert floor_scale.held_out_map(0, "cosine", 1.0, 0.1, steps=40)[0] > untrained + 0.1
