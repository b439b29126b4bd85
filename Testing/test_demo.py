"""`oncoseg demo` end to end with the packaged demo model: files valid, report right against the phantom truth."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.demo import DEMO_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEMO_MODEL_DIR / "model.safetensors").is_file(),
                                reason="demo model not built (oncoseg train --config configs/demo_model.yaml)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from OncoSegLib.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--phantom", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_demo_model_is_small_labelled_and_loads_without_missing_weights() -> None:
    from OncoSegLib.models.loading import load_bundle

    total = sum(p.stat().st_size for p in DEMO_MODEL_DIR.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024
    assert "not for clinical use" in (DEMO_MODEL_DIR / "README.md").read_text().lower()
    info = json.loads((DEMO_MODEL_DIR / "oncoseg_model.json").read_text())
    assert info["demo_model"] is True and info["trained_with"] == "oncoseg train"
    bundle = load_bundle(str(DEMO_MODEL_DIR), device="cpu")
    assert bundle.image_size == 112 and info["components"] == ["tracker"]
    assert bundle.info["tracker"] == {"missing": [], "unexpected": [], "mismatched": []} or not any(
        bundle.info["tracker"].values())


def test_demo_report_matches_the_phantom_truth(demo) -> None:  # noqa: ANN001
    from OncoSegLib.io.nifti import read_nifti

    out, rep = demo
    pred = read_nifti(out / "segmentation.nii.gz")
    truth = read_nifti(out / "truth.nii.gz")
    p, t = np.rint(pred.array).astype(int), np.rint(truth.array).astype(int)
    assert pred.same_grid(truth)
    for name, s in rep["structures"].items():
        lab = s["label"]
        a, b = p == lab, t == lab
        oracle = 2 * (a & b).sum() / (a.sum() + b.sum())  # recomputed from the written files
        assert s["dice"] == pytest.approx(oracle, abs=1e-3), name
        assert s["volume_ml"] == pytest.approx(a.sum() * np.prod(pred.spacing) / 1000, rel=1e-3)
    # measured with the shipped demo model on the default phantom (seed 5): liver 0.76, kidneys 0.82 / 0.88,
    # vertebra 0.97, lesion 0.23 (the tiny demo model is weak on low-contrast lesions; see the model README)
    for organ in ("liver", "vertebra", "right kidney", "left kidney"):
        assert rep["structures"][organ]["dice"] >= 0.7, (organ, rep["structures"][organ])
    assert rep["structures"]["liver tumor"]["dice"] > 0.1
    assert rep["mean_dice"] >= 0.65
    r = rep["structures"]["liver tumor"]["recist"]
    assert r["truth_long_axis_mm"] > 0 and r["long_axis_mm"] >= r["short_axis_mm"] >= 0


def test_demo_files_are_valid_dicom_referencing_the_series(demo) -> None:  # noqa: ANN001
    import pydicom

    from OncoSegLib.export.rtstruct import read_rtstruct
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.nifti import read_nifti

    out, rep = demo
    ct = read_dicom_series(out / "dicom")
    rt = pydicom.dcmread(out / "rtstruct.dcm")
    assert rt.Modality == "RTSTRUCT"
    assert rt.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct.metadata["FrameOfReferenceUID"]
    names = [r.ROIName for r in rt.StructureSetROISequence]
    assert "liver" in names and "liver tumor" in names
    labels, rois = read_rtstruct(out / "rtstruct.dcm", out / "dicom")
    pred = np.rint(read_nifti(out / "segmentation.nii.gz").array).astype(int)
    liver_label = next(r.label for r in rois if r.name == "liver")
    a, b = labels == liver_label, pred == 1
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99  # RTSTRUCT round trip reproduces the label map
    seg = pydicom.dcmread(out / "segmentation_seg.dcm")
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == len(names)
    assert (out / "overlay.png").read_bytes()[:4] == b"\x89PNG"
    if shutil.which("dciodvfy"):
        proc = subprocess.run(["dciodvfy", str(out / "rtstruct.dcm")], capture_output=True, text=True)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, errors


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    from OncoSegLib.demo import run_demo, run_phantom_demo
    from OncoSegLib.errors import InputError

    (tmp_path / "keep.txt").write_text("user file")
    for runner in (run_demo, run_phantom_demo):
        with pytest.raises(InputError, match="not empty"):
            runner(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user file"


def test_demo_runs_text_prompts_when_the_model_has_a_detector(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A text-capable (tiny, random) full checkpoint: the demo types the concepts on the middle slice of the right
    structure and reports the Dice of what the session returned against the phantom truth — recomputed here from the
    masks the session handed out (numpy 2|A&B| / (|A|+|B|)); the shipped tracker-only model reports no text prompts
    (other tests)."""
    from OncoSegLib.demo import DEMO_SEED, DEMO_SPACING, DEMO_TEXT_PLAN, run_phantom_demo
    from OncoSegLib.models.tiny import save_tiny_checkpoint
    from OncoSegLib.phantoms import make_ct_phantom
    from OncoSegLib.session import SegmentationSession

    found_by_text: dict[str, list] = {}
    results: dict[int, np.ndarray] = {}
    add_text, result = SegmentationSession.add_text, SegmentationSession.result

    def spy_add_text(self, text, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        kw["score_threshold"] = 0.0  # random detector scores stay below 0.5: keep its best instance anyway
        found_by_text[text] = add_text(self, text, *a, **kw)
        return found_by_text[text]

    def spy_result(self, obj):  # noqa: ANN001
        results[obj] = result(self, obj)
        return results[obj]

    monkeypatch.setattr(SegmentationSession, "add_text", spy_add_text)
    monkeypatch.setattr(SegmentationSession, "result", spy_result)
    model = save_tiny_checkpoint(tmp_path / "tiny_full")
    rep = run_phantom_demo(tmp_path / "out", model=model, shape_kji=(12, 112, 112))
    truth = make_ct_phantom(seed=DEMO_SEED, shape_kji=(12, 112, 112), spacing=DEMO_SPACING).labels

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return 1.0 if not a.any() and not b.any() else 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())

    tp = rep["text_prompts"]
    assert tp is not None and set(tp) == {c for c, _ in DEMO_TEXT_PLAN}
    for concept, lab in DEMO_TEXT_PLAN:
        row, gt = tp[concept], truth == lab
        areas = gt.sum(axis=(1, 2))
        big = np.nonzero(areas >= 0.9 * areas.max())[0]
        assert row["label"] == lab and row["slice_k"] == int(big[len(big) // 2])
        found = found_by_text[concept]
        assert row["instances"] == len(found) <= 1
        if found:
            inst = found[0]
            assert inst.ref.index == row["slice_k"]
            k = row["slice_k"]
            assert row["dice_slice"] == pytest.approx(dice(np.asarray(inst.mask, bool), gt[k]), abs=5e-5)
            assert row["dice_3d"] == pytest.approx(dice(results[inst.object_id], gt), abs=5e-5)  # 4 decimals
        else:
            assert row["dice_slice"] == row["dice_3d"] == 0.0
    assert all(found_by_text[c] for c, _ in DEMO_TEXT_PLAN)  # the Dice branch above ran for every concept
    assert "text_prompts_s" in rep["timings_s"]


def test_a_failed_demo_leaves_nothing_and_the_rerun_works(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A crash late in the run (here: the SEG writer) leaves no output folder and no staging folder, so the same
    command simply runs again (it used to leave a half-filled folder that made the rerun refuse)."""
    import OncoSegLib.export.seg as seg_module
    from OncoSegLib.demo import run_phantom_demo

    out = tmp_path / "demo_out"

    def boom(*a, **k):  # noqa: ANN002, ANN003
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seg_module, "write_seg", boom)
    with pytest.raises(OSError):
        run_phantom_demo(out, shape_kji=(12, 112, 112))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left either
    monkeypatch.undo()
    rep = run_phantom_demo(out, shape_kji=(12, 112, 112))
    assert (out / "report.json").is_file() and (out / "segmentation_seg.dcm").is_file()
    assert rep["files"]["seg"] == str(out / "segmentation_seg.dcm")  # paths name the final folder, not the staging one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_out"]


def test_stale_staging_folder_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    from OncoSegLib.demo import staged_output

    stale = tmp_path / ".out.partial-999999999"  # no such process
    stale.mkdir()
    (stale / "half.dcm").write_bytes(b"x")
    with staged_output(tmp_path / "out", overwrite=False) as staging:
        (staging / "a.txt").write_text("done")
    assert not stale.exists()
    assert (tmp_path / "out" / "a.txt").read_text() == "done"
