"""Training configuration: a YAML file -> typed dataclasses, validated with messages that say what to fix.

Layout (see ``configs/*.yaml`` and docs/training.md)::

    name: demo                         # run name
    seed: 0
    output_dir: runs/demo              # relative paths are relative to the YAML file's folder
    model: {source: tiny, image_size: 112, tiny_seed: 0}    # or source: a folder / registry name / repo id
    lora: {r: 16, alpha: 32, dropout: 0.1, scope: vision, trainable_heads: [mask_decoder]}
    train: {batch_size: 8, grad_accum: 1, lr: 1.0e-4, weight_decay: 0.05, max_steps: 1000, steps_per_epoch: 100,
            eval_every: 100, patience: 10, t0: 5, t_mult: 2, amp: auto, ...}
    prompts: {box: 0.5, points: 0.5, text: 0.0, box_jitter: 0.1, max_points: 3, foreground_fraction: 0.8,
              text_negative: 0.2}   # text > 0 also trains the detector (Sam3Model) on concept names
    phases:
      - name: phase1
        datasets: [{kind: msd, path: /data/Task03_Liver, modality: ct, window: [-160, 240]}]
        val_datasets: [...]            # or val_fraction: 0.2 of the training cases
        train: {max_steps: 500}        # per-phase overrides of the ``train`` block
    export: {bundle_dir: null, components: [tracker, detector, video], dtype: float32}  # merge the final adapter
                                       # and save a loadable model folder ([tracker] = tracker-only checkpoint)

A config with ``datasets`` at the top level and no ``phases`` is one phase.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from OncoSegLib.errors import InputError

DATASET_KINDS = ("msd", "folder2d", "npz", "phantom")


@dataclass
class DatasetSpec:
    """One dataset: ``kind`` in :data:`DATASET_KINDS`.

    - msd: ``path`` = a Medical Segmentation Decathlon task folder (imagesTr/, labelsTr/, dataset.json); label
      names come from dataset.json's ``labels``. ``channel`` picks one channel of multi-channel images.
    - folder2d: ``path`` with ``images/`` and ``masks/`` (BUSI, Kvasir-SEG, ISIC style; mask files matched by stem,
      optional ``mask_suffix`` such as "_mask" or "_segmentation"); masks > 0 are ``label_name``.
    - npz: ``path`` = a folder of CVPR challenge ``.npz`` files (``imgs``, ``gts``, ``spacing``).
    - phantom: ``n_cases`` synthetic CTs from :func:`OncoSegLib.phantoms.make_ct_phantom` (seeds ``seed`` ..).
    ``labels`` maps label value -> concept name and overrides what the dataset says; ``modality`` drives
    normalisation and the loss weights; ``max_cases`` limits how many cases are read; ``remap`` {from: to} merges
    label values first (e.g. ``{2: 1}`` = tumour counted as part of the organ, ``{3: 0}`` = drop label 3).
    """

    kind: str
    path: str | None = None
    modality: str | None = None
    window: list[float] | None = None
    labels: dict[int, str] | None = None
    label_name: str = "lesion"
    mask_suffix: str = ""
    channel: int | None = None
    n_cases: int = 4
    seed: int = 0
    shape: list[int] = field(default_factory=lambda: [16, 112, 112])
    spacing: list[float] = field(default_factory=lambda: [0.8, 0.8, 2.5])
    max_cases: int | None = None
    remap: dict[int, int] | None = None
    name: str | None = None


@dataclass
class ModelSpec:
    """Base model: ``source`` = "tiny" (random tiny SAM3, tests/demo) or anything ``load_bundle`` accepts."""

    source: str = "tiny"
    image_size: int = 112
    tiny_seed: int = 0
    adapter: str | None = None
    device: str = "auto"


@dataclass
class LoraSpec:
    """LoRA (see ``OncoSegLib.models.lora.LoraSettings``): layer names ``target`` (Meta's qkv/proj accepted),
    ``scope`` "vision" (SAM3 ViT only) or "all"; ``trainable_heads``: tracker submodules trained in full;
    ``detector_heads``: ``Sam3Model`` submodules trained in full when ``prompts.text > 0`` (the detector shares the
    LoRA-adapted ViT; add ``vision_encoder.neck``, ``text_projection`` or ``text_encoder`` for a random tiny model)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    scope: str = "vision"
    trainable_heads: list[str] = field(default_factory=lambda: ["mask_decoder"])
    detector_heads: list[str] = field(default_factory=lambda: ["detr_encoder", "detr_decoder", "mask_decoder",
                                                               "dot_product_scoring"])

    def settings(self):  # -> LoraSettings
        from OncoSegLib.models.lora import LoraSettings

        return LoraSettings(r=int(self.r), alpha=int(self.alpha), dropout=float(self.dropout),
                            target=tuple(self.target), scope=str(self.scope),
                            trainable_heads=tuple(self.trainable_heads), component="tracker")


@dataclass
class TrainSpec:
    """Optimiser and loop settings (Onco-Seg defaults: AdamW lr 1e-4 wd 0.05, cosine warm restarts T0=5 Tmult=2,
    early stopping patience 10 evaluations on validation Dice)."""

    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    max_steps: int = 1000
    steps_per_epoch: int = 100
    eval_every: int = 100
    patience: int = 10
    t0: int = 5
    t_mult: int = 2
    min_lr: float = 0.0
    amp: str = "auto"              # auto (bf16 on CUDA, off on CPU) | bf16 | off
    grad_clip: float = 1.0
    val_samples: int = 64
    checkpoint_every: int = 100
    num_threads: int | None = None
    progress: bool = True


@dataclass
class PromptSpec:
    """Simulated prompts: mix of batch prompt types, box jitter (fraction of box size), points per prompt;
    ``text_negative``: share of text samples asking for a concept absent from the slice; ``label_weights``
    {label value: weight} oversamples (slice, label) targets of some labels (e.g. ``{5: 3.0}`` for small lesions;
    unlisted labels weigh 1)."""

    box: float = 0.5
    points: float = 0.5
    text: float = 0.0
    box_jitter: float = 0.1
    max_points: int = 3
    max_negative: int = 2
    foreground_fraction: float = 0.8
    text_negative: float = 0.2
    label_weights: dict[int, float] | None = None


@dataclass
class PhaseSpec:
    name: str
    datasets: list[DatasetSpec]
    val_datasets: list[DatasetSpec] = field(default_factory=list)
    val_fraction: float = 0.2
    train: TrainSpec = field(default_factory=TrainSpec)


@dataclass
class TrainConfig:
    name: str
    output_dir: Path
    seed: int = 0
    model: ModelSpec = field(default_factory=ModelSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    prompts: PromptSpec = field(default_factory=PromptSpec)
    phases: list[PhaseSpec] = field(default_factory=list)
    export_bundle_dir: Path | None = None
    export_readme: str | None = None
    export_components: list[str] = field(default_factory=lambda: ["tracker", "detector", "video"])
    export_dtype: str = "float32"
    source_path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}", f"allowed: {', '.join(sorted(names))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from exc


def _dataset(d: Any, where: str, base: Path) -> DatasetSpec:
    spec = _build(DatasetSpec, d, where)
    if spec.kind not in DATASET_KINDS:
        raise InputError(f"{where}: unknown dataset kind '{spec.kind}'", f"use one of {', '.join(DATASET_KINDS)}")
    if spec.kind != "phantom":
        if not spec.path:
            raise InputError(f"{where}: dataset of kind {spec.kind} needs a 'path'")
        p = Path(spec.path).expanduser()
        spec.path = str(p if p.is_absolute() else (base / p))
    if spec.labels is not None:
        spec.labels = {int(k): str(v) for k, v in spec.labels.items()}
    if spec.remap is not None:
        spec.remap = {int(k): int(v) for k, v in spec.remap.items()}
    return spec


def _merge(base: dict, over: dict | None) -> dict:
    out = copy.deepcopy(base)
    out.update(over or {})
    return out


def _export_dtype(value: Any) -> str:
    v = str(value or "float32").lower()
    if v not in ("float32", "float16"):
        raise InputError(f"export.dtype must be float32 or float16, got '{value}'")
    return v


def parse_config(data: dict[str, Any], base_dir: str | Path = ".") -> TrainConfig:
    """Validate a config mapping (as loaded from YAML); relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise InputError("the training config must be a YAML mapping")
    base = Path(base_dir)
    known = {"name", "seed", "output_dir", "model", "lora", "train", "prompts", "phases", "datasets",
             "val_datasets", "val_fraction", "export"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"config: unknown key(s) {', '.join(unknown)}", f"allowed: {', '.join(sorted(known))}")
    name = str(data.get("name") or "oncoseg")
    out_dir = Path(str(data.get("output_dir") or f"runs/{name}")).expanduser()
    out_dir = out_dir if out_dir.is_absolute() else base / out_dir
    train_base = data.get("train") or {}
    _build(TrainSpec, train_base, "train")  # validate early
    phases_raw = data.get("phases")
    if phases_raw is None:
        if "datasets" not in data:
            raise InputError("config has neither 'phases' nor 'datasets'", "list at least one dataset")
        phases_raw = [{"name": "phase1", "datasets": data["datasets"], "val_datasets": data.get("val_datasets", []),
                       "val_fraction": data.get("val_fraction", 0.2)}]
    if not isinstance(phases_raw, list) or not phases_raw:
        raise InputError("'phases' must be a non-empty list")
    phases: list[PhaseSpec] = []
    for n, ph in enumerate(phases_raw):
        where = f"phases[{n}]"
        if not isinstance(ph, dict) or not ph.get("datasets"):
            raise InputError(f"{where} needs a non-empty 'datasets' list")
        extra = sorted(set(ph) - {"name", "datasets", "val_datasets", "val_fraction", "train"})
        if extra:
            raise InputError(f"{where}: unknown key(s) {', '.join(extra)}")
        tr = _build(TrainSpec, _merge(train_base, ph.get("train")), f"{where}.train")
        phases.append(PhaseSpec(
            name=str(ph.get("name") or f"phase{n + 1}"),
            datasets=[_dataset(d, f"{where}.datasets[{i}]", base) for i, d in enumerate(ph["datasets"])],
            val_datasets=[_dataset(d, f"{where}.val_datasets[{i}]", base)
                          for i, d in enumerate(ph.get("val_datasets") or [])],
            val_fraction=float(ph.get("val_fraction", 0.2)),
            train=tr))
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise InputError(f"phase names must be unique, got {names}")
    prompts = _build(PromptSpec, data.get("prompts"), "prompts")
    if prompts.box + prompts.points <= 0:
        raise InputError("prompts: box + points weights must be > 0")
    if prompts.label_weights is not None:
        prompts.label_weights = {int(k): float(v) for k, v in prompts.label_weights.items()}
        if any(v < 0 for v in prompts.label_weights.values()):
            raise InputError("prompts.label_weights must be >= 0")
    if prompts.text < 0 or not 0.0 <= prompts.text_negative < 1.0:
        raise InputError("prompts: text must be >= 0 and text_negative in [0, 1)")
    export = data.get("export") or {}
    bundle_dir = export.get("bundle_dir")
    bundle_path = None
    if bundle_dir:
        bp = Path(str(bundle_dir)).expanduser()
        bundle_path = bp if bp.is_absolute() else base / bp
    return TrainConfig(name=name, output_dir=out_dir, seed=int(data.get("seed", 0)),
                       model=_build(ModelSpec, data.get("model"), "model"),
                       lora=_build(LoraSpec, data.get("lora"), "lora"), prompts=prompts, phases=phases,
                       export_bundle_dir=bundle_path, export_readme=export.get("readme"),
                       export_components=list(export.get("components") or ["tracker", "detector", "video"]),
                       export_dtype=_export_dtype(export.get("dtype", "float32")),
                       raw=copy.deepcopy(data))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; ``overrides`` (top-level keys) replace the file's values."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"training config {p} not found", "give the path of a YAML file (see configs/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{p} is not valid YAML: {exc}") from exc
    if overrides:
        data = _merge(data or {}, overrides)
    cfg = parse_config(data or {}, base_dir=p.resolve().parent)
    cfg.source_path = p.resolve()
    return cfg
