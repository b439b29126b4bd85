"""ROI names with control characters (tab, newline, ESC, DEL, C1) are cleaned to spaces with a warning, so that the
RTSTRUCT and SEG pass dciodvfy (they failed it before) and read back with the cleaned names."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.export import read_rtstruct, write_rtstruct, write_seg
from OncoSegLib.export.reference import load_reference
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume

from export_helpers import dciodvfy_problems, need_dciodvfy

NAMES = ["Liver\tleft", "GTV\n1", "Kid\x1bney\x7f", "Spleen\x85"]
CLEAN = ["Liver left", "GTV 1", "Kid ney", "Spleen"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("names")
    write_dicom_series(example_volume("head_first", (4, 20, 20)), d / "ct")
    ref = load_reference(d / "ct")
    lab = np.zeros(ref.shape_kji, np.uint8)
    for n in range(4):
        lab[1:3, 2 + 4 * n:5 + 4 * n, 3:12] = n + 1
    return d, ref, lab


@need_dciodvfy
@pytest.mark.parametrize("fmt", ["rtstruct", "seg"])
def test_control_characters_cleaned_and_dciodvfy_clean(case, tmp_path: Path, fmt: str) -> None:
    d, ref, lab = case
    out = tmp_path / f"{fmt}.dcm"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (write_rtstruct if fmt == "rtstruct" else write_seg)(lab, ref, out, names=NAMES)
    assert sum("control characters" in str(w.message) for w in caught) == len(NAMES)
    ds = pydicom.dcmread(out)
    if fmt == "rtstruct":
        assert [str(r.ROIName) for r in ds.StructureSetROISequence] == CLEAN
        assert [r.name for r in read_rtstruct(out, ref)[1]] == CLEAN
    else:
        assert [str(s.SegmentLabel) for s in ds.SegmentSequence] == CLEAN
    problems = [p for p in dciodvfy_problems(out) if p.startswith("Error")]
    assert problems == [], problems


def test_name_of_control_characters_only_refused(case, tmp_path: Path) -> None:
    d, ref, lab = case
    with pytest.raises(InputError, match="control characters only"):
        write_rtstruct(lab, ref, tmp_path / "rt.dcm", names=["\t\n", "b", "c", "d"])
