"""CVPR25 click protocol: click placement on hand-made cases, scoring against independent oracles."""

from __future__ import annotations


import numpy as np
import pytest
from scipy import integrate

from OncoSegLib.evaluation.click_protocol import (
    Box3D,
    ClassPrompts,
    InteractiveCase,
    box_from_mask,
    click_auc,
    deepest_point,
    largest_error_region,
    next_click,
    read_challenge_case,
    run_case,
    write_protocol_reports,
)
from OncoSegLib.io.volume import Volume


def brute_force_depth(region: np.ndarray) -> np.ndarray:
    """Distance of each region voxel to the nearest voxel outside it, the outside including everything beyond the
    array border (brute force over an explicitly padded grid: independent of scipy's EDT)."""
    padded = np.pad(region, 1)
    outside = np.argwhere(~padded)
    inside = np.argwhere(padded)
    depth = np.zeros(padded.shape)
    for p in inside:
        depth[tuple(p)] = np.sqrt(((outside - p) ** 2).sum(1)).min()
    return depth[1:-1, 1:-1, 1:-1]


def np_dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_deepest_point_of_an_odd_cube_is_its_centre_and_matches_brute_force() -> None:
    region = np.zeros((9, 12, 14), dtype=bool)
    region[1:8, 3:10, 4:11] = True  # 7x7x7 cube centred at (4, 6, 7)
    region[4, 6, 11:13] = True  # a thin spur must not attract the click
    assert deepest_point(region) == (4, 6, 7)
    depth = brute_force_depth(region)
    assert np.unravel_index(np.argmax(depth), depth.shape) == (4, 6, 7)


def test_deepest_point_counts_the_image_border_as_outside() -> None:
    region = np.zeros((5, 20, 20), dtype=bool)
    region[:, 0:20, 0:9] = True  # touches the border: its depth is limited there as well
    k, j, i = deepest_point(region)
    depth = brute_force_depth(region)
    assert depth[k, j, i] == pytest.approx(depth.max())
    assert k == 2  # the middle of the 5 slices, not a slice at the border


def test_largest_error_region_picks_the_largest_26_connected_component() -> None:
    gt = np.zeros((10, 20, 20), dtype=bool)
    gt[2:8, 2:12, 2:12] = True
    pred = gt.copy()
    pred[3:5, 3:5, 3:5] = False  # FN, 8 voxels
    pred[1, 15:18, 15:18] = True  # FP, 9 voxels
    pred[2, 18, 18] = True  # diagonal (26-) neighbour of the FP patch: joins it -> 10 voxels
    region = largest_error_region(pred, gt)
    assert region is not None and region.sum() == 10
    assert region[2, 18, 18] and region[1, 16, 16]


@pytest.mark.parametrize("fn_bigger", [True, False])
def test_click_is_foreground_in_a_missed_region_and_background_in_an_oversegmentation(fn_bigger: bool) -> None:
    gt = np.zeros((16, 32, 32), dtype=bool)
    gt[2:14, 2:20, 2:20] = True
    pred = gt.copy()
    fn = (slice(4, 9), slice(6, 11), slice(6, 11)) if fn_bigger else (slice(4, 7), slice(6, 9), slice(6, 9))
    fp = (slice(5, 8), slice(24, 27), slice(24, 27)) if fn_bigger else (slice(4, 9), slice(24, 29), slice(24, 29))
    pred[fn] = False
    pred[fp] = True
    click = next_click(pred, gt)
    assert click is not None
    if fn_bigger:  # 5x5x5 hole inside the object vs a 3x3x3 blob outside
        assert click.positive and click.kji == (6, 8, 8)
    else:
        assert not click.positive and click.kji == (6, 26, 26)


def test_perfect_class_gets_no_click() -> None:
    gt = np.zeros((4, 8, 8), dtype=bool)
    gt[1:3, 2:6, 2:6] = True
    assert next_click(gt.copy(), gt) is None


def test_box_from_mask_follows_the_challenge_definition() -> None:
    m = np.zeros((10, 20, 30), dtype=bool)
    m[2:7, 4:9, 10:15] = True
    m[6, 4:12, 10:25] = True
    b = box_from_mask(m)
    # get_boxes.py: the middle of the distinct foreground slices (2..6 -> 4), not the slice of the middle voxel
    # (slice 6 holds most voxels, so the middle voxel lies there)
    z_idx = np.nonzero(m)[0]
    assert int(z_idx[len(z_idx) // 2]) == 6
    assert (b.z_min, b.z_max, b.z_mid) == (2, 6, 4)
    jj, ii = np.nonzero(m[b.z_mid])
    assert (b.x_min, b.y_min, b.x_max, b.y_max) == (ii.min(), jj.min(), ii.max(), jj.max()) == (10, 4, 14, 8)
    assert Box3D.from_challenge(b.to_challenge()) == b


class FixingStub:
    """Deterministic segmenter: a fixed imperfect first answer; each click fixes the error component under it."""

    def __init__(self, gts: np.ndarray, first: np.ndarray):
        self.gts = gts
        self.first = first
        self.calls = 0

    def __call__(self, image, prompts, previous):  # noqa: ANN001
        from scipy import ndimage

        self.calls += 1
        if previous is None:
            assert all(p.box is not None for p in prompts.values())
            return self.first.copy()
        out = previous.copy()
        for label, cp in prompts.items():
            if not cp.clicks:
                continue
            c = cp.clicks[-1]
            err = (out == label) != (self.gts == label)
            comp, _ = ndimage.label(err, structure=np.ones((3, 3, 3)))
            if comp[c.kji]:
                fix = comp == comp[c.kji]
                out[fix] = np.where(c.positive, label, 0)
        return out


def test_protocol_scores_each_step_and_stops_clicking_when_perfect(tmp_path) -> None:  # noqa: ANN001
    gts = np.zeros((20, 40, 40), dtype=np.uint8)
    gts[2:18, 4:30, 4:30] = 1
    gts[5:9, 33:38, 33:38] = 2
    first = gts.copy()
    first[4:9, 8:13, 8:13] = 0  # FN cube A (125)
    first[12:15, 20:23, 20:23] = 0  # FN cube B (27)
    first[0:2, 32:36, 0:4] = 1  # FP slab C (32)
    first[5:9, 33:38, 33] = 0  # class 2 misses a column of 20 voxels
    spacing = (0.7, 0.9, 2.0)
    case = InteractiveCase("toy", Volume(np.zeros(gts.shape, np.int16), spacing=spacing), gts,
                           boxes={c: box_from_mask(gts == c) for c in (1, 2)})
    stub = FixingStub(gts, first)
    res = run_case(case, stub)
    assert stub.calls == 6 and len(res.dsc) == 6
    # clicks for class 1: A (positive, centre), then C (negative), then B (positive), then none
    c1 = res.clicks[1]
    assert [c.positive for c in c1] == [True, False, True]
    assert c1[0].kji == (6, 10, 10) and c1[2].kji == (13, 21, 21)
    assert c1[1].kji[0] in (0, 1) and 32 <= c1[1].kji[1] <= 35
    assert [c.positive for c in res.clicks[2]] == [True]
    # oracle: replay the fixes by hand and score with plain numpy Dice
    states = [first.copy()]
    s = first.copy(); s[4:9, 8:13, 8:13] = 1; s[5:9, 33:38, 33] = 2; states.append(s.copy())
    s[0:2, 32:36, 0:4] = 0; states.append(s.copy())
    s[12:15, 20:23, 20:23] = 1; states += [s.copy()] * 3
    expected = [np.mean([np_dice(st == c, gts == c) for c in (1, 2)]) for st in states]
    np.testing.assert_allclose(res.dsc, expected, atol=1e-9)
    assert res.dsc_final == 1.0 and res.nsd_final == 1.0
    assert res.dsc_auc == pytest.approx(integrate.cumulative_trapezoid(expected[-5:], np.arange(5))[-1])
    assert res.nsd_auc == pytest.approx(integrate.cumulative_trapezoid(res.nsd[-5:], np.arange(5))[-1])
    paths = write_protocol_reports([res], tmp_path)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert {"DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "DSC_1", "NSD_6"} <= set(header)


def test_nsd_is_zero_when_dice_is_at_most_0_2() -> None:
    gts = np.zeros((6, 30, 30), dtype=np.uint8)
    gts[1:5, 2:20, 2:20] = 1
    bad = np.zeros_like(gts)
    bad[1:5, 2:4, 2:20] = 1  # Dice ~0.2 or below
    case = InteractiveCase("bad", Volume(np.zeros(gts.shape, np.int16)), gts)
    res = run_case(case, lambda image, prompts, previous: bad.copy(), n_clicks=5)
    assert all(d <= 0.2 for d in res.dsc) and res.nsd == [0.0] * 6


def test_click_auc_is_the_trapezoid_over_the_five_click_steps() -> None:
    vals = [0.1, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert click_auc(vals) == pytest.approx(integrate.trapezoid(vals[1:], dx=1.0))


def test_reads_a_challenge_npz_with_dict_boxes(tmp_path) -> None:  # noqa: ANN001
    gts = np.zeros((8, 16, 16), dtype=np.uint8)
    gts[2:6, 3:9, 4:10] = 1
    gts[3:5, 10:14, 10:14] = 3
    boxes = [box_from_mask(gts == v).to_challenge() for v in (1, 3)]
    path = tmp_path / "CT_toy.npz"
    np.savez(path, imgs=np.zeros(gts.shape, np.int16), gts=gts, spacing=np.array([0.8, 0.7, 2.5]),
             boxes=np.array(boxes, dtype=object))
    case = read_challenge_case(path)
    assert case.gts.shape == (8, 16, 16)
    assert case.image.spacing == (0.8, 0.7, 2.5)
    assert case.boxes is not None and case.boxes[3] == box_from_mask(gts == 3)
    assert set(case.boxes) == {1, 3}
    assert isinstance(case.boxes[1], Box3D) and isinstance(ClassPrompts(1).clicks, list)
