"""CVPR 2025 interactive protocol on the shipped real CT (TotalSegmentator example), as challenge-format npz cases.

    python3 benchmarks/cvpr25_real_ct.py --out /tmp/cvpr25_real_ct [--model litemedsam] [--device cpu] [--jobs 2]

1. Writes one challenge npz per structure (``CT_<name>.npz``: ``imgs`` (z, y, x) int16 HU, ``gts`` uint8 with the
   structure as label 1, ``spacing`` (x, y, z) mm as SimpleITK gives it, ``boxes`` = one dict per class by
   ``get_boxes.py``'s rule without its random 0-5 px enlargement) and one multi-class case ``CT_all.npz`` (labels
   1..n in the order of :data:`STRUCTURES`), from ``OncoSegLib/data/real_ct/example_ct_sm.nii.gz`` +
   ``example_seg.nii.gz`` (array axes = the NIfTI's voxel axes, k axial).
2. Runs ``oncoseg evaluate interactive`` on each case (one CLI process per case, ``--jobs`` side by side; official
   spacing - the CT is 3 mm isotropic, so ``--physical-spacing`` gives the same numbers) and prints a markdown table:
   DSC_AUC, NSD_AUC, DSC_Final, NSD_Final, the model's time per case (the protocol's) and the process CPU time.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "OncoSegLib" / "data" / "real_ct"
#: (name, TotalSegmentator label) of the structures evaluated.
STRUCTURES = [("liver", 5), ("spleen", 1), ("kidney_right", 2), ("kidney_left", 3), ("stomach", 6), ("aorta", 52)]


def write_cases(out: Path) -> list[Path]:
    """Write the challenge npz cases into ``out`` (see the module docstring); return their paths."""
    import SimpleITK as sitk

    from OncoSegLib.evaluation.click_protocol import box_from_mask

    out.mkdir(parents=True, exist_ok=True)
    ct = sitk.ReadImage(str(DATA / "example_ct_sm.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "example_seg.nii.gz")))
    imgs = sitk.GetArrayFromImage(ct).astype(np.int16)
    spacing = np.array(ct.GetSpacing(), dtype=np.float64)  # (x, y, z), as the challenge files store it
    paths = []

    def save(name: str, gts: np.ndarray) -> None:
        boxes = [box_from_mask(gts == lab).to_challenge() for lab in np.unique(gts)[1:]]
        path = out / f"CT_{name}.npz"
        np.savez_compressed(path, imgs=imgs, gts=gts, spacing=spacing, boxes=np.array(boxes, dtype=object))
        paths.append(path)

    every = np.zeros(seg.shape, np.uint8)
    for n, (name, label) in enumerate(STRUCTURES, start=1):
        save(name, (seg == label).astype(np.uint8))
        every[seg == label] = n
    save("all", every)
    return paths


def run_case_cli(npz: Path, out: Path, model: str, device: str, extra: list[str]) -> tuple[list[str], float, float]:
    """One ``oncoseg evaluate interactive`` call on one case; returns (command, wall s, CPU s of that child).

    The CPU time is the child's own (``os.wait4``): ``getrusage(RUSAGE_CHILDREN)`` would mix in the other cases
    running side by side.
    """
    import os

    cmd = [sys.executable, "-m", "OncoSegLib", "evaluate", "interactive", "--data", str(npz), "--model", model,
           "--device", device, "--modality", "ct", "--out", str(out), "--quiet", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return cmd, wall, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="litemedsam")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="cases run side by side (one CLI process each)")
    ap.add_argument("--cases", nargs="*", default=None, help="structure names (default: all, then 'all')")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `oncoseg evaluate` options")
    args = ap.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    out = Path(args.out)
    paths = write_cases(out / "npz")
    if args.cases:
        paths = [p for p in paths if p.stem[3:] in args.cases]

    def one(npz: Path) -> tuple[str, list[str], float, float]:
        cmd, wall, cpu = run_case_cli(npz, out / "eval" / npz.stem, args.model, args.device, args.extra)
        print(f"done {npz.stem}: wall {wall:.0f} s, CPU {cpu:.0f} s", file=sys.stderr, flush=True)
        return npz.stem, cmd, wall, cpu

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(one, paths))
    print(f"command per case: {' '.join(done[0][1][1:])}")
    print("| case | classes | DSC_AUC | NSD_AUC | DSC_Final | NSD_Final | DSC per step (box, clicks 1-5) | "
          "model time/case s | process CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stem, _cmd, _wall, cpu in done:
        with open(out / "eval" / stem / "interactive_metrics.csv", newline="") as fh:
            r = list(csv.DictReader(fh))[0]
        steps = ", ".join(f"{float(r[f'DSC_{i}']):.3f}" for i in range(1, 7))
        print(f"| {r['CaseName']} | {r['num_class']} | {float(r['DSC_AUC']):.4f} | {float(r['NSD_AUC']):.4f} | "
              f"{float(r['DSC_Final']):.4f} | {float(r['NSD_Final']):.4f} | {steps} | "
              f"{float(r['TotalRunningTime']):.1f} | {cpu:.0f} |")
        summary = json.loads((out / "eval" / stem / "interactive_summary.json").read_text())["summary"]
        if summary["n_failed_steps"] or summary["n_not_counted"]:
            print(f"  {stem}: failed steps {summary['n_failed_steps']}, not counted {summary['n_not_counted']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
