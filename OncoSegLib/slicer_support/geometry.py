"""Geometry between Slicer's world (RAS mm) and a volume's voxel grid (IJK), as plain 4x4 numpy matrices.

Frames:
- **world**: Slicer's RAS mm after all parent transforms (what ``GetNthControlPointPositionWorld`` returns).
- **volume RAS**: the volume node's own RAS frame, before its parent transform (``GetRASToIJKMatrix`` maps this).
- **IJK**: continuous voxel indices of the volume (i = column, j = row, k = slice); integer values are voxel
  centres. numpy arrays of the volume are ``[k, j, i]``.

Slicing axes follow OncoSeg's session convention: the name says which IJK index a 2D prompt slice holds constant:
``"axial"`` = a k-slice (``array[k]``), ``"coronal"`` = a j-slice, ``"sagittal"`` = an i-slice. For an axially
acquired CT these are the anatomical planes; for an oblique or sagittally acquired series they are the acquisition
planes, which is what the model sees.

Only linear transforms are handled here; the module asks the user to harden a non-linear transform first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.slicing import check_axis  # the one axis check (case-insensitive) of the project

#: axis name -> index into (i, j, k) of the coordinate held constant on that slice
AXIS_TO_IJK_INDEX: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
IJK_INDEX_TO_AXIS: dict[int, str] = {v: k for k, v in AXIS_TO_IJK_INDEX.items()}


def _as_matrix(m: np.ndarray | Sequence[Sequence[float]] | None) -> np.ndarray:
    if m is None:
        return np.eye(4)
    a = np.asarray(m, dtype=float)
    if a.shape != (4, 4):
        raise InputError(f"expected a 4x4 matrix, got shape {a.shape}")
    return a


def world_to_ijk_matrix(ras_to_ijk: np.ndarray, volume_to_world: np.ndarray | None = None) -> np.ndarray:
    """4x4 matrix mapping world RAS mm to continuous volume IJK.

    Args:
        ras_to_ijk: the volume's RASToIJK (volume RAS -> IJK), as from ``GetRASToIJKMatrix``.
        volume_to_world: the volume's parent transform to world (volume RAS -> world RAS), identity when the
            volume is not transformed.
    """
    return _as_matrix(ras_to_ijk) @ np.linalg.inv(_as_matrix(volume_to_world))


def ijk_to_world_matrix(ras_to_ijk: np.ndarray, volume_to_world: np.ndarray | None = None) -> np.ndarray:
    """4x4 inverse of :func:`world_to_ijk_matrix`: continuous IJK -> world RAS mm."""
    return np.linalg.inv(world_to_ijk_matrix(ras_to_ijk, volume_to_world))


def transform_points(matrix: np.ndarray, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Apply a 4x4 affine to an (N, 3) array of points; returns (N, 3) float."""
    m = _as_matrix(matrix)
    p = np.atleast_2d(np.asarray(points, dtype=float))
    if p.size == 0:
        return np.zeros((0, 3))
    if p.shape[1] != 3:
        raise InputError(f"expected points of shape (N, 3), got {p.shape}")
    return p @ m[:3, :3].T + m[:3, 3]


def world_points_to_ijk(points_world: np.ndarray | Sequence[Sequence[float]], ras_to_ijk: np.ndarray,
                        volume_to_world: np.ndarray | None = None,
                        markup_to_world: np.ndarray | None = None) -> np.ndarray:
    """Map markup control points to continuous IJK of a volume.

    Args:
        points_world: (N, 3) positions. World RAS mm when ``markup_to_world`` is None (as returned by
            ``GetNthControlPointPositionWorld``); otherwise in the markup node's own frame.
        ras_to_ijk: the volume's RASToIJK.
        volume_to_world: the volume's parent transform to world, or None.
        markup_to_world: the markup's parent transform to world when ``points_world`` are node coordinates.
    """
    world = transform_points(_as_matrix(markup_to_world), points_world)
    return transform_points(world_to_ijk_matrix(ras_to_ijk, volume_to_world), world)


@dataclass(frozen=True)
class NodeGrid:
    """A Slicer volume node's voxel grid seen from world coordinates, in the interface the prompt parser uses
    (``OncoSegLib.prompts.parse_object``): its "LPS"/"RAS" are **world** coordinates (after the volume's parent
    transform), as markups and the console give them.

    Attributes:
        ras_to_ijk: the volume's RASToIJK (4x4); volume_to_world: its parent transform (4x4, identity if none);
        shape_ijk: (I, J, K).
    """

    ras_to_ijk: np.ndarray
    volume_to_world: np.ndarray
    shape_ijk: tuple[int, int, int]

    @property
    def shape_kji(self) -> tuple[int, int, int]:
        return (int(self.shape_ijk[2]), int(self.shape_ijk[1]), int(self.shape_ijk[0]))

    def lps_to_ijk_points(self, points_lps: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """(N, 3) world LPS mm -> continuous IJK."""
        ras = np.atleast_2d(np.asarray(points_lps, dtype=float)) * np.array([-1.0, -1.0, 1.0])
        return world_points_to_ijk(ras, self.ras_to_ijk, self.volume_to_world)


def round_ijk(ijk: np.ndarray | Sequence[float], shape_ijk: Sequence[int], tolerance: float = 0.5) -> tuple[int, int, int]:
    """Nearest voxel (i, j, k) to a continuous IJK point; InputError when the point lies outside the volume.

    ``tolerance`` (in voxels) allows a click on the outer half of a border voxel (the voxel's own extent).
    """
    p = np.asarray(ijk, dtype=float).reshape(3)
    n = np.asarray(shape_ijk, dtype=float).reshape(3)
    if np.any(p < -tolerance) or np.any(p > n - 1 + tolerance) or not np.all(np.isfinite(p)):
        raise InputError(
            f"prompt point at IJK ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) is outside the volume "
            f"(size {int(n[0])} x {int(n[1])} x {int(n[2])})",
            hint="place the point on the selected input volume (check the volume and its transform)")
    r = np.clip(np.floor(p + 0.5), 0, n - 1).astype(int)
    return int(r[0]), int(r[1]), int(r[2])


def axis_from_slice_normal(normal_world: Sequence[float], ras_to_ijk: np.ndarray,
                           volume_to_world: np.ndarray | None = None) -> str:
    """Which slicing axis a slice view shows for this volume: the IJK axis most parallel to the view's normal.

    Args:
        normal_world: the slice view's normal in world RAS (third column of the slice node's SliceToRAS).
        ras_to_ijk, volume_to_world: the volume's geometry as in :func:`world_to_ijk_matrix`.

    Returns "axial" (k-slices), "coronal" (j-slices) or "sagittal" (i-slices). Spacing does not bias the choice:
    each IJK axis direction is normalised before comparing (a voxel's world direction, not its length).
    """
    n = np.asarray(normal_world, dtype=float).reshape(3)
    norm = np.linalg.norm(n)
    if norm == 0:
        raise InputError("slice view normal is zero")
    n = n / norm
    axes = ijk_to_world_matrix(ras_to_ijk, volume_to_world)[:3, :3]
    scores = [abs(float(np.dot(axes[:, c] / np.linalg.norm(axes[:, c]), n))) for c in range(3)]
    return IJK_INDEX_TO_AXIS[int(np.argmax(scores))]


def slice_index(ijk: Sequence[int], axis: str) -> int:
    """The index of the slice holding voxel ``ijk`` along ``axis`` (k for axial, j for coronal, i for sagittal)."""
    return int(ijk[AXIS_TO_IJK_INDEX[check_axis(axis)]])


@dataclass(frozen=True)
class IjkBox:
    """An axis-aligned box of voxels, inclusive integer bounds in IJK, plus the slice axis it prompts on."""

    ijk_min: tuple[int, int, int]
    ijk_max: tuple[int, int, int]
    axis: str
    is_2d: bool


def roi_corners_world(center_world: Sequence[float], size_world: Sequence[float],
                      axes_world: np.ndarray | None = None) -> np.ndarray:
    """The 8 corners (8, 3) of a markups ROI box in world RAS mm.

    Args:
        center_world: ROI centre (``GetCenterWorld``).
        size_world: edge lengths along the ROI's own x, y, z axes in mm (``GetSizeWorld``).
        axes_world: 3x3 (or 4x4) whose first three columns are the ROI's x, y, z directions in world
            (``GetObjectToWorldMatrix``); identity for an axis-aligned ROI. Columns are normalised here.
    """
    c = np.asarray(center_world, dtype=float).reshape(3)
    s = np.asarray(size_world, dtype=float).reshape(3)
    a = np.eye(3) if axes_world is None else np.asarray(axes_world, dtype=float)[:3, :3]
    a = a / np.linalg.norm(a, axis=0, keepdims=True)
    signs = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    return c + (signs * s) @ a.T


def roi_to_ijk_box(corners_world: np.ndarray, ras_to_ijk: np.ndarray, shape_ijk: Sequence[int],
                   volume_to_world: np.ndarray | None = None, axis: str | None = None) -> IjkBox:
    """Voxel box covered by a ROI (given by its world corners), clipped to the volume.

    A voxel is inside when its centre lies within the ROI's IJK bounding box. A ROI thinner than one voxel along
    an IJK axis is a 2D box on that axis (the slice nearest to its centre). ``axis`` forces the prompting axis;
    otherwise a 2D box uses its flat axis and a 3D box uses "axial" (k-slices), box per slice.
    """
    ijk = transform_points(world_to_ijk_matrix(ras_to_ijk, volume_to_world), corners_world)
    lo, hi = ijk.min(axis=0), ijk.max(axis=0)
    n = np.asarray(shape_ijk, dtype=int).reshape(3)
    imin = np.ceil(lo - 1e-6).astype(int)
    imax = np.floor(hi + 1e-6).astype(int)
    flat = [c for c in range(3) if hi[c] - lo[c] < 1.0]
    for c in flat:  # thinner than a voxel: the nearest slice
        imin[c] = imax[c] = int(np.floor((lo[c] + hi[c]) / 2 + 0.5))
    imin = np.clip(imin, 0, n - 1)
    imax = np.clip(imax, 0, n - 1)
    if np.any(hi < -0.5) or np.any(lo > n - 0.5) or np.any(imax < imin):
        raise InputError("the box does not overlap the input volume",
                         hint="draw the ROI on the selected input volume")
    if axis is None:
        axis = IJK_INDEX_TO_AXIS[flat[-1]] if flat else "axial"
    check_axis(axis)
    return IjkBox(tuple(int(v) for v in imin), tuple(int(v) for v in imax), axis, bool(flat))


def polyline_to_voxels(points_ijk: np.ndarray, shape_ijk: Sequence[int]) -> np.ndarray:
    """Voxels (M, 3) int visited by a polyline of continuous IJK points (a scribble), in order, no repeats.

    Segments are sampled at half-voxel steps so no voxel on the line is skipped; points outside the volume are
    dropped.
    """
    p = np.atleast_2d(np.asarray(points_ijk, dtype=float))
    if len(p) == 0:
        return np.zeros((0, 3), dtype=int)
    samples = [p[:1]]
    for a, b in zip(p[:-1], p[1:]):
        steps = max(1, int(np.ceil(np.max(np.abs(b - a)) * 2)))
        t = np.linspace(0, 1, steps + 1)[1:, None]
        samples.append(a + t * (b - a))
    allp = np.floor(np.concatenate(samples) + 0.5).astype(int)
    n = np.asarray(shape_ijk, dtype=int).reshape(3)
    inside = np.all((allp >= 0) & (allp < n), axis=1)
    allp = allp[inside]
    if len(allp) == 0:
        return np.zeros((0, 3), dtype=int)
    keep = np.ones(len(allp), dtype=bool)
    keep[1:] = np.any(allp[1:] != allp[:-1], axis=1)
    out, seen = [], set()
    for v in allp[keep]:
        t = tuple(int(x) for x in v)
        if t not in seen:
            seen.add(t)
            out.append(t)
    return np.asarray(out, dtype=int).reshape(-1, 3)


def bounding_box_kji(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Tight (k, j, i) slices around the True voxels of a (K, J, I) mask, or None when it is empty."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(m.any(axis=other))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def extent_from_bbox(bbox_kji: tuple[slice, slice, slice]) -> tuple[int, int, int, int, int, int]:
    """VTK image extent (i0, i1, j0, j1, k0, k1), inclusive, from (k, j, i) slices."""
    k, j, i = bbox_kji
    return (i.start, i.stop - 1, j.start, j.stop - 1, k.start, k.stop - 1)
