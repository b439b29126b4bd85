"""Prompt types and the prompts JSON format (see docs/prompts.md): one model and one parser for the whole project.

All geometric prompts hold **voxel indices (i, j, k)** of the volume they were made for (floats allowed; a voxel
index is the voxel centre). Files may give points in patient millimetres (LPS, or RAS); :func:`load_prompts`
converts them with the volume's geometry and checks that every prompt lies inside the image.

The same types serve the command line (``oncoseg segment --prompts``), the Python session and the 3D Slicer
module: :class:`ObjectPrompts` is what the module stores in its parameter node (``to_json``/``from_json``), and the
module's console form (``{"points_ras": [...], "box": [...]}``) is read by :func:`parse_console_prompts`, which
translates it into a prompts-file object and uses the same parser. Each geometric prompt may carry its own slicing
``axis`` (the Slicer view it was placed in); ``None`` means the object's axis.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.slicing import AXES, check_axis, check_ijk_inside

IJK = tuple[float, float, float]
FRAMES = ("ijk", "lps", "ras")
SCHEMA_VERSION = 1  # of the stored (parameter node) JSON form of ObjectPrompts

#: Limits of a prompts file. A SAM-style model takes a few clicks per slice; thousands of points are a converted
#: mask (segment it with a box, or import the mask) and would only make the run slow. Documented in docs/prompts.md.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_POINTS_PER_OBJECT = 1000
MAX_SCRIBBLE_VERTICES = 10000

#: keys each JSON object of a prompts file may hold (anything else is refused, naming the key: "boxs" is a typo)
_TOP_KEYS = {"frame", "axis", "objects", "text", "version"}
_OBJECT_KEYS = {"name", "frame", "axis", "points", "boxes", "scribbles", "text", "index"}
_POINT_KEYS = {"ijk", "lps", "ras", "positive", "label", "axis"}
_BOX_KEYS = {"min", "max", "frame", "axis"}
_SCRIBBLE_KEYS = {"points", "positive", "label", "frame", "axis"}
_TEXT_KEYS = {"text", "axis", "index"}


@dataclass(frozen=True)
class PointPrompt:
    """A click at voxel ``ijk`` (i, j, k); ``positive`` = inside the object (False = background click).

    ``axis``: the slicing axis it was placed on (None = the object's axis)."""

    ijk: IJK
    positive: bool = True
    axis: str | None = None


@dataclass(frozen=True)
class BoxPrompt:
    """An axis-aligned box through voxel centres ``ijk_min`` .. ``ijk_max`` (inclusive, IJK).

    A 2D box has the same coordinate on the slicing axis for both corners; a 3D box spans several slices: the
    session prompts its centre slice with the 2D box and limits propagation of that object to the box's slice range.
    """

    ijk_min: IJK
    ijk_max: IJK
    axis: str | None = None


@dataclass(frozen=True)
class ScribblePrompt:
    """A polyline through voxel positions ``points_ijk`` on one slice; ``positive`` = foreground scribble."""

    points_ijk: tuple[IJK, ...]
    positive: bool = True
    axis: str | None = None


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
    """The prompts of one named object (coordinates in IJK), in the order they were given.

    ``text`` (optional) finds the object by text: the best-scoring instance becomes this object.
    ``axis`` is the slicing axis its 2D prompts are decoded on (unless a prompt names its own) and propagation runs
    along. Masks are not part of the stored JSON form.
    """

    name: str = "Segment_1"
    axis: str = "axial"
    points: list[PointPrompt] = field(default_factory=list)
    boxes: list[BoxPrompt] = field(default_factory=list)
    scribbles: list[ScribblePrompt] = field(default_factory=list)
    masks: list[MaskPrompt] = field(default_factory=list)
    text: TextPrompt | None = None

    @property
    def empty(self) -> bool:
        return not (self.points or self.boxes or self.scribbles or self.masks or self.text)

    def is_empty(self) -> bool:
        return self.empty

    def count(self) -> int:
        """Number of prompts (points, boxes, scribbles, masks, text)."""
        return (len(self.points) + len(self.boxes) + len(self.scribbles) + len(self.masks)
                + (1 if self.text else 0))

    def axis_of(self, prompt: PointPrompt | BoxPrompt | ScribblePrompt) -> str:
        """The slicing axis a prompt is decoded on: its own, else the object's."""
        return check_axis(prompt.axis or self.axis)

    def validate(self, shape_ijk: Sequence[int]) -> None:
        """InputError when a prompt lies outside a volume of ``shape_ijk`` = (I, J, K), a box's minimum exceeds its
        maximum, an axis is unknown or the text is empty."""
        shape_kji = tuple(int(n) for n in shape_ijk)[::-1]
        check_axis(self.axis)
        for n, p in enumerate(self.points, start=1):
            self.axis_of(p)
            check_ijk_inside(p.ijk, shape_kji, f"object {self.name!r}, point {n}")
        for n, b in enumerate(self.boxes, start=1):
            self.axis_of(b)
            check_ijk_inside(b.ijk_min, shape_kji, f"object {self.name!r}, box {n} min corner")
            check_ijk_inside(b.ijk_max, shape_kji, f"object {self.name!r}, box {n} max corner")
            if any(b.ijk_min[c] > b.ijk_max[c] for c in range(3)):
                raise InputError(f"object {self.name!r}, box {n}: minimum {b.ijk_min} exceeds its maximum {b.ijk_max}")
        for n, sc in enumerate(self.scribbles, start=1):
            self.axis_of(sc)
            if not sc.points_ijk:
                raise InputError(f"object {self.name!r}, scribble {n} is empty")
            for v, q in enumerate(sc.points_ijk, start=1):
                check_ijk_inside(q, shape_kji, f"object {self.name!r}, scribble {n}, vertex {v}")
        if self.text is not None:
            check_axis(self.text.axis)
            _text_of(self.text.text, f"object {self.name!r}")

    # ----- stored JSON form (Slicer parameter node; never holds patient data) -----
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("masks")
        d["version"] = SCHEMA_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> "ObjectPrompts":
        """Read :meth:`to_dict` output back (IJK; ``object_name`` of schema-1 scenes is read as ``name``)."""
        if not isinstance(d, dict):
            raise InputError("prompt data must be a JSON object")
        version = d.get("version", SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version > SCHEMA_VERSION:
            raise InputError(f"prompts were saved by a newer OncoSeg (schema {version!r})",
                             hint="update the OncoSeg extension")
        name = str(d.get("name") or d.get("object_name") or "Segment_1")
        where = f"object {name!r}"

        def axis(entry: dict) -> str | None:
            return None if entry.get("axis") is None else check_axis(entry["axis"])

        try:
            out = cls(name=name, axis=check_axis(d.get("axis", "axial")))
            for n, p in enumerate(_list_of(d.get("points"), f"{where}: points", "[...]"), start=1):
                out.points.append(PointPrompt(_coords(p["ijk"], f"{where}, point {n}"),
                                              _bool(p.get("positive", True), f"{where}, point {n}"), axis(p)))
            for n, b in enumerate(_list_of(d.get("boxes"), f"{where}: boxes", "[...]"), start=1):
                out.boxes.append(BoxPrompt(_coords(b["ijk_min"], f"{where}, box {n}"),
                                           _coords(b["ijk_max"], f"{where}, box {n}"), axis(b)))
            for n, sc in enumerate(_list_of(d.get("scribbles"), f"{where}: scribbles", "[...]"), start=1):
                pts = tuple(_coords(v, f"{where}, scribble {n}") for v in sc["points_ijk"])
                out.scribbles.append(ScribblePrompt(pts, _bool(sc.get("positive", True), f"{where}, scribble {n}"),
                                                    axis(sc)))
            t = d.get("text")
            if t:
                out.text = TextPrompt(_text_of(t.get("text"), where), check_axis(t.get("axis", "axial")),
                                      _slice_index(t.get("index"), where))
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"stored prompts of {where} are malformed ({type(e).__name__}: {e})",
                             hint="clear the prompts and place them again") from None
        return out

    @classmethod
    def from_json(cls, s: str) -> "ObjectPrompts":
        if not s or not s.strip():
            return cls()
        return cls.from_dict(_loads(s, "stored prompts"))


@dataclass
class PromptSet:
    """Everything a prompts file holds: named objects and free text prompts (each instance becomes an object)."""

    objects: list[ObjectPrompts] = field(default_factory=list)
    texts: list[TextPrompt] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- loading
def _loads(text: str, what: str) -> Any:
    """json.loads with every way it can fail turned into one-line InputErrors (depth and huge numbers included)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} are not valid JSON: {exc}") from None
    except RecursionError:  # json's parser recurses per nesting level
        raise InputError(f"{what} nest JSON lists/objects too deeply", hint="see docs/prompts.md for the format") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{what} hold a number JSON cannot represent here: {str(exc).splitlines()[0][:120]}",
                         hint="coordinates are ordinary numbers such as 120 or -42.5") from None


def _refuse_constant(name: str) -> Any:
    raise InputError(f"prompts hold {name}, which is not a number", hint="write finite numbers")


def _check_keys(entry: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise InputError(f"{what}: unknown key {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if unknown[1:] else ""),
                         hint=f"allowed keys: {', '.join(sorted(allowed))} (see docs/prompts.md)")


def _coords(coords: Any, what: str) -> IJK:
    """Three finite JSON numbers (not booleans, not strings) as floats."""
    if (not isinstance(coords, (list, tuple)) or len(coords) != 3
            or not all(isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, (bool, np.bool_))
                       for c in coords)):
        raise InputError(f"{what}: coordinates must be 3 numbers, got {coords!r}"[:300])
    p = tuple(float(c) for c in coords)
    if not all(np.isfinite(p)):
        raise InputError(f"{what}: coordinates must be 3 finite numbers, got {coords!r}"[:300])
    return p  # type: ignore[return-value]


def _to_ijk(coords: Any, frame: str, volume: Any, what: str) -> IJK:
    p = np.array(_coords(coords, what))
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
        _check_keys(entry, _POINT_KEYS, what)
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


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):  # "no" or "false" as a string would otherwise count as positive
        raise InputError(f"{what}: \"positive\" must be true or false (JSON booleans), got {value!r}")
    return bool(value)


def _positive(entry: Any, what: str) -> bool:
    if not isinstance(entry, dict):
        return True
    if "positive" in entry:
        return _bool(entry["positive"], what)
    if "label" in entry:
        if isinstance(entry["label"], bool) or entry["label"] not in (0, 1):
            raise InputError(f"{what}: label must be 1 (foreground) or 0 (background), got {entry['label']!r}")
        return entry["label"] == 1
    return True


def _own_axis(entry: Any) -> str | None:
    return check_axis(entry["axis"]) if isinstance(entry, dict) and entry.get("axis") is not None else None


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or float(value) != int(value):
        raise InputError(f"{what}: \"index\" must be a whole slice number, got {value!r}")
    return int(value)


def _text_of(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what}: text must be a non-empty string such as \"liver tumour\", got {value!r}")
    return value


def parse_object(obj: Any, volume: Any, n: int = 1, frame: str = "ijk", axis: str = "axial") -> ObjectPrompts:
    """One object of a prompts document -> :class:`ObjectPrompts` in IJK, every prompt checked inside ``volume``.

    ``volume`` is anything with ``lps_to_ijk_points`` and ``shape_kji`` (a :class:`~OncoSegLib.io.volume.Volume`, or
    the Slicer module's node grid, whose LPS/RAS are world coordinates). ``frame``/``axis`` are the defaults of the
    document.
    """
    if not isinstance(obj, dict):
        raise InputError(f"object {n} must be a JSON object")
    name = str(obj.get("name") or f"object {n}")
    where = f"object {name!r}"
    _check_keys(obj, _OBJECT_KEYS, where)
    frame = _check_frame(obj.get("frame", frame), where)
    op = ObjectPrompts(name=name, axis=check_axis(obj.get("axis", axis)))
    points = _list_of(obj.get("points"), f"{where}: \"points\"", "[[i, j, k], ...]")
    if len(points) > MAX_POINTS_PER_OBJECT:
        raise InputError(f"{where} has {len(points)} points; at most {MAX_POINTS_PER_OBJECT} are accepted",
                         hint="a few clicks per slice are enough: use a box, or segment the mask you have directly")
    for m, entry in enumerate(points, start=1):
        what = f"{where}, point {m}"
        f, c = _frame_of(entry, frame, what)
        op.points.append(PointPrompt(_to_ijk(c, f, volume, what), _positive(entry, what), _own_axis(entry)))
    for m, entry in enumerate(_list_of(obj.get("boxes"), f"{where}: \"boxes\"",
                                       '[{"min": [i, j, k], "max": [i, j, k]}]'), start=1):
        what = f"{where}, box {m}"
        if not isinstance(entry, dict) or "min" not in entry or "max" not in entry:
            raise InputError(f"{what}: a box is {{\"min\": [..], \"max\": [..]}} (optionally \"frame\")")
        _check_keys(entry, _BOX_KEYS, what)
        f = _check_frame(entry.get("frame", frame), what)
        a = np.array(_to_ijk(entry["min"], f, volume, what + " min corner"))
        b = np.array(_to_ijk(entry["max"], f, volume, what + " max corner"))
        lo, hi = np.minimum(a, b), np.maximum(a, b)  # LPS/RAS corners may swap under the direction matrix
        op.boxes.append(BoxPrompt(tuple(float(v) for v in lo), tuple(float(v) for v in hi),  # type: ignore[arg-type]
                                  _own_axis(entry)))
    for m, entry in enumerate(_list_of(obj.get("scribbles"), f"{where}: \"scribbles\"",
                                       '[{"points": [[i, j, k], ...]}]'), start=1):
        what = f"{where}, scribble {m}"
        pts = entry.get("points") if isinstance(entry, dict) else entry
        if not isinstance(pts, list) or len(pts) < 1:
            raise InputError(f"{what}: a scribble is {{\"points\": [[..], [..], ...], \"positive\": true}}")
        if len(pts) > MAX_SCRIBBLE_VERTICES:
            raise InputError(f"{what} has {len(pts)} vertices; at most {MAX_SCRIBBLE_VERTICES} are accepted",
                             hint="it is sampled into 8 clicks anyway: simplify the polyline")
        if isinstance(entry, dict):
            _check_keys(entry, _SCRIBBLE_KEYS, what)
        f = _check_frame(entry.get("frame", frame) if isinstance(entry, dict) else frame, what)
        ijks = tuple(_to_ijk(p, f, volume, f"{what}, vertex {v}") for v, p in enumerate(pts, start=1))
        op.scribbles.append(ScribblePrompt(ijks, _positive(entry, what), _own_axis(entry)))
    if obj.get("text") is not None:
        op.text = TextPrompt(_text_of(obj["text"], where), op.axis, _slice_index(obj.get("index"), where))
    if op.empty:
        raise InputError(f"{where} has no prompts", hint="add points, boxes, scribbles or text")
    return op


def parse_prompts(data: Any, volume: Any) -> PromptSet:
    """Parse a prompts document (already decoded JSON) for ``volume``; coordinates become IJK, checked inside.

    Raises :class:`InputError` naming the object and prompt at fault and, for out-of-image prompts, the extent;
    unknown keys are refused naming the key.
    """
    if not isinstance(data, dict):
        raise InputError("prompts file must hold a JSON object with an \"objects\" list (see docs/prompts.md)")
    _check_keys(data, _TOP_KEYS, "prompts file")
    top_frame = _check_frame(data.get("frame", "ijk"), "prompts file")
    top_axis = check_axis(data.get("axis", "axial"))
    result = PromptSet()
    objects = data.get("objects", [])
    if not isinstance(objects, list):
        raise InputError("\"objects\" must be a list of objects")
    names: set[str] = set()
    for n, obj in enumerate(objects, start=1):
        op = parse_object(obj, volume, n, top_frame, top_axis)
        if op.name in names:
            raise InputError(f"object name {op.name!r} is used twice", hint="give every object a unique name")
        names.add(op.name)
        result.objects.append(op)
    texts = data.get("text", [])
    if isinstance(texts, str):
        texts = [texts]
    texts = _list_of(texts, "top-level \"text\"", '["liver", {"text": "kidney", "index": 30}]')
    for m, t in enumerate(texts, start=1):
        what = f"text prompt {m}"
        if isinstance(t, dict):
            _check_keys(t, _TEXT_KEYS, what)
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
    if p.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"prompts file {p} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB",
                         hint="a prompts file holds a few clicks, boxes or scribbles per object (docs/prompts.md)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"prompts file {p} is not UTF-8 text: {exc.reason}") from None
    return parse_prompts(_loads(text, f"prompts file {p}"), volume)


_CONSOLE_KEYS = {"points", "negative", "points_ras", "negative_ras", "box", "box_ras", "scribble", "text", "axis",
                 "name"}


def parse_console_prompts(spec: Any, grid: Any, name: str = "Segment_1") -> ObjectPrompts:
    """The Slicer console's prompt dict -> :class:`ObjectPrompts`, through the prompts-file parser.

    ``spec`` keys (IJK unless the key says ``_ras``; RAS = the coordinates ``grid`` maps, world RAS for the module):
    ``points`` / ``negative`` [[i, j, k], ...], ``points_ras`` / ``negative_ras`` [[r, a, s], ...], ``box``
    [[i0, j0, k0], [i1, j1, k1]] (any two opposite corners), ``box_ras``, ``scribble`` [[i, j, k], ...], ``text``
    "liver", ``axis`` "axial", ``name``. A str is a text prompt; an ObjectPrompts is returned as is.
    """
    if isinstance(spec, ObjectPrompts):
        return spec
    if isinstance(spec, str):
        return ObjectPrompts(name=name, text=TextPrompt(_text_of(spec, "text prompt")))
    if not isinstance(spec, dict):
        raise InputError(f"prompts must be a dict, a text or an ObjectPrompts, got {type(spec).__name__}")
    _check_keys(spec, _CONSOLE_KEYS, "console prompts")
    obj: dict[str, Any] = {"name": str(spec.get("name", name)), "axis": spec.get("axis", "axial")}
    points = [{"ijk": p} for p in _list_of(spec.get("points"), "points", "[[i, j, k]]")]
    points += [{"ijk": p, "positive": False} for p in _list_of(spec.get("negative"), "negative", "[[i, j, k]]")]
    points += [{"ras": p} for p in _list_of(spec.get("points_ras"), "points_ras", "[[r, a, s]]")]
    points += [{"ras": p, "positive": False} for p in _list_of(spec.get("negative_ras"), "negative_ras", "[[r, a, s]]")]
    if points:
        obj["points"] = points
    for key, frame in (("box", "ijk"), ("box_ras", "ras")):
        if spec.get(key) is not None:
            corners = _list_of(spec[key], key, "[[a, b, c], [a, b, c]]")
            if len(corners) != 2:
                raise InputError(f"{key}: a box needs two opposite corners")
            obj["boxes"] = [{"min": corners[0], "max": corners[1], "frame": frame}]
    if spec.get("scribble"):
        obj["scribbles"] = [{"points": spec["scribble"]}]
    if spec.get("text"):
        obj["text"] = spec["text"]
    return parse_object(obj, grid)


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
           "PromptSet", "parse_object", "parse_prompts", "parse_console_prompts", "load_prompts", "scribble_samples",
           "AXES", "FRAMES", "MAX_POINTS_PER_OBJECT", "MAX_SCRIBBLE_VERTICES", "MAX_FILE_BYTES"]


