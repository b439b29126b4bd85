"""``oncoseg metrics PRED GT [--tolerance-mm 2] [--json]``: compare two NIfTI label maps per label.

Prints a table, or with ``--json`` one JSON object::

    {"tolerance_mm": 2.0, "spacing_ijk_mm": [si, sj, sk], "cvpr_rule": false,
     "labels": {"1": {"dice": ..., "iou": ..., "nsd": ..., "hd95": ..., "volume_ml": ..., "volume_gt_ml": ...,
                      "recist_long_mm": ..., "recist_short_mm": ...,
                      "recist_gt_long_mm": ..., "recist_gt_short_mm": ...}}}

``hd95`` is ``null`` when exactly one of the two masks of a label is empty (infinite distance). Definitions:
:mod:`OncoSegLib.metrics`.

Both files must be label maps (:data:`LABEL_MAP_RULE`); a CT or a probability map is refused. ``--pred-label N
--gt-label M`` compares prediction label N with truth label M (reported as label ``"N:M"``), e.g. when two tools
number the same organ differently.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

#: Most distinct non-zero labels a label map may hold (TotalSegmentator has 117; a CT has thousands of values).
MAX_LABELS = 1000
LABEL_MAP_RULE = (f"a label map holds whole numbers >= 0 (integer data, or float data whose every value is a whole "
                  f"number) with at most {MAX_LABELS} distinct non-zero labels")


def check_label_map(array: np.ndarray, what: str) -> None:
    """InputError naming the broken rule when ``array`` is not a label map (:data:`LABEL_MAP_RULE`)."""
    from OncoSegLib.io.labels import unique_labels

    if array.dtype == bool:
        return
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"{what} is not a label map ({array.dtype} data); {LABEL_MAP_RULE}")
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(f"{what} is not a label map: float data with fractional or NaN values (an image or a "
                             f"probability map?); {LABEL_MAP_RULE}", "threshold or convert it to integer labels")
    if array.size and array.min() < 0:
        raise InputError(f"{what} is not a label map: negative values (min {array.min():g}; an image such as a CT?); "
                         f"{LABEL_MAP_RULE}")
    n = int(np.count_nonzero(unique_labels(array)))
    if n > MAX_LABELS:
        raise InputError(f"{what} is not a label map: {n} distinct non-zero values (an image such as a CT?); "
                         f"{LABEL_MAP_RULE}")


def read_label_map(path: str | Path) -> Volume:
    """Read a NIfTI label map into a Volume (via :func:`OncoSegLib.io.nifti.read_nifti`); InputError when it is
    not a label map (:data:`LABEL_MAP_RULE`)."""
    from OncoSegLib.io.nifti import is_nifti_path, read_nifti

    if not is_nifti_path(path):
        raise InputError(f"{path}: metrics reads NIfTI label maps (.nii / .nii.gz)",
                         "convert it first with `oncoseg convert`")
    vol = read_nifti(path)
    if vol.channels != 1:
        raise InputError(f"{path} has {vol.channels} channels; a label map has one")
    check_label_map(vol.array, str(path))
    return vol


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "metrics", help="Dice, IoU, NSD, HD95, volume and RECIST per label of two NIfTI label maps",
        description="Compare a predicted label map with a reference on the same voxel grid. Distances in mm "
                    "(anisotropic spacing honoured). Empty masks: both empty -> dice/nsd 1, hd95 0; one empty -> "
                    "dice/nsd 0, hd95 inf (JSON null).")
    p.add_argument("pred", help="predicted label map (.nii/.nii.gz)")
    p.add_argument("gt", help="reference label map (.nii/.nii.gz), same grid")
    p.add_argument("--tolerance-mm", type=float, default=2.0, help="NSD tolerance in mm (default 2)")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help="labels to evaluate (default: every non-zero label in either map)")
    p.add_argument("--pred-label", type=int, default=None, metavar="N",
                   help="compare prediction label N ... (with --gt-label)")
    p.add_argument("--gt-label", type=int, default=None, metavar="M",
                   help="... with truth label M (reported as label 'N:M'; e.g. the same organ numbered differently)")
    p.add_argument("--cvpr-rule", action="store_true", help="NSD = 0 when Dice <= 0.2 (CVPR challenge rule)")
    p.add_argument("--no-recist", action="store_true", help="skip RECIST diameters (faster on big volumes)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else ("nan" if math.isnan(v) else f"{v:.4f}")


def run(args: argparse.Namespace) -> int:
    from OncoSegLib.metrics import axial_array_axis, evaluate_label_maps, to_jsonable

    if not (args.tolerance_mm >= 0 and math.isfinite(args.tolerance_mm)):
        raise InputError(f"--tolerance-mm must be a finite number >= 0, got {args.tolerance_mm}")
    mapped = args.pred_label is not None or args.gt_label is not None
    if mapped:
        if args.pred_label is None or args.gt_label is None:
            raise InputError("--pred-label and --gt-label go together", "e.g. --pred-label 3 --gt-label 1")
        if args.labels is not None:
            raise InputError("--labels cannot be combined with --pred-label/--gt-label")
        if args.pred_label <= 0 or args.gt_label <= 0:
            raise InputError("--pred-label and --gt-label must be non-zero labels (0 is background)")
    pred, gt = read_label_map(args.pred), read_label_map(args.gt)
    if pred.shape_kji != gt.shape_kji:
        raise InputError(f"grids differ: prediction is {pred.shape_ijk} voxels (I,J,K), truth {gt.shape_ijk}",
                         "resample the prediction onto the reference grid")
    if not pred.same_grid(gt):
        raise InputError("grids differ: same size but different spacing/origin/orientation",
                         "resample the prediction onto the reference grid")
    pred_a, gt_a, labels = pred.array, gt.array, args.labels
    if mapped:
        pred_a, gt_a, labels = (pred_a == args.pred_label).astype(np.uint8), (gt_a == args.gt_label).astype(
            np.uint8), [1]
    results = evaluate_label_maps(pred_a, gt_a, spacing_ijk=gt.spacing, tolerance_mm=args.tolerance_mm,
                                  labels=labels, cvpr_rule=args.cvpr_rule, with_recist=not args.no_recist,
                                  axial_axis=axial_array_axis(gt.direction))
    if mapped:
        results = {f"{args.pred_label}:{args.gt_label}": results[1]}  # type: ignore[dict-item]
    if args.json:
        print(json.dumps({"tolerance_mm": float(args.tolerance_mm), "spacing_ijk_mm": list(gt.spacing),
                          "cvpr_rule": bool(args.cvpr_rule), "labels": to_jsonable(results)}, indent=2))
        return 0
    cols = ["dice", "iou", "nsd", "hd95", "volume_ml", "volume_gt_ml"]
    if not args.no_recist:
        cols += ["recist_long_mm", "recist_short_mm", "recist_gt_long_mm", "recist_gt_short_mm"]
    head = ["label"] + [f"nsd@{args.tolerance_mm:g}mm" if c == "nsd" else ("hd95_mm" if c == "hd95" else c)
                        for c in cols]
    rows = [[str(lab)] + [_fmt(r[c]) for c in cols] for lab, r in results.items()]
    widths = [max(len(h), *(len(row[n]) for row in rows)) if rows else len(h) for n, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    if not rows:
        print("(no non-zero label in either map)")
    return 0
