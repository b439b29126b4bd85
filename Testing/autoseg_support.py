"""Shared helpers of the autoseg tests: a synthetic CT series with known organs, and a deterministic text predictor.

``TextBandPredictor`` follows the ``Sam3Predictor`` interface (``image_size``, ``mask_size``, ``encode``,
``predict``, ``mask_to_logits``, ``detect_text``, ``has_text``, ``has_video``). It reads back Hounsfield units from
the model input (CT window [-1000, 1000] HU -> model value HU / 1000 at a slice size equal to the model size, so no
resampling happens) and answers:

- ``detect_text(text)``: every 8-connected region of the slice whose HU lie in ``HU_BANDS[text]`` is one instance
  (score ``scores[text]``, default 0.9); unknown texts find nothing.
- ``predict(points/box)``: the region of the band of the **last text detected** containing the point (or the band's
  pixels inside the box) — the pipeline handles one structure at a time, so this is that structure's concept.
So the truth of every structure is known independently of the code under test (``truth_masks``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from OncoSegLib.io.volume import Volume
from OncoSegLib.models.predictor import ImageEmbeddings, MaskPrediction, Sam3Predictor, TextDetection

S = 112  # model input side = slice side: no resampling anywhere
SHAPE = (16, S, S)  # (K, J, I)
SPACING = (0.7, 0.9, 2.5)  # (si, sj, sk) mm: anisotropic so that an axis mix-up changes volumes
HU = {"air": -1000, "body": 0, "liver": 150, "lesion": 350, "kidney": 650}
HU_BANDS = {"body": (-500, 2000), "liver": (100, 400), "lesion": (300, 400), "kidney": (550, 800)}


def _ellipsoid(centre_ijk, radii_ijk) -> np.ndarray:
    k, j, i = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    (ci, cj, ck), (ri, rj, rk) = centre_ijk, radii_ijk
    return ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 + ((k - ck) / rk) ** 2 <= 1.0


def phantom_parts() -> dict[str, np.ndarray]:
    """The drawn parts (bool (K, J, I)): body cylinder, liver, lesion (inside the liver), two kidneys."""
    k, j, i = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    body = ((i - 56) / 50.0) ** 2 + ((j - 56) / 40.0) ** 2 <= 1.0
    return {"body": body, "liver": _ellipsoid((40, 55, 8), (18, 14, 5)),
            "lesion": _ellipsoid((34, 52, 8), (5, 5, 2)),
            "kidney_a": _ellipsoid((75, 70, 7), (6, 7, 3)), "kidney_b": _ellipsoid((90, 70, 9), (5, 6, 2))}


def truth_masks() -> dict[str, np.ndarray]:
    """What each text should give: body = everything not air; liver = liver incl. the lesion; both kidneys."""
    p = phantom_parts()
    return {"body": p["body"], "liver": p["liver"] | p["lesion"], "lesion": p["lesion"],
            "kidney": p["kidney_a"] | p["kidney_b"], "kidney_a": p["kidney_a"], "kidney_b": p["kidney_b"]}


def phantom_volume(modality: str = "CT") -> Volume:
    p = phantom_parts()
    arr = np.full(SHAPE, HU["air"], dtype=np.int16)
    arr[p["body"]] = HU["body"]
    arr[p["liver"]] = HU["liver"]
    arr[p["lesion"]] = HU["lesion"]
    arr[p["kidney_a"] | p["kidney_b"]] = HU["kidney"]
    if modality == "MR":  # MR: positive integers, no HU
        arr = (arr + 1000).astype(np.int16)
    return Volume(arr, spacing=SPACING, origin=(-40.25, -55.5, 12.0), modality=modality)


def write_phantom_series(folder: Path, modality: str = "CT") -> Volume:
    """Write the phantom as a DICOM series into ``folder`` and read it back (the volume run_autoseg will see)."""
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series

    vol = phantom_volume(modality)
    write_dicom_series(vol, folder, modality=modality, rescale=(1.0, 0.0) if modality == "MR" else None)
    return read_dicom_series(folder)


class TextBandPredictor:
    """Deterministic text/point predictor over HU bands (see the module docstring)."""

    has_text = True
    has_video = False

    def __init__(self, scores: dict[str, float] | None = None):
        self.image_size = S
        self.mask_size = S
        self.scores = dict(scores or {})
        self.text: str | None = None
        self.detect_calls: list[tuple[str, int]] = []

    @staticmethod
    def _hu(emb: ImageEmbeddings) -> np.ndarray:
        return emb.maps[0][0, 0].numpy().astype(np.float64) * 1000.0

    def _band(self, emb: ImageEmbeddings, text: str) -> np.ndarray:
        lo, hi = HU_BANDS[text]
        hu = self._hu(emb)
        return (hu >= lo - 1) & (hu <= hi + 1)

    def encode(self, pixel_values: torch.Tensor, with_detector: bool = False) -> ImageEmbeddings:
        assert tuple(pixel_values.shape[-2:]) == (S, S)
        return ImageEmbeddings(maps=[pixel_values.detach().clone()], detector="stub" if with_detector else None)

    def mask_to_logits(self, mask: np.ndarray, scale: float = 10.0) -> torch.Tensor:
        return Sam3Predictor.mask_to_logits(self, mask, scale)  # type: ignore[arg-type]

    def detect_text(self, emb, text, score_threshold=0.5, out_hw=None, max_instances=None):
        self.text = str(text).strip().lower()
        self.detect_calls.append((self.text, len(self.detect_calls)))
        if self.text not in HU_BANDS:
            return []
        score = float(self.scores.get(self.text, 0.9))
        if score < score_threshold:
            return []
        lab, n = ndimage.label(self._band(emb, self.text), structure=np.ones((3, 3), bool))
        regions = sorted((lab == v for v in range(1, n + 1)), key=lambda m: -int(m.sum()))
        dets = [TextDetection(logits=np.where(m, 10.0, -10.0).astype(np.float32), score=score,
                              box=(0.0, 0.0, 1.0, 1.0), low_res=torch.zeros(1, 1, 4, 4)) for m in regions]
        assert out_hw is None or tuple(out_hw) == (S, S)
        return dets[:max_instances] if max_instances else dets

    def predict(self, embeddings, points=None, labels=None, box=None, mask_input=None, multimask=False,
                out_hw=None) -> MaskPrediction:
        band = self._band(embeddings, self.text) if self.text in HU_BANDS else np.zeros((S, S), bool)
        if points is not None:
            x, y = (int(round(v)) for v in np.asarray(points, dtype=float)[0])
            lab, _ = ndimage.label(band, structure=np.ones((3, 3), bool))
            v = lab[y, x] if 0 <= y < S and 0 <= x < S else 0
            m = (lab == v) if v > 0 else np.zeros_like(band)
        else:
            yy, xx = np.mgrid[0:S, 0:S]
            m = band & (xx >= box[0] - 0.5) & (xx <= box[2] + 0.5) & (yy >= box[1] - 0.5) & (yy <= box[3] + 0.5)
        logits = np.where(m, 10.0, -10.0).astype(np.float32)
        return MaskPrediction(logits=logits, low_res=torch.from_numpy(logits)[None, None], iou=0.9, presence=0.95)


def protocol_dict(**top) -> dict:
    """The test protocol: body (EXTERNAL), liver (ORGAN), lesion (GTV), kidney (all instances), spleen (absent)."""
    d = {
        "name": "test-abdomen",
        "modalities": ["ct"],
        "probe_slices": 8,
        "structures": [
            {"name": "BODY", "text": "body", "type": "EXTERNAL", "color": "#00FF00"},
            {"name": "Liver", "text": "liver", "type": "ORGAN", "color": [220, 110, 60]},
            {"name": "GTV_Liver", "text": "lesion", "type": "GTV", "color": "255:0:0"},
            {"name": "Kidneys", "text": "kidney", "type": "AVOIDANCE", "color": "#0080FF", "keep": "all"},
            {"name": "Spleen", "text": "spleen", "color": "#AA00AA"},
        ],
    }
    d.update(top)
    return d


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s
