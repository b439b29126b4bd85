"""Modality-specific intensity normalisation and model-input preparation (the ten Onco-Seg transforms).

Pipeline for one 2D slice of a :class:`~OncoSegLib.io.volume.Volume`:

1. ``norm = fit_normalizer(volume, modality)`` — statistics (percentiles, window) are computed **once per
   volume**, never per slice, so that every slice of one volume maps intensities the same way during 3D
   propagation.
2. ``slice01 = norm(volume.array[k])`` — float32 in [0, 1], shape (J, I, 3): grey images are repeated to three
   channels; 4-channel BraTS MRI is reduced to [T1w, T1gd, FLAIR] (indices [1, 2, 0]); 2-channel SRH gets a
   difference channel.
3. ``x = to_model_input(slice01, image_size)`` — bilinear resize to S x S ignoring the aspect ratio, antialiased
   (a slice larger than S is low-pass filtered while it shrinks), ``align_corners=False``, then ``(x - 0.5) / 0.5``
   -> torch float32 (3, S, S) in [-1, 1]. Model pixel (x, y) = ((i + 0.5) * S / I - 0.5, (j + 0.5) * S / J - 0.5)
   for slice pixel (i, j). This is the SAM3 processors' resize: transformers' ``Sam3ImageProcessor`` calls
   torchvision ``resize(..., BILINEAR, antialias=True)`` and Meta's ``sam3`` ``Sam3Processor`` ``v2.Resize``
   (antialias on by default; an older Meta version used PIL ``BILINEAR``, which is antialiased too); pure torch
   here (``interpolate(..., antialias=True)``, which equals PIL's bilinear to ~1e-5, tested). The one difference:
   those processors resize 8-bit RGB, we resize the float [0, 1] slice (no 1/255 quantisation).

Frames: arrays are in IJK storage order, ``array[k, j, i]`` (+ channel last); one slice is ``(J, I)`` or
``(J, I, C)``. Model pixels are (x, y) in the S x S model input.

The transforms (``p_a`` = the a-th percentile, numpy's default linear interpolation, of all finite voxels of the
whole volume, per channel where stated; ``x01 = clip((x - low) / (high - low), 0, 1)``):

============  ======================================================================================
modality      transform
============  ======================================================================================
ct            HU window, default [-1000, 1000] (``window=(lo, hi)``; W/L via ``ct_window_from_width_level``)
mri           per-channel p1 .. p99
pet           non-finite handling (NaN -> low, -inf -> low, +inf -> high), then p0.5 .. p99.5 (all channels)
ultrasound    p2 .. p98 (all channels together: colour Doppler keeps its hue)
xray          p1 .. p99 then wide-dynamic-range compression ``y = log(1 + c*x01) / log(1 + c)``, c = 10
chest_xray    p0.5 .. p99.5 (all channels together)
mammography   p1 .. p99 of the non-zero (breast) pixels; zero background stays 0
dermoscopy    per-channel RGB p1 .. p99
endoscopy     per-channel RGB p5 .. p95
srh           per-channel log transform ``log1p(max(x - min_c, 0))`` then p1 .. p99 of the logs
============  ======================================================================================

Percentiles are exact (``numpy.percentile``) for up to 2**24 values per channel; larger volumes use a
deterministic strided subsample of 2**24 values (documented approximation; the error is far below one grey level).
A constant channel (high == low) maps to 0. Non-finite voxels (NaN/inf) are handled the same way for every
modality: statistics ignore them, NaN and -inf map to 0 and +inf to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

MODALITIES: tuple[str, ...] = (
    "ct", "mri", "pet", "ultrasound", "xray", "chest_xray", "mammography", "dermoscopy", "endoscopy", "srh",
)

#: Default CT window in HU (Onco-Seg): [-1000, 1000].
CT_DEFAULT_WINDOW: tuple[float, float] = (-1000.0, 1000.0)
#: BraTS / MSD Task01 channel order is [FLAIR, T1w, T1gd, T2w]; the model sees [T1w, T1gd, FLAIR].
BRATS_CHANNELS: tuple[int, int, int] = (1, 2, 0)
#: Strength ``c`` of the X-ray wide-dynamic-range compression ``log(1 + c x) / log(1 + c)``.
XRAY_WDR_C: float = 10.0
#: Largest number of values per channel used for exact percentiles; above it a strided subsample is used.
MAX_STAT_VALUES: int = 1 << 24

# modality -> (transform name, low percentile, high percentile, per_channel)
_RECIPES: dict[str, tuple[str, float, float, bool]] = {
    "ct": ("window", 0.0, 100.0, False),
    "mri": ("percentile", 1.0, 99.0, True),
    "pet": ("percentile", 0.5, 99.5, False),
    "ultrasound": ("percentile", 2.0, 98.0, False),
    "xray": ("percentile_wdr", 1.0, 99.0, False),
    "chest_xray": ("percentile", 0.5, 99.5, False),
    "mammography": ("percentile_nonzero", 1.0, 99.0, False),
    "dermoscopy": ("percentile", 1.0, 99.0, True),
    "endoscopy": ("percentile", 5.0, 95.0, True),
    "srh": ("log_percentile", 1.0, 99.0, True),
}

_ALIASES = {
    "mr": "mri", "mri": "mri", "ct": "ct", "pt": "pet", "pet": "pet", "us": "ultrasound", "ultrasound": "ultrasound",
    "xray": "xray", "x-ray": "xray", "dx": "xray", "cr": "xray", "chest_xray": "chest_xray", "chest-xray": "chest_xray",
    "cxr": "chest_xray", "mg": "mammography", "mammography": "mammography", "mammo": "mammography",
    "dermoscopy": "dermoscopy", "derm": "dermoscopy", "endoscopy": "endoscopy", "es": "endoscopy",
    "endo": "endoscopy", "srh": "srh",
}


def canonical_modality(name: str) -> str:
    """Map a modality name or DICOM code ("MR", "PT", "US", "x-ray", ...) to one of :data:`MODALITIES`."""
    key = str(name).strip().lower().replace(" ", "_")
    if key in _ALIASES:
        return _ALIASES[key]
    raise InputError(f"unknown modality '{name}'", f"use one of: {', '.join(MODALITIES)}")


def ct_window_from_width_level(width: float, level: float) -> tuple[float, float]:
    """CT window (low, high) in HU from a width and level, e.g. W400/L40 -> (-160, 240)."""
    if not width > 0:
        raise InputError(f"CT window width must be positive, got {width}", "e.g. width 400, level 40")
    return (float(level) - float(width) / 2.0, float(level) + float(width) / 2.0)


def select_brats_channels(array: np.ndarray) -> np.ndarray:
    """BraTS/MSD 4-channel MRI [FLAIR, T1w, T1gd, T2w] (channel last) -> [T1w, T1gd, FLAIR] = indices [1, 2, 0]."""
    a = np.asarray(array)
    if a.ndim < 1 or a.shape[-1] != 4:
        raise InputError(f"BraTS channel selection needs 4 channels last, got shape {a.shape}",
                         "pass the (..., 4) FLAIR/T1w/T1gd/T2w array")
    return a[..., list(BRATS_CHANNELS)]


def _percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Percentiles of the finite entries of ``values`` (flattened); NaN pair when none is finite."""
    v = np.asarray(values).reshape(-1)
    if v.size > MAX_STAT_VALUES:  # deterministic strided subsample: keeps memory and time bounded
        step = int(math.ceil(v.size / MAX_STAT_VALUES))
        v = v[::step]
    v = v[np.isfinite(v)] if not np.issubdtype(v.dtype, np.integer) else v
    if v.size == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(v.astype(np.float64, copy=False), list(qs))]


def _srh_log(x: np.ndarray, offset: float) -> np.ndarray:
    """SRH log transform log1p(max(x - offset, 0)); NaN stays NaN, +inf stays +inf, -inf -> 0."""
    with np.errstate(invalid="ignore"):
        return np.log1p(np.maximum(np.asarray(x, dtype=np.float64) - offset, 0.0))


@dataclass
class Normalizer:
    """Maps any slab or slice of one volume to float32 [0, 1] with 3 channels last.

    Attributes:
        modality: one of :data:`MODALITIES`.
        transform: "window", "percentile", "percentile_wdr", "percentile_nonzero" or "log_percentile".
        low, high: per *used* channel intensity bounds (after channel selection; after the log for SRH) mapped
            to 0 and 1. One entry per channel, or one shared entry.
        in_channels: channels of the volume the normaliser was fitted on (1 = grey, no channel axis).
        channel_select: indices taken from the last axis first (BraTS [1, 2, 0]) or None.
        window: the CT window (low, high) in HU, else None.
        percentiles: the (low, high) percentiles used, else None.
        log_offset: per-channel minimum subtracted before the SRH log, else None.
        wdr_c: X-ray compression strength, else None.
    """

    modality: str
    transform: str
    low: list[float]
    high: list[float]
    in_channels: int = 1
    channel_select: list[int] | None = None
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None
    log_offset: list[float] | None = None
    wdr_c: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Normalise ``array`` (shape (...) for grey volumes, (..., C) with C = ``in_channels`` otherwise).

        Returns float32 (..., 3) in [0, 1].
        """
        a = np.asarray(array)
        if self.in_channels > 1:
            if a.ndim < 1 or a.shape[-1] != self.in_channels:
                raise InputError(f"expected {self.in_channels} channels last, got shape {a.shape}",
                                 "pass a slice of the volume this normaliser was fitted on")
            if self.channel_select is not None:
                a = a[..., list(self.channel_select)]
            chans = [a[..., c] for c in range(a.shape[-1])]
        else:
            chans = [a]
        out = []
        for c, x in enumerate(chans):
            lo = self.low[c] if len(self.low) > 1 else self.low[0]
            hi = self.high[c] if len(self.high) > 1 else self.high[0]
            xf = np.asarray(x, dtype=np.float64)
            if self.transform == "log_percentile":
                offs = self.log_offset or [0.0]
                xf = _srh_log(xf, offs[c] if len(offs) > 1 else offs[0])
            y = _scale01(xf, lo, hi)
            if self.transform == "percentile_wdr":
                cc = float(self.wdr_c or XRAY_WDR_C)
                y = np.log1p(cc * y) / math.log1p(cc)
            if self.transform == "percentile_nonzero":
                y = np.where(np.asarray(x) == 0, 0.0, y)
            out.append(y)
        if len(out) == 1:
            out = out * 3
        elif len(out) == 2:  # SRH-style stack: (CH2, CH3, CH3 - CH2)
            out = [out[0], out[1], np.clip(out[1] - out[0], 0.0, 1.0)]
        elif len(out) != 3:
            raise InputError(f"{len(out)} channels cannot be mapped to 3", "select 1, 2, 3 or 4 (BraTS) channels")
        return np.stack(out, axis=-1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description (all floats/lists)."""
        return {
            "modality": self.modality, "transform": self.transform,
            "low": [float(v) for v in self.low], "high": [float(v) for v in self.high],
            "in_channels": int(self.in_channels),
            "channel_select": None if self.channel_select is None else [int(v) for v in self.channel_select],
            "window": None if self.window is None else [float(v) for v in self.window],
            "percentiles": None if self.percentiles is None else [float(v) for v in self.percentiles],
            "log_offset": None if self.log_offset is None else [float(v) for v in self.log_offset],
            "wdr_c": self.wdr_c, "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        """Inverse of :meth:`to_dict`."""
        return cls(
            modality=d["modality"], transform=d["transform"], low=list(d["low"]), high=list(d["high"]),
            in_channels=int(d.get("in_channels", 1)), channel_select=d.get("channel_select"),
            window=None if d.get("window") is None else tuple(d["window"]),  # type: ignore[arg-type]
            percentiles=None if d.get("percentiles") is None else tuple(d["percentiles"]),  # type: ignore[arg-type]
            log_offset=d.get("log_offset"), wdr_c=d.get("wdr_c"), extra=dict(d.get("extra") or {}),
        )


def _scale01(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """clip((x - lo) / (hi - lo), 0, 1); NaN and -inf -> 0, +inf -> 1; constant (hi <= lo or NaN) -> 0."""
    x = np.asarray(x, dtype=np.float64)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        y = np.where(x == np.inf, 1.0, 0.0)
        return y
    with np.errstate(invalid="ignore", over="ignore"):
        y = (x - lo) / (hi - lo)
    y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(y, 0.0, 1.0)


def fit_normalizer(volume: Volume | np.ndarray, modality: str,
                   window: tuple[float, float] | None = None) -> Normalizer:
    """Compute the per-volume statistics of ``modality``'s transform (see the module table).

    Args:
        volume: the whole volume (``Volume`` or an array (K, J, I[, C]) / (J, I[, C]) — a bare array is taken as
            grey unless it is 4-D, or 3-D with a last axis of 2, 3 or 4 and modality in the colour/multichannel set).
        modality: a name of :data:`MODALITIES` (or alias such as "MR", "PT", "US").
        window: CT only: (low, high) HU window; default [-1000, 1000].
    """
    mod = canonical_modality(modality)
    if isinstance(volume, Volume):
        arr = volume.array
        in_ch = volume.channels
    else:
        arr = np.asarray(volume)
        in_ch = _guess_channels(arr, mod)
    transform, plo, phi, per_channel = _RECIPES[mod]
    if mod != "ct" and window is not None:
        raise InputError(f"a window applies to CT only (modality is {mod})", "drop --window or choose ct")
    if in_ch > 4 or (in_ch == 4 and mod != "mri"):
        raise InputError(f"{mod} volume with {in_ch} channels is not supported",
                         "give a grey or RGB image (4 channels only for BraTS MRI)")
    if mod == "ct":
        if in_ch != 1:
            raise InputError("CT needs a grey volume in HU, got a colour image",
                             "choose a colour modality (endoscopy, dermoscopy) or load the CT series")
        w = CT_DEFAULT_WINDOW if window is None else (float(window[0]), float(window[1]))
        if not w[1] > w[0]:
            raise InputError(f"CT window must have low < high, got {w}", "e.g. window=(-160, 240) for W400/L40")
        return Normalizer(mod, transform, [w[0]], [w[1]], in_channels=1, window=w)
    select = list(BRATS_CHANNELS) if in_ch == 4 else None
    if in_ch > 1:
        data = arr[..., select] if select is not None else arr
        chans = [data[..., c] for c in range(data.shape[-1])]
    else:
        chans = [arr]
    offsets: list[float] | None = None
    if transform == "log_percentile":
        offsets = []
        logged = []
        for x in chans:
            xf = np.asarray(x, dtype=np.float64)
            fin = xf[np.isfinite(xf)]
            off = float(fin.min()) if fin.size else 0.0
            offsets.append(off)
            logged.append(_srh_log(xf, off))  # NaN stays NaN, +inf stays inf: ignored by the statistics
        chans = logged
    if transform == "percentile_nonzero":
        chans = [np.asarray(x)[np.asarray(x) != 0] for x in chans]
    if per_channel:
        stats = [_percentiles(x, (plo, phi)) for x in chans]
        low, high = [s[0] for s in stats], [s[1] for s in stats]
    else:
        joint = np.concatenate([np.asarray(x).reshape(-1) for x in chans]) if len(chans) > 1 else chans[0]
        s = _percentiles(joint, (plo, phi))
        low, high = [s[0]], [s[1]]
    return Normalizer(mod, transform, low, high, in_channels=in_ch, channel_select=select,
                      percentiles=(plo, phi), log_offset=offsets,
                      wdr_c=XRAY_WDR_C if transform == "percentile_wdr" else None)


def _guess_channels(arr: np.ndarray, mod: str) -> int:
    if arr.ndim == 4:
        return int(arr.shape[-1])
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4) and mod in ("dermoscopy", "endoscopy", "srh", "mri"):
        return int(arr.shape[-1])
    return 1


def normalize_volume(volume: Volume, modality: str, window: tuple[float, float] | None = None) -> np.ndarray:
    """Convenience: ``fit_normalizer(volume, modality, window)(volume.array)`` -> float32 (K, J, I, 3)."""
    return fit_normalizer(volume, modality, window)(volume.array)


# ----------------------------------------------------------------------------------------------- resizing (torch)

def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t if t.is_floating_point() else t.float()


def resize_bilinear(image: np.ndarray | torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Bilinear resize of an (H, W, C) or (H, W) image to (h, w[, C]).

    Pure torch (``torch.nn.functional.interpolate``, ``align_corners=False``, ``antialias=True``: shrinking
    low-pass filters as PIL's bilinear does) — the resampling the SAM3 processors use (see the module doc), without
    torchvision. Enlarging is plain bilinear interpolation. Returns the same kind (numpy/torch) it was given,
    float32 for numpy.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    if h <= 0 or w <= 0:
        raise InputError(f"resize target must be positive, got {out_hw}")
    t = _as_tensor(image)
    grey = t.ndim == 2
    if grey:
        t = t[..., None]
    if t.ndim != 3:
        raise InputError(f"resize_bilinear needs (H, W) or (H, W, C), got shape {tuple(t.shape)}")
    x = t.permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    y = y[0].permute(1, 2, 0)
    if grey:
        y = y[..., 0]
    if isinstance(image, torch.Tensor):
        return y
    return y.contiguous().numpy().astype(np.float32, copy=False)


def to_model_input(slice01: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> torch float32 (3, S, S): antialiased bilinear resize ignoring aspect (as the SAM3
    processors; see the module doc), then (x - 0.5) / 0.5."""
    t = _as_tensor(slice01).float()
    if t.ndim != 3 or t.shape[-1] != 3:
        raise InputError(f"model input must be (H, W, 3), got shape {tuple(t.shape)}",
                         "normalise the slice with fit_normalizer(...) first")
    x = t.permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(int(image_size), int(image_size)), mode="bilinear",
                                        align_corners=False, antialias=True)
    return ((y[0] - 0.5) / 0.5).contiguous()


def to_model_batch(slices: Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor,
                   image_size: int) -> torch.Tensor:
    """A list of (H_b, W_b, 3) slices (sizes may differ) or a (B, H, W, 3) array -> torch float32 (B, 3, S, S)."""
    if isinstance(slices, (np.ndarray, torch.Tensor)) and slices.ndim == 4:
        t = _as_tensor(slices).float()
        if t.shape[-1] != 3:
            raise InputError(f"batch must be (B, H, W, 3), got shape {tuple(t.shape)}")
        y = torch.nn.functional.interpolate(t.permute(0, 3, 1, 2), size=(int(image_size), int(image_size)),
                                            mode="bilinear", align_corners=False, antialias=True)
        return ((y - 0.5) / 0.5).contiguous()
    items = list(slices)
    if not items:
        raise InputError("empty batch of slices")
    return torch.stack([to_model_input(s, image_size) for s in items])


def resize_mask_logits(logits: np.ndarray | torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Bilinear resize of mask logits (..., h, w) to (..., H, W) (``align_corners=False``, no antialias).

    Used to map model masks (model pixels) back to slice size (J, I). Threshold the result at 0 afterwards.
    Returns the same kind (numpy/torch) it was given.
    """
    t = _as_tensor(logits)
    if t.ndim < 2:
        raise InputError(f"mask logits need at least 2 dimensions, got shape {tuple(t.shape)}")
    lead = t.shape[:-2]
    x = t.reshape(-1, 1, t.shape[-2], t.shape[-1])
    y = torch.nn.functional.interpolate(x, size=(int(out_hw[0]), int(out_hw[1])), mode="bilinear",
                                        align_corners=False, antialias=False)
    y = y.reshape(*lead, int(out_hw[0]), int(out_hw[1]))
    if isinstance(logits, torch.Tensor):
        return y
    return y.numpy().astype(np.float32, copy=False)


__all__ = [
    "MODALITIES", "CT_DEFAULT_WINDOW", "BRATS_CHANNELS", "XRAY_WDR_C", "Normalizer", "canonical_modality",
    "ct_window_from_width_level", "select_brats_channels", "fit_normalizer", "normalize_volume",
    "resize_bilinear", "to_model_input", "to_model_batch", "resize_mask_logits",
]
