"""Cancellation and progress for long operations (propagation, export, training, downloads)."""

from __future__ import annotations

import threading
from typing import Callable, Optional

from OncoSegLib.errors import Cancelled

# progress(done, total, message) -> None. Called from the worker thread; GUIs marshal it to their main thread.
ProgressCallback = Callable[[int, int, str], None]


class CancelToken:
    """Thread-safe flag a GUI (or Ctrl+C handler) sets and a worker polls between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user", hint="partial results were kept")


def report(progress: Optional[ProgressCallback], done: int, total: int, message: str = "") -> None:
    """Call ``progress`` when one is given."""
    if progress is not None:
        progress(done, total, message)
