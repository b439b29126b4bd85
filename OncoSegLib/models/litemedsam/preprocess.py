"""LiteMedSAM's slice preprocessing and the geometry between slice pixels and its 256 x 256 model input.

As LiteMedSAM was trained (CVPR 2024 "MedSAM on a laptop" recipe, and the reading in
``shared/tools/litemedsam_reference.py`` that our reference fixtures use):

1. intensities to [0, 1]: CT by a HU window (default -160..240, W400/L40; a user window wins); other grey images by
   the 0.5 and 99.5 percentiles of the slice itself (``numpy.percentile``, linear); colour images (endoscopy,
   dermoscopy) by the session's per-volume normaliser (already [0, 1], 3 channels);
2. the longest side resized to 256 (bilinear, ``align_corners=False``, antialiased: identical to plain bilinear when
   enlarging, an area-like filter when shrinking as the training's ``cv2.INTER_AREA``), the other side to
   ``round(side * 256 / longest)``;
3. zero padding at the bottom and right to 256 x 256; grey repeated to 3 channels. No mean/std normalisation.

Frames: a slice is (H, W) = (rows, cols) in the slicing layout of :mod:`OncoSegLib.slicing`. Model pixels (x, y)
are ``x = col * s``, ``y = row * s`` with ``s = 256 / max(H, W)`` (LiteMedSAM scales box coordinates this way; the
prompt encoder then adds 0.5). Mask logits come back as 256 x 256 over the padded input: the unpadded
``(round(H s), round(W s))`` corner is cropped and resized to (H, W) bilinearly (``align_corners=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

MODEL_SIZE = 256
CT_WINDOW: tuple[float, float] = (-160.0, 240.0)
PERCENTILES: tuple[float, float] = (0.5, 99.5)


@dataclass(frozen=True)
class Geometry:
    """How an (H, W) slice sits in the model input: ``scale`` = 256 / max(H, W), ``resized`` = (round(H s),
    round(W s)) is the unpadded top-left part."""

    hw: tuple[int, int]
    scale: float
    resized: tuple[int, int]

    @classmethod
    def of(cls, hw: tuple[int, int], size: int = MODEL_SIZE) -> "Geometry":
        h, w = int(hw[0]), int(hw[1])
        s = size / max(h, w)
        return cls((h, w), s, (int(round(h * s)), int(round(w * s))))


def percentile01(slice_hw: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Grey (H, W) slice -> float32 [0, 1] by its own percentiles (non-finite values ignored; constant slice -> 0)."""
    x = np.asarray(slice_hw, dtype=np.float64)
    fin = x[np.isfinite(x)]
    if fin.size == 0:
        return np.zeros(x.shape, dtype=np.float32)
    lo, hi = np.percentile(fin, percentiles)
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.float32)
    y = np.nan_to_num((x - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def intensity01(slice_raw: np.ndarray, normalizer: Any) -> np.ndarray:
    """Raw slice (H, W) or (H, W, C) -> float32 [0, 1], (H, W) for grey or (H, W, 3) for colour (module rule 1).

    ``normalizer``: the session's :class:`~OncoSegLib.preprocessing.Normalizer`; its CT window is used for CT (the
    session fits it with :data:`CT_WINDOW` unless the user chose one) and its output for colour images.
    """
    if normalizer is not None and getattr(normalizer, "modality", None) == "ct":
        return np.asarray(normalizer(slice_raw), dtype=np.float32)[..., 0]
    if normalizer is not None and getattr(normalizer, "in_channels", 1) > 1:
        return np.asarray(normalizer(slice_raw), dtype=np.float32)
    return percentile01(slice_raw)


def to_model_input(slice01: np.ndarray, antialias: bool = True, size: int = MODEL_SIZE) -> torch.Tensor:
    """[0, 1] slice (H, W) or (H, W, 3) -> (1, 3, 256, 256) float32: longest side to 256, zero pad bottom/right."""
    a = torch.as_tensor(np.ascontiguousarray(slice01, dtype=np.float32))
    t = a[None, None] if a.ndim == 2 else a.permute(2, 0, 1)[None]
    g = Geometry.of(tuple(t.shape[-2:]), size)
    shrink = g.resized[0] < g.hw[0] or g.resized[1] < g.hw[1]
    t = F.interpolate(t, size=g.resized, mode="bilinear", align_corners=False, antialias=antialias and shrink)
    t = F.pad(t, (0, size - g.resized[1], 0, size - g.resized[0]))
    return t.expand(1, 3, size, size).contiguous() if t.shape[1] == 1 else t


def to_model_xy(row: float | np.ndarray, col: float | np.ndarray, hw: tuple[int, int], size: int = MODEL_SIZE
                ) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Slice pixel (row, col) of an (H, W) slice -> model pixels (x, y) = (col s, row s), s = 256 / max(H, W)."""
    s = Geometry.of(hw, size).scale
    x = np.asarray(col, dtype=float) * s
    y = np.asarray(row, dtype=float) * s
    return (float(x) if np.ndim(x) == 0 else x), (float(y) if np.ndim(y) == 0 else y)


def logits_to_slice(low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(..., 256, 256) logits over the padded input -> (H, W) logits of the slice (crop, then bilinear resize)."""
    g = Geometry.of(hw, low_res.shape[-1])
    crop = low_res.reshape(-1, 1, *low_res.shape[-2:])[:1, :, : g.resized[0], : g.resized[1]].float()
    return F.interpolate(crop, size=g.hw, mode="bilinear", align_corners=False)[0, 0]


def mask_to_logits(mask: np.ndarray, scale: float = 10.0, size: int = MODEL_SIZE) -> torch.Tensor:
    """Boolean (H, W) slice mask -> (1, 1, 256, 256) mask-input logits laid out like the model input
    (+scale inside, -scale outside and in the padding; the 0.5 iso-line of the resized mask is logit 0)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    g = Geometry.of(tuple(m.shape[-2:]), size)
    shrink = g.resized[0] < g.hw[0] or g.resized[1] < g.hw[1]
    r = F.interpolate(m, size=g.resized, mode="bilinear", align_corners=False, antialias=shrink)
    r = F.pad(r, (0, size - g.resized[1], 0, size - g.resized[0]))
    return (2.0 * r - 1.0) * scale
