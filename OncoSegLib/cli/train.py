"""``oncoseg train --config CONFIG.yaml``: LoRA fine-tuning of SAM3 on your data (docs/training.md).

Multi-GPU / multi-node: start the same command with torchrun, e.g.
``torchrun --nproc_per_node 4 -m OncoSegLib train --config CONFIG.yaml`` (DDP; gloo on CPU, NCCL on CUDA).
Rerunning an interrupted command resumes from the last checkpoint; finished phases are skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="fine-tune SAM3 with LoRA from a YAML config (resumable, DDP-ready)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="training YAML (see configs/ and docs/training.md)")
    p.add_argument("--output-dir", default=None, help="override the config's output_dir")
    p.add_argument("--max-steps", type=int, default=None, help="override max_steps of every phase")
    p.add_argument("--device", default=None, help="override model.device (auto, cpu, cuda, cuda:1, mps)")
    p.add_argument("--restart", action="store_true",
                   help="ignore checkpoints and finished phases in output_dir (they are moved aside, not deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from OncoSegLib.training.config import load_config
    from OncoSegLib.training.trainer import train

    logging.basicConfig(level=os.environ.get("ONCOSEG_LOG_LEVEL", "INFO"), format="%(message)s")
    overrides: dict[str, Any] = {}
    if args.output_dir:
        overrides["output_dir"] = str(Path(args.output_dir).resolve())
    cfg = load_config(args.config, overrides=overrides or None)
    if args.max_steps is not None:
        for ph in cfg.phases:
            ph.train.max_steps = int(args.max_steps)
    if args.device:
        cfg.model.device = args.device
    if args.restart and cfg.output_dir.exists() and int(os.environ.get("RANK", "0")) == 0:
        aside = cfg.output_dir.with_name(f"{cfg.output_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        cfg.output_dir.rename(aside)
        print(f"previous run moved to {aside}", file=sys.stderr)
    result = train(cfg, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_json(), indent=2))
    return 0
