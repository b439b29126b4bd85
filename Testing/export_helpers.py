"""Shared helpers of the export tests: synthetic CT series, test structures and independent checkers.

Oracles used: dicom3tools (dciodvfy, dcentvfy), DCMTK (drtdump), plastimatch (independent C++ rasteriser, read
back with SimpleITK and mapped by physical position), matplotlib point-in-polygon (nesting of contours).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.io.volume import Volume

from validators import require_tool

# Marks kept for readability: a test using a validator calls it through the helpers below, which require the tool
# (a failure under CI, a reported skip elsewhere); never an `if HAVE_tool:` that silently drops the check.
need_dciodvfy = pytest.mark.validators
need_dcentvfy = pytest.mark.validators
need_drtdump = pytest.mark.validators
need_plastimatch = pytest.mark.validators

# (geometry name from OncoSegLib.io.geometries, write slices against the normal?)
GEOMETRIES = {
    "head_first": ("head_first", False),
    "feet_first_reversed": ("feet_first", True),
    "prone": ("prone", False),
    "oblique": ("oblique", True),
    "non_square": ("non_square", False),
    "anisotropic": ("anisotropic", False),
    "non_square_anisotropic": ("non_square_anisotropic", True),
}
SHAPE_SQUARE = (20, 48, 48)
SHAPE_NON_SQUARE = (20, 48, 40)  # (K, J, I): 48 rows x 40 columns


def make_ct(tmp: Path, key: str) -> Volume:
    """Write a synthetic CT series for geometry ``key`` under ``tmp/ct`` and read it back (k along the normal)."""
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    name, reverse = GEOMETRIES[key]
    shape = SHAPE_NON_SQUARE if "non_square" in name else SHAPE_SQUARE
    vol = example_volume(name, shape)
    ct_dir = tmp / "ct"
    write_dicom_series(vol, ct_dir, reverse_order=reverse)
    return read_dicom_series(ct_dir)


def make_structures(shape_kji: tuple[int, int, int]) -> np.ndarray:
    """Label map: 1 = sphere, 2 = ring with a hole, an island in the hole and a separate island,
    3 = thin features (single voxel, 2-voxel pair, 1-px line, 8-connected diagonal, squares touching at a corner,
    box with a 2-px slit), 4 = a one-voxel structure on the first slice."""
    k, j, i = shape_kji
    lab = np.zeros(shape_kji, dtype=np.uint8)
    kk, jj, ii = np.mgrid[:k, :j, :i]
    lab[((kk - 10) / 5.5) ** 2 + ((jj - 13) / 9.3) ** 2 + ((ii - 12) / 8.7) ** 2 < 1] = 1
    ring = np.zeros((j, i), bool)
    ring[26:45, 2:21] = True
    ring[29:42, 5:18] = False
    ring[33:38, 9:14] = True  # island inside the hole
    ring[30, 23:25] = True  # separate island
    lab[4:16][:, ring] = 2
    thin = np.zeros((j, i), bool)
    thin[2, 30] = True  # single voxel
    thin[4, 26:28] = True  # 2-voxel pair
    thin[6, 25:37] = True  # 1-px line
    for d in range(5):
        thin[8 + d, 26 + d] = True  # 8-connected diagonal
    thin[15:18, 26:29] = True
    thin[18:21, 29:32] = True  # squares touching at a corner
    thin[23:33, 27:37] = True
    thin[25:31, 29:35] = False
    thin[27:29, 35:37] = False  # 2-px slit from the hole to the outside
    lab[3:17][:, thin] = 3
    lab[0, 5, 5] = 4
    return lab


def run_tool(args: list[str]) -> str:
    """Run a validator (required: see :func:`validators.require_tool`) and return its stdout + stderr."""
    res = subprocess.run([require_tool(args[0]), *args[1:]], capture_output=True, text=True, timeout=120)
    return res.stdout + res.stderr


def dciodvfy_problems(path: Path) -> list[str]:
    """Error and Warning lines of ``dciodvfy -new`` for one file."""
    out = run_tool(["dciodvfy", "-new", str(path)])
    return [line for line in out.splitlines() if line.startswith(("Error", "Warning"))]


def dcentvfy_problems(ct_files: list[str], path: Path) -> list[str]:
    out = run_tool(["dcentvfy", *ct_files, str(path)])
    return [line for line in out.splitlines() if "Error" in line or "Warning" in line]


def drtdump_problems(path: Path) -> list[str]:
    out = run_tool(["drtdump", str(path)])
    return [line for line in out.splitlines() if line.startswith(("W:", "E:"))]


def plastimatch_masks(rt: Path, ct_dir: Path, out_dir: Path, vol: Volume, names: list[str]) -> dict[str, np.ndarray]:
    """Rasterise ``rt`` with plastimatch (--xor-contours) and sample each structure at ``vol``'s voxel centres."""
    import SimpleITK as sitk

    out = run_tool(["plastimatch", "convert", "--input", str(rt), "--referenced-ct", str(ct_dir),
                    "--output-prefix", str(out_dir), "--prefix-format", "nrrd", "--xor-contours"])
    k, j, i = vol.shape_kji
    kk, jj, ii = np.meshgrid(np.arange(k), np.arange(j), np.arange(i), indexing="ij")
    centres = vol.ijk_to_lps_points(np.column_stack([ii.ravel(), jj.ravel(), kk.ravel()]))
    result = {}
    for name in names:
        path = out_dir / f"{name}.nrrd"
        assert path.exists(), f"plastimatch wrote no {path}: {out[-2000:]}"
        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)  # (z, y, x)
        d = np.array(img.GetDirection()).reshape(3, 3)
        s = np.diag(img.GetSpacing())
        o = np.array(img.GetOrigin())  # ITK physical space is LPS
        idx = np.linalg.solve(d @ s, (centres - o).T).T
        r = np.rint(idx).astype(int)
        assert np.abs(idx - r).max() < 1e-2, "plastimatch grid does not share the CT voxel centres"
        inside = (r >= 0).all(1) & (r[:, 0] < arr.shape[2]) & (r[:, 1] < arr.shape[1]) & (r[:, 2] < arr.shape[0])
        m = np.zeros(len(centres), bool)
        m[inside] = arr[r[inside, 2], r[inside, 1], r[inside, 0]] > 0
        assert arr.sum() == m.sum(), "plastimatch marked voxels outside the CT grid"
        result[name] = m.reshape(k, j, i)
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)
