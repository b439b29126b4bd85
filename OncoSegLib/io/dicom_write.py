"""Write a :class:`~OncoSegLib.io.volume.Volume` as a single-frame DICOM image series (CT or MR) with pydicom.

Used by tests, the demo and the export tests to create CT series in any geometry. The files are complete
(all Type 1/2 attributes of the CT Image / MR Image IODs) and ``dciodvfy``-clean.

Geometry (frames as in :mod:`OncoSegLib.io.volume`): slice ``k`` is written with
ImagePositionPatient = LPS of voxel (0, 0, k); ImageOrientationPatient = (i axis, j axis) in LPS;
PixelSpacing = [row spacing sj, column spacing si]; SliceThickness = sk. Pixel data of slice ``k`` is
``array[k]`` (rows = j, columns = i). The k axis need not equal i x j (feet-first, left-handed grids): a DICOM
reader recovers the volume from the positions alone.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from OncoSegLib import __version__
from OncoSegLib.errors import InputError
from OncoSegLib.io.atomic import atomic_path
from OncoSegLib.io.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
_DEFAULT_RESCALE = {"CT": (1.0, -1024.0), "MR": (1.0, 0.0)}


def ds_str(value: float) -> str:
    """Format a number as a DICOM Decimal String of at most 16 characters (no float32 noise beyond that)."""
    v = float(value)
    if v == 0.0:
        return "0"
    return format_number_as_ds(v)


def guess_patient_position(direction: np.ndarray) -> str:
    """Guess PatientPosition (HFS/FFS/HFP/FFP) from the i and j axes (LPS columns); ``HFS`` when not axial-like.

    Conventional axial images show the patient's right on the image left: head-first supine has i -> L, j -> P;
    feet-first supine i -> R, j -> P; head-first prone i -> R, j -> A; feet-first prone i -> L, j -> A.
    """
    d = np.asarray(direction, dtype=float)
    row, col = d[:, 0], d[:, 1]
    if abs(row[0]) < 0.7 or abs(col[1]) < 0.7:
        return "HFS"
    supine = col[1] > 0
    if supine:
        return "HFS" if row[0] > 0 else "FFS"
    return "HFP" if row[0] < 0 else "FFP"


def _stored_values(array: np.ndarray, slope: float, intercept: float) -> tuple[np.ndarray, int, int]:
    """Map real values to stored integers; return (pixels, BitsStored, PixelRepresentation)."""
    a = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("the volume holds NaN or infinite values; DICOM images cannot store them",
                         "replace them (e.g. numpy.nan_to_num) before writing")
    stored = np.rint((a - intercept) / slope)
    lo, hi = (float(stored.min()), float(stored.max())) if stored.size else (0.0, 0.0)
    if lo >= 0 and hi <= 4095:
        return stored.astype(np.uint16), 12, 0
    if lo >= 0 and hi <= 65535:
        return stored.astype(np.uint16), 16, 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype(np.int16), 16, 1
    raise InputError(f"values {a.min():g}..{a.max():g} do not fit 16-bit DICOM pixels with rescale slope {slope:g}",
                     "pass a larger rescale slope, e.g. rescale=(10, 0)")


def write_dicom_series(
    volume: Volume,
    out_dir: str | os.PathLike,
    modality: str = "CT",
    reverse_order: bool = False,
    patient_name: str = "OncoSeg^Phantom",
    patient_id: str = "ONCOSEG-PHANTOM",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "OncoSeg synthetic series",
    rescale: tuple[float, float] | None = None,
    patient_position: str | None = None,
    series_number: int = 1,
    file_prefix: str | None = None,
    body_part: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice into ``out_dir`` and return the paths in **k order**.

    Args:
        volume: grey (K, J, I) volume; values are real units (HU for CT) and are stored as
            ``round((value - intercept) / slope)`` in 12- or 16-bit pixels.
        out_dir: folder to create/fill (each file is written atomically).
        modality: "CT" (CT Image Storage) or "MR" (MR Image Storage).
        reverse_order: write files and InstanceNumbers against the k axis (instance 1 = last k slice).
        patient_name, patient_id, series_description: identifiers written as given (synthetic by default).
        study_uid, series_uid, frame_of_reference_uid: UIDs to use; new ones are generated when None.
        rescale: (RescaleSlope, RescaleIntercept); default (1, -1024) for CT. MR images carry no rescale
            attributes, so MR needs (1, 0) and integer values.
        patient_position: PatientPosition; guessed from the direction (:func:`guess_patient_position`) when None.
        series_number: SeriesNumber.
        file_prefix: file name prefix (default: the modality); files are ``<prefix><instance:04d>.dcm``.
        body_part: BodyPartExamined (e.g. "CHEST"); when None, Laterality is written empty ("unknown"), which
            dciodvfy reports as a warning only.
        overwrite: replace files of the same names in ``out_dir`` and delete stale ``<prefix>NNNN.dcm`` files of
            an earlier, longer series; without it an existing file of the same name raises InputError.

    Side effect: ``volume.metadata`` is updated with the ``SeriesInstanceUID``, ``StudyInstanceUID``,
    ``FrameOfReferenceUID``, ``Modality``, ``sop_instance_uids`` (k order) and ``files`` (k order, str) written.
    """
    modality = modality.upper()
    if modality not in _SOP_CLASS:
        raise InputError(f"cannot write DICOM modality {modality!r}", "use 'CT' or 'MR'")
    if volume.channels != 1:
        raise InputError("cannot write a multi-channel (RGB) volume as a CT/MR series", "convert it to grey first")
    slope, intercept = rescale if rescale is not None else _DEFAULT_RESCALE[modality]
    if modality == "MR" and (float(slope), float(intercept)) != (1.0, 0.0):
        raise InputError("MR Image Storage has no rescale attributes", "use rescale=(1, 0) for MR")
    if slope == 0:
        raise InputError("rescale slope must not be 0")
    pixels, bits_stored, pixel_rep = _stored_values(volume.array, float(slope), float(intercept))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    position = patient_position or guess_patient_position(volume.direction)
    prefix = file_prefix if file_prefix is not None else modality
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    n_k = volume.shape_kji[0]
    rows, cols = volume.shape_kji[1], volume.shape_kji[2]
    d = volume.direction
    iop = [ds_str(x) for x in (*d[:, 0], *d[:, 1])]
    pixel_spacing = [ds_str(volume.spacing[1]), ds_str(volume.spacing[0])]
    positions = volume.ijk_to_lps_points(np.array([[0.0, 0.0, k] for k in range(n_k)]))
    normal = np.cross(d[:, 0], d[:, 1])

    existing = sorted(p for p in out.glob(f"{prefix}[0-9][0-9][0-9][0-9].dcm") if p.is_file())
    if existing and not overwrite:
        raise InputError(f"{out} already holds {len(existing)} file(s) named {prefix}NNNN.dcm",
                         "write to an empty folder, pass another file_prefix, or overwrite=True")
    if overwrite:
        for stale in existing:
            if int(stale.stem[len(prefix):]) > n_k:
                stale.unlink()

    sop_uids = [generate_uid() for _ in range(n_k)]
    paths: list[Path] = [Path()] * n_k
    for k in range(n_k):
        instance = (n_k - k) if reverse_order else (k + 1)
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID = _SOP_CLASS[modality]
        ds.SOPInstanceUID = sop_uids[k]
        ds.StudyDate = date
        ds.SeriesDate = date
        ds.ContentDate = date
        ds.StudyTime = time
        ds.SeriesTime = time
        ds.ContentTime = time
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer = "OncoSeg"
        ds.ReferringPhysicianName = ""
        ds.StationName = "ONCOSEG"
        ds.SeriesDescription = series_description
        ds.ManufacturerModelName = "OncoSeg synthetic"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        if body_part:
            ds.BodyPartExamined = body_part.upper()
        else:
            ds.Laterality = ""
        ds.SliceThickness = ds_str(volume.spacing[2])
        ds.SoftwareVersions = f"OncoSeg {__version__}"
        ds.PatientPosition = position
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = int(series_number)
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [ds_str(x) for x in positions[k]]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = ds_str(float(positions[k] @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = pixel_spacing
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = pixel_rep
        if modality == "CT":
            ds.KVP = "120"
            ds.ConvolutionKernel = "STANDARD"
            ds.RescaleIntercept = ds_str(intercept)
            ds.RescaleSlope = ds_str(slope)
            ds.RescaleType = "HU"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
        else:
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime = "500"
            ds.EchoTime = "15"
            ds.EchoTrainLength = 1
            ds.MagneticFieldStrength = "1.5"
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "ONCOSEG"
        ds.file_meta = meta

        path = out / f"{prefix}{instance:04d}.dcm"
        with atomic_path(path, suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths[k] = path

    volume.metadata.update(
        SeriesInstanceUID=series_uid,
        StudyInstanceUID=study_uid,
        FrameOfReferenceUID=frame_of_reference_uid,
        Modality=modality,
        sop_instance_uids=list(sop_uids),
        files=[str(p) for p in paths],
    )
    if volume.modality is None:
        volume.modality = modality
    return paths


def write_dicom_series_like(volume: Volume, out_dir: str | os.PathLike, reference: Volume,
                            **kwargs) -> list[Path]:
    """Write ``volume`` reusing the study and frame-of-reference UIDs found in ``reference.metadata`` (new series)."""
    kwargs.setdefault("study_uid", reference.metadata.get("StudyInstanceUID"))
    kwargs.setdefault("frame_of_reference_uid", reference.metadata.get("FrameOfReferenceUID"))
    return write_dicom_series(volume, out_dir, **kwargs)


__all__: Sequence[str] = ["write_dicom_series", "write_dicom_series_like", "ds_str", "guess_patient_position",
                          "CT_IMAGE_STORAGE", "MR_IMAGE_STORAGE"]
