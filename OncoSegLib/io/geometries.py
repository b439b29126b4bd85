"""Named example geometries for tests, demos and phantoms.

Each geometry is ``(spacing, origin, direction)`` in the frames of :class:`OncoSegLib.io.volume.Volume`:
spacing (si, sj, sk) in mm, origin = LPS mm of voxel (0, 0, 0), direction = 3x3 with columns the i, j, k unit
axes in LPS. The grids are placed so that the volume centre sits near (but not at) the LPS origin; the offset is
deliberately non-round so that a reader that drops the origin, swaps axes or flips one is caught.

Names (see :data:`GEOMETRY_NAMES`):

- ``head_first``: axial, head-first supine (HFS): i -> L, j -> P, k -> S.
- ``feet_first``: axial, feet-first supine (FFS): i -> R, j -> P, k -> I.
- ``prone``: axial, head-first prone (HFP): i -> R, j -> A, k -> S.
- ``oblique``: head-first axial rotated 12 degrees in-plane (about the slice normal) then tilted 7 degrees
  about LPS x; slices stay perpendicular to the k axis (not a gantry tilt).
- ``non_square``: head-first axial; use with :func:`example_shape` for a 112 (columns) x 128 (rows) image.
- ``anisotropic``: head-first axial with 0.6 mm columns (si) x 0.9 mm rows (sj) pixels.
- ``non_square_anisotropic``: both of the above.
- ``reversed_k``: head-first axial but with k running towards the feet (k = -(i x j), a left-handed grid).
- ``sagittal``, ``coronal``: the two other canonical planes.
"""

from __future__ import annotations

import numpy as np

GEOMETRY_NAMES: tuple[str, ...] = (
    "head_first",
    "feet_first",
    "prone",
    "oblique",
    "non_square",
    "anisotropic",
    "non_square_anisotropic",
    "reversed_k",
    "sagittal",
    "coronal",
)

_CENTRE_OFFSET_LPS = np.array([3.25, -17.5, 40.125])


def _rot_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _direction(name: str) -> np.ndarray:
    cols = {
        "head_first": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        "feet_first": ((-1, 0, 0), (0, 1, 0), (0, 0, -1)),
        "prone": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
        "reversed_k": ((1, 0, 0), (0, 1, 0), (0, 0, -1)),
        "sagittal": ((0, 1, 0), (0, 0, -1), (-1, 0, 0)),
        "coronal": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    }
    if name == "oblique":
        return _rot_x(7.0) @ _rot_z(12.0)
    if name in ("non_square", "anisotropic", "non_square_anisotropic"):
        name = "head_first"
    return np.array(cols[name], dtype=float).T


def _spacing(name: str) -> tuple[float, float, float]:
    if name in ("anisotropic", "non_square_anisotropic"):
        return (0.6, 0.9, 2.0)
    if name == "oblique":
        return (0.75, 0.75, 1.5)
    return (0.8, 0.8, 2.5)


def example_shape(name: str, n_slices: int = 12) -> tuple[int, int, int]:
    """A small (K, J, I) array shape suited to ``name``: 112 columns x 128 rows for the non-square ones, else 64x64."""
    _check(name)
    if name in ("non_square", "non_square_anisotropic"):
        return (n_slices, 128, 112)
    return (n_slices, 64, 64)


def example_geometry(name: str, shape_kji: tuple[int, int, int]) -> tuple[tuple[float, float, float],
                                                                          tuple[float, float, float], np.ndarray]:
    """Return ``(spacing (si, sj, sk) mm, origin LPS mm, direction 3x3 columns i,j,k in LPS)`` for ``name``.

    ``shape_kji`` is the (K, J, I) grid size; the origin is chosen so the grid centre is at LPS
    (3.25, -17.5, 40.125) mm.
    """
    _check(name)
    spacing = _spacing(name)
    direction = _direction(name)
    k, j, i = (int(n) for n in shape_kji)
    half_extent = np.array([(i - 1) * spacing[0], (j - 1) * spacing[1], (k - 1) * spacing[2]]) / 2.0
    origin = _CENTRE_OFFSET_LPS - direction @ half_extent
    return spacing, (float(origin[0]), float(origin[1]), float(origin[2])), direction


def example_volume(name: str, shape_kji: tuple[int, int, int] | None = None, seed: int = 0,
                   modality: str = "CT"):
    """A small Volume in geometry ``name`` with integer HU-like values in [-1024, 2000] and an asymmetric pattern.

    The pattern (a ramp along i, j and k plus noise) makes any axis flip or swap visible.
    """
    from OncoSegLib.io.volume import Volume

    shape = tuple(shape_kji) if shape_kji is not None else example_shape(name)
    spacing, origin, direction = example_geometry(name, shape)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    arr = -1000 + 7 * ii + 3 * jj + 50 * kk + rng.integers(0, 40, size=shape)
    arr = np.clip(arr, -1024, 2000).astype(np.int16)
    return Volume(arr, spacing=spacing, origin=origin, direction=direction, modality=modality)


def _check(name: str) -> None:
    if name not in GEOMETRY_NAMES:
        raise ValueError(f"unknown example geometry {name!r}; choose one of {', '.join(GEOMETRY_NAMES)}")
