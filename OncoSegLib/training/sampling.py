"""Batches of (slice, target, simulated prompt) for training and validation.

Determinism: micro-batch number ``g`` of a phase is drawn from ``numpy.random.default_rng([seed, phase, g])``,
whatever the number of processes. Under DDP, rank r of W with accumulation A takes micro-batches
``step*A*W + m*W + r`` (m = 0..A-1): the same set one process with accumulation A*W sees, so results match.

Sampling (Onco-Seg): a fraction ``foreground_fraction`` (0.8) of samples come from (slice, label) pairs with
foreground - every label of every image is a target; the rest come from slices without any foreground, prompted
with negative points only and an empty target (only in point batches: a box always encloses an object, so box
batches are all foreground and point batches carry the background share).

Prompts (all in model pixels (x, y) of the S x S input, pixel centres as :func:`OncoSegLib.slicing.pixel_to_model`):
- box: the target's bounding box, each side moved by U(-0.5, 1) x ``box_jitter`` x the box side (mostly
  outwards, as MedSAM/SAM fine-tuning do), clipped to the image;
- points: 1..``max_points`` positive points inside the target (eroded when it is thick enough) and
  0..``max_negative`` negative points in a band around it; padded to a fixed count with label -10 (ignored);
- text: the label's concept name (for the detector). The targets are the concept's instances = connected components
  (``scipy.ndimage.label``, 8-connectivity in 2D) of the label on the slice, each resized to S x S; a fraction
  ``text_negative`` of text samples asks for a concept absent from the slice (any concept name of the training
  data not on it), with no instances and ``present`` False (trains the detector's presence head).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from OncoSegLib.training.config import PromptSpec
from OncoSegLib.training.datasets import CaseCache, SliceIndex

PAD_LABEL = -10


@dataclass
class Batch:
    """One micro-batch. ``kind`` in {"box", "points", "text"}.

    pixel_values (B, 3, S, S) float32 in [-1, 1]; targets (B, S, S) float32 {0, 1}; input_boxes (B, 1, 4) or None;
    input_points (B, 1, P, 2) / input_labels (B, 1, P) or None; texts: concept names; modalities per sample;
    foreground: per sample whether the target is non-empty.
    """

    kind: str
    pixel_values: torch.Tensor
    targets: torch.Tensor
    modalities: list[str]
    texts: list[str]
    foreground: list[bool]
    input_boxes: torch.Tensor | None = None
    input_points: torch.Tensor | None = None
    input_labels: torch.Tensor | None = None
    instances: list[torch.Tensor] | None = None
    present: list[bool] | None = None


def _to_model_xy(i: np.ndarray, j: np.ndarray, hw: tuple[int, int], s: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    return (np.asarray(i, float) + 0.5) * s / w - 0.5, (np.asarray(j, float) + 0.5) * s / h - 0.5


def resize_target(mask: np.ndarray, s: int) -> torch.Tensor:
    """(H, W) binary mask -> (S, S) float {0, 1}: bilinear area estimate thresholded at 0.5."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    r = F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False)
    return (r[0, 0] >= 0.5).float()


def jittered_box(mask: np.ndarray, rng: np.random.Generator | None, jitter: float) -> tuple[float, float, float, float]:
    """Bounding box (i0, j0, i1, j1) of a 2D mask in slice pixel indices, sides jittered (see module doc)."""
    jj, ii = np.nonzero(mask)
    i0, i1, j0, j1 = float(ii.min()), float(ii.max()), float(jj.min()), float(jj.max())
    if rng is not None and jitter > 0:
        wi, wj = i1 - i0 + 1, j1 - j0 + 1
        d = rng.uniform(-0.5, 1.0, size=4) * jitter
        i0, j0, i1, j1 = i0 - d[0] * wi, j0 - d[1] * wj, i1 + d[2] * wi, j1 + d[3] * wj
    h, w = mask.shape
    i0, i1 = np.clip([i0, i1], 0, w - 1)
    j0, j1 = np.clip([j0, j1], 0, h - 1)
    return float(i0), float(j0), float(i1), float(j1)


def concept_instances(mask: np.ndarray, s: int, min_pixels: int = 1) -> torch.Tensor:
    """Instances of a concept on a slice: connected components (8-connectivity) of ``mask`` (H, W), each resized to
    (S, S) like :func:`resize_target`; components that vanish at S x S are dropped. Returns (N, S, S) float {0, 1}."""
    comp, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    out = [resize_target(comp == i, s) for i in range(1, n + 1)]
    out = [m for m in out if float(m.sum()) >= min_pixels]
    return torch.stack(out) if out else torch.zeros((0, s, s), dtype=torch.float32)


def sample_points(mask: np.ndarray, rng: np.random.Generator, n_pos: int, n_neg: int
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Positive points inside ``mask`` and negative points in a band around it, as (i, j) slice pixels."""
    inner = ndimage.binary_erosion(mask, iterations=2)
    pool = np.argwhere(inner if inner.sum() >= 4 else mask)
    pos = [tuple(int(v) for v in pool[rng.integers(len(pool))][::-1]) for _ in range(n_pos)] if len(pool) else []
    neg: list[tuple[int, int]] = []
    if n_neg:
        band = ndimage.binary_dilation(mask, iterations=max(3, int(0.15 * np.sqrt(mask.sum() + 1)))) & ~mask
        bpool = np.argwhere(band)
        if len(bpool):
            neg = [tuple(int(v) for v in bpool[rng.integers(len(bpool))][::-1]) for _ in range(n_neg)]
    return pos, neg  # type: ignore[return-value]


class Sampler:
    """Draws deterministic micro-batches from a :class:`SliceIndex` (see the module docstring)."""

    def __init__(self, cache: CaseCache, index: SliceIndex, image_size: int, prompts: PromptSpec, seed: int,
                 phase: int = 0, allow_text: bool = False):
        self.cache = cache
        self.index = index
        self.s = int(image_size)
        self.p = prompts
        self.seed = int(seed)
        self.phase = int(phase)
        kinds = [("box", prompts.box), ("points", prompts.points), ("text", prompts.text if allow_text else 0.0)]
        kinds = [(k, w) for k, w in kinds if w > 0]
        self.kinds = [k for k, _ in kinds]
        total = sum(w for _, w in kinds)
        self.kind_p = [w / total for _, w in kinds]
        p_points = dict(kinds).get("points", 0.0) / total
        self.fg_p = None
        if prompts.label_weights:
            w = np.array([prompts.label_weights.get(int(lab), 1.0) for _, _, lab in index.foreground], dtype=float)
            self.fg_p = w / w.sum() if w.sum() > 0 else None
        self.concepts = sorted({str(v) for ref in cache.cases for v in ref.names.values()})
        bg = (1.0 - prompts.foreground_fraction) if index.background else 0.0
        self.bg_in_points = min(1.0, bg / p_points) if p_points > 0 else 0.0

    def _slice(self, case: int, k: int) -> tuple[np.ndarray, np.ndarray, str, dict[int, str]]:
        lc = self.cache.get(case)
        return lc.image01[k].astype(np.float32), lc.labels[k], lc.ref.modality, lc.ref.names

    def micro_batch(self, g: int, batch_size: int, kind: str | None = None) -> Batch:
        """Micro-batch number ``g`` (deterministic). ``kind`` forces the prompt type (validation uses "box")."""
        from OncoSegLib.preprocessing import to_model_input

        rng = np.random.default_rng([self.seed, self.phase, int(g)])
        if kind is None:
            kind = str(self.kinds[int(rng.choice(len(self.kinds), p=self.kind_p))])
        pix, tgts, mods, texts, fgs = [], [], [], [], []
        boxes, points, plabels = [], [], []
        insts: list[torch.Tensor] = []
        present: list[bool] = []
        n_pts = self.p.max_points + self.p.max_negative
        for _ in range(batch_size):
            use_bg = kind == "points" and self.index.background and rng.random() < self.bg_in_points
            if use_bg:
                c, k = self.index.background[int(rng.integers(len(self.index.background)))]
                img, lab, mod, names = self._slice(c, k)
                target = np.zeros(lab.shape, dtype=bool)
                label = int(rng.choice(list(names))) if names else 1
            else:
                n_fg = len(self.index.foreground)
                pick = int(rng.integers(n_fg)) if self.fg_p is None else int(rng.choice(n_fg, p=self.fg_p))
                c, k, label = self.index.foreground[pick]
                img, lab, mod, names = self._slice(c, k)
                target = lab == label
            hw = target.shape
            text = names.get(label, f"label {label}")
            if kind == "text":
                on_slice = {names.get(int(v), f"label {int(v)}") for v in np.unique(lab) if v}
                absent = [c for c in self.concepts if c not in on_slice]
                if absent and rng.random() < self.p.text_negative:
                    text = absent[int(rng.integers(len(absent)))]
                    target = np.zeros(lab.shape, dtype=bool)
                insts.append(concept_instances(target, self.s))
                present.append(bool(target.any()))
            pix.append(to_model_input(img, self.s))
            tgts.append(resize_target(target, self.s))
            mods.append(mod)
            texts.append(text)
            fgs.append(bool(target.any()) if kind == "text" else not use_bg)
            if kind == "box":
                i0, j0, i1, j1 = jittered_box(target, rng, self.p.box_jitter)
                x, y = _to_model_xy(np.array([i0, i1]), np.array([j0, j1]), hw, self.s)
                boxes.append([x[0], y[0], x[1], y[1]])
            elif kind == "points":
                if use_bg:
                    n_neg = int(rng.integers(1, max(1, self.p.max_negative) + 1))
                    jj, ii = np.nonzero(np.ones(hw, dtype=bool))
                    sel = rng.integers(len(ii), size=n_neg)
                    pos, neg = [], [(int(ii[s]), int(jj[s])) for s in sel]
                else:
                    n_pos = int(rng.integers(1, self.p.max_points + 1))
                    n_neg = int(rng.integers(0, self.p.max_negative + 1))
                    pos, neg = sample_points(target, rng, n_pos, n_neg)
                pts = pos + neg
                labs = [1] * len(pos) + [0] * len(neg)
                coords = np.zeros((n_pts, 2), dtype=np.float32)
                lab_arr = np.full((n_pts,), PAD_LABEL, dtype=np.int64)
                if pts:
                    ii = np.array([p[0] for p in pts])
                    jj = np.array([p[1] for p in pts])
                    x, y = _to_model_xy(ii, jj, hw, self.s)
                    coords[: len(pts), 0], coords[: len(pts), 1] = x, y
                    lab_arr[: len(pts)] = labs
                points.append(coords)
                plabels.append(lab_arr)
        batch = Batch(kind=kind, pixel_values=torch.stack(pix), targets=torch.stack(tgts), modalities=mods,
                      texts=texts, foreground=fgs)
        if kind == "box":
            batch.input_boxes = torch.tensor(np.array(boxes, dtype=np.float32))[:, None, :]
        elif kind == "points":
            batch.input_points = torch.from_numpy(np.stack(points))[:, None]
            batch.input_labels = torch.from_numpy(np.stack(plabels))[:, None]
        elif kind == "text":
            batch.instances, batch.present = insts, present
        return batch

    def text_validation_batches(self, n_samples: int, batch_size: int) -> list[Batch]:
        """Fixed text-prompt validation set: ``n_samples`` (slice, present concept) samples (no negatives)."""
        saved = self.p
        self.p = dataclasses.replace(saved, text_negative=0.0)
        try:
            out = []
            for b in range(max(1, -(-n_samples // batch_size))):
                n = min(batch_size, n_samples - b * batch_size)
                out.append(self.micro_batch(20_000_000 + b, n, kind="text"))
            return out
        finally:
            self.p = saved

    def validation_batches(self, n_samples: int, batch_size: int) -> list[Batch]:
        """Fixed validation set: ``n_samples`` foreground samples with box prompts (no jitter: tight GT boxes),
        drawn with a seed independent of training."""
        saved = self.p
        self.p = dataclasses.replace(saved, box_jitter=0.0)
        try:
            out = []
            for b in range(max(1, -(-n_samples // batch_size))):
                n = min(batch_size, n_samples - b * batch_size)
                out.append(self.micro_batch(10_000_000 + b, n, kind="box"))
            return out
        finally:
            self.p = saved
