import json
import subprocess
import sys

import pytest

from sodeep.benchmark.cli import add_bench_parser, config_from_arguments, main
from sodeep.benchmark.config import BenchConfig
from sodeep.benchmark.report import RESULT_KEYS, SCHEMA

TINY = dict(
    seeds=(0,),
    workers=1,
    speed_lengths=(8,),
    speed_batches=(2,),
    speed_rounds=1,
    speed_block_seconds=0.0001,
    fidelity_lengths=(8,),
    fidelity_sequences=4,
    sorting_lengths=(3,),
    sorting_digits=2,
    sorting_steps=2,
    sorting_images_per_step=12,
    sorting_test_sequences=10,
    sorting_validation_sequences=10,
    sorting_settings="default",
    regression_steps=1,
)


def test_a_tiny_run_writes_results_with_the_schema_and_plots(tmp_path):
    from sodeep.benchmark.run import run_benchmark

    config = BenchConfig(out=str(tmp_path), **TINY)
    run_benchmark(config, command="test", progress=lambda line: None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert tuple(results) == RESULT_KEYS and results["schema"] == SCHEMA
    assert {row["ranker"] for row in results["speed"]} >= {"exact", "pairwise_sigmoid T=0.01"}
    assert set(results["speed"][0]) == {
        "ranker",
        "n",
        "batch",
        "mode",
        "seconds",
        "ratio_to_exact",
        "ratio_to_torchsort",
    }
    assert set(results["fidelity"][0]) == {"ranker", "distribution", "n", "spearman", "rank_error"}
    assert {"ranker", "family", "setting", "loss", "n", "seed", "exact_match", "element_wise"} <= set(
        results["sorting"][0]
    )
    assert set(results["sorting_summary"][0]) == {"family", "n", "default", "best"}
    assert {"ranker", "task", "seed", "spearman", "seconds"} == set(results["regression"][0])
    assert set(results["wall_seconds"]) == {"speed", "fidelity", "sorting", "regression"}
    for name in ("bench_speed.png", "bench_sorting.png", "bench_fidelity.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "Learning to sort" in (tmp_path / "results.md").read_text()


def test_cli_parses_quick_and_overrides(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    arguments = parser.parse_args(["bench", "--quick", "--out", str(tmp_path), "--seeds", "4", "5", "--parts", "speed"])
    config = config_from_arguments(arguments)
    assert (
        config.seeds == (4, 5)
        and config.parts == ("speed",)
        and config.sorting_lengths == BenchConfig.quick().sorting_lengths
    )
    assert config_from_arguments(parser.parse_args(["bench"])).sorting_lengths == (3, 5, 7, 9, 15)


def test_cli_refuses_unknown_parts():
    with pytest.raises(SystemExit):
        main(["bench", "--parts", "speeed"])
    with pytest.raises(ValueError, match="unknown part"):
        BenchConfig(parts=("speeed",))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"seeds": (-1,)}, r"seeds must be distinct integers in 0..4294967295, got \[-1\]"),
        ({"seeds": (0, 0)}, "seeds must be distinct integers in 0"),
        ({"seeds": (2**70,)}, "seeds must be distinct integers in 0..4294967295, got .1180591620717411303424."),
        ({"parts": ("fidelity", "fidelity")}, "parts must not repeat"),
        ({"mnist": ("missing-images", "missing-labels")}, "MNIST file missing-images not found"),
        (
            {"mnist": ("missing-images", "missing-labels"), "parts": ("fidelity",)},
            "MNIST file missing-images not found",
        ),
        ({"seeds": (0.5,)}, "seeds must be distinct integers in 0"),
        ({"parts": ()}, "parts must name at least one entry"),
        ({"fidelity_lengths": (1,)}, "each of fidelity_lengths must be >= 2, got 1"),
        ({"speed_lengths": ()}, "speed_lengths must name at least one entry"),
        ({"regression_learning_rate": -1}, "regression_learning_rate must be a finite number > 0, got -1"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(overrides, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"parts": "fidelity"}, "parts must be a list or tuple, got str 'fidelity'"),
        ({"workers": True}, "workers must be an integer, got bool True"),
    ],
)
def test_settings_of_the_wrong_type_are_refused(overrides, message):
    with pytest.raises(TypeError, match=message):
        BenchConfig(**overrides)


def test_an_unreadable_mnist_file_is_named_before_the_output_folder_exists(tmp_path):
    images, labels = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    for path in (images, labels, tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"):
        path.write_bytes(b"not gzip at all")
    out = tmp_path / "bench"
    from sodeep.cli import main as sodeep_main

    with pytest.raises(SystemExit) as stopped:
        sodeep_main(["bench", "--quick", "--parts", "sorting", "--out", str(out), "--mnist", str(images), str(labels)])
    assert stopped.value.code == 2
    assert not out.exists()
    with pytest.raises(ValueError, match=f"{images} is not a readable IDX file"):
        from sodeep.benchmark.digits import read_idx

        read_idx(images)
    with pytest.raises(ValueError, match="is a folder, not a file"):
        BenchConfig(mnist=(str(tmp_path), str(labels)))


def test_imports_stay_light_and_the_core_library_does_not_import_the_benchmark():
    # One interpreter for both checks: starting one costs seconds.
    code = (
        "import sys, sodeep, sodeep.losses, sodeep.sorters\n"
        "core = 'sodeep.benchmark' in sys.modules\n"
        "import sodeep.benchmark, sodeep.benchmark.cli\n"
        "heavy = sorted(m for m in ('sklearn', 'matplotlib', 'lightning', 'wandb') if m in sys.modules)\n"
        "print(core, heavy)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False []"


def test_the_output_folder_holds_benchmark_results_only(tmp_path):
    from sodeep.benchmark.run import claim_output_folder

    with pytest.raises(ValueError, match=r"^overwrite=True replaces .* resume=True keeps them: give one of the two$"):
        claim_output_folder(tmp_path / "both", overwrite=True, resume=True)
    assert not (tmp_path / "both").exists()
    assert claim_output_folder(tmp_path / "new", overwrite=False).is_dir()
    browsed = tmp_path / "browsed"  # a folder a file manager has shown: empty to a benchmark
    browsed.mkdir()
    (browsed / ".DS_Store").write_bytes(b"\0")
    assert claim_output_folder(browsed, overwrite=False) == browsed
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my work")
    (mine / "results.md").write_text("my results")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"holds files that are not a sodeep benchmark's \(notes.txt\); give"):
            claim_output_folder(mine, overwrite=overwrite)
    assert (mine / "results.md").read_text() == "my results"
    (mine / "notes.txt").unlink()
    (mine / "results.json").write_text('{"my precious": [1]}')  # a user's results.json is not a benchmark's
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"results.json is not a sodeep benchmark's results .*give out= a new or"):
            claim_output_folder(mine, overwrite=overwrite)
    assert (mine / "results.json").read_text() == '{"my precious": [1]}'
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"schema": "sodeep-bench/1"}')
    (earlier / "bench_speed.png").write_bytes(b"png")
    (earlier / ".results.json.k2j4.tmp").write_bytes(b"half")  # left by a killed write
    with pytest.raises(ValueError, match="overwrite=True to replace them"):
        claim_output_folder(earlier, overwrite=False)
    claim_output_folder(earlier, overwrite=True)
    assert [path.name for path in earlier.iterdir()] == ["run.lock"]
    rows_only = tmp_path / "rows"  # training rows whose results.json (their settings) is gone
    rows_only.mkdir()
    (rows_only / "sorting_rows.jsonl").write_text('{"ranker": "exact", "seed": 0}\n')
    for resume in (False, True):
        with pytest.raises(
            ValueError,
            match=r"rows holds a benchmark's files \(sorting_rows.jsonl\) but not its results.json, which records its "
            r"settings, so it cannot be resumed; pass overwrite=True to replace them",
        ):
            claim_output_folder(rows_only, overwrite=False, resume=resume)
    claim_output_folder(rows_only, overwrite=True)
    assert [path.name for path in rows_only.iterdir()] == ["run.lock"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="file is a file, not a folder"):
        claim_output_folder(tmp_path / "file", overwrite=True)


def test_a_damaged_results_file_is_named_as_such(tmp_path):
    from sodeep.benchmark.run import claim_output_folder

    (tmp_path / "results.json").write_text('{"schema": "sodeep-be')  # cut short
    (tmp_path / "results.md").write_text("| ranker |")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ValueError, match=r"results.json is not readable JSON \(damaged\); give another out=, or"):
            claim_output_folder(tmp_path, overwrite=flags.get("overwrite", False), resume=flags.get("resume", False))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json", "results.md"]


def test_a_benchmark_folder_inside_another_is_refused(tmp_path):
    from sodeep.benchmark.run import claim_output_folder

    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "results.json").write_text('{"schema": "sodeep-bench/1"}')
    for inner in (tmp_path / "host" / "b2", tmp_path / "host" / "deeper" / "b3"):
        with pytest.raises(ValueError, match=rf"^{inner} is inside the benchmark folder {tmp_path / 'host'}"):
            claim_output_folder(inner, overwrite=False)
        assert not inner.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"fidelity": None},
        {"skipped": [1, 2]},
        {"rankers": None},
        {"rankers": [{}]},
        {"config": []},
        {"wall_seconds": {"bogus": 1.0}},
        {"wall_seconds": {"fidelity": None}},
        {"resumed": [5]},
        {"hardware": None},
        {"fidelity": [{"ranker": "exact", "n": 8, "distribution": "normal", "spearman": "x", "rank_error": 0.0}]},
        {"fidelity": [{"ranker": "exact", "n": 8, "distribution": "normal", "spearman": 1.0}]},
        {"fidelity": [{"ranker": "exact", "n": True, "distribution": "normal", "spearman": 1.0, "rank_error": 0.0}]},
        {"rankers": []},
        {"config": {**BenchConfig().as_dict(), "parts": ["fidelity", "bogus"]}},
        {"config": {**BenchConfig().as_dict(), "parts": []}},
    ],
)
def test_a_results_file_of_the_wrong_shape_is_damaged_for_a_resume(tmp_path, change):
    from sodeep.benchmark.report import SCHEMA
    from sodeep.benchmark.run import _previous_results

    config = BenchConfig(parts=("fidelity",), out=str(tmp_path))
    held = {
        "schema": SCHEMA,
        "config": json.loads(json.dumps(config.as_dict())),
        "rankers": [{"label": "exact", "family": "exact", "kind": "exact"}],
        "skipped": [],
        "wall_seconds": {"fidelity": 1.0},
        "fidelity": [{"ranker": "exact", "n": 8, "distribution": "normal", "spearman": 1.0, "rank_error": 0.0}],
    }
    (tmp_path / "results.json").write_text(json.dumps(held))
    assert _previous_results(tmp_path, config)[0]["fidelity"] == held["fidelity"]
    (tmp_path / "results.json").write_text(json.dumps(held | change))
    with pytest.raises(ValueError, match="results.json is damaged; run with overwrite=True instead of resume=True"):
        _previous_results(tmp_path, config)
    del held["fidelity"]
    (tmp_path / "results.json").write_text(json.dumps(held))
    with pytest.raises(ValueError, match="is damaged"):
        _previous_results(tmp_path, config)
    (tmp_path / "results.json").write_text(json.dumps(held | {"schema": "sodeep-bench/0"}))
    with pytest.raises(
        ValueError, match=r"another format \(schema 'sodeep-bench/0'; this sodeep writes 'sodeep-bench/1'\)"
    ):
        _previous_results(tmp_path, config)


def test_a_folder_in_use_by_a_running_benchmark_is_refused(tmp_path):
    import subprocess
    import sys

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text('{"schema": "sodeep-bench/1"}')
    holder = (
        "import sys, time; from pathlib import Path; from sodeep.benchmark.run import claim_output_folder; "
        "claim_output_folder(Path(sys.argv[1]), overwrite=False, resume=True); print('held', flush=True); "
        "time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        from sodeep.benchmark.run import claim_output_folder

        # Said first, whatever the flags: advice to resume or replace would only lead there.
        for flags in ({"overwrite": True}, {"overwrite": False}, {"overwrite": False, "resume": True}):
            with pytest.raises(ValueError, match=rf"in use by a running sodeep command \(process {process.pid}\)"):
                claim_output_folder(tmp_path / "out", **flags)
    finally:
        process.kill()
        process.wait()


def test_missing_packages_are_named_before_anything_runs(monkeypatch, tmp_path):
    import importlib.util

    from sodeep.benchmark.run import check_extras

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "sklearn" else real_find_spec(name))
    with pytest.raises(
        ValueError,
        match=r"needs scikit-learn: in a clone of sodeep, pip install .*'\.\[bench\]'; elsewhere, install sodeep with its bench extra",
    ):
        check_extras(BenchConfig(parts=("sorting",), out=str(tmp_path / "out")))
    check_extras(BenchConfig(parts=("fidelity",), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_plot_lines_stay_distinct_and_speed_headers_name_torchsort_only_when_it_ran():
    from sodeep.benchmark.plots import _style
    from sodeep.benchmark.report import speed_markdown

    styles = [tuple(sorted(_style(index).items())) for index in range(80)]
    assert len(set(styles)) == 80 and len({style["color"] for style in map(_style, range(20))}) == 20
    assert _style(3, "sodeep floor=0.1")["linewidth"] > _style(3, "torchsort eps=0.01").get("linewidth", 1.5)
    rows = [
        {"ranker": name, "n": 100, "batch": 32, "mode": "forward", "seconds": 1e-3, "ratio_to_torchsort": ratio}
        for name, ratio in (("exact", None), ("sodeep", None))
    ]
    assert "ratio to torchsort" not in "\n".join(speed_markdown(rows))
    rows[1]["ratio_to_torchsort"] = 2.0
    assert "(ratio to torchsort eps=1)" in "\n".join(speed_markdown(rows))
    rows[1]["ratio_to_torchsort"] = 137.6  # written out, two significant digits
    rows[1]["seconds"] = 1.0497  # milliseconds too, to three
    assert "| 1050 (140x) |" in "\n".join(speed_markdown(rows))


def test_tables_show_a_spread_only_where_there_are_two_seeds_or_more():
    from sodeep.benchmark.report import regression_markdown

    rows = [
        {"ranker": "one seed", "task": "t", "spearman": 0.5, "seconds": 1.0},
        {"ranker": "two seeds", "task": "t", "spearman": 0.4, "seconds": 1.0},
        {"ranker": "two seeds", "task": "t", "spearman": 0.6, "seconds": 1.0},
    ]
    lines = regression_markdown(rows)
    assert "| one seed | 0.500 | 1.00 |" in lines
    assert "| two seeds | 0.500 ± 0.141 | 1.00 |" in lines


def test_an_interrupted_benchmark_names_what_it_kept_and_how_to_run_again(tmp_path, monkeypatch, capsys):
    import sodeep.benchmark.run as run

    finish_part = run._run_part

    def stop_at_fidelity(part, *args, **options):
        if part == "fidelity":
            raise KeyboardInterrupt
        finish_part(part, *args, **options)

    monkeypatch.setattr(run, "_run_part", stop_at_fidelity)
    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--parts", "speed", "fidelity", "--out", str(out)]) == 130
    error = capsys.readouterr().err
    assert error == (
        f"sodeep bench: interrupted; {out}/results.json and results.md keep the finished parts (speed); "
        f"continue with: sodeep bench --quick --parts speed fidelity --out {out} --resume\n"
    )
    assert json.loads((out / "results.json").read_text())["command"] == (
        f"sodeep bench --quick --parts speed fidelity --out {out}"
    )
    assert json.loads((out / "results.json").read_text())["speed"]
    assert "speed" in (out / "results.md").read_text().lower()
    monkeypatch.setattr(run, "_run_part", finish_part)
    assert main(["bench", "--quick", "--parts", "speed", "fidelity", "--out", str(out), "--overwrite"]) == 0


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return {int(child) for child in file.read().split()}
    except OSError:
        return set()


def _working(pid: int) -> set[int]:
    """Children of ``pid`` with over 100 MB resident (torch imported)."""
    found = set()
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/status") as file:
                resident = next(int(line.split()[1]) for line in file if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        if resident > 100_000:
            found.add(child)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads child processes from /proc")
def test_sigterm_stops_the_benchmark_and_its_worker_processes(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "bench"
    command = [sys.executable, "-m", "sodeep", "bench", "--quick", "--parts", "sorting", "--seeds", "0", "1"]
    command += ["--workers", "2", "--sorting-steps", "100000", "--out", str(out)]
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # Workers that have imported torch (over 100 MB resident) are past their start-up, during
        # which a stop makes Python's spawn machinery print an EOFError of its own.
        while len(workers := _working(bench.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the learning-to-sort workers never started"
        bench.send_signal(signal.SIGTERM)
        _, error = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 130, error
    assert "sodeep bench: interrupted" in error and "Traceback" not in error
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    assert not left, f"worker processes {left} outlived the benchmark"


@pytest.mark.parametrize("problem", ["counts", "swapped", "names", "sizes"])
def test_mnist_files_that_cannot_make_a_pool_are_refused_before_the_output_folder_exists(tmp_path, capsys, problem):
    import numpy as np
    from test_digits import write_idx

    from sodeep.cli import main as sodeep_main

    rng = np.random.default_rng(0)
    names = ("images.idx", "labels.idx") if problem == "names" else ("train-images.idx", "train-labels.idx")
    for prefix in ("", "t10k-"):
        side = 10 if problem == "sizes" and prefix else 8  # t10k digits of another size
        images = rng.integers(0, 255, (40, side, side), dtype=np.uint8)
        labels = np.arange(30 if problem == "counts" else 40, dtype=np.uint8) % 10
        image_name, label_name = (name.replace("train-", prefix) if prefix else name for name in names)
        write_idx(tmp_path / image_name, images, 0x08, compress=False)
        write_idx(tmp_path / label_name, labels, 0x08, compress=False)
    given = [str(tmp_path / name) for name in names]
    if problem == "swapped":
        given.reverse()
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as stopped:
        sodeep_main(["bench", "--quick", "--parts", "sorting", "--out", str(out), "--mnist", *given])
    assert stopped.value.code == 2 and not out.exists()
    if problem == "sizes":
        assert "the train and test digits must have one size, got 8x8 (" in capsys.readouterr().err


def test_a_benchmark_interrupted_before_writing_anything_runs_again_as_it_was(tmp_path, monkeypatch, capsys):
    import sodeep.benchmark.run as run

    def stop(part, *args, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_run_part", stop)
    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--parts", "speed", "--out", str(out)]) == 130
    error = capsys.readouterr().err
    assert error == (
        f"sodeep bench: interrupted; no part finished; continue with: sodeep bench --quick --parts speed --out {out} "
        "--resume\n"
    )
    # Started as `python3 -m sodeep`: the advice runs the same installation.
    monkeypatch.setattr(sys, "orig_argv", ["python3", "-m", "sodeep", "bench", "--quick"])
    assert main(["bench", "--quick", "--parts", "speed", "--out", str(out), "--overwrite"]) == 130
    assert "; continue with: python3 -m sodeep bench --quick --parts speed --out" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    assert main(["bench", "--quick", "--parts", "speed", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["speed"]


def test_an_interrupted_benchmark_has_the_plots_of_its_finished_parts(tmp_path, monkeypatch):
    import sodeep.benchmark.learning_to_sort as learning_to_sort

    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(learning_to_sort, "run_job", interrupted)
    out = tmp_path / "out"
    assert main(["bench", "--quick", "--workers", "1", "--parts", "speed", "sorting", "--out", str(out)]) == 130
    assert (out / "bench_speed.png").read_bytes().startswith(b"\x89PNG") and not (out / "bench_sorting.png").exists()


def test_a_stop_signal_while_a_part_is_written_waits_for_its_plots(tmp_path, monkeypatch):
    """Ctrl-C as a finished part's results.json is written: its markdown and plot are written too,
    then the command stops as interrupted, before the next part."""
    import os
    import signal

    import sodeep.benchmark.report as report

    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    write = report.write_results
    calls = []

    def interrupted_while_writing(*args):
        calls.append(args)
        if len(calls) == 2:  # the first records the settings; the second, the speed part
            os.kill(os.getpid(), signal.SIGINT)
        return write(*args)

    monkeypatch.setattr(report, "write_results", interrupted_while_writing)
    out = tmp_path / "out"
    assert main(["bench", "--quick", "--workers", "1", "--parts", "speed", "fidelity", "--out", str(out)]) == 130
    assert (out / "bench_speed.png").read_bytes().startswith(b"\x89PNG")
    assert "speed" in (out / "results.md").read_text().lower()
    assert json.loads((out / "results.json").read_text())["wall_seconds"].keys() == {"speed"}


def test_resume_keeps_finished_parts_and_trainings_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    import sodeep.benchmark.learning_to_sort as learning_to_sort
    import sodeep.benchmark.run as run

    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    argv = ["bench", "--quick", "--workers", "1", "--parts", "fidelity", "sorting", "--seeds", "0", "1", "2"]
    straight = tmp_path / "straight"
    assert main([*argv, "--out", str(straight)]) == 0
    original, trained = learning_to_sort.run_job, []

    def interrupted_third(job, *args):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(job)
        return original(job, *args)

    monkeypatch.setattr(learning_to_sort, "run_job", interrupted_third)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 130
    message = capsys.readouterr().err
    assert "keep the finished parts (fidelity); 2 finished learning-to-sort trainings kept; continue with:" in message
    first_fidelity = json.loads((out / "results.json").read_text())["fidelity"]
    fidelity_calls = []
    monkeypatch.setattr(run, "_keep_part", lambda *a, _keep=run._keep_part: fidelity_calls.append(a[0]) or _keep(*a))
    trained.clear()
    monkeypatch.setattr(learning_to_sort, "run_job", lambda job, *args: trained.append(job) or original(job, *args))
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    results, expected = (json.loads((folder / "results.json").read_text()) for folder in (out, straight))
    assert fidelity_calls == ["fidelity"] and results["fidelity"] == first_fidelity
    assert len(trained) == len(expected["sorting"]) - 2  # the two finished trainings were not run again
    drop = ("seconds", "wall_seconds", "train_seconds")
    assert [{k: v for k, v in row.items() if k not in drop} for row in results["sorting"]] == [
        {k: v for k, v in row.items() if k not in drop} for row in expected["sorting"]
    ]
    with pytest.raises(
        ValueError,
        match=r"holds a benchmark of other settings \(seeds: 0 1 2 -> 0 1\); resume it with its own",
    ):
        main([*argv[:-1], "--out", str(out), "--resume"])  # other seeds
    trained.clear()
    reordered = [*argv[:-3], "2", "0", "1"]  # the same seeds: the jobs run by seed whatever their order
    assert main([*reordered, "--out", str(out), "--resume"]) == 0 and trained == []


def test_fidelity_names_the_rankers_it_leaves_out():
    from sodeep.benchmark.fidelity import run_fidelity
    from sodeep.benchmark.rankers import available_families
    from sodeep.benchmark.report import skipped_markdown
    from sodeep.benchmark.run import benchmark_rankers

    rankers = [ranker for ranker in benchmark_rankers(available_families()[0]) if ranker.family == "sodeep (shipped)"]
    rows, skipped = run_fidelity(rankers, [20000], sequences=1, progress=lambda line: None)
    assert rows == [] and {row["ranker"] for row in skipped} == {ranker.label for ranker in rankers}
    assert all(row["part"] == "fidelity" and row["reason"].startswith("accepts n") for row in skipped)
    assert skipped_markdown(skipped)[2].startswith("- sodeep (shipped) floor=0.1 (fidelity): accepts n")
    rows, skipped = run_fidelity(rankers[:1], [100], sequences=2, max_elements=10, progress=lambda line: None)
    assert rows == [] and skipped[0]["reason"].startswith("memory: ~")


def test_a_resume_that_keeps_every_part_keeps_them_in_results_json_whatever_the_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--workers", "1"]) == 0
    before = json.loads((out / "results.json").read_text())
    assert main(["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--workers", "2", "--resume"]) == 0
    after = json.loads((out / "results.json").read_text())
    assert after["fidelity"] == before["fidelity"] and after["wall_seconds"] == before["wall_seconds"]
    with pytest.raises(ValueError, match=r"other settings \(fidelity_sequences: 4 -> 5\)"):
        monkeypatch.setattr(
            BenchConfig, "quick", classmethod(lambda cls, **o: cls(**{**TINY, "fidelity_sequences": 5, **o}))
        )
        main(["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--resume"])


@pytest.mark.parametrize(
    "held, wanted, advice",
    [
        ("quick", "full", "(it ran with --quick: BenchConfig.quick() from Python)"),
        ("full", "quick", "(it ran without --quick: BenchConfig() from Python)"),
        ("quick", "quick-seeds", "; resume it with its own settings, or"),  # --seeds, not the preset
    ],
)
def test_resuming_across_the_quick_preset_says_which_it_ran(tmp_path, held, wanted, advice):
    from sodeep.benchmark import run
    from sodeep.benchmark.config import BenchConfig
    from sodeep.benchmark.report import SCHEMA

    configs = {
        "quick": BenchConfig.quick(out=str(tmp_path)),
        "full": BenchConfig(out=str(tmp_path)),
        "quick-seeds": BenchConfig.quick(out=str(tmp_path), seeds=(4,)),
    }
    record = {"schema": SCHEMA, "config": configs[held].as_dict(), "wall_seconds": {}, "skipped": []}
    (tmp_path / "results.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="holds a benchmark of other settings") as refused:
        run._previous_results(tmp_path, configs[wanted])
    assert advice in str(refused.value)


def test_a_resume_adds_parts_whose_settings_the_folders_parts_do_not_read(tmp_path, monkeypatch, capsys):
    """A finished fidelity part is kept; speed is added with its own settings, and --seeds, which
    neither reads, may change.  A setting the folder's part reads may not."""
    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--parts", "fidelity", "--out", str(out)]) == 0
    fidelity = json.loads((out / "results.json").read_text())["fidelity"]
    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **o: cls(**{**TINY, "speed_lengths": (5,), **o})))
    capsys.readouterr()
    assert main(["bench", "--quick", "--parts", "speed", "--seeds", "4", "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "parts: fidelity speed (the folder's, then those added)" in printed and "== fidelity: kept" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["fidelity"] == fidelity and {row["n"] for row in results["speed"]} == {5}
    assert results["config"]["parts"] == ["fidelity", "speed"] and results["config"]["speed_lengths"] == [5]
    assert results["config"]["seeds"] == [0]  # read by no part it holds: as it was
    assert [entry["parts"] for entry in results["resumed"]] == [["speed"]]
    assert main(["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--resume"]) == 0
    assert "parts: fidelity speed (the folder's)\n" in capsys.readouterr().out  # nothing added, the folder's kept
    monkeypatch.setattr(
        BenchConfig, "quick", classmethod(lambda cls, **o: cls(**{**TINY, "fidelity_sequences": 5, **o}))
    )
    # speed is the folder's part now: its lengths are held too.
    with pytest.raises(ValueError, match=r"other settings \(fidelity_sequences: 4 -> 5, speed_lengths: 5 -> 8\)"):
        main(["bench", "--quick", "--parts", "regression", "--out", str(out), "--resume"])


def test_a_resume_where_other_rankers_can_run_is_refused(tmp_path, monkeypatch):
    """A package installed or removed since the folder's benchmark started: its kept parts would
    compare other rankers than its new ones, with nothing left out said about them."""
    import sodeep.benchmark.run as run

    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    out = tmp_path / "bench"
    argv = ["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--workers", "1"]
    families, missing = run.available_families()
    gone = families[-1].name
    monkeypatch.setattr(run, "available_families", lambda: (families[:-1], {**missing, gone: "ImportError: hidden"}))
    assert main(argv) == 0
    monkeypatch.setattr(run, "available_families", lambda: (families, missing))
    with pytest.raises(ValueError, match=f"other rankers \\({gone} can run here and could not then\\): resume it with"):
        main([*argv, "--resume"])
    monkeypatch.setattr(run, "available_families", lambda: (families[1:], missing))
    with pytest.raises(ValueError, match=f"\\({families[0].name} ran then and cannot run here; {gone} can run here"):
        main([*argv, "--resume"])


def test_a_resume_after_a_training_row_cut_short_keeps_every_row_whole(tmp_path, monkeypatch, capsys):
    import sodeep.benchmark.learning_to_sort as learning_to_sort

    monkeypatch.setattr(BenchConfig, "quick", classmethod(lambda cls, **overrides: cls(**{**TINY, **overrides})))
    argv = ["bench", "--quick", "--workers", "1", "--parts", "sorting", "--seeds", "0", "1"]
    original, trained = learning_to_sort.run_job, []

    def interrupted_second(job, *args):
        if trained:
            raise KeyboardInterrupt
        trained.append(job)
        return original(job, *args)

    monkeypatch.setattr(learning_to_sort, "run_job", interrupted_second)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 130
    rows_path = out / "sorting_rows.jsonl"
    whole = rows_path.read_text()
    # Rows of no training of this run (written by hand, or another tool), then a row the
    # interruption cut short.
    foreign = '{"ranker": "x", "seed": 0}\n[1, 2]\n'
    first = json.loads(whole.splitlines()[0])
    damaged = [
        first | {"exact_match": "x"},
        first | {"value": [1]},
        first | {"seed": 0.0},
        {key: value for key, value in first.items() if key != "ranker"},
    ]
    damaged_lines = "".join(json.dumps(row) + "\n" for row in damaged) + "\udcff\n"
    text = damaged_lines + whole + foreign + whole + whole.splitlines()[0][:40]
    rows_path.write_bytes(text.encode("utf-8", "surrogateescape"))  # with a byte that is not UTF-8
    monkeypatch.setattr(learning_to_sort, "run_job", original)
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert f"sorting: 1 finished training kept from {rows_path}" in capsys.readouterr().out
    lines = rows_path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line parses
    assert len(rows) == len(json.loads((out / "results.json").read_text())["sorting"]) and lines[0] == whole.strip()
    assert all(isinstance(row["ranker"], str) and isinstance(row["exact_match"], float) for row in rows)


def test_a_ranker_left_out_as_too_slow_reports_the_call_that_decided_it(monkeypatch):
    """The call that finds a ranker over the limit is the time reported for it: a second, warmer
    call could show it under the limit it was left out for."""
    import sodeep.benchmark.speed as speed
    from sodeep.benchmark.rankers import available_families
    from sodeep.benchmark.run import benchmark_rankers

    rankers = [ranker for ranker in benchmark_rankers(available_families()[0]) if ranker.label == "exact"]
    calls = iter([0.5, 0.001, 0.001])  # cold, then warm: seconds per call
    monkeypatch.setattr(speed, "_single_call_seconds", lambda *args: next(calls))
    rows, skipped = speed.run_speed(rankers, [8, 16], [4], 1, 0.001, 0.01, float("inf"), progress=lambda line: None)
    forward = [row for row in rows if row["mode"] == "forward"]
    assert [(row["n"], row["seconds"]) for row in forward] == [(8, 0.5)]
    assert [row["reason"] for row in skipped if row["n"] == 16][0] == "over 0.01 s per call at n=8"


def test_a_best_row_that_mixes_settings_says_which_n_each_won():
    from sodeep.benchmark.report import sorting_markdown

    def chosen(setting, loss, exact):
        return {"setting": setting, "loss": loss, "seeds": 1, "exact_match": exact, "exact_match_sd": 0.0,
                "element_wise": exact, "element_wise_sd": 0.0, "train_seconds": 1.0}  # fmt: skip

    summary = [
        {"family": "diffsort", "n": n, "default": chosen("steepness=10", "native", 0.5), "best": chosen(*best, 0.6)}
        for n, best in ((3, ("steepness=30", "native")), (5, ("steepness=30", "native")), (9, ("steepness=10", "rank")))
    ]
    lines = "\n".join(sorting_markdown(summary))
    assert "| diffsort | default: steepness=10 native | " in lines
    assert "| diffsort | best: steepness=30 native (n=3, 5), steepness=10 rank (n=9) | " in lines


def test_mnist_files_are_checked_by_name_for_parts_that_do_not_read_them(tmp_path, capsys):
    # The settings record the files whatever the parts (a later --resume may add the sorting part).
    from sodeep.cli import main as sodeep_main

    named_wrongly = tmp_path / "afile"
    named_wrongly.write_text("hi\n")
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as stopped:
        sodeep_main(
            ["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--mnist", *[str(named_wrongly)] * 2]
        )
    assert stopped.value.code == 2 and not out.exists()
    assert f"MNIST file {named_wrongly}: --mnist takes the training files, named train-*" in capsys.readouterr().err
    # Named as the part needs them, they are recorded, and the run says that its results use none.
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp_path / name).write_bytes(b"\0" * 16)
    files = [str(tmp_path / "train-images-idx3-ubyte"), str(tmp_path / "train-labels-idx1-ubyte")]
    assert sodeep_main(["bench", "--quick", "--parts", "fidelity", "--out", str(out), "--mnist", *files]) == 0
    assert (
        "note: --mnist is read by the sorting part only, which --parts leaves out: these results use no MNIST"
        in capsys.readouterr().err
    )


def test_one_seed_has_no_spread_and_its_spread_is_null_in_the_results(tmp_path):
    import json
    import math

    from sodeep.benchmark.report import json_text, mean_sd, null_as_nan

    assert mean_sd([0.5])[0] == 0.5 and math.isnan(mean_sd([0.5])[1])
    assert mean_sd([0.25, 0.75]) == (0.5, pytest.approx(math.sqrt(0.125)))
    assert all(math.isnan(value) for value in mean_sd([math.nan]))
    written = json.loads(json_text({"exact_match": 0.5, "exact_match_sd": mean_sd([0.5])[1]}))
    assert written == {"exact_match": 0.5, "exact_match_sd": None}
    assert math.isnan(null_as_nan(written)["exact_match_sd"])


def test_a_bench_folder_that_is_not_a_path_is_refused_when_configured():
    with pytest.raises(TypeError, match="out must be a folder path \\(str or Path\\), got int 3"):
        BenchConfig(out=3)


def test_a_regression_ranker_of_another_n_is_left_out_in_the_words_of_the_other_parts():
    from sodeep.benchmark.rankers import available_families
    from sodeep.benchmark.regression import run_regression
    from sodeep.benchmark.run import benchmark_rankers

    fixed = [ranker for ranker in benchmark_rankers(available_families()[0]) if ranker.lengths[0] == ranker.lengths[1]]
    assert fixed, "the benchmark has rankers of one n (the original SoDeep sorters)"
    rows, skipped = run_regression(fixed[:1], [0], 1, 2, 0.01, progress=lambda line: None)
    assert fixed[0].label not in {row["ranker"] for row in rows}
    assert [entry["reason"] for entry in skipped if entry["ranker"] == fixed[0].label] == [
        f"accepts n = {fixed[0].lengths[0]} only, not the batch of 2"
    ]
