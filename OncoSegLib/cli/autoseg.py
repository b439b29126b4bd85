"""``oncoseg autoseg``: organs-at-risk from a protocol of text prompts, as a DICOM RTSTRUCT on the original series.

One series:  oncoseg autoseg SERIES_DIR --protocol PROTOCOL.yaml --out OUT_DIR [--model NAME|PATH] [--series UID]
             [--seg] [--nifti] [--device auto] [--overwrite] [--allow-modality-mismatch]
AI node:     oncoseg autoseg --watch INBOX --outbox OUTBOX --protocol PROTOCOL.yaml [--settle 10] [--poll 5]
             [--max-jobs N] [--timeout SECONDS] [--error-dir DIR] [--error-hold 60]

OUT_DIR receives rtstruct.dcm (when a structure was found), seg.dcm (--seg), labels.nii.gz (--nifti) and
report.json (per structure: found, instances, score, volume mL, RECIST mm, low-confidence flag). Structures not
found are listed in report.json and left out of the RTSTRUCT. See docs/autoseg.md.

Watch mode exits 2 with one line (every job left in the inbox) when the model cannot be loaded, the disk is full,
or another watcher already serves the inbox or outbox.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from OncoSegLib.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("autoseg", help="protocol of text prompts -> RTSTRUCT (one series, or watch an inbox)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("series_dir", nargs="?", default=None, metavar="SERIES_DIR",
                   help="folder of the DICOM image series (omit with --watch)")
    p.add_argument("--protocol", required=True, help="structure list, YAML or JSON (see configs/autoseg_example.yaml)")
    p.add_argument("--out", default=None, metavar="OUT_DIR", help="output folder (one-series mode)")
    p.add_argument("--model", default=None, help="registry name or model folder/file (default: routing by modality)")
    p.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when the folder holds several")
    p.add_argument("--seg", action="store_true", help="also write a DICOM SEG (seg.dcm)")
    p.add_argument("--nifti", action="store_true", help="also write a NIfTI label map (labels.nii.gz)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in OUT_DIR")
    p.add_argument("--allow-modality-mismatch", action="store_true",
                   help="run even when the series' modality is not one the protocol is made for")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    w = p.add_argument_group("watch mode (AI node)")
    w.add_argument("--watch", default=None, metavar="INBOX", help="poll this folder for series subfolders")
    w.add_argument("--outbox", default=None, metavar="OUTBOX", help="results go to OUTBOX/<subfolder>/")
    w.add_argument("--error-dir", default=None, metavar="DIR",
                   help="failed jobs go here (default OUTBOX/.error; inside OUTBOX only under a hidden name)")
    w.add_argument("--error-hold", type=float, default=None, metavar="S",
                   help="a failed job stays in the inbox until unchanged for S more seconds, then moves to the "
                        "error folder (default 60; a copy that paused is tried again, not moved)")
    w.add_argument("--settle", type=float, default=10.0, metavar="S",
                   help="a series is complete when its files are unchanged for S seconds and every DICOM file "
                        "in it is whole (default 10)")
    w.add_argument("--poll", type=float, default=5.0, metavar="S", help="seconds between inbox scans (default 5)")
    w.add_argument("--max-jobs", type=int, default=None, metavar="N", help="stop after N jobs")
    w.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S seconds")
    p.set_defaults(func=run)


def _summary_lines(res: Any) -> list[str]:
    lines = []
    for r in res.structures:
        if r.found:
            rec = f"{r.recist_long_mm:.1f} x {r.recist_short_mm:.1f} mm" if r.recist_long_mm is not None else "-"
            lines.append(f"  {r.spec.name:<16} found     {len(r.instances)} inst  score {r.score:.2f}  "
                         f"{r.volume_ml:9.2f} mL  RECIST {rec}" + ("  LOW CONFIDENCE" if r.low_confidence else ""))
        else:
            lines.append(f"  {r.spec.name:<16} NOT FOUND (not written)")
    return lines


def run(args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    if args.watch is not None:
        return _run_watch(args, say)
    if args.series_dir is None:
        raise InputError("give SERIES_DIR (one series) or --watch INBOX --outbox OUTBOX")
    if args.out is None:
        raise InputError("--out OUT_DIR is required", "name the folder that receives rtstruct.dcm and report.json")
    for opt in ("outbox", "error_dir", "error_hold", "max_jobs", "timeout"):
        if getattr(args, opt) is not None:
            raise InputError(f"--{opt.replace('_', '-')} applies to --watch mode only")

    from OncoSegLib.autoseg.pipeline import OUTPUT_NAMES, run_autoseg
    from OncoSegLib.autoseg.protocol import load_protocol
    from OncoSegLib.io.outputs import refuse_input_overwrite

    refuse_input_overwrite([("--out", Path(args.out) / name) for name in OUTPUT_NAMES],
                           [("SERIES_DIR", args.series_dir), ("--protocol", args.protocol), ("--model", args.model)])

    protocol = load_protocol(args.protocol)  # validated before the series is read or a model loaded
    last = [""]

    def progress(done: int, total: int, message: str) -> None:
        if message != last[0]:
            last[0] = message
            say(f"[{done}/{total}] {message}")

    res = run_autoseg(args.series_dir, protocol, args.model, out_dir=args.out, device=args.device,
                      series_uid=args.series, progress=progress, seg=args.seg, nifti=args.nifti,
                      overwrite=args.overwrite, allow_modality_mismatch=args.allow_modality_mismatch)
    print(f"autoseg: {len(res.found)}/{len(res.structures)} structure(s) found ({res.modality}, model "
          f"{res.model}, {res.seconds:.1f} s)")
    for line in _summary_lines(res):
        print(line)
    print(f"wrote {res.out_dir}: " + ", ".join(p.name for p in (res.rtstruct, res.seg, res.nifti, res.report_path)
                                              if p is not None))
    if res.rtstruct is None:
        say("warning: no structure was found, so no RTSTRUCT was written (see report.json)")
    return 0


def _run_watch(args: argparse.Namespace, say: Any) -> int:
    from OncoSegLib.autoseg.watch import WatchConfig, watch_inbox

    if args.series_dir is not None or args.out is not None:
        raise InputError("--watch takes no SERIES_DIR/--out", "results go to --outbox OUTBOX/<subfolder>/")
    if args.outbox is None:
        raise InputError("--watch needs --outbox OUTBOX")
    if args.overwrite:
        raise InputError("--overwrite does not apply to --watch", "each job is processed once (see the manifest)")
    if args.series is not None:
        raise InputError("--series does not apply to --watch", "send one series per inbox subfolder")
    error_hold = 60.0 if args.error_hold is None else args.error_hold
    for opt, v in (("settle", args.settle), ("poll", args.poll), ("error-hold", error_hold)):
        if v < 0:
            raise InputError(f"--{opt} must be >= 0, got {v}")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout must be > 0, got {args.timeout}")
    cfg = WatchConfig(inbox=Path(args.watch), outbox=Path(args.outbox), protocol=args.protocol, model=args.model,
                      device=args.device, seg=args.seg, nifti=args.nifti,
                      allow_modality_mismatch=args.allow_modality_mismatch, settle_s=args.settle, poll_s=args.poll,
                      max_jobs=args.max_jobs, timeout_s=args.timeout,
                      error_dir=Path(args.error_dir) if args.error_dir else None, error_hold_s=error_hold)
    say(f"watching {cfg.inbox} -> {cfg.outbox} (Ctrl+C to stop)")
    outcomes = watch_inbox(cfg, on_event=lambda m: print(m, flush=True))
    failed = sum(1 for o in outcomes if not o.ok)
    print(f"autoseg watch: {len(outcomes)} job(s), {failed} failed")
    return 0
