"""NaN or zero voxel geometry is refused with a one-line error (exit 2, no output) in every reader: a DICOM slice with
a NaN ImagePositionPatient, a NIfTI with a NaN sform/qform or a zero/NaN pixdim and no sform (nibabel alone would
silently read a zero as 1 mm), and a CVPR npz with a NaN spacing."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from OncoSegLib.cli import main
from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume
from OncoSegLib.io.loader import load_volume

# NIfTI-1 header byte offsets (nifti1.h): pixdim[8] float32 at 76, qform_code/sform_code int16 at 252/254,
# quatern_b..qoffset_z float32 at 256, srow_x float32[4] at 280.
_PIXDIM, _CODES, _QUAT, _SROW_X = 76, 252, 256, 280


def _convert_fails(src: Path, tmp_path: Path, needle: str, capsys) -> None:
    out = tmp_path / "out.nii.gz"
    rc = main(["convert", str(src), str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("oncoseg convert: error:") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_dicom_nan_image_position(tmp_path: Path, value: str, capsys) -> None:
    files = write_dicom_series(example_volume("head_first", (4, 8, 8)), tmp_path / "ct")
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = [value, "0", "0"]
    ds.save_as(files[2])
    with pytest.raises(InputError, match="not a finite number"):
        load_volume(tmp_path / "ct")
    _convert_fails(tmp_path / "ct", tmp_path, "ImagePositionPatient", capsys)


@pytest.mark.parametrize("spacing,needle", [(["0", "0.7"], "non-positive PixelSpacing"),
                                            (["nan", "0.7"], "PixelSpacing [nan, 0.7] is not a finite number")])
def test_dicom_zero_or_nan_pixel_spacing(tmp_path: Path, spacing, needle: str, capsys) -> None:
    files = write_dicom_series(example_volume("head_first", (3, 8, 8)), tmp_path / "ct")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PixelSpacing = spacing
        ds.save_as(f)
    with pytest.raises(InputError) as err:
        load_volume(tmp_path / "ct")
    assert needle in str(err.value)
    _convert_fails(tmp_path / "ct", tmp_path, needle, capsys)


def _nifti(tmp_path: Path, patch) -> Path:
    base = tmp_path / "base.nii"
    nib.save(nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), np.diag([2.0, 2.0, 2.0, 1.0])), base)
    raw = bytearray(base.read_bytes())
    patch(raw)
    out = tmp_path / "bad.nii"
    out.write_bytes(bytes(raw))
    return out


def _nan_sform(raw: bytearray) -> None:
    struct.pack_into("<f", raw, _SROW_X, float("nan"))


def _zero_pixdim_no_sform(raw: bytearray) -> None:
    struct.pack_into("<3f", raw, _PIXDIM + 4, 0.0, 2.0, 2.0)
    struct.pack_into("<hh", raw, _CODES, 0, 0)


def _nan_pixdim_qform(raw: bytearray) -> None:
    struct.pack_into("<3f", raw, _PIXDIM + 4, 2.0, float("nan"), 2.0)
    struct.pack_into("<hh", raw, _CODES, 1, 0)


def _nan_qoffset(raw: bytearray) -> None:
    struct.pack_into("<f", raw, _QUAT + 12, float("nan"))
    struct.pack_into("<hh", raw, _CODES, 1, 0)


@pytest.mark.parametrize("patch,needle", [(_nan_sform, "sform"), (_zero_pixdim_no_sform, "pixdim"),
                                          (_nan_pixdim_qform, "pixdim"), (_nan_qoffset, "qform")],
                         ids=["nan_sform", "zero_pixdim", "nan_pixdim", "nan_qoffset"])
def test_nifti_nan_or_zero_geometry(tmp_path: Path, patch, needle: str, capsys) -> None:
    bad = _nifti(tmp_path, patch)
    hdr = nib.Nifti1Header.from_fileobj(open(bad, "rb"), check=False)  # the oracle: the stored header is bad
    stored = np.concatenate([hdr["pixdim"][1:4], hdr["srow_x"], [hdr["qoffset_x"]]])
    assert np.any(~np.isfinite(stored)) or np.any(hdr["pixdim"][1:4] == 0)
    with pytest.raises(InputError, match=needle):
        load_volume(bad)
    _convert_fails(bad, tmp_path, needle, capsys)


def test_nifti_good_header_still_reads(tmp_path: Path) -> None:
    vol = load_volume(_nifti(tmp_path, lambda raw: None))
    assert vol.spacing == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("spacing", [[np.nan, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, np.inf]])
def test_npz_nan_or_zero_spacing(tmp_path: Path, spacing, capsys) -> None:
    src = tmp_path / "case.npz"
    np.savez(src, imgs=np.zeros((3, 8, 8), np.int16), spacing=np.array(spacing))
    with pytest.raises(InputError, match="spacing"):
        load_volume(src)
    _convert_fails(src, tmp_path, "spacing", capsys)
