"""What the benchmark scripts of ``experiments/benchmarks`` share: how they end on Ctrl-C."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

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
