"""Meta-layout (fused qkv, proj, Lightning `model.` prefix, LoRA A/B pairs) -> transformers layout round trip."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from OncoSegLib.errors import ModelError
from OncoSegLib.models.convert_meta import convert_checkpoint_to_folder
from OncoSegLib.models.loading import load_bundle
from OncoSegLib.models.tiny import save_tiny_checkpoint

VIT = "detector_model.vision_encoder.backbone."
NECK = "detector_model.vision_encoder.neck."


class _Evil:
    pass


def to_meta(sd):
    """Inverse mapping written independently in the test: transformers ViT/neck names -> Meta's."""
    out, qkv = {}, {}
    for k, v in sd.items():
        if k.startswith(VIT):
            r = k[len(VIT):]
            m = re.match(r"layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)", r)
            if m:
                qkv.setdefault((m[1], m[3]), {})[m[2]] = v
                continue
            r = (r.replace("embeddings.patch_embeddings.projection.", "patch_embed.proj.")
                 .replace("layer_norm.", "ln_pre.") if r.startswith(("embeddings.patch", "layer_norm.")) else r)
            if r == "embeddings.position_embeddings":
                r, v = "pos_embed", torch.cat([torch.full_like(v[:, :1], 7.0), v], dim=1)  # + cls position
            r = re.sub(r"layers\.(\d+)\.layer_norm(\d)\.", r"blocks.\1.norm\2.", r)
            r = re.sub(r"layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj.", r)
            r = re.sub(r"layers\.(\d+)\.mlp\.", r"blocks.\1.mlp.", r)
            out["model.backbone.vision_backbone.trunk." + r] = v
        elif k.startswith(NECK):
            r = k[len(NECK):]
            m = re.match(r"fpn_layers\.(\d+)\.(.*)", r)
            lvl, rest = m[1], m[2]
            rest = (rest.replace("proj1.", "conv_1x1.").replace("proj2.", "conv_3x3.")
                    .replace("scale_layers.2.", "dconv_2x2_1.")
                    .replace("scale_layers.0.", "dconv_2x2_0." if lvl == "0" else "dconv_2x2."))
            out[f"model.backbone.vision_backbone.convs.{lvl}.{rest}"] = v
        else:
            out["model." + k] = v  # already transformers names: must pass through (prefix stripped once)
    for (layer, kind), d in qkv.items():
        out[f"model.backbone.vision_backbone.trunk.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [d["q"], d["k"], d["v"]], 0)
    out["model.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis"] = torch.zeros(4, 2)  # precomputed RoPE
    return out


def test_meta_checkpoint_round_trip(tmp_path):
    ck = save_tiny_checkpoint(tmp_path / "ref", seed=0)
    sd = load_file(str(ck / "model.safetensors"))
    meta = to_meta(sd)
    assert not any(k.startswith("model." + VIT) for k in meta)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 32, generator=g) * 0.1
    b = torch.randn(96, 4, generator=g) * 0.1
    meta["model.backbone.vision_backbone.trunk.blocks.1.attn.qkv.lora_A.weight"] = a
    meta["model.backbone.vision_backbone.trunk.blocks.1.attn.qkv.lora_B.weight"] = b
    src = tmp_path / "oncoseg"
    src.mkdir()
    torch.save({"state_dict": meta, "hyper_parameters": {"lora_r": 16, "lora_alpha": 32}}, src / "last.ckpt")
    (src / "config.json").write_text((ck / "config.json").read_text())

    out = convert_checkpoint_to_folder(src / "last.ckpt", tmp_path / "converted")
    conv = load_file(str(out / "model.safetensors"))
    # oracle: the original keys, with the LoRA delta (alpha/r = 2) split over q, k, v of block 1
    delta = 2.0 * b @ a
    expected = dict(sd)
    for i, n in enumerate("qkv"):
        key = f"{VIT}layers.1.attention.{n}_proj.weight"
        expected[key] = sd[key] + delta[32 * i: 32 * (i + 1)]
    assert set(conv) == set(expected)
    for k in expected:
        torch.testing.assert_close(conv[k], expected[k], rtol=1e-6, atol=1e-6, msg=k)

    # and the model runs identically to the reference with the delta applied by hand
    ref = load_bundle(ck, device="cpu", components=("tracker",))
    with torch.no_grad():
        for i, n in enumerate("qkv"):
            getattr(ref.tracker.vision_encoder.backbone.layers[1].attention, f"{n}_proj").weight += \
                delta[32 * i: 32 * (i + 1)]
    got = load_bundle(out, device="cpu", components=("tracker",))
    x = torch.rand(1, 3, 112, 112, generator=g)
    with torch.no_grad():
        e1, e2 = ref.tracker.get_image_embeddings(x), got.tracker.get_image_embeddings(x)
    for u, v in zip(e1, e2):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def test_unknown_keys_and_unsafe_pickles_refused(tmp_path):
    torch.save({"state_dict": {"model.some.unknown.weight": torch.zeros(2)}}, tmp_path / "a.ckpt")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no known transformers name"):
        convert_checkpoint_to_folder(tmp_path / "a.ckpt", tmp_path / "out")

    # a pickle needing arbitrary code (a class) must never be loaded
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Evil()}, tmp_path / "b.ckpt")
    with pytest.raises(ModelError, match="safely"):
        convert_checkpoint_to_folder(tmp_path / "b.ckpt", tmp_path / "out2")
