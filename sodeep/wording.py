"""Wording shared by the command-line messages."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``"1 row"``, ``"2 rows"``: a count and its noun (plural by an added ``s``)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
