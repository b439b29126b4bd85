"""`oncoseg segment` end to end on a tiny checkpoint folder (offline): label map geometry, names sidecar,
overwrite refusal, prompt errors as one-line messages."""

import json

import nibabel as nib
import numpy as np
import pytest

from OncoSegLib.cli import main
from OncoSegLib.io.nifti import write_nifti
from OncoSegLib.io.volume import Volume
from OncoSegLib.models.tiny import save_tiny_checkpoint

from engine_support import ellipsoid


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    ck = save_tiny_checkpoint(d / "model")
    shape = (8, 30, 40)
    arr = np.full(shape, -800, np.float32)
    arr[ellipsoid(shape, (20, 15, 4), (8, 7, 3))] = 300
    vol = Volume(arr, spacing=(0.8, 0.9, 2.0), origin=(10.0, -20.0, 30.0))
    write_nifti(vol, d / "img.nii.gz")
    lps = vol.ijk_to_lps_points([[22, 14, 4]])[0]
    prompts = {"objects": [
        {"name": "tumour", "points": [[20, 15, 4]], "boxes": [{"min": [12, 8, 4], "max": [28, 22, 4]}]},
        {"name": "second", "frame": "lps", "points": [{"lps": list(lps), "positive": True}]}]}
    (d / "p.json").write_text(json.dumps(prompts))
    return d, ck, vol


def test_segment_writes_label_map_and_names(setup, capsys):
    d, ck, vol = setup
    out = d / "mask.nii.gz"
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(d / "p.json"), "--model", str(ck), "--out",
               str(out), "--propagate", "--method", "box", "--device", "cpu", "--quiet"])
    assert rc == 0
    img = nib.load(str(out))
    assert np.allclose(img.affine, vol.ijk_to_ras)  # same geometry as the input
    data = np.asarray(img.dataobj)
    assert data.shape == (40, 30, 8) and set(np.unique(data)) <= {0, 1, 2}
    side = json.loads((d / "mask.json").read_text())
    assert side["labels"] == {"1": "tumour", "2": "second"}
    assert side["modality"] == "ct" and side["propagation"]["method"] == "box"
    assert [o["voxels"] for o in side["objects"]] == [int((data == 1).sum()), int((data == 2).sum())]
    # no overwrite without --overwrite, and the existing files are untouched
    before = out.read_bytes()
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(d / "p.json"), "--model", str(ck), "--out",
               str(out), "--quiet"])
    assert rc == 2 and "exists" in capsys.readouterr().err and out.read_bytes() == before
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(d / "p.json"), "--model", str(ck), "--out",
               str(out), "--quiet", "--overwrite"])
    assert rc == 0


def test_segment_reports_bad_prompts(setup, capsys):
    d, ck, _ = setup
    bad = d / "bad.json"
    bad.write_text(json.dumps({"objects": [{"name": "x", "points": [[200, 1, 1]]}]}))
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(bad), "--model", str(ck), "--out",
               str(d / "never.nii.gz"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "object 'x', point 1" in err and "i 0..39" in err
    assert not (d / "never.nii.gz").exists()
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(d / "p.json"), "--model", str(ck), "--out",
               str(d / "x.png"), "--quiet"])
    assert rc == 2
