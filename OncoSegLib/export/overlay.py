"""Overlay pictures: one slice of a volume with coloured label maps, a legend and patient orientation letters.

Drawn with Pillow (a core dependency) rather than matplotlib, so that a plain install can draw the demo's picture.
The slice is shown in the radiological convention: patient right on the screen's left, anterior (or superior for
coronal/sagittal planes) at the top; the letters at the four edges are read from the volume's direction, so an
oblique or flipped scan is labelled by the patient axis closest to each screen direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from OncoSegLib.io.atomic import atomic_path
from OncoSegLib.io.volume import Volume

# Distinct colours (RGB 0-255) for labels without one: the "tab10" palette order, readable on grey CT.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 215, 0),
)
LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) end of the LPS x, y, z axes


@dataclass(frozen=True)
class OverlayPanel:
    """One panel: a (K, J, I) label array on the volume's grid and its caption."""

    labels: np.ndarray
    caption: str


def _letter(vec_lps: np.ndarray) -> str:
    """Patient direction letter of a vector in LPS (the dominant axis; e.g. (+1, 0, 0) -> 'L')."""
    ax = int(np.argmax(np.abs(vec_lps)))
    return LPS_LETTERS[ax][1 if vec_lps[ax] > 0 else 0]


def axial_display(volume: Volume) -> tuple[bool, bool, dict[str, str]]:
    """How to show an axial (k) slice radiologically: (flip columns, flip rows, edge letters).

    Columns run along +i and rows along +j. Columns are flipped when +i points to the patient's right (so that the
    screen's left is the patient's right); rows are flipped when +j points anterior (anterior at the top) or, in a
    plane holding the head-feet axis, when +j points inferior (superior at the top).
    Returns the letters at the 'left', 'right', 'top', 'bottom' edges after the flips.
    """
    d = np.asarray(volume.direction, dtype=float)
    di, dj = d[:, 0], d[:, 1]
    ai, aj = int(np.argmax(np.abs(di))), int(np.argmax(np.abs(dj)))
    flip_cols = bool(di[ai] < 0)  # screen right -> patient left (+x), posterior (+y) or superior (+z)
    flip_rows = bool(dj[aj] > 0) if aj == 2 else bool(dj[aj] < 0)  # screen down -> posterior / left / inferior
    right = di if not flip_cols else -di
    down = dj if not flip_rows else -dj
    return flip_cols, flip_rows, {"left": _letter(-right), "right": _letter(right), "top": _letter(-down),
                                  "bottom": _letter(down)}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def write_overlay_png(volume: Volume, k: int, panels: Sequence[OverlayPanel], names: dict[int, str],
                      path: str | Path, title: str, window: tuple[float, float] = (-160.0, 240.0),
                      colors: dict[int, tuple[int, int, int]] | None = None, scale: int | None = None,
                      alpha: float = 0.45) -> Path:
    """Write a PNG: slice ``k`` (axial, IJK) of ``volume`` once per panel with its labels, plus a legend.

    Args:
        volume: the grey volume (values in real units, e.g. HU) whose grid the label arrays share.
        k: slice index along the volume's k axis.
        panels: label arrays (K, J, I) and captions, drawn side by side.
        names: label value -> structure name (legend; labels not listed are not drawn).
        window: display window (low, high) in the volume's units.
        colors: label value -> RGB; missing ones take :data:`PALETTE` colours in label order.
        scale: integer zoom of the slice (default: about 384 pixels on the longer side).
    Written atomically; returns ``path``.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    lo, hi = float(window[0]), float(window[1])
    grey = np.clip((np.asarray(volume.array[k], dtype=float) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    flip_cols, flip_rows, letters = axial_display(volume)

    def orient(a: np.ndarray) -> np.ndarray:
        a = a[:, ::-1] if flip_cols else a
        return a[::-1, :] if flip_rows else a

    grey = orient(grey)
    h, w = grey.shape
    zoom = int(scale) if scale else max(1, int(round(384 / max(h, w))))
    palette = dict(colors or {})
    for n, value in enumerate(sorted(names)):
        palette.setdefault(value, PALETTE[n % len(PALETTE)])

    font, small = _font(16), _font(13)
    pad, caption_h, legend_row = 12, 24, 22
    legend_h = pad + legend_row * ((len(names) + 2) // 3) + pad
    title_h = 30
    pw, ph = w * zoom, h * zoom
    canvas = Image.new("RGB", (pad + len(panels) * (pw + pad), title_h + caption_h + ph + legend_h), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), title, fill=(255, 255, 255), font=font)
    for n, panel in enumerate(panels):
        rgb = np.repeat((grey * 255.0)[..., None], 3, axis=2)
        lab = orient(np.asarray(panel.labels[k]))
        for value in sorted(names):
            m = lab == value
            if m.any():
                rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(palette[value], dtype=float)
                edge = m & ~_eroded(m)
                rgb[edge] = palette[value]
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).resize((pw, ph), Image.NEAREST)
        x0, y0 = pad + n * (pw + pad), title_h + caption_h
        canvas.paste(img, (x0, y0))
        draw.text((x0, title_h + 2), panel.caption, fill=(230, 230, 230), font=small)
        draw.text((x0 + 4, y0 + ph // 2 - 8), letters["left"], fill=(255, 255, 0), font=font)
        draw.text((x0 + pw - 16, y0 + ph // 2 - 8), letters["right"], fill=(255, 255, 0), font=font)
        draw.text((x0 + pw // 2 - 5, y0 + 2), letters["top"], fill=(255, 255, 0), font=font)
        draw.text((x0 + pw // 2 - 5, y0 + ph - 20), letters["bottom"], fill=(255, 255, 0), font=font)
    y = title_h + caption_h + ph + pad
    col_w = (canvas.width - pad) // 3
    for n, value in enumerate(sorted(names)):
        x = pad + (n % 3) * col_w
        yy = y + (n // 3) * legend_row
        draw.rectangle((x, yy + 2, x + 14, yy + 16), fill=palette[value])
        draw.text((x + 20, yy), f"{value}: {names[value]}", fill=(255, 255, 255), font=small)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _eroded(m: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(m, border_value=0)
