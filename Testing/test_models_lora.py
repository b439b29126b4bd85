"""LoRA adapters: Meta name mapping, save/load round trip, merge == unmerged (oracle: W + alpha/r * B @ A)."""

from __future__ import annotations

import pytest
import torch

from OncoSegLib.errors import ModelError
from OncoSegLib.models.lora import LoraSettings, apply_lora, load_adapter, save_adapter
from OncoSegLib.models.tiny import tiny_bundle


def _x():
    return torch.linspace(-1, 1, 3 * 112 * 112).reshape(1, 3, 112, 112).flip(-1)


def _decode(bundle):
    with torch.no_grad():
        emb = bundle.tracker.get_image_embeddings(_x())
        out = bundle.tracker(image_embeddings=emb, input_points=torch.tensor([[[[30.0, 80.0]]]]),
                             input_labels=torch.tensor([[[1]]]), multimask_output=False)
    return emb[-1], out.pred_masks


def test_meta_names_map_to_transformers_layers():
    s = LoraSettings(target=("qkv", "proj"))
    assert s.target_names() == ["q_proj", "k_proj", "v_proj", "o_proj"]
    b = tiny_bundle(text=False, video=False)
    with pytest.raises(ModelError, match="match no layer"):
        apply_lora(b.tracker, LoraSettings(target=("nonexistent",)))


def _trained_adapter(tmp_path):
    b = tiny_bundle(seed=0)
    settings = LoraSettings(r=4, alpha=8, dropout=0.1, target=("qkv", "proj"), scope="vision",
                            trainable_heads=("mask_decoder.iou_prediction_head",))
    pm = apply_lora(b.tracker, settings)
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or ("iou_prediction_head" in n) for n in trainable)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # stand-in for training: non-zero B and a changed head
        for n, p in pm.named_parameters():
            if "lora_B" in n or "iou_prediction_head" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    pm.eval()
    save_adapter(pm, tmp_path / "adapter", settings)
    return b, pm, settings


def test_round_trip_and_merge(tmp_path):
    b, pm, settings = _trained_adapter(tmp_path)
    emb_a, masks_a = _decode(b)
    base_emb, _ = _decode(tiny_bundle(seed=0))
    assert not torch.allclose(emb_a, base_emb)  # the adapter changes the output
    # LoRA in the shared ViT acts in the detector as well (same module objects)
    lora_layer = b.detector.vision_encoder.backbone.layers[0].attention.q_proj
    assert hasattr(lora_layer, "lora_A")

    fresh = tiny_bundle(seed=0)
    load_adapter(fresh, tmp_path / "adapter")
    emb_b, masks_b = _decode(fresh)
    torch.testing.assert_close(emb_b, emb_a, rtol=0, atol=0)
    torch.testing.assert_close(masks_b, masks_a, rtol=0, atol=0)

    merged = load_adapter(tiny_bundle(seed=0), tmp_path / "adapter", merge=True)
    assert not any("lora_" in n for n, _ in merged.tracker.named_parameters())
    emb_c, masks_c = _decode(merged)
    torch.testing.assert_close(emb_c, emb_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(masks_c, masks_a, rtol=1e-4, atol=1e-4)

    # independent oracle for the merged weight: W + alpha/r * B @ A
    base = tiny_bundle(seed=0).tracker.vision_encoder.backbone.layers[1].attention.v_proj.weight
    layer = pm.get_base_model().vision_encoder.backbone.layers[1].attention.v_proj
    expected = base + (settings.alpha / settings.r) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    got = merged.tracker.vision_encoder.backbone.layers[1].attention.v_proj.weight
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)


def test_adapter_for_missing_component(tmp_path):
    import json

    b, pm, settings = _trained_adapter(tmp_path)
    with pytest.raises(ModelError, match="not a LoRA adapter"):
        load_adapter(tiny_bundle(), tmp_path)
    # an adapter for a backend the bundle did not load (here: the detector) is refused, not silently skipped
    cfg = tmp_path / "adapter" / "oncoseg_lora.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "component": "detector"}))
    with pytest.raises(ModelError, match="adapts the 'detector', which this model has not loaded"):
        load_adapter(tiny_bundle(text=False), tmp_path / "adapter")
