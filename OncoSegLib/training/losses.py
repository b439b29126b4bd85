"""Dice + focal loss with Onco-Seg's per-modality weights.

Onco-Seg weights (dice weight, focal weight, focal gamma): CT and MRI (and any modality not listed) 1.0 / 1.0 /
gamma 2; mammography, dermoscopy, endoscopy and ultrasound 0.5 / 1.5 / gamma 3 (boundaries there are fuzzier,
so the pixel-wise focal term gets more weight). Dice uses +1 smoothing so an empty target with an empty
prediction costs 0. The focal term is the sigmoid focal loss without alpha balancing (alpha = -1), averaged over
pixels. Both are computed per sample, weighted by the sample's modality, then averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    dice: float
    focal: float
    gamma: float


DEFAULT_WEIGHTS = LossWeights(1.0, 1.0, 2.0)
SOFT_BOUNDARY_WEIGHTS = LossWeights(0.5, 1.5, 3.0)
MODALITY_WEIGHTS: dict[str, LossWeights] = {
    "ct": DEFAULT_WEIGHTS,
    "mri": DEFAULT_WEIGHTS,
    "mammography": SOFT_BOUNDARY_WEIGHTS,
    "dermoscopy": SOFT_BOUNDARY_WEIGHTS,
    "endoscopy": SOFT_BOUNDARY_WEIGHTS,
    "ultrasound": SOFT_BOUNDARY_WEIGHTS,
}


def weights_for(modality: str | None) -> LossWeights:
    """Loss weights of a modality (OncoSeg modality names); unknown -> CT/MR weights."""
    return MODALITY_WEIGHTS.get((modality or "").lower(), DEFAULT_WEIGHTS)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-sample soft Dice loss. logits/target (B, H, W) -> (B,)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    return 1.0 - (2.0 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """Per-sample sigmoid focal loss (mean over pixels). ``gamma`` scalar or (B,) -> (B,)."""
    x = logits.float().flatten(1)
    t = target.float().flatten(1)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    g = torch.as_tensor(gamma, dtype=x.dtype, device=x.device)
    if g.ndim == 1:
        g = g[:, None]
    return (ce * (1 - p_t).clamp_min(0) ** g).mean(1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    """Onco-Seg loss of a batch: ``{"loss", "dice", "focal"}`` (scalars; ``loss`` is the weighted sum, mean over B).

    logits: (B, H, W) mask logits; target: (B, H, W) in {0, 1}; modalities: one name per sample.
    """
    w = [weights_for(m) for m in modalities]
    dev = logits.device
    wd = torch.tensor([x.dice for x in w], device=dev)
    wf = torch.tensor([x.focal for x in w], device=dev)
    gamma = torch.tensor([x.gamma for x in w], device=dev)
    d = dice_loss(logits, target)
    f = focal_loss(logits, target, gamma)
    loss = (wd * d + wf * f).mean()
    return {"loss": loss, "dice": d.mean().detach(), "focal": f.mean().detach()}


def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Hard Dice per sample of ``logits > 0`` against ``target`` (both empty -> 1). (B, H, W) -> (B,)."""
    p = (logits > 0).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1e-8), torch.ones_like(denom))
