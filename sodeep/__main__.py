"""``python -m sodeep`` and the ``sodeep`` console script: :func:`sodeep.cli.main`, reached
through :func:`main`, which takes a stop while the command's modules load."""

import os
import signal

#: Exit status after SIGINT or SIGTERM, as :mod:`sodeep.run_folder` reports an interrupted command.
INTERRUPTED = 130


def _stop_while_loading(number: int, frame: object) -> None:
    # Nothing is written while modules load, so the process ends here and now.  (An exception
    # raised here could surface inside torch's C++ import code, which then aborts the process.)
    os.write(2, b"sodeep: interrupted while starting; nothing was done\n")
    os._exit(INTERRUPTED)


def main() -> int:
    """Load the command line (torch with it: a second or two), then run it.  A Ctrl-C or SIGTERM
    while it loads ends the process in one line with status 130, as one later does, not with a
    traceback of the import (Ctrl-C) or silently (SIGTERM).  Ctrl-C then stops the command at
    every moment, also where the process started with it ignored (a job that a shell script
    starts in the background), as the command's runs take it once they start."""
    try:
        previous = {number: signal.signal(number, _stop_while_loading) for number in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    if previous.get(signal.SIGINT) is signal.SIG_IGN:
        previous[signal.SIGINT] = signal.default_int_handler
    try:
        from sodeep.cli import build_parser
        from sodeep.cli import main as run

        parser = build_parser()  # which loads every command's options
    finally:
        for number, handler in previous.items():
            if number == signal.SIGTERM and handler is signal.SIG_DFL:
                # As Ctrl-C from here on: until the command sets its own handlers (once Lightning
                # has loaded, seconds later), a SIGTERM ends it in the same one line, not silently.
                handler = _terminate_as_interrupt
            signal.signal(number, handler)
    return run(parser=parser)


def _terminate_as_interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


if __name__ == "__main__":
    raise SystemExit(main())
