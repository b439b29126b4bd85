"""The shipped real CT and its reference label map as pytest fixtures (one definition for the real-image tests).

Use: ``from real_ct_support import DATA, ct, labels  # noqa: F401`` in a test module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.io.loader import load_volume

DATA = Path(__file__).resolve().parent.parent / "OncoSegLib" / "data" / "real_ct"


@pytest.fixture(scope="module")
def ct():
    """The real abdominal CT (122 x 101 x 30 voxels, 3 mm, HU)."""
    return load_volume(DATA / "example_ct_sm.nii.gz")


@pytest.fixture(scope="module")
def labels(ct):  # noqa: ANN001
    """The TotalSegmentator reference labels on the CT's grid, int32 (K, J, I)."""
    seg = load_volume(DATA / "example_seg.nii.gz")
    assert seg.same_grid(ct)
    return np.asarray(seg.array).astype(np.int32)
