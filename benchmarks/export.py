"""Benchmark of clinical export: RTSTRUCT write + read and DICOM SEG write on a 200 x 512 x 512 CT.

Three ROIs as overlapping masks, like a planning CT: a body outline (ellipse, ~480 x 380 px, on every slice), a liver-
like organ inside it and a tumour with a necrotic hole. Each operation runs in a fresh Python process so that its
peak resident memory (VmHWM, including the interpreter and libraries; masks memory-mapped) is its own.

Reference (measured here, same job): rt-utils 1.2.7 took 7.6 s to write, 6.5 s to read, ~830 MB peak.

    python benchmarks/export.py [--slices 200] [--size 512] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np
op, work = sys.argv[1], sys.argv[2]
from OncoSegLib.export.rtstruct import write_rtstruct, read_rtstruct_masks
from OncoSegLib.export.seg import write_seg
def hwm_mb():  # peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
masks = np.load(f"{work}/masks.npy", mmap_mode="r")
base = hwm_mb()
t = time.perf_counter()
if op == "rt_write":
    write_rtstruct(masks, f"{work}/ct", f"{work}/rt.dcm", names=["BODY", "Liver", "GTV"])
elif op == "rt_read":
    out = read_rtstruct_masks(f"{work}/rt.dcm", f"{work}/ct")
    ok = all(np.array_equal(m, masks[n]) for n, (_, m) in enumerate(out))
    if not ok:
        raise SystemExit("round trip mismatch")
elif op == "seg_write":
    write_seg(masks, f"{work}/ct", f"{work}/seg.dcm", names=["BODY", "Liver", "GTV"])
elif op == "seg_write_labelmap":  # non-overlapping label map (body minus organs): highdicom needs far less memory
    lab = np.zeros(masks.shape[1:], np.uint8)
    for n in range(masks.shape[0]):
        lab[masks[n]] = n + 1
    write_seg(lab, f"{work}/ct", f"{work}/seg_lab.dcm", names=["BODY", "Liver", "GTV"])
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_mb": hwm_mb(), "import_mb": base}))
"""


def make_case(work: Path, slices: int, size: int) -> None:
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.volume import Volume

    k = np.arange(slices)[:, None, None]
    j = np.arange(size)[None, :, None]
    i = np.arange(size)[None, None, :]
    c = size / 2.0
    body = ((j - c) / (0.37 * size)) ** 2 + ((i - c) / (0.47 * size)) ** 2 < 1
    body = np.broadcast_to(body, (slices, size, size))
    liver = (((k - slices * 0.5) / (0.3 * slices)) ** 2 + ((j - c * 0.9) / (0.15 * size)) ** 2
             + ((i - c * 0.7) / (0.18 * size)) ** 2) < 1
    gtv = (((k - slices * 0.55) / (0.08 * slices)) ** 2 + ((j - c * 1.1) / (0.05 * size)) ** 2
           + ((i - c * 1.3) / (0.05 * size)) ** 2) < 1
    core = (((k - slices * 0.55) / (0.04 * slices)) ** 2 + ((j - c * 1.1) / (0.02 * size)) ** 2
            + ((i - c * 1.3) / (0.02 * size)) ** 2) < 1
    gtv &= ~core
    masks = np.stack([body, liver, gtv]).astype(bool)
    np.save(work / "masks.npy", masks)
    ct = np.where(body, 40, -1000).astype(np.int16)
    vol = Volume(ct, spacing=(0.9765625, 0.9765625, 2.5), origin=(-250.0, -250.0, -300.0))
    write_dicom_series(vol, work / "ct")


def run_child(op: str, work: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, op, str(work)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{op} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="oncoseg_bench_export_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        make_case(work, args.slices, args.size)
        print(f"# case: {args.slices} x {args.size} x {args.size} CT, 3 ROIs (body outline, organ, tumour with "
              f"hole); made in {time.perf_counter() - t:.1f} s")
        rows = []
        for op, label in (("rt_write", "RTSTRUCT write"), ("rt_read", "RTSTRUCT read (rasterise)"),
                          ("seg_write", "DICOM SEG write (overlapping)"),
                          ("seg_write_labelmap", "DICOM SEG write (label map)")):
            r = run_child(op, work)
            rows.append((label, r))
        import pydicom

        ds = pydicom.dcmread(work / "rt.dcm")
        n_contours = sum(len(rc.get("ContourSequence", [])) for rc in ds.ROIContourSequence)
        n_points = sum(int(c.NumberOfContourPoints) for rc in ds.ROIContourSequence
                       for c in rc.get("ContourSequence", []))
        print(f"# RTSTRUCT: {n_contours} contours, {n_points} points, "
              f"{(work / 'rt.dcm').stat().st_size / 1e6:.1f} MB; SEG {(work / 'seg.dcm').stat().st_size / 1e6:.1f} MB")
        print(f"{'operation':28s} {'time s':>8s} {'peak RSS MB':>12s} {'(after imports MB)':>19s}")
        for label, r in rows:
            print(f"{label:28s} {r['seconds']:8.2f} {r['peak_mb']:12.0f} {r['import_mb']:19.0f}")
        print(f"{'rt-utils 1.2.7 write (ref.)':28s} {7.6:8.2f} {830:12.0f}")
        print(f"{'rt-utils 1.2.7 read (ref.)':28s} {6.5:8.2f} {'':>12s}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
