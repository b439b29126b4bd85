"""Segmentation metrics in physical units: Dice, IoU, NSD, HD95, volume, RECIST diameters; per label.

Spacing convention — read this once:
    ``spacing`` is the voxel size in mm **per array axis**, i.e. ``(sk, sj, si)`` for a ``(K, J, I)`` array
    (``(sj, si)`` for a 2D ``(J, I)`` array) — the order scipy/MONAI use. ``Volume.spacing`` is ``(si, sj, sk)``:
    pass it as ``spacing_ijk=volume.spacing`` (reversed for you), or pass ``Volume`` objects as ``pred``/``gt`` and
    the spacing is taken from them. ``spacing=None`` with bare arrays means 1 mm.

Masks: any non-zero voxel is foreground. Label maps (:func:`evaluate_label_maps`): one integer label per voxel.

Definitions (binary masks P = prediction, G = truth):
- Dice = 2|P∩G| / (|P| + |G|); IoU = |P∩G| / |P∪G|.
- Surface (boundary) voxels: foreground voxels with at least one 6-connected (4-connected in 2D) background
  neighbour or on the array border — ``mask XOR binary_erosion(mask)``, the definition MONAI's ``get_mask_edges``
  uses without sub-voxels. A single-slice ``(1, J, I)`` array (a 2D image held as a Volume) is measured as the 2D
  image ``(J, I)``; otherwise every pixel would count as surface. Distances between boundary-voxel *centres* in mm
  (exact Euclidean distance transform, ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``;
  boxes over :data:`EDT_MAX_VOXELS` use a ``scipy.spatial.cKDTree`` on boundary voxels in mm — the same exact
  distances in memory proportional to the boundary instead of the box).
- NSD at tolerance τ mm = (#{p ∈ ∂P : d(p, ∂G) <= τ} + #{g ∈ ∂G : d(g, ∂P) <= τ}) / (|∂P| + |∂G|) — equal to
  MONAI ``compute_surface_dice(use_subvoxels=False)``. It counts boundary voxels, not surface areas: the
  DeepMind/CVPR-challenge ``surface-distance`` package weights surface elements by area and gives slightly
  different values (MONAI ``use_subvoxels=True`` approximates that one). Option ``cvpr_rule=True``: NSD = 0 when
  Dice <= 0.2 (CVPR 2024/2025 challenge rule).
- HD95 = max(P95{d(p, ∂G)}, P95{d(g, ∂P)}) with linear-interpolated percentiles — the undirected definition of
  MONAI ``compute_hausdorff_distance(percentile=95, directed=False)``. (medpy pools both directions into one
  percentile instead, which can give a smaller value.)
- volume_ml = #voxels × Π spacing / 1000.
- RECIST (:func:`recist`): see its docstring.

Empty masks (documented, defined results; MONAI returns NaN/inf for these instead):
    both empty -> dice 1, iou 1, nsd 1, hd95 0;  exactly one empty -> dice 0, iou 0, nsd 0, hd95 = inf
    (``to_jsonable`` writes inf as ``null``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, cKDTree

from OncoSegLib.errors import InputError
from OncoSegLib.io.labels import unique_labels
from OncoSegLib.io.volume import Volume

ArrayLike = np.ndarray | Volume

#: Crop boxes up to this many voxels use scipy's exact EDT; larger ones a KD-tree (same exact distances, less memory).
EDT_MAX_VOXELS: int = 1 << 22


# ------------------------------------------------------------------------------------------------ input handling

def _array_and_spacing(x: ArrayLike) -> tuple[np.ndarray, tuple[float, ...] | None]:
    if isinstance(x, Volume):
        if x.channels != 1:
            raise InputError("a mask/label map must have one channel", "pass the label map, not the image")
        return x.array, tuple(reversed(x.spacing))
    return np.asarray(x), None


def _resolve(pred: ArrayLike, gt: ArrayLike | None, spacing: Sequence[float] | None,
             spacing_ijk: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...]]:
    p, sp_p = _array_and_spacing(pred)
    g, sp_g = (None, None) if gt is None else _array_and_spacing(gt)
    if g is not None and p.shape != g.shape:
        raise InputError(f"prediction and truth have different grids: shapes {p.shape} vs {g.shape}",
                         "resample the prediction onto the truth's grid first")
    if spacing is not None and spacing_ijk is not None:
        raise InputError("give either spacing (array order) or spacing_ijk (Volume order), not both")
    if spacing_ijk is not None:
        sp = tuple(float(s) for s in reversed(tuple(spacing_ijk)))
    elif spacing is not None:
        sp_arr = np.atleast_1d(np.asarray(spacing, dtype=float))
        sp = tuple(float(s) for s in (np.repeat(sp_arr, p.ndim) if sp_arr.size == 1 else sp_arr))
    else:
        sp = sp_p or sp_g or (1.0,) * p.ndim
    if len(sp) != p.ndim:
        if len(sp) == 3 and p.ndim == 2:  # a single-slice Volume squeezed to (J, I)
            sp = sp[1:]
        else:
            raise InputError(f"spacing {sp} does not match a {p.ndim}-D mask",
                             "spacing is one value per array axis: (sk, sj, si) for (K, J, I)")
    if any(not (s > 0 and math.isfinite(s)) for s in sp):
        raise InputError(f"spacing must be positive and finite, got {sp}")
    return p, g, sp


def _bool(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == bool else (x != 0)


# ------------------------------------------------------------------------------------------------ overlap metrics

def dice(pred: ArrayLike, gt: ArrayLike) -> float:
    """Dice coefficient of two masks (non-zero = foreground); 1.0 when both are empty."""
    p, g, _ = _resolve(pred, gt, None, None)
    return _dice(_bool(p), _bool(g))


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    sp, sg = int(p.sum()), int(g.sum())
    if sp + sg == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / (sp + sg)


def iou(pred: ArrayLike, gt: ArrayLike) -> float:
    """Intersection over union (Jaccard) of two masks; 1.0 when both are empty."""
    p, g, _ = _resolve(pred, gt, None, None)
    p, g = _bool(p), _bool(g)
    union = int(np.logical_or(p, g).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, g).sum()) / union


def volume_ml(mask: ArrayLike, spacing: Sequence[float] | None = None, *,
              spacing_ijk: Sequence[float] | None = None) -> float:
    """Foreground volume in millilitres (cm^3): voxel count × voxel volume (mm^3) / 1000."""
    m, _, sp = _resolve(mask, None, spacing, spacing_ijk)
    return int(_bool(m).sum()) * float(np.prod(sp)) / 1000.0


# ------------------------------------------------------------------------------------------------ surface metrics

def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: ``mask XOR binary_erosion(mask)`` (face connectivity; array border counts as outside)."""
    m = _bool(np.asarray(mask))
    return m ^ ndimage.binary_erosion(m, border_value=0)


def surface_distances(pred: ArrayLike, gt: ArrayLike, spacing: Sequence[float] | None = None, *,
                      spacing_ijk: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm (float64) from each boundary voxel of pred to the nearest of gt, and from gt to pred.

    Empty arrays where a mask is empty; ``inf`` entries when the other mask is empty.
    The masks are cropped to their joint bounding box plus one voxel first (exact: boundaries and nearest
    boundary voxels all lie inside it), so the distance transform costs O(box) rather than O(volume).
    """
    p, g, sp = _resolve(pred, gt, spacing, spacing_ijk)
    return _surface_distances(_bool(p), _bool(g), sp)


def _surface_distances(p: np.ndarray, g: np.ndarray, sp: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    if p.ndim == 3 and p.shape[0] == 1:  # one slice (2D image as a Volume): a 2D contour, not a 3D shell
        p, g, sp = p[0], g[0], tuple(sp[1:])
    union = p | g
    if not union.any():
        return np.zeros(0), np.zeros(0)
    idx = np.nonzero(union)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    pc = np.pad(p[box], 1)  # zero pad = the array border counts as background, as binary_erosion's border_value
    gc = np.pad(g[box], 1)
    bp, bg = boundary(pc), boundary(gc)
    if not bp.any():
        return np.zeros(0), np.full(int(bg.sum()), np.inf)
    if not bg.any():
        return np.full(int(bp.sum()), np.inf), np.zeros(0)
    if bp.size <= EDT_MAX_VOXELS:
        d_to_g = ndimage.distance_transform_edt(~bg, sampling=sp)
        d_to_p = ndimage.distance_transform_edt(~bp, sampling=sp)
        return d_to_g[bp].astype(np.float64), d_to_p[bg].astype(np.float64)
    # large box: the EDT's feature transform needs ~(ndim*4 + 8) bytes per voxel; a KD-tree over the boundary
    # voxels (in mm) gives the same exact Euclidean distances in memory proportional to the boundary.
    scale = np.asarray(sp, dtype=np.float64)
    cp, cg = np.argwhere(bp) * scale, np.argwhere(bg) * scale
    return cKDTree(cg).query(cp, k=1)[0], cKDTree(cp).query(cg, k=1)[0]


def _nsd_from(dpg: np.ndarray, dgp: np.ndarray, tol: float) -> float:
    n = dpg.size + dgp.size
    if n == 0:
        return 1.0
    if dpg.size == 0 or dgp.size == 0:
        return 0.0
    return (int(np.count_nonzero(dpg <= tol)) + int(np.count_nonzero(dgp <= tol))) / n


def _hd_from(dpg: np.ndarray, dgp: np.ndarray, percentile: float) -> float:
    if dpg.size == 0 and dgp.size == 0:
        return 0.0
    if dpg.size == 0 or dgp.size == 0:
        return math.inf
    return float(max(np.percentile(dpg, percentile), np.percentile(dgp, percentile)))


def nsd(pred: ArrayLike, gt: ArrayLike, spacing: Sequence[float] | None = None, tolerance_mm: float = 2.0, *,
        spacing_ijk: Sequence[float] | None = None, cvpr_rule: bool = False) -> float:
    """Normalised surface distance (surface Dice) at ``tolerance_mm`` (see the module docstring).

    ``cvpr_rule=True``: 0 when Dice <= 0.2. Both empty -> 1, one empty -> 0.
    """
    if not (tolerance_mm >= 0 and math.isfinite(tolerance_mm)):
        raise InputError(f"tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    p, g, sp = _resolve(pred, gt, spacing, spacing_ijk)
    p, g = _bool(p), _bool(g)
    if cvpr_rule and _dice(p, g) <= 0.2:
        return 0.0
    return _nsd_from(*_surface_distances(p, g, sp), float(tolerance_mm))


def hd95(pred: ArrayLike, gt: ArrayLike, spacing: Sequence[float] | None = None, *,
         spacing_ijk: Sequence[float] | None = None, percentile: float = 95.0) -> float:
    """95th-percentile Hausdorff distance in mm (undirected, max of both directions; see the module docstring).

    ``percentile=100`` gives the Hausdorff distance. Both empty -> 0.0; one empty -> ``math.inf``.
    """
    if not 0 <= percentile <= 100:
        raise InputError(f"percentile must be in [0, 100], got {percentile}")
    p, g, sp = _resolve(pred, gt, spacing, spacing_ijk)
    return _hd_from(*_surface_distances(_bool(p), _bool(g), sp), float(percentile))


# ------------------------------------------------------------------------------------------------ RECIST

@dataclass
class RecistResult:
    """RECIST-style diameters of a mask, measured in the slices perpendicular to one array axis (the axial one).

    Attributes:
        long_axis_mm: longest in-plane diameter over all slices (0.0 for an empty mask).
        short_axis_mm: longest diameter perpendicular to that long axis, on the same slice.
        slice_index: index of that slice along the measured axis (k for the default ``axial_axis=0``), None when
            the mask is empty.
        long_axis_ijk, short_axis_ijk: end points as continuous IJK indices ((i, j, k) rows, shape (2, 3)); map them
            with ``volume.ijk_to_lps_points`` (or ``ijk_to_ras``) to draw line markups. Empty arrays when empty.
    """

    long_axis_mm: float
    short_axis_mm: float
    slice_index: int | None
    long_axis_ijk: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    short_axis_ijk: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


def _corner_points(m2: np.ndarray, sj: float, si: float) -> np.ndarray:
    """(N, 2) unique pixel-corner points (x = i·si, y = j·sj, in mm) of the boundary pixels of a 2D mask."""
    b = m2 ^ ndimage.binary_erosion(m2, border_value=0)
    jj, ii = np.nonzero(b)
    offs = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    pts = (np.stack([ii, jj], axis=1)[:, None, :] + offs[None]).reshape(-1, 2)
    pts = np.unique(pts, axis=0)
    return pts * np.array([si, sj])


def _longest(points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    hull = points[ConvexHull(points).vertices]
    d = np.linalg.norm(hull[:, None, :] - hull[None, :, :], axis=-1)
    a, b = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[a, b]), hull[a], hull[b]


def _chord_extent(m2: np.ndarray, sj: float, si: float, origin: np.ndarray, direction: np.ndarray,
                  tmin: float, tmax: float) -> tuple[float, float] | None:
    """First and last parameter t (mm) where the line origin + t·direction is inside the mask's pixels."""
    x0, y0 = origin
    dx, dy = direction
    ts = [np.array([tmin, tmax])]
    if abs(dx) > 1e-12:
        lo, hi = sorted(((x0 + tmin * dx) / si, (x0 + tmax * dx) / si))
        m = np.arange(math.floor(lo - 0.5), math.ceil(hi + 0.5) + 1) + 0.5
        ts.append((m * si - x0) / dx)
    if abs(dy) > 1e-12:
        lo, hi = sorted(((y0 + tmin * dy) / sj, (y0 + tmax * dy) / sj))
        m = np.arange(math.floor(lo - 0.5), math.ceil(hi + 0.5) + 1) + 0.5
        ts.append((m * sj - y0) / dy)
    t = np.unique(np.clip(np.concatenate(ts), tmin, tmax))
    if t.size < 2:
        return None
    mid = 0.5 * (t[:-1] + t[1:])
    i = np.rint((x0 + mid * dx) / si).astype(int)
    j = np.rint((y0 + mid * dy) / sj).astype(int)
    ok = (i >= 0) & (i < m2.shape[1]) & (j >= 0) & (j < m2.shape[0])
    inside = np.zeros(mid.shape, bool)
    inside[ok] = m2[j[ok], i[ok]]
    if not inside.any():
        return None
    w = np.nonzero(inside)[0]
    return float(t[w[0]]), float(t[w[-1] + 1])


def axial_array_axis(direction: np.ndarray) -> int:
    """Array axis (0 = k, 1 = j, 2 = i of a (K, J, I) array) closest to the patient's S-I axis.

    ``direction`` is :attr:`Volume.direction` (columns = i, j, k unit vectors in LPS). Slices perpendicular to the
    returned axis are the (most nearly) axial ones: 0 for axial acquisitions, 1 or 2 for coronal/sagittal ones.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    ijk_axis = int(np.argmax(np.abs(d[2, :])))  # S component of the i, j, k axes
    return 2 - ijk_axis


def recist(mask: ArrayLike, spacing: Sequence[float] | None = None, *,
           spacing_ijk: Sequence[float] | None = None, axial_axis: int | None = None) -> RecistResult:
    """RECIST 1.1-style long and short axis of a mask, in mm.

    ``axial_axis``: the array axis whose slices are axial (see :func:`axial_array_axis`); default: taken from the
    direction of a ``Volume`` mask, else 0 (k). RECIST measures in axial slices: for a sagittal or coronal
    acquisition the k slices are not axial, so pass the Volume (or ``axial_axis``).

    Definition (per axial slice, e.g. per (J, I) plane of a (K, J, I) array; a 2D (J, I) mask is one slice):
    - The lesion in a slice is the union of its pixels, each pixel a sj × si rectangle (anisotropic in-plane
      spacing is honoured). The **long axis** is its maximum Feret diameter: the largest distance between two
      points of the lesion (computed exactly from the convex hull of boundary-pixel corners). A single pixel
      measures its diagonal.
    - The reported long axis is the largest over slices; ties go to the lowest k.
    - The **short axis** (same slice) is the longest line segment perpendicular to the long axis across the
      lesion: for lines perpendicular to the long axis at positions sampled every min(sj, si)/4 mm along it,
      the distance from the first to the last lesion point on the line (exact pixel crossings; gaps inside a
      lesion are spanned, as a calliper would). For an ellipse this is its minor axis; for an A × B rectangle
      (A >= B) it is B·D/A with D its diagonal.
    - The mask is measured as a whole: split it into connected components first for per-lesion values.
    """
    m, _, sp = _resolve(mask, None, spacing, spacing_ijk)
    m = _bool(m)
    if axial_axis is None:
        axial_axis = axial_array_axis(mask.direction) if isinstance(mask, Volume) and m.ndim == 3 else 0
    if m.ndim == 2:
        if axial_axis != 0:
            raise InputError("axial_axis applies to 3D masks only")
        m = m[None]
        sp = (1.0,) + tuple(sp)
    if m.ndim != 3:
        raise InputError(f"RECIST needs a (K, J, I) or (J, I) mask, got shape {m.shape}")
    if axial_axis not in (0, 1, 2):
        raise InputError(f"axial_axis must be 0, 1 or 2, got {axial_axis}")
    # measure on the array with the axial axis first: perm[n] = original axis of axis n (the in-plane order kept)
    perm = [axial_axis] + [a for a in range(3) if a != axial_axis]
    m = np.transpose(m, perm)
    sp = tuple(sp[a] for a in perm)
    _, sj, si = sp
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for k in np.nonzero(m.any(axis=(1, 2)))[0]:
        length, a, b = _longest(_corner_points(m[k], sj, si))
        if best is None or length > best[0] + 1e-9:
            best = (length, int(k), a, b)
    if best is None:
        return RecistResult(0.0, 0.0, None)
    length, k, a, b = best
    m2 = m[k]
    u = (b - a) / length
    n = np.array([-u[1], u[0]])
    pts = _corner_points(m2, sj, si)
    proj_n = (pts - a) @ n
    tmin, tmax = float(proj_n.min()) - 1e-6, float(proj_n.max()) + 1e-6
    steps = int(min(4096, max(16, math.ceil(length / (min(sj, si) / 4.0)))))
    short, s_end = 0.0, None
    for s in np.linspace(0.0, length, steps + 1)[1:-1]:
        origin = a + s * u
        ext = _chord_extent(m2, sj, si, origin, n, tmin, tmax)
        if ext is not None and ext[1] - ext[0] > short + 1e-12:
            short = ext[1] - ext[0]
            s_end = (origin + ext[0] * n, origin + ext[1] * n)

    def to_ijk(p: np.ndarray) -> list[float]:
        idx_t = (float(k), float(p[1] / sj), float(p[0] / si))  # index in the transposed array
        idx = [0.0, 0.0, 0.0]
        for n, a in enumerate(perm):
            idx[a] = idx_t[n]
        return [idx[2], idx[1], idx[0]]  # array (k, j, i) -> (i, j, k)

    long_ijk = np.array([to_ijk(a), to_ijk(b)])
    short_ijk = np.array([to_ijk(s_end[0]), to_ijk(s_end[1])]) if s_end is not None else np.zeros((0, 3))
    return RecistResult(float(length), float(short), k, long_ijk, short_ijk)


# ------------------------------------------------------------------------------------------------ label maps

METRIC_KEYS = ("dice", "iou", "nsd", "hd95", "volume_ml", "volume_gt_ml",
               "recist_long_mm", "recist_short_mm", "recist_gt_long_mm", "recist_gt_short_mm")


def evaluate_label_maps(pred: ArrayLike, gt: ArrayLike, spacing: Sequence[float] | None = None,
                        tolerance_mm: float = 2.0, labels: Sequence[int] | None = None, *,
                        spacing_ijk: Sequence[float] | None = None, cvpr_rule: bool = False,
                        with_recist: bool = True, axial_axis: int | None = None) -> dict[int, dict[str, float]]:
    """Metrics per label of two integer label maps on the same grid.

    Args:
        pred, gt: label maps (K, J, I) or (J, I), or ``Volume`` objects (spacing then taken from them).
        spacing: mm per array axis (sk, sj, si); or ``spacing_ijk`` = ``Volume.spacing`` (si, sj, sk).
        tolerance_mm: NSD tolerance.
        labels: labels to evaluate; default every non-zero label present in either map (sorted).
        cvpr_rule: NSD = 0 when Dice <= 0.2.
        with_recist: add RECIST long/short axes of prediction and truth.
        axial_axis: array axis of the axial slices for RECIST; default from ``gt``'s (else ``pred``'s) direction
            when they are Volumes, else 0 (see :func:`recist`).

    Returns ``{label: {"dice", "iou", "nsd", "hd95", "volume_ml" (prediction), "volume_gt_ml",
    "recist_long_mm", "recist_short_mm", "recist_gt_long_mm", "recist_gt_short_mm"}}``; floats, ``hd95`` may be
    ``inf`` (see :func:`to_jsonable`).
    """
    p, g, sp = _resolve(pred, gt, spacing, spacing_ijk)
    assert g is not None
    if axial_axis is None:
        src = gt if isinstance(gt, Volume) else (pred if isinstance(pred, Volume) else None)
        axial_axis = axial_array_axis(src.direction) if src is not None and p.ndim == 3 else 0
    for name, a in (("prediction", p), ("truth", g)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
                raise InputError(f"the {name} is not a label map (non-integer values)",
                                 "pass integer labels (0 = background), not probabilities")
    if labels is None:
        found = np.union1d(unique_labels(p), unique_labels(g))
        labels = [int(v) for v in found if v != 0]
    vox_ml = float(np.prod(sp)) / 1000.0
    out: dict[int, dict[str, float]] = {}
    for lab in labels:
        pm, gm = p == lab, g == lab
        dpg, dgp = _surface_distances(pm, gm, sp)
        d = _dice(pm, gm)
        union = int(np.logical_or(pm, gm).sum())
        row = {
            "dice": d,
            "iou": 1.0 if union == 0 else int(np.logical_and(pm, gm).sum()) / union,
            "nsd": 0.0 if (cvpr_rule and d <= 0.2) else _nsd_from(dpg, dgp, float(tolerance_mm)),
            "hd95": _hd_from(dpg, dgp, 95.0),
            "volume_ml": int(pm.sum()) * vox_ml,
            "volume_gt_ml": int(gm.sum()) * vox_ml,
        }
        if with_recist:
            rp, rg = recist(pm, sp, axial_axis=axial_axis), recist(gm, sp, axial_axis=axial_axis)
            row.update(recist_long_mm=rp.long_axis_mm, recist_short_mm=rp.short_axis_mm,
                       recist_gt_long_mm=rg.long_axis_mm, recist_gt_short_mm=rg.short_axis_mm)
        out[int(lab)] = row
    return out


def to_jsonable(results: dict[int, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """Label keys as strings, ``inf``/``nan`` as ``None`` (JSON ``null``): ready for ``json.dumps``."""
    return {str(k): {m: (float(v) if math.isfinite(v) else None) for m, v in row.items()} for k, row in results.items()}


__all__ = [
    "dice", "iou", "nsd", "hd95", "volume_ml", "recist", "RecistResult", "axial_array_axis", "boundary",
    "surface_distances",
    "evaluate_label_maps", "to_jsonable", "METRIC_KEYS",
]
