"""run_autoseg on a synthetic CT series with known organs and a deterministic text predictor (autoseg_support).

Oracles: the drawn phantom (truth masks known before any code under test runs), pydicom reads of the CT and RTSTRUCT
(UIDs, names, types, colours), the export reader's re-rasterisation (read_rtstruct_masks), nibabel for the NIfTI
label map, voxel count x voxel volume from the DICOM spacing, and a brute-force Feret diameter for RECIST.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from autoseg_support import (SPACING, TextBandPredictor, dice, protocol_dict, truth_masks,  # noqa: E402
                             write_phantom_series)

from OncoSegLib.autoseg.pipeline import probe_indices, run_autoseg  # noqa: E402
from OncoSegLib.cancel import CancelToken  # noqa: E402
from OncoSegLib.errors import Cancelled, InputError  # noqa: E402
from OncoSegLib.export.rtstruct import read_rtstruct_masks  # noqa: E402

TEXT_OF = {"BODY": "body", "Liver": "liver", "GTV_Liver": "lesion", "Kidneys": "kidney"}


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("autoseg_ct") / "ct"
    vol = write_phantom_series(folder)
    return folder, vol


@pytest.fixture(scope="module", params=["propagate", "every_slice"])
def run(request, ct, tmp_path_factory):
    folder, vol = ct
    out = tmp_path_factory.mktemp(f"out_{request.param}") / "result"
    res = run_autoseg(folder, protocol_dict(strategy=request.param), out_dir=out, device="cpu",
                      bundle=TextBandPredictor(scores={"kidney": 0.55}), nifti=True)
    return res, folder, vol, out, request.param


def test_rtstruct_references_the_original_series(run):
    res, folder, vol, out, _ = run
    assert res.rtstruct == out / "rtstruct.dcm" and res.rtstruct.exists()
    ds = pydicom.dcmread(res.rtstruct)
    ct_sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in sorted(folder.iterdir())}
    first = pydicom.dcmread(next(iter(sorted(folder.iterdir()))), stop_before_pixels=True)
    assert ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == first.FrameOfReferenceUID
    ref_series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {c.ReferencedSOPInstanceUID for c in ref_series.ContourImageSequence} <= ct_sops
    used = {ci.ReferencedSOPInstanceUID for rc in ds.ROIContourSequence for c in rc.ContourSequence
            for ci in c.ContourImageSequence}
    assert used and used <= ct_sops
    assert res.report["series"]["series_instance_uid"] == first.SeriesInstanceUID
    assert res.report["rtstruct"]["sop_instance_uid"] == ds.SOPInstanceUID


def test_one_roi_per_found_structure_with_names_types_colours(run):
    res, *_ = run
    ds = pydicom.dcmread(res.rtstruct)
    names = [r.ROIName for r in ds.StructureSetROISequence]
    assert names == ["BODY", "Liver", "GTV_Liver", "Kidneys"]  # Spleen is absent: not found, not an empty ROI
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    numbers = {r.ROIName: r.ROINumber for r in ds.StructureSetROISequence}
    assert [types[numbers[n]] for n in names] == ["EXTERNAL", "ORGAN", "GTV", "AVOIDANCE"]
    colours = {rc.ReferencedROINumber: [int(c) for c in rc.ROIDisplayColor] for rc in ds.ROIContourSequence}
    assert [colours[numbers[n]] for n in names] == [[0, 255, 0], [220, 110, 60], [255, 0, 0], [0, 128, 255]]
    assert all(len(rc.ContourSequence) > 0 for rc in ds.ROIContourSequence)


def test_rtstruct_rerasterises_to_the_truth_and_keeps_overlaps(run):
    res, folder, *_ = run
    truth = truth_masks()
    masks = {spec.name: m for spec, m in read_rtstruct_masks(res.rtstruct, folder)}
    for name, text in TEXT_OF.items():
        assert dice(masks[name], truth[text]) >= 0.999, name
    # overlaps preserved: the lesion lies inside the liver, every organ inside the body outline
    assert np.array_equal(masks["Liver"] & masks["GTV_Liver"], truth["lesion"])
    assert (masks["BODY"] & masks["Liver"]).sum() == truth["liver"].sum()
    assert masks["GTV_Liver"].sum() > 0


def test_report_values(run):
    res, folder, vol, out, strategy = run
    rep = json.loads((out / "report.json").read_text())
    truth = truth_masks()
    voxel_ml = float(np.prod(SPACING)) / 1000.0
    by = {s["name"]: s for s in rep["structures"]}
    for name, text in TEXT_OF.items():
        s = by[name]
        assert s["found"] and s["in_rtstruct"]
        assert s["voxels"] == int(truth[text].sum())
        assert s["volume_ml"] == pytest.approx(truth[text].sum() * voxel_ml, rel=1e-6)
    assert by["Kidneys"]["instances"] == 2  # keep: all -> two kidneys
    sizes = sorted(d["voxels"] for d in by["Kidneys"]["instance_details"])
    assert sizes == sorted([int(truth["kidney_a"].sum()), int(truth["kidney_b"].sum())])
    assert by["Liver"]["instances"] == 1 and by["Liver"]["score"] == pytest.approx(0.9)
    assert by["Kidneys"]["low_confidence"] is True and by["Liver"]["low_confidence"] is False  # 0.55 < 0.6
    sp = by["Spleen"]
    assert sp["found"] is False and sp["in_rtstruct"] is False and sp["roi_number"] is None
    assert "not found" in sp["note"] and "not written" in sp["note"]
    assert rep["not_found"] == ["Spleen"] and rep["empty_structures_not_written"] == ["Spleen"]
    assert rep["found"] == ["BODY", "Liver", "GTV_Liver", "Kidneys"]
    assert rep["protocol"]["strategy"].startswith(strategy)
    assert rep["modality"]["detected"] == "ct"
    # no patient identifiers, no input paths in the report
    text = json.dumps(rep)
    first = pydicom.dcmread(next(iter(sorted(folder.iterdir()))), stop_before_pixels=True)
    for ident in (str(first.PatientName), str(first.PatientID), str(folder)):
        assert ident not in text


def _feret_mm(mask2d: np.ndarray, si: float, sj: float) -> float:
    """Brute force: the largest distance between corners of the mask's pixels (independent of metrics.recist)."""
    from scipy.spatial.distance import pdist

    jj, ii = np.nonzero(mask2d)
    corners = np.concatenate([np.column_stack([(ii + di) * si, (jj + dj) * sj])
                              for di in (-0.5, 0.5) for dj in (-0.5, 0.5)])
    corners = np.unique(corners, axis=0)
    return float(pdist(corners).max())


def test_report_recist_long_axis_matches_brute_force(run):
    res, *_ = run
    truth = truth_masks()
    by = {s.spec.name: s for s in res.structures}
    for name in ("Liver", "GTV_Liver"):
        m = truth[TEXT_OF[name]]
        expect = max(_feret_mm(m[k], SPACING[0], SPACING[1]) for k in range(m.shape[0]) if m[k].any())
        assert by[name].recist_long_mm == pytest.approx(expect, abs=1e-6)
        assert by[name].instances[0].recist_long_mm == pytest.approx(expect, abs=1e-6)  # the one instance
        assert 0 < by[name].recist_short_mm <= by[name].recist_long_mm


def test_nifti_label_map_protocol_labels(run):
    import nibabel as nib

    res, folder, vol, *_ = run
    img = nib.load(res.nifti)
    data = np.asarray(img.dataobj)  # (I, J, K) as written
    labels = np.transpose(data, (2, 1, 0))
    assert labels.shape == vol.shape_kji
    truth = truth_masks()
    # label = position in the protocol; a later structure wins where they overlap (lesion drawn over liver)
    assert np.array_equal(labels == 3, truth["lesion"])
    assert np.array_equal(labels == 2, truth["liver"] & ~truth["lesion"])
    assert np.array_equal(labels == 4, truth["kidney"])
    assert not np.any(labels == 5)  # Spleen: not found
    assert np.allclose(img.affine, vol.ijk_to_ras, atol=1e-4)


def test_existing_output_is_not_overwritten(ct, tmp_path):
    folder, _ = ct
    out = tmp_path / "out"
    proto = protocol_dict(structures=[{"name": "Liver", "text": "liver"}])
    run_autoseg(folder, proto, out_dir=out, bundle=TextBandPredictor())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(InputError, match="already holds"):
        run_autoseg(folder, proto, out_dir=out, bundle=TextBandPredictor())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, nothing added
    # --overwrite replaces; a run that finds nothing removes the stale RTSTRUCT instead of leaving it beside
    res = run_autoseg(folder, protocol_dict(structures=[{"name": "Spleen", "text": "spleen"}]), out_dir=out,
                      bundle=TextBandPredictor(), overwrite=True)
    assert res.rtstruct is None and not (out / "rtstruct.dcm").exists()
    rep = json.loads((out / "report.json").read_text())
    assert rep["found"] == [] and rep["not_found"] == ["Spleen"] and "no RTSTRUCT" in rep["warning"]
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]  # no staging folder left behind


def test_wrong_modality_is_refused_clearly(tmp_path):
    mr = tmp_path / "mr"
    write_phantom_series(mr, modality="MR")
    out = tmp_path / "out"
    with pytest.raises(InputError) as exc:
        run_autoseg(mr, protocol_dict(), out_dir=out, bundle=TextBandPredictor())
    msg = str(exc.value)
    assert "MRI" in msg and "test-abdomen" in msg and "CT" in msg and "--allow-modality-mismatch" in msg
    assert not out.exists()
    res = run_autoseg(mr, protocol_dict(), out_dir=out, bundle=TextBandPredictor(), allow_modality_mismatch=True)
    assert res.report["modality"]["detected"] == "mri"
    assert res.report["modality"]["protocol_mismatch_overridden"] is True


def test_several_series_pick_by_protocol_modality(ct, tmp_path):
    import shutil

    folder, vol = ct
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed / "ct")
    write_phantom_series(mixed / "mr", modality="MR")
    res = run_autoseg(mixed, protocol_dict(structures=[{"name": "Liver", "text": "liver"}]), out_dir=tmp_path / "o",
                      bundle=TextBandPredictor())
    assert res.series_uid == vol.metadata["SeriesInstanceUID"]
    with pytest.raises(InputError, match="--series"):
        run_autoseg(mixed, protocol_dict(modalities=[], structures=[{"name": "Liver", "text": "liver"}]),
                    out_dir=tmp_path / "o2", bundle=TextBandPredictor())


def test_cancel_writes_nothing(ct, tmp_path):
    folder, _ = ct
    token = CancelToken()
    calls = []

    def progress(done, total, message):
        calls.append(message)
        if "probe slice 2" in message:
            token.cancel()

    with pytest.raises(Cancelled):
        run_autoseg(folder, protocol_dict(), out_dir=tmp_path / "out", bundle=TextBandPredictor(),
                    progress=progress, cancel=token)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    assert calls


def test_probe_indices_are_interior_and_even():
    assert probe_indices(16, 8) == [2, 3, 5, 7, 8, 10, 12, 13]
    assert probe_indices(5, 8) == [0, 1, 2, 3, 4]
    assert probe_indices(100, 1) == [50]
