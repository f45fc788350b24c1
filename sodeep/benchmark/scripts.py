"""What the benchmark scripts of ``experiments/benchmarks`` share: how they end on Ctrl-C."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

from sodeep.run_folder import INTERRUPTED


def run_script(main: Callable[[], object]) -> None:
    """Run a benchmark script's ``main``: Ctrl-C or SIGTERM ends it in one line on stderr and
    exit status 130, not a traceback.  What it printed stays; what it writes at its end
    (``--json``) is not written."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        main()
    except KeyboardInterrupt:
        print(
            f"{Path(sys.argv[0]).name}: interrupted; nothing was written, and only a table printed above in full is complete",
            file=sys.stderr,
        )
        raise SystemExit(INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
