"""The one engine of the Slicer module: one model (:class:`~OncoSegLib.slicer_support.core.OncoSegCore`), one worker
thread and one undo stack for the whole application, shared by every ``OncoSegLogic`` (panel and console), so the
model is loaded once, all model work runs on one thread, and Undo sees every AI edit whoever wrote it.
"""

from __future__ import annotations

from typing import Any

from OncoSegLib.slicer_support.core import OncoSegCore
from OncoSegLib.slicer_support.merge import UndoStack
from OncoSegLib.slicer_support.worker import ModelWorker

_ENGINE: dict[str, Any] = {}


def shared_engine() -> tuple[OncoSegCore, ModelWorker, UndoStack]:
    """(core, worker, undo stack), made on first use."""
    if not _ENGINE:
        _ENGINE.update(core=OncoSegCore(), worker=ModelWorker("OncoSeg-model"), undo=UndoStack())
    return _ENGINE["core"], _ENGINE["worker"], _ENGINE["undo"]


def shutdown_engine() -> None:
    """Stop the worker thread (cancelling its jobs) and drop the model and the undo records (module cleanup)."""
    if _ENGINE:
        _ENGINE["worker"].shutdown()
        _ENGINE.clear()


def model_names() -> list[str]:
    """Registry model names for the model selector ("latest" when the registry cannot be read)."""
    try:
        from OncoSegLib.models.registry import list_models

        return [row["name"] for row in list_models()]
    except Exception:  # registry unreadable: still offer the default
        return ["latest"]
