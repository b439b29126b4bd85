"""`oncoseg export rtstruct|seg` and `oncoseg import rtstruct|seg` end to end.

The label map is stored in a permuted/flipped NIfTI orientation; the imported NIfTI is read back with SimpleITK
(an independent reader) and compared voxel by voxel on the series grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import make_ct, make_structures  # noqa: E402

from OncoSegLib.cli import main  # noqa: E402
from OncoSegLib.io.nifti import write_nifti  # noqa: E402
from OncoSegLib.io.volume import Volume  # noqa: E402


def _reoriented(labels: np.ndarray, vol: Volume, shift_mm: float = 0.0) -> Volume:
    """The same label map stored with axes (k', j', i') = (j, k, flipped i): another NIfTI orientation."""
    k, j, i = labels.shape
    b = np.flip(np.transpose(labels, (1, 0, 2)), axis=2)
    d = vol.direction
    direction = np.column_stack([-d[:, 0], d[:, 2], d[:, 1]])
    spacing = (vol.spacing[0], vol.spacing[2], vol.spacing[1])
    origin = vol.ijk_to_lps_points(np.array([[i - 1, 0, 0]]))[0] + shift_mm
    return Volume(np.ascontiguousarray(b), spacing=spacing, origin=tuple(origin), direction=direction)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    vol = make_ct(tmp, "non_square_anisotropic")
    labels = make_structures(vol.shape_kji)
    mask = tmp / "mask.nii.gz"
    write_nifti(_reoriented(labels, vol), mask)
    return tmp, vol, labels, mask


def _sitk_labels(path: Path, vol: Volume) -> np.ndarray:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    np.testing.assert_allclose(img.GetOrigin(), vol.origin, atol=1e-3)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), vol.direction, atol=1e-5)
    np.testing.assert_allclose(img.GetSpacing(), vol.spacing, atol=1e-4)
    return sitk.GetArrayFromImage(img)


def test_export_import_rtstruct(setup, capsys) -> None:
    tmp, vol, labels, mask = setup
    rt = tmp / "rt.dcm"
    rc = main(["export", "rtstruct", "--mask", str(mask), "--dicom", str(tmp / "ct"), "--out", str(rt),
               "--names", "sphere,ring,thin,dot", "--colors", "#ff0000,0:255:0,0/0/255,#123456",
               "--types", "GTV,ORGAN,AVOID,MARKER"])
    assert rc == 0, capsys.readouterr().err
    out_nii = tmp / "back.nii.gz"
    rc = main(["import", "rtstruct", str(rt), "--dicom", str(tmp / "ct"), "--out", str(out_nii)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sphere" in printed and "dot" in printed
    np.testing.assert_array_equal(_sitk_labels(out_nii, vol), labels)

    # refuses to overwrite without --overwrite, leaves the file alone, one-line error
    before = rt.read_bytes()
    rc = main(["export", "rtstruct", "--mask", str(mask), "--dicom", str(tmp / "ct"), "--out", str(rt)])
    err = capsys.readouterr().err
    assert rc == 2 and "exists" in err and len(err.strip().splitlines()) == 1
    assert rt.read_bytes() == before
    rc = main(["import", "rtstruct", str(rt), "--dicom", str(tmp / "ct"), "--out", str(out_nii)])
    assert rc == 2 and "exists" in capsys.readouterr().err
    rc = main(["export", "rtstruct", "--mask", str(mask), "--dicom", str(tmp / "ct"), "--out", str(rt),
               "--overwrite", "--keyhole"])
    assert rc == 0
    rc = main(["import", "rtstruct", str(rt), "--dicom", str(tmp / "ct"), "--out", str(out_nii), "--overwrite"])
    assert rc == 0
    np.testing.assert_array_equal(_sitk_labels(out_nii, vol), labels)


def test_export_import_seg(setup, capsys) -> None:
    tmp, vol, labels, mask = setup
    seg = tmp / "seg.dcm"
    rc = main(["export", "seg", "--mask", str(mask), "--dicom", str(tmp / "ct"), "--out", str(seg),
               "--names", "liver,GTV,thin,dot"])
    assert rc == 0, capsys.readouterr().err
    out_nii = tmp / "seg_back.nii"
    rc = main(["import", "seg", str(seg), "--dicom", str(tmp / "ct"), "--out", str(out_nii)])
    assert rc == 0
    np.testing.assert_array_equal(_sitk_labels(out_nii, vol), labels)


def test_grid_mismatch_is_one_line_error(setup, capsys) -> None:
    tmp, vol, labels, _ = setup
    shifted = tmp / "shifted.nii.gz"
    write_nifti(_reoriented(labels, vol, shift_mm=0.3), shifted)
    out = tmp / "never.dcm"
    rc = main(["export", "rtstruct", "--mask", str(shifted), "--dicom", str(tmp / "ct"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "does not match" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    cropped = tmp / "cropped.nii.gz"
    write_nifti(vol.with_array(labels[:, :, :-3]), cropped)
    rc = main(["export", "seg", "--mask", str(cropped), "--dicom", str(tmp / "ct"), "--out", str(out)])
    assert rc == 2 and not out.exists()


def test_warnings_on_stderr_and_unwritable_out(setup, capsys) -> None:
    tmp, vol, labels, mask = setup
    out = tmp / "long.dcm"
    rc = main(["export", "rtstruct", "--mask", str(mask), "--dicom", str(tmp / "ct"), "--out", str(out),
               "--names", "a_name_longer_than_sixteen,b,c,d"])
    captured = capsys.readouterr()
    assert rc == 0 and "16" in captured.err and "warning" in captured.err
    assert captured.out.strip() == f"wrote {out}"  # stdout stays clean for scripts
    (tmp / "a_file").write_bytes(b"x")
    rc = main(["export", "seg", "--mask", str(mask), "--dicom", str(tmp / "ct"), "--out",
               str(tmp / "a_file" / "seg.dcm")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


def test_import_onto_uneven_series_refuses(tmp_path, capsys) -> None:
    """A NIfTI cannot describe a series with a missing slice: import used to write one on a mean-spacing grid
    (labels off by part of a slice); now it stops with a one-line error naming the problem."""
    from OncoSegLib.export.rtstruct import write_rtstruct
    from OncoSegLib.io.dicom_write import write_dicom_series
    from OncoSegLib.io.geometries import example_volume

    v = example_volume("head_first", (7, 16, 16))
    write_dicom_series(v, tmp_path / "ct")
    Path(v.metadata["files"][4]).unlink()
    labels = np.zeros((6, 16, 16), np.uint8)
    labels[1:5, 4:9, 4:9] = 1
    write_rtstruct(labels, tmp_path / "ct", tmp_path / "rt.dcm")
    out = tmp_path / "back.nii.gz"
    rc = main(["import", "rtstruct", str(tmp_path / "rt.dcm"), "--dicom", str(tmp_path / "ct"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "missing 1 slice" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_import_of_a_folder_says_so(setup, capsys) -> None:
    tmp, *_ = setup
    rc = main(["import", "rtstruct", str(tmp / "ct"), "--dicom", str(tmp / "ct"), "--out", str(tmp / "x.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1
