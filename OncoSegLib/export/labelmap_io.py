"""Label maps on a series grid: exact re-indexing between grids that differ only by axis order/flips/offset,
and NIfTI label-map input/output with the exact affine.

Frames: a grid is described by a 4x4 matrix mapping *array indices* (a0, a1, a2) to LPS mm. For an OncoSeg
:class:`Volume`, whose array is stored [k, j, i], that matrix is ``ijk_to_lps`` with its first three columns reversed
(see :func:`array_index_to_lps`). Re-indexing never interpolates: it only permutes, flips and shifts axes, and it
refuses grids whose voxel centres do not coincide.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.labels import integer_labels
from OncoSegLib.io.volume import Volume

__all__ = ["array_index_to_lps", "place_on_grid", "integer_labels", "conform_labelmap", "read_labelmap",
           "write_labelmap"]

# voxel centres must agree to this fraction of a voxel
_INDEX_TOL = 0.02


def array_index_to_lps(volume: Volume) -> np.ndarray:
    """4x4 matrix mapping array indices (k, j, i) of ``volume.array`` to LPS mm."""
    m = volume.ijk_to_lps.copy()
    m[:, :3] = m[:, [2, 1, 0]]
    return m


def place_on_grid(array: np.ndarray, index_to_lps: np.ndarray, ref: Volume, require_full: bool = True,
                  what: str = "label map") -> np.ndarray:
    """Re-index a 3D ``array`` whose indices map to LPS by ``index_to_lps`` onto the (K, J, I) grid of ``ref``.

    Exact: allowed differences are axis permutations, flips and (when ``require_full`` is False) an integer
    offset with the array covering a sub-block of ``ref`` (e.g. the slices a DICOM SEG holds, in any order).
    Voxels of ``ref`` outside the array are 0.

    Raises:
        InputError: (one line) when the voxel centres do not coincide with ``ref``'s (other spacing, rotation,
        shift by a fraction of a voxel) or the array does not fit (or, with ``require_full``, does not cover) it.
    """
    a = np.asarray(array)
    if a.ndim != 3:
        raise InputError(f"the {what} must be 3D, got shape {a.shape}")
    ref_a2l = array_index_to_lps(ref)
    m = np.linalg.solve(ref_a2l, np.asarray(index_to_lps, dtype=float))  # array index -> ref array index (k,j,i)
    r, t = m[:3, :3], m[:3, 3]
    rr = np.rint(r)
    perm_ok = (np.abs(r - rr).max() < 1e-3 and np.all(np.abs(rr).sum(axis=0) == 1)
               and np.all(np.abs(rr).sum(axis=1) == 1))
    shape_ref = ref.shape_kji
    corners = np.array([[x, y, z] for x in (0, a.shape[0] - 1) for y in (0, a.shape[1] - 1)
                        for z in (0, a.shape[2] - 1)], dtype=float)
    mapped = corners @ r.T + t
    if not perm_ok or np.abs(mapped - np.rint(mapped)).max() > _INDEX_TOL:
        raise InputError(f"the {what}'s voxel grid does not match the image series (different spacing, "
                         "orientation or a shift by part of a voxel)",
                         "resample it onto the series first (e.g. in 3D Slicer) - it is not resampled here")
    lo = np.rint(mapped.min(axis=0)).astype(int)
    hi = np.rint(mapped.max(axis=0)).astype(int)
    if np.any(lo < 0) or np.any(hi >= np.array(shape_ref)):
        raise InputError(f"the {what} extends beyond the image series' grid",
                         "crop or resample it onto the series first")
    # target axis and sign of every source axis
    tgt = [int(np.argmax(np.abs(rr[:, s]))) for s in range(3)]
    sign = [int(rr[tgt[s], s]) for s in range(3)]
    b = a
    for s in range(3):
        if sign[s] < 0:
            b = np.flip(b, axis=s)
    b = np.transpose(b, axes=np.argsort(tgt))  # new axis n is the source axis that maps to target axis n
    if require_full:
        if tuple(b.shape) != tuple(shape_ref):
            raise InputError(f"the {what} ({a.shape}) does not cover the series grid {shape_ref}",
                             "it must have the same voxel grid as the series")
        return np.ascontiguousarray(b)
    out = np.zeros(shape_ref, dtype=a.dtype)
    out[lo[0]:lo[0] + b.shape[0], lo[1]:lo[1] + b.shape[1], lo[2]:lo[2] + b.shape[2]] = b
    return out


def conform_labelmap(label_volume: Volume, ref: Volume) -> np.ndarray:
    """The (K, J, I) label array of ``label_volume`` on ``ref``'s grid (axis permutation/flip only, exact).

    Raises InputError when the grids differ otherwise, or when the labels are not integers.
    """
    arr = label_volume.array
    if arr.ndim != 3:
        raise InputError("the label map must be a single-channel 3D image")
    arr = integer_labels(arr)
    if arr.size and arr.min() < 0:
        raise InputError("the label map holds negative values", "labels must be >= 0 (0 = background)")
    return place_on_grid(arr, array_index_to_lps(label_volume), ref, require_full=True)


def read_labelmap(path: str | os.PathLike, ref: Volume) -> np.ndarray:
    """Read a NIfTI label map in any orientation and return its labels on ``ref``'s (K, J, I) grid."""
    from OncoSegLib.io.nifti import read_nifti

    return conform_labelmap(read_nifti(path), ref)


def write_labelmap(labels: np.ndarray, ref: Volume, path: str | os.PathLike) -> Path:
    """Write (K, J, I) labels on ``ref``'s grid as NIfTI (exact affine = ref's IJK->RAS; atomic)."""
    from OncoSegLib.io.nifti import write_nifti

    lab = np.asarray(labels)
    if tuple(lab.shape) != ref.shape_kji:
        raise InputError(f"label map shape {lab.shape} does not match the grid {ref.shape_kji}")
    if lab.dtype == bool:
        lab = lab.astype(np.uint8)
    vol = Volume(lab, spacing=ref.spacing, origin=ref.origin, direction=ref.direction, modality=None,
                 metadata={})
    return write_nifti(vol, path)
