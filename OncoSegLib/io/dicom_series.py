"""Read a DICOM image series from a folder into a :class:`~OncoSegLib.io.volume.Volume`.

Slices are ordered by their position along the slice normal n = row x column of ImageOrientationPatient (never by
InstanceNumber or file name), so the returned k axis is always +n: ``direction = [row, column, n]`` (columns, LPS),
``origin`` = ImagePositionPatient (LPS mm) of the first slice along n, ``spacing = (column spacing, row spacing,
slice step along n)`` in mm. Pixel values go through the Modality LUT (RescaleSlope/Intercept) to float32 (HU for CT).

The reader refuses, with an :class:`~OncoSegLib.errors.InputError` naming the problem: several series without a
choice, mixed orientations, mixed image sizes or pixel spacings, gantry tilt (slices sheared against the normal),
duplicate positions, missing slices, non-uniform spacing and corrupt files. Non-DICOM files are ignored and so are
non-image objects (RTSTRUCT, SEG, RTPLAN, RTDOSE, SR, presentation states...).

Single images without patient geometry (projection X-ray, ultrasound, endoscopy: no ImagePositionPatient) are read
as one-slice volumes (or one volume of frames for a multi-frame cine) with identity direction and PixelSpacing /
ImagerPixelSpacing when present, else 1 mm.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_enhanced import has_plane_positions, is_enhanced, read_enhanced
from OncoSegLib.io.volume import Volume

#: Modalities of non-image objects that may sit beside a series and are never read as slices.
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "SEG", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG",
                                  "RWV", "DOC", "FID", "PLAN", "RTTREAT"})

# Orientation cosines written as 16-character DS agree to ~1e-13; scanners round to ~6 digits.
_ORIENTATION_TOL = 1e-4
# Tolerance on slice-step deviations: 1 % of the step, at least 0.02 mm (scanners round positions to 0.01 mm).
_SPACING_REL_TOL = 0.01
_SPACING_ABS_TOL_MM = 0.02


@dataclass
class SeriesInfo:
    """One image series found in a folder (no patient identifiers).

    Attributes:
        series_uid: SeriesInstanceUID.
        modality: Modality code ("CT", "MR", ...), "" when absent.
        description: SeriesDescription, "" when absent.
        n_files: number of image files of the series.
        study_uid: StudyInstanceUID.
        series_number: SeriesNumber or None.
        files: the files (sorted by path, not by position).
    """

    series_uid: str
    modality: str
    description: str
    n_files: int
    study_uid: str = ""
    series_number: int | None = None
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line: UID, modality, description and file count."""
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.series_uid} ({self.modality or '?'}{desc}, {self.n_files} files)"


@dataclass
class _Scan:
    series: dict[str, list[tuple[Path, Dataset]]]
    corrupt: list[tuple[Path, str]]


def _iter_files(folder: Path) -> list[Path]:
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / name)
    return out


def _describe(exc: BaseException) -> str:
    """Short technical reason for a file that cannot be read (no file content)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _read_header(path: Path, force: bool = False) -> Dataset | None:
    """Header of ``path``, None when it is not DICOM; raises for a DICOM file that cannot be read or parsed.

    ``force``: also try files without the DICM preamble whatever their suffix (used for files the caller names).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            if not force and path.suffix.lower() not in (".dcm", ".dicom", ".ima"):
                return None
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                return None
            return ds


def _is_image(ds: Dataset) -> bool:
    modality = str(ds.get("Modality", "")).upper()
    return modality not in NON_IMAGE_MODALITIES and "Rows" in ds and "Columns" in ds


def _scan(folder: str | os.PathLike) -> _Scan:
    root = Path(folder)
    if not root.exists():
        raise InputError(f"folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"not a folder: {root}", "pass the folder holding the DICOM series")
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    corrupt: list[tuple[Path, str]] = []
    for path in _iter_files(root):
        try:
            ds = _read_header(path)
        except Exception as exc:  # noqa: BLE001 - any read/parse failure of a DICOM file is "corrupt"
            corrupt.append((path, _describe(exc)))
            continue
        if ds is None:
            continue
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            corrupt.append((path, "DICOM file without SOPClassUID/SOPInstanceUID"))
            continue
        if not _is_image(ds):
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        series.setdefault(uid, []).append((path, ds))
    return _Scan(series, corrupt)


def _info(uid: str, items: list[tuple[Path, Dataset]]) -> SeriesInfo:
    ds = items[0][1]
    number = ds.get("SeriesNumber")
    return SeriesInfo(
        series_uid=uid,
        modality=str(ds.get("Modality", "")),
        description=str(ds.get("SeriesDescription", "")),
        n_files=len(items),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_number=int(number) if number not in (None, "") else None,
        files=[p for p, _ in items],
    )


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """List the image series found in ``folder`` (recursively), sorted by SeriesNumber then UID.

    Non-DICOM files and non-image DICOM objects are skipped. Raises InputError when the folder does not exist.
    """
    scan = _scan(folder)
    infos = [_info(uid, items) for uid, items in scan.series.items()]
    infos.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.series_uid))
    return infos


def _corrupt_error(corrupt: list[tuple[Path, str]]) -> InputError:
    names = ", ".join(str(p) for p, _ in corrupt[:3]) + (f" and {len(corrupt) - 3} more" if len(corrupt) > 3 else "")
    return InputError(f"corrupt or unreadable DICOM file(s) in the series folder: {names} ({corrupt[0][1]})",
                      "remove, replace or make readable the file(s) and try again")


def _choose(scan: _Scan, folder: str | os.PathLike, series_uid: str | None) -> tuple[str, list[tuple[Path, Dataset]]]:
    infos = [_info(uid, items) for uid, items in scan.series.items()]
    if not infos:
        if scan.corrupt:
            raise _corrupt_error(scan.corrupt)
        raise InputError(f"no DICOM image series found in {folder}",
                         "pass the folder holding the image files (CT/MR/PET/... slices)")
    listing = "; ".join(i.summary() for i in infos)
    if series_uid is None:
        if len(infos) > 1:
            raise InputError(f"{len(infos)} image series in {folder}: {listing}",
                             "choose one with --series UID (series_uid=...)")
        uid = infos[0].series_uid
    else:
        if series_uid not in scan.series:
            raise InputError(f"series {series_uid} not found in {folder}; found: {listing}",
                             "choose one of the listed SeriesInstanceUIDs")
        uid = series_uid
    return uid, scan.series[uid]


def _floats(ds: Dataset, keyword: str) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return np.array([float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                          else [value])], dtype=float)
    except (TypeError, ValueError):
        return None


def _pixels(path: Path) -> tuple[np.ndarray, Dataset]:
    """Full dataset and modality-LUT-applied float32 pixels of one file; InputError when unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged/unsupported pixel data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) if "ds" in locals() else None
        if ts is not None and ts.is_compressed and "PixelData" in ds:
            raise InputError(f"cannot decode compressed pixel data ({ts.name}) in {path}: {exc}",
                             "install pylibjpeg[all] or python-gdcm, or decompress the series (dcmdjpeg)") from None
        raise InputError(f"corrupt or unreadable pixel data in {path}: {type(exc).__name__}: {exc}",
                         "remove or replace the damaged file and try again") from None
    from pydicom.pixels import apply_modality_lut

    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 1 and ("RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds):
        values = apply_modality_lut(raw, ds)
    else:
        values = raw
    return np.asarray(values, dtype=np.float32), ds


def _metadata(uid: str, ds: Dataset, files: list[Path], sops: list[str]) -> dict:
    md: dict = {
        "SeriesInstanceUID": uid,
        "StudyInstanceUID": str(ds.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": str(ds.get("FrameOfReferenceUID", "")),
        "Modality": str(ds.get("Modality", "")),
        "SeriesDescription": str(ds.get("SeriesDescription", "")),
        "sop_instance_uids": sops,
        "files": [str(p) for p in files],
    }
    for key in ("PhotometricInterpretation", "BodyPartExamined", "PatientPosition", "SOPClassUID"):
        if key in ds and ds.get(key) not in (None, ""):
            md[key] = str(ds.get(key))
    for key in ("WindowCenter", "WindowWidth"):
        vals = _floats(ds, key)
        if vals is not None and vals.size:
            md[key] = float(vals[0])
    return md


def _read_unplaced(uid: str, items: list[tuple[Path, Dataset]]) -> Volume:
    """A series without ImagePositionPatient/ImageOrientationPatient: one file (2D image or multi-frame cine)."""
    if len(items) != 1:
        raise InputError(f"series {uid} has {len(items)} images without patient position/orientation "
                         "(ImagePositionPatient), so their order and spacing are unknown",
                         "load one image file at a time")
    path = items[0][0]
    values, ds = _pixels(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames > 1:
        array = values  # (F, H, W[, 3])
    else:
        array = values[None]
    if samples == 1 and array.ndim == 4:
        array = array[..., 0]
    spacing = _floats(ds, "PixelSpacing")
    if spacing is None:
        spacing = _floats(ds, "ImagerPixelSpacing")
    sj, si = (float(spacing[0]), float(spacing[1])) if spacing is not None and spacing.size == 2 else (1.0, 1.0)
    if not (si > 0 and sj > 0 and np.isfinite(si) and np.isfinite(sj)):
        raise InputError(f"{path}: pixel spacing {spacing.tolist() if spacing is not None else ''} is not a "
                         "positive finite number (mm)", "fix PixelSpacing/ImagerPixelSpacing in the file")
    md = _metadata(uid, ds, [path], [str(ds.get("SOPInstanceUID", ""))])
    md["spacing_source"] = "PixelSpacing" if spacing is not None else "default 1 mm"
    if frames > 1:
        md["n_frames"] = frames
    return Volume(array, spacing=(si, sj, 1.0), modality=md["Modality"] or None, metadata=md)


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read one image series from ``folder`` into a Volume (k axis = +slice normal; LPS; float32 values).

    Args:
        folder: folder holding the series' files (searched recursively; other files are ignored).
        series_uid: SeriesInstanceUID to read; required when the folder holds several image series.

    Returns:
        Volume with ``array[k, j, i]`` float32 real-world values (HU for CT), spacing (si, sj, sk) mm,
        origin/direction in LPS and metadata ``SeriesInstanceUID``, ``StudyInstanceUID``, ``FrameOfReferenceUID``,
        ``Modality``, ``SeriesDescription``, ``sop_instance_uids`` and ``files`` (both in k order).

    Raises:
        InputError: no series, several series and no choice, corrupt file, or a geometry that is not a regular
        grid (mixed orientations or sizes, gantry tilt, duplicate positions, missing slices, non-uniform spacing).
    """
    return _read_from_scan(_scan(folder), folder, series_uid)


@dataclass
class SeriesHeaders:
    """Headers (no pixel data) of one image series with patient geometry, in k order.

    k runs along the slice normal n = row x column, ascending (the order of :func:`read_dicom_series`), so a
    (K, J, I) label map made on a volume read by that function lines up slice for slice (unless
    :func:`read_series_headers` was asked to keep the order of a given file list).

    Attributes:
        series_uid: SeriesInstanceUID.
        files: source files, k order.
        headers: pydicom datasets read with ``stop_before_pixels``, k order.
        positions: (K, 3) ImagePositionPatient of each slice: LPS mm of the centre of pixel (i, j) = (0, 0).
        row_dir: unit LPS vector of increasing column index i (first triplet of ImageOrientationPatient).
        col_dir: unit LPS vector of increasing row index j (second triplet).
        spacing_ij: (si, sj) = (column spacing, row spacing) in mm (PixelSpacing is [row, column] spacing).
        shape_kji: (K, J, I) = (slices, Rows, Columns).
        duplicate_files_skipped: copies of an instance already seen (same SOPInstanceUID) that were left out.
    """

    series_uid: str
    files: list[Path]
    headers: list[Dataset]
    positions: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing_ij: tuple[float, float]
    shape_kji: tuple[int, int, int]
    duplicate_files_skipped: int = 0

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal row_dir x col_dir (LPS)."""
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    def regular_step(self) -> float:
        """Slice step in mm along the normal when the slices form a regular grid, else InputError.

        Raises for gantry tilt, missing slices and non-uniform spacing (tolerance: 1 % of the step, at least
        0.02 mm). A single slice gives SpacingBetweenSlices, else SliceThickness, else 1 mm.
        """
        if len(self.positions) == 1:
            h = self.headers[0]
            vals = _floats(h, "SpacingBetweenSlices")
            if vals is None:
                vals = _floats(h, "SliceThickness")
            return float(vals[0]) if vals is not None and vals.size and vals[0] > 0 else 1.0
        order = np.argsort(self.positions @ self.normal, kind="stable")
        pos = self.positions[order]
        return _regular_step(self.series_uid, pos, pos @ self.normal, self.normal)


def _dedupe(items: list[tuple[Path, Dataset]]) -> tuple[list[tuple[Path, Dataset]], int]:
    """Drop further copies of an instance (a series copied into two sub-folders counts once)."""
    seen: set[str] = set()
    unique = []
    for p, ds in items:
        sop = str(ds.get("SOPInstanceUID", ""))
        if sop in seen:
            continue
        seen.add(sop)
        unique.append((p, ds))
    return unique, len(items) - len(unique)


def _placed_headers(uid: str, items: list[tuple[Path, Dataset]], n_duplicates: int,
                    sort: bool = True) -> SeriesHeaders:
    """Check the slices of one placed series for consistency and (``sort``) sort them along the normal.

    Raises InputError for multi-frame files, malformed or mixed orientations, mixed sizes or pixel spacings and
    slices at the same position. Regular-grid checks (tilt, gaps, spacing) are :meth:`SeriesHeaders.regular_step`.
    """
    for p, ds in items:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{p} is a multi-frame (enhanced) image; only single-frame series are supported",
                             "convert it to single-frame files (e.g. dcmconv/emf2sf) first")
    iops, poss = [], []
    for p, ds in items:
        iop = _floats(ds, "ImageOrientationPatient")
        ipp = _floats(ds, "ImagePositionPatient")
        if iop is None or iop.size != 6 or ipp is None or ipp.size != 3:
            raise InputError(f"{p}: malformed ImageOrientationPatient/ImagePositionPatient")
        if not (np.all(np.isfinite(iop)) and np.all(np.isfinite(ipp))):
            raise InputError(f"{p}: ImagePositionPatient/ImageOrientationPatient is not a finite number (NaN or "
                             "infinite)", "the slice cannot be placed; re-export or remove the file")
        if np.linalg.norm(iop[:3]) < 1e-6 or np.linalg.norm(iop[3:]) < 1e-6:
            raise InputError(f"{p}: ImageOrientationPatient has a zero-length axis")
        iops.append(iop)
        poss.append(ipp)
    iops_a = np.array(iops)
    if np.max(np.abs(iops_a - iops_a[0])) > _ORIENTATION_TOL:
        n_orient = len({tuple(np.round(x, 3)) for x in iops_a})
        raise InputError(f"series {uid} mixes {n_orient} slice orientations (ImageOrientationPatient differs); "
                         "it may hold localizers or several stacks", "choose a series with a single orientation")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(sizes) > 1:
        raise InputError(f"series {uid} mixes image sizes {sorted(sizes)} (Rows x Columns)",
                         "choose a series whose slices all have the same size")
    spacings = set()
    for p, ds in items:
        ps = _floats(ds, "PixelSpacing")
        if ps is not None and not np.all(np.isfinite(ps)):
            raise InputError(f"{p}: PixelSpacing {ps.tolist()} is not a finite number (NaN or infinite)",
                             "the pixel size cannot be trusted; re-export the series")
        spacings.add(tuple(np.round(ps, 6)) if ps is not None and ps.size == 2 else None)
    if len(spacings) > 1:
        raise InputError(f"series {uid} mixes pixel spacings {sorted(spacings, key=str)}",
                         "choose a series whose slices all have the same PixelSpacing")
    ps0 = next(iter(spacings))
    sj, si = (float(ps0[0]), float(ps0[1])) if ps0 is not None else (1.0, 1.0)
    if not (si > 0 and sj > 0):
        raise InputError(f"series {uid} has a non-positive PixelSpacing {ps0}")

    row = iops_a[0, :3] / np.linalg.norm(iops_a[0, :3])
    col = iops_a[0, 3:] / np.linalg.norm(iops_a[0, 3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    positions = np.array(poss)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    if sort:
        positions = positions[order]
        items = [items[i] for i in order]
    if len(items) > 1:
        steps = np.diff(along[order])
        if np.any(steps < _SPACING_ABS_TOL_MM):
            n_dup = int(np.sum(steps < _SPACING_ABS_TOL_MM))
            raise InputError(f"series {uid} has {n_dup} slice(s) at duplicate positions; it may hold several "
                             "acquisitions, echoes or time points", "split the series or choose another one")
    rows, cols = next(iter(sizes))
    return SeriesHeaders(series_uid=uid, files=[p for p, _ in items], headers=[ds for _, ds in items],
                         positions=positions, row_dir=row, col_dir=col, spacing_ij=(si, sj),
                         shape_kji=(len(items), rows, cols), duplicate_files_skipped=n_duplicates)


def _regular_step(uid: str, positions: np.ndarray, along: np.ndarray, normal: np.ndarray) -> float:
    """Mean slice step (mm) of slices sorted along ``normal``; InputError for tilt, gaps or uneven spacing."""
    n = len(along)
    steps = np.diff(along)
    shear = (positions - positions[0]) - np.outer(along - along[0], normal)
    max_shear = float(np.max(np.linalg.norm(shear, axis=1)))
    extent = float(along[-1] - along[0])
    if max_shear > max(_SPACING_ABS_TOL_MM, 1e-3 * extent):
        tilt = float(np.degrees(np.arctan2(np.linalg.norm(shear[-1]), extent)))
        raise InputError(f"series {uid} has gantry tilt: slice positions are sheared {tilt:.2f} degrees "
                         "against the slice normal", "resample it to a regular grid first (e.g. in 3D Slicer)")
    step = float(np.min(steps))  # missing slices make some steps a multiple of the smallest
    tol = max(_SPACING_ABS_TOL_MM, _SPACING_REL_TOL * step)
    if np.max(np.abs(steps - step)) > tol:
        ratios = steps / step
        near_int = np.abs(ratios - np.round(ratios)) * step <= tol
        if np.all(near_int) and np.all(np.round(ratios) >= 1):
            missing = int(np.sum(np.round(ratios) - 1))
            gaps = [f"{along[i]:.2f}..{along[i + 1]:.2f} mm" for i in np.nonzero(np.round(ratios) > 1)[0][:3]]
            raise InputError(f"series {uid} is missing {missing} slice(s) (gaps along the normal at "
                             f"{', '.join(gaps)}; step {step:.3g} mm)",
                             "re-export the complete series")
        uniq = sorted({round(float(s), 3) for s in steps})
        shown = ", ".join(f"{s:g}" for s in uniq[:6]) + (" ..." if len(uniq) > 6 else "")
        raise InputError(f"series {uid} has non-uniform slice spacing ({shown} mm)",
                         "resample it to a regular grid first (e.g. in 3D Slicer)")
    return float(extent / (n - 1))


def read_series_headers(source: str | os.PathLike | Sequence[str | os.PathLike],
                        series_uid: str | None = None, sort: bool = True) -> SeriesHeaders:
    """Read the headers only (no pixel data) of one image series with patient geometry, in k order.

    This is the header half of :func:`read_dicom_series` (same file selection, same consistency checks, same k
    order): exporters that only need UIDs, patient/study attributes and slice positions use it, which is much
    faster and lighter than reading 200 x 512 x 512 pixels.

    Args:
        source: a folder (searched recursively like :func:`read_dicom_series`; non-DICOM files and non-image
            objects are ignored) or a list of the series' files (e.g. ``volume.metadata["files"]``).
        series_uid: SeriesInstanceUID to pick when the folder holds several image series.
        sort: order the slices along the normal (default). False keeps the order of the given files (for a
            list of files already in a volume's k order, which may run against the normal).

    Raises:
        InputError: no or several series without a choice, a corrupt or unreadable file, images without
        ImagePositionPatient/ImageOrientationPatient, multi-frame files, mixed orientations/sizes/pixel spacings or
        slices at the same position. Gantry tilt and uneven spacing are allowed here (each slice keeps its own
        position); call :meth:`SeriesHeaders.regular_step` where a regular grid is needed.
    """
    if isinstance(source, (str, os.PathLike)):
        scan = _scan(source)
        uid, items = _choose(scan, source, series_uid)
        if scan.corrupt:
            raise _corrupt_error(scan.corrupt)
    else:
        items = []
        for f in (Path(x) for x in source):
            if not f.is_file():
                raise InputError(f"DICOM file not found: {f}")
            try:
                ds = _read_header(f, force=True)
            except Exception as exc:  # noqa: BLE001 - any parse failure of a DICOM file
                raise _corrupt_error([(f, _describe(exc))]) from None
            if ds is None or "SOPInstanceUID" not in ds:
                raise InputError(f"not a DICOM image file: {f}")
            items.append((f, ds))
        if not items:
            raise InputError("no DICOM files given")
        uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in items}
        if len(uids) > 1:
            raise InputError(f"the files belong to {len(uids)} different series", "pass the files of one series")
        uid = uids.pop()
        if series_uid is not None and series_uid != uid:
            raise InputError(f"the files belong to series {uid}, not {series_uid}")
    items, n_dup = _dedupe(items)
    if any(is_enhanced(ds) for _, ds in items):
        raise InputError(f"series {uid} is an enhanced (multi-frame) image; RTSTRUCT/SEG export and import need a "
                         "series of single-frame images", "convert it to single-frame files (emf2sf) first")
    placed = [(p, ds) for p, ds in items if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if len(placed) != len(items):
        raise InputError(f"series {uid}: {len(items) - len(placed)} of {len(items)} images lack "
                         "ImagePositionPatient/ImageOrientationPatient (no patient geometry)",
                         "RTSTRUCT/SEG export needs a CT/MR/PET series with patient positions")
    return _placed_headers(uid, placed, n_dup, sort=sort)


def _read_from_scan(scan: _Scan, folder: str | os.PathLike, series_uid: str | None) -> Volume:
    uid, items = _choose(scan, folder, series_uid)
    if scan.corrupt:
        raise _corrupt_error(scan.corrupt)
    items, n_duplicate_files = _dedupe(items)

    for p, ds in items:
        if is_enhanced(ds) and not has_plane_positions(ds) and str(ds.get("Modality", "")).upper() in ("CT", "MR",
                                                                                                       "PT"):
            raise InputError(f"{p} is an enhanced {ds.get('Modality')} image without plane positions "
                             "(PlanePositionSequence): its geometry cannot be trusted", "re-export the series")
    enhanced = [(p, ds) for p, ds in items if is_enhanced(ds) and has_plane_positions(ds)]
    if enhanced:
        if len(items) != 1:
            raise InputError(f"series {uid} has {len(enhanced)} enhanced (multi-frame) file(s) among {len(items)} "
                             "files; one enhanced file per series is supported",
                             "pass one file, or convert the series to single-frame files (emf2sf) first")
        return read_enhanced(enhanced[0][0], _metadata(uid, enhanced[0][1], [enhanced[0][0]], []))
    placed = [(p, ds) for p, ds in items if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if not placed:
        return _read_unplaced(uid, items)
    if len(placed) != len(items):
        raise InputError(f"series {uid}: {len(items) - len(placed)} of {len(items)} images lack "
                         "ImagePositionPatient/ImageOrientationPatient", "the series is incomplete or mixed")
    hdr = _placed_headers(uid, placed, n_duplicate_files)
    sk = hdr.regular_step()
    n = hdr.shape_kji[0]

    # --- pixels
    array: np.ndarray | None = None
    first_full: Dataset | None = None
    for k, p in enumerate(hdr.files):
        values, ds = _pixels(p)
        if array is None:
            first_full = ds
            array = np.empty((n,) + values.shape, dtype=np.float32)  # filled in place: one copy in memory
        if values.shape[:2] != (int(ds.Rows), int(ds.Columns)) or values.shape != array.shape[1:]:
            raise InputError(f"{p}: pixel data shape {values.shape} does not match Rows x Columns "
                             "or the other slices")
        array[k] = values
    assert array is not None
    direction = np.column_stack([hdr.row_dir, hdr.col_dir, hdr.normal])
    sops = [str(ds.get("SOPInstanceUID", "")) for ds in hdr.headers]
    md = _metadata(uid, first_full if first_full is not None else hdr.headers[0], hdr.files, sops)
    if n_duplicate_files:
        md["duplicate_files_skipped"] = n_duplicate_files
    si, sj = hdr.spacing_ij
    return Volume(array, spacing=(si, sj, sk), origin=tuple(hdr.positions[0]), direction=direction,
                  modality=md["Modality"] or None, metadata=md)


def read_dicom_file_series(path: str | os.PathLike) -> Volume:
    """Read the series that the single file ``path`` belongs to (from its folder), or the file alone.

    The file's folder is scanned for the file's SeriesInstanceUID (other series and files are ignored, including
    unparseable files, counted in ``metadata["skipped_unreadable_files"]``).
    """
    p = Path(path)
    try:
        ds = _read_header(p)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"corrupt or unreadable DICOM file {p}: {_describe(exc)}") from None
    if ds is None:
        raise InputError(f"not a DICOM file: {p}")
    if not _is_image(ds):
        raise InputError(f"{p} is a DICOM {ds.get('Modality', '')} object, not an image",
                         "pass an image file or the image series folder")
    uid = str(ds.get("SeriesInstanceUID", ""))
    scan = _scan(p.parent)
    items = scan.series.get(uid, [])
    mine = [(q, d) for q, d in items if q.resolve() == p.resolve()]
    items = mine + [(q, d) for q, d in items if q.resolve() != p.resolve()] if mine else [(p, ds)]
    # Files whose header cannot be parsed cannot be attributed to this series; a missing interior slice is still
    # caught by the spacing checks, so they are skipped here (reading the folder itself stays strict).
    volume = _read_from_scan(_Scan({uid: items}, []), p.parent, uid)
    if scan.corrupt:
        volume.metadata["skipped_unreadable_files"] = len(scan.corrupt)
    return volume


__all__ = ["SeriesInfo", "SeriesHeaders", "list_series", "read_dicom_series", "read_dicom_file_series",
           "read_series_headers", "NON_IMAGE_MODALITIES"]
