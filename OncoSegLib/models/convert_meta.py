"""Onco-Seg / Meta-layout checkpoints -> the transformers facebook/sam3 layout.

Input: a PyTorch Lightning ``.ckpt`` (``{"state_dict": ...}``), a ``.pt``/``.pth`` (``{"model": ...}`` or a bare state
dict) or ``.safetensors``, with Meta's sam3 key names (``backbone.vision_backbone.trunk.blocks.N.attn.qkv``, ``proj``,
...) and optionally peft/loralib LoRA pairs (``<layer>.lora_A.weight`` / ``<layer>.lora_B.weight``).
Only ``torch.load(weights_only=True)`` or safetensors are used; only a leading ``model.`` (Lightning) is stripped.

Transformers 5.24 ships no SAM3 conversion mapping in the wheel (its ``convert_sam3_to_hf.py`` lives only in the
source tree), so the renaming rules are written here: the ViT backbone, its FPN neck, the tracker neck and the CLIP
text encoder. LoRA pairs are merged exactly into the base weight (``W + (alpha / r) * B @ A``, split like the fused
``qkv``). Keys already in the transformers layout pass through; keys matching no rule are reported and refused unless
they can be dropped (pre-computed RoPE tables). A partial checkpoint (e.g. LoRA + heads only) is overlaid on a
full base folder (facebook/sam3) by :func:`convert_checkpoint_to_folder`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from OncoSegLib.errors import ModelError

log = logging.getLogger(__name__)

HF_PREFIXES = ("detector_model.", "tracker_model.", "tracker_neck.")
DET = "detector_model."
VIT = DET + "vision_encoder.backbone."

# Meta ViT block -> transformers ViT layer (after the trunk prefix).
_VIT_RULES: list[tuple[str, str]] = [
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^ln_pre\.", "layer_norm."),
    (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"layers.\1.attention.qkv."),  # split below
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc(\d)\.", r"layers.\1.mlp.fc\2."),
]
# Meta FPN conv names -> transformers neck layer names (per level N).
_NECK_RULES: list[tuple[str, str]] = [
    (r"^(\d+)\.conv_1x1\.", r"fpn_layers.\1.proj1."),
    (r"^(\d+)\.conv_3x3\.", r"fpn_layers.\1.proj2."),
    (r"^(\d+)\.dconv_2x2_0\.", r"fpn_layers.\1.scale_layers.0."),
    (r"^(\d+)\.dconv_2x2_1\.", r"fpn_layers.\1.scale_layers.2."),
    (r"^(\d+)\.dconv_2x2\.", r"fpn_layers.\1.scale_layers.0."),
    (r"^(\d+)\.maxpool_2x2\.", r"fpn_layers.\1.scale_layers.0."),
]
_TEXT_RULES: list[tuple[str, str]] = [
    (r"^token_embedding\.", "text_model.embeddings.token_embedding."),
    (r"^positional_embedding$", "text_model.embeddings.position_embedding.weight"),
    (r"^ln_final\.", "text_model.final_layer_norm."),
    (r"^text_projection$", "text_projection.weight"),  # transposed below
    (r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_", r"text_model.encoder.layers.\1.self_attn.in_proj_"),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"text_model.encoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.resblocks\.(\d+)\.ln_(\d)\.", r"text_model.encoder.layers.\1.layer_norm\2."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_model.encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_model.encoder.layers.\1.mlp.fc2."),
]
# (Meta prefix, target prefix, rules applied to the rest)
_SECTIONS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("backbone.vision_backbone.trunk.", VIT, _VIT_RULES),
    ("backbone.vision_backbone.convs.", DET + "vision_encoder.neck.", _NECK_RULES),
    ("backbone.vision_backbone.sam2_convs.", "tracker_neck.", _NECK_RULES),  # tracker neck (name unverified)
    ("backbone.language_backbone.encoder.", DET + "text_encoder.", _TEXT_RULES),
    ("backbone.language_backbone.resizer.", DET + "text_projection.", [(r"^", "")]),
]
_DROPPABLE = re.compile(r"(freqs_cis|rope|\.num_batches_tracked$)")
_LORA = re.compile(r"^(?P<layer>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


@dataclass
class ConversionReport:
    """What the conversion did: renamed / passed-through counts, merged LoRA pairs, dropped and unknown keys."""

    renamed: int = 0
    passed: int = 0
    lora_merged: int = 0
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and (Lightning) hyper-parameters from a checkpoint file, safely (safetensors / weights_only)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p)), {}
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles with code objects are refused by design
        raise ModelError(f"cannot read {p} safely ({type(exc).__name__}: {str(exc)[:200]})",
                         "OncoSeg only loads plain tensor checkpoints (torch.load weights_only=True); re-save it "
                         "as a state dict or safetensors on the machine that made it") from exc
    hparams: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        hparams = dict(obj.get("hyper_parameters") or {})
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p} does not hold a state dict of tensors", "give a Lightning .ckpt or a state dict file")
    return dict(obj), hparams


def strip_model_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ONE leading ``model.`` (Lightning's attribute name) from keys that have it; nothing else."""
    return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}


def _apply_rules(rest: str, rules: list[tuple[str, str]]) -> str | None:
    for pat, rep in rules:
        if re.search(pat, rest):
            return re.sub(pat, rep, rest, count=1)
    return None


def rename_key(key: str) -> str | None:
    """The transformers facebook/sam3 key for a Meta key, the key itself if already in that layout, else ``None``."""
    if key.startswith(HF_PREFIXES):
        return key
    for meta_prefix, target, rules in _SECTIONS:
        if key.startswith(meta_prefix):
            new = _apply_rules(key[len(meta_prefix):], rules)
            return None if new is None else target + new
    return None


def merge_lora_pairs(sd: dict[str, torch.Tensor], scale: float) -> tuple[dict[str, torch.Tensor], int]:
    """Fold ``<layer>.lora_A/B.weight`` pairs into ``<layer>.weight`` (``W += scale * B @ A``); peft's
    ``<layer>.base_layer.weight`` naming is accepted. Returns the new dict and the number of pairs merged."""
    out = {k.replace(".base_layer.", "."): v for k, v in sd.items() if not _LORA.match(k)}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = _LORA.match(k)
        if m:
            pairs.setdefault(m["layer"], {})[m["ab"]] = v
    for layer, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ModelError(f"LoRA pair for '{layer}' is incomplete", "the checkpoint is truncated or corrupt")
        wkey = f"{layer}.weight"
        if wkey not in out:
            raise ModelError(f"LoRA on '{layer}' has no base weight in the checkpoint",
                             "convert LoRA-only checkpoints onto a base folder (convert_checkpoint_to_folder base=)")
        w = out[wkey]
        delta = (ab["B"].float() @ ab["A"].float()) * scale
        if delta.shape != w.shape:
            raise ModelError(f"LoRA on '{layer}' has shape {tuple(delta.shape)} for weight {tuple(w.shape)}",
                             "the adapter belongs to another architecture")
        out[wkey] = (w.float() + delta).to(w.dtype)
    return out, len(pairs)


def convert_state_dict(sd: dict[str, torch.Tensor], lora_scale: float = 2.0,
                       vit_grid: int | None = None) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Meta-layout (+ LoRA pairs) -> facebook/sam3 transformers layout. ``lora_scale`` = alpha / r (Onco-Seg: 2).

    ``vit_grid``: patch grid side of the pretraining position table (24 for SAM3); a table with one extra (cls)
    position is trimmed. Raises ``ModelError`` listing keys no rule knows.
    """
    report = ConversionReport()
    sd = strip_model_prefix(sd)
    sd, report.lora_merged = merge_lora_pairs(sd, lora_scale)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = rename_key(key)
        if new is None:
            if _DROPPABLE.search(key):
                report.dropped.append(key)
            else:
                report.unknown.append(key)
            continue
        if new == key:
            report.passed += 1
        else:
            report.renamed += 1
        out[new] = value
    if report.unknown:
        raise ModelError(f"{len(report.unknown)} checkpoint keys have no known transformers name "
                         f"(e.g. {', '.join(report.unknown[:3])})",
                         "this converter covers Meta's ViT, FPN necks, text encoder and LoRA pairs; export the "
                         "other parts in the transformers layout, or report the key names")
    # split fused projections
    for key in [k for k in out if ".attention.qkv." in k]:
        q, k_, v = torch.chunk(out.pop(key), 3, dim=0)
        for name, t in (("q_proj", q), ("k_proj", k_), ("v_proj", v)):
            out[key.replace(".qkv.", f".{name}.")] = t.contiguous()
    for key in [k for k in out if ".in_proj_" in k]:
        t = out.pop(key)
        kind = "weight" if key.endswith("in_proj_weight") else "bias"
        base = key[: key.index("in_proj_")]
        for name, part in zip(("q_proj", "k_proj", "v_proj"), torch.chunk(t, 3, dim=0)):
            out[f"{base}{name}.{kind}"] = part.contiguous()
    tp = DET + "text_encoder.text_projection.weight"
    if tp in out and any(k.startswith("backbone.language_backbone.encoder.text_projection") for k in sd):
        out[tp] = out[tp].T.contiguous()  # Meta stores x @ P, transformers a Linear (P^T)
    pe = VIT + "embeddings.position_embeddings"
    if pe in out and out[pe].dim() == 3:
        n = out[pe].shape[1]
        side = int(round((n - 1) ** 0.5))
        if vit_grid is None and side * side == n - 1 or vit_grid is not None and n == vit_grid * vit_grid + 1:
            out[pe] = out[pe][:, 1:, :].contiguous()
    return out, report


def convert_checkpoint_to_folder(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                                 base: str | os.PathLike | None = None, lora_scale: float | None = None) -> Path:
    """Convert a checkpoint file into a loadable facebook/sam3-layout folder (config + model.safetensors).

    ``base``: a full facebook/sam3-layout folder whose weights are used for everything the checkpoint lacks (its
    config.json and tokenizer files are copied); without it the checkpoint must be complete and a ``config.json``
    must sit beside it. LoRA scale = alpha / r from the Lightning hyper-parameters when present, else
    ``lora_scale`` or Onco-Seg's 32 / 16. A doubled ``tracker_model.tracker_model.`` prefix is normalised.
    """
    from safetensors.torch import load_file, save_file

    from OncoSegLib.io.atomic import atomic_path

    ckpt = Path(checkpoint)
    out = Path(out_dir)
    sd, hparams = read_state_dict(ckpt)
    sd = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in sd.items()}
    if lora_scale is None:
        r = hparams.get("lora_r") or hparams.get("r")
        alpha = hparams.get("lora_alpha") or hparams.get("alpha")
        lora_scale = float(alpha) / float(r) if r and alpha else 32.0 / 16.0
    converted, report = convert_state_dict(sd, lora_scale=lora_scale)
    merged: dict[str, torch.Tensor] = {}
    config_src: Path | None = None
    if base is not None:
        base = Path(base)
        for f in sorted(base.glob("*.safetensors")):
            merged.update(load_file(str(f)))
        config_src = base / "config.json"
    elif (ckpt.parent / "config.json").is_file():
        config_src = ckpt.parent / "config.json"
    if config_src is None or not config_src.is_file():
        raise ModelError(f"no config.json for {ckpt.name}",
                         "put the facebook/sam3 config.json beside it, or give the base model folder")
    unknown_targets = [k for k in converted if merged and k not in merged]
    if unknown_targets:
        raise ModelError(f"{len(unknown_targets)} converted keys do not exist in the base model "
                         f"(e.g. {unknown_targets[:3]})", "the checkpoint belongs to another architecture")
    merged.update(converted)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_src, out / "config.json")
    if base is not None:
        for f in base.iterdir():
            if f.is_file() and f.suffix in (".json", ".txt") and f.name not in ("config.json",
                                                                                "model.safetensors.index.json"):
                shutil.copyfile(f, out / f.name)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in merged.items()}, str(tmp), metadata={"format": "pt"})
    (out / "oncoseg_conversion.json").write_text(json.dumps({
        "source": ckpt.name, "renamed": report.renamed, "passed_through": report.passed,
        "lora_pairs_merged": report.lora_merged, "lora_scale": lora_scale, "dropped": report.dropped,
        "base": str(base) if base else None}, indent=2), encoding="utf-8")
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
