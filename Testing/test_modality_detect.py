"""Modality auto-detection (DICOM tag first, then statistics) and the wrong-choice check."""

import warnings

import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.modality import ModalityGuess, check_modality, detect_modality
from OncoSegLib.preprocessing import MODALITIES


def ct_like(shape=(4, 16, 16)):
    a = np.full(shape, -1000.0)
    a[:, 4:12, 4:12] = 40.0
    a[:, 6:8, 6:8] = 700.0
    return a


@pytest.mark.parametrize("tag,meta,expected", [
    ("CT", {}, "ct"), ("MR", {}, "mri"), ("PT", {}, "pet"), ("US", {}, "ultrasound"), ("DX", {}, "xray"),
    ("CR", {"BodyPartExamined": "CHEST"}, "chest_xray"), ("DX", {"BodyPartExamined": "chest"}, "chest_xray"),
    ("MG", {}, "mammography"), ("ES", {}, "endoscopy"), ("XC", {}, "dermoscopy"),
])
def test_dicom_tag_wins(tag, meta, expected):
    vol = Volume(np.zeros((2, 4, 4)), modality=tag, metadata=meta)
    g = detect_modality(vol)
    assert isinstance(g, ModalityGuess) and g.modality == expected and g.modality in MODALITIES
    assert tag in g.reason and 0 < g.confidence <= 1


def test_tag_from_metadata_when_attribute_missing():
    g = detect_modality(Volume(ct_like(), metadata={"Modality": "MR"}))
    assert g.modality == "mri" and g.confidence >= 0.9


def test_statistics_ct_air():
    g = detect_modality(Volume(ct_like()))
    assert g.modality == "ct" and 0.7 <= g.confidence < 0.9 and "air" in g.reason


def test_statistics_colour_photographs():
    rng = np.random.default_rng(0)
    endo = np.zeros((1, 32, 32, 3))
    endo[..., 0], endo[..., 1], endo[..., 2] = 200, 70, 60  # red mucosa
    endo[0, 5:7, 5:7] = 250  # specular highlight
    endo += rng.normal(0, 3, endo.shape)
    g = detect_modality(Volume(np.clip(endo, 0, 255).astype(np.uint8)))
    assert g.modality == "endoscopy" and g.confidence <= 0.5
    derm = np.zeros((1, 32, 32, 3))
    derm[..., 0], derm[..., 1], derm[..., 2] = 210, 170, 140  # skin
    derm[0, 10:22, 10:22] = (120, 80, 50)  # brown lesion
    g = detect_modality(Volume(derm.astype(np.uint8)))
    assert g.modality == "dermoscopy" and g.confidence <= 0.5


def test_grey_stored_as_rgb_is_not_colour():
    a = np.repeat(ct_like((1, 16, 16))[..., None], 3, axis=-1)
    g = detect_modality(Volume(a))
    assert g.modality == "ct" and "RGB" in g.reason


def test_statistics_channels_and_2d():
    assert detect_modality(Volume(np.ones((2, 4, 4, 4)))).modality == "mri"
    assert detect_modality(Volume(np.ones((1, 4, 4, 2)))).modality == "srh"
    fan = np.zeros((1, 20, 20))
    fan[0, 5:15, 5:15] = np.random.default_rng(1).uniform(1, 255, (10, 10))
    assert detect_modality(Volume(fan)).modality == "ultrasound"
    xr = np.random.default_rng(2).uniform(100, 4000, (1, 20, 20)).round()
    g = detect_modality(Volume(xr))
    assert g.modality == "xray" and g.confidence < 0.5
    assert detect_modality(Volume(xr, metadata={"Units": "BQML"})).modality == "pet"


def test_check_modality_accepts_right_choice():
    assert check_modality(Volume(ct_like()), "ct") == []
    assert check_modality(Volume(ct_like(), modality="CT"), "CT") == []


def test_check_modality_rejects_ct_on_rgb():
    rgb = np.random.default_rng(3).integers(0, 255, (1, 8, 8, 3))
    with pytest.raises(InputError, match="endoscopy or dermoscopy"):
        check_modality(Volume(rgb), "ct")


def test_check_modality_rejects_ct_on_8bit_values():
    img = np.random.default_rng(4).integers(0, 256, (1, 8, 8)).astype(np.uint8)
    with pytest.raises(InputError, match="8-bit"):
        check_modality(Volume(img), "ct")
    msgs = check_modality(Volume(img), "ct", strict=False)
    assert any("8-bit" in m for m in msgs)


def test_check_modality_warns_on_raw_ct_values():
    raw = ct_like() + 1024  # stored values without the rescale intercept
    with pytest.warns(UserWarning, match="intercept"):
        msgs = check_modality(Volume(raw), "ct")
    assert len(msgs) == 1


def test_check_modality_tag_conflict():
    with pytest.raises(InputError, match="says mri"):
        check_modality(Volume(ct_like(), modality="MR"), "ct")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        msgs = check_modality(Volume(np.ones((1, 4, 4)) * 100, modality="DX"), "chest_xray")
    assert len(msgs) == 1  # same X-ray family: a warning, not an error


def test_check_modality_colour_on_ct_data():
    with pytest.raises(InputError, match="choose ct"):
        check_modality(Volume(ct_like()), "endoscopy")


# ------------------------------------------------------------------ untagged 3D grey floats: PET vs MRI
def _tail_volume(body: float, tail: float, zeros: int = 0) -> np.ndarray:
    """A (4, 50, 50) volume whose non-zero voxels are 90% ``body`` and 10% ``tail`` (so p50 = body and
    p99.9 = tail exactly, numpy's linear interpolation), after ``zeros`` exact-zero background voxels."""
    n = 4 * 50 * 50
    v = np.zeros(n)
    nz = n - zeros
    v[zeros:] = body
    v[n - nz // 10:] = tail
    return v.reshape(4, 50, 50)


def test_untagged_float_volume_with_a_long_upper_tail_is_pet():
    g = detect_modality(Volume(_tail_volume(1.5, 12.5)))  # p99.9 / p50 = 8.33 > 8
    assert (g.modality, g.confidence) == ("pet", 0.4) and "long upper tail" in g.reason


def test_tail_ratio_of_exactly_8_is_not_pet():
    """The rule is p99.9 > 8 x p50 (strict): 12.0 / 1.5 = 8 stays MRI."""
    g = detect_modality(Volume(_tail_volume(1.5, 12.0)))
    assert (g.modality, g.confidence) == ("mri", 0.45)


def test_integer_valued_volume_with_a_long_tail_is_mri_not_pet():
    """Only non-integer floats (activity concentrations / SUV) count as PET-like; an integer MR with bright vessels
    is MRI."""
    g = detect_modality(Volume(_tail_volume(100.0, 2000.0)))
    assert g.modality == "mri" and g.confidence == 0.45


def test_the_tail_ignores_the_zero_background():
    """The percentiles are of the NON-ZERO voxels: an MR float volume with 70% zero background (p50 of all voxels
    = 0) has no uptake-like tail; PET with the same background still has one."""
    mr = _tail_volume(310.25, 900.5, zeros=7000)  # 2.9x: no tail
    assert float(np.median(mr)) == 0.0
    assert detect_modality(Volume(mr)).modality == "mri"
    pet = _tail_volume(0.75, 9.5, zeros=7000)
    assert detect_modality(Volume(pet)).modality == "pet"


def test_pet_units_and_nm_tag_and_nan_voxels():
    assert detect_modality(Volume(_tail_volume(310.25, 900.5), metadata={"Units": "SUV"})).modality == "pet"
    assert detect_modality(Volume(_tail_volume(100.0, 300.0), modality="NM")) == ModalityGuess(
        "pet", 0.6, "DICOM Modality tag NM")
    a = _tail_volume(1.5, 12.5)
    a[0, :5] = np.nan  # NaN voxels (outside the PET field of view) are ignored, not turned into a verdict
    assert detect_modality(Volume(a)).modality == "pet"
    b = _tail_volume(100.0, 2000.0)
    b[0, :5] = np.nan  # NaN is not a "non-integer value": an integer MR with NaN padding stays MRI
    assert detect_modality(Volume(b)).modality == "mri"
    g = detect_modality(Volume(np.full((3, 4, 4), np.nan)))
    assert (g.modality, g.confidence) == ("ct", 0.1) and "no finite" in g.reason
    # 2D slices never take the PET/MRI rule (one slice -> ultrasound/xray heuristics)
    assert detect_modality(Volume(_tail_volume(1.5, 12.5)[:1])).modality in ("xray", "ultrasound")
