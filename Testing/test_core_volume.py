"""Volume geometry against SimpleITK (independent oracle), atomic writes, and the CLI's error contract."""

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from OncoSegLib.cli import main
from OncoSegLib.io.atomic import atomic_path, atomic_write_text
from OncoSegLib.io.volume import Volume


def _oblique_direction(deg_inplane: float, deg_tilt: float) -> np.ndarray:
    a, b = math.radians(deg_inplane), math.radians(deg_tilt)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([1.0, 1.0, -1.0]), _oblique_direction(12, 7),
                                       np.diag([-1.0, -1.0, 1.0])])
def test_ijk_to_lps_matches_simpleitk(direction):
    vol = Volume(np.zeros((5, 7, 9), np.int16), spacing=(0.6, 0.9, 2.5), origin=(-120.5, 33.0, 71.25),
                 direction=direction)
    img = sitk.GetImageFromArray(vol.array)  # SimpleITK arrays are (k, j, i) too
    img.SetSpacing(vol.spacing)
    img.SetOrigin(vol.origin)
    img.SetDirection(direction.flatten().tolist())
    rng = np.random.default_rng(0)
    for ijk in [(0, 0, 0), (8, 6, 4), *rng.uniform(0, 5, size=(5, 3))]:
        expected = img.TransformContinuousIndexToPhysicalPoint([float(x) for x in ijk])
        np.testing.assert_allclose(vol.ijk_to_lps_points(ijk)[0], expected, atol=1e-9)
        back = vol.lps_to_ijk_points(expected)[0]
        np.testing.assert_allclose(back, ijk, atol=1e-9)
    # RAS is LPS with x and y negated
    ras = (vol.ijk_to_ras @ np.array([8, 6, 4, 1.0]))[:3]
    lps = img.TransformIndexToPhysicalPoint((8, 6, 4))
    np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)
    assert vol.shape_ijk == img.GetSize()


def test_same_grid_and_with_array():
    vol = Volume(np.zeros((4, 5, 6)), spacing=(1, 1, 2), origin=(1, 2, 3))
    lab = vol.with_array(np.ones((4, 5, 6), np.uint8))
    assert lab.same_grid(vol)
    assert not vol.same_grid(Volume(np.zeros((4, 5, 6)), spacing=(1, 1, 2), origin=(1, 2, 3.5)))
    assert vol.voxel_volume_ml == pytest.approx(0.002)
    with pytest.raises(ValueError):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "out.nii.gz"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz")
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_cli_without_verb_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "oncoseg" in capsys.readouterr().out
