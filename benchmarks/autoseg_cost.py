"""Cost of the two autoseg 3D strategies: model calls and wall time on a synthetic CT series with the tiny model.

Usage: python benchmarks/autoseg_cost.py [--slices 32] [--size 96] [--structures 3] [--probes 8] [--device cpu]
Prints a markdown table: encoder runs with detector features (text detection passes), tracker-only encoder runs
(propagation features), video-tracker frames and seconds per strategy. The call counts carry over to the full SAM3
model; the seconds do not (tiny random weights, 112-pixel input).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from OncoSegLib.autoseg.pipeline import run_autoseg
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume
from OncoSegLib.models.predictor import Sam3Predictor
from OncoSegLib.models.tiny import tiny_bundle


class Counting(Sam3Predictor):
    """Sam3Predictor that counts encoder and detector calls."""

    def __init__(self, bundle):
        super().__init__(bundle)
        self.counts = {"encode+detector": 0, "encode": 0, "detect_text": 0}

    def encode(self, pixel_values, with_detector=False):
        self.counts["encode+detector" if with_detector else "encode"] += int(pixel_values.shape[0])
        return super().encode(pixel_values, with_detector=with_detector)

    def detect_text(self, *a, **k):
        self.counts["detect_text"] += 1
        return super().detect_text(*a, **k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--structures", type=int, default=3)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    texts = ["liver", "kidney", "spleen", "lung", "heart", "bladder", "stomach", "pancreas"][: args.structures]
    bundle = tiny_bundle()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "ct"
        write_dicom_series(example_volume("head_first", (args.slices, args.size, args.size)), ct)
        for strategy in ("propagate", "every_slice"):
            for prop in (["memory", "centroid"] if strategy == "propagate" else ["-"]):
                pred = Counting(bundle)
                proto = {"name": "bench", "strategy": strategy, "probe_slices": args.probes,
                         "propagation": prop if prop != "-" else "auto",
                         "structures": [{"name": t.title(), "text": t, "min_score": 0.0, "max_instances": 1}
                                        for t in texts]}
                t0 = time.perf_counter()
                res = run_autoseg(ct, proto, out_dir=Path(tmp) / f"out_{strategy}_{prop}", bundle=pred,
                                  device=args.device)
                dt = time.perf_counter() - t0
                rows.append((strategy, prop, pred.counts["encode+detector"], pred.counts["detect_text"],
                             pred.counts["encode"], len(res.found), dt))
    print(f"K = {args.slices} slices of {args.size}x{args.size}, N = {len(texts)} structures, "
          f"probe_slices = {args.probes}, tiny model on {args.device}\n")
    print("| strategy | propagation | encoder+detector runs | detector passes | tracker-only encoder runs "
          "| found | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.1f} |")


if __name__ == "__main__":
    main()
