"""Writing a new AI mask into a segment (or a label array) under an overwrite policy, with undo records.

Arrays are (K, J, I) on the input volume's grid. Policies:
- ``"protect"`` (default): the new mask never takes voxels that belong to another segment;
- ``"overwrite"``: the new mask takes them and they are removed from the other segments;
- ``"overlap"``: the new mask takes them and the other segments keep them too (segments overlap).

A plan lists region updates (segment id, (k, j, i) bounding box, new values) covering only voxels that change,
and the matching undo updates (old values in the same boxes), so the module writes the smallest region and can
restore the previous state exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.slicer_support.geometry import bounding_box_kji

POLICIES = ("protect", "overwrite", "overlap")

BBox = tuple[slice, slice, slice]


@dataclass
class RegionUpdate:
    """New (or, in an undo record, previous) binary values of one segment inside a (k, j, i) box."""

    segment_id: str
    bbox: BBox
    values: np.ndarray  # uint8 0/1, shape of the box

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


@dataclass
class MergePlan:
    """Updates to apply (target first), their undo, and counts for the status line."""

    updates: list[RegionUpdate] = field(default_factory=list)
    undo: list[RegionUpdate] = field(default_factory=list)
    changed_voxels: int = 0
    protected_voxels: int = 0  # voxels the AI wanted but another segment kept (protect policy)
    taken_voxels: int = 0  # voxels taken from other segments (overwrite policy)


def _check(policy: str, *arrays: np.ndarray) -> None:
    if policy not in POLICIES:
        raise InputError(f"unknown overwrite policy {policy!r}", hint=f"use one of {POLICIES}")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"mask shapes differ: {sorted(shapes)}", hint="all masks must be on the input volume's grid")


def _region(segment_id: str, old: np.ndarray, new: np.ndarray) -> tuple[RegionUpdate, RegionUpdate] | None:
    bbox = bounding_box_kji(old != new)
    if bbox is None:
        return None
    return (RegionUpdate(segment_id, bbox, new[bbox].astype(np.uint8)),
            RegionUpdate(segment_id, bbox, old[bbox].astype(np.uint8)))


def plan_segment_write(target_id: str, old_target: np.ndarray, new_mask: np.ndarray,
                       others: Mapping[str, np.ndarray], policy: str = "protect") -> MergePlan:
    """Plan replacing segment ``target_id`` by ``new_mask`` (the AI result for this object).

    Args:
        target_id: segment being edited.
        old_target: its current voxels (K, J, I) bool.
        new_mask: the object's new voxels (K, J, I) bool.
        others: every other segment's current voxels, by segment id.
        policy: see module docstring.
    """
    old_t = np.asarray(old_target, dtype=bool)
    new = np.asarray(new_mask, dtype=bool)
    _check(policy, old_t, new, *others.values())
    plan = MergePlan()
    final = new
    if policy == "protect" and others:
        taken = np.zeros_like(new)
        for m in others.values():
            taken |= np.asarray(m, dtype=bool)
        final = new & ~taken
        plan.protected_voxels = int(np.count_nonzero(new & taken))
    r = _region(target_id, old_t, final)
    if r is not None:
        plan.updates.append(r[0])
        plan.undo.append(r[1])
        plan.changed_voxels = int(np.count_nonzero(old_t != final))
    if policy == "overwrite":
        for sid, m in others.items():
            m = np.asarray(m, dtype=bool)
            r = _region(sid, m, m & ~final)
            if r is not None:
                plan.updates.append(r[0])
                plan.undo.append(r[1])
                plan.taken_voxels += int(np.count_nonzero(m & final))
    return plan


#: How the module writes one RegionUpdate into a Slicer segment, in order: the merge modes of
#: ``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment`` with the update's box as extent.
#: MODE_MERGE_MIN with the 0/1 values removes this segment's voxels where the value is 0 (other segments sharing the
#: labelmap layer are masked out of the operation); MODE_MERGE_MASK then adds it where the value is 1. This is the
#: Segment Editor's own "set" sequence (Slicer/Slicer Modules/Loadable/Segmentations/Logic/
#: vtkSlicerSegmentEditorLogic.cxx, ModificationModeSet). MODE_REPLACE must NOT be used for a partial box: on a
#: segment that shares its labelmap layer with others (the default for new segments) it first clears the WHOLE
#: segment (vtkSegmentationModifier::AppendLabelmapToSegment calls ClearSegment), so every voxel outside the box
#: would be lost.
REGION_WRITE_MODES: tuple[str, str] = ("MODE_MERGE_MIN", "MODE_MERGE_MASK")


def write_order(updates: list[RegionUpdate], target_id: str) -> list[RegionUpdate]:
    """The updates in the order the module applies them: other segments first, the edited segment last.

    Taking voxels away from other segments before adding them to the target keeps the target in its shared
    labelmap layer (Slicer moves a segment to a layer of its own when a write would overlap a segment it must not
    overwrite). The relative order of the other segments' updates is kept.
    """
    return [u for u in updates if u.segment_id != target_id] + [u for u in updates if u.segment_id == target_id]


def apply_updates(arrays: dict[str, np.ndarray], updates: list[RegionUpdate]) -> None:
    """Apply region updates to in-memory (K, J, I) segment arrays (tests, and the console core)."""
    for u in updates:
        arrays[u.segment_id][u.bbox] = u.values.astype(arrays[u.segment_id].dtype)


def merge_into_label_map(labels: np.ndarray, mask: np.ndarray, label: int, policy: str = "protect",
                         replace_existing: bool = True) -> np.ndarray:
    """Write binary ``mask`` as ``label`` into a (K, J, I) integer label map; returns a new array.

    ``replace_existing``: voxels of ``label`` outside ``mask`` are cleared (the mask is the object's new state);
    otherwise the mask is added to the label's voxels. "overlap" cannot be expressed in one label map and is
    rejected. Label 0 is background and cannot be written.
    """
    lab = np.asarray(labels)
    m = np.asarray(mask, dtype=bool)
    _check(policy, lab, m)
    if policy == "overlap":
        raise InputError("a label map cannot hold overlapping labels", hint="use protect or overwrite")
    if int(label) <= 0:
        raise InputError(f"label must be positive, got {label}")
    out = lab.copy()
    if replace_existing:
        out[(out == label) & ~m] = 0
    if policy == "protect":
        out[m & ((out == 0) | (out == label))] = label
    else:
        out[m] = label
    return out


class UndoStack:
    """Bounded stack of undo records (lists of RegionUpdate with previous values) for AI edits.

    ``max_entries`` and ``max_bytes`` cap memory; the oldest records are dropped first. Each record may carry an
    ``owner`` (the module stores the segmentation node the edit was written to, so Undo restores that node even
    when the user has selected another one since).
    """

    def __init__(self, max_entries: int = 20, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: list[tuple[str, list[RegionUpdate], Any]] = []

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return sum(u.nbytes for _, ups, _o in self._items for u in ups)

    def push(self, description: str, undo: list[RegionUpdate], owner: Any = None) -> None:
        if not undo:
            return
        self._items.append((description, undo, owner))
        while len(self._items) > self.max_entries or (len(self._items) > 1 and self.nbytes > self.max_bytes):
            self._items.pop(0)

    def peek_description(self) -> str | None:
        return self._items[-1][0] if self._items else None

    def peek_owner(self) -> Any:
        """The owner of the newest record (None when empty or not given)."""
        return self._items[-1][2] if self._items else None

    def pop(self) -> tuple[str, list[RegionUpdate]] | None:
        if not self._items:
            return None
        description, undo, _owner = self._items.pop()
        return description, undo

    def clear(self) -> None:
        self._items.clear()
