"""RTSTRUCT export in seven series geometries, checked by independent validators and rasterisers.

For every geometry: dciodvfy -new (no Error/Warning), dcentvfy against the CT (nothing), drtdump (no W:/E:),
plastimatch --xor-contours Dice >= 0.999 per ROI, our reader Dice, contour volume (polygon areas x slice step,
holes found by matplotlib nesting) within 0.5 % of the voxel volume, contour geometry (points on the slice named by
ContourImageSequence, >= 3 points, no self-intersection), DS values <= 16 characters, and the SEG round trip.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import (GEOMETRIES,  # noqa: E402
                            dcentvfy_problems, dciodvfy_problems, dice, drtdump_problems, make_ct,
                            make_structures, need_plastimatch, plastimatch_masks)

from OncoSegLib.errors import InputError  # noqa: E402
from OncoSegLib.export.contours import has_self_intersection  # noqa: E402
from OncoSegLib.export.roi import RoiSpec  # noqa: E402
from OncoSegLib.export.rtstruct import read_rtstruct, read_rtstruct_masks, write_rtstruct  # noqa: E402
from OncoSegLib.export.seg import read_seg, write_seg  # noqa: E402

NAMES = ["sphere", "ring", "thin", "dot"]


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def case(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    vol = make_ct(tmp, request.param)
    labels = make_structures(vol.shape_kji)
    rt = tmp / "rt.dcm"
    write_rtstruct(labels, tmp / "ct", rt, names=NAMES, types=["ORGAN", "GTV", "AVOID", "MARKER"])
    return {"tmp": tmp, "vol": vol, "labels": labels, "rt": rt, "ct_dir": tmp / "ct"}


def _plane_coords(ds: pydicom.Dataset, vol) -> dict:
    """Per-slice plane data from the CT files themselves (independent of our reader)."""
    info = {}
    for f in vol.metadata["files"]:
        h = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.array([float(x) for x in h.ImageOrientationPatient])
        info[str(h.SOPInstanceUID)] = (np.array([float(x) for x in h.ImagePositionPatient]), iop[:3], iop[3:])
    return info


def test_validators_clean(case) -> None:
    problems = []
    problems += dciodvfy_problems(case["rt"])
    problems += dcentvfy_problems(case["vol"].metadata["files"], case["rt"])
    problems += drtdump_problems(case["rt"])
    assert problems == []


@need_plastimatch
def test_plastimatch_dice(case) -> None:
    masks = plastimatch_masks(case["rt"], case["ct_dir"], case["tmp"] / "pm", case["vol"], NAMES)
    for n, name in enumerate(NAMES, start=1):
        d = dice(masks[name], case["labels"] == n)
        assert d >= 0.999, (name, d)


def test_our_reader_round_trip(case) -> None:
    labels, rois = read_rtstruct(case["rt"], case["ct_dir"])
    np.testing.assert_array_equal(labels, case["labels"])
    assert [r.name for r in rois] == NAMES
    assert [r.interpreted_type for r in rois] == ["ORGAN", "GTV", "AVOIDANCE", "MARKER"]
    masks = read_rtstruct_masks(case["rt"], case["vol"])
    for n, (spec, m) in enumerate(masks, start=1):
        assert dice(m, case["labels"] == n) == 1.0


def test_file_content_and_geometry(case) -> None:
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        ds = pydicom.dcmread(case["rt"])
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
        ct0 = pydicom.dcmread(case["vol"].metadata["files"][0], stop_before_pixels=True)
        for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID", "StudyID"):
            assert str(ds[kw].value) == str(ct0[kw].value), kw
        rs = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert rs.SeriesInstanceUID == ct0.SeriesInstanceUID
        planes = _plane_coords(ds, case["vol"])
        assert {str(x.ReferencedSOPInstanceUID) for x in rs.ContourImageSequence} == set(planes)
        vox_ml = float(np.prod(case["vol"].spacing))
        step = case["vol"].spacing[2]
        for n, rc in enumerate(ds.ROIContourSequence, start=1):
            per_slice: dict[str, list[np.ndarray]] = {}
            for item in rc.ContourSequence:
                raw = item["ContourData"].value
                vals = [float(v) for v in raw]
                assert all(len(str(v)) <= 16 for v in raw)
                pts = np.array(vals).reshape(-1, 3)
                assert len(pts) >= 3 and int(item.NumberOfContourPoints) == len(pts)
                uid = str(item.ContourImageSequence[0].ReferencedSOPInstanceUID)
                ipp, row, col = planes[uid]
                normal = np.cross(row, col)
                assert np.abs((pts - ipp) @ normal).max() < 1e-3  # on the plane of the slice it references
                xy = np.column_stack([(pts - ipp) @ row, (pts - ipp) @ col])  # mm in the slice plane
                assert not has_self_intersection(np.round(xy, 4))
                per_slice.setdefault(uid, []).append(xy)
            # contour volume: sum of +-|area| (sign by nesting depth, via matplotlib) x slice step
            area = 0.0
            for polys in per_slice.values():
                for a, p in enumerate(polys):
                    x, y = p[:, 0], p[:, 1]
                    absarea = abs(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))
                    mid = (p[0] + p[1]) / 2.0
                    depth = sum(MplPath(q).contains_point(mid) for b, q in enumerate(polys) if b != a)
                    area += absarea if depth % 2 == 0 else -absarea
            voxel_volume = float((case["labels"] == n).sum()) * vox_ml
            assert abs(area * step - voxel_volume) <= 0.005 * voxel_volume, (n, area * step, voxel_volume)
    finally:
        pydicom.config.settings.reading_validation_mode = pydicom.config.WARN


def test_seg_round_trip_and_validators(case) -> None:
    seg_path = case["tmp"] / "seg.dcm"
    write_seg(case["labels"], case["ct_dir"], seg_path, names=["liver", "GTV ring", "thin", "dot"])
    labels, rois = read_seg(seg_path, case["ct_dir"])
    for n in range(1, 5):
        assert dice(labels == n, case["labels"] == n) == 1.0
    assert [r.name for r in rois] == ["liver", "GTV ring", "thin", "dot"]
    assert [p for p in dciodvfy_problems(seg_path) if p.startswith("Error")] == []
    assert dcentvfy_problems(case["vol"].metadata["files"], seg_path) == []
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    liver = ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (liver.CodeValue, liver.CodingSchemeDesignator) == ("10200004", "SCT")  # SNOMED CT "Liver"
    tumour = ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert tumour.CodeValue == "108369006"  # SNOMED CT "Neoplasm"


# ------------------------------------------------------------------------------- single-geometry behaviours
@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oblique_extra")
    vol = make_ct(tmp, "oblique")
    return tmp, vol, make_structures(vol.shape_kji)


@need_plastimatch
def test_keyhole_mode(oblique) -> None:
    tmp, vol, labels = oblique
    rt = tmp / "keyhole.dcm"
    write_rtstruct(labels, vol, rt, names=NAMES, keyhole=True)
    np.testing.assert_array_equal(read_rtstruct(rt, tmp / "ct")[0], labels)
    masks = plastimatch_masks(rt, tmp / "ct", tmp / "pm_keyhole", vol, NAMES)
    for n, name in enumerate(NAMES, start=1):
        assert dice(masks[name], labels == n) >= 0.999
    # the ring slice has 1 outer contour + island (hole joined by a cut), + the separate island: 3 contours
    ds = pydicom.dcmread(rt)
    ring_items = ds.ROIContourSequence[1].ContourSequence
    assert len(ring_items) == 12 * 3
    assert [p for p in dciodvfy_problems(rt) if p.startswith("Error")] == []


def test_long_name_warns_and_roi_specs(oblique) -> None:
    tmp, vol, labels = oblique
    rt = tmp / "named.dcm"
    rois = [RoiSpec(1, "Left_Parotid_Gland_Superficial", (10, 20, 30), "OAR"), RoiSpec(2, "PTV_70", None, None)]
    with pytest.warns(UserWarning, match="16"):
        write_rtstruct(labels, tmp / "ct", rt, rois=rois)
    ds = pydicom.dcmread(rt)
    assert [str(r.ROIName) for r in ds.StructureSetROISequence] == ["Left_Parotid_Gland_Superficial", "PTV_70"]
    assert [int(c) for c in ds.ROIContourSequence[0].ROIDisplayColor] == [10, 20, 30]
    assert [str(o.RTROIInterpretedType) for o in ds.RTROIObservationsSequence] == ["OAR", "PTV"]
    got = read_rtstruct(rt, tmp / "ct")[0]
    np.testing.assert_array_equal(got == 1, labels == 1)
    np.testing.assert_array_equal(got == 2, labels == 2)
    assert not np.any(got > 2)


def test_refuses_bad_input(oblique, tmp_path) -> None:
    tmp, vol, labels = oblique
    out = tmp_path / "rt.dcm"
    with pytest.raises(InputError, match="does not match the series"):
        write_rtstruct(labels[:, :, :-1], tmp / "ct", out)
    with pytest.raises(InputError, match="empty"):
        write_rtstruct(np.zeros_like(labels), tmp / "ct", out)
    with pytest.raises(InputError, match="RT ROI type"):
        write_rtstruct(labels, tmp / "ct", out, types=["NOT_A_TYPE"])
    out.write_bytes(b"keep me")
    with pytest.raises(InputError, match="exists"):
        write_rtstruct(labels, tmp / "ct", out, overwrite=False)
    assert out.read_bytes() == b"keep me"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_seg_mapped_by_geometry_when_instances_differ(tmp_path) -> None:
    """A SEG made on another copy of the series (same grid and frame of reference, other SOP UIDs, only a few
    slices, feet-first written against the normal) is placed through its affine."""
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    src = example_volume("feet_first", (20, 48, 48))
    write_dicom_series(src, tmp_path / "a", reverse_order=True)
    copy = example_volume("feet_first", (20, 48, 48))
    write_dicom_series(copy, tmp_path / "b", frame_of_reference_uid=src.metadata["FrameOfReferenceUID"],
                       study_uid=src.metadata["StudyInstanceUID"])
    vol_a = read_dicom_series(tmp_path / "a")
    labels = np.zeros(vol_a.shape_kji, np.uint8)
    labels[6:9, 10:20, 5:30] = 1
    labels[7, 30:33, 30:40] = 2
    write_seg(labels, tmp_path / "a", tmp_path / "seg.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, _ = read_seg(tmp_path / "seg.dcm", tmp_path / "b")
    np.testing.assert_array_equal(got, labels)


def test_overlapping_masks_stack(oblique) -> None:
    """An (N, K, J, I) stack keeps overlapping structures (a body outline around an organ) whole."""
    tmp, vol, labels = oblique
    body = np.zeros(vol.shape_kji, bool)
    body[2:18, 3:46, 2:46] = True
    masks = np.stack([body, labels == 1, labels == 2])
    rt = tmp / "stack.dcm"
    write_rtstruct(masks, tmp / "ct", rt, names=["BODY", "sphere", "ring"])
    back = read_rtstruct_masks(rt, tmp / "ct")
    assert [s.interpreted_type for s, _ in back] == ["EXTERNAL", "ORGAN", "ORGAN"]
    for n, (_, m) in enumerate(back):
        np.testing.assert_array_equal(m, masks[n])
    seg_path = tmp / "stack_seg.dcm"
    write_seg(masks, tmp / "ct", seg_path, names=["BODY", "sphere", "ring"])
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    assert [str(s.SegmentLabel) for s in ds.SegmentSequence] == ["BODY", "sphere", "ring"]


def test_contour_over_64k_stays_valid(tmp_path) -> None:
    """One contour with > 64 KiB of ContourData: Implicit VR keeps it DS (explicit VR would re-type it UN)."""
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    write_dicom_series(example_volume("oblique", (2, 720, 720)), tmp_path / "ct")
    vol = read_dicom_series(tmp_path / "ct")
    jj, ii = np.mgrid[:720, :720]
    diamond = np.abs(jj - 360) + np.abs(ii - 360) < 340  # staircase edges: ~2700 corners
    labels = np.zeros(vol.shape_kji, np.uint8)
    labels[1] = diamond
    rt = tmp_path / "big.dcm"
    write_rtstruct(labels, tmp_path / "ct", rt, names=["diamond"])
    pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
    try:
        item = pydicom.dcmread(rt).ROIContourSequence[0].ContourSequence[0]
        assert item.get_item(0x30060050).length > 65536
        assert item["ContourData"].VR == "DS"
        assert len(item["ContourData"].value) == 3 * int(item.NumberOfContourPoints)
    finally:
        pydicom.config.settings.reading_validation_mode = pydicom.config.WARN
    np.testing.assert_array_equal(read_rtstruct(rt, tmp_path / "ct")[0], labels)
    assert dciodvfy_problems(rt) == []
    assert drtdump_problems(rt) == []


# ------------------------------------------------------------------------------- review fixes
def test_non_ascii_names_kept_exactly(tmp_path) -> None:
    """Names outside the series' character set (ISO_IR 100 here) used to become '??'. Now UTF-8 is declared when
    the copied patient/study values are ASCII (so they stay byte-identical: dcentvfy compares bytes), the series'
    own set is kept when the names fit it, and otherwise the writer stops with a one-line error."""
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    v = example_volume("prone", (4, 16, 16))
    write_dicom_series(v, tmp_path / "ct")  # ASCII patient name, SpecificCharacterSet ISO_IR 100
    lab = np.zeros(v.shape_kji, np.uint8)
    lab[1:3, 2:6, 2:6] = 1
    lab[2, 8:12, 8:12] = 2
    names = ["Läsion", "肝臓"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom's "Failed to encode value" warning must not happen
        write_rtstruct(lab, tmp_path / "ct", tmp_path / "rt.dcm", names=names)
        write_seg(lab, tmp_path / "ct", tmp_path / "seg.dcm", names=names)
    for f, seq, key in ((tmp_path / "rt.dcm", "StructureSetROISequence", "ROIName"),
                        (tmp_path / "seg.dcm", "SegmentSequence", "SegmentLabel")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert [str(x[key].value) for x in ds[seq].value] == names
        assert [p for p in dciodvfy_problems(f) if p.startswith("Error")] == []
        assert dcentvfy_problems(v.metadata["files"], f) == []
    assert [r.name for r in read_rtstruct(tmp_path / "rt.dcm", tmp_path / "ct")[1]] == names

    # a Latin-1 patient name: Latin-1 ROI names keep ISO_IR 100, a CJK name is refused (no silent '??')
    v2 = example_volume("prone", (4, 16, 16))
    write_dicom_series(v2, tmp_path / "ct2", patient_name="Müller^Jürgen")
    write_rtstruct(lab, tmp_path / "ct2", tmp_path / "rt2.dcm", names=["Läsion", "GTV"])
    ds = pydicom.dcmread(tmp_path / "rt2.dcm")
    assert ds.SpecificCharacterSet == "ISO_IR 100" and str(ds.PatientName) == "Müller^Jürgen"
    assert dcentvfy_problems(v2.metadata["files"], tmp_path / "rt2.dcm") == []
    for writer in (write_rtstruct, write_seg):
        with pytest.raises(InputError, match="character set"):
            writer(lab, tmp_path / "ct2", tmp_path / "rt3.dcm", names=names)
    assert not (tmp_path / "rt3.dcm").exists()


def test_huge_and_float_label_values(oblique, tmp_path) -> None:
    """Label values beyond 32 bits used to allocate a lookup table of that size in the SEG writer."""
    tmp, vol, labels = oblique
    big = labels.astype(np.int64)
    big[labels == 2] = 2**40  # ascending order kept: 1 < 2**40 < 2**41 < 2**62
    big[labels == 3] = 2**41
    big[labels == 4] = 2**62
    rt, seg = tmp_path / "rt.dcm", tmp_path / "seg.dcm"
    write_rtstruct(big, tmp / "ct", rt, names=NAMES)
    write_seg(big, tmp / "ct", seg, names=NAMES)
    got_rt, _ = read_rtstruct(rt, tmp / "ct")
    got_seg, _ = read_seg(seg, tmp / "ct")
    for n in range(1, 5):  # ROI/segment n = n-th label in ascending order
        assert dice(got_rt == n, labels == n) == 1.0
        assert dice(got_seg == n, labels == n) == 1.0
    as_float = labels.astype(np.float32)
    write_seg(as_float, tmp / "ct", tmp_path / "f.dcm", names=NAMES)  # whole-number floats are labels
    np.testing.assert_array_equal(read_seg(tmp_path / "f.dcm", tmp / "ct")[0], labels)
    as_float[0, 0, 0] = np.nan
    for writer in (write_rtstruct, write_seg):
        with pytest.raises(InputError, match="NaN"):
            writer(as_float, tmp / "ct", tmp_path / "x.dcm")
        with pytest.raises(InputError, match="non-integer"):
            writer(labels * 0.5, tmp / "ct", tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_uneven_series_contours_on_each_slice_but_no_volume_grid(tmp_path) -> None:
    """A series with a missing slice: contours still sit on each slice's own plane (exact), while anything that
    needs a regular grid (a NIfTI label map, ``ReferenceSeries.volume``) refuses instead of using a mean step."""
    from OncoSegLib.export.reference import load_reference
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    v = example_volume("oblique", (8, 24, 24))
    write_dicom_series(v, tmp_path / "ct")
    Path(v.metadata["files"][5]).unlink()
    ref = load_reference(tmp_path / "ct")
    lab = np.zeros(ref.shape_kji, np.uint8)
    lab[1:6, 5:15, 6:18] = 1
    write_rtstruct(lab, ref, tmp_path / "rt.dcm", names=["box"])
    np.testing.assert_array_equal(read_rtstruct(tmp_path / "rt.dcm", tmp_path / "ct")[0], lab)
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    planes = {}
    for f in ref.files:  # plane of every remaining file, read independently
        h = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.array([float(x) for x in h.ImageOrientationPatient])
        planes[str(h.SOPInstanceUID)] = (np.array([float(x) for x in h.ImagePositionPatient]),
                                         np.cross(iop[:3], iop[3:]))
    for item in ds.ROIContourSequence[0].ContourSequence:
        ipp, normal = planes[str(item.ContourImageSequence[0].ReferencedSOPInstanceUID)]
        pts = np.array([float(x) for x in item.ContourData]).reshape(-1, 3)
        assert np.abs((pts - ipp) @ normal).max() < 1e-3
    with pytest.raises(InputError, match="missing 1 slice"):
        ref.volume()


def test_volume_whose_k_runs_against_the_normal(tmp_path) -> None:
    """A Volume written with k = -(row x column) (left-handed grid) is a valid reference in its own k order."""
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    v = example_volume("reversed_k", (6, 20, 20))
    write_dicom_series(v, tmp_path / "ct")
    lab = np.zeros(v.shape_kji, np.uint8)
    lab[1:3, 4:9, 5:12] = 1  # near k = 0 of the volume = the last slice along the normal
    write_rtstruct(lab, v, tmp_path / "rt.dcm")
    back = read_rtstruct(tmp_path / "rt.dcm", v)[0]
    np.testing.assert_array_equal(back, lab)
    # read on the folder (k ascending along the normal) the slices come back in the other order
    np.testing.assert_array_equal(read_rtstruct(tmp_path / "rt.dcm", tmp_path / "ct")[0], lab[::-1])


def test_series_copied_twice_is_a_valid_reference(tmp_path) -> None:
    import shutil

    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    v = example_volume("head_first", (4, 16, 16))
    write_dicom_series(v, tmp_path / "ct" / "a")
    shutil.copytree(tmp_path / "ct" / "a", tmp_path / "ct" / "b")
    lab = np.zeros(v.shape_kji, np.uint8)
    lab[1:3, 3:9, 3:9] = 1
    write_rtstruct(lab, tmp_path / "ct", tmp_path / "rt.dcm")  # used to fail: "slices at the same position"
    np.testing.assert_array_equal(read_rtstruct(tmp_path / "rt.dcm", tmp_path / "ct")[0], lab)
