"""LiteMedSAM network: strict weight loading (every checkpoint tensor used, nothing left random), the checkpoint ->
transformers name map, the TinyViT position-bias layout, and the predictor's capabilities (no text, no video)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from OncoSegLib.errors import InputError, ModelError
from OncoSegLib.io.volume import Volume
from OncoSegLib.models.litemedsam import weights
from OncoSegLib.models.litemedsam.heads import checkpoint_name_to_module
from OncoSegLib.models.litemedsam.model import LiteMedSAM, convert_state_dict, load_strict
from OncoSegLib.models.litemedsam.predictor import LiteMedSamPredictor
from OncoSegLib.models.litemedsam.tinyvit import relative_offset_index
from OncoSegLib.session import SegmentationSession


@pytest.fixture(scope="module")
def checkpoint(litemedsam_model):
    """The real checkpoint tensors under their original (segment-anything / TinyViT) names."""
    return weights.read_state_dict(_store(litemedsam_model))


def _store(pred):
    from pathlib import Path

    return Path(pred.info["store"])


def test_every_checkpoint_tensor_loads_strictly(checkpoint):
    assert len(checkpoint) == 435
    net = LiteMedSAM()
    converted = convert_state_dict(checkpoint)
    assert set(converted) == set(net.state_dict())  # no missing, no unexpected
    load_strict(net, converted)
    own = net.state_dict()
    for name, tensor in checkpoint.items():  # values really landed where the map says
        assert torch.equal(own[checkpoint_name_to_module(name)], tensor), name
    assert sum(p.numel() for p in net.parameters()) == 9_791_556


@pytest.mark.parametrize("damage", ["missing", "unexpected", "renamed", "shape"])
def test_damaged_checkpoints_are_refused(checkpoint, damage):
    sd = dict(checkpoint)
    key = "mask_decoder.output_hypernetworks_mlps.2.layers.1.weight"
    if damage == "missing":
        del sd[key]
    elif damage == "unexpected":
        sd["mask_decoder.extra_head.weight"] = torch.zeros(1)
    elif damage == "renamed":
        sd[key.replace("layers.1", "layers.9")] = sd.pop(key)
    else:
        sd[key] = torch.zeros(3, 3)
    words = {"missing": "1 missing", "unexpected": "1 unexpected", "renamed": "1 missing (e.g. mask_decoder."
             "output_hypernetworks_mlps.2.layers.0.weight); 1 unexpected", "shape": "1 with the wrong shape"}
    with pytest.raises(ModelError, match=r"do not match the LiteMedSAM architecture") as err:
        load_strict(LiteMedSAM(), convert_state_dict(sd))
    assert words[damage] in str(err.value)


def test_name_map_is_one_to_one_and_only_touches_the_heads(checkpoint):
    mapped = {k: checkpoint_name_to_module(k) for k in checkpoint}
    assert len(set(mapped.values())) == len(mapped)
    for old, new in mapped.items():
        if old.startswith("image_encoder."):
            assert new == old
    assert mapped["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] == \
        "prompt_encoder.shared_embedding.positional_embedding"
    assert mapped["mask_decoder.output_upscaling.1.weight"] == "mask_decoder.upscale_layer_norm.weight"
    assert mapped["mask_decoder.iou_prediction_head.layers.2.bias"] == "mask_decoder.iou_prediction_head.proj_out.bias"
    assert mapped["mask_decoder.transformer.layers.1.norm4.bias"] == "mask_decoder.transformer.layers.1.layer_norm4.bias"


@pytest.mark.parametrize("window", [7, 14])
def test_position_bias_index_follows_first_occurrence_order(window):
    # oracle: number the (|dy|, |dx|) offsets in the order they first occur over all token pairs, row-major
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    want = np.zeros((len(points), len(points)), dtype=np.int64)
    for a, p in enumerate(points):
        for b, q in enumerate(points):
            off = (abs(p[0] - q[0]), abs(p[1] - q[1]))
            want[a, b] = seen.setdefault(off, len(seen))
    assert len(seen) == window * window
    np.testing.assert_array_equal(relative_offset_index(window).numpy(), want)


# ---------------------------------------------------------------- capabilities (random weights are enough)
@pytest.fixture(scope="module")
def random_predictor():
    torch.manual_seed(0)
    return LiteMedSamPredictor(LiteMedSAM().eval())


def _ct(shape=(4, 40, 50)) -> Volume:
    rng = np.random.default_rng(1)
    return Volume(rng.normal(0, 300, shape).astype(np.float32), spacing=(1.0, 1.0, 2.0), modality="CT")


def test_text_prompt_names_models_with_a_text_encoder(random_predictor):
    ses = SegmentationSession(random_predictor)
    ses.set_volume(_ct(), modality="ct")
    with pytest.raises(ModelError) as err:
        ses.add_text("liver")
    msg = str(err.value)
    assert msg.startswith("this model has no text encoder; use one of: ")
    assert "sam3" in msg and "liver" in msg and "litemedsam" not in msg and "demo" not in msg
    assert ses.objects == {}


def test_session_uses_the_predictors_window_and_geometry(random_predictor):
    ses = SegmentationSession(random_predictor)
    ses.set_volume(_ct(), modality="ct")
    assert ses.normalizer.window == (-160.0, 240.0)
    ses.set_volume(_ct(), modality="ct", window=(-1000, 1000))  # a user window wins
    assert ses.normalizer.window == (-1000.0, 1000.0)
    px = ses.pixels("axial", 1)
    assert tuple(px.shape) == (1, 3, 256, 256)
    # 40 x 50 slice: scale 256/50 -> resized to 205 x 256, zero padding below row 205
    assert float(px[0, :, 205:].abs().max()) == 0.0 and float(px[0, :, 204].abs().max()) > 0.0
    assert ses._to_model(10.0, 20.0, (40, 50)) == pytest.approx((20 * 256 / 50, 10 * 256 / 50))


def test_tracker_less_model_defaults_to_a_method_it_can_run(random_predictor):
    ses = SegmentationSession(random_predictor)
    ses.set_volume(_ct(), modality="ct")
    assert ses.default_method in ("box", "box3d")  # a rule a tracker-less model can run
    oid = ses.add_object("x")
    r = ses.add_box(oid, (10, 10, 1), (30, 25, 1))
    assert r.mask.shape == (40, 50) and r.presence is None and r.iou is not None and np.isfinite(r.iou)
    with pytest.raises(ModelError, match="no video tracker"):
        ses.propagate(oid, method="memory")
    ses.propagate(oid)  # the default method
    assert ses._objects[oid].last_propagation["method"] == ses.default_method
    with pytest.raises(InputError):
        random_predictor.encode(torch.zeros(1, 3, 128, 128))


def test_non_ct_slices_are_scaled_by_their_own_percentiles(random_predictor):
    """LiteMedSAM's MR rule: 0.5-99.5 percentiles of each slice (not of the volume), so a slice and the same slice
    x10 give the same model input; numpy's percentiles are the oracle for the end points."""
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 100.0, (40, 50)).astype(np.float32)
    vol = Volume(np.stack([base, 10 * base, base]), spacing=(1.0, 1.0, 3.0), modality="MR")
    ses = SegmentationSession(random_predictor)
    ses.set_volume(vol, modality="mri")
    a, b = ses.pixels("axial", 0), ses.pixels("axial", 1)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    lo, hi = np.percentile(base, [0.5, 99.5])
    x01 = random_predictor.prepare(base, ses.normalizer)  # enlarged 40 x 50 -> 205 x 256
    want = np.clip((base - lo) / (hi - lo), 0, 1)
    assert 0.0 <= float(x01.min()) and float(x01.max()) <= 1.0
    assert float(x01[0, 0, :205].mean()) == pytest.approx(float(want.mean()), abs=0.01)
    assert float(x01[0, 0, :205].mean()) != pytest.approx(float(np.clip(base / base.max(), 0, 1).mean()), abs=0.01)
