"""``oncoseg import rtstruct|seg``: DICOM RTSTRUCT or SEG -> NIfTI label map on the referenced series' grid.

Labels are numbered in file order (ROI n -> label n); the command prints the label -> name table.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from OncoSegLib.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="import a DICOM RTSTRUCT or SEG as a NIfTI label map",
        description="Rasterise a DICOM RT Structure Set (XOR holes) or read a DICOM Segmentation onto its image "
                    "series and write a NIfTI label map with the series' exact geometry.")
    sub = p.add_subparsers(dest="format", metavar="FORMAT")
    for name, helptext in (("rtstruct", "DICOM RT Structure Set"), ("seg", "DICOM Segmentation")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("input", metavar="FILE", help=f"the {helptext} file")
        q.add_argument("--dicom", required=True, metavar="SERIES_DIR", help="folder of the referenced image series")
        q.add_argument("--out", required=True, metavar="LABELMAP", help="output .nii or .nii.gz")
        q.add_argument("--series", metavar="UID", default=None,
                       help="SeriesInstanceUID when the folder holds several image series")
        q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.export.labelmap_io import write_labelmap
    from OncoSegLib.export.reference import load_reference
    from OncoSegLib.io.nifti import is_nifti_path

    if not getattr(args, "format", None):
        args._parser.print_help()
        return 2
    out = Path(args.out)
    from OncoSegLib.io.outputs import refuse_input_overwrite

    refuse_input_overwrite([("--out", out)], [("FILE", args.input), ("--dicom", args.dicom)])
    if not is_nifti_path(out):
        raise InputError(f"--out {out} must end in .nii or .nii.gz")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists", "choose another --out or pass --overwrite")
    src = Path(args.input)
    if src.is_dir():
        raise InputError(f"{src} is a folder", f"pass the {args.format.upper()} file itself")
    if not src.is_file():
        raise InputError(f"file not found: {src}")
    ref = load_reference(args.dicom, args.series)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.format == "rtstruct":
            from OncoSegLib.export.rtstruct import read_rtstruct

            labels, rois = read_rtstruct(src, ref)
        else:
            from OncoSegLib.export.seg import read_seg

            labels, rois = read_seg(src, ref)
    for w in caught:
        print(f"oncoseg {args.verb}: warning: {w.message}", file=sys.stderr)
    write_labelmap(labels, ref.volume(), out)
    print("label  name")
    for r in rois:
        print(f"{r.label:5d}  {r.name}")
    print(f"wrote {out}")
    return 0
