"""One watcher per inbox (and per outbox): an exclusive ``fcntl.flock`` on a hidden lock file.

The kernel releases a flock when its file descriptor closes, so the lock goes away with the process however it ends
(normal exit, exception, Ctrl+C, ``kill -9``); a stale lock file never blocks a restart. The holder writes its PID
into the file so that a second watcher can say who holds the lock. On Windows (no ``fcntl``) one byte past the PID is
locked with ``msvcrt.locking`` instead, also released by the OS when the process ends (that branch is not tested in
CI, which runs on Linux).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from types import TracebackType

from OncoSegLib.errors import InputError

LOCK_NAME = ".oncoseg-watch.lock"


class WatchLock:
    """Exclusive lock on ``folder/.oncoseg-watch.lock``; use as a context manager.

    Raises :class:`InputError` (naming the holder's PID) when another process holds it, or when the lock file
    cannot be created (no write access to the folder).
    """

    def __init__(self, folder: Path, role: str):
        self.path = Path(folder) / LOCK_NAME
        self.role = role  # "watching" / "writing to", for the message
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"cannot create the watcher lock file {self.path}: {exc.strerror}",
                             "the watcher needs write access to its inbox and outbox") from None
        try:
            _lock(fd)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", -1)):
                raise InputError(f"cannot lock {self.path}: {exc.strerror}",
                                 "put the inbox and outbox on a local filesystem that supports flock") from None
            raise InputError(f"another OncoSeg watcher ({holder}) is already {self.role} {self.path.parent}",
                             "stop it first; only one watcher may serve an inbox/outbox") from None
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode()[:_PID_BYTES].ljust(_PID_BYTES))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock; the file stays (harmless)
            self._fd = None

    def __enter__(self) -> "WatchLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


_PID_BYTES = 256  # the PID line is padded to this; Windows locks the byte after it


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, _PID_BYTES, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, _PID_BYTES).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    if text.startswith("pid "):
        return "PID " + text[4:].split()[0] + (" on " + text.split(" on ", 1)[1] if " on " in text else "")
    return "PID unknown"


__all__ = ["WatchLock", "LOCK_NAME"]
