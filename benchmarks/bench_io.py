"""Speed of OncoSegLib.io on a synthetic CT series: write DICOM, read DICOM (ours vs SimpleITK), NIfTI round trip.

Usage: python benchmarks/bench_io.py [--slices 100] [--size 512]
Prints a markdown table (seconds, best of --repeat runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from OncoSegLib.io.dicom_series import read_dicom_series
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_geometry
from OncoSegLib.io.nifti import read_nifti, write_nifti
from OncoSegLib.io.volume import Volume


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    shape = (a.slices, a.size, a.size)
    spacing, origin, direction = example_geometry("oblique", shape)
    rng = np.random.default_rng(0)
    vol = Volume(rng.integers(-1024, 2000, size=shape).astype(np.int16), spacing=spacing, origin=origin,
                 direction=direction)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "ct"
        rows.append(("write_dicom_series", _best(lambda: write_dicom_series(vol, d, overwrite=True), a.repeat)))
        rows.append(("read_dicom_series", _best(lambda: read_dicom_series(d), a.repeat)))
        try:
            import SimpleITK as sitk

            def sitk_read():
                r = sitk.ImageSeriesReader()
                r.SetFileNames(r.GetGDCMSeriesFileNames(str(d)))
                sitk.GetArrayFromImage(r.Execute())

            rows.append(("SimpleITK ImageSeriesReader (reference)", _best(sitk_read, a.repeat)))
        except ImportError:
            pass
        nii = Path(tmp) / "v.nii.gz"
        rows.append(("write_nifti (.nii.gz)", _best(lambda: write_nifti(vol, nii), a.repeat)))
        rows.append(("read_nifti (.nii.gz)", _best(lambda: read_nifti(nii), a.repeat)))
    print(f"Volume {shape[2]}x{shape[1]}x{shape[0]} int16 (i x j x k), oblique; best of {a.repeat}\n")
    print("| operation | seconds |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")


if __name__ == "__main__":
    main()
