"""Sam3Predictor on a tiny random-weight SAM3 bundle: the cached path must equal transformers' own full forward."""

import numpy as np
import pytest
import torch

from OncoSegLib.embedding_cache import CacheKey, EmbeddingCache
from OncoSegLib.errors import InputError
from OncoSegLib.models.predictor import ImageEmbeddings, Sam3Predictor
from engine_support import tiny


@pytest.fixture(scope="module")
def bundle():
    return tiny(0)


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 112, 112, generator=g) * 2 - 1


def test_encode_equals_get_image_embeddings(bundle, pixels):
    pred = Sam3Predictor(bundle)
    emb = pred.encode(pixels)
    ref = bundle.tracker.get_image_embeddings(pixels)
    assert len(emb.maps) == 3
    for a, b in zip(emb.maps, ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("prompt", ["point", "points", "box", "box+point", "mask"])
def test_cached_decode_equals_full_forward(bundle, pixels, prompt):
    pred = Sam3Predictor(bundle)
    emb = pred.encode(pixels[1:2])
    kw, ref_kw = {}, {}
    if prompt in ("point", "points", "box+point"):
        pts = [[40.0, 61.5]] if prompt != "points" else [[40.0, 61.5], [80.0, 20.0]]
        labels = [1] if prompt != "points" else [1, 0]
        kw.update(points=pts, labels=labels)
        ref_kw.update(input_points=torch.tensor([[pts]]), input_labels=torch.tensor([[labels]]))
    if prompt in ("box", "box+point"):
        kw["box"] = (20.0, 30.0, 70.0, 90.0)
        ref_kw["input_boxes"] = torch.tensor([[[20.0, 30.0, 70.0, 90.0]]])
    if prompt == "mask":
        m = torch.randn(1, 1, pred.mask_size, pred.mask_size)
        kw["mask_input"] = m
        ref_kw["input_masks"] = m
    out = pred.predict(emb, **kw)
    with torch.inference_mode():
        full = bundle.tracker(pixel_values=pixels[1:2], multimask_output=False, **ref_kw)
    assert torch.allclose(out.low_res, full.pred_masks[0, 0, :1][None], atol=1e-5)
    assert out.iou == pytest.approx(float(full.iou_scores[0, 0, 0]), abs=1e-5)
    assert out.presence == pytest.approx(float(torch.sigmoid(full.object_score_logits.reshape(-1)[0])), abs=1e-5)
    # slice-size output = bilinear resize of the low-res logits (pixel centres)
    out2 = pred.predict(emb, out_hw=(40, 70), **kw)
    ref = torch.nn.functional.interpolate(full.pred_masks[0, 0, :1][None], size=(40, 70), mode="bilinear",
                                          align_corners=False)[0, 0]
    assert out2.logits.shape == (40, 70) and np.allclose(out2.logits, ref.numpy(), atol=1e-4)


def test_multimask_returns_the_best_of_three(bundle, pixels):
    pred = Sam3Predictor(bundle)
    emb = pred.encode(pixels[:1])
    out = pred.predict(emb, points=[[56, 56]], labels=[1], multimask=True)
    with torch.inference_mode():
        full = bundle.tracker(pixel_values=pixels[:1], input_points=torch.tensor([[[[56.0, 56.0]]]]),
                              input_labels=torch.tensor([[[1]]]), multimask_output=True)
    best = int(torch.argmax(full.iou_scores[0, 0]))
    assert torch.allclose(out.low_res[0, 0], full.pred_masks[0, 0, best], atol=1e-5)


def test_video_features_equal_video_model_features(bundle, pixels):
    pred = Sam3Predictor(bundle)
    assert pred.video_shares_tracker()
    feats = pred.video_features(pred.encode(pixels[:1]))
    with torch.inference_mode():
        ref = bundle.video.get_image_features(pixels[:1], return_dict=True)
    for a, b in zip(feats["vision_feats"], ref.fpn_hidden_states):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(feats["vision_pos_embeds"], ref.fpn_position_encoding):
        assert torch.allclose(a, b, atol=1e-5)


def test_detect_text_scores_and_shared_backbone(bundle, pixels):
    pred = Sam3Predictor(bundle)
    emb = pred.encode(pixels[:1], with_detector=True)
    with torch.inference_mode():
        ref_vis = bundle.detector.vision_encoder(pixels[:1])
        tok = bundle.tokenize("liver tumor")
        ref = bundle.detector(pixel_values=pixels[:1], **tok)
    for a, b in zip(emb.detector.fpn_hidden_states, ref_vis.fpn_hidden_states):
        assert torch.allclose(a, b, atol=1e-5)
    dets = pred.detect_text(emb, "liver tumor", score_threshold=0.0, out_hw=(30, 50))
    expect = torch.sigmoid(ref.pred_logits[0]) * torch.sigmoid(ref.presence_logits[0, 0])
    assert len(dets) == expect.numel()
    assert np.allclose([d.score for d in dets], np.sort(expect.numpy())[::-1], atol=1e-5)
    assert dets[0].logits.shape == (30, 50)
    q = int(torch.argmax(expect))
    assert np.allclose(dets[0].box, ref.pred_boxes[0, q].numpy() * 112 - 0.5, atol=1e-3)
    high = pred.detect_text(emb, "liver tumor", score_threshold=float(expect.max()) + 1e-3)
    assert high == []
    with pytest.raises(InputError):
        pred.detect_text(emb, "   ")


def test_predict_rejects_bad_input(bundle):
    pred = Sam3Predictor(bundle)
    with pytest.raises(InputError):
        pred.encode(torch.zeros(1, 3, 100, 112))
    emb = pred.encode(torch.zeros(1, 3, 112, 112))
    with pytest.raises(InputError):
        pred.predict(emb)
    with pytest.raises(InputError):
        pred.predict(emb, points=[[1, 2], [3, 4]], labels=[1])


def test_cache_lru_and_cap(bundle, pixels):
    pred = Sam3Predictor(bundle)
    one = pred.encode(pixels[:1])
    mb = one.nbytes / 2 ** 20
    cache = EmbeddingCache(capacity_mb=2.5 * mb)  # room for two slices
    calls = []

    def enc(i):
        def f():
            calls.append(i)
            return pred.encode(pixels[i % 2:i % 2 + 1])
        return f

    keys = [CacheKey("axial", i, "p") for i in range(3)]
    cache.get(keys[0], enc(0))
    cache.get(keys[1], enc(1))
    cache.get(keys[0], enc(0))  # hit; 0 becomes most recent
    cache.get(keys[2], enc(2))  # evicts 1 (least recently used)
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache
    assert calls == [0, 1, 2]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.encodes, cache.stats.evictions) == (1, 3, 3, 1)
    assert cache.nbytes == 2 * one.nbytes
    nocache = EmbeddingCache(capacity_mb=0)
    nocache.get(keys[0], enc(0))
    nocache.get(keys[0], enc(0))
    assert len(nocache) == 0 and nocache.stats.encodes == 2


def test_single_click_stability_fallback_follows_the_checkpoint_like_stock_transformers(pixels):
    """Default (``dynamic_multimask=None``): the decoder's configured ``dynamic_multimask_via_stability`` is used, as
    stock transformers does (facebook/sam3's config: on) — oracle: transformers' own full forward with the same flag.
    True/False force it for the predictor's calls only; the bundle (shared with training, evaluation, other
    predictors) keeps its flag."""
    from OncoSegLib.models.tiny import tiny_bundle

    b = tiny_bundle(seed=0, text=False)
    dec = b.tracker.mask_decoder
    dec.dynamic_multimask_via_stability = True  # what facebook/sam3's config says (transformers' default)
    kw = dict(input_points=torch.tensor([[[[56.0, 56.0]]]]), input_labels=torch.tensor([[[1]]]),
              multimask_output=False)
    with torch.inference_mode():
        with_flag = b.tracker(pixel_values=pixels[:1], **kw).pred_masks[0, 0, :1]
        dec.dynamic_multimask_via_stability = False
        without = b.tracker(pixel_values=pixels[:1], **kw).pred_masks[0, 0, :1]
        dec.dynamic_multimask_via_stability = True
    assert not torch.allclose(with_flag, without, atol=1e-4)  # the flag matters for this input

    stock = Sam3Predictor(b)  # default: follow the checkpoint, like transformers
    assert stock.dynamic_multimask is None
    out = stock.predict(stock.encode(pixels[:1]), points=[[56.0, 56.0]], labels=[1])
    assert torch.allclose(out.low_res[0], with_flag, atol=1e-5)
    dec.dynamic_multimask_via_stability = False  # a checkpoint exported with it off (oncoseg train)
    out = stock.predict(stock.encode(pixels[:1]), points=[[56.0, 56.0]], labels=[1])
    assert torch.allclose(out.low_res[0], without, atol=1e-5)
    dec.dynamic_multimask_via_stability = True

    off = Sam3Predictor(b, dynamic_multimask=False)
    out = off.predict(off.encode(pixels[:1]), points=[[56.0, 56.0]], labels=[1])
    assert torch.allclose(out.low_res[0], without, atol=1e-5)
    assert dec.dynamic_multimask_via_stability is True  # restored after the call
    dec.dynamic_multimask_via_stability = False
    on = Sam3Predictor(b, dynamic_multimask=True)
    out2 = on.predict(on.encode(pixels[:1]), points=[[56.0, 56.0]], labels=[1])
    assert torch.allclose(out2.low_res[0], with_flag, atol=1e-5)
    assert dec.dynamic_multimask_via_stability is False


def test_uninformative_confidence_heads_are_reported_as_none(pixels):
    """A model whose IoU / object-score heads were not trained (``confidence_heads`` False) reports None, not the
    head's number; the mask is unchanged."""
    from OncoSegLib.models.tiny import tiny_bundle

    b = tiny_bundle(seed=0, text=False, video=False)
    pred = Sam3Predictor(b)
    emb = pred.encode(pixels[:1])
    full = pred.predict(emb, box=(20.0, 30.0, 70.0, 90.0))
    assert isinstance(full.iou, float) and isinstance(full.presence, float)
    b.confidence_heads = {"iou": True, "presence": False}  # e.g. LiteMedSAM: an IoU head, no presence head
    part = pred.predict(emb, box=(20.0, 30.0, 70.0, 90.0))
    assert part.iou == full.iou and part.presence is None
    b.confidence_heads = {"iou": False, "presence": False}
    none = pred.predict(emb, box=(20.0, 30.0, 70.0, 90.0))
    assert none.iou is None and none.presence is None and np.array_equal(none.logits, full.logits)


def test_cache_encodes_a_slice_once_when_two_threads_ask():
    import threading

    cache = EmbeddingCache(capacity_mb=16)
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow_encode():
        calls.append(threading.get_ident())
        started.set()
        assert release.wait(10)
        return ImageEmbeddings(maps=[torch.zeros(1, 4, 8, 8)])

    key = CacheKey("axial", 3, "p")
    got = []
    t1 = threading.Thread(target=lambda: got.append(cache.get(key, slow_encode)))
    t1.start()
    assert started.wait(10)
    t2 = threading.Thread(target=lambda: got.append(cache.get(key, slow_encode)))
    t2.start()
    release.set()
    t1.join(10)
    t2.join(10)
    assert len(calls) == 1 and len(got) == 2 and got[0] is got[1]
    assert cache.stats.encodes == 1 and cache.encoded_keys[key] == 1
    # a failed encode does not poison the key: the next get encodes again
    bad = CacheKey("axial", 4, "p")
    with pytest.raises(RuntimeError):
        cache.get(bad, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cache.get(bad, lambda: slow_encode()) is not None and bad in cache
