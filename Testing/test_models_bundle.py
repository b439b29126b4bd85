"""Tiny SAM3 bundle: weight sharing, determinism, and equality with independently loaded transformers models."""

from __future__ import annotations

import pytest
import torch

from OncoSegLib.models.tiny import save_tiny_checkpoint, tiny_bundle, tiny_configs

S = 112


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle(seed=0, image_size=S)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ck", seed=0, image_size=S)


def _pixels(seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, S, S, generator=g) * 2 - 1


def test_one_vit_shared_by_all_backends(bundle):
    assert bundle.has_text and bundle.has_video
    vit = bundle.tracker.vision_encoder.backbone
    assert bundle.video.vision_encoder.backbone is vit
    assert bundle.detector.vision_encoder.backbone is vit
    assert bundle.tracker.mask_decoder is bundle.video.mask_decoder
    # unique count = sum over distinct tensors, computed independently of the bundle helper
    seen = {}
    for m in (bundle.tracker, bundle.detector, bundle.video):
        for p in m.parameters():
            seen[id(p)] = p.numel()
    assert bundle.parameter_count() == sum(seen.values())
    vit_params = sum(p.numel() for p in vit.parameters())
    tracker_params = sum(p.numel() for p in bundle.tracker.parameters())
    # sharing saves exactly: one tracker (fully inside the video model) + one ViT (inside the detector)
    assert bundle.parameter_count(unique=False) - bundle.parameter_count() == tracker_params + vit_params


def test_deterministic_by_seed():
    a, b, c = tiny_bundle(seed=1, video=False), tiny_bundle(seed=1, video=False), tiny_bundle(seed=2, video=False)
    pa, pb, pc = (list(x.tracker.state_dict().values()) for x in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc))
    assert a.video is None and a.has_video is False


def test_bundle_matches_standalone_transformers_models(bundle, ckpt):
    """Oracle: each transformers class loaded on its own from the saved facebook/sam3-layout checkpoint."""
    from transformers import Sam3Model, Sam3TrackerModel

    x = _pixels()
    pts, lbl = torch.tensor([[[[40.0, 70.0]]]]), torch.tensor([[[1]]])
    with torch.no_grad():
        t_ref = Sam3TrackerModel.from_pretrained(str(ckpt)).eval()
        ref = t_ref(pixel_values=x, input_points=pts, input_labels=lbl, multimask_output=False)
        emb = bundle.tracker.get_image_embeddings(x)
        out = bundle.tracker(image_embeddings=emb, input_points=pts, input_labels=lbl, multimask_output=False)
        assert out.pred_masks.shape[-1] == bundle.mask_size == 4 * S // 14
        torch.testing.assert_close(out.pred_masks, ref.pred_masks)
        d_ref = Sam3Model.from_pretrained(str(ckpt)).eval()
        tok = bundle.tokenize("liver tumor")
        d1 = d_ref(pixel_values=x, **tok)
        d2 = bundle.detector(pixel_values=x, **tok)
        torch.testing.assert_close(d2.pred_logits, d1.pred_logits)
        torch.testing.assert_close(d2.pred_masks, d1.pred_masks)


def test_tokenizer_pads_to_clip_length(bundle):
    tok = bundle.tokenize(["liver tumor", "kidney"])
    assert tok["input_ids"].shape == (2, 32)
    assert tok["attention_mask"][0].sum() == 4  # <bos> liver tumor <eos>
    assert tok["input_ids"][0, 0] == bundle.tokenizer.bos_token_id


def test_tiny_config_rejects_bad_size():
    with pytest.raises(ValueError):
        tiny_configs(image_size=100)
