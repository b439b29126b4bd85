"""Writing the module's segments to files, once the Logic has read them into one label map (no Slicer needed).

The Logic passes the label map on the input volume's grid (``labels`` (K, J, I), segment order, the overlap rule of
:mod:`OncoSegLib.export.overlap`), the segment names and colours, and that grid as a geometry-only
:class:`~OncoSegLib.io.volume.Volume` (LPS of the volume node's own RAS). RTSTRUCT and SEG reference the ORIGINAL
DICOM series (a folder, or the files Slicer's DICOM database lists for the volume) and are re-indexed onto its grid
exactly (:func:`OncoSegLib.export.labelmap_io.place_on_grid`: permutation/flip only, never resampled).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

KINDS = ("rtstruct", "seg", "nifti")


def write_export(kind: str, labels: np.ndarray, names: Sequence[str], colors: Sequence[Sequence[int]], grid: Volume,
                 out_dir: str | os.PathLike, base_name: str = "segmentation", series_folder: str | None = None,
                 series_files: Sequence[str] = (), workdir: str | None = None) -> str:
    """Write one export; returns the path written (never overwrites an existing file).

    Args:
        kind: "rtstruct" (OncoSeg's own writer), "seg" (DICOM SEG) or "nifti" (label map + ``.labels.json`` with
            label, name, colour).
        labels, names, colors: the label map on ``grid`` (label n = ``names[n - 1]``), colours 0-255 RGB.
        grid: the input volume's voxel grid (LPS).
        out_dir: folder to write into; files are named after the series UID (DICOM) or ``base_name`` (NIfTI).
        series_folder / series_files: the original series (a folder, or its files from Slicer's DICOM database).
        workdir: where a temporary folder linking ``series_files`` is made (Slicer's temporary path).
    """
    if kind not in KINDS:
        raise InputError(f"unknown export {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    out = Path(out_dir)
    if kind == "nifti":
        from OncoSegLib.export.labelmap_io import write_labelmap
        from OncoSegLib.io.atomic import atomic_write_text

        path = out / f"{base_name}.nii.gz"
        if path.exists():
            raise InputError(f"{path} exists", hint="choose another folder or remove the file")
        write_labelmap(labels, grid, path)
        atomic_write_text(out / f"{base_name}.labels.json", json.dumps(
            [{"label": n + 1, "name": name, "color": [int(c) for c in color]}
             for n, (name, color) in enumerate(zip(names, colors))], indent=2))
        return str(path)
    from OncoSegLib.export.labelmap_io import array_index_to_lps, place_on_grid
    from OncoSegLib.export.reference import load_reference
    from OncoSegLib.slicer_support.core import series_folder_from_files

    tmp = None if series_folder else series_folder_from_files(series_files, workdir)
    try:
        reference = load_reference(series_folder or tmp)  # type: ignore[arg-type]
        on_series = place_on_grid(labels, array_index_to_lps(grid), reference.volume(), what="segmentation")
        uid = reference.first.SeriesInstanceUID
        if kind == "rtstruct":
            from OncoSegLib.export.rtstruct import write_rtstruct

            return str(write_rtstruct(on_series, reference, out / f"RTSTRUCT_{uid}.dcm", names=list(names),
                                      colors=[tuple(c) for c in colors], overwrite=False))
        from OncoSegLib.export.seg import write_seg

        return str(write_seg(on_series, reference, out / f"SEG_{uid}.dcm", names=list(names),
                             colors=[tuple(c) for c in colors], overwrite=False))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
