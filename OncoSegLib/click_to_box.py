"""Clicks as box edits, for models trained with box prompts only (LiteMedSAM).

LiteMedSAM decodes a click alone to almost nothing and a box + corrective click can be worse than the box
(docs/engine.md, docs/evaluation.md). For such a model the session turns a click on a slice into an edit of that
slice's box (or of its mask) and re-decodes the box. All coordinates are slice pixels (row, col) of one slice;
boxes are (r0, c0, r1, c1) with inclusive pixel centres.

Rules (:func:`click_edit`):

- positive click outside the current box (the slice's own box prompt, else the box of its current mask, else the
  box of the nearest non-empty slice's mask): the box grows to include the click plus a margin; the slice's mask
  becomes the current mask plus the model's answer to that box (a positive click never removes pixels);
- positive click inside the box but outside the mask (the box already covers it, a new box would answer the same):
  the mask keeps what it has and gains the region that the model answers for a box around the click as big as the
  current box (the component containing the click only);
- negative click on a connected component of the mask that is not the largest: that component is removed;
- negative click on the largest component: the box side nearest the click moves to the click; the slice's mask
  becomes the current mask cut to the model's answer to that box (a negative click never adds pixels);
- anything else (no box anywhere, a click already right): ``None`` (the caller keeps its usual point decoding).

The session applies the edit to the clicked slice only (no re-propagation, ``SegmentationSession.
box_click_repropagate``): measured on the real CT (docs/evaluation.md), re-propagating from an edited slice carried
its smaller/larger box into the neighbouring slices and cost more than the click gained.

When the grown box's answer still misses a positive click, the session adds the component holding the click of the
answer to a box half the grown box's size centred on the click; when that misses too, the mask is the union so far
(never the point-only decode, which gives LiteMedSAM almost nothing).

Margin (growing only): max(2 pixels, 10% of the box side); the 10% is the box-propagation margin of
:mod:`OncoSegLib.propagation` (not fitted to a case).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]

MARGIN_FRACTION = 0.1
MIN_MARGIN_PX = 2.0


@dataclass
class ClickEdit:
    """What a click becomes. ``box``: decode this box and combine the answer with the current mask by ``combine``
    ("or": union, "and": intersection); ``mask``: the slice's new mask (H, W) bool, set as it is (no decoding);
    ``region_box``: decode this box and add the component containing the click to the current mask. ``kind`` names
    the rule (for logs and tests)."""

    kind: str
    box: Box | None = None
    combine: str = "or"
    mask: np.ndarray | None = None
    region_box: Box | None = None


def mask_box(mask: np.ndarray) -> Box | None:
    """Bounding box (r0, c0, r1, c1) of a (H, W) mask in slice pixels, or None when it is empty."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    return float(rows[0]), float(cols[0]), float(rows[-1]), float(cols[-1])


def _margin(lo: float, hi: float) -> float:
    return max(MIN_MARGIN_PX, MARGIN_FRACTION * (hi - lo + 1.0))


def _clip(box: Box, hw: tuple[int, int]) -> Box:
    r0, c0, r1, c1 = box
    return (max(0.0, r0), max(0.0, c0), min(hw[0] - 1.0, r1), min(hw[1] - 1.0, c1))


def click_edit(mask: np.ndarray, box: Box | None, neighbour_box: Box | None, row: float, col: float,
               positive: bool) -> ClickEdit | None:
    """The edit a click at slice pixel (``row``, ``col``) makes (module docstring).

    Args:
        mask: the object's current (H, W) bool mask on this slice (prompted or propagated).
        box: the slice's own box prompt, or None.
        neighbour_box: the box of the nearest non-empty slice's mask (used when this slice has no box and no mask).
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    hw = (int(m.shape[0]), int(m.shape[1]))
    ri, ci = int(round(row)), int(round(col))
    base = box if box is not None else mask_box(m)
    if positive:
        if base is None:
            base = neighbour_box
        if base is None:
            return None
        if m[ri, ci]:
            return None  # already inside the object
        r0, c0, r1, c1 = base
        if not (r0 <= row <= r1 and c0 <= col <= c1):
            mr, mc = _margin(r0, r1), _margin(c0, c1)
            grown = (min(r0, row - mr), min(c0, col - mc), max(r1, row + mr), max(c1, col + mc))
            return ClickEdit("grow box", box=_clip(grown, hw))
        hr, hc = (r1 - r0) / 2.0, (c1 - c0) / 2.0
        return ClickEdit("add region", region_box=_clip((row - hr, col - hc, row + hr, col + hc), hw))
    if not m[ri, ci]:
        return None  # a background click outside the object: nothing to remove
    lab, n = ndimage.label(m)
    hit = lab[ri, ci]
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        if hit != int(np.argmax(sizes)) + 1:
            out = m.copy()
            out[lab == hit] = False
            return ClickEdit("remove component", mask=out)
    if base is None:
        return None
    r0, c0, r1, c1 = base
    d = {"top": row - r0, "bottom": r1 - row, "left": col - c0, "right": c1 - col}
    side = min(d, key=d.get)  # type: ignore[arg-type]
    if side == "top":
        r0 = row
    elif side == "bottom":
        r1 = row
    elif side == "left":
        c0 = col
    else:
        c1 = col
    return ClickEdit("shrink box", box=(r0, c0, r1, c1), combine="and")


__all__ = ["ClickEdit", "click_edit", "mask_box", "MARGIN_FRACTION", "MIN_MARGIN_PX"]
