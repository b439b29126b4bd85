"""``oncoseg export rtstruct|seg``: a NIfTI label map -> DICOM RTSTRUCT or DICOM SEG referencing a CT/MR series.

The label map may be stored in any NIfTI orientation; it is re-indexed onto the series (axis permutation/flip only,
exact) when its voxel grid matches the series', otherwise the command stops with a one-line error.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from OncoSegLib.errors import InputError


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",")]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask", required=True, metavar="LABELMAP", help="label map .nii/.nii.gz (0 = background)")
    p.add_argument("--dicom", required=True, metavar="SERIES_DIR", help="folder of the referenced image series")
    p.add_argument("--out", required=True, metavar="FILE", help="output DICOM file (.dcm)")
    p.add_argument("--series", metavar="UID", default=None,
                   help="SeriesInstanceUID when the folder holds several image series")
    p.add_argument("--names", metavar="A,B,...", default=None,
                   help="structure names in ascending label order (default ROI_<label>)")
    p.add_argument("--colors", metavar="C1,C2,...", default=None,
                   help="colours in ascending label order, each #RRGGBB or R:G:B")
    p.add_argument("--types", metavar="T1,T2,...", default=None,
                   help="RT ROI types in ascending label order (ORGAN, GTV, CTV, PTV, AVOIDANCE, EXTERNAL, ...; "
                        "default: guessed from the name)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a label map as DICOM RTSTRUCT or DICOM SEG",
        description="Write a NIfTI label map as a DICOM RT Structure Set (contours on voxel edges: the planning "
                    "system's volume equals the voxel volume) or a DICOM Segmentation, referencing the image "
                    "series it was drawn on.")
    sub = p.add_subparsers(dest="format", metavar="FORMAT")
    rt = sub.add_parser("rtstruct", help="DICOM RT Structure Set (radiotherapy planning)")
    _add_common(rt)
    rt.add_argument("--keyhole", action="store_true",
                    help="join holes to their outer contour with a zero-width cut instead of separate contours")
    seg = sub.add_parser("seg", help="DICOM Segmentation (binary segments with SNOMED codes where known)")
    _add_common(seg)
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.export.labelmap_io import read_labelmap
    from OncoSegLib.export.reference import load_reference

    if not getattr(args, "format", None):
        args._parser.print_help()
        return 2
    out = Path(args.out)
    from OncoSegLib.io.outputs import refuse_input_overwrite

    refuse_input_overwrite([("--out", out)], [("--mask", args.mask), ("--dicom", args.dicom)])
    if out.exists() and out.is_dir():
        raise InputError(f"--out {out} is a folder", "pass a file name such as RT.dcm")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists", "choose another --out or pass --overwrite")
    mask_path = Path(args.mask)
    if not mask_path.exists():
        raise InputError(f"label map not found: {mask_path}")
    ref = load_reference(args.dicom, args.series)
    labels = read_labelmap(mask_path, ref.volume())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.format == "rtstruct":
            from OncoSegLib.export.rtstruct import write_rtstruct

            write_rtstruct(labels, ref, out, names=_split(args.names), colors=_split(args.colors),
                           types=_split(args.types), keyhole=args.keyhole, overwrite=args.overwrite)
        else:
            from OncoSegLib.export.seg import write_seg

            write_seg(labels, ref, out, names=_split(args.names), colors=_split(args.colors),
                      types=_split(args.types), overwrite=args.overwrite)
    for w in caught:
        print(f"oncoseg {args.verb}: warning: {w.message}", file=sys.stderr)
    print(f"wrote {out}")
    return 0
