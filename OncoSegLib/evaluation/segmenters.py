"""Adapters that let the evaluation protocols drive the real engine.

- :class:`PredictorSliceSegmenter` (one-prompt protocol): encodes each slice once with
  :class:`~OncoSegLib.models.predictor.Sam3Predictor` and decodes every prompt of that slice.
- :class:`SessionSegmenter` (CVPR25 click protocol): one :class:`~OncoSegLib.session.SegmentationSession` per
  image, one object per class: the box prompts slice ``z_mid`` and is propagated; each click is added with
  ``add_point`` (the session re-decodes that slice and re-propagates what it affects). For a model trained with
  boxes only (the predictor's ``trained_prompts``, LiteMedSAM) the session turns each click into an edit of that
  slice's box or mask and changes that slice only (:mod:`OncoSegLib.click_to_box`; measured in docs/evaluation.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from OncoSegLib.evaluation.click_protocol import ClassPrompts
from OncoSegLib.evaluation.one_prompt import SlicePrompt
from OncoSegLib.io.volume import Volume


class PredictorSliceSegmenter:
    """One-prompt segmenter over a ``Sam3Bundle`` (or ``Sam3Predictor``). Coordinates: voxel (i, j) on slice k ->
    model pixels with :func:`OncoSegLib.slicing.pixel_to_model`."""

    def __init__(self, model: Any, modality: str | None = None, window: tuple[float, float] | None = None):
        from OncoSegLib.models.predictor import Sam3Predictor

        self.predictor = model if hasattr(model, "predict") else Sam3Predictor(model)  # LiteMedSAM is a predictor
        self.modality = modality
        self.window = window
        self._norm_key: int | None = None
        self._norm: Any = None

    def _normalizer(self, image: Volume) -> Any:
        from OncoSegLib.preprocessing import fit_normalizer

        if self._norm_key != id(image):
            mod = self.modality or (image.metadata.get("oncoseg_modality") if image.metadata else None)
            if mod is None:
                from OncoSegLib.modality import detect_modality

                mod = detect_modality(image).modality
            window = self.window if self.window is not None or mod != "ct" else getattr(self.predictor, "ct_window",
                                                                                          None)
            self._norm = fit_normalizer(image, mod, window)
            self._norm_key = id(image)
        return self._norm

    def __call__(self, image: Volume, k: int, prompts: Sequence[SlicePrompt]) -> Mapping[int, np.ndarray]:
        from OncoSegLib.preprocessing import to_model_input
        from OncoSegLib.slicing import pixel_to_model

        s = self.predictor.image_size
        norm = self._normalizer(image)
        hw = image.shape_kji[1:]
        pred_ = self.predictor
        if hasattr(pred_, "prepare"):  # a predictor owning its preprocessing and pixel map (LiteMedSAM)
            emb = pred_.encode(pred_.prepare(image.array[k], norm))
            to_xy = pred_.to_model_xy
        else:
            emb = pred_.encode(to_model_input(norm(image.array[k]), s)[None])
            to_xy = lambda r, c, hw_: pixel_to_model(r, c, hw_, s)  # noqa: E731
        out: dict[int, np.ndarray] = {}
        for p in prompts:
            if p.box is not None:
                x0, y0 = to_xy(p.box[1], p.box[0], hw)
                x1, y1 = to_xy(p.box[3], p.box[2], hw)
                pred = self.predictor.predict(emb, box=(x0, y0, x1, y1), out_hw=hw)
            else:
                assert p.point is not None
                x, y = to_xy(p.point[1], p.point[0], hw)
                pred = self.predictor.predict(emb, points=[[x, y]], labels=[1], out_hw=hw)
            out[p.label] = pred.mask
        return out


class SessionSegmenter:
    """Click-protocol segmenter over a :class:`SegmentationSession` (see module docstring).

    Args:
        model: a ``Sam3Bundle`` or ``LiteMedSamPredictor``; modality/window as ``SegmentationSession.set_volume``;
            ``method``: propagation method (one of ``OncoSegLib.propagation.METHODS``; None: the model's default,
            ``SegmentationSession.default_method``: memory with a video tracker, else box3d).

    The challenge's box is given as a 3D box: its 2D box prompts slice ``z_mid`` and the object's propagation is
    bounded to ``z_min..z_max`` (the challenge's own statement of where the object is).
    """

    def __init__(self, model: Any, modality: str | None = None, window: tuple[float, float] | None = None,
                 method: str | None = None):
        from OncoSegLib.session import SegmentationSession

        self.session = SegmentationSession(model)
        self.modality = modality
        self.window = window
        self.method = method
        self._image_id: int | None = None
        self._objects: dict[int, Any] = {}
        self._applied: dict[int, int] = {}

    def __call__(self, image: Volume, prompts: Mapping[int, ClassPrompts],
                 previous: np.ndarray | None) -> np.ndarray:
        ses = self.session
        if self._image_id != id(image):
            ses.set_volume(image, modality=self.modality, window=self.window)
            self._image_id = id(image)
            self._objects, self._applied = {}, {}
        for label, cp in prompts.items():
            if label not in self._objects:
                oid = ses.add_object(f"label {label}")
                self._objects[label] = oid
                self._applied[label] = 0
                if cp.box is not None:
                    b = cp.box
                    ses.add_box(oid, (b.x_min, b.y_min, b.z_min), (b.x_max, b.y_max, b.z_max), center=b.z_mid)
                    if image.shape_kji[0] > 1:
                        ses.propagate(oid, direction="both", method=self.method)
            oid = self._objects[label]
            for click in cp.clicks[self._applied[label]:]:
                k, j, i = click.kji
                ses.add_point(oid, (i, j, k), positive=click.positive)
            self._applied[label] = len(cp.clicks)
        out = np.zeros(image.shape_kji, dtype=np.int32)
        for label in sorted(self._objects):
            out[ses.result(self._objects[label])] = label
        return out
