"""``oncoseg convert INPUT OUTPUT.nii.gz [--series UID] [--overwrite]``: any supported image -> NIfTI.

INPUT: a DICOM series folder, a .dcm file, a NIfTI file, a PNG/JPEG/BMP/TIFF image or a CVPR24/25 .npz.
The geometry is kept exactly (LPS -> NIfTI RAS affine). An existing OUTPUT is never replaced without
``--overwrite``; the file is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from OncoSegLib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a DICOM series / NIfTI / 2D image / CVPR npz to NIfTI",
        description="Convert a DICOM series folder (or .dcm file), NIfTI, PNG/JPEG/BMP/TIFF image or CVPR24/25 "
                    ".npz to NIfTI (.nii/.nii.gz), keeping the exact geometry.",
    )
    p.add_argument("input", metavar="INPUT", help="DICOM folder, .dcm, .nii/.nii.gz, image or .npz")
    p.add_argument("output", metavar="OUTPUT", nargs="?", help="output .nii or .nii.gz")
    p.add_argument("--series", metavar="UID", default=None,
                   help="SeriesInstanceUID to read when the DICOM folder holds several series")
    p.add_argument("--list-series", action="store_true", help="list the image series of a DICOM folder and exit")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--labels-out", metavar="PATH", default=None,
                   help="also write the npz 'gts' label map (CVPR npz input) to this .nii/.nii.gz")
    p.set_defaults(func=run)


def _check_output(path: Path, overwrite: bool, what: str = "OUTPUT") -> None:
    from OncoSegLib.io.nifti import is_nifti_path

    if not is_nifti_path(path):
        raise InputError(f"{what} {path} must end in .nii or .nii.gz")
    if path.exists() and path.is_dir():
        raise InputError(f"{what} {path} is a folder", "pass a file name ending in .nii.gz")
    if path.exists() and not overwrite:
        raise InputError(f"{what} {path} already exists", "pass --overwrite to replace it, or choose another name")


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.io.loader import load_volume
    from OncoSegLib.io.nifti import write_nifti
    from OncoSegLib.io.outputs import refuse_input_overwrite, same_path

    src = Path(args.input)
    if args.list_series:
        from OncoSegLib.io.dicom_series import list_series

        if not src.is_dir():
            raise InputError(f"--list-series needs a DICOM folder, got {src}")
        infos = list_series(src)
        if not infos:
            raise InputError(f"no DICOM image series found in {src}")
        for info in infos:
            print(info.summary())
        return 0
    if args.output is None:
        raise InputError("missing OUTPUT", "usage: oncoseg convert INPUT OUTPUT.nii.gz [--series UID]")
    out = Path(args.output)
    labels_out = Path(args.labels_out) if args.labels_out else None
    refuse_input_overwrite([("OUTPUT", out), ("--labels-out", labels_out)], [("INPUT", src)])
    _check_output(out, args.overwrite)
    if labels_out is not None:
        _check_output(labels_out, args.overwrite, "--labels-out")
        if same_path(labels_out, out):
            raise InputError("--labels-out must differ from OUTPUT", "choose another file name")

    volume = load_volume(src, series_uid=args.series)
    gts = volume.metadata.get("gts")
    if labels_out is not None and gts is None:
        raise InputError(f"{src} holds no 'gts' label map for --labels-out")
    write_nifti(volume, out)
    if labels_out is not None:
        write_nifti(volume.with_array(gts, modality=None), labels_out)
    k, j, i = volume.shape_kji
    sp = ", ".join(f"{s:g}" for s in volume.spacing)
    chans = f"x{volume.channels}ch" if volume.channels > 1 else ""
    print(f"wrote {out}: {i}x{j}x{k}{chans} voxels (i,j,k), spacing {sp} mm, "
          f"modality {volume.modality or 'unknown'}")
    if labels_out is not None:
        print(f"wrote {labels_out}: label map")
    return 0
