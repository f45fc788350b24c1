import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from sodeep.pretraining import threads_beside
from sodeep.runs import SetupWarning
from sodeep.stream_loader import (
    CHUNKS_AHEAD,
    MAX_BATCHES_PER_CHUNK,
    SequenceChunks,
    UnpackedChunks,
    batches_per_chunk,
    stream_loader,
)
from sodeep.synthetic import SyntheticSequences


def stream_order(stream: SyntheticSequences, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of this process, one ``batch()`` call each (the reference)."""
    return [stream.batch(stream.process_batch_index(position)) for position in range(count)]


def assert_same_batches(loaded, expected) -> None:
    assert len(loaded) == len(expected)
    for (scores, ranks), (want_scores, want_ranks) in zip(loaded, expected):
        assert torch.equal(scores, want_scores) and torch.equal(ranks, want_ranks)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_the_loader_gives_the_stream_in_order_for_any_number_of_workers(workers):
    stream = SyntheticSequences(5, [2, 3, 17], seed=4, start_batch=7)
    loaded = list(itertools.islice(stream_loader(stream, workers), 70))  # 3 chunks of 32, cut short
    assert_same_batches(loaded, stream_order(stream, 70))
    assert all(scores.shape == (5, scores.shape[1]) and scores.shape[1] in (2, 3, 17) for scores, _ in loaded)


@pytest.mark.parametrize("chunk_batches", [1, 3])
@pytest.mark.parametrize("workers", [2, 3])
def test_chunks_of_any_size_keep_each_process_share_of_a_distributed_stream(workers, chunk_batches):
    for rank in range(2):
        stream = SyntheticSequences(3, [4, 9], seed=1, start_batch=5, rank=rank, world_size=2)
        loaded = list(itertools.islice(UnpackedChunks(stream, workers, chunk_batches), 11))
        assert_same_batches(loaded, stream_order(stream, 11))
        # The process's share: stream batches 5 + rank, 7 + rank, ...
        assert torch.equal(loaded[1][0], stream.batch(5 + rank + 2)[0])


def test_a_chunk_packs_its_batches_back_to_back_in_its_slot():
    stream = SyntheticSequences(2, [3, 5], seed=0)
    chunks = SequenceChunks(stream, 4, slots=3)
    assert chunks.buffer.shape == (3, 2, 4 * 2 * 5) and chunks.buffer.is_shared()
    assert chunks.buffer.dtype == torch.float32
    index, lengths = chunks.chunk(4)  # batches 16..19, in slot 1
    assert index == 4 and len(lengths) == 4 and all(length in (3, 5) for length in lengths)
    first = stream.batch(16)
    assert torch.equal(chunks.buffer[1, 0, : first[0].numel()].view(2, -1), first[0])
    assert torch.equal(chunks.buffer[1, 1, : first[1].numel()].view(2, -1), first[1])
    assert_same_batches(list(chunks.batches(index, lengths)), [stream.batch(k) for k in range(16, 20)])


@pytest.mark.parametrize("spare_slot", [True, False])
def test_a_slot_is_written_again_only_after_its_chunk_is_handed_over(spare_slot):
    # The DataLoader keeps CHUNKS_AHEAD items per worker in flight: with that many slots per
    # worker and no spare, a worker overwrites the chunk that the training process is reading.
    stream, workers = SyntheticSequences(2, [3, 4], seed=3), 2
    chunks = SequenceChunks(stream, 2, slots=CHUNKS_AHEAD * workers + spare_slot)
    loader = DataLoader(chunks, batch_size=None, num_workers=workers, prefetch_factor=CHUNKS_AHEAD)
    loaded = []
    for index, lengths in itertools.islice(loader, 8):
        for batch in chunks.batches(index, lengths):
            time.sleep(0.03)  # a slow training step: the workers are long done with what they may make
            loaded.append(batch)
    expected = stream_order(stream, 16)
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(loaded, expected))
    assert same == spare_slot


def test_chunks_stay_small_for_large_batches_and_hold_many_small_ones():
    assert batches_per_chunk(SyntheticSequences(64, range(2, 257))) == MAX_BATCHES_PER_CHUNK
    assert batches_per_chunk(SyntheticSequences(4096, [16384])) == 1
    assert batches_per_chunk(SyntheticSequences(256, [1000])) == 4


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_a_bad_worker_count_is_refused(workers):
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        stream_loader(SyntheticSequences(2, [3]), workers)
    with pytest.raises(ValueError, match="chunk_batches"):
        SequenceChunks(SyntheticSequences(2, [3]), 0)
    with pytest.raises(ValueError, match="slots"):
        SequenceChunks(SyntheticSequences(2, [3]), 1, slots=0)


def test_training_threads_leave_a_core_per_data_worker_and_are_restored(monkeypatch):
    monkeypatch.setattr("sodeep.pretraining.available_cores", lambda: 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with threads_beside(1):
            assert torch.get_num_threads() == 3
        with pytest.warns(SetupWarning, match="data_workers=8 leaves none of the 4 CPU cores .* use data_workers=3"):
            with threads_beside(8):
                assert torch.get_num_threads() == 1
        with threads_beside(0):
            assert torch.get_num_threads() == 4
        monkeypatch.setattr("sodeep.pretraining.available_cores", lambda: 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the default single worker on one core: no warning
            with threads_beside(1):
                assert torch.get_num_threads() == 1
        monkeypatch.setattr("sodeep.pretraining.available_cores", lambda: 4)
        torch.set_num_threads(2)  # fewer than the cores left free: kept
        with threads_beside(1):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_torch_warning_about_too_many_workers_is_left_to_ours_within_the_block(monkeypatch):
    monkeypatch.setattr("sodeep.pretraining.available_cores", lambda: 2)
    torch_warning = "This DataLoader will create 3 worker processes in total. Our suggested max number of worker ..."
    before = torch.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with threads_beside(3):
                warnings.warn(torch_warning, UserWarning, stacklevel=1)  # as torch's DataLoader words it
                warnings.warn("another warning", UserWarning, stacklevel=1)
            warnings.warn(torch_warning, UserWarning, stacklevel=1)  # outside the block: shown again
    finally:
        torch.set_num_threads(before)
    messages = [(warning.category, str(warning.message)) for warning in caught]
    assert messages[0][0] is SetupWarning and "data_workers=3 leaves none of the 2 CPU cores" in messages[0][1]
    assert messages[1:] == [(UserWarning, "another warning"), (UserWarning, torch_warning)]


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_data_worker_outlives_a_stop_signal_so_the_run_can_finish_its_step(signal_number):
    stream = SyntheticSequences(2, [3, 4], seed=2)
    before = {child.pid for child in multiprocessing.active_children()}
    loader = stream_loader(stream, workers=1)
    batches = iter(loader)
    loaded = [next(batches)]
    (worker,) = [child for child in multiprocessing.active_children() if child.pid not in before]
    os.kill(worker.pid, signal_number)
    time.sleep(0.5)
    loaded += list(itertools.islice(batches, 3 * MAX_BATCHES_PER_CHUNK))  # new chunks from the worker
    assert_same_batches(loaded, stream_order(stream, 1 + 3 * MAX_BATCHES_PER_CHUNK))
    loader.close()  # as the run does once it has stopped: the worker ends now, not at its grace
    assert not worker.is_alive()


def test_a_signalled_worker_that_nobody_closes_ends_after_its_grace(monkeypatch):
    monkeypatch.setattr("sodeep.stream_loader.STOP_GRACE_SECONDS", 1)  # read by the forked worker
    before = {child.pid for child in multiprocessing.active_children()}
    batches = iter(stream_loader(SyntheticSequences(2, [3]), workers=1))
    next(batches)
    (worker,) = [child for child in multiprocessing.active_children() if child.pid not in before]
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert worker.is_alive()
    with pytest.raises(RuntimeError, match="DataLoader worker"):  # the DataLoader reports it gone
        deadline = time.monotonic() + 10
        while worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        next(itertools.islice(batches, MAX_BATCHES_PER_CHUNK * 3, None))
    assert not worker.is_alive()


def test_closing_a_loader_ends_its_workers():
    loader = stream_loader(SyntheticSequences(2, [3, 4]), workers=2)
    before = {child.pid for child in multiprocessing.active_children()}
    first, second = iter(loader), iter(loader)
    next(first), next(second)
    started = [child for child in multiprocessing.active_children() if child.pid not in before]
    assert len(started) == 4
    loader.close()
    assert not any(child.is_alive() for child in started)
    with pytest.raises(StopIteration):
        next(first)


def test_a_process_holding_a_loader_exits_at_once(tmp_path):
    program = (
        "from sodeep.synthetic import SyntheticSequences; from sodeep.stream_loader import stream_loader; "
        "held = iter(stream_loader(SyntheticSequences(2, [3, 4]), workers=1)); next(held)"
    )  # the loader is still referenced when the interpreter exits: multiprocessing ends its worker
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60, cwd=tmp_path)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_to_the_whole_process_group_stops_the_run_resumably(tmp_path, signal_number):
    """A terminal's Ctrl-C, or a scheduler's SIGTERM, reaches the data worker too: the run still
    saves its step and exits with the resume line, and no process of the group is left."""
    process = pretraining_with_a_checkpoint(tmp_path / "run")
    try:
        os.killpg(process.pid, signal_number)
        _, error = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    last_line = error.decode().strip().splitlines()[-1]
    assert process.returncode == 130, error.decode()[-2000:]
    assert last_line.startswith("interrupted at step ") and last_line.endswith("--resume")
    assert not live_processes_of_group(process.pid, wait=10.0)  # the data worker is gone with its run


def pretraining_with_a_checkpoint(out) -> subprocess.Popen:
    """A long ``sodeep pretrain`` run into ``out`` in its own process group (one data worker),
    returned once it has saved its first checkpoint."""
    program = "import sys; from sodeep.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", program, "pretrain", "--steps", "100000", "--batch-size", "8"]
    command += ["--lengths", "2-24", "--sorter", '{"capacity": 32}', "--checkpoint-every", "5"]
    command += ["--validation-every", "100000", "--wandb", "disabled", "--out", str(out)]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        command, cwd=out.parent, env=environment, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.ckpt").is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(process.communicate()[1].decode()[-2000:])
        time.sleep(0.2)
    return process


def live_processes_of_group(group: int, wait: float) -> list[str]:
    """``ps`` lines of the processes of ``group`` still running (zombies, which only wait for
    their parent or init to reap them, left out) once none are, or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        listed = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-g", str(group)], capture_output=True, text=True)
        live = [line for line in listed.stdout.splitlines() if line.strip() and not line.lstrip().startswith("Z")]
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_end_at_once_with_a_training_process_killed_outright(tmp_path):
    program = (
        "import sys, multiprocessing; from sodeep.synthetic import SyntheticSequences; "
        "from sodeep.stream_loader import stream_loader; "
        "held = iter(stream_loader(SyntheticSequences(2, [3, 4]), workers=2)); next(held); "
        "print(*[child.pid for child in multiprocessing.active_children()], flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(pid) for pid in process.stdout.readline().split()]
        assert len(workers) == 2
        process.kill()  # SIGKILL: no exit handler runs
        process.wait(timeout=30)
        deadline = time.monotonic() + 2  # PyTorch's own watchdog would take about 5 s more
        while any(_is_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_is_running(pid) for pid in workers)
    finally:
        process.kill()
        process.wait()


def test_a_worker_that_starts_after_the_training_process_was_killed_ends_at_once(tmp_path):
    # Under load a worker may reach its start-up after the training process is already gone.
    program = (
        "import multiprocessing, sys, time; from sodeep.stream_loader import _end_with_the_training_process\n"
        "def late_worker():\n"
        "    time.sleep(2); _end_with_the_training_process(); time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.set_start_method('fork')\n"
        "    worker = multiprocessing.Process(target=late_worker); worker.start()\n"
        "    print(worker.pid, flush=True); sys.stdin.read()\n"
    )
    (tmp_path / "late.py").write_text(program)
    process = subprocess.Popen(
        [sys.executable, "late.py"], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    worker = None
    try:
        worker = int(process.stdout.readline())
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 20  # the worker would otherwise sleep 60 s more
        while _is_running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _is_running(worker)
    finally:
        process.kill()
        process.wait()
        if worker is not None and _is_running(worker):
            os.kill(worker, signal.SIGKILL)


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (which only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_workers_started_by_spawn_or_a_fork_server_write_into_the_same_buffer(tmp_path, start_method):
    # macOS and Windows start workers with spawn (Python 3.14 on Linux: forkserver), which sends
    # the buffer to each worker by pickling it, as a handle on the same shared memory.
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start_method} start method here")
    program = tmp_path / "spawned.py"
    program.write_text(
        "import itertools, multiprocessing, torch\n"
        "from sodeep.synthetic import SyntheticSequences\n"
        "from sodeep.stream_loader import stream_loader\n"
        "if __name__ == '__main__':\n"
        f"    multiprocessing.set_start_method({start_method!r})\n"
        "    stream = SyntheticSequences(3, [4, 9], seed=5)\n"
        "    loader = stream_loader(stream, workers=2)\n"
        "    loaded = list(itertools.islice(loader, 70))\n"
        "    loader.close()\n"
        "    expected = [stream.batch(k) for k in range(70)]\n"
        "    same = [torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(loaded, expected)]\n"
        "    assert len(loaded) == 70 and all(same), same\n"
    )
    subprocess.run([sys.executable, str(program)], check=True, timeout=120, cwd=tmp_path)


def test_a_run_whose_data_worker_is_killed_ends_in_one_line_that_resumes_it(tmp_path):
    process = pretraining_with_a_checkpoint(tmp_path / "run")
    try:
        listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True)
        (worker,) = [int(pid) for pid in listed.stdout.split()]
        os.kill(worker, signal.SIGKILL)
        _, error = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    lines = error.decode().strip().splitlines()
    assert process.returncode == 130, error.decode()[-2000:]
    # torch words the death "(pid N) is killed by signal" or "(pid(s) N) exited unexpectedly", by
    # which of its checks sees it first.
    assert lines[-1].startswith("interrupted at step ")
    assert f"DataLoader worker (pid {worker})" in lines[-1] or f"DataLoader worker (pid(s) {worker})" in lines[-1]
    assert lines[-1].endswith("--resume") and not any("Traceback" in line for line in lines)


def test_a_killed_worker_is_recognised_behind_the_error_that_wrapped_it():
    from sodeep.pretraining import _data_worker_ended

    killed = RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed. ")
    try:
        try:
            raise killed
        except RuntimeError as error:  # as inspect.getfullargspec wraps whatever it catches
            raise TypeError("unsupported callable") from error
    except TypeError as wrapped:
        assert _data_worker_ended(wrapped) is killed
    assert _data_worker_ended(killed) is killed
    assert _data_worker_ended(TypeError("unsupported callable")) is None
    assert _data_worker_ended(RuntimeError("CUDA out of memory")) is None
