"""3D propagation of one object's 2D masks through neighbouring slices.

Five methods, all per object (each object's chain reads only that object's own masks):

- ``memory``: SAM3's video tracker (``Sam3TrackerVideoModel``) with slices as frames. The anchor slice's mask is
  the conditioning input; each next slice is segmented from the memory of the previous ones. Frames are streamed:
  pixel data is produced on demand (never a whole-volume tensor), image features come from the session's embedding
  cache when the video tracker shares the tracker's weights, and stored per-frame outputs beyond the model's
  memory window (``max(num_maskmem, max_object_pointers_in_encoder)`` frames) are released, so memory stays bounded
  for 500-slice volumes.
- ``centroid`` (Onco-Seg): the next slice is prompted with one positive point at the previous mask's centroid
  (or, when the centroid falls outside a concave mask, at the mask's most interior pixel).
- ``box``: the next slice is prompted with the previous mask's bounding box grown by a margin
  (``margin`` x the box side, at least 1 pixel, clipped to the slice).
- ``medsam`` (baseline): MedSAM's 3D rule from a CVPR 2024 style 3D box (:class:`MedsamStepper`): previous mask's
  box + 3 model pixels, the anchor's box again after an empty slice, never stops inside the box range.
- ``box3d`` (default for models without a video tracker, e.g. LiteMedSAM; :class:`Box3DStepper`): MedSAM's rule
  with a proportional margin, the 3D box as hard in-plane limits, and a guard against masks that jump.

"3D from one box": a 3D box prompt (``SegmentationSession.add_box`` with corners on different slices; CVPR 2024
"segment anything in medical images on a laptop" style) prompts its middle slice ``(lo + hi) // 2`` with its
in-plane extent and limits the object's propagation to its slice range ``lo..hi``; ``medsam`` and ``box3d``
propagate from there in both directions.

Which slices a run covers (``plan_segments``): anchors are the slices of the object that hold prompts on the
propagation axis. Each non-anchor slice belongs to its nearest anchor (ties go to the lower anchor) when
propagating in both directions; with one direction only, an anchor runs until the next anchor. A 3D box limits the
slice range. A chain stops when the object vanishes (mask area below ``min_area`` pixels): that slice and the rest of
its segment are cleared.

Refinement rule: a prompt added later on a slice of the propagation axis makes that slice an anchor and re-runs only
its own segments (same method and direction as the last propagation), outward from it, stopping early as soon as a
new mask agrees with the previous result on that slice (Dice >= ``agree_dice``, default 0.98) — later slices of
the chain would come out the same — or the object vanishes, or the next anchor's territory begins.

Cancel: the token is polled between slices; everything finished so far is kept and the result says ``cancelled``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from OncoSegLib.cancel import CancelToken, ProgressCallback, report
from OncoSegLib.errors import InputError, ModelError

METHODS = ("memory", "centroid", "box", "medsam", "box3d")
DIRECTIONS = ("both", "forward", "backward")


@dataclass
class SliceOutcome:
    """One propagated slice: ``mask`` (H, W) bool in slice pixels, predicted ``iou`` (NaN if unknown), ``presence``;
    ``stop`` (set by a stepper) ends the chain here with that reason: this slice and the rest are cleared."""

    mask: np.ndarray
    iou: float = float("nan")
    presence: float = 1.0
    stop: str | None = None


@dataclass(frozen=True)
class Segment:
    """Slices ``anchor + step, anchor + 2*step, ... stop`` (inclusive) propagated from ``anchor``."""

    anchor: int
    step: int
    stop: int

    def indices(self) -> list[int]:
        if (self.stop - self.anchor) * self.step <= 0:
            return []
        return list(range(self.anchor + self.step, self.stop + self.step, self.step))


@dataclass
class PropagationResult:
    """What a propagation did.

    Attributes:
        processed: slice indices segmented, in processing order (per object, objects one after another).
        stopped: per (object id, anchor, step) the reason a segment ended: "end", "vanished", "agrees", "cancelled".
        cancelled: True when the cancel token stopped the run (partial results are kept).
        objects: ids of the objects propagated.
        processed_by_object: object id -> its processed slice indices.
        skipped: ids of objects left alone because they hold no prompt on the propagation axis.
    """

    processed: list[int] = field(default_factory=list)
    stopped: dict[tuple[int, int, int], str] = field(default_factory=dict)
    cancelled: bool = False
    objects: list[int] = field(default_factory=list)
    processed_by_object: dict[int, list[int]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


def check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise InputError(f"unknown propagation method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    return m


def check_direction(direction: str) -> str:
    d = str(direction).lower()
    if d not in DIRECTIONS:
        raise InputError(f"unknown propagation direction {direction!r}", hint=f"use one of {', '.join(DIRECTIONS)}")
    return d


def plan_segments(anchors: Iterable[int], n: int, direction: str = "both", lo: int = 0, hi: int | None = None,
                  only_from: int | None = None) -> list[Segment]:
    """The segments a propagation runs (see the module docstring for the nearest-anchor rule).

    Args:
        anchors: slice indices holding prompts; n: number of slices along the axis; lo/hi: inclusive index limits
            (a 3D box); only_from: keep only the segments starting at this anchor (refinement re-runs).
    """
    direction = check_direction(direction)
    hi = n - 1 if hi is None else min(int(hi), n - 1)
    lo = max(int(lo), 0)
    a = sorted({int(x) for x in anchors})
    segs: list[Segment] = []
    fwd = direction in ("both", "forward")
    bwd = direction in ("both", "backward")
    for idx, anchor in enumerate(a):
        nxt = a[idx + 1] if idx + 1 < len(a) else None
        prv = a[idx - 1] if idx > 0 else None
        if fwd:
            if nxt is None:
                stop = hi
            elif direction == "both":
                stop = (anchor + nxt) // 2
            else:
                stop = nxt - 1
            stop = min(stop, hi)
            if stop > anchor:
                segs.append(Segment(anchor, +1, stop))
        if bwd:
            if prv is None:
                stop = lo
            elif direction == "both":
                stop = (prv + anchor) // 2 + 1
            else:
                stop = prv + 1
            stop = max(stop, lo)
            if stop < anchor:
                segs.append(Segment(anchor, -1, stop))
    if only_from is not None:
        segs = [s for s in segs if s.anchor == int(only_from)]
    return segs


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    sa, sb = int(a.sum()), int(b.sum())
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


# ------------------------------------------------------------------------------------------------- steppers
class Stepper(Protocol):
    """Produces the next slice of a chain from the previous slice's mask."""

    def start(self, anchor: int, anchor_mask: np.ndarray, step: int) -> None: ...

    def step(self, index: int, prev_mask: np.ndarray) -> SliceOutcome: ...

    def close(self) -> None: ...


# decode(index, points_rc (N,2) | None, labels (N,) | None, box_rc (r0, c0, r1, c1) | None[, mask_input=(H, W) bool])
# -> SliceOutcome; all in slice pixels. ``mask_input`` (keyword, optional) is a previous mask the session turns into
# the decoder's mask-input logits (``predictor.mask_to_logits``).
DecodeFn = Callable[..., SliceOutcome]
Box = tuple[float, float, float, float]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(row, col) of the centroid of ``mask``; if that pixel is outside the mask, the most interior mask pixel."""
    rows, cols = np.nonzero(mask)
    r, c = float(rows.mean()), float(cols.mean())
    ri, ci = int(round(r)), int(round(c))
    if 0 <= ri < mask.shape[0] and 0 <= ci < mask.shape[1] and mask[ri, ci]:
        return r, c
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ri, ci = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(ri), float(ci)


def bbox_with_margin(mask: np.ndarray, margin: float = 0.1) -> tuple[float, float, float, float]:
    """(r0, c0, r1, c1) inclusive pixel-centre box of ``mask`` grown by ``margin`` x side (>= 1 px), clipped."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    mr = max(1.0, margin * (r1 - r0 + 1))
    mc = max(1.0, margin * (c1 - c0 + 1))
    h, w = mask.shape
    return (max(0.0, r0 - mr), max(0.0, c0 - mc), min(h - 1.0, r1 + mr), min(w - 1.0, c1 + mc))


class CentroidStepper:
    """Onco-Seg's reseeding: one positive point at the previous mask's centroid."""

    def __init__(self, decode: DecodeFn):
        self.decode = decode

    def start(self, anchor: int, anchor_mask: np.ndarray, step: int) -> None:
        return None

    def step(self, index: int, prev_mask: np.ndarray) -> SliceOutcome:
        r, c = interior_point(prev_mask)
        return self.decode(index, np.array([[r, c]]), np.array([1]), None)

    def close(self) -> None:
        return None


def clip_box(box: Box, hw: tuple[int, int], limit: Box | None = None) -> Box:
    """``box`` (r0, c0, r1, c1) clipped to the slice (H, W) and, when given, to ``limit`` (same layout)."""
    h, w = hw
    r0, c0, r1, c1 = (float(v) for v in box)
    lr0, lc0, lr1, lc1 = limit if limit is not None else (0.0, 0.0, h - 1.0, w - 1.0)
    r0, c0 = max(r0, lr0, 0.0), max(c0, lc0, 0.0)
    r1, c1 = min(r1, lr1, h - 1.0), min(c1, lc1, w - 1.0)
    if r1 < r0:  # the box lies wholly outside the limit: collapse onto the limit's nearest edge
        r0 = r1 = min(max(r0, lr0), lr1)
    if c1 < c0:
        c0 = c1 = min(max(c0, lc0), lc1)
    return (r0, c0, r1, c1)


def tight_box(mask: np.ndarray) -> Box:
    """(r0, c0, r1, c1) inclusive pixel-centre bounding box of a non-empty boolean mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(rows[0]), float(cols[0]), float(rows[-1]), float(cols[-1]))


class MedsamStepper:
    """MedSAM's 3D rule (the baseline of the CVPR 2024 "segment anything in medical images on a laptop" challenge):
    each next slice is prompted with the previous slice's mask box grown by 3 model pixels per side (MedSAM's
    ``bbox_shift`` on its 256-pixel input); when the previous mask is empty, with the anchor's box prompt (the 3D
    box's 2D box) again. The chain never stops early: it runs to the end of its segment, i.e. of the 3D box's slice
    range (``stop_on_vanish`` False).

    Args:
        decode: the session's decoder (slice pixels).
        anchor_boxes: anchor slice -> its box prompt (r0, c0, r1, c1); an anchor without one falls back to its
            mask's box.
        shift_rc: 3 model pixels in slice pixels (rows, cols).
    """

    stop_on_vanish = False

    def __init__(self, decode: DecodeFn, anchor_boxes: dict[int, Box], shift_rc: tuple[float, float]):
        self.decode = decode
        self.anchor_boxes = dict(anchor_boxes)
        self.shift_rc = (float(shift_rc[0]), float(shift_rc[1]))
        self._fallback: Box = (0.0, 0.0, 0.0, 0.0)

    def start(self, anchor: int, anchor_mask: np.ndarray, step: int) -> None:
        self._fallback = self.anchor_boxes.get(int(anchor)) or tight_box(anchor_mask)

    def step(self, index: int, prev_mask: np.ndarray) -> SliceOutcome:
        if prev_mask.any():
            r0, c0, r1, c1 = tight_box(prev_mask)
            dr, dc = self.shift_rc
            box = clip_box((r0 - dr, c0 - dc, r1 + dr, c1 + dc), prev_mask.shape)
        else:
            box = self._fallback
        return self.decode(index, None, None, box)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Box3DRule:
    """The constants of the ``box3d`` rule (why each value: :class:`Box3DStepper`)."""

    margin: float = 0.10  # growth of a box side the mask touches, fraction of the mask's box side
    shift_model_px: float = 3.0  # MedSAM's box growth per side in model pixels: the first box, and the smallest growth
    agree_dice: float = 0.9  # a grown box's mask is kept only when it agrees this well with the mask before growing
    max_grow: int = 3  # growth steps per slice at most
    touch_px: float = 1.0  # a mask "touches" a box side when its extent reaches within this of the side
    limit_tolerance_px: float = 0.5  # masks are cut to the 3D box plus this (its corners are voxel centres)
    clamp_in_plane: bool = False  # cut masks / clip boxes to the 3D box's in-plane extent (only for a tight 3D box)


class Box3DStepper:
    """OncoSeg's 3D-from-one-box rule, the default for tracker-less models (LiteMedSAM): MedSAM's rule with four
    changes, each aimed at a failure of that rule measured on the real CT and phantoms (``benchmarks/box3d.py``).

    0. **The user's box seeds the chain.** The first slice after the anchor is prompted from the union of the
       anchor's mask box and the box the user gave on the anchor slice (not from the mask alone): the model's mask
       there is often a little smaller than the box the user drew around the object (spleen: 37 pixels short), and
       every later prompt inherited that loss. The anchor's own mask is not changed.
    1. **Grow the box where the mask touches it.** Each next slice is first prompted, as MedSAM does, with the
       previous mask's box + 3 model pixels. A box-prompted model answers inside its box, so a mask that reaches a
       side of the box (within 1 pixel) may be cut by it: the organ grows on that side between slices, and MedSAM's
       tight box then loses it slice after slice (the spleen fell to 0.1 slice Dice at the top of its range). That
       side (only that side) is moved out by max(3 model px, 10% of the mask's extent) and the slice decoded again,
       up to 3 times. 10% is the margin the ``box`` method already used; 1 pixel is the box's own rounding.
    2. **Stop growing at a neighbour.** A grown box's mask is kept only when it agrees with the mask before growing
       (Dice >= 0.9, "the same object up to its boundary pixels"): a bigger change means the box reached another
       structure (the next vertebra, bowel beside the stomach, tissue next to the liver). An earlier version always
       used a 10%-grown box and kept the smaller of its mask and the tight box's mask when they disagreed: a slow
       leak passes that guard one slice at a time (phantom liver -0.06 against MedSAM's rule).
    3. **The 3D box's slice range as hard limits** (only when the object has a 3D box on this axis). The chain runs
       to the end of the box's slice range (the object is on every slice of it): a slice that comes out empty is
       kept empty and the next slice is prompted from the last non-empty mask's box again. The in-plane extent is
       NOT a limit by default: a prompts-file / CVPR-style 3D box is one slice's 2D box plus the slice range, and
       organs are wider on other slices (cutting masks to that extent cost 0.05 mean 3D Dice on the real CT).
       ``Box3DRule(clamp_in_plane=True)`` restores the cut for a box known to be the object's tight 3D extent
       (masks cut to it + 0.5 pixel; boxes clipped to it grown by the margin rule).

    Without a 3D box (a 2D box, points or a mask as anchor) changes 1 and 2 apply and the chain ends when the object
    vanishes, like the other methods. Cost: one to four decoder runs per slice (the encoder, run once per slice,
    dominates). Measured (docs/engine.md, 31 structures: real CT + 3 phantoms, CVPR boxes): mean 3D Dice over MedSAM's
    rule +0.077 on the real CT, +0.007 on the phantoms (where MedSAM's rule already follows the organs), worst
    structure -0.014; without change 0: +0.035 / -0.001. Rejected after measuring on the same structures (change vs MedSAM's rule, real CT / phantoms, worst):
    the always-10% box with the smaller-mask guard (+0.025 / -0.010, -0.060), the same choosing by predicted IoU
    (+0.026 / -0.010, -0.064), the higher predicted IoU of tight and 10% boxes (+0.011 / -0.001, -0.018), the mask
    closer to the previous one in Dice (+0.010 / -0.007, -0.061) or area (+0.010 / -0.009, -0.069), growing where
    the mask touches without the agreement stop (+0.023 / +0.000, iliopsoas -0.209); on the real CT alone, before:
    the previous mask as SAM's mask prompt on top of the box (LiteMedSAM was trained with boxes only), a 25% margin.

    Args:
        decode: the session's decoder (slice pixels).
        anchor_boxes: anchor slice -> its box prompt (r0, c0, r1, c1).
        limit: the 3D box's in-plane extent (r0, c0, r1, c1) in slice pixels, or None without a 3D box.
        shift_rc: ``rule.shift_model_px`` model pixels in slice pixels (rows, cols).
        rule: the constants.
    """

    def __init__(self, decode: DecodeFn, anchor_boxes: dict[int, Box], limit: Box | None,
                 shift_rc: tuple[float, float], rule: Box3DRule = Box3DRule()):
        self.decode = decode
        self.anchor_boxes = dict(anchor_boxes)
        self.limit = limit
        self.shift_rc = (float(shift_rc[0]), float(shift_rc[1]))
        self.rule = rule
        self.stop_on_vanish = limit is None
        if not rule.clamp_in_plane:
            limit = None  # the range still bounds the chain (stop_on_vanish above); the in-plane extent does not
        self.limit = limit
        self.guarded = 0  # slices where the two boxes disagreed (diagnostics)
        self._last_box: Box | None = None
        self._box_limit: Box | None = None
        if limit is not None:
            lr0, lc0, lr1, lc1 = limit
            er, ec = self._growth(lr1 - lr0 + 1, lc1 - lc0 + 1)
            self._box_limit = (lr0 - er, lc0 - ec, lr1 + er, lc1 + ec)

    def _growth(self, h: float, w: float) -> tuple[float, float]:
        return max(self.shift_rc[0], self.rule.margin * h), max(self.shift_rc[1], self.rule.margin * w)

    def _cut(self, mask: np.ndarray) -> np.ndarray:
        if self.limit is None:
            return mask
        r0, c0, r1, c1 = self.limit
        t = self.rule.limit_tolerance_px
        rs = slice(max(0, int(np.ceil(r0 - t))), max(0, int(np.floor(r1 + t)) + 1))
        cs = slice(max(0, int(np.ceil(c0 - t))), max(0, int(np.floor(c1 + t)) + 1))
        out = np.zeros_like(mask)
        out[rs, cs] = mask[rs, cs]
        return out

    def _decode_box(self, index: int, box: Box, hw: tuple[int, int]) -> tuple[Box, SliceOutcome]:
        box = clip_box(box, hw, self._box_limit)
        out = self.decode(index, None, None, box)
        return box, SliceOutcome(mask=self._cut(np.asarray(out.mask, dtype=bool)), iou=out.iou,
                                 presence=out.presence)

    def start(self, anchor: int, anchor_mask: np.ndarray, step: int) -> None:
        self._last_box = tight_box(anchor_mask) if anchor_mask.any() else self.anchor_boxes.get(int(anchor))
        user_box = self.anchor_boxes.get(int(anchor))
        self._first_base = None  # change 0 of the class docstring: the user's box on the anchor slice
        if user_box is not None and self._last_box is not None:
            a, b = self._last_box, user_box
            self._first_base = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))

    def step(self, index: int, prev_mask: np.ndarray) -> SliceOutcome:
        hw = prev_mask.shape
        if self._first_base is not None:  # the first slice after the anchor
            base, self._first_base = self._first_base, None
        else:
            base = tight_box(prev_mask) if prev_mask.any() else self._last_box
        if base is None:
            return SliceOutcome(mask=np.zeros(hw, dtype=bool))
        dr, dc = self.shift_rc
        box, out = self._decode_box(index, (base[0] - dr, base[1] - dc, base[2] + dr, base[3] + dc), hw)
        for _ in range(self.rule.max_grow):
            if not out.mask.any():
                break
            mr0, mc0, mr1, mc1 = tight_box(out.mask)
            b0, b1, b2, b3 = box
            t = self.rule.touch_px
            touch = (mr0 <= b0 + t, mc0 <= b1 + t, mr1 >= b2 - t, mc1 >= b3 - t)
            if not any(touch):
                break
            gr, gc = self._growth(mr1 - mr0 + 1, mc1 - mc0 + 1)
            grown = (b0 - gr * touch[0], b1 - gc * touch[1], b2 + gr * touch[2], b3 + gc * touch[3])
            new_box, new = self._decode_box(index, grown, hw)
            if new_box == box:  # clipped to the slice / limit: nothing left to grow into
                break
            if dice(new.mask, out.mask) < self.rule.agree_dice:  # growing reached a neighbour
                self.guarded += 1
                break
            box, out = new_box, new
        if out.mask.any():
            self._last_box = tight_box(out.mask)
        return out

    def close(self) -> None:
        return None


class BoxStepper:
    """LiteMedSAM's reseeding: the previous mask's bounding box plus a margin."""

    def __init__(self, decode: DecodeFn, margin: float = 0.1):
        self.decode = decode
        self.margin = float(margin)

    def start(self, anchor: int, anchor_mask: np.ndarray, step: int) -> None:
        return None

    def step(self, index: int, prev_mask: np.ndarray) -> SliceOutcome:
        return self.decode(index, None, None, bbox_with_margin(prev_mask, self.margin))

    def close(self) -> None:
        return None


@contextlib.contextmanager
def _plain_context(predictor: Any) -> Iterator[None]:
    from OncoSegLib.models.device import oom_guard

    with oom_guard("memory propagation", getattr(predictor, "device", None)), torch.inference_mode():
        yield


class _LazyFrames:
    """Stands in for ``Sam3TrackerVideoInferenceSession.processed_frames``: reports the number of frames and makes a
    frame's pixel values only when the video model asks for one (it does not when features were injected)."""

    def __init__(self, n: int, make: Callable[[int], torch.Tensor]):
        self._n = int(n)
        self._make = make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self._make(int(idx))[0]

    def __setitem__(self, idx: int, value: torch.Tensor) -> None:  # streaming add_new_frame: not used here
        raise RuntimeError("frames are produced on demand")


class MemoryStepper:
    """SAM3 video-tracker propagation, one chain (anchor + direction) per inference session.

    Args:
        predictor: a :class:`~OncoSegLib.models.predictor.Sam3Predictor` whose bundle has a video tracker.
        embed: ``index -> ImageEmbeddings`` (the session's cached encoder, used when weights are shared).
        pixels: ``index -> (1, 3, S, S)`` model input (used by the video model when features are not shared).
        n: number of slices along the axis; hw: slice size (H, W).
        window: stored non-conditioning frame outputs kept around the current frame (None = the model's memory).
    """

    def __init__(self, predictor: Any, embed: Callable[[int], Any], pixels: Callable[[int], torch.Tensor], n: int,
                 hw: tuple[int, int], window: int | None = None):
        video = getattr(getattr(predictor, "bundle", None), "video", None)
        if video is None:
            raise ModelError("this model has no video tracker (Sam3TrackerVideoModel), so memory propagation is "
                             "unavailable", "use method='centroid' or method='box', or load a full SAM3 checkpoint")
        self.predictor = predictor
        self.video = video
        self.embed = embed
        self.pixels = pixels
        self.n = int(n)
        self.hw = tuple(int(v) for v in hw)
        cfg = video.config
        self.window = int(window) if window is not None else int(max(cfg.num_maskmem,
                                                                     cfg.max_object_pointers_in_encoder))
        self.share = predictor.video_shares_tracker()
        self.session: Any = None
        self.step_dir = 1
        self.max_stored = 0  # most non-conditioning outputs held at once (bounded-memory check)

    def _new_session(self) -> Any:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        dev = self.predictor.device
        dtype = next(self.video.parameters()).dtype
        s = Sam3TrackerVideoInferenceSession(video=None, video_height=self.hw[0], video_width=self.hw[1],
                                             inference_device=dev, inference_state_device=dev,
                                             video_storage_device="cpu", dtype=dtype)
        s.processed_frames = _LazyFrames(self.n, self.pixels)  # type: ignore[assignment]
        return s

    def _inject(self, index: int) -> None:
        if self.share:
            feats = self.predictor.video_features(self.embed(index))
            self.session.cache.cache_vision_features(index, feats)

    def _run(self, index: int, reverse: bool) -> SliceOutcome:
        from OncoSegLib.preprocessing import resize_mask_logits

        self._inject(index)
        run_context = getattr(self.predictor, "run_context", None)  # autocast (bf16 on CUDA) + decoder settings
        ctx = run_context("memory propagation") if run_context is not None else _plain_context(self.predictor)
        with ctx:
            out = self.video(inference_session=self.session, frame_idx=index, reverse=reverse)
        logits = resize_mask_logits(out.pred_masks[0:1].float().cpu(), self.hw).reshape(self.hw)
        presence = float(torch.sigmoid(out.object_score_logits.float().reshape(-1)[0]))
        mask = (logits > 0).numpy()
        if presence < 0.5:  # the tracker says the object is gone (occluded / absent) on this slice
            mask = np.zeros(self.hw, dtype=bool)
        self._prune(index)
        return SliceOutcome(mask=mask, iou=float("nan"), presence=presence)

    def _prune(self, index: int) -> None:
        """Release stored outputs the model can no longer read (older than the memory window) and the high-res
        masks (only needed inside the call that made them)."""
        for per_obj in self.session.output_dict_per_obj.values():
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for out in per_obj[kind].values():
                    out.pop("high_res_masks", None)
            nc = per_obj["non_cond_frame_outputs"]
            for k in [k for k in nc if abs(k - index) >= self.window]:
                del nc[k]
            self.max_stored = max(self.max_stored, len(nc))
        for tracked in self.session.frames_tracked_per_obj.values():
            for k in [k for k in tracked if abs(k - index) >= self.window]:
                del tracked[k]

    def stored_outputs(self) -> int:
        """Number of per-frame outputs the current session holds (conditioning + non-conditioning)."""
        if self.session is None:
            return 0
        return sum(len(o["cond_frame_outputs"]) + len(o["non_cond_frame_outputs"])
                   for o in self.session.output_dict_per_obj.values())

    def start(self, anchor: int, anchor_mask: np.ndarray, step: int) -> None:
        self.close()
        self.session = self._new_session()
        self.step_dir = int(step)
        s = self.predictor.image_size
        m = torch.as_tensor(np.asarray(anchor_mask, dtype=np.float32))[None, None]
        m = torch.nn.functional.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
        obj_idx = self.session.obj_id_to_idx(1)
        self.session.add_mask_inputs(obj_idx, anchor, m)
        self.session.obj_with_new_inputs = [1]
        self._run(anchor, reverse=False)

    def step(self, index: int, prev_mask: np.ndarray) -> SliceOutcome:
        return self._run(index, reverse=self.step_dir < 0)

    def close(self) -> None:
        if self.session is not None:
            self.session.reset_inference_session()
        self.session = None


# ------------------------------------------------------------------------------------------------- driver
def run_segments(segments: list[Segment], stepper: Stepper, anchor_mask: Callable[[int], np.ndarray],
                 write: Callable[[int, SliceOutcome], None], clear: Callable[[int], None],
                 previous: Callable[[int], "np.ndarray | None"] | None = None, min_area: int = 1,
                 agree_dice: float | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, result: PropagationResult | None = None, obj_id: int = 0,
                 done0: int = 0, total: int | None = None) -> PropagationResult:
    """Run ``segments`` with ``stepper``; ``write`` stores each slice, ``clear`` empties a slice of the segment
    after the object vanished. ``previous(index)`` (for refinement) gives the earlier mask to compare with
    ``agree_dice``. Returns (and fills) a :class:`PropagationResult`."""
    res = result if result is not None else PropagationResult()
    total = total if total is not None else sum(len(s.indices()) for s in segments)
    done = done0
    per_obj = res.processed_by_object.setdefault(obj_id, [])
    for seg in segments:
        key = (obj_id, seg.anchor, seg.step)
        if cancel is not None and cancel.cancelled:
            res.cancelled = True
            res.stopped[key] = "cancelled"
            continue
        prev = np.asarray(anchor_mask(seg.anchor), dtype=bool)
        idxs = seg.indices()
        if int(prev.sum()) < max(1, min_area):
            res.stopped[key] = "vanished"
            for j in idxs:
                clear(j)
            continue
        stepper.start(seg.anchor, prev, seg.step)
        stop_on_vanish = bool(getattr(stepper, "stop_on_vanish", True))
        reason = "end"
        try:
            for pos, idx in enumerate(idxs):
                if cancel is not None and cancel.cancelled:
                    res.cancelled = True
                    reason = "cancelled"
                    break
                out = stepper.step(idx, prev)
                done += 1
                res.processed.append(idx)
                per_obj.append(idx)
                report(progress, done, total, f"slice {idx}")
                stop = getattr(out, "stop", None)  # a stepper may end its chain (e.g. the object jumped)
                if stop or (stop_on_vanish and int(out.mask.sum()) < min_area):
                    for j in idxs[pos:]:
                        clear(j)
                    reason = str(stop or "vanished")
                    break
                old = previous(idx) if previous is not None else None
                write(idx, out)
                if agree_dice is not None and old is not None and dice(out.mask, old) >= agree_dice:
                    reason = "agrees"
                    break
                prev = out.mask
        finally:
            stepper.close()
        res.stopped[key] = reason
    return res


__all__ = ["METHODS", "DIRECTIONS", "SliceOutcome", "Segment", "PropagationResult", "plan_segments",
           "run_segments", "CentroidStepper", "BoxStepper", "MedsamStepper", "MemoryStepper", "interior_point",
           "bbox_with_margin", "clip_box", "tight_box", "dice", "check_method", "check_direction"]
