"""Timing of per-volume normalisation, model-input preparation and label-map metrics on CPU (prints a table).

Run: ``python benchmarks/bench_preprocessing_metrics.py [--size 256] [--slices 64]``. No assertions: speed figures only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=1008)
    args = ap.parse_args()

    from OncoSegLib.io.volume import Volume
    from OncoSegLib.metrics import evaluate_label_maps
    from OncoSegLib.preprocessing import fit_normalizer, to_model_input

    rng = np.random.default_rng(0)
    k, n = args.slices, args.size
    ct = Volume(rng.normal(0, 300, (k, n, n)).astype(np.float32), spacing=(0.8, 0.8, 2.5))
    mr = Volume(rng.gamma(2.0, 100, (k, n, n)).astype(np.float32))
    rows = []
    rows.append(("fit_normalizer ct", timed(lambda: fit_normalizer(ct, "ct"), 3)))
    rows.append(("fit_normalizer mri (percentiles)", timed(lambda: fit_normalizer(mr, "mri"), 3)))
    norm = fit_normalizer(mr, "mri")
    rows.append(("normalise one slice", timed(lambda: norm(mr.array[k // 2]), 3)))
    s01 = norm(mr.array[k // 2])
    rows.append((f"to_model_input -> {args.image_size}", timed(lambda: to_model_input(s01, args.image_size), 3)))
    zz, yy, xx = np.mgrid[0:k, 0:n, 0:n]
    gt = np.zeros((k, n, n), np.uint8)
    gt[((zz - k / 2) * 2.5) ** 2 + ((yy - n / 2) * 0.8) ** 2 + ((xx - n / 2) * 0.8) ** 2 < (n * 0.25) ** 2] = 1
    pred = ndimage.binary_dilation(gt == 1, iterations=2).astype(np.uint8)
    pred[gt == 0] *= (rng.random(int((gt == 0).sum())) > 0.5).astype(np.uint8)
    rows.append(("evaluate_label_maps (1 label, no RECIST)",
                 timed(lambda: evaluate_label_maps(pred, gt, (2.5, 0.8, 0.8), with_recist=False))))
    rows.append(("evaluate_label_maps (1 label, RECIST)",
                 timed(lambda: evaluate_label_maps(pred, gt, (2.5, 0.8, 0.8)))))
    print(f"volume {k} x {n} x {n}, CPU threads as configured")
    print(f"{'step':45s} {'seconds':>9s}")
    for name, sec in rows:
        print(f"{name:45s} {sec:9.3f}")


if __name__ == "__main__":
    main()
