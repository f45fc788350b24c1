"""Wording shared by the command-line messages."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

#: How a note names settings for whoever runs the command: as keyword arguments (``features=``)
#: for a Python caller, the default; the command line's ``main`` sets it to spell them as flags.
advice_spelling: ContextVar[Callable[[str], str]] = ContextVar("advice_spelling", default=str)


def plural(count: int, noun: str) -> str:
    """``"1 row"``, ``"2 rows"``: a count and its noun (plural by an added ``s``)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
