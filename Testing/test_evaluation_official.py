"""The CVPR 2025 interactive protocol against an independent transcription of the challenge's evaluation script.

The oracle below re-states, in its own code, the rules of ``CVPR25_iter_eval.py``, ``SurfaceDice.py`` and
``get_boxes.py`` (repository JunMa11/CVPR-MedSegFMCompetition, read at commit 748e862, 2025-06-03):
classes = ``np.sort(pd.unique(gts))[1:]``; the previous prediction read back as ``uint8``; error components by
``cc3d.connected_components(connectivity=26)`` (the script's own library); the EDT of the component on a
25 %-padded crop, halved by a 2x2x2 block max when the padded crop has more than 6e7 voxels and repeated back, then
multiplied by the component; ``np.random.seed(42)`` + ``np.random.choice`` among the maxima; a missing prediction read
as the stale output file or zeros; Dice NaN for two empty masks; NSD from DeepMind's ``surface_distance`` (the
library ``SurfaceDice.py`` copies) with the npz spacing applied as stored to the (z, y, x) axes and ``<=``; NSD 0 when
the mean DSC <= 0.2; AUC = ``cumulative_trapezoid(v[-5:], arange(5))[-1]``; a case without any prediction left out.

The same deterministic segmenter drives both; per-step DSC/NSD must agree to 1e-12 and the clicks exactly.
"""

from __future__ import annotations

import itertools
import warnings

import cc3d
import numpy as np
import pytest
import surface_distance as deepmind_sd
from scipy import integrate, ndimage

from OncoSegLib.evaluation.click_protocol import (
    EDT_DOWNSAMPLE_VOXELS,
    Box3D,
    InteractiveCase,
    box_from_mask,
    deepest_point,
    read_challenge_case,
    run_case,
)
from OncoSegLib.evaluation.surface_dice import surface_dice
from OncoSegLib.io.volume import Volume


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the reference's scipy.ndimage.filters path


@pytest.fixture(autouse=True)
def _numpy2_shim_for_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """``surface_distance`` 0.1 still spells ``np.Inf`` (gone in NumPy 2) for an empty mask: give it back."""
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)


# ------------------------------------------------------------------------------------------ the oracle (transcribed)
def o_classes(gts: np.ndarray) -> list:
    return sorted(set(gts.ravel().tolist()))[1:]


def o_dice(g: np.ndarray, s: np.ndarray) -> float:
    total = g.sum() + s.sum()
    return np.nan if total == 0 else 2 * (g & s).sum() / total


def o_nsd(g: np.ndarray, s: np.ndarray, spacing, tol: float = 2.0) -> float:
    return deepmind_sd.compute_surface_dice_at_tolerance(deepmind_sd.compute_surface_distances(g, s, spacing), tol)


def o_scores(gts: np.ndarray, segs: np.ndarray, spacing) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dsc = np.mean([o_dice(gts == c, segs == c) for c in o_classes(gts)])
        if dsc > 0.2:
            return dsc, np.mean([o_nsd(gts == c, segs == c, spacing) for c in o_classes(gts)])
    return dsc, 0.0


def o_edt(component: np.ndarray, threshold: int) -> np.ndarray:
    """Full-size distance map of the component as the script builds it."""
    coords = np.argwhere(component)
    lo, hi = coords.min(0), coords.max(0) + 1
    shape = hi - lo
    pad = np.maximum((shape * 0.25).astype(int), 1)
    work = np.zeros(shape + 2 * pad, np.uint8)
    work[pad[0]:pad[0] + shape[0], pad[1]:pad[1] + shape[1], pad[2]:pad[2] + shape[2]] = \
        component[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    large = work.shape[0] * work.shape[1] * work.shape[2] > threshold
    if large:  # block max over 2x2x2 blocks, zero-filled at the far end
        even = np.zeros([n + n % 2 for n in work.shape], np.uint8)
        even[:work.shape[0], :work.shape[1], :work.shape[2]] = work
        work = np.max([even[a::2, b::2, c::2] for a, b, c in itertools.product((0, 1), repeat=3)], axis=0)
    edt = ndimage.distance_transform_edt(work)
    if large:
        edt = np.kron(edt, np.ones((2, 2, 2)))
    full = np.zeros(component.shape)
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = edt[pad[0]:pad[0] + shape[0], pad[1]:pad[1] + shape[1],
                                                      pad[2]:pad[2] + shape[2]]
    full *= component
    return full if full.sum() > 0 else component


def o_sample(edt: np.ndarray) -> tuple:
    np.random.seed(42)
    maxima = np.argwhere(edt == edt.max())
    return tuple(int(v) for v in maxima[np.random.choice(len(maxima))])


def oracle_run(gts: np.ndarray, spacing_as_stored, has_boxes: bool, model, n_clicks: int = 5,
               threshold: int = 60000000) -> dict:
    classes = o_classes(gts)
    clicks = [{"fg": [], "bg": []} for _ in classes]
    order: list[list] = [[] for _ in classes]
    output_file = None  # outputs/<case>.npz of the script: survives a failed step
    dscs, nsds = [], []
    for it in range(n_clicks + 1):
        if it == 0 and not has_boxes:
            dscs.append(0)
            nsds.append(0)
            continue
        prev = None
        if it > 0:
            prev = (output_file if output_file is not None else np.zeros_like(gts)).astype(np.uint8)
            for ind, cls in enumerate(sorted(classes)):
                seg_c, gt_c = (prev == cls).astype(np.uint8), (gts == cls).astype(np.uint8)
                err = (seg_c != gt_c).astype(np.uint8)
                if err.sum() == 0:
                    order[ind].append(None)
                    continue
                comps = cc3d.connected_components(err, connectivity=26)
                sizes = np.bincount(comps.flat)
                sizes[0] = 0
                largest = comps == np.argmax(sizes)
                center = o_sample(o_edt(largest, threshold))
                kind = "fg" if gt_c[center] else "bg"
                clicks[ind][kind].append(center)
                order[ind].append(kind)
        ordered = {}
        for ind, cls in enumerate(classes):
            fg, bg = iter(clicks[ind]["fg"]), iter(clicks[ind]["bg"])
            ordered[cls] = [(next(fg), True) if k == "fg" else (next(bg), False) for k in order[ind] if k]
        try:
            out = model(it, has_boxes, ordered)
        except RuntimeError:  # the container crashed: it wrote no output file
            out = None
        if out is not None:
            output_file = out
        segs = output_file if output_file is not None else np.zeros_like(gts).astype(np.uint8)
        d, n = o_scores(gts, segs, spacing_as_stored)
        dscs.append(d)
        nsds.append(n)
    return {"dsc": dscs, "nsd": nsds, "clicks": ordered, "counted": output_file is not None,
            "dsc_auc": integrate.cumulative_trapezoid(np.array(dscs[-5:]), np.arange(5))[-1],
            "nsd_auc": integrate.cumulative_trapezoid(np.array(nsds[-5:]), np.arange(5))[-1]}


def o_box(mask: np.ndarray) -> dict:
    """get_boxes.py's mask3D_to_bbox without the random perturbation."""
    z, y, x = np.where(mask > 0)
    zs = np.unique(z)
    mid = zs[len(zs) // 2]
    yy, xx = np.where(mask[mid] > 0)
    return {"z_min": z.min(), "z_max": z.max(), "z_mid": mid, "z_mid_x_min": xx.min(), "z_mid_y_min": yy.min(),
            "z_mid_x_max": xx.max(), "z_mid_y_max": yy.max()}


# ------------------------------------------------------------------------------------------ a deterministic model
class BallFixer:
    """Stateless, deterministic segmenter: a fixed imperfect first answer (or nothing without a box), then each click
    sets the voxels of a ball (radius ``r`` voxels) around it to the truth of its class - imperfect progress, so
    NSD moves. ``label_offset`` adds 256 to one class's output label (a model answering in int32 beyond uint8);
    ``fail_at`` lists steps that give no prediction (``None``) and ``raise_at`` steps that raise."""

    def __init__(self, gts: np.ndarray, first: np.ndarray, r: int = 3, label_offset: dict | None = None,
                 fail_at: tuple = (), raise_at: tuple = ()):
        self.gts, self.first, self.r = gts, first, r
        self.label_offset = label_offset or {}
        self.fail_at, self.raise_at = fail_at, raise_at
        self.grid = np.indices(gts.shape)

    def __call__(self, step: int, has_box: bool, clicks: dict) -> np.ndarray | None:
        if step in self.raise_at:
            raise RuntimeError("simulated model crash")
        if step in self.fail_at:
            return None
        out = (self.first if has_box else np.zeros_like(self.gts)).astype(np.int32)
        for cls in sorted(clicks):
            for (k, j, i), _positive in clicks[cls]:
                g = self.grid
                ball = (g[0] - k) ** 2 + (g[1] - j) ** 2 + (g[2] - i) ** 2 <= self.r ** 2
                truth = self.gts == cls
                out[ball & truth] = cls
                out[ball & ~truth & (out == cls)] = 0
        for cls, off in self.label_offset.items():
            out[out == cls] = cls + off
        return out

    def as_project_segmenter(self, calls: list, has_boxes: bool):
        """The same model behind the project's InteractiveSegmenter interface; ``calls`` records what it saw."""
        def seg(image, prompts, previous):  # noqa: ANN001, ANN202
            calls.append((None if previous is None else previous.dtype,
                          {lab: cp.box is not None for lab, cp in prompts.items()}))
            step = len(calls) - 1 + (0 if has_boxes else 1)
            return self(step, has_boxes, {lab: [(c.kji, c.positive) for c in cp.clicks] for lab, cp in prompts.items()})
        return seg


# ------------------------------------------------------------------------------------------ cases
def multi_class_case(seed: int, shape: tuple, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth: ellipsoids (labels 1..n); first answer: dilated, shifted, holed versions plus a false blob."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    gts = np.zeros(shape, np.uint8)
    first = np.zeros(shape, np.uint8)
    for lab in range(1, n_classes + 1):
        c = [rng.uniform(0.3, 0.7) * n for n in shape]
        r = [rng.uniform(0.15, 0.25) * n for n in shape]
        ell = ((k - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((i - c[2]) / r[2]) ** 2 <= 1
        gts[ell & (gts == 0)] = lab
        guess = ndimage.binary_dilation(ell, iterations=lab % 2 + 1) if lab != 2 else np.roll(ell, 2, axis=2)
        if lab == 3:
            guess = guess & ~(np.abs(k - c[0]) < 2)  # a missing slab
        first[guess & (first == 0)] = lab
    first[1:3, 1:5, 1:6] = 1  # a false-positive blob in a corner
    return gts, first


def project_run(gts, first, spacing_stored, has_boxes: bool, **kw) -> tuple:
    model_kw = {k: kw.pop(k) for k in ("label_offset", "fail_at", "raise_at") if k in kw}
    model = BallFixer(gts, first, **model_kw)
    boxes = {c: Box3D.from_challenge(o_box(gts == c)) for c in o_classes(gts)} if has_boxes else None
    case = InteractiveCase("case", Volume(np.zeros(gts.shape, np.int16), spacing=spacing_stored), gts, boxes=boxes)
    calls: list = []
    use_boxes = kw.get("use_boxes", True)
    res = run_case(case, model.as_project_segmenter(calls, has_boxes and use_boxes), **kw)
    return res, calls, model


def assert_same(res, ref) -> None:
    np.testing.assert_allclose(res.dsc, ref["dsc"], rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(res.nsd, ref["nsd"], rtol=0, atol=1e-12, equal_nan=True)
    assert {lab: [(c.kji, c.positive) for c in cl] for lab, cl in res.clicks.items()} == ref["clicks"]
    np.testing.assert_allclose([res.dsc_auc, res.nsd_auc], [ref["dsc_auc"], ref["nsd_auc"]], rtol=0, atol=1e-12,
                               equal_nan=True)
    np.testing.assert_allclose([res.dsc_final, res.nsd_final], [ref["dsc"][-1], ref["nsd"][-1]], rtol=0,
                               atol=1e-12, equal_nan=True)
    assert res.counted == ref["counted"]


CASES = [  # (name, seed, shape (z, y, x), classes, spacing as stored (x, y, z), boxes)
    ("ct_3class_boxes", 1, (18, 40, 34), 3, (0.8, 0.6, 2.5), True),
    ("mr_2class_no_boxes", 2, (14, 36, 40), 2, (1.2, 0.9, 4.0), False),
    ("pet_1class_boxes", 3, (20, 24, 28), 1, (4.0, 4.0, 3.0), True),
]


@pytest.mark.parametrize("name,seed,shape,n_classes,spacing,has_boxes", CASES, ids=[c[0] for c in CASES])
def test_matches_the_official_script_per_step(name, seed, shape, n_classes, spacing, has_boxes) -> None:
    gts, first = multi_class_case(seed, shape, n_classes)
    res, calls, model = project_run(gts, first, spacing, has_boxes)
    ref = oracle_run(gts, spacing, has_boxes, model)
    assert_same(res, ref)
    # non-trivial: NSD computed (DSC > 0.2) and not perfect at most steps, clicks of both kinds
    assert sum(0 < n < 1 for n in res.nsd) >= 3
    assert all(len(cl) >= 3 for cl in res.clicks.values())
    if not has_boxes:  # the box step: not called, scored 0; the first call sees an empty uint8 prediction
        assert res.dsc[0] == 0 and res.nsd[0] == 0 and res.time_per_step_s[0] == 0
        assert len(calls) == 5 and calls[0][0] == np.uint8 and not any(calls[0][1].values())
    else:
        assert len(calls) == 6 and calls[0][0] is None and all(calls[0][1].values())


def test_default_spacing_is_the_official_one_and_the_physical_flag_reverses_it() -> None:
    gts, first = multi_class_case(1, (18, 40, 34), 3)
    spacing = (0.8, 0.6, 2.5)  # stored x, y, z
    official, _, model = project_run(gts, first, spacing, True)
    physical, _, _ = project_run(gts, first, spacing, True, spacing_mode="physical")
    ref_physical = oracle_run(gts, spacing[::-1], True, model)  # the script fed a (z, y, x)-ordered spacing
    assert_same(physical, ref_physical)
    assert official.spacing_mode == "official"
    assert max(abs(a - b) for a, b in zip(official.nsd, physical.nsd)) > 0.01  # the two readings really differ
    assert official.dsc == physical.dsc


def test_large_error_region_uses_the_half_resolution_transform() -> None:
    shape = (26, 44, 44)
    gts = np.zeros(shape, np.uint8)
    k, j, i = np.indices(shape)
    gts[((k - 13) / 9.5) ** 2 + ((j - 21) / 17.3) ** 2 + ((i - 23) / 15.1) ** 2 <= 1] = 1
    first = np.zeros_like(gts)
    first[gts.astype(bool) & (i < 12)] = 1  # most of the object missed: one big error component
    spacing = (0.9, 0.9, 2.0)
    threshold = 3000  # the padded crops here have ~16000 voxels
    low, _, model = project_run(gts, first, spacing, True, downsample_voxels=threshold)
    assert_same(low, oracle_run(gts, spacing, True, model, threshold=threshold))
    full, _, _ = project_run(gts, first, spacing, True)
    assert_same(full, oracle_run(gts, spacing, True, model))
    assert low.clicks[1][0] != full.clicks[1][0]  # the branch changes where the click lands


def test_downsampling_threshold_is_the_scripts_and_strict() -> None:
    assert EDT_DOWNSAMPLE_VOXELS == 60_000_000
    region = np.zeros((12, 20, 22), bool)
    region[1:10, 2:17, 3:14] = True
    region[5, 17:19, 3:14] = True
    # padded crop: (9+2*2, 17+2*4, 11+2*2) = (13, 25, 15) = 4875 voxels
    at = deepest_point(region, downsample_voxels=4875)
    below = deepest_point(region, downsample_voxels=4874)
    assert at == o_sample(o_edt(region, 10 ** 9))
    assert below == o_sample(o_edt(region, 0))
    assert at != below


def test_edge_cases_uint8_readback_failures_and_stale_outputs() -> None:
    gts, first = multi_class_case(4, (16, 32, 30), 2)
    spacing = (0.7, 0.7, 3.0)
    # class 2 answered as label 258: scored as missing (DSC 0 for it) but clicked as class 2 (uint8 readback);
    # step 0 raises (-> zeros), step 3 gives nothing (-> the stale step-2 prediction)
    res, calls, model = project_run(gts, first, spacing, True, label_offset={2: 256}, raise_at=(0,), fail_at=(3,))
    ref = oracle_run(gts, spacing, True, model)
    assert_same(res, ref)
    assert res.failed_steps == [0, 3] and res.counted
    assert res.dsc[0] == 0 and res.dsc[3] == res.dsc[2] and res.nsd[3] == res.nsd[2]
    # every step is missing: scored from zeros and the case is not counted (the script leaves it out of its CSV)
    res, _, model = project_run(gts, first, spacing, True, fail_at=tuple(range(6)))
    assert_same(res, oracle_run(gts, spacing, True, model))
    assert not res.counted and res.dsc == [0.0] * 6


def test_ground_truth_without_classes_scores_nan_as_the_script() -> None:
    gts = np.zeros((6, 12, 12), np.uint8)
    res, _, model = project_run(gts, gts.copy(), (1.0, 1.0, 1.0), True)
    ref = oracle_run(gts, (1.0, 1.0, 1.0), True, model)
    assert_same(res, ref)
    assert np.isnan(res.dsc_final) and np.isnan(res.dsc_auc) and res.nsd_auc == 0.0


def test_box_middle_slice_is_get_boxes_on_a_lopsided_mask() -> None:
    m = np.zeros((12, 20, 20), bool)
    m[2:9, 5:7, 5:7] = True  # 7 thin slices
    m[9, 2:18, 2:18] = True  # one fat slice holding most voxels
    ref = o_box(m)
    assert box_from_mask(m).to_challenge() == {k: int(v) for k, v in ref.items()}
    z = np.nonzero(m)[0]
    assert ref["z_mid"] == 6 and z[len(z) // 2] == 9  # slices 2..9 -> 6; the middle voxel's slice would be 9


def test_file_driven_boxes(tmp_path) -> None:  # noqa: ANN001
    gts, first = multi_class_case(5, (12, 24, 24), 2)
    with_boxes, without = tmp_path / "a.npz", tmp_path / "b.npz"
    boxes = [o_box(gts == c) for c in (1, 2)]
    np.savez(with_boxes, imgs=np.zeros(gts.shape, np.int16), gts=gts, spacing=np.array([1.0, 1.0, 2.0]),
             boxes=np.array(boxes, dtype=object))
    np.savez(without, imgs=np.zeros(gts.shape, np.int16), gts=gts, spacing=np.array([1.0, 1.0, 2.0]))
    assert read_challenge_case(without).boxes is None
    case = read_challenge_case(with_boxes)
    assert case.boxes is not None and case.boxes[2].to_challenge() == {k: int(v) for k, v in boxes[1].items()}
    model = BallFixer(gts, first)
    calls: list = []
    no_box = run_case(case, model.as_project_segmenter(calls, False), use_boxes=False)  # --no-box on a file with boxes
    assert_same(no_box, oracle_run(gts, (1.0, 1.0, 2.0), False, model))
    calls.clear()
    built = run_case(read_challenge_case(without), model.as_project_segmenter(calls, True), boxes_from_gt=True)
    assert calls[0][1] == {1: True, 2: True}
    assert_same(built, oracle_run(gts, (1.0, 1.0, 2.0), True, model))


def test_surface_dice_matches_the_reference_bit_for_bit_and_counts_the_tolerance_itself() -> None:
    rng = np.random.default_rng(11)
    for _ in range(12):
        shape = tuple(int(n) for n in rng.integers(5, 24, 3))
        a = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
        b = ndimage.binary_dilation(rng.random(shape) > 0.97, iterations=2)
        sp = tuple(rng.uniform(0.3, 3.0, 3))
        assert surface_dice(a, b, sp, 1.5) == o_nsd(a, b, sp, 1.5)
    # two slabs whose faces are exactly 2.0 mm apart (4 corners x 0.5 mm): "<=" keeps them, "<" would not
    a = np.zeros((10, 12, 12), bool)
    b = np.zeros_like(a)
    a[2:6, 2:10, 2:10] = True
    b[2:10, 2:10, 2:10] = True
    sp = (0.5, 1.0, 1.0)
    at = surface_dice(a, b, sp, 2.0)
    assert at == o_nsd(a, b, sp, 2.0)
    assert at > surface_dice(a, b, sp, np.nextafter(2.0, 0)) + 0.05
    assert surface_dice(a, np.zeros_like(a), sp, 2.0) == 0.0


def test_classes_are_the_sorted_values_without_the_first_and_empty_dice_is_nan() -> None:
    from OncoSegLib.evaluation.click_protocol import challenge_classes, challenge_dice, summarize

    gts = np.ones((8, 16, 16), np.uint8)  # no background voxel: the script still drops the first value (1)
    gts[2:6, 4:12, 4:12] = 2
    assert challenge_classes(gts) == o_classes(gts) == [2]
    first = gts.copy()
    first[2:6, 4:12, 4:7] = 1
    res, _, model = project_run(gts, first, (1.0, 1.0, 2.0), True)
    assert_same(res, oracle_run(gts, (1.0, 1.0, 2.0), True, model))
    assert np.isnan(challenge_dice(np.zeros(4, bool), np.zeros(4, bool)))
    # a case with no prediction at all is left out of the means; NaN values are skipped
    failed, _, _ = project_run(gts, first, (1.0, 1.0, 2.0), True, fail_at=tuple(range(6)))
    empty, _, _ = project_run(np.zeros_like(gts), first, (1.0, 1.0, 2.0), True)
    summary = summarize([res, failed, empty])
    assert summary["n_cases"] == 2 and summary["n_not_counted"] == 1 and summary["n_failed_steps"] == 6
    assert summary["dsc_final"] == res.dsc_final and summary["nsd_auc"] == (res.nsd_auc + 0.0) / 2
