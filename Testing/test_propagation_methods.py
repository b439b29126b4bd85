"""Propagation: segment planning, two objects in both directions with every method, Dice against known 3D shapes
(stub 'ideal' predictor), stopping rule, refinement re-runs, cancel, and the SAM3 video tracker (tiny weights):
equality with transformers' stock propagation and bounded stored outputs."""

import numpy as np
import pytest
import torch

from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.propagation import MemoryStepper, Segment, bbox_with_margin, interior_point, plan_segments
from OncoSegLib.session import SegmentationSession

from engine_support import RegionPredictor, ct_volume, dice, ellipsoid, tiny

SHAPE = (24, 40, 52)


def test_plan_segments_nearest_anchor_rule():
    assert plan_segments([10], 20, "both") == [Segment(10, 1, 19), Segment(10, -1, 0)]
    assert plan_segments([10], 20, "forward") == [Segment(10, 1, 19)]
    assert plan_segments([10], 20, "backward") == [Segment(10, -1, 0)]
    segs = plan_segments([4, 10], 20, "both")
    covered = sorted(i for s in segs for i in s.indices())
    assert covered == [i for i in range(20) if i not in (4, 10)]  # every slice exactly once
    assert Segment(4, 1, 7) in segs and Segment(10, -1, 8) in segs  # 5,6,7 nearer to 4 (7 is a tie -> lower)
    assert plan_segments([4, 10], 20, "forward") == [Segment(4, 1, 9), Segment(10, 1, 19)]
    assert plan_segments([10], 20, "both", lo=6, hi=12) == [Segment(10, 1, 12), Segment(10, -1, 6)]
    assert plan_segments([0], 5, "backward") == []
    assert plan_segments([4, 10], 20, "both", only_from=10) == [Segment(10, 1, 19), Segment(10, -1, 8)]


def test_reseed_helpers():
    ring = np.zeros((21, 21), bool)
    rr, cc = np.mgrid[0:21, 0:21]
    ring[(np.hypot(rr - 10, cc - 10) <= 8) & (np.hypot(rr - 10, cc - 10) >= 4)] = True
    r, c = interior_point(ring)  # centroid (10, 10) is in the hole: the most interior ring pixel instead
    assert ring[int(r), int(c)]
    blob = np.zeros((30, 30), bool)
    blob[10:20, 5:25] = True
    assert interior_point(blob) == (14.5, 14.5)
    assert bbox_with_margin(blob, 0.1) == (9.0, 3.0, 20.0, 26.0)  # 1 px rows (10 * 0.1), 2 px cols (20 * 0.1)


def _two_objects():
    a = ellipsoid(SHAPE, (14, 12, 11), (7, 6, 8))  # k 3..19
    b = ellipsoid(SHAPE, (37, 27, 13), (8, 7, 6))  # k 7..19, elsewhere in the slice
    return a, b


@pytest.mark.parametrize("method", ["centroid", "box"])
def test_two_objects_both_directions_match_the_truth(method):
    a, b = _two_objects()
    s = SegmentationSession(RegionPredictor(image_size=112), cache_mb=64)
    s.set_volume(ct_volume([a, b], SHAPE), modality="ct")
    oa, ob = s.add_object("first"), s.add_object("second")
    s.add_point(oa, (14, 12, 11))
    s.add_box(ob, (29, 20, 13), (45, 34, 13))
    res = s.propagate(None, direction="both", method=method)
    # object 1 is propagated too (OneSAM's released code never propagates it), each object only its own shape
    assert dice(s.result(oa), a) > 0.9 and dice(s.result(ob), b) > 0.9
    assert not (s.result(oa) & b).any() and not (s.result(ob) & a).any()
    # order: forward from the anchor first, then backward; and where each chain stopped (the object vanished)
    ka = [k for k in range(24) if a[k].any()]
    kb = [k for k in range(24) if b[k].any()]
    assert res.processed_by_object[oa] == list(range(12, ka[-1] + 2)) + list(range(10, ka[0] - 2, -1))
    assert res.processed_by_object[ob] == list(range(14, kb[-1] + 2)) + list(range(12, kb[0] - 2, -1))
    assert set(res.stopped.values()) == {"vanished"}
    lm = s.label_map()
    assert set(np.unique(lm)) == {0, 1, 2}
    assert s.undo() and not s.result(oa)[12].any() and s.result(oa)[11].any()


def test_forward_only_and_3d_box_bounds():
    a, _ = _two_objects()
    s = SegmentationSession(RegionPredictor(), cache_mb=64)
    s.set_volume(ct_volume([a], SHAPE), modality="ct")
    o = s.add_object("a")
    s.add_point(o, (14, 12, 11))
    res = s.propagate(o, direction="forward", method="centroid")
    assert res.processed == list(range(12, 21)) and not s.result(o)[:11].any()
    s2 = SegmentationSession(RegionPredictor(), cache_mb=64)
    s2.set_volume(ct_volume([a], SHAPE), modality="ct")
    o2 = s2.add_object("boxed")
    s2.add_box(o2, (7, 6, 8), (21, 18, 14))  # 3D box: prompts slice 11, bounds k 8..14
    res2 = s2.propagate(o2, method="box")
    m = s2.result(o2)
    assert sorted(res2.processed) == [8, 9, 10, 12, 13, 14]
    assert np.array_equal(np.nonzero(m.any(axis=(1, 2)))[0], np.arange(8, 15))


def test_refinement_reruns_only_what_it_affects():
    a, _ = _two_objects()
    stub = RegionPredictor()
    s = SegmentationSession(stub, cache_mb=64)
    s.set_volume(ct_volume([a], SHAPE), modality="ct")
    o = s.add_object("a")
    s.add_point(o, (14, 12, 11))
    s.propagate(o, method="centroid")
    before = s.result(o)
    n_calls = len(stub.calls)
    s.add_point(o, (14, 12, 16))  # refine slice 16: it becomes an anchor
    rep = s.last_repropagation
    # re-run outward from 16 only; the next slice agrees with the earlier result, so each side stops at once
    assert rep.processed == [17, 15] and set(rep.stopped.values()) == {"agrees"}
    assert len(stub.calls) - n_calls == 3  # the click on 16 + slices 17 and 15
    assert np.array_equal(s.result(o), before)
    assert s.anchors(o) == [11, 16]
    assert s.undo() and s.anchors(o) == [11]


def test_cancel_keeps_partial_results():
    a, b = _two_objects()
    s = SegmentationSession(RegionPredictor(), cache_mb=64)
    s.set_volume(ct_volume([a, b], SHAPE), modality="ct")
    oa, ob = s.add_object("a"), s.add_object("b")
    s.add_point(oa, (14, 12, 11))
    s.add_point(ob, (37, 27, 13))
    tok = CancelToken()
    seen = []

    def progress(done, total, msg):
        seen.append((done, total))
        if done == 3:
            tok.cancel()

    res = s.propagate(None, method="centroid", progress=progress, cancel=tok)
    assert res.cancelled and res.processed == [12, 13, 14]
    # progress counts slices: 3 done out of every non-anchor slice of both objects (one anchor each, 24 slices)
    assert [d for d, _ in seen] == [1, 2, 3] and {t for _, t in seen} == {2 * (SHAPE[0] - 1)}
    m = s.result(oa)
    assert [k for k in range(24) if m[k].any()] == [11, 12, 13, 14]  # partial result kept
    assert dice(m[12:15], a[12:15]) > 0.9
    assert s.result(ob).any(axis=(1, 2)).sum() == 1  # the second object was not started
    assert set(res.stopped.values()) == {"cancelled"}


def test_errors():
    s = SegmentationSession(RegionPredictor())
    s.set_volume(ct_volume([], (6, 20, 20)), modality="ct")
    o = s.add_object("a")
    with pytest.raises(InputError, match="no prompt"):
        s.propagate(o, method="centroid")
    with pytest.raises(InputError, match="method"):
        s.propagate(o, method="magic")
    s.add_point(o, (5, 5, 2))
    with pytest.raises(ModelError, match="video tracker"):
        s.propagate(o, method="memory")


# ----------------------------------------------------------------------------------------------- memory (SAM3 video)
def test_memory_two_objects_structure():
    bundle = tiny(0)
    shape = (14, 40, 52)
    a = ellipsoid(shape, (14, 12, 6), (7, 6, 5))
    b = ellipsoid(shape, (37, 27, 9), (8, 7, 4))
    s = SegmentationSession(bundle, cache_mb=64)
    s.set_volume(ct_volume([a, b], shape), modality="ct")
    oa, ob = s.add_object("first"), s.add_object("second")
    s.add_mask(oa, a[6], index=6)
    s.add_mask(ob, b[9], index=9)
    res = s.propagate(None, method="memory", min_area=0)  # random weights: keep going whatever comes out
    assert res.processed_by_object[oa] == list(range(7, 14)) + list(range(5, -1, -1))
    assert res.processed_by_object[ob] == list(range(10, 14)) + list(range(8, -1, -1))
    assert np.array_equal(s.result(oa)[6], a[6]) and np.array_equal(s.result(ob)[9], b[9])
    # every slice encoded once although two objects x two directions read them
    assert s.cache.stats.encodes == 14 and set(s.cache.encoded_keys.values()) == {1}


def test_memory_equals_stock_video_propagation_and_stays_bounded():
    """Oracle: transformers' own propagate_in_video_iterator over the whole video (all frames in memory). Ours streams
    frames, injects cached features and releases old outputs; masks must be the same."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

    from OncoSegLib.models.predictor import Sam3Predictor

    bundle = tiny(0)
    n = 22
    vol = ct_volume([ellipsoid((n, 28, 36), (18, 14, n // 2), (8, 7, 40))], (n, 28, 36))
    s = SegmentationSession(bundle, cache_mb=64)
    s.set_volume(vol, modality="ct")
    anchor = 1
    amask = np.asarray(vol.array[anchor] > 0)
    stepper = MemoryStepper(s.predictor, lambda i: s.embeddings("axial", i), lambda i: s.pixels("axial", i), n,
                            (28, 36), window=None)
    stepper.start(anchor, amask, +1)
    ours, stored, tracked, feats = [], [], [], []
    for k in range(anchor + 1, n):
        ours.append(stepper.step(k, None))
        stored.append(stepper.stored_outputs())
        tracked.append(sum(len(t) for t in stepper.session.frames_tracked_per_obj.values()))
        feats.append(len(stepper.session.cache._vision_features))
    stepper.close()
    # bounded: never more than the memory window (16 here) plus the conditioning frame, although 20 frames ran;
    # the per-frame bookkeeping and the video session's feature cache do not grow with the slice count either
    assert max(stored) <= stepper.window + 1 < n - anchor - 1
    assert stepper.max_stored <= stepper.window
    assert max(tracked) <= stepper.window and max(feats) == 1

    video = bundle.video
    frames = torch.cat([s.pixels("axial", k) for k in range(n)])
    ref = Sam3TrackerVideoInferenceSession(video=frames, video_height=28, video_width=36, dtype=torch.float32)
    m = torch.nn.functional.interpolate(torch.as_tensor(amask, dtype=torch.float32)[None, None], size=(112, 112),
                                        mode="bilinear", align_corners=False, antialias=True)
    ref.add_mask_inputs(ref.obj_id_to_idx(1), anchor, (m >= 0.5).float())
    ref.obj_with_new_inputs = [1]
    with torch.inference_mode():
        video(inference_session=ref, frame_idx=anchor)
        outs = {o.frame_idx: o for o in video.propagate_in_video_iterator(ref, start_frame_idx=anchor)}
    from OncoSegLib.preprocessing import resize_mask_logits

    for k, mine in zip(range(anchor + 1, n), ours):
        logits = resize_mask_logits(outs[k].pred_masks[0:1].float(), (28, 36)).reshape(28, 36)
        presence = float(torch.sigmoid(outs[k].object_score_logits.reshape(-1)[0]))
        expect = (logits > 0).numpy() if presence >= 0.5 else np.zeros((28, 36), bool)
        assert mine.presence == pytest.approx(presence, abs=1e-4)
        assert np.array_equal(mine.mask, expect)
    assert isinstance(s.predictor, Sam3Predictor) and s.predictor.bundle is bundle  # the session wraps the bundle


def test_propagate_all_skips_objects_without_prompts():
    """`propagate(None)` (the CLI's --propagate) must not fail because one object holds nothing (a text prompt that
    found no instance); asking for that object alone is still an error."""
    a, _ = _two_objects()
    s = SegmentationSession(RegionPredictor(), cache_mb=64)
    s.set_volume(ct_volume([a], SHAPE), modality="ct")
    empty, o = s.add_object("nothing found"), s.add_object("a")
    s.add_point(o, (14, 12, 11))
    res = s.propagate(None, method="centroid")
    assert res.skipped == [empty] and res.objects == [o]
    assert dice(s.result(o), a) > 0.9 and not s.result(empty).any()
    with pytest.raises(InputError, match="no prompt"):
        s.propagate(empty, method="centroid")
    s2 = SegmentationSession(RegionPredictor(), cache_mb=64)
    s2.set_volume(ct_volume([a], SHAPE), modality="ct")
    s2.add_object("x")
    with pytest.raises(InputError, match="no object has a prompt"):
        s2.propagate(None, method="centroid")


def test_undo_record_of_a_propagation_stores_no_empty_planes():
    """A long propagation into empty slices must not keep one packed plane per slice in the undo history
    (50 steps x 500 slices x 512^2 / 8 bytes would be 800 MB); undo still restores every slice exactly."""
    a, _ = _two_objects()
    s = SegmentationSession(RegionPredictor(), cache_mb=64)
    s.set_volume(ct_volume([a], SHAPE), modality="ct")
    o = s.add_object("a")
    s.add_point(o, (14, 12, 11))
    before = s.result(o)
    s.propagate(o, method="centroid")
    after = s.result(o)
    written = [k for k in range(SHAPE[0]) if after[k].any() and k != 11]  # the slices the run filled
    assert len(written) > 10
    act = s._undo[-1]
    assert sorted(r.index for _, r, _ in act.planes) == written and all(p is None for _, _, p in act.planes)
    s.add_point(o, (14, 12, 14))  # refine a propagated (non-empty) slice: that plane is stored
    assert [p is None for _, _, p in s._undo[-1].planes][0] is False
    assert s.undo() and np.array_equal(s.result(o), after)
    assert s.undo() and np.array_equal(s.result(o), before)


def test_gui_thread_reads_while_a_worker_propagates():
    """Driven from a worker thread, the session serves reads (result, label_map, confidence, objects) from another
    thread during a propagation: they do not wait for the whole run and they see the slices finished so far."""
    import threading

    a, _ = _two_objects()

    class Gated(RegionPredictor):
        def __init__(self):
            super().__init__()
            self.reached, self.go = threading.Event(), threading.Event()

        def predict(self, *args, **kw):
            if len(self.calls) == 4:  # the click + 3 propagated slices are done
                self.reached.set()
                self.go.wait(30)
            return super().predict(*args, **kw)

    stub = Gated()
    s = SegmentationSession(stub, cache_mb=64)
    s.set_volume(ct_volume([a], SHAPE), modality="ct")
    o = s.add_object("a")
    s.add_point(o, (14, 12, 11))
    errors = []
    worker = threading.Thread(target=lambda: errors.append(s.propagate(o, method="centroid", direction="forward")))
    worker.start()
    try:
        assert stub.reached.wait(30)
        partial = s.result(o)  # would block until the worker finished if reads took the edit lock
        lm = s.label_map()
        conf = s.confidence(o)
        names = s.objects
        assert not stub.go.is_set() and worker.is_alive()  # read while the worker was still mid-propagation
        assert [k for k in range(SHAPE[0]) if partial[k].any()] == [11, 12, 13, 14]
        assert np.array_equal(lm == 1, partial) and conf.slices == 4 and names == {o: "a"}
    finally:
        stub.go.set()
        worker.join(60)
    assert not worker.is_alive() and s.result(o)[15:].any()


def test_memory_propagation_runs_under_the_predictors_autocast_and_decoder_setting(monkeypatch):
    """bf16 autocast (always on CUDA, optional on CPU) and the predictor's dynamic-multimask choice also apply to the
    video tracker during memory propagation; the shared bundle's flag is restored afterwards."""
    from OncoSegLib.models.predictor import Sam3Predictor
    from OncoSegLib.models.tiny import tiny_bundle

    bundle = tiny_bundle(seed=0, text=False)
    bundle.video.mask_decoder.dynamic_multimask_via_stability = True
    seen = []
    real = bundle.video.forward

    def spy(*args, **kw):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     bundle.video.mask_decoder.dynamic_multimask_via_stability))
        return real(*args, **kw)

    monkeypatch.setattr(bundle.video, "forward", spy)
    shape = (6, 28, 36)
    vol = ct_volume([ellipsoid(shape, (18, 14, 3), (8, 7, 9))], shape)
    s = SegmentationSession(Sam3Predictor(bundle, dynamic_multimask=False, cpu_bf16=True), cache_mb=64)
    s.set_volume(vol, modality="ct")
    o = s.add_object("a")
    s.add_mask(o, vol.array[2] > 0, index=2)
    res = s.propagate(o, method="memory", min_area=0)
    assert len(res.processed) == 5 and len(seen) == 2 + 5  # one anchor run per chain + one call per slice
    assert all(on and dt == torch.bfloat16 and flag is False for on, dt, flag in seen)
    assert bundle.video.mask_decoder.dynamic_multimask_via_stability is True
