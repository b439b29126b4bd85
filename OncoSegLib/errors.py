"""Errors that reach the user: each says what went wrong and what to do about it."""

from __future__ import annotations

import errno
import os


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


#: errno values that mean the output device is full (no space, quota exhausted).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def output_write_error(path: str | os.PathLike, exc: OSError) -> InputError:
    """The one-line error for an output that could not be written (disk full, quota, I/O error) at ``path``."""
    if exc.errno in DISK_FULL_ERRNOS:
        return InputError(f"cannot write {path}: the disk is full ({exc.strerror or 'no space left on device'}); "
                          "nothing was written", "free some space or choose an output on another disk")
    return InputError(f"cannot write {path}: {exc.strerror or type(exc).__name__}",
                      "choose an output path in a folder you can write to")


def as_oncoseg_error(exc: BaseException) -> OncoSegError | None:
    """The project's error for a library exception whose cause is known and not a bug, else None.

    Known: the output disk is full (``OSError`` ENOSPC/EDQUOT), a pickle refused by a safe loader
    (``pickle.UnpicklingError``, e.g. ``torch.load(weights_only=True)`` on a file that holds more than tensors) and a
    damaged safetensors file (``safetensors.SafetensorError``). Used by the CLI as a last resort so that these end
    in one line, never in "internal error".
    """
    import pickle

    if isinstance(exc, OncoSegError):
        return exc
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return output_write_error(exc.filename or "the output", exc)
    if isinstance(exc, pickle.UnpicklingError):
        return ModelError(f"refused to load a pickle file that holds more than plain data: {exc}",
                          "it may run code; use a .safetensors file from a source you trust")
    if type(exc).__name__ == "SafetensorError":
        return ModelError(f"corrupt or incomplete safetensors file: {exc}", "copy or download the file again")
    return None
