"""What the benchmark scripts of ``experiments/benchmarks`` share: how they end on Ctrl-C, and
their jobs in worker processes, which stop with them."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import operator
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sodeep.run_folder import INTERRUPTED, RunInterrupted

#: What a benchmark script interrupted has kept, as its line says.
SCRIPT_KEPT = "nothing was written, and only a table printed above in full is complete"


def run_script(main: Callable[[], object], kept: str | Callable[[], str] = SCRIPT_KEPT) -> None:
    """Run a benchmark script's ``main``: Ctrl-C or SIGTERM ends it in one line on stderr,
    ``<script>: interrupted; <kept>`` (``kept()`` where it is a function: what was kept at the
    stop), and exit status 130, not a traceback; also where the process started with Ctrl-C
    ignored, as a background job of a shell script does (once the script's modules have loaded);
    a run the script started that stops on the signal (:class:`~sodeep.run_folder.RunInterrupted`)
    ends it alike, ``<script>: a run it started was interrupted at step 80; <kept>``.
    What it printed stays; what it writes at its end (``--json``) is not written."""
    previous = {number: signal.signal(number, signal.default_int_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        main()
    except (KeyboardInterrupt, RunInterrupted) as stop:
        # A run the script started (pretrain(), a brain-age run) takes the signal itself and says where it stopped.
        what = f"a run it started was {stop.summary}" if isinstance(stop, RunInterrupted) else "interrupted"
        print(f"{Path(sys.argv[0]).name}: {what}; {kept() if callable(kept) else kept}", file=sys.stderr)
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

    The workers start with Ctrl-C ignored, so that this process alone answers it, and each talks
    to this process through pipes of its own, so that a worker can be killed at any moment.  A job
    that raises ends the call with its exception; a worker that dies, with ``RuntimeError``.  On
    that, on Ctrl-C or SIGTERM under :func:`run_script` (``KeyboardInterrupt``), or on any error
    here, the workers are killed at once (a job that takes signals itself, such as a brain-age
    run, would otherwise finish its step and wait), what they were running is lost, and the
    exception goes on: a caller that keeps finished results collects them in ``on_result``."""
    try:
        count = operator.index(workers) if not isinstance(workers, bool) else 0
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    jobs = list(jobs)
    context = multiprocessing.get_context("spawn")
    started: list[tuple[Any, Any, Any]] = []  # (process, its task pipe, its result pipe)
    results: dict[int, Result] = {}
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # an ignored signal stays ignored in a child
        try:
            for _ in range(min(count, len(jobs))):
                task_reader, task_writer = context.Pipe(duplex=False)
                result_reader, result_writer = context.Pipe(duplex=False)
                process = context.Process(target=_work, args=(function, task_reader, result_writer), daemon=True)
                process.start()
                task_reader.close()
                result_writer.close()
                started.append((process, task_writer, result_reader))
        finally:
            signal.signal(signal.SIGINT, previous)
        running: dict[Any, tuple[int, Any, Any]] = {}  # result pipe -> (job, process, task pipe)
        waiting = iter(enumerate(jobs))

        def give_work(process: Any, task_writer: Any, result_reader: Any) -> None:
            task = next(waiting, None)
            task_writer.send(task)
            if task is not None:
                running[result_reader] = (task[0], process, task_writer)

        for worker in started:
            give_work(*worker)
        delivered = 0
        while running:
            for result_reader in multiprocessing.connection.wait(list(running)):
                job, process, task_writer = running.pop(result_reader)
                try:
                    succeeded, value = result_reader.recv()
                except EOFError:  # the worker's end of the pipe closed: it died
                    process.join()
                    raise RuntimeError(
                        f"the worker process running job {job + 1} ended (exit status {process.exitcode}) without "
                        "its result"
                    ) from None
                except Exception as error:  # what the worker sent does not unpickle here
                    raise RuntimeError(f"job {job + 1}'s outcome cannot be read back: {error!r}") from None
                if not succeeded:
                    raise _job_error(job, *value)
                results[job] = value
                give_work(process, task_writer, result_reader)
            while delivered in results and on_result is not None:
                on_result(delivered + 1, results[delivered])
                delivered += 1
    except BaseException:
        for process, _, _ in started:
            process.kill()
        raise
    finally:
        for process, task_writer, result_reader in started:
            process.join()
            task_writer.close()
            result_reader.close()
    return [results[job] for job in range(len(jobs))]


def _job_error(job: int, pickled: bytes | None, described: str, worker_traceback: str) -> BaseException:
    """The exception job ``job`` (from 0) raised, rebuilt from ``pickled``, raised from its
    worker's traceback; or a ``RuntimeError`` naming it (``described``, its ``repr``) where it
    cannot be rebuilt here."""
    try:
        error = pickle.loads(pickled) if pickled is not None else None
    except Exception as unpickling:  # an exception class whose arguments do not come back
        reason = f"it cannot be read back here: {unpickling!r}"
        error = None
    else:
        reason = "it cannot be sent back"
    if error is None:
        error = RuntimeError(f"job {job + 1} raised {described}, and {reason}")
    error.__cause__ = JobTraceback(worker_traceback) if worker_traceback else None
    return error


class JobTraceback(Exception):
    """The traceback of a job's exception in its worker process, which :func:`run_in_processes`
    raises the exception from: the job's own lines under "The above exception was the direct
    cause"."""

    def __str__(self) -> str:
        return "\n\n" + self.args[0].rstrip()


def _work(function: Callable[[Any], Any], tasks: Any, results: Any) -> None:
    """A worker of :func:`run_in_processes`: ``(index, job)`` from ``tasks`` until ``None``, and
    ``(True, function(job))`` to ``results``, or where it raises ``(False, (the exception pickled,
    or None where it does not pickle; its repr; its traceback's text))``."""
    _progress_bars_lock_within_the_process()
    while (task := tasks.recv()) is not None:
        try:
            outcome = (True, function(task[1]))
        except Exception as error:
            try:
                pickled = pickle.dumps(error)
            except Exception:
                pickled = None
            outcome = (False, (pickled, repr(error), traceback.format_exc()))
        try:
            results.send(outcome)
        except Exception as error:  # a result that does not pickle
            unsent = RuntimeError(f"job {task[0] + 1}'s result cannot be sent back: {error}")
            results.send((False, (pickle.dumps(unsent), repr(unsent), "")))


def _progress_bars_lock_within_the_process() -> None:
    """tqdm's bars in a worker lock with a thread lock, not the semaphore tqdm makes by default,
    which a killed worker would leave behind (Python then warns of a leaked semaphore at exit)."""
    try:
        import tqdm
    except ImportError:
        return
    tqdm.tqdm.set_lock(threading.RLock())
