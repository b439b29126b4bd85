"""LiteMedSAM's prompt encoder and mask decoder: transformers' SAM modules with a small ``SamConfig``, and the exact
map from the checkpoint's (segment-anything) parameter names to transformers' names.

LiteMedSAM keeps SAM-ViT-B's prompt encoder and two-way mask decoder (256 channels, 8 heads, MLP 2048, 4 mask
tokens) on a 64 x 64 image embedding of a 256 x 256 input, so ``SamPromptEncoder`` / ``SamMaskDecoder`` fit once
their sizes are set (``image_size`` 256, ``image_embedding_size`` 64) and the transformer's LayerNorm epsilon is
segment-anything's 1e-5. Every checkpoint tensor maps to exactly one module tensor (checked by the strict load in
:mod:`OncoSegLib.models.litemedsam.model` and by the tests). Coordinates given to the prompt encoder are model
pixels (x, y) of the 256 x 256 input; it adds 0.5 (pixel centre) and divides by 256.
"""

from __future__ import annotations

import re

import torch
from torch import nn

#: (checkpoint-name pattern, transformers-name replacement); applied in order, first match wins per rule group.
_RENAMES: tuple[tuple[str, str], ...] = (
    # prompt encoder
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "prompt_encoder.shared_embedding.positional_embedding"),
    (r"^prompt_encoder\.point_embeddings\.(\d)\.", r"prompt_encoder.point_embed.\1."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    # mask decoder
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", r"\1.proj_in."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.1\.", r"\1.layers.0."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.2\.", r"\1.proj_out."),
)


def checkpoint_name_to_module(name: str) -> str:
    """A LiteMedSAM checkpoint parameter name -> the name in :class:`~OncoSegLib.models.litemedsam.model.LiteMedSAM`
    (image encoder names are unchanged; prompt encoder / mask decoder names follow transformers' SAM)."""
    for pattern, repl in _RENAMES:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    return name


def sam_config(embedding_size: int = 64, image_size: int = 256, attn_implementation: str = "sdpa") -> "object":
    """The ``SamConfig`` that sizes transformers' SAM heads for LiteMedSAM (only the heads are built from it)."""
    from transformers import SamConfig

    cfg = SamConfig(
        vision_config={"image_size": image_size, "num_pos_feats": 128},
        prompt_encoder_config={"hidden_size": 256, "image_size": image_size, "image_embedding_size": embedding_size,
                               "mask_input_channels": 16, "num_point_embeddings": 4, "layer_norm_eps": 1e-6},
        mask_decoder_config={"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8, "mlp_dim": 2048,
                             "num_multimask_outputs": 3, "iou_head_depth": 3, "iou_head_hidden_dim": 256,
                             "attention_downsample_rate": 2, "layer_norm_eps": 1e-5},
    )
    cfg.mask_decoder_config._attn_implementation = attn_implementation
    return cfg


def build_heads(embedding_size: int = 64, image_size: int = 256) -> tuple[nn.Module, nn.Module]:
    """(SamPromptEncoder, SamMaskDecoder) sized for LiteMedSAM, randomly initialised (load weights after)."""
    from transformers.models.sam.modeling_sam import SamMaskDecoder, SamPromptEncoder

    cfg = sam_config(embedding_size, image_size)
    return SamPromptEncoder(cfg), SamMaskDecoder(cfg.mask_decoder_config)


def dense_positional_encoding(prompt_encoder: nn.Module, size: int) -> torch.Tensor:
    """(1, 256, size, size) positional encoding of the embedding grid's cell centres (SAM's ``get_dense_pe``)."""
    pe = prompt_encoder.shared_embedding
    w = pe.positional_embedding
    c = (torch.arange(size, device=w.device, dtype=w.dtype) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1)[None]  # (1, size, size, 2) as (x, y) in [0, 1]
    return pe(grid).permute(0, 3, 1, 2)
