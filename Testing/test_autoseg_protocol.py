"""Autoseg protocol files: parsing (YAML/JSON), defaults, and validation errors that name the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from OncoSegLib.autoseg.protocol import load_protocol, parse_protocol
from OncoSegLib.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def _p(**structure) -> dict:
    return {"name": "p", "structures": [{"name": "Liver", "text": "liver", **structure}]}


def test_example_config_parses_with_its_values():
    p = load_protocol(ROOT / "configs" / "autoseg_example.yaml")
    assert p.name == "abdomen-oar" and p.modalities == ["ct"] and p.window == (-160.0, 240.0)
    assert [s.name for s in p.structures] == ["BODY", "Liver", "Kidneys", "Stomach", "GTV_Liver"]
    by = {s.name: s for s in p.structures}
    assert by["BODY"].roi_type == "EXTERNAL" and by["BODY"].color == (0, 255, 0)
    assert by["Liver"].color == (220, 110, 60) and by["Liver"].keep == "largest"
    assert by["Kidneys"].roi_type == "AVOIDANCE" and by["Kidneys"].keep == "all" and by["Kidneys"].max_instances == 2
    assert by["Stomach"].color == (255, 200, 0)
    assert by["GTV_Liver"].model == "liver" and by["GTV_Liver"].min_score == 0.4


def test_defaults_and_json_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"structures": [{"name": "GTV_1", "text": "tumor"}, {"name": "Body", "text": "body"},
                                            {"name": "Nodes", "text": "lymph node", "keep": "all"}]}))
    p = load_protocol(f)
    assert p.name == "p" and p.strategy == "propagate" and p.probe_slices == 8 and p.modalities == []
    gtv, body, nodes = p.structures
    assert gtv.roi_type == "GTV" and body.roi_type == "EXTERNAL"  # guessed from the names
    assert gtv.min_score == 0.5 and gtv.keep == "largest" and gtv.max_instances == 3 and nodes.max_instances == 10
    assert gtv.color != body.color  # distinct default colours


@pytest.mark.parametrize("data, message", [
    (_p(keep="biggest"), "structures[0] ('Liver').keep: unknown value 'biggest'"),
    (_p(min_score=1.5), "min_score: must lie in [0, 1]"),
    (_p(type="ORGANS"), "unknown RT ROI type 'ORGANS'"),
    (_p(color="#12345"), "cannot read colour"),
    (_p(color=[255, 0]), "is not three integers 0-255"),
    (_p(max_instances=0), "max_instances: must be an integer >= 1"),
    (_p(txt="x"), "unknown key(s) 'txt' (did you mean 'text'?)"),
    ({"structures": [{"name": "Liver"}]}, "structures[0] ('Liver').text: is required"),
    ({"structures": [{"text": "liver"}]}, "structures[0].name: is required"),
    ({"structures": [{"name": "A", "text": "a"}, {"name": "a", "text": "b"}]}, "is used twice"),
    ({"structures": []}, "structures: must be a non-empty list"),
    ({"structures": [{"name": "A" * 65, "text": "a"}]}, "DICOM allows 64"),
    ({"modalities": ["cat"], "structures": [{"name": "A", "text": "a"}]}, "unknown modality 'cat'"),
    ({"strategy": "all_slices", "structures": [{"name": "A", "text": "a"}]}, "strategy: unknown value"),
    ({"window": [200, -100], "structures": [{"name": "A", "text": "a"}]}, "window: must be [low, high]"),
    ({"strucures": []}, "did you mean 'structures'?"),
    (["liver"], "must be a mapping"),
])
def test_validation_errors_name_the_field(data, message):
    with pytest.raises(InputError) as exc:
        parse_protocol(data)
    assert message in str(exc.value)


def test_long_name_warns_but_is_accepted():
    with pytest.warns(UserWarning, match="cut ROI names at 16"):
        p = parse_protocol(_p(name="Liver_and_gallbladder"))  # type: ignore[arg-type]
    assert p.structures[0].name == "Liver_and_gallbladder"


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="protocol file not found"):
        load_protocol(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("structures:\n  - name: Liver\n   text: liver\n")
    with pytest.raises(InputError, match="is not valid YAML"):
        load_protocol(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("structures:\n  - name: Liver\n    text: liver\n    keep: some\n")
    with pytest.raises(InputError) as exc:
        load_protocol(wrong)
    assert str(wrong) in str(exc.value) and "use one of: largest, all" in str(exc.value)
