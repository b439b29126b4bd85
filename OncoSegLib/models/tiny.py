"""Tiny SAM3 models with random weights for tests and demos: same code paths as facebook/sam3, CPU-fast.

``tiny_configs`` gives a facebook/sam3-layout ``Sam3VideoConfig`` (detector + video tracker) at ``image_size``
(default 112 model pixels, patch 14 -> an 8x8 grid, masks at 32x32). ``tiny_bundle`` builds a deterministic
:class:`Sam3Bundle` from it, ``save_tiny_checkpoint`` writes it as a loadable facebook/sam3-style folder
(config.json + model.safetensors + tokenizer files), ``make_test_hf_cache`` puts that folder into a real Hugging Face
hub cache (blobs/refs/snapshots) so that offline loading by repo id can be tested with ``HF_HUB_OFFLINE=1``.

Constraints (measured, see shared/notes/sam3-transformers.md): attention head dim divisible by 4; detector width
divisible by 8; video tracker width a multiple of 64 and > 64 (memory channels are 64); backbone feature sizes set by
hand to 4x, 2x, 1x the patch grid; ``image_size`` passed at the top level of the video config.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from OncoSegLib.io.atomic import atomic_path
from OncoSegLib.models.bundle import Sam3Bundle, tie_bundle, tracker_from_video

PATCH = 14
WIDTH = 128  # FPN / decoder width: the video tracker needs a multiple of 64 above 64

# A small word-level vocabulary for the tiny text encoder (the real model uses CLIP's 49,408 BPE tokens).
SPECIAL_TOKENS = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]
MEDICAL_WORDS = (
    "tumor tumour lesion mass nodule cyst metastasis metastases cancer carcinoma lymphoma glioma glioblastoma "
    "meningioma edema necrosis enhancing core whole liver kidney spleen pancreas lung lungs breast brain prostate "
    "bladder bone spine vertebra heart aorta colon stomach gallbladder adrenal thyroid esophagus rectum uterus "
    "ovary skin polyp melanoma nevus lymph node vessel organ left right upper lower lobe region area small large "
    "the a of and in with ct mri pet ultrasound xray x-ray endoscopy dermoscopy"
).split()


def tiny_configs(image_size: int = 112, text_vocab: int | None = None) -> Any:
    """A tiny facebook/sam3-layout ``Sam3VideoConfig`` (``detector_config`` = Sam3, ``tracker_config`` = video).

    ``image_size`` is the square model input side in model pixels; it must be a multiple of 14.
    """
    from transformers import Sam3VideoConfig

    if image_size % PATCH:
        raise ValueError(f"image_size must be a multiple of {PATCH}, got {image_size}")
    g = image_size // PATCH
    vocab = text_vocab or len(SPECIAL_TOKENS) + len(MEDICAL_WORDS)
    backbone = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, image_size=image_size, patch_size=PATCH, window_size=4,
                    global_attn_indexes=[1], pretrain_image_size=image_size)
    vision = dict(model_type="sam3_vision_model", backbone_config=backbone, fpn_hidden_size=WIDTH,
                  backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]])
    text = dict(model_type="clip_text_model", vocab_size=vocab, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, projection_dim=32,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)
    detector = dict(model_type="sam3", vision_config=vision, text_config=text,
                    geometry_encoder_config=dict(hidden_size=WIDTH, num_layers=1, num_attention_heads=2,
                                                 intermediate_size=64),
                    detr_encoder_config=dict(hidden_size=WIDTH, num_layers=1, num_attention_heads=2,
                                             intermediate_size=64),
                    detr_decoder_config=dict(hidden_size=WIDTH, num_layers=1, num_queries=8, num_attention_heads=2,
                                             intermediate_size=64),
                    mask_decoder_config=dict(hidden_size=WIDTH, num_upsampling_stages=3, num_attention_heads=2))
    tracker = dict(model_type="sam3_tracker_video", vision_config=vision, image_size=image_size,
                   prompt_encoder_config=dict(hidden_size=WIDTH, image_size=image_size, patch_size=PATCH,
                                              mask_input_channels=4),
                   mask_decoder_config=dict(hidden_size=WIDTH, mlp_dim=64, num_attention_heads=2,
                                            iou_head_hidden_dim=32, dynamic_multimask_via_stability=False),
                   memory_attention_hidden_size=WIDTH, memory_attention_num_layers=1,
                   memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=WIDTH,
                   mask_downsampler_embed_dim=WIDTH, memory_fuser_embed_dim=WIDTH, memory_fuser_intermediate_dim=64,
                   memory_fuser_num_layers=1)
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker)


def tiny_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over a small medical vocabulary (ids match :func:`tiny_configs`).

    Hand-built instead of CLIP's BPE so tests need no download; it saves/loads with ``save_pretrained`` /
    ``AutoTokenizer.from_pretrained`` like the real one.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + MEDICAL_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]), ("<|endoftext|>", vocab["<|endoftext|>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<|startoftext|>", eos_token="<|endoftext|>", model_max_length=32)


def _build_models(seed: int, image_size: int, text: bool, video: bool):
    from transformers import Sam3Model, Sam3TrackerModel, Sam3TrackerVideoModel

    cfg = tiny_configs(image_size)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        video_model = Sam3TrackerVideoModel(cfg.tracker_config)
        torch.manual_seed(seed + 1)
        detector = Sam3Model(cfg.detector_config) if text else None
    finally:
        torch.random.set_rng_state(gen_state)
    if detector is not None:  # the facebook/sam3 layout stores ONE ViT backbone: make the detector use the tracker's
        detector.vision_encoder.backbone.load_state_dict(video_model.vision_encoder.backbone.state_dict())
    tracker = tracker_from_video(video_model)
    assert isinstance(tracker, Sam3TrackerModel)
    return cfg, tracker, detector, (video_model if video else None), video_model


def tiny_bundle(seed: int = 0, image_size: int = 112, text: bool = True, video: bool = True) -> Sam3Bundle:
    """A tiny random-weight :class:`Sam3Bundle` on CPU, deterministic for a given ``seed``, in eval mode.

    ``image_size`` is the model input side (model pixels). ``text`` adds the detector + tokenizer, ``video`` the
    video tracker. The tracker and video tracker share every tracker tensor; the detector shares the ViT backbone.
    """
    _, tracker, detector, video_model, _ = _build_models(seed, image_size, text, video)
    bundle = Sam3Bundle(tracker=tracker, detector=detector, video=video_model,
                        tokenizer=tiny_tokenizer() if text else None, image_size=image_size,
                        device=torch.device("cpu"), dtype=torch.float32, name="tiny", source=f"tiny(seed={seed})",
                        modalities=[])
    tie_bundle(bundle, verify=False)
    return bundle.eval()


def facebook_state_dict(tracker_video: torch.nn.Module, detector: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The facebook/sam3 key layout of a video tracker + detector (what ``Sam3VideoModel`` holds).

    ``detector_model.*`` = the detector (its ``vision_encoder.backbone`` is the shared ViT),
    ``tracker_neck.*`` = the tracker's FPN neck, ``tracker_model.*`` = the video tracker without its vision encoder.
    Written by hand because ``Sam3VideoModel.save_pretrained`` doubles the ``tracker_model.`` prefix (measured).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in detector.state_dict().items():
        out[f"detector_model.{k}"] = v
    for k, v in tracker_video.state_dict().items():
        if k.startswith("vision_encoder.neck."):
            out["tracker_neck." + k[len("vision_encoder.neck."):]] = v
        elif k.startswith("vision_encoder."):
            continue  # backbone: stored once, under detector_model.vision_encoder.backbone
        else:
            out[f"tracker_model.{k}"] = v
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_tiny_checkpoint(out_dir: str | os.PathLike, seed: int = 0, image_size: int = 112,
                         text: bool = True) -> Path:
    """Write a tiny facebook/sam3-layout checkpoint folder and return it.

    Files: ``config.json`` (``Sam3VideoConfig``), ``model.safetensors`` (keys ``detector_model.*``,
    ``tracker_model.*``, ``tracker_neck.*``) and, with ``text``, the tokenizer files. The weights are those of
    ``tiny_bundle(seed, image_size)``. Refuses to write into a non-empty folder that is not an OncoSeg tiny checkpoint.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists():
        raise FileExistsError(f"{out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    cfg, _, detector, _, video_model = _build_models(seed, image_size, True, True)
    cfg.save_pretrained(out)
    sd = facebook_state_dict(video_model, detector)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    if text:
        tiny_tokenizer().save_pretrained(out)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_test_hf_cache(cache_dir: str | os.PathLike, repo_id: str = "facebook/sam3", seed: int = 0,
                       image_size: int = 112, source_dir: str | os.PathLike | None = None,
                       revision: str = "main", commit: str | None = None) -> Path:
    """Build a real Hugging Face hub cache entry for ``repo_id`` holding a tiny checkpoint; return the snapshot dir.

    Layout (as huggingface_hub writes it): ``<cache>/models--org--name/blobs/<sha256>``,
    ``refs/<revision>`` (a commit hash) and ``snapshots/<commit>/<file>`` -> symlink to the blob (a copy where links
    are unavailable). Use with ``HF_HUB_CACHE=<cache>`` (or ``cache_dir=``) and ``HF_HUB_OFFLINE=1``. ``source_dir``
    defaults to a fresh :func:`save_tiny_checkpoint`.
    """
    cache = Path(cache_dir)
    repo_folder = cache / ("models--" + repo_id.replace("/", "--"))
    if source_dir is None:
        source = Path(cache) / ".tiny_source" / repo_id.replace("/", "--")
        if source.exists():
            shutil.rmtree(source)
        save_tiny_checkpoint(source, seed=seed, image_size=image_size)
    else:
        source = Path(source_dir)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if commit is None:
        h = hashlib.sha1()
        for p in files:
            h.update(p.relative_to(source).as_posix().encode())
            h.update(_sha256(p).encode())
        commit = h.hexdigest()
    (repo_folder / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    snap = repo_folder / "snapshots" / commit
    for p in files:
        rel = p.relative_to(source)
        digest = _sha256(p)
        blob = repo_folder / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(p, blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # Windows without developer mode: the hub falls back to copies as well
            shutil.copyfile(blob, link)
    (repo_folder / "refs" / revision).write_text(commit)
    return snap
