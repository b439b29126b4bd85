"""`LiteMedSamPredictor`: LiteMedSAM behind the session's predictor interface (encode once, decode many prompts).

Stable API for code that needs the raw network (reference-logit tests, benchmarks)::

    from OncoSegLib.models.litemedsam.predictor import load_litemedsam
    pred = load_litemedsam()                     # strict load from the verified safetensors in the model store
    net = pred.net                               # OncoSegLib.models.litemedsam.model.LiteMedSAM, eval mode
    with torch.inference_mode():
        embedding = net.encode(image256)         # (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64)
        low_res_logits, iou = net.decode(embedding, box256=box256)   # box256 (B, 4) model pixels (x0, y0, x1, y1)
        # low_res_logits (B, 1, 256, 256) over the padded input; iou (B, 1) predicted IoU

The session interface (what :class:`~OncoSegLib.session.SegmentationSession` calls): ``image_size`` (256),
``mask_size`` (256), ``prepare(slice_raw, normalizer) -> (1, 3, 256, 256)``, ``to_model_xy(row, col, hw)``,
``encode(pixels) -> ImageEmbeddings``, ``predict(embeddings, points, labels, box, mask_input, multimask, out_hw)
-> MaskPrediction`` (points/box in model pixels from ``to_model_xy``), ``mask_to_logits(mask)``; capabilities
``has_text`` = ``has_video`` = False and ``ct_window`` (the CT window the session uses unless the user gives one).
Confidence: the predicted IoU; LiteMedSAM has no object-presence head, so ``presence`` is NaN ("n/a").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.models.litemedsam import preprocess as pp
from OncoSegLib.models.litemedsam.fast import FastOptions, optimise
from OncoSegLib.models.litemedsam.model import LiteMedSAM, convert_state_dict, load_strict
from OncoSegLib.models.predictor import ImageEmbeddings, MaskPrediction

log = logging.getLogger(__name__)


class LiteMedSamPredictor:
    """Box (trained), point and mask prompts on LiteMedSAM; one 256 x 256 embedding per slice (4 MiB float32).

    Args:
        net: a loaded :class:`LiteMedSAM` (eval mode).
        device: where it runs. name/source: what the user asked for (reports).
        antialias: antialiased resize when a slice is shrunk to 256 (see :mod:`.preprocess`).
        encoder: what runs the image encoder (the decoder is always ``net``): ``"auto"`` (default: OpenVINO on a
            CPU when it is installed, else ``"torch"``), ``"openvino"`` (:mod:`.openvino_encoder`; an error when it
            cannot run), ``"torch"`` (:func:`.fast.optimise`: folded BatchNorm, channels_last, fused attention) or
            ``"eager"`` (the strictly loaded network itself). ``None``: ``$ONCOSEG_ENCODER`` or ``"auto"``.
        precision: ``"fp32"`` (default; every encoder gives the eager embedding to ~4e-6) or ``"bf16"`` (opt-in,
            faster on AMX / AVX512-BF16 CPUs, masks move by boundary pixels). ``None``: ``$ONCOSEG_ENCODER_PRECISION``
            or ``"fp32"``.
        cache_dir: where the OpenVINO encoder caches its converted model (None: convert in memory each time).
    """

    has_text = False
    has_video = False
    #: prompts the network was trained with: the session turns clicks into box edits (OncoSegLib.click_to_box)
    trained_prompts: tuple[str, ...] = ("box",)
    image_size = pp.MODEL_SIZE
    mask_size = pp.MODEL_SIZE
    ct_window: tuple[float, float] = pp.CT_WINDOW
    backend = "litemedsam"

    def __init__(self, net: LiteMedSAM, device: str | torch.device = "cpu", name: str = "litemedsam",
                 source: str = "litemedsam", modalities: Sequence[str] = (), antialias: bool = True,
                 info: dict[str, Any] | None = None, encoder: str | None = None, precision: str | None = None,
                 cache_dir: str | Path | None = None):
        self.net = net.eval()
        self.device = torch.device(device)
        self.cache_dir = cache_dir
        self.encoder_choice = choose(encoder, ENCODERS, "ONCOSEG_ENCODER", "auto")
        self.precision = choose(precision, ("fp32", "bf16"), "ONCOSEG_ENCODER_PRECISION", "fp32")
        # speed path for the encoder (same maths up to float32 rounding unless bf16); net itself is kept as is
        self.encoder_net, self.encoder_name = self._build_encoder()
        self.name = name
        self.source = source
        self.modalities = list(modalities)
        self.antialias = bool(antialias)
        self.info = dict(info or {})

    # ------------------------------------------------------------------ bundle-like helpers
    def eval(self) -> "LiteMedSamPredictor":
        return self

    def to(self, device: str | torch.device) -> "LiteMedSamPredictor":
        moved = torch.device(device) != self.device
        self.device = torch.device(device)
        self.net.to(self.device)
        if moved:  # OpenVINO runs on the CPU only: pick again for the new device
            self.encoder_net, self.encoder_name = self._build_encoder()
        return self

    def _build_encoder(self) -> tuple[Any, str]:
        """(object with ``.encode``, description) for :attr:`encoder_choice` on :attr:`device` (see the class doc)."""
        from OncoSegLib.models.litemedsam import openvino_encoder as ove

        choice, dtype = self.encoder_choice, {"fp32": torch.float32, "bf16": torch.bfloat16}[self.precision]
        if choice == "eager":
            if self.precision != "fp32":
                raise ModelError("encoder='eager' runs float32 only", "use encoder='torch' for bf16")
            return self.net, "torch eager fp32"
        cpu = self.device.type == "cpu"
        if choice == "openvino" and not cpu:
            raise ModelError(f"the OpenVINO encoder runs on the CPU, not {self.device}", "use encoder='torch'")
        if choice == "openvino" or (choice == "auto" and cpu and ove.openvino_version() is not None):
            try:
                enc = ove.build_openvino_encoder(self.net, self.precision, self.cache_dir)
                return enc, enc.name
            except ModelError as exc:
                if choice == "openvino":
                    raise
                log.warning("OpenVINO encoder unavailable (%s); using the PyTorch encoder", exc)
        return optimise(self.net, FastOptions(dtype=dtype)), f"torch fast {self.precision}"

    # ------------------------------------------------------------------ geometry
    def prepare(self, slice_raw: np.ndarray, normalizer: Any) -> torch.Tensor:
        """Raw slice (H, W[, C]) -> (1, 3, 256, 256) model input (see :mod:`.preprocess`)."""
        return pp.to_model_input(pp.intensity01(slice_raw, normalizer), antialias=self.antialias)

    @staticmethod
    def to_model_xy(row: float | np.ndarray, col: float | np.ndarray, hw: tuple[int, int]
                    ) -> tuple[float | np.ndarray, float | np.ndarray]:
        """Slice pixel (row, col) -> model pixels (x, y) (``x = col * 256 / max(H, W)``)."""
        return pp.to_model_xy(row, col, hw)

    def mask_to_logits(self, mask: np.ndarray, scale: float = 10.0) -> torch.Tensor:
        """Boolean (H, W) slice mask -> (1, 1, 256, 256) mask-input logits in the padded model layout."""
        return pp.mask_to_logits(mask, scale)

    # ------------------------------------------------------------------ model calls
    def encode(self, pixel_values: torch.Tensor, with_detector: bool = False) -> ImageEmbeddings:
        """(B, 3, 256, 256) -> :class:`ImageEmbeddings` with one map (B, 256, 64, 64)."""
        if with_detector:
            raise no_text_error()
        px = pixel_values[None] if pixel_values.ndim == 3 else pixel_values
        if px.ndim != 4 or tuple(px.shape[1:]) != (3, self.image_size, self.image_size):
            raise InputError(f"LiteMedSAM input must be (B, 3, 256, 256), got {tuple(px.shape)}",
                             "prepare slices with LiteMedSamPredictor.prepare")
        from OncoSegLib.models.device import oom_guard

        with oom_guard("the LiteMedSAM image encoder", self.device), torch.inference_mode():
            emb = self.encoder_net.encode(px.to(self.device, torch.float32))
        return ImageEmbeddings(maps=[emb])

    def predict(self, embeddings: ImageEmbeddings, points: np.ndarray | Sequence | None = None,
                labels: np.ndarray | Sequence | None = None, box: Sequence[float] | None = None,
                mask_input: np.ndarray | torch.Tensor | None = None, multimask: bool = False,
                out_hw: tuple[int, int] | None = None) -> MaskPrediction:
        """Decode one object on one slice. points (N, 2) / box (x0, y0, x1, y1) in model pixels; mask_input
        (256, 256) logits; ``out_hw`` the slice size to return logits at (else the 256 x 256 padded grid)."""
        if embeddings.batch != 1:
            raise InputError("predict() takes the embeddings of one slice", "use embeddings.item(b)")
        dev = self.device
        kw: dict[str, Any] = {}
        if points is not None and len(points) > 0:
            p = torch.as_tensor(np.asarray(points, dtype=np.float32).reshape(1, -1, 2), device=dev)
            lab = np.ones(p.shape[1], dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
            if lab.reshape(-1).shape[0] != p.shape[1]:
                raise InputError(f"{p.shape[1]} points but {lab.reshape(-1).shape[0]} labels")
            kw["points"], kw["labels"] = p, torch.as_tensor(lab.reshape(1, -1), device=dev)
        if box is not None:
            b = np.asarray(box, dtype=np.float32).reshape(4)
            b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])], dtype=np.float32)
            kw["box256"] = torch.as_tensor(b.reshape(1, 4), device=dev)
        if mask_input is not None:
            m = torch.as_tensor(mask_input)
            kw["mask_input"] = m.reshape(1, 1, *m.shape[-2:]).to(dev, torch.float32)
        if not kw:
            raise InputError("predict() needs at least one prompt (points, box or mask)")
        from OncoSegLib.models.device import oom_guard

        with oom_guard("the LiteMedSAM mask decoder", dev), torch.inference_mode():
            masks, ious = self.net.decode(embeddings.maps[0].to(dev), multimask=multimask, **kw)
        best = int(torch.argmax(ious[0])) if multimask else 0
        low = masks[0, best][None, None].float().cpu()
        logits = pp.logits_to_slice(low, tuple(out_hw)) if out_hw is not None else low[0, 0]
        return MaskPrediction(logits=np.asarray(logits.numpy(), dtype=np.float32), low_res=low,
                              iou=float(ious[0, best]), presence=float("nan"))

    def detect_text(self, *args: Any, **kwargs: Any) -> list:
        """LiteMedSAM has no text encoder: always ``ModelError`` naming the models that have one."""
        raise no_text_error()


ENCODERS = ("auto", "openvino", "torch", "eager")


def choose(value: str | None, allowed: Sequence[str], env: str, default: str) -> str:
    """``value``, else ``$env``, else ``default``; a ModelError naming the allowed values otherwise."""
    import os

    got = value if value is not None else (os.environ.get(env) or default)
    if got not in allowed:
        source = "" if value is not None else f" (from ${env})"
        raise ModelError(f"unknown LiteMedSAM encoder setting {got!r}{source}", f"use one of {', '.join(allowed)}")
    return got


def no_text_error() -> ModelError:
    """The error for a text prompt on LiteMedSAM, naming the registry models with a text detector."""
    from OncoSegLib.models.registry import no_text_encoder_error

    return no_text_encoder_error()


def load_litemedsam(path: str | Path | None = None, device: str | torch.device = "cpu", name: str = "litemedsam",
                    source: str | None = None, modalities: Sequence[str] = (), download: bool | None = None,
                    encoder: str | None = None, precision: str | None = None) -> LiteMedSamPredictor:
    """A :class:`LiteMedSamPredictor` from the model store (``path`` = a store folder; default: the registry's,
    fetched on first use unless offline, see :mod:`.weights`). Every tensor is accounted for (strict load).
    ``encoder`` / ``precision``: see :class:`LiteMedSamPredictor`; the OpenVINO encoder caches its converted model
    in ``<store>/openvino`` when the store is writable."""
    from OncoSegLib.models.litemedsam.openvino_encoder import default_cache_dir

    from OncoSegLib.models.device import pick_device
    from OncoSegLib.models.litemedsam import weights

    folder = Path(path) if path is not None else weights.ensure_installed(download=download)
    state = weights.read_state_dict(folder)
    net = load_strict(LiteMedSAM(), convert_state_dict(state), f"LiteMedSAM weights in {folder}")
    dev = pick_device(device)
    net.to(dev).eval()
    return LiteMedSamPredictor(net, dev, name=name, source=source or str(folder), modalities=modalities,
                               info={"store": str(folder)}, encoder=encoder, precision=precision,
                               cache_dir=default_cache_dir(folder))
