"""Headless auto-segmentation: an image series + a protocol of text prompts -> RTSTRUCT (+ SEG, NIfTI) + report.

``run_autoseg`` is what a radiotherapy "AI node" runs when a CT arrives: read the series, check its modality against
the protocol, pick the model (the registry's routing by modality unless one is given), find each structure with
SAM3 text prompts through :class:`~OncoSegLib.session.SegmentationSession`, and write the structures as one RT
Structure Set referencing the ORIGINAL series.

3D strategy (``protocol.strategy``; SAM3's detector works on 2D slices):

- ``propagate`` (default): the text prompt runs on ``probe_slices`` evenly spaced axial slices (default 8).
  Detections are ranked by score; the best one seeds an instance that is propagated through the volume
  (``session.propagate``: SAM3's video-tracker memory when the model has one, else centroid re-seeding); a later
  detection that lies >= 50 % inside an instance already found is the same object and is skipped; an instance whose
  3D mask overlaps an earlier one by >= 50 % of the smaller is merged into it. Cost per structure:
  ``probe_slices`` detector passes (encoder + detector) + about K mask decodes per propagated instance (encoder
  features cached per slice and shared by every structure of the same model, within ``cache_mb``).
- ``every_slice``: the text prompt runs on every axial slice; the detected pixels are stacked and the 3D connected
  components (26-connectivity) are the instances. Cost per structure: K detector passes (encoder + detector), so
  N structures cost N x K encoder runs; no tracker, no drift, but false positives on single slices are kept as
  small instances (``keep: largest`` drops them).

Per structure ``keep: largest`` keeps the largest instance (by voxel count), ``keep: all`` keeps up to
``max_instances``. Structures may overlap: the RTSTRUCT (and SEG) are written from an (N, K, J, I) stack of masks,
so no structure overwrites another; only the optional NIfTI label map (one label per voxel) has to choose, and there a
structure listed later in the protocol wins (label = 1-based position in the protocol, stable across patients).

A structure that is not found (no detection at or above its ``min_score``) is reported in ``report.json`` with the
reason and is NOT written as an empty ROI. ``report.json`` holds no patient identifiers (no names, IDs, dates or
input paths): series UID, geometry, per-structure results, model and timings.

Output files (``out_dir``): ``rtstruct.dcm`` (when >= 1 structure was found), ``seg.dcm`` (``seg=True``),
``labels.nii.gz`` (``nifti=True``), ``report.json`` (always; written last: its presence marks a complete result).
A new ``out_dir`` appears at once, complete (written in a hidden sibling folder, then renamed); into an existing
folder each file is replaced atomically. Existing outputs are never replaced unless ``overwrite=True``; then stale
outputs of an earlier run that this run does not produce are removed, so the folder never mixes two runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from OncoSegLib import __version__
from OncoSegLib.autoseg.protocol import Protocol, StructureSpec, load_protocol
from OncoSegLib.cancel import CancelToken, ProgressCallback, report
from OncoSegLib.errors import Cancelled, InputError, ModelError
from OncoSegLib.io.atomic import make_temp_dir
from OncoSegLib.io.volume import Volume

log = logging.getLogger(__name__)

RTSTRUCT_NAME = "rtstruct.dcm"
SEG_NAME = "seg.dcm"
NIFTI_NAME = "labels.nii.gz"
REPORT_NAME = "report.json"
#: Every file name run_autoseg may write (an existing one blocks a run without ``overwrite``).
OUTPUT_NAMES = (RTSTRUCT_NAME, SEG_NAME, NIFTI_NAME, REPORT_NAME)
#: A detection lying at least this fraction inside an instance already found is that instance.
SAME_OBJECT_FRACTION = 0.5


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class InstanceResult:
    """One instance of a structure (one connected object), in the series' voxel grid.

    Attributes:
        score: detection score 0..1 (best detection that seeded / touched it).
        voxels: voxel count; volume_ml: voxels x voxel volume (mL).
        slices: (first, last) axial slice index k it covers.
        anchor_slice: k of the seeding detection (propagate strategy), None for every_slice.
        recist_long_mm, recist_short_mm: RECIST diameters (mm) on axial slices.
        iou, presence: session confidence over its slices (propagate strategy; None when unknown).
        low_confidence: score below the protocol's ``low_confidence_score`` or the session flags it.
    """

    score: float
    voxels: int
    volume_ml: float
    slices: tuple[int, int]
    anchor_slice: int | None
    recist_long_mm: float
    recist_short_mm: float
    iou: float | None
    presence: float | None
    low_confidence: bool


@dataclass
class StructureResult:
    """What the run found for one protocol structure.

    Attributes:
        spec: the protocol entry; label: its NIfTI label (1-based protocol position).
        found: True when at least one instance was kept (then it is an ROI of the RTSTRUCT).
        instances: the kept instances (largest first); candidates: detections seen before de-duplication.
        score: best kept instance score (None when not found); volume_ml, voxels: of the union of kept instances.
        recist_long_mm, recist_short_mm, recist_slice: RECIST of the whole structure mask (axial slices, mm).
        low_confidence: any kept instance is low-confidence.
        roi_number: ROI number in the RTSTRUCT (None when not written); note: a sentence for the report.
        model: the model used; seconds: time spent on this structure.
        mask: bool (K, J, I) union of the kept instances (not in report.json).
    """

    spec: StructureSpec
    label: int
    found: bool
    instances: list[InstanceResult]
    candidates: int
    score: float | None
    voxels: int
    volume_ml: float
    recist_long_mm: float | None
    recist_short_mm: float | None
    recist_slice: int | None
    low_confidence: bool
    note: str
    model: str
    seconds: float
    roi_number: int | None = None
    mask: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The report.json entry."""
        s = self.spec
        return {
            "name": s.name, "text": s.text, "type": s.roi_type, "color": list(s.color), "label": self.label,
            "found": self.found, "instances": len(self.instances), "candidates": self.candidates,
            "score": _round(self.score), "voxels": self.voxels, "volume_ml": _round(self.volume_ml, 6),
            "recist_long_mm": _round(self.recist_long_mm), "recist_short_mm": _round(self.recist_short_mm),
            "recist_slice": self.recist_slice, "low_confidence": self.low_confidence,
            "in_rtstruct": self.roi_number is not None, "roi_number": self.roi_number, "note": self.note,
            "keep": s.keep, "min_score": s.min_score, "model": self.model, "seconds": round(self.seconds, 3),
            "instance_details": [{
                "score": _round(i.score), "voxels": i.voxels, "volume_ml": _round(i.volume_ml, 6),
                "slices": list(i.slices), "anchor_slice": i.anchor_slice,
                "recist_long_mm": _round(i.recist_long_mm), "recist_short_mm": _round(i.recist_short_mm),
                "iou": _round(i.iou), "presence": _round(i.presence), "low_confidence": i.low_confidence}
                for i in self.instances],
        }


@dataclass
class AutosegResult:
    """The outcome of :func:`run_autoseg`: written files (None when not written), per-structure results, report."""

    out_dir: Path
    rtstruct: Path | None
    seg: Path | None
    nifti: Path | None
    report_path: Path
    structures: list[StructureResult]
    modality: str
    model: str
    series_uid: str
    seconds: float
    report: dict[str, Any]

    @property
    def found(self) -> list[str]:
        """Names of the structures found (in protocol order)."""
        return [s.spec.name for s in self.structures if s.found]

    @property
    def missing(self) -> list[str]:
        """Names of the structures not found."""
        return [s.spec.name for s in self.structures if not s.found]


def _round(v: float | None, nd: int = 4) -> float | None:
    if v is None or not np.isfinite(v):
        return None
    return round(float(v), nd)


# ---------------------------------------------------------------------------------------------------- helpers
def probe_indices(n_slices: int, count: int) -> list[int]:
    """``count`` evenly spaced axial slice indices strictly inside 0..n-1 (all slices when n <= count)."""
    if n_slices <= count:
        return list(range(n_slices))
    pos = np.linspace(0, n_slices - 1, count + 2)[1:-1]
    return sorted({int(round(p)) for p in pos})


def _choose_series(series_dir: Path, series_uid: str | None, protocol: Protocol) -> str | None:
    """The SeriesInstanceUID to read: the given one, the only image series, or the only one of a protocol modality."""
    from OncoSegLib.io.dicom_series import list_series
    from OncoSegLib.preprocessing import canonical_modality

    if series_uid is not None:
        return series_uid
    infos = list_series(series_dir)
    if not infos:
        raise InputError(f"no DICOM image series found in {series_dir}",
                         "pass the folder holding the CT/MR image files of one series")
    if len(infos) == 1:
        return infos[0].series_uid

    def modality_of(code: str) -> str | None:
        try:
            return canonical_modality(code)
        except InputError:
            return None

    fitting = [i for i in infos if protocol.modalities and modality_of(i.modality) in protocol.modalities]
    if len(fitting) == 1:
        return fitting[0].series_uid
    listing = "; ".join(i.summary() for i in (fitting or infos))
    raise InputError(f"{len(fitting or infos)} image series in {series_dir} could be meant: {listing}",
                     "choose one with --series UID")


def _check_modality(volume: Volume, protocol: Protocol, allow_mismatch: bool) -> tuple[str, str, float, bool]:
    """Detected modality, reason, confidence, and whether a protocol mismatch was overridden."""
    from OncoSegLib.modality import check_modality, detect_modality

    if volume.channels != 1:
        raise InputError(f"the series has {volume.channels} colour channels; autoseg works on grey CT/MR/PET series",
                         "send the CT (or MR) image series")
    guess = detect_modality(volume)
    overridden = False
    if protocol.modalities and guess.modality not in protocol.modalities:
        if not allow_mismatch:
            raise InputError(
                f"the series is {guess.modality.upper()} ({guess.reason}) but protocol '{protocol.name}' is for "
                f"{', '.join(m.upper() for m in protocol.modalities)} only",
                f"send a {'/'.join(m.upper() for m in protocol.modalities)} series, use a protocol made for "
                f"{guess.modality}, or pass --allow-modality-mismatch (allow_modality_mismatch=True) to run anyway")
        overridden = True
        log.warning("running protocol %s for %s on a %s series (override)", protocol.name, protocol.modalities,
                    guess.modality)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_modality(volume, guess.modality, strict=True)
    return guess.modality, guess.reason, float(guess.confidence), overridden


class _Models:
    """Loads each model once (``bundle_cache`` shared across runs by the watch loop)."""

    def __init__(self, default: Any, default_name: str, device: str, components: list[str],
                 cache: dict[str, Any] | None):
        self.default = default
        self.default_name = default_name
        self.device = device
        self.components = components
        self.cache = cache if cache is not None else {}

    def get(self, name: str | None) -> tuple[Any, str]:
        if name is None and self.default is not None:
            return self.default, self.default_name
        key = name or self.default_name
        if key not in self.cache:
            self.cache[key] = load_model(key, self.device, self.components)
        return self.cache[key], key


def load_model(name: str, device: str, components: list[str]) -> Any:
    """Load a model bundle (a seam tests may replace): registry name, folder, checkpoint file or repo id."""
    from OncoSegLib.models.loading import load_bundle

    return load_bundle(name, device=device, components=components)


def _model_label(model: Any, fallback: str) -> str:
    name = getattr(model, "name", None) or getattr(getattr(model, "bundle", None), "name", None)
    return str(name or fallback)


def _detect(session: Any, s: StructureSpec, k: int) -> list[tuple[float, np.ndarray]]:
    """Text detections of ``s`` on axial slice ``k``: [(score, (J, I) bool mask)]; the session keeps no object."""
    found = session.add_text(s.text, axis="axial", index=k, score_threshold=s.min_score,
                             max_instances=s.max_instances, name=s.name)
    out = [(float(t.score), np.asarray(t.mask, dtype=bool).copy()) for t in found]
    for t in found:
        session.remove_object(t.object_id)
    return out


def _instances_propagate(session: Any, s: StructureSpec, method: str, probes: list[int],
                         cancel: CancelToken | None, say: Any) -> tuple[list[dict[str, Any]], int]:
    cands: list[tuple[float, int, int, np.ndarray]] = []
    for n, k in enumerate(probes, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        say(f"{s.name}: searching '{s.text}' on probe slice {n}/{len(probes)}")
        for score, m in _detect(session, s, k):
            cands.append((score, int(m.sum()), k, m))
    cands.sort(key=lambda c: (-c[0], -c[1], c[2]))
    found: list[dict[str, Any]] = []
    for score, area, k, m in cands:
        if len(found) >= s.max_instances:
            break
        if any(int(np.count_nonzero(f["mask"][k][m])) >= SAME_OBJECT_FRACTION * area for f in found):
            continue  # this detection is an instance we already have
        say(f"{s.name}: propagating instance {len(found) + 1} from slice {k}")
        oid = session.add_object(s.name)
        try:
            session.add_mask(oid, m, axis="axial", index=k)
            res = session.propagate(oid, direction="both", method=method, axis="axial", cancel=cancel)
            mask = session.result(oid)
            conf = session.confidence(oid)
        finally:
            session.remove_object(oid)
        if res.cancelled:
            raise Cancelled("autoseg cancelled during propagation", "no output was written")
        item = {"mask": mask, "score": score, "anchor": k, "iou": conf.iou, "presence": conf.presence,
                "low": bool(conf.low)}
        for f in found:  # one object reached from two probe slices: merge
            inter = int(np.count_nonzero(f["mask"] & mask))
            if inter >= SAME_OBJECT_FRACTION * min(int(f["mask"].sum()), int(mask.sum())):
                f["mask"] |= mask
                f["score"] = max(f["score"], score)
                f["low"] = f["low"] and item["low"]
                break
        else:
            found.append(item)
    return found, len(cands)


def _instances_every_slice(session: Any, s: StructureSpec, n_slices: int, cancel: CancelToken | None,
                           say: Any) -> tuple[list[dict[str, Any]], int]:
    from scipy import ndimage

    shape = session.shape_kji
    hit = np.zeros(shape, dtype=bool)
    score = np.zeros(shape, dtype=np.float64)
    n_det = 0
    for k in range(n_slices):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if k % 8 == 0:
            say(f"{s.name}: searching '{s.text}' on slice {k + 1}/{n_slices}")
        for sc, m in _detect(session, s, k):
            n_det += 1
            hit[k] |= m
            np.maximum(score[k], np.where(m, sc, 0.0), out=score[k])
    lab, n = ndimage.label(hit, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return [], n_det
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    best = ndimage.maximum(score, lab, index=np.arange(1, n + 1))
    order = np.argsort(-sizes, kind="stable")[: s.max_instances]
    found = [{"mask": lab == (c + 1), "score": float(best[c]), "anchor": None, "iou": float("nan"),
              "presence": float("nan"), "low": False} for c in order]
    return found, n_det


def _summarise(s: StructureSpec, label: int, found: list[dict[str, Any]], n_cand: int, volume: Volume,
               protocol: Protocol, model: str, seconds: float, where: str) -> StructureResult:
    from OncoSegLib.metrics import recist, volume_ml

    found = sorted(found, key=lambda f: -int(f["mask"].sum()))
    if s.keep == "largest":
        found = found[:1]
    insts: list[InstanceResult] = []
    union = np.zeros(volume.shape_kji, dtype=bool)
    for f in found:
        m = f["mask"]
        if not m.any():
            continue
        union |= m
        ks = np.flatnonzero(m.any(axis=(1, 2)))
        r = recist(m, spacing_ijk=volume.spacing)
        iou = f["iou"] if f["iou"] is not None and np.isfinite(f["iou"]) else None  # None: n/a
        pres = f["presence"] if f["presence"] is not None and np.isfinite(f["presence"]) else None
        insts.append(InstanceResult(
            score=float(f["score"]), voxels=int(m.sum()), volume_ml=volume_ml(m, spacing_ijk=volume.spacing),
            slices=(int(ks[0]), int(ks[-1])), anchor_slice=f["anchor"], recist_long_mm=float(r.long_axis_mm),
            recist_short_mm=float(r.short_axis_mm), iou=iou, presence=pres,
            low_confidence=bool(f["low"] or f["score"] < protocol.low_confidence_score)))
    if not insts:
        note = (f"not found: no detection of '{s.text}' scored >= {s.min_score:g} {where}; not written as an ROI"
                if n_cand == 0 else f"not found: {n_cand} detection(s) gave no voxel; not written as an ROI")
        return StructureResult(spec=s, label=label, found=False, instances=[], candidates=n_cand, score=None,
                               voxels=0, volume_ml=0.0, recist_long_mm=None, recist_short_mm=None,
                               recist_slice=None, low_confidence=False, note=note, model=model, seconds=seconds,
                               mask=union)
    r = recist(union, spacing_ijk=volume.spacing)
    low = any(i.low_confidence for i in insts)
    note = f"{len(insts)} instance(s) kept ({s.keep})" + ("; LOW CONFIDENCE: review before use" if low else "")
    return StructureResult(spec=s, label=label, found=True, instances=insts, candidates=n_cand,
                           score=max(i.score for i in insts), voxels=int(union.sum()),
                           volume_ml=volume_ml(union, spacing_ijk=volume.spacing),
                           recist_long_mm=float(r.long_axis_mm), recist_short_mm=float(r.short_axis_mm),
                           recist_slice=r.slice_index, low_confidence=low, note=note, model=model, seconds=seconds,
                           mask=union)


def _targets_in_use(out_dir: Path) -> list[str]:
    return [n for n in OUTPUT_NAMES if (out_dir / n).exists()]


# ---------------------------------------------------------------------------------------------------- main entry
def run_autoseg(series_dir: str | os.PathLike, protocol: str | os.PathLike | Protocol | Mapping[str, Any],
                model: str | os.PathLike | None = None, *, out_dir: str | os.PathLike, device: str = "auto",
                series_uid: str | None = None, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None, bundle: Any = None, seg: bool = False, nifti: bool = False,
                overwrite: bool = False, allow_modality_mismatch: bool = False, cache_mb: float = 1024.0,
                bundle_cache: dict[str, Any] | None = None) -> AutosegResult:
    """Segment the protocol's structures in a DICOM series and write RTSTRUCT (+ SEG, NIfTI) and report.json.

    Args:
        series_dir: folder with the image series (other series / RT objects may sit beside it).
        protocol: protocol file (YAML/JSON), dict or :class:`Protocol`.
        model: registry name, folder or checkpoint for structures without their own ``model``; None = the
            registry's routing for the detected modality (``model_for_modality``).
        out_dir: output folder (created when missing).
        device: "auto", "cpu", "cuda", "cuda:1", "mps".
        series_uid: SeriesInstanceUID when the folder holds several series (default: the only one, or the only one
            of a protocol modality).
        progress: ``(done, total, message)`` callback, ``done`` counted in structures.
        cancel: token polled between slices; a cancelled run raises :class:`Cancelled` and writes nothing.
        bundle: an already loaded model (``Sam3Bundle`` or predictor) used instead of ``model``.
        seg, nifti: also write ``seg.dcm`` (DICOM SEG) / ``labels.nii.gz``.
        overwrite: replace earlier outputs in ``out_dir`` (default: refuse).
        allow_modality_mismatch: run even when the series' modality is not one of the protocol's.
        cache_mb: embedding cache cap (MiB) per model.
        bundle_cache: dict name -> loaded model, shared between runs (the watch loop loads each model once).

    Returns:
        :class:`AutosegResult`. Raises ``InputError`` (bad series, wrong modality, outputs exist, bad protocol),
        ``ModelError`` (model missing / without text detector), ``Cancelled``.
    """
    from OncoSegLib.io.dicom_series import read_dicom_series
    from OncoSegLib.models.registry import model_for_modality
    from OncoSegLib.session import SegmentationSession

    t0 = time.perf_counter()
    proto = load_protocol(protocol)
    series_dir = Path(series_dir)
    out = Path(out_dir)
    if not series_dir.is_dir():
        raise InputError(f"series folder not found: {series_dir}", "pass the folder holding the DICOM files")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file", "pass a folder for --out")
    if out.exists() and not overwrite and _targets_in_use(out):
        raise InputError(f"{out} already holds autoseg output ({', '.join(_targets_in_use(out))})",
                         "choose another --out or pass --overwrite")
    if out.resolve() == series_dir.resolve() or series_dir.resolve() in out.resolve().parents:
        raise InputError("the output folder must not be inside the series folder",
                         "write results beside the series, not into it")

    uid = _choose_series(series_dir, series_uid, proto)
    volume = read_dicom_series(series_dir, uid)
    if len(volume.metadata.get("files") or []) != volume.shape_kji[0]:
        raise InputError("the series has no per-slice DICOM files to reference (multi-frame or unplaced images)",
                         "autoseg needs a single-frame CT/MR series with patient geometry")
    modality, reason, mconf, overridden = _check_modality(volume, proto, allow_modality_mismatch)
    window = proto.window if modality == "ct" else None

    needs_video = proto.strategy == "propagate" and proto.propagation in ("auto", "memory")
    components = ["tracker", "detector"] + (["video"] if needs_video else [])
    default_name = str(model) if model is not None else model_for_modality(modality)
    models = _Models(bundle, _model_label(bundle, "bundle") if bundle is not None else default_name, device,
                     components, bundle_cache)

    n_struct = len(proto.structures)
    total = n_struct + 1

    def say_for(done: int):
        def say(msg: str) -> None:
            report(progress, done, total, msg)
        return say

    # structures grouped by model: one session (and embedding cache) per model, released after its group
    groups: dict[str | None, list[int]] = {}
    for n, s in enumerate(proto.structures):
        groups.setdefault(s.model, []).append(n)
    results: list[StructureResult | None] = [None] * n_struct
    done = 0
    for key, idxs in groups.items():
        mdl, mname = models.get(key)
        session = SegmentationSession(mdl, cache_mb=cache_mb, undo_depth=0)
        pred = session.predictor
        if not (getattr(pred, "has_text", False) and hasattr(pred, "detect_text")):
            from OncoSegLib.models.registry import no_text_encoder_error

            raise no_text_encoder_error(f"model '{mname}' (autoseg finds structures from text prompts)")
        session.set_volume(volume, modality=modality, window=window)
        method = proto.propagation
        if method == "auto":
            method = "memory" if getattr(pred, "has_video", False) else "centroid"
        label_model = _model_label(mdl, mname)
        for n in idxs:
            s = proto.structures[n]
            ts = time.perf_counter()
            say = say_for(done)
            say(f"{s.name}: start")
            K = volume.shape_kji[0]
            if proto.strategy == "every_slice":
                found, n_cand = _instances_every_slice(session, s, K, cancel, say)
                where = f"on any of the {K} axial slices"
            else:
                probes = probe_indices(K, proto.probe_slices)
                found, n_cand = _instances_propagate(session, s, method, probes, cancel, say)
                where = f"on {len(probes)} probe slice(s) (k = {', '.join(map(str, probes))})"
            results[n] = _summarise(s, n + 1, found, n_cand, volume, proto, label_model,
                                    time.perf_counter() - ts, where)
            done += 1
            r = results[n]
            say_for(done)(f"{s.name}: " + (f"found, {r.volume_ml:.1f} mL" if r.found else "not found"))
        del session
    structs = [r for r in results if r is not None]
    if cancel is not None:
        cancel.raise_if_cancelled()

    report(progress, n_struct, total, "writing results")
    paths = _write_outputs(out, structs, volume, proto, seg, nifti, overwrite, modality, reason, mconf, overridden,
                           models, t0, uid or str(volume.metadata.get("SeriesInstanceUID", "")), method_label(proto))
    report(progress, total, total, "done")
    return paths


def method_label(proto: Protocol) -> str:
    """Short description of the 3D strategy for the report."""
    if proto.strategy == "every_slice":
        return "every_slice"
    return f"propagate(probe_slices={proto.probe_slices}, propagation={proto.propagation})"


def _write_outputs(out: Path, structs: list[StructureResult], volume: Volume, proto: Protocol, seg: bool,
                   nifti: bool, overwrite: bool, modality: str, reason: str, mconf: float, overridden: bool,
                   models: _Models, t0: float, uid: str, strategy: str) -> AutosegResult:
    from OncoSegLib.export.roi import RoiSpec
    from OncoSegLib.export.rtstruct import write_rtstruct

    created = not out.exists()
    parent = out.parent if created else out
    parent.mkdir(parents=True, exist_ok=True)
    stage = make_temp_dir(parent, prefix=f".{out.name}.autoseg-")  # mode 0o777 & ~umask, not mkdtemp's 0700
    try:
        found = [r for r in structs if r.found]
        rois = []
        for m, r in enumerate(found, start=1):
            r.roi_number = m
            rois.append(RoiSpec(label=m, name=r.spec.name, color=r.spec.color, interpreted_type=r.spec.roi_type,
                                description=r.spec.description or f"OncoSeg autoseg: text '{r.spec.text}'"))
        written: dict[str, str | None] = {"rtstruct": None, "seg": None, "nifti": None}
        rt_uids: dict[str, str] = {}
        if found:
            stack = np.stack([r.mask for r in found]).astype(np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # long names were already warned about by the protocol
                write_rtstruct(stack, volume, stage / RTSTRUCT_NAME, rois=rois, algorithm="AUTOMATIC",
                               structure_set_label=proto.name[:16] or "OncoSeg",
                               series_description=f"OncoSeg autoseg {proto.name}"[:64])
                written["rtstruct"] = RTSTRUCT_NAME
                if seg:
                    from OncoSegLib.export.seg import write_seg

                    write_seg(stack, volume, stage / SEG_NAME, rois=rois, algorithm_type="AUTOMATIC",
                              series_description=f"OncoSeg autoseg {proto.name}"[:64])
                    written["seg"] = SEG_NAME
            import pydicom

            ds = pydicom.dcmread(stage / RTSTRUCT_NAME, stop_before_pixels=True,
                                 specific_tags=["SOPInstanceUID", "SeriesInstanceUID"])
            rt_uids = {"sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID)}
        if nifti:
            from OncoSegLib.export.labelmap_io import write_labelmap

            from OncoSegLib.export.overlap import label_map_from_masks

            # protocol order: a later structure wins where they overlap (the one rule, export/overlap.py)
            labels = label_map_from_masks([r.mask for r in structs], volume.shape_kji, [r.label for r in structs])
            write_labelmap(labels, volume, stage / NIFTI_NAME)
            written["nifti"] = NIFTI_NAME
        seconds = time.perf_counter() - t0
        rep = {
            "schema": 1,
            "tool": f"OncoSeg {__version__} autoseg",
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "protocol": {"name": proto.name, "file": Path(proto.source).name if proto.source else None,
                         "strategy": strategy, "modalities": proto.modalities,
                         "low_confidence_score": proto.low_confidence_score},
            "series": {"series_instance_uid": uid,
                       "frame_of_reference_uid": str(volume.metadata.get("FrameOfReferenceUID", "")),
                       "modality_tag": str(volume.metadata.get("Modality") or volume.modality or ""),
                       "shape_kji": list(volume.shape_kji), "spacing_mm": list(volume.spacing),
                       "voxel_volume_ml": volume.voxel_volume_ml},
            "modality": {"detected": modality, "confidence": round(mconf, 3), "reason": reason,
                         "protocol_mismatch_overridden": overridden},
            "model": {"default": models.default_name, "device": models.device},
            "files": written,
            "rtstruct": rt_uids or None,
            "found": [r.spec.name for r in structs if r.found],
            "not_found": [r.spec.name for r in structs if not r.found],
            "low_confidence": [r.spec.name for r in structs if r.low_confidence],
            "empty_structures_not_written": [r.spec.name for r in structs if not r.found],
            "structures": [r.to_dict() for r in structs],
            "seconds": round(seconds, 3),
        }
        if not found:
            rep["warning"] = "no structure was found: no RTSTRUCT was written"
        (stage / REPORT_NAME).write_text(json.dumps(rep, indent=2), encoding="utf-8")
        _publish(stage, out, created, overwrite)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)

    def p(name: str | None) -> Path | None:
        return out / name if name else None

    return AutosegResult(out_dir=out, rtstruct=p(written["rtstruct"]), seg=p(written["seg"]),
                         nifti=p(written["nifti"]), report_path=out / REPORT_NAME, structures=structs,
                         modality=modality, model=models.default_name, series_uid=uid, seconds=seconds, report=rep)


def _publish(stage: Path, out: Path, created: bool, overwrite: bool) -> None:
    """Move the staged files into ``out``: one rename for a new folder, else file by file with report.json last."""
    if created and not out.exists():
        try:
            os.rename(stage, out)
            return
        except OSError:
            out.mkdir(parents=True, exist_ok=True)  # created meanwhile: fall through to per-file moves
    busy = _targets_in_use(out)
    if busy and not overwrite:
        raise InputError(f"{out} already holds autoseg output ({', '.join(busy)})",
                         "choose another --out or pass --overwrite")
    if (out / REPORT_NAME).exists():  # first withdraw the old completion marker, so no reader sees a mixed folder
        (out / REPORT_NAME).unlink()
    for name in OUTPUT_NAMES:
        if name == REPORT_NAME:
            continue
        src, dst = stage / name, out / name
        if src.exists():
            os.replace(src, dst)
        elif dst.exists():  # a stale output of an earlier run (overwrite was asked): never mix two runs
            dst.unlink()
    os.replace(stage / REPORT_NAME, out / REPORT_NAME)


__all__ = ["run_autoseg", "AutosegResult", "StructureResult", "InstanceResult", "probe_indices", "load_model",
           "OUTPUT_NAMES", "RTSTRUCT_NAME", "SEG_NAME", "NIFTI_NAME", "REPORT_NAME"]
