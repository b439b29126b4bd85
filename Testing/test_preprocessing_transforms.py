"""The ten Onco-Seg intensity transforms: exact values computed by hand or with numpy.percentile as the oracle."""

import json
import math

import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.preprocessing import (
    MODALITIES, Normalizer, canonical_modality, ct_window_from_width_level, fit_normalizer, normalize_volume,
    select_brats_channels,
)


def grey(values, shape=None):
    a = np.asarray(values, dtype=np.float64)
    return Volume(a.reshape(shape or (1, 1, a.size)))


def ch0(out):
    """All three channels must be equal for grey input; return channel 0."""
    assert out.dtype == np.float32 and out.shape[-1] == 3
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    return out[..., 0]


def test_modality_names_and_aliases():
    assert MODALITIES == ("ct", "mri", "pet", "ultrasound", "xray", "chest_xray", "mammography", "dermoscopy",
                          "endoscopy", "srh")
    assert canonical_modality("MR") == "mri" and canonical_modality("PT") == "pet"
    assert canonical_modality("US") == "ultrasound" and canonical_modality("X-ray") == "xray"
    with pytest.raises(InputError, match="use one of"):
        canonical_modality("sonar")


def test_ct_default_window_pins_values():
    v = grey([-1000, 0, 1000, -3000, 3000, -500, 250])
    out = ch0(normalize_volume(v, "ct"))
    np.testing.assert_allclose(out[0, 0], [0, 0.5, 1, 0, 1, 0.25, 0.625], atol=1e-7)


def test_ct_user_window_width_level():
    assert ct_window_from_width_level(400, 40) == (-160.0, 240.0)
    v = grey([-160, 40, 240, 140, -1000])
    out = ch0(normalize_volume(v, "ct", window=ct_window_from_width_level(400, 40)))
    np.testing.assert_allclose(out[0, 0], [0, 0.5, 1, 0.75, 0], atol=1e-7)
    with pytest.raises(InputError):
        ct_window_from_width_level(0, 40)
    with pytest.raises(InputError):
        fit_normalizer(v, "ct", window=(10, -10))
    with pytest.raises(InputError, match="CT only"):
        fit_normalizer(v, "mri", window=(0, 1))


def test_ct_refuses_rgb():
    with pytest.raises(InputError, match="colour"):
        fit_normalizer(Volume(np.zeros((1, 4, 4, 3))), "ct")


def test_mri_1_99_percentile_by_hand():
    v = grey(np.arange(101.0))  # p1 = 1, p99 = 99 with linear interpolation
    out = ch0(normalize_volume(v, "mri"))
    np.testing.assert_allclose(out[0, 0, [0, 1, 50, 99, 100]], [0, 0, 49 / 98, 1, 1], atol=1e-7)


def test_mri_per_channel_percentiles_numpy_oracle():
    rng = np.random.default_rng(0)
    a = np.stack([rng.normal(100, 20, (3, 6, 5)), rng.gamma(2.0, 50, (3, 6, 5)), rng.uniform(-5, 5, (3, 6, 5))], -1)
    out = normalize_volume(Volume(a), "mri")
    for c in range(3):
        lo, hi = np.percentile(a[..., c], [1, 99])
        np.testing.assert_allclose(out[..., c], np.clip((a[..., c] - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_brats_selection_and_normalisation():
    rng = np.random.default_rng(1)
    a = np.stack([rng.normal(10 * (c + 1), c + 1, (2, 5, 4)) for c in range(4)], -1)  # FLAIR, T1w, T1gd, T2w
    np.testing.assert_array_equal(select_brats_channels(a), a[..., [1, 2, 0]])
    norm = fit_normalizer(Volume(a), "mri")
    assert norm.channel_select == [1, 2, 0]
    out = norm(a)
    for c_out, c_in in enumerate([1, 2, 0]):
        lo, hi = np.percentile(a[..., c_in], [1, 99])
        np.testing.assert_allclose(out[..., c_out], np.clip((a[..., c_in] - lo) / (hi - lo), 0, 1), atol=1e-6)
    with pytest.raises(InputError):
        select_brats_channels(a[..., :3])
    with pytest.raises(InputError):
        fit_normalizer(Volume(a), "ct")


def test_ultrasound_2_98():
    out = ch0(normalize_volume(grey(np.arange(101.0)), "ultrasound"))
    np.testing.assert_allclose(out[0, 0, [0, 2, 50, 98, 100]], [0, 0, 0.5, 1, 1], atol=1e-7)


def test_ultrasound_rgb_uses_joint_statistics():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 255, (1, 8, 8, 3))
    a[..., 2] *= 0.5
    out = normalize_volume(Volume(a), "ultrasound")
    lo, hi = np.percentile(a, [2, 98])  # one range over all channels: hue is kept
    np.testing.assert_allclose(out, np.clip((a - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_dermoscopy_per_channel_1_99():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (1, 16, 12, 3)).astype(np.uint8)
    out = normalize_volume(Volume(a), "dermoscopy")
    for c in range(3):
        lo, hi = np.percentile(a[..., c].astype(float), [1, 99])
        np.testing.assert_allclose(out[..., c], np.clip((a[..., c] - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_endoscopy_per_channel_5_95_by_hand():
    base = np.arange(101.0)
    a = np.stack([base, 2 * base, base + 1000], -1).reshape(1, 1, 101, 3)
    out = normalize_volume(Volume(a), "endoscopy")
    for c in range(3):  # p5 = 5, p95 = 95 of each channel's own scale
        np.testing.assert_allclose(out[0, 0, [0, 5, 50, 95, 100], c], [0, 0, 0.5, 1, 1], atol=1e-7)


def test_xray_wide_dynamic_range_compression_by_hand():
    out = ch0(normalize_volume(grey(np.arange(101.0)), "xray"))
    c = 10.0
    x01 = np.array([0, 1, 50, 99, 100]) - 1.0
    x01 = np.clip(x01 / 98.0, 0, 1)
    expected = np.log(1 + c * x01) / np.log(1 + c)
    np.testing.assert_allclose(out[0, 0, [0, 1, 50, 99, 100]], expected, atol=1e-7)
    assert out[0, 0, 50] == pytest.approx(math.log(6.0) / math.log(11.0), abs=1e-7)


def test_pet_nonfinite_then_0p5_99p5():
    vals = np.arange(201.0) * 0.1  # 0 .. 20
    a = np.concatenate([vals, [np.nan, np.inf, -np.inf]])
    out = ch0(normalize_volume(grey(a), "pet"))[0, 0]
    lo, hi = np.percentile(vals, [0.5, 99.5])  # finite values only
    assert (lo, hi) == pytest.approx((0.1, 19.9))
    np.testing.assert_allclose(out[:201], np.clip((vals - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert out[201] == 0.0 and out[202] == 1.0 and out[203] == 0.0
    assert np.all(np.isfinite(out))


def test_chest_xray_0p5_99p5():
    out = ch0(normalize_volume(grey(np.arange(201.0)), "chest_xray"))
    np.testing.assert_allclose(out[0, 0, [0, 1, 100, 199, 200]], [0, 0, 0.5, 1, 1], atol=1e-7)


def test_mammography_percentiles_of_breast_pixels():
    a = np.concatenate([np.zeros(300), np.arange(1.0, 102.0)])  # 1..101 non-zero: p1 = 2, p99 = 100
    out = ch0(normalize_volume(grey(a), "mammography"))[0, 0]
    assert np.all(out[:300] == 0)
    np.testing.assert_allclose(out[300 + np.array([0, 1, 50, 99, 100])], [0, 0, 0.5, 1, 1], atol=1e-7)


def test_srh_log_transform_two_channels():
    t = np.arange(101.0) * 0.05  # logs 0 .. 5; p1 = 0.05, p99 = 4.95
    c0 = 7.0 + np.expm1(t)  # offset = min = 7
    c1 = -3.0 + np.expm1(t[::-1])  # offset = min = -3
    a = np.stack([c0, c1], -1).reshape(1, 1, 101, 2)
    out = normalize_volume(Volume(a), "srh")[0, 0]
    e0 = np.clip((t - 0.05) / 4.9, 0, 1)
    e1 = e0[::-1]
    np.testing.assert_allclose(out[:, 0], e0, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], e1, atol=1e-6)
    np.testing.assert_allclose(out[:, 2], np.clip(e1 - e0, 0, 1), atol=1e-6)


def test_statistics_are_per_volume_not_per_slice():
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, (4, 8, 8)) * np.arange(1, 5)[:, None, None]  # slices of different contrast
    v = Volume(a)
    norm = fit_normalizer(v, "mri")
    whole = norm(a)
    for k in range(4):
        np.testing.assert_array_equal(norm(a[k]), whole[k])
    lo, hi = np.percentile(a, [1, 99])
    np.testing.assert_allclose(whole[..., 0], np.clip((a - lo) / (hi - lo), 0, 1), atol=1e-6)
    per_slice = fit_normalizer(Volume(a[:1]), "mri")(a[0])
    assert np.abs(per_slice - whole[0]).max() > 0.05  # a per-slice fit would differ


def test_constant_volume_maps_to_zero():
    out = normalize_volume(grey(np.full(10, 7.0)), "mri")
    assert np.all(out == 0)


def test_normalizer_json_round_trip():
    rng = np.random.default_rng(5)
    for mod in MODALITIES:
        a = rng.uniform(1, 100, (2, 4, 4, 3)) if mod in ("dermoscopy", "endoscopy") else rng.uniform(1, 100, (2, 4, 4))
        if mod == "ct":
            a = a * 20 - 1000
        norm = fit_normalizer(Volume(a), mod)
        back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
        np.testing.assert_array_equal(back(a), norm(a))
        assert back.modality == mod


def test_wrong_channel_count_is_input_error():
    norm = fit_normalizer(Volume(np.zeros((1, 4, 4, 3)) + np.arange(3)), "endoscopy")
    with pytest.raises(InputError, match="3 channels"):
        norm(np.zeros((4, 4)))


def test_bare_array_colour_guess():
    a = np.random.default_rng(6).uniform(0, 255, (8, 8, 3))
    norm = fit_normalizer(a, "dermoscopy")
    assert norm.in_channels == 3 and norm(a).shape == (8, 8, 3)
