"""``oncoseg demo``: the whole workflow offline, on a REAL CT with REAL weights (or on a phantom, ``phantom=True``).

Real demo (default, :func:`run_demo`):

1. The real abdominal CT shipped in ``OncoSegLib/data/real_ct/`` (TotalSegmentator test data, Apache-2.0; attribution
   in its README) is written as a DICOM series and read back through the same reader users' scans go through.
2. The **LiteMedSAM** model (real MedSAM-distilled weights, CPU-light; see ``oncoseg models list``) opens a
   :class:`~OncoSegLib.session.SegmentationSession`.
3. Prompts: one 3D box per organ (the organ's 2D box on its middle slice - the CVPR challenge's box - plus its slice
   range) taken FROM THE REFERENCE LABEL MAP, as a user would draw them; each box is propagated through its range
   with the model's default 3D method. The report and the screen say so.
4. Export: NIfTI label map, DICOM RTSTRUCT and DICOM SEG referencing the written series, an overlay PNG with a legend
   and patient orientation letters (drawn with Pillow; no plotting package needed).
5. ``report.json``: per structure Dice / NSD (2 mm) / HD95 against the reference, volumes (mL), confidence, timings.

Phantom demo (``phantom=True``, :func:`run_phantom_demo`): a synthetic CT with known truth segmented by the packaged
tiny demo model (trained on phantoms only) - shows the pipeline, not accuracy.

Outputs are built in a hidden staging folder beside ``out_dir`` and moved in only when the run succeeded, so a failed
run leaves nothing behind that would block the next one. Everything runs on the CPU without network access once the
model weights are in the model store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from scipy import ndimage

from OncoSegLib.cancel import ProgressCallback, report
from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.export.overlap import label_map_from_masks
from OncoSegLib.io.atomic import atomic_write_text

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


def _overlay_png(ct: Any, truth: np.ndarray, pred: np.ndarray, names: dict[int, str], k: int,
                 path: Path, title: str, truth_caption: str, pred_caption: str,
                 colors: dict[int, tuple[int, int, int]] | None = None) -> Path:
    from OncoSegLib.export.overlay import OverlayPanel, write_overlay_png

    panels = [OverlayPanel(truth, f"{truth_caption}, slice k={k}"), OverlayPanel(pred, f"{pred_caption}, slice k={k}")]
    return write_overlay_png(ct, k, panels, names, path, title, window=(-160.0, 240.0), colors=colors)


def _num(x: float) -> float | None:
    return None if not math.isfinite(float(x)) else round(float(x), 4)


REAL_CT_DIR = Path(__file__).resolve().parent / "data" / "real_ct"
REAL_MODEL = "litemedsam"
# (structure name, label in the TotalSegmentator reference map). Names match the SNOMED codes of DICOM SEG.
REAL_PLAN: list[tuple[str, int]] = [
    ("liver", 5), ("spleen", 1), ("right kidney", 2), ("left kidney", 3), ("stomach", 6), ("gallbladder", 4),
    ("aorta", 52),
]
REAL_SOURCE = ("TotalSegmentator test data (wasserth/TotalSegmentator, Apache-2.0); Wasserthal et al., Radiology: AI "
               "2023. Reference labels: TotalSegmentator v2 output kept as its regression reference.")
PROMPT_NOTE = ("prompts are 3D boxes taken from the reference label map (each organ's 2D box on its middle slice + "
               "its slice range, the CVPR challenge's box), as a user would draw them")


def box3d_from_mask(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int], int] | None:
    """A user's 3D box around ``mask`` (K, J, I): voxel IJK corners (inclusive) and the slice k its 2D box was drawn
    on, or None when empty.

    The CVPR challenge's box (``get_boxes.py`` without its random enlargement): the 2D box of the middle slice
    holding the structure (``z_mid``), plus the structure's slice range — what a 3D box in a prompts file means. The
    session prompts slice ``z_mid`` (``add_box(..., center=)``) and propagates over the range.
    """
    from OncoSegLib.evaluation.click_protocol import box_from_mask

    if not mask.any():
        return None
    b = box_from_mask(mask)
    return (b.x_min, b.y_min, b.z_min), (b.x_max, b.y_max, b.z_max), b.z_mid


def _load_real_model(model: str | Path | None, device: str) -> Any:
    from OncoSegLib.models.loading import load_bundle

    return load_bundle(str(model or REAL_MODEL), device=device)


def run_demo(out_dir: str | Path, model: str | Path | None = None, method: str | None = None,
             structures: list[str] | None = None, device: str = "cpu",
             progress: ProgressCallback | None = None, overwrite: bool = False) -> dict[str, Any]:
    """The real-CT demo into ``out_dir``; returns the report (also ``out_dir/report.json``).

    Args:
        model: registry name, folder or checkpoint (default ``litemedsam``).
        method: 3D propagation method (default: the model's own default, see ``SegmentationSession.propagate``).
        structures: names from :data:`REAL_PLAN` to segment (default: all).
        device: "cpu" (default: the demo is sized for a laptop CPU), "cuda" or "auto".
    """
    plan = [(n, lab) for n, lab in REAL_PLAN if structures is None or n in structures]
    if not plan:
        raise InputError(f"no known structure in {structures}", "choose among: " + ", ".join(n for n, _ in REAL_PLAN))
    with staged_output(out_dir, overwrite) as out:
        return _real_demo(out, Path(out_dir), model, method, plan, device, progress)


def _real_demo(out: Path, final: Path, model: str | Path | None, method: str | None,
               plan: list[tuple[str, int]], device: str, progress: ProgressCallback | None) -> dict[str, Any]:
    from OncoSegLib import metrics
    from OncoSegLib.export.labelmap_io import conform_labelmap
    from OncoSegLib.export.overlay import PALETTE
    from OncoSegLib.export.roi import RoiSpec
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.nifti import read_nifti
    from OncoSegLib.session import SegmentationSession

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    steps = 5

    # 1. real CT -> DICOM series -> read back (the path users' scans take)
    t = time.perf_counter()
    report(progress, 0, steps, "writing the real CT as a DICOM series")
    src = read_nifti(REAL_CT_DIR / "example_ct_sm.nii.gz")
    ref_vol = read_nifti(REAL_CT_DIR / "example_seg.nii.gz")
    dicom_dir = out / "dicom"
    write_dicom_series(src.with_array(np.asarray(src.array, dtype=np.float32)), dicom_dir, modality="CT",
                       patient_name="OncoSeg^RealCT", patient_id="ONCOSEG-REALCT",
                       series_description="OncoSeg demo: TotalSegmentator example CT", body_part="ABDOMEN")
    ct = read_dicom_series(dicom_dir)
    reference = conform_labelmap(ref_vol, ct)
    timings["dicom_s"] = time.perf_counter() - t

    # 2. model + session
    t = time.perf_counter()
    report(progress, 1, steps, f"loading the model ({model or REAL_MODEL})")
    bundle = _load_real_model(model, device)
    session = SegmentationSession(bundle)
    session.set_volume(ct, modality="ct")
    timings["model_load_s"] = time.perf_counter() - t

    # 3. one 3D box per structure, from the reference, propagated through its slice range
    report(progress, 2, steps, "segmenting: " + PROMPT_NOTE)
    structures: dict[str, Any] = {}
    label_of: dict[str, int] = {}
    oids: dict[str, Any] = {}
    t = time.perf_counter()
    for n, (name, ref_label) in enumerate(plan, start=1):
        box = box3d_from_mask(reference == ref_label)
        if box is None:
            continue
        t_obj = time.perf_counter()
        oid = session.add_object(name)
        session.add_box(oid, box[0], box[1], center=box[2])
        session.propagate(oid, direction="both", **({"method": method} if method else {}))
        oids[name], label_of[name] = oid, n
        structures[name] = {"label": n, "reference_label": ref_label,
                            "prompt": {"box_ijk": [list(box[0]), list(box[1])]},
                            "time_s": round(time.perf_counter() - t_obj, 3)}
    timings["segmentation_s"] = time.perf_counter() - t
    pred_labels = label_map_from_masks([session.result(oid) for oid in oids.values()], ct.shape_kji,
                                       [label_of[name] for name in oids])  # the one overlap rule (later wins)
    truth = np.zeros(ct.shape_kji, dtype=np.uint8)
    for name, lab in label_of.items():
        truth[reference == structures[name]["reference_label"]] = lab

    # 4. exports
    t = time.perf_counter()
    report(progress, 3, steps, "writing NIfTI, RTSTRUCT and SEG")
    names = {lab: name for name, lab in label_of.items()}
    colors = {lab: PALETTE[(lab - 1) % len(PALETTE)] for lab in names}
    present = [lab for lab in sorted(names) if (pred_labels == lab).any()]
    rois = [RoiSpec(label=lab, name=names[lab], color=colors[lab], interpreted_type="ORGAN") for lab in present]
    files = {"dicom_series": str(dicom_dir),
             **_write_outputs(out, ct, pred_labels, truth, "reference.nii.gz", rois, f" ({model or REAL_MODEL})")}
    timings["export_s"] = time.perf_counter() - t

    # 5. metrics against the reference + overlay + report
    t = time.perf_counter()
    report(progress, 4, steps, "measuring against the reference labels")
    for name, row in structures.items():
        lab = row["label"]
        p, g = pred_labels == lab, truth == lab
        row.update({
            "dice": _num(metrics.dice(p, g)),
            "nsd_2mm": _num(metrics.nsd(p, g, spacing_ijk=ct.spacing, tolerance_mm=2.0)),
            "hd95_mm": _num(metrics.hd95(p, g, spacing_ijk=ct.spacing)),
            "volume_ml": _num(metrics.volume_ml(p, spacing_ijk=ct.spacing)),
            "reference_volume_ml": _num(metrics.volume_ml(g, spacing_ijk=ct.spacing)),
            "confidence": _confidence(session, oids[name]),
        })
    k_show = int(np.argmax([(np.isin(truth[k], list(names))).sum() for k in range(truth.shape[0])]))
    files["overlay_png"] = str(_overlay_png(
        ct, truth, pred_labels, names, k_show, out / "overlay.png",
        f"OncoSeg demo - real CT, {model or REAL_MODEL}; boxes from the reference (not for clinical use)",
        "reference (TotalSegmentator)", f"OncoSeg ({model or REAL_MODEL})", colors))
    timings["metrics_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all
    dices = [s["dice"] for s in structures.values() if s["dice"] is not None]
    rep = {
        "oncoseg_demo": True,
        "image": {"source": REAL_SOURCE, "shape_kji": list(ct.shape_kji), "spacing_ijk_mm": list(ct.spacing),
                  "modality": "CT", "real": True},
        "prompts": PROMPT_NOTE,
        "model": _model_info(bundle, model or REAL_MODEL),
        "propagation_method": method or "model default",
        "structures": structures,
        "mean_dice": _num(float(np.mean(dices))) if dices else None,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "files": _final_paths(files, out, final),
    }
    atomic_write_text(out / "report.json", json.dumps(rep, indent=2))
    report(progress, steps, steps, "done")
    return rep


def _write_outputs(out: Path, ct: Any, pred_labels: np.ndarray, truth: np.ndarray, truth_name: str,
                   rois: list[Any], what: str) -> dict[str, str]:
    """NIfTI prediction + truth/reference, and (when a structure was found) RTSTRUCT and SEG on the series ``ct``."""
    from OncoSegLib.export.rtstruct import write_rtstruct
    from OncoSegLib.export.seg import write_seg
    from OncoSegLib.io.nifti import write_nifti

    key = "truth_nifti" if truth_name.startswith("truth") else "reference_nifti"
    files = {"nifti": str(write_nifti(ct.with_array(pred_labels), out / "segmentation.nii.gz")),
             key: str(write_nifti(ct.with_array(truth), out / truth_name))}
    if rois:
        files["rtstruct"] = str(write_rtstruct(pred_labels, ct, out / "rtstruct.dcm", rois=rois,
                                               series_description=f"OncoSeg demo structures{what}"))
        files["seg"] = str(write_seg(pred_labels, ct, out / "segmentation_seg.dcm", rois=rois,
                                     series_description=f"OncoSeg demo segmentation{what}"))
    return files


def _model_info(bundle: Any, name: str | Path) -> dict[str, Any]:
    info: dict[str, Any] = {"name": str(name)}
    for attr in ("source", "image_size"):
        if getattr(bundle, attr, None) is not None:
            info[attr] = str(getattr(bundle, attr)) if attr == "source" else int(getattr(bundle, attr))
    if getattr(bundle, "encoder_name", None):  # which image encoder ran (LiteMedSAM: OpenVINO or PyTorch)
        info["encoder"] = str(bundle.encoder_name)
    if callable(getattr(bundle, "parameter_count", None)):
        info["parameters"] = int(bundle.parameter_count())
    return info


def _final_paths(files: dict[str, str], staging: Path, final: Path) -> dict[str, str]:
    """Paths of the files as they will be after the staging folder is moved to ``final``."""
    return {k: str(final / Path(v).relative_to(staging)) for k, v in files.items()}


@contextlib.contextmanager
def staged_output(out_dir: str | Path, overwrite: bool) -> Iterator[Path]:
    """Build the demo's files in a hidden folder beside ``out_dir``; move them in only when the body succeeded.

    ``out_dir`` must be absent or empty unless ``overwrite`` (then only the demo's own files are replaced). A failed
    run removes its staging folder and leaves ``out_dir`` as it was, so the same command can simply be run again;
    staging folders left by a killed run (``.<name>.partial-<pid>``) are removed at the next start.
    """
    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise InputError(f"{final} exists and is not a folder", "choose a new output folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise InputError(f"{final} is not empty", "choose a new folder, or pass --overwrite to replace the demo files")
    parent = final.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{final.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        if not final.exists():
            os.replace(staging, final)
        else:  # --overwrite into a folder with earlier demo files: replace entry by entry
            for item in staging.iterdir():
                dest = final / item.name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                os.replace(item, dest)
            staging.rmdir()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def run_phantom_demo(out_dir: str | Path, model: str | Path | None = None, seed: int = DEMO_SEED,
                     shape_kji: tuple[int, int, int] = DEMO_SHAPE, method: str = "box",
                     progress: ProgressCallback | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the phantom demo into ``out_dir`` and return the report (also written to ``out_dir/report.json``).

    Args:
        out_dir: output folder; it must be empty or absent unless ``overwrite`` (the demo only writes its own files).
        model: model folder (default: the packaged demo model).
        seed, shape_kji: phantom seed and grid (K, J, I).
        method: propagation method ("box", "centroid" or "memory").
    """
    with staged_output(out_dir, overwrite) as out:
        return _phantom_demo(out, Path(out_dir), model, seed, shape_kji, method, progress)


def _phantom_demo(out: Path, final: Path, model: str | Path | None, seed: int, shape_kji: tuple[int, int, int],
                  method: str, progress: ProgressCallback | None) -> dict[str, Any]:
    from OncoSegLib import metrics
    from OncoSegLib.export.roi import RoiSpec
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.phantoms import make_ct_phantom
    from OncoSegLib.session import SegmentationSession

    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. phantom -> DICOM
    t = time.perf_counter()
    report(progress, 0, 6, "making the phantom CT")
    ph = make_ct_phantom(seed=seed, shape_kji=shape_kji, spacing=DEMO_SPACING)
    dicom_dir = out / "dicom"
    write_dicom_series(ph.volume, dicom_dir, modality="CT", series_description="OncoSeg demo phantom",
                       body_part="ABDOMEN")
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
    pred_labels = label_map_from_masks([session.result(oid) for oid, _ in obj_ids.values()], truth.shape,
                                       [lab for _, lab in obj_ids.values()])  # later wins: lesion cut out of the liver
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
    rois = [RoiSpec(label=lab, name=names[lab], color=COLORS.get(names[lab], (0, 200, 255)),
                    interpreted_type=ROI_TYPES.get(names[lab], "ORGAN")) for lab in present]
    files = {"dicom_series": str(dicom_dir),
             **_write_outputs(out, ct, pred_labels, truth.astype(np.uint8), "truth.nii.gz", rois, "")}
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
    files["overlay_png"] = str(_overlay_png(ct, truth, pred_labels, names, k_show, out / "overlay.png",
                                            "OncoSeg demo - synthetic CT phantom, demo model (not for clinical use)",
                                            "phantom truth", "OncoSeg (demo model)",
                                            {lab: COLORS.get(n, (0, 200, 255)) for lab, n in names.items()}))
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
    rep["files"] = _final_paths(files, out, final)
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
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()  # None = n/a -> JSON null
            if v is None or isinstance(v, (int, float, bool))}
