"""Wording shared by the command-line messages."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar

#: How a note names settings for whoever runs the command: as keyword arguments (``features=``)
#: for a Python caller, the default; the command line's ``main`` sets it to spell them as flags.
advice_spelling: ContextVar[Callable[[str], str]] = ContextVar("advice_spelling", default=str)


FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32


def plural(count: int, noun: str) -> str:
    """``"1 row"``, ``"2 rows"``: a count and its noun (plural by an added ``s``)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def shown_float(value: float) -> str:
    """``repr(value)``, but ``0.1`` for a float32 number such as ``float(torch.tensor(0.1))``
    (0.10000000149011612): the shortest text that reads back as the same float32."""
    import numpy

    if math.isfinite(value) and abs(value) <= FLOAT32_MAX and float(numpy.float32(value)) == value:
        return str(numpy.float32(value))
    return repr(value)
