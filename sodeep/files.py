"""Atomic file writes: a reader (or an interrupted run) never sees a half-written file.

Every writer here goes to a temporary file in the destination's folder and then ``os.replace``
renames it over the destination, which POSIX and Windows both make atomic on one file system.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(stream)`` on a temporary binary file beside ``path``, then rename it to ``path``.

    The folder is created if needed; on any error (or an interrupt) the temporary file is removed
    and ``path`` is left as it was.  The file gets mode 0644 (``mkstemp`` makes 0600 files, and
    results and checkpoints are meant to be shared).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> atomic_write(folder / "a.bin", lambda stream: stream.write(b"abc")).read_bytes()
        b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 1) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (serialized first: a payload that is not
    JSON-able raises before anything is written)."""
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda stream: torch.save(payload, stream))
