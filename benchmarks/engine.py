"""Engine benchmark: encoder, cached decoder, propagation, memory — each beside a naive baseline from the same run.

    python benchmarks/engine.py                 # tiny random-weight SAM3 (seconds, any CPU)
    python benchmarks/engine.py --full-size     # facebook/sam3 architecture, random weights: 1 slice on CPU
                                                # (~1.5 min on 2 cores); on a GPU also a 200-slice propagation
    python benchmarks/engine.py --rss-slices 500  # + RSS along a 500-slice memory propagation (bounded memory)
Rows:
Times are medians per call / per slice (robust to other load on shared machines).
- encoder ms/slice: ``Sam3Predictor.encode`` on one slice.
- decoder ms/prompt: a point prompt decoded on cached embeddings vs the naive way (full forward = re-encode the
  slice for every prompt).
- propagation slices/s (memory method): OncoSeg's streamed session (features from the embedding cache, old frame
  outputs released) vs transformers' stock ``propagate_in_video_iterator`` over a session holding every frame.
- peak RSS (and peak VRAM on GPU) above the level before each phase, sampled every 20 ms.
- with ``--rss-slices N``: process RSS after 10 % and after all of an N-slice memory propagation through a session
  whose embedding cache is capped at 8 MiB, so that growth would show what the propagation itself keeps per slice.
Random weights: the figures are speed and memory only, never quality.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from OncoSegLib.io.volume import Volume  # noqa: E402
from OncoSegLib.models.bundle import Sam3Bundle, tie_bundle, tracker_from_video  # noqa: E402
from OncoSegLib.models.predictor import Sam3Predictor  # noqa: E402
from OncoSegLib.session import SegmentationSession  # noqa: E402


class PeakRSS:
    """Samples this process's RSS (and CUDA allocated memory) while a phase runs; reports the peak above the start."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process(os.getpid())
        self.peak = 0
        self.base = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    @contextmanager
    def measure(self) -> Iterator["PeakRSS"]:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop.clear()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.vram_base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
        t = threading.Thread(target=self._run, daemon=True)
        t.start()
        try:
            yield self
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._stop.set()
            t.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.vram_peak = (torch.cuda.max_memory_allocated() - self.vram_base) if torch.cuda.is_available() else 0

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def full_size_bundle(device: torch.device) -> Sam3Bundle:
    """facebook/sam3 tracker + video tracker architecture with random weights (no download), tracker tied to video."""
    from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

    torch.manual_seed(0)
    video = Sam3TrackerVideoModel(Sam3TrackerVideoConfig()).eval()
    tracker = tracker_from_video(video)
    tracker.mask_decoder.dynamic_multimask_via_stability = False
    b = Sam3Bundle(tracker=tracker, video=video, image_size=1008, name="full-size-random", source="random")
    tie_bundle(b, verify=False)
    return b.to(device).eval()


def make_volume(n: int, h: int, w: int) -> Volume:
    rng = np.random.default_rng(0)
    arr = (-800 + rng.normal(0, 20, (n, h, w))).astype(np.float32)
    k, j, i = np.mgrid[0:n, 0:h, 0:w]
    arr[((i - w / 2) / (w / 5)) ** 2 + ((j - h / 2) / (h / 6)) ** 2 + ((k - n / 2) / n) ** 2 <= 1] = 200
    return Volume(arr, spacing=(0.8, 0.8, 2.0), modality="CT")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", action="store_true", help="full-size SAM3 architecture (random weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--slices", type=int, default=None, help="propagation length (tiny 64; full-size GPU 200)")
    ap.add_argument("--prompts", type=int, default=None, help="decoder prompts timed (tiny 50; full size 10)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rss-slices", type=int, default=0, help="also track RSS along an N-slice propagation")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from OncoSegLib.models.device import pick_device

    dev = pick_device(args.device)
    gpu = dev.type == "cuda"
    t0 = time.perf_counter()
    if args.full_size:
        bundle = full_size_bundle(dev)
        slices = args.slices if args.slices is not None else (200 if gpu else 0)
        n_prompts = args.prompts or 10
        n_naive = 3 if gpu else 1
        hw = (512, 512)
    else:
        from OncoSegLib.models.tiny import tiny_bundle

        bundle = tiny_bundle(seed=0, text=False).to(dev)
        slices = args.slices if args.slices is not None else 64
        n_prompts = args.prompts or 50
        n_naive = n_prompts
        hw = (96, 128)
    build_s = time.perf_counter() - t0
    pred = Sam3Predictor(bundle)
    S = bundle.image_size
    vol = make_volume(max(slices, 3), *hw)

    rows: list[tuple[str, str, str]] = []

    session = SegmentationSession(pred, cache_mb=4096)
    session.set_volume(vol, modality="ct")
    mid = vol.shape_kji[0] // 2
    px = session.pixels("axial", mid).to(dev)

    # ---- encoder
    pred.encode(px)  # warm-up (allocations, kernels)
    sync()
    n_enc = 1 if args.full_size and not gpu else (5 if args.full_size else 21)
    times = []
    with PeakRSS().measure() as m_enc:
        for _ in range(n_enc):
            t = time.perf_counter()
            emb = pred.encode(px)
            sync()
            times.append(time.perf_counter() - t)
    enc_ms = float(np.median(times)) * 1000
    rows.append(("encoder ms/slice", f"{enc_ms:.1f}", "-"))

    # ---- decoder: cached vs naive re-encode
    rng = np.random.default_rng(1)
    pts = rng.uniform(0.2 * S, 0.8 * S, size=(n_prompts, 2)).astype(np.float32)
    pred.predict(emb, points=pts[:1], labels=[1])
    sync()
    times = []
    with PeakRSS().measure() as m_dec:
        for p in pts:
            t = time.perf_counter()
            pred.predict(emb, points=p[None], labels=[1])
            sync()
            times.append(time.perf_counter() - t)
    dec_ms = float(np.median(times)) * 1000
    times = []
    with PeakRSS().measure() as m_naive:
        with torch.inference_mode():
            for p in pts[:n_naive]:
                t = time.perf_counter()
                bundle.tracker(pixel_values=px, input_points=torch.tensor(p[None, None, None], device=dev),
                               input_labels=torch.ones(1, 1, 1, dtype=torch.int64, device=dev),
                               multimask_output=False)
                sync()
                times.append(time.perf_counter() - t)
    naive_ms = float(np.median(times)) * 1000
    rows.append(("decoder ms/prompt (cached vs re-encode)", f"{dec_ms:.1f}", f"{naive_ms:.1f}"))
    rows.append(("  speed-up per prompt", f"{naive_ms / dec_ms:.0f}x", "1x"))

    # ---- propagation: streamed session vs stock transformers (all frames held)
    prop_ours = prop_stock = None
    m_prop = m_stock = None
    if slices and bundle.video is not None:
        o = session.add_object("blob")
        anchor = 0
        session.add_mask(o, vol.array[anchor] > 0, index=anchor)
        stamps = [time.perf_counter()]
        with PeakRSS().measure() as m_prop:
            session.propagate(o, direction="forward", method="memory", min_area=0,
                              progress=lambda d, n, msg: stamps.append(time.perf_counter()))
            sync()
        prop_ours = 1.0 / float(np.median(np.diff(stamps)))  # median per slice: robust to other load
        enc_in_prop = session.cache.stats.encodes
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        with PeakRSS().measure() as m_stock:
            t = time.perf_counter()
            frames = torch.cat([session.pixels("axial", k) for k in range(slices)])
            ref = Sam3TrackerVideoInferenceSession(video=frames, video_height=hw[0], video_width=hw[1],
                                                   inference_device=dev, inference_state_device=dev,
                                                   dtype=torch.float32)
            mk = torch.nn.functional.interpolate(torch.as_tensor(vol.array[anchor] > 0, dtype=torch.float32)[None, None],
                                                 size=(S, S), mode="bilinear", antialias=True)
            ref.add_mask_inputs(ref.obj_id_to_idx(1), anchor, (mk >= 0.5).float())
            ref.obj_with_new_inputs = [1]
            stock = [time.perf_counter()]
            with torch.inference_mode():
                bundle.video(inference_session=ref, frame_idx=anchor)
                for _ in bundle.video.propagate_in_video_iterator(ref, start_frame_idx=anchor + 1):
                    sync()
                    stock.append(time.perf_counter())
            prop_stock = 1.0 / float(np.median(np.diff(stock)))
        rows.append((f"propagation slices/s ({slices} slices, memory)", f"{prop_ours:.2f}", f"{prop_stock:.2f}"))
        rows.append(("  encoder runs during propagation", str(enc_in_prop), str(slices)))

    # ---- memory
    rows.append(("peak RSS MiB: encode 1 slice", f"{m_enc.mib:.0f}", "-"))
    rows.append(("peak RSS MiB: decode prompts (cached vs re-encode)", f"{m_dec.mib:.0f}", f"{m_naive.mib:.0f}"))
    if m_prop is not None and m_stock is not None:
        rows.append(("peak RSS MiB: propagation (streamed vs stock)", f"{m_prop.mib:.0f}", f"{m_stock.mib:.0f}"))
    if gpu:
        rows.append(("peak VRAM MiB: encode", f"{m_enc.vram_peak / 2**20:.0f}", "-"))
        rows.append(("peak VRAM MiB: decode (cached vs re-encode)", f"{m_dec.vram_peak / 2**20:.0f}",
                     f"{m_naive.vram_peak / 2**20:.0f}"))
        if m_prop is not None and m_stock is not None:
            rows.append(("peak VRAM MiB: propagation (streamed vs stock)", f"{m_prop.vram_peak / 2**20:.0f}",
                         f"{m_stock.vram_peak / 2**20:.0f}"))
    import psutil

    if args.rss_slices and bundle.video is not None:
        n = int(args.rss_slices)
        long_vol = make_volume(n, *hw)
        long_session = SegmentationSession(pred, cache_mb=8)
        long_session.set_volume(long_vol, modality="ct")
        lo = long_session.add_object("blob")
        long_session.add_mask(lo, long_vol.array[0] > 0, index=0)
        at: dict[int, float] = {}

        def track(done: int, total: int, msg: str) -> None:
            if done in (max(1, total // 10), total):
                at[done] = psutil.Process().memory_info().rss / 2 ** 20

        long_session.propagate(lo, direction="forward", method="memory", min_area=0, progress=track)
        (d1, r1), (d2, r2) = sorted(at.items())
        rows.append((f"RSS MiB growth, memory propagation slices {d1}->{d2}", f"{r2 - r1:.1f}", "-"))
        # the (K, J, I) bool result is np.zeros (pages committed on first write): filling it is data, not a leak
        rows.append(("  of which the result mask's own pages", f"{(d2 - d1) * hw[0] * hw[1] / 2 ** 20:.1f}", "-"))

    rows.append(("process RSS MiB at end", f"{psutil.Process().memory_info().rss / 2**20:.0f}", "-"))

    name = "full-size SAM3 architecture (random weights)" if args.full_size else "tiny SAM3 (random weights)"
    print(f"# OncoSeg engine benchmark: {name}, S={S}, slice {hw[0]}x{hw[1]}, device {dev}, "
          f"torch threads {torch.get_num_threads()}, model built in {build_s:.1f} s, "
          f"{bundle.parameter_count() / 1e6:.1f} M unique params")
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | OncoSeg | naive baseline |")
    print(f"|{'-' * (w + 2)}|---------|----------------|")
    for a, b, c in rows:
        print(f"| {a.ljust(w)} | {b:>7} | {c:>14} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
