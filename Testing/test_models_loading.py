"""Loading from a test-made HF cache offline, refusal of random weights, registry errors, import, routing, CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch

from OncoSegLib.errors import ModelError
from OncoSegLib.models import registry
from OncoSegLib.models.loading import load_bundle
from OncoSegLib.models.tiny import make_test_hf_cache, save_tiny_checkpoint, tiny_bundle


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ck", seed=0)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "home"


def _embed(bundle):
    x = torch.linspace(-1, 1, 3 * 112 * 112).reshape(1, 3, 112, 112)
    with torch.no_grad():
        return bundle.tracker.get_image_embeddings(x)[-1]


def test_load_by_repo_id_from_test_hf_cache_offline(ckpt, home):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    snap = make_test_hf_cache(registry.hub_cache_dir(), repo_id="facebook/sam3", source_dir=ckpt)
    assert (snap / "config.json").is_symlink() or (snap / "config.json").is_file()
    b = load_bundle("facebook/sam3", device="cpu")
    assert b.has_text and b.has_video and b.image_size == 112
    torch.testing.assert_close(_embed(b), _embed(tiny_bundle(seed=0)), rtol=0, atol=0)
    for comp in ("tracker", "video", "detector"):
        assert b.info[comp]["missing"] == []


def test_registry_name_resolves_through_cache(ckpt, home):
    make_test_hf_cache(registry.hub_cache_dir(), repo_id="facebook/sam3", source_dir=ckpt)
    b = load_bundle("sam3", device="cpu", components=("tracker",))
    assert b.detector is None and b.video is None and b.name == "sam3"


def test_components_subset(ckpt):
    b = load_bundle(ckpt, device="cpu", components=("tracker", "video"))
    assert b.detector is None and b.has_text is False and b.video is not None
    assert b.tracker.vision_encoder is b.video.vision_encoder


def test_refuses_doubled_prefix_and_missing_weights(ckpt, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ckpt / "model.safetensors"))
    for name, mutate in {
        "doubled": lambda d: {(k.replace("tracker_model.", "tracker_model.tracker_model.", 1)): v
                              for k, v in d.items()},
        "missing": lambda d: {k: v for k, v in d.items() if "mask_decoder.iou_prediction_head" not in k},
    }.items():
        bad = tmp_path / name
        bad.mkdir()
        (bad / "config.json").write_text((ckpt / "config.json").read_text())
        save_file(mutate(dict(sd)), str(bad / "model.safetensors"))
        with pytest.raises(ModelError, match="random|doubled"):
            load_bundle(bad, device="cpu")
    # `models import` normalises the doubled prefix, after which it loads with every weight
    monkeypatch.setenv("ONCOSEG_HOME", str(tmp_path / "home2"))
    entry = registry.import_model(tmp_path / "doubled", name="fixed")
    b = load_bundle("fixed", device="cpu", components=("tracker",))
    torch.testing.assert_close(_embed(b), _embed(tiny_bundle(seed=0, text=False, video=False)))
    assert all(len(d) == 64 for d in entry.sha256.values())


def _http_error(cls, status):
    import httpx2

    resp = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
    return cls(f"{status} error", response=resp)


@pytest.mark.parametrize("kind", ["gated", "http401", "http403"])
def test_gated_or_forbidden_says_how_to_get_access(home, monkeypatch, kind):
    import huggingface_hub
    from huggingface_hub import errors as hf

    exc = {"gated": _http_error(hf.GatedRepoError, 403), "http401": _http_error(hf.HfHubHTTPError, 401),
           "http403": _http_error(hf.HfHubHTTPError, 403)}[kind]

    def fake(*a, **k):
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    with pytest.raises(ModelError) as err:
        registry.download("sam3")
    msg = str(err.value)
    assert "facebook/sam3" in msg and "hf auth login" in msg and "HF_TOKEN" in msg
    assert "https://huggingface.co/facebook/sam3" in msg


def test_offline_missing_from_cache(home):
    with pytest.raises(ModelError, match="not available offline") as err:
        load_bundle("liver", device="cpu")
    assert "oncoseg models import" in str(err.value)
    from huggingface_hub import errors as hf

    assert isinstance(err.value.__cause__, hf.LocalEntryNotFoundError)


def test_missing_and_unknown(home, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors as hf

    with pytest.raises(ModelError, match="unknown model"):
        load_bundle("no-such-model", device="cpu")
    if not (registry.PACKAGE_ROOT / "data" / "demo_model").exists():  # until the demo model is trained
        with pytest.raises(ModelError, match="not included"):
            registry.resolve("demo")
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(_http_error(hf.RepositoryNotFoundError, 404)))
    with pytest.raises(ModelError, match="not found"):
        registry.download("org/absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_bundle(empty, device="cpu")


def test_import_verifies_sha256_against_manifest(ckpt, home, tmp_path, monkeypatch):
    manifest = registry.load_manifest()
    good = registry.sha256_file(ckpt / "config.json")
    for digest, ok in ((good, True), ("0" * 64, False)):
        entry = registry.entry_copy(manifest.models["liver"], sha256={"config.json": digest}, base=None)
        patched = registry.Manifest(models={**manifest.models, "liver": entry}, routing=manifest.routing)
        monkeypatch.setattr(registry, "load_manifest", lambda *a, **k: patched)
        if ok:
            e = registry.import_model(ckpt, name="liver", overwrite=True)
            assert e.sha256["config.json"] == good
        else:
            with pytest.raises(ModelError, match="SHA-256"):
                registry.import_model(ckpt, name="liver", overwrite=True)
            assert (home / "models" / "liver" / "config.json").is_file()  # earlier good import kept
    with pytest.raises(ModelError, match="already imported"):
        registry.import_model(ckpt, name="liver")


def test_modality_routing(home):
    m = registry.load_manifest()
    assert registry.model_for_modality("CT", manifest=m) == m.routing["ct"]
    assert registry.model_for_modality("mri", override="/my/model", manifest=m) == "/my/model"
    assert registry.model_for_modality("unheard-of", manifest=m) == m.default
    registry.set_routing("ct", "kidney")
    assert registry.model_for_modality("ct") == "kidney"
    for name in set(m.routing.values()) | {m.default}:
        assert name in m.models


def test_cli_list_and_import(ckpt, home, capsys):
    from OncoSegLib.cli import main

    assert main(["models", "import", str(ckpt), "--name", "mine", "--modalities", "ct,pet"]) == 0
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out.split("\n", 1)[1])}
    assert rows["mine"]["local"] is True and rows["mine"]["modalities"] == ["ct", "pet"]
    assert rows["liver"]["local"] is False
    assert main(["models", "download", "liver"]) == 2  # offline, not cached: one-line error, no traceback
    assert "not available offline" in capsys.readouterr().err


def test_loaded_bundle_holds_one_vision_encoder(ckpt):
    """load_bundle reads the ViT twice (video tracker and detector checkpoints both hold it) but keeps ONE copy:
    every backend's backbone is the same module, and unique parameters = the sum over distinct tensors."""
    b = load_bundle(ckpt, device="cpu")
    vit = b.tracker.vision_encoder.backbone
    assert b.video.vision_encoder.backbone is vit and b.detector.vision_encoder.backbone is vit
    distinct = {}
    for m in (b.tracker, b.video, b.detector):
        for p in m.parameters():
            distinct[id(p)] = p.numel()
    vit_n = sum(p.numel() for p in vit.parameters())
    assert b.parameter_count() == sum(distinct.values())
    # counted per backend the ViT appears three times (tracker, video, detector), held once
    per_backend = sum(sum(p.numel() for p in m.parameters()) for m in (b.tracker, b.video, b.detector))
    assert per_backend - b.parameter_count() >= 2 * vit_n
    assert b.info["shared"]["detector.backbone<-tracker"] == sum(1 for _ in vit.parameters())


def test_missing_model_path_says_so(home, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_bundle(tmp_path / "nope" / "model", device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        registry.resolve(str(tmp_path / "missing.ckpt"))


# ------------------------------------------------------------------ text-trained adapters: detector heads
DET_HEADS = ["detr_encoder", "detr_decoder", "mask_decoder", "dot_product_scoring"]  # the trainer's default


def _detect(bundle):
    x = torch.linspace(-1, 1, 3 * 112 * 112).reshape(1, 3, 112, 112).flip(-1)
    with torch.no_grad():
        out = bundle.detector(pixel_values=x, **bundle.tokenize("liver"))
    return out.pred_logits.clone(), out.pred_masks.clone()


def _text_trained_adapter(ckpt, out):
    """An adapter folder written the way the trainer writes one (peft + detector heads), heads perturbed."""
    from OncoSegLib.models.lora import LoraSettings, apply_lora, save_adapter, save_detector_heads

    b = load_bundle(ckpt, device="cpu")
    pm = apply_lora(b.tracker, LoraSettings(r=4, alpha=8, target=("qkv", "proj")))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for h in DET_HEADS:
            for p in b.detector.get_submodule(h).parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    save_adapter(pm, out)
    save_detector_heads(b.detector, DET_HEADS, out)
    return _detect(b)


def test_text_trained_adapter_loads_its_detector_heads(ckpt, tmp_path):
    """Oracle: the perturbed detector that was saved. Before the fix load_bundle(adapter=...) ignored the file and
    the detector kept the base (here: un-perturbed) heads."""
    want_logits, want_masks = _text_trained_adapter(ckpt, tmp_path / "adapter")
    base_logits, _ = _detect(load_bundle(ckpt, device="cpu"))
    assert not torch.allclose(base_logits, want_logits, atol=1e-3)  # the perturbation shows in the output
    for merge in (False, True):
        got_logits, got_masks = _detect(load_bundle(ckpt, device="cpu", adapter=tmp_path / "adapter",
                                                    merge_adapter=merge))
        torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_masks, want_masks, rtol=1e-4, atol=1e-4)
    # a tracker-only load has no detector: the heads are not needed, loading works
    assert load_bundle(ckpt, device="cpu", components=("tracker",), adapter=tmp_path / "adapter").detector is None


def test_detector_heads_that_do_not_fit_are_refused(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    from OncoSegLib.models.lora import DETECTOR_HEADS_FILE

    _text_trained_adapter(ckpt, tmp_path / "adapter")
    f = tmp_path / "adapter" / DETECTOR_HEADS_FILE
    full = load_file(str(f))
    name = next(k for k in full if k.startswith("detr_decoder."))
    for label, state, meta in [
        ("missing", {k: v for k, v in full.items() if k != name}, {"heads": json.dumps(DET_HEADS)}),
        ("missing", {k: v for k, v in full.items() if k != name}, None),  # heads inferred from the tensor names
        ("unexpected", {**full, "detr_decoder.not_a_weight": torch.zeros(2)}, None),
        ("unexpected", {**full, name: torch.zeros(1, 2, 3)}, None),  # wrong shape
    ]:
        save_file(state, str(f), metadata=meta)
        with pytest.raises(ModelError, match=label):
            load_bundle(ckpt, device="cpu", adapter=tmp_path / "adapter")
