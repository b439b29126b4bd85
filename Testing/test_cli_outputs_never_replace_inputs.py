"""`--overwrite` replaces earlier outputs, never an input: the reported case (`segment --prompts liver.json --out
liver.nii.gz --overwrite` replaced the prompts file with the mask sidecar), the same file spelled through a symbolic
link, a hard link or `..`, a DICOM slice of the referenced series as `export --out`, the autoseg protocol as one of its
outputs; and what stays allowed (a new file inside the series folder, replacing an earlier output)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.cli import main
from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume
from OncoSegLib.io.nifti import write_nifti
from OncoSegLib.io.outputs import refuse_input_overwrite, same_path
from OncoSegLib.io.volume import Volume


def _refused(capsys, verb: str, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"oncoseg {verb}: error:") and len(err.strip().splitlines()) == 1, err
    assert "input" in err
    return err


def test_segment_prompts_file_is_not_replaced_by_the_sidecar(tmp_path: Path, capsys) -> None:
    from OncoSegLib.models.tiny import save_tiny_checkpoint

    ck = save_tiny_checkpoint(tmp_path / "model")
    write_nifti(Volume(np.zeros((3, 32, 32), np.float32)), tmp_path / "img.nii.gz")
    prompts = tmp_path / "liver.json"
    prompts.write_text(json.dumps({"objects": [{"name": "liver", "points": [[10, 10, 1]]}]}))
    before = prompts.read_bytes()
    out = tmp_path / "liver.nii.gz"  # its sidecar is liver.json: the prompts file
    rc = main(["segment", str(tmp_path / "img.nii.gz"), "--prompts", str(prompts), "--model", str(ck), "--out",
               str(out), "--device", "cpu", "--quiet", "--overwrite"])
    err = _refused(capsys, "segment", rc)
    assert "--prompts" in err
    assert prompts.read_bytes() == before and not out.exists()


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_convert_output_is_the_input_in_any_spelling(tmp_path: Path, spelling: str, capsys) -> None:
    src = tmp_path / "img.nii.gz"
    write_nifti(Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4)), src)
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    out = {"same": src, "dotdot": tmp_path / "sub" / ".." / "img.nii.gz",
           "symlink": tmp_path / "link.nii.gz", "hardlink": tmp_path / "hard.nii.gz"}[spelling]
    if spelling == "symlink":
        out.symlink_to(src)
    elif spelling == "hardlink":
        os.link(src, out)
    assert same_path(out, src)  # os.path.samefile agrees that it is one file
    rc = main(["convert", str(src), str(out), "--overwrite"])
    _refused(capsys, "convert", rc)
    assert src.read_bytes() == before


def test_export_over_a_slice_of_the_series_refused(tmp_path: Path, capsys) -> None:
    files = write_dicom_series(example_volume("head_first", (4, 16, 16)), tmp_path / "ct")
    from OncoSegLib.io.dicom_series import read_dicom_series

    ct = read_dicom_series(tmp_path / "ct")
    lab = np.zeros(ct.shape_kji, np.uint8)
    lab[1:3, 4:10, 4:10] = 1
    write_nifti(ct.with_array(lab), tmp_path / "lab.nii.gz")
    slice_file = Path(files[1])
    before = slice_file.read_bytes()
    rc = main(["export", "rtstruct", "--mask", str(tmp_path / "lab.nii.gz"), "--dicom", str(tmp_path / "ct"),
               "--out", str(slice_file), "--overwrite"])
    err = _refused(capsys, "export", rc)
    assert "DICOM image of the input folder" in err
    assert slice_file.read_bytes() == before
    # allowed: a new file inside the series folder, then replacing that earlier output
    new = tmp_path / "ct" / "rt.dcm"
    for extra in ([], ["--overwrite"]):
        rc = main(["export", "rtstruct", "--mask", str(tmp_path / "lab.nii.gz"), "--dicom", str(tmp_path / "ct"),
                   "--out", str(new)] + extra)
        assert rc == 0, capsys.readouterr().err
    assert read_dicom_series(tmp_path / "ct").shape_kji == ct.shape_kji  # the series still reads


def test_autoseg_protocol_named_like_an_output_is_not_replaced(tmp_path: Path, capsys) -> None:
    write_dicom_series(example_volume("head_first", (3, 16, 16)), tmp_path / "ct")
    out = tmp_path / "out"
    out.mkdir()
    protocol = out / "report.json"  # run_autoseg writes OUT/report.json
    shutil.copy(Path(__file__).parents[1] / "configs" / "autoseg_example.yaml", tmp_path / "p.yaml")
    import yaml

    protocol.write_text(json.dumps(yaml.safe_load((tmp_path / "p.yaml").read_text())))
    before = protocol.read_bytes()
    rc = main(["autoseg", str(tmp_path / "ct"), "--protocol", str(protocol), "--out", str(out), "--overwrite"])
    err = _refused(capsys, "autoseg", rc)
    assert "--protocol" in err and protocol.read_bytes() == before


def test_guard_unit_cases(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text("{}")
    refuse_input_overwrite([("--out", tmp_path / "b.json")], [("--prompts", a)])  # different file: fine
    refuse_input_overwrite([("--out", a)], [("--prompts", None), ("--model", tmp_path / "missing")])
    with pytest.raises(InputError, match="same file as the input --prompts"):
        refuse_input_overwrite([("--out", tmp_path / "." / "a.json")], [("--prompts", a)])
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    refuse_input_overwrite([("--out", folder / "notes.txt")], [("--dicom", folder)])  # not a DICOM file
    with pytest.raises(InputError, match="same file"):
        refuse_input_overwrite([("--out", folder)], [("--dicom", folder)])
