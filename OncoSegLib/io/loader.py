"""One entry point to read any supported input into a :class:`~OncoSegLib.io.volume.Volume`.

Dispatch by kind: a folder -> DICOM series; ``.nii``/``.nii.gz`` -> NIfTI; ``.png/.jpg/.jpeg/.bmp/.tif/.tiff`` ->
2D image; ``.npz`` -> CVPR challenge npz; ``.dcm`` (or any other file that is DICOM) -> the series it belongs to
in its folder (or the single image). Frames are those of :mod:`OncoSegLib.io.volume`.
"""

from __future__ import annotations

import os
from pathlib import Path

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

SUPPORTED = "a DICOM series folder, a .dcm file, .nii/.nii.gz, .png/.jpg/.jpeg/.bmp/.tif, or a CVPR .npz"


def input_kind(path: str | os.PathLike) -> str:
    """'dicom_folder', 'nifti', 'image', 'npz', 'dicom_file' or 'unknown' for ``path`` (by name, then content)."""
    p = Path(path)
    if p.is_dir():
        return "dicom_folder"
    name = p.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    from OncoSegLib.io.image2d import IMAGE_SUFFIXES

    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".dcm", ".dicom", ".ima")):
        return "dicom_file"
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return "dicom_file"
    return "unknown"


def load_volume(path: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read ``path`` into a Volume; ``series_uid`` selects one series of a DICOM folder holding several.

    Raises InputError for a missing path or an unsupported kind.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}", f"pass {SUPPORTED}")
    kind = input_kind(p)
    if series_uid is not None and kind not in ("dicom_folder", "dicom_file"):
        raise InputError(f"--series applies to DICOM input only; {p} is {kind}")
    if kind == "dicom_folder":
        from OncoSegLib.io.dicom_series import read_dicom_series

        return read_dicom_series(p, series_uid=series_uid)
    if kind == "dicom_file":
        from OncoSegLib.io.dicom_series import read_dicom_file_series, read_dicom_series

        if series_uid is not None:
            return read_dicom_series(p.parent, series_uid=series_uid)
        return read_dicom_file_series(p)
    if kind == "nifti":
        from OncoSegLib.io.nifti import read_nifti

        return read_nifti(p)
    if kind == "image":
        from OncoSegLib.io.image2d import read_image

        return read_image(p)
    if kind == "npz":
        from OncoSegLib.io.npz import read_npz

        return read_npz(p)
    raise InputError(f"unsupported input {p}", f"pass {SUPPORTED}")


__all__ = ["load_volume", "input_kind", "SUPPORTED"]
