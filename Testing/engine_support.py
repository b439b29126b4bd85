"""Shared helpers for the engine tests (session, propagation, predictor): stub predictors and synthetic volumes.

Stub predictors follow the ``Sam3Predictor`` interface (``image_size``, ``mask_size``, ``encode``, ``predict``,
``mask_to_logits``) and return deterministic masks, so tests can assert real Dice values and exact positions.
"""

from __future__ import annotations

import numpy as np
import torch

from OncoSegLib.io.volume import Volume
from OncoSegLib.models.predictor import ImageEmbeddings, MaskPrediction, Sam3Predictor
from OncoSegLib.preprocessing import resize_mask_logits


class _StubBase:
    """Common part: encode keeps the model input itself as the 'embedding' and counts calls."""

    has_text = False
    has_video = False

    def __init__(self, image_size: int = 112):
        self.image_size = image_size
        self.mask_size = image_size  # stubs answer at model-input resolution
        self.encodes = 0
        self.calls: list[dict] = []

    def encode(self, pixel_values: torch.Tensor, with_detector: bool = False) -> ImageEmbeddings:
        self.encodes += int(pixel_values.shape[0])
        return ImageEmbeddings(maps=[pixel_values.detach().clone()])

    def mask_to_logits(self, mask: np.ndarray, scale: float = 10.0) -> torch.Tensor:
        return Sam3Predictor.mask_to_logits(self, mask, scale)  # type: ignore[arg-type]

    def _finish(self, model_mask: np.ndarray, out_hw, iou: float = 0.9) -> MaskPrediction:
        logits = torch.from_numpy(np.where(model_mask, 10.0, -10.0).astype(np.float32))
        low = logits[None, None]
        out = resize_mask_logits(logits, tuple(out_hw)) if out_hw is not None else logits
        return MaskPrediction(logits=out.numpy(), low_res=low, iou=iou, presence=0.95)


class DiscPredictor(_StubBase):
    """Returns a disc of ``radius`` model pixels centred on the mean of the positive points (or the box centre)."""

    def __init__(self, image_size: int = 112, radius: float = 6.0):
        super().__init__(image_size)
        self.radius = radius

    def predict(self, embeddings, points=None, labels=None, box=None, mask_input=None, multimask=False,
                out_hw=None) -> MaskPrediction:
        self.calls.append({"points": None if points is None else np.asarray(points), "box": box})
        if points is not None:
            p = np.asarray(points, dtype=float)[np.asarray(labels) == 1]
            cx, cy = p[:, 0].mean(), p[:, 1].mean()
        else:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        yy, xx = np.mgrid[0:self.image_size, 0:self.image_size]
        return self._finish((xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius ** 2, out_hw)


class MaskEchoPredictor(_StubBase):
    """Returns the mask input it was given (a mask prompt round trip through model space)."""

    def predict(self, embeddings, points=None, labels=None, box=None, mask_input=None, multimask=False,
                out_hw=None) -> MaskPrediction:
        m = torch.as_tensor(mask_input).reshape(mask_input.shape[-2:]).numpy() > 0
        return self._finish(m, out_hw)


class RegionPredictor(_StubBase):
    """An 'ideal' segmenter on bright objects: the bright connected region (model input > 0) containing the point
    (empty if the point is dark), or the bright pixels inside the box. Lets propagation be scored against the truth.
    """

    def predict(self, embeddings, points=None, labels=None, box=None, mask_input=None, multimask=False,
                out_hw=None) -> MaskPrediction:
        from scipy.ndimage import label

        img = embeddings.maps[0][0, 0].numpy() > 0.0
        self.calls.append({"points": None if points is None else np.asarray(points), "box": box})
        if points is not None:
            x, y = np.asarray(points, dtype=float)[0]
            xi, yi = int(round(x)), int(round(y))
            lab, _ = label(img)
            v = lab[yi, xi] if 0 <= yi < img.shape[0] and 0 <= xi < img.shape[1] else 0
            m = (lab == v) if v > 0 else np.zeros_like(img)
        else:
            yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
            inside = (xx >= box[0] - 0.5) & (xx <= box[2] + 0.5) & (yy >= box[1] - 0.5) & (yy <= box[3] + 0.5)
            m = img & inside
        return self._finish(m, out_hw)


def ellipsoid(shape_kji, centre_ijk, radii_ijk) -> np.ndarray:
    """Boolean (K, J, I) ellipsoid with centre and radii in voxels (i, j, k)."""
    k, j, i = np.mgrid[0:shape_kji[0], 0:shape_kji[1], 0:shape_kji[2]]
    ci, cj, ck = centre_ijk
    ri, rj, rk = radii_ijk
    return ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 + ((k - ck) / rk) ** 2 <= 1.0


def ct_volume(shapes: list[np.ndarray], shape_kji=(24, 40, 52), seed: int = 0) -> Volume:
    """A CT-like volume: -800 HU background with mild noise, +400 HU inside each given mask."""
    rng = np.random.default_rng(seed)
    arr = (-800 + rng.normal(0, 5, shape_kji)).astype(np.float32)
    for m in shapes:
        arr[m] = 400 + rng.normal(0, 5, int(m.sum()))
    return Volume(arr, spacing=(0.7, 0.9, 2.5), origin=(12.5, -30.25, 41.0), modality="CT")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


_BUNDLES: dict = {}


def tiny(seed: int = 0):
    """A cached tiny_bundle per seed (building one takes seconds; tests in one run share it, read-only)."""
    from OncoSegLib.models.tiny import tiny_bundle

    if seed not in _BUNDLES:
        _BUNDLES[seed] = tiny_bundle(seed=seed)
    return _BUNDLES[seed]
