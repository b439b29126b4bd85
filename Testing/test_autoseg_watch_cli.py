"""Watch mode (inbox/outbox/manifest/error folder), the ``oncoseg autoseg`` CLI, and one end-to-end run with the real
tiny SAM3 model (random weights, no stub) checked with dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from validators import require_tool  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from autoseg_support import TextBandPredictor, dice, protocol_dict, truth_masks, write_phantom_series  # noqa: E402

import OncoSegLib.autoseg.pipeline as pipeline  # noqa: E402
from OncoSegLib.autoseg.watch import MANIFEST_NAME, REASON_NAME, WatchConfig, watch_inbox  # noqa: E402
from OncoSegLib.autoseg.watch_lock import LOCK_NAME  # noqa: E402
from OncoSegLib.cli import main  # noqa: E402
from OncoSegLib.errors import InputError  # noqa: E402

LIVER_ONLY = protocol_dict(structures=[{"name": "Liver", "text": "liver", "type": "ORGAN"},
                                       {"name": "Spleen", "text": "spleen"}])


@pytest.fixture(scope="module")
def ct_master(tmp_path_factory):
    folder = tmp_path_factory.mktemp("watch_ct") / "ct"
    write_phantom_series(folder)
    return folder


def _protocol_file(tmp: Path, data: dict) -> Path:
    p = tmp / "protocol.json"
    p.write_text(json.dumps(data))
    return p


def _inbox_with(tmp: Path, ct_master: Path, jobs: list[str]) -> Path:
    inbox = tmp / "inbox"
    inbox.mkdir()
    for j in jobs:
        shutil.copytree(ct_master, inbox / j)
    return inbox


# ------------------------------------------------------------------------------------------------ watch (library)
def test_watch_processes_two_series_then_stops_and_never_reprocesses(tmp_path, ct_master):
    inbox = _inbox_with(tmp_path, ct_master, ["job_a", "job_b"])
    (inbox / "job_bad").mkdir()
    (inbox / "job_bad" / "notes.txt").write_text("not DICOM")
    outbox = tmp_path / "outbox"
    cfg = WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER_ONLY, settle_s=0, poll_s=0.01, max_jobs=3,
                      error_hold_s=0)
    events: list[str] = []
    outcomes = watch_inbox(cfg, bundle=TextBandPredictor(), on_event=events.append)
    assert [(o.job, o.ok) for o in outcomes] == [("job_a", True), ("job_b", True), ("job_bad", False)]
    truth = truth_masks()["liver"]
    for job in ("job_a", "job_b"):
        rep = json.loads((outbox / job / "report.json").read_text())
        assert rep["found"] == ["Liver"] and rep["not_found"] == ["Spleen"]
        from OncoSegLib.export.rtstruct import read_rtstruct_masks

        (spec, mask), = read_rtstruct_masks(outbox / job / "rtstruct.dcm", inbox / job)
        assert spec.name == "Liver" and dice(mask, truth) >= 0.999
    # the failed job left the inbox for the error folder, with its reason
    assert not (inbox / "job_bad").exists()
    reason = (outbox / ".error" / "job_bad" / REASON_NAME).read_text()
    assert "no DICOM image series" in reason
    assert (outbox / ".error" / "job_bad" / "notes.txt").read_text() == "not DICOM"
    manifest = json.loads((outbox / MANIFEST_NAME).read_text())
    assert {k: v["status"] for k, v in manifest["jobs"].items()} == {"job_a": "done", "job_b": "done",
                                                                    "job_bad": "failed"}
    assert any("job_a: done" in e for e in events)
    # a restart finds nothing new: the loop stops on its timeout and writes nothing
    stamp = {p: p.stat().st_mtime_ns for p in outbox.rglob("*") if p.name != LOCK_NAME}  # the lock names its PID
    again = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER_ONLY, settle_s=0, poll_s=0.02,
                                    timeout_s=0.2), bundle=TextBandPredictor())
    assert again == []
    assert {p: p.stat().st_mtime_ns for p in outbox.rglob("*") if p.name != LOCK_NAME} == stamp


def test_watch_waits_until_the_series_is_complete(tmp_path, ct_master):
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    files = sorted((inbox / "job").iterdir())
    held = files[-1].read_bytes()
    files[-1].unlink()  # the last slice is still "arriving"
    t = [0.0]
    seen_at: list[float] = []

    def sleep(s: float) -> None:
        t[0] += s
        if t[0] == 10.0:  # the missing file lands at t = 10 s: the set changed, the settle time starts again
            files[-1].write_bytes(held)

    cfg = WatchConfig(inbox=inbox, outbox=tmp_path / "outbox", protocol=LIVER_ONLY, settle_s=12, poll_s=5,
                      max_jobs=1, timeout_s=100)
    out = watch_inbox(cfg, bundle=TextBandPredictor(), sleep=sleep, clock=lambda: t[0],
                      on_event=lambda m: seen_at.append(t[0]) if "started" in m else None)
    assert [o.ok for o in out] == [True]
    assert seen_at == [25.0]  # complete at 10 s, unchanged through 22 s, processed at the next poll (25 s)
    rep = json.loads((tmp_path / "outbox" / "job" / "report.json").read_text())
    assert rep["series"]["shape_kji"][0] == len(files)  # every slice was there


def test_watch_recovers_a_job_finished_before_a_crash(tmp_path, ct_master):
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    outbox = tmp_path / "outbox"
    (outbox / "job").mkdir(parents=True)
    (outbox / "job" / "report.json").write_text("{}")  # results written, manifest not yet updated
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER_ONLY, settle_s=0, poll_s=0.01,
                                  timeout_s=0.1), bundle=TextBandPredictor())
    assert out == []
    assert json.loads((outbox / MANIFEST_NAME).read_text())["jobs"]["job"]["status"] == "done"
    assert (outbox / "job" / "report.json").read_text() == "{}"


def test_watch_bad_setup_errors(tmp_path):
    with pytest.raises(InputError, match="inbox folder not found"):
        watch_inbox(WatchConfig(inbox=tmp_path / "nope", outbox=tmp_path / "o", protocol=LIVER_ONLY))
    (tmp_path / "in").mkdir()
    with pytest.raises(InputError, match="outbox must not be inside"):
        watch_inbox(WatchConfig(inbox=tmp_path / "in", outbox=tmp_path / "in" / "o", protocol=LIVER_ONLY))


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture()
def stub_model(monkeypatch):
    loaded: list[str] = []

    def fake_load(name, device, components):
        loaded.append(name)
        return TextBandPredictor()

    monkeypatch.setattr(pipeline, "load_model", fake_load)
    return loaded


def test_cli_one_series(tmp_path, ct_master, stub_model, capsys):
    proto = _protocol_file(tmp_path, LIVER_ONLY)
    out = tmp_path / "out"
    rc = main(["autoseg", str(ct_master), "--protocol", str(proto), "--out", str(out), "--seg", "--quiet"])
    assert rc == 0
    assert stub_model == ["liver"]  # no --model: the registry's routing for CT (manifest.json: ct -> liver)
    text = capsys.readouterr().out
    assert "1/2 structure(s) found" in text and "Spleen" in text and "NOT FOUND" in text
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "rtstruct.dcm", "seg.dcm"]
    from OncoSegLib.export.seg import read_seg

    labels, rois = read_seg(out / "seg.dcm", ct_master)
    assert [r.name for r in rois] == ["Liver"]
    assert dice(labels == 1, truth_masks()["liver"]) >= 0.999
    # again without --overwrite: one line, non-zero exit, files untouched
    before = (out / "rtstruct.dcm").read_bytes()
    rc = main(["autoseg", str(ct_master), "--protocol", str(proto), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "already holds" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "rtstruct.dcm").read_bytes() == before


def test_cli_model_flag_and_watch(tmp_path, ct_master, stub_model, capsys):
    inbox = _inbox_with(tmp_path, ct_master, ["a", "b"])
    proto = _protocol_file(tmp_path, LIVER_ONLY)
    rc = main(["autoseg", "--watch", str(inbox), "--outbox", str(tmp_path / "ob"), "--protocol", str(proto),
               "--model", "my-model", "--settle", "0", "--poll", "0.01", "--max-jobs", "2", "--quiet"])
    assert rc == 0
    assert stub_model == ["my-model"]  # loaded once, reused for both jobs
    assert "2 job(s), 0 failed" in capsys.readouterr().out
    assert (tmp_path / "ob" / "a" / "rtstruct.dcm").exists() and (tmp_path / "ob" / "b" / "report.json").exists()


@pytest.mark.parametrize("case, message", [
    ("missing_protocol", "protocol file not found"),
    ("no_out", "--out OUT_DIR is required"),
    ("watch_and_series", "--watch takes no SERIES_DIR"),
    ("bad_protocol", "structures[0] ('Liver').keep: unknown value 'biggest'"),
])
def test_cli_bad_input_one_line(tmp_path, ct_master, capsys, case, message):
    proto = _protocol_file(tmp_path, LIVER_ONLY)
    argv = {"missing_protocol": [str(ct_master), "--protocol", str(tmp_path / "missing.yaml"), "--out",
                                 str(tmp_path / "o")],
            "no_out": [str(ct_master), "--protocol", str(proto)],
            "watch_and_series": [str(ct_master), "--protocol", str(proto), "--watch", str(tmp_path)],
            "bad_protocol": [str(ct_master), "--protocol", str(_protocol_file(tmp_path, protocol_dict(
                structures=[{"name": "Liver", "text": "liver", "keep": "biggest"}]))), "--out", str(tmp_path / "o")],
            }[case]
    rc = main(["autoseg", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_wrong_modality_one_line(tmp_path, stub_model, capsys):
    mr = tmp_path / "mr"
    write_phantom_series(mr, modality="MR")
    proto = _protocol_file(tmp_path, LIVER_ONLY)
    rc = main(["autoseg", str(mr), "--protocol", str(proto), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "is MRI" in err and "for CT only" in err
    assert stub_model == [] and not (tmp_path / "o").exists()  # refused before any model was loaded


# ------------------------------------------------------------------------------------------------ real tiny model
def test_end_to_end_with_the_real_tiny_model(tmp_path):
    """No stub: tiny SAM3 (random weights) saved as a checkpoint folder, loaded by path through the CLI."""
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume
    from OncoSegLib.models.tiny import save_tiny_checkpoint

    ct = tmp_path / "ct"
    write_dicom_series(example_volume("oblique", (5, 40, 32)), ct)
    model = save_tiny_checkpoint(tmp_path / "tiny")
    proto = _protocol_file(tmp_path, {
        "name": "tiny-e2e", "modalities": ["ct"], "probe_slices": 2,
        "structures": [{"name": "Liver", "text": "liver", "min_score": 0.0, "max_instances": 1},
                       {"name": "Nothing", "text": "liver", "min_score": 1.0}]})
    out = tmp_path / "out"
    rc = main(["autoseg", str(ct), "--protocol", str(proto), "--out", str(out), "--model", str(model),
               "--device", "cpu", "--nifti", "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    by = {s["name"]: s for s in rep["structures"]}
    assert by["Nothing"]["found"] is False  # a score of 1.0 is never reached
    assert rep["model"]["default"] == str(model)
    liver = by["Liver"]
    # min_score 0.0 keeps the best detection whatever the random weights score it: the structure must be found
    # (seeded tiny model: the same mask every run), and every output must describe that one mask
    assert liver["found"] is True and liver["voxels"] > 0 and 0.0 <= liver["score"] < 1.0
    import nibabel as nib

    from OncoSegLib.export.rtstruct import read_rtstruct_masks

    lab = np.asarray(nib.load(out / "labels.nii.gz").dataobj)  # (I, J, K) on the series grid
    assert int((lab == 1).sum()) == liver["voxels"] and not np.any(lab == 2)
    (spec, rt_mask), = read_rtstruct_masks(out / "rtstruct.dcm", ct)  # contours rasterised back, (K, J, I)
    assert spec.name == "Liver" and int(rt_mask.sum()) == liver["voxels"]
    assert dice(rt_mask, np.transpose(lab == 1, (2, 1, 0))) == 1.0  # RTSTRUCT and label map: the same voxels
    ds0 = pydicom.dcmread(sorted(ct.iterdir())[0], stop_before_pixels=True)  # volume from the DICOM tags
    voxel_ml = float(ds0.PixelSpacing[0]) * float(ds0.PixelSpacing[1]) * float(ds0.SliceThickness) / 1000.0
    assert liver["volume_ml"] == pytest.approx(liver["voxels"] * voxel_ml, rel=1e-4)
    ds = pydicom.dcmread(out / "rtstruct.dcm")
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Liver"]
    res = subprocess.run([require_tool("dciodvfy"), "-new", str(out / "rtstruct.dcm")], capture_output=True,
                         text=True, timeout=120)
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
