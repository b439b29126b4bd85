"""Errors that reach the user: each says what went wrong and what to do about it."""

from __future__ import annotations


class OncoSegError(Exception):
    """An error with a user-facing message and an optional hint ("what to do").

    The CLI prints ``str(err)`` on one line and exits non-zero; the Slicer module shows it in a dialog.
    Messages never contain patient data (names, IDs, dates): only file paths, UIDs of series the user chose
    and technical facts.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} — {hint}")


class InputError(OncoSegError):
    """Bad input data: unreadable file, mixed or corrupt DICOM series, prompt outside the image, wrong modality."""


class ModelError(OncoSegError):
    """Model problems: missing checkpoint, incompatible weights, gated repository, out of memory, no GPU."""


class Cancelled(OncoSegError):
    """Raised when the user cancels a long operation; partial results are kept by the caller."""
