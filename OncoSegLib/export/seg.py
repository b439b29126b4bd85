"""DICOM Segmentation (SEG) objects with highdicom: label map -> binary segments and back.

Each label becomes one segment with its name (SegmentLabel), display colour (CIELab) and coded terminology:
SNOMED CT concepts for common organs and tumours (matched on the name), a generic "Tissue" concept otherwise.
The SEG references the source series (highdicom writes the per-frame source references and the plane positions).

Reading maps the frames back onto the series grid by SOPInstanceUID (preferred) or, for SEGs that do not reference
the series' instances, through the affine of highdicom's volume (it may hold only a subset of slices, in reverse
order): see :func:`OncoSegLib.export.labelmap_io.place_on_grid`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from OncoSegLib import __version__
from OncoSegLib.errors import InputError, OncoSegError, output_write_error
from OncoSegLib.export.labelmap_io import place_on_grid
from OncoSegLib.export.reference import ReferenceSeries, load_reference
from OncoSegLib.export.roi import RoiSpec, character_set_for, prepare_labels
from OncoSegLib.export.rtstruct import copied_texts
from OncoSegLib.io.atomic import atomic_path
from OncoSegLib.io.volume import Volume

__all__ = ["write_seg", "read_seg", "segment_codes"]

log = logging.getLogger(__name__)

# name keyword (regex on the lower-case name) -> pydicom codes.SCT attribute of the segmented property type
_ORGAN_CODES: tuple[tuple[str, str], ...] = (
    (r"\bliver\b", "Liver"), (r"\blungs?\b", "Lung"), (r"\bkidneys?\b", "Kidney"), (r"\bspleen\b", "Spleen"),
    (r"\bheart\b", "Heart"), (r"\bbrain ?stem\b|\bbrainstem\b", "BrainStem"), (r"\bbrain\b", "Brain"),
    (r"\bbladder\b", "Bladder"), (r"\bprostate\b", "Prostate"), (r"\brectum\b", "Rectum"),
    (r"\bspinal ?cord\b|\bcord\b", "SpinalCord"), (r"\besophagus\b|\boesophagus\b", "Esophagus"),
    (r"\bpancreas\b", "Pancreas"), (r"\bstomach\b", "Stomach"), (r"\bbones?\b", "Bone"),
    (r"\bbreast\b", "Breast"), (r"\bparotid\b", "ParotidGland"), (r"\bmandible\b", "Mandible"),
    (r"\beyes?\b", "Eye"), (r"\boptic ?nerve\b", "OpticNerve"), (r"\bfemur\b|\bfemoral head\b", "Femur"),
    (r"\bsmall ?(intestine|bowel)\b", "SmallIntestine"), (r"\bcolon\b", "Colon"), (r"\btrachea\b", "Trachea"),
    (r"\baorta\b", "Aorta"), (r"\bgall ?bladder\b", "Gallbladder"), (r"\badrenal\b", "AdrenalGland"),
    (r"\bduodenum\b", "Duodenum"), (r"\bthyroid\b", "Thyroid"), (r"\blarynx\b", "Larynx"),
    (r"\bskin\b", "Skin"), (r"\bmuscles?\b", "Muscle"), (r"\bvertebra", "Vertebra"),
    (r"\b(body|external|outline)\b", "EntireBody"),
)
_TUMOUR = re.compile(r"\b(gtv|ctv|itv|ptv|tumou?r|lesion|neoplasm|cancer|metastas[ie]s|mass|nodule)")


def segment_codes(name: str):
    """(segmented property category, type) pydicom Codes for a structure name.

    Tumour-like names (GTV/CTV/PTV, tumour, lesion, ...) -> Morphologically Abnormal Structure / Neoplasm;
    known organs -> Anatomical Structure / the organ (SNOMED CT); otherwise Tissue / Tissue.
    """
    from pydicom.sr.codedict import codes

    n = name.lower().replace("_", " ")
    if _TUMOUR.search(n):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    for pattern, attr in _ORGAN_CODES:
        if re.search(pattern, n):
            return codes.SCT.AnatomicalStructure, getattr(codes.SCT, attr)
    return codes.SCT.Tissue, codes.SCT.Tissue


def write_seg(
    labels: np.ndarray,
    series: str | os.PathLike | Volume | ReferenceSeries,
    out_path: str | os.PathLike,
    rois: Sequence[RoiSpec] | None = None,
    names: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int] | str] | None = None,
    types: Sequence[str] | None = None,
    series_uid: str | None = None,
    algorithm_type: str = "SEMIAUTOMATIC",
    series_description: str = "OncoSeg segmentation",
    overwrite: bool = True,
) -> Path:
    """Write a (K, J, I) label map as a binary DICOM SEG referencing its image series (atomic write).

    Args:
        labels: (K, J, I) integer (or bool) array on the series grid, k in ``read_dicom_series`` order, or an
            (N, K, J, I) stack of (possibly overlapping) masks: segment n is mask n - 1.
        series: series folder, Volume read by ``read_dicom_series``, or :class:`ReferenceSeries`.
        out_path: the SEG file to write.
        rois, names, colors, types: as for :func:`OncoSegLib.export.rtstruct.write_rtstruct` (types are kept for
            interface symmetry; SEG codes come from the names).
        series_uid: SeriesInstanceUID to pick when the folder holds several series.
        algorithm_type: AUTOMATIC, SEMIAUTOMATIC or MANUAL.
        overwrite: False refuses to replace an existing file.

    Returns:
        The written path. Empty slices are omitted from the SEG (highdicom ``omit_empty_frames``).
    """
    import highdicom as hd

    out = Path(out_path)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists", "choose another name or pass --overwrite")
    ref = series if isinstance(series, ReferenceSeries) else load_reference(series, series_uid)
    lab, stack, specs = prepare_labels(labels, ref.shape_kji, rois, names, colors, types)
    if stack:  # (N, K, J, I) masks -> (K, J, I, segments), overlaps kept
        seg_array = np.stack([lab[s.label - 1] != 0 for s in specs], axis=-1)
    else:  # label values -> segment numbers 1..N (labels not in specs -> 0)
        seg_array = _segment_numbers(lab, specs)

    algo = hd.AlgorithmIdentificationSequence(name="OncoSeg", version=__version__, family=_codes().DCM.ArtificialIntelligence)
    descriptions = []
    for n, s in enumerate(specs, start=1):
        category, prop = segment_codes(s.name)
        kwargs = {"display_color": hd.color.CIELabColor.from_rgb(*s.color)}
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=s.name[:64], segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=algorithm_type,
            algorithm_identification=algo if algorithm_type != "MANUAL" else None, **kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=ref.headers,
            pixel_array=seg_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=901,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="OncoSeg",
            manufacturer_model_name="OncoSeg",
            software_versions=f"OncoSeg {__version__}",
            device_serial_number="0",
            series_description=series_description[:64],
            specific_character_set=character_set_for([series_description] + [s.name for s in specs],
                                                     ref.first.get("SpecificCharacterSet"),
                                                     copied_texts(ref.first)),
        )
    try:
        with atomic_path(out, suffix=".dcm") as tmp:
            seg.save_as(tmp)
    except OSError as exc:  # disk full / I/O error while writing: the temporary file is already removed
        if isinstance(exc, OncoSegError):
            raise
        raise output_write_error(out, exc) from None
    log.info("wrote SEG with %d segment(s)", len(specs))
    return out


def _segment_numbers(lab: np.ndarray, specs: Sequence[RoiSpec]) -> np.ndarray:
    """(K, J, I) label values -> segment numbers 1..N in ``specs`` order (0 elsewhere), uint8/uint16.

    A lookup table indexed by value when the labels span a small range (one pass, no large temporaries), else one
    comparison per segment: never a table sized by the largest label (labels such as 2**40 are allowed).
    """
    dtype = np.uint16 if len(specs) > 255 else np.uint8
    if lab.size == 0:
        return np.zeros(lab.shape, dtype)
    lo, hi = int(lab.min()), int(lab.max())
    if hi - lo < (1 << 20):
        lut = np.zeros(hi - lo + 1, dtype=dtype)
        for n, s in enumerate(specs, start=1):
            if lo <= s.label <= hi:
                lut[s.label - lo] = n
        return lut[lab - lo] if lo else lut[lab]
    out = np.zeros(lab.shape, dtype=dtype)
    for n, s in enumerate(specs, start=1):
        out[lab == s.label] = n
    return out


def _codes():
    from pydicom.sr.codedict import codes

    return codes


def read_seg(seg_path: str | os.PathLike, series: str | os.PathLike | Volume | ReferenceSeries,
             series_uid: str | None = None) -> tuple[np.ndarray, list[RoiSpec]]:
    """Read a DICOM SEG back onto its series' (K, J, I) grid.

    Returns:
        (labels, rois): segment n (SegmentNumber) gets label n; where binary segments overlap the higher number
        wins. Frames are placed by the SOPInstanceUIDs they derive from when those are slices of the series, else by
        the SEG's own geometry (exact permutation/flip/offset match required).
    """
    import highdicom as hd

    ref = series if isinstance(series, ReferenceSeries) else load_reference(series, series_uid)
    try:
        seg = hd.seg.segread(str(seg_path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read DICOM SEG {seg_path}: {type(exc).__name__}: {exc}",
                         "the file is damaged, truncated or not a DICOM SEG") from None
    _check_pixel_data_complete(seg, seg_path)
    try:
        return _read_seg_frames(seg, seg_path, ref)
    except (ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"cannot read DICOM SEG {seg_path}: {type(exc).__name__}: {exc}",
                         "the file is damaged or truncated") from None


def _check_pixel_data_complete(seg, seg_path: str | os.PathLike) -> None:
    """InputError when the (uncompressed) pixel data is shorter than Rows x Columns x frames needs (truncation)."""
    ts = getattr(getattr(seg, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in seg or ts is None or ts.is_compressed:
        return
    bits = int(seg.Rows) * int(seg.Columns) * int(seg.get("NumberOfFrames", 1) or 1) * int(seg.BitsAllocated)
    have = len(seg.PixelData)
    if have < (bits + 7) // 8:
        raise InputError(f"DICOM SEG {seg_path} is truncated: {have} bytes of pixel data, {(bits + 7) // 8} "
                         "needed", "copy the complete file again")


def _read_seg_frames(seg, seg_path: str | os.PathLike, ref: ReferenceSeries) -> tuple[np.ndarray, list[RoiSpec]]:
    import highdicom as hd

    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    rois = []
    for d in seg.SegmentSequence:
        color = None
        if "RecommendedDisplayCIELabValue" in d:
            try:
                lab_c = hd.color.CIELabColor.from_dicom_value([int(v) for v in d.RecommendedDisplayCIELabValue])
                color = tuple(int(c) for c in lab_c.to_rgb(clip=True))
            except Exception:  # noqa: BLE001 - colour is cosmetic
                color = None
        rois.append(RoiSpec(label=int(d.SegmentNumber), name=str(d.get("SegmentLabel", "")),
                            color=color))  # type: ignore[arg-type]
    dtype = np.uint8 if max(numbers, default=0) < 256 else np.uint16
    referenced = _referenced_sops(seg)
    sops = ref.sop_instance_uids
    if referenced and referenced <= set(sops):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=sops, segment_numbers=numbers, combine_segments=True,
                relabel=False, assert_missing_frames_are_empty=True, skip_overlap_checks=True, dtype=dtype)
        return np.asarray(arr, dtype=dtype), rois
    # fall back on geometry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = seg.get_volume(segment_numbers=numbers, combine_segments=True, relabel=False,
                             skip_overlap_checks=True, dtype=dtype)
    if vol is None:
        raise InputError(f"{seg_path} holds no frames that lie on a regular grid",
                         "it cannot be mapped onto the series")
    if str(seg.FrameOfReferenceUID) != str(ref.first.get("FrameOfReferenceUID", "")):
        raise InputError(f"{seg_path} is in another frame of reference than the series",
                         "pass the image series the segmentation was made on")
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return place_on_grid(arr, vol.affine, ref.volume(), require_full=False, what="segmentation"), rois


def _referenced_sops(seg) -> set[str]:
    out: set[str] = set()
    for study in seg.get("ReferencedSeriesSequence", []):
        for inst in study.get("ReferencedInstanceSequence", []):
            out.add(str(inst.ReferencedSOPInstanceUID))
    return out
