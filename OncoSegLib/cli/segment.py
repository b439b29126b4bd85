"""``oncoseg segment IMAGE --prompts PROMPTS.json --model NAME|PATH --out MASK.nii.gz [--propagate]``.

Reads the image (NIfTI, DICOM folder, PNG/JPEG, NPZ), the prompts file (docs/prompts.md), runs the SAM3 session and
writes a label map (one label per object, in the order of the prompts file, text instances after) in the image's
geometry, plus a sidecar JSON ``MASK.json`` with label names, confidences, modality and model. Both files are written
atomically and never over an existing file without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from OncoSegLib.errors import InputError

METHODS = ("memory", "centroid", "box", "medsam", "box3d")  # OncoSegLib.propagation.METHODS (torch-free here)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("segment", help="segment an image from a prompts file (points/boxes/scribbles/text)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="input image: NIfTI file, DICOM folder, PNG/JPEG or NPZ")
    p.add_argument("--prompts", required=True, help="prompts JSON (see docs/prompts.md)")
    p.add_argument("--model", default=None,
                   help="registry name (oncoseg models list) or a model folder/file (./NAME for a folder named like "
                        "a registry model); default: the manifest's model for the image's modality (--modality, else "
                        "detected), or litemedsam when that one is not available offline")
    p.add_argument("--out", required=True, help="output label map (.nii or .nii.gz)")
    p.add_argument("--propagate", action="store_true", help="propagate every object through the volume")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="propagation method (default: memory for models with a video tracker, else box3d; "
                        "medsam = MedSAM's 3D box rule)")
    p.add_argument("--direction", choices=("both", "forward", "backward"), default="both")
    p.add_argument("--modality", default=None, help="modality (ct, mri, pet, ...); default: detect from the data")
    p.add_argument("--window", nargs=2, type=float, metavar=("LOW", "HIGH"), default=None,
                   help="CT window in HU (default: the model's: -1000 1000 for SAM3, -160 240 for LiteMedSAM)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--series", default=None, help="SeriesInstanceUID to pick in a DICOM folder with several")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder applied on top of the model")
    p.add_argument("--score-threshold", type=float, default=0.5, help="minimum text-instance score (0..1)")
    p.add_argument("--cache-mb", type=float, default=1024.0, help="embedding cache cap in MiB")
    p.add_argument("--multimask-fallback", choices=("auto", "on", "off"), default="auto",
                   help="SAM3's stability fallback for one-click prompts (swap in the best of 3 masks when the single "
                        "mask is unstable): auto = as the checkpoint's config says (stock SAM3: on), on, off")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="bf16 autocast on the CPU (~1.8x faster encoder, cosine 0.9998 to fp32); CUDA always uses it")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def sidecar_path(out: Path) -> Path:
    """``mask.nii.gz`` -> ``mask.json`` (beside the label map)."""
    name = out.name
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            return out.with_name(name[: -len(suf)] + ".json")
    return out.with_name(name + ".json")


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.io.atomic import atomic_write_text
    from OncoSegLib.io.loader import load_volume
    from OncoSegLib.io.nifti import write_nifti
    from OncoSegLib.prompts import load_prompts
    from OncoSegLib.session import SegmentationSession
    from OncoSegLib.slicing import AXES

    out = Path(args.out)
    if not (out.name.endswith(".nii.gz") or out.name.endswith(".nii")):
        raise InputError(f"--out {out} must end in .nii or .nii.gz")
    if not args.cache_mb >= 0:
        raise InputError(f"--cache-mb must be 0 or more, got {args.cache_mb:g}", "e.g. --cache-mb 1024")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise InputError(f"--score-threshold must be between 0 and 1, got {args.score_threshold:g}",
                         "instance scores are sigmoid(logit) x sigmoid(presence), e.g. 0.5")
    side = sidecar_path(out)
    from OncoSegLib.io.outputs import refuse_input_overwrite

    refuse_input_overwrite([("--out", out), ("the --out sidecar", side)],
                           [("IMAGE", args.image), ("--prompts", args.prompts), ("--model", args.model),
                            ("--adapter", args.adapter)])
    if not args.overwrite:
        for f in (out, side):
            if f.exists():
                raise InputError(f"{f} exists", hint="choose another --out or pass --overwrite")

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    volume = load_volume(args.image, series_uid=args.series)
    prompts = load_prompts(args.prompts, volume)  # validates every prompt against the image before loading a model

    from OncoSegLib.models.loading import load_bundle

    model = args.model
    if model is None:  # per-modality routing (manifest), the user's --model overrides it
        from OncoSegLib.modality import detect_modality
        from OncoSegLib.models.registry import resolve_model
        from OncoSegLib.preprocessing import canonical_modality

        modality = canonical_modality(args.modality) if args.modality else detect_modality(volume).modality
        model, notice = resolve_model(None, modality)  # falls back to litemedsam when the routed one is missing
        say(notice or f"model for {modality}: {model} (manifest routing; choose another with --model)")
    components = ["tracker"]
    if args.propagate and args.method in (None, "memory"):
        components.append("video")
    if prompts.texts or any(o.text for o in prompts.objects):
        components.append("detector")
    say(f"loading model {model} ...")
    bundle = load_bundle(model, device=args.device, components=components, adapter=args.adapter)
    session = SegmentationSession(bundle, cache_mb=args.cache_mb, cpu_bf16=args.cpu_bf16,
                                  dynamic_multimask={"auto": None, "on": True, "off": False}[args.multimask_fallback])
    session.set_volume(volume, modality=args.modality, window=tuple(args.window) if args.window else None)
    say(f"modality: {session.modality} ({session.modality_reason})")

    for op in prompts.objects:
        if op.text is not None:
            found = session.add_text(op.text.text, axis=op.text.axis, index=op.text.index,
                                     score_threshold=args.score_threshold, max_instances=1, name=op.name)
            if not found:
                say(f"object {op.name!r}: no instance of {op.text.text!r} scored >= {args.score_threshold}")
                oid = session.add_object(op.name)
            else:
                oid = found[0].object_id
        else:
            oid = session.add_object(op.name)
        for b in op.boxes:
            session.add_box(oid, b.ijk_min, b.ijk_max, axis=op.axis_of(b))
        for pt in op.points:
            session.add_point(oid, pt.ijk, positive=pt.positive, axis=op.axis_of(pt))
        for sc in op.scribbles:
            session.add_scribble(oid, sc.points_ijk, positive=sc.positive, axis=op.axis_of(sc))
    for tp in prompts.texts:
        found = session.add_text(tp.text, axis=tp.axis, index=tp.index, score_threshold=args.score_threshold)
        say(f"text {tp.text!r}: {len(found)} instance(s)")

    prop: dict[str, Any] | None = None
    has_prompts = any(session.anchors(oid, ax) for oid in session.objects for ax in AXES)
    if args.propagate and not has_prompts:
        say("nothing to propagate: no object holds a prompt (text prompts found no instance)")
    if args.propagate and has_prompts:
        last = [-1]

        def progress(done: int, total: int, message: str) -> None:
            pct = int(100 * done / max(total, 1))
            if pct >= last[0] + 10 or done == total:
                last[0] = pct
                say(f"propagating: {done}/{total} slices")

        method = args.method or session.default_method
        res = session.propagate(None, direction=args.direction, method=method, progress=progress)
        for oid in res.skipped:
            say(f"object {session.objects.get(oid)!r}: nothing to propagate (no prompt and no text instance)")
        prop = {"method": method, "direction": args.direction, "slices": len(res.processed),
                "stopped": {f"{session.objects.get(k[0], k[0])}|anchor {k[1]}|{'+' if k[2] > 0 else '-'}": v
                            for k, v in res.stopped.items()}}

    labels = session.label_map()
    names = session.label_names()
    objects = []
    for label, (oid, name) in enumerate(session.objects.items(), start=1):
        conf = session.confidence(oid)
        objects.append({"label": label, "name": name, "voxels": int((labels == label).sum()),
                        "volume_ml": float((labels == label).sum() * volume.voxel_volume_ml),
                        "iou": None if conf.iou is None else round(conf.iou, 4),  # None: n/a (head absent/untrained)
                        "presence": None if conf.presence is None else round(conf.presence, 4),
                        "low_confidence": conf.low})
        say(f"object {name!r}: {objects[-1]['voxels']} voxels, {conf.text()}")
    meta = {"labels": {str(k): v for k, v in names.items()}, "objects": objects,
            "modality": session.modality, "modality_reason": session.modality_reason,
            "model": getattr(bundle, "name", str(model)), "model_source": str(model),
            "propagation": prop, "image": str(args.image)}
    write_nifti(volume.with_array(labels, modality=None), out)
    atomic_write_text(side, json.dumps(meta, indent=2))
    say(f"wrote {out} ({len(names)} object(s)) and {side}")
    return 0
