"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash or cancel never leaves a half-written file under the user's chosen name, and an existing file is only
replaced once the new one is complete. ``os.replace`` is atomic on POSIX and Windows within one filesystem.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from OncoSegLib.errors import InputError


class OutputPathError(InputError, OSError):
    """The output cannot be written there (folder missing and not creatable, no permission, read-only, a folder
    of that name...). An :class:`~OncoSegLib.errors.InputError` (one-line CLI message) that is also an ``OSError``
    for callers that catch those."""

    def __init__(self, target: Path, exc: OSError):
        reason = exc.strerror or type(exc).__name__
        InputError.__init__(self, f"cannot write {target}: {reason}",
                            "choose an output path in a folder you can write to")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``target``, on error delete it.

    Raises :class:`OutputPathError` (an InputError and an OSError) when the folder cannot be created or written,
    or ``target`` is a folder.

    ``suffix`` defaults to the target's full suffix (e.g. ``.nii.gz``) so that writers choosing a format by file
    name behave the same.
    """
    target = Path(target)
    if suffix is None:
        suffix = "".join(target.suffixes)
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "is a folder", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    except OSError as exc:
        raise OutputPathError(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise OutputPathError(target, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the path."""
    return atomic_write_bytes(target, text.encode("utf-8"))
