"""Set-prediction loss for the text (concept) detector, ``Sam3Model``.

This follows DETR's / SAM3's set-prediction loss: the Q query masks of an image are matched one-to-one to the
concept's ground-truth instances (connected components of the label on the slice) by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on a cost = focal + Dice mask cost + classification cost; matched queries
get a Dice + focal mask loss (Onco-Seg's per-modality weights, ``losses.segmentation_loss``) and a positive
classification target, every other query a negative one; the presence head gets a BCE target "is the concept on
this slice". As in SAM3 (presence decouples recognition from localisation), the per-query classification loss is
only applied to images where the concept is present; absent concepts train the presence logit alone.

Shapes: ``pred_masks`` (B, Q, S, S) mask logits at the model input size S (model pixels); ``pred_logits`` (B, Q);
``presence_logits`` (B, 1) or (B,); ``instances``: per image an (N_b, S, S) {0, 1} tensor (N_b may be 0).
Instance score at inference = sigmoid(query logit) * sigmoid(presence logit) (``Sam3Predictor.detect_text``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from OncoSegLib.training.losses import segmentation_loss


@dataclass(frozen=True)
class TextLossWeights:
    """Weights of the matching cost and of the loss terms (DETR/SAM3-style defaults scaled for Dice + focal)."""

    cost_class: float = 2.0
    cost_focal: float = 5.0
    cost_dice: float = 5.0
    mask: float = 1.0
    cls: float = 2.0
    presence: float = 1.0
    gamma: float = 2.0


def pairwise_mask_cost(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(focal, dice) cost matrices (Q, N) between Q mask logits (Q, P) and N targets (N, P) (flattened pixels).

    focal: mean over pixels of the sigmoid focal loss of query q against target n; dice: 1 - soft Dice (+1 smooth).
    """
    x = logits.float()
    t = targets.float()
    p = torch.sigmoid(x)
    pos = (1 - p) ** gamma * F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none")
    neg = p ** gamma * F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")
    focal = (pos @ t.T + neg @ (1 - t).T) / x.shape[1]
    inter = p @ t.T
    dice = 1 - (2 * inter + 1) / (p.sum(1)[:, None] + t.sum(1)[None, :] + 1)
    return focal, dice


def hungarian_match(cost: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of a (Q queries, N targets) cost matrix: (query indices, target indices),
    sorted by target. Q >= N gives every target a query; Q < N leaves targets unmatched."""
    c = cost.detach().cpu().numpy() if isinstance(cost, torch.Tensor) else np.asarray(cost, dtype=float)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = linear_sum_assignment(c)
    order = np.argsort(cols)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


@torch.no_grad()
def match_queries(pred_masks: torch.Tensor, pred_logits: torch.Tensor, instances: torch.Tensor,
                  w: TextLossWeights = TextLossWeights()) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of one image: pred_masks (Q, S, S), pred_logits (Q,), instances (N, S, S)."""
    if instances.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    focal, dice = pairwise_mask_cost(pred_masks.flatten(1), instances.flatten(1).to(pred_masks.device), w.gamma)
    cls = -torch.sigmoid(pred_logits.float())[:, None].expand_as(focal)
    return hungarian_match(w.cost_focal * focal + w.cost_dice * dice + w.cost_class * cls)


def _focal_bce(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    return ce * (1 - p_t) ** gamma


def text_detection_loss(pred_masks: torch.Tensor, pred_logits: torch.Tensor, presence_logits: torch.Tensor,
                        instances: Sequence[torch.Tensor], present: Sequence[bool], modalities: Sequence[str],
                        w: TextLossWeights = TextLossWeights()) -> dict[str, torch.Tensor]:
    """The detector loss of a batch (see module doc): ``{"loss", "mask", "cls", "presence", "matched"}``.

    ``loss`` = w.mask * (Dice + focal of matched masks, modality-weighted) + w.cls * focal-BCE of the query logits
    (present images) + w.presence * BCE of the presence logit.
    """
    B, Q = pred_logits.shape
    dev = pred_logits.device
    pres = presence_logits.float().reshape(B, -1)[:, 0]
    pres_t = torch.tensor([1.0 if p else 0.0 for p in present], device=dev)
    l_pres = F.binary_cross_entropy_with_logits(pres, pres_t)
    m_logits, m_targets, m_mods = [], [], []
    cls_terms = []
    for b in range(B):
        inst = instances[b].to(dev).float()
        if not present[b]:
            continue
        q_idx, t_idx = match_queries(pred_masks[b], pred_logits[b], inst, w)
        tgt = torch.zeros(Q, device=dev)
        tgt[torch.as_tensor(q_idx, device=dev)] = 1.0
        cls_terms.append(_focal_bce(pred_logits[b].float(), tgt, w.gamma).mean())
        for q, n in zip(q_idx.tolist(), t_idx.tolist()):
            m_logits.append(pred_masks[b, q])
            m_targets.append(inst[n])
            m_mods.append(modalities[b])
    zero = pred_logits.sum() * 0.0
    l_cls = torch.stack(cls_terms).mean() if cls_terms else zero
    if m_logits:
        seg = segmentation_loss(torch.stack(m_logits).float(), torch.stack(m_targets), m_mods)
        l_mask = seg["loss"]
    else:
        l_mask = zero + pred_masks.sum() * 0.0
    loss = w.mask * l_mask + w.cls * l_cls + w.presence * l_pres
    return {"loss": loss, "mask": l_mask.detach(), "cls": l_cls.detach(), "presence": l_pres.detach(),
            "matched": torch.tensor(float(len(m_logits)))}


def detections_union(pred_masks: torch.Tensor, pred_logits: torch.Tensor, presence_logits: torch.Tensor,
                     threshold: float = 0.5) -> torch.Tensor:
    """(B, S, S) logits-like map of the union of instances scoring >= ``threshold`` (score = sigmoid(logit) *
    sigmoid(presence), as ``Sam3Predictor.detect_text``): the max mask logit over kept queries, -inf-like where
    none is kept."""
    B = pred_logits.shape[0]
    score = torch.sigmoid(pred_logits.float()) * torch.sigmoid(presence_logits.float().reshape(B, -1)[:, :1])
    keep = score >= threshold
    masked = torch.where(keep[:, :, None, None], pred_masks.float(), torch.full_like(pred_masks.float(), -1e4))
    return masked.max(dim=1).values
