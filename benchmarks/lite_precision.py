"""Do LiteMedSAM's faster encoders change the masks? Mask Dice of each encoder against the float32 eager network (the
reference implementation's maths), on every structure of the real CT, with the same prompts and the same decoder.

    python benchmarks/lite_precision.py                    # torch fast fp32/bf16, OpenVINO fp32/bf16 vs eager
    python benchmarks/lite_precision.py --threads 1

Per structure of ``OncoSegLib/data/real_ct`` (16 TotalSegmentator labels, as benchmarks/box3d.py):
- per-slice boxes: on every slice holding the structure, the tight box of its reference label is the prompt; the
  masks of all those slices are pooled into one 3D Dice against the eager encoder's masks, and the smallest
  per-slice Dice is kept (slices where both masks are empty count as 1);
- 3D from one box: the CVPR-style 3D box (middle slice's 2D box + slice range), ``propagate()`` with the model's
  default rule (box3d); 3D Dice against the eager encoder's propagated mask (errors can compound along slices).
"Dice >= 0.99 vs reference" is the issue's bar for "masks unchanged".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {"torch fp32 (fast)": ("torch", "fp32"), "openvino fp32": ("openvino", "fp32"),
            "torch bf16": ("torch", "bf16"), "openvino bf16": ("openvino", "bf16")}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def per_slice_masks(session, seg: np.ndarray, label: int) -> np.ndarray:
    """(K, J, I) masks from the tight per-slice box of ``label`` on every slice holding it (the session's cached
    embeddings: each slice is encoded once per encoder, shared with the propagation)."""
    pred = session.predictor
    out = np.zeros(seg.shape, bool)
    h, w = seg.shape[1:]
    for k in np.flatnonzero((seg == label).any(axis=(1, 2))):
        rows, cols = np.nonzero(seg[k] == label)
        x0, y0 = pred.to_model_xy(rows.min(), cols.min(), (h, w))
        x1, y1 = pred.to_model_xy(rows.max(), cols.max(), (h, w))
        out[k] = pred.predict(session.embeddings("axial", int(k)), box=(x0, y0, x1, y1), out_hw=(h, w)).logits > 0
    return out


def propagated(session, seg: np.ndarray, label: int) -> np.ndarray:
    """(K, J, I) mask of ``label`` propagated from its CVPR-style 3D box with the session's default rule."""
    from OncoSegLib.evaluation.click_protocol import box_from_mask

    b = box_from_mask(seg == label)
    oid = session.add_object(str(label))
    session.add_box(oid, (b.x_min, b.y_min, b.z_min), (b.x_max, b.y_max, b.z_max), center=b.z_mid)
    session.propagate(oid)
    out = session.result(oid)
    session.remove_object(oid)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of the table's rows")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from box3d import REAL_CT_STRUCTURES

    from OncoSegLib.io.loader import load_volume
    from OncoSegLib.models.litemedsam.openvino_encoder import default_cache_dir
    from OncoSegLib.models.litemedsam.predictor import LiteMedSamPredictor, load_litemedsam

    data = ROOT / "OncoSegLib" / "data" / "real_ct"
    vol = load_volume(str(data / "example_ct_sm.nii.gz"))
    seg = np.asarray(load_volume(str(data / "example_seg.nii.gz")).array).astype(np.int32)
    base = load_litemedsam(encoder="eager")
    labels = [lab for lab in REAL_CT_STRUCTURES if (seg == lab).any()]

    def run(pred) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        from OncoSegLib.session import SegmentationSession

        session = SegmentationSession(pred, cache_mb=1024)  # one session: every slice encoded once per encoder
        session.set_volume(vol, modality="ct")
        return {lab: (per_slice_masks(session, seg, lab), propagated(session, seg, lab)) for lab in labels}

    t = time.perf_counter()
    ref = run(base)
    print(f"LiteMedSAM encoders vs the float32 eager encoder, real CT, {len(labels)} structures, torch threads "
          f"{torch.get_num_threads()} (eager pass {time.perf_counter() - t:.0f} s)\n")
    print("| encoder | per-slice boxes: mean 3D Dice | worst structure | worst slice | 3D from one box (box3d): "
          "mean Dice | worst structure | structures < 0.99 |")
    print("|---|---|---|---|---|---|---|")
    for name in [v for v in args.variants.split(",") if v]:
        enc, prec = VARIANTS[name]
        pred = LiteMedSamPredictor(base.net, encoder=enc, precision=prec,
                                   cache_dir=default_cache_dir(base.info.get("store")))
        got = run(pred)
        slice_d = {lab: dice(got[lab][0], ref[lab][0]) for lab in labels}
        worst_slice = min(dice(got[lab][0][k], ref[lab][0][k]) for lab in labels
                          for k in np.flatnonzero((seg == lab).any(axis=(1, 2))))
        prop_d = {lab: dice(got[lab][1], ref[lab][1]) for lab in labels}
        ws = min(slice_d, key=slice_d.get)
        wp = min(prop_d, key=prop_d.get)
        below = [REAL_CT_STRUCTURES[lab] for lab in labels if prop_d[lab] < 0.99 or slice_d[lab] < 0.99]
        print(f"| {name} ({pred.encoder_name}) | {np.mean(list(slice_d.values())):.4f} | "
              f"{slice_d[ws]:.4f} ({REAL_CT_STRUCTURES[ws]}) | {worst_slice:.4f} | "
              f"{np.mean(list(prop_d.values())):.4f} | {prop_d[wp]:.4f} ({REAL_CT_STRUCTURES[wp]}) | "
              f"{', '.join(below) or 'none'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
