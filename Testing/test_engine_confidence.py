"""Confidence that means something: a model whose IoU / presence heads are uninformative reports "n/a" (None in
Python, null in JSON, "n/a" on screen), never a number and a flag. The shipped demo model (its heads were never
trained: the demo reported IoU 0.5003 / presence 0.499 / low for every structure, even at Dice 0.97) is the
end-to-end case; stub predictors pin the rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from OncoSegLib.session import ObjectConfidence, SegmentationSession, confidence_text
from engine_support import DiscPredictor, ct_volume, ellipsoid

SHAPE = (8, 30, 40)
DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "OncoSegLib" / "data" / "demo_model"


class HeadsPredictor(DiscPredictor):
    """DiscPredictor (IoU 0.9, presence 0.95 per decode) that declares which heads are informative."""

    def __init__(self, heads: dict[str, bool] | None):
        super().__init__(radius=4.0)
        if heads is not None:
            self.confidence_heads = heads


class NoPresencePredictor(DiscPredictor):
    """A LiteMedSAM-like model: an IoU head, no presence head (NaN or None per decode, no declaration)."""

    def __init__(self, missing):
        super().__init__(radius=4.0)
        self.missing = missing

    def predict(self, *a, **kw):
        out = super().predict(*a, **kw)
        out.presence = self.missing
        out.iou = 0.4
        return out


def _session(pred, **kw) -> tuple[SegmentationSession, int]:
    s = SegmentationSession(pred, **kw)
    s.set_volume(ct_volume([ellipsoid(SHAPE, (20, 15, 4), (8, 7, 3))], SHAPE), modality="ct")
    o = s.add_object("liver")
    s.add_point(o, (20, 15, 4))
    s.add_point(o, (20, 15, 5))
    return s, o


@pytest.mark.parametrize("heads", [None, {"iou": True, "presence": True}])
def test_informative_heads_give_numbers_and_a_flag(heads):
    s, o = _session(HeadsPredictor(heads), iou_threshold=0.95)
    c = s.confidence(o)
    assert c == ObjectConfidence(iou=pytest.approx(0.9), presence=pytest.approx(0.95), low=True, slices=2)
    assert c.text() == "IoU 0.900, presence 0.950, LOW"
    s.iou_threshold = 0.5
    assert s.confidence(o).low is False


def test_uninformative_heads_are_na_not_a_number_and_a_flag():
    s, o = _session(HeadsPredictor({"iou": False, "presence": False}))
    c = s.confidence(o)
    assert (c.iou, c.presence, c.low, c.slices) == (None, None, None, 2)
    assert c.text() == "IoU n/a, presence n/a"
    assert s.add_point(o, (21, 15, 4)).iou == 0.9  # SliceResult passes on what the predictor said
    # an empty object is still flagged: nothing was segmented
    empty = s.add_object("nothing")
    assert s.confidence(empty).low is True and s.confidence(empty).iou is None


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_model_without_a_presence_head_reports_presence_na_and_flags_on_iou(missing):
    s, o = _session(NoPresencePredictor(missing))
    c = s.confidence(o)
    assert c.presence is None and c.iou == pytest.approx(0.4) and c.low is True  # 0.4 < 0.5
    s.iou_threshold = 0.3
    assert s.confidence(o).low is False  # presence n/a does not flag
    assert s.add_point(o, (21, 15, 4)).presence is None
    s2, o2 = _session(HeadsPredictor({"iou": True, "presence": False}))
    assert s2.confidence(o2).presence is None and s2.confidence(o2).iou == pytest.approx(0.9)


def test_mask_only_slices_follow_the_same_rule():
    """A user mask records (1.0, 1.0): counted with informative heads, n/a with uninformative ones (autoseg seeds
    its objects with add_mask: an uninformative model must not report IoU 1.0 for them)."""
    for heads, expect in (({"iou": True, "presence": True}, (1.0, 1.0, False)),
                          ({"iou": False, "presence": False}, (None, None, None))):
        s, _ = _session(HeadsPredictor(heads))
        m = s.add_object("user")
        mask = np.zeros(SHAPE[1:], bool)
        mask[10:15, 10:20] = True
        s.add_mask(m, mask, index=3)
        c = s.confidence(m)
        assert (c.iou, c.presence, c.low, c.slices) == expect + (1,)


def test_confidence_text():
    assert confidence_text(0.91234, None) == "IoU 0.912, presence n/a"
    assert confidence_text(float("nan"), 0.5, True) == "IoU n/a, presence 0.500, LOW"


# ------------------------------------------------------------------------ the shipped demo model, end to end
def test_demo_model_card_marks_its_heads_uninformative_and_segment_writes_null(tmp_path, capsys):
    from OncoSegLib.cli import main
    from OncoSegLib.io.nifti import write_nifti
    from OncoSegLib.models.loading import load_bundle

    card = json.loads((DEMO_MODEL_DIR / "oncoseg_model.json").read_text())
    assert card["confidence_heads"] == {"iou": False, "presence": False}
    bundle = load_bundle(str(DEMO_MODEL_DIR), device="cpu")
    assert bundle.confidence_heads == {"iou": False, "presence": False}
    shape = (6, 64, 64)
    vol = ct_volume([ellipsoid(shape, (32, 30, 3), (14, 12, 3))], shape)
    s = SegmentationSession(bundle)
    s.set_volume(vol, modality="ct")
    o = s.add_object("blob")
    s.add_box(o, (18, 18, 3), (46, 42, 3))
    assert s.result(o).any()
    c = s.confidence(o)
    assert (c.iou, c.presence, c.low) == (None, None, None)

    write_nifti(vol, tmp_path / "img.nii.gz")
    (tmp_path / "p.json").write_text(json.dumps({"objects": [{"name": "blob", "boxes": [
        {"min": [18, 18, 3], "max": [46, 42, 3]}]}]}))
    rc = main(["segment", str(tmp_path / "img.nii.gz"), "--prompts", str(tmp_path / "p.json"), "--model",
               str(DEMO_MODEL_DIR), "--out", str(tmp_path / "m.nii.gz"), "--device", "cpu"])
    assert rc == 0
    obj = json.loads((tmp_path / "m.json").read_text())["objects"][0]
    assert obj["voxels"] > 0
    assert (obj["iou"], obj["presence"], obj["low_confidence"]) == (None, None, None)  # JSON null, not 0.5003
    assert "IoU n/a, presence n/a" in capsys.readouterr().err


@pytest.mark.parametrize("heads", [["mask_decoder"], []])
def test_a_model_exported_by_oncoseg_train_says_its_heads_are_uninformative(tmp_path, heads):
    """The trainer supervises masks only: its export (a tiny random base; with or without a retrained mask decoder)
    writes ``confidence_heads`` false into ``oncoseg_model.json``, so the loaded model reports n/a."""
    from test_training_engine import small_config, write_cfg

    from OncoSegLib.models.loading import load_bundle
    from OncoSegLib.training.config import load_config
    from OncoSegLib.training.trainer import train

    data = small_config(tmp_path / "run", max_steps=1, eval_every=1)
    data["lora"]["trainable_heads"] = heads
    data["export"] = {"bundle_dir": str(tmp_path / "exported"), "components": ["tracker"]}
    train(load_config(write_cfg(tmp_path / "cfg.yaml", data)))
    card = json.loads((tmp_path / "exported" / "oncoseg_model.json").read_text())
    assert card["confidence_heads"] == {"iou": False, "presence": False}
    b = load_bundle(tmp_path / "exported", device="cpu")
    assert b.confidence_heads == {"iou": False, "presence": False}
    pred = SegmentationSession(b).predictor
    out = pred.predict(pred.encode(torch.zeros(1, 3, b.image_size, b.image_size)), box=(5.0, 5.0, 40.0, 40.0))
    assert out.iou is None and out.presence is None


@pytest.mark.parametrize("flag, expect", [("auto", None), ("on", True), ("off", False)])
def test_segment_multimask_fallback_flag_reaches_the_predictor(tmp_path, monkeypatch, flag, expect):
    from OncoSegLib.cli import main
    from OncoSegLib.io.nifti import write_nifti
    from OncoSegLib.models import predictor as predictor_mod

    seen = []
    init = predictor_mod.Sam3Predictor.__init__

    def spy(self, bundle, dynamic_multimask=None, cpu_bf16=False):  # noqa: ANN001
        seen.append(dynamic_multimask)
        init(self, bundle, dynamic_multimask=dynamic_multimask, cpu_bf16=cpu_bf16)

    monkeypatch.setattr(predictor_mod.Sam3Predictor, "__init__", spy)
    shape = (3, 40, 40)
    write_nifti(ct_volume([ellipsoid(shape, (20, 20, 1), (8, 8, 1))], shape), tmp_path / "img.nii.gz")
    (tmp_path / "p.json").write_text(json.dumps({"objects": [{"name": "a", "points": [[20, 20, 1]]}]}))
    args = ["segment", str(tmp_path / "img.nii.gz"), "--prompts", str(tmp_path / "p.json"), "--model",
            str(DEMO_MODEL_DIR), "--out", str(tmp_path / "m.nii.gz"), "--device", "cpu", "--quiet"]
    if flag != "auto":
        args += ["--multimask-fallback", flag]
    assert main(args) == 0
    assert seen == [expect]


@pytest.mark.parametrize("informative", [True, False])
def test_autoseg_report_confidence_is_null_for_uninformative_heads(tmp_path, informative):
    """autoseg (propagate strategy) reports the session confidence per instance: numbers from informative heads,
    JSON null from uninformative ones — the low flag then rests on the detection score alone."""
    from autoseg_support import TextBandPredictor, protocol_dict, write_phantom_series

    from OncoSegLib.autoseg.pipeline import run_autoseg

    pred = TextBandPredictor(scores={"kidney": 0.55})
    if not informative:
        pred.confidence_heads = {"iou": False, "presence": False}
    folder = tmp_path / "ct"
    write_phantom_series(folder)
    run_autoseg(folder, protocol_dict(strategy="propagate"), out_dir=tmp_path / "out", device="cpu", bundle=pred)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    by = {s["name"]: s for s in rep["structures"]}
    details = [d for name in ("Liver", "Kidneys") for d in by[name]["instance_details"]]
    assert details
    for d in details:
        if informative:  # stub decodes: IoU 0.9 / presence 0.95 per slice, the seed (detector) mask 1.0 / 1.0
            assert 0.9 <= d["iou"] <= 1.0 and 0.95 <= d["presence"] <= 1.0
        else:
            assert d["iou"] is None and d["presence"] is None
    assert by["Kidneys"]["low_confidence"] is True and by["Liver"]["low_confidence"] is False  # score 0.55 < 0.6
