"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash or cancel never leaves a half-written file under the user's chosen name, and an existing file is only
replaced once the new one is complete. ``os.replace`` is atomic on POSIX and Windows within one filesystem, which is
why the temporary file lives in the target's own folder (never in ``$TMPDIR``: an output on another filesystem, such
as ``/dev/shm`` or a network share, could not be renamed into place).

Permissions: ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 files and 0700 folders. Outputs are made readable as any
normal file would be: files get ``0o666 & ~umask`` and folders ``0o777 & ~umask`` (0644 / 0755 under the usual
umask 022) just before they are renamed into place, so another service account can read results when the umask
allows it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
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


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (e.g. 0o022), read without changing it where the OS allows.

    Linux exposes it in ``/proc/self/status``; elsewhere it is read with the set-and-restore idiom
    ``os.umask(0); os.umask(old)`` under a lock (another thread creating a file in that instant could still see
    umask 0, so the Linux path is preferred).
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old


def output_mode(folder: bool = False) -> int:
    """Permission bits a new output gets: ``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders."""
    return (0o777 if folder else 0o666) & ~current_umask()


def _chmod_output(path: Path, folder: bool = False) -> None:
    try:
        os.chmod(path, output_mode(folder))
    except OSError as exc:
        raise OutputPathError(path, exc) from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it to ``target``, on error delete it.

    Raises :class:`OutputPathError` (an InputError and an OSError) when the folder cannot be created or written,
    or ``target`` is a folder.

    ``suffix`` defaults to the target's full suffix (e.g. ``.nii.gz``) so that writers choosing a format by file
    name behave the same. The temporary file is ``.<name>.<random>.part<suffix>`` in the target's folder; before the
    rename it gets the mode of a normal new file (``0o666 & ~umask``, see the module doc).
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
        _chmod_output(tmp_path)
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise OutputPathError(target, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = ".partial") -> Path:
    """A new, uniquely named folder inside ``parent`` (created if missing) with a normal folder's mode
    (``0o777 & ~umask``, not ``mkdtemp``'s 0700): stage outputs there, then rename it into place.

    Raises :class:`OutputPathError` when ``parent`` cannot be created or written.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    except OSError as exc:
        raise OutputPathError(parent, exc) from None
    _chmod_output(path, folder=True)
    return path


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically and return the path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def replace_dir(staging: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Move the finished folder ``staging`` to ``dest``, replacing an existing ``dest`` (same filesystem).

    The old ``dest`` is renamed to ``.<name>.old`` first and removed only after the new folder is in place, so a
    crash leaves either the old or the new folder, never a mixture.
    """
    import shutil

    staging, dest = Path(staging), Path(dest)
    backup = None
    if dest.exists():
        backup = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        dest.rename(backup)
    staging.rename(dest)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return dest
