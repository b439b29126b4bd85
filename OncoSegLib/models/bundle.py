"""`Sam3Bundle`: the three transformers SAM3 backends that one facebook/sam3-layout checkpoint feeds.

- ``tracker``  = ``Sam3TrackerModel`` (point / box / mask prompts on one 2D image; SAM2-style)
- ``detector`` = ``Sam3Model`` (text prompts -> all instances) or ``None``
- ``video``    = ``Sam3TrackerVideoModel`` (memory propagation through slices as frames) or ``None``

In the facebook/sam3 layout the three share weights: the detector's ViT backbone
(``detector_model.vision_encoder.backbone``) is the tracker's backbone, the tracker's FPN neck is ``tracker_neck``
and every tracker weight (``tracker_model.*``) is also in the video tracker, which only adds memory modules.
The bundle therefore holds ONE copy of each tensor: :func:`tie_bundle` makes the tracker's parameters and buffers
the very same ``nn.Parameter`` objects as the video tracker's, and the detector's backbone the same as theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from OncoSegLib.errors import ModelError

log = logging.getLogger(__name__)

COMPONENTS: tuple[str, ...] = ("tracker", "detector", "video")
TEXT_MAX_LENGTH = 32  # CLIP context SAM3's processor pads/truncates to
INFORMATIVE_HEADS: dict[str, bool] = {"iou": True, "presence": True}  # stock SAM3: both heads trained


def confidence_heads_from(card: dict[str, Any] | None) -> dict[str, bool]:
    """The ``confidence_heads`` of a model card (``oncoseg_model.json``) merged over the stock default (both True).

    ``{"confidence_heads": {"iou": false, "presence": false}}`` marks heads that were not trained to predict
    anything (random, or retrained without their loss). Unknown keys are ignored; values must be booleans.
    """
    out = dict(INFORMATIVE_HEADS)
    heads = (card or {}).get("confidence_heads")
    if isinstance(heads, dict):
        for k in INFORMATIVE_HEADS:
            if isinstance(heads.get(k), bool):
                out[k] = heads[k]
    return out


@dataclass
class Sam3Bundle:
    """The SAM3 backends of one checkpoint, on one device, with shared weights.

    Attributes:
        tracker: ``Sam3TrackerModel`` (always present).
        detector: ``Sam3Model`` for text prompts, or ``None``.
        video: ``Sam3TrackerVideoModel`` for propagation, or ``None``.
        tokenizer: callable / HF tokenizer producing ``input_ids``/``attention_mask`` for the detector, or ``None``.
        image_size: side S of the square model input in model pixels (1008 for facebook/sam3).
        device, dtype: where and in which floating dtype the weights live.
        name: registry name or a short label; source: the folder / repo id / registry name it was loaded from.
        modalities: modalities this checkpoint was trained for ([] = generic).
        adapter: path of a LoRA adapter applied on top (``None`` when none).
        info: free-form loading report (missing/unexpected keys per component, sharing report).
        confidence_heads: whether the tracker's predicted-IoU head (``"iou"``) and object-score head
            (``"presence"``) were trained to mean something. Stock SAM3 checkpoints: both True. A model card
            (``oncoseg_model.json``, written by ``oncoseg train``) or an adapter that retrained the mask decoder
            without supervising them sets them False; the predictor then reports ``None`` ("n/a") instead of a number.
    """

    tracker: nn.Module
    detector: nn.Module | None = None
    video: nn.Module | None = None
    tokenizer: Any = None
    image_size: int = 1008
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    name: str = "sam3"
    source: str = ""
    modalities: list[str] = field(default_factory=list)
    adapter: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    confidence_heads: dict[str, bool] = field(default_factory=lambda: dict(INFORMATIVE_HEADS))

    # ------------------------------------------------------------------ properties
    @property
    def has_text(self) -> bool:
        """True when text prompts work: a detector and a tokenizer are loaded."""
        return self.detector is not None and self.tokenizer is not None

    @property
    def has_video(self) -> bool:
        """True when memory propagation (``Sam3TrackerVideoModel``) is available."""
        return self.video is not None

    @property
    def patch_size(self) -> int:
        """ViT patch size in model pixels (14 for facebook/sam3)."""
        return int(self.tracker.config.vision_config.backbone_config.patch_size)

    @property
    def mask_size(self) -> int:
        """Side of the tracker's low-resolution mask logits (4x the patch grid: 288 at 1008)."""
        return 4 * (self.image_size // self.patch_size)

    def components(self) -> dict[str, nn.Module]:
        """The loaded backends by name (``tracker``, ``detector``, ``video``), skipping absent ones."""
        out = {"tracker": self.tracker, "detector": self.detector, "video": self.video}
        return {k: v for k, v in out.items() if v is not None}

    # ------------------------------------------------------------------ helpers
    def eval(self) -> "Sam3Bundle":
        """Put every backend in eval mode (dropout off); returns self."""
        for module in self.components().values():
            module.eval()
        return self

    def train(self, mode: bool = True) -> "Sam3Bundle":
        """Put every backend in train mode; returns self."""
        for module in self.components().values():
            module.train(mode)
        return self

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Sam3Bundle":
        """Move all backends (shared tensors move once, ties are kept) and return self."""
        device = torch.device(device) if device is not None else self.device
        for module in self.components().values():
            module.to(device=device, dtype=dtype) if dtype is not None else module.to(device)
        self.device = device
        if dtype is not None:
            self.dtype = dtype
        return self  # shared modules are moved once; nn.Module.to() keeps Parameter objects, so sharing survives

    def unique_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the bundle once, even when shared by several backends."""
        seen: set[int] = set()
        out: list[nn.Parameter] = []
        for module in self.components().values():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def parameter_count(self, unique: bool = True) -> int:
        """Number of parameters: each shared tensor counted once (``unique=True``) or once per backend."""
        if unique:
            return sum(p.numel() for p in self.unique_parameters())
        return sum(p.numel() for m in self.components().values() for p in m.parameters())

    def tokenize(self, texts: str | Sequence[str], max_length: int = TEXT_MAX_LENGTH) -> dict[str, torch.Tensor]:
        """Token ids for the detector: ``{"input_ids": (N, L) long, "attention_mask": (N, L) long}`` on the device.

        Pads / truncates to ``max_length`` (CLIP's 32) like SAM3's processor. Raises ``ModelError`` without a
        tokenizer.
        """
        if self.tokenizer is None:
            raise ModelError("this model has no text tokenizer, so text prompts are unavailable",
                             "use points/boxes, or load a full SAM3 checkpoint that includes tokenizer files")
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}


# ---------------------------------------------------------------------- weight sharing
def _owner(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parts = dotted.split(".")
    mod = root
    for p in parts[:-1]:
        mod = getattr(mod, p)
    return mod, parts[-1]


def tie_tensors(dst: nn.Module, src: nn.Module, verify: bool = True, names: Iterable[str] | None = None) -> int:
    """Make every parameter and buffer of ``dst`` the same object as the one with the same name in ``src``.

    ``dst`` may hold meta tensors (built under ``torch.device("meta")``); with ``verify`` a real tensor in ``dst``
    must equal the ``src`` one, otherwise ``ModelError`` (tying different weights would silently change a model).
    Returns the number of tensors tied. ``names`` restricts the tie to names starting with one of the prefixes.
    """
    src_params = dict(src.named_parameters(remove_duplicate=False))
    src_buffers = dict(src.named_buffers(remove_duplicate=False))
    prefixes = tuple(names) if names is not None else None
    tied = 0
    for kind, items, source in (("parameter", list(dst.named_parameters(remove_duplicate=False)), src_params),
                                ("buffer", list(dst.named_buffers(remove_duplicate=False)), src_buffers)):
        for name, tensor in items:
            if prefixes is not None and not name.startswith(prefixes):
                continue
            if name not in source:
                raise ModelError(f"cannot share weights: {kind} '{name}' has no counterpart",
                                 "the checkpoint's backends do not share this architecture; report this")
            other = source[name]
            if other is tensor:
                continue
            if tensor.shape != other.shape:
                raise ModelError(f"cannot share weights: {kind} '{name}' has shape {tuple(tensor.shape)} vs "
                                 f"{tuple(other.shape)}", "the checkpoint's backends disagree; report this")
            if verify and not tensor.is_meta and not torch.equal(tensor.detach().to(other.device, other.dtype),
                                                                 other.detach()):
                raise ModelError(f"cannot share weights: {kind} '{name}' differs between backends",
                                 "the checkpoint holds different weights for them; load components separately")
            mod, leaf = _owner(dst, name)
            if kind == "parameter":
                mod._parameters[leaf] = other
            else:
                mod._buffers[leaf] = other
            tied += 1
    return tied


def tie_bundle(bundle: Sam3Bundle, verify: bool = True) -> dict[str, int]:
    """Share modules between the bundle's backends (facebook/sam3 layout) and return what was shared.

    tracker <- video: the tracker's children (ViT backbone + tracker FPN neck, prompt encoder, mask decoder, positional
    embedding) become the video tracker's module objects (same code in both classes);
    detector backbone <- tracker backbone (the SAM3 ViT). The detector keeps its own FPN neck and heads.
    Sharing *modules* (not only tensors) means a LoRA adapter injected into the tracker also acts in the video
    tracker and, for the ViT, in the detector. ``verify`` checks weights are equal before sharing.
    """
    report: dict[str, int] = dict(bundle.info.get("shared") or {})
    if bundle.video is not None and bundle.tracker is not bundle.video:
        report["tracker<-video"] = share_tracker_with_video(bundle.tracker, bundle.video, verify=verify)
    if bundle.detector is not None:
        report["detector.backbone<-tracker"] = _share_backbone(bundle.detector, bundle.tracker, verify)
    bundle.info["shared"] = report
    return report


def share_tracker_with_video(tracker: nn.Module, video: nn.Module, verify: bool = True) -> int:
    """Make ``tracker``'s submodules and own parameters the video tracker's objects; returns tensors now shared."""
    if verify:
        tie_tensors(tracker, video, verify=True)  # raises on any difference; ties tensors as a side effect
    for name, _child in list(tracker.named_children()):
        if not hasattr(video, name) or getattr(video, name) is None:
            raise ModelError(f"cannot share the tracker's '{name}' with the video tracker",
                             "load the tracker and the video tracker separately; report this")
        setattr(tracker, name, getattr(video, name))
    for name, _param in list(tracker.named_parameters(recurse=False)):
        tracker._parameters[name] = getattr(video, name)
    for name, _buf in list(tracker.named_buffers(recurse=False)):
        tracker._buffers[name] = getattr(video, name)
    return sum(1 for _ in tracker.parameters()) + sum(1 for _ in tracker.buffers())


def _share_backbone(detector: nn.Module, tracker: nn.Module, verify: bool) -> int:
    dst = detector.vision_encoder.backbone
    src = tracker.vision_encoder.backbone
    if dst is src:
        return sum(1 for _ in src.parameters())
    if type(dst) is not type(src) or _config_signature(dst.config) != _config_signature(src.config):
        log.info("detector and tracker ViT configs differ; not sharing the backbone")
        return 0
    if verify:
        try:
            tie_tensors(dst, src, verify=True)
        except ModelError as exc:  # different weights (e.g. separately fine-tuned): keep both, say so
            log.warning("not sharing the ViT backbone between detector and tracker: %s", exc)
            return 0
    detector.vision_encoder.backbone = src
    return sum(1 for _ in src.parameters())


def _config_signature(cfg: Any) -> dict[str, Any]:
    d = cfg.to_dict()
    for k in ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype",
              "_attn_implementation_autoset"):
        d.pop(k, None)
    return d


def check_no_meta(module: nn.Module, what: str) -> None:
    """Raise ``ModelError`` if any parameter/buffer of ``module`` is still a meta tensor (never got weights)."""
    bad = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if bad:
        raise ModelError(f"{what}: {len(bad)} tensors have no weights (e.g. {bad[0]})",
                         "the checkpoint does not contain this component; load it with fewer components")


def tracker_config_from_video(video_config: Any) -> Any:
    """A ``Sam3TrackerConfig`` with the same vision / prompt-encoder / mask-decoder settings as a video config."""
    from transformers import Sam3TrackerConfig

    def sub(cfg: Any) -> dict[str, Any]:
        d = cfg.to_dict()
        for k in ("model_type", "transformers_version", "_name_or_path", "architectures"):
            d.pop(k, None)
        return d

    vision = video_config.vision_config.to_dict()
    return Sam3TrackerConfig(vision_config=vision,
                             prompt_encoder_config=sub(video_config.prompt_encoder_config),
                             mask_decoder_config=sub(video_config.mask_decoder_config),
                             initializer_range=video_config.initializer_range)


def tracker_from_video(video: nn.Module) -> nn.Module:
    """A ``Sam3TrackerModel`` whose every submodule IS the video tracker's (no copy; built on the meta device)."""
    from transformers import Sam3TrackerModel

    cfg = tracker_config_from_video(video.config)
    cfg._attn_implementation = getattr(video.config, "_attn_implementation", None) or "sdpa"
    with torch.device("meta"):
        tracker = Sam3TrackerModel(cfg)
    share_tracker_with_video(tracker, video, verify=False)
    check_no_meta(tracker, "tracker built from the video tracker")
    tracker.train(video.training)
    return tracker
