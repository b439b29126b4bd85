"""DICOM RT Structure Set writer and reader (pydicom), exact for any series geometry.

Writer: every label of a (K, J, I) label map becomes one ROI whose contours are traced on voxel *edges*
(:mod:`OncoSegLib.export.contours`): a planning system that fills the polygons gets back exactly the voxels, and the
contour volume equals the voxel volume. Points map from in-plane pixel coordinates (i, j) of slice k to LPS mm with
that slice's own ImagePositionPatient, ImageOrientationPatient and PixelSpacing (PixelSpacing = [row spacing, column
spacing]; i runs along the row direction), so oblique, feet-first, prone, non-square and anisotropic series are all
exact. Holes are separate CLOSED_PLANAR contours (XOR convention) unless ``keyhole=True``.

The file references the series (Study, Series and Frame of Reference UIDs; every contour names the SOPInstanceUID
of its slice), copies the Patient, General Study and Patient Study attributes of the series, holds every Type 1/2
attribute of the RT Structure Set IOD, writes Decimal Strings of <= 16 characters, and is saved with Implicit VR
Little Endian (pydicom re-types ContourData over 64 KiB to UN under explicit VR) atomically (temp file + rename).

Reader: rasterises CLOSED_PLANAR contours of each ROI onto the series (even-odd within a contour, XOR between the
contours of a slice), for round trips and to load existing structure sets.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from OncoSegLib import __version__
from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import InputError, OncoSegError, output_write_error
from OncoSegLib.export.contours import rasterize_slice, trace_slice
from OncoSegLib.export.reference import ReferenceSeries, load_reference
from OncoSegLib.export.roi import RoiSpec, character_set_for, prepare_labels
from OncoSegLib.io.atomic import atomic_path
from OncoSegLib.io.volume import Volume

__all__ = ["write_rtstruct", "read_rtstruct", "read_rtstruct_masks", "RoiSpec", "RT_STRUCTURE_SET_STORAGE"]

log = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# Referenced SOP Class of the study reference in RTReferencedStudySequence (Study Component Management, retired;
# still what planning systems write and expect there).
_STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
_CONTOUR_DATA = Tag(0x3006, 0x0050)

_PATIENT_ATTRS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames", "PatientComments", "EthnicGroup",
    "PatientSpeciesDescription", "PatientBreedDescription", "ResponsiblePerson", "ResponsibleOrganization",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
)
_STUDY_ATTRS = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription", "IssuerOfAccessionNumberSequence", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
    "ProcedureCodeSequence", "PatientAge", "PatientSize", "PatientWeight", "PatientSexNeutered",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription",
)
_TYPE2_EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")


def format_ds_values(values: np.ndarray) -> bytes:
    """Encode floats as one DICOM DS multi-value (backslash separated, even length), each value <= 16 characters.

    Values are rounded to 1e-5 mm (10 nm) and written in their shortest form (``-123.45678``).
    """
    v = np.round(np.asarray(values, dtype=np.float64).ravel(), 5) + 0.0  # + 0.0 turns -0.0 into 0.0
    if v.size and float(np.max(np.abs(v))) >= 1e9:
        from pydicom.valuerep import format_number_as_ds

        text = "\\".join(format_number_as_ds(float(x)) for x in v)
    else:
        text = "\\".join(map(repr, v.tolist()))
    data = text.encode("ascii")
    return data + b" " if len(data) % 2 else data


def _raw_ds(tag: Tag, data: bytes) -> RawDataElement:
    """A Decimal String element holding already-encoded bytes (written as they are; no per-value objects)."""
    return RawDataElement(tag, "DS", len(data), data, 0, True, True)


def _sop_common(ds: Dataset, ref: ReferenceSeries, sop_uid: str, now: _dt.datetime,
                texts: Sequence[str] = ()) -> None:
    charset = character_set_for(texts, ref.first.get("SpecificCharacterSet"), copied_texts(ref.first))
    if charset:
        ds.SpecificCharacterSet = charset
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid


def copied_texts(src: Dataset) -> list[str]:
    """Text values of the patient/study attributes an RTSTRUCT or SEG copies from ``src`` (character set check)."""
    out = []
    for kw in _PATIENT_ATTRS + _STUDY_ATTRS:
        if kw in src and src[kw].VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AS"):
            v = src[kw].value
            out.extend(str(x) for x in (v if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v]))
    return out


def _copy_patient_study(ds: Dataset, src: Dataset) -> None:
    for kw in _PATIENT_ATTRS + _STUDY_ATTRS:
        if kw in src:
            ds[kw] = src[kw]
    for kw in _TYPE2_EMPTY:
        if kw not in ds:
            setattr(ds, kw, "")


def _contour_item(points_lps: np.ndarray, number: int, sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    img = Dataset()
    img.ReferencedSOPClassUID = sop_class
    img.ReferencedSOPInstanceUID = sop_uid
    item.ContourImageSequence = DicomSequence([img])
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = int(points_lps.shape[0])
    item.ContourNumber = number
    item[_CONTOUR_DATA] = _raw_ds(_CONTOUR_DATA, format_ds_values(points_lps))
    item.set_original_encoding(True, True, "iso8859")
    return item


def write_rtstruct(
    labels: np.ndarray,
    series: str | os.PathLike | Volume | ReferenceSeries,
    out_path: str | os.PathLike,
    rois: Sequence[RoiSpec] | None = None,
    names: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int] | str] | None = None,
    types: Sequence[str] | None = None,
    keyhole: bool = False,
    series_uid: str | None = None,
    structure_set_label: str = "OncoSeg",
    series_description: str = "OncoSeg structures",
    algorithm: str = "SEMIAUTOMATIC",
    overwrite: bool = True,
    cancel: CancelToken | None = None,
) -> Path:
    """Write the labels of a (K, J, I) label map as a DICOM RT Structure Set referencing an image series.

    Args:
        labels: (K, J, I) integer (or bool) array on the series grid, k in the order of ``read_dicom_series``
            (ascending along the slice normal), j = row, i = column. Each non-zero value is one ROI.
            Or an (N, K, J, I) stack of masks for overlapping structures (e.g. a body outline around organs):
            ROI label n is mask n - 1.
        series: the referenced series: its folder, a Volume read by ``read_dicom_series`` (uses its files) or a
            :class:`ReferenceSeries`.
        out_path: the RTSTRUCT file to write (atomically).
        rois: explicit ROI descriptions (label, name, colour, RT ROI Interpreted Type); default one per label.
        names, colors, types: per-ROI overrides in ascending label order (colours as (R, G, B) or "#RRGGBB").
        keyhole: join holes to their outer contour with a zero-width cut instead of separate XOR contours.
        series_uid: SeriesInstanceUID to pick when the folder holds several series.
        structure_set_label: StructureSetLabel (<= 16 characters).
        series_description: SeriesDescription of the new RT series.
        algorithm: ROIGenerationAlgorithm (AUTOMATIC, SEMIAUTOMATIC or MANUAL).
        overwrite: False refuses to replace an existing ``out_path``.
        cancel: optional token checked between ROIs.

    Returns:
        The written path.

    Raises:
        InputError: label map shape differs from the series, empty label map, bad names/colours/types, or the
        output exists and ``overwrite`` is False.
    """
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists", "choose another name or pass --overwrite")
    ref = series if isinstance(series, ReferenceSeries) else load_reference(series, series_uid)
    lab, stack, specs = prepare_labels(labels, ref.shape_kji, rois, names, colors, types)
    if algorithm not in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"):
        raise InputError(f"unknown ROI generation algorithm {algorithm!r}", "use AUTOMATIC, SEMIAUTOMATIC or MANUAL")

    src = ref.first
    now = _dt.datetime.now()
    ds = Dataset()
    texts = [structure_set_label, series_description] + [t for r in specs for t in (r.name, r.description or "")]
    _sop_common(ds, ref, generate_uid(), now, texts)
    _copy_patient_study(ds, src)
    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 900
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.SeriesDescription = series_description[:64]
    ds.OperatorsName = ""
    # General Equipment
    ds.Manufacturer = "OncoSeg"
    ds.ManufacturerModelName = "OncoSeg"
    ds.SoftwareVersions = f"OncoSeg {__version__}"
    # Frame of Reference
    for_uid = str(src.get("FrameOfReferenceUID", "") or "")
    if not for_uid:
        raise InputError("the series has no FrameOfReferenceUID", "an RTSTRUCT needs a frame of reference")
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = src.get("PositionReferenceIndicator", "") or ""
    # Structure Set
    ds.InstanceNumber = 1
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetName = structure_set_label[:64]
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")
    sop_classes, sop_uids = ref.sop_class_uids, ref.sop_instance_uids
    images = []
    for cls, uid in zip(sop_classes, sop_uids):
        it = Dataset()
        it.ReferencedSOPClassUID = cls
        it.ReferencedSOPInstanceUID = uid
        images.append(it)
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = str(src.SeriesInstanceUID)
    rt_series.ContourImageSequence = DicomSequence(images)
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = _STUDY_COMPONENT_SOP_CLASS
    rt_study.ReferencedSOPInstanceUID = str(src.StudyInstanceUID)
    rt_study.RTReferencedSeriesSequence = DicomSequence([rt_series])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = for_uid
    for_item.RTReferencedStudySequence = DicomSequence([rt_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([for_item])

    ssroi, roic, obs = [], [], []
    for n, spec in enumerate(specs, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        it = Dataset()
        it.ROINumber = n
        it.ReferencedFrameOfReferenceUID = for_uid
        it.ROIName = spec.name
        if spec.description:
            it.ROIDescription = spec.description[:1024]
        it.ROIGenerationAlgorithm = algorithm
        ssroi.append(it)

        mask = (lab[spec.label - 1] != 0) if stack else (lab == spec.label)
        ks = np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]
        contours = []
        number = 1
        for k in ks.tolist():
            for c in trace_slice(mask[k], keyhole=keyhole):
                pts = ref.ij_to_lps(k, c.points)
                contours.append(_contour_item(pts, number, sop_classes[k], sop_uids[k]))
                number += 1
        del mask
        if not contours:
            msg = f"ROI {spec.name!r} (label {spec.label}) has no voxels; it is written without contours"
            warnings.warn(msg, UserWarning, stacklevel=2)
        rc = Dataset()
        rc.ROIDisplayColor = [int(c) for c in spec.color]  # type: ignore[union-attr]
        if contours:
            rc.ContourSequence = DicomSequence(contours)
        rc.ReferencedROINumber = n
        roic.append(rc)

        ob = Dataset()
        ob.ObservationNumber = n
        ob.ReferencedROINumber = n
        ob.RTROIInterpretedType = spec.interpreted_type or ""
        ob.ROIInterpreter = ""
        obs.append(ob)
    ds.StructureSetROISequence = DicomSequence(ssroi)
    ds.ROIContourSequence = DicomSequence(roic)
    ds.RTROIObservationsSequence = DicomSequence(obs)
    ds.ApprovalStatus = "UNAPPROVED"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ONCOSEG"
    ds.file_meta = meta
    ds.set_original_encoding(True, True, ds.get("SpecificCharacterSet", "iso8859"))
    try:
        with atomic_path(out, suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    except OSError as exc:  # disk full / I/O error while writing: the temporary file is already removed
        if isinstance(exc, OncoSegError):
            raise
        raise output_write_error(out, exc) from None
    log.info("wrote RTSTRUCT with %d ROI(s)", len(specs))
    return out


# ----------------------------------------------------------------------------------------------------- reader
def _contour_points(item: Dataset) -> np.ndarray:
    """(N, 3) LPS points of a contour item, parsing the raw DS bytes directly when possible (fast)."""
    elem = item.get_item(_CONTOUR_DATA)
    if elem is None:
        return np.zeros((0, 3))
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        text = value.decode("ascii", errors="replace").strip(" \x00")
        vals = np.array([float(x) for x in text.split("\\")] if text else [], dtype=float)
    else:
        vals = np.asarray([float(x) for x in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                             else [value])], dtype=float)
    if vals.size % 3:
        raise InputError("an RTSTRUCT contour has a number of coordinates that is not a multiple of 3",
                         "the file is damaged")
    if not np.all(np.isfinite(vals)):
        raise InputError("an RTSTRUCT contour has NaN or infinite coordinates", "the file is damaged")
    return vals.reshape(-1, 3)


def _check_complete(ds: Dataset, path: Path) -> None:
    """InputError when a Type 1 part of the structure set is missing or a contour's point count does not match its
    data: what a truncated file looks like (pydicom reads a file cut between elements without complaint)."""
    hint = "the file is incomplete or truncated; copy the complete file again"
    for keyword in ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence"):
        if keyword not in ds:
            raise InputError(f"{path} has no {keyword} (a required part of an RT Structure Set)", hint)
    for item in ds.StructureSetROISequence:
        if "ROINumber" not in item:
            raise InputError(f"{path}: an item of StructureSetROISequence has no ROINumber", hint)
    for item in ds.RTROIObservationsSequence:
        for keyword in ("ObservationNumber", "ReferencedROINumber", "RTROIInterpretedType"):  # Type 1, 1, 2
            if keyword not in item:
                raise InputError(f"{path}: an item of RTROIObservationsSequence has no {keyword}", hint)
    for rc in ds.ROIContourSequence:
        if "ReferencedROINumber" not in rc:
            raise InputError(f"{path}: an item of ROIContourSequence has no ReferencedROINumber", hint)
        for item in rc.get("ContourSequence", []):
            elem = item.get_item(_CONTOUR_DATA)
            if elem is None or "NumberOfContourPoints" not in item:
                raise InputError(f"{path}: a contour of ROI {rc.ReferencedROINumber} has no ContourData or "
                                 "NumberOfContourPoints", hint)
            value = elem.value
            n_values = (len(value.split(b"\\")) if value else 0) if isinstance(value, (bytes, bytearray)) else None
            if n_values is not None and n_values != 3 * int(item.NumberOfContourPoints):
                raise InputError(f"{path}: a contour of ROI {rc.ReferencedROINumber} holds {n_values} coordinates "
                                 f"for {int(item.NumberOfContourPoints)} points", hint)


def _outside_in_plane_mm(ij: np.ndarray, shape_ji: tuple[int, int], spacing_ij: tuple[float, float]) -> float:
    """How far (mm) contour points (i, j) in pixel units reach beyond the image's outer pixel edges (0 inside).

    The image spans i in [-0.5, I - 0.5] and j in [-0.5, J - 0.5] (pixel centres at integers); contours traced on
    the edges of border pixels lie exactly on that boundary, so 0.01 pixel of rounding is tolerated.
    """
    n_j, n_i = shape_ji
    lo = -0.5 - ij
    hi = ij - (np.array([n_i, n_j]) - 0.5)
    beyond = np.maximum(np.maximum(lo, hi), 0.0)
    beyond[beyond <= 0.01] = 0.0
    return float(np.max(beyond * np.asarray(spacing_ij, dtype=float)[None, :])) if len(ij) else 0.0


def _iter_roi_slices(rt_path: str | os.PathLike, ref: ReferenceSeries):
    """Yield (roi_number, name, color, type, {k: [polygons (N,2) in (i, j)]}) for every ROI of an RTSTRUCT."""
    path = Path(rt_path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if str(ds.get("Modality", "")) != "RTSTRUCT" and str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
        raise InputError(f"{path} is not an RT Structure Set", "pass an RTSTRUCT file")
    try:
        _check_complete(ds, path)  # also parses every sequence now (pydicom parses them lazily)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises OSError/ValueError/... for a damaged sequence
        raise InputError(f"cannot read {path}: {type(exc).__name__}: {exc}",
                         "the file is damaged or truncated; copy the complete file again") from None
    for_uid = str(ref.first.get("FrameOfReferenceUID", ""))
    names = {int(r.ROINumber): (str(r.get("ROIName", "")), str(r.get("ReferencedFrameOfReferenceUID", "")))
             for r in ds.get("StructureSetROISequence", [])}
    if for_uid and names and all(f and f != for_uid for _, f in names.values()):
        raise InputError(f"{path} refers to another frame of reference than the series",
                         "pass the image series the structure set was drawn on")
    types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "")
             for o in ds.get("RTROIObservationsSequence", [])}
    uid_to_k = {u: k for k, u in enumerate(ref.sop_instance_uids)}
    along = ref.positions @ ref.normal
    step = abs(ref.slice_step) if len(along) > 1 else 1.0
    shape_ji = ref.shape_kji[1:]
    skipped = 0
    for rc in ds.get("ROIContourSequence", []):
        num = int(rc.ReferencedROINumber)
        name, _ = names.get(num, (f"ROI_{num}", ""))
        color = tuple(int(c) for c in rc.get("ROIDisplayColor", [255, 0, 0]))
        per_k: dict[int, list[np.ndarray]] = {}
        n_outside, outside_mm = 0, 0.0
        for item in rc.get("ContourSequence", []):
            gtype = str(item.get("ContourGeometricType", "CLOSED_PLANAR"))
            if gtype not in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR"):
                skipped += 1
                continue
            pts = _contour_points(item)
            if len(pts) < 3:
                skipped += 1
                continue
            k = None
            imgs = item.get("ContourImageSequence", [])
            if imgs:
                k = uid_to_k.get(str(imgs[0].get("ReferencedSOPInstanceUID", "")))
            if k is None:  # no or foreign reference: the nearest slice plane
                k = int(np.argmin(np.abs(along - float(np.mean(pts @ ref.normal)))))
            ij, dist = ref.lps_to_ij(k, pts)
            if np.max(np.abs(dist)) > 0.5 * step:
                skipped += 1
                continue
            per_k.setdefault(k, []).append(ij)
            mm = _outside_in_plane_mm(ij, shape_ji, ref.spacing_ij)
            if mm > 0:
                n_outside, outside_mm = n_outside + 1, max(outside_mm, mm)
        if n_outside:
            warnings.warn(f"{n_outside} contour(s) of ROI {name!r} extend up to {outside_mm:.1f} mm outside the image "
                          "in-plane; the part outside the image is dropped", UserWarning, stacklevel=3)
        yield num, name, color, types.get(num, ""), per_k, shape_ji
    if skipped:
        log.warning("skipped %d contour(s) that are not closed planar polygons on a slice of the series", skipped)


def read_rtstruct_masks(rt_path: str | os.PathLike, series: str | os.PathLike | Volume | ReferenceSeries,
                        series_uid: str | None = None) -> list[tuple[RoiSpec, np.ndarray]]:
    """Rasterise every ROI of an RTSTRUCT onto the series: [(RoiSpec, bool mask (K, J, I))], ROI file order.

    Contours are placed on the slice their ContourImageSequence names (else the nearest slice plane); points are
    projected to (i, j) pixel coordinates of that slice; a pixel is inside when its centre is inside an odd number
    of the ROI's contours on that slice (XOR holes; keyhole contours work too).
    """
    ref = series if isinstance(series, ReferenceSeries) else load_reference(series, series_uid)
    out = []
    for n, (num, name, color, typ, per_k, shape_ji) in enumerate(_iter_roi_slices(rt_path, ref), start=1):
        mask = np.zeros(ref.shape_kji, dtype=bool)
        for k, polys in per_k.items():
            mask[k] = rasterize_slice(polys, shape_ji)
        out.append((RoiSpec(label=n, name=name, color=color, interpreted_type=typ), mask))  # type: ignore[arg-type]
    return out


def read_rtstruct(rt_path: str | os.PathLike, series: str | os.PathLike | Volume | ReferenceSeries,
                  series_uid: str | None = None) -> tuple[np.ndarray, list[RoiSpec]]:
    """Rasterise an RTSTRUCT onto its series as one label map.

    Returns:
        (labels (K, J, I) uint8/uint16 in ``read_dicom_series`` k order, ROI descriptions): ROI n (file order,
        from 1) gets label n. Where ROIs overlap the later one wins (a warning gives the voxel count); use
        :func:`read_rtstruct_masks` for overlapping structures.
    """
    ref = series if isinstance(series, ReferenceSeries) else load_reference(series, series_uid)
    rois: list[RoiSpec] = []
    labels: np.ndarray | None = None
    overlap = 0
    for n, (num, name, color, typ, per_k, shape_ji) in enumerate(_iter_roi_slices(rt_path, ref), start=1):
        if labels is None:
            labels = np.zeros(ref.shape_kji, dtype=np.uint8)
        if n > 255 and labels.dtype == np.uint8:
            labels = labels.astype(np.uint16)
        for k, polys in per_k.items():
            m = rasterize_slice(polys, shape_ji)
            overlap += int(np.count_nonzero(labels[k][m]))
            labels[k][m] = n
        rois.append(RoiSpec(label=n, name=name, color=color, interpreted_type=typ))  # type: ignore[arg-type]
    if labels is None:
        labels = np.zeros(ref.shape_kji, dtype=np.uint8)
    if overlap:
        warnings.warn(f"{overlap} voxel(s) belong to more than one ROI; the later ROI was kept in the label map "
                      "(read_rtstruct_masks keeps each ROI whole)", UserWarning, stacklevel=2)
    return labels, rois

