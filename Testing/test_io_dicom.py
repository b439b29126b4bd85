"""DICOM series writer/reader: geometry and values against SimpleITK (independent oracle), dciodvfy validity,
and the named errors for series that are not a regular grid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_series import list_series, read_dicom_file_series, read_dicom_series
from OncoSegLib.io.dicom_write import ds_str, write_dicom_series
from OncoSegLib.io.geometries import GEOMETRY_NAMES, example_geometry, example_shape, example_volume
from OncoSegLib.io.volume import Volume

sitk = pytest.importorskip("SimpleITK")


def sitk_read_series(folder: Path):
    """SimpleITK/GDCM reading of the series in ``folder``: (array k,j,i, spacing, origin, direction 3x3)."""
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    img = reader.Execute()
    return (sitk.GetArrayFromImage(img), np.array(img.GetSpacing()), np.array(img.GetOrigin()),
            np.array(img.GetDirection()).reshape(3, 3))


def lps_grid_values_agree(read: Volume, truth: Volume) -> None:
    """Every voxel of ``read`` maps (through both geometries) onto a voxel of ``truth`` with the same value."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in read.shape_kji), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
    back = truth.lps_to_ijk_points(read.ijk_to_lps_points(ijk))
    assert np.allclose(back, np.round(back), atol=1e-3)
    bi, bj, bk = np.round(back).astype(int).T
    np.testing.assert_array_equal(read.array[k.ravel(), j.ravel(), i.ravel()], truth.array[bk, bj, bi])


@pytest.mark.parametrize("reverse", [False, True], ids=["along_normal", "against_normal"])
@pytest.mark.parametrize("name", GEOMETRY_NAMES)
def test_read_matches_simpleitk(tmp_path: Path, name: str, reverse: bool) -> None:
    truth = example_volume(name, example_shape(name, 5), seed=3)
    files = write_dicom_series(truth, tmp_path / "s", reverse_order=reverse)
    vol = read_dicom_series(tmp_path / "s")
    arr, spacing, origin, direction = sitk_read_series(tmp_path / "s")

    assert vol.array.dtype == np.float32
    assert vol.array.shape == arr.shape
    np.testing.assert_array_equal(vol.array, arr.astype(np.float32))
    np.testing.assert_allclose(vol.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-6)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-6)
    # and against the written truth, in physical space (a grid with k = -(i x j) comes back with k flipped)
    lps_grid_values_agree(vol, truth)
    assert vol.same_grid(truth) == (name != "reversed_k")
    # metadata in k order
    md = vol.metadata
    assert md["SeriesInstanceUID"] == truth.metadata["SeriesInstanceUID"]
    assert md["StudyInstanceUID"] == truth.metadata["StudyInstanceUID"]
    assert md["FrameOfReferenceUID"] == truth.metadata["FrameOfReferenceUID"]
    assert md["Modality"] == "CT" and vol.modality == "CT"
    for k, (f, uid) in enumerate(zip(md["files"], md["sop_instance_uids"])):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.SOPInstanceUID == uid
        ipp = np.array([float(x) for x in ds.ImagePositionPatient])
        np.testing.assert_allclose(ipp, vol.ijk_to_lps_points([[0, 0, k]])[0], atol=1e-6)
    # the writer's own k order and instance numbering
    inst = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert inst == (list(range(len(files), 0, -1)) if reverse else list(range(1, len(files) + 1)))
    import json

    json.dumps(md)  # JSON-friendly


def test_instance_number_is_not_used_for_order(tmp_path: Path) -> None:
    truth = example_volume("oblique", example_shape("oblique", 6), seed=1)
    write_dicom_series(truth, tmp_path / "s")
    rng = np.random.default_rng(0)
    for f, n in zip(sorted((tmp_path / "s").iterdir()), rng.permutation(6) + 1):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(n)
        ds.save_as(f)
    vol = read_dicom_series(tmp_path / "s")
    arr, _, origin, _ = sitk_read_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-6)
    lps_grid_values_agree(vol, truth)


@pytest.mark.parametrize("rescale", [(1.0, -1024.0), (2.0, -1000.0), (1.0, 0.0)])
def test_rescale_and_signed_pixels(tmp_path: Path, rescale) -> None:
    truth = example_volume("anisotropic", (3, 16, 20), seed=2)
    arr = truth.array.astype(np.int32)
    if rescale[0] == 2.0:
        arr = arr - (arr % 2)  # representable with slope 2
    if rescale == (1.0, 0.0):
        arr = arr * 10  # negative and > 12 bits: signed 16-bit storage
    truth = truth.with_array(arr.astype(np.int16))
    write_dicom_series(truth, tmp_path / "s", rescale=rescale)
    ds = pydicom.dcmread(next((tmp_path / "s").iterdir()))
    assert float(ds.RescaleSlope) == rescale[0] and float(ds.RescaleIntercept) == rescale[1]
    vol = read_dicom_series(tmp_path / "s")
    sitk_arr = sitk_read_series(tmp_path / "s")[0]
    np.testing.assert_array_equal(vol.array, sitk_arr.astype(np.float32))
    np.testing.assert_array_equal(vol.array, truth.array.astype(np.float32))


def test_values_out_of_range_refused(tmp_path: Path) -> None:
    v = Volume(np.full((2, 4, 4), 70000.0), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="do not fit 16-bit"):
        write_dicom_series(v, tmp_path / "s")


def test_ds_values_at_most_16_chars(tmp_path: Path) -> None:
    spacing, origin, direction = example_geometry("oblique", (3, 8, 8))
    v = Volume(np.zeros((3, 8, 8)), spacing=(np.float32(0.8), 0.6000000238418579, 1.2345678901234567),
               origin=(-68.80000305175781, 1 / 3, 1e-9), direction=direction)
    write_dicom_series(v, tmp_path / "s")
    for f in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(f)
        for elem in ds.iterall():
            if elem.VR == "DS":
                values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
                for x in values:
                    assert len(str(x)) <= 16, (elem.keyword, str(x))
    assert ds_str(-68.80000305175781) == "-68.800003051758"


# ----------------------------------------------------------------------------------------- dciodvfy (oracle)
from validators import require_tool  # noqa: E402  (fails under CI when missing, reported skip elsewhere)


@pytest.mark.validators
@pytest.mark.parametrize("name,modality,reverse", [
    ("head_first", "CT", False), ("feet_first", "CT", True), ("oblique", "CT", False), ("prone", "CT", True),
    ("non_square_anisotropic", "CT", False), ("sagittal", "CT", False), ("oblique", "MR", False)])
def test_dciodvfy_clean(tmp_path: Path, name: str, modality: str, reverse: bool) -> None:
    DCIODVFY, dcentvfy = require_tool("dciodvfy"), require_tool("dcentvfy")
    v = example_volume(name, example_shape(name, 3))
    if modality == "MR":
        v = v.with_array((v.array.astype(np.int32) + 1024).astype(np.uint16))
    files = write_dicom_series(v, tmp_path / "s", modality=modality, reverse_order=reverse,
                               rescale=(1, 0) if modality == "MR" else None, body_part="CHEST")
    for f in files:
        res = subprocess.run([DCIODVFY, "-new", str(f)], capture_output=True, text=True, timeout=60)
        out = res.stdout + res.stderr
        assert ("CTImage" if modality == "CT" else "MRImage") in out
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        assert errors == [], errors
        warnings = [line for line in out.splitlines() if line.startswith("Warning")]
        assert warnings == [], warnings
    res = subprocess.run([dcentvfy, *map(str, files)], capture_output=True, text=True, timeout=60)
    assert "Error" not in res.stdout + res.stderr


@pytest.mark.validators
def test_dciodvfy_default_body_part_only_warns(tmp_path: Path) -> None:
    DCIODVFY = require_tool("dciodvfy")
    files = write_dicom_series(example_volume("head_first", (2, 8, 8)), tmp_path / "s")
    out = subprocess.run([DCIODVFY, "-new", str(files[0])], capture_output=True, text=True, timeout=60)
    assert not [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


# ------------------------------------------------------------------------------------------- series handling
def _write(folder: Path, name: str = "head_first", n: int = 5, **kw) -> Volume:
    v = example_volume(name, example_shape(name, n))
    write_dicom_series(v, folder, **kw)
    return v


def test_several_series_listed_and_selected(tmp_path: Path) -> None:
    a = _write(tmp_path, "head_first", 4, file_prefix="A", series_description="first", series_number=1)
    b = _write(tmp_path, "oblique", 3, file_prefix="B", modality="MR", rescale=(1, 0), series_number=2)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "junk.bin").write_bytes(b"\x00" * 500)
    infos = list_series(tmp_path)
    assert [(i.series_uid, i.modality, i.n_files) for i in infos] == [
        (a.metadata["SeriesInstanceUID"], "CT", 4), (b.metadata["SeriesInstanceUID"], "MR", 3)]
    assert infos[0].description == "first"
    with pytest.raises(InputError) as err:
        read_dicom_series(tmp_path)
    msg = str(err.value)
    assert "2 image series" in msg and a.metadata["SeriesInstanceUID"] in msg and b.metadata["SeriesInstanceUID"] in msg
    assert "--series" in msg and "first" in msg and "4 files" in msg
    vb = read_dicom_series(tmp_path, series_uid=b.metadata["SeriesInstanceUID"])
    assert vb.modality == "MR" and vb.shape_kji == b.shape_kji
    lps_grid_values_agree(vb, b)
    with pytest.raises(InputError, match="not found"):
        read_dicom_series(tmp_path, series_uid="1.2.3.4")


def test_single_file_reads_its_series(tmp_path: Path) -> None:
    a = _write(tmp_path, "feet_first", 4, file_prefix="A")
    _write(tmp_path, "head_first", 3, file_prefix="B")
    vol = read_dicom_file_series(a.metadata["files"][2])
    assert vol.metadata["SeriesInstanceUID"] == a.metadata["SeriesInstanceUID"]
    assert vol.shape_kji == a.shape_kji
    lps_grid_values_agree(vol, a)


def test_rtstruct_and_seg_ignored(tmp_path: Path) -> None:
    v = _write(tmp_path, "head_first", 3)
    for modality, sop in (("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3"), ("SEG", "1.2.840.10008.5.1.4.1.1.66.4")):
        ds = pydicom.dcmread(v.metadata["files"][0])
        ds.Modality = modality
        ds.SOPClassUID = sop
        ds.file_meta.MediaStorageSOPClassUID = sop
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / f"{modality}.dcm")
    assert len(list_series(tmp_path)) == 1
    vol = read_dicom_series(tmp_path)
    assert vol.shape_kji == v.shape_kji


def _edit(files: list[str], fn) -> None:
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if fn(k, ds) is not False:
            ds.save_as(f)


def test_missing_slice(tmp_path: Path) -> None:
    v = _write(tmp_path, "oblique", 6)
    Path(v.metadata["files"][3]).unlink()
    with pytest.raises(InputError, match=r"missing 1 slice"):
        read_dicom_series(tmp_path)


def test_non_uniform_spacing(tmp_path: Path) -> None:
    v = _write(tmp_path, "head_first", 6)
    def shift(k, ds):
        if k >= 4:
            ds.ImagePositionPatient = [ds_str(float(ds.ImagePositionPatient[0])),
                                       ds_str(float(ds.ImagePositionPatient[1])),
                                       ds_str(float(ds.ImagePositionPatient[2]) + 0.9)]
        else:
            return False
    _edit(v.metadata["files"], shift)
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path)


def test_gantry_tilt(tmp_path: Path) -> None:
    v = _write(tmp_path, "head_first", 5)
    sk = v.spacing[2]
    def tilt(k, ds):
        p = [float(x) for x in ds.ImagePositionPatient]
        p[1] += k * sk * np.tan(np.deg2rad(10))
        ds.ImagePositionPatient = [ds_str(x) for x in p]
        ds.GantryDetectorTilt = "10"
    _edit(v.metadata["files"], tilt)
    with pytest.raises(InputError, match=r"gantry tilt.*10\.00 degrees"):
        read_dicom_series(tmp_path)


def test_mixed_orientation(tmp_path: Path) -> None:
    v = _write(tmp_path, "head_first", 4)
    _, _, d = example_geometry("oblique", (4, 8, 8))
    def orient(k, ds):
        if k != 2:
            return False
        ds.ImageOrientationPatient = [ds_str(x) for x in (*d[:, 0], *d[:, 1])]
    _edit(v.metadata["files"], orient)
    with pytest.raises(InputError, match="mixes 2 slice orientations"):
        read_dicom_series(tmp_path)


def test_mixed_sizes(tmp_path: Path) -> None:
    v = _write(tmp_path, "head_first", 4)
    other = example_volume("head_first", (2, 32, 32))
    other.origin = tuple(np.array(v.origin) + [0, 0, 4 * v.spacing[2]])
    write_dicom_series(other, tmp_path, series_uid=v.metadata["SeriesInstanceUID"], file_prefix="X")
    with pytest.raises(InputError, match="mixes image sizes"):
        read_dicom_series(tmp_path)


def test_duplicate_positions(tmp_path: Path) -> None:
    v = _write(tmp_path, "head_first", 3)
    write_dicom_series(v.with_array(v.array), tmp_path, series_uid=v.metadata["SeriesInstanceUID"], file_prefix="X")
    with pytest.raises(InputError, match="duplicate positions"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("how", ["truncated_pixels", "garbage_after_preamble"])
def test_corrupt_file(tmp_path: Path, how: str) -> None:
    v = _write(tmp_path, "head_first", 4)
    bad = Path(v.metadata["files"][1])
    data = bad.read_bytes()
    if how == "truncated_pixels":
        bad.write_bytes(data[: len(data) - 3000])
    else:
        bad.write_bytes(data[:132] + b"\xff" * 64 + b"\x00\x01garbage" * 20)
    with pytest.raises(InputError, match=r"corrupt") as err:
        read_dicom_series(tmp_path)
    assert bad.name in str(err.value)


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image series"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_dicom_series(tmp_path / "nope")


def test_single_slice_and_projection_image(tmp_path: Path) -> None:
    v = example_volume("anisotropic", (1, 12, 10))
    write_dicom_series(v, tmp_path / "one")
    one = read_dicom_series(tmp_path / "one")
    assert one.shape_kji == (1, 12, 10)
    np.testing.assert_allclose(one.spacing, (0.6, 0.9, 2.0))
    np.testing.assert_array_equal(one.array, v.array)
    # a projection X-ray: no ImagePositionPatient; spacing from ImagerPixelSpacing
    ds = pydicom.dcmread(v.metadata["files"][0])
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "FrameOfReferenceUID"):
        delattr(ds, kw)
    ds.Modality = "DX"
    ds.ImagerPixelSpacing = ["0.15", "0.125"]
    (tmp_path / "dx").mkdir()
    ds.save_as(tmp_path / "dx" / "x.dcm")
    dx = read_dicom_file_series(tmp_path / "dx" / "x.dcm")
    assert dx.modality == "DX" and dx.shape_kji == (1, 12, 10)
    np.testing.assert_allclose(dx.spacing, (0.125, 0.15, 1.0))
    np.testing.assert_array_equal(dx.array, v.array)


def test_writer_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = example_volume("head_first", (5, 8, 8))
    write_dicom_series(first, tmp_path)
    with pytest.raises(InputError, match="already holds 5 file"):
        write_dicom_series(example_volume("head_first", (3, 8, 8)), tmp_path)
    (tmp_path / "keep.dcm").write_bytes(b"user file")
    second = example_volume("oblique", (3, 8, 8), seed=9)
    write_dicom_series(second, tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT0001.dcm", "CT0002.dcm", "CT0003.dcm", "keep.dcm"]
    vol = read_dicom_series(tmp_path)  # keep.dcm is not DICOM: ignored
    assert vol.metadata["SeriesInstanceUID"] == second.metadata["SeriesInstanceUID"]
    lps_grid_values_agree(vol, second)


def test_real_scanner_file_matches_simpleitk(tmp_path: Path) -> None:
    """pydicom's bundled CT_small.dcm (a real GE CT slice, signed pixels + rescale) through the single-file path."""
    from pydicom.data import get_testdata_file

    src = get_testdata_file("CT_small.dcm")
    if src is None:
        pytest.skip("pydicom test data not installed")
    dst = tmp_path / "ct.dcm"
    dst.write_bytes(Path(src).read_bytes())
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "same.dcm").write_bytes(Path(src).read_bytes())  # same instance twice
    vol = read_dicom_file_series(dst)
    ref = sitk.ReadImage(str(dst))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).astype(np.float32))
    np.testing.assert_allclose(vol.spacing[:2], ref.GetSpacing()[:2])
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(vol.direction, np.array(ref.GetDirection()).reshape(3, 3), atol=1e-6)
    assert vol.metadata["files"] == [str(dst)] and vol.metadata["duplicate_files_skipped"] == 1


# ------------------------------------------------------------------------------------------ header-only reader
@pytest.mark.parametrize("name,reverse", [("feet_first", True), ("oblique", False), ("non_square_anisotropic", True),
                                          ("prone", True)])
def test_header_reader_matches_simpleitk_and_pixel_reader(tmp_path: Path, name: str, reverse: bool) -> None:
    from OncoSegLib.io.dicom_series import read_series_headers

    truth = example_volume(name, example_shape(name, 5), seed=4)
    write_dicom_series(truth, tmp_path / "s", reverse_order=reverse)
    h = read_series_headers(tmp_path / "s")
    vol = read_dicom_series(tmp_path / "s")
    _, spacing, origin, direction = sitk_read_series(tmp_path / "s")  # independent oracle for the geometry
    np.testing.assert_allclose(h.positions[0], origin, atol=1e-6)
    np.testing.assert_allclose(np.column_stack([h.row_dir, h.col_dir, h.normal]), direction, atol=1e-6)
    np.testing.assert_allclose([*h.spacing_ij, h.regular_step()], spacing, atol=1e-6)
    assert h.shape_kji == vol.shape_kji
    assert [str(f) for f in h.files] == vol.metadata["files"]
    assert [str(d.SOPInstanceUID) for d in h.headers] == vol.metadata["sop_instance_uids"]
    assert all("PixelData" not in d for d in h.headers)
    # a list of files in any order gives the same k order; sort=False keeps the given order
    shuffled = list(reversed(vol.metadata["files"]))
    assert [str(f) for f in read_series_headers(shuffled).files] == vol.metadata["files"]
    assert [str(f) for f in read_series_headers(shuffled, sort=False).files] == shuffled


def test_header_reader_refuses_what_the_pixel_reader_refuses(tmp_path: Path) -> None:
    """A damaged header in the series folder used to be dropped silently by the export side (a slice went
    missing from the reference); both readers now stop with the same one-line error."""
    from OncoSegLib.io.dicom_series import read_series_headers

    v = _write(tmp_path, "head_first", 4)
    bad = Path(v.metadata["files"][2])
    bad.write_bytes(bad.read_bytes()[:132] + b"\xff" * 64 + b"\x00\x01garbage" * 20)
    for reader in (read_dicom_series, read_series_headers):
        with pytest.raises(InputError, match="corrupt or unreadable") as err:
            reader(tmp_path)
        assert bad.name in str(err.value) and "\n" not in str(err.value)


def test_header_reader_keeps_uneven_series_but_regular_step_refuses(tmp_path: Path) -> None:
    from OncoSegLib.io.dicom_series import read_series_headers

    v = _write(tmp_path, "head_first", 6)
    Path(v.metadata["files"][3]).unlink()
    h = read_series_headers(tmp_path)  # every remaining slice keeps its own position: fine for contours
    assert h.shape_kji[0] == 5
    with pytest.raises(InputError, match=r"missing 1 slice"):
        h.regular_step()


def test_series_copied_twice_reads_once(tmp_path: Path) -> None:
    from OncoSegLib.io.dicom_series import read_series_headers

    v = _write(tmp_path / "a", "oblique", 4)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    h = read_series_headers(tmp_path)
    assert h.shape_kji[0] == 4 and h.duplicate_files_skipped == 4
    assert read_dicom_series(tmp_path).shape_kji == v.shape_kji


def test_unreadable_file_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    """A file without read permission (simulated: the tests may run as root) names the file and the reason."""
    v = _write(tmp_path, "head_first", 3)
    locked = Path(v.metadata["files"][1])
    real = pydicom.dcmread

    def dcmread(fp, *a, **kw):
        if Path(fp) == locked:
            raise PermissionError(13, "Permission denied", str(fp))
        return real(fp, *a, **kw)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    with pytest.raises(InputError, match=r"unreadable.*CT0002\.dcm.*permission denied"):
        read_dicom_series(tmp_path)
