"""Guess the imaging modality of a volume, and catch an obviously wrong choice before preprocessing.

:func:`detect_modality` looks at the DICOM ``Modality`` tag first (``volume.modality`` or
``volume.metadata["Modality"]``), then at image statistics. Confidence is an honest 0..1 figure: a DICOM tag gives
0.9-0.99; image statistics give at most 0.85 (CT with air at -1000 HU) and as little as 0.3 where images of
several modalities look alike (2D grey X-ray vs ultrasound, endoscopy vs dermoscopy photographs).

:func:`check_modality` compares a user's choice with what the data look like and raises :class:`InputError`
(or returns warnings) with a message saying what to do.

Never logs or returns patient data: only the modality code, body part and value ranges are used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.preprocessing import MODALITIES, canonical_modality

#: Largest number of voxels looked at for statistics (deterministic strided subsample beyond).
_MAX_VALUES = 1 << 22

# DICOM Modality code -> (modality, confidence)
_TAG_MAP: dict[str, tuple[str, float]] = {
    "CT": ("ct", 0.99), "MR": ("mri", 0.99), "PT": ("pet", 0.99), "NM": ("pet", 0.6), "US": ("ultrasound", 0.99),
    "DX": ("xray", 0.9), "CR": ("xray", 0.9), "RG": ("xray", 0.9), "DR": ("xray", 0.9), "RF": ("xray", 0.8),
    "XA": ("xray", 0.7), "MG": ("mammography", 0.99), "ES": ("endoscopy", 0.95), "XC": ("dermoscopy", 0.6),
    "GM": ("srh", 0.5), "SM": ("srh", 0.5),
}
_XRAY_FAMILY = {"xray", "chest_xray", "mammography"}
_COLOUR = {"dermoscopy", "endoscopy"}


@dataclass(frozen=True)
class ModalityGuess:
    """Result of :func:`detect_modality`.

    Attributes:
        modality: one of :data:`OncoSegLib.preprocessing.MODALITIES`.
        confidence: 0..1 (how sure; below 0.5 ask the user to confirm).
        reason: one line saying what the guess rests on (no patient data).
    """

    modality: str
    confidence: float
    reason: str


def _sample(a: np.ndarray) -> np.ndarray:
    v = np.asarray(a).reshape(-1)
    if v.size > _MAX_VALUES:
        v = v[:: int(np.ceil(v.size / _MAX_VALUES))]
    return v


def _dicom_tag(volume: Volume) -> str | None:
    tag = volume.modality or volume.metadata.get("Modality")
    return str(tag).strip().upper() if tag else None


def _guess_from_tag(volume: Volume) -> ModalityGuess | None:
    tag = _dicom_tag(volume)
    if not tag or tag not in _TAG_MAP:
        return None
    mod, conf = _TAG_MAP[tag]
    reason = f"DICOM Modality tag {tag}"
    if mod == "xray":
        body = str(volume.metadata.get("BodyPartExamined") or "").strip().upper()
        if body in ("CHEST", "THORAX", "LUNG"):
            return ModalityGuess("chest_xray", conf, f"{reason} with BodyPartExamined {body}")
        if body == "BREAST":
            return ModalityGuess("mammography", conf, f"{reason} with BodyPartExamined {body}")
    return ModalityGuess(mod, conf, reason)


def _colour_guess(rgb: np.ndarray) -> ModalityGuess:
    """Endoscopy vs dermoscopy on an RGB photograph (heuristic, confidence <= 0.5)."""
    px = rgb.reshape(-1, rgb.shape[-1])[:, :3]
    if px.shape[0] > _MAX_VALUES // 3:  # deterministic strided subsample of whole pixels
        px = px[:: int(np.ceil(px.shape[0] / (_MAX_VALUES // 3)))]
    v = px.astype(np.float64)
    scale = 255.0 if v.max() > 1.5 else 1.0
    v = v / scale
    bright = v.max(axis=1) > 0.08  # ignore black vignette / borders
    if not bright.any():
        return ModalityGuess("endoscopy", 0.3, "RGB image, almost black: guessed endoscopy")
    r, g, b = (v[bright, c].mean() for c in range(3))
    redness = (r - g) / max(r, 1e-6)
    specular = float(np.mean(v[bright].min(axis=1) > 0.92))
    if redness > 0.35 or specular > 0.005:
        return ModalityGuess("endoscopy", 0.45 if redness > 0.35 and specular > 0.005 else 0.4,
                             f"RGB photograph, red-dominant tissue (redness {redness:.2f}) / specular highlights "
                             f"({100 * specular:.1f}%): looks like endoscopy")
    return ModalityGuess("dermoscopy", 0.4, f"RGB photograph with skin tones (redness {redness:.2f}), no specular "
                                            "highlights: looks like dermoscopy")


def detect_modality(volume: Volume) -> ModalityGuess:
    """Guess the modality of ``volume``: the DICOM Modality tag first, then image statistics.

    Statistics rules (in order), each with its confidence:
    - 4 channels -> mri (0.7, BraTS-like); 2 channels -> srh (0.5);
    - 3 channels that differ -> endoscopy or dermoscopy (colour heuristics, 0.4-0.45); equal channels are grey;
    - a PET unit tag (``metadata["Units"]`` BQML/SUV/CNTS) -> pet (0.8);
    - grey with a minimum <= -900 and >= 1% of voxels in [-1100, -900] HU (air) -> ct (0.85); any minimum < -500
      -> ct (0.6);
    - one 2D slice: > 25% exact-zero pixels -> ultrasound (0.35, fan background), else xray (0.35);
    - 3D, non-integer floats with a long upper tail (p99.9 > 8 x p50 of the non-zero voxels) -> pet (0.4);
    - otherwise 3D grey -> mri (0.45).
    """
    tagged = _guess_from_tag(volume)
    if tagged is not None:
        return tagged
    arr = volume.array
    ch = volume.channels
    tag = _dicom_tag(volume)
    prefix = f"DICOM Modality {tag} is not decisive; " if tag else ""
    if ch == 4:
        return ModalityGuess("mri", 0.7, prefix + "4 channels, like BraTS multi-sequence MRI")
    if ch == 2:
        return ModalityGuess("srh", 0.5, prefix + "2 channels, like stimulated Raman histology (CH2/CH3)")
    if ch == 3:
        rgb = arr
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            g = _colour_guess(rgb)
            return ModalityGuess(g.modality, g.confidence, prefix + g.reason)
        arr = rgb[..., 0]
        prefix += "grey image stored as RGB; "
    units = str(volume.metadata.get("Units") or "").strip().upper()
    if units in ("BQML", "SUV", "CNTS", "GML"):
        return ModalityGuess("pet", 0.8, prefix + f"PET units {units}")
    v = _sample(arr).astype(np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ModalityGuess("ct", 0.1, prefix + "no finite voxel values: nothing to go on")
    vmin = float(v.min())
    air = float(np.mean((v >= -1100) & (v <= -900)))
    if vmin <= -900 and air >= 0.01:
        return ModalityGuess("ct", 0.85, prefix + f"values reach {vmin:.0f} with {100 * air:.0f}% air near -1000 HU")
    if vmin < -500:
        return ModalityGuess("ct", 0.6, prefix + f"strongly negative values (min {vmin:.0f}), HU-like")
    single = volume.shape_kji[0] == 1
    if single:
        zeros = float(np.mean(v == 0))
        if zeros > 0.25:
            return ModalityGuess("ultrasound", 0.35, prefix + f"2D grey image, {100 * zeros:.0f}% zero background "
                                                              "(ultrasound fan?)")
        return ModalityGuess("xray", 0.35, prefix + "2D grey image without a fan-shaped zero background")
    nz = v[v > 0]
    is_float = not np.all(np.equal(np.mod(v, 1), 0))
    if is_float and nz.size and float(np.percentile(nz, 99.9)) > 8 * float(np.percentile(nz, 50)):
        return ModalityGuess("pet", 0.4, prefix + "3D non-negative float volume with a long upper tail (uptake-like)")
    return ModalityGuess("mri", 0.45, prefix + "3D grey volume without HU air values")


def check_modality(volume: Volume, modality: str, strict: bool = True) -> list[str]:
    """Check the user's ``modality`` against the data; raise on an obviously wrong choice.

    Obvious errors (raise :class:`InputError` when ``strict``, else returned as messages):
    - "ct" on a colour (RGB) image, or on values that cannot be HU: non-negative and <= 255 (an 8-bit image);
    - a colour modality (endoscopy/dermoscopy) on data with HU-like air (min <= -900);
    - a DICOM Modality tag that says otherwise (e.g. tag MR, choice ct), outside the X-ray family.
    Softer doubts (returned and emitted with ``warnings.warn``): CT values >= 0 up to 4095 (raw stored values
    without the rescale intercept?), colour modality on a grey image.

    Returns the list of warning messages (empty when all is well).
    """
    mod = canonical_modality(modality)
    errors: list[str] = []
    warns: list[str] = []
    tagged = _guess_from_tag(volume)
    if tagged is not None and tagged.confidence >= 0.9 and tagged.modality != mod:
        same_family = {tagged.modality, mod} <= _XRAY_FAMILY
        (warns if same_family else errors).append(
            f"you chose {mod} but the {tagged.reason} says {tagged.modality}; choose {tagged.modality} "
            "(or fix the series' Modality tag)")
    arr = volume.array
    colour = volume.channels == 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                           and np.array_equal(arr[..., 1], arr[..., 2]))
    grey = arr if volume.channels == 1 else (arr[..., 0] if volume.channels == 3 and not colour else None)
    vals = None
    if grey is not None:
        vals = _sample(grey).astype(np.float64)
        vals = vals[np.isfinite(vals)]
    if mod == "ct":
        if volume.channels != 1 and colour:
            errors.append("ct was chosen for a colour (RGB) image; choose endoscopy or dermoscopy for photographs, "
                          "or load the CT series itself")
        elif volume.channels not in (1, 3):
            errors.append(f"ct was chosen for a {volume.channels}-channel image; CT is one grey channel in HU")
        elif vals is not None and vals.size:
            vmin, vmax = float(vals.min()), float(vals.max())
            if vmin >= 0 and vmax <= 255:
                errors.append(f"ct was chosen but the values lie in [{vmin:.0f}, {vmax:.0f}] with no negative air "
                              "(-1000 HU): this is an 8-bit image, not HU; choose xray/ultrasound/... or load the "
                              "DICOM series so that RescaleSlope/Intercept give HU")
            elif vmin >= 0 and vmax <= 4095:
                warns.append(f"ct values lie in [{vmin:.0f}, {vmax:.0f}] with no negative air: raw stored values "
                             "without the rescale intercept? Load the DICOM series (applies RescaleIntercept) or "
                             "shift the window by +1024")
    if mod in _COLOUR:
        if vals is not None and vals.size and float(vals.min()) <= -900:
            errors.append(f"{mod} was chosen but the values reach {float(vals.min()):.0f} (HU-like air): "
                          "this looks like CT; choose ct")
        elif volume.channels == 1:
            warns.append(f"{mod} expects an RGB photograph but the image is grey; it will be repeated to 3 channels")
    if errors and strict:
        raise InputError(errors[0])
    for w in warns:
        warnings.warn(w, stacklevel=2)
    return errors + warns


__all__ = ["ModalityGuess", "detect_modality", "check_modality", "MODALITIES"]
