"""Surface Dice (NSD) by the surface-element method — the definition the CVPR 2024/2025 challenges score with.

Definition (Nikolov et al. 2018, DeepMind ``surface-distance``; the challenges' ``SurfaceDice.py`` is a copy of it):

- The surface of a binary mask is made of *surface elements* (surfels) that sit on the voxel **corners**: for every
  corner, the 8 voxels around it form a 2x2x2 neighbourhood code (0..255); a corner whose code is neither 0 (all
  outside) nor 255 (all inside) carries a surfel. Its area in mm^2 is the marching-cubes area of that code at the
  given spacing (the 256-entry table of ``surface_distance.lookup_tables``, the very table of the challenge's
  ``SurfaceDice.py``; it cannot be re-derived from a marching-cubes library: scikit-image's ``lorensen`` and
  ``lewiner`` triangulations give other areas for about 290 of the 508 code/spacing pairs we measured).
- Distances: from every surfel of one mask to the nearest surfel of the other, in mm (exact Euclidean distance
  transform on the corner grid with ``sampling = spacing``).
- NSD at tolerance tau = (area of the truth's surfels within tau of the prediction + area of the prediction's surfels
  within tau of the truth) / (total surfel area of both). "Within" is ``<=``.
- One mask empty: its surfel list is empty and the other's distances are ``inf`` -> NSD 0. Both empty: 0/0 -> NaN
  (never reached by the challenge, which scores ground-truth classes only).

``spacing`` is mm per **array axis** (one value per axis of the arrays, in array order). Arrays are 3D (a 2D image
is scored as a one-slice volume, with its top and bottom faces, as the challenge script does).

Why written here and not the ``surface-distance`` package's own ``compute_surface_distances``: that package (0.1,
the only PyPI release) still uses ``np.Inf``, removed in NumPy 2, and crashes with ``AttributeError`` as soon as a
class is predicted empty; only its table (pure numpy) is used. The sums run over surfels sorted by (distance, area)
as the reference does, so the floating-point result is the same to the last bit.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from OncoSegLib.errors import InputError

#: Weight of each voxel of the 2x2x2 neighbourhood in the corner code: the voxel at offset (a, b, c) - 1 from the
#: corner counts 2 ** (7 - (4a + 2b + c)) (the bit order of the reference table).
_CORNER_KERNEL = np.array([[[2 ** (7 - (4 * a + 2 * b + c)) for c in range(2)] for b in range(2)] for a in range(2)])


@functools.lru_cache(maxsize=64)
def _area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surfel area (mm^2) of each of the 256 neighbourhood codes at ``spacing`` (mm per array axis)."""
    from surface_distance.lookup_tables import create_table_neighbour_code_to_surface_area

    table = np.asarray(create_table_neighbour_code_to_surface_area(spacing), dtype=np.float64)
    table.setflags(write=False)
    return table


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(s > 0 and math.isfinite(s) for s in sp):
        raise InputError(f"surface Dice needs 3 positive finite spacings (mm per array axis), got {tuple(spacing)}")
    return sp  # type: ignore[return-value]


def surface_elements(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surfels of two 3D binary masks on the same grid, each list sorted by (distance, area).

    Args:
        gt, pred: 3D arrays (non-zero = inside), same shape.
        spacing: mm per array axis.

    Returns:
        ``(dist_gt_to_pred, area_gt, dist_pred_to_gt, area_pred)``: distances in mm from each surfel of one mask to
        the other mask's surface (``inf`` when the other mask is empty) and the surfel areas in mm^2.
    """
    g = np.asarray(gt) != 0
    p = np.asarray(pred) != 0
    if g.shape != p.shape or g.ndim != 3:
        raise InputError(f"surface Dice needs two 3D masks of one shape, got {g.shape} and {p.shape}")
    sp = _check_spacing(spacing)
    union = g | p
    if not union.any():
        empty = np.zeros(0)
        return empty, empty, empty, empty
    idx = np.nonzero(union)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    # corners run from before the first voxel to after the last one: the correlation's constant border supplies
    # the zero before, an explicit zero layer the one after.
    codes_g = ndimage.correlate(np.pad(g[box], [(0, 1)] * 3).astype(np.uint8), _CORNER_KERNEL.astype(np.uint8),
                                mode="constant", cval=0, output=np.int32)
    codes_p = ndimage.correlate(np.pad(p[box], [(0, 1)] * 3).astype(np.uint8), _CORNER_KERNEL.astype(np.uint8),
                                mode="constant", cval=0, output=np.int32)
    surf_g = (codes_g != 0) & (codes_g != 255)
    surf_p = (codes_p != 0) & (codes_p != 255)
    dist_to_g = ndimage.distance_transform_edt(~surf_g, sampling=sp) if surf_g.any() else np.full(surf_g.shape, np.inf)
    dist_to_p = ndimage.distance_transform_edt(~surf_p, sampling=sp) if surf_p.any() else np.full(surf_p.shape, np.inf)
    table = _area_table(sp)
    d_gp, a_g = _sorted(dist_to_p[surf_g], table[codes_g[surf_g]])
    d_pg, a_p = _sorted(dist_to_g[surf_p], table[codes_p[surf_p]])
    return d_gp, a_g, d_pg, a_p


def _sorted(dist: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((area, dist))  # by distance, then area: the reference's sorted(zip(distance, area))
    return dist[order].astype(np.float64), area[order].astype(np.float64)


def surface_dice(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0) -> float:
    """NSD of two 3D binary masks at ``tolerance_mm`` (surface-element definition, see the module docstring).

    ``spacing``: mm per array axis. One mask empty -> 0.0; both empty -> NaN.
    """
    if not (tolerance_mm >= 0 and math.isfinite(tolerance_mm)):
        raise InputError(f"tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    d_gp, a_g, d_pg, a_p = surface_elements(gt, pred, spacing)
    total = np.sum(a_g) + np.sum(a_p)
    if total == 0:
        return math.nan
    return float((np.sum(a_g[d_gp <= tolerance_mm]) + np.sum(a_p[d_pg <= tolerance_mm])) / total)


__all__ = ["surface_dice", "surface_elements"]
