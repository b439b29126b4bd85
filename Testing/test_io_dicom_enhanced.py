"""Enhanced (multi-frame) DICOM: geometry and values against the classic single-frame series they were converted from
(highdicom legacy conversion), that series also read by SimpleITK/GDCM; and the refusals (NaN, zero spacing, frames
that are not one regular grid) as one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from OncoSegLib.cli import main
from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_series import read_dicom_series, read_series_headers
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume
from OncoSegLib.io.loader import load_volume

hd = pytest.importorskip("highdicom")
sitk = pytest.importorskip("SimpleITK")

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def _convert(files: list[Path], out: Path, modality: str = "CT", edit=None) -> Path:
    """Legacy-convert the classic files into one enhanced file ``out`` (``edit(ds)`` is applied to each input)."""
    dss = [pydicom.dcmread(f) for f in files]
    for ds in dss:
        if edit is not None:
            edit(ds)
    cls = {"CT": hd.legacy.LegacyConvertedEnhancedCTImage, "MR": hd.legacy.LegacyConvertedEnhancedMRImage,
           "PT": hd.legacy.LegacyConvertedEnhancedPETImage}[modality]
    enh = cls(dss, series_instance_uid=generate_uid(), series_number=99, sop_instance_uid=generate_uid(),
              instance_number=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    enh.save_as(out)
    return out


def _sitk(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    m = np.eye(4)
    m[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    return sitk.GetArrayFromImage(img), m


@pytest.mark.parametrize("name,reverse", [("oblique", True), ("feet_first", False), ("non_square_anisotropic", True)])
def test_enhanced_ct_matches_classic_series_and_simpleitk(tmp_path: Path, name: str, reverse: bool) -> None:
    truth = example_volume(name, (6, 24, 20), seed=4)
    files = write_dicom_series(truth, tmp_path / "ct", reverse_order=reverse)
    enh = _convert(files, tmp_path / "enh" / "ct.dcm")
    vol = load_volume(enh)
    classic = read_dicom_series(tmp_path / "ct")
    arr, ijk_to_lps = _sitk(tmp_path / "ct")
    assert vol.metadata["enhanced"] is True and vol.metadata["n_frames"] == 6
    assert vol.shape_kji == (6, 24, 20)
    # mm coordinates of every voxel: enhanced == classic == SimpleITK (the classic files are the truth)
    np.testing.assert_allclose(vol.ijk_to_lps, classic.ijk_to_lps, atol=1e-6)
    np.testing.assert_allclose(vol.ijk_to_lps, ijk_to_lps, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, truth.spacing, atol=1e-6)
    # HU after the functional-group rescale (-1024 intercept): a missing rescale would be off by 1024
    np.testing.assert_array_equal(vol.array, classic.array)
    np.testing.assert_array_equal(vol.array, arr.astype(np.float32))
    assert vol.modality == "CT"


def test_per_frame_rescale_applied_frame_by_frame(tmp_path: Path) -> None:
    truth = example_volume("oblique", (5, 16, 12), seed=1)
    files = write_dicom_series(truth, tmp_path / "ct", reverse_order=True)

    def per_frame_intercept(ds: pydicom.Dataset) -> None:  # a different intercept on every frame
        ds.RescaleIntercept = str(-1000 - 7 * int(ds.InstanceNumber))

    enh = _convert(files, tmp_path / "enh.dcm", edit=per_frame_intercept)
    assert "PixelValueTransformationSequence" in pydicom.dcmread(enh).PerFrameFunctionalGroupsSequence[0]
    for f in files:
        per_frame_intercept(ds := pydicom.dcmread(f))
        ds.save_as(f)
    vol = load_volume(enh)
    np.testing.assert_array_equal(vol.array, _sitk(tmp_path / "ct")[0].astype(np.float32))


@pytest.mark.parametrize("modality", ["MR", "PT"])
def test_enhanced_mr_and_pet(tmp_path: Path, modality: str) -> None:
    truth = example_volume("feet_first", (5, 16, 12), seed=2)
    files = write_dicom_series(truth, tmp_path / "s", modality="MR", reverse_order=True)
    if modality == "PT":
        for f in files:  # a PET series: PET Image Storage, BQML stored with slope 0.5
            ds = pydicom.dcmread(f)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
            ds.Modality, ds.Units, ds.RescaleSlope, ds.RescaleIntercept = "PT", "BQML", "0.5", "0"
            ds.save_as(f)
    enh = _convert(files, tmp_path / "enh.dcm", modality=modality)
    vol, classic = load_volume(enh), read_dicom_series(tmp_path / "s")
    assert vol.modality == modality
    np.testing.assert_allclose(vol.ijk_to_lps, classic.ijk_to_lps, atol=1e-6)
    np.testing.assert_array_equal(vol.array, classic.array)
    if modality == "PT":
        np.testing.assert_array_equal(vol.array * 2, np.round(vol.array * 2))  # the 0.5 slope is applied
        assert np.any(vol.array * 2 % 2 == 1)


def _enhanced(tmp_path: Path, edit_enhanced=None, drop: int | None = None) -> Path:
    truth = example_volume("oblique", (5, 12, 10), seed=3)
    files = write_dicom_series(truth, tmp_path / "ct")
    if drop is not None:
        files = files[:drop] + files[drop + 1:]
    out = _convert(files, tmp_path / "enh" / "e.dcm")
    if edit_enhanced is not None:
        ds = pydicom.dcmread(out)
        edit_enhanced(ds)
        ds.save_as(out)
    return out


def _nan_position(ds: pydicom.Dataset) -> None:
    ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient = ["nan", "0", "0"]


def _zero_spacing(ds: pydicom.Dataset) -> None:
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = ["0", "0.75"]


def _no_orientation(ds: pydicom.Dataset) -> None:
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence


def _no_positions(ds: pydicom.Dataset) -> None:  # would otherwise read as a 1 mm cine of frames
    for frame in ds.PerFrameFunctionalGroupsSequence:
        del frame.PlanePositionSequence


@pytest.mark.parametrize("case,needle", [("nan_position", "ImagePositionPatient"),
                                         ("zero_spacing", "PixelSpacing"),
                                         ("no_orientation", "ImageOrientationPatient"),
                                         ("no_positions", "without plane positions"),
                                         ("missing_frame", "regular 3D grid")])
def test_bad_enhanced_geometry_refused(tmp_path: Path, case: str, needle: str, capsys) -> None:
    edits = {"nan_position": _nan_position, "zero_spacing": _zero_spacing, "no_orientation": _no_orientation,
             "no_positions": _no_positions}
    enh = _enhanced(tmp_path, edits.get(case), drop=2 if case == "missing_frame" else None)
    with pytest.raises(InputError, match=needle):
        load_volume(enh)
    out = tmp_path / "o.nii.gz"
    rc = main(["convert", str(enh), str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("oncoseg convert: error:") and needle in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_export_onto_enhanced_series_refused_by_name(tmp_path: Path) -> None:
    enh = _enhanced(tmp_path)
    with pytest.raises(InputError, match="enhanced"):
        read_series_headers(enh.parent)


def test_two_enhanced_files_in_one_series_refused(tmp_path: Path) -> None:
    enh = _enhanced(tmp_path)
    ds = pydicom.dcmread(enh)
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(enh.parent / "second.dcm")
    with pytest.raises(InputError, match="one enhanced file per series"):
        read_dicom_series(enh.parent)
