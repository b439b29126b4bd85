"""The stored (parameter node) JSON and the console form of the one prompt model, and the module settings."""

import json

import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.prompts import (BoxPrompt, ObjectPrompts, PointPrompt, ScribblePrompt, TextPrompt,
                                parse_console_prompts)
from OncoSegLib.slicer_support import params
from OncoSegLib.slicer_support.geometry import NodeGrid
from OncoSegLib.slicing import check_axis


def _example():
    return ObjectPrompts(
        name="Tumour 1",
        points=[PointPrompt((1, 2, 3), True, "axial"), PointPrompt((4, 5, 3), False, "coronal")],
        boxes=[BoxPrompt((0, 1, 2), (5, 6, 3), "sagittal")],
        scribbles=[ScribblePrompt(((1, 1, 1), (2, 2, 1)), False, "axial")],
        text=TextPrompt("liver tumor", "axial", 7),
    )


def test_prompts_json_round_trip_is_exact():
    p = _example()
    s = p.to_json()
    d = json.loads(s)  # plain JSON an independent reader understands
    assert d["points"][1] == {"ijk": [4, 5, 3], "positive": False, "axis": "coronal"}
    assert d["text"] == {"text": "liver tumor", "axis": "axial", "index": 7}
    q = ObjectPrompts.from_json(s)
    assert q == p
    assert q.count() == 5
    assert ObjectPrompts.from_json("").is_empty()
    old_scene = dict(d, object_name="Tumour 1")  # schema-1 scenes stored the name as object_name
    del old_scene["name"]
    assert ObjectPrompts.from_dict(old_scene) == p


def test_prompts_json_errors_are_clear():
    with pytest.raises(InputError, match="not valid JSON"):
        ObjectPrompts.from_json("{nope")
    with pytest.raises(InputError, match="newer OncoSeg"):
        ObjectPrompts.from_json(json.dumps({"version": 99}))
    with pytest.raises(InputError, match="coordinates must be 3 numbers"):
        ObjectPrompts.from_json(json.dumps({"points": [{"ijk": [1, 2]}]}))
    with pytest.raises(InputError, match="malformed"):
        ObjectPrompts.from_json(json.dumps({"boxes": [{"ijk_min": [1, 2, 3]}]}))
    with pytest.raises(InputError, match="true or false"):
        ObjectPrompts.from_json(json.dumps({"points": [{"ijk": [1, 2, 3], "positive": "no"}]}))


def test_validate_rejects_points_outside_and_bad_axes():
    p = _example()
    p.validate((6, 7, 8))
    with pytest.raises(InputError, match="outside"):
        p.validate((6, 7, 3))  # k=3 is outside a 3-slice volume
    bad = ObjectPrompts(points=[PointPrompt((0, 0, 0), True, "oblique")])
    with pytest.raises(InputError, match="axis"):
        bad.validate((2, 2, 2))
    with pytest.raises(InputError, match="exceeds"):
        ObjectPrompts(boxes=[BoxPrompt((3, 0, 0), (1, 1, 0))]).validate((5, 5, 5))


def test_one_axis_check_accepts_capitals_everywhere():
    """The engine and the Slicer side used two check_axis functions that disagreed on "Axial"; one remains."""
    assert check_axis("Axial") == "axial" and check_axis(" coronal ".strip()) == "coronal"
    assert ObjectPrompts(points=[PointPrompt((0, 0, 0), True, "Sagittal")]).axis_of(
        ObjectPrompts(points=[PointPrompt((0, 0, 0), True, "Sagittal")]).points[0]) == "sagittal"
    with pytest.raises(InputError, match="axis"):
        check_axis("oblique")


def test_console_prompts_ijk_world_ras_and_box_corner_order():
    ijk_to_ras = np.array([[0.0, 0.0, -2.0, 10.0], [-0.8, 0.0, 0.0, 5.0], [0.0, 1.5, 0.0, -3.0], [0, 0, 0, 1]])
    to_world = np.eye(4)
    to_world[:3, 3] = (5.0, -2.0, 7.0)  # a parent transform: console RAS is world RAS
    grid = NodeGrid(np.linalg.inv(ijk_to_ras), to_world, (8, 8, 8))
    target = np.array([[3.0, 4.0, 2.0], [1.0, 0.0, 5.0]])
    world = (to_world @ ijk_to_ras @ np.c_[target, np.ones(2)].T).T[:, :3]
    ps = parse_console_prompts({"points": [[1, 1, 1]], "negative_ras": world.tolist(), "box": [[5, 1, 4], [2, 6, 4]],
                                "axis": "coronal", "name": "lesion"}, grid)
    assert ps.name == "lesion" and ps.axis == "coronal"
    assert ps.points[0] == PointPrompt((1, 1, 1), True, None) and ps.axis_of(ps.points[0]) == "coronal"
    np.testing.assert_allclose([p.ijk for p in ps.points[1:]], target, atol=1e-9)
    assert all(not p.positive for p in ps.points[1:])
    assert ps.boxes == [BoxPrompt((2, 1, 4), (5, 6, 4), None)]
    assert parse_console_prompts("liver", grid).text == TextPrompt("liver")
    with pytest.raises(InputError, match="unknown key 'pionts'"):
        parse_console_prompts({"pionts": []}, grid)
    with pytest.raises(InputError, match="outside the image"):
        parse_console_prompts({"points": [[9, 0, 0]]}, grid)
    with pytest.raises(InputError, match="3 numbers"):
        parse_console_prompts({"points": [[True, 0, 0]]}, grid)


def test_settings_round_trip_and_bad_values_fall_back():
    s = params.ModuleSettings(modality="mri", model="/data/my model", propagateMethod="box", lowConfidence=0.35)
    strings = s.to_strings()
    assert all(isinstance(v, str) for v in strings.values())
    back, warnings = params.ModuleSettings.from_strings(strings)
    assert back == s and warnings == []
    back, warnings = params.ModuleSettings.from_strings({"modality": "xray-ish", "lowConfidence": "2", "device": "tpu",
                                                         "overwritePolicy": "overwrite"})
    assert back.modality == "auto" and back.lowConfidence == 0.5 and back.device == "auto"
    assert back.overwritePolicy == "overwrite"
    assert len(warnings) == 3 and any("modality" in w for w in warnings)


def test_choices_cover_engine_names():
    from OncoSegLib import preprocessing, slicing
    mods = getattr(preprocessing, "MODALITIES", None)
    if mods is not None:
        assert set(params.MODALITY_CHOICES) - {"auto"} == set(mods)
    assert set(params.AXIS_CHOICES) - {"auto"} == set(slicing.AXES)
    for c in (*params.MODALITY_CHOICES, *params.METHOD_CHOICES, *params.OVERWRITE_CHOICES, *params.AXIS_CHOICES):
        assert c in params.CHOICE_LABELS


def test_modality_resolution_and_status_line():
    assert params.resolve_modality("auto", "ct") == "ct"
    assert params.resolve_modality("mri", "ct") == "mri"
    assert params.resolve_modality("auto", None) is None
    line = params.modality_status("auto", "ct", 0.93, "DICOM Modality tag is CT")
    assert "CT" in line and "93%" in line and "DICOM Modality tag" in line
    assert "set by you" in params.modality_status("mri", "ct", 0.9, "x") and "detected CT" in params.modality_status("mri", "ct", 0.9, "x")
