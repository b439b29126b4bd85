"""One-prompt evaluation: every labelled structure is prompted once per slice from its ground truth, scored in 3D.

For each case and each label, on every axial slice k where the label has foreground, the segmenter receives ONE
prompt built from the ground truth of that slice:

- ``box``: the tight bounding box of the slice's ground truth (i0, j0, i1, j1), voxel-centre corners, inclusive;
- ``point``: one positive click at the slice ground truth's deepest pixel (maximum of the 2D Euclidean distance
  transform, ties -> first in C order).

The 2D answers are stacked into a 3D mask (slices without ground truth stay empty) and compared with the ground truth
in physical units (:mod:`OncoSegLib.metrics`): Dice, IoU, NSD at 2 mm, HD95 in mm. Results per case and label,
then means per dataset and per modality. CSV tables + JSON; ``print_table`` gives a markdown table.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np
from scipy import ndimage

from OncoSegLib.cancel import CancelToken, ProgressCallback, report
from OncoSegLib.errors import InputError
from OncoSegLib.io.atomic import atomic_path, atomic_write_text
from OncoSegLib.io.volume import Volume

PROMPT_KINDS = ("box", "point")
METRIC_KEYS = ("dice", "iou", "nsd", "hd95")


@dataclass(frozen=True)
class SlicePrompt:
    """A prompt on axial slice ``k``: ``box`` = (i0, j0, i1, j1) or ``point`` = (i, j) positive click (voxels)."""

    label: int
    k: int
    box: tuple[int, int, int, int] | None = None
    point: tuple[int, int] | None = None


class SliceSegmenter(Protocol):
    """Answers the prompts of one slice: ``(image, k, prompts) -> {label: bool mask (J, I)}``."""

    def __call__(self, image: Volume, k: int, prompts: Sequence[SlicePrompt]) -> Mapping[int, np.ndarray]: ...


@dataclass
class EvalCase:
    """An image with its ground-truth label map (K, J, I) and label names."""

    name: str
    image: Volume
    gts: np.ndarray
    names: dict[int, str]
    dataset: str = ""
    modality: str = ""


@dataclass
class LabelResult:
    case: str
    dataset: str
    modality: str
    label: int
    name: str
    prompt: str
    dice: float
    iou: float
    nsd: float
    hd95: float
    slices: int
    time_s: float


def slice_prompts(gts: np.ndarray, kind: str) -> list[SlicePrompt]:
    """The one-prompt-per-slice-per-label list of a label map (see the module docstring)."""
    if kind not in PROMPT_KINDS:
        raise InputError(f"unknown prompt kind '{kind}'", f"use one of {', '.join(PROMPT_KINDS)}")
    out: list[SlicePrompt] = []
    for k in range(gts.shape[0]):
        sl = gts[k]
        for label in (int(v) for v in np.unique(sl) if v != 0):
            m = sl == label
            if kind == "box":
                jj, ii = np.nonzero(m)
                out.append(SlicePrompt(label, k, box=(int(ii.min()), int(jj.min()), int(ii.max()), int(jj.max()))))
            else:
                edt = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
                j, i = np.unravel_index(int(np.argmax(edt)), edt.shape)
                out.append(SlicePrompt(label, k, point=(int(i), int(j))))
    return out


def evaluate_case(case: EvalCase, segmenter: SliceSegmenter, kind: str = "box",
                  tolerance_mm: float = 2.0) -> list[LabelResult]:
    """Run the one-prompt protocol on one case; one :class:`LabelResult` per ground-truth label."""
    from OncoSegLib import metrics

    gts = np.asarray(case.gts)
    if gts.shape != case.image.shape_kji:
        raise InputError(f"case {case.name}: label shape {gts.shape} differs from image {case.image.shape_kji}")
    prompts = slice_prompts(gts, kind)
    labels = sorted({p.label for p in prompts})
    pred = {lab: np.zeros(gts.shape, dtype=bool) for lab in labels}
    by_slice: dict[int, list[SlicePrompt]] = {}
    for p in prompts:
        by_slice.setdefault(p.k, []).append(p)
    t0 = time.perf_counter()
    for k, plist in sorted(by_slice.items()):
        masks = segmenter(case.image, k, plist)
        for lab, m in masks.items():
            m = np.asarray(m, dtype=bool)
            if m.shape != gts.shape[1:]:
                raise InputError(f"segmenter returned a {m.shape} mask for a {gts.shape[1:]} slice")
            pred[int(lab)][k] = m
    elapsed = time.perf_counter() - t0
    out = []
    for lab in labels:
        g = gts == lab
        p = pred[lab]
        sp = case.image.spacing
        out.append(LabelResult(case=case.name, dataset=case.dataset, modality=case.modality, label=lab,
                               name=case.names.get(lab, str(lab)), prompt=kind,
                               dice=float(metrics.dice(p, g)), iou=float(metrics.iou(p, g)),
                               nsd=float(metrics.nsd(p, g, spacing_ijk=sp, tolerance_mm=tolerance_mm)),
                               hd95=float(metrics.hd95(p, g, spacing_ijk=sp)),
                               slices=int(sum(1 for q in prompts if q.label == lab)),
                               time_s=elapsed / max(1, len(labels))))
    return out


def evaluate_cases(cases: Iterable[EvalCase], segmenter: SliceSegmenter, kind: str = "box",
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[LabelResult]:
    """:func:`evaluate_case` over cases (cancel keeps what is done)."""
    case_list = list(cases)
    out: list[LabelResult] = []
    for n, c in enumerate(case_list):
        if cancel is not None and cancel.cancelled:
            break
        report(progress, n, len(case_list), f"case {c.name}")
        out.extend(evaluate_case(c, segmenter, kind))
    report(progress, len(case_list), len(case_list), "done")
    return out


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def group_means(results: Sequence[LabelResult], key: str) -> list[dict[str, Any]]:
    """Means of the metrics grouped by ``key`` ("dataset", "modality", "name" or "case"); HD95 ignores inf."""
    groups: dict[str, list[LabelResult]] = {}
    for r in results:
        groups.setdefault(str(getattr(r, key)), []).append(r)
    rows = []
    for g, rs in sorted(groups.items()):
        row: dict[str, Any] = {key: g, "n": len(rs)}
        for m in METRIC_KEYS:
            row[m] = _mean([getattr(r, m) for r in rs])
        row["hd95_inf"] = sum(1 for r in rs if not math.isfinite(r.hd95))
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        atomic_write_text(path, "")
        return
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                            for k, v in r.items()})


def write_reports(results: Sequence[LabelResult], out_dir: str | Path) -> dict[str, Path]:
    """``one_prompt_cases.csv`` (per case and label), ``one_prompt_by_dataset.csv``, ``one_prompt_by_modality.csv``,
    ``one_prompt_summary.json``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"cases": out / "one_prompt_cases.csv", "by_dataset": out / "one_prompt_by_dataset.csv",
             "by_modality": out / "one_prompt_by_modality.csv", "summary": out / "one_prompt_summary.json"}
    _write_csv(paths["cases"], [asdict(r) for r in results])
    by_ds = group_means(results, "dataset")
    by_mod = group_means(results, "modality")
    _write_csv(paths["by_dataset"], by_ds)
    _write_csv(paths["by_modality"], by_mod)

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    atomic_write_text(paths["summary"], json.dumps(clean({"by_dataset": by_ds, "by_modality": by_mod,
                                                         "by_structure": group_means(results, "name"),
                                                         "cases": [asdict(r) for r in results]}), indent=2))
    return paths


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of group rows (floats to 3 decimals)."""
    if not rows:
        return "(no results)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [(f"{v:.3f}" if isinstance(v, float) else str(v)) for v in (r[c] for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SliceSegmenterFn = Callable[[Volume, int, Sequence[SlicePrompt]], Mapping[int, np.ndarray]]
