"""Slicing a (K, J, I[, C]) voxel array into 2D slices, and exact coordinate maps between frames.

Frames (see :mod:`OncoSegLib.io.volume`):

- **IJK**: voxel indices ``(i, j, k)``; arrays are stored ``array[k, j, i]``.
- **slice pixels** ``(row, col)`` of one 2D slice along an axis:

  ========== ============== ============ ============ ==================
  axis       slice index    row          col          2D shape (H, W)
  ========== ============== ============ ============ ==================
  axial      ``k``          ``j``        ``i``        ``(J, I)``
  coronal    ``j``          ``k``        ``i``        ``(K, I)``
  sagittal   ``i``          ``k``        ``j``        ``(K, J)``
  ========== ============== ============ ============ ==================

  No flips: row/col grow with the voxel index, so a slice is a plain numpy view of the array.
- **model pixels** ``(x, y)``: coordinates in the square ``S x S`` model input made from one ``H x W`` slice by a
  bilinear resize that ignores the aspect ratio (``align_corners=False``, as ``OncoSegLib.preprocessing`` does).

Pixel-centre convention (decided here, used everywhere): an integer ``(row, col)`` or model ``(x, y)`` names the
*centre* of that pixel, whose area is ``[col - 0.5, col + 0.5)``. With ``align_corners=False`` a slice pixel centre
``col`` sits at model coordinate ``x = (col + 0.5) * S / W - 0.5`` (and ``y`` likewise with ``H``), and the inverse is
``col = (x + 0.5) * W / S - 0.5``. transformers' SAM3 prompt encoder adds 0.5 to every input coordinate before
normalising by ``S``, i.e. it takes exactly these pixel-index coordinates, so a prompt at voxel ``(i, j, k)`` lands at
the same relative position ``(col + 0.5) / W`` in the model as in the slice. Mask logits coming back from the model
are resized to ``(H, W)`` with ``align_corners=False`` too, so the whole round trip is consistent.
Boxes use the same convention for their corners: a box from column ``c0`` to ``c1`` (inclusive voxel indices) maps
its corners like points (SAM's boxes are tight boxes through the extreme pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from OncoSegLib.errors import InputError

AXES: tuple[str, ...] = ("axial", "coronal", "sagittal")

# axis -> (array dimension sliced, array dimension of rows, array dimension of cols), dims of array[k, j, i]
_DIMS = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
# array dim (0=k, 1=j, 2=i) -> position in an (i, j, k) tuple
_IJK_POS = {0: 2, 1: 1, 2: 0}


def check_axis(axis: str) -> str:
    """Return ``axis`` lower-cased, or raise :class:`InputError` naming the allowed values."""
    a = str(axis).lower()
    if a not in _DIMS:
        raise InputError(f"unknown slicing axis {axis!r}", hint=f"use one of {', '.join(AXES)}")
    return a


@dataclass(frozen=True)
class SliceRef:
    """One 2D slice of a volume: ``axis`` in :data:`AXES` and the slice ``index`` along it."""

    axis: str
    index: int


def num_slices(shape_kji: Sequence[int], axis: str) -> int:
    """Number of slices along ``axis`` for a grid of shape (K, J, I)."""
    return int(shape_kji[_DIMS[check_axis(axis)][0]])


def slice_shape(shape_kji: Sequence[int], axis: str) -> tuple[int, int]:
    """(H, W) = (rows, cols) of one slice along ``axis`` for a grid of shape (K, J, I)."""
    _, r, c = _DIMS[check_axis(axis)]
    return int(shape_kji[r]), int(shape_kji[c])


def get_slice(array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """The 2D slice ``(H, W[, C])`` of a (K, J, I[, C]) array along ``axis`` at ``index`` (a view, no copy)."""
    d = _DIMS[check_axis(axis)][0]
    n = array.shape[d]
    if not 0 <= int(index) < n:
        raise InputError(f"slice index {index} is outside the {axis} range 0..{n - 1}")
    sl: list = [slice(None)] * array.ndim
    sl[d] = int(index)
    return array[tuple(sl)]


def set_slice(array: np.ndarray, axis: str, index: int, values: np.ndarray) -> None:
    """Write a 2D ``(H, W)`` slice into a (K, J, I) array in place (e.g. paste a slice mask into a 3D mask)."""
    view = get_slice(array, axis, index)
    values = np.asarray(values)
    if values.shape != view.shape:
        raise InputError(f"slice of shape {values.shape} does not fit the {axis} slice shape {view.shape}")
    view[...] = values


def paste_slice_mask(mask3d: np.ndarray, axis: str, index: int, mask2d: np.ndarray) -> None:
    """Replace the plane ``(axis, index)`` of a boolean (K, J, I) mask by ``mask2d`` (H, W) in place."""
    set_slice(mask3d, axis, index, np.asarray(mask2d, dtype=bool))


def ijk_to_slice(ijk: Sequence[float], axis: str) -> tuple[float, float, float]:
    """Map voxel indices (i, j, k) to (slice index, row, col) along ``axis`` (floats pass through unchanged)."""
    d, r, c = _DIMS[check_axis(axis)]
    p = [float(v) for v in ijk]
    return p[_IJK_POS[d]], p[_IJK_POS[r]], p[_IJK_POS[c]]


def slice_to_ijk(axis: str, index: float, row: float, col: float) -> tuple[float, float, float]:
    """Inverse of :func:`ijk_to_slice`: (slice index, row, col) along ``axis`` -> voxel indices (i, j, k)."""
    d, r, c = _DIMS[check_axis(axis)]
    out = [0.0, 0.0, 0.0]
    out[_IJK_POS[d]] = float(index)
    out[_IJK_POS[r]] = float(row)
    out[_IJK_POS[c]] = float(col)
    return out[0], out[1], out[2]


def pixel_to_model(row: float | np.ndarray, col: float | np.ndarray, hw: tuple[int, int], image_size: int
                   ) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Slice pixel centre (row, col) of an (H, W) slice -> model pixels (x, y) of the S x S model input.

    ``x = (col + 0.5) * S / W - 0.5``, ``y = (row + 0.5) * S / H - 0.5`` (pixel centres, ``align_corners=False``).
    """
    h, w = hw
    s = float(image_size)
    x = (np.asarray(col, dtype=float) + 0.5) * s / w - 0.5
    y = (np.asarray(row, dtype=float) + 0.5) * s / h - 0.5
    return (float(x) if np.ndim(x) == 0 else x), (float(y) if np.ndim(y) == 0 else y)


def model_to_pixel(x: float | np.ndarray, y: float | np.ndarray, hw: tuple[int, int], image_size: int
                   ) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Inverse of :func:`pixel_to_model`: model pixels (x, y) -> slice pixel (row, col), continuous."""
    h, w = hw
    s = float(image_size)
    col = (np.asarray(x, dtype=float) + 0.5) * w / s - 0.5
    row = (np.asarray(y, dtype=float) + 0.5) * h / s - 0.5
    return (float(row) if np.ndim(row) == 0 else row), (float(col) if np.ndim(col) == 0 else col)


def ijk_to_model(ijk: Sequence[float], axis: str, shape_kji: Sequence[int], image_size: int
                 ) -> tuple[int, float, float]:
    """Voxel (i, j, k) -> (slice index, x, y) in model pixels of that slice along ``axis``.

    The slice index is rounded to the nearest integer; x, y stay continuous.
    """
    index, row, col = ijk_to_slice(ijk, axis)
    x, y = pixel_to_model(row, col, slice_shape(shape_kji, axis), image_size)
    return int(round(index)), float(x), float(y)


def model_to_ijk(axis: str, index: int, x: float, y: float, shape_kji: Sequence[int], image_size: int
                 ) -> tuple[float, float, float]:
    """Model pixels (x, y) on slice ``index`` along ``axis`` -> continuous voxel indices (i, j, k)."""
    row, col = model_to_pixel(x, y, slice_shape(shape_kji, axis), image_size)
    return slice_to_ijk(axis, index, row, col)


def check_ijk_inside(ijk: Sequence[float], shape_kji: Sequence[int], what: str = "prompt") -> None:
    """Raise :class:`InputError` when a voxel position lies outside the grid (with half-voxel tolerance).

    The message names ``what`` (e.g. ``"point 2 of object 'liver'"``) and the image extent in IJK.
    """
    k, j, i = (int(n) for n in shape_kji[:3])
    p = [float(v) for v in ijk]
    if len(p) != 3 or not all(np.isfinite(p)):
        raise InputError(f"{what} must be three finite voxel indices (i, j, k); got {list(ijk)}")
    ext = (i, j, k)
    if any(v < -0.5 or v > n - 0.5 for v, n in zip(p, ext)):
        raise InputError(
            f"{what} at IJK ({p[0]:g}, {p[1]:g}, {p[2]:g}) lies outside the image, whose voxel indices run "
            f"i 0..{i - 1}, j 0..{j - 1}, k 0..{k - 1}",
            hint="check the coordinate frame of the prompt (voxel IJK vs patient mm LPS) and the image it was made for",
        )
