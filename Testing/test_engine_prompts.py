"""Prompts JSON: voxel and patient-mm (LPS/RAS) coordinates, validation messages, scribble sampling."""

import json

import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.prompts import load_prompts, parse_prompts, scribble_samples


def _volume():
    # oblique, anisotropic grid with an off-centre origin: LPS<->IJK mistakes cannot cancel out
    a = np.deg2rad(12)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return Volume(np.zeros((9, 20, 30), np.float32), spacing=(0.6, 0.9, 2.5), origin=(3.25, -17.5, 40.125),
                  direction=rot)


def test_ijk_lps_ras_give_the_same_voxel():
    vol = _volume()
    ijk = np.array([[7.0, 11.0, 4.0]])
    lps = vol.ijk_to_lps_points(ijk)[0]  # oracle: the Volume's own affine
    ras = lps * np.array([-1, -1, 1])
    doc = {"objects": [
        {"name": "a", "points": [[7, 11, 4]]},
        {"name": "b", "frame": "lps", "points": [list(lps)]},
        {"name": "c", "points": [{"ras": list(ras), "positive": False}]},
        {"name": "d", "boxes": [{"frame": "lps", "min": list(vol.ijk_to_lps_points([[2, 3, 4]])[0]),
                                 "max": list(vol.ijk_to_lps_points([[9, 8, 4]])[0])}]},
    ]}
    ps = parse_prompts(doc, vol)
    for o in ps.objects[:3]:
        assert np.allclose(o.points[0].ijk, ijk[0], atol=1e-9)
    assert ps.objects[0].points[0].positive and not ps.objects[2].points[0].positive
    box = ps.objects[3].boxes[0]
    assert np.allclose(box.ijk_min, (2, 3, 4)) and np.allclose(box.ijk_max, (9, 8, 4))


def test_file_round_trip_with_scribbles_and_text(tmp_path):
    vol = _volume()
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"axis": "coronal", "objects": [
        {"name": "t", "scribbles": [{"points": [[1, 2, 3], [5, 2, 3]], "label": 0}], "text": "liver tumour"}],
        "text": ["kidney"]}))
    ps = load_prompts(p, vol)
    o = ps.objects[0]
    assert o.axis == "coronal" and o.text.text == "liver tumour" and not o.scribbles[0].positive
    assert o.scribbles[0].points_ijk == ((1.0, 2.0, 3.0), (5.0, 2.0, 3.0))
    assert [t.text for t in ps.texts] == ["kidney"]


@pytest.mark.parametrize("doc, needle", [
    ({"objects": [{"name": "liver", "points": [[1, 1, 1], [30, 1, 1]]}]}, "object 'liver', point 2"),
    ({"objects": [{"name": "x", "boxes": [{"min": [0, 0, 0], "max": [5, 25, 0]}]}]}, "object 'x', box 1 max"),
    ({"objects": [{"name": "x", "frame": "lps", "points": [[1000, 0, 0]]}]}, "object 'x', point 1"),
    ({"objects": [{"name": "x", "scribbles": [{"points": [[0, 0, 0], [1, 1, 9]]}]}]}, "scribble 1, vertex 2"),
])
def test_out_of_image_prompt_names_the_prompt_and_extent(doc, needle):
    with pytest.raises(InputError) as err:
        parse_prompts(doc, _volume())
    msg = str(err.value)
    assert needle in msg and "i 0..29, j 0..19, k 0..8" in msg


def test_bad_documents_are_clear_errors(tmp_path):
    vol = _volume()
    with pytest.raises(InputError, match="no prompts"):
        parse_prompts({"objects": [{"name": "a"}]}, vol)
    with pytest.raises(InputError, match="used twice"):
        parse_prompts({"objects": [{"name": "a", "points": [[1, 1, 1]]}, {"name": "a", "points": [[1, 1, 1]]}]}, vol)
    with pytest.raises(InputError, match="frame"):
        parse_prompts({"frame": "xyz", "objects": [{"name": "a", "points": [[1, 1, 1]]}]}, vol)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_prompts(bad, vol)


def test_scribble_samples_equal_arc_length():
    pts = scribble_samples([(0, 0, 0), (3, 0, 0), (3, 4, 0)], n=8)  # length 7: steps of 1
    assert len(pts) == 8 and pts[0] == (0.0, 0.0, 0.0) and pts[-1] == (3.0, 4.0, 0.0)
    steps = np.linalg.norm(np.diff(np.array(pts), axis=0), axis=1)
    assert np.allclose(steps, 1.0)  # arc length 0..7 in steps of 1; the corner (3, 0) is sample 4
    assert scribble_samples([(1, 2, 3)]) == [(1.0, 2.0, 3.0)]


@pytest.mark.parametrize("doc, needle", [
    ({"objects": [{"name": "a", "points": 5}]}, "object 'a': \"points\" must be a list"),
    ({"objects": [{"name": "a", "boxes": {"min": [1, 1, 1]}}]}, "object 'a': \"boxes\" must be a list"),
    ({"objects": [{"name": "a", "scribbles": "x"}]}, "object 'a': \"scribbles\" must be a list"),
    ({"objects": [{"name": "a", "points": [{"ijk": [1, 1, 1], "positive": "no"}]}]}, "must be true or false"),
    ({"objects": [{"name": "a", "points": [{"ijk": [1, 1, 1], "label": True}]}]}, "label must be 1"),
    ({"objects": [{"name": "a", "text": "liver", "index": "x"}]}, "whole slice number"),
    ({"objects": [{"name": "a", "text": 7}]}, "non-empty string"),
    ({"text": 5}, "top-level \"text\" must be a list"),
    ({"text": [{"axis": "axial"}]}, "text prompt 1: text must be a non-empty string"),
    ({"text": [{"text": "liver", "index": 2.5}]}, "whole slice number"),
])
def test_malformed_documents_are_input_errors_not_crashes(doc, needle):
    """Every malformed entry is an InputError naming what is wrong (the CLI prints it on one line), never a
    TypeError/KeyError/ValueError that the CLI would report as an internal error — and "positive": "no" is not
    silently a positive click."""
    with pytest.raises(InputError) as err:
        parse_prompts(doc, _volume())
    assert needle in str(err.value)


def test_text_index_accepts_whole_numbers():
    ps = parse_prompts({"objects": [{"name": "k", "text": "kidney", "index": 4.0}],
                        "text": [{"text": "liver", "index": 3}]}, _volume())
    assert ps.objects[0].text.index == 4 and isinstance(ps.objects[0].text.index, int)
    assert ps.texts[0].index == 3


# ---------------------------------------------------------------------------- hostile and mistyped prompt files
HOSTILE = {
    "5000-digit number": '{"objects": [{"name": "a", "points": [[' + "9" * 5000 + ', 1, 1]]}]}',
    "100000-deep nesting": '{"objects": ' + "[" * 100000 + "]" * 100000 + "}",
    "typo 'boxs'": '{"objects": [{"name": "a", "boxs": [{"min": [1, 1, 1], "max": [3, 3, 1]}]}]}',
    "boolean coordinate": '{"objects": [{"name": "a", "points": [[true, 1, 1]]}]}',
    "10000 points": json.dumps({"objects": [{"name": "a", "points": [[1, 1, 1]] * 10000}]}),
    "NaN": '{"objects": [{"name": "a", "points": [[NaN, 1, 1]]}]}',
}
NEEDLES = {"5000-digit number": "number JSON cannot represent", "100000-deep nesting": "too deeply",
           "typo 'boxs'": "unknown key 'boxs'", "boolean coordinate": "coordinates must be 3 numbers",
           "10000 points": "at most 1000", "NaN": "not a number"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_prompt_files_are_one_line_input_errors(tmp_path, case):
    path = tmp_path / "p.json"
    path.write_text(HOSTILE[case])
    with pytest.raises(InputError) as err:
        load_prompts(path, _volume())
    assert NEEDLES[case] in str(err.value) and "\n" not in str(err.value)


def test_unknown_keys_are_refused_at_every_level():
    vol = _volume()
    for doc, key in [({"objects": [], "txt": ["liver"]}, "txt"),
                     ({"objects": [{"name": "a", "points": [{"ijk": [1, 1, 1], "postive": False}]}]}, "postive"),
                     ({"objects": [{"name": "a", "boxes": [{"min": [1, 1, 1], "max": [2, 2, 1], "fram": "lps"}]}]},
                      "fram"),
                     ({"text": [{"text": "liver", "idx": 3}]}, "idx")]:
        with pytest.raises(InputError, match=f"unknown key '{key}'"):
            parse_prompts(doc, vol)


def test_cli_exits_2_with_one_line_on_hostile_prompt_files(tmp_path):
    import os
    import subprocess
    import sys

    from OncoSegLib.io.nifti import write_nifti

    image = tmp_path / "img.nii.gz"
    write_nifti(_volume(), image)
    for case in ("5000-digit number", "100000-deep nesting", "typo 'boxs'"):
        path = tmp_path / "p.json"
        path.write_text(HOSTILE[case])
        run = subprocess.run([sys.executable, "-m", "OncoSegLib", "segment", str(image), "--prompts", str(path),
                              "--out", str(tmp_path / "m.nii.gz"), "--model", "demo-not-loaded"],
                             capture_output=True, text=True, env={**os.environ, "ONCOSEG_DEBUG": ""}, timeout=120)
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert run.returncode == 2 and len(lines) == 1 and NEEDLES[case] in lines[0], (case, run.stderr[-500:])
        assert not (tmp_path / "m.nii.gz").exists()
