"""What the benchmark scripts of ``experiments/benchmarks`` share: how they end on Ctrl-C, and
their jobs in worker processes, which stop with them."""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sodeep.run_folder import INTERRUPTED

#: What a benchmark script interrupted has kept, as its line says.
SCRIPT_KEPT = "nothing was written, and only a table printed above in full is complete"


def run_script(main: Callable[[], object], kept: str | Callable[[], str] = SCRIPT_KEPT) -> None:
    """Run a benchmark script's ``main``: Ctrl-C or SIGTERM ends it in one line on stderr,
    ``<script>: interrupted; <kept>`` (``kept()`` where it is a function: what was kept at the
    stop), and exit status 130, not a traceback; also where the process started with Ctrl-C
    ignored, as a background job of a shell script does (once the script's modules have loaded).
    What it printed stays; what it writes at its end (``--json``) is not written."""
    previous = {number: signal.signal(number, signal.default_int_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        main()
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted; {kept() if callable(kept) else kept}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


Result = TypeVar("Result")


def run_in_processes(
    function: Callable[[Any], Result],
    jobs: Iterable[Any],
    workers: int,
    on_result: Callable[[int, Result], object] | None = None,
) -> list[Result]:
    """``[function(job) for job in jobs]``, in order, from ``workers`` processes (spawned: forked
    children may inherit a busy thread pool; ``function`` must be importable, a module's own), and
    ``on_result(index, result)`` (from 1) as each arrives in order.

    The workers start with Ctrl-C ignored, so that this process alone answers it.  On Ctrl-C, or
    SIGTERM under :func:`run_script` (``KeyboardInterrupt``), or any error here, the workers are
    killed at once (a job that takes signals itself, such as a brain-age run, would otherwise
    finish its step and wait), what they were running is lost, and the exception goes on: a
    caller that keeps finished results collects them in ``on_result``."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored signal stays ignored in a child
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_progress_bars_lock_within_the_process)
    finally:
        signal.signal(signal.SIGINT, previous)
    results: list[Result] = []
    try:
        for index, result in enumerate(pool.imap(function, jobs), 1):
            results.append(result)
            if on_result is not None:
                on_result(index, result)
    except BaseException:
        stops = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
        try:  # the stop takes a moment: no second one meanwhile
            for child in multiprocessing.active_children():
                child.kill()
            pool.terminate()
            pool.join()
        finally:
            for number, handler in stops.items():
                signal.signal(number, handler)
        raise
    pool.close()
    pool.join()
    return results


def _progress_bars_lock_within_the_process() -> None:
    """tqdm's bars in a worker lock with a thread lock, not the semaphore tqdm makes by default,
    which a killed worker would leave behind (Python then warns of a leaked semaphore at exit)."""
    try:
        import tqdm
    except ImportError:
        return
    tqdm.tqdm.set_lock(threading.RLock())
