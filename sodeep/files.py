"""Atomic file writes: a reader (or an interrupted run) never sees a half-written file.

Every writer here goes to a temporary file in the destination's folder and then ``os.replace``
renames it over the destination, which POSIX and Windows both make atomic on one file system.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

#: Free space under which a failed ``torch.save`` is taken for a full disk.
FULL_DISK_BYTES = 2**20


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

    def write_file(handle: int, temporary: Path) -> None:
        with os.fdopen(handle, "wb") as stream:
            write(stream)

    return _write_then_rename(path, write_file)


def _folder_spelling(path: str | os.PathLike) -> str | None:
    """Why ``path``, as written, cannot name a file: empty, or ending with a path separator (which
    ``Path`` would drop, reading ``out/`` as a file ``out`` and ``""`` as the working folder)."""
    if not isinstance(path, str):
        return None
    if not path.strip():
        return "the path is empty"
    if path.endswith(tuple(separator for separator in (os.sep, os.altsep) if separator)):
        return f"{path} ends with {path[-1]}, which names a folder"
    return None


def _special_file(path: Path) -> str | None:
    """What ``path`` (through links) is where it is a device, a named pipe or a socket, which a
    renamed file would replace (``"a character device"``, ...); ``None`` for anything else."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    kinds = (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for is_kind, kind in kinds if is_kind(mode)), None)


#: Where a link names a process's open file (``/dev/stdout`` leads to ``/proc/self/fd/1``): the
#: file it resolves to is whatever the process has open, such as the log its output goes to.
_OPEN_FILE_PREFIXES = ("/proc/", "/dev/fd/", "/dev/stdin", "/dev/stdout", "/dev/stderr")


def _is_open_file(path: Path, prefixes: tuple[str, ...]) -> bool:
    """Whether ``path`` names a process's open file: it starts with one of ``prefixes``, or its
    folder, links followed, is a process's ``fd`` folder (``/proc/1234/fd``)."""
    absolute = os.path.normpath(path.absolute())
    folder = Path(os.path.realpath(os.path.dirname(absolute)))  # (realpath stops at a loop of links)
    return absolute.startswith(prefixes) or (folder.parts[:2] == ("/", "proc") and folder.name == "fd")


def _replaced_path(path: Path) -> tuple[Path, str | None]:
    """The file a write to ``path`` replaces, and why it may not (or ``None``): ``path`` itself,
    or for a link that leads to a file, that file (written through, the link kept).  A link to
    nothing yet is replaced by the file.  A process's open file (``/dev/fd/1``, ``/proc/self/fd/1``)
    and a link that passes through one (:data:`_OPEN_FILE_PREFIXES`) are refused: its file is the
    process's own output."""
    # /dev/fd/1 or /proc/self/fd/1 given as such, or a link on the way to one (through a link to
    # the folder /proc/self/fd, say): links to the file the output goes to.
    if _is_open_file(path, _OPEN_FILE_PREFIXES[1:]):
        return path, f"{path} is a process's open file, not a file that can be replaced"
    hop = path
    for _ in range(40):  # the operating system's own limit on links in a row
        if not hop.is_symlink():
            break
        hop = Path(os.path.normpath(hop.parent / os.readlink(hop)))
        if _is_open_file(hop, _OPEN_FILE_PREFIXES):
            return path, f"{path} leads to {hop}, a process's open file, not a file that can be replaced"
    if path.is_symlink() and path.is_file():
        return Path(os.path.realpath(path)), None
    return path, None


def _write_then_rename(path: str | os.PathLike, write_file: Callable[[int, Path], None]) -> Path:
    """Create a temporary file beside ``path``, let ``write_file(handle, temporary)`` fill it (and
    close ``handle``), then rename it to ``path``; see :func:`atomic_write`.  A link to a file is
    written through (the file it leads to is replaced, with its permissions, and the link stays);
    a link to nothing is replaced by the file; a device, named pipe, socket or a link to a
    process's open file (``/dev/stdout``) is refused."""
    spelling = _folder_spelling(path)
    if spelling is not None:
        raise IsADirectoryError(f"{spelling}; give the path of a file to write")
    given = Path(path)
    if given.is_dir():
        raise IsADirectoryError(f"{given} is a folder; give the path of a file to write")
    special = _special_file(given)
    path, problem = _replaced_path(given)
    if special is not None or problem is not None:
        problem = problem or f"{given} is {special}, not a file that can be replaced"
        raise FileExistsError(f"{problem}; give the path of a file to write")
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o644
    make_folder(path.parent, given)
    # The temporary name starts with at most 64 bytes of the file's own: a name near the file
    # system's limit (255 bytes) must not fail on its longer temporary name.
    prefix = path.name.encode("utf-8", "surrogateescape")[:64].decode("utf-8", "ignore")
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{prefix}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from error
    try:
        write_file(handle, Path(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        # A folder that turned read-only meanwhile keeps the temporary file: the error that
        # stopped the write is the one to report, not this one.
        with contextlib.suppress(OSError):
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename in (None, temporary):
            raise _naming(error, path) from error
        raise
    return given


def make_folder(folder: str | os.PathLike, made_for: str | os.PathLike | None = None) -> Path:
    """``folder`` and its missing parents, made; an ``OSError`` that :func:`os_error_line` turns
    into one line when a file (``NotADirectoryError``) or a link to nothing (``FileNotFoundError``)
    stands in the way.  ``made_for``: the path the error names, when the folder is made for a file.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> make_folder(folder / "a" / "b").is_dir()
        True
    """
    folder = Path(folder)
    named = str(made_for if made_for is not None else folder)
    if any(parent.is_file() for parent in (folder, *folder.parents)):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), named)
    link = _dead_link((folder, *folder.parents))
    if link is not None:
        raise FileNotFoundError(
            errno.ENOENT, f"Link to {os.readlink(link)}, which leads to no file or folder", str(link)
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dead_link(paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` that is a symbolic link leading to no file or folder (broken, or a loop)."""
    return next((link for link in paths if link.is_symlink() and not link.exists()), None)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` as the operating system raised it, naming ``path`` in place of the hidden
    temporary file beside it (a user knows the file they asked for, not ``.x.json.k3j2.tmp``)."""
    if error.errno is None or not error.strerror:
        return error
    return type(error)(error.errno, error.strerror, str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def finite_or_null(payload: Any) -> Any:
    """``payload`` with every NaN or infinite float, in nested dicts, lists and tuples, replaced
    by ``None``: written as ``null``, which strict JSON readers accept (``NaN`` they refuse).

    Example:
        >>> finite_or_null({"mae": float("nan"), "runs": [1.5, float("inf")]})
        {'mae': None, 'runs': [1.5, None]}
    """
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: finite_or_null(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite_or_null(value) for value in payload]
    return payload


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = 1) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (serialized first: a payload that is not
    JSON-able raises before anything is written)."""
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically.

    torch writes the temporary file by its name, not through a Python stream: an exception that
    a signal handler raises while torch holds its writer (a killed DataLoader worker's, during a
    checkpoint) then cannot leave the writer to finish a stream that is already closed when it is
    destroyed, which aborts the process at exit."""
    import torch

    def write_file(handle: int, temporary: Path) -> None:
        os.close(handle)
        # torch names the records inside the file after the file (``<name>/data.pkl``): written as
        # ``archive`` in a folder of its own, a checkpoint holds the names torch gives a stream, the
        # same bytes for the same payload whatever its path or temporary name.
        with tempfile.TemporaryDirectory(dir=temporary.parent, prefix=f"{temporary.name}.") as folder:
            written = Path(folder) / "archive"
            try:
                torch.save(payload, str(written))
            except RuntimeError as error:
                # torch's writer reports a failed write as a RuntimeError ("unexpected pos ...",
                # "iostream error"): a full disk, a quota or a file-size limit (ulimit -f), which
                # writing more to the same file from Python names.
                cause = _write_failure(written)
                if cause is None and shutil.disk_usage(temporary.parent).free < FULL_DISK_BYTES:
                    cause = errno.ENOSPC
                if cause is not None:
                    raise OSError(cause, os.strerror(cause), str(temporary)) from error
                raise
            os.replace(written, temporary)

    return _write_then_rename(path, write_file)


def _write_failure(path: Path) -> int | None:
    """The ``errno`` with which writing :data:`FULL_DISK_BYTES` more to ``path`` fails (``ENOSPC``,
    ``EDQUOT``, ``EFBIG``), or ``None`` where it does not."""
    try:
        with open(path, "ab") as stream:
            stream.write(bytes(FULL_DISK_BYTES))
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        return error.errno
    return None


def writable_file_problem(path: str | os.PathLike) -> str | None:
    """Why a file could not be written at ``path`` (one line), or ``None`` if it could: for
    checking an output path before long work rather than failing at its end.  Missing folders
    count as writable where they could be created; ``-`` is refused (a command-line user means
    standard output by it).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> writable_file_problem(folder / "new" / "results.json") is None
        True
        >>> writable_file_problem(folder)
        '... is a folder, not a file'
    """
    spelling = _folder_spelling(path)
    if spelling is not None:
        return spelling
    if isinstance(path, str) and path == "-":  # for command-line tools, standard output
        return "- (standard output) is not written to (./- names a file of that name)"
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    special = _special_file(path)
    if special is not None:
        return f"{path} is {special}, not a file that can be replaced"
    path, problem = _replaced_path(path)  # a link to a file: the file it leads to, in its own folder
    if problem is not None:
        return problem
    link = _dead_link(path.parents)
    if link is not None:
        return f"{link} is a link to {os.readlink(link)}, which leads to no file or folder, so {path} cannot be made"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, so {path} cannot be made"
    longest = _name_limit(ancestor)
    long_name = next((part for part in path.parts if len(os.fsencode(part)) > longest), None)
    if long_name is not None:
        return f"{path}: the name {long_name[:24]}... is longer than the file system's {longest} bytes"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable, so {path} cannot be made"
    try:  # os.access passes for root, and says nothing of read-only or special file systems
        handle, probe = tempfile.mkstemp(prefix=".sodeep-write-check-", dir=ancestor)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        known = error.errno != errno.ENOENT and error.strerror  # ENOENT: a file system of no files (/proc)
        reason = f" ({error.strerror.lower()})" if known else ""
        return f"{ancestor}: no file can be made there{reason}, so {path} cannot be made"
    return None


def _name_limit(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` takes (255 if unknown)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def replaceable_output_problem(path: str | os.PathLike, is_such_output: Callable[[str], bool], kind: str) -> str | None:
    """Why an output of ``kind`` should not be written at ``path`` (one line), or ``None``:
    :func:`writable_file_problem`, or an existing file that ``is_such_output`` does not recognise
    from its text (a data table, a checkpoint), which a mistyped output path would destroy.  An
    empty file may be replaced.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "ages.csv"
        >>> _ = file.write_text("age,thickness\\n31,2.5\\n")
        >>> replaceable_output_problem(file, lambda text: text.startswith("{"), "JSON")
        '... exists and is not JSON; writing JSON there would replace it'
    """
    problem = writable_file_problem(path)
    if problem or not Path(path).is_file() or Path(path).stat().st_size == 0:
        return problem
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        text = None
    if text is not None and is_such_output(text):
        return None
    return f"{path} exists and is not {kind}; writing {kind} there would replace it"


def json_output_problem(path: str | os.PathLike, is_such_output: Callable[[Any], bool], kind: str) -> str | None:
    """:func:`replaceable_output_problem` for a JSON output: an existing file may be replaced when
    it holds JSON that ``is_such_output`` recognises (what this output wrote before)."""

    def recognised(text: str) -> bool:
        try:
            return bool(is_such_output(json.loads(text)))
        except ValueError:
            return False

    return replaceable_output_problem(path, recognised, kind)


#: What to do about an operating system's refusal, by ``errno``.
_ADVICE = {
    errno.EACCES: "choose another path or change its permissions",
    errno.EPERM: "choose another path or change its permissions",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOSPC: "free some space or choose another path",
    errno.EFBIG: "a limit on file sizes stopped it (ulimit -f, the file system's): raise the limit or choose another path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "choose another path",
}
if hasattr(errno, "EDQUOT"):  # (not on every system)
    _ADVICE[errno.EDQUOT] = "free some space under the quota or choose another path"


#: Reasons a write fails whatever the path: where the error names no file, ``os_error_line`` names
#: the folder the command writes in.
WRITE_LIMITS = tuple(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, name))


def os_error_line(error: OSError, folder: str | os.PathLike | None = None) -> str:
    """One line for an ``OSError``: the path, the reason and what to do when the operating system
    raised it (``[Errno 13] Permission denied: 'x'`` becomes ``x: permission denied; choose
    another path or change its permissions``), else its own message.  A write that hit a limit
    (:data:`WRITE_LIMITS`) without naming its file (a stream of a library's) is placed in
    ``folder``, the folder the command writes in.

    Example:
        >>> os_error_line(PermissionError(errno.EACCES, "Permission denied", "/results"))
        '/results: permission denied; choose another path or change its permissions'
    """
    if error.errno is None or not error.strerror:
        return str(error)
    path = error.filename
    reason = error.strerror[0].lower() + error.strerror[1:]
    if error.errno == errno.ENOTDIR and path is not None:
        blocking = next((parent for parent in (Path(path), *Path(path).parents) if parent.is_file()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else reason
        path = None if blocking == Path(path) else path
    if path is None and folder is not None and error.errno in WRITE_LIMITS:
        where = f"writing in {folder}: "
    else:
        where = f"{path}: " if path is not None else ""
    return f"{where}{reason}; {_ADVICE.get(error.errno, 'check the path')}"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex): the identity of a data or checkpoint file, wherever it lies."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
