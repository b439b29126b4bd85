"""Reading and writing images with their geometry (see :mod:`OncoSegLib.io.volume` for the frames).

``Volume`` is imported eagerly; the readers/writers load lazily (pydicom/nibabel/Pillow only when used):
``load_volume``, ``read_dicom_series``, ``list_series``, ``write_dicom_series``, ``read_nifti``, ``write_nifti``,
``read_image``, ``read_npz``.
"""

from __future__ import annotations

import importlib
from typing import Any

from OncoSegLib.io.volume import Volume

_LAZY = {
    "load_volume": "loader",
    "read_dicom_series": "dicom_series",
    "list_series": "dicom_series",
    "SeriesInfo": "dicom_series",
    "write_dicom_series": "dicom_write",
    "read_nifti": "nifti",
    "write_nifti": "nifti",
    "read_image": "image2d",
    "read_npz": "npz",
}

__all__ = ["Volume", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"OncoSegLib.io.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'OncoSegLib.io' has no attribute {name!r}")
