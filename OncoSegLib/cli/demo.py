"""``oncoseg demo --out DIR``: segment a synthetic CT with the packaged demo model, offline, in about a minute.

Writes DIR/dicom/ (the phantom CT series), segmentation.nii.gz, rtstruct.dcm, segmentation_seg.dcm, overlay.png and
report.json (Dice against the phantom truth, volumes, RECIST). The demo model is a tiny model trained on phantoms
only: it shows the workflow, it is not for clinical images.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the offline demo on a synthetic CT (DICOM in, RTSTRUCT/SEG out)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--model", default=None, help="model folder (default: the packaged demo model)")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (default 5)")
    p.add_argument("--method", choices=("box", "centroid", "memory"), default="box",
                   help="propagation method (default box; memory needs a model with video modules, --model)")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="print only the report path")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.demo import DEMO_SEED, run_demo

    def progress(done: int, total: int, message: str) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {message}", file=sys.stderr)

    rep = run_demo(args.out, model=args.model, seed=DEMO_SEED if args.seed is None else args.seed,
                   method=args.method, progress=progress, overwrite=args.overwrite)
    if not args.quiet:
        rows = [f"  {name:<13} Dice {s['dice']:.3f}  volume {s['volume_ml']:.1f} mL (truth {s['truth_volume_ml']:.1f})"
                for name, s in rep["structures"].items()]
        print("\n".join(["OncoSeg demo (synthetic CT, demo model - not for clinical use):"] + rows), file=sys.stderr)
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
