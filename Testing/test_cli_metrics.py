"""`oncoseg metrics PRED GT`: table, JSON, grid checks, one-line errors. Files are written with nibabel directly."""

import json
import math
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from OncoSegLib.cli import main

SPACING_IJK = (0.8, 1.2, 2.5)


def save(path, kji, spacing_ijk=SPACING_IJK, origin=(10.0, -20.0, 5.0)):
    affine = np.diag([-spacing_ijk[0], -spacing_ijk[1], spacing_ijk[2], 1.0])  # LPS-aligned axes in RAS
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.transpose(kji, (2, 1, 0))), affine), str(path))
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    pred = np.zeros((6, 20, 24), np.uint8)
    pred[2:4, 5:12, 6:15] = 1
    pred[1:5, 14:18, 3:9] = 2  # label 2 only in the prediction
    gt = np.zeros_like(pred)
    gt[2:5, 6:12, 6:16] = 1
    gt[0, 0:2, 0:2] = 3  # label 3 only in the truth
    return pred, gt, save(tmp_path / "pred.nii.gz", pred), save(tmp_path / "gt.nii.gz", gt)


def test_json_output(pair, capsys):
    pred, gt, p, g = pair
    assert main(["metrics", p, g, "--json", "--tolerance-mm", "1.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tolerance_mm"] == 1.5
    np.testing.assert_allclose(out["spacing_ijk_mm"], SPACING_IJK, rtol=1e-6)
    labels = out["labels"]
    assert set(labels) == {"1", "2", "3"}
    one = labels["1"]
    for key in ("dice", "iou", "nsd", "hd95", "volume_ml", "volume_gt_ml", "recist_long_mm", "recist_short_mm"):
        assert key in one
    inter = int(((pred == 1) & (gt == 1)).sum())
    assert one["dice"] == pytest.approx(2 * inter / ((pred == 1).sum() + (gt == 1).sum()))
    assert one["iou"] == pytest.approx(inter / ((pred == 1) | (gt == 1)).sum())
    vox_ml = np.prod(SPACING_IJK) / 1000
    assert one["volume_ml"] == pytest.approx((pred == 1).sum() * vox_ml, rel=1e-6)
    assert one["volume_gt_ml"] == pytest.approx((gt == 1).sum() * vox_ml, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_hausdorff_distance(torch.from_numpy(pred == 1).float()[None, None],
                                         torch.from_numpy(gt == 1).float()[None, None], include_background=True,
                                         percentile=95, spacing=list(reversed(SPACING_IJK))).item()
    assert one["hd95"] == pytest.approx(ref, rel=1e-5)  # spacing from the NIfTI header, (k, j, i) order
    assert labels["2"]["dice"] == 0 and labels["2"]["hd95"] is None and labels["2"]["nsd"] == 0
    assert labels["3"]["volume_ml"] == 0 and labels["3"]["volume_gt_ml"] == pytest.approx(4 * vox_ml, rel=1e-6)


def test_table_output(pair, capsys):
    *_, p, g = pair
    assert main(["metrics", p, g, "--labels", "1", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:5] == ["label", "dice", "iou", "nsd@2mm", "hd95_mm"]
    assert [ln.split()[0] for ln in lines[1:]] == ["1", "2"]
    assert lines[2].split()[4] == "inf"


def test_cvpr_rule_flag(tmp_path, capsys):
    gt = np.zeros((1, 30, 30), np.uint8)
    gt[0, 5:25, 5:25] = 1
    pred = np.zeros_like(gt)
    pred[0, 5:7, 5:15] = 1  # Dice 0.095
    p, g = save(tmp_path / "p.nii", pred), save(tmp_path / "g.nii", gt)
    assert main(["metrics", p, g, "--json", "--no-recist"]) == 0
    plain = json.loads(capsys.readouterr().out)["labels"]["1"]
    assert main(["metrics", p, g, "--json", "--cvpr-rule", "--no-recist"]) == 0
    ruled = json.loads(capsys.readouterr().out)["labels"]["1"]
    assert plain["nsd"] > 0 and ruled["nsd"] == 0 and "recist_long_mm" not in ruled
    assert math.isclose(plain["dice"], ruled["dice"])


@pytest.mark.parametrize("what", ["shape", "spacing", "origin"])
def test_grid_mismatch_is_one_line_error(pair, tmp_path, capsys, what):
    pred, gt, p, _ = pair
    if what == "shape":
        g = save(tmp_path / "g2.nii.gz", gt[:, :10])
    elif what == "spacing":
        g = save(tmp_path / "g2.nii.gz", gt, spacing_ijk=(0.8, 1.3, 2.5))
    else:
        g = save(tmp_path / "g2.nii.gz", gt, origin=(0.0, 0.0, 0.0))
    assert main(["metrics", p, g]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grids differ" in err and "Traceback" not in err


def test_bad_inputs(pair, tmp_path, capsys):
    *_, p, g = pair
    assert main(["metrics", p, str(tmp_path / "missing.nii.gz")]) == 2
    assert "not found" in capsys.readouterr().err
    png = tmp_path / "x.png"
    png.write_bytes(b"not an image")
    assert main(["metrics", p, str(png)]) == 2
    assert "NIfTI" in capsys.readouterr().err
    prob = save(tmp_path / "prob.nii.gz", np.full((6, 20, 24), 0.5, np.float32))
    assert main(["metrics", prob, g]) == 2
    assert "label map" in capsys.readouterr().err
    assert main(["metrics", p, g, "--tolerance-mm", "nan"]) == 2
