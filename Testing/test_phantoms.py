"""Synthetic CT phantoms: deterministic, realistic HU per tissue (checked with SimpleITK), anatomy where expected."""

from __future__ import annotations

import numpy as np
import pytest

from OncoSegLib.phantoms import LABEL_NAMES, make_ct_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_ct_phantom(seed=3, shape_kji=(24, 96, 96), spacing=(0.9, 0.8, 2.5))


def test_same_seed_same_phantom_different_seed_different() -> None:
    a = make_ct_phantom(seed=11, shape_kji=(8, 64, 64))
    b = make_ct_phantom(seed=11, shape_kji=(8, 64, 64))
    c = make_ct_phantom(seed=12, shape_kji=(8, 64, 64))
    assert np.array_equal(a.volume.array, b.volume.array) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.volume.array, c.volume.array)


def test_geometry_and_types(phantom) -> None:  # noqa: ANN001
    v = phantom.volume
    assert v.array.dtype == np.int16 and phantom.labels.dtype == np.uint8
    assert v.shape_kji == phantom.labels.shape == (24, 96, 96)
    assert v.spacing == (0.9, 0.8, 2.5) and v.modality == "CT"
    # the grid is centred on LPS (0, 0, 0)
    centre = v.ijk_to_lps_points(np.array([[(96 - 1) / 2, (96 - 1) / 2, (24 - 1) / 2]]))[0]
    np.testing.assert_allclose(centre, 0.0, atol=1e-9)
    assert set(phantom.names) <= set(LABEL_NAMES) and {1, 2, 3, 4} <= set(phantom.names)


def test_tissue_hu_measured_with_simpleitk(phantom) -> None:  # noqa: ANN001
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(phantom.volume.array.astype(np.float32))
    lab = sitk.GetImageFromArray(phantom.labels)
    stats = sitk.LabelStatisticsImageFilter()
    stats.Execute(img, lab)
    assert 85 < stats.GetMean(1) < 125  # enhanced liver
    assert 150 < stats.GetMean(2) < 220 and 150 < stats.GetMean(3) < 220  # kidneys
    assert stats.GetMean(4) > 250  # bone (cortical + trabecular)
    corner = phantom.volume.array[:, :4, :4]
    assert corner.mean() < -950  # air outside the body
    for les in phantom.lesions:  # each lesion differs from the liver by its recorded contrast
        k, j, i = les["centre_kji"]
        assert phantom.labels[k, j, i] in (1, 5)
    if 5 in phantom.names:
        diff = stats.GetMean(5) - stats.GetMean(1)
        signs = {np.sign(les["contrast_hu"]) for les in phantom.lesions}
        assert abs(diff) > 10 and (len(signs) > 1 or np.sign(diff) in signs)


def test_anatomy_is_where_a_radiologist_expects_it(phantom) -> None:  # noqa: ANN001
    lab = phantom.labels
    ii = np.arange(lab.shape[2])
    jj = np.arange(lab.shape[1])

    def centroid(m: np.ndarray) -> tuple[float, float]:
        return float((m.sum((0, 1)) * ii).sum() / m.sum()), float((m.sum((0, 2)) * jj).sum() / m.sum())

    liver_i, _ = centroid(lab == 1)
    rk_i, rk_j = centroid(lab == 2)
    lk_i, lk_j = centroid(lab == 3)
    v_i, v_j = centroid(lab == 4)
    assert liver_i < 48  # patient's right = low i with LPS axes (image left)
    assert rk_i < v_i < lk_i  # kidneys either side of the spine
    assert rk_j > 48 and lk_j > 48 and v_j > 60  # posterior


def test_lesions_vary_in_size_and_contrast() -> None:
    lesions = [les for s in range(12) for les in make_ct_phantom(seed=s, shape_kji=(16, 64, 64)).lesions]
    radii = [les["radius_mm"] for les in lesions]
    contrasts = [les["contrast_hu"] for les in lesions]
    assert len(lesions) >= 12
    assert max(radii) / min(radii) > 1.8
    assert min(contrasts) < 0 < max(contrasts)
