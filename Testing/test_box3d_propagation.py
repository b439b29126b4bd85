"""3D from one box (issue 9 item 5): MedSAM's rule (``medsam``) and OncoSeg's rule (``box3d``) through the session API.

Stub predictors make the failure modes of MedSAM's rule mechanical and exact (a model that under-segments a tight
box drifts smaller slice after slice; a box grown past the 3D box leaks into a neighbour); the real-weight test runs
LiteMedSAM on the shipped real CT against its reference label map.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.cancel import CancelToken
from OncoSegLib.session import SegmentationSession

from engine_support import RegionPredictor, ct_volume, dice, ellipsoid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import box3d as bench  # noqa: E402  (the benchmark's box and Dice helpers: one definition of the protocol)

SHAPE = (24, 40, 52)


class ShrinkingPredictor(RegionPredictor):
    """Like :class:`RegionPredictor` (bright pixels inside the box) but the box is first shrunk by ``inset`` model
    pixels per side: a model that under-segments up to a tight box (what LiteMedSAM does on the spleen / muscles)."""

    def __init__(self, image_size: int = 112, inset: float = 3.0):
        super().__init__(image_size)
        self.inset = float(inset)

    def predict(self, embeddings, points=None, labels=None, box=None, mask_input=None, multimask=False,
                out_hw=None):
        if box is not None:
            d = self.inset
            box = (box[0] + d, box[1] + d, box[2] - d, box[3] - d)
            if box[2] < box[0] or box[3] < box[1]:
                return self._finish(np.zeros((self.image_size, self.image_size), bool), out_hw)
        return super().predict(embeddings, points, labels, box, mask_input, multimask, out_hw)


def _session(pred, shapes, shape=SHAPE):
    s = SegmentationSession(pred, cache_mb=64)
    s.set_volume(ct_volume(shapes, shape), modality="ct")
    return s


@pytest.mark.parametrize("method", ["medsam", "box3d"])
def test_runs_through_the_session_and_stops_at_the_box_range(method):
    a = ellipsoid(SHAPE, (20, 18, 11), (10, 8, 9))  # k 2..20
    s = _session(RegionPredictor(), [a])
    o = s.add_object("a")
    s.add_box(o, (8, 9, 7), (32, 27, 15))  # 3D box: prompts slice 11, bounds k 7..15
    res = s.propagate(o, method=method)
    m = s.result(o)
    assert sorted(res.processed) == [7, 8, 9, 10, 12, 13, 14, 15]
    assert set(res.stopped.values()) == {"end"}
    assert np.array_equal(np.flatnonzero(m.any(axis=(1, 2))), np.arange(7, 16))  # nothing outside the range
    assert dice(m[7:16], a[7:16]) > 0.97  # the ideal stub segments what is there
    assert s.undo() and not s.result(o)[12].any() and s.result(o)[11].any()


@pytest.mark.parametrize("method", ["medsam", "box3d"])
def test_an_empty_slice_inside_the_3d_box_does_not_end_the_chain(method):
    """The 3D box says the object spans its range: after a slice that comes out empty, medsam re-prompts with the
    3D box's 2D box and box3d with the last non-empty mask's box; both reach the end of the range. Without a 3D box,
    box3d ends the chain there ("vanished")."""
    a = ellipsoid(SHAPE, (20, 18, 11), (10, 8, 9))
    a[13] = False  # a gap slice
    s = _session(RegionPredictor(), [a])
    o = s.add_object("a")
    s.add_box(o, (8, 9, 7), (32, 27, 15))
    res = s.propagate(o, method=method, direction="forward")
    m = s.result(o)
    assert res.processed == [12, 13, 14, 15] and res.stopped == {(o, 11, 1): "end"}
    assert not m[13].any() and dice(m[14:16], a[14:16]) > 0.97
    o3 = s.add_object("3D box drawn on slice 10")  # the 2D box on another slice than the centre: still a 3D box
    s.add_box(o3, (8, 9, 7), (32, 27, 15), center=10)
    res3 = s.propagate(o3, method=method, direction="forward")
    assert res3.processed == [11, 12, 13, 14, 15] and res3.stopped == {(o3, 10, 1): "end"}
    o2 = s.add_object("2D box")
    s.add_box(o2, (8, 9, 11), (32, 27, 11))
    res2 = s.propagate(o2, method="box3d", direction="forward")
    assert res2.processed == [12, 13] and res2.stopped == {(o2, 11, 1): "vanished"}
    assert not s.result(o2)[13:].any()


def test_box3d_is_the_default_for_a_model_without_a_video_tracker():
    s = _session(RegionPredictor(), [])
    assert s.default_method == "box3d"
    a = ellipsoid(SHAPE, (20, 18, 11), (10, 8, 9))
    s = _session(RegionPredictor(), [a])
    o = s.add_object("a")
    s.add_box(o, (8, 9, 7), (32, 27, 15))
    s.propagate(o)
    assert s._obj(o).last_propagation["method"] == "box3d"


def test_box3d_follows_an_organ_that_grows_faster_than_medsams_shift():
    """A disc whose radius grows 2.5 pixels per slice (18 -> 40.5) from the prompted slice, a model input of 256
    pixels for a 96-pixel slice: MedSAM's box (previous mask + 3 model pixels = 1.1 slice pixels) cannot keep up and
    cuts it slice after slice; box3d sees the mask touch its box, grows those sides (each growth changes the mask
    by less than the 0.9-Dice neighbour guard) and follows: the spleen's failure on the real CT, made exact."""
    shape = (12, 96, 96)
    kk, jj, ii = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    radius = 18 + 2.5 * (kk - 1)
    a = ((jj - 48) ** 2 + (ii - 48) ** 2 <= radius ** 2) & (kk >= 1) & (kk <= 10)
    scores = {}
    for method in ("medsam", "box3d"):
        s = _session(RegionPredictor(image_size=256), [a], shape)
        o = s.add_object("a")
        s.add_box(o, (30, 30, 1), (66, 66, 10), center=1)  # the 2D box of slice 1, range 1..10
        s.propagate(o, method=method)
        scores[method] = dice(s.result(o), a)
    assert scores["box3d"] > 0.98 and scores["medsam"] < 0.9, scores


def test_box3d_keeps_the_tight_mask_of_a_model_that_answers_inside_its_box():
    """A model that answers 4 model pixels inside any box it gets never touches the box, so box3d's growth never
    starts: both rules shrink slice after slice (a known limit of a touch rule; LiteMedSAM reaches its box). box3d
    starts one box larger (the user's box seeds the chain) and so ends a little ahead."""
    a = ellipsoid(SHAPE, (26, 20, 11), (16, 12, 13))
    scores = {}
    for method in ("medsam", "box3d"):
        s = _session(ShrinkingPredictor(inset=4.0), [a])
        o = s.add_object("a")
        s.add_box(o, (9, 7, 0), (43, 33, 23))
        s.propagate(o, method=method)
        scores[method] = dice(s.result(o), a)
    assert scores["medsam"] < scores["box3d"] < 0.85, scores  # measured 0.728 / 0.812


def test_box3d_stays_inside_a_tight_3d_box_where_a_neighbour_touches():
    """Two bright objects side by side in every slice: a propagated box grown past the 3D box reaches the neighbour
    and the chain leaks into it; with a box known to be the object's tight 3D extent
    (``Box3DRule(clamp_in_plane=True)``) box3d clamps its boxes and masks to that in-plane extent."""
    from OncoSegLib.propagation import Box3DRule

    a = ellipsoid(SHAPE, (18, 20, 11), (9, 10, 30))  # columns 9..27, every slice
    b = ellipsoid(SHAPE, (37, 20, 11), (9, 10, 30))  # columns 28..46: touches a
    box = bench.box_from_reference(a)
    scores = {}
    for method in ("box", "box3d"):
        s = _session(RegionPredictor(), [a, b])
        s.box3d_rule = Box3DRule(clamp_in_plane=True)
        o = s.add_object("a")
        s.add_box(o, box.ijk_min, box.ijk_max)
        s.propagate(o, method=method)
        scores[method] = (dice(s.result(o), a), int((s.result(o) & b).sum()))
    assert scores["box3d"][1] == 0 and scores["box3d"][0] > 0.97, scores
    assert scores["box"][1] > 0  # the unclamped box rule does leak: the test can tell


def test_box3d_follows_an_object_wider_than_the_middle_slice_of_a_cvpr_style_box():
    """A prompts-file / CVPR-style 3D box is the MIDDLE slice's 2D box plus the slice range: an object that widens
    away from that slice (a cone) must be followed past the middle slice's extent. The default rule does; the
    in-plane clamp (for tight 3D boxes only) would cut every slice to the middle slice's box."""
    from OncoSegLib.evaluation.click_protocol import box_from_mask
    from OncoSegLib.propagation import Box3DRule

    kk, jj, ii = np.indices(SHAPE)
    radius = 4.0 + 0.9 * np.abs(kk - 4)  # narrowest on slice 4, wide at the far end of the range
    cone = ((jj - 20) ** 2 + (ii - 26) ** 2 <= radius ** 2) & (kk >= 2) & (kk <= 18)
    b = box_from_mask(cone)  # the challenge's box: 2D box on the middle distinct slice (10) + the range
    lo, hi = (b.x_min, b.y_min, b.z_min), (b.x_max, b.y_max, b.z_max)
    scores = {}
    for clamp in (False, True):
        s = _session(RegionPredictor(), [cone])
        if clamp:  # False: the session's default rule
            s.box3d_rule = Box3DRule(clamp_in_plane=True)
        o = s.add_object("cone")
        s.add_box(o, lo, hi)
        s.propagate(o, method="box3d")
        scores[clamp] = dice(s.result(o), cone)
    assert scores[False] > 0.95, scores
    assert scores[False] > scores[True] + 0.05, scores  # the clamp cuts the wide slices: the test can tell


def test_cancel_keeps_partial_results():
    a = ellipsoid(SHAPE, (20, 18, 11), (10, 8, 12))
    s = _session(RegionPredictor(), [a])
    o = s.add_object("a")
    s.add_box(o, (8, 9, 3), (32, 27, 19))  # anchor 11, range 3..19
    tok = CancelToken()

    def progress(done, total, msg):
        if done == 3:
            tok.cancel()

    res = s.propagate(o, method="box3d", progress=progress, cancel=tok)
    assert res.cancelled and res.processed == [12, 13, 14]
    m = s.result(o)
    assert [k for k in range(SHAPE[0]) if m[k].any()] == [11, 12, 13, 14]
    assert dice(m[11:15], a[11:15]) > 0.97
    assert set(res.stopped.values()) == {"cancelled"}


# ----------------------------------------------------------------------------------------------- real CT, real weights
REAL = ROOT / "OncoSegLib" / "data" / "real_ct"
# floors under the measured values (docs/engine.md table: liver 0.898, spleen 0.746, kidneys 0.791 / 0.946)
FLOORS = {"liver": 0.85, "spleen": 0.70, "kidney_right": 0.75, "kidney_left": 0.85}


@pytest.fixture(scope="module")
def real_ct_dice(litemedsam_model):
    """Per-structure 3D Dice of both rules on the real CT (16 structures, CVPR-style 3D boxes from the reference:
    the benchmark's default protocol, ``benchmarks/box3d.py``)."""
    from OncoSegLib.io.loader import load_volume

    vol = load_volume(str(REAL / "example_ct_sm.nii.gz"))
    seg = np.asarray(load_volume(str(REAL / "example_seg.nii.gz")).array)
    s = SegmentationSession(litemedsam_model, cache_mb=1024)
    d, _, _ = bench.run_case(s, vol, seg, bench.REAL_CT_STRUCTURES, ["medsam", "box3d"])
    return d


def test_real_ct_box3d_beats_medsam(real_ct_dice):
    """The issue's goal on the real CT: box3d's mean 3D Dice at least 0.05 above MedSAM's rule (measured +0.077) and
    no structure worse by more than 0.05 (measured -0.014; without the neighbour guard one loses 0.21, without the
    user's box seeding the chain the mean gain is +0.035)."""
    mean = {m: float(np.mean([row[m] for row in real_ct_dice.values()])) for m in ("medsam", "box3d")}
    assert len(real_ct_dice) == len(bench.REAL_CT_STRUCTURES)
    assert mean["box3d"] >= mean["medsam"] + 0.05, mean  # measured +0.077
    worst = min(row["box3d"] - row["medsam"] for row in real_ct_dice.values())
    assert worst >= -0.05, real_ct_dice  # and no structure much worse
    for organ, floor in FLOORS.items():
        assert real_ct_dice[organ]["box3d"] >= floor, (organ, real_ct_dice[organ])


def test_cli_segment_picks_box3d_for_litemedsam(litemedsam_model, tmp_path, monkeypatch):
    """`oncoseg segment IMAGE --prompts P.json --model litemedsam --propagate` with a 3D box: box3d by default."""
    from OncoSegLib.cli import main
    from OncoSegLib.io.loader import load_volume

    from conftest import LITEMEDSAM_STORE

    monkeypatch.setenv("ONCOSEG_HOME", str(Path(LITEMEDSAM_STORE).parents[1]))  # the store the fixture found
    seg = np.asarray(load_volume(str(REAL / "example_seg.nii.gz")).array)
    ref = seg == 2  # kidney_right
    box = bench.box_from_reference(ref)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"objects": [{"name": "kidney_right", "boxes": [
        {"min": list(box.ijk_min), "max": list(box.ijk_max)}]}]}))
    out = tmp_path / "m.nii.gz"
    rc = main(["segment", str(REAL / "example_ct_sm.nii.gz"), "--prompts", str(prompts), "--model", "litemedsam",
               "--propagate", "--out", str(out), "--quiet"])
    assert rc == 0
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["propagation"]["method"] == "box3d"
    mask = np.asarray(load_volume(str(out)).array) == 1
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    assert ks.min() >= box.ijk_min[2] and ks.max() <= box.ijk_max[2]  # the 3D box range is a hard limit
    assert dice(mask, ref) >= 0.85


def test_a_3d_box_can_prompt_the_slice_the_user_drew_it_on():
    """CVPR boxes give the 2D box on slice z_mid, not always the range's centre: ``center=`` prompts that slice."""
    from OncoSegLib.errors import InputError

    a = ellipsoid(SHAPE, (20, 18, 11), (10, 8, 9))
    s = _session(RegionPredictor(), [a])
    o = s.add_object("a")
    s.add_box(o, (8, 9, 7), (32, 27, 15), center=9)  # bounds k 7..15, prompts k 9 (centre would be 11)
    m = s.result(o)
    assert np.flatnonzero(m.any(axis=(1, 2))).tolist() == [9]
    res = s.propagate(o, method="box3d")
    assert sorted(res.processed) == [7, 8, 10, 11, 12, 13, 14, 15]
    with pytest.raises(InputError, match="outside the box"):
        s.add_box(o, (8, 9, 7), (32, 27, 15), center=16)


def test_click_protocol_segmenter_gives_the_challenge_box_as_a_3d_box():
    """``oncoseg evaluate interactive``: the box prompts z_mid, propagation (the model's default rule) stays in
    z_min..z_max, so a second object beyond the range is not reached."""
    from OncoSegLib.evaluation.click_protocol import Box3D as ChallengeBox, ClassPrompts
    from OncoSegLib.evaluation.segmenters import SessionSegmenter

    a = ellipsoid(SHAPE, (20, 18, 11), (10, 8, 9))  # k 2..20
    vol = ct_volume([a], SHAPE)
    seg = SessionSegmenter(RegionPredictor())
    assert seg.method is None and seg.session.default_method == "box3d"
    box = ChallengeBox(z_min=6, z_max=16, z_mid=10, x_min=9, y_min=10, x_max=31, y_max=26)
    out = seg(vol, {1: ClassPrompts(label=1, box=box)}, None)
    assert np.flatnonzero((out == 1).any(axis=(1, 2))).tolist() == list(range(6, 17))
    assert dice(out[6:17] == 1, a[6:17]) > 0.95
