"""SegmentationSession: prompt placement for every axis on non-square slices, mask round trips, cache equivalence
and encode counts, undo, text, confidence and label maps."""

import numpy as np
import pytest
import torch

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.models.predictor import Sam3Predictor
from OncoSegLib.preprocessing import fit_normalizer, resize_mask_logits, to_model_input
from OncoSegLib.session import SegmentationSession
from OncoSegLib.slicing import AXES, get_slice, ijk_to_slice, slice_shape

from engine_support import DiscPredictor, MaskEchoPredictor, tiny

SHAPE = (19, 27, 41)  # K, J, I: non-square slices on every axis


def _vol(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return Volume((rng.normal(0, 200, shape)).astype(np.float32), spacing=(0.7, 0.9, 2.5), modality="CT")


@pytest.fixture(scope="module")
def bundle():
    return tiny(0)


@pytest.mark.parametrize("axis", AXES)
def test_point_lands_on_its_voxel(axis):
    """A disc predictor centred on the click: the 3D result must be centred on the clicked voxel (i, j, k)."""
    stub = DiscPredictor(image_size=112, radius=5.0)
    s = SegmentationSession(stub)
    s.set_volume(_vol(), modality="ct")
    for ijk in [(30, 7, 11), (4, 20, 3), (37, 2, 16)]:
        o = s.add_object()
        s.add_point(o, ijk, axis=axis)
        m = s.result(o)
        k, j, i = np.nonzero(m)
        index, row, col = ijk_to_slice(ijk, axis)
        assert np.all(get_slice(m, axis, int(index)) == m.any(axis={"axial": 0, "coronal": 1, "sagittal": 2}[axis]))
        # the disc (an ellipse in the slice) is centred on the voxel; clipping at image borders moves it < 1 voxel
        assert m[ijk[2], ijk[1], ijk[0]]
        assert abs(i.mean() - ijk[0]) < 1.0 and abs(j.mean() - ijk[1]) < 1.0 and abs(k.mean() - ijk[2]) < 1.0
        # the model saw the point at the exact pixel-centre position
        x, y = stub.calls[-1]["points"][0]
        h, w = slice_shape(SHAPE, axis)
        assert x == pytest.approx((col + 0.5) * 112 / w - 0.5) and y == pytest.approx((row + 0.5) * 112 / h - 0.5)


@pytest.mark.parametrize("axis", AXES)
def test_mask_prompt_round_trip_through_model_space(axis):
    """add_mask, then a click on that slice decodes with the mask as decoder input; an echoing predictor returns it.
    The mask travels slice -> model mask grid -> slice: it must come back where it was."""
    s = SegmentationSession(MaskEchoPredictor(image_size=112))
    s.set_volume(_vol(), modality="ct")
    h, w = slice_shape(SHAPE, axis)
    rr, cc = np.mgrid[0:h, 0:w]
    blob = (rr - h / 3) ** 2 / 16 + (cc - 2 * w / 3) ** 2 / 25 <= 1.0
    o = s.add_object("m")
    r = s.add_mask(o, blob, axis=axis, index=5)
    assert np.array_equal(r.mask, blob) and np.array_equal(get_slice(s.result(o), axis, 5), blob)
    back = s.add_point(o, (1, 1, 5) if axis == "axial" else ((1, 5, 1) if axis == "coronal" else (5, 1, 1)),
                       axis=axis).mask
    inter = np.logical_and(back, blob).sum()
    assert 2 * inter / (back.sum() + blob.sum()) > 0.85
    assert np.allclose(np.argwhere(back).mean(0), np.argwhere(blob).mean(0), atol=0.5)


def test_real_mask_to_logits_round_trip(bundle):
    pred = Sam3Predictor(bundle)
    h, w = 45, 70
    rr, cc = np.mgrid[0:h, 0:w]
    blob = (rr - 20) ** 2 / 64 + (cc - 41) ** 2 / 100 <= 1.0
    back = resize_mask_logits(pred.mask_to_logits(blob)[0, 0], (h, w)).numpy() > 0
    assert np.allclose(np.argwhere(back).mean(0), np.argwhere(blob).mean(0), atol=0.5)
    assert 2 * np.logical_and(back, blob).sum() / (back.sum() + blob.sum()) > 0.9


def test_cached_session_decode_equals_full_forward_and_encodes_once(bundle):
    vol = _vol((6, 30, 45))
    s = SegmentationSession(bundle, cache_mb=64)
    s.set_volume(vol, modality="ct")
    a = s.add_object("a")
    s.add_point(a, (20, 12, 3))
    s.add_point(a, (30, 20, 3), positive=False)
    slice3 = s.result(a)[3]
    b = s.add_object("b")
    s.add_box(b, (5, 5, 3), (25, 20, 3))
    s.add_point(b, (10, 10, 1))
    s.add_point(a, (2, 14, 4), axis="sagittal")  # sagittal slice i = 2
    # oracle: transformers' own full forward on the same slice, no cache
    norm = fit_normalizer(vol, "ct")
    px = to_model_input(norm(vol.array[3]), 112)[None]
    x = lambda c, n: (c + 0.5) * 112 / n - 0.5  # noqa: E731
    pts = torch.tensor([[[[x(20, 45), x(12, 30)], [x(30, 45), x(20, 30)]]]], dtype=torch.float32)
    with torch.inference_mode():
        full = bundle.tracker(pixel_values=px, input_points=pts, input_labels=torch.tensor([[[1, 0]]]),
                              multimask_output=False)
    ref = resize_mask_logits(full.pred_masks[0, 0, 0], (30, 45)).numpy() > 0
    assert np.array_equal(slice3, ref)
    # the sagittal plane i = 2 replaced column i = 2 of every axial slice, and nothing else
    assert np.array_equal(np.delete(s.result(a)[3], 2, axis=1), np.delete(ref, 2, axis=1))
    # each distinct slice was encoded exactly once: axial 3, axial 1, sagittal 2
    assert s.cache.stats.encodes == 3 and set(s.cache.encoded_keys.values()) == {1}
    assert s.cache.stats.hits == 2


def test_undo_restores_masks_prompts_and_objects():
    s = SegmentationSession(DiscPredictor(radius=4.0))
    s.set_volume(_vol(), modality="ct")
    o = s.add_object("a")
    s.add_point(o, (10, 10, 5))
    m1 = s.result(o)
    s.add_point(o, (30, 20, 5))  # same slice: the disc moves to the mean of both points
    m2 = s.result(o)
    assert not np.array_equal(m1, m2)
    s.add_point(o, (10, 10, 5), axis="coronal")  # crosses the axial plane
    assert s.undo() and np.array_equal(s.result(o), m2)
    assert s.undo(o) and np.array_equal(s.result(o), m1)
    assert len(s._objects[o].prompts[next(iter(s._objects[o].prompts))].points) == 1
    s.add_point(o, (30, 20, 5))
    assert np.array_equal(s.result(o), m2)  # redoing gives the same mask: decode depends only on the prompts
    b = s.add_object("b")
    assert s.undo(b) and b not in s.objects
    assert s.undo() and s.undo() and s.undo()
    assert s.objects == {} and not s.undo()


def test_scribble_box_and_errors():
    stub = DiscPredictor(radius=3.0)
    s = SegmentationSession(stub, scribble_points=5)
    s.set_volume(_vol(), modality="ct")
    o = s.add_object("s")
    s.add_scribble(o, [(5, 5, 4), (25, 5, 4)])
    pts = stub.calls[-1]["points"]
    assert pts.shape == (5, 2) and np.allclose(np.diff(pts[:, 0]), np.diff(pts[:, 0])[0])
    with pytest.raises(InputError, match="one axial slice"):
        s.add_scribble(o, [(5, 5, 4), (25, 5, 6)])
    with pytest.raises(InputError, match="outside the image"):
        s.add_point(o, (41, 0, 0))
    b = s.add_object("box3d")
    r = s.add_box(b, (10, 10, 4), (20, 20, 12))
    assert r.ref.index == 8 and s._objects[b].bounds["axial"] == (4, 12)
    x0, y0, x1, y1 = stub.calls[-1]["box"]
    assert x0 == pytest.approx((10.5) * 112 / 41 - 0.5) and y1 == pytest.approx(20.5 * 112 / 27 - 0.5)
    with pytest.raises(InputError):
        s.add_mask(b, np.zeros((3, 3), bool), "axial", 0)
    with pytest.raises(InputError):
        s.result(99)


def test_label_map_names_and_confidence():
    s = SegmentationSession(DiscPredictor(radius=4.0), iou_threshold=0.95)
    s.set_volume(_vol(), modality="ct")
    a, b = s.add_object("liver"), s.add_object("tumour")
    s.add_point(a, (10, 10, 5))
    s.add_point(b, (12, 10, 5))  # overlaps a: the later object wins
    lm = s.label_map()
    assert s.label_names() == {1: "liver", 2: "tumour"}
    assert np.array_equal(lm == 2, s.result(b))
    assert np.array_equal(lm == 1, s.result(a) & ~s.result(b))
    c = s.confidence(a)
    assert c.iou == pytest.approx(0.9) and c.presence == pytest.approx(0.95) and c.low  # 0.9 < 0.95
    empty = s.add_object("empty")
    assert s.confidence(empty).low and s.confidence(empty).slices == 0


def test_text_prompt_creates_objects(bundle):
    s = SegmentationSession(bundle)
    s.set_volume(_vol((5, 30, 40)), modality="ct")
    found = s.add_text("liver tumor", score_threshold=0.0)
    assert found, "random tiny detector scores are ~0.25; threshold 0 keeps every non-empty instance"
    with torch.inference_mode():  # oracle: transformers' own detector forward on the same slice
        ref = bundle.detector(pixel_values=s.pixels("axial", 2), **bundle.tokenize("liver tumor"))
    nonempty = [q for q in range(ref.pred_masks.shape[1])
                if (resize_mask_logits(ref.pred_masks[0, q].float(), (30, 40)) > 0).any()]
    assert len(found) == len(nonempty) >= 2
    assert [f.name for f in found] == [f"liver tumor {n}" for n in range(1, len(found) + 1)]  # numbered: several
    for f in found:
        assert f.ref.index == 2 and np.array_equal(s.result(f.object_id)[2], f.mask) and f.mask.any()
        assert s.confidence(f.object_id).presence == pytest.approx(f.score)
    assert s.cache.stats.encodes == 1  # the text prompt's encoder run filled the cache
    s.add_point(found[0].object_id, (20, 15, 2))
    assert s.cache.stats.encodes == 1
    assert s.add_text("liver tumor", score_threshold=0.99) == []
    assert s.undo() and s.undo() and s.undo() and s.objects == {}


def test_modality_detection_reason_is_kept():
    s = SegmentationSession(DiscPredictor())
    vol = _vol()
    vol.array[...] = vol.array - 1000
    s.set_volume(vol)
    assert s.modality == "ct" and s.modality_reason.startswith("detected")
    s.set_volume(vol, modality="MR")
    assert s.modality == "mri" and s.modality_reason == "chosen by the user"


def test_text_prompts_on_one_slice_encode_it_once(monkeypatch):
    """Several text prompts on one slice (an autoseg protocol) run the image encoder once."""
    import numpy as np

    from OncoSegLib.io.volume import Volume
    from OncoSegLib.models.tiny import tiny_bundle
    from OncoSegLib.session import SegmentationSession

    session = SegmentationSession(tiny_bundle(seed=3))
    session.set_volume(Volume(np.random.default_rng(1).normal(0, 300, (5, 40, 48)).astype(np.float32),
                              modality="CT"), modality="ct")
    calls = []
    real = session.predictor.encode
    monkeypatch.setattr(session.predictor, "encode", lambda px, **kw: calls.append(kw) or real(px, **kw))
    for text in ("liver", "kidney", "spleen"):
        session.add_text(text, index=2, score_threshold=0.0)
    assert calls == [{"with_detector": True}]
    session.add_text("liver", index=3, score_threshold=0.0)
    assert len(calls) == 2


def test_best_text_instance_is_the_best_non_empty_one():
    """max_instances=1 (the CLI's named text object) must not come back empty when the top-scoring instance has no
    pixel at slice size but the next one does."""
    from OncoSegLib.models.predictor import TextDetection

    class TextStub(DiscPredictor):
        has_text = True

        def detect_text(self, emb, text, score_threshold=0.5, out_hw=None, max_instances=None):
            h, w = out_hw
            empty = np.full((h, w), -5.0, np.float32)
            blob = empty.copy()
            blob[2:6, 3:9] = 5.0
            dets = [TextDetection(empty, 0.9, (0, 0, 1, 1), torch.zeros(1, 1, 4, 4)),
                    TextDetection(blob, 0.7, (3, 2, 8, 5), torch.zeros(1, 1, 4, 4))]
            return dets[:max_instances] if max_instances else dets

    s = SegmentationSession(TextStub())
    s.set_volume(_vol(), modality="ct")
    found = s.add_text("liver", index=4, max_instances=1, name="liver")
    assert len(found) == 1 and found[0].score == pytest.approx(0.7) and found[0].name == "liver"
    assert s.result(found[0].object_id)[4, 2:6, 3:9].all() and s.result(found[0].object_id).sum() == 24
