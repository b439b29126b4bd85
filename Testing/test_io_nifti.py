"""NIfTI read/write: affine and voxel order against SimpleITK and nibabel (independent readers/writers)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.io.geometries import GEOMETRY_NAMES, example_shape, example_volume
from OncoSegLib.io.nifti import read_nifti, write_nifti
from OncoSegLib.io.volume import Volume

sitk = pytest.importorskip("SimpleITK")

F32_MM = 1e-4  # NIfTI stores the affine as float32


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


@pytest.mark.parametrize("name", GEOMETRY_NAMES)
def test_write_read_against_simpleitk(tmp_path: Path, name: str) -> None:
    v = example_volume(name, example_shape(name, 4), seed=5)
    out = write_nifti(v, tmp_path / "v.nii.gz")
    img = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), v.array)
    np.testing.assert_allclose(img.GetSpacing(), v.spacing, atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), v.origin, atol=F32_MM)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), v.direction, atol=1e-6)
    back = read_nifti(out)
    np.testing.assert_array_equal(back.array, v.array)
    assert back.array.dtype == v.array.dtype
    np.testing.assert_allclose(back.ijk_to_lps, v.ijk_to_lps, atol=F32_MM)
    assert back.modality == "CT"


@pytest.mark.parametrize("seed", range(4))
def test_read_simpleitk_written_oblique(tmp_path: Path, seed: int) -> None:
    """A file written by SimpleITK (random oblique, possibly left-handed) reads to SimpleITK's geometry."""
    rng = np.random.default_rng(seed)
    direction = _rotation(*rng.uniform(-np.pi, np.pi, 3))
    if seed % 2:
        direction[:, 2] *= -1  # left-handed grid
    arr = rng.integers(-500, 500, size=(5, 7, 9)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(rng.uniform(0.3, 3.0, 3)))
    img.SetOrigin(tuple(rng.uniform(-200, 200, 3)))
    img.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(img, str(tmp_path / "s.nii.gz"))
    ref = sitk.ReadImage(str(tmp_path / "s.nii.gz"))  # what SimpleITK itself reads back (float32 affine)
    v = read_nifti(tmp_path / "s.nii.gz")
    np.testing.assert_array_equal(v.array, arr)
    np.testing.assert_allclose(v.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(v.origin, ref.GetOrigin(), atol=F32_MM)
    np.testing.assert_allclose(v.direction, np.array(ref.GetDirection()).reshape(3, 3), atol=1e-5)


def test_nibabel_affine_and_voxel_order(tmp_path: Path) -> None:
    """nibabel sees data[i, j, k] == array[k, j, i] and affine == ijk_to_ras."""
    rng = np.random.default_rng(1)
    v = Volume(rng.random((4, 5, 6)).astype(np.float32), spacing=(0.7, 1.3, 2.9), origin=(10.5, -20.25, 33.0),
               direction=_rotation(0.3, -0.2, 0.9))
    write_nifti(v, tmp_path / "v.nii")
    img = nib.load(str(tmp_path / "v.nii"))
    np.testing.assert_allclose(img.affine, v.ijk_to_ras, atol=F32_MM)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), v.ijk_to_ras, atol=F32_MM)
    data = np.asarray(img.dataobj)
    assert data.shape == (6, 5, 4)
    assert data[5, 1, 3] == v.array[3, 1, 5]
    # a point's world position agrees through both: nibabel RAS -> LPS
    ijk = np.array([2.0, 3.0, 1.0, 1.0])
    ras = img.affine @ ijk
    np.testing.assert_allclose(np.array([-ras[0], -ras[1], ras[2]]), v.ijk_to_lps_points(ijk[:3])[0], atol=F32_MM)


def test_nibabel_written_file_with_scaling_and_4d(tmp_path: Path) -> None:
    aff = np.array([[-0.9, 0, 0, 90], [0, 0, 1.1, -50], [0, -2.0, 0, 40], [0, 0, 0, 1]])
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    img = nib.Nifti1Image(data, aff)
    img.header.set_slope_inter(0.5, -3)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    v = read_nifti(tmp_path / "s.nii.gz")
    np.testing.assert_allclose(v.array, np.transpose(data, (2, 1, 0)) * 0.5 - 3)
    np.testing.assert_allclose(v.ijk_to_ras, aff, atol=1e-6)
    # 4D (I, J, K, C) -> (K, J, I, C)
    d4 = np.random.default_rng(0).random((3, 4, 5, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(d4, aff), str(tmp_path / "m.nii.gz"))
    m = read_nifti(tmp_path / "m.nii.gz")
    assert m.array.shape == (5, 4, 3, 4) and m.channels == 4
    assert m.array[4, 2, 1, 3] == d4[1, 2, 4, 3]
    write_nifti(m, tmp_path / "m2.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "m2.nii.gz")).dataobj), d4)


def test_write_is_atomic_and_checks_name(tmp_path: Path) -> None:
    v = example_volume("head_first", (2, 4, 4))
    with pytest.raises(InputError, match=".nii"):
        write_nifti(v, tmp_path / "v.nrrd")
    target = tmp_path / "v.nii.gz"
    target.write_bytes(b"old")
    bad = v.with_array(np.zeros((2, 4, 4), dtype=np.complex256) if hasattr(np, "complex256") else
                       np.zeros((2, 4, 4), dtype=object))
    with pytest.raises(Exception):
        write_nifti(bad, target)
    assert target.read_bytes() == b"old"  # failed write left the old file alone
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]  # no temporary left behind


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "x.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(InputError, match="cannot read NIfTI"):
        read_nifti(tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match="not found"):
        read_nifti(tmp_path / "none.nii")


def test_int64_labels_beyond_32_bits_round_trip(tmp_path: Path) -> None:
    """nibabel refuses int64 data unless asked; labels that do not fit 32 bits are stored as NIfTI int64."""
    v = example_volume("oblique", (3, 5, 4))
    lab = np.zeros(v.shape_kji, np.int64)
    lab[1, 2, 1] = 2**40 + 3
    lab[2, 0, 0] = 7
    write_nifti(v.with_array(lab), tmp_path / "l.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "l.nii.gz"))), lab)
    np.testing.assert_array_equal(read_nifti(tmp_path / "l.nii.gz").array, lab)
    small = v.with_array(lab.clip(max=100))
    write_nifti(small, tmp_path / "s.nii.gz")
    assert nib.load(str(tmp_path / "s.nii.gz")).get_data_dtype() == np.int32  # still narrowed when it fits


def test_unwritable_output_is_input_error(tmp_path: Path) -> None:
    from OncoSegLib.io.atomic import OutputPathError

    v = example_volume("head_first", (2, 4, 4))
    (tmp_path / "file").write_bytes(b"x")
    for target in (tmp_path / "file" / "v.nii.gz", tmp_path / "dir.nii.gz"):
        if target.name == "dir.nii.gz":
            target.mkdir()
        with pytest.raises(InputError, match="folder|cannot write") as err:
            write_nifti(v, target)
        if target.name != "dir.nii.gz":
            assert isinstance(err.value, OutputPathError) and isinstance(err.value, OSError)
    assert (tmp_path / "file").read_bytes() == b"x"
