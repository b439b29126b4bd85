"""Interactive segmentation of one volume: named objects, prompts on any slice/axis, undo, 3D propagation.

A :class:`SegmentationSession` holds one :class:`~OncoSegLib.io.volume.Volume`, its modality and normaliser, a
:class:`~OncoSegLib.models.predictor.Sam3Predictor` and an :class:`~OncoSegLib.embedding_cache.EmbeddingCache`.
Every object keeps a full-volume boolean mask ``(K, J, I)`` in the volume's own grid (IJK storage order).

Prompt semantics (all coordinates are voxel indices IJK, see :mod:`OncoSegLib.slicing` for the slice layout):

- The prompts of one object on one slice (axis + index) are decoded together: each new point/box/scribble
  re-decodes only that slice, on its cached embedding, and replaces that plane of the object's mask.
- Scribbles become point prompts: ``scribble_points`` (default 8) positions equally spaced by arc length along the
  polyline, all with the scribble's label. (SAM3 was trained with clicks, not scribble masks; sampled clicks keep the
  decoder in its training distribution.)
- ``add_mask`` sets the slice mask exactly (it is a user/reference mask); later clicks on that slice are decoded with
  it as the mask input of the decoder.
- A text prompt runs the detector on one slice (the middle one when no index is given); every instance with a score
  >= the threshold becomes a new object whose slice mask is the detected mask.
- Overlaps in :meth:`label_map`: later objects win (higher labels drawn last).
- A 3D box prompts its centre slice and limits propagation of that object to the box's slice range.
- Confidence: mean predicted IoU and mean presence over the object's non-empty slices; ``low`` when either is below
  its threshold (0.5 by default). A head the model does not have or that was never trained to predict anything
  (the predictor's ``confidence_heads``; per-slice values ``None``/NaN) is "n/a": ``None``, not a number; with no
  informative head at all the ``low`` flag is ``None`` too (nothing is known).
- Undo: every public mutating call is one step; ``undo()`` restores the masks, prompts and confidences it changed
  (including propagation and the automatic re-propagation a refinement triggers). Planes that were empty before a
  step cost no memory in its undo record (a 500-slice propagation into empty slices stores nothing per slice).
- Threads: edits (prompts, propagation, undo, set_volume) run one at a time under one lock; a GUI thread may read
  (:meth:`result`, :meth:`label_map`, :meth:`confidence`, :attr:`objects`, ...) while a worker thread propagates:
  reads take a second, short lock that the worker holds only while it writes one plane, so they never wait for the
  whole propagation and see the slices finished so far.
See :mod:`OncoSegLib.propagation` for propagation and the refinement rule.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from OncoSegLib.cancel import CancelToken, ProgressCallback
from OncoSegLib.embedding_cache import CacheKey, EmbeddingCache
from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.io.volume import Volume
from OncoSegLib.prompts import scribble_samples
from OncoSegLib.propagation import (
    Box3DRule,
    Box3DStepper,
    BoxStepper,
    CentroidStepper,
    MedsamStepper,
    MemoryStepper,
    PropagationResult,
    SliceOutcome,
    check_direction,
    check_method,
    plan_segments,
    run_segments,
)
from OncoSegLib.slicing import (
    SliceRef,
    check_axis,
    check_ijk_inside,
    get_slice,
    ijk_to_slice,
    num_slices,
    paste_slice_mask,
    pixel_to_model,
    slice_shape,
)

log = logging.getLogger(__name__)

ObjectId = int


@dataclass
class SlicePrompts:
    """The prompts of one object on one slice, in slice pixels (row, col) — independent of the model size."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None  # (r0, c0, r1, c1), inclusive pixel centres
    mask: np.ndarray | None = None  # (H, W) bool user/text mask

    @property
    def has_geometry(self) -> bool:
        return bool(self.points) or self.box is not None


@dataclass
class SliceResult:
    """What one prompt produced: the slice, its new mask (H, W) bool, predicted IoU and presence (``None``: n/a)."""

    ref: SliceRef
    mask: np.ndarray
    iou: float | None
    presence: float | None


@dataclass
class TextInstance:
    """An object created by a text prompt: its id, name, detection score and (H, W) mask on ``ref``."""

    object_id: ObjectId
    name: str
    score: float
    mask: np.ndarray
    ref: SliceRef


@dataclass
class ObjectConfidence:
    """Per-object confidence over its non-empty slices.

    Attributes:
        iou: mean predicted IoU, or ``None`` ("n/a": the model's IoU head is absent/uninformative, or no slice has one).
        presence: mean object presence (0..1), or ``None`` (n/a, as for ``iou``).
        low: True when a known value is below its threshold or the object is empty; ``None`` when neither value is
            known (n/a: an uninformative model cannot flag anything).
        slices: number of non-empty slices holding a confidence record.
    """

    iou: float | None
    presence: float | None
    low: bool | None
    slices: int = 0

    def text(self) -> str:
        """One line for screens and logs, e.g. ``"IoU 0.91, presence n/a"`` or ``"IoU n/a, presence n/a"``."""
        return confidence_text(self.iou, self.presence, self.low)


def confidence_text(iou: float | None, presence: float | None, low: bool | None = None) -> str:
    """``"IoU 0.912, presence 0.870"`` with ``n/a`` for unknown values and ``", LOW"`` when flagged."""
    def f(v: float | None) -> str:
        return "n/a" if v is None or v != v else f"{float(v):.3f}"

    return f"IoU {f(iou)}, presence {f(presence)}" + (", LOW" if low else "")


def _known(value: Any) -> float | None:
    """A confidence value as float, or ``None`` when unknown (None / NaN / inf)."""
    if value is None:
        return None
    v = float(value)
    return v if np.isfinite(v) else None


@dataclass
class _Object:
    id: ObjectId
    name: str
    mask: np.ndarray
    prompts: dict[SliceRef, SlicePrompts] = field(default_factory=dict)
    conf: dict[SliceRef, tuple[float, float]] = field(default_factory=dict)
    source: dict[SliceRef, str] = field(default_factory=dict)  # "prompt" | "propagated"
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)
    last_propagation: dict[str, Any] | None = None

    def small_state(self) -> dict[str, Any]:
        return {"prompts": copy.deepcopy(self.prompts), "conf": dict(self.conf), "source": dict(self.source),
                "bounds": dict(self.bounds), "last_propagation": copy.deepcopy(self.last_propagation),
                "name": self.name}


@dataclass
class _Action:
    kind: str
    objects: list[ObjectId]
    created: list[ObjectId] = field(default_factory=list)
    planes: list[tuple[ObjectId, SliceRef, np.ndarray]] = field(default_factory=list)  # first-touch snapshots
    touched: set[tuple[ObjectId, SliceRef]] = field(default_factory=set)
    states: dict[ObjectId, dict[str, Any]] = field(default_factory=dict)


class SegmentationSession:
    """An interactive segmentation session over one volume.

    Args:
        model: a :class:`~OncoSegLib.models.bundle.Sam3Bundle` or a predictor with the ``Sam3Predictor`` interface
            (``image_size``, ``mask_size``, ``encode``, ``predict``, ``mask_to_logits``; ``detect_text`` for text).
        cache_mb: embedding cache cap in MiB.
        scribble_points: points sampled along each scribble.
        iou_threshold, presence_threshold: below either, :meth:`confidence` flags the object as low confidence.
        auto_repropagate: after a propagation, prompts on that axis re-run the affected chain (see propagation).
        undo_depth: number of undo steps kept.
        cpu_bf16: with a bundle, run bf16 autocast on the CPU too (CUDA always uses it); ignored for a predictor.
        dynamic_multimask: with a bundle, SAM3's single-click stability fallback (``Sam3Predictor``): None = as the
            checkpoint says (stock behaviour), True/False force it; ignored for a predictor.
    """

    def __init__(self, model: Any, cache_mb: float = 512.0, scribble_points: int = 8, iou_threshold: float = 0.5,
                 presence_threshold: float = 0.5, auto_repropagate: bool = True, undo_depth: int = 50,
                 cpu_bf16: bool = False, dynamic_multimask: bool | None = None):
        if not hasattr(model, "predict"):  # a Sam3Bundle (a predictor has predict/encode)
            from OncoSegLib.models.predictor import Sam3Predictor

            model = Sam3Predictor(model, cpu_bf16=cpu_bf16, dynamic_multimask=dynamic_multimask)
        self.predictor = model
        self.cache = EmbeddingCache(cache_mb)
        self.scribble_points = int(scribble_points)
        self.iou_threshold = float(iou_threshold)
        self.presence_threshold = float(presence_threshold)
        self.auto_repropagate = bool(auto_repropagate)
        self.undo_depth = int(undo_depth)
        self.volume: Volume | None = None
        self.modality: str | None = None
        self.modality_reason: str = ""
        self.normalizer: Any = None
        self._prep: str = ""
        self._objects: dict[ObjectId, _Object] = {}
        self._next_id = 1
        self._undo: list[_Action] = []
        self._action: _Action | None = None
        self._lock = threading.RLock()  # one edit at a time (prompts, propagation, undo, set_volume)
        self._data = threading.RLock()  # short: object dict + per-plane writes vs readers on other threads
        self.last_repropagation: PropagationResult | None = None
        #: constants of the ``box3d`` propagation rule; ``Box3DRule(clamp_in_plane=True)`` when 3D boxes are the
        #: objects' tight 3D extent rather than the middle slice's 2D box (CVPR / prompts-file style, the default)
        self.box3d_rule = Box3DRule()
        self._last_text_features: tuple[CacheKey, Any] | None = None
        self.box_click_repropagate = False  # a click turned into a box edit changes its own slice only (add_point)

    # ================================================================== volume
    def set_volume(self, volume: Volume, modality: str | None = None, window: tuple[float, float] | None = None
                   ) -> None:
        """Start on ``volume``: fit the normaliser (per volume), reset objects, undo and the embedding cache.

        ``modality`` None -> detected from the data (:func:`OncoSegLib.modality.detect_modality`); the reason is kept
        in :attr:`modality_reason`. ``window`` = CT window (low, high) in HU.
        """
        from OncoSegLib.preprocessing import canonical_modality, fit_normalizer

        if not isinstance(volume, Volume):
            raise InputError("set_volume() needs an OncoSegLib Volume", "load images with OncoSegLib.io.loader")
        if modality is None:
            from OncoSegLib.modality import detect_modality

            guess = detect_modality(volume)
            modality_name, reason = guess.modality, f"detected: {guess.reason}"
        else:
            modality_name, reason = canonical_modality(modality), "chosen by the user"
        if window is None and modality_name == "ct":  # a model's own CT window (LiteMedSAM: -160..240 HU)
            window = getattr(self.predictor, "ct_window", None)
        normalizer = fit_normalizer(volume, modality_name, window)  # may refuse (e.g. RGB as CT) before any change
        key = json.dumps({"norm": normalizer.to_dict(), "S": self.predictor.image_size,
                          "model": id(self.predictor), "shape": list(volume.array.shape)}, sort_keys=True,
                         default=str)
        with self._lock, self._data:
            self.modality, self.modality_reason = modality_name, reason
            self.volume = volume
            self.normalizer = normalizer
            self._prep = hashlib.sha1(key.encode()).hexdigest()[:16]
            self.cache.clear()
            self._last_text_features = None
            self._objects = {}
            self._undo.clear()
            self._next_id = 1

    def _vol(self) -> Volume:
        if self.volume is None:
            raise InputError("no volume in the session", "call set_volume() first")
        return self.volume

    @property
    def shape_kji(self) -> tuple[int, int, int]:
        return self._vol().shape_kji

    # ================================================================== encoder access
    def pixels(self, axis: str, index: int) -> torch.Tensor:
        """The (1, 3, S, S) model input of slice ``index`` along ``axis``."""
        from OncoSegLib.preprocessing import to_model_input

        vol = self._vol()
        sl = get_slice(vol.array, axis, index)
        if hasattr(self.predictor, "prepare"):  # a predictor that owns its slice preprocessing (LiteMedSAM)
            return self.predictor.prepare(sl, self.normalizer)
        return to_model_input(self.normalizer(sl), self.predictor.image_size)[None]

    def embeddings(self, axis: str, index: int) -> Any:
        """Cached embeddings of slice ``index`` along ``axis`` (encoded on first use)."""
        axis = check_axis(axis)
        key = CacheKey(axis, int(index), self._prep)
        return self.cache.get(key, lambda: self.predictor.encode(self.pixels(axis, index)))

    # ================================================================== objects
    def add_object(self, name: str | None = None) -> ObjectId:
        """Create an empty object and return its id (labels follow creation order: 1, 2, ...)."""
        with self._lock:
            self._begin("add_object", [])
            oid = self._create(name)
            self._action.created.append(oid)  # type: ignore[union-attr]
            self._commit()
            return oid

    def _create(self, name: str | None) -> ObjectId:
        vol = self._vol()
        oid = self._next_id
        self._next_id += 1
        nm = str(name) if name else f"object {oid}"
        obj = _Object(id=oid, name=nm, mask=np.zeros(vol.shape_kji, dtype=bool))
        with self._data:
            if any(o.name == nm for o in self._objects.values()):
                obj.name = f"{nm} ({oid})"
            self._objects[oid] = obj
        return oid

    def remove_object(self, obj: ObjectId) -> None:
        """Delete an object (undoable)."""
        o = self._obj(obj)
        with self._lock:
            self._begin("remove_object", [obj])
            self._action.states[obj] = {"removed": o}  # type: ignore[union-attr]
            with self._data:
                del self._objects[o.id]
            self._commit()

    @property
    def objects(self) -> dict[ObjectId, str]:
        """Object id -> name, in creation (label) order."""
        with self._data:
            return {oid: o.name for oid, o in self._objects.items()}

    def _obj(self, obj: ObjectId) -> _Object:
        try:
            return self._objects[int(obj)]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"no object with id {obj!r}", hint="create it with add_object()") from None

    # ================================================================== undo machinery
    def _begin(self, kind: str, objs: Sequence[ObjectId]) -> None:
        self._action = _Action(kind=kind, objects=list(objs))
        for oid in objs:
            self._action.states[oid] = self._objects[oid].small_state()

    def _touch(self, oid: ObjectId, ref: SliceRef) -> None:
        act = self._action
        if act is None or (oid, ref) in act.touched or oid in act.created:
            return
        if oid not in act.states:
            act.states[oid] = self._objects[oid].small_state()
            act.objects.append(oid)
        act.touched.add((oid, ref))
        plane = get_slice(self._objects[oid].mask, ref.axis, ref.index)
        act.planes.append((oid, ref, np.packbits(plane) if plane.any() else None))  # None = was empty

    def _commit(self) -> None:
        act = self._action
        self._action = None
        if act is None:
            return
        act.touched = set()
        self._undo.append(act)
        if len(self._undo) > self.undo_depth:
            del self._undo[0]

    def _abort(self) -> None:
        """Roll back the current action (an error happened half-way)."""
        act = self._action
        self._action = None
        if act is not None:
            self._apply_undo(act)

    def _write(self, oid: ObjectId, ref: SliceRef, mask2d: np.ndarray, source: str,
               conf: tuple[float, float] | None) -> None:
        o = self._objects[oid]
        self._touch(oid, ref)
        with self._data:
            paste_slice_mask(o.mask, ref.axis, ref.index, mask2d)
            o.source[ref] = source
            if conf is not None:
                o.conf[ref] = conf
            else:
                o.conf.pop(ref, None)

    def undo(self, obj: ObjectId | None = None) -> bool:
        """Undo the most recent step (of object ``obj`` when given). Returns False when there is nothing to undo."""
        with self._lock:
            for pos in range(len(self._undo) - 1, -1, -1):
                act = self._undo[pos]
                if obj is None or int(obj) in act.objects or int(obj) in act.created:
                    del self._undo[pos]
                    self._apply_undo(act)
                    return True
            return False

    def _apply_undo(self, act: _Action) -> None:
        with self._data:
            for oid in act.created:
                self._objects.pop(oid, None)
            for oid, state in act.states.items():
                if "removed" in state:
                    self._objects[oid] = state["removed"]
                    self._objects = dict(sorted(self._objects.items()))
            for oid, ref, packed in reversed(act.planes):
                o = self._objects.get(oid)
                if o is None:
                    continue
                shape = slice_shape(o.mask.shape, ref.axis)
                if packed is None:
                    plane = np.zeros(shape, dtype=bool)
                else:
                    plane = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
                paste_slice_mask(o.mask, ref.axis, ref.index, plane)
            for oid, state in act.states.items():
                o = self._objects.get(oid)
                if o is None or "removed" in state:
                    continue
                o.prompts, o.conf, o.source = state["prompts"], state["conf"], state["source"]
                o.bounds, o.last_propagation, o.name = state["bounds"], state["last_propagation"], state["name"]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    # ================================================================== decoding
    def _decode_slice(self, o: _Object, ref: SliceRef) -> SliceResult:
        """Decode all prompts of ``o`` on ``ref`` and write the plane."""
        sp = o.prompts.get(ref, SlicePrompts())
        hw = slice_shape(self.shape_kji, ref.axis)
        if not sp.has_geometry:
            if sp.mask is not None:
                mask = np.asarray(sp.mask, dtype=bool)
                self._write(o.id, ref, mask, "prompt", (1.0, 1.0))
                return SliceResult(ref, mask, 1.0, 1.0)
            mask = np.zeros(hw, dtype=bool)
            self._write(o.id, ref, mask, "prompt", None)
            return SliceResult(ref, mask, float("nan"), 0.0)
        pts = np.asarray(sp.points, dtype=float).reshape(-1, 2) if sp.points else None
        box = sp.box
        mask_in = self.predictor.mask_to_logits(sp.mask) if sp.mask is not None else None
        out = self._decode(ref, pts, np.asarray(sp.labels) if sp.points else None, box, mask_in)
        self._write(o.id, ref, out.mask, "prompt", (out.iou, out.presence))
        return SliceResult(ref, out.mask, _known(out.iou), _known(out.presence))

    def _to_model(self, row: Any, col: Any, hw: tuple[int, int]) -> tuple[Any, Any]:
        """Slice pixels (row, col) -> model pixels (x, y): the predictor's own map when it has one
        (``to_model_xy``, LiteMedSAM's longest-side scaling), else :func:`~OncoSegLib.slicing.pixel_to_model`."""
        if hasattr(self.predictor, "to_model_xy"):
            return self.predictor.to_model_xy(row, col, hw)
        return pixel_to_model(row, col, hw, self.predictor.image_size)

    def _decode(self, ref: SliceRef, points_rc: np.ndarray | None, labels: np.ndarray | None,
                box_rc: tuple[float, float, float, float] | None, mask_input: Any = None) -> SliceOutcome:
        """Run the decoder on slice ``ref`` with prompts in slice pixels (row, col); mask at slice size."""
        hw = slice_shape(self.shape_kji, ref.axis)
        pts = None
        if points_rc is not None and len(points_rc):
            x, y = self._to_model(points_rc[:, 0], points_rc[:, 1], hw)
            pts = np.stack([np.atleast_1d(x), np.atleast_1d(y)], axis=1)
        box = None
        if box_rc is not None:
            x0, y0 = self._to_model(box_rc[0], box_rc[1], hw)
            x1, y1 = self._to_model(box_rc[2], box_rc[3], hw)
            box = (x0, y0, x1, y1)
        emb = self.embeddings(ref.axis, ref.index)
        pred = self.predictor.predict(emb, points=pts, labels=labels, box=box, mask_input=mask_input, out_hw=hw)
        nan = float("nan")  # "n/a" (None from the predictor) is stored as NaN in the per-slice records
        return SliceOutcome(mask=np.asarray(pred.mask, dtype=bool), iou=nan if pred.iou is None else float(pred.iou),
                            presence=nan if pred.presence is None else float(pred.presence))

    def _prompt_action(self, obj: ObjectId, kind: str, ref: SliceRef, edit: Callable[[SlicePrompts], None],
                       repropagate: bool = True) -> SliceResult:
        o = self._obj(obj)
        with self._lock:
            self._begin(kind, [o.id])
            try:
                with self._data:
                    sp = o.prompts.setdefault(ref, SlicePrompts())
                    edit(sp)
                res = self._decode_slice(o, ref)
                if repropagate:
                    self._maybe_repropagate(o, ref)
            except BaseException:
                self._abort()
                raise
            self._commit()
            return res

    def _ref_from_ijk(self, ijk: Sequence[float], axis: str, what: str) -> tuple[SliceRef, float, float]:
        axis = check_axis(axis)
        check_ijk_inside(ijk, self.shape_kji, what)
        index, row, col = ijk_to_slice(ijk, axis)
        return SliceRef(axis, int(round(index))), row, col

    # ================================================================== prompts
    def add_point(self, obj: ObjectId, ijk: Sequence[float], positive: bool = True, axis: str = "axial"
                  ) -> SliceResult:
        """Click at voxel ``ijk`` (i, j, k) on the slice through it along ``axis``; re-decodes that slice."""
        ref, row, col = self._ref_from_ijk(ijk, axis, "point")
        if "point" not in getattr(self.predictor, "trained_prompts", ("point", "box")):  # box-only (LiteMedSAM)
            res = self._click_as_box(obj, ref, row, col, positive)
            if res is not None:
                return res

        def edit(sp: SlicePrompts) -> None:
            sp.points.append((row, col))
            sp.labels.append(1 if positive else 0)

        return self._prompt_action(obj, "point", ref, edit)

    def _click_as_box(self, obj: ObjectId, ref: SliceRef, row: float, col: float, positive: bool
                      ) -> SliceResult | None:
        """A click for a model trained with boxes only: an edit of the slice's box or mask
        (:mod:`OncoSegLib.click_to_box`) of the clicked slice only (re-propagation when ``box_click_repropagate``).
        None: no edit applies (the caller decodes the point as usual)."""
        from scipy import ndimage

        from OncoSegLib.click_to_box import ClickEdit, click_edit, mask_box

        o = self._obj(obj)
        with self._lock:
            sp0 = o.prompts.get(ref)
            cur = np.array(get_slice(o.mask, ref.axis, ref.index), dtype=bool)
            near = None
            if not cur.any() and (sp0 is None or sp0.box is None):
                n = num_slices(self.shape_kji, ref.axis)
                for d in range(1, n):  # the nearest non-empty slice of the object along this axis
                    for idx in (ref.index - d, ref.index + d):
                        if near is None and 0 <= idx < n:
                            near = mask_box(get_slice(o.mask, ref.axis, idx))
                    if near is not None:
                        break
            ed = click_edit(cur, sp0.box if sp0 is not None else None, near, row, col, positive)
            if ed is None:
                return None
            new_mask = ed.mask
            if ed.box is not None:  # the box's answer, combined with what the slice has (click_to_box)
                got = self._decode(ref, None, None, ed.box).mask
                new_mask = (cur | got) if ed.combine == "or" else (cur & got)
                if ed.combine == "or" and not new_mask[int(round(row)), int(round(col))]:
                    # the grown box's answer still misses the click: add the answer around the click (region rule)
                    r0, c0, r1, c1 = ed.box
                    hr, hc = (r1 - r0) / 4.0, (c1 - c0) / 4.0
                    ed = ClickEdit("add region", region_box=(max(0.0, row - hr), max(0.0, col - hc),
                                                             min(cur.shape[0] - 1.0, row + hr),
                                                             min(cur.shape[1] - 1.0, col + hc)))
                    cur = new_mask
            if ed.region_box is not None:
                lab, _ = ndimage.label(self._decode(ref, None, None, ed.region_box).mask)
                hit = lab[int(round(row)), int(round(col))]
                if hit == 0 and new_mask is None:
                    return None  # nothing decoded around the click and no edit made: usual point decoding
                new_mask = cur | (lab == hit) if hit else cur  # never the point-only decode once a box exists

            def edit(sp: SlicePrompts) -> None:
                sp.points.clear()
                sp.labels.clear()
                sp.box, sp.mask = None, new_mask

            return self._prompt_action(obj, "point", ref, edit, repropagate=self.box_click_repropagate)

    def add_box(self, obj: ObjectId, ijk_min: Sequence[float], ijk_max: Sequence[float], axis: str = "axial",
                center: int | None = None) -> SliceResult:
        """Box with corners at voxel centres ``ijk_min``..``ijk_max`` (inclusive). A box spanning several slices
        along ``axis`` (3D) prompts one slice, ``center`` (a slice index along ``axis`` inside the range; default the
        range's centre ``(lo + hi) // 2``), and bounds that object's propagation to its slice range. The CVPR
        challenges' 3D box gives its 2D box on slice ``z_mid``: pass ``center=z_mid``.
        A new box on a slice replaces the previous box there."""
        axis = check_axis(axis)
        check_ijk_inside(ijk_min, self.shape_kji, "box min corner")
        check_ijk_inside(ijk_max, self.shape_kji, "box max corner")
        a = ijk_to_slice(ijk_min, axis)
        b = ijk_to_slice(ijk_max, axis)
        lo, hi = sorted((int(round(a[0])), int(round(b[0]))))
        r0, r1 = sorted((a[1], b[1]))
        c0, c1 = sorted((a[2], b[2]))
        if center is not None and not lo <= int(center) <= hi:
            raise InputError(f"box centre slice {center} is outside the box's {axis} slices {lo}..{hi}",
                             hint="give a centre slice inside the box, or none (the range's centre)")
        ref = SliceRef(axis, (lo + hi) // 2 if center is None else int(center))
        o = self._obj(obj)

        def edit(sp: SlicePrompts) -> None:
            sp.box = (r0, c0, r1, c1)
            if hi > lo:
                o.bounds[axis] = (lo, hi)

        return self._prompt_action(obj, "box", ref, edit)

    def add_scribble(self, obj: ObjectId, points_ijk: Sequence[Sequence[float]], positive: bool = True,
                     axis: str = "axial") -> SliceResult:
        """A polyline of voxel positions on one slice; sampled into ``scribble_points`` clicks (module docstring)."""
        axis = check_axis(axis)
        pts = np.asarray(points_ijk, dtype=float).reshape(-1, 3)
        if len(pts) == 0:
            raise InputError("a scribble needs at least one point")
        refs = set()
        for n, p in enumerate(pts, start=1):
            refs.add(self._ref_from_ijk(p, axis, f"scribble vertex {n}")[0])
        if len(refs) != 1:
            raise InputError(f"a scribble must lie on one {axis} slice; its vertices span slices "
                             f"{sorted(r.index for r in refs)}", hint=f"draw it on a single {axis} slice")
        ref = refs.pop()
        samples = [ijk_to_slice(p, axis)[1:] for p in scribble_samples(pts, self.scribble_points)]

        def edit(sp: SlicePrompts) -> None:
            for r, c in samples:
                sp.points.append((r, c))
                sp.labels.append(1 if positive else 0)

        return self._prompt_action(obj, "scribble", ref, edit)

    def add_mask(self, obj: ObjectId, mask: np.ndarray, axis: str = "axial", index: int = 0) -> SliceResult:
        """Set the object's mask on slice ``index`` along ``axis`` to ``mask`` (H, W) (slice layout of slicing)."""
        axis = check_axis(axis)
        hw = slice_shape(self.shape_kji, axis)
        m = np.asarray(mask)
        if m.shape != hw:
            raise InputError(f"mask of shape {m.shape} does not fit the {axis} slice shape {hw}")
        n = num_slices(self.shape_kji, axis)
        if not 0 <= int(index) < n:
            raise InputError(f"slice index {index} is outside the {axis} range 0..{n - 1}")
        ref = SliceRef(axis, int(index))

        def edit(sp: SlicePrompts) -> None:
            sp.points.clear()
            sp.labels.clear()
            sp.box = None
            sp.mask = m.astype(bool).copy()

        return self._prompt_action(obj, "mask", ref, edit)

    def add_text(self, text: str, axis: str = "axial", index: int | None = None, score_threshold: float = 0.5,
                 max_instances: int | None = None, name: str | None = None) -> list[TextInstance]:
        """Find every instance of ``text`` on one slice (middle slice when ``index`` is None); each instance with
        score >= ``score_threshold`` becomes a new object (named ``name`` or the text, numbered when several)."""
        axis = check_axis(axis)
        n = num_slices(self.shape_kji, axis)
        idx = n // 2 if index is None else int(index)
        if not 0 <= idx < n:
            raise InputError(f"slice index {idx} is outside the {axis} range 0..{n - 1}")
        if not hasattr(self.predictor, "detect_text"):
            raise InputError("this predictor cannot run text prompts")
        ref = SliceRef(axis, idx)
        hw = slice_shape(self.shape_kji, axis)
        key = CacheKey(axis, idx, self._prep)
        # Detector features are large and stay out of the LRU cache; the last slice's are kept so that several
        # text prompts on one slice (a protocol of structures) encode it once.
        if self._last_text_features is not None and self._last_text_features[0] == key:
            emb = self._last_text_features[1]
        else:
            emb = self.predictor.encode(self.pixels(axis, idx), with_detector=True)
            self._last_text_features = (key, emb)
        if key not in self.cache:
            self.cache.put(key, emb.tracker_only() if hasattr(emb, "tracker_only") else emb)
        dets = self.predictor.detect_text(emb, text, score_threshold=score_threshold, out_hw=hw)
        dets = [d for d in dets if np.asarray(d.mask).any()]  # an instance with no pixel at slice size is no object
        if max_instances is not None:  # after dropping empty ones: "best instance" means the best non-empty one
            dets = dets[:max(0, int(max_instances))]
        base = name or str(text).strip()
        out: list[TextInstance] = []
        with self._lock:
            self._begin("text", [])
            try:
                for m, det in enumerate(dets, start=1):
                    oid = self._create(base if len(dets) == 1 else f"{base} {m}")
                    self._action.created.append(oid)  # type: ignore[union-attr]
                    o = self._objects[oid]
                    mask = np.asarray(det.mask, dtype=bool)
                    with self._data:
                        o.prompts[ref] = SlicePrompts(mask=mask.copy())
                    self._write(oid, ref, mask, "prompt", (float("nan"), float(det.score)))
                    out.append(TextInstance(oid, o.name, float(det.score), mask, ref))
            except BaseException:
                self._abort()
                raise
            self._commit()
        return out

    # ================================================================== results
    def result(self, obj: ObjectId) -> np.ndarray:
        """The object's mask, bool (K, J, I) in the volume's grid (a copy; safe to call from another thread)."""
        with self._data:
            return self._obj(obj).mask.copy()

    def label_map(self) -> np.ndarray:
        """All objects as one label map (K, J, I): 0 background, object labels 1..N in creation order; where masks
        overlap the later object wins (the project's one rule, :mod:`OncoSegLib.export.overlap`). uint8 up to 255
        objects, else uint16."""
        from OncoSegLib.export.overlap import label_map_from_masks

        with self._data:
            return label_map_from_masks([o.mask for o in self._objects.values()], self.shape_kji)

    def label_names(self) -> dict[int, str]:
        """Label value in :meth:`label_map` -> object name."""
        with self._data:
            return {label: o.name for label, o in enumerate(self._objects.values(), start=1)}

    def object_id(self, name: str) -> ObjectId:
        """The id of the object called ``name``."""
        with self._data:
            for oid, o in self._objects.items():
                if o.name == name:
                    return oid
        raise InputError(f"no object named {name!r}")

    def confidence(self, obj: ObjectId) -> ObjectConfidence:
        """Mean predicted IoU and presence over the object's non-empty slices, with a low-confidence flag.

        Values of a head the predictor marks uninformative (``confidence_heads``) and unknown per-slice values
        (None/NaN) are left out; what is left unknown is ``None`` ("n/a"), see :class:`ObjectConfidence`. That
        includes the values recorded for mask-only slices (a user mask: 1.0; a text instance: its detection score as
        presence): a model whose heads mean nothing reports n/a for the whole object rather than a mix.
        """
        o = self._obj(obj)
        heads = getattr(self.predictor, "confidence_heads", None) or {}
        use_iou, use_presence = bool(heads.get("iou", True)), bool(heads.get("presence", True))
        ious: list[float] = []
        pres: list[float] = []
        slices = 0
        with self._data:
            for ref, (iou, presence) in o.conf.items():
                if get_slice(o.mask, ref.axis, ref.index).any():
                    slices += 1
                    if use_iou and _known(iou) is not None:
                        ious.append(float(iou))
                    if use_presence and _known(presence) is not None:
                        pres.append(float(presence))
        iou_m = float(np.mean(ious)) if ious else None
        pres_m = float(np.mean(pres)) if pres else None
        low: bool | None
        if slices == 0:
            low = True  # nothing segmented: worth a look whatever the heads say
        elif iou_m is None and pres_m is None:
            low = None  # n/a: no informative head, no flag
        else:
            low = (pres_m is not None and pres_m < self.presence_threshold) or \
                  (iou_m is not None and iou_m < self.iou_threshold)
        return ObjectConfidence(iou=iou_m, presence=pres_m, low=low, slices=slices)

    def slice_confidence(self, obj: ObjectId) -> dict[SliceRef, tuple[float, float]]:
        """Per-slice (predicted IoU, presence) of an object."""
        with self._data:
            return dict(self._obj(obj).conf)

    def anchors(self, obj: ObjectId, axis: str = "axial") -> list[int]:
        """Slice indices along ``axis`` where the object holds prompts."""
        axis = check_axis(axis)
        with self._data:
            return sorted(r.index for r in self._obj(obj).prompts if r.axis == axis)

    # ================================================================== propagation
    def _default_axis(self, o: _Object) -> str:
        if o.prompts:
            return next(reversed(o.prompts)).axis
        return "axial"

    def _slice_px_per_model_px(self, axis: str) -> tuple[float, float]:
        """How many slice pixels (rows, cols) one model-input pixel spans on an ``axis`` slice."""
        hw = slice_shape(self.shape_kji, axis)
        x0, y0 = self._to_model(0.0, 0.0, hw)
        x1, y1 = self._to_model(1.0, 1.0, hw)
        return 1.0 / (y1 - y0), 1.0 / (x1 - x0)

    def _stepper(self, method: str, axis: str, margin: float, o: _Object | None = None) -> Any:
        def decode(index: int, pts: Any, labels: Any, box: Any, mask_input: Any = None) -> SliceOutcome:
            logits = self.predictor.mask_to_logits(mask_input) if mask_input is not None else None
            return self._decode(SliceRef(axis, index), pts, labels, box, logits)

        if method == "centroid":
            return CentroidStepper(decode)
        if method == "box":
            return BoxStepper(decode, margin)
        if method == "medsam":
            boxes = {r.index: sp.box for r, sp in (o.prompts.items() if o is not None else ())
                     if r.axis == axis and sp.box is not None}
            sr, sc = self._slice_px_per_model_px(axis)
            return MedsamStepper(decode, boxes, (3.0 * sr, 3.0 * sc))
        if method == "box3d":
            boxes = {r.index: sp.box for r, sp in (o.prompts.items() if o is not None else ())
                     if r.axis == axis and sp.box is not None}
            limit = None
            if o is not None and axis in o.bounds:  # a 3D box: its 2D box sits on a slice of its range
                lo, hi = o.bounds[axis]  # (the centre by default, add_box(center=) elsewhere; nearest one if several)
                inside = sorted((abs(2 * k - lo - hi), k) for k in boxes if lo <= k <= hi)
                limit = boxes[inside[0][1]] if inside else None
            sr, sc = self._slice_px_per_model_px(axis)
            rule = self.box3d_rule
            return Box3DStepper(decode, boxes, limit, (rule.shift_model_px * sr, rule.shift_model_px * sc), rule)
        n = num_slices(self.shape_kji, axis)
        return MemoryStepper(self.predictor, lambda i: self.embeddings(axis, i), lambda i: self.pixels(axis, i), n,
                             slice_shape(self.shape_kji, axis))

    def _run_object(self, o: _Object, axis: str, method: str, direction: str, min_area: int, margin: float,
                    progress: ProgressCallback | None, cancel: CancelToken | None, res: PropagationResult,
                    only_from: int | None = None, agree_dice: float | None = None, done0: int = 0,
                    total: int | None = None, segments: Any = None) -> None:
        n = num_slices(self.shape_kji, axis)
        anchors = [r.index for r in o.prompts if r.axis == axis]
        lo, hi = o.bounds.get(axis, (0, n - 1))
        segs = segments if segments is not None else plan_segments(anchors, n, direction, lo, hi, only_from)
        stepper = self._stepper(method, axis, margin, o)

        def write(idx: int, out: SliceOutcome) -> None:
            self._write(o.id, SliceRef(axis, idx), out.mask, "propagated", (out.iou, out.presence))

        def clear(idx: int) -> None:
            ref = SliceRef(axis, idx)
            if o.source.get(ref) == "propagated":
                self._write(o.id, ref, np.zeros(slice_shape(self.shape_kji, axis), dtype=bool), "propagated", None)
                o.source.pop(ref, None)

        def previous(idx: int) -> np.ndarray | None:
            ref = SliceRef(axis, idx)
            if o.source.get(ref) != "propagated":
                return None
            return np.array(get_slice(o.mask, axis, idx), dtype=bool)

        run_segments(segs, stepper, lambda a: np.array(get_slice(o.mask, axis, a), dtype=bool), write, clear,
                     previous if agree_dice is not None else None, min_area=min_area, agree_dice=agree_dice,
                     progress=progress, cancel=cancel, result=res, obj_id=o.id, done0=done0, total=total)

    def propagate(self, obj: ObjectId | None = None, direction: str = "both", method: str | None = None,
                  axis: str | None = None, progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, min_area: int = 1, margin: float = 0.1) -> PropagationResult:
        """Propagate object ``obj`` (all objects when None, one after another) through the volume.

        Args:
            direction: "both", "forward" (increasing slice index) or "backward".
            method: "memory" (SAM3 video tracker), "centroid", "box", "medsam" or "box3d" (see
                :mod:`OncoSegLib.propagation`); None = :attr:`default_method`.
            axis: slicing axis; None = the axis of the object's latest prompt.
            progress: ``(done, total, message)`` callback, once per slice.
            cancel: a :class:`CancelToken`; on cancel the slices done so far are kept and ``result.cancelled``.
            min_area: a slice whose mask has fewer pixels ends the chain (the object vanished).
            margin: box method margin as a fraction of the previous box side.
        Returns a :class:`PropagationResult` (one undo step covers the whole call). With ``obj`` None, objects
        without a prompt on the axis are left alone and listed in ``result.skipped``.
        """
        direction = check_direction(direction)
        method = check_method(method if method is not None else self.default_method)
        if method == "memory" and not getattr(self.predictor, "has_video", False):
            raise ModelError("this model has no video tracker (Sam3TrackerVideoModel), so memory propagation is "
                             "unavailable", "use method='box3d', 'medsam', 'box' or 'centroid', or load a full SAM3 "
                             "checkpoint")
        with self._lock:
            ids = [self._obj(obj).id] if obj is not None else list(self._objects)
            plans = []
            skipped: list[ObjectId] = []
            for oid in ids:
                o = self._objects[oid]
                ax = check_axis(axis) if axis is not None else self._default_axis(o)
                if not any(r.axis == ax for r in o.prompts):
                    if obj is None:  # "all objects": one without prompts (a text prompt that found nothing) waits
                        skipped.append(oid)
                        continue
                    raise InputError(f"object {o.name!r} has no prompt on a {ax} slice to propagate from",
                                     hint="add a point, box, scribble, mask or text prompt first")
                n = num_slices(self.shape_kji, ax)
                lo, hi = o.bounds.get(ax, (0, n - 1))
                segs = plan_segments([r.index for r in o.prompts if r.axis == ax], n, direction, lo, hi)
                plans.append((o, ax, segs))
            if not plans:
                raise InputError("no object has a prompt to propagate from",
                                 hint="add a point, box, scribble, mask or text prompt first")
            res = PropagationResult(objects=[o.id for o, _, _ in plans], skipped=skipped)
            total = sum(len(s.indices()) for _, _, segs in plans for s in segs)
            self._begin("propagate", [o.id for o, _, _ in plans])
            try:
                for o, ax, segs in plans:
                    done0 = len(res.processed)
                    self._run_object(o, ax, method, direction, min_area, margin, progress, cancel, res,
                                     done0=done0, total=total, segments=segs)
                    with self._data:
                        o.last_propagation = {"axis": ax, "method": method, "direction": direction,
                                              "min_area": int(min_area), "margin": float(margin)}
            except BaseException:
                self._commit()  # keep what was done (undoable) and re-raise
                raise
            self._commit()
        return res

    @property
    def default_method(self) -> str:
        """The propagation method used when none is given: "memory" with a video tracker, else "box3d" (the box
        rule of :mod:`OncoSegLib.propagation`, which a tracker-less model such as LiteMedSAM can run)."""
        return "memory" if getattr(self.predictor, "has_video", False) else "box3d"

    def _maybe_repropagate(self, o: _Object, ref: SliceRef) -> None:
        lp = o.last_propagation
        if not self.auto_repropagate or not lp or lp["axis"] != ref.axis:
            return
        res = PropagationResult(objects=[o.id])
        self._run_object(o, ref.axis, lp["method"], lp["direction"], lp["min_area"], lp["margin"], None, None, res,
                         only_from=ref.index, agree_dice=0.98)
        self.last_repropagation = res


__all__ = ["SegmentationSession", "SliceResult", "TextInstance", "ObjectConfidence", "SlicePrompts", "ObjectId",
           "confidence_text"]
