"""One-prompt evaluation: prompts from ground truth, 3D scores against numpy/MONAI oracles, grouped tables."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from OncoSegLib.evaluation.one_prompt import (
    EvalCase,
    evaluate_cases,
    group_means,
    markdown_table,
    slice_prompts,
    write_reports,
)
from OncoSegLib.io.volume import Volume


def toy_case(name: str, dataset: str, modality: str) -> EvalCase:
    gts = np.zeros((5, 24, 30), dtype=np.uint8)
    yy, xx = np.mgrid[:24, :30]
    disk = (yy - 12) ** 2 + (xx - 10) ** 2 <= 25
    gts[1:4][:, disk] = 1
    gts[2, 15:20, 20:27] = 2
    return EvalCase(name, Volume(np.zeros(gts.shape, np.int16), spacing=(0.8, 0.7, 3.0)), gts,
                    {1: "tumor", 2: "kidney"}, dataset, modality)


def box_filler(image, k, prompts):  # noqa: ANN001
    """Answers a box with the filled box and a point with a 3x3 square: predictable errors."""
    out = {}
    for p in prompts:
        m = np.zeros(image.shape_kji[1:], dtype=bool)
        if p.box is not None:
            i0, j0, i1, j1 = p.box
            m[j0:j1 + 1, i0:i1 + 1] = True
        else:
            i, j = p.point
            m[j - 1:j + 2, i - 1:i + 2] = True
        out[p.label] = m
    return out


def test_prompts_are_tight_boxes_and_deepest_points() -> None:
    case = toy_case("a", "d", "ct")
    boxes = slice_prompts(case.gts, "box")
    assert [(p.k, p.label) for p in boxes] == [(1, 1), (2, 1), (2, 2), (3, 1)]
    assert boxes[0].box == (5, 7, 15, 17) and boxes[2].box == (20, 15, 26, 19)
    points = slice_prompts(case.gts, "point")
    assert points[0].point == (10, 12)  # disk centre
    assert points[2].point == (22, 17)  # 5 x 7 rectangle: depth 3 at columns 22-24, first in C order wins
    with pytest.raises(Exception, match="unknown prompt kind"):
        slice_prompts(case.gts, "scribble")


def test_scores_match_independent_oracles(tmp_path) -> None:  # noqa: ANN001
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    cases = [toy_case("a", "setA", "ct"), toy_case("b", "setB", "mri")]
    res = evaluate_cases(cases, box_filler, kind="box")
    assert len(res) == 4
    r = next(x for x in res if x.case == "a" and x.label == 1)
    g = cases[0].gts == 1
    pred = np.zeros_like(g)
    pred[1:4, 7:18, 5:16] = True
    assert r.dice == pytest.approx(2 * (pred & g).sum() / (pred.sum() + g.sum()))
    assert r.iou == pytest.approx((pred & g).sum() / (pred | g).sum())
    sp = (3.0, 0.7, 0.8)  # array order (k, j, i)
    hd = monai_metrics.compute_hausdorff_distance(torch.from_numpy(pred[None, None]), torch.from_numpy(g[None, None]),
                                                  percentile=95, spacing=sp)
    assert r.hd95 == pytest.approx(float(hd), rel=1e-5)
    nsd = monai_metrics.compute_surface_dice(torch.from_numpy(pred[None, None]), torch.from_numpy(g[None, None]),
                                             class_thresholds=[2.0], spacing=sp, include_background=True)
    assert r.nsd == pytest.approx(float(nsd), rel=1e-5)
    kid = next(x for x in res if x.case == "a" and x.label == 2)
    assert kid.dice == 1.0 and kid.name == "kidney" and kid.slices == 1
    paths = write_reports(res, tmp_path)
    with open(paths["by_modality"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["modality"] for row in rows] == ["ct", "mri"]
    assert float(rows[0]["dice"]) == pytest.approx(np.mean([x.dice for x in res if x.modality == "ct"]), abs=1e-6)
    assert "| dataset | n | dice |" in markdown_table(group_means(res, "dataset"))
    assert len(paths["cases"].read_text().splitlines()) == 5


def test_point_prompts_and_real_predictor_shapes() -> None:
    from OncoSegLib.evaluation.segmenters import PredictorSliceSegmenter
    from OncoSegLib.models.tiny import tiny_bundle

    case = toy_case("a", "d", "ct")
    seg = PredictorSliceSegmenter(tiny_bundle(0, 56, text=False, video=False), modality="ct")
    answers: dict[int, dict[int, np.ndarray]] = {}

    def recording(image, k, prompts):  # noqa: ANN001 - keeps what the real predictor returned per label and slice
        masks = seg(image, k, prompts)
        for lab, m in masks.items():
            answers.setdefault(int(lab), {})[k] = np.asarray(m, dtype=bool)
        return masks

    res = evaluate_cases([case], recording, kind="point")
    assert {x.label for x in res} == {1, 2} and all(x.prompt == "point" for x in res)
    for x in res:  # the reported 3D Dice is the Dice of the predictor's masks (numpy oracle), not just in [0, 1]
        g = case.gts == x.label
        pred = np.zeros(g.shape, dtype=bool)
        for k, m in answers[x.label].items():
            pred[k] = m
        assert sorted(answers[x.label]) == sorted(set(np.nonzero(g.any(axis=(1, 2)))[0].tolist()))
        assert pred.any()
        assert x.dice == pytest.approx(2.0 * (pred & g).sum() / (pred.sum() + g.sum()), abs=1e-12)
