"""Prompt storage (parameter node JSON), console prompt parsing and module settings of the Slicer module."""

import json

import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.slicer_support import params
from OncoSegLib.slicer_support.prompts import (BoxPrompt, PointPrompt, ScribblePrompt, StoredPrompts, TextPrompt,
                                               prompts_from_console)


def _example():
    return StoredPrompts(
        object_name="Tumour 1",
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
    q = StoredPrompts.from_json(s)
    assert q == p
    assert q.count() == 5
    assert StoredPrompts.from_json("").is_empty()


def test_prompts_json_errors_are_clear():
    with pytest.raises(InputError, match="not valid JSON"):
        StoredPrompts.from_json("{nope")
    with pytest.raises(InputError, match="newer OncoSeg"):
        StoredPrompts.from_json(json.dumps({"version": 99}))
    with pytest.raises(InputError):
        StoredPrompts.from_json(json.dumps({"points": [{"ijk": [1, 2]}]}))


def test_validate_rejects_points_outside_and_bad_axes():
    p = _example()
    p.validate((6, 7, 8))
    with pytest.raises(InputError, match="outside"):
        p.validate((6, 7, 3))  # k=3 is outside a 3-slice volume
    bad = StoredPrompts(points=[PointPrompt((0, 0, 0), True, "oblique")])
    with pytest.raises(InputError, match="axis"):
        bad.validate((2, 2, 2))
    with pytest.raises(InputError, match="exceeds"):
        StoredPrompts(boxes=[BoxPrompt((3, 0, 0), (1, 1, 0))]).validate((5, 5, 5))


def test_console_prompts_ijk_ras_and_box_corner_order():
    ijk_to_ras = np.array([[0.0, 0.0, -2.0, 10.0], [-0.8, 0.0, 0.0, 5.0], [0.0, 1.5, 0.0, -3.0], [0, 0, 0, 1]])
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    target = np.array([[3.0, 4.0, 2.0], [1.0, 0.0, 5.0]])
    ras = target @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
    ps = prompts_from_console({"points": [[1, 1, 1]], "negative_ras": ras.tolist(), "box": [[5, 1, 4], [2, 6, 4]],
                               "axis": "coronal", "name": "lesion"},
                              ras_to_ijk=ras_to_ijk, shape_ijk=(8, 8, 8))
    assert ps.object_name == "lesion"
    assert ps.points[0] == PointPrompt((1, 1, 1), True, "coronal")
    assert [p.ijk for p in ps.points[1:]] == [(3, 4, 2), (1, 0, 5)]
    assert all(not p.positive for p in ps.points[1:])
    assert ps.boxes == [BoxPrompt((2, 1, 4), (5, 6, 4), "coronal")]
    assert prompts_from_console("liver").text == TextPrompt("liver")
    with pytest.raises(InputError, match="unknown prompt keys"):
        prompts_from_console({"pionts": []})
    with pytest.raises(InputError, match="outside"):
        prompts_from_console({"points": [[9, 0, 0]]}, shape_ijk=(8, 8, 8))


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
