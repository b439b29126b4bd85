"""Meta-layout SAM3 checkpoints (facebookresearch/sam3 names, Lightning ``model.`` prefix, LoRA A/B pairs) ->
transformers layout.

Oracles: (1) the real key list + shapes of Meta's SAM3 video model (facebookresearch/sam3 @ 99d02f2, recorded in
``Testing/data/sam3_meta_keys.tsv.gz``: key names and shapes of ``build_sam3_video_model()``'s state dict, read
once from Meta's public model) against transformers'
``Sam3VideoModel`` built on the meta device; (2) an inverse mapping (transformers -> Meta) written here by hand from
the mapping tables of transformers' conversion scripts, applied to a tiny model, converted back and compared key for
key and output for output (tracker masks, detector logits, video-tracker propagation); (3) LoRA deltas applied by
hand to the reference model.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from OncoSegLib.errors import ModelError
from OncoSegLib.models.convert_meta import (
    convert_checkpoint_to_folder,
    convert_with_lora,
    default_config_if_full_size,
)
from OncoSegLib.models.loading import load_bundle
from OncoSegLib.models.tiny import save_tiny_checkpoint

DATA = Path(__file__).parent / "data"
S = 112  # tiny model input side


class _Evil:
    pass


# ------------------------------------------------------------------------------------- inverse mapping (HF -> Meta)
# Written from the tables of transformers' convert_sam3_to_hf.py / convert_sam3_video_to_hf.py, read backwards.
def _m1(fmt):  # transformers' 1-based "layerN" -> Meta's 0-based "layers.N-1"
    return lambda m: fmt.format(*m.groups()[:-1], int(m.groups()[-1]) - 1)


_INV_DETECTOR = [  # after "detector_model." ; fused q/k/v are marked with "<qkv:x>" / "<in:x>"
    (r"^vision_encoder\.backbone\.embeddings\.position_embeddings$", "backbone.vision_backbone.trunk.pos_embed"),
    (r"^vision_encoder\.backbone\.embeddings\.patch_embeddings\.projection\.",
     "backbone.vision_backbone.trunk.patch_embed.proj."),
    (r"^vision_encoder\.backbone\.layer_norm\.", "backbone.vision_backbone.trunk.ln_pre."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.layer_norm(\d)\.",
     r"backbone.vision_backbone.trunk.blocks.\1.norm\2."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.o_proj\.",
     r"backbone.vision_backbone.trunk.blocks.\1.attn.proj."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.([qkv])_proj\.(\w+)$",
     r"backbone.vision_backbone.trunk.blocks.\1.attn.qkv.\3<qkv:\2>"),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.mlp\.", r"backbone.vision_backbone.trunk.blocks.\1.mlp."),
    (r"^vision_encoder\.neck\.fpn_layers\.", "backbone.vision_backbone.convs."),
    (r"^text_encoder\.text_model\.embeddings\.token_embedding\.",
     "backbone.language_backbone.encoder.token_embedding."),
    (r"^text_encoder\.text_model\.embeddings\.position_embedding\.weight$",
     "backbone.language_backbone.encoder.positional_embedding"),
    (r"^text_encoder\.text_model\.final_layer_norm\.", "backbone.language_backbone.encoder.ln_final."),
    (r"^text_encoder\.text_projection\.weight$", "backbone.language_backbone.encoder.text_projection<T>"),
    (r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)$",
     r"backbone.language_backbone.encoder.transformer.resblocks.\1.attn.in_proj_\3<in:\2>"),
    (r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
     r"backbone.language_backbone.encoder.transformer.resblocks.\1.attn.out_proj."),
    (r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.",
     r"backbone.language_backbone.encoder.transformer.resblocks.\1.ln_\2."),
    (r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.",
     r"backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_fc."),
    (r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.",
     r"backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_proj."),
    (r"^text_projection\.", "backbone.language_backbone.resizer."),
    # geometry encoder
    (r"^geometry_encoder\.layers\.(\d+)\.cross_attn\.o_proj\.",
     r"geometry_encoder.encode.\1.cross_attn_image.out_proj."),
    (r"^geometry_encoder\.layers\.(\d+)\.cross_attn\.([qkv])_proj\.(\w+)$",
     r"geometry_encoder.encode.\1.cross_attn_image.in_proj_\3<in:\2>"),
    (r"^geometry_encoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"geometry_encoder.encode.\1.self_attn.out_proj."),
    (r"^geometry_encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)$",
     r"geometry_encoder.encode.\1.self_attn.in_proj_\3<in:\2>"),
    (r"^geometry_encoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"geometry_encoder.encode.\1.linear\2."),
    (r"^geometry_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"geometry_encoder.encode.\1.norm\2."),
    (r"^geometry_encoder\.vision_layer_norm\.", "geometry_encoder.img_pre_norm."),
    (r"^geometry_encoder\.prompt_layer_norm\.", "geometry_encoder.norm."),
    (r"^geometry_encoder\.output_layer_norm\.", "geometry_encoder.encode_norm."),
    (r"^geometry_encoder\.", "geometry_encoder."),
    # DETR encoder
    (r"^detr_encoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"transformer.encoder.layers.\1.self_attn.out_proj."),
    (r"^detr_encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)$",
     r"transformer.encoder.layers.\1.self_attn.in_proj_\3<in:\2>"),
    (r"^detr_encoder\.layers\.(\d+)\.cross_attn\.o_proj\.",
     r"transformer.encoder.layers.\1.cross_attn_image.out_proj."),
    (r"^detr_encoder\.layers\.(\d+)\.cross_attn\.([qkv])_proj\.(\w+)$",
     r"transformer.encoder.layers.\1.cross_attn_image.in_proj_\3<in:\2>"),
    (r"^detr_encoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"transformer.encoder.layers.\1.linear\2."),
    (r"^detr_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"transformer.encoder.layers.\1.norm\2."),
    # DETR decoder
    (r"^detr_decoder\.presence_head\.layer(\d)\.", _m1("transformer.decoder.presence_token_head.layers.{}.")),
    (r"^detr_decoder\.presence_layer_norm\.", "transformer.decoder.presence_token_out_norm."),
    (r"^detr_decoder\.output_layer_norm\.", "transformer.decoder.norm."),
    (r"^detr_decoder\.box_head\.layer(\d)\.", _m1("transformer.decoder.bbox_embed.layers.{}.")),
    (r"^detr_decoder\.instance_box_head\.layer(\d)\.", _m1("transformer.decoder.instance_bbox_embed.layers.{}.")),
    (r"^detr_decoder\.ref_point_head\.layer(\d)\.", _m1("transformer.decoder.ref_point_head.layers.{}.")),
    (r"^detr_decoder\.box_rpb_embed_([xy])\.layer(\d)\.", _m1("transformer.decoder.boxRPB_embed_{}.layers.{}.")),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"transformer.decoder.layers.\1.self_attn.out_proj."),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)$",
     r"transformer.decoder.layers.\1.self_attn.in_proj_\3<in:\2>"),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn\.o_proj\.", r"transformer.decoder.layers.\1.ca_text.out_proj."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn\.([qkv])_proj\.(\w+)$",
     r"transformer.decoder.layers.\1.ca_text.in_proj_\3<in:\2>"),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn\.o_proj\.",
     r"transformer.decoder.layers.\1.cross_attn.out_proj."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn\.([qkv])_proj\.(\w+)$",
     r"transformer.decoder.layers.\1.cross_attn.in_proj_\3<in:\2>"),
    (r"^detr_decoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"transformer.decoder.layers.\1.linear\2."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.catext_norm."),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"^detr_decoder\.layers\.(\d+)\.mlp_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^detr_decoder\.", "transformer.decoder."),
    # scoring and segmentation head
    (r"^dot_product_scoring\.text_mlp\.layer(\d)\.", _m1("dot_prod_scoring.prompt_mlp.layers.{}.")),
    (r"^dot_product_scoring\.text_mlp_out_norm\.", "dot_prod_scoring.prompt_mlp.out_norm."),
    (r"^dot_product_scoring\.text_proj\.", "dot_prod_scoring.prompt_proj."),
    (r"^dot_product_scoring\.query_proj\.", "dot_prod_scoring.hs_proj."),
    (r"^mask_decoder\.pixel_decoder\.", "segmentation_head.pixel_decoder."),
    (r"^mask_decoder\.mask_embedder\.layers\.", "segmentation_head.mask_predictor.mask_embed.layers."),
    (r"^mask_decoder\.instance_projection\.", "segmentation_head.instance_seg_head."),
    (r"^mask_decoder\.semantic_projection\.", "segmentation_head.semantic_seg_head."),
    (r"^mask_decoder\.prompt_cross_attn\.o_proj\.", "segmentation_head.cross_attend_prompt.out_proj."),
    (r"^mask_decoder\.prompt_cross_attn\.([qkv])_proj\.(\w+)$",
     r"segmentation_head.cross_attend_prompt.in_proj_\2<in:\1>"),
    (r"^mask_decoder\.prompt_cross_attn_norm\.", "segmentation_head.cross_attn_norm."),
]
_NECK_LEVEL = {("0", "scale_layers.0"): "dconv_2x2_0", ("0", "scale_layers.2"): "dconv_2x2_1",
               ("1", "scale_layers.0"): "dconv_2x2"}
_INV_TRACKER = [  # after "tracker_model."
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$",
     "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.point_embed\.weight$", "sam_prompt_encoder.point_embeddings<split>"),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^shared_image_embedding\.", None),  # the same matrix as the prompt encoder's in Meta's tracker
    (r"^mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\."
     r"(proj_in|layers\.\d+|proj_out)\.",
     r"sam_mask_decoder.\1.<mlp:\2>."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.(\w+)\.o_proj\.",
     r"sam_mask_decoder.transformer.layers.\1.\2.out_proj."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_in\.", r"sam_mask_decoder.transformer.layers.\1.mlp.lin1."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_out\.",
     r"sam_mask_decoder.transformer.layers.\1.mlp.lin2."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r"sam_mask_decoder.transformer.layers.\1.norm\2."),
    (r"^mask_decoder\.transformer\.final_attn_token_to_image\.o_proj\.",
     "sam_mask_decoder.transformer.final_attn_token_to_image.out_proj."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "sam_mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"^memory_attention\.layers\.(\d+)\.(\w+)\.o_proj\.", r"transformer.encoder.layers.\1.\2.out_proj."),
    (r"^memory_attention\.layers\.(\d+)\.layer_norm(\d)\.", r"transformer.encoder.layers.\1.norm\2."),
    (r"^memory_attention\.layer_norm\.", "transformer.encoder.norm."),
    (r"^memory_attention\.", "transformer.encoder."),
    (r"^memory_encoder\.mask_downsampler\.(layers\.\d+\.conv|layers\.\d+\.layer_norm|final_conv)\.",
     r"maskmem_backbone.mask_downsampler.encoder.<ds:\1>."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.depthwise_conv\.", r"maskmem_backbone.fuser.layers.\1.dwconv."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.pointwise_conv(\d)\.",
     r"maskmem_backbone.fuser.layers.\1.pwconv\2."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.layer_norm\.", r"maskmem_backbone.fuser.layers.\1.norm."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.scale$", r"maskmem_backbone.fuser.layers.\1.gamma"),
    (r"^memory_encoder\.feature_projection\.", "maskmem_backbone.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "maskmem_backbone.out_proj."),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^object_pointer_proj\.(proj_in|layers\.\d+|proj_out)\.", r"obj_ptr_proj.<mlp:\1>."),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^mask_downsample\.", "mask_downsample."),
]


def _first(rules, rest):
    for pat, rep in rules:
        if re.search(pat, rest):
            return None if rep is None else re.sub(pat, rep, rest, count=1)
    raise AssertionError(f"test inverse mapping has no rule for {rest}")


def to_meta(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers facebook/sam3 layout -> Meta's public sam3.pt layout (``detector.*`` / ``tracker.*``)."""
    named: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("detector_model."):
            new = "detector." + _first(_INV_DETECTOR, k[len("detector_model."):])
        elif k.startswith("tracker_neck."):
            m = re.match(r"tracker_neck\.fpn_layers\.(\d+)\.(proj1|proj2|scale_layers\.\d)\.(\w+)$", k)
            part = {"proj1": "conv_1x1", "proj2": "conv_3x3"}.get(m[2]) or _NECK_LEVEL[(m[1], m[2])]
            new = f"detector.backbone.vision_backbone.sam2_convs.{m[1]}.{part}.{m[3]}"
        else:
            rest = _first(_INV_TRACKER, k[len("tracker_model."):])
            if rest is None:
                continue
            new = "tracker." + rest
        if new.startswith("detector.backbone.vision_backbone.convs."):
            m = re.match(r"(.*convs\.)(\d+)\.(proj1|proj2|scale_layers\.\d)\.(\w+)$", new)
            part = {"proj1": "conv_1x1", "proj2": "conv_3x3"}.get(m[3]) or _NECK_LEVEL[(m[2], m[3])]
            new = f"{m[1]}{m[2]}.{part}.{m[4]}"
        named[new] = v
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    mlp_depth: dict[str, int] = {}
    for k in named:
        m = re.search(r"<mlp:layers\.(\d+)>", k)
        if m:
            mlp_depth[k[:m.start()]] = max(mlp_depth.get(k[:m.start()], 0), int(m[1]) + 1)
    n_ds = sum(1 for k in named if re.search(r"<ds:layers\.\d+\.conv>\.weight", k))
    for k, v in named.items():
        m = re.search(r"<(qkv|in):([qkv])>$", k)
        if m:
            fused.setdefault(k[:m.start()], {})[m[2]] = v
            continue
        if k.endswith("<T>"):
            out[k[:-3]] = v.T.contiguous()
            continue
        if k.endswith("<split>"):
            for i in range(v.shape[0]):
                out[f"{k[:-7]}.{i}.weight"] = v[i:i + 1].clone()
            continue
        m = re.search(r"<mlp:(proj_in|layers\.(\d+)|proj_out)>", k)
        if m:
            group = k[:m.start()]
            idx = 0 if m[1] == "proj_in" else mlp_depth.get(group, 0) + 1 if m[1] == "proj_out" else int(m[2]) + 1
            k = f"{group}layers.{idx}{k[m.end():]}"
        m = re.search(r"<ds:(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)>", k)
        if m:
            idx = 3 * n_ds if m[1] is None else 3 * int(m[1]) + (0 if m[2] == "conv" else 1)
            k = f"{k[:m.start()]}{idx}{k[m.end():]}"
        if k == "detector.backbone.vision_backbone.trunk.pos_embed":
            v = torch.cat([torch.full_like(v[:, :1], 7.0), v], dim=1)  # Meta keeps a (unused) cls row
        out[k] = v
    for k, parts in fused.items():
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    for i in range(2):  # pre-computed RoPE tables: present in Meta checkpoints, dropped by the conversion
        out[f"detector.backbone.vision_backbone.trunk.blocks.{i}.attn.freqs_cis"] = torch.zeros(4, 2)
    return out


# ------------------------------------------------------------------------------------- fixtures and outputs
@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A tiny facebook/sam3 folder whose tracker Fourier matrices are equal (as in every real checkpoint)."""
    root = tmp_path_factory.mktemp("convert")
    tiny = save_tiny_checkpoint(root / "tiny", seed=0)
    sd = load_file(str(tiny / "model.safetensors"))
    sd["tracker_model.shared_image_embedding.positional_embedding"] = \
        sd["tracker_model.prompt_encoder.shared_embedding.positional_embedding"].clone()
    folder = root / "ref"
    shutil.copytree(tiny, folder)
    save_file(sd, str(folder / "model.safetensors"))
    bundle = load_bundle(folder, device="cpu", components=("tracker", "detector", "video"))
    return {"root": root, "folder": folder, "sd": sd, "outputs": outputs(bundle)}


def outputs(bundle) -> dict[str, torch.Tensor]:
    """Tracker masks + IoU (point and box), detector logits + presence + masks (text), video masks on 2 frames."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
        Sam3TrackerVideoInferenceSession,
    )

    g = torch.Generator().manual_seed(1)
    frames = torch.rand(2, 3, S, S, generator=g) * 2 - 1
    res: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        emb = bundle.tracker.get_image_embeddings(frames[:1])
        out = bundle.tracker(image_embeddings=emb, input_points=torch.tensor([[[[40.0, 60.0]]]]),
                             input_labels=torch.tensor([[[1]]]), multimask_output=False)
        res["tracker_point_masks"], res["tracker_iou"] = out.pred_masks, out.iou_scores
        out = bundle.tracker(image_embeddings=emb, input_boxes=torch.tensor([[[20.0, 30.0, 90.0, 80.0]]]),
                             multimask_output=False)
        res["tracker_box_masks"] = out.pred_masks
        tok = bundle.tokenize(["liver tumor"])
        det = bundle.detector(pixel_values=frames[:1], **tok)
        res["detector_logits"], res["detector_presence"] = det.pred_logits, det.presence_logits
        res["detector_masks"], res["detector_boxes"] = det.pred_masks, det.pred_boxes
        session = Sam3TrackerVideoInferenceSession(video=frames, video_height=S, video_width=S, dtype=torch.float32)
        mask = torch.zeros(1, 1, S, S)
        mask[..., 30:70, 40:80] = 1.0
        session.add_mask_inputs(session.obj_id_to_idx(1), 0, mask)
        session.obj_with_new_inputs = [1]
        masks = [bundle.video(inference_session=session, frame_idx=0).pred_masks]
        for o in bundle.video.propagate_in_video_iterator(session, start_frame_idx=0):
            if o.frame_idx != 0:
                masks.append(o.pred_masks)
        res["video_masks"] = torch.cat(masks)
    return res


def _write_ckpt(path: Path, state: dict[str, torch.Tensor], hparams: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "hyper_parameters": hparams or {},
                "epoch": 3}, path)
    return path


# ------------------------------------------------------------------------------------- tests
def test_real_meta_key_list_converts_to_the_transformers_layout():
    """Every key of Meta's SAM3 video model (real names and shapes) lands on a transformers Sam3VideoModel key."""
    from transformers import Sam3VideoConfig, Sam3VideoModel

    meta: dict[str, torch.Tensor] = {}
    with gzip.open(DATA / "sam3_meta_keys.tsv.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            key, shape = line.rstrip("\n").split("\t")
            meta[key] = torch.empty(tuple(int(x) for x in shape.strip("()").split(",") if x.strip()), device="meta")
    assert len(meta) == 1465 and any(k.startswith("tracker.maskmem_backbone.") for k in meta)
    converted, deltas, report = convert_with_lora(meta)
    with torch.device("meta"):
        hf = Sam3VideoModel(Sam3VideoConfig())
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: s for k, s in got.items() if s != expected[k]} == {}
    assert not deltas and len(report.dropped) == 32 + 6  # 32 RoPE tables + 6 geometry point projections
    assert all("freqs_cis" in k or "points_" in k for k in report.dropped)
    cfg = default_config_if_full_size(converted)  # a complete sam3.pt converts without a config.json beside it
    assert cfg is not None and cfg["model_type"] == "sam3_video"
    converted.pop(next(iter(converted)))
    assert default_config_if_full_size(converted) is None


def test_meta_checkpoint_round_trip_all_components(ref, tmp_path):
    meta = to_meta(ref["sd"])
    assert not any(k.startswith(("detector_model.", "tracker_model.", "tracker_neck.")) for k in meta)
    assert any(k.startswith("tracker.maskmem_backbone.mask_downsampler.encoder.") for k in meta)
    src = _write_ckpt(tmp_path / "oncoseg" / "last.ckpt", meta, {"lr": 1e-4})
    (src.parent / "config.json").write_text((ref["folder"] / "config.json").read_text())
    out = convert_checkpoint_to_folder(src, tmp_path / "converted")
    conv = load_file(str(out / "model.safetensors"))
    assert set(conv) == set(ref["sd"])
    for k, v in ref["sd"].items():
        assert torch.equal(conv[k], v), k
    record = json.loads((out / "oncoseg_conversion.json").read_text())
    assert record["kind"] == "model" and len(record["dropped"]) == 2
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(ref["folder"] / f, out / f)
    got = outputs(load_bundle(out, device="cpu", components=("tracker", "detector", "video")))
    for name, value in ref["outputs"].items():
        assert torch.equal(got[name], value), name


def _lora_pairs(g: torch.Generator, meta: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    """LoRA pairs in Meta naming on the ViT's fused qkv + proj (both blocks) and a DETR decoder in_proj."""
    pairs = {}
    layers = ["detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv",
              "detector.backbone.vision_backbone.trunk.blocks.1.attn.qkv",
              "detector.backbone.vision_backbone.trunk.blocks.1.attn.proj"]
    for layer in layers:
        w = meta[f"{layer}.weight"]
        pairs[f"{layer}.lora_A.weight"] = torch.randn(r, w.shape[1], generator=g) * 0.2
        pairs[f"{layer}.lora_B.weight"] = torch.randn(w.shape[0], r, generator=g) * 0.2
    return pairs


def _expected_with_lora(sd: dict[str, torch.Tensor], pairs: dict[str, torch.Tensor], scale: float):
    """Oracle: the transformers weights with ``scale * B @ A`` added by hand (q/k/v = thirds of a fused delta)."""
    exp = dict(sd)
    vit = "detector_model.vision_encoder.backbone.layers."
    for key in [k for k in pairs if k.endswith("lora_A.weight")]:
        layer = key[: -len(".lora_A.weight")]
        delta = scale * pairs[f"{layer}.lora_B.weight"] @ pairs[key]
        block = re.search(r"blocks\.(\d+)", layer)[1]
        if layer.endswith("qkv"):
            d = delta.shape[0] // 3
            for i, n in enumerate("qkv"):
                k = f"{vit}{block}.attention.{n}_proj.weight"
                exp[k] = sd[k] + delta[i * d:(i + 1) * d]
        else:
            k = f"{vit}{block}.attention.o_proj.weight"
            exp[k] = sd[k] + delta
    return exp


def test_full_checkpoint_with_lora_is_merged_exactly(ref, tmp_path):
    meta = to_meta(ref["sd"])
    g = torch.Generator().manual_seed(2)
    pairs = _lora_pairs(g, meta, r=4)
    state = dict(meta)
    for key, v in pairs.items():  # peft naming: adapter name, base weight under base_layer, PeftModel wrapper
        state[key.replace(".weight", ".default.weight")] = v
    layer = "detector.backbone.vision_backbone.trunk.blocks.1.attn.proj"
    state[f"{layer}.base_layer.weight"] = state.pop(f"{layer}.weight")
    state[f"{layer}.base_layer.bias"] = state.pop(f"{layer}.bias")
    state = {f"base_model.model.{k}": v for k, v in state.items()}
    src = _write_ckpt(tmp_path / "full.ckpt", state, {"lora_r": 4, "lora_alpha": 12})
    out = convert_checkpoint_to_folder(src, tmp_path / "merged", base=ref["folder"])
    conv = load_file(str(out / "model.safetensors"))
    expected = _expected_with_lora(ref["sd"], pairs, scale=12 / 4)
    assert set(conv) == set(expected)
    for k in expected:
        torch.testing.assert_close(conv[k], expected[k], rtol=1e-6, atol=1e-6, msg=k)
    assert json.loads((out / "oncoseg_conversion.json").read_text())["lora_merged"] == 7  # 2 x q,k,v + o


@pytest.mark.parametrize("hparams, r", [
    (None, 4),                 # a bare state dict (.pt): no hyper-parameters at all
    ({"lr": 1e-4}, 4),         # Lightning checkpoint whose hyper-parameters say nothing about LoRA
    ({"lora_r": 8}, 8),        # rank given, alpha not
    ({}, 16),                  # Onco-Seg's own rank
])
def test_meta_lora_without_alpha_uses_onco_segs_default_scale_2(ref, tmp_path, hparams, r):
    """Onco-Seg trains r=16, alpha=32: without an alpha in the checkpoint the scale is alpha / r = 2 (alpha = 2 r)
    for any rank — not peft's alpha 8, not 1, not a fixed alpha of 32. Oracle: W + 2 * B @ A by hand."""
    meta = to_meta(ref["sd"])
    pairs = _lora_pairs(torch.Generator().manual_seed(7), meta, r=r)
    state = {**meta, **pairs}
    if hparams is None:
        src = tmp_path / "bare.pt"
        torch.save(state, src)
    else:
        src = _write_ckpt(tmp_path / "full.ckpt", state, hparams)
    out = convert_checkpoint_to_folder(src, tmp_path / "merged", base=ref["folder"])
    conv = load_file(str(out / "model.safetensors"))
    expected = _expected_with_lora(ref["sd"], pairs, scale=2.0)
    for k in expected:
        torch.testing.assert_close(conv[k], expected[k], rtol=1e-6, atol=1e-6, msg=k)
    record = json.loads((out / "oncoseg_conversion.json").read_text())
    assert (record["lora_rank"], record["lora_alpha"]) == (r, 2.0 * r)
    # the same pairs without base weights become an adapter with the same scale (peft: alpha / r = 2)
    ad = convert_checkpoint_to_folder(_write_ckpt(tmp_path / "lora.ckpt", pairs, hparams), tmp_path / "adapter")
    cfg = json.loads((ad / "adapter_config.json").read_text())
    assert cfg["lora_alpha"] / cfg["r"] == 2.0 and cfg["r"] == r


def test_lora_and_heads_only_checkpoint_becomes_a_peft_adapter(ref, tmp_path):
    """Onco-Seg style: LoRA pairs + fully trained detector heads, nothing else -> unmerged peft adapter."""
    meta = to_meta(ref["sd"])
    g = torch.Generator().manual_seed(3)
    pairs = _lora_pairs(g, meta, r=4)
    heads = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in meta.items()
             if k.startswith("detector.segmentation_head.")}
    layer = "detector.backbone.vision_backbone.trunk.blocks.1.attn.proj"  # loralib naming: bare lora_A / lora_B
    loralib = {k.replace(f"{layer}.lora_A.weight", f"{layer}.lora_A").replace(f"{layer}.lora_B.weight",
                                                                           f"{layer}.lora_B"): v
               for k, v in pairs.items()}
    assert f"{layer}.lora_A" in loralib
    src = _write_ckpt(tmp_path / "oncoseg.ckpt", {**loralib, **heads},
                      {"lora": {"r": 4, "alpha": 8, "dropout": 0.1}, "lr": 1e-4})
    out = convert_checkpoint_to_folder(src, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    settings = json.loads((out / "oncoseg_lora.json").read_text())
    assert settings["component"] == "detector" and settings["r"] == 4 and settings["alpha"] == 8
    with pytest.raises(ModelError, match="adapter"):  # a bare adapter is not a model
        load_bundle(out, device="cpu", components=("tracker",))

    # oracle: the reference weights with the LoRA deltas and the new head weights written in by hand
    expected = _expected_with_lora(ref["sd"], pairs, scale=8 / 4)
    conv_heads = convert_with_lora({k[len("detector."):]: v for k, v in heads.items()})[0]
    assert set(conv_heads) and all(k.startswith("detector_model.mask_decoder.") for k in conv_heads)
    for k in conv_heads:
        assert k in expected
    hand = ref["root"] / "hand"
    shutil.copytree(ref["folder"], hand, dirs_exist_ok=True)
    expected.update({k: v for k, v in conv_heads.items()})
    save_file(expected, str(hand / "model.safetensors"))
    want = outputs(load_bundle(hand, device="cpu", components=("tracker", "detector", "video")))
    got = outputs(load_bundle(ref["folder"], device="cpu", components=("tracker", "detector", "video"), adapter=out))
    for name in want:  # unmerged LoRA vs merged weights: equal up to float rounding
        scale = float(want[name].abs().max())
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
    for name in ("tracker_point_masks", "detector_masks", "video_masks"):  # the adapter really changes them
        w, r = want[name][1:] if name == "video_masks" else want[name], ref["outputs"][name]  # frame 0 = input
        r = r[1:] if name == "video_masks" else r
        assert (w - r).abs().max() > 0.05 * w.abs().max(), name

    merged = convert_checkpoint_to_folder(src, tmp_path / "merged", base=ref["folder"], lora="merge")
    conv = load_file(str(merged / "model.safetensors"))
    for k in expected:
        torch.testing.assert_close(conv[k], expected[k], rtol=1e-6, atol=1e-6, msg=k)


def test_refusals(ref, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    torch.save({"state_dict": {"model.some.unknown.weight": torch.zeros(2)}}, tmp_path / "a.ckpt")
    with pytest.raises(ModelError, match="no known transformers name"):
        convert_checkpoint_to_folder(tmp_path / "a.ckpt", tmp_path / "out")
    # a tracker key Meta never had, next to good ones
    torch.save({"model": {"tracker.sam_mask_decoder.new_head.weight": torch.zeros(2),
                          "tracker.no_mem_embed": torch.zeros(1, 1, 128)}}, tmp_path / "b.pt")
    with pytest.raises(ModelError, match="tracker.sam_mask_decoder.new_head.weight"):
        convert_checkpoint_to_folder(tmp_path / "b.pt", tmp_path / "out")
    # only ONE leading "model." is stripped: "model.model.x" keeps its second prefix and is unknown
    torch.save({"state_dict": {"model.model.detector.transformer.decoder.norm.weight": torch.zeros(2)}},
               tmp_path / "c.ckpt")
    with pytest.raises(ModelError, match="model.detector"):
        convert_checkpoint_to_folder(tmp_path / "c.ckpt", tmp_path / "out")
    # an incomplete LoRA pair
    torch.save({"state_dict": {"model.detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.lora_A.weight":
                               torch.zeros(4, 32)}}, tmp_path / "d.ckpt")
    with pytest.raises(ModelError, match="incomplete"):
        convert_checkpoint_to_folder(tmp_path / "d.ckpt", tmp_path / "out")
    # two peft adapters in one checkpoint: which one is meant is unknowable
    qkv = "model.detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv"
    torch.save({"state_dict": {f"{qkv}.lora_{ab}.{name}.weight": torch.zeros(4, 4)
                               for ab in "AB" for name in ("default", "other")}}, tmp_path / "d2.ckpt")
    with pytest.raises(ModelError, match="several LoRA adapters"):
        convert_checkpoint_to_folder(tmp_path / "d2.ckpt", tmp_path / "out")
    # LoRA-only checkpoint asked to merge without a base
    torch.save({"state_dict": {"model.detector.transformer.decoder.layers.0.linear1.lora_A.weight": torch.zeros(4, 128),
                               "model.detector.transformer.decoder.layers.0.linear1.lora_B.weight": torch.zeros(64, 4),
                               "model.tracker.sam_mask_decoder.iou_token.weight": torch.zeros(1, 128)}},
               tmp_path / "e.ckpt")
    with pytest.raises(ModelError, match="base"):
        convert_checkpoint_to_folder(tmp_path / "e.ckpt", tmp_path / "out", lora="merge")
    # ... and as an adapter it would span detector and tracker heads: one adapter cannot hold both
    with pytest.raises(ModelError, match="both"):
        convert_checkpoint_to_folder(tmp_path / "e.ckpt", tmp_path / "out2")
    # a checkpoint for another model size is refused against the base
    meta = {"detector.transformer.decoder.norm.weight": torch.zeros(7), "detector.transformer.decoder.norm.bias":
            torch.zeros(7)}
    torch.save({"model": meta}, tmp_path / "f.pt")
    with pytest.raises(ModelError, match="shape"):
        convert_checkpoint_to_folder(tmp_path / "f.pt", tmp_path / "out3", base=ref["folder"])
    # a pickle needing arbitrary code (a class) must never be loaded
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Evil()}, tmp_path / "g.ckpt")
    with pytest.raises(ModelError, match="safely") as err:
        convert_checkpoint_to_folder(tmp_path / "g.ckpt", tmp_path / "out4")
    assert "\n" not in str(err.value)  # one line for the CLI (torch's own message spans several)
    # a truncated safetensors checkpoint is a ModelError too, not safetensors' own exception
    data = (ref["folder"] / "model.safetensors").read_bytes()
    (tmp_path / "h.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="corrupt or incomplete"):
        convert_checkpoint_to_folder(tmp_path / "h.safetensors", tmp_path / "out5")
