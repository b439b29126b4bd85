"""The CVPR 2025 interactive 3D segmentation protocol ("Foundation Models for Interactive 3D Biomedical Image
Segmentation"): a 3D box, then 5 simulated clicks, scored by DSC and NSD after every step.

Rules, as the challenge's evaluation script (``CVPR25_iter_eval.py``) applies them:

1. Step 0: the segmenter gets the image and one 3D box per class (``boxes``: z range + a 2D box on slice ``z_mid``).
   Without boxes, step 0 scores DSC = NSD = 0 and clicks start from an empty prediction.
2. Steps 1-5: for every class, on the *previous* prediction, the error mask ``pred != gt`` is split into
   26-connected components; the largest one is the "largest error region". The click goes to its deepest voxel:
   the maximum of the Euclidean distance transform (in voxel units, the component padded so the image border
   counts as outside it), ties broken like the challenge (``RandomState(42)`` choice among the maxima in C order).
   A voxel where the ground truth is foreground (under-segmentation) gets a foreground click, otherwise a
   background click. A class predicted perfectly gets no click.
3. After each step: DSC = mean over the ground-truth classes of the per-class Dice; NSD (tolerance 2 mm) likewise,
   but NSD := 0 when the step's mean DSC <= 0.2.
4. ``DSC_AUC`` / ``NSD_AUC``: trapezoid rule over the 5 click steps (steps 1..5, unit spacing, so 4 intervals and a
   maximum of 4.0; the box step is excluded because the challenge treats the box as optional) - exactly
   ``scipy.integrate.cumulative_trapezoid(values[-5:], arange(5))[-1]``. ``DSC_Final`` / ``NSD_Final``: step 5.
   Time: total segmenter wall time per case (and per step), click simulation excluded.

Frames: arrays are (K, J, I) = (z, y, x); clicks are voxel indices (k, j, i); boxes use x = i, y = j, z = k.
The protocol is independent of the model: it drives any :class:`InteractiveSegmenter`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
from scipy import ndimage

from OncoSegLib.cancel import CancelToken, ProgressCallback, report
from OncoSegLib.errors import InputError
from OncoSegLib.io.atomic import atomic_path, atomic_write_text
from OncoSegLib.io.volume import Volume

log = logging.getLogger(__name__)

N_CLICKS = 5
NSD_TOLERANCE_MM = 2.0
NSD_MIN_DSC = 0.2
TIE_SEED = 42


# ----------------------------------------------------------------------------------------------- prompt types
@dataclass(frozen=True)
class Click:
    """One simulated click: voxel index ``kji`` = (k, j, i); ``positive`` = foreground click."""

    kji: tuple[int, int, int]
    positive: bool


@dataclass(frozen=True)
class Box3D:
    """The challenge's 3D box: slices ``z_min..z_max`` (inclusive, k) and a 2D box on slice ``z_mid``.

    ``x_min..x_max`` are columns (i), ``y_min..y_max`` rows (j), all inclusive voxel indices.
    """

    z_min: int
    z_max: int
    z_mid: int
    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @classmethod
    def from_challenge(cls, d: Mapping[str, int]) -> "Box3D":
        """From the challenge's dict keys (``z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min, ...``)."""
        try:
            return cls(int(d["z_min"]), int(d["z_max"]), int(d["z_mid"]), int(d["z_mid_x_min"]),
                       int(d["z_mid_y_min"]), int(d["z_mid_x_max"]), int(d["z_mid_y_max"]))
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed challenge box {dict(d) if isinstance(d, Mapping) else d!r}",
                             "each box needs z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min, z_mid_x_max, "
                             "z_mid_y_max") from exc

    def to_challenge(self) -> dict[str, int]:
        return {"z_min": self.z_min, "z_max": self.z_max, "z_mid": self.z_mid, "z_mid_x_min": self.x_min,
                "z_mid_y_min": self.y_min, "z_mid_x_max": self.x_max, "z_mid_y_max": self.y_max}


@dataclass
class ClassPrompts:
    """Everything the user has given for one class so far: the box (or None) and the clicks in order."""

    label: int
    box: Box3D | None = None
    clicks: list[Click] = field(default_factory=list)


class InteractiveSegmenter(Protocol):
    """What the protocol drives. Called once per step with ALL prompts so far (box + every click per class).

    Args:
        image: the case image (``Volume``, (K, J, I) array in its native intensities, with spacing).
        prompts: label -> :class:`ClassPrompts`.
        previous: the label map the segmenter returned at the previous step (``None`` at step 0).

    Returns:
        a label map (K, J, I) of integers (0 = background, class values as in ``prompts``).
    Implementations may keep state between calls (cached embeddings) keyed on the image.
    """

    def __call__(self, image: Volume, prompts: Mapping[int, ClassPrompts],
                 previous: np.ndarray | None) -> np.ndarray: ...


@dataclass
class InteractiveCase:
    """One evaluation case: image, ground-truth label map (K, J, I) and optional challenge boxes per label."""

    name: str
    image: Volume
    gts: np.ndarray
    boxes: dict[int, Box3D] | None = None
    dataset: str = ""
    modality: str = ""


@dataclass
class CaseResult:
    """Per-case scores: ``dsc``/``nsd`` have 6 entries (box step + 5 clicks); AUCs and finals as in the module doc."""

    name: str
    dataset: str
    modality: str
    num_classes: int
    dsc: list[float]
    nsd: list[float]
    dsc_auc: float
    nsd_auc: float
    dsc_final: float
    nsd_final: float
    time_total_s: float
    time_per_step_s: list[float]
    clicks: dict[int, list[Click]]


# ----------------------------------------------------------------------------------------------- click placement
_CONN26 = np.ones((3, 3, 3), dtype=bool)


def box_from_mask(mask: np.ndarray) -> Box3D:
    """The challenge's 3D box of a binary (K, J, I) mask, without the random 0-5 px perturbation.

    ``z_mid`` is the k of the middle foreground voxel in C order (``z_indices[len // 2]``), as ``get_boxes.py``.
    """
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        raise InputError("cannot make a box for an empty mask")
    z_mid = int(idx[0][idx[0].size // 2])
    jj, ii = np.nonzero(mask[z_mid])
    return Box3D(int(idx[0].min()), int(idx[0].max()), z_mid, int(ii.min()), int(jj.min()), int(ii.max()),
                 int(jj.max()))


def largest_error_region(pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """The largest 26-connected component of ``pred != gt`` (boolean (K, J, I)), or ``None`` when they agree.

    Ties between equally large components go to the lowest component index (scan order), as ``np.argmax``.
    """
    error = np.asarray(pred, dtype=bool) != np.asarray(gt, dtype=bool)
    if not error.any():
        return None
    structure = _CONN26 if error.ndim == 3 else np.ones((3,) * error.ndim, dtype=bool)
    comp, n = ndimage.label(error, structure=structure)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def deepest_point(region: np.ndarray, seed: int = TIE_SEED) -> tuple[int, ...]:
    """The voxel of ``region`` farthest from its outside (max Euclidean distance transform, voxel units).

    The region is cropped to its bounding box and zero-padded (at least one voxel, 25 % of the box per side as
    the challenge does) so that the image border counts as outside. Ties: ``RandomState(seed).choice`` among the
    maxima listed in C order.
    """
    coords = np.argwhere(region)
    if coords.size == 0:
        raise InputError("deepest_point of an empty region")
    lo = coords.min(axis=0)
    hi = coords.max(axis=0) + 1
    crop = region[tuple(slice(a, b) for a, b in zip(lo, hi))]
    pad = np.maximum((np.array(crop.shape) * 0.25).astype(int), 1)
    padded = np.pad(crop, [(int(p), int(p)) for p in pad])
    edt = ndimage.distance_transform_edt(padded)
    edt = edt[tuple(slice(int(p), int(p) + n) for p, n in zip(pad, crop.shape))]
    maxima = np.argwhere(edt == edt.max())
    chosen = maxima[np.random.RandomState(seed).choice(len(maxima))]
    return tuple(int(c) for c in (chosen + lo))


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The protocol's next click for one class: deepest point of the largest error region, or None if perfect.

    Foreground click where the ground truth is foreground there (under-segmentation), else background click.
    """
    region = largest_error_region(pred, gt)
    if region is None:
        return None
    point = deepest_point(region)
    return Click(kji=point, positive=bool(np.asarray(gt, dtype=bool)[point]))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- scoring
def class_scores(seg: np.ndarray, gts: np.ndarray, spacing_kji: Sequence[float],
                 tolerance_mm: float = NSD_TOLERANCE_MM, with_nsd: bool = True) -> dict[int, dict[str, float]]:
    """Per ground-truth class Dice and (optionally) NSD of a label map against the ground truth."""
    from OncoSegLib import metrics

    sp = tuple(float(s) for s in spacing_kji)
    out: dict[int, dict[str, float]] = {}
    for label in (int(v) for v in np.unique(gts) if v != 0):
        p, g = seg == label, gts == label
        row = {"dice": float(metrics.dice(p, g))}
        if with_nsd:
            row["nsd"] = float(metrics.nsd(p, g, spacing=sp, tolerance_mm=tolerance_mm))
        out[label] = row
    return out


def step_scores(seg: np.ndarray, gts: np.ndarray, spacing_kji: Sequence[float]) -> tuple[float, float]:
    """The challenge's (DSC, NSD) of one step: class means; NSD is 0 when the mean DSC <= 0.2."""
    dsc_only = class_scores(seg, gts, spacing_kji, with_nsd=False)
    dsc = float(np.mean([r["dice"] for r in dsc_only.values()])) if dsc_only else 0.0
    if dsc <= NSD_MIN_DSC:
        return dsc, 0.0
    full = class_scores(seg, gts, spacing_kji, with_nsd=True)
    return dsc, float(np.mean([r["nsd"] for r in full.values()]))


def click_auc(values: Sequence[float], n_clicks: int = N_CLICKS) -> float:
    """Trapezoid area over the last ``n_clicks`` values at x = 0..n_clicks-1 (the challenge's DSC_AUC/NSD_AUC)."""
    v = np.asarray(list(values)[-n_clicks:], dtype=float)
    if v.size < 2:
        return 0.0
    return float(np.sum((v[1:] + v[:-1]) / 2.0))


# ----------------------------------------------------------------------------------------------- running
def run_case(case: InteractiveCase, segmenter: InteractiveSegmenter, n_clicks: int = N_CLICKS,
             use_boxes: bool = True) -> CaseResult:
    """Run the box + ``n_clicks`` protocol on one case and score every step."""
    gts = np.asarray(case.gts)
    if gts.shape != case.image.shape_kji:
        raise InputError(f"case {case.name}: ground truth shape {gts.shape} differs from image {case.image.shape_kji}")
    labels = [int(v) for v in np.unique(gts) if v != 0]
    spacing_kji = tuple(reversed(case.image.spacing))
    boxes = case.boxes if case.boxes is not None else None
    if use_boxes and boxes is None:
        boxes = {lab: box_from_mask(gts == lab) for lab in labels}
    prompts = {lab: ClassPrompts(label=lab, box=(boxes.get(lab) if (use_boxes and boxes) else None))
               for lab in labels}
    dscs: list[float] = []
    nsds: list[float] = []
    times: list[float] = []
    seg: np.ndarray | None = None
    for step in range(n_clicks + 1):
        if step == 0 and not (use_boxes and boxes):
            dscs.append(0.0)
            nsds.append(0.0)
            times.append(0.0)
            seg = np.zeros_like(gts)
            continue
        if step > 0:
            assert seg is not None
            for lab in labels:
                click = next_click(seg == lab, gts == lab)
                if click is not None:
                    prompts[lab].clicks.append(click)
        t0 = time.perf_counter()
        out = segmenter(case.image, prompts, seg if step > 0 else None)
        times.append(time.perf_counter() - t0)
        out = np.asarray(out)
        if out.shape != gts.shape:
            raise InputError(f"segmenter returned shape {out.shape}, expected {gts.shape}")
        seg = out
        d, n = step_scores(seg, gts, spacing_kji)
        dscs.append(d)
        nsds.append(n)
    return CaseResult(name=case.name, dataset=case.dataset, modality=case.modality, num_classes=len(labels),
                      dsc=dscs, nsd=nsds, dsc_auc=click_auc(dscs, n_clicks), nsd_auc=click_auc(nsds, n_clicks),
                      dsc_final=dscs[-1], nsd_final=nsds[-1], time_total_s=float(sum(times)),
                      time_per_step_s=times, clicks={lab: list(p.clicks) for lab, p in prompts.items()})


def run_protocol(cases: Iterable[InteractiveCase], segmenter: InteractiveSegmenter, n_clicks: int = N_CLICKS,
                 use_boxes: bool = True, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> list[CaseResult]:
    """Run :func:`run_case` over cases; cancel keeps the results finished so far."""
    case_list = list(cases)
    results: list[CaseResult] = []
    for n, case in enumerate(case_list):
        if cancel is not None and cancel.cancelled:
            break
        report(progress, n, len(case_list), f"case {case.name}")
        results.append(run_case(case, segmenter, n_clicks=n_clicks, use_boxes=use_boxes))
    report(progress, len(results), len(case_list), "done")
    return results


# ----------------------------------------------------------------------------------------------- reading cases
def read_challenge_case(path: str | Path, gts_path: str | Path | None = None) -> InteractiveCase:
    """Read a CVPR24/25 challenge ``.npz`` (``imgs``, ``gts``, ``spacing``, optional ``boxes``) as a case.

    The image goes through ``OncoSegLib.io.npz.read_npz`` (which owns the format's spacing/box conventions);
    ``gts`` is read from the same file or from ``gts_path`` (the challenge keeps validation labels apart).
    """
    from OncoSegLib.io.npz import read_npz

    path = Path(path)
    image = read_npz(path)
    if gts_path is not None:
        with np.load(Path(gts_path), allow_pickle=False) as data:
            if "gts" not in data.files:
                raise InputError(f"{gts_path} has no 'gts' array", "pass the challenge's ground-truth npz")
            gts = np.asarray(data["gts"])
    elif image.metadata.get("gts") is not None:
        gts = np.asarray(image.metadata.pop("gts"))
    else:
        raise InputError(f"{path} has no 'gts' array", "pass the ground-truth file with --gts")
    if gts.ndim == 2:
        gts = gts[None]
    boxes_meta = image.metadata.get("boxes")
    boxes = None
    if boxes_meta is not None and len(boxes_meta) and isinstance(boxes_meta[0], Mapping):
        labels = [int(v) for v in np.unique(gts) if v != 0]
        boxes = {lab: Box3D.from_challenge(b) for lab, b in zip(labels, boxes_meta)}
    modality = str(image.metadata.get("modality") or image.modality or "")
    return InteractiveCase(name=path.stem, image=image, gts=gts, boxes=boxes, dataset=path.parent.name,
                           modality=modality)


# ----------------------------------------------------------------------------------------------- reports
CSV_FIELDS = (["CaseName", "Dataset", "Modality", "num_class", "TotalRunningTime", "DSC_AUC", "NSD_AUC",
               "DSC_Final", "NSD_Final"] + [f"DSC_{i}" for i in range(1, N_CLICKS + 2)]
              + [f"NSD_{i}" for i in range(1, N_CLICKS + 2)] + [f"RunningTime_{i}" for i in range(1, N_CLICKS + 2)])


def result_row(r: CaseResult) -> dict[str, object]:
    """One CSV row in the challenge's column names (steps numbered 1..6: box, then clicks)."""
    row: dict[str, object] = {"CaseName": r.name, "Dataset": r.dataset, "Modality": r.modality,
                              "num_class": r.num_classes, "TotalRunningTime": round(r.time_total_s, 4),
                              "DSC_AUC": r.dsc_auc, "NSD_AUC": r.nsd_auc, "DSC_Final": r.dsc_final,
                              "NSD_Final": r.nsd_final}
    for i, (d, n, t) in enumerate(zip(r.dsc, r.nsd, r.time_per_step_s), start=1):
        row[f"DSC_{i}"], row[f"NSD_{i}"], row[f"RunningTime_{i}"] = d, n, round(t, 4)
    return row


def write_protocol_reports(results: Sequence[CaseResult], out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write ``interactive_metrics.csv`` (per case), ``interactive_summary.json`` (means) and
    ``dice_per_click.png``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "interactive_metrics.csv"
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in results:
                w.writerow(result_row(r))
    summary = summarize(results)
    summary_path = out / "interactive_summary.json"
    atomic_write_text(summary_path, json.dumps({"summary": summary, "cases": [
        {**{k: v for k, v in asdict(r).items() if k != "clicks"},
         "clicks": {str(lab): [{"kji": list(c.kji), "positive": c.positive} for c in cl]
                    for lab, cl in r.clicks.items()}} for r in results]}, indent=2))
    plot_path = out / "dice_per_click.png"
    plot_dice_per_click(results, plot_path, title=title)
    return {"csv": csv_path, "summary": summary_path, "plot": plot_path}


def summarize(results: Sequence[CaseResult]) -> dict[str, float]:
    """Means over cases of the challenge metrics (empty dict without results)."""
    if not results:
        return {}
    keys = ("dsc_auc", "nsd_auc", "dsc_final", "nsd_final", "time_total_s")
    out = {k: float(np.mean([getattr(r, k) for r in results])) for k in keys}
    out["n_cases"] = len(results)
    steps = np.array([r.dsc for r in results], dtype=float)
    for i, v in enumerate(steps.mean(axis=0), start=1):
        out[f"dsc_{i}"] = float(v)
    return out


def plot_dice_per_click(results: Sequence[CaseResult], path: str | Path, title: str = "") -> Path:
    """PNG of mean DSC and NSD per step (0 = box, 1..5 = clicks), thin lines per case (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    if results:
        steps = np.arange(len(results[0].dsc))
        for r in results:
            ax.plot(steps, r.dsc, color="tab:blue", alpha=0.2, lw=0.8)
        ax.plot(steps, np.mean([r.dsc for r in results], axis=0), "o-", color="tab:blue", lw=2, label="DSC (mean)")
        ax.plot(steps, np.mean([r.nsd for r in results], axis=0), "s--", color="tab:orange", lw=2,
                label="NSD 2 mm (mean)")
        ax.set_xticks(steps, ["box"] + [f"click {i}" for i in steps[1:]])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(title or "CVPR25 interactive protocol")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


Segmenter = Callable[[Volume, Mapping[int, ClassPrompts], "np.ndarray | None"], np.ndarray]
