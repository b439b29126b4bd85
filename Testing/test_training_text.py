"""Text (concept) prompts in training: Hungarian matching, the set-prediction loss, and a short phantom run that
makes the detector find organs by name on held-out phantoms (scored with OncoSegLib.metrics.dice through the
user-facing path: merged adapter -> SegmentationSession.add_text)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.optimize import linear_sum_assignment

from OncoSegLib.training.text_loss import hungarian_match, match_queries, text_detection_loss


def test_hungarian_match_picks_the_minimum_cost_assignment() -> None:
    # 4 queries x 3 targets; the greedy row-wise minimum (q0->t0 twice) is not a valid assignment
    cost = np.array([[0.1, 0.2, 0.9],
                     [0.2, 5.0, 5.0],
                     [5.0, 5.0, 0.3],
                     [5.0, 0.4, 5.0]])
    q, t = hungarian_match(cost)
    assert list(t) == [0, 1, 2] and list(q) == [1, 0, 2]  # total 0.2 + 0.2 + 0.3 = 0.7
    # oracle: brute force over all injective maps targets -> queries
    import itertools

    best = min(itertools.permutations(range(4), 3), key=lambda p: sum(cost[p[n], n] for n in range(3)))
    assert list(q) == list(best)
    assert hungarian_match(np.zeros((5, 0)))[0].size == 0


def _disc(s: int, cy: int, cx: int, r: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()


def test_match_queries_assigns_each_instance_to_the_query_that_draws_it() -> None:
    s = 32
    a, b = _disc(s, 8, 8, 5), _disc(s, 22, 22, 6)
    masks = torch.full((5, s, s), -8.0)
    masks[3] = 16 * a - 8  # query 3 draws instance a
    masks[1] = 16 * b - 8  # query 1 draws instance b
    masks[4] = 16 * _disc(s, 8, 24, 4) - 8  # a confident query elsewhere: must not be matched
    logits = torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0])
    q, t = match_queries(masks, logits, torch.stack([a, b]))
    assert dict(zip(t.tolist(), q.tolist())) == {0: 3, 1: 1}
    # independent oracle: scipy on an IoU-based cost
    p = (masks > 0).flatten(1).float()
    g = torch.stack([a, b]).flatten(1)
    iou = (p @ g.T) / (p.sum(1)[:, None] + g.sum(1)[None] - p @ g.T).clamp_min(1)
    rows, cols = linear_sum_assignment(-iou.numpy())
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 3, 1: 1}


def test_text_loss_is_near_zero_for_a_perfect_prediction_and_large_for_a_wrong_one() -> None:
    s = 32
    a, b = _disc(s, 8, 8, 5), _disc(s, 22, 22, 6)
    inst = [torch.stack([a, b]), torch.zeros((0, s, s))]
    present = [True, False]
    perfect = torch.full((2, 4, s, s), -30.0)
    perfect[0, 2], perfect[0, 0] = 60 * a - 30, 60 * b - 30
    logits = torch.full((2, 4), -30.0)
    logits[0, [0, 2]] = 30.0
    presence = torch.tensor([[30.0], [-30.0]])
    good = text_detection_loss(perfect, logits, presence, inst, present, ["ct", "ct"])
    assert float(good["loss"]) < 0.05 and float(good["matched"]) == 2
    # wrong: masks on the wrong places, scores inverted, presence inverted
    wrong = text_detection_loss(torch.roll(perfect, shifts=16, dims=3), -logits, -presence, inst, present,
                                ["ct", "ct"])
    assert float(wrong["loss"]) > 20 * float(good["loss"]) and float(wrong["loss"]) > 1.0
    assert float(wrong["presence"]) > 10 and float(wrong["mask"]) > 0.5
    # gradients reach every head the loss is about
    m, lg, pr = perfect.clone().requires_grad_(), logits.clone().requires_grad_(), presence.clone().requires_grad_()
    text_detection_loss(m * 0.1, lg * 0.1, pr * 0.1, inst, present, ["ct", "ct"])["loss"].backward()
    assert m.grad.abs().sum() > 0 and lg.grad.abs().sum() > 0 and pr.grad.abs().sum() > 0


def test_text_sampling_gives_connected_component_instances_and_absent_concepts() -> None:
    from scipy import ndimage

    from OncoSegLib.training.config import DatasetSpec, PromptSpec
    from OncoSegLib.training.datasets import CaseCache, SliceIndex, build_cases
    from OncoSegLib.training.sampling import Sampler

    cache = CaseCache(build_cases([DatasetSpec(kind="phantom", n_cases=1, seed=3, shape=[6, 56, 56])]))
    sampler = Sampler(cache, SliceIndex.build(cache), 56, PromptSpec(box=0, points=0.01, text=1.0,
                                                                        text_negative=0.5), seed=0, allow_text=True)
    seen_neg = seen_pos = 0
    for g in range(6):
        b = sampler.micro_batch(g, 4, kind="text")
        for n in range(4):
            union = b.instances[n].sum(0).clamp(max=1) if len(b.instances[n]) else torch.zeros(56, 56)
            assert torch.equal(union, b.targets[n])  # instances tile the target
            assert b.present[n] == bool(b.targets[n].any())
            if b.present[n]:
                seen_pos += 1
                _, ncomp = ndimage.label(b.targets[n].numpy(), structure=np.ones((3, 3)))
                assert len(b.instances[n]) == ncomp
            else:
                seen_neg += 1
    assert seen_pos > 0 and seen_neg > 0


def _text_dice(bundle, seeds, concept: str, label: int, shape) -> list[float]:  # noqa: ANN001
    from OncoSegLib import metrics
    from OncoSegLib.phantoms import make_ct_phantom
    from OncoSegLib.session import SegmentationSession

    out = []
    for seed in seeds:
        ph = make_ct_phantom(seed=seed, shape_kji=shape)
        session = SegmentationSession(bundle)
        session.set_volume(ph.volume, modality="ct")
        areas = (ph.labels == label).sum(axis=(1, 2))
        for k in np.argsort(areas)[-2:]:  # the two slices where the organ is largest
            found = session.add_text(concept, index=int(k))
            pred = np.zeros(ph.labels.shape[1:], bool)
            for inst in found:
                pred |= np.asarray(inst.mask, bool)
            out.append(metrics.dice(pred, ph.labels[k] == label))
    return out


@pytest.mark.slow
def test_short_text_training_lowers_the_loss_and_finds_the_liver_by_name(tmp_path: Path) -> None:
    from OncoSegLib.models.lora import load_adapter
    from OncoSegLib.models.tiny import tiny_bundle
    from OncoSegLib.training.config import load_config
    from OncoSegLib.training.trainer import DETECTOR_HEADS_FILE, load_detector_heads, train

    torch.manual_seed(0)
    phantom = {"kind": "phantom", "shape": [10, 112, 112], "labels": {1: "liver", 2: "right kidney",
                                                                       3: "left kidney"}}
    cfg = {"name": "text", "seed": 0, "output_dir": str(tmp_path / "run"),
           "model": {"source": "tiny", "image_size": 112, "device": "cpu"},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0,
                    "detector_heads": ["detr_encoder", "detr_decoder", "mask_decoder", "dot_product_scoring",
                                       "vision_encoder.neck", "text_projection"]},
           "train": {"batch_size": 8, "lr": 3.0e-3, "max_steps": 120, "steps_per_epoch": 24, "eval_every": 60,
                     "val_samples": 16, "checkpoint_every": 1000, "progress": False, "num_threads": 2},
           "prompts": {"box": 0.0, "points": 0.001, "text": 1.0, "text_negative": 0.2},
           "datasets": [dict(phantom, n_cases=4, seed=0)], "val_datasets": [dict(phantom, n_cases=1, seed=1000)]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    shape = (10, 112, 112)
    before = _text_dice(tiny_bundle(0, 112), (3000, 3001), "liver", 1, shape)

    result = train(load_config(tmp_path / "t.yaml"))
    metrics_json = json.loads((tmp_path / "run/phases/phase1/metrics.json").read_text())
    hist, summary = metrics_json["history"], metrics_json["summary"]
    text_losses = [r["loss_text"] for r in hist if r["loss_text"] != ""]
    assert len(text_losses) >= 100
    assert np.mean(text_losses[-20:]) < 0.6 * np.mean(text_losses[:20])
    vt = [r["val_text_dice"] for r in hist if r["val_text_dice"] != ""]
    assert max(vt) > summary["initial_val_text_dice"] + 0.2

    bundle = tiny_bundle(0, 112)  # the user path: base model + merged adapter + trained detector heads
    load_adapter(bundle, result.final_adapter, merge=True)
    load_detector_heads(bundle.detector, Path(result.final_adapter) / DETECTOR_HEADS_FILE)
    after = _text_dice(bundle, (3000, 3001), "liver", 1, shape)  # phantoms never seen in training/validation
    assert np.mean(after) >= 0.5, (before, after)
    assert np.mean(after) > np.mean(before) + 0.3, (before, after)
