"""Onco-Seg / Meta-layout SAM3 checkpoints -> the transformers facebook/sam3 layout (full model or peft adapter).

Input: a PyTorch Lightning ``.ckpt`` (``{"state_dict": ..., "hyper_parameters": ...}``), a ``.pt``/``.pth``
(``{"model": ...}`` or a bare state dict) or ``.safetensors`` holding Meta's ``sam3`` key names:

- the public ``sam3.pt`` layout: ``detector.*`` (``Sam3Image``: ViT trunk, FPN necks incl. the tracker's
  ``sam2_convs``, CLIP text encoder, DETR encoder/decoder, geometry encoder, dot-product scoring, segmentation head)
  and ``tracker.*`` (SAM2-style tracker: ``sam_prompt_encoder``, ``sam_mask_decoder``, memory attention
  ``transformer.encoder``, memory encoder ``maskmem_backbone``, object pointers);
- the same without the ``detector.`` prefix (an image-only ``Sam3Image`` checkpoint; its interactive tracker is
  ``inst_interactive_predictor.model.*``) and transformers' internal variant (``sam3_model.*``,
  ``sam2_predictor.model.*``);
- LoRA pairs on any linear / conv layer: ``<layer>.lora_A[.<adapter>].weight`` + ``<layer>.lora_B...`` (peft; base
  weight at ``<layer>.base_layer.weight`` or ``<layer>.weight``) or loralib's ``<layer>.lora_A`` / ``<layer>.lora_B``.

Only ``torch.load(weights_only=True)`` or safetensors are used; only a leading ``model.`` (Lightning) is stripped.

The renaming rules follow transformers' own conversion scripts (huggingface/transformers
``src/transformers/models/sam3/convert_sam3_to_hf.py`` @ 7965ef76 and ``src/transformers/models/sam3_video/
convert_sam3_video_to_hf.py`` @ 2ebea7bb, not shipped in the wheel), rewritten here per section and checked
key-for-key and shape-for-shape against the module tree of facebookresearch/sam3 @ 99d02f2 (the recorded key list in
``Testing/data/sam3_meta_keys.tsv.gz``). Tensor surgery: fused ViT ``qkv`` and ``nn.MultiheadAttention`` ``in_proj``
are split in q, k, v (dim 0); the ViT position table loses its cls row; CLIP's ``text_projection`` is transposed;
the four prompt-encoder point embeddings are stacked; SAM2-style MLPs are renumbered (first -> ``proj_in``, last ->
``proj_out``); the prompt encoder's Fourier matrix is also the tracker's ``shared_image_embedding``; pre-computed RoPE
tables (``freqs_cis``) are dropped (transformers computes them).

LoRA: ``W' = W + (alpha / r) * B @ A`` with ``alpha``/``r`` from the Lightning hyper-parameters (Onco-Seg: 32 / 16).
A LoRA pair on a fused ``qkv`` / ``in_proj`` becomes three pairs sharing A with B split in thirds, which is exact.
A checkpoint that carries the base weights of its LoRA layers is merged; one that holds only LoRA pairs + trained
heads becomes a peft adapter folder for :mod:`OncoSegLib.models.lora` (unmerged; the heads go to
``oncoseg_heads.safetensors``; the adapter's backend is the one holding every adapted module: ``detector`` for
detector heads, ``tracker``/``video`` for tracker heads, ``tracker`` for ViT-only LoRA, which the bundle shares).
Inference is exact; for further training note that a split fused pair draws three dropout masks where Meta drew one.
Keys matching no rule are reported and refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import torch

from OncoSegLib.errors import ModelError

log = logging.getLogger(__name__)

HF_PREFIXES = ("detector_model.", "tracker_model.", "tracker_neck.")
DET = "detector_model."
TRK = "tracker_model."
VIT = DET + "vision_encoder.backbone."
CONVERSION_FILE = "oncoseg_conversion.json"

Repl = Union[str, Callable[["re.Match[str]"], str]]
Rules = list[tuple[str, Repl]]


def _plus1(fmt: str) -> Callable[["re.Match[str]"], str]:
    """Replacement writing Meta's 0-based ``layers.i`` as transformers' 1-based ``layer{i+1}``."""
    return lambda m: fmt.format(*m.groups()[:-1], int(m.groups()[-1]) + 1)


def _same(*names: str) -> Rules:
    """Identity rules for parameter/module names that transformers kept."""
    return [(rf"^({'|'.join(re.escape(n) for n in names)})(\.|$)", r"\1\2")]


# ---------------------------------------------------------------------------------------------------- rules
# Each section: (Meta prefix after the component prefix, transformers prefix, rules on the rest; first match wins).
# "{mlp:N}" / "{ds:N}" are placeholders resolved once all keys are known (see _resolve_placeholders).
_VIT: Rules = [
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^ln_pre\.", "layer_norm."),
    (r"^blocks\.(\d+)\.norm([12])\.", r"layers.\1.layer_norm\2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"layers.\1.attention.qkv."),  # split in q/k/v later
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc([12])\.", r"layers.\1.mlp.fc\2."),
]
_NECK: Rules = [
    (r"^(\d+)\.conv_1x1\.", r"\1.proj1."),
    (r"^(\d+)\.conv_3x3\.", r"\1.proj2."),
    (r"^(\d+)\.dconv_2x2_0\.", r"\1.scale_layers.0."),
    (r"^(\d+)\.dconv_2x2_1\.", r"\1.scale_layers.2."),
    (r"^(\d+)\.dconv_2x2\.", r"\1.scale_layers.0."),
    (r"^(\d+)\.maxpool_2x2\.", r"\1.scale_layers.0."),
]
_CLIP: Rules = [
    (r"^token_embedding\.", "text_model.embeddings.token_embedding."),
    (r"^positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^ln_final\.", "text_model.final_layer_norm."),
    (r"^text_projection$", "text_projection.weight"),  # transposed later
    (r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_", r"text_model.encoder.layers.\1.self_attn.in_proj_"),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"text_model.encoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.resblocks\.(\d+)\.ln_([12])\.", r"text_model.encoder.layers.\1.layer_norm\2."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_model.encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_model.encoder.layers.\1.mlp.fc2."),
]
_GEOMETRY: Rules = [
    (r"^encode\.(\d+)\.cross_attn_image\.out_proj\.", r"layers.\1.cross_attn.o_proj."),
    (r"^encode\.(\d+)\.cross_attn_image\.in_proj_", r"layers.\1.cross_attn.in_proj_"),
    (r"^encode\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.self_attn.o_proj."),
    (r"^encode\.(\d+)\.self_attn\.in_proj_", r"layers.\1.self_attn.in_proj_"),
    (r"^encode\.(\d+)\.linear([12])\.", r"layers.\1.mlp.fc\2."),
    (r"^encode\.(\d+)\.norm([123])\.", r"layers.\1.layer_norm\2."),
    (r"^img_pre_norm\.", "vision_layer_norm."),
    (r"^norm\.", "prompt_layer_norm."),
    (r"^encode_norm\.", "output_layer_norm."),
    *_same("boxes_direct_project", "boxes_pool_project", "boxes_pos_enc_project", "cls_embed", "label_embed",
           "final_proj"),  # points_*_project: transformers' geometry encoder takes boxes only -> dropped
]
_DETR_ENCODER: Rules = [
    (r"^layers\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.self_attn.o_proj."),
    (r"^layers\.(\d+)\.self_attn\.in_proj_", r"layers.\1.self_attn.in_proj_"),
    (r"^layers\.(\d+)\.cross_attn(?:_image)?\.out_proj\.", r"layers.\1.cross_attn.o_proj."),
    (r"^layers\.(\d+)\.cross_attn(?:_image)?\.in_proj_", r"layers.\1.cross_attn.in_proj_"),
    (r"^layers\.(\d+)\.linear([12])\.", r"layers.\1.mlp.fc\2."),
    (r"^layers\.(\d+)\.norm([123])\.", r"layers.\1.layer_norm\2."),
]
_DETR_DECODER: Rules = [
    *_same("query_embed", "reference_points", "instance_query_embed", "instance_reference_points",
           "presence_token"),
    (r"^presence_token_head\.layers\.(\d+)\.", _plus1("presence_head.layer{}.")),
    (r"^presence_token_out_norm\.", "presence_layer_norm."),
    (r"^norm\.", "output_layer_norm."),
    (r"^bbox_embed\.layers\.(\d+)\.", _plus1("box_head.layer{}.")),
    (r"^instance_bbox_embed\.layers\.(\d+)\.", _plus1("instance_box_head.layer{}.")),
    (r"^ref_point_head\.layers\.(\d+)\.", _plus1("ref_point_head.layer{}.")),
    (r"^boxRPB_embed_([xy])\.layers\.(\d+)\.", _plus1("box_rpb_embed_{}.layer{}.")),
    (r"^layers\.(\d+)\.self_attn\.out_proj\.", r"layers.\1.self_attn.o_proj."),
    (r"^layers\.(\d+)\.self_attn\.in_proj_", r"layers.\1.self_attn.in_proj_"),
    (r"^layers\.(\d+)\.ca_text\.out_proj\.", r"layers.\1.text_cross_attn.o_proj."),
    (r"^layers\.(\d+)\.ca_text\.in_proj_", r"layers.\1.text_cross_attn.in_proj_"),
    (r"^layers\.(\d+)\.cross_attn\.out_proj\.", r"layers.\1.vision_cross_attn.o_proj."),
    (r"^layers\.(\d+)\.cross_attn\.in_proj_", r"layers.\1.vision_cross_attn.in_proj_"),
    (r"^layers\.(\d+)\.linear([12])\.", r"layers.\1.mlp.fc\2."),
    (r"^layers\.(\d+)\.norm1\.", r"layers.\1.vision_cross_attn_layer_norm."),
    (r"^layers\.(\d+)\.catext_norm\.", r"layers.\1.text_cross_attn_layer_norm."),
    (r"^layers\.(\d+)\.norm2\.", r"layers.\1.self_attn_layer_norm."),
    (r"^layers\.(\d+)\.norm3\.", r"layers.\1.mlp_layer_norm."),
]
_SCORING: Rules = [
    (r"^prompt_mlp\.layers\.(\d+)\.", _plus1("text_mlp.layer{}.")),
    (r"^prompt_mlp\.out_norm\.", "text_mlp_out_norm."),
    (r"^prompt_proj\.", "text_proj."),
    (r"^hs_proj\.", "query_proj."),
]
_SEGMENTATION_HEAD: Rules = [
    (r"^pixel_decoder\.(conv_layers|norms)\.(\d+)\.", r"pixel_decoder.\1.\2."),
    (r"^(?:mask_predictor\.)?mask_embed\.layers\.(\d+)\.", r"mask_embedder.layers.\1."),
    (r"^instance_seg_head\.", "instance_projection."),
    (r"^semantic_seg_head\.", "semantic_projection."),
    (r"^cross_attend_prompt\.out_proj\.", "prompt_cross_attn.o_proj."),
    (r"^cross_attend_prompt\.in_proj_", "prompt_cross_attn.in_proj_"),
    (r"^cross_attn_norm\.", "prompt_cross_attn_norm."),
]
_PROMPT_ENCODER: Rules = [
    (r"^pe_layer\.positional_encoding_gaussian_matrix$", "shared_embedding.positional_embedding"),
    (r"^point_embeddings\.(\d+)\.weight$", r"point_embed.\1.weight"),  # stacked later
    (r"^mask_downscaling\.0\.", "mask_embed.conv1."),
    (r"^mask_downscaling\.1\.", "mask_embed.layer_norm1."),
    (r"^mask_downscaling\.3\.", "mask_embed.conv2."),
    (r"^mask_downscaling\.4\.", "mask_embed.layer_norm2."),
    (r"^mask_downscaling\.6\.", "mask_embed.conv3."),
    *_same("not_a_point_embed", "no_mask_embed"),
]
_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token|final_attn_token_to_image)"
_MASK_DECODER: Rules = [
    *_same("iou_token", "mask_tokens", "obj_score_token", "conv_s0", "conv_s1"),
    (r"^output_upscaling\.0\.", "upscale_conv1."),
    (r"^output_upscaling\.1\.", "upscale_layer_norm."),
    (r"^output_upscaling\.3\.", "upscale_conv2."),
    (r"^output_hypernetworks_mlps\.(\d+)\.layers\.(\d+)\.", r"output_hypernetworks_mlps.\1.{mlp:\2}."),
    (r"^(iou_prediction_head|pred_obj_score_head)\.layers\.(\d+)\.", r"\1.{mlp:\2}."),
    (rf"^transformer\.layers\.(\d+)\.{_ATTN}\.out_proj\.", r"transformer.layers.\1.\2.o_proj."),
    (rf"^transformer\.layers\.(\d+)\.{_ATTN}\.([qkv]_proj)\.", r"transformer.layers.\1.\2.\3."),
    (r"^transformer\.layers\.(\d+)\.mlp\.lin1\.", r"transformer.layers.\1.mlp.proj_in."),
    (r"^transformer\.layers\.(\d+)\.mlp\.lin2\.", r"transformer.layers.\1.mlp.proj_out."),
    (r"^transformer\.layers\.(\d+)\.norm([1-4])\.", r"transformer.layers.\1.layer_norm\2."),
    (rf"^transformer\.{_ATTN}\.out_proj\.", r"transformer.\1.o_proj."),
    (rf"^transformer\.{_ATTN}\.([qkv]_proj)\.", r"transformer.\1.\2."),
    (r"^transformer\.norm_final_attn\.", "transformer.layer_norm_final_attn."),
]
_MEMORY_ATTENTION: Rules = [
    (r"^layers\.(\d+)\.(self_attn|cross_attn_image)\.out_proj\.", r"layers.\1.\2.o_proj."),
    (r"^layers\.(\d+)\.(self_attn|cross_attn_image)\.([qkv]_proj)\.", r"layers.\1.\2.\3."),
    (r"^layers\.(\d+)\.linear([12])\.", r"layers.\1.linear\2."),
    (r"^layers\.(\d+)\.norm([123])\.", r"layers.\1.layer_norm\2."),
    (r"^norm\.", "layer_norm."),
]
_MEMORY_ENCODER: Rules = [
    (r"^mask_downsampler\.encoder\.(\d+)\.", r"mask_downsampler.{ds:\1}."),
    (r"^fuser\.layers\.(\d+)\.dwconv\.", r"memory_fuser.layers.\1.depthwise_conv."),
    (r"^fuser\.layers\.(\d+)\.pwconv([12])\.", r"memory_fuser.layers.\1.pointwise_conv\2."),
    (r"^fuser\.layers\.(\d+)\.norm\.", r"memory_fuser.layers.\1.layer_norm."),
    (r"^fuser\.layers\.(\d+)\.gamma$", r"memory_fuser.layers.\1.scale"),
    (r"^pix_feat_proj\.", "feature_projection."),
    (r"^out_proj\.", "projection."),
]
_TRACKER_TOP: Rules = [
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^obj_ptr_proj\.layers\.(\d+)\.", r"object_pointer_proj.{mlp:\1}."),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    *_same("mask_downsample"),
]

DETECTOR_SECTIONS: list[tuple[str, str, Rules]] = [
    ("backbone.vision_backbone.trunk.", VIT, _VIT),
    ("backbone.vision_backbone.convs.", DET + "vision_encoder.neck.fpn_layers.", _NECK),
    ("backbone.vision_backbone.sam2_convs.", "tracker_neck.fpn_layers.", _NECK),
    ("backbone.language_backbone.encoder.", DET + "text_encoder.", _CLIP),
    ("backbone.language_backbone.resizer.", DET + "text_projection.", [(r"^(weight|bias)$", r"\1")]),
    ("geometry_encoder.", DET + "geometry_encoder.", _GEOMETRY),
    ("transformer.encoder.", DET + "detr_encoder.", _DETR_ENCODER),
    ("transformer.decoder.", DET + "detr_decoder.", _DETR_DECODER),
    ("dot_prod_scoring.", DET + "dot_product_scoring.", _SCORING),
    ("segmentation_head.", DET + "mask_decoder.", _SEGMENTATION_HEAD),
]
TRACKER_SECTIONS: list[tuple[str, str, Rules]] = [
    ("sam_prompt_encoder.", TRK + "prompt_encoder.", _PROMPT_ENCODER),
    ("sam_mask_decoder.", TRK + "mask_decoder.", _MASK_DECODER),
    ("transformer.encoder.", TRK + "memory_attention.", _MEMORY_ATTENTION),
    ("maskmem_backbone.", TRK + "memory_encoder.", _MEMORY_ENCODER),
    ("", TRK, _TRACKER_TOP),
]
# Component prefixes of Meta's checkpoints (public sam3.pt, image-only Sam3Image, transformers' internal variant).
TRACKER_PREFIXES = ("tracker.", "inst_interactive_predictor.model.", "sam2_predictor.model.")
DETECTOR_PREFIXES = ("detector.", "sam3_model.", "")
# pre-computed RoPE tables; geometry-encoder point projections transformers has no module for (its conversion
# script loads non-strict and discards them too)
_DROPPABLE = re.compile(r"(\.attn\.freqs_cis$|\.num_batches_tracked$"
                        r"|(^|\.)geometry_encoder\.points_(direct|pool|pos_enc)_project\.)")
PEFT_WRAPPER = "base_model.model."  # what peft's PeftModel puts in front of the wrapped model's names
_LORA = re.compile(r"^(?P<layer>.+?)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[A-Za-z0-9_-]+))?(?:\.weight)?$")
_PLACEHOLDER = re.compile(r"\{(mlp|ds):(\d+)\}")


@dataclass
class ConversionReport:
    """What the conversion did: renamed / passed-through counts, LoRA pairs (merged or kept), dropped, unknown keys."""

    renamed: int = 0
    passed: int = 0
    lora_merged: int = 0
    lora_pairs: int = 0
    lora_alpha: float | None = None
    lora_rank: int | None = None
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


@dataclass
class LoraDelta:
    """One LoRA pair in transformers naming: ``module`` (facebook/sam3 key without ``.weight``), ``a`` (r, in[, k, k]),
    ``b`` (out, r[, 1, 1]), ``scale`` = alpha / r."""

    module: str
    a: torch.Tensor
    b: torch.Tensor
    scale: float

    def delta(self) -> torch.Tensor:
        """``scale * B @ A`` in float32, shaped like the module weight (linear or conv)."""
        a, b = self.a.float(), self.b.float()
        d = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)
        return (d * self.scale).reshape((b.shape[0],) + tuple(a.shape[1:]))


# ---------------------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and (Lightning) hyper-parameters from a checkpoint file, safely (safetensors / weights_only)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p)), {}
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"cannot read {p}: {' '.join(str(exc).split())[:200]}",
                             "the file is corrupt or incomplete: copy or download it again") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles with code objects are refused by design
        first = " ".join(str(exc).split())[:200]  # one line: torch's message spans several
        raise ModelError(f"cannot read {p} safely ({type(exc).__name__}: {first})",
                         "OncoSeg only loads plain tensor checkpoints (torch.load weights_only=True); re-save it "
                         "as a state dict or safetensors on the machine that made it") from None
    hparams: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        hp = obj.get("hyper_parameters")
        hparams = dict(hp) if isinstance(hp, dict) else {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p} does not hold a state dict of tensors", "give a Lightning .ckpt or a state dict file")
    return dict(obj), hparams


def strip_model_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ONE leading ``model.`` (Lightning's attribute name) from keys that have it, then peft's fixed
    ``base_model.model.`` wrapper (a PeftModel saved inside the LightningModule); nothing else."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = k[len("model."):] if k.startswith("model.") else k
        out[k[len(PEFT_WRAPPER):] if k.startswith(PEFT_WRAPPER) else k] = v
    return out


def lora_hyperparameters(hparams: dict[str, Any]) -> tuple[int | None, float | None, float | None]:
    """(r, alpha, dropout) from Lightning hyper-parameters (top level or one nested dict such as ``lora``/``config``);
    accepted names: ``lora_r``/``lora_rank``/``r``/``rank``, ``lora_alpha``/``alpha``, ``lora_dropout``/``dropout``."""
    scopes: list[dict[str, Any]] = [hparams] + [v for v in hparams.values() if isinstance(v, dict)]

    def find(*names: str) -> Any:
        for scope in scopes:
            for n in names:
                if isinstance(scope.get(n), (int, float)) and not isinstance(scope.get(n), bool):
                    return scope[n]
        return None

    r = find("lora_r", "lora_rank", "r", "rank")
    alpha = find("lora_alpha", "alpha")
    dropout = find("lora_dropout", "dropout")
    return (int(r) if r else None, float(alpha) if alpha else None, float(dropout) if dropout is not None else None)


# ---------------------------------------------------------------------------------------------------- renaming
def _apply_rules(rest: str, rules: Rules) -> str | None:
    for pat, rep in rules:
        if re.search(pat, rest):
            return re.sub(pat, rep, rest, count=1)
    return None


def _rename_in(rest: str, sections: list[tuple[str, str, Rules]]) -> str | None:
    for meta_prefix, target, rules in sections:
        if rest.startswith(meta_prefix):
            new = _apply_rules(rest[len(meta_prefix):], rules)
            return None if new is None else target + new
    return None


def rename_key(key: str) -> str | None:
    """The facebook/sam3 transformers key for a Meta key (may still hold ``{mlp:N}``/``{ds:N}`` placeholders and fused
    ``qkv``/``in_proj_*`` names), the key itself if already in that layout, else ``None``."""
    if key.startswith(HF_PREFIXES):
        return key
    for prefix in TRACKER_PREFIXES:
        if key.startswith(prefix):
            return _rename_in(key[len(prefix):], TRACKER_SECTIONS)
    for prefix in DETECTOR_PREFIXES:
        if key.startswith(prefix):
            new = _rename_in(key[len(prefix):], DETECTOR_SECTIONS)
            if new is not None:
                return new
    return None


def _resolve_placeholders(keys: list[str]) -> dict[str, str]:
    """Map keys with ``{mlp:N}`` / ``{ds:N}`` to final names, using the largest index present per module.

    SAM2-style MLP ``layers.0..L`` -> ``proj_in``, ``layers.0..L-2``, ``proj_out``; the memory encoder's mask
    downsampler ``encoder.3i`` -> ``layers.i.conv``, ``3i+1`` -> ``layers.i.layer_norm``, the last conv ->
    ``final_conv``.
    """
    last: dict[str, int] = {}
    for k in keys:
        m = _PLACEHOLDER.search(k)
        if m:
            group = k[:m.start()]
            last[group] = max(last.get(group, -1), int(m[2]))
    out: dict[str, str] = {}
    for k in keys:
        m = _PLACEHOLDER.search(k)
        if not m:
            out[k] = k
            continue
        group, kind, i, top = k[:m.start()], m[1], int(m[2]), last[k[:m.start()]]
        if kind == "mlp":
            name = "proj_in" if i == 0 else "proj_out" if i == top else f"layers.{i - 1}"
        elif i == top:
            name = "final_conv"
        elif i % 3 in (0, 1):
            name = f"layers.{i // 3}." + ("conv" if i % 3 == 0 else "layer_norm")
        else:
            raise ModelError(f"unexpected mask-downsampler index in '{k}'", "report the checkpoint's key names")
        out[k] = group + name + k[m.end():]
    return out


def _split_fused(key: str) -> tuple[str, str, str] | None:
    """The three q/k/v keys of a fused ``...attention.qkv.{weight,bias}`` or ``...in_proj_{weight,bias}`` key."""
    if ".attention.qkv." in key:
        return tuple(key.replace(".qkv.", f".{n}.") for n in ("q_proj", "k_proj", "v_proj"))  # type: ignore
    m = re.search(r"\.in_proj_(weight|bias)$", key)
    if m:
        base = key[:m.start()]
        return tuple(f"{base}.{n}.{m[1]}" for n in ("q_proj", "k_proj", "v_proj"))  # type: ignore
    return None


def _trim_cls_position(pe: torch.Tensor, target_len: int | None) -> torch.Tensor:
    n = pe.shape[1]
    if target_len is not None:
        if n == target_len + 1:
            return pe[:, 1:, :]
        return pe
    side = int(round((n - 1) ** 0.5))
    return pe[:, 1:, :] if n > 1 and side * side == n - 1 else pe


def convert_state_dict(sd: dict[str, torch.Tensor], lora_scale: float | None = None,
                       vit_grid: int | None = None, lora_alpha: float | None = None
                       ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Meta-layout (+ LoRA pairs merged into weights present in ``sd``) -> facebook/sam3 transformers layout.

    ``lora_scale``: alpha / r for every pair; else ``lora_alpha`` / (each pair's rank); else Onco-Seg's 2.
    ``vit_grid``: patch-grid side of the position table (24 for SAM3); a table with one extra (cls) row is trimmed.
    LoRA pairs without a base weight in ``sd`` raise ``ModelError`` (for adapters use :func:`convert_with_lora` +
    :func:`write_peft_adapter`).
    """
    base, deltas, report = convert_with_lora(sd, lora_scale=lora_scale, lora_alpha=lora_alpha, vit_grid=vit_grid)
    missing = [d.module for d in deltas if f"{d.module}.weight" not in base]
    if missing:
        raise ModelError(f"LoRA on {len(missing)} layers without base weights (e.g. {missing[0]})",
                         "convert LoRA-only checkpoints to an adapter, or onto a base folder (convert_checkpoint_"
                         "to_folder base=...)")
    merge_deltas(base, deltas)
    report.lora_merged = len(deltas)
    return base, report


def convert_with_lora(sd: dict[str, torch.Tensor], lora_scale: float | None = None, lora_alpha: float | None = None,
                      vit_grid: int | None = None) -> tuple[dict[str, torch.Tensor], list[LoraDelta],
                                                            ConversionReport]:
    """Rename a Meta-layout state dict to the facebook/sam3 layout, keeping LoRA pairs apart as :class:`LoraDelta`
    in transformers naming (a fused ``qkv``/``in_proj`` pair becomes q/k/v pairs sharing A). Raises ``ModelError``
    listing keys no rule knows. The LoRA scale is ``lora_scale``, else ``lora_alpha / r`` (r = each pair's rank),
    else Onco-Seg's alpha = 2 r."""
    report = ConversionReport()
    sd = strip_model_prefix(sd)
    plain: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    adapters: set[str] = set()
    for k, v in sd.items():
        m = _LORA.match(k)
        if m:
            pairs.setdefault(m["layer"], {})[m["ab"]] = v
            adapters.add(m["adapter"] if m["adapter"] not in (None, "weight") else "default")
        else:
            plain[k.replace(".base_layer.", ".")] = v
    if len(adapters) > 1:
        raise ModelError(f"the checkpoint holds several LoRA adapters ({', '.join(sorted(adapters))})",
                         "export one adapter (peft: save_pretrained(selected_adapters=[...])) and convert that")
    # rename (LoRA layers as their '<layer>.weight' so that placeholders see every index)
    named: dict[str, str] = {}
    lora_names: dict[str, str] = {}
    for key in plain:
        new = rename_key(key)
        if new is None:
            (report.dropped if _DROPPABLE.search(key) else report.unknown).append(key)
            continue
        named[key] = new
        if new == key:
            report.passed += 1
        else:
            report.renamed += 1
    for layer in pairs:
        new = rename_key(f"{layer}.weight")
        if new is None:
            report.unknown.append(f"{layer}.lora_A/B")
        else:
            lora_names[layer] = new
    if report.unknown:
        raise ModelError(f"{len(report.unknown)} checkpoint keys have no known transformers name "
                         f"(e.g. {', '.join(report.unknown[:3])})",
                         "this converter knows Meta's sam3 layout (detector.*, tracker.*, Sam3Image keys) and LoRA "
                         "pairs; export the other parts in the transformers layout, or report the key names")
    final = _resolve_placeholders(list(named.values()) + list(lora_names.values()))
    out: dict[str, torch.Tensor] = {}
    transposed: list[str] = []
    for key, new in named.items():
        target = final[new]
        if target in out:
            raise ModelError(f"two checkpoint keys map to '{target}' (one is '{key}')",
                             "the checkpoint mixes two layouts; keep one")
        out[target] = plain[key]
        if target == DET + "text_encoder.text_projection.weight" and key != target:
            transposed.append(target)
    # tensor surgery
    for key in [k for k in out if _split_fused(k)]:
        t = out.pop(key)
        if t.shape[0] % 3:
            raise ModelError(f"fused projection '{key}' has {t.shape[0]} rows, not a multiple of 3",
                             "the checkpoint is not a SAM3 checkpoint")
        for name, part in zip(_split_fused(key), torch.chunk(t, 3, dim=0)):  # type: ignore[arg-type]
            out[name] = part.contiguous()
    for key in transposed:
        out[key] = out[key].T.contiguous()  # Meta stores x @ P; transformers a Linear holding P^T
    pe = VIT + "embeddings.position_embeddings"
    if pe in out and out[pe].dim() == 3:
        out[pe] = _trim_cls_position(out[pe], vit_grid * vit_grid if vit_grid else None).contiguous()
    points = sorted((k for k in out if re.fullmatch(re.escape(TRK) + r"prompt_encoder\.point_embed\.\d+\.weight", k)),
                    key=lambda k: int(k.split(".")[-2]))
    if points:
        out[TRK + "prompt_encoder.point_embed.weight"] = torch.cat([out.pop(k) for k in points], dim=0)
    fourier = TRK + "prompt_encoder.shared_embedding.positional_embedding"
    shared = TRK + "shared_image_embedding.positional_embedding"
    if fourier in out and shared not in out:
        out[shared] = out[fourier].clone()  # one matrix in Meta's tracker, two (tied) in transformers
    # LoRA pairs in transformers naming
    deltas: list[LoraDelta] = []
    ranks: list[int] = []
    for layer, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ModelError(f"LoRA pair for '{layer}' is incomplete", "the checkpoint is truncated or corrupt")
        a, b = ab["A"], ab["B"]
        r = a.shape[0]
        if b.shape[1] != r:
            raise ModelError(f"LoRA on '{layer}': A has rank {r}, B has {b.shape[1]}", "the checkpoint is corrupt")
        ranks.append(r)
        scale = lora_scale if lora_scale is not None else (lora_alpha if lora_alpha is not None else 2.0 * r) / r
        target = final[lora_names[layer]]
        split = _split_fused(target)
        if split:
            if b.shape[0] % 3:
                raise ModelError(f"LoRA on fused '{layer}' has {b.shape[0]} output rows", "the checkpoint is corrupt")
            for name, part in zip(split, torch.chunk(b, 3, dim=0)):
                deltas.append(LoraDelta(name[: -len(".weight")], a, part.contiguous(), scale))
        else:
            if not target.endswith(".weight"):
                raise ModelError(f"LoRA on '{layer}' targets '{target}', which is not a layer weight",
                                 "LoRA is supported on linear and conv layers only")
            deltas.append(LoraDelta(target[: -len(".weight")], a, b, scale))
    report.lora_pairs = len(pairs)
    if ranks:
        report.lora_rank = Counter(ranks).most_common(1)[0][0]
        report.lora_alpha = (lora_scale * report.lora_rank if lora_scale is not None
                             else lora_alpha if lora_alpha is not None else 2.0 * report.lora_rank)
    return out, deltas, report


def merge_deltas(weights: dict[str, torch.Tensor], deltas: list[LoraDelta]) -> None:
    """``W += scale * B @ A`` in place for every delta (float32 accumulation, original dtype kept)."""
    for d in deltas:
        key = f"{d.module}.weight"
        if key not in weights:
            raise ModelError(f"LoRA on '{d.module}' has no base weight", "give the base model folder (base=...)")
        w = weights[key]
        delta = d.delta()
        if delta.shape != w.shape:
            raise ModelError(f"LoRA on '{d.module}' has shape {tuple(delta.shape)} for weight {tuple(w.shape)}",
                             "the adapter belongs to another architecture")
        weights[key] = (w.float() + delta).to(w.dtype)


# ---------------------------------------------------------------------------------------------------- adapters
# facebook/sam3 key prefix -> (component, prefix inside that component's transformers model)
_COMPONENT_OF: list[tuple[str, str | None, str]] = [
    (VIT, None, "vision_encoder.backbone."),  # shared ViT: any component
    (DET, "detector", ""),
    ("tracker_neck.", "tracker", "vision_encoder.neck."),
    (TRK + "prompt_encoder.", "tracker", "prompt_encoder."),
    (TRK + "mask_decoder.", "tracker", "mask_decoder."),
    (TRK + "shared_image_embedding.", "tracker", "shared_image_embedding."),
    (TRK + "no_memory_embedding", "tracker", "no_memory_embedding"),
    (TRK, "video", ""),
]


def _component_name(key: str) -> tuple[str | None, str]:
    for prefix, comp, inner in _COMPONENT_OF:
        if key.startswith(prefix):
            return comp, inner + key[len(prefix):]
    raise ModelError(f"'{key}' belongs to no SAM3 backend", "report the key name")


def choose_component(keys: list[str]) -> str:
    """The one bundle backend (``tracker``, ``video``, ``detector``) whose model holds every facebook/sam3 ``keys``
    (the ViT backbone is shared by all; the video tracker contains the image tracker). ``ModelError`` if none does."""
    comps = {c for c, _ in (_component_name(k) for k in keys) if c is not None}
    if "detector" in comps and comps & {"tracker", "video"}:
        raise ModelError("the checkpoint adapts both the text detector and the point/box tracker heads, which one "
                         "adapter cannot hold", "convert it onto the base model instead (base=..., merged)")
    if "detector" in comps:
        return "detector"
    return "video" if "video" in comps else "tracker"


def write_peft_adapter(out_dir: str | os.PathLike, deltas: list[LoraDelta], heads: dict[str, torch.Tensor],
                       r: int, alpha: float, dropout: float = 0.1, component: str | None = None) -> Path:
    """Write LoRA deltas (facebook/sam3 naming) + fully trained ``heads`` as a peft adapter folder for
    :func:`OncoSegLib.models.lora.load_adapter`: ``adapter_config.json``, ``adapter_model.safetensors``,
    ``oncoseg_lora.json`` and ``oncoseg_heads.safetensors``. Module names are those of the chosen backend."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from OncoSegLib.io.atomic import atomic_path
    from OncoSegLib.models.lora import HEADS_FILE, SETTINGS_FILE, LoraSettings

    keys = [f"{d.module}.weight" for d in deltas] + list(heads)
    component = component or choose_component(keys)
    scales = {round(d.scale * d.a.shape[0], 6) for d in deltas}
    if len(scales) > 1:
        raise ModelError(f"LoRA pairs use different alphas {sorted(scales)}", "merge this checkpoint instead")
    ranks = Counter(d.a.shape[0] for d in deltas)
    r = ranks.most_common(1)[0][0] if ranks else r
    rank_pattern: dict[str, int] = {}
    tensors: dict[str, torch.Tensor] = {}
    modules: list[str] = []
    for d in deltas:
        _, name = _component_name(f"{d.module}.weight")
        mod = name[: -len(".weight")]
        modules.append(mod)
        if d.a.shape[0] != r:
            rank_pattern[f"^{re.escape(mod)}$"] = int(d.a.shape[0])
        tensors[f"base_model.model.{mod}.lora_A.weight"] = d.a.contiguous().clone()
        tensors[f"base_model.model.{mod}.lora_B.weight"] = d.b.contiguous().clone()
    comp_heads = {_component_name(k)[1]: v.contiguous().clone() for k, v in heads.items()}
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "adapter_config.json").exists():
        raise ModelError(f"{out} is not empty and is not an adapter folder", "choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    cfg = LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=dropout, bias="none",
                     target_modules=sorted(set(modules)), rank_pattern=rank_pattern)
    cfg.save_pretrained(str(out))
    with atomic_path(out / "adapter_model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    head_names = sorted({".".join(k.split(".")[:2]) if k.startswith("vision_encoder.") else k.split(".")[0]
                         for k in comp_heads})
    settings = LoraSettings(r=int(r), alpha=int(alpha) if float(alpha).is_integer() else alpha,  # type: ignore
                            dropout=dropout, target=tuple(sorted({m.rsplit(".", 1)[-1] for m in modules})),
                            scope="all", trainable_heads=tuple(head_names), component=component,
                            extra={"converted_from": "meta-sam3"})
    with atomic_path(out / SETTINGS_FILE) as tmp:
        tmp.write_text(json.dumps(settings.to_json(), indent=2), encoding="utf-8")
    if comp_heads:
        with atomic_path(out / HEADS_FILE) as tmp:
            save_file(comp_heads, str(tmp), metadata={"format": "pt"})
    return out


# ---------------------------------------------------------------------------------------------------- folders
def _base_weights(base: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    merged: dict[str, torch.Tensor] = {}
    for f in sorted(base.glob("*.safetensors")):
        merged.update(load_file(str(f)))
    if not merged:
        raise ModelError(f"{base} holds no *.safetensors weights", "give a facebook/sam3-layout model folder")
    return {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in merged.items()}


def _check_against(keys: dict[str, tuple[int, ...]], base: dict[str, torch.Tensor], what: str) -> None:
    wrong = [k for k in keys if k not in base]
    if wrong:
        raise ModelError(f"{len(wrong)} converted {what} do not exist in the base model (e.g. {wrong[:3]})",
                         "the checkpoint belongs to another architecture")
    bad = [k for k, s in keys.items() if tuple(base[k].shape) != s]
    if bad:
        raise ModelError(f"{len(bad)} converted {what} have another shape than the base model's "
                         f"(e.g. {bad[0]}: {keys[bad[0]]} vs {tuple(base[bad[0]].shape)})",
                         "the checkpoint belongs to another model size")


def _position_grid(base_sd: dict[str, torch.Tensor], config: Path) -> int | None:
    """Side of the ViT position table (pretraining patch grid) from the base weights or a config.json, if known."""
    pe = base_sd.get(VIT + "embeddings.position_embeddings")
    if pe is not None and pe.dim() == 3:
        side = int(round(pe.shape[1] ** 0.5))
        return side if side * side == pe.shape[1] else None
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for path in (("detector_config", "vision_config", "backbone_config"), ("vision_config", "backbone_config"),
                 ("tracker_config", "vision_config", "backbone_config")):
        node: Any = cfg
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("pretrain_image_size") and node.get("patch_size"):
            return int(node["pretrain_image_size"]) // int(node["patch_size"])
    return None


def default_config_if_full_size(weights: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """transformers' default ``Sam3VideoConfig`` (= facebook/sam3) as a dict when ``weights`` has exactly its keys and
    shapes (a complete full-size SAM3 checkpoint), else ``None``. Builds the model on the meta device (no memory)."""
    from transformers import Sam3VideoConfig, Sam3VideoModel

    cfg = Sam3VideoConfig()
    with torch.device("meta"):
        model = Sam3VideoModel(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != {k: tuple(v.shape) for k, v in weights.items()}:
        return None
    d = cfg.to_dict()
    d["architectures"] = ["Sam3VideoModel"]
    return d


def convert_checkpoint_to_folder(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                                 base: str | os.PathLike | None = None, lora_scale: float | None = None,
                                 lora: str = "auto") -> Path:
    """Convert a Meta / Onco-Seg checkpoint file into a loadable folder and return it.

    - A checkpoint with every weight (``config.json`` beside it, or ``base`` for what it lacks): a facebook/sam3
      model folder (``config.json`` + ``model.safetensors`` [+ tokenizer files from ``base``]); LoRA pairs merged.
    - A checkpoint holding only LoRA pairs (+ trained heads), ``lora="auto"``/``"adapter"``: a peft adapter folder
      (load it with ``load_bundle(base_model, adapter=folder)``). ``lora="merge"`` with ``base`` merges instead.
    - ``lora="adapter"`` on a full checkpoint: the model folder holds the unmerged base weights and ``lora_adapter/``
      the adapter.
    LoRA scale = alpha / r from the Lightning hyper-parameters, else ``lora_scale``, else Onco-Seg's 32 / 16.
    A doubled ``tracker_model.tracker_model.`` prefix is normalised. ``oncoseg_conversion.json`` records what was done.
    """
    from safetensors.torch import save_file

    from OncoSegLib.io.atomic import atomic_path

    if lora not in ("auto", "merge", "adapter"):
        raise ModelError(f"unknown LoRA mode '{lora}'", "use auto, merge or adapter")
    ckpt = Path(checkpoint)
    out = Path(out_dir)
    sd, hparams = read_state_dict(ckpt)
    sd = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in sd.items()}
    r_hp, alpha_hp, dropout_hp = lora_hyperparameters(hparams)
    alpha = alpha_hp if lora_scale is None else None
    if alpha is None and lora_scale is None:
        alpha = 32.0 * (r_hp / 16.0) if r_hp else None  # Onco-Seg's alpha = 2 r
    base_dir = Path(base) if base is not None else None
    base_sd = _base_weights(base_dir) if base_dir is not None else {}
    grid = _position_grid(base_sd, base_dir / "config.json" if base_dir else ckpt.parent / "config.json")
    weights, deltas, report = convert_with_lora(sd, lora_scale=lora_scale, lora_alpha=alpha, vit_grid=grid)
    if r_hp and deltas and report.lora_rank != r_hp:
        log.warning("LoRA rank in the hyper-parameters (%s) differs from the tensors' (%s); using the tensors'",
                    r_hp, report.lora_rank)
    if base_sd:
        _check_against({k: tuple(v.shape) for k, v in weights.items()}, base_sd, "weights")
        _check_against({f"{d.module}.weight": tuple(d.delta().shape) for d in deltas}, base_sd, "LoRA layers")
    lora_only = bool(deltas) and any(f"{d.module}.weight" not in weights for d in deltas)
    record: dict[str, Any] = {
        "source": ckpt.name, "renamed": report.renamed, "passed_through": report.passed,
        "lora_pairs": report.lora_pairs, "lora_rank": report.lora_rank, "lora_alpha": report.lora_alpha,
        "dropped": report.dropped, "base": str(base_dir) if base_dir else None,
        "mapping": "transformers convert_sam3_to_hf.py@7965ef76 + convert_sam3_video_to_hf.py@2ebea7bb rules"}
    if lora_only and (lora in ("auto", "adapter") or not base_sd):
        if lora == "merge":
            raise ModelError(f"{ckpt.name} holds LoRA pairs without their base weights",
                             "give the base model folder (base=...) to merge onto, or convert it to an adapter")
        write_peft_adapter(out, deltas, weights, r=report.lora_rank or 16, alpha=float(report.lora_alpha or 32),
                           dropout=dropout_hp if dropout_hp is not None else 0.1)
        record.update(kind="peft_adapter", heads=len(weights), component=choose_component(
            [f"{d.module}.weight" for d in deltas] + list(weights)))
        (out / CONVERSION_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        log.info("converted %s to a LoRA adapter (%d pairs, %d head tensors)", ckpt.name, len(deltas), len(weights))
        return out
    config_src: Path | None = None
    if base_dir is not None:
        config_src = base_dir / "config.json"
    elif (ckpt.parent / "config.json").is_file():
        config_src = ckpt.parent / "config.json"
    default_cfg: dict[str, Any] | None = None
    if config_src is None or not config_src.is_file():
        default_cfg = default_config_if_full_size(weights)  # a complete full-size Meta sam3.pt needs no config
        if default_cfg is None:
            raise ModelError(f"no config.json for {ckpt.name}",
                             "put the facebook/sam3 config.json beside it, or give the base model folder")
    merged = dict(base_sd)
    merged.update(weights)
    adapter_deltas: list[LoraDelta] = []
    if lora == "adapter" and deltas:
        adapter_deltas = deltas
    else:
        merge_deltas(merged, deltas)
        report.lora_merged = len(deltas)
    out.mkdir(parents=True, exist_ok=True)
    if default_cfg is not None:
        (out / "config.json").write_text(json.dumps(default_cfg, indent=2), encoding="utf-8")
        record["config"] = "transformers Sam3VideoConfig() defaults (facebook/sam3); no tokenizer files"
    else:
        shutil.copyfile(config_src, out / "config.json")  # type: ignore[arg-type]
    if base_dir is not None:
        for f in base_dir.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt") and f.name not in (
                    "config.json", "model.safetensors.index.json", CONVERSION_FILE):
                shutil.copyfile(f, out / f.name)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in merged.items()}, str(tmp), metadata={"format": "pt"})
    if adapter_deltas:
        write_peft_adapter(out / "lora_adapter", adapter_deltas, {}, r=report.lora_rank or 16,
                           alpha=float(report.lora_alpha or 32), dropout=dropout_hp if dropout_hp is not None else 0.1)
    record.update(kind="model", lora_merged=report.lora_merged, adapter="lora_adapter" if adapter_deltas else None)
    (out / CONVERSION_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    log.info("converted %s: %d renamed, %d kept, %d LoRA pairs merged", ckpt.name, report.renamed, report.passed,
             report.lora_merged)
    return out


def normalise_doubled_prefix(folder: str | os.PathLike) -> int:
    """Rewrite a folder's safetensors whose keys carry ``tracker_model.tracker_model.`` (written by
    ``Sam3VideoModel.save_pretrained``) to the single prefix; returns the number of keys fixed."""
    from safetensors.torch import load_file, save_file

    from OncoSegLib.io.atomic import atomic_path

    fixed = 0
    for f in sorted(Path(folder).glob("*.safetensors")):
        sd = load_file(str(f))
        if not any(k.startswith("tracker_model.tracker_model.") for k in sd):
            continue
        new = {}
        for k, v in sd.items():
            if k.startswith("tracker_model.tracker_model."):
                k = k[len("tracker_model."):]
                fixed += 1
            new[k] = v.contiguous()
        with atomic_path(f) as tmp:
            save_file(new, str(tmp), metadata={"format": "pt"})
    return fixed
