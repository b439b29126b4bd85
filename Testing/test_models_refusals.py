"""Checkpoints and adapters that must be refused with the project's own error (``ModelError``), never half-used:
weights the architecture does not use (unexpected keys, leftover LoRA tensors), a pickle adapter that holds code,
corrupt safetensors; and the model card's confidence-head flags."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from OncoSegLib.errors import ModelError
from OncoSegLib.models.loading import load_bundle
from OncoSegLib.models.lora import LoraSettings, apply_lora, save_adapter
from OncoSegLib.models.tiny import save_tiny_checkpoint, tiny_bundle


@pytest.fixture(scope="module")
def ckpt_src(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ck", seed=0, text=False)


@pytest.fixture
def ckpt(ckpt_src, tmp_path):
    """A private copy the test may damage."""
    return shutil.copytree(ckpt_src, tmp_path / "ck")


@pytest.fixture(scope="module")
def adapter_src(tmp_path_factory):
    b = tiny_bundle(seed=0, text=False, video=False)
    pm = apply_lora(b.tracker, LoraSettings(r=2, alpha=4, trainable_heads=("mask_decoder",)))
    with torch.no_grad():  # B != 0 so that the adapter changes the outputs
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return save_adapter(pm, tmp_path_factory.mktemp("ad") / "adapter")


@pytest.fixture
def adapter(adapter_src, tmp_path):
    return shutil.copytree(adapter_src, tmp_path / "adapter")


def _add_tensors(folder, extra):
    f = folder / "model.safetensors"
    sd = load_file(str(f))
    sd.update(extra)
    save_file(sd, str(f), metadata={"format": "pt"})


def test_clean_checkpoint_loads_with_no_unexpected_weights(ckpt):
    b = load_bundle(ckpt, device="cpu")
    for comp in ("tracker", "video"):
        assert b.info[comp] == {"missing": [], "mismatched": [], "unexpected": []}


@pytest.mark.parametrize("components", [("tracker",), ("tracker", "video")])
def test_unexpected_weight_is_refused(ckpt, components):
    """transformers only warns about a weight the architecture does not use; loading must refuse it."""
    _add_tensors(ckpt, {"tracker_model.extra_head.weight": torch.zeros(3)})
    with pytest.raises(ModelError, match=r"1 weights this architecture does not use \(e\.g\. extra_head\.weight\)"):
        load_bundle(ckpt, device="cpu", components=components)


@pytest.mark.parametrize("key", [
    "tracker_model.mask_decoder.transformer.final_attn_token_to_image.q_proj.lora_B.weight",
    # a detector-only LoRA tensor is invisible to a tracker-only load (transformers ignores detector_model.*)
    "detector_model.detr_decoder.layers.0.self_attn.q_proj.lora_A.weight",
])
def test_leftover_lora_tensors_in_a_full_checkpoint_are_refused(ckpt, key):
    _add_tensors(ckpt, {key: torch.zeros(2, 4)})
    with pytest.raises(ModelError, match="LoRA tensors") as err:
        load_bundle(ckpt, device="cpu", components=("tracker",))
    assert key in str(err.value) and "\n" not in str(err.value)


def test_corrupt_checkpoint_safetensors_is_a_model_error(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError, match="corrupt or incomplete"):
        load_bundle(ckpt, device="cpu", components=("tracker",))


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['ONCOSEG_TEST_MARKER']}",))


def test_malicious_pickle_adapter_is_refused_without_running_code(ckpt_src, adapter, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("ONCOSEG_TEST_MARKER", str(marker))
    (adapter / "adapter_model.safetensors").unlink()
    with open(adapter / "adapter_model.bin", "wb") as fh:
        pickle.dump({"base_model.model.x.lora_A.weight": _RunsCode()}, fh)
    with pytest.raises(ModelError, match="refused to load a pickle") as err:
        load_bundle(ckpt_src, device="cpu", components=("tracker",), adapter=adapter)
    assert not marker.exists() and "\n" not in str(err.value)


@pytest.mark.parametrize("victim", ["adapter_model.safetensors", "oncoseg_heads.safetensors"])
def test_corrupt_adapter_safetensors_is_a_model_error(ckpt_src, adapter, victim):
    assert (adapter / victim).is_file()
    data = (adapter / victim).read_bytes()
    (adapter / victim).write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(ModelError, match="corrupt or incomplete safetensors"):
        load_bundle(ckpt_src, device="cpu", components=("tracker",), adapter=adapter)


def test_unreadable_adapter_settings_are_a_model_error(ckpt_src, adapter):
    (adapter / "oncoseg_lora.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ModelError, match="oncoseg_lora.json"):
        load_bundle(ckpt_src, device="cpu", components=("tracker",), adapter=adapter)


def test_confidence_heads_come_from_the_model_card_and_the_adapter(ckpt, ckpt_src, adapter):
    assert load_bundle(ckpt, device="cpu", components=("tracker",)).confidence_heads == {"iou": True,
                                                                                         "presence": True}
    (ckpt / "oncoseg_model.json").write_text(json.dumps({"confidence_heads": {"iou": True, "presence": False}}))
    assert load_bundle(ckpt, device="cpu", components=("tracker",)).confidence_heads == {"iou": True,
                                                                                         "presence": False}
    (ckpt / "oncoseg_model.json").write_text("{broken")
    with pytest.raises(ModelError, match="oncoseg_model.json"):
        load_bundle(ckpt, device="cpu", components=("tracker",))
    # an adapter that retrained the whole mask decoder (masks only): its IoU / object-score heads mean nothing
    b = load_bundle(ckpt_src, device="cpu", components=("tracker",), adapter=adapter)
    assert b.confidence_heads == {"iou": False, "presence": False}
    s = json.loads((adapter / "oncoseg_lora.json").read_text())
    s["trainable_heads"] = []
    (adapter / "oncoseg_lora.json").write_text(json.dumps(s))
    (adapter / "oncoseg_heads.safetensors").unlink()
    assert load_bundle(ckpt_src, device="cpu", components=("tracker",), adapter=adapter).confidence_heads == {
        "iou": True, "presence": True}
