"""``python -m sodeep`` and the ``sodeep`` console script: :func:`sodeep.cli.main`, reached
through :func:`main`, which takes a stop while the command's modules load."""

import signal
import sys

#: Exit status after SIGINT or SIGTERM, as :mod:`sodeep.run_folder` reports an interrupted command.
INTERRUPTED = 130


class _StartInterrupted(KeyboardInterrupt):
    """A stop while the command loads.  Its own class: where a plain ``KeyboardInterrupt`` passes
    through code run by ``exec`` (as module loading does), CPython ends the process with SIGINT on
    exit, whatever it caught and returned."""


def main() -> int:
    """Load the command line (torch with it: a second or two), then run it.  A Ctrl-C or SIGTERM
    while it loads ends in one line and status 130, as one later does, not in a traceback of the
    import (Ctrl-C) or a silent end (SIGTERM)."""

    def interrupted(number: int, frame: object) -> None:
        raise _StartInterrupted

    try:
        previous = {number: signal.signal(number, interrupted) for number in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        from sodeep.cli import main as run
    except _StartInterrupted:
        print("sodeep: interrupted while starting; nothing was done", file=sys.stderr)
        return INTERRUPTED
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
