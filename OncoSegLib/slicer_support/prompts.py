"""Prompts of one segmentation object in voxel coordinates, and their JSON form.

All coordinates are volume **IJK** voxel indices (integers, i = column, j = row, k = slice) after the module
converted markups from world RAS (see ``geometry``). ``axis`` names the slice the prompt lies on ("axial" = a
k-slice, "coronal" = j, "sagittal" = i). The JSON form is what the module stores in its parameter node so that a
saved scene restores the prompts; it never contains patient data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.prompts import TextPrompt  # one text-prompt type for the engine and the Slicer prompt store
from OncoSegLib.slicer_support.geometry import check_axis

SCHEMA_VERSION = 1


def _ijk(v: Sequence[Any]) -> tuple[int, int, int]:
    if len(v) != 3:
        raise InputError(f"expected an (i, j, k) voxel index, got {list(v)!r}")
    return (int(v[0]), int(v[1]), int(v[2]))


@dataclass(frozen=True)
class PointPrompt:
    """A click on voxel ``ijk``; positive = inside the object, negative = outside."""

    ijk: tuple[int, int, int]
    positive: bool = True
    axis: str = "axial"


@dataclass(frozen=True)
class BoxPrompt:
    """A box with inclusive voxel bounds; a 3D box prompts every slice along ``axis`` it covers."""

    ijk_min: tuple[int, int, int]
    ijk_max: tuple[int, int, int]
    axis: str = "axial"


@dataclass(frozen=True)
class ScribblePrompt:
    """A stroke through voxels ``points_ijk`` (in drawing order) on one slice."""

    points_ijk: tuple[tuple[int, int, int], ...]
    positive: bool = True
    axis: str = "axial"


@dataclass
class StoredPrompts:
    """Everything the user placed for one object, in the order it was placed."""

    object_name: str = "Segment_1"
    points: list[PointPrompt] = field(default_factory=list)
    boxes: list[BoxPrompt] = field(default_factory=list)
    scribbles: list[ScribblePrompt] = field(default_factory=list)
    text: TextPrompt | None = None

    def is_empty(self) -> bool:
        return not (self.points or self.boxes or self.scribbles or self.text)

    def count(self) -> int:
        return len(self.points) + len(self.boxes) + len(self.scribbles) + (1 if self.text else 0)

    def validate(self, shape_ijk: Sequence[int]) -> None:
        """Raise InputError when any voxel lies outside a volume of ``shape_ijk`` = (I, J, K) or an axis is unknown."""
        n = tuple(int(x) for x in shape_ijk)

        def inside(v: Sequence[int], what: str) -> None:
            if not all(0 <= int(v[c]) < n[c] for c in range(3)):
                raise InputError(f"{what} at IJK {tuple(int(x) for x in v)} is outside the volume of size {n}",
                                 hint="clear the prompts and place them on the selected volume")

        for p in self.points:
            check_axis(p.axis)
            inside(p.ijk, "point")
        for b in self.boxes:
            check_axis(b.axis)
            inside(b.ijk_min, "box corner")
            inside(b.ijk_max, "box corner")
            if any(b.ijk_min[c] > b.ijk_max[c] for c in range(3)):
                raise InputError(f"box minimum {b.ijk_min} exceeds its maximum {b.ijk_max}")
        for s in self.scribbles:
            check_axis(s.axis)
            if not s.points_ijk:
                raise InputError("empty scribble")
            for v in s.points_ijk:
                inside(v, "scribble point")
        if self.text is not None:
            check_axis(self.text.axis)
            if not self.text.text.strip():
                raise InputError("empty text prompt", hint="type what to find, e.g. 'liver tumor'")

    # ----- JSON (parameter node) -----
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = SCHEMA_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StoredPrompts":
        if not isinstance(d, dict):
            raise InputError("prompt data must be a JSON object")
        version = int(d.get("version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise InputError(f"prompts were saved by a newer OncoSeg (schema {version})",
                             hint="update the OncoSeg extension")
        text = d.get("text")
        return cls(
            object_name=str(d.get("object_name", "Segment_1")),
            points=[PointPrompt(_ijk(p["ijk"]), bool(p.get("positive", True)), str(p.get("axis", "axial")))
                    for p in d.get("points", [])],
            boxes=[BoxPrompt(_ijk(b["ijk_min"]), _ijk(b["ijk_max"]), str(b.get("axis", "axial")))
                   for b in d.get("boxes", [])],
            scribbles=[ScribblePrompt(tuple(_ijk(v) for v in s["points_ijk"]), bool(s.get("positive", True)),
                                      str(s.get("axis", "axial"))) for s in d.get("scribbles", [])],
            text=None if not text else TextPrompt(str(text["text"]), str(text.get("axis", "axial")),
                                                  None if text.get("index") is None else int(text["index"])),
        )

    @classmethod
    def from_json(cls, s: str) -> "StoredPrompts":
        if not s or not s.strip():
            return cls()
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise InputError(f"stored prompts are not valid JSON ({e.msg})",
                             hint="clear the prompts and place them again") from e
        return cls.from_dict(d)


def prompts_from_console(spec: Any, object_name: str = "Segment_1",
                         ras_to_ijk: np.ndarray | None = None, volume_to_world: np.ndarray | None = None,
                         shape_ijk: Sequence[int] | None = None) -> StoredPrompts:
    """Build a StoredPrompts from the plain Python the console Logic accepts.

    Accepted ``spec`` forms (points in IJK unless the key says ``_ras``; RAS points are world RAS mm and need
    ``ras_to_ijk``):
        - a StoredPrompts (returned as is);
        - a str: a text prompt on the middle axial slice;
        - a dict with any of ``points`` [[i,j,k], ...], ``negative`` [[i,j,k], ...], ``points_ras`` /
          ``negative_ras`` [[r,a,s], ...], ``box`` [[i0,j0,k0],[i1,j1,k1]], ``box_ras`` [[r,a,s],[r,a,s]],
          ``scribble`` [[i,j,k], ...], ``text`` "liver", ``axis`` "axial", ``name``.
    """
    from OncoSegLib.slicer_support.geometry import round_ijk, world_points_to_ijk

    if isinstance(spec, StoredPrompts):
        return spec
    if isinstance(spec, str):
        return StoredPrompts(object_name=object_name, text=TextPrompt(spec))
    if not isinstance(spec, dict):
        raise InputError(f"prompts must be a dict, a text or a StoredPrompts, got {type(spec).__name__}")
    known = {"points", "negative", "points_ras", "negative_ras", "box", "box_ras", "scribble", "text", "axis", "name"}
    unknown = set(spec) - known
    if unknown:
        raise InputError(f"unknown prompt keys {sorted(unknown)}", hint=f"use {sorted(known)}")
    axis = check_axis(str(spec.get("axis", "axial")))
    ps = StoredPrompts(object_name=str(spec.get("name", object_name)))

    def ras(points: Any) -> list[tuple[int, int, int]]:
        if ras_to_ijk is None or shape_ijk is None:
            raise InputError("RAS prompts need the volume geometry")
        ijk = world_points_to_ijk(points, ras_to_ijk, volume_to_world)
        return [round_ijk(p, shape_ijk) for p in ijk]

    for key, positive in (("points", True), ("negative", False)):
        for p in spec.get(key, []):
            ps.points.append(PointPrompt(_ijk(p), positive, axis))
    for key, positive in (("points_ras", True), ("negative_ras", False)):
        if spec.get(key):
            for v in ras(spec[key]):
                ps.points.append(PointPrompt(v, positive, axis))
    corners: list[tuple[int, int, int]] | None = None
    if spec.get("box") is not None:
        corners = [_ijk(v) for v in spec["box"]]
    elif spec.get("box_ras") is not None:
        corners = ras(spec["box_ras"])
    if corners is not None:
        if len(corners) != 2:
            raise InputError("a box needs two opposite corners")
        lo = tuple(min(a, b) for a, b in zip(*corners))  # any two opposite corners, in any order
        hi = tuple(max(a, b) for a, b in zip(*corners))
        ps.boxes.append(BoxPrompt(lo, hi, axis))  # type: ignore[arg-type]
    if spec.get("scribble"):
        ps.scribbles.append(ScribblePrompt(tuple(_ijk(v) for v in spec["scribble"]), True, axis))
    if spec.get("text"):
        ps.text = TextPrompt(str(spec["text"]), axis)
    if shape_ijk is not None:
        ps.validate(shape_ijk)
    return ps


def prompts_from_markups(object_name: str, ras_to_ijk: np.ndarray, shape_ijk: Sequence[int],
                         volume_to_world: np.ndarray | None = None,
                         positive_world: np.ndarray | None = None, positive_axes: Sequence[str] | None = None,
                         negative_world: np.ndarray | None = None, negative_axes: Sequence[str] | None = None,
                         roi_corners_world: np.ndarray | None = None, scribble_world: np.ndarray | None = None,
                         scribble_axis: str | None = None, text: str = "", default_axis: str = "axial") -> StoredPrompts:
    """Assemble an object's prompts from the markups the user placed (all positions in world RAS mm).

    Args:
        object_name: segment name the prompts belong to.
        ras_to_ijk, volume_to_world, shape_ijk: the input volume's geometry (see ``geometry``).
        positive_world / negative_world: (N, 3) fiducial positions; ``*_axes``: per point, the slicing axis recorded
            when it was placed ("" or missing = ``default_axis``).
        roi_corners_world: (8, 3) corners of a markups ROI (``geometry.roi_corners_world``), or None.
        scribble_world: (M, 3) points along a drawn curve, or None; ``scribble_axis`` its axis (None = the
            axis its voxels are flat on, else ``default_axis``).
        text: optional text prompt (evaluated on the middle slice of ``default_axis``).
    Points outside the volume raise InputError naming the point.
    """
    from OncoSegLib.slicer_support.geometry import (AXIS_TO_IJK_INDEX, polyline_to_voxels, roi_to_ijk_box, round_ijk,
                                                    world_points_to_ijk)

    check_axis(default_axis)
    ps = StoredPrompts(object_name=object_name)
    for world, axes, positive in ((positive_world, positive_axes, True), (negative_world, negative_axes, False)):
        if world is None or len(world) == 0:
            continue
        ijk = world_points_to_ijk(world, ras_to_ijk, volume_to_world)
        for n, p in enumerate(ijk):
            axis = (axes[n] if axes is not None and n < len(axes) and axes[n] else default_axis)
            ps.points.append(PointPrompt(round_ijk(p, shape_ijk), positive, check_axis(axis)))
    if roi_corners_world is not None:
        box = roi_to_ijk_box(np.asarray(roi_corners_world), ras_to_ijk, shape_ijk, volume_to_world,
                             axis=None)
        ps.boxes.append(BoxPrompt(box.ijk_min, box.ijk_max, box.axis))
    if scribble_world is not None and len(scribble_world) > 0:
        cont = world_points_to_ijk(scribble_world, ras_to_ijk, volume_to_world)
        vox = polyline_to_voxels(cont, shape_ijk)
        if len(vox):
            axis = scribble_axis
            if not axis:
                flat = [c for c in range(3) if np.ptp(vox[:, c]) == 0]
                inv = {v: k for k, v in AXIS_TO_IJK_INDEX.items()}
                axis = inv[flat[-1]] if flat else default_axis
            ps.scribbles.append(ScribblePrompt(tuple(tuple(int(x) for x in v) for v in vox), True, check_axis(axis)))
    if text.strip():
        ps.text = TextPrompt(text.strip(), default_axis)
    return ps


def defined_indices(statuses: Sequence[int], defined_status: int) -> list[int]:
    """Indices of the markup control points whose position is defined.

    While a markup is being placed, Slicer keeps a *preview* control point that follows the mouse
    (``vtkMRMLMarkupsNode.PositionPreview``), and a point can be *undefined* or *missing*; such points are listed by
    ``GetNumberOfControlPoints`` and returned by ``slicer.util.arrayFromMarkupsControlPoints`` but are not prompts.

    Args:
        statuses: ``GetNthControlPointPositionStatus(n)`` for every control point, in order.
        defined_status: the value of ``vtkMRMLMarkupsNode.PositionDefined`` (2 in Slicer 5.x).
    """
    return [n for n, s in enumerate(statuses) if int(s) == int(defined_status)]
