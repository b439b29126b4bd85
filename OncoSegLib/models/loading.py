"""`load_bundle`: a facebook/sam3-layout checkpoint (folder, hub repo id, registry name or Meta checkpoint file) ->
:class:`Sam3Bundle` with one shared ViT, every weight accounted for.

Loading refuses (``ModelError``) when any weight of a requested backend is missing or has the wrong shape: transformers
would otherwise leave them randomly initialised and the model would produce plausible-looking nonsense. The classic
trap is a checkpoint written by ``Sam3VideoModel.save_pretrained`` whose keys carry a doubled
``tracker_model.tracker_model.`` prefix (measured: 147 tracker weights left random); ``oncoseg models import``
normalises such a folder. It also refuses weights the architecture does not use (unexpected keys) and LoRA tensors
(``lora_A`` / ``lora_B`` / ``base_layer``) anywhere in a full checkpoint: transformers would only warn and drop them,
so a checkpoint saved with an unmerged adapter would run as the base model. (Keys of a backend that was not requested,
e.g. ``detector_model.*`` when only the tracker is loaded, are the architecture's own and not reported.)

A model card ``oncoseg_model.json`` beside the weights (written by ``oncoseg train``) may say which confidence heads
mean something (``confidence_heads``, see :class:`~OncoSegLib.models.bundle.Sam3Bundle`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch

from OncoSegLib.errors import ModelError
from OncoSegLib.models.bundle import COMPONENTS, Sam3Bundle, confidence_heads_from, tie_bundle, tracker_from_video
from OncoSegLib.models.device import pick_device, resolve_dtype
from OncoSegLib.models.registry import ResolvedModel, oncoseg_home, resolve

log = logging.getLogger(__name__)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library messages often span several), cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

# model_type in config.json -> the backends such a checkpoint can feed
AVAILABLE: dict[str, set[str]] = {
    "sam3_video": {"tracker", "detector", "video"},
    "sam3_tracker_video": {"tracker", "video"},
    "sam3_tracker": {"tracker"},
    "sam3": {"detector"},
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
DOUBLED_PREFIX = "tracker_model.tracker_model."
MODEL_CARD = "oncoseg_model.json"
LORA_KEY_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B", ".lora_magnitude_vector",
                    ".base_layer.")  # peft tensor names: an adapter saved into a full checkpoint without merging


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load notices and progress bars (our own report replaces them)."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    bars_were_disabled = tlog.is_progress_bar_enabled() is False
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if not bars_were_disabled:
            tlog.enable_progress_bar()


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, or ``ModelError`` saying what the folder lacks."""
    cfg = folder / "config.json"
    if not cfg.is_file():
        if (folder / "adapter_config.json").is_file():
            raise ModelError(f"{folder} holds a LoRA adapter, not a full model",
                             "load the base model and pass this folder as the adapter (--adapter), "
                             "or register it with a base (`oncoseg models import PATH --name N`)")
        raise ModelError(f"{folder} has no config.json", "point to a SAM3 checkpoint folder (config.json + "
                         "model.safetensors), a registry name (`oncoseg models list`) or a .ckpt/.pt file")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {cfg}: {one_line(exc)}",
                         "the download may be incomplete; fetch it again") from exc


def checkpoint_keys(folder: Path) -> list[str]:
    """Tensor names in the folder's safetensors files (header only, no weights read)."""
    from safetensors import safe_open

    from safetensors import SafetensorError

    keys: list[str] = []
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as fh:
                keys.extend(fh.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"cannot read {f}: {one_line(exc)}",
                             "the file is corrupt or incomplete (an interrupted download?): fetch it again") from None
    return keys


def read_model_card(folder: Path) -> dict[str, Any]:
    """The folder's ``oncoseg_model.json`` (provenance written by ``oncoseg train``), or ``{}`` when absent."""
    path = folder / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {one_line(exc)}",
                         "the model folder is damaged; export or download it again") from None
    if not isinstance(card, dict):
        raise ModelError(f"{path} is not a JSON object", "the model folder is damaged; export or download it again")
    return card


def check_loading_info(info: dict[str, Any], what: str, folder: Path) -> dict[str, list[str]]:
    """Raise ``ModelError`` on missing, mismatched or unexpected keys; return the (sorted, all empty) report."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(m[0]) if isinstance(m, (tuple, list)) else str(m)
                        for m in (info.get("mismatched_keys") or []))
    unexpected = sorted(info.get("unexpected_keys") or [])
    errors = list(info.get("error_msgs") or [])
    if missing or mismatched or errors:
        problem = (f"{len(missing)} missing" if missing else "") + \
                  (f", {len(mismatched)} with the wrong shape" if mismatched else "") + \
                  (f", {len(errors)} load errors" if errors else "")
        example = (missing or mismatched or [str(e) for e in errors])[:3]
        raise ModelError(
            f"{what} from {folder}: {problem.strip(', ')} weights (e.g. {', '.join(example)}); refusing to run "
            "with randomly initialised weights",
            "the checkpoint does not match this architecture: use a facebook/sam3-layout checkpoint, or convert it "
            "with `oncoseg models import PATH` (Meta/Lightning checkpoints, doubled 'tracker_model.' prefixes)")
    if unexpected:
        lora = [k for k in unexpected if any(m in f".{k}" for m in LORA_KEY_MARKERS)]
        raise ModelError(
            f"{what} from {folder}: {len(unexpected)} weights this architecture does not use "
            f"(e.g. {', '.join((lora or unexpected)[:3])}); refusing to run without them",
            "the checkpoint holds unmerged LoRA tensors: merge the adapter first (load it with --adapter, or "
            "`oncoseg models import`)" if lora else "the checkpoint does not match this architecture or holds "
            "leftovers: use a facebook/sam3-layout checkpoint, or convert it with `oncoseg models import PATH`")
    return {"missing": missing, "mismatched": mismatched, "unexpected": unexpected}


def _from_pretrained(cls: Any, folder: Path, dtype: torch.dtype, what: str,
                     attn_implementation: str | None) -> tuple[Any, dict[str, list[str]]]:
    kwargs: dict[str, Any] = {"dtype": dtype, "output_loading_info": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    from safetensors import SafetensorError

    try:
        with quiet_transformers():
            model, info = cls.from_pretrained(str(folder), **kwargs)
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError, EOFError) as exc:
        raise ModelError(f"cannot load {what} from {folder}: {type(exc).__name__}: {one_line(exc)}",
                         "check that the folder holds a complete SAM3 checkpoint (config.json + *.safetensors)") from exc
    return model, check_loading_info(info, what, folder)


def load_folder(folder: str | os.PathLike, components: Iterable[str] = COMPONENTS, dtype: torch.dtype | None = None,
                attn_implementation: str | None = None) -> Sam3Bundle:
    """Load the requested backends from a checkpoint folder on the CPU, with shared modules (see module doc).

    ``components`` lists wanted backends; those the checkpoint cannot feed are skipped (logged), except the tracker,
    which is required.
    """
    from transformers import Sam3Model, Sam3TrackerModel, Sam3TrackerVideoModel

    folder = Path(folder)
    wanted = set(components) | {"tracker"}
    unknown = wanted - set(COMPONENTS)
    if unknown:
        raise ModelError(f"unknown components {sorted(unknown)}", f"choose from {list(COMPONENTS)}")
    cfg = read_config(folder)
    model_type = cfg.get("model_type", "")
    if model_type not in AVAILABLE:
        raise ModelError(f"{folder}: model type '{model_type}' is not a SAM3 checkpoint",
                         "use facebook/sam3 (or a checkpoint saved in its layout)")
    available = AVAILABLE[model_type]
    if "tracker" not in available:
        raise ModelError(f"{folder} holds only the SAM3 detector ('{model_type}'), without the tracker needed for "
                         "points and boxes", "use the full facebook/sam3 checkpoint")
    keys = checkpoint_keys(folder)
    if not keys:
        raise ModelError(f"{folder} has no *.safetensors weights",
                         "download the model again; .bin/.pt files must be converted: `oncoseg models import PATH`")
    lora_keys = [k for k in keys if any(m in f".{k}" for m in LORA_KEY_MARKERS)]
    if lora_keys:
        raise ModelError(f"{folder}: the checkpoint holds {len(lora_keys)} LoRA tensors (e.g. {lora_keys[0]}) that "
                         "a full model does not use; they would be silently ignored",
                         "merge the adapter into the weights, or keep it as a separate adapter folder (--adapter)")
    if any(k.startswith(DOUBLED_PREFIX) for k in keys):
        raise ModelError(f"{folder}: weights carry a doubled '{DOUBLED_PREFIX}' prefix (written by "
                         "Sam3VideoModel.save_pretrained); loading would leave tracker weights random",
                         "normalise it once with `oncoseg models import PATH --name NAME`")
    skipped = sorted(wanted - available)
    if skipped:
        log.info("%s: checkpoint type %s has no %s; skipped", folder, model_type, ", ".join(skipped))
    dtype = resolve_dtype(dtype)
    report: dict[str, Any] = {"model_type": model_type, "skipped": skipped}
    video = detector = None
    if "video" in wanted and "video" in available:
        video, report["video"] = _from_pretrained(Sam3TrackerVideoModel, folder, dtype, "video tracker",
                                                  attn_implementation)
        tracker = tracker_from_video(video)
        report["tracker"] = report["video"]
    else:
        tracker, report["tracker"] = _from_pretrained(Sam3TrackerModel, folder, dtype, "tracker", attn_implementation)
    if "detector" in wanted and "detector" in available:
        detector, report["detector"] = _from_pretrained(Sam3Model, folder, dtype, "detector", attn_implementation)
    tokenizer = None
    if detector is not None:
        tokenizer = load_tokenizer(folder)
        if tokenizer is None:
            log.warning("%s has no tokenizer files; text prompts are unavailable", folder)
    image_size = int(tracker.config.vision_config.backbone_config.image_size)
    bundle = Sam3Bundle(tracker=tracker, detector=detector, video=video, tokenizer=tokenizer, image_size=image_size,
                        device=torch.device("cpu"), dtype=dtype, name=folder.name, source=str(folder), info=report,
                        confidence_heads=confidence_heads_from(read_model_card(folder)))
    tie_bundle(bundle, verify=True)
    return bundle


def load_tokenizer(folder: Path) -> Any:
    """The folder's HF tokenizer (CLIP's for facebook/sam3), or ``None`` when it has no tokenizer files."""
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot load the tokenizer in %s (%s); text prompts are unavailable", folder, exc)
        return None


def converted_folder(checkpoint: Path) -> Path:
    """Where a Meta / Lightning checkpoint file is converted to (keyed by its SHA-256, reused next time)."""
    h = hashlib.sha256()
    st = checkpoint.stat()
    h.update(f"{checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return oncoseg_home() / "converted" / h.hexdigest()[:16]


def is_litemedsam(resolved: ResolvedModel) -> bool:
    """True for the registry's LiteMedSAM entry or a LiteMedSAM store folder (``provenance.json`` naming it)."""
    if resolved.entry is not None:
        return resolved.entry.backend == "litemedsam"
    prov = resolved.path / "provenance.json" if resolved.path.is_dir() else None
    if prov is None or not prov.is_file():
        return False
    try:
        return json.loads(prov.read_text(encoding="utf-8")).get("name") == "litemedsam"
    except (OSError, json.JSONDecodeError):
        return False


def load_model(name: str | os.PathLike | None = None, modality: str | None = None, device: str | torch.device = "auto",
               **kwargs: Any) -> tuple[Any, str | None]:
    """The Python entry point that never dead-ends offline: ``(model, notice)`` for a session.

    ``name`` (registry name, folder, file or repo id) is loaded as given. Without it the manifest's model for
    ``modality`` is used, or ``litemedsam`` when that one is not available (see
    :func:`~OncoSegLib.models.registry.resolve_model`); the notice (one line, also logged once as a warning) names
    the wanted model and how to get it. ``kwargs`` go to :func:`load_bundle`.
    """
    from OncoSegLib.models.registry import resolve_model

    chosen, notice = resolve_model(None if name is None else str(name), modality)
    if notice:
        log.warning("%s", notice)
    return load_bundle(chosen if name is None else name, device=device, **kwargs), notice


def load_bundle(source: str | os.PathLike, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                components: Sequence[str] = COMPONENTS, adapter: str | os.PathLike | None = None,
                merge_adapter: bool = False, *, offline: bool | None = None, token: str | bool | None = None,
                attn_implementation: str | None = None) -> Sam3Bundle:
    """Load a :class:`Sam3Bundle` (eval mode) from a folder, a checkpoint file, an ``org/name`` repo or a registry name.

    - ``device``: "auto" (cuda, mps, cpu), or a torch device string. ``dtype``: weights dtype (default float32;
      use autocast from ``models.device`` for bf16 compute).
    - ``components``: backends wanted among ("tracker", "detector", "video"); the tracker is always loaded.
    - ``adapter``: a LoRA adapter folder (peft) applied on top; ``merge_adapter`` folds it into the weights.
      A registry entry with a ``base`` loads the base and applies the entry as adapter.
    - ``offline``: never touch the network (default: ``HF_HUB_OFFLINE``); ``token``: Hugging Face token.
    Raises ``ModelError`` for missing/incompatible weights, gated or unreachable repositories.
    ``litemedsam`` (or a LiteMedSAM store folder) returns a
    :class:`~OncoSegLib.models.litemedsam.predictor.LiteMedSamPredictor` instead, which the session takes as is.
    """
    from OncoSegLib.models.lora import load_adapter

    resolved: ResolvedModel = resolve(source, offline=offline, token=token)
    if is_litemedsam(resolved):  # not a SAM3 bundle: a predictor the session takes as it is
        if adapter is not None:
            raise ModelError("LiteMedSAM takes no LoRA adapter", "drop --adapter, or choose a SAM3 model")
        from OncoSegLib.models.litemedsam.predictor import load_litemedsam

        return load_litemedsam(resolved.path, device=device, name=resolved.name, source=str(source),
                               modalities=resolved.modalities)
    base = resolved.base or resolved
    adapters: list[Path] = []
    if resolved.base is not None:
        adapters.append(resolved.path)
    if adapter is not None:
        adapters.append(resolve(adapter, offline=offline, token=token).path)
    folder = base.path
    if folder.is_file():
        from OncoSegLib.models.convert_meta import convert_checkpoint_to_folder

        out = converted_folder(folder)
        if not (out / "config.json").is_file():
            log.info("converting %s to the transformers layout in %s", folder, out)
            convert_checkpoint_to_folder(folder, out)
        folder = out
    elif not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file() and not adapters:
        raise ModelError(f"{folder} is a LoRA adapter without a base model",
                         "pass the base model as the source and this folder as --adapter")
    bundle = load_folder(folder, components=components, dtype=dtype, attn_implementation=attn_implementation)
    bundle.name = resolved.name
    bundle.source = str(source)
    bundle.modalities = resolved.modalities or base.modalities
    for a in adapters:
        load_adapter(bundle, a, merge=merge_adapter)
    dev = pick_device(device)
    if dev.type != "cpu":
        from OncoSegLib.models.device import oom_guard

        with oom_guard(f"moving the model to {dev}", dev):
            bundle.to(dev)
    return bundle.eval()
