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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

__all__ = ["ReferenceSeries", "load_reference"]


@dataclass
class ReferenceSeries:
    """Headers and geometry of one image series, in k order.

    Attributes:
        headers: pydicom datasets without pixel data, k order.
        files: source files, k order.
        positions: (K, 3) ImagePositionPatient (LPS mm, centre of pixel (0, 0)) of each slice.
        row_dir: unit LPS vector of increasing column index i (first triplet of ImageOrientationPatient).
        col_dir: unit LPS vector of increasing row index j (second triplet).
        spacing_ij: (si, sj) = (column spacing, row spacing) in mm (PixelSpacing is [row spacing, column spacing]).
        shape_kji: (K, J, I) = (slices, Rows, Columns).
    """

    headers: list[Dataset]
    files: list[Path]
    positions: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing_ij: tuple[float, float]
    shape_kji: tuple[int, int, int]

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal row_dir x col_dir (LPS)."""
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

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
        """Mean distance between consecutive slices along the normal (mm); SliceThickness or 1 for one slice."""
        if len(self.positions) > 1:
            along = self.positions @ self.normal
            return float((along[-1] - along[0]) / (len(along) - 1))
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

        The k step is :attr:`slice_step`; direction = [row_dir, col_dir, normal].
        """
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
        return Volume(arr, spacing=(si, sj, self.slice_step), origin=tuple(self.positions[0]),
                      direction=np.column_stack([self.row_dir, self.col_dir, self.normal]),
                      modality=md["Modality"] or None, metadata=md)


def _read_headers(files: list[Path]) -> list[Dataset]:
    out = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(pydicom.dcmread(f, stop_before_pixels=True, force=True))
        except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged file
            raise InputError(f"corrupt DICOM file {f}: {type(exc).__name__}: {exc}",
                             "remove or replace the damaged file") from None
    return out


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    try:
        v = np.array([float(x) for x in ds[keyword].value], dtype=float)
    except Exception:  # noqa: BLE001
        v = np.array([])
    if v.size != n:
        raise InputError(f"{path}: missing or malformed {keyword}",
                         "the series must be a regular image series with patient geometry")
    return v


def load_reference(series: str | os.PathLike | Volume, series_uid: str | None = None) -> ReferenceSeries:
    """Headers and geometry of the image series in a folder, or of the files behind a Volume.

    Args:
        series: folder holding the series (searched recursively, other series/objects ignored when
            ``series_uid`` picks one), or a Volume read by :func:`OncoSegLib.io.dicom_series.read_dicom_series`
            (its ``metadata["files"]`` are used in its k order, which must match the files' positions).
        series_uid: SeriesInstanceUID to use when the folder holds several image series.

    Raises:
        InputError: no or several series, files without ImagePositionPatient/ImageOrientationPatient, mixed
        orientations/sizes/spacings, or a Volume whose geometry does not match its files.
    """
    if isinstance(series, Volume):
        files = [Path(f) for f in series.metadata.get("files", [])]
        if not files:
            raise InputError("the reference volume has no source DICOM files (metadata['files'])",
                             "pass the DICOM series folder instead, or read the volume with read_dicom_series")
        if len(files) != series.shape_kji[0]:
            raise InputError(f"the reference volume has {series.shape_kji[0]} slices but {len(files)} files")
        headers = _read_headers(files)
        ref = _build(headers, files, sort=False)
        expect = series.ijk_to_lps_points(np.array([[0.0, 0.0, k] for k in range(len(files))]))
        if not np.allclose(expect, ref.positions, atol=1e-2):
            raise InputError("the reference volume's geometry does not match its DICOM files",
                             "pass the DICOM series folder instead")
        return ref
    from OncoSegLib.io.dicom_series import list_series

    folder = Path(series)
    infos = list_series(folder)
    if not infos:
        raise InputError(f"no DICOM image series found in {folder}",
                         "pass the folder holding the CT/MR/PET image files")
    if series_uid is None:
        if len(infos) > 1:
            listing = "; ".join(i.summary() for i in infos)
            raise InputError(f"{len(infos)} image series in {folder}: {listing}",
                             "choose one with --series UID (series_uid=...)")
        info = infos[0]
    else:
        match = [i for i in infos if i.series_uid == series_uid]
        if not match:
            raise InputError(f"series {series_uid} not found in {folder}",
                             "choose one of: " + ", ".join(i.series_uid for i in infos))
        info = match[0]
    files = list(info.files)
    return _build(_read_headers(files), files, sort=True)


def _build(headers: list[Dataset], files: list[Path], sort: bool) -> ReferenceSeries:
    iops = np.array([_floats(h, "ImageOrientationPatient", 6, f) for h, f in zip(headers, files)])
    pos = np.array([_floats(h, "ImagePositionPatient", 3, f) for h, f in zip(headers, files)])
    if np.max(np.abs(iops - iops[0])) > 1e-4:
        raise InputError("the series mixes slice orientations (ImageOrientationPatient differs)",
                         "choose a series with a single orientation")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) != 1:
        raise InputError(f"the series mixes image sizes {sorted(sizes)}")
    spacings = {tuple(np.round(_floats(h, "PixelSpacing", 2, f), 6)) for h, f in zip(headers, files)}
    if len(spacings) != 1:
        raise InputError("the series mixes pixel spacings")
    sj, si = next(iter(spacings))
    row = iops[0, :3] / np.linalg.norm(iops[0, :3])
    col = iops[0, 3:] / np.linalg.norm(iops[0, 3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    if sort:
        order = np.argsort(pos @ normal, kind="stable")
        headers = [headers[n] for n in order]
        files = [files[n] for n in order]
        pos = pos[order]
    along = pos @ normal
    if len(along) > 1 and np.min(np.abs(np.diff(along))) < 1e-3:
        raise InputError("the series has several slices at the same position",
                         "split the series (several acquisitions or time points) and choose one")
    rows, cols = next(iter(sizes))
    return ReferenceSeries(headers=headers, files=files, positions=pos, row_dir=row, col_dir=col,
                           spacing_ij=(float(si), float(sj)), shape_kji=(len(headers), rows, cols))
