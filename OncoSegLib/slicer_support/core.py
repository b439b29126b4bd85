"""The engine side of the Slicer module: what ``OncoSegLogic`` delegates to, free of Slicer.

``OncoSegCore`` holds one model bundle and one :class:`~OncoSegLib.session.SegmentationSession` per input volume,
feeds it the prompts the user placed (incrementally: only new prompts run), and returns full-volume masks with
confidence and measurements. Every method that runs the model is meant to be called on the module's worker thread
(:mod:`OncoSegLib.slicer_support.worker`); none touches MRML or Qt.

It also holds the helpers that need no Slicer: the session key of a volume node, a Volume from a node's voxels and
matrix, and a folder holding the original series from a list of files (re-indexing onto the series grid is
``OncoSegLib.export.labelmap_io.place_on_grid``, shared with the command line).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from OncoSegLib.cancel import CancelToken, ProgressCallback
from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.io.volume import Volume
from OncoSegLib.prompts import ObjectPrompts


@dataclass
class ObjectResult:
    """One object's current state after a model call.

    Attributes:
        name: object (segment) name.
        mask: (K, J, I) bool on the input volume's grid.
        iou: predicted IoU (0-1) of the last decoded slice, None when unknown.
        presence: text/presence score (0-1), None when not applicable.
        low: True when the engine flags the result as low confidence.
        volume_ml: mask volume in mL.
        recist_long_mm, recist_short_mm: RECIST long/short axis in mm on axial (k) slices (0.0 when empty).
    """

    name: str
    mask: np.ndarray
    iou: float | None = None
    presence: float | None = None
    low: bool = False
    volume_ml: float = 0.0
    recist_long_mm: float = 0.0
    recist_short_mm: float = 0.0

    def row(self) -> list[str]:
        """Measurement-table row: name, volume mL, RECIST long, short (mm), confidence, flag."""
        conf = "" if self.iou is None else f"{self.iou:.2f}"
        return [self.name, f"{self.volume_ml:.2f}", f"{self.recist_long_mm:.1f}", f"{self.recist_short_mm:.1f}", conf,
                "LOW" if self.low else ""]


MEASUREMENT_COLUMNS = ("Segment", "Volume (mL)", "RECIST long (mm)", "RECIST short (mm)", "Confidence", "Flag")


def measure(name: str, mask: np.ndarray, spacing_ijk: Sequence[float], confidence: Any = None,
            low_threshold: float = 0.5) -> ObjectResult:
    """ObjectResult with volume (mL) and RECIST (mm) of ``mask`` (K, J, I) with voxel size ``spacing_ijk`` (si, sj, sk).

    ``confidence`` is whatever the session's ``confidence(obj)`` returned (attributes or keys iou, presence, low);
    low = the engine's ``low`` flag OR iou < ``low_threshold`` (the module's "Flag below IoU" setting).
    """
    from OncoSegLib.metrics import recist, volume_ml

    m = np.asarray(mask, dtype=bool)
    iou = _get(confidence, "iou")
    presence = _get(confidence, "presence")
    # the engine's own flag, or the user's threshold ("Flag below IoU" in the module panel): either one flags it
    low = bool(_get(confidence, "low")) or (iou is not None and iou < low_threshold)
    r = recist(m, spacing_ijk=tuple(float(s) for s in spacing_ijk))
    return ObjectResult(name=name, mask=m, iou=None if iou is None else float(iou),
                        presence=None if presence is None else float(presence), low=bool(low),
                        volume_ml=float(volume_ml(m, spacing_ijk=tuple(float(s) for s in spacing_ijk))),
                        recist_long_mm=float(r.long_axis_mm), recist_short_mm=float(r.short_axis_mm))


def memory_line(bundle: Any, device: Any) -> str:
    """", 1.2 GB weights, GPU 3.4 of 24.0 GB in use" (parts that cannot be measured are left out)."""
    out = ""
    try:
        import torch

        modules = [m for m in vars(bundle).values() if isinstance(m, torch.nn.Module)]
        params = {id(p): p for m in modules for p in m.parameters()}  # backends share weights: count each once
        nbytes = sum(p.numel() * p.element_size() for p in params.values())
        if nbytes:
            out += f", {nbytes / 1e9:.2f} GB weights" if nbytes >= 1e9 else f", {nbytes / 1e6:.1f} MB weights"
        dev = torch.device(str(device))
        if dev.type == "cuda" and torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(dev)
            out += f", GPU {(total - free) / 1e9:.1f} of {total / 1e9:.1f} GB in use"
    except Exception:  # memory is informative only
        pass
    return out


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


@dataclass
class _ObjectState:
    oid: Any  # the session's object id
    applied: ObjectPrompts = field(default_factory=ObjectPrompts)
    stale: bool = False  # prompts were cleared/undone outside: rebuild from all prompts next time


class OncoSegCore:
    """Model + session management for the module. Not thread-safe: use it from the one worker thread.

    Objects are addressed by name (the segment name in Slicer); the session's own object ids stay inside.

    Args:
        bundle_loader: ``(model, device) -> bundle``; default :func:`OncoSegLib.models.loading.load_bundle`.
        session_factory: ``(bundle, cache_mb) -> session``; default :class:`OncoSegLib.session.SegmentationSession`.
        cache_mb: embedding cache cap of the session.
        low_threshold: IoU below which a segment is flagged (besides the engine's own flag); the module sets it from
            its "Flag below IoU" setting before each job.
    """

    def __init__(self, bundle_loader: Callable[[str, str], Any] | None = None,
                 session_factory: Callable[[Any, int], Any] | None = None, cache_mb: int = 512,
                 low_threshold: float = 0.5) -> None:
        self._bundle_loader = bundle_loader
        self._session_factory = session_factory
        self.cache_mb = cache_mb
        self.low_threshold = low_threshold
        self.bundle: Any = None
        self.model_key: tuple[str, str] | None = None
        self.session: Any = None
        self.volume: Volume | None = None
        self.volume_key: str | None = None
        self.modality: str | None = None
        self._objects: dict[str, _ObjectState] = {}

    # ----- model -----
    def load_model(self, model: str, device: str = "auto") -> str:
        """Load (or keep) the bundle for ``model`` (registry name, folder, checkpoint); returns a status line."""
        key = (str(model), str(device))
        if self.bundle is not None and self.model_key == key:
            return self.status()
        if self._bundle_loader is None:
            from OncoSegLib.models.loading import load_bundle

            bundle = load_bundle(model, device=device)
        else:
            bundle = self._bundle_loader(model, device)
        self.use_bundle(bundle, model, device)
        return self.status()

    def use_bundle(self, bundle: Any, name: str = "custom", device: str = "auto") -> None:
        """Use an already loaded bundle (tests, console); later ``load_model(name, device)`` calls keep it."""
        self.bundle = bundle
        self.model_key = (str(name), str(device))
        self.session = None  # a new model needs a new session (embeddings differ)
        self.volume_key = None
        self._objects.clear()

    def status(self) -> str:
        """One line for the panel: model, device and memory (weights; GPU memory in use / total on CUDA)."""
        if self.bundle is None:
            return "No model loaded"
        name = getattr(self.bundle, "name", None) or (self.model_key[0] if self.model_key else "?")
        device = getattr(self.bundle, "device", "?")
        return f"Model {name} on {device}" + memory_line(self.bundle, device)

    # ----- volume -----
    def set_volume(self, volume: Volume, key: str, modality: str | None = None) -> bool:
        """Make ``volume`` the session's image unless ``key`` (:func:`volume_key`) is unchanged.

        Returns True when a new session was started (previous prompts/objects forgotten).
        """
        if self.bundle is None:
            raise ModelError("no model loaded", hint="choose a model and press Load first")
        if self.session is not None and key == self.volume_key and modality == self.modality:
            return False
        if self._session_factory is None:
            from OncoSegLib.session import SegmentationSession

            self.session = SegmentationSession(self.bundle, cache_mb=self.cache_mb)
        else:
            self.session = self._session_factory(self.bundle, self.cache_mb)
        self.session.set_volume(volume, modality=modality)
        self.volume = volume
        self.volume_key = key
        self.modality = modality
        self._objects.clear()
        return True

    def _require(self) -> Any:
        if self.session is None or self.volume is None:
            raise InputError("no input volume", hint="select an input volume")
        return self.session

    def object_id(self, name: str) -> Any:
        """The session object id of ``name`` (InputError if the object was never prompted)."""
        state = self._objects.get(name)
        if state is not None:
            return state.oid
        s = self._require()
        if hasattr(s, "object_id"):
            return s.object_id(name)
        raise InputError(f"no object named {name!r}", hint="place prompts for it first")

    def _result(self, name: str) -> ObjectResult:
        s = self._require()
        oid = self.object_id(name)
        conf = None
        try:
            conf = s.confidence(oid)
        except Exception:  # confidence is informative only; never lose a mask over it
            conf = None
        if conf is not None:
            iou = _get(conf, "iou")
            conf = {"iou": None if iou is None or not np.isfinite(iou) else float(iou),
                    "presence": _get(conf, "presence"), "low": _get(conf, "low")}
        return measure(name, s.result(oid), self.volume.spacing, conf, self.low_threshold)  # type: ignore[union-attr]

    # ----- prompts -----
    def apply_prompts(self, prompts: ObjectPrompts, cancel: CancelToken | None = None) -> ObjectResult:
        """Run the prompts of one object; only prompts not applied before are sent to the model.

        If earlier prompts were removed or changed (not a prefix of the new list), the object is rebuilt from all
        of its prompts.
        """
        s = self._require()
        assert self.volume is not None
        prompts.validate(self.volume.shape_ijk)
        if prompts.is_empty() or (prompts.text is not None and prompts.count() == 1):
            raise InputError("no point, box or scribble placed",
                             hint="add a point, a box or a scribble (use the text field for text prompts)")
        name = prompts.name
        state = self._objects.get(name)
        if state is None or state.stale or not _is_prefix(state.applied, prompts):
            if state is not None:
                s.remove_object(state.oid)
            state = _ObjectState(oid=s.add_object(name))
            self._objects[name] = state
        done = state.applied
        for b in prompts.boxes[len(done.boxes):]:
            _check_cancel(cancel)
            s.add_box(state.oid, b.ijk_min, b.ijk_max, axis=prompts.axis_of(b))
        for p in prompts.points[len(done.points):]:
            _check_cancel(cancel)
            s.add_point(state.oid, p.ijk, positive=p.positive, axis=prompts.axis_of(p))
        for sc in prompts.scribbles[len(done.scribbles):]:
            _check_cancel(cancel)
            s.add_scribble(state.oid, [list(v) for v in sc.points_ijk], positive=sc.positive, axis=prompts.axis_of(sc))
        state.applied = ObjectPrompts.from_dict(prompts.to_dict())
        return self._result(name)

    def segment_text(self, text: str, axis: str = "axial", index: int | None = None,
                     cancel: CancelToken | None = None) -> list[ObjectResult]:
        """Find every instance of ``text`` on slice ``index`` (None = middle) along ``axis``; one result each."""
        s = self._require()
        if not text.strip():
            raise InputError("empty text prompt", hint="type what to find, e.g. 'liver tumor'")
        _check_cancel(cancel)
        instances = s.add_text(text, axis=axis, index=index)
        out = []
        for inst in instances:
            name = str(_get(inst, "name"))
            self._objects[name] = _ObjectState(oid=_get(inst, "object_id"))
            r = self._result(name)
            score = _get(inst, "score")
            if score is not None:
                r.presence = float(score)
            out.append(r)
        return out

    def propagate(self, name: str, direction: str = "both", method: str = "auto",
                  progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> ObjectResult:
        """Propagate object ``name`` through the volume; on cancel the partial result is kept and returned.

        ``method`` "auto" (or None) = the model's own default (memory with a SAM3 tracker, box3d without one).
        """
        s = self._require()
        from OncoSegLib.errors import Cancelled

        try:
            s.propagate(self.object_id(name), direction=direction, method=None if method in (None, "auto") else method,
                        progress=progress, cancel=cancel)
        except Cancelled:
            pass  # the session keeps what was done; show it
        return self._result(name)

    def undo(self, name: str) -> ObjectResult:
        """Undo the last model edit of ``name`` in the session."""
        s = self._require()
        s.undo(self.object_id(name))
        state = self._objects.get(name)
        if state is not None:
            state.stale = True  # the applied prompts are no longer what the session holds
        return self._result(name)

    def forget(self, name: str | None = None) -> None:
        """Forget applied prompts for one object (or all), e.g. after Clear prompts: the next run rebuilds it."""
        for key in ([name] if name is not None else list(self._objects)):
            state = self._objects.get(key)
            if state is not None:
                state.stale = True


def _is_prefix(old: ObjectPrompts, new: ObjectPrompts) -> bool:
    return (new.points[:len(old.points)] == old.points and new.boxes[:len(old.boxes)] == old.boxes
            and new.scribbles[:len(old.scribbles)] == old.scribbles)


def _check_cancel(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


# ----------------------------------------------------------------------------------------------- export helpers
def volume_key(node_id: str, image_mtime: int, scalars_mtime: int, ijk_to_ras: np.ndarray) -> str:
    """Session key of a Slicer volume: which voxels and which grid, not the node's other state.

    Args:
        node_id: the volume node's ID.
        image_mtime, scalars_mtime: modified times of its vtkImageData and of the scalar array (voxel edits).
        ijk_to_ras: its IJKToRAS 4x4 (a changed origin/spacing/direction needs a new session).
    The node's own MTime is deliberately not part of it: renaming, attributes, a parent transform or saving change
    that time but neither the voxels nor the IJK prompts, so the session (objects, embeddings) must survive them.
    """
    geometry = ",".join(f"{v:.6g}" for v in np.asarray(ijk_to_ras, dtype=float)[:3, :].ravel())
    return f"{node_id}|{int(image_mtime)}|{int(scalars_mtime)}|{geometry}"


def series_folder_from_files(files: Sequence[str | os.PathLike], workdir: str | os.PathLike | None = None) -> Path:
    """A folder holding exactly ``files`` (one series from Slicer's DICOM database), for the exporters.

    Files are linked (symlinks; copies where links are not allowed) into a fresh temporary folder under
    ``workdir``; the originals are never modified. The caller deletes the folder when done.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError("the input volume has no DICOM files in Slicer's database",
                         hint="load the volume through the DICOM module to export RTSTRUCT/SEG referencing it")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} DICOM files of the series are missing (e.g. {missing[0]})",
                         hint="re-import the study into Slicer's DICOM database")
    folder = Path(tempfile.mkdtemp(prefix="oncoseg-series-", dir=workdir))
    for n, p in enumerate(paths):
        target = folder / f"{n:05d}_{p.name}"
        try:
            target.symlink_to(p.resolve())
        except OSError:  # Windows without link rights
            shutil.copy2(p, target)
    return folder


def volume_from_slicer(array_kji: np.ndarray, ijk_to_ras: np.ndarray, modality: str | None = None,
                       metadata: dict[str, Any] | None = None) -> Volume:
    """An OncoSeg Volume (LPS geometry) from a Slicer volume's voxel array (K, J, I) and its IJKToRAS matrix.

    Spacing is the length of each IJK column, direction the normalised columns, both converted RAS -> LPS. The
    volume's parent transform is not applied: the model works on the voxels, prompts are mapped into this IJK.
    """
    m = np.asarray(ijk_to_ras, dtype=float)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError("the volume has a zero voxel size", hint="check the volume's spacing")
    direction = lps[:3, :3] / spacing
    return Volume(np.asarray(array_kji), spacing=tuple(spacing), origin=tuple(lps[:3, 3]), direction=direction,
                  modality=modality, metadata=dict(metadata or {}))
