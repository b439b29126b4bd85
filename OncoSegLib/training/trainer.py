"""LoRA fine-tuning of the SAM3 tracker on prompted slices: ``oncoseg train --config CONFIG.yaml``.

Recipe (Onco-Seg unless said otherwise): LoRA (r 16, alpha 32, dropout 0.1) on the ViT attention plus a fully
trained mask decoder (what trained well here, see shared notes); Dice + focal loss with per-modality weights
(``losses.py``); AdamW lr 1e-4, weight decay 0.05; ``CosineAnnealingWarmRestarts(T_0=5, T_mult=2)`` stepped in
fractional epochs of ``steps_per_epoch`` optimiser steps; validation Dice (tight GT boxes on held-out cases) every
``eval_every`` steps, early stopping after ``patience`` evaluations without improvement and the best weights kept;
bf16 autocast on CUDA (``amp: auto``; ``bf16`` forces it on CPU); gradient accumulation; gradient clipping.

The model is called as ``tracker(pixel_values=..., input_boxes|input_points=..., multimask_output=False)``: the
vision encoder runs inside the graph (``get_image_embeddings`` is ``no_grad``) and ``dynamic_multimask_via_stability``
is off, so training and inference pick the same single mask. Logits (4x the patch grid) are upsampled to S x S.

Distributed: started by ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set) the trainer joins a
``torch.distributed`` group (NCCL on CUDA, gloo on CPU) and wraps the model in ``DistributedDataParallel``; each rank
draws its own micro-batches (see ``sampling.py``) and only rank 0 writes files.

Outputs (``output_dir``): ``phases/<name>/{adapter, checkpoint, metrics.csv, metrics.json, curves.png,
config.yaml}``, ``final/`` (the last phase's adapter + config + metrics), ``train_summary.json``, optional exported
model folder. Resume: rerunning the same command continues from ``checkpoint/`` (weights and RNG in safetensors,
loop state in JSON, optimiser state via ``torch.save`` read back with ``weights_only=True``); finished phases are
skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.io.atomic import atomic_path, atomic_write_text
from OncoSegLib.models.lora import (  # one implementation, also used by load_adapter  # noqa: F401
    DETECTOR_HEADS_FILE,
    detector_heads_state,
    load_detector_heads,
    save_detector_heads,
)
from OncoSegLib.training.config import PhaseSpec, TrainConfig, TrainSpec
from OncoSegLib.training.datasets import CaseCache, SliceIndex, build_cases
from OncoSegLib.training.losses import batch_dice, segmentation_loss
from OncoSegLib.training.sampling import Batch, Sampler

log = logging.getLogger(__name__)

DONE_FILE = "DONE"
METRIC_FIELDS = ["phase", "step", "epoch", "lr", "loss", "loss_dice", "loss_focal", "train_dice", "val_dice",
                 "elapsed_s", "kind", "loss_text", "val_text_dice"]


# ---------------------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (env ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_*``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        info.initialised_here = True
    return info


def _barrier(d: DistInfo) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------- results
@dataclass
class PhaseResult:
    name: str
    steps: int
    best_val_dice: float
    best_step: int
    stopped_early: bool
    adapter_dir: str
    initial_val_dice: float


@dataclass
class TrainResult:
    output_dir: str
    final_adapter: str
    phases: list[PhaseResult] = field(default_factory=list)
    exported_model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"output_dir": self.output_dir, "final_adapter": self.final_adapter,
                "exported_model": self.exported_model, "phases": [p.__dict__ for p in self.phases]}


# ---------------------------------------------------------------------------------------------- helpers
def _device(cfg: TrainConfig, d: DistInfo) -> torch.device:
    from OncoSegLib.models.device import pick_device

    dev = pick_device(cfg.model.device)
    if dev.type == "cuda" and d.enabled:
        torch.cuda.set_device(d.local_rank)
        dev = torch.device("cuda", d.local_rank)
    return dev


def load_base_bundle(cfg: TrainConfig, device: torch.device) -> Any:
    """The base model of a config: a tiny random SAM3 (``source: tiny``) or ``load_bundle(source)``."""
    if cfg.model.source == "tiny":
        from OncoSegLib.models.tiny import tiny_bundle

        bundle = tiny_bundle(seed=cfg.model.tiny_seed, image_size=cfg.model.image_size, text=True, video=True)
    else:
        from OncoSegLib.models.loading import load_bundle

        bundle = load_bundle(cfg.model.source, device="cpu")
    if int(bundle.image_size) != int(cfg.model.image_size):
        log.info("model image_size %s overrides config %s", bundle.image_size, cfg.model.image_size)
        cfg.model.image_size = int(bundle.image_size)
    bundle.to(device)
    for m in (bundle.tracker, bundle.video):
        if m is not None:
            m.mask_decoder.dynamic_multimask_via_stability = False
    return bundle


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in _trainable(model).items()}


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = _trainable(model)
    missing = sorted(set(params) - set(state))
    if missing:
        raise ModelError(f"checkpoint misses {len(missing)} trainable tensors (e.g. {missing[0]})",
                         "delete the checkpoint folder to start the phase afresh")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n].to(p.device, p.dtype))


class JointModel(torch.nn.Module):
    """The tracker (peft-wrapped) and the detector as one module, so that DDP synchronises both; ``forward(kind,
    **kw)`` runs ``tracker`` (kind "tracker") or ``detector`` (kind "detector"). The ViT (with LoRA) is shared."""

    def __init__(self, tracker: torch.nn.Module, detector: torch.nn.Module):
        super().__init__()
        self.tracker = tracker
        self.detector = detector

    def forward(self, kind: str, **kw: Any) -> Any:
        return self.tracker(**kw) if kind == "tracker" else self.detector(**kw)


def prepare_detector(detector: torch.nn.Module, heads: list[str]) -> list[torch.nn.Parameter]:
    """Freeze the detector except its LoRA tensors (in the shared ViT) and the ``heads`` submodules, which are
    trained in full; returns the head parameters (the LoRA ones belong to the tracker's peft model)."""
    for n, p in detector.named_parameters():
        if "lora_" not in n:
            p.requires_grad_(False)
    from OncoSegLib.models.lora import detector_head_parameters

    out: list[torch.nn.Parameter] = []
    for _head, _name, p in detector_head_parameters(detector, heads):
        p.requires_grad_(True)
        out.append(p)
    return out


def _forward_detector(model: torch.nn.Module, batch: Batch, device: torch.device, image_size: int,
                      tokens: dict[str, torch.Tensor]) -> Any:
    """Detector forward of a text batch; ``pred_masks`` upsampled to (B, Q, S, S) (bilinear)."""
    out = model("detector", pixel_values=batch.pixel_values.to(device), **tokens)
    masks = F.interpolate(out.pred_masks.float(), size=(image_size, image_size), mode="bilinear",
                          align_corners=False)
    return masks, out.pred_logits.float(), out.presence_logits.float()


def _forward_logits(model: torch.nn.Module, batch: Batch, device: torch.device, image_size: int) -> torch.Tensor:
    kw: dict[str, Any] = {"pixel_values": batch.pixel_values.to(device), "multimask_output": False}
    if batch.input_boxes is not None:
        kw["input_boxes"] = batch.input_boxes.to(device)
    if batch.input_points is not None:
        kw["input_points"] = batch.input_points.to(device)
        kw["input_labels"] = batch.input_labels.to(device)
    out = model("tracker", **kw) if _is_joint(model) else model(**kw)
    low = out.pred_masks[:, 0, 0]  # (B, L, L) logits, single mask
    return F.interpolate(low[:, None].float(), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)[:, 0]


def _is_joint(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, "module", model), JointModel)


def _amp_ctx(spec: TrainSpec, device: torch.device):
    from OncoSegLib.models.device import autocast

    if spec.amp == "off":
        return autocast(device, enabled=False)
    return autocast(device, cpu_bf16=(spec.amp == "bf16"), enabled=True)


def evaluate_batches(model: torch.nn.Module, batches: list[Batch], device: torch.device, image_size: int,
                     spec: TrainSpec) -> float:
    """Mean hard Dice over validation batches (eval mode, no grad)."""
    was = model.training
    model.eval()
    scores = []
    with torch.no_grad(), _amp_ctx(spec, device):
        for b in batches:
            logits = _forward_logits(model, b, device, image_size)
            scores.append(batch_dice(logits.float(), b.targets.to(device)).cpu())
    model.train(was)
    return float(torch.cat(scores).mean()) if scores else 0.0


def evaluate_text_batches(model: torch.nn.Module, batches: list[Batch], device: torch.device, image_size: int,
                          spec: TrainSpec, tokenize: Any) -> float:
    """Mean hard Dice of text prompts: the union of the detections scoring >= 0.5 (sigmoid(logit) x
    sigmoid(presence)) against the concept's mask, over validation batches (eval mode, no grad)."""
    from OncoSegLib.training.text_loss import detections_union

    was = model.training
    model.eval()
    scores = []
    with torch.no_grad(), _amp_ctx(spec, device):
        for b in batches:
            masks, logits, pres = _forward_detector(model, b, device, image_size, tokenize(b.texts))
            union = detections_union(masks, logits, pres)
            scores.append(batch_dice(union, b.targets.to(device)).cpu())
    model.train(was)
    return float(torch.cat(scores).mean()) if scores else 0.0


def _write_metrics(phase_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    with atomic_path(phase_dir / "metrics.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in METRIC_FIELDS})
    atomic_write_text(phase_dir / "metrics.json", json.dumps({"summary": summary, "history": rows}, indent=1))
    try:
        plot_curves(rows, phase_dir / "curves.png", title=str(summary.get("phase", "")))
    except ImportError:  # matplotlib is optional
        pass


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Training loss and train/validation Dice against the optimiser step (PNG, matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows if r.get("loss") not in (None, "")]
    loss = [r["loss"] for r in rows if r.get("loss") not in (None, "")]
    tdice = [r["train_dice"] for r in rows if r.get("loss") not in (None, "")]
    vsteps = [r["step"] for r in rows if r.get("val_dice") not in (None, "")]
    vdice = [r["val_dice"] for r in rows if r.get("val_dice") not in (None, "")]
    fig, ax1 = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    ax1.plot(steps, loss, color="tab:red", lw=1, label="loss")
    ax1.set_xlabel("optimiser step")
    ax1.set_ylabel("loss", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(steps, tdice, color="tab:blue", lw=0.8, alpha=0.5, label="train Dice")
    ax2.plot(vsteps, vdice, "o-", color="tab:green", lw=1.5, label="validation Dice")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("Dice")
    fig.legend(loc="lower center", ncol=3, fontsize=8)
    ax1.set_title(title or "training")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _dump_yaml(data: Any, path: Path) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(ck_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                     state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
    from safetensors.torch import save_file

    ck_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(ck_dir / "trainable.safetensors") as tmp:
        save_file(_state_of(model), str(tmp))
    if best_state is not None:
        with atomic_path(ck_dir / "best.safetensors") as tmp:
            save_file(best_state, str(tmp))
    with atomic_path(ck_dir / "rng.safetensors") as tmp:
        save_file({"torch": torch.get_rng_state()}, str(tmp))
    with atomic_path(ck_dir / "optimizer.pt") as tmp:
        torch.save(opt.state_dict(), str(tmp))
    st = dict(state)
    st["scheduler"] = sched.state_dict()
    atomic_write_text(ck_dir / "state.json", json.dumps(st, indent=1))


def _load_checkpoint(ck_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    from safetensors.torch import load_file

    state = json.loads((ck_dir / "state.json").read_text(encoding="utf-8"))
    _load_state(model, load_file(str(ck_dir / "trainable.safetensors")))
    opt.load_state_dict(torch.load(str(ck_dir / "optimizer.pt"), map_location="cpu", weights_only=True))
    sched.load_state_dict(state.pop("scheduler"))
    rng = load_file(str(ck_dir / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    best = load_file(str(ck_dir / "best.safetensors")) if (ck_dir / "best.safetensors").is_file() else None
    return state, best


# ---------------------------------------------------------------------------------------------- main loop
class Trainer:
    """Runs the phases of a :class:`TrainConfig` (see module docstring). ``cancel`` stops after the current step,
    saving a checkpoint."""

    def __init__(self, cfg: TrainConfig, progress: bool | None = None, cancel: CancelToken | None = None):
        self.cfg = cfg
        self.cancel = cancel
        self.progress = progress
        self.out = Path(cfg.output_dir)

    def run(self) -> TrainResult:
        cfg = self.cfg
        device = torch.device(pick_device_type(cfg))
        dist_info = init_distributed(device.type)
        device = _device(cfg, dist_info)
        self.dist = dist_info
        if cfg.phases and cfg.phases[0].train.num_threads:
            torch.set_num_threads(int(cfg.phases[0].train.num_threads))
        if dist_info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            _dump_yaml(cfg.raw, self.out / "config.yaml")
        _barrier(dist_info)
        results: list[PhaseResult] = []
        prev_adapter: Path | None = None
        try:
            for n, phase in enumerate(cfg.phases):
                res = self._run_phase(n, phase, device, prev_adapter)
                results.append(res)
                prev_adapter = Path(res.adapter_dir)
            final = self.out / "final"
            exported = None
            if dist_info.is_main:
                if final.exists():
                    shutil.rmtree(final)
                shutil.copytree(prev_adapter, final / "adapter")  # type: ignore[arg-type]
                last_phase_dir = self.out / "phases" / cfg.phases[-1].name
                for f in ("metrics.json", "metrics.csv", "curves.png", "config.yaml"):
                    if (last_phase_dir / f).is_file():
                        shutil.copy2(last_phase_dir / f, final / f)
                if cfg.export_bundle_dir is not None:
                    exported = str(export_model(cfg, prev_adapter, cfg.export_bundle_dir, device))  # type: ignore
                result = TrainResult(str(self.out), str(final / "adapter"), results, exported)
                atomic_write_text(self.out / "train_summary.json", json.dumps(result.to_json(), indent=2))
            else:
                result = TrainResult(str(self.out), str(final / "adapter"), results, None)
            _barrier(dist_info)
            return result
        finally:
            if dist_info.initialised_here:
                import torch.distributed as dist

                dist.destroy_process_group()

    # ------------------------------------------------------------------ one phase
    def _prepare_model(self, n: int, device: torch.device, prev_adapter: Path | None) -> tuple[Any, Any]:
        from OncoSegLib.models.lora import apply_lora, load_adapter

        cfg = self.cfg
        bundle = load_base_bundle(cfg, device)
        start_adapter = prev_adapter if prev_adapter is not None else (
            Path(cfg.model.adapter) if cfg.model.adapter else None)
        if start_adapter is not None:
            peft_model = load_adapter(bundle.tracker, start_adapter, is_trainable=True)
        else:
            peft_model = apply_lora(bundle.tracker, cfg.lora.settings())
        peft_model.to(device)
        self.detector_params: list[torch.nn.Parameter] = []
        self.text_on = self.text_enabled(bundle)
        if self.text_on:
            self.detector_params = prepare_detector(bundle.detector, list(cfg.lora.detector_heads))
            heads_file = Path(start_adapter) / DETECTOR_HEADS_FILE if start_adapter is not None else None
            if heads_file is not None and heads_file.is_file():
                load_detector_heads(bundle.detector, heads_file)
        return bundle, peft_model

    def text_enabled(self, bundle: Any) -> bool:
        """Text prompts are trained when ``prompts.text > 0``; the model must then have a detector + tokenizer."""
        if self.cfg.prompts.text <= 0:
            return False
        if not getattr(bundle, "has_text", False):
            raise ModelError("prompts.text > 0 but the base model has no text detector (Sam3Model + tokenizer)",
                             "use a full SAM3 checkpoint (or source: tiny), or set prompts.text to 0")
        return True

    def _run_phase(self, n: int, phase: PhaseSpec, device: torch.device, prev_adapter: Path | None) -> PhaseResult:
        from OncoSegLib.models.lora import save_adapter

        cfg, d, spec = self.cfg, self.dist, phase.train
        phase_dir = self.out / "phases" / phase.name
        adapter_dir = phase_dir / "adapter"
        if (phase_dir / DONE_FILE).is_file() and (adapter_dir / "adapter_config.json").is_file():
            info = json.loads((phase_dir / "metrics.json").read_text(encoding="utf-8"))["summary"]
            log.info("phase %s already finished: skipped", phase.name)
            return PhaseResult(**{k: info[k] for k in PhaseResult.__dataclass_fields__})
        if d.is_main:
            phase_dir.mkdir(parents=True, exist_ok=True)
            _dump_yaml({"phase": phase.name, "phase_index": n, "train": spec.__dict__,
                        "datasets": [ds.__dict__ for ds in phase.datasets],
                        "val_datasets": [ds.__dict__ for ds in phase.val_datasets],
                        "start_adapter": str(prev_adapter) if prev_adapter else cfg.model.adapter,
                        "lora": cfg.lora.__dict__, "prompts": cfg.prompts.__dict__, "seed": cfg.seed},
                       phase_dir / "config.yaml")
        torch.manual_seed(cfg.seed + 1000 * n + d.rank)
        bundle, peft_model = self._prepare_model(n, device, prev_adapter)
        s = int(bundle.image_size)

        # data
        train_cases = build_cases(phase.datasets)
        if phase.val_datasets:
            val_cases = build_cases(phase.val_datasets)
        else:
            if len(train_cases) < 2:
                raise InputError(f"phase {phase.name}: need >= 2 cases to hold some out for validation",
                                 "add val_datasets or more cases")
            n_val = max(1, int(round(len(train_cases) * phase.val_fraction)))
            order = np.random.default_rng(cfg.seed).permutation(len(train_cases))
            val_cases = [train_cases[i] for i in sorted(order[:n_val])]
            train_cases = [train_cases[i] for i in sorted(order[n_val:])]
        train_cache = CaseCache(train_cases, capacity=16)
        train_index = SliceIndex.build(train_cache)
        val_cache = CaseCache(val_cases, capacity=16)
        text = self.text_on
        sampler = Sampler(train_cache, train_index, s, cfg.prompts, cfg.seed, phase=n, allow_text=text)
        val_sampler = Sampler(val_cache, SliceIndex.build(val_cache), s, cfg.prompts, cfg.seed + 7, phase=n,
                              allow_text=text)
        val_batches = val_sampler.validation_batches(spec.val_samples, spec.batch_size)
        text_val = val_sampler.text_validation_batches(spec.val_samples, spec.batch_size) if text else []
        tokenize = bundle.tokenize if text else None
        eval_model: torch.nn.Module = JointModel(peft_model, bundle.detector) if text else peft_model

        def validate() -> tuple[float, float | None]:
            vd = evaluate_batches(eval_model, val_batches, device, s, spec)
            if not text:
                return vd, None
            return vd, evaluate_text_batches(eval_model, text_val, device, s, spec, tokenize)

        model: torch.nn.Module = eval_model
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(eval_model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=True)
        params = [p for p in peft_model.parameters() if p.requires_grad] + self.detector_params
        if not params:
            raise ModelError("nothing to train: no LoRA layer or trainable head", "check the lora block")
        opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=spec.t0, T_mult=spec.t_mult,
                                                                     eta_min=spec.min_lr)
        ck_dir = phase_dir / "checkpoint"
        state: dict[str, Any] = {"step": 0, "best_val_dice": -1.0, "best_step": 0, "bad_evals": 0,
                                 "stopped_early": False, "history": [], "initial_val_dice": None,
                                 "elapsed_s": 0.0}
        best_state: dict[str, torch.Tensor] | None = None
        if (ck_dir / "state.json").is_file():
            state, best_state = _load_checkpoint(ck_dir, eval_model, opt, sched)
            log.info("phase %s: resumed at step %d", phase.name, state["step"])
        if state["initial_val_dice"] is None:
            vd, vt = validate()
            state["initial_val_dice"] = vd if vt is None else 0.5 * (vd + vt)
            state["initial_val_box_dice"], state["initial_val_text_dice"] = vd, vt

        show = (self.progress if self.progress is not None else spec.progress) and d.is_main
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=spec.max_steps, initial=state["step"], desc=f"train {phase.name}", unit="step",
                       file=sys.stderr, dynamic_ncols=True)
        t_start = time.perf_counter() - float(state.get("elapsed_s", 0.0))
        model.train()
        accum, world = max(1, spec.grad_accum), d.world_size
        rows: list[dict[str, Any]] = state["history"]
        while state["step"] < spec.max_steps and not state["stopped_early"]:
            step = state["step"]
            opt.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "dice": 0.0, "focal": 0.0, "train_dice": 0.0, "text": 0.0}
            kinds = set()
            for m in range(accum):
                g = step * accum * world + m * world + d.rank
                batch = sampler.micro_batch(g, spec.batch_size)
                kinds.add(batch.kind)
                sync = (m == accum - 1) or not d.enabled
                ctx = model.no_sync() if (d.enabled and not sync) else _null()
                with ctx:
                    if batch.kind == "text":
                        logits, losses = self._text_step(model, batch, device, s, spec, tokenize)
                    else:
                        with _amp_ctx(spec, device):
                            logits = _forward_logits(model, batch, device, s)
                        losses = segmentation_loss(logits.float(), batch.targets.to(device), batch.modalities)
                    (losses["loss"] / accum).backward()
                sums["loss"] += float(losses["loss"].detach()) / accum
                sums["dice"] += float(losses.get("dice", 0.0)) / accum
                sums["focal"] += float(losses.get("focal", 0.0)) / accum
                sums["text"] += float(losses["loss"].detach()) / accum if batch.kind == "text" else 0.0
                sums["train_dice"] += float(batch_dice(logits.detach().float(),
                                                       batch.targets.to(device)).mean()) / accum
            if spec.grad_clip and spec.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            opt.step()
            state["step"] = step = step + 1
            epoch = step / max(1, spec.steps_per_epoch)
            sched.step(epoch)
            row = {"phase": phase.name, "step": step, "epoch": round(epoch, 4),
                   "lr": opt.param_groups[0]["lr"], "loss": sums["loss"], "loss_dice": sums["dice"],
                   "loss_focal": sums["focal"], "train_dice": sums["train_dice"], "val_dice": "",
                   "elapsed_s": round(time.perf_counter() - t_start, 2), "kind": "+".join(sorted(kinds)),
                   "loss_text": sums["text"] if "text" in kinds else "", "val_text_dice": ""}
            if step % max(1, spec.eval_every) == 0 or step == spec.max_steps:
                vd, vt = validate()
                row["val_dice"] = vd
                if vt is not None:  # selection score: mean of box-prompt and text-prompt validation Dice
                    row["val_text_dice"] = vt
                    vd = 0.5 * (vd + vt)
                if vd > state["best_val_dice"] + 1e-6:
                    state["best_val_dice"], state["best_step"], state["bad_evals"] = vd, step, 0
                    best_state = _state_of(eval_model)
                else:
                    state["bad_evals"] += 1
                    if state["bad_evals"] >= spec.patience:
                        state["stopped_early"] = True
            rows.append(row)
            state["elapsed_s"] = time.perf_counter() - t_start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss']:.3f}", val=f"{state['best_val_dice']:.3f}")
            cancelled = self.cancel is not None and self.cancel.cancelled
            if d.is_main and (step % max(1, spec.checkpoint_every) == 0 or cancelled):
                state["history"] = rows
                _save_checkpoint(ck_dir, eval_model, opt, sched, state, best_state)
                _write_metrics(phase_dir, rows, self._summary(phase, state))
            if cancelled:
                if bar is not None:
                    bar.close()
                self.cancel.raise_if_cancelled()  # type: ignore[union-attr]
        if bar is not None:
            bar.close()
        if best_state is not None:
            _load_state(eval_model, best_state)
        state["history"] = rows
        summary = self._summary(phase, state)
        summary["adapter_dir"] = str(adapter_dir)
        if d.is_main:
            tmp_adapter = phase_dir / ".adapter.part"
            if tmp_adapter.exists():
                shutil.rmtree(tmp_adapter)
            save_adapter(peft_model, tmp_adapter)
            if text:
                save_detector_heads(bundle.detector, list(cfg.lora.detector_heads), tmp_adapter)
            atomic_write_text(tmp_adapter / "training_metrics.json", json.dumps(summary, indent=2))
            if adapter_dir.exists():
                shutil.rmtree(adapter_dir)
            os.replace(tmp_adapter, adapter_dir)
            _write_metrics(phase_dir, rows, summary)
            atomic_write_text(phase_dir / DONE_FILE, "done\n")
        _barrier(d)
        return PhaseResult(name=phase.name, steps=int(state["step"]), best_val_dice=float(state["best_val_dice"]),
                           best_step=int(state["best_step"]), stopped_early=bool(state["stopped_early"]),
                           adapter_dir=str(adapter_dir), initial_val_dice=float(state["initial_val_dice"]))

    @staticmethod
    def _text_step(model: torch.nn.Module, batch: Batch, device: torch.device, s: int, spec: TrainSpec,
                   tokenize: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One text micro-batch: detector forward + set-prediction loss (``text_loss``); returns the union of the
        kept detections (for train Dice) and the losses."""
        from OncoSegLib.training.text_loss import detections_union, text_detection_loss

        with _amp_ctx(spec, device):
            masks, logits, pres = _forward_detector(model, batch, device, s, tokenize(batch.texts))
        losses = text_detection_loss(masks, logits, pres, batch.instances or [], batch.present or [],
                                     batch.modalities)
        return detections_union(masks.detach(), logits.detach(), pres.detach()), losses

    @staticmethod
    def _summary(phase: PhaseSpec, state: dict[str, Any]) -> dict[str, Any]:
        return {"phase": phase.name, "name": phase.name, "steps": state["step"],
                "best_val_dice": state["best_val_dice"], "best_step": state["best_step"],
                "stopped_early": state["stopped_early"], "initial_val_dice": state["initial_val_dice"],
                "initial_val_box_dice": state.get("initial_val_box_dice"),
                "initial_val_text_dice": state.get("initial_val_text_dice"),
                "selection": "mean of box and text validation Dice" if state.get("initial_val_text_dice")
                is not None else "box validation Dice",
                "adapter_dir": "", "elapsed_s": round(float(state.get("elapsed_s", 0.0)), 2)}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def pick_device_type(cfg: TrainConfig) -> str:
    from OncoSegLib.models.device import pick_device

    return pick_device(cfg.model.device).type


# ---------------------------------------------------------------------------------------------- export
def export_model(cfg: TrainConfig, adapter_dir: Path, out_dir: Path, device: torch.device) -> Path:
    """Merge ``adapter_dir`` into the base model and write a folder ``load_bundle`` reads.

    Full export: ``config.json`` (``Sam3VideoConfig``), ``model.safetensors`` (facebook/sam3 keys
    ``detector_model.*``, ``tracker_model.*``, ``tracker_neck.*``), tokenizer files. ``export.components: [tracker]``:
    a ``Sam3TrackerModel`` folder (``save_pretrained``). Both get ``oncoseg_model.json`` (provenance) and ``README.md``. Written into a
    temporary sibling folder, then swapped in (an existing folder is kept as ``<name>.previous`` until the swap).
    """
    from safetensors.torch import save_file
    from transformers import Sam3VideoConfig

    from OncoSegLib.models.lora import load_adapter
    from OncoSegLib.models.tiny import facebook_state_dict

    bundle = load_base_bundle(cfg, torch.device("cpu"))
    tracker_only = set(cfg.export_components) == {"tracker"}
    if not tracker_only and (bundle.video is None or bundle.detector is None):
        raise ModelError("export needs the full model (tracker + video tracker + detector)",
                         "train from a full SAM3 checkpoint, or export components: [tracker]")
    load_adapter(bundle, adapter_dir, merge=True)  # also loads oncoseg_detector_heads.safetensors into the detector
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if tracker_only:  # Sam3TrackerModel layout (model_type sam3_tracker): points/boxes, no memory, no text
        bundle.tracker.config.mask_decoder_config.dynamic_multimask_via_stability = False
        bundle.tracker.save_pretrained(str(tmp), safe_serialization=True)
    else:
        vcfg = Sam3VideoConfig(detector_config=bundle.detector.config.to_dict(),
                               tracker_config=bundle.video.config.to_dict())
        vcfg.save_pretrained(tmp)
        sd = facebook_state_dict(bundle.video, bundle.detector)
        if cfg.export_dtype == "float16":  # halves the file; load_bundle casts back to float32
            sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if bundle.tokenizer is not None:
            bundle.tokenizer.save_pretrained(tmp)
    info = {"name": cfg.name, "demo_model": cfg.name == "demo", "trained_with": "oncoseg train",
            "config": str(cfg.source_path) if cfg.source_path else None, "base": cfg.model.source,
            "image_size": int(bundle.image_size), "lora": cfg.lora.__dict__, "text": bundle.detector is not None
            and not tracker_only, "weights_dtype": cfg.export_dtype, "prompts": cfg.prompts.__dict__,
            "components": sorted(cfg.export_components),
            "phases": [p.name for p in cfg.phases],
            # the trainer supervises masks only: IoU / object-score heads of a random base or a retrained mask
            # decoder predict nothing, and the session reports them as n/a (load_adapter already set the latter)
            "confidence_heads": ({"iou": False, "presence": False} if cfg.model.source == "tiny"
                                 else dict(bundle.confidence_heads))}
    metrics = sorted((cfg.output_dir / "phases").glob("*/metrics.json"))
    info["validation"] = {m.parent.name: json.loads(m.read_text())["summary"].get("best_val_dice")
                          for m in metrics}
    (tmp / "oncoseg_model.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    last = cfg.output_dir / "phases" / cfg.phases[-1].name
    for f in ("metrics.csv", "curves.png"):
        if (last / f).is_file():
            shutil.copy2(last / f, tmp / f"training_{f}")
    if cfg.export_readme:
        (tmp / "README.md").write_text(str(cfg.export_readme).strip() + "\n", encoding="utf-8")
    for f in tmp.iterdir():  # package data must be world-readable (atomic temp files are created 0600)
        f.chmod(0o644)
    backup = out_dir.parent / f"{out_dir.name}.previous"
    if out_dir.exists():
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(out_dir, backup)
    os.replace(tmp, out_dir)
    if backup.exists():
        shutil.rmtree(backup)
    return out_dir


def train(cfg: TrainConfig, progress: bool | None = None, cancel: CancelToken | None = None) -> TrainResult:
    """Run every phase of ``cfg``; see :class:`Trainer`."""
    return Trainer(cfg, progress=progress, cancel=cancel).run()

