"""Prompt types and the prompts JSON format (see docs/prompts.md).

All geometric prompts hold **voxel indices (i, j, k)** of the volume they were made for (floats allowed; a voxel
index is the voxel centre). Files may give points in patient millimetres (LPS, or RAS); :func:`load_prompts`
converts them with the volume's geometry and checks that every prompt lies inside the image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.slicing import AXES, check_axis, check_ijk_inside

IJK = tuple[float, float, float]
FRAMES = ("ijk", "lps", "ras")


@dataclass(frozen=True)
class PointPrompt:
    """A click at voxel ``ijk`` (i, j, k); ``positive`` = inside the object (False = background click)."""

    ijk: IJK
    positive: bool = True


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box through voxel centres ``ijk_min`` .. ``ijk_max`` (inclusive, IJK).

    A 2D box has the same coordinate on the slicing axis for both corners; a 3D box spans several slices: the
    session prompts its centre slice with the 2D box and limits propagation of that object to the box's slice range.
    """

    ijk_min: IJK
    ijk_max: IJK


@dataclass(frozen=True)
class ScribblePrompt:
    """A polyline through voxel positions ``points_ijk`` on one slice; ``positive`` = foreground scribble."""

    points_ijk: tuple[IJK, ...]
    positive: bool = True


@dataclass
class MaskPrompt:
    """A 2D mask ``(H, W)`` bool for slice ``index`` along ``axis`` (the slice's row/col layout, see slicing)."""

    mask: np.ndarray
    axis: str = "axial"
    index: int = 0


@dataclass(frozen=True)
class TextPrompt:
    """A text prompt ("liver tumour") evaluated on slice ``index`` along ``axis`` (None = the middle slice)."""

    text: str
    axis: str = "axial"
    index: int | None = None


@dataclass
class ObjectPrompts:
    """The prompts of one named object, as read from a prompts file (coordinates already in IJK).

    ``text`` (optional) finds the object by text: the best-scoring instance becomes this object.
    ``axis`` is the slicing axis its 2D prompts are decoded on and propagation runs along.
    """

    name: str
    axis: str = "axial"
    points: list[PointPrompt] = field(default_factory=list)
    boxes: list[BoxPrompt] = field(default_factory=list)
    scribbles: list[ScribblePrompt] = field(default_factory=list)
    masks: list[MaskPrompt] = field(default_factory=list)
    text: TextPrompt | None = None

    @property
    def empty(self) -> bool:
        return not (self.points or self.boxes or self.scribbles or self.masks or self.text)


@dataclass
class PromptSet:
    """Everything a prompts file holds: named objects and free text prompts (each instance becomes an object)."""

    objects: list[ObjectPrompts] = field(default_factory=list)
    texts: list[TextPrompt] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- loading
def _to_ijk(coords: Any, frame: str, volume: Any, what: str) -> IJK:
    try:
        p = np.asarray(coords, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{what}: coordinates must be 3 numbers, got {coords!r}") from None
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise InputError(f"{what}: coordinates must be 3 finite numbers, got {coords!r}")
    if frame == "ijk":
        ijk = p
    elif frame == "lps":
        ijk = volume.lps_to_ijk_points(p)[0]
    elif frame == "ras":
        ijk = volume.lps_to_ijk_points(p * np.array([-1.0, -1.0, 1.0]))[0]
    else:  # pragma: no cover - checked before
        raise InputError(f"{what}: unknown frame {frame!r}", hint=f"use one of {', '.join(FRAMES)}")
    out = (float(ijk[0]), float(ijk[1]), float(ijk[2]))
    check_ijk_inside(out, volume.shape_kji, what)
    return out


def _frame_of(entry: Any, default: str, what: str) -> tuple[str, Any]:
    """(frame, coordinates) of a point entry: a bare [a, b, c] list uses ``default``; a dict names its frame."""
    if isinstance(entry, dict):
        keys = [f for f in FRAMES if f in entry]
        if len(keys) != 1:
            raise InputError(f"{what}: give exactly one of {', '.join(repr(f) for f in FRAMES)}, got keys "
                             f"{sorted(entry)}")
        return keys[0], entry[keys[0]]
    return default, entry


def _check_frame(frame: Any, what: str) -> str:
    f = str(frame).lower()
    if f not in FRAMES:
        raise InputError(f"{what}: unknown coordinate frame {frame!r}", hint=f"use one of {', '.join(FRAMES)}")
    return f


def _positive(entry: Any, what: str) -> bool:
    if not isinstance(entry, dict):
        return True
    if "positive" in entry:
        v = entry["positive"]
        if not isinstance(v, bool):  # "no" or "false" as a string would otherwise count as positive
            raise InputError(f"{what}: \"positive\" must be true or false (JSON booleans), got {v!r}")
        return v
    if "label" in entry:
        if isinstance(entry["label"], bool) or entry["label"] not in (0, 1):
            raise InputError(f"{what}: label must be 1 (foreground) or 0 (background), got {entry['label']!r}")
        return entry["label"] == 1
    return True


def _list_of(value: Any, what: str, example: str) -> list:
    """``value`` if it is a JSON list, else an ``InputError`` showing the expected shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{what} must be a list, e.g. {example}; got {value!r}"[:300])
    return value


def _slice_index(value: Any, what: str) -> int | None:
    """A slice index from JSON (integer or None), or an ``InputError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise InputError(f"{what}: \"index\" must be a whole slice number, got {value!r}")
    return int(value)


def _text_of(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what}: text must be a non-empty string such as \"liver tumour\", got {value!r}")
    return value


def parse_prompts(data: dict[str, Any], volume: Any) -> PromptSet:
    """Parse a prompts document (already decoded JSON) for ``volume``; coordinates become IJK, checked inside.

    Raises :class:`InputError` naming the object and prompt at fault and, for out-of-image prompts, the extent.
    """
    if not isinstance(data, dict):
        raise InputError("prompts file must hold a JSON object with an \"objects\" list (see docs/prompts.md)")
    top_frame = _check_frame(data.get("frame", "ijk"), "prompts file")
    top_axis = check_axis(data.get("axis", "axial"))
    result = PromptSet()
    objects = data.get("objects", [])
    if not isinstance(objects, list):
        raise InputError("\"objects\" must be a list of objects")
    names: set[str] = set()
    for n, obj in enumerate(objects, start=1):
        if not isinstance(obj, dict):
            raise InputError(f"object {n} must be a JSON object")
        name = str(obj.get("name") or f"object {n}")
        if name in names:
            raise InputError(f"object name {name!r} is used twice", hint="give every object a unique name")
        names.add(name)
        where = f"object {name!r}"
        frame = _check_frame(obj.get("frame", top_frame), where)
        axis = check_axis(obj.get("axis", top_axis))
        op = ObjectPrompts(name=name, axis=axis)
        for m, entry in enumerate(_list_of(obj.get("points"), f"{where}: \"points\"", "[[i, j, k], ...]"),
                                  start=1):
            what = f"{where}, point {m}"
            f, c = _frame_of(entry, frame, what)
            op.points.append(PointPrompt(_to_ijk(c, f, volume, what), _positive(entry, what)))
        for m, entry in enumerate(_list_of(obj.get("boxes"), f"{where}: \"boxes\"",
                                           '[{"min": [i, j, k], "max": [i, j, k]}]'), start=1):
            what = f"{where}, box {m}"
            if not isinstance(entry, dict) or "min" not in entry or "max" not in entry:
                raise InputError(f"{what}: a box is {{\"min\": [..], \"max\": [..]}} (optionally \"frame\")")
            f = _check_frame(entry.get("frame", frame), what)
            a = np.array(_to_ijk(entry["min"], f, volume, what + " min corner"))
            b = np.array(_to_ijk(entry["max"], f, volume, what + " max corner"))
            lo, hi = np.minimum(a, b), np.maximum(a, b)  # LPS/RAS corners may swap under the direction matrix
            op.boxes.append(BoxPrompt(tuple(float(v) for v in lo), tuple(float(v) for v in hi)))  # type: ignore[arg-type]
        for m, entry in enumerate(_list_of(obj.get("scribbles"), f"{where}: \"scribbles\"",
                                           '[{"points": [[i, j, k], ...]}]'), start=1):
            what = f"{where}, scribble {m}"
            pts = entry.get("points") if isinstance(entry, dict) else entry
            if not isinstance(pts, list) or len(pts) < 1:
                raise InputError(f"{what}: a scribble is {{\"points\": [[..], [..], ...], \"positive\": true}}")
            f = _check_frame(entry.get("frame", frame) if isinstance(entry, dict) else frame, what)
            ijks = tuple(_to_ijk(p, f, volume, f"{what}, vertex {v}") for v, p in enumerate(pts, start=1))
            op.scribbles.append(ScribblePrompt(ijks, _positive(entry, what)))
        if obj.get("text") is not None:
            op.text = TextPrompt(_text_of(obj["text"], where), axis, _slice_index(obj.get("index"), where))
        if op.empty:
            raise InputError(f"{where} has no prompts", hint="add points, boxes, scribbles or text")
        result.objects.append(op)
    texts = data.get("text", [])
    if isinstance(texts, str):
        texts = [texts]
    texts = _list_of(texts, "top-level \"text\"", '["liver", {"text": "kidney", "index": 30}]')
    for m, t in enumerate(texts, start=1):
        what = f"text prompt {m}"
        if isinstance(t, dict):
            result.texts.append(TextPrompt(_text_of(t.get("text"), what), check_axis(t.get("axis", top_axis)),
                                           _slice_index(t.get("index"), what)))
        else:
            result.texts.append(TextPrompt(_text_of(t, what), top_axis, None))
    if not result.objects and not result.texts:
        raise InputError("the prompts file holds no objects and no text prompts (see docs/prompts.md)")
    return result


def load_prompts(path: str | os.PathLike, volume: Any) -> PromptSet:
    """Read a prompts JSON file (docs/prompts.md) for ``volume`` and return its :class:`PromptSet` in IJK."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompts file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"prompts file {p} is not valid JSON: {exc}") from None
    return parse_prompts(data, volume)


def scribble_samples(points_ijk: Sequence[Sequence[float]], n: int = 8) -> list[IJK]:
    """Up to ``n`` positions equally spaced by arc length along a polyline (both ends included), in IJK.

    A single vertex returns itself. Used to turn a scribble into point prompts (see ``SegmentationSession``).
    """
    pts = np.asarray(points_ijk, dtype=float).reshape(-1, 3)
    if len(pts) == 1 or n <= 1:
        return [tuple(float(v) for v in pts[0])]  # type: ignore[list-item]
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    total = float(seg.sum())
    if total == 0.0:
        return [tuple(float(v) for v in pts[0])]  # type: ignore[list-item]
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, total, n)
    out = np.stack([np.interp(targets, cum, pts[:, d]) for d in range(3)], axis=1)
    return [tuple(float(v) for v in row) for row in out]  # type: ignore[misc]


__all__ = ["PointPrompt", "BoxPrompt", "ScribblePrompt", "MaskPrompt", "TextPrompt", "ObjectPrompts",
           "PromptSet", "parse_prompts", "load_prompts", "scribble_samples", "AXES", "FRAMES"]


