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


@pytest.mark.parametrize("case, needle", [
    ("points5", "\"points\" must be a list"),
    ("cache", "--cache-mb must be 0 or more"),
    ("score", "--score-threshold must be between 0 and 1"),
    ("nomodel", "does not exist"),
    ("rgb_as_ct", "colour image"),
    ("no_image", "input not found"),
])
def test_bad_inputs_are_one_line_errors(setup, capsys, tmp_path, case, needle):
    """Bad input -> exit 2 and one `oncoseg segment: error: ...` line, never an 'internal error' or a traceback."""
    from PIL import Image

    d, ck, _ = setup
    prompts, extra, image = d / "p.json", [], None
    if case == "points5":
        prompts = tmp_path / "b.json"
        prompts.write_text(json.dumps({"objects": [{"name": "a", "points": 5}]}))
    elif case == "cache":
        extra = ["--cache-mb", "-5"]
    elif case == "score":
        extra = ["--score-threshold", "7"]
    elif case == "nomodel":
        ck = tmp_path / "no" / "such" / "model"
    elif case == "rgb_as_ct":
        image = tmp_path / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(image)
        prompts = tmp_path / "p2d.json"
        prompts.write_text(json.dumps({"objects": [{"name": "a", "points": [[20, 15, 0]]}]}))
        extra = ["--modality", "ct"]
    elif case == "no_image":
        image = tmp_path / "absent.nii.gz"
    args = ["segment", str(image or d / "img.nii.gz"), "--prompts", str(prompts), "--model", str(ck), "--out",
            str(tmp_path / "o.nii.gz"), "--quiet", "--device", "cpu"] + extra
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("oncoseg segment: error:") and needle in err[0], err
    assert not (tmp_path / "o.nii.gz").exists()


def test_text_object_without_instance_does_not_stop_propagation(setup, capsys, tmp_path):
    """An object whose text prompt finds nothing stays empty; --propagate still runs for the others (the tiny
    detector's scores are < 1, so threshold 1.0 finds nothing by construction)."""
    d, ck, _ = setup
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"objects": [{"name": "kidney", "text": "kidney"},
                                         {"name": "tumour", "points": [[20, 15, 4]]}]}))
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(p), "--model", str(ck), "--out",
               str(tmp_path / "o.nii.gz"), "--propagate", "--method", "centroid", "--score-threshold", "1.0",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    side = json.loads((tmp_path / "o.json").read_text())
    assert side["labels"] == {"1": "kidney", "2": "tumour"} and side["objects"][0]["voxels"] == 0
    assert "nothing to propagate" in err and "'kidney'" in err


def test_model_defaults_to_the_manifest_route_for_the_modality(setup, tmp_path, monkeypatch, capsys):
    """Without --model the image's modality picks the model (manifest routing); --model overrides it."""
    from OncoSegLib.models import registry

    d, ck, _ = setup
    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path / "home"))
    registry.import_model(ck, name="ct-model")
    registry.set_routing("ct", "ct-model")
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(d / "p.json"), "--out",
               str(tmp_path / "a.nii.gz"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert json.loads((tmp_path / "a.json").read_text())["model"] == "ct-model" and "ct-model" in err
    rc = main(["segment", str(d / "img.nii.gz"), "--prompts", str(d / "p.json"), "--out",
               str(tmp_path / "b.nii.gz"), "--device", "cpu", "--model", "absent-model", "--quiet"])
    assert rc == 2 and "unknown model 'absent-model'" in capsys.readouterr().err
