"""The CVPR 2025 interactive 3D segmentation protocol ("Foundation Models for Interactive 3D Biomedical Image
Segmentation"): a 3D box, then 5 simulated clicks, scored by DSC and NSD after every step.

The rules are those of the challenge's evaluation script (``CVPR25_iter_eval.py`` + ``SurfaceDice.py`` +
``get_boxes.py``, repository JunMa11/CVPR-MedSegFMCompetition), so the numbers are the leaderboard's to the last digit
(``Testing/test_evaluation_official.py`` holds this module against an independent transcription of them):

1. Classes: the sorted distinct values of the ground truth minus the first (the background 0). A case whose
   ground truth has no class scores DSC = NaN at every model step (the mean of nothing), NSD 0, AUCs NaN.
2. Step 0: when the case has boxes (the npz ``boxes`` key; :attr:`InteractiveCase.boxes`), the segmenter gets the
   image and one 3D box per class (z range + a 2D box on slice ``z_mid``). Without boxes (or with ``use_boxes=False``,
   ``--no-box``) step 0 scores DSC = NSD = 0 with time 0, the segmenter is not called, and clicks start from an
   empty prediction. A box is never made from the ground truth unless asked for (``boxes_from_gt=True``).
3. Steps 1-5, for every class: the previous prediction is cast to ``uint8`` (as the script reads it back), the
   error mask ``prev == c`` vs ``gt == c`` is split into 26-connected components, the largest one (ties: lowest
   scan-order label) gets the click at its deepest voxel: the maximum of the Euclidean distance transform (voxel
   units) of the component cropped to its bounding box and zero-padded by max(1, 25 % of the box) per side, so the
   image border counts as outside. When that padded crop has more than :data:`EDT_DOWNSAMPLE_VOXELS` voxels the
   script halves it (2x2x2 block max, zero-padded at the end) before the transform and repeats every value 2x2x2
   after; the distances are then kept on the component only. Ties: ``RandomState(42).choice`` among the maxima in
   C order. Ground truth foreground there -> foreground click, else background click. A perfect class gets none.
4. A step whose segmenter returns ``None`` or raises is scored like the script scores a container that wrote no
   output: with the last prediction this case produced (the script reads the stale output file), or zeros when
   there is none; the step's time still counts. A case where no step produced a prediction is left out of the
   means (the script leaves it out of its CSV).
5. Scores after each step: DSC = mean over classes of Dice (2|P&G| / (|P|+|G|)); NSD at 2 mm = mean over classes
   of the surface-element surface Dice (:mod:`OncoSegLib.evaluation.surface_dice`), but NSD := 0 when the step's
   mean DSC <= 0.2. The prediction is scored as returned (no ``uint8`` cast).
6. Spacing (``spacing_mode``): ``"official"`` (default, the leaderboard's numbers) applies the npz ``spacing`` as
   stored (x, y, z) to the array axes (z, y, x), as the script does; ``"physical"`` applies it to the axes it
   describes (x -> i, y -> j, z -> k). They differ on anisotropic cases (see docs/evaluation.md).
7. ``DSC_AUC`` / ``NSD_AUC``: ``scipy.integrate.cumulative_trapezoid(values[-5:], arange(5))[-1]`` (the 5 click
   steps; the box step is left out because the challenge treats the box as optional). ``DSC_Final`` /
   ``NSD_Final``: the last step. Time: segmenter wall time per step and per case, click simulation excluded.

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

import math
import warnings

import numpy as np
from scipy import integrate, ndimage

from OncoSegLib.cancel import CancelToken, ProgressCallback, report
from OncoSegLib.errors import Cancelled, InputError
from OncoSegLib.io.atomic import atomic_path, atomic_write_text
from OncoSegLib.io.volume import Volume

log = logging.getLogger(__name__)

N_CLICKS = 5
NSD_TOLERANCE_MM = 2.0
NSD_MIN_DSC = 0.2
TIE_SEED = 42
#: Padded error crops with more voxels than this are halved (2x2x2 block max) before the distance transform, as the
#: challenge script does (``> 60000000`` in ``CVPR25_iter_eval.py``).
EDT_DOWNSAMPLE_VOXELS = 60_000_000
SPACING_MODES = ("official", "physical")


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

        previous: the previous prediction as the protocol reads it back (``uint8``; zeros when there was none),
            ``None`` at the box step.

    Returns:
        a label map (K, J, I) of integers (0 = background, class values as in ``prompts``), or ``None`` for "no
        prediction" (scored as the challenge scores a missing output: see rule 4 of the module docstring).
    Implementations may keep state between calls (cached embeddings) keyed on the image.
    """

    def __call__(self, image: Volume, prompts: Mapping[int, ClassPrompts],
                 previous: np.ndarray | None) -> np.ndarray | None: ...


@dataclass
class InteractiveCase:
    """One evaluation case: image, ground-truth label map (K, J, I) and optional challenge boxes per label.

    ``boxes is None`` means the case has no boxes (the npz has no ``boxes`` key): the box step scores 0.
    """

    name: str
    image: Volume
    gts: np.ndarray
    boxes: dict[int, Box3D] | None = None
    dataset: str = ""
    modality: str = ""


@dataclass
class CaseResult:
    """Per-case scores: ``dsc``/``nsd`` have 6 entries (box step + 5 clicks); AUCs and finals as in the module doc.

    ``failed_steps``: steps whose segmenter gave no prediction; ``counted``: False when no step gave one (the case
    is then left out of the means, as the challenge leaves it out of its CSV); ``spacing_mode``: see the module doc.
    """

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
    failed_steps: list[int] = field(default_factory=list)
    counted: bool = True
    spacing_mode: str = "official"


# ----------------------------------------------------------------------------------------------- click placement
_CONN26 = np.ones((3, 3, 3), dtype=bool)


def box_from_mask(mask: np.ndarray) -> Box3D:
    """The challenge's 3D box of a binary (K, J, I) mask, without the random 0-5 px perturbation.

    ``z_mid`` is the middle of the *distinct* slices holding foreground (``unique(z)[len // 2]``), as
    ``get_boxes.py``: on a mask with many voxels on a few slices it is not the slice of the middle voxel.
    """
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        raise InputError("cannot make a box for an empty mask")
    slices = np.unique(idx[0])
    z_mid = int(slices[slices.size // 2])
    jj, ii = np.nonzero(mask[z_mid])
    return Box3D(int(idx[0].min()), int(idx[0].max()), z_mid, int(ii.min()), int(jj.min()), int(ii.max()),
                 int(jj.max()))


def challenge_classes(gts: np.ndarray) -> list[int]:
    """The classes the challenge scores: the sorted distinct values of ``gts`` without the first (background 0)."""
    values = np.unique(np.asarray(gts))
    if values.size and not np.all(values == np.round(values)):
        raise InputError("the ground truth is not a label map (non-integer values)", "pass integer labels")
    return [int(v) for v in values[1:]]


def largest_error_region(pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
    """The largest 26-connected component of ``pred != gt`` (boolean (K, J, I)), or ``None`` when they agree.

    Ties between equally large components go to the lowest component label (labels in scan order), as ``np.argmax``
    over the component sizes of ``cc3d.connected_components`` in the challenge script.
    """
    error = np.asarray(pred, dtype=bool) != np.asarray(gt, dtype=bool)
    if not error.any():
        return None
    structure = _CONN26 if error.ndim == 3 else np.ones((3,) * error.ndim, dtype=bool)
    comp, n = ndimage.label(error, structure=structure)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def _block_max_2(a: np.ndarray) -> np.ndarray:
    """2x2x2 block maximum, the array zero-padded at the end to even sizes (``skimage.measure.block_reduce(a, 2,
    np.max)``; written here because scikit-image is not a dependency and this is a pad, a reshape and a max)."""
    padded = np.pad(a, [(0, n % 2) for n in a.shape])
    k, j, i = (n // 2 for n in padded.shape)
    return padded.reshape(k, 2, j, 2, i, 2).max(axis=(1, 3, 5))


def deepest_point(region: np.ndarray, seed: int = TIE_SEED,
                  downsample_voxels: int = EDT_DOWNSAMPLE_VOXELS) -> tuple[int, ...]:
    """The voxel of a 3D ``region`` farthest from its outside (max Euclidean distance transform, voxel units).

    The region is cropped to its bounding box and zero-padded (max(1, 25 % of the box) per side, as the challenge
    does) so that the image border counts as outside. A padded crop of more than ``downsample_voxels`` voxels is
    transformed at half resolution (2x2x2 block max, values repeated back), then restricted to the region
    (rule 3 of the module docstring). Ties: ``RandomState(seed).choice`` among the maxima listed in C order.
    """
    region = np.asarray(region, dtype=bool)
    coords = np.argwhere(region)
    if coords.size == 0:
        raise InputError("deepest_point of an empty region")
    lo = coords.min(axis=0)
    hi = coords.max(axis=0) + 1
    crop = region[tuple(slice(a, b) for a, b in zip(lo, hi))]
    pad = np.maximum((np.array(crop.shape) * 0.25).astype(int), 1)
    padded = np.pad(crop.astype(np.uint8), [(int(p), int(p)) for p in pad])
    large = int(np.prod(padded.shape, dtype=np.int64)) > downsample_voxels
    if large:
        log.info("error region %s padded voxels > %d: distance transform at half resolution, as the challenge",
                 padded.shape, downsample_voxels)
        edt = ndimage.distance_transform_edt(_block_max_2(padded))
        for axis in range(edt.ndim):
            edt = edt.repeat(2, axis=axis)
    else:
        edt = ndimage.distance_transform_edt(padded)
    edt = edt[tuple(slice(int(p), int(p) + n) for p, n in zip(pad, crop.shape))] * crop
    if not edt.any():  # the challenge's fallback (cannot happen with a block max, kept for fidelity)
        edt = crop.astype(np.float64)
    maxima = np.argwhere(edt == edt.max())
    chosen = maxima[np.random.RandomState(seed).choice(len(maxima))]
    return tuple(int(c) for c in (chosen + lo))


def next_click(pred: np.ndarray, gt: np.ndarray, downsample_voxels: int = EDT_DOWNSAMPLE_VOXELS) -> Click | None:
    """The protocol's next click for one class: deepest point of the largest error region, or None if perfect.

    Foreground click where the ground truth is foreground there (under-segmentation), else background click.
    """
    region = largest_error_region(pred, gt)
    if region is None:
        return None
    point = deepest_point(region, downsample_voxels=downsample_voxels)
    return Click(kji=point, positive=bool(np.asarray(gt, dtype=bool)[point]))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- scoring
def challenge_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks as the challenge computes it: NaN when both are empty."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return math.nan
    return 2 * int(np.logical_and(p, g).sum()) / total


def protocol_spacing(image: Volume, spacing_mode: str = "official") -> tuple[float, float, float]:
    """mm per array axis (k, j, i) used for NSD: ``"official"`` = the stored npz order (x, y, z) = ``image.spacing``
    applied as is to (k, j, i), as the challenge script does; ``"physical"`` = (sk, sj, si)."""
    if spacing_mode not in SPACING_MODES:
        raise InputError(f"unknown spacing mode {spacing_mode!r}", f"use one of {', '.join(SPACING_MODES)}")
    sp = tuple(float(s) for s in image.spacing)
    return sp if spacing_mode == "official" else tuple(reversed(sp))  # type: ignore[return-value]


def class_scores(seg: np.ndarray, gts: np.ndarray, spacing_kji: Sequence[float],
                 tolerance_mm: float = NSD_TOLERANCE_MM, with_nsd: bool = True) -> dict[int, dict[str, float]]:
    """Per scored class (:func:`challenge_classes`) Dice and (optionally) surface-element NSD.

    ``spacing_kji``: mm per array axis as the protocol applies it (see :func:`protocol_spacing`).
    """
    from OncoSegLib.evaluation.surface_dice import surface_dice

    seg, gts = np.asarray(seg), np.asarray(gts)
    out: dict[int, dict[str, float]] = {}
    for label in challenge_classes(gts):
        g, p = gts == label, seg == label
        row = {"dice": challenge_dice(p, g)}
        if with_nsd:
            row["nsd"] = surface_dice(g, p, spacing_kji, tolerance_mm)
        out[label] = row
    return out


def step_scores(seg: np.ndarray, gts: np.ndarray, spacing_kji: Sequence[float]) -> tuple[float, float]:
    """The challenge's (DSC, NSD) of one step: class means; NSD is 0 when the mean DSC <= 0.2 (or is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of no class: NaN, as the challenge
        dsc = float(np.mean([r["dice"] for r in class_scores(seg, gts, spacing_kji, with_nsd=False).values()]))
    if not dsc > NSD_MIN_DSC:
        return dsc, 0.0
    return dsc, float(np.mean([r["nsd"] for r in class_scores(seg, gts, spacing_kji).values()]))


def click_auc(values: Sequence[float], n_clicks: int = N_CLICKS) -> float:
    """``cumulative_trapezoid(values[-n_clicks:], arange(n_clicks))[-1]`` (the challenge's DSC_AUC/NSD_AUC);
    0.0 for fewer than 2 clicks. NaN values give NaN."""
    v = np.asarray(list(values)[-n_clicks:], dtype=float)
    if v.size < 2:
        return 0.0
    return float(integrate.cumulative_trapezoid(v, np.arange(v.size))[-1])


# ----------------------------------------------------------------------------------------------- running
def run_case(case: InteractiveCase, segmenter: InteractiveSegmenter, n_clicks: int = N_CLICKS,
             use_boxes: bool = True, boxes_from_gt: bool = False, spacing_mode: str = "official",
             downsample_voxels: int = EDT_DOWNSAMPLE_VOXELS) -> CaseResult:
    """Run the box + ``n_clicks`` protocol on one case and score every step (rules in the module docstring).

    Args:
        use_boxes: False = ignore the case's boxes (``--no-box``): the box step scores 0, clicks from empty.
        boxes_from_gt: make the boxes of a case without boxes from its ground truth (``get_boxes.py`` without
            the random perturbation). Off by default: the challenge never does it.
        spacing_mode: "official" (leaderboard) or "physical" (:func:`protocol_spacing`).
        downsample_voxels: threshold of the half-resolution distance transform (tests lower it).
    """
    gts = np.asarray(case.gts)
    if gts.shape != case.image.shape_kji:
        raise InputError(f"case {case.name}: ground truth shape {gts.shape} differs from image {case.image.shape_kji}")
    labels = challenge_classes(gts)
    spacing_kji = protocol_spacing(case.image, spacing_mode)
    boxes = case.boxes if use_boxes else None
    if boxes is None and use_boxes and boxes_from_gt:
        boxes = {lab: box_from_mask(gts == lab) for lab in labels}
    prompts = {lab: ClassPrompts(label=lab, box=boxes.get(lab) if boxes is not None else None) for lab in labels}
    dscs: list[float] = []
    nsds: list[float] = []
    times: list[float] = []
    failed: list[int] = []
    last_output: np.ndarray | None = None  # the challenge's output file of this case: the last prediction made
    for step in range(n_clicks + 1):
        previous: np.ndarray | None = None
        if step == 0 and boxes is None:
            dscs.append(0.0)
            nsds.append(0.0)
            times.append(0.0)
            continue
        if step > 0:
            previous = (last_output if last_output is not None else np.zeros(gts.shape)).astype(np.uint8)
            for lab in labels:
                click = next_click(previous == lab, gts == lab, downsample_voxels=downsample_voxels)
                if click is not None:
                    prompts[lab].clicks.append(click)
        t0 = time.perf_counter()
        try:
            out = segmenter(case.image, prompts, previous)
        except (Cancelled, InputError):
            raise
        except Exception as exc:  # a model failure is scored as the challenge scores a container that crashed
            log.warning("case %s step %d: the segmenter failed (%s: %s); scored as a missing prediction",
                        case.name, step, type(exc).__name__, exc)
            out = None
        times.append(time.perf_counter() - t0)
        if out is None:
            failed.append(step)
            seg = last_output if last_output is not None else np.zeros(gts.shape, dtype=np.uint8)
        else:
            seg = np.asarray(out)
            if seg.shape != gts.shape:
                raise InputError(f"segmenter returned shape {seg.shape}, expected {gts.shape}")
            last_output = seg
        d, n = step_scores(seg, gts, spacing_kji)
        dscs.append(d)
        nsds.append(n)
    return CaseResult(name=case.name, dataset=case.dataset, modality=case.modality, num_classes=len(labels),
                      dsc=dscs, nsd=nsds, dsc_auc=click_auc(dscs, n_clicks), nsd_auc=click_auc(nsds, n_clicks),
                      dsc_final=dscs[-1], nsd_final=nsds[-1], time_total_s=float(sum(times)),
                      time_per_step_s=times, clicks={lab: list(p.clicks) for lab, p in prompts.items()},
                      failed_steps=failed, counted=last_output is not None, spacing_mode=spacing_mode)


def run_protocol(cases: Iterable[InteractiveCase], segmenter: InteractiveSegmenter, n_clicks: int = N_CLICKS,
                 use_boxes: bool = True, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, boxes_from_gt: bool = False,
                 spacing_mode: str = "official") -> list[CaseResult]:
    """Run :func:`run_case` over cases (same options); cancel keeps the results finished so far."""
    case_list = list(cases)
    results: list[CaseResult] = []
    for n, case in enumerate(case_list):
        if cancel is not None and cancel.cancelled:
            break
        report(progress, n, len(case_list), f"case {case.name}")
        results.append(run_case(case, segmenter, n_clicks=n_clicks, use_boxes=use_boxes,
                                boxes_from_gt=boxes_from_gt, spacing_mode=spacing_mode))
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
    if boxes_meta is not None:  # the file has a ``boxes`` key: the challenge runs the box step
        labels = challenge_classes(gts)
        if not all(isinstance(b, Mapping) for b in boxes_meta):
            raise InputError(f"{path}: boxes are not CVPR25 dicts (format {image.metadata.get('boxes_format')})",
                             "the CVPR25 protocol needs z_min/z_max/z_mid/z_mid_x_min... boxes; pass --no-box to "
                             "start from clicks")
        if len(boxes_meta) != len(labels):
            raise InputError(f"{path}: {len(boxes_meta)} boxes for {len(labels)} ground-truth classes",
                             "one box per class, in label order (get_boxes.py); pass --no-box to ignore them")
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
                if r.counted:  # as the challenge: a case without any prediction is not in the CSV
                    w.writerow(result_row(r))
    summary = summarize(results)
    summary_path = out / "interactive_summary.json"
    atomic_write_text(summary_path, json.dumps(_nan_to_none({"summary": summary, "cases": [
        {**{k: v for k, v in asdict(r).items() if k != "clicks"},
         "clicks": {str(lab): [{"kji": list(c.kji), "positive": c.positive} for c in cl]
                    for lab, cl in r.clicks.items()}} for r in results]}), indent=2))
    plot_path = out / "dice_per_click.png"
    plot_dice_per_click(results, plot_path, title=title)
    return {"csv": csv_path, "summary": summary_path, "plot": plot_path}


def _nan_to_none(x: object) -> object:
    """NaN (a case without classes) as JSON ``null``: ``json.dumps`` would write the non-standard ``NaN``."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def summarize(results: Sequence[CaseResult]) -> dict[str, float]:
    """Means over the counted cases (:attr:`CaseResult.counted`) of the challenge metrics; NaN values (a case
    without classes) are left out of a mean, as ``pandas.DataFrame.mean`` does with the challenge CSV.
    ``n_cases`` counted, ``n_not_counted`` without any prediction, ``n_failed_steps`` in all. Empty dict without
    results."""
    if not results:
        return {}
    counted = [r for r in results if r.counted]
    keys = ("dsc_auc", "nsd_auc", "dsc_final", "nsd_final", "time_total_s")

    def mean(values: Sequence[float]) -> float:
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else math.nan

    out: dict[str, float] = {k: mean([getattr(r, k) for r in counted]) for k in keys}
    out["n_cases"] = len(counted)
    out["n_not_counted"] = len(results) - len(counted)
    out["n_failed_steps"] = sum(len(r.failed_steps) for r in results)
    if counted:
        steps = np.array([r.dsc for r in counted], dtype=float)
        for i in range(steps.shape[1]):
            out[f"dsc_{i + 1}"] = mean(steps[:, i])
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
        ax.plot(steps, np.nanmean([r.dsc for r in results], axis=0), "o-", color="tab:blue", lw=2, label="DSC (mean)")
        ax.plot(steps, np.nanmean([r.nsd for r in results], axis=0), "s--", color="tab:orange", lw=2,
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
