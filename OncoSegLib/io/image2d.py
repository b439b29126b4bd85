"""2D images (PNG, JPEG, BMP, TIFF) for endoscopy, dermoscopy, ultrasound and X-ray, read with Pillow.

A 2D image becomes a one-slice :class:`~OncoSegLib.io.volume.Volume`: array ``(1, H, W)`` for grey or
``(1, H, W, 3)`` for colour (RGB, alpha dropped), i = column (x), j = row (y). There is no patient geometry: origin
(0, 0, 0), identity direction, pixel spacing 1 mm unless ``spacing`` is given (sx = column spacing, sy = row
spacing, in mm). EXIF orientation is applied so the pixels appear as a viewer shows them. A multi-page TIFF
becomes one slice per page (all pages must share size and mode).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_GREY_MODES = {"L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def _frame_to_array(frame) -> np.ndarray:
    """Pillow frame -> (H, W) grey or (H, W, 3) uint8 RGB, keeping 16-bit / float grey values."""
    mode = frame.mode
    if mode in _GREY_MODES:
        return np.asarray(frame)
    if mode in ("1", "LA"):
        return np.asarray(frame.convert("L"))
    if mode == "P":
        rgb = frame.convert("RGB")
        arr = np.asarray(rgb)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            return arr[..., 0].copy()
        return arr
    return np.asarray(frame.convert("RGB"))  # RGB, RGBA, CMYK, YCbCr, LAB, HSV


def read_image(path: str | os.PathLike, spacing: tuple[float, float] | None = None,
               modality: str | None = None) -> Volume:
    """Read a 2D image file into a Volume (1, H, W) grey or (1, H, W, 3) RGB; spacing (sx, sy) mm, default 1 mm.

    ``metadata`` gets ``source="image2d"``, ``file``, ``mode`` (Pillow mode) and ``rgb_is_grey`` (all three
    channels equal, e.g. an X-ray saved as colour JPEG).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    try:
        with warnings.catch_warnings():
            # Pillow checks the declared size when it opens the file (before decoding anything): a warning between
            # MAX_IMAGE_PIXELS and twice that, an error above; both refuse here (decompression bombs)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{p} declares an image larger than {Image.MAX_IMAGE_PIXELS:,} pixels (decompression-bomb "
                         "limit); refused before decoding", "crop or downsample the image first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {p}: {type(exc).__name__}: {exc}",
                         "use a PNG, JPEG, BMP or TIFF file") from None
    try:
        with im:
            frames = []
            n = int(getattr(im, "n_frames", 1) or 1)
            mode = im.mode
            for f in range(n):
                im.seek(f)
                frame = ImageOps.exif_transpose(im) if f == 0 else im.copy()
                frames.append(_frame_to_array(frame))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {p}: {type(exc).__name__}: {exc}",
                         "use a PNG, JPEG, BMP or TIFF file") from None
    if len({(a.shape, a.dtype) for a in frames}) > 1:
        raise InputError(f"{p}: the pages of this TIFF differ in size or type", "save the pages as separate images")
    array = np.stack(frames, axis=0)
    sx, sy = (float(spacing[0]), float(spacing[1])) if spacing is not None else (1.0, 1.0)
    md = {"source": "image2d", "file": str(p), "mode": mode,
          "spacing_source": "given" if spacing is not None else "default 1 mm"}
    if array.ndim == 4:
        md["rgb_is_grey"] = bool(np.array_equal(array[..., 0], array[..., 1])
                                 and np.array_equal(array[..., 1], array[..., 2]))
    if modality:
        md["Modality"] = modality
    return Volume(array, spacing=(sx, sy, 1.0), modality=modality, metadata=md)


__all__ = ["read_image", "IMAGE_SUFFIXES"]
