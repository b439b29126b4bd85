"""3D from one box: per-structure 3D Dice of MedSAM's rule (``medsam``) against OncoSeg's rule, on the real CT and on
phantoms, through the public session API.

Prompts (``--box cvpr``, the default): the CVPR challenge's 3D box of each structure, taken from the reference label
map as ``get_boxes.py`` makes it (without its random enlargement; ``OncoSegLib.evaluation.click_protocol.box_from_mask``):
the 2D box of the middle slice holding the structure (``z_mid``, which the session prompts) plus its slice range.
``--box tight``: the tight 3D bounding box of the largest 26-connected component instead (an easier prompt: its
in-plane extent covers every slice). :meth:`SegmentationSession.add_box` prompts the box's middle slice
``(lo + hi) // 2`` and bounds propagation to the range. Dice is against the structure's whole reference mask.

    python benchmarks/box3d.py                          # litemedsam (real weights), real CT + 3 phantoms
    python benchmarks/box3d.py --model demo --phantoms 3 --no-real   # the shipped demo model, phantoms only
    python benchmarks/box3d.py --methods medsam box3d box             # any propagation methods

On a busy shared machine pass ``--threads 1`` (two torch threads waiting on each other were several times slower
there). Every slice is encoded once per case (the embedding cache is shared by all methods and structures), so the time
column is the propagation's own decoder + rule time; the encode time is printed once per case.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# label -> name in the real CT's reference (TotalSegmentator v2 "total" classes, OncoSegLib/data/real_ct/README.md)
REAL_CT_STRUCTURES: dict[int, str] = {
    5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 6: "stomach", 4: "gallbladder", 52: "aorta",
    63: "inferior_vena_cava", 30: "vertebra_L2", 31: "vertebra_L1", 32: "vertebra_T12", 86: "autochthon_left",
    87: "autochthon_right", 88: "iliopsoas_left", 89: "iliopsoas_right", 7: "pancreas",
}


@dataclass(frozen=True)
class Box3D:
    """A 3D box in voxel indices (i, j, k), inclusive corners (the prompts file's ``{"min", "max"}``)."""

    ijk_min: tuple[int, int, int]
    ijk_max: tuple[int, int, int]
    center: int | None = None  # the slice k the 2D box was drawn on (None: the range's centre)


def box_from_reference(mask_kji: np.ndarray) -> Box3D:
    """Tight box (IJK, inclusive) of the largest 26-connected component of a (K, J, I) boolean mask."""
    lab, n = ndimage.label(mask_kji, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        raise ValueError("empty reference mask")
    sizes = np.bincount(lab.ravel())[1:]
    big = lab == int(np.argmax(sizes)) + 1
    k, j, i = (np.flatnonzero(big.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    return Box3D((int(i[0]), int(j[0]), int(k[0])), (int(i[-1]), int(j[-1]), int(k[-1])))


def cvpr_box(mask_kji: np.ndarray) -> Box3D:
    """The challenge's 3D box (IJK, inclusive): 2D box on the middle distinct slice + the slice range."""
    from OncoSegLib.evaluation.click_protocol import box_from_mask

    b = box_from_mask(mask_kji)
    return Box3D((b.x_min, b.y_min, b.z_min), (b.x_max, b.y_max, b.z_max), b.z_mid)


BOXES: dict[str, Callable[[np.ndarray], Box3D]] = {"cvpr": cvpr_box, "tight": box_from_reference}


def dice3d(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = int(a.sum()), int(b.sum())
    return 1.0 if sa + sb == 0 else 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


def run_case(session: Any, volume: Any, labels: np.ndarray, structures: dict[int, str], methods: list[str],
             window: tuple[float, float] | None = None, box: str = "cvpr"
             ) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """Segment every structure from its 3D box with every method on one volume.

    Returns (dice[name][method], seconds[method] summed over structures, encode seconds)."""
    session.set_volume(volume, modality="ct", window=window)
    n = volume.array.shape[0]
    t0 = time.perf_counter()
    for k in range(n):  # encode once, outside the per-method timing
        session.embeddings("axial", k)
    t_enc = time.perf_counter() - t0
    out: dict[str, dict[str, float]] = {}
    secs = {m: 0.0 for m in methods}
    for label, name in structures.items():
        ref = labels == label
        if not ref.any():
            continue
        b3 = BOXES[box](ref)
        out[name] = {}
        for method in methods:
            oid = session.add_object(f"{name} {method}")
            session.add_box(oid, b3.ijk_min, b3.ijk_max, center=b3.center)
            t = time.perf_counter()
            session.propagate(oid, method=method)
            secs[method] += time.perf_counter() - t
            out[name][method] = dice3d(session.result(oid), ref)
            session.remove_object(oid)
    return out, secs, t_enc


def print_table(title: str, dice: dict[str, dict[str, float]], secs: dict[str, float], t_enc: float,
                methods: list[str]) -> dict[str, float]:
    """Markdown table: one row per structure, one column per method, then the mean and the time."""
    print(f"\n### {title}\n")
    print("| structure | " + " | ".join(methods) + " | " + " | ".join(f"{m} - {methods[0]}" for m in methods[1:])
          + " |")
    print("|---" * (1 + 2 * len(methods) - 1) + "|")
    for name, row in dice.items():
        diffs = [row[m] - row[methods[0]] for m in methods[1:]]
        print(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in methods) + " | "
              + " | ".join(f"{d:+.3f}" for d in diffs) + " |")
    means = {m: float(np.mean([row[m] for row in dice.values()])) for m in methods}
    print("| **mean** | " + " | ".join(f"**{means[m]:.3f}**" for m in methods) + " | "
          + " | ".join(f"{means[m] - means[methods[0]]:+.3f}" for m in methods[1:]) + " |")
    print("| propagation s (all structures) | " + " | ".join(f"{secs[m]:.1f}" for m in methods) + " |"
          + " |" * (len(methods) - 1))
    print(f"\nencoder: {t_enc:.1f} s for all slices (once, shared by every method)")
    return means


def make_session(model: str) -> Any:
    from OncoSegLib.session import SegmentationSession

    if model == "demo":
        from OncoSegLib.models.loading import load_bundle

        return SegmentationSession(load_bundle(str(ROOT / "OncoSegLib" / "data" / "demo_model")), cache_mb=2048)
    from OncoSegLib.models.loading import load_bundle

    return SegmentationSession(load_bundle(model), cache_mb=2048)


def main(argv: list[str] | None = None, session_factory: Callable[[str], Any] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="litemedsam", help="registry name, model path, or 'demo' (shipped demo model)")
    ap.add_argument("--methods", nargs="+", default=["medsam", "box3d"], help="first = the baseline column")
    ap.add_argument("--phantoms", type=int, default=3, help="number of phantom seeds (0, 1, ...)")
    ap.add_argument("--no-real", action="store_true", help="skip the real CT")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--box", choices=sorted(BOXES), default="cvpr", help="3D box protocol (see the module docstring)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from OncoSegLib.io.loader import load_volume
    from OncoSegLib.phantoms import make_ct_phantom

    session = (session_factory or make_session)(args.model)
    print(f"3D from one box: model {args.model}, methods {args.methods}, {args.box} boxes, "
          f"torch threads {torch.get_num_threads()}")
    all_rows: dict[str, dict[str, float]] = {}
    if not args.no_real:
        data = ROOT / "OncoSegLib" / "data" / "real_ct"
        vol = load_volume(str(data / "example_ct_sm.nii.gz"))
        seg = np.asarray(load_volume(str(data / "example_seg.nii.gz")).array)
        d, secs, t_enc = run_case(session, vol, seg, REAL_CT_STRUCTURES, args.methods, box=args.box)
        print_table(f"real CT (example_ct_sm, {vol.array.shape[::-1]} voxels IJK, 3 mm)", d, secs, t_enc,
                    args.methods)
        all_rows.update({f"CT {k}": v for k, v in d.items()})
    for seed in range(args.phantoms):
        ph = make_ct_phantom(seed=seed)
        d, secs, t_enc = run_case(session, ph.volume, ph.labels, ph.names, args.methods, box=args.box)
        print_table(f"phantom seed {seed}", d, secs, t_enc, args.methods)
        all_rows.update({f"phantom{seed} {k}": v for k, v in d.items()})
    if all_rows:
        means = {m: float(np.mean([r[m] for r in all_rows.values()])) for m in args.methods}
        worst = {m: min(r[m] - r[args.methods[0]] for r in all_rows.values()) for m in args.methods[1:]}
        print("\nall cases: mean 3D Dice " + ", ".join(f"{m} {v:.3f}" for m, v in means.items())
              + "; worst per-structure change vs " + args.methods[0] + ": "
              + ", ".join(f"{m} {v:+.3f}" for m, v in worst.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
