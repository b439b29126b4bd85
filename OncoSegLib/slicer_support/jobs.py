"""One model job of the Slicer module: prepared on the main thread (voxels copied out of MRML), run on the worker.

A :class:`Request` carries everything the worker needs, so the job body never touches MRML or Qt; :func:`run` is
that body (model and volume made current in the :class:`~OncoSegLib.slicer_support.core.OncoSegCore`, then the
prompts, the text prompt or the propagation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from OncoSegLib.cancel import CancelToken, ProgressCallback
from OncoSegLib.io.volume import Volume
from OncoSegLib.prompts import ObjectPrompts


@dataclass
class Request:
    """A job for one volume: ``kind`` "prompt" (``prompts``), "text" (``text`` on the middle slice along ``axis``) or
    "propagate" (object ``name`` in ``direction`` by ``method``).

    ``volume`` is a copy of the node's voxels with its LPS geometry, ``key`` its session key
    (:func:`~OncoSegLib.slicer_support.core.volume_key`), ``low_confidence`` the "Flag below IoU" setting.
    """

    kind: str
    volume: Volume
    key: str
    modality: str | None
    model: str
    device: str = "auto"
    low_confidence: float | None = None
    prompts: ObjectPrompts | None = None
    text: str = ""
    axis: str = "axial"
    name: str = ""
    direction: str = "both"
    method: str = "auto"


def run(core: Any, request: Request, cancel: CancelToken, progress: ProgressCallback) -> Any:
    """The worker-thread body: an ObjectResult ("prompt", "propagate") or a list of them ("text")."""
    core.load_model(request.model, request.device)
    core.set_volume(request.volume, request.key, request.modality)
    if request.low_confidence is not None:
        core.low_threshold = float(request.low_confidence)
    if request.kind == "prompt":
        return core.apply_prompts(request.prompts, cancel=cancel)
    if request.kind == "text":
        return core.segment_text(request.text, axis=request.axis, cancel=cancel)
    return core.propagate(request.name, request.direction, request.method, progress=progress, cancel=cancel)
