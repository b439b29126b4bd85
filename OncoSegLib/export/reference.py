"""The image series an RTSTRUCT/SEG refers to: identifiers and per-slice geometry, from headers only.

Exporters need the series' UIDs, the patient/study attributes to copy and the exact position of every slice, but
not its pixels (reading 200 x 512 x 512 pixels would cost seconds and ~200 MB), so this reads headers only.

Frames (see :mod:`OncoSegLib.io.volume`): slice ``k`` follows the same order as
:func:`OncoSegLib.io.dicom_series.read_dicom_series` (ascending along the normal row x column), so a (K, J, I) label
map made on a volume read by that function lines up with ``ReferenceSeries`` slice for slice. In-plane points are
(i, j) pixel indices (i = column, j = row); LPS positions are taken per slice from its own ImagePositionPatient, so
contour placement is exact even when the slice spacing is not uniform.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_series import SeriesHeaders, read_series_headers
from OncoSegLib.io.volume import Volume

__all__ = ["ReferenceSeries", "load_reference"]


@dataclass
class ReferenceSeries(SeriesHeaders):
    """The one series-geometry class (:class:`~OncoSegLib.io.dicom_series.SeriesHeaders`: headers, files, per-slice
    positions, row/column directions, pixel spacing, shape, all in k order) plus what the exporters ask of it:
    UIDs per slice, in-plane <-> LPS maps and a geometry-only Volume."""

    @classmethod
    def from_headers(cls, h: SeriesHeaders) -> "ReferenceSeries":
        """Wrap what :func:`OncoSegLib.io.dicom_series.read_series_headers` returned (no copy of the headers)."""
        return cls(**{f.name: getattr(h, f.name) for f in fields(SeriesHeaders)})

    @property
    def sop_instance_uids(self) -> list[str]:
        """SOPInstanceUID of each slice, k order."""
        return [str(h.SOPInstanceUID) for h in self.headers]

    @property
    def sop_class_uids(self) -> list[str]:
        """SOPClassUID of each slice, k order."""
        return [str(h.SOPClassUID) for h in self.headers]

    @property
    def first(self) -> Dataset:
        """Header of slice 0 (patient, study and frame-of-reference attributes are copied from it)."""
        return self.headers[0]

    @property
    def slice_step(self) -> float:
        """Mean distance between consecutive slices (mm, > 0); SliceThickness or 1 for one slice."""
        if len(self.positions) > 1:
            along = self.positions @ self.normal
            return float(abs(along[-1] - along[0]) / (len(along) - 1))
        th = self.first.get("SliceThickness")
        try:
            return float(th) if th not in (None, "") and float(th) > 0 else 1.0
        except (TypeError, ValueError):
            return 1.0

    def ij_to_lps(self, k: int, ij: np.ndarray) -> np.ndarray:
        """Map (N, 2) in-plane (i, j) pixel coordinates (may be fractional) of slice ``k`` to (N, 3) LPS mm."""
        p = np.asarray(ij, dtype=float)
        si, sj = self.spacing_ij
        return (self.positions[k][None, :] + np.outer(p[:, 0] * si, self.row_dir)
                + np.outer(p[:, 1] * sj, self.col_dir))

    def lps_to_ij(self, k: int, lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) LPS points onto slice ``k``: returns ((N, 2) (i, j) pixel coordinates, (N,) signed
        distance in mm from the slice plane along the normal)."""
        d = np.asarray(lps, dtype=float) - self.positions[k][None, :]
        si, sj = self.spacing_ij
        ij = np.column_stack([d @ self.row_dir / si, d @ self.col_dir / sj])
        return ij, d @ self.normal

    def volume(self) -> Volume:
        """A geometry-only :class:`Volume` of the series (array is a read-only zero view, no memory).

        direction = [row_dir, col_dir, normal], origin = slice 0's position, k step = the slice step.
        Raises InputError when the slices do not form a regular grid (gantry tilt, missing slices, uneven
        spacing): a Volume (or a NIfTI affine) cannot describe such a series, and a label map placed on a
        mean-spacing grid would land on the wrong slices. The exporters themselves do not need a regular grid.
        """
        step = self.regular_step()
        along = self.positions @ self.normal
        k_dir = -self.normal if len(along) > 1 and along[-1] < along[0] else self.normal  # files against n
        si, sj = self.spacing_ij
        arr = np.broadcast_to(np.zeros((), dtype=np.uint8), self.shape_kji)
        h = self.first
        md = {
            "SeriesInstanceUID": str(h.get("SeriesInstanceUID", "")),
            "StudyInstanceUID": str(h.get("StudyInstanceUID", "")),
            "FrameOfReferenceUID": str(h.get("FrameOfReferenceUID", "")),
            "Modality": str(h.get("Modality", "")),
            "sop_instance_uids": self.sop_instance_uids,
            "files": [str(f) for f in self.files],
        }
        return Volume(arr, spacing=(si, sj, step), origin=tuple(self.positions[0]),
                      direction=np.column_stack([self.row_dir, self.col_dir, k_dir]),
                      modality=md["Modality"] or None, metadata=md)


def load_reference(series: str | os.PathLike | Volume, series_uid: str | None = None) -> ReferenceSeries:
    """Headers and geometry of the image series in a folder, or of the files behind a Volume.

    Uses :func:`OncoSegLib.io.dicom_series.read_series_headers` (headers only, same file selection and k order as
    :func:`~OncoSegLib.io.dicom_series.read_dicom_series`).

    Args:
        series: folder holding the series (searched recursively, other series/objects ignored when
            ``series_uid`` picks one), or a Volume read by :func:`OncoSegLib.io.dicom_series.read_dicom_series`
            (its ``metadata["files"]`` are used; their positions must match the volume's grid).
        series_uid: SeriesInstanceUID to use when the folder holds several image series.

    Raises:
        InputError: no or several series, corrupt/unreadable files, files without
        ImagePositionPatient/ImageOrientationPatient, mixed orientations/sizes/spacings, or a Volume whose
        geometry does not match its files.
    """
    if isinstance(series, Volume):
        files = [Path(f) for f in series.metadata.get("files", [])]
        if not files:
            raise InputError("the reference volume has no source DICOM files (metadata['files'])",
                             "pass the DICOM series folder instead, or read the volume with read_dicom_series")
        ref = ReferenceSeries.from_headers(read_series_headers(files, sort=False))  # the volume's k order
        if ref.shape_kji != series.shape_kji:
            raise InputError(f"the reference volume has {series.shape_kji} voxels (K, J, I) but its DICOM files "
                             f"{ref.shape_kji}", "pass the DICOM series folder instead")
        expect = series.ijk_to_lps_points(np.array([[0.0, 0.0, k] for k in range(len(ref.files))]))
        if not np.allclose(expect, ref.positions, atol=1e-2):
            raise InputError("the reference volume's geometry does not match its DICOM files",
                             "pass the DICOM series folder instead")
        return ref
    return ReferenceSeries.from_headers(read_series_headers(series, series_uid))
