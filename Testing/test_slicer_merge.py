"""Merge policy of AI masks into segments / label maps, changed-region writes, and undo."""

import numpy as np
import pytest

from OncoSegLib.errors import InputError
from OncoSegLib.slicer_support.merge import (UndoStack, apply_updates, merge_into_label_map, plan_segment_write)


def _scene(seed=0, shape=(6, 9, 11)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape) < 0.2
    others = {"liver": rng.random(shape) < 0.3, "kidney": rng.random(shape) < 0.1}
    new = np.zeros(shape, bool)
    new[1:4, 2:7, 3:9] = True
    return target, others, new


def _arrays(target, others):
    d = {"t": target.astype(np.uint8).copy()}
    d.update({k: v.astype(np.uint8).copy() for k, v in others.items()})
    return d


@pytest.mark.parametrize("policy", ["protect", "overwrite", "overlap"])
def test_policies_against_voxelwise_oracle_and_exact_undo(policy):
    target, others, new = _scene()
    plan = plan_segment_write("t", target, new, others, policy)
    arrays = _arrays(target, others)
    before = {k: v.copy() for k, v in arrays.items()}
    apply_updates(arrays, plan.updates)
    union = others["liver"] | others["kidney"]
    # oracle written voxel by voxel
    exp_t = np.zeros_like(new)
    exp_others = {k: v.copy() for k, v in others.items()}
    for idx in np.ndindex(new.shape):
        if policy == "protect":
            exp_t[idx] = new[idx] and not union[idx]
        else:
            exp_t[idx] = new[idx]
            if policy == "overwrite" and new[idx]:
                for k in exp_others:
                    exp_others[k][idx] = False
    assert np.array_equal(arrays["t"].astype(bool), exp_t)
    for k in others:
        assert np.array_equal(arrays[k].astype(bool), exp_others[k]), k
    if policy == "protect":
        assert plan.protected_voxels == int((new & union).sum()) > 0
    if policy == "overwrite":
        assert plan.taken_voxels == int((new & others["liver"]).sum() + (new & others["kidney"]).sum())
    # only changed voxels are inside the written boxes, and the boxes are tight
    for u in plan.updates:
        changed = before[u.segment_id].astype(bool) != arrays[u.segment_id].astype(bool)
        outside = changed.copy()
        outside[u.bbox] = False
        assert not outside.any()
        for ax in range(3):
            assert changed[u.bbox].any(axis=tuple(a for a in range(3) if a != ax))[[0, -1]].all()
    # undo restores everything exactly
    apply_updates(arrays, plan.undo)
    for k in arrays:
        assert np.array_equal(arrays[k], before[k]), k


def test_no_change_means_no_update_and_shape_mismatch_is_an_error():
    target, others, _ = _scene()
    same = plan_segment_write("t", target, target, {}, "overlap")
    assert same.updates == [] and same.undo == [] and same.changed_voxels == 0
    with pytest.raises(InputError, match="shapes differ"):
        plan_segment_write("t", target, target[:-1], {})
    with pytest.raises(InputError, match="policy"):
        plan_segment_write("t", target, target, {}, "maybe")


def test_label_map_merge():
    labels = np.array([[[0, 1, 1, 2, 2, 0, 3]]])
    mask = np.array([[[1, 1, 0, 1, 0, 0, 1]]], bool)
    got = merge_into_label_map(labels, mask, 3, "protect")
    assert got.tolist() == [[[3, 1, 1, 2, 2, 0, 3]]]  # other labels keep their voxels
    got = merge_into_label_map(labels, mask, 3, "overwrite")
    assert got.tolist() == [[[3, 3, 1, 3, 2, 0, 3]]]
    labels2 = np.array([[[3, 3, 0, 0]]])
    m2 = np.array([[[0, 1, 1, 0]]], bool)
    assert merge_into_label_map(labels2, m2, 3).tolist() == [[[0, 3, 3, 0]]]
    assert merge_into_label_map(labels2, m2, 3, replace_existing=False).tolist() == [[[3, 3, 3, 0]]]
    assert labels.tolist() == [[[0, 1, 1, 2, 2, 0, 3]]]  # input untouched
    with pytest.raises(InputError):
        merge_into_label_map(labels, mask, 3, "overlap")
    with pytest.raises(InputError):
        merge_into_label_map(labels, mask, 0)


def test_undo_stack_bounds():
    target, others, new = _scene()
    plan = plan_segment_write("t", target, new, others, "overwrite")
    s = UndoStack(max_entries=3)
    for n in range(5):
        s.push(f"edit {n}", plan.undo)
    assert len(s) == 3 and s.peek_description() == "edit 4"
    s.push("nothing", [])
    assert len(s) == 3
    small = UndoStack(max_entries=10, max_bytes=plan.undo[0].nbytes + 1)
    small.push("a", plan.undo[:1])
    small.push("b", plan.undo[:1])
    assert len(small) == 1 and small.peek_description() == "b"
    assert s.pop()[0] == "edit 4" and len(s) == 2
    s.clear()
    assert s.pop() is None
