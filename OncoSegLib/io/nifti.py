"""NIfTI-1 (.nii / .nii.gz) reading and writing with nibabel.

NIfTI stores data as ``data[i, j, k(, c)]`` with an affine mapping (i, j, k, 1) to **RAS** mm; a
:class:`~OncoSegLib.io.volume.Volume` stores ``array[k, j, i(, c)]`` with geometry in **LPS**. The conversion is
exact up to NIfTI's float32 affine storage: ``affine_RAS = diag(-1, -1, 1, 1) @ Volume.ijk_to_lps``. Any
orientation (oblique, flipped, left-handed) round-trips; the reader uses nibabel's choice of sform/qform.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from OncoSegLib.errors import InputError, OncoSegError, output_write_error
from OncoSegLib.io.atomic import atomic_path
from OncoSegLib.io.volume import LPS_TO_RAS, Volume

_MODALITY_TAG = re.compile(r"modality=([A-Z]{2,8})")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when ``path`` ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def affine_to_geometry(affine_ras: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float],
                                                        np.ndarray]:
    """Split a 4x4 (i, j, k) -> RAS affine into (spacing mm, origin LPS mm, direction columns in LPS)."""
    lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)  # diag(-1,-1,1) is its own inverse
    if not np.all(np.isfinite(lps)):
        raise InputError("NIfTI affine holds NaN or infinite values (no valid voxel geometry)",
                         "fix the file's sform/qform")
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise InputError("NIfTI affine has a zero-length axis (degenerate voxel size)", "fix the file's sform/qform")
    direction = m / spacing
    return (tuple(float(s) for s in spacing), tuple(float(o) for o in lps[:3, 3]),  # type: ignore[return-value]
            direction)


def _raw_header(p: Path):
    """The NIfTI-1/2 header of ``p`` exactly as stored (nibabel's load-time fixes not applied)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(p)) as f:
        first = f.read(4)
    size = int.from_bytes(first, "little") if len(first) == 4 else 0
    size = size if size in (348, 540) else int.from_bytes(first, "big")
    klass = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    with ImageOpener(str(p)) as f:
        return klass.from_fileobj(f, check=False)


def _check_header_geometry(p: Path, header) -> None:
    """InputError when the header's geometry is NaN/infinite, or when the affine comes from pixdim (qform or no
    code) and a voxel size is zero or NaN (nibabel would silently replace a zero by 1 mm)."""
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        srows = np.array([header["srow_x"], header["srow_y"], header["srow_z"]], dtype=float)
        if not np.all(np.isfinite(srows)):
            raise InputError(f"{p}: the NIfTI sform holds NaN or infinite values", "fix the file's sform/qform")
        return
    pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
    if not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
        raise InputError(f"{p}: NIfTI voxel size pixdim[1:4] = {pixdim.tolist()} holds a zero or NaN (and there is "
                         "no sform)", "fix the file's voxel size (pixdim) or give it an sform")
    if qform_code > 0:
        quat = np.array([header["quatern_b"], header["quatern_c"], header["quatern_d"], header["qoffset_x"],
                         header["qoffset_y"], header["qoffset_z"]], dtype=float)
        if not np.all(np.isfinite(quat)):
            raise InputError(f"{p}: the NIfTI qform holds NaN or infinite values", "fix the file's sform/qform")


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a NIfTI file into a Volume (array ``[k, j, i(, c)]``, LPS geometry).

    Scaling (scl_slope/scl_inter) is applied when present (float result); otherwise the stored dtype is kept so
    label maps stay integers. 4D data ``(I, J, K, C)`` becomes a multi-channel volume ``(K, J, I, C)``; 2D data
    becomes one slice. ``metadata`` gets ``source="nifti"`` and, when the description holds ``modality=XX``
    (written by :func:`write_nifti`), ``modality`` is restored.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    try:
        _check_header_geometry(p, _raw_header(p))  # before nib.load, which replaces a zero pixdim by 1 mm
        img = nib.load(str(p))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{p} is not a NIfTI image ({type(img).__name__})")
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=float)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged files
        raise InputError(f"cannot read NIfTI file {p}: {type(exc).__name__}: {exc}",
                         "check that the file is a complete .nii/.nii.gz") from None
    if data.dtype.names is not None:  # RGB24 / RGBA32 structured dtype
        data = np.stack([data[n] for n in data.dtype.names[:3]], axis=-1)
        data = data.reshape(data.shape[:3] + (-1,)) if data.ndim > 4 else data
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images are (I, J, K, 1, C)
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise InputError(f"{p}: unsupported NIfTI data shape {data.shape}", "expected 3D (I,J,K) or 4D (I,J,K,C)")
    array = np.ascontiguousarray(np.moveaxis(data, (0, 1, 2), (2, 1, 0)))
    spacing, origin, direction = affine_to_geometry(affine)
    header = img.header
    descrip = header.get("descrip")
    descrip = descrip.item().decode("latin-1", "ignore") if descrip is not None and hasattr(descrip, "item") else ""
    match = _MODALITY_TAG.search(descrip)
    modality = match.group(1) if match else None
    md = {"source": "nifti", "file": str(p)}
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    md["affine_source"] = "sform" if sform_code > 0 else ("qform" if qform_code > 0 else "default")
    if modality:
        md["Modality"] = modality
    return Volume(array, spacing=spacing, origin=origin, direction=direction, modality=modality, metadata=md)


def _storage_array(volume: Volume) -> np.ndarray:
    a = volume.array
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype == np.float64:
        a = a.astype(np.float32)
    elif a.dtype == np.int64:
        a = a.astype(np.int32) if (a.size == 0 or (a.min() >= -2**31 and a.max() < 2**31)) else a
    elif a.dtype == np.uint64:
        a = a.astype(np.uint32) if (a.size == 0 or a.max() < 2**32) else a
    return np.moveaxis(a, (0, 1, 2), (2, 1, 0))  # (K,J,I[,C]) -> (I,J,K[,C])


def write_nifti(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` to ``path`` (.nii or .nii.gz) atomically; returns the path.

    The affine (sform and qform, code 1 "scanner") is ``volume.ijk_to_ras``; units mm. float64 is stored as float32,
    bool as uint8, int64 as int32 when the values fit (else int64, which NIfTI-1 allows). Multi-channel volumes are stored 4D (I, J, K, C).
    ``volume.modality`` is recorded in the header description as ``modality=XX``.
    An existing file at ``path`` is replaced only once the new one is complete.
    """
    p = Path(path)
    if not is_nifti_path(p):
        raise InputError(f"output {p} must end in .nii or .nii.gz")
    affine = volume.ijk_to_ras
    data = _storage_array(volume)
    # nibabel refuses 64-bit integers unless asked explicitly (NIfTI-1 has DT_INT64/DT_UINT64 codes); they are only
    # left here when the values do not fit 32 bits (e.g. huge label values)
    img = nib.Nifti1Image(data, affine, dtype=data.dtype if data.dtype in (np.int64, np.uint64) else None)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    descrip = "OncoSeg" + (f" modality={volume.modality.upper()}" if volume.modality else "")
    img.header["descrip"] = descrip[:79].encode("ascii", "ignore")
    if p.is_dir():
        raise InputError(f"output {p} is a folder", "pass a file name ending in .nii.gz")
    try:
        with atomic_path(p) as tmp:
            nib.save(img, str(tmp))
    except OSError as exc:  # disk full / I/O error while writing: the temporary file is already removed
        if isinstance(exc, OncoSegError):
            raise
        raise output_write_error(p, exc) from None
    return p


__all__ = ["read_nifti", "write_nifti", "is_nifti_path", "affine_to_geometry"]
