"""An RTSTRUCT contour that reaches outside the image in-plane warns on import (naming the ROI and how far, in mm),
as one beyond the slices does; the part inside is still read. Contours on the border pixels' outer edges (what our
writer traces for a structure touching the border) do not warn. NaN contour coordinates are refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from OncoSegLib.cli import main
from OncoSegLib.errors import InputError
from OncoSegLib.export import read_rtstruct, write_rtstruct
from OncoSegLib.export.reference import load_reference
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume


@pytest.fixture()
def case(tmp_path: Path):
    write_dicom_series(example_volume("non_square_anisotropic", (4, 20, 16)), tmp_path / "ct")
    ref = load_reference(tmp_path / "ct")
    lab = np.zeros(ref.shape_kji, np.uint8)
    lab[2, 5:10, 0:6] = 1  # touches the i = 0 border
    lab[1:3, 12:19, 8:15] = 2  # touches the last row j = 19 (J = 20)
    write_rtstruct(lab, ref, tmp_path / "rt.dcm", names=["Edge", "Inside"])
    return tmp_path, ref, lab


def _read(path: Path, ref):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels, rois = read_rtstruct(path, ref)
    return labels, [str(w.message) for w in caught]


def test_border_contours_do_not_warn(case) -> None:
    d, ref, lab = case
    labels, messages = _read(d / "rt.dcm", ref)
    np.testing.assert_array_equal(labels, lab)
    assert not [m for m in messages if "outside the image" in m]


def test_contour_outside_in_plane_warns_and_keeps_the_inside(case, capsys) -> None:
    d, ref, lab = case
    ds = pydicom.dcmread(d / "rt.dcm")
    si = ref.spacing_ij[0]
    shift = -3 * si * ref.row_dir  # 3 columns towards i < 0: half of the 6-column square leaves the image
    item = ds.ROIContourSequence[0].ContourSequence[0]
    pts = np.array([float(v) for v in item.ContourData]).reshape(-1, 3) + shift
    item.ContourData = [f"{v:.6f}" for v in pts.ravel()]
    ds.save_as(d / "moved.dcm")
    labels, messages = _read(d / "moved.dcm", ref)
    hits = [m for m in messages if "outside the image in-plane" in m]
    assert len(hits) == 1 and "'Edge'" in hits[0]
    assert f"{3 * si:.1f} mm" in hits[0]
    expected = lab.copy()
    expected[2, 5:10, 3:6] = 0  # the square moved 3 columns: columns 0..2 stay inside, the rest is outside
    expected[2, 5:10, 0:3] = 1
    np.testing.assert_array_equal(labels, expected)
    rc = main(["import", "rtstruct", str(d / "moved.dcm"), "--dicom", str(d / "ct"), "--out", str(d / "l.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 0 and "oncoseg import: warning:" in err and "outside the image in-plane" in err


def test_nan_contour_coordinates_refused(case) -> None:
    d, ref, _ = case
    ds = pydicom.dcmread(d / "rt.dcm")
    item = ds.ROIContourSequence[1].ContourSequence[0]
    vals = [str(v) for v in item.ContourData]
    vals[4] = "nan"
    item.ContourData = vals
    ds.save_as(d / "nan.dcm")
    with pytest.raises(InputError, match="NaN"):
        read_rtstruct(d / "nan.dcm", ref)
