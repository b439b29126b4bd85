"""Metrics against independent implementations: MONAI (Dice, IoU, NSD, HD95) and SimpleITK (volume).

Where OncoSeg's definition matches MONAI's the values agree to 1e-6 (MONAI returns float32, hence a relative
tolerance). Where they differ on purpose, the tests below check that the difference is exactly the documented one:
- empty masks: MONAI gives NaN/inf, OncoSeg defined values (both empty: 1/1/0; one empty: 0/0/inf);
- NSD counts boundary voxels (MONAI ``use_subvoxels=False``), not surface areas (``use_subvoxels=True``);
- HD95 is the max of the two directed 95th percentiles (MONAI ``directed=False``), not medpy's pooled percentile;
- the CVPR rule (NSD = 0 when Dice <= 0.2) is an OncoSeg option MONAI does not have.
"""

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import (
    compute_dice, compute_hausdorff_distance, compute_iou, compute_surface_dice,
)
from scipy import ndimage

from OncoSegLib import metrics as M
from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume


def blobs(rng, shape, p=0.97, it=2):
    return ndimage.binary_dilation(rng.random(shape) > p, iterations=it)


def tt(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None]


def monai_all(a, b, spacing, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P, G = tt(a), tt(b)
        return dict(
            dice=compute_dice(P, G, include_background=True, ignore_empty=False).item(),
            iou=compute_iou(P, G, include_background=True, ignore_empty=False).item(),
            nsd=compute_surface_dice(P, G, [tol], include_background=True, spacing=list(spacing)).item(),
            hd95=compute_hausdorff_distance(P, G, include_background=True, percentile=95,
                                            spacing=list(spacing)).item(),
            hd=compute_hausdorff_distance(P, G, include_background=True, spacing=list(spacing)).item(),
        )


CASES = [(seed, shape) for seed, shape in enumerate([(10, 18, 16), (14, 12, 20), (6, 24, 24), (3, 30, 26)])]


@pytest.mark.parametrize("seed,shape", CASES)
@pytest.mark.parametrize("tol", [1.0, 2.0])
def test_matches_monai_on_random_anisotropic_masks(seed, shape, tol):
    rng = np.random.default_rng(100 + seed)
    spacing = tuple(rng.uniform(0.4, 3.0, 3).round(3))
    a, b = blobs(rng, shape), blobs(rng, shape)
    ref = monai_all(a, b, spacing, tol)
    assert 0.05 < ref["dice"] < 0.95  # a non-trivial case
    assert M.dice(a, b) == pytest.approx(ref["dice"], rel=1e-6, abs=1e-6)
    assert M.iou(a, b) == pytest.approx(ref["iou"], rel=1e-6, abs=1e-6)
    assert M.nsd(a, b, spacing, tol) == pytest.approx(ref["nsd"], rel=1e-6, abs=1e-6)
    assert M.hd95(a, b, spacing) == pytest.approx(ref["hd95"], rel=1e-6, abs=1e-6)
    assert M.hd95(a, b, spacing, percentile=100) == pytest.approx(ref["hd"], rel=1e-6, abs=1e-6)


def test_matches_monai_in_2d():
    rng = np.random.default_rng(7)
    a, b = blobs(rng, (40, 36), 0.98, 3), blobs(rng, (40, 36), 0.98, 3)
    spacing = (0.7, 1.9)
    ref = monai_all(a, b, spacing, 2.0)
    assert M.nsd(a, b, spacing, 2.0) == pytest.approx(ref["nsd"], rel=1e-6)
    assert M.hd95(a, b, spacing) == pytest.approx(ref["hd95"], rel=1e-6)
    # a single-slice volume (1, J, I) is measured as the 2D image, not as a one-voxel-thick 3D shell
    assert M.nsd(a[None], b[None], (5.0,) + spacing, 2.0) == pytest.approx(ref["nsd"], rel=1e-6)
    assert M.hd95(a[None], b[None], (5.0,) + spacing) == pytest.approx(ref["hd95"], rel=1e-6)


def test_label_maps_match_monai_per_class():
    rng = np.random.default_rng(8)
    shape = (8, 20, 18)
    spacing = (2.5, 0.8, 1.1)
    pred = np.zeros(shape, np.int16)
    gt = np.zeros(shape, np.int16)
    for lab in (1, 2, 3):
        pred[blobs(rng, shape, 0.985)] = lab
        gt[blobs(rng, shape, 0.985)] = lab
    res = M.evaluate_label_maps(pred, gt, spacing, tolerance_mm=2.0)
    assert sorted(res) == [1, 2, 3]
    for lab in (1, 2, 3):
        ref = monai_all(pred == lab, gt == lab, spacing, 2.0)
        for key in ("dice", "iou", "nsd", "hd95"):
            assert res[lab][key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), (lab, key)
        assert res[lab]["volume_ml"] == pytest.approx((pred == lab).sum() * 2.5 * 0.8 * 1.1 / 1000)
        assert set(M.METRIC_KEYS) <= set(res[lab])


def test_kdtree_path_equals_edt_path(monkeypatch):
    rng = np.random.default_rng(13)
    a, b = blobs(rng, (8, 20, 18)), blobs(rng, (8, 20, 18))
    sp = (2.2, 0.7, 1.3)
    edt = M.surface_distances(a, b, sp)
    monkeypatch.setattr(M, "EDT_MAX_VOXELS", 0)
    kd = M.surface_distances(a, b, sp)
    for x, y in zip(edt, kd):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_spacing_conventions_agree():
    rng = np.random.default_rng(9)
    a, b = blobs(rng, (6, 14, 12)), blobs(rng, (6, 14, 12))
    sp_kji = (3.0, 0.9, 0.6)
    ref = M.hd95(a, b, sp_kji)
    assert M.hd95(a, b, spacing_ijk=(0.6, 0.9, 3.0)) == ref
    va, vb = Volume(a.astype(np.uint8), spacing=(0.6, 0.9, 3.0)), Volume(b.astype(np.uint8), spacing=(0.6, 0.9, 3.0))
    assert M.hd95(va, vb) == ref
    assert M.hd95(a, b, sp_kji) != pytest.approx(M.hd95(a, b, (0.6, 0.9, 3.0)))  # order matters
    with pytest.raises(InputError):
        M.hd95(a, b, sp_kji, spacing_ijk=sp_kji)
    with pytest.raises(InputError, match="different grids"):
        M.dice(a, b[:, :-1])


# ----------------------------------------------------------------------------------------- documented differences

def test_empty_masks_defined_where_monai_is_nan_or_inf():
    z = np.zeros((5, 8, 8), bool)
    one = z.copy()
    one[2, 3:5, 3:5] = True
    sp = (2.0, 1.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_nsd_both = compute_surface_dice(tt(z), tt(z), [2.0], include_background=True, spacing=list(sp)).item()
        monai_hd_one = compute_hausdorff_distance(tt(one), tt(z), include_background=True, percentile=95,
                                                  spacing=list(sp)).item()
        monai_dice_both = compute_dice(tt(z), tt(z), include_background=True).item()  # ignore_empty=True default
    assert np.isnan(monai_nsd_both) and not np.isfinite(monai_hd_one) and np.isnan(monai_dice_both)
    assert (M.dice(z, z), M.iou(z, z), M.nsd(z, z, sp), M.hd95(z, z, sp)) == (1.0, 1.0, 1.0, 0.0)
    for p, g in ((one, z), (z, one)):
        assert (M.dice(p, g), M.iou(p, g), M.nsd(p, g, sp)) == (0.0, 0.0, 0.0)
        assert M.hd95(p, g, sp) == float("inf")
    res = M.evaluate_label_maps(one.astype(np.uint8), z.astype(np.uint8), sp)
    assert M.to_jsonable(res)["1"]["hd95"] is None and res[1]["volume_gt_ml"] == 0.0


def test_nsd_counts_a_boundary_distance_exactly_equal_to_the_tolerance_as_monai():
    """Two one-slice plates 4 slices apart at 0.5 mm: every facing boundary voxel is exactly 2.0 mm from the other
    plate (sqrt(4.0) is exact), the overhang of the wider plate is farther. MONAI counts d <= tolerance."""
    a = np.zeros((10, 12, 16), bool)
    b = np.zeros_like(a)
    a[2, 2:10, 2:10] = True
    b[6, 2:10, 2:14] = True
    spacing = (0.5, 1.0, 1.0)
    dpg, dgp = M.surface_distances(a, b, spacing)
    assert np.count_nonzero(dpg == 2.0) == 64 and np.count_nonzero(dgp == 2.0) == 64  # the case is on the edge
    at, below = 2.0, 2.0 - 1e-6  # MONAI compares in float32: a nextafter(2.0, 0) would round back to 2.0
    ref_at = monai_all(a, b, spacing, at)["nsd"]
    ref_below = monai_all(a, b, spacing, below)["nsd"]
    assert ref_at == pytest.approx(128 / (64 + 96), rel=1e-6) and ref_below == 0.0
    assert M.nsd(a, b, spacing, at) == pytest.approx(ref_at, rel=1e-6)
    assert M.nsd(a, b, spacing, below) == pytest.approx(ref_below, abs=1e-12)
    assert M.evaluate_label_maps(a.astype(np.uint8), b.astype(np.uint8), spacing, tolerance_mm=at,
                                 with_recist=False)[1]["nsd"] == pytest.approx(ref_at, rel=1e-6)


def test_nsd_counts_voxels_not_surface_areas():
    rng = np.random.default_rng(11)
    a, b = blobs(rng, (10, 16, 16)), blobs(rng, (10, 16, 16))
    sp = (2.5, 0.7, 0.9)
    P, G = tt(a), tt(b)
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI's own deprecation inside use_subvoxels
    voxel = compute_surface_dice(P, G, [2.0], include_background=True, spacing=list(sp)).item()
    area = compute_surface_dice(P, G, [2.0], include_background=True, spacing=list(sp), use_subvoxels=True).item()
    ours = M.nsd(a, b, sp, 2.0)
    assert ours == pytest.approx(voxel, rel=1e-6)
    assert abs(ours - area) > 1e-3  # the area-weighted (DeepMind/CVPR-style) NSD is a different number


def test_hd95_is_max_of_directed_percentiles_not_pooled():
    # prediction = truth plus a far-away island: the two directions have very different distance profiles
    gt = np.zeros((40, 40), bool)
    gt[5:25, 5:25] = True
    pred = gt.copy()
    pred[33:35, 33:36] = True  # 6 island boundary pixels: > 5% of pred's 82, < 5% of the pooled 158
    sp = (1.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d_pg = compute_hausdorff_distance(tt(pred), tt(gt), include_background=True, percentile=95, directed=True,
                                          spacing=list(sp)).item()
        d_gp = compute_hausdorff_distance(tt(gt), tt(pred), include_background=True, percentile=95, directed=True,
                                          spacing=list(sp)).item()
    ours = M.hd95(pred, gt, sp)
    assert ours == pytest.approx(max(d_pg, d_gp), rel=1e-6)
    dpg, dgp = M.surface_distances(pred, gt, sp)
    pooled = float(np.percentile(np.concatenate([dpg, dgp]), 95))  # medpy's definition
    assert pooled < ours - 1.0


def test_cvpr_rule():
    gt = np.zeros((1, 30, 30), bool)
    gt[0, 5:25, 5:25] = True
    low = np.zeros_like(gt)
    low[0, 5:9, 5:25] = True  # Dice = 2*80/(80+400) = 0.333 -> rule does not apply
    tiny = np.zeros_like(gt)
    tiny[0, 5:7, 5:15] = True  # Dice = 2*20/420 = 0.095 -> NSD forced to 0
    sp = (1.0, 1.0, 1.0)
    assert M.dice(low, gt) == pytest.approx(2 * 80 / 480)
    assert M.nsd(low, gt, sp, 2.0, cvpr_rule=True) == M.nsd(low, gt, sp, 2.0) > 0
    assert M.nsd(tiny, gt, sp, 2.0) > 0
    assert M.nsd(tiny, gt, sp, 2.0, cvpr_rule=True) == 0.0
    res = M.evaluate_label_maps(tiny.astype(np.uint8), gt.astype(np.uint8), sp, cvpr_rule=True)
    assert res[1]["nsd"] == 0.0


# ----------------------------------------------------------------------------------------- volume vs SimpleITK

def test_volume_matches_simpleitk_label_shape_statistics():
    rng = np.random.default_rng(12)
    lab = np.zeros((7, 15, 13), np.uint8)
    lab[blobs(rng, lab.shape, 0.97)] = 1
    lab[blobs(rng, lab.shape, 0.98, 1)] = 2
    spacing_ijk = (0.6, 1.3, 2.7)
    img = sitk.GetImageFromArray(lab)  # numpy (k, j, i) -> sitk (i, j, k)
    img.SetSpacing(spacing_ijk)
    f = sitk.LabelShapeStatisticsImageFilter()
    f.Execute(img)
    res = M.evaluate_label_maps(lab, lab, spacing_ijk=spacing_ijk, with_recist=False)
    for label in (1, 2):
        expected_ml = f.GetPhysicalSize(label) / 1000.0
        assert M.volume_ml(lab == label, spacing_ijk=spacing_ijk) == pytest.approx(expected_ml, rel=1e-12)
        assert res[label]["volume_ml"] == pytest.approx(expected_ml, rel=1e-12)
        assert res[label]["dice"] == 1.0 and res[label]["hd95"] == 0.0


def test_label_map_input_checks():
    with pytest.raises(InputError, match="non-integer"):
        M.evaluate_label_maps(np.full((2, 3, 3), 0.5), np.zeros((2, 3, 3)), (1, 1, 1))
    res = M.evaluate_label_maps(np.zeros((2, 3, 3), int), np.zeros((2, 3, 3), int), (1, 1, 1))
    assert res == {}
    res = M.evaluate_label_maps(np.zeros((2, 3, 3), int), np.zeros((2, 3, 3), int), (1, 1, 1), labels=[4])
    assert res[4]["dice"] == 1.0 and res[4]["nsd"] == 1.0 and res[4]["hd95"] == 0.0
    with pytest.raises(InputError, match="tolerance"):
        M.nsd(np.ones((2, 2)), np.ones((2, 2)), (1, 1), -1.0)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.float32])
def test_unique_labels_matches_numpy(dtype):
    from OncoSegLib.io.labels import MAX_COUNT_RANGE, unique_labels

    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, (4, 6, 7))
    if dtype in (np.int16, np.int32, np.int64):
        a = a - 2  # negative values too
    a = a.astype(dtype)
    np.testing.assert_array_equal(unique_labels(a), np.unique(a))
    if dtype in (np.int64, np.uint64):
        a[0, 0, 0] = MAX_COUNT_RANGE * 4  # a wide range falls back on sorting
        np.testing.assert_array_equal(unique_labels(a), np.unique(a))
    assert unique_labels(np.zeros(0, dtype)).size == 0
