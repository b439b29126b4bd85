"""``oncoseg evaluate``: measure a model the way the field does.

- ``oncoseg evaluate interactive --data CASES --model M --out DIR``: the CVPR 2025 interactive protocol (a 3D box,
  then 5 clicks at the deepest point of the largest error region; DSC/NSD per step, DSC_AUC, NSD_AUC, finals, time)
  on challenge ``.npz`` files (a file or a folder; ``--gts`` for a separate ground-truth folder), scored exactly as
  the challenge's CVPR25_iter_eval.py (docs/evaluation.md). A case without ``boxes`` (or ``--no-box``) starts from
  clicks and scores 0 at the box step; ``--boxes-from-gt`` makes boxes from the ground truth instead (not the
  challenge's rule). NSD uses the npz spacing as the challenge does (x, y, z applied to the z, y, x axes);
  ``--physical-spacing`` applies it to the axes it describes. Writes interactive_metrics.csv,
  interactive_summary.json and dice_per_click.png.
- ``oncoseg evaluate one-prompt --dataset KIND:PATH ... --prompt box|point --model M --out DIR``: one prompt per
  slice and structure from the ground truth; Dice, IoU, NSD (2 mm), HD95 per case, dataset and modality (CSV + JSON
  + a markdown table on stdout). KIND is msd, folder2d, npz or phantom (``phantom:N`` = N synthetic CTs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from OncoSegLib.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="CVPR25 interactive protocol or one-prompt evaluation of a model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", metavar="MODE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="latest", help="registry name or model folder")
    common.add_argument("--adapter", default=None, help="LoRA adapter folder applied on top")
    common.add_argument("--device", default="auto")
    common.add_argument("--modality", default=None, help="override the modality (ct, mri, ...)")
    common.add_argument("--window", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"),
                        help="CT window in HU")
    common.add_argument("--out", required=True, help="output folder for the tables and plots")
    common.add_argument("--max-cases", type=int, default=None)
    common.add_argument("--quiet", action="store_true")
    it = sub.add_parser("interactive", parents=[common], help="CVPR 2025 box + 5 clicks protocol")
    it.add_argument("--data", required=True, help="a challenge .npz file or a folder of them")
    it.add_argument("--gts", default=None, help="folder with ground-truth npz files of the same names")
    it.add_argument("--clicks", type=int, default=5)
    it.add_argument("--no-box", action="store_true",
                    help="ignore the files' boxes: the box step scores 0 and clicks start from an empty prediction")
    it.add_argument("--boxes-from-gt", action="store_true",
                    help="cases without boxes get boxes made from the ground truth (not the challenge's rule)")
    it.add_argument("--physical-spacing", action="store_true",
                    help="NSD with the npz spacing on the axes it describes (x->i, y->j, z->k) instead of the "
                         "challenge's as-stored order (leaderboard numbers)")
    it.add_argument("--method", choices=("auto", "box", "centroid", "memory", "medsam", "box3d"), default="auto",
                    help="propagation method (auto: the model's default, memory with a video tracker, else box3d)")
    it.set_defaults(func=run_interactive)
    op = sub.add_parser("one-prompt", parents=[common], help="one box/point per slice from the ground truth")
    op.add_argument("--dataset", action="append", required=True, metavar="KIND:PATH",
                    help="msd:/data/Task03_Liver, folder2d:/data/Kvasir-SEG, npz:/data/npz, phantom:4")
    op.add_argument("--prompt", choices=("box", "point"), default="box")
    op.set_defaults(func=run_one_prompt)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _bundle(args: argparse.Namespace) -> Any:
    from OncoSegLib.models.loading import load_bundle

    return load_bundle(args.model, device=args.device, adapter=args.adapter)


def _progress(args: argparse.Namespace):
    def cb(done: int, total: int, message: str) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {message}", file=sys.stderr)
    return cb


def run_interactive(args: argparse.Namespace) -> int:
    from OncoSegLib.evaluation.click_protocol import read_challenge_case, run_protocol, write_protocol_reports
    from OncoSegLib.evaluation.segmenters import SessionSegmenter

    data = Path(args.data)
    files = sorted(data.glob("*.npz")) if data.is_dir() else [data]
    if not files or not files[0].is_file():
        raise InputError(f"no .npz cases at {data}")
    files = files[: args.max_cases] if args.max_cases else files
    cases = (read_challenge_case(f, (Path(args.gts) / f.name) if args.gts else None) for f in files)
    seg = SessionSegmenter(_bundle(args), modality=args.modality, window=tuple(args.window) if args.window else None,
                           method=None if args.method == "auto" else args.method)
    if args.no_box and args.boxes_from_gt:
        raise InputError("--no-box and --boxes-from-gt exclude each other", "pass one of them")
    if args.clicks < 1:
        raise InputError(f"--clicks must be at least 1, got {args.clicks}")
    results = run_protocol(cases, seg, n_clicks=args.clicks, use_boxes=not args.no_box, progress=_progress(args),
                           boxes_from_gt=args.boxes_from_gt,
                           spacing_mode="physical" if args.physical_spacing else "official")
    for r in results:
        if r.failed_steps:
            print(f"warning: case {r.name}: no prediction at step(s) {r.failed_steps}"
                  + ("" if r.counted else "; case left out of the means, as the challenge does"), file=sys.stderr)
    paths = write_protocol_reports(results, args.out, title=f"CVPR25 protocol - {args.model}")
    summary = json.loads(Path(paths["summary"]).read_text())["summary"]
    print(json.dumps({"summary": summary, "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    return 0


def _dataset_specs(items: list[str], args: argparse.Namespace) -> list[Any]:
    from OncoSegLib.training.config import DATASET_KINDS, DatasetSpec

    specs = []
    for item in items:
        kind, _, rest = item.partition(":")
        if kind not in DATASET_KINDS or not rest:
            raise InputError(f"bad --dataset {item!r}", f"use KIND:PATH with KIND in {', '.join(DATASET_KINDS)}")
        if kind == "phantom":
            spec = DatasetSpec(kind="phantom", n_cases=int(rest), seed=5000, shape=[24, 128, 128])
        else:
            spec = DatasetSpec(kind=kind, path=str(Path(rest).resolve()))
        spec.modality = args.modality or spec.modality
        spec.window = list(args.window) if args.window else None
        spec.max_cases = args.max_cases
        specs.append(spec)
    return specs


def run_one_prompt(args: argparse.Namespace) -> int:
    from OncoSegLib.evaluation.one_prompt import EvalCase, evaluate_cases, group_means, markdown_table, write_reports
    from OncoSegLib.evaluation.segmenters import PredictorSliceSegmenter
    from OncoSegLib.training.datasets import build_cases

    refs = build_cases(_dataset_specs(args.dataset, args))
    bundle = _bundle(args)
    results = []
    progress = _progress(args)
    for n, ref in enumerate(refs):
        progress(n, len(refs), f"case {ref.name}")
        vol, labels = ref.load()
        seg = PredictorSliceSegmenter(bundle, modality=ref.modality, window=ref.window)
        case = EvalCase(ref.name, vol, labels, dict(ref.names), ref.dataset, ref.modality)
        results.extend(evaluate_cases([case], seg, kind=args.prompt))
    paths = write_reports(results, args.out)
    print(markdown_table(group_means(results, "dataset")))
    print()
    print(markdown_table(group_means(results, "modality")))
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
