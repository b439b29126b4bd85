"""The overlay picture: drawn without matplotlib, coloured where the labels are, letters from the geometry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.export.overlay import PALETTE, OverlayPanel, axial_display, write_overlay_png
from OncoSegLib.io.volume import Volume


def _volume(direction: np.ndarray) -> Volume:
    arr = np.full((3, 20, 30), -1000.0)  # air outside the window
    return Volume(arr, spacing=(1.0, 1.0, 2.0), direction=direction)


@pytest.mark.parametrize("direction,flips", [
    (np.eye(3), (False, False)),                       # LPS-ordered DICOM: +i -> L, +j -> P (already radiological)
    (np.diag([-1.0, -1.0, 1.0]), (True, True)),        # RAS-ordered NIfTI: +i -> R, +j -> A
    (np.diag([-1.0, 1.0, 1.0]), (True, False)),
])
def test_axial_display_puts_patient_right_on_screen_left(direction, flips) -> None:  # noqa: ANN001
    flip_cols, flip_rows, letters = axial_display(_volume(direction))
    assert (flip_cols, flip_rows) == flips
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_coronal_plane_gets_superior_at_the_top() -> None:
    # i along L, j along -S (rows run head to feet), k along P: a coronal slice stack
    d = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    _, flip_rows, letters = axial_display(_volume(d))
    assert not flip_rows and letters["top"] == "S" and letters["bottom"] == "I"


def test_overlay_pixels_and_legend(tmp_path: Path) -> None:
    from PIL import Image

    vol = _volume(np.diag([-1.0, -1.0, 1.0]))  # RAS: displayed flipped in both directions
    lab = np.zeros(vol.shape_kji, np.uint8)
    lab[1, 2:6, 3:9] = 1  # top-left block in array order -> bottom-right on screen after both flips
    path = write_overlay_png(vol, 1, [OverlayPanel(lab, "pred")], {1: "liver", 2: "spleen"}, tmp_path / "o.png",
                             "title", scale=10)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # locate the slice panel: pad 12, title 30 + caption 24 -> panel origin (12, 54), 300 x 200 pixels
    panel = img[54:54 + 200, 12:12 + 300]
    colour = np.array(PALETTE[0])
    hit = np.all(np.abs(panel - colour) <= 2, axis=2)  # the label's edge pixels are drawn in the exact colour
    rows, cols = np.nonzero(hit)
    # array rows 2..5 -> screen rows 20-2-5..20-1-2 = 14..17 (x10); array cols 3..8 -> screen cols 30-1-8..30-1-3
    assert rows.min() >= 140 and rows.max() < 180 and cols.min() >= 210 and cols.max() < 270
    legend = img[54 + 200:]
    assert np.all(np.abs(legend - np.array(PALETTE[1])) <= 2, axis=2).any()  # spleen swatch in the legend


def test_overlay_does_not_need_matplotlib(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import numpy as np\n"
        "from OncoSegLib.io.volume import Volume\n"
        "from OncoSegLib.export.overlay import OverlayPanel, write_overlay_png\n"
        "v = Volume(np.zeros((2, 8, 8)))\n"
        f"write_overlay_png(v, 0, [OverlayPanel(np.ones((2, 8, 8), np.uint8), 'x')], {{1: 'a'}}, r'{tmp_path}/o.png', 't')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"
