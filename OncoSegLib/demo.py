"""``oncoseg demo``: the whole workflow offline in about a minute, on a synthetic CT with known truth.

1. Make a synthetic abdominal CT (:func:`OncoSegLib.phantoms.make_ct_phantom`) and write it as a DICOM series.
2. Read the series back (the same reader users' scans go through) and open a :class:`SegmentationSession` with the
   packaged **demo model** (a tiny SAM3-architecture model trained by ``oncoseg train --config
   configs/demo_model.yaml`` on phantoms only - it knows nothing about real anatomy).
3. Prompt like a user would: a 3D box (centre-slice rectangle + slice range) on the liver, each kidney and the
   largest liver lesion, a click on the vertebra; each object is propagated through the slices (``method="box"``,
   bounded by its 3D box). Later objects win where masks overlap (the lesion is cut out of the liver).
4. Export: NIfTI label map, DICOM RTSTRUCT and DICOM SEG referencing the series, an overlay PNG.
5. ``report.json``: per structure Dice / NSD (2 mm) / HD95 against the phantom truth, predicted and true volumes
   (mL), RECIST long/short axes of the lesion, timings and the files written.
6. With a text-capable model (the packaged demo model is one): text prompts ("liver", "left kidney") typed on one
   slice, the best instance propagated; their 2D and 3D Dice go to ``report.json["text_prompts"]``.

The prompts are derived from the phantom truth (bounding box of the middle slice, deepest point of a slice), as a
person would place them. Everything runs on CPU without network access.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from OncoSegLib.cancel import ProgressCallback, report
from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.io.atomic import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

DEMO_SEED = 5
DEMO_SHAPE = (40, 128, 128)
DEMO_SPACING = (0.8, 0.8, 2.5)
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "data" / "demo_model"
COLORS = {"liver": (221, 130, 101), "right kidney": (185, 102, 83), "left kidney": (185, 102, 83),
          "vertebra": (241, 214, 145), "liver tumor": (255, 0, 0)}
ROI_TYPES = {"liver tumor": "GTV"}

# Text prompts run when the model has a text detector: (concept typed by the user, phantom label it should find).
# Each is typed on the structure's middle slice; the best instance becomes an object propagated like the others.
# These objects are reported under "text_prompts" and stay out of the exported label map.
DEMO_TEXT_PLAN: list[tuple[str, int]] = [("liver", 1), ("left kidney", 3)]

# (structure, label value in the phantom, prompt kind)
DEMO_PLAN: list[tuple[str, int, str]] = [
    ("liver", 1, "box"),
    ("right kidney", 2, "box"),
    ("left kidney", 3, "box"),
    ("vertebra", 4, "point"),
    ("liver tumor", 5, "box"),
]


def _middle_slice(mask: np.ndarray) -> int:
    """Where a person would prompt: the middle one of the slices whose area is >= 90 % of the largest."""
    areas = mask.sum(axis=(1, 2))
    if not areas.any():
        return 0
    ks = np.nonzero(areas >= 0.9 * areas.max())[0]
    return int(ks[len(ks) // 2])


def _deepest_pixel(mask2d: np.ndarray) -> tuple[int, int]:
    edt = ndimage.distance_transform_edt(np.pad(mask2d, 1))[1:-1, 1:-1]
    j, i = np.unravel_index(int(np.argmax(edt)), edt.shape)
    return int(i), int(j)


def _load_demo_model(model: str | Path | None) -> Any:
    from OncoSegLib.models.loading import load_bundle

    source = Path(model) if model is not None else DEMO_MODEL_DIR
    if not (Path(source) / "config.json").is_file():
        raise ModelError(f"the demo model is missing ({source})",
                         "rebuild it with: oncoseg train --config configs/demo_model.yaml")
    return load_bundle(str(source), device="cpu")


def _overlay_png(ct: np.ndarray, truth: np.ndarray, pred: np.ndarray, names: dict[int, str], k: int,
                 path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lo, hi = -160.0, 240.0  # abdominal window W400/L40
    img = np.clip((ct[k].astype(float) - lo) / (hi - lo), 0, 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8), dpi=100)
    for ax, lab, sub in ((axes[0], truth, "phantom truth"), (axes[1], pred, "OncoSeg (demo model)")):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        rgba = np.zeros(img.shape + (4,))
        for value, name in names.items():
            m = lab[k] == value
            if m.any():
                rgba[m, :3] = np.array(COLORS.get(name, (0, 200, 255))) / 255.0
                rgba[m, 3] = 0.45
                ax.contour(m, levels=[0.5], colors=[np.array(COLORS.get(name, (0, 200, 255))) / 255.0],
                           linewidths=0.8)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(f"{sub}, slice k={k}", fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _num(x: float) -> float | None:
    return None if not math.isfinite(float(x)) else round(float(x), 4)


def run_demo(out_dir: str | Path, model: str | Path | None = None, seed: int = DEMO_SEED,
             shape_kji: tuple[int, int, int] = DEMO_SHAPE, method: str = "box",
             progress: ProgressCallback | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return the report (also written to ``out_dir/report.json``).

    Args:
        out_dir: output folder; it must be empty or absent unless ``overwrite`` (the demo only writes its own files).
        model: model folder (default: the packaged demo model).
        seed, shape_kji: phantom seed and grid (K, J, I).
        method: propagation method ("box", "centroid" or "memory").
    """
    from OncoSegLib import metrics
    from OncoSegLib.export.roi import RoiSpec
    from OncoSegLib.export.rtstruct import write_rtstruct
    from OncoSegLib.export.seg import write_seg
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.nifti import write_nifti
    from OncoSegLib.phantoms import make_ct_phantom
    from OncoSegLib.session import SegmentationSession

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty", "choose a new folder, or pass --overwrite to replace the demo files")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. phantom -> DICOM
    t = time.perf_counter()
    report(progress, 0, 6, "making the phantom CT")
    ph = make_ct_phantom(seed=seed, shape_kji=shape_kji, spacing=DEMO_SPACING)
    dicom_dir = out / "dicom"
    write_dicom_series(ph.volume, dicom_dir, modality="CT", series_description="OncoSeg demo phantom",
                       body_part="ABDOMEN", overwrite=overwrite)
    ct = read_dicom_series(dicom_dir)
    if not ct.same_grid(ph.volume):
        raise InputError("the DICOM series read back does not match the phantom grid")
    truth = ph.labels
    timings["phantom_and_dicom_s"] = time.perf_counter() - t

    # 2. model + session
    t = time.perf_counter()
    report(progress, 1, 6, "loading the demo model")
    bundle = _load_demo_model(model)
    session = SegmentationSession(bundle)
    session.set_volume(ct, modality="ct")
    timings["model_load_s"] = time.perf_counter() - t

    # 3. prompts + propagation
    t = time.perf_counter()
    report(progress, 2, 6, "segmenting (prompts + propagation)")
    prompts_used: dict[str, Any] = {}
    plan = [(name, lab, kind) for name, lab, kind in DEMO_PLAN if (truth == lab).any()]
    if not plan:
        raise InputError("the phantom has no structures to segment")
    obj_ids = {}
    for name, lab, kind in plan:
        gt = truth == lab
        if name == "liver tumor":  # the largest lesion only: one object per lesion, as in RECIST
            comp, n = ndimage.label(gt)
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            gt = comp == int(np.argmax(sizes))
        ks = np.nonzero(gt.any(axis=(1, 2)))[0]
        k_lo, k_hi = int(ks.min()), int(ks.max())
        k = (k_lo + k_hi) // 2  # a 3D box prompts its centre slice (and bounds the propagation)
        oid = session.add_object(name)
        obj_ids[name] = (oid, lab)
        if kind == "box":  # a 3D box: the 2D box of the centre slice over the object's slice range
            jj, ii = np.nonzero(gt[k])
            lo, hi = (int(ii.min()), int(jj.min()), k_lo), (int(ii.max()), int(jj.max()), k_hi)
            session.add_box(oid, lo, hi)
            prompts_used[name] = {"box_ijk": [list(lo), list(hi)]}
        else:  # a click at the deepest point of the centre slice
            i, j = _deepest_pixel(gt[k])
            session.add_point(oid, (i, j, k), positive=True)
            prompts_used[name] = {"point_ijk": [i, j, k]}
        session.propagate(oid, direction="both", method=method)
    pred_labels = np.zeros(truth.shape, dtype=np.uint8)
    for name, (oid, lab) in obj_ids.items():
        pred_labels[session.result(oid)] = lab  # later objects win: the lesion is cut out of the liver
    timings["segmentation_s"] = time.perf_counter() - t
    t = time.perf_counter()
    text_results: dict[str, Any] = {}
    if getattr(bundle, "has_text", False):
        report(progress, 2, 6, "text prompts")
        text_results = _run_text_prompts(session, truth, method)
    timings["text_prompts_s"] = time.perf_counter() - t

    # 4. exports
    t = time.perf_counter()
    report(progress, 3, 6, "writing NIfTI, RTSTRUCT and SEG")
    names = {lab: name for name, (_, lab) in obj_ids.items()}
    present = [lab for lab in sorted(names) if (pred_labels == lab).any()]
    nifti_path = write_nifti(ct.with_array(pred_labels), out / "segmentation.nii.gz")
    write_nifti(ct.with_array(truth.astype(np.uint8)), out / "truth.nii.gz")
    rois = [RoiSpec(label=lab, name=names[lab], color=COLORS.get(names[lab], (0, 200, 255)),
                    interpreted_type=ROI_TYPES.get(names[lab], "ORGAN")) for lab in present]
    files = {"dicom_series": str(dicom_dir), "nifti": str(nifti_path), "truth_nifti": str(out / "truth.nii.gz")}
    if present:
        files["rtstruct"] = str(write_rtstruct(pred_labels, ct, out / "rtstruct.dcm", rois=rois,
                                               series_description="OncoSeg demo structures"))
        files["seg"] = str(write_seg(pred_labels, ct, out / "segmentation_seg.dcm", rois=rois,
                                     series_description="OncoSeg demo segmentation"))
    timings["export_s"] = time.perf_counter() - t

    # 5. metrics + overlay + report
    t = time.perf_counter()
    report(progress, 4, 6, "measuring against the phantom truth")
    structures: dict[str, Any] = {}
    for name, (oid, lab) in obj_ids.items():
        p, g = pred_labels == lab, truth == lab
        row: dict[str, Any] = {
            "label": lab, "prompt": prompts_used[name],
            "dice": _num(metrics.dice(p, g)),
            "nsd_2mm": _num(metrics.nsd(p, g, spacing_ijk=ct.spacing, tolerance_mm=2.0)),
            "hd95_mm": _num(metrics.hd95(p, g, spacing_ijk=ct.spacing)),
            "volume_ml": _num(metrics.volume_ml(p, spacing_ijk=ct.spacing)),
            "truth_volume_ml": _num(metrics.volume_ml(g, spacing_ijk=ct.spacing)),
            "confidence": _confidence(session, oid),
        }
        if name == "liver tumor":
            rp, rg = metrics.recist(p, spacing_ijk=ct.spacing), metrics.recist(g, spacing_ijk=ct.spacing)
            row["recist"] = {"long_axis_mm": _num(rp.long_axis_mm), "short_axis_mm": _num(rp.short_axis_mm),
                             "slice_index": rp.slice_index, "truth_long_axis_mm": _num(rg.long_axis_mm),
                             "truth_short_axis_mm": _num(rg.short_axis_mm)}
        structures[name] = row
    k_show = _middle_slice(truth == 5) if (truth == 5).any() else truth.shape[0] // 2
    files["overlay_png"] = str(_overlay_png(ct.array, truth, pred_labels, names, k_show, out / "overlay.png",
                                            "OncoSeg demo - synthetic CT phantom, demo model (not for clinical use)"))
    timings["metrics_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all
    dices = [s["dice"] for s in structures.values() if s["dice"] is not None]
    model_info = {"source": str(bundle.source), "image_size": int(bundle.image_size),
                  "parameters": int(bundle.parameter_count()), "demo_model": True,
                  "note": "tiny SAM3-architecture model trained on synthetic phantoms only; not for clinical use"}
    info_path = Path(bundle.source) / "oncoseg_model.json"
    if info_path.is_file():
        model_info["training"] = json.loads(info_path.read_text(encoding="utf-8"))
    rep = {
        "oncoseg_demo": True,
        "phantom": {"seed": seed, "shape_kji": list(shape_kji), "spacing_ijk_mm": list(ct.spacing),
                    "structures": {str(k): v for k, v in ph.names.items()}, "lesions": ph.lesions},
        "propagation_method": method,
        "model": model_info,
        "structures": structures,
        "mean_dice": _num(float(np.mean(dices))) if dices else None,
        "text_prompts": text_results if text_results else None,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "files": files,
    }
    atomic_write_text(out / "report.json", json.dumps(rep, indent=2))
    report(progress, 6, 6, "done")
    return rep


def _run_text_prompts(session: Any, truth: np.ndarray, method: str) -> dict[str, Any]:
    """Type each concept of :data:`DEMO_TEXT_PLAN` on its structure's middle slice, keep the best instance,
    propagate it; Dice on that slice (2D) and over the volume (3D) against the phantom truth."""
    from OncoSegLib import metrics

    out: dict[str, Any] = {}
    for concept, lab in DEMO_TEXT_PLAN:
        gt = truth == lab
        if not gt.any():
            continue
        k = _middle_slice(gt)
        found = session.add_text(concept, index=k, max_instances=1, name=f"text: {concept}")
        row: dict[str, Any] = {"label": lab, "slice_k": k, "instances": len(found)}
        if not found:
            row.update({"score": None, "dice_slice": 0.0, "dice_3d": 0.0})
            out[concept] = row
            continue
        inst = found[0]
        row["score"] = _num(inst.score)
        row["dice_slice"] = _num(metrics.dice(np.asarray(inst.mask, bool), gt[k]))
        try:
            session.propagate(inst.object_id, direction="both", method=method)
        except Exception as exc:  # noqa: BLE001 - the text result is still reported for its slice
            row["propagation_error"] = f"{type(exc).__name__}: {exc}"
        pred = session.result(inst.object_id)
        row["dice_3d"] = _num(metrics.dice(pred, gt))
        out[concept] = row
    return out


def _confidence(session: Any, oid: Any) -> dict[str, Any] | None:
    try:
        c = session.confidence(oid)
    except Exception:  # noqa: BLE001 - confidence is informative only
        return None
    d = c.__dict__ if hasattr(c, "__dict__") else {}
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items() if isinstance(v, (int, float, bool))}
