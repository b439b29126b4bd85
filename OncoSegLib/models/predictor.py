"""`Sam3Predictor`: encode 2D slices once, decode prompts on cached embeddings, find instances from text.

Coordinates: every point/box handed to :meth:`Sam3Predictor.predict` is in **model pixels** (x, y) of the square
S x S model input (pixel-centre convention of :mod:`OncoSegLib.slicing`); mask logits come back either in the
model's low-resolution mask grid (``mask_size`` = 4x the patch grid, 288 at S = 1008, covering the whole model
input) or resized to the slice size (H, W) when ``out_hw`` is given. Pre-processing (normalisation, resize,
``(x - 0.5) / 0.5``) is :mod:`OncoSegLib.preprocessing`'s job; no torchvision anywhere.

Embeddings: the tracker layout of ``Sam3TrackerModel.get_image_embeddings`` (three maps: stride-4 and stride-8
features already projected by the mask decoder's ``conv_s0``/``conv_s1``, and the top level plus the tracker's
``no_memory_embedding``). They are derived from one run of the vision encoder; when the detector shares the ViT
backbone (the facebook/sam3 layout) a text prompt reuses that backbone run for its own FPN neck.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.preprocessing import resize_mask_logits


@dataclass
class ImageEmbeddings:
    """Cached image features of a batch of B slices (model pixels S x S).

    Attributes:
        maps: tracker layout, ``[s0 (B, C/8, 4g, 4g), s1 (B, C/4, 2g, 2g), top (B, C, g, g)]`` with g = S / patch.
        detector: the detector's ``Sam3VisionEncoderOutput`` for text prompts, or ``None`` (not kept in caches).
    """

    maps: list[torch.Tensor]
    detector: Any = None

    @property
    def batch(self) -> int:
        return int(self.maps[-1].shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the tracker maps (what an embedding cache accounts for)."""
        return int(sum(m.numel() * m.element_size() for m in self.maps))

    def item(self, b: int) -> "ImageEmbeddings":
        """The embeddings of slice ``b`` of the batch (batch size 1), without the detector features."""
        return ImageEmbeddings([m[b:b + 1] for m in self.maps])

    def tracker_only(self) -> "ImageEmbeddings":
        """A copy without the (large) detector features: what caches keep."""
        return ImageEmbeddings(list(self.maps))


@dataclass
class MaskPrediction:
    """One decoded mask.

    Attributes:
        logits: (H, W) float32 numpy mask logits at slice size (``out_hw``) or (L, L) in the model mask grid.
        low_res: (1, 1, L, L) torch logits in the model mask grid (usable as a later ``mask_input``).
        iou: predicted IoU of the returned mask (0..1), or ``None`` ("n/a") when the model's IoU head was not
            trained to predict it (``confidence_heads["iou"]`` False).
        presence: sigmoid of the object-score logit (0..1): does the object appear at all; ``None`` when that head
            is uninformative (``confidence_heads["presence"]`` False) or absent.
    """

    logits: np.ndarray
    low_res: torch.Tensor
    iou: float | None
    presence: float | None

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask = ``logits > 0``."""
        return self.logits > 0


@dataclass
class TextDetection:
    """One instance found by a text prompt.

    Attributes:
        logits: (H, W) float32 mask logits at slice size (or the model mask grid when no ``out_hw``).
        score: sigmoid(instance logit) * sigmoid(presence logit), 0..1.
        box: (x0, y0, x1, y1) in model pixels.
        low_res: (1, 1, h, w) torch mask logits in the detector's mask grid (model-input layout).
    """

    logits: np.ndarray
    score: float
    box: tuple[float, float, float, float]
    low_res: torch.Tensor

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0


_DECODER_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_DECODER_LOCKS_GUARD = threading.Lock()


def _decoder_lock(decoder: Any) -> threading.RLock:
    with _DECODER_LOCKS_GUARD:
        lk = _DECODER_LOCKS.get(decoder)
        if lk is None:
            lk = _DECODER_LOCKS[decoder] = threading.RLock()
        return lk


class Sam3Predictor:
    """Points / boxes / masks / text on SAM3 (transformers) with encoder features computed once per slice.

    Args:
        bundle: a :class:`~OncoSegLib.models.bundle.Sam3Bundle` (tracker required; detector + tokenizer for text).
        dynamic_multimask: SAM's stability fallback for single-mask decoding (transformers'
            ``dynamic_multimask_via_stability``, Meta's ``dynamic_multimask_via_stability`` in the tracker): when the
            single-mask output of a one-click prompt looks unstable (its area changes with the threshold), the best
            of the three multimask outputs is used instead. ``None`` (default) = what the checkpoint's config says,
            as stock transformers and Meta's tracker do: on for facebook/sam3 (the config default), off for models
            whose single-mask output alone was fine-tuned (``oncoseg train`` exports write it off; the multimask
            outputs of such decoders were never trained: measured Dice swings of 0.0-0.5 with it on). True / False
            force it. The setting applies to this predictor's calls only: the (shared) mask decoder's flag is set
            for the duration of each decode or propagation step and restored afterwards, so the bundle other code
            holds is left as it was loaded.
        cpu_bf16: run bf16 autocast on CPU too (CUDA always uses bf16 autocast).
    """

    def __init__(self, bundle: Any, dynamic_multimask: bool | None = None, cpu_bf16: bool = False):
        if getattr(bundle, "tracker", None) is None:
            raise ModelError("the model bundle has no tracker (Sam3TrackerModel)", "load a SAM3 checkpoint")
        self.bundle = bundle
        self.tracker = bundle.tracker
        self.image_size = int(bundle.image_size)
        self.device = torch.device(getattr(bundle, "device", "cpu"))
        self.cpu_bf16 = bool(cpu_bf16)
        self.dynamic_multimask = None if dynamic_multimask is None else bool(dynamic_multimask)
        pe = self.tracker.prompt_encoder
        self.mask_size = int(pe.mask_input_size[0])
        self._pos_cache: dict[tuple, list[torch.Tensor]] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def has_text(self) -> bool:
        return getattr(self.bundle, "detector", None) is not None and getattr(self.bundle, "tokenizer", None) is not None

    @property
    def has_video(self) -> bool:
        return getattr(self.bundle, "video", None) is not None

    @property
    def confidence_heads(self) -> dict[str, bool]:
        """Which confidence outputs mean something: ``{"iou": bool, "presence": bool}`` (the bundle's
        ``confidence_heads``; both True for stock SAM3). An uninformative one is reported as ``None`` ("n/a")."""
        heads = getattr(self.bundle, "confidence_heads", None) or {}
        return {"iou": bool(heads.get("iou", True)), "presence": bool(heads.get("presence", True))}

    def _decoders(self) -> list[Any]:
        out: list[Any] = []
        for model in (self.tracker, getattr(self.bundle, "video", None)):
            dec = getattr(model, "mask_decoder", None) if model is not None else None
            if dec is not None and hasattr(dec, "dynamic_multimask_via_stability") and all(d is not dec for d in out):
                out.append(dec)
        return out

    @contextlib.contextmanager
    def decoder_settings(self) -> Iterator[None]:
        """Apply this predictor's ``dynamic_multimask`` choice (``None``: the decoder's own, as loaded) to the mask
        decoder(s) for the duration of a call and restore the previous value after it (the bundle may be shared with
        training, evaluation or another predictor). Calls on one decoder are serialised by a per-decoder lock, so
        another predictor's choice never leaks into this call."""
        decs = self._decoders()
        locks = [_decoder_lock(d) for d in decs]
        for lk in locks:
            lk.acquire()
        old = [d.dynamic_multimask_via_stability for d in decs]
        try:
            if self.dynamic_multimask is not None:
                for d in decs:
                    d.dynamic_multimask_via_stability = self.dynamic_multimask
            yield
        finally:
            for d, v in zip(decs, old):
                d.dynamic_multimask_via_stability = v
            for lk in reversed(locks):
                lk.release()

    @contextlib.contextmanager
    def run_context(self, what: str) -> Iterator[None]:
        """What every model call runs under: out-of-memory -> ``ModelError`` naming ``what``, inference mode,
        autocast (bf16 on CUDA; on CPU only with ``cpu_bf16``) and this predictor's decoder settings."""
        from OncoSegLib.models.device import autocast, oom_guard

        with oom_guard(what, self.device), torch.inference_mode(), autocast(self.device, self.cpu_bf16), \
                self.decoder_settings():
            yield


    def _check_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if pixel_values.ndim == 3:
            pixel_values = pixel_values[None]
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, s, s):
            raise InputError(f"model input must be (B, 3, {s}, {s}), got {tuple(pixel_values.shape)}",
                             "prepare slices with OncoSegLib.preprocessing.to_model_input")
        return pixel_values.to(self.device, dtype=self._weight_dtype())

    def _weight_dtype(self) -> torch.dtype:
        return next(self.tracker.parameters()).dtype

    def _backbone_shared(self) -> bool:
        det = getattr(self.bundle, "detector", None)
        if det is None:
            return False
        a = det.vision_encoder.backbone
        b = self.tracker.vision_encoder.backbone
        if a is b:
            return True
        pa = next(a.parameters(), None)
        pb = next(b.parameters(), None)
        return pa is not None and pa is pb

    @staticmethod
    def _run_vision(vision_model: Any, pixel_values: torch.Tensor, backbone_out: Any = None) -> tuple[Any, Any]:
        """(backbone hidden states, Sam3VisionEncoderOutput-like) of ``vision_model`` (a Sam3VisionModel).

        Mirrors ``Sam3VisionModel.forward`` (backbone -> spatial reshape -> FPN neck) so that two necks can share
        one backbone run; checked against the stock forward in the tests.
        """
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        if backbone_out is None:
            backbone_out = vision_model.backbone(pixel_values).last_hidden_state
        b = backbone_out.shape[0]
        patch = vision_model.config.backbone_config.patch_size
        h, w = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        spatial = backbone_out.view(b, h, w, -1).permute(0, 3, 1, 2)
        fpn, pos = vision_model.neck(spatial)
        return backbone_out, Sam3VisionEncoderOutput(last_hidden_state=backbone_out, fpn_hidden_states=fpn,
                                                     fpn_position_encoding=pos)

    def _tracker_maps(self, fpn: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Tracker embeddings from the tracker neck's FPN maps (same as ``get_image_embeddings``)."""
        dec = self.tracker.mask_decoder
        s0 = dec.conv_s0(fpn[0])
        s1 = dec.conv_s1(fpn[1])
        top = fpn[2] + self.tracker.no_memory_embedding.view(1, -1, 1, 1).to(fpn[2].dtype)
        return [s0, s1, top]

    # ------------------------------------------------------------------ encode
    def encode(self, pixel_values: torch.Tensor, with_detector: bool = False) -> ImageEmbeddings:
        """Run the vision encoder on (B, 3, S, S) model inputs; return :class:`ImageEmbeddings` (tracker layout).

        ``with_detector`` also returns the detector's features (for :meth:`detect_text`), reusing the backbone run
        when the detector shares it.
        """
        px = self._check_pixels(pixel_values)
        with self.run_context("the image encoder"):
            backbone_out, vis = self._run_vision(self.tracker.vision_encoder, px)
            maps = self._tracker_maps(vis.fpn_hidden_states)
            det = None
            if with_detector:
                if not self.has_text:
                    raise ModelError("this model has no text detector (Sam3Model + tokenizer)",
                                     "use point/box prompts or load a full SAM3 checkpoint")
                det_vis = self.bundle.detector.vision_encoder
                _, det = self._run_vision(det_vis, px, backbone_out if self._backbone_shared() else None)
        maps = [m.to(self._weight_dtype()) for m in maps]
        return ImageEmbeddings(maps=maps, detector=det)

    # ------------------------------------------------------------------ decode
    def predict(self, embeddings: ImageEmbeddings, points: np.ndarray | Sequence | None = None,
                labels: np.ndarray | Sequence | None = None, box: Sequence[float] | None = None,
                mask_input: np.ndarray | torch.Tensor | None = None, multimask: bool = False,
                out_hw: tuple[int, int] | None = None) -> MaskPrediction:
        """Decode one object on one slice from cached ``embeddings`` (batch 1).

        Args:
            points: (N, 2) model pixels (x, y); labels: (N,) 1 = positive, 0 = negative.
            box: (x0, y0, x1, y1) model pixels (corner pixel centres).
            mask_input: (L, L) or (1, 1, L, L) logits in the model mask grid (``mask_size``), e.g. a previous
                ``low_res`` or a user mask mapped with :meth:`mask_to_logits`.
            multimask: ask for 3 masks and return the one with the highest predicted IoU (an arbitrary pick
                when the IoU head is uninformative, ``confidence_heads["iou"]`` False).
            out_hw: (H, W) slice size to resize the logits to (bilinear, pixel centres); None keeps (L, L).
        """
        if embeddings.batch != 1:
            raise InputError("predict() takes the embeddings of one slice", "use embeddings.item(b)")
        dev = self.device
        wdt = self._weight_dtype()
        kw: dict[str, Any] = {}
        if points is not None and len(points) > 0:
            p = torch.as_tensor(np.asarray(points, dtype=np.float32).reshape(1, 1, -1, 2), device=dev, dtype=wdt)
            if labels is None:
                labels = np.ones(p.shape[2], dtype=np.int64)
            lab = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(1, 1, -1), device=dev)
            if lab.shape[-1] != p.shape[2]:
                raise InputError(f"{p.shape[2]} points but {lab.shape[-1]} labels")
            kw["input_points"], kw["input_labels"] = p, lab
        if box is not None:
            b = np.asarray(box, dtype=np.float32).reshape(4)
            b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])], dtype=np.float32)
            kw["input_boxes"] = torch.as_tensor(b.reshape(1, 1, 4), device=dev, dtype=wdt)
        if mask_input is not None:
            m = torch.as_tensor(mask_input)
            m = m.reshape(1, 1, *m.shape[-2:]).to(dev, dtype=wdt)
            kw["input_masks"] = m
        if not kw:
            raise InputError("predict() needs at least one prompt (points, box or mask)")
        with self.run_context("the mask decoder"):
            out = self.tracker(image_embeddings=[m.to(dev) for m in embeddings.maps], multimask_output=multimask,
                               **kw)
        masks = out.pred_masks[0, 0].float()  # (M, L, L)
        ious = out.iou_scores[0, 0].float()  # (M,)
        best = int(torch.argmax(ious)) if multimask else 0
        low = masks[best][None, None].detach()
        heads = self.confidence_heads
        presence = float(torch.sigmoid(out.object_score_logits.float().reshape(-1)[0])) if heads["presence"] else None
        logits = low[0, 0]
        if out_hw is not None:
            logits = resize_mask_logits(logits.cpu(), tuple(out_hw))
        return MaskPrediction(logits=np.asarray(logits.cpu().numpy(), dtype=np.float32), low_res=low.cpu(),
                              iou=float(ious[best]) if heads["iou"] else None, presence=presence)

    def mask_to_logits(self, mask: np.ndarray, scale: float = 10.0) -> torch.Tensor:
        """A boolean (H, W) slice mask -> (1, 1, L, L) mask-input logits in the model mask grid.

        Bilinear (pixel centres, antialiased when shrinking) resize of the 0/1 mask, mapped to ``(2p - 1) * scale``
        so that inside is +scale, outside -scale and the 0.5 iso-line (the mask border) is logit 0.
        """
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
        L = self.mask_size
        shrink = m.shape[-1] > L or m.shape[-2] > L
        r = torch.nn.functional.interpolate(m, size=(L, L), mode="bilinear", align_corners=False, antialias=shrink)
        return (2.0 * r - 1.0) * scale

    # ------------------------------------------------------------------ text
    def detect_text(self, embeddings_or_pixels: ImageEmbeddings | torch.Tensor, text: str,
                    score_threshold: float = 0.5, out_hw: tuple[int, int] | None = None,
                    max_instances: int | None = None) -> list[TextDetection]:
        """All instances of ``text`` in one slice, best first, with score >= ``score_threshold``.

        Accepts embeddings from ``encode(..., with_detector=True)`` or (1, 3, S, S) pixel values.
        score = sigmoid(query logit) * sigmoid(presence logit).
        """
        if not self.has_text:
            raise ModelError("this model has no text detector (Sam3Model + tokenizer), so text prompts are "
                             "unavailable", "use point/box prompts or load a full SAM3 checkpoint")
        if not str(text).strip():
            raise InputError("empty text prompt", "type what to segment, e.g. 'liver tumour'")
        emb = embeddings_or_pixels
        if isinstance(emb, torch.Tensor):
            emb = self.encode(emb, with_detector=True)
        if emb.detector is None:
            raise InputError("these embeddings hold no detector features", "encode with with_detector=True")
        tok = self.bundle.tokenize(str(text)) if hasattr(self.bundle, "tokenize") else self.bundle.tokenizer(
            [str(text)], padding="max_length", truncation=True, max_length=32, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in dict(tok).items() if k in ("input_ids", "attention_mask")}
        with self.run_context("the text detector"):
            out = self.bundle.detector(vision_embeds=emb.detector, **tok)
        logits = out.pred_logits[0].float()
        presence = torch.sigmoid(out.presence_logits.float().reshape(-1)[0])
        scores = torch.sigmoid(logits) * presence
        order = torch.argsort(scores, descending=True)
        s = float(self.image_size)
        dets: list[TextDetection] = []
        for q in order.tolist():
            sc = float(scores[q])
            if sc < score_threshold:
                break
            low = out.pred_masks[0, q].float()[None, None].cpu()
            lg = low[0, 0]
            if out_hw is not None:
                lg = resize_mask_logits(lg, tuple(out_hw))
            bx = out.pred_boxes[0, q].float().cpu().numpy() * s - 0.5
            dets.append(TextDetection(logits=np.asarray(lg.numpy(), dtype=np.float32), score=sc,
                                      box=tuple(float(v) for v in bx), low_res=low))  # type: ignore[arg-type]
            if max_instances is not None and len(dets) >= max_instances:
                break
        return dets

    # ------------------------------------------------------------------ video
    def video_features(self, embeddings: ImageEmbeddings) -> dict[str, list[torch.Tensor]]:
        """The per-frame features ``Sam3TrackerVideoModel`` caches (``vision_feats``, ``vision_pos_embeds``), made
        from tracker embeddings so that propagation re-uses cached slices instead of re-running the encoder.

        Valid when the video tracker shares the tracker's weights (the facebook/sam3 layout; see
        :meth:`video_shares_tracker`).
        """
        maps = embeddings.maps
        feats = [maps[0], maps[1], maps[2] - self.tracker.no_memory_embedding.view(1, -1, 1, 1).to(maps[2].dtype)]
        vision_feats = [f.flatten(2).permute(2, 0, 1).to(self.device) for f in feats]
        key = tuple(tuple(m.shape[-2:]) for m in maps) + (str(maps[0].dtype),)
        if key not in self._pos_cache:
            neck = self.tracker.vision_encoder.neck
            c = self.tracker.config.vision_config.fpn_hidden_size
            pos = []
            with torch.inference_mode():
                for m in maps:
                    pe = neck.position_encoding((1, c, *m.shape[-2:]), self.device, maps[0].dtype)
                    pos.append(pe.flatten(2).permute(2, 0, 1))
            self._pos_cache[key] = pos
        return {"vision_feats": vision_feats, "vision_pos_embeds": list(self._pos_cache[key])}

    def video_shares_tracker(self) -> bool:
        """True when the video tracker's vision encoder and decoder projections are the tracker's (same tensors or
        equal values), so :meth:`video_features` equals what the video model would compute itself."""
        video = getattr(self.bundle, "video", None)
        if video is None:
            return False
        pairs = [(video.mask_decoder.conv_s0.weight, self.tracker.mask_decoder.conv_s0.weight),
                 (video.mask_decoder.conv_s1.weight, self.tracker.mask_decoder.conv_s1.weight)]
        if video.vision_encoder is not None and video.vision_encoder is not self.tracker.vision_encoder:
            va = dict(video.vision_encoder.named_parameters())
            for n, p in self.tracker.vision_encoder.named_parameters():
                pairs.append((va.get(n), p))
        for a, b in pairs:
            if a is None or (a is not b and (a.shape != b.shape or not torch.equal(a, b))):
                return False
        return True


__all__ = ["Sam3Predictor", "ImageEmbeddings", "MaskPrediction", "TextDetection"]
