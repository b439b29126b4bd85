"""The one rule for overlapping objects in a label map, used by every writer of a single label map.

Rule: objects are written in order (label 1, 2, ... N: creation order in a session, protocol order in autoseg,
segment order in the Slicer module) and **a later object wins** where masks overlap: a voxel holds the highest
label whose mask contains it. So a lesion segmented after its organ stays visible inside the organ. Formats that
keep overlaps (RTSTRUCT and DICOM SEG from an (N, K, J, I) stack, Slicer segmentations) are not affected.

Hand-written (a few lines of numpy): no library offers this rule with the label dtype choice below.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from OncoSegLib.errors import InputError

OVERLAP_RULE = "later object wins: a voxel in several masks gets the highest label (the object listed last)"


def label_dtype(n_labels: int) -> np.dtype:
    """uint8 up to 255 labels, else uint16 (65535 at most)."""
    if n_labels > 65535:
        raise InputError(f"{n_labels} objects do not fit a uint16 label map", hint="write at most 65535 objects")
    return np.dtype(np.uint8 if n_labels <= 255 else np.uint16)


def label_map_from_masks(masks: Iterable[np.ndarray], shape_kji: Sequence[int] | None = None,
                         labels: Sequence[int] | None = None) -> np.ndarray:
    """One (K, J, I) label map from boolean masks given in object order (later objects win, see ``OVERLAP_RULE``).

    Args:
        masks: (K, J, I) boolean masks on one voxel grid, in object order.
        shape_kji: the grid shape; needed when ``masks`` may be empty.
        labels: the label of each mask (default 1, 2, ...); must be positive.
    Returns:
        uint8 (up to 255 labels) or uint16 array, 0 = background.
    """
    mask_list = [np.asarray(m, dtype=bool) for m in masks]
    values = list(range(1, len(mask_list) + 1)) if labels is None else [int(v) for v in labels]
    if len(values) != len(mask_list):
        raise InputError(f"{len(mask_list)} masks but {len(values)} labels")
    if any(v <= 0 for v in values):
        raise InputError("labels must be positive (0 is background)")
    if shape_kji is None:
        if not mask_list:
            raise InputError("no masks and no grid shape given")
        shape_kji = mask_list[0].shape
    shape = tuple(int(n) for n in shape_kji)
    out = np.zeros(shape, dtype=label_dtype(max(values, default=0)))
    for value, m in zip(values, mask_list):
        if m.shape != shape:
            raise InputError(f"mask of shape {m.shape} is not on the grid {shape}")
        out[m] = value
    return out


__all__ = ["OVERLAP_RULE", "label_dtype", "label_map_from_masks"]
