"""`oncoseg metrics` accepts only label maps (a CT, an MR or a probability map is refused with the rule) and maps
labels (`--pred-label N --gt-label M`), checked against MONAI's Dice and Hausdorff distance."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from OncoSegLib.cli import main

SPACING = (0.8, 1.2, 2.5)  # (si, sj, sk) mm


def save(path, kji: np.ndarray) -> str:
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.transpose(kji, (2, 1, 0))), affine), str(path))
    return str(path)


def _labels() -> np.ndarray:
    lab = np.zeros((6, 20, 24), np.uint8)
    lab[2:5, 6:12, 6:16] = 1
    lab[1:4, 13:18, 3:9] = 2
    return lab


def _one_line(capsys, rc: int, needle: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("oncoseg metrics: error:") and len(err.strip().splitlines()) == 1 and needle in err, err
    return err


REAL = Path(__file__).parents[1] / "OncoSegLib" / "data" / "real_ct"  # TotalSegmentator example CT and its labels


@pytest.mark.parametrize("kind", ["real_ct", "real_mr", "many_values", "probability", "nan"])
def test_images_that_are_not_label_maps_are_refused(tmp_path, kind: str, capsys) -> None:
    rng = np.random.default_rng(0)
    gt = str(REAL / "example_seg.nii.gz")
    if kind in ("real_ct", "real_mr"):
        img = str(REAL / ("example_ct_sm.nii.gz" if kind == "real_ct" else "example_mr_sm.nii.gz"))
        data = np.asarray(nib.load(img).dataobj)
        assert data.min() < 0 and len(np.unique(data)) > 800  # hundreds of "labels" if read as a label map
        needle = "negative values"
        if kind == "real_mr":
            gt = save(tmp_path / "gt.nii.gz", np.zeros(data.shape[::-1], np.uint8))
    else:
        if kind == "many_values":
            arr, needle = rng.integers(0, 4000, (6, 20, 24)).astype(np.uint16), "distinct non-zero values"
        elif kind == "probability":
            arr, needle = rng.random((6, 20, 24)).astype(np.float32), "fractional"
        else:
            arr = _labels().astype(np.float32)
            arr[0, 0, 0] = np.nan
            needle = "fractional or NaN"
        img = save(tmp_path / "img.nii.gz", arr)
        gt = save(tmp_path / "gt.nii.gz", np.zeros(arr.shape, np.uint8))
    err = _one_line(capsys, main(["metrics", img, gt]), needle)
    assert "at most 1000 distinct" in err  # the rule is stated
    _one_line(capsys, main(["metrics", gt, img]), needle)  # as the truth too


def test_real_label_map_is_accepted(capsys) -> None:
    seg = str(REAL / "example_seg.nii.gz")
    assert main(["metrics", seg, seg, "--json", "--no-recist"]) == 0
    out = json.loads(capsys.readouterr().out)["labels"]
    assert len(out) == 41 and all(r["dice"] == 1.0 for r in out.values())


def test_float_file_with_whole_numbers_is_a_label_map(tmp_path, capsys) -> None:
    lab = _labels()
    gt = save(tmp_path / "gt.nii.gz", lab)
    assert main(["metrics", save(tmp_path / "f.nii.gz", lab.astype(np.float32)), gt, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels"]["1"]["dice"] == 1.0 and out["labels"]["2"]["dice"] == 1.0


def test_pred_label_gt_label_mapping_against_monai(tmp_path, capsys) -> None:
    gt = _labels()
    pred = np.zeros_like(gt)
    pred[2:5, 7:12, 6:15] = 3  # the same organ as truth label 1, numbered 3 by another tool
    pred[1:4, 13:18, 3:9] = 1  # prediction label 1 is truth label 2's region: must not be compared
    rc = main(["metrics", save(tmp_path / "p.nii.gz", pred), save(tmp_path / "g.nii.gz", gt), "--pred-label", "3",
               "--gt-label", "1", "--json", "--no-recist"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)["labels"]
    assert list(res) == ["3:1"]
    p = torch.from_numpy((pred == 3)[None, None].astype(np.float32))
    g = torch.from_numpy((gt == 1)[None, None].astype(np.float32))
    assert res["3:1"]["dice"] == pytest.approx(float(compute_dice(p, g)[0, 0]), abs=1e-6)
    hd = compute_hausdorff_distance(p, g, percentile=95, spacing=[SPACING[2], SPACING[1], SPACING[0]])
    assert res["3:1"]["hd95"] == pytest.approx(float(hd[0, 0]), abs=1e-4)
    assert 0.5 < res["3:1"]["dice"] < 1.0


@pytest.mark.parametrize("argv,needle", [(["--pred-label", "3"], "go together"),
                                         (["--pred-label", "3", "--gt-label", "1", "--labels", "1"], "--labels"),
                                         (["--pred-label", "0", "--gt-label", "1"], "non-zero")])
def test_label_mapping_flag_errors(tmp_path, argv, needle, capsys) -> None:
    g = save(tmp_path / "g.nii.gz", _labels())
    _one_line(capsys, main(["metrics", g, g] + argv), needle)
