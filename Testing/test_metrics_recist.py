"""RECIST long/short axis against shapes with known diameters and a brute-force pairwise oracle."""

import math

import numpy as np
import pytest
from scipy import ndimage

from OncoSegLib import metrics as M


def rect(shape, j0, j1, i0, i1):
    m = np.zeros(shape, bool)
    m[j0:j1, i0:i1] = True
    return m


@pytest.mark.parametrize("nj,ni,sj,si", [(10, 20, 1.0, 1.0), (7, 9, 1.1, 0.8), (12, 5, 0.6, 2.0), (1, 1, 0.5, 0.9)])
def test_rectangle_exact(nj, ni, sj, si):
    m = rect((30, 30), 3, 3 + nj, 4, 4 + ni)
    r = M.recist(m, (sj, si))
    A, B = ni * si, nj * sj  # physical sides
    D = math.hypot(A, B)
    assert r.long_axis_mm == pytest.approx(D, rel=1e-12)  # the diagonal
    # the longest chord perpendicular to a diagonal spans the two longer sides: min * D / max
    assert r.short_axis_mm == pytest.approx(min(A, B) * D / max(A, B), rel=1e-9)
    assert r.slice_index == 0
    scale = np.array([si, sj])
    ends = r.long_axis_ijk[:, :2] * scale
    assert np.linalg.norm(ends[1] - ends[0]) == pytest.approx(D, rel=1e-12)
    s_ends = r.short_axis_ijk[:, :2] * scale
    u, v = ends[1] - ends[0], s_ends[1] - s_ends[0]
    assert abs(np.dot(u, v)) < 1e-9 * D * D  # perpendicular in mm
    assert np.linalg.norm(v) == pytest.approx(r.short_axis_mm, rel=1e-9)


@pytest.mark.parametrize("theta_deg", [0.0, 30.0, 90.0, 135.0])
def test_ellipse_diameters(theta_deg):
    sj, si = 0.5, 0.8
    a, b = 20.0, 8.0  # semi-axes in mm: long 40, short 16
    jj, ii = np.mgrid[0:120, 0:80]
    y, x = jj * sj - 30.0, ii * si - 32.0
    t = math.radians(theta_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    m = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    r = M.recist(m[None], (3.0, sj, si))
    pix = math.hypot(sj, si)  # discretisation: at most about one pixel diagonal
    assert abs(r.long_axis_mm - 40.0) <= pix
    assert abs(r.short_axis_mm - 16.0) <= pix
    d = (r.long_axis_ijk[1, :2] - r.long_axis_ijk[0, :2]) * np.array([si, sj])
    angle = math.degrees(math.atan2(d[1], d[0])) % 180.0
    assert min(abs(angle - theta_deg % 180), 180 - abs(angle - theta_deg % 180)) < 4.0


def test_long_axis_equals_brute_force_max_pairwise_distance():
    rng = np.random.default_rng(0)
    sj, si = 0.7, 1.3
    for _ in range(3):
        m = ndimage.binary_dilation(rng.random((25, 25)) > 0.985, iterations=2)
        jj, ii = np.nonzero(m)
        corners = np.concatenate([np.stack([(ii + di) * si, (jj + dj) * sj], 1)
                                  for di in (-0.5, 0.5) for dj in (-0.5, 0.5)])
        diff = corners[:, None, :] - corners[None, :, :]
        brute = float(np.sqrt((diff ** 2).sum(-1)).max())
        assert M.recist(m, (sj, si)).long_axis_mm == pytest.approx(brute, rel=1e-12)


def test_max_over_slices_and_empty():
    m = np.zeros((5, 30, 30), bool)
    m[0, 2:6, 2:6] = True
    m[3, 2:22, 2:12] = True  # largest
    m[4, 2:12, 2:20] = True
    r = M.recist(m, spacing_ijk=(1.0, 1.0, 5.0))
    assert r.slice_index == 3 and r.long_axis_mm == pytest.approx(math.hypot(20, 10))
    assert np.all(r.long_axis_ijk[:, 2] == 3)
    e = M.recist(np.zeros((2, 4, 4)), (1, 1, 1))
    assert (e.long_axis_mm, e.short_axis_mm, e.slice_index) == (0.0, 0.0, None)


def test_short_axis_spans_a_hole():
    m = rect((40, 40), 5, 35, 10, 20)  # 30 x 10 pixels
    ref = M.recist(m, (1.0, 1.0))
    m[15:25, 13:17] = False  # necrotic core: a calliper still measures across it
    r = M.recist(m, (1.0, 1.0))
    assert r.long_axis_mm == pytest.approx(ref.long_axis_mm)
    assert r.short_axis_mm == pytest.approx(ref.short_axis_mm)


def test_recist_in_label_map_evaluation():
    pred = np.zeros((3, 20, 20), np.uint8)
    pred[1, 2:8, 3:15] = 1
    gt = np.zeros_like(pred)
    gt[1, 2:10, 3:15] = 1
    res = M.evaluate_label_maps(pred, gt, spacing_ijk=(0.5, 1.0, 2.0))[1]
    assert res["recist_long_mm"] == pytest.approx(math.hypot(12 * 0.5, 6 * 1.0))
    assert res["recist_gt_long_mm"] == pytest.approx(math.hypot(12 * 0.5, 8 * 1.0))


def _box_volumes():
    """One 30 (L-R) x 20 (A-P) x 12 (S-I) mm box stored axially and sagittally (same physical object)."""
    from OncoSegLib.io.volume import Volume

    axial = np.zeros((10, 30, 40), np.uint8)  # (K = S-I at 2 mm, J = A-P at 1 mm, I = L-R at 1 mm)
    axial[2:8, 5:25, 4:34] = 1
    ax = Volume(axial, spacing=(1.0, 1.0, 2.0))
    sag_dir = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float).T  # i -> P, j -> I, k -> R
    sagittal = np.zeros((40, 10, 30), np.uint8)  # (K = L-R at 1 mm, J = S-I at 2 mm, I = A-P at 1 mm)
    sagittal[4:34, 2:8, 5:25] = 1
    sag = Volume(sagittal, spacing=(1.0, 2.0, 1.0), direction=sag_dir)
    return ax, sag


def test_recist_is_axial_whatever_the_acquisition_plane():
    """RECIST measures in the axial plane: for a sagittal volume the k slices are sagittal, and the old code
    measured those (20 x 12 mm here) instead of the axial 30 x 20 mm cross-section."""
    ax, sag = _box_volumes()
    expected = math.hypot(30.0, 20.0)  # diagonal of the axial cross-section, exact on pixel corners
    assert M.axial_array_axis(ax.direction) == 0 and M.axial_array_axis(sag.direction) == 1
    for vol in (ax, sag):
        r = M.recist(vol)
        assert r.long_axis_mm == pytest.approx(expected, rel=1e-12)
        assert r.short_axis_mm == pytest.approx(20.0 * expected / 30.0, rel=1e-9)
        lps = vol.ijk_to_lps_points(r.long_axis_ijk)  # end points map to one axial plane (same S)
        assert abs(lps[0, 2] - lps[1, 2]) < 1e-9
        assert np.linalg.norm(lps[1] - lps[0]) == pytest.approx(expected, rel=1e-12)
    assert M.recist(sag.array, spacing_ijk=sag.spacing).long_axis_mm == pytest.approx(math.hypot(20.0, 12.0))
    res = M.evaluate_label_maps(sag, sag)[1]
    assert res["recist_long_mm"] == pytest.approx(expected, rel=1e-12)


def test_cli_recist_on_sagittal_nifti(tmp_path, capsys):
    import json

    from OncoSegLib.cli import main
    from OncoSegLib.io.nifti import write_nifti

    _, sag = _box_volumes()
    write_nifti(sag, tmp_path / "sag.nii.gz")
    assert main(["metrics", str(tmp_path / "sag.nii.gz"), str(tmp_path / "sag.nii.gz"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["labels"]["1"]
    assert row["recist_long_mm"] == pytest.approx(math.hypot(30.0, 20.0), rel=1e-6)
