"""Cost of one inbox poll per job folder: cheap check of a done job, full fingerprint, whole-DICOM check.

Usage: python benchmarks/watch_scan_cost.py [--files 500] [--repeat 50]
Prints a markdown table (milliseconds per job folder). The watcher runs the cheap check (folder mtimes) on every
done job at each poll, the full fingerprint (one stat per file) on new jobs and every ``recheck_s`` on done ones,
and the whole-DICOM check once per new or changed file (cached by name, size and mtime).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from OncoSegLib.autoseg.readiness import fingerprint, fingerprint_digest, incomplete_reason, tree_signature
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.volume import Volume


def _ms(fn, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=500, help="DICOM slices in the job folder")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        arr = np.zeros((args.files, 64, 64), np.int16)
        write_dicom_series(Volume(arr, spacing=(1.0, 1.0, 2.0), modality="CT"), job)
        files = sorted(p for p in job.rglob("*") if p.is_file())
        rows = [
            ("cheap check (folder mtimes)", _ms(lambda: tree_signature(job), args.repeat)),
            ("full fingerprint + digest", _ms(lambda: fingerprint_digest(fingerprint(job)), args.repeat)),
            ("whole-DICOM check of every file", _ms(lambda: [incomplete_reason(f) for f in files],
                                                    max(1, args.repeat // 10))),
        ]
    print(f"| per job folder of {args.files} files | ms |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
