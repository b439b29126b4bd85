"""One watcher per inbox (and per outbox): an exclusive ``fcntl.flock`` on a hidden lock file.

The kernel releases a flock when its file descriptor closes, so the lock goes away with the process however it ends
(normal exit, exception, Ctrl+C, ``kill -9``); a stale lock file never blocks a restart. The holder writes its PID
into the file so that a second watcher can say who holds the lock. POSIX only (Linux/macOS, where AI nodes run).
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
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"cannot create the watcher lock file {self.path}: {exc.strerror}",
                             "the watcher needs write access to its inbox and outbox") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"cannot lock {self.path}: {exc.strerror}",
                                 "put the inbox and outbox on a local filesystem that supports flock") from None
            raise InputError(f"another OncoSeg watcher ({holder}) is already {self.role} {self.path.parent}",
                             "stop it first; only one watcher may serve an inbox/outbox") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
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


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    if text.startswith("pid "):
        return "PID " + text[4:].split()[0] + (" on " + text.split(" on ", 1)[1] if " on " in text else "")
    return "PID unknown"


__all__ = ["WatchLock", "LOCK_NAME"]
