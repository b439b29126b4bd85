"""LoRA adapters for the SAM3 backends with peft: Onco-Seg's recipe, save / load / merge.

Onco-Seg trains r=16, alpha=32, dropout 0.1 on attention; its target names "qkv" and "proj" are Meta's fused layers,
which are ``q_proj``/``k_proj``/``v_proj`` and ``o_proj`` in transformers (CLIP text: ``out_proj``). ``scope="vision"``
restricts LoRA to the SAM3 ViT (``vision_encoder.backbone``); ``"all"`` puts it on every matching attention layer.
``trainable_heads`` names submodules trained in full (e.g. ``mask_decoder``); they are saved beside the peft adapter
in ``oncoseg_heads.safetensors``. Text training also trains ``Sam3Model`` detector heads in full; they are saved as
``oncoseg_detector_heads.safetensors`` (:func:`save_detector_heads`) and ``load_adapter`` puts them into
``bundle.detector`` (refusing missing or unexpected tensors).

Because the bundle's backends share module objects (see ``bundle.py``), LoRA injected into the tracker's ViT also
acts in the video tracker and the detector.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from OncoSegLib.errors import ModelError
from OncoSegLib.models.loading import one_line

META_NAMES: dict[str, tuple[str, ...]] = {"qkv": ("q_proj", "k_proj", "v_proj"), "proj": ("o_proj",)}
SETTINGS_FILE = "oncoseg_lora.json"
HEADS_FILE = "oncoseg_heads.safetensors"
DETECTOR_HEADS_FILE = "oncoseg_detector_heads.safetensors"  # text training: detector heads trained in full
log = logging.getLogger(__name__)
SCOPES = {"vision": r"vision_encoder\.backbone\.", "all": r""}


@dataclass
class LoraSettings:
    """LoRA hyper-parameters. ``target``: layer names (Meta's "qkv"/"proj" accepted); ``scope``: "vision" or "all";
    ``trainable_heads``: dotted submodule names trained in full; ``component``: which bundle backend it adapts."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    scope: str = "vision"
    trainable_heads: tuple[str, ...] = ()
    component: str = "tracker"
    extra: dict[str, Any] = field(default_factory=dict)

    def target_names(self) -> list[str]:
        """Transformers layer names after mapping Meta's ("qkv" -> q/k/v_proj, "proj" -> o_proj)."""
        out: list[str] = []
        for t in self.target:
            for name in META_NAMES.get(t, (t,)):
                if name not in out:
                    out.append(name)
        return out

    def target_regex(self) -> str:
        """The peft ``target_modules`` regex (peft full-matches it against module names)."""
        if self.scope not in SCOPES:
            raise ModelError(f"unknown LoRA scope '{self.scope}'", f"use one of {sorted(SCOPES)}")
        names = "|".join(re.escape(n) for n in self.target_names())
        return rf"(?:.*\.)?{SCOPES[self.scope]}(?:.*\.)?(?:{names})"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = list(self.target)
        d["trainable_heads"] = list(self.trainable_heads)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LoraSettings":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["target"] = tuple(d.get("target", ()))
        d["trainable_heads"] = tuple(d.get("trainable_heads", ()))
        return cls(**d)


def _unwrap(model: nn.Module) -> nn.Module:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def apply_lora(model: nn.Module, settings: LoraSettings | None = None) -> Any:
    """Wrap ``model`` (a SAM3 backend) in a peft ``PeftModel`` with fresh LoRA layers (B = 0: outputs unchanged).

    Only LoRA weights and ``trainable_heads`` require grad. Raises ``ModelError`` when no layer matches.
    """
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    pattern = settings.target_regex()
    matched = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(pattern, n)]
    if not matched:
        raise ModelError(f"LoRA targets {list(settings.target)} (scope '{settings.scope}') match no layer",
                         "SAM3 in transformers names attention layers q_proj/k_proj/v_proj/o_proj "
                         "(Meta's qkv/proj are mapped automatically)")
    cfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=pattern, bias="none")
    peft_model = get_peft_model(model, cfg)
    _set_heads_trainable(peft_model, settings.trainable_heads)
    peft_model.oncoseg_settings = settings  # type: ignore[attr-defined]
    return peft_model


def _set_heads_trainable(peft_model: nn.Module, heads: tuple[str, ...]) -> None:
    base = _unwrap(peft_model)
    for head in heads:
        try:
            module = base.get_submodule(head)
        except AttributeError:
            raise ModelError(f"trainable head '{head}' does not exist in {type(base).__name__}",
                             "name a submodule such as 'mask_decoder' or 'prompt_encoder'") from None
        for p in module.parameters():
            p.requires_grad_(True)


def _heads_state(peft_model: nn.Module, heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
    base = _unwrap(peft_model)
    out: dict[str, torch.Tensor] = {}
    for head in heads:
        for name, p in base.get_submodule(head).named_parameters():
            if "lora_" in name:
                continue  # LoRA tensors are saved by peft
            out[f"{head}.{name.replace('.base_layer', '')}"] = p.detach().cpu().contiguous().clone()
    return out


def save_adapter(peft_model: nn.Module, out_dir: str | os.PathLike, settings: LoraSettings | None = None) -> Path:
    """Save the adapter (peft files + ``oncoseg_lora.json`` + trained heads) into ``out_dir``; returns it.

    Refuses to write into a non-empty folder that is not an adapter (never overwrites unrelated user files).
    """
    from safetensors.torch import save_file

    from OncoSegLib.io.atomic import atomic_path

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "adapter_config.json").exists():
        raise ModelError(f"{out} is not empty and is not an adapter folder", "choose a new folder")
    settings = settings or getattr(peft_model, "oncoseg_settings", None) or LoraSettings()
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    with atomic_path(out / SETTINGS_FILE) as tmp:
        tmp.write_text(json.dumps(settings.to_json(), indent=2), encoding="utf-8")
    heads = _heads_state(peft_model, settings.trainable_heads)
    if heads:
        with atomic_path(out / HEADS_FILE) as tmp:
            save_file(heads, str(tmp))
    return out


def read_settings(adapter_dir: str | os.PathLike) -> LoraSettings:
    """The OncoSeg settings saved with an adapter (defaults when the adapter came from elsewhere).

    Raises ``ModelError`` when ``oncoseg_lora.json`` is unreadable or does not describe LoRA settings.
    """
    p = Path(adapter_dir) / SETTINGS_FILE
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return LoraSettings.from_json(data)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot read {p}: {one_line(exc)}",
                             "the adapter folder is damaged; save or copy it again") from None
    return LoraSettings()


@contextlib.contextmanager
def adapter_file_errors(what: str | os.PathLike) -> Iterator[None]:
    """Turn the errors of reading adapter files into one-line ``ModelError``: a pickle (``adapter_model.bin``)
    refused by ``torch.load(weights_only=True)`` (code or objects that are not tensors), corrupt or truncated
    safetensors, unreadable files."""
    from safetensors import SafetensorError

    try:
        yield
    except pickle.UnpicklingError:
        raise ModelError(f"{what}: refused to load a pickle file that holds more than tensors (torch.load "
                         "weights_only); it may run code", "use an adapter saved as adapter_model.safetensors by a "
                         "source you trust") from None
    except SafetensorError as exc:
        raise ModelError(f"{what}: corrupt or incomplete safetensors file ({one_line(exc)})",
                         "copy or download the adapter again") from None
    except (EOFError, OSError) as exc:
        raise ModelError(f"{what}: cannot read the adapter files ({type(exc).__name__}: {one_line(exc)})",
                         "copy or download the adapter again") from None


def load_adapter(target: Any, adapter_dir: str | os.PathLike, merge: bool = False,
                 is_trainable: bool = False) -> Any:
    """Load a saved adapter onto a :class:`Sam3Bundle` (its ``component``, default the tracker) or a bare model.

    With a bundle, the adapted backend stays a plain transformers model (LoRA layers sit inside the shared modules)
    and the ``PeftModel`` is kept in ``bundle.info["peft"]``; ``merge`` folds LoRA into the weights and drops it.
    With a bare model, returns the ``PeftModel`` (or the merged model). Raises ``ModelError`` if it does not fit.
    """
    from peft import PeftModel
    from safetensors.torch import load_file

    from OncoSegLib.models.bundle import Sam3Bundle

    adir = Path(adapter_dir)
    if not (adir / "adapter_config.json").is_file():
        raise ModelError(f"{adir} is not a LoRA adapter folder (no adapter_config.json)",
                         "point to the folder written by save_adapter / peft save_pretrained")
    settings = read_settings(adir)
    bundle = target if isinstance(target, Sam3Bundle) else None
    model = getattr(bundle, settings.component) if bundle is not None else target
    if model is None:
        raise ModelError(f"adapter {adir} adapts the '{settings.component}', which this model has not loaded",
                         "load the model with that component")
    try:
        with adapter_file_errors(f"adapter {adir}"):
            peft_model = PeftModel.from_pretrained(model, str(adir), is_trainable=is_trainable)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"adapter {adir} does not fit this model: {one_line(exc)}",
                         "use an adapter trained on the same base model") from exc
    peft_model.oncoseg_settings = settings  # type: ignore[attr-defined]
    heads_file = adir / HEADS_FILE
    if heads_file.is_file():
        with adapter_file_errors(heads_file):
            heads = load_file(str(heads_file))
        base = peft_model.get_base_model()
        missing = _load_heads(base, heads)
        if missing:
            raise ModelError(f"adapter {adir}: trained heads do not fit ({missing[:3]})",
                             "use an adapter trained on the same base model")
        if is_trainable:
            _set_heads_trainable(peft_model, settings.trainable_heads)
    det_file = adir / DETECTOR_HEADS_FILE
    if bundle is not None and det_file.is_file():
        if bundle.detector is None:
            log.info("adapter %s carries trained detector heads; the detector is not loaded, so they are unused",
                     adir)
        else:
            load_detector_heads(bundle.detector, det_file)
    if bundle is not None and settings.component == "tracker" and retrains_confidence_heads(settings):
        bundle.confidence_heads = {"iou": False, "presence": False}
        log.info("adapter %s retrained the mask decoder without an IoU / object-score loss: confidence is n/a", adir)
    if merge:
        merged = peft_model.merge_and_unload()
        if bundle is not None:
            setattr(bundle, settings.component, merged)
            bundle.adapter = f"{adir} (merged)"
            return bundle
        return merged
    if bundle is not None:
        setattr(bundle, settings.component, peft_model.get_base_model())
        bundle.info["peft"] = peft_model
        bundle.adapter = str(adir)
        return bundle
    return peft_model


def retrains_confidence_heads(settings: LoraSettings) -> bool:
    """True when the adapter trained the tracker's whole mask decoder (``trainable_heads`` names ``mask_decoder``):
    OncoSeg's trainer supervises masks only (Dice + focal), so the decoder's IoU and object-score heads no longer
    predict anything meaningful and are reported as n/a."""
    return any(h == "mask_decoder" or h.startswith("mask_decoder.") for h in settings.trainable_heads)


def _load_heads(base: nn.Module, heads: dict[str, torch.Tensor]) -> list[str]:
    params = dict(base.named_parameters())
    missing = []
    for name, value in heads.items():
        target = params.get(name)
        if target is None:  # the layer may be wrapped by LoRA: weight lives in base_layer
            parts = name.rsplit(".", 1)
            target = params.get(f"{parts[0]}.base_layer.{parts[1]}") if len(parts) == 2 else None
        if target is None or target.shape != value.shape:
            missing.append(name)
            continue
        with torch.no_grad():
            target.copy_(value.to(target.device, target.dtype))
    return missing


def detector_heads_state(detector: nn.Module, heads: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The detector heads' tensors (names relative to the detector, LoRA tensors excluded), CPU copies."""
    out: dict[str, torch.Tensor] = {}
    for head, n, p in detector_head_parameters(detector, heads):
        out[f"{head}.{n.replace('.base_layer', '')}"] = p.detach().cpu().contiguous().clone()
    return out


def detector_head_parameters(detector: nn.Module, heads: list[str] | tuple[str, ...]
                             ) -> list[tuple[str, str, nn.Parameter]]:
    """(head, parameter name within the head, parameter) for each non-LoRA parameter of the named detector heads.

    Raises ModelError naming a head that is not a submodule of the detector.
    """
    out: list[tuple[str, str, nn.Parameter]] = []
    for head in heads:
        try:
            module = detector.get_submodule(head)
        except AttributeError:
            raise ModelError(f"detector head '{head}' does not exist in {type(detector).__name__}",
                             "name Sam3Model submodules such as detr_decoder, mask_decoder, dot_product_scoring")\
                from None
        out.extend((head, n, p) for n, p in module.named_parameters() if "lora_" not in n)
    return out


def save_detector_heads(detector: nn.Module, heads: list[str] | tuple[str, ...], adapter_dir: str | os.PathLike
                        ) -> Path:
    """Write ``oncoseg_detector_heads.safetensors`` into ``adapter_dir`` (atomically); the head names go into the
    file's metadata so that loading can check that every tensor of every head is there."""
    from safetensors.torch import save_file

    from OncoSegLib.io.atomic import atomic_path

    path = Path(adapter_dir) / DETECTOR_HEADS_FILE
    with atomic_path(path) as tmp:
        save_file(detector_heads_state(detector, heads), str(tmp),
                  metadata={"format": "pt", "heads": json.dumps(list(heads))})
    return path


def load_detector_heads(detector: nn.Module, path: str | os.PathLike) -> int:
    """Copy a saved ``oncoseg_detector_heads.safetensors`` into ``detector`` (a ``Sam3Model``).

    Refuses (``ModelError``, nothing copied) when a tensor is unknown to the detector or has another shape
    (unexpected), or when a parameter of a saved head is absent from the file (missing: that part of the head would
    stay untrained). The heads are the file's ``heads`` metadata, or else the top-level modules its tensors name.
    Returns the number of tensors loaded.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with adapter_file_errors(path):
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    params: dict[str, torch.nn.Parameter] = {}
    for n, p in detector.named_parameters():
        if "lora_" not in n:
            params[n.replace(".base_layer", "")] = p
    try:
        heads = json.loads(meta["heads"]) if "heads" in meta else sorted({k.split(".", 1)[0] for k in state})
    except ValueError:
        raise ModelError(f"{path}: unreadable 'heads' metadata", "save the adapter again") from None
    unexpected = sorted(k for k, v in state.items() if k not in params or tuple(params[k].shape) != tuple(v.shape))
    missing = sorted(n for n in params if any(n.startswith(f"{h}.") for h in heads) and n not in state)
    if unexpected or missing or not state:
        what = (f"{len(unexpected)} unexpected or mis-shaped (e.g. {unexpected[:3]})" if unexpected else "") + \
               ("; " if unexpected and missing else "") + \
               (f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "") + ("empty file" if not state else "")
        raise ModelError(f"{path}: detector heads do not fit this model: {what}",
                         "use an adapter trained on the same base model (and the same lora.detector_heads)")
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))
    return len(state)
