"""The OpenVINO-compiled LiteMedSAM encoder: chosen by default when installed, same embedding as PyTorch, cached IR
that is verified before use, and a clear way back to PyTorch when OpenVINO is missing or wrong.

Accuracy against the wheel's reference outputs is in test_litemedsam_reference.py (the ``openvino`` rows); here the
oracle is the strictly loaded PyTorch network on a real CT slice.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from real_ct_support import DATA, ct, labels  # noqa: F401
from validators import require_module

from OncoSegLib.errors import ModelError
from OncoSegLib.models.litemedsam import openvino_encoder as ove
from OncoSegLib.models.litemedsam.predictor import LiteMedSamPredictor

require_module("openvino", "python3 -m pip install -c constraints.txt -e '.[test]'")


@pytest.fixture(scope="module")
def liver_slice(litemedsam_model, ct, labels):  # noqa: F811
    """(model input (1, 3, 256, 256), PyTorch eager embedding) of the real CT's slice with the most liver."""
    from OncoSegLib.preprocessing import fit_normalizer

    k = int(np.argmax((labels == 5).sum(axis=(1, 2))))
    x = litemedsam_model.prepare(np.asarray(ct.array[k]), fit_normalizer(ct, "ct", litemedsam_model.ct_window))
    with torch.inference_mode():
        return x, litemedsam_model.net.encode(x)


def _no_conversion(*_a, **_k):
    raise AssertionError("converted again although a valid cache was there")


def test_auto_picks_openvino_and_matches_pytorch(litemedsam_model, liver_slice):
    x, want = liver_slice
    pred = LiteMedSamPredictor(litemedsam_model.net, encoder="auto")
    assert pred.encoder_name.startswith("openvino") and "fp32" in pred.encoder_name
    got = pred.encode(x).maps[0]
    assert got.shape == want.shape == (1, 256, 64, 64)
    assert float((got - want).abs().max()) < 5e-5  # measured ~4e-6: float32 kernels, not a different function
    assert float(want.abs().mean()) > 1e-2  # a real embedding, not zeros


def test_batch_is_encoded_slice_by_slice(litemedsam_model, liver_slice):
    x, want = liver_slice
    enc = ove.build_openvino_encoder(litemedsam_model.net)
    two = enc.encode(torch.cat([x, torch.flip(x, dims=[-1])]))
    assert two.shape == (2, 256, 64, 64)
    assert float((two[:1] - want).abs().max()) < 5e-5
    assert float((two[1:] - want).abs().max()) > 1e-2  # the flipped slice is another image


def test_ir_is_cached_then_reused_without_converting(litemedsam_model, liver_slice, tmp_path, monkeypatch):
    x, want = liver_slice
    first = ove.build_openvino_encoder(litemedsam_model.net, cache_dir=tmp_path)
    assert first.cache.startswith("converted now, cached in")
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoder_sha256"] == ove.tensor_digest(litemedsam_model.net)
    assert (folder / "encoder.bin").stat().st_size > 20_000_000  # float32 weights (fp16 compression would halve it)

    monkeypatch.setattr(ove, "_export_model", _no_conversion)
    again = ove.build_openvino_encoder(litemedsam_model.net, cache_dir=tmp_path)
    assert again.cache.startswith("cache ")
    assert float((again.encode(x) - want).abs().max()) < 5e-5


def test_tampered_cache_is_rebuilt_not_used(litemedsam_model, liver_slice, tmp_path, caplog):
    x, want = liver_slice
    ove.build_openvino_encoder(litemedsam_model.net, cache_dir=tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    weights = bytearray((folder / "encoder.bin").read_bytes())
    weights[len(weights) // 2: len(weights) // 2 + 4096] = bytes(4096)  # zero a block of weights
    (folder / "encoder.bin").write_bytes(bytes(weights))
    with caplog.at_level(logging.WARNING):
        enc = ove.build_openvino_encoder(litemedsam_model.net, cache_dir=tmp_path)
    assert "does not match its manifest" in caplog.text
    assert enc.cache.startswith("converted now")
    assert float((enc.encode(x) - want).abs().max()) < 5e-5


def test_other_weights_get_another_cache_key(litemedsam_model):
    import copy

    other = copy.deepcopy(litemedsam_model.net)
    with torch.no_grad():
        next(other.image_encoder.parameters()).view(-1)[0] += 1e-3
    assert ove.tensor_digest(other) != ove.tensor_digest(litemedsam_model.net)


def test_parity_failure_is_refused_and_auto_falls_back(litemedsam_model, monkeypatch, caplog):
    monkeypatch.setattr(ove, "PARITY_ATOL", 0.0)  # any float32 difference now counts as a wrong compilation
    with pytest.raises(ModelError, match="differs from the PyTorch one"):
        ove.build_openvino_encoder(litemedsam_model.net)
    with pytest.raises(ModelError, match="differs from the PyTorch one"):
        LiteMedSamPredictor(litemedsam_model.net, encoder="openvino")
    with caplog.at_level(logging.WARNING):
        pred = LiteMedSamPredictor(litemedsam_model.net, encoder="auto")
    assert pred.encoder_name == "torch fast fp32"
    assert "using the PyTorch encoder" in caplog.text


def test_without_openvino_auto_uses_pytorch_and_explicit_names_the_install(litemedsam_model, monkeypatch):
    monkeypatch.setattr(ove, "openvino_version", lambda: None)
    assert LiteMedSamPredictor(litemedsam_model.net).encoder_name == "torch fast fp32"
    with pytest.raises(ModelError) as err:
        LiteMedSamPredictor(litemedsam_model.net, encoder="openvino")
    assert "oncoseg[openvino]" in str(err.value) + str(getattr(err.value, "hint", ""))


def test_encoder_choice_from_environment_and_bad_values(litemedsam_model, monkeypatch):
    monkeypatch.setenv("ONCOSEG_ENCODER", "eager")
    pred = LiteMedSamPredictor(litemedsam_model.net)
    assert pred.encoder_name == "torch eager fp32" and pred.encoder_net is litemedsam_model.net
    monkeypatch.setenv("ONCOSEG_ENCODER", "tensorrt")
    with pytest.raises(ModelError, match="tensorrt.*ONCOSEG_ENCODER"):
        LiteMedSamPredictor(litemedsam_model.net)
    monkeypatch.delenv("ONCOSEG_ENCODER")
    with pytest.raises(ModelError, match="fp8"):
        LiteMedSamPredictor(litemedsam_model.net, precision="fp8")
