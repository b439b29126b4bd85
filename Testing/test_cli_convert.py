"""``oncoseg convert``: output geometry against SimpleITK, overwrite protection, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.cli import main
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_shape, example_volume

sitk = pytest.importorskip("SimpleITK")


def _sitk_series(folder: Path):
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


@pytest.mark.parametrize("name,reverse", [("oblique", True), ("feet_first", False), ("non_square_anisotropic", True)])
def test_convert_dicom_to_nifti_matches_simpleitk(tmp_path: Path, name: str, reverse: bool, capsys) -> None:
    v = example_volume(name, example_shape(name, 4))
    write_dicom_series(v, tmp_path / "dcm", reverse_order=reverse)
    out = tmp_path / "out.nii.gz"
    assert main(["convert", str(tmp_path / "dcm"), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    ours, ref = sitk.ReadImage(str(out)), _sitk_series(tmp_path / "dcm")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(ours.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(ours.GetDirection(), ref.GetDirection(), atol=1e-6)


def test_never_overwrites_without_flag(tmp_path: Path, capsys) -> None:
    v = example_volume("head_first", (2, 6, 6))
    write_dicom_series(v, tmp_path / "dcm")
    out = tmp_path / "o.nii.gz"
    out.write_bytes(b"precious")
    assert main(["convert", str(tmp_path / "dcm"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    assert main(["convert", str(tmp_path / "dcm"), str(out), "--overwrite"]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), v.array)


def test_series_choice_and_listing(tmp_path: Path, capsys) -> None:
    a = example_volume("head_first", (3, 6, 6))
    b = example_volume("prone", (2, 8, 6))
    write_dicom_series(a, tmp_path / "dcm", file_prefix="A", series_number=1)
    write_dicom_series(b, tmp_path / "dcm", file_prefix="B", series_number=2)
    out = tmp_path / "o.nii.gz"
    assert main(["convert", str(tmp_path / "dcm"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "--series" in err and a.metadata["SeriesInstanceUID"] in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["convert", str(tmp_path / "dcm"), "--list-series"]) == 0
    listing = capsys.readouterr().out
    assert a.metadata["SeriesInstanceUID"] in listing and b.metadata["SeriesInstanceUID"] in listing
    assert main(["convert", str(tmp_path / "dcm"), str(out), "--series", b.metadata["SeriesInstanceUID"]]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), b.array)


def test_npz_with_labels_out(tmp_path: Path) -> None:
    imgs = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    gts = (imgs % 3 == 0).astype(np.uint8)
    np.savez(tmp_path / "c.npz", imgs=imgs, gts=gts, spacing=np.array([0.5, 0.75, 2.0]))
    assert main(["convert", str(tmp_path / "c.npz"), str(tmp_path / "i.nii.gz"),
                 "--labels-out", str(tmp_path / "l.nii.gz")]) == 0
    img, lab = sitk.ReadImage(str(tmp_path / "i.nii.gz")), sitk.ReadImage(str(tmp_path / "l.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), imgs)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab), gts)
    np.testing.assert_allclose(img.GetSpacing(), (0.5, 0.75, 2.0))


@pytest.mark.parametrize("case", ["missing", "bad_suffix", "corrupt_png", "empty_folder"])
def test_bad_input_one_line_error(tmp_path: Path, case: str, capsys) -> None:
    out = tmp_path / "o.nii.gz"
    src = tmp_path / "missing"
    if case == "bad_suffix":
        out = tmp_path / "o.mha"
        src = tmp_path / "x.png"
        src.write_bytes(b"x")
    elif case == "corrupt_png":
        src = tmp_path / "x.png"
        src.write_bytes(b"not a png")
    elif case == "empty_folder":
        src = tmp_path / "folder"
        src.mkdir()
    rc = main(["convert", str(src), str(out)])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.startswith("oncoseg convert: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not out.exists()


def test_subprocess_console(tmp_path: Path) -> None:
    v = example_volume("oblique", (3, 6, 7))
    write_dicom_series(v, tmp_path / "dcm", reverse_order=True)
    out = tmp_path / "o.nii.gz"
    ok = subprocess.run([sys.executable, "-m", "OncoSegLib", "convert", str(tmp_path / "dcm"), str(out)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    ref = _sitk_series(tmp_path / "dcm")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), sitk.GetArrayFromImage(ref))
    bad = subprocess.run([sys.executable, "-m", "OncoSegLib", "convert", str(tmp_path / "dcm"), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "already exists" in bad.stderr


def test_npz_labels_beyond_32_bits_and_unwritable_output(tmp_path: Path, capsys) -> None:
    """int64 labels used to end in 'internal error' (nibabel refuses int64 unless asked); an output folder that
    cannot be created used to print an OSError as an internal error."""
    imgs = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    gts = np.zeros(imgs.shape, np.int64)
    gts[1, 1:3, 2:4] = 2**40
    gts[2, 0, 0] = 1
    np.savez(tmp_path / "c.npz", imgs=imgs, gts=gts, spacing=np.array([0.5, 0.75, 2.0]))
    assert main(["convert", str(tmp_path / "c.npz"), str(tmp_path / "i.nii.gz"),
                 "--labels-out", str(tmp_path / "l.nii.gz")]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "l.nii.gz"))), gts)
    capsys.readouterr()
    (tmp_path / "a_file").write_bytes(b"x")
    rc = main(["convert", str(tmp_path / "c.npz"), str(tmp_path / "a_file" / "o.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("oncoseg convert: error: cannot write") and len(err.strip().splitlines()) == 1


def test_labels_out_cannot_replace_the_image(tmp_path: Path, capsys) -> None:
    """--labels-out equal to OUTPUT used to write the image and then overwrite it with the labels."""
    imgs = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    np.savez(tmp_path / "c.npz", imgs=imgs, gts=(imgs > 5).astype(np.uint8))
    out = tmp_path / "o.nii.gz"
    rc = main(["convert", str(tmp_path / "c.npz"), str(out), "--labels-out", str(tmp_path / "." / "o.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and "--labels-out must differ" in err and not out.exists()
