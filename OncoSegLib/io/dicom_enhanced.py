"""Read an enhanced (multi-frame) DICOM image — Enhanced CT / MR / PET, legacy-converted enhanced — into a Volume.

An enhanced image keeps its geometry in functional groups, per frame (PerFrameFunctionalGroupsSequence) or shared
(SharedFunctionalGroupsSequence): PlanePositionSequence (ImagePositionPatient, LPS mm of the centre of pixel (0, 0)
of the frame), PlaneOrientationSequence (ImageOrientationPatient), PixelMeasuresSequence (PixelSpacing [row,
column] mm, SpacingBetweenSlices) and PixelValueTransformationSequence (RescaleSlope / RescaleIntercept, possibly
different per frame). The volume is built by highdicom (``Image.get_volume``: frames sorted by position along the
normal, refused unless they form a regular grid, per-frame rescale applied); this module checks the values it
relies on first (finite, positive spacing) and converts highdicom's (slice, row, column) affine into OncoSeg's frames:
``array[k, j, i]``, direction columns (i, j, k) in LPS with k along +normal (row x column), as
:func:`OncoSegLib.io.dicom_series.read_dicom_series` returns a classic series.

Values are the modality transform only (HU for CT, the stored PET units for PET), never a real-world value map or
VOI window — the same values the classic reader returns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

_GEOMETRY_SEQUENCES = (("PlanePositionSequence", "ImagePositionPatient", 3),
                       ("PlaneOrientationSequence", "ImageOrientationPatient", 6),
                       ("PixelMeasuresSequence", "PixelSpacing", 2))


def is_enhanced(ds: Dataset) -> bool:
    """True when ``ds`` carries functional groups (an enhanced / multi-frame image with per-frame geometry)."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def has_plane_positions(ds: Dataset) -> bool:
    """True when the functional groups of ``ds`` place its frames in patient space (PlanePositionSequence)."""
    groups = list(ds.get("SharedFunctionalGroupsSequence", []))[:1] + list(ds.get("PerFrameFunctionalGroupsSequence",
                                                                                  []))[:1]
    return any("PlanePositionSequence" in g for g in groups)


def _group_value(ds: Dataset, frame: Dataset | None, seq: str, keyword: str) -> list | None:
    for group in (frame, *list(ds.get("SharedFunctionalGroupsSequence", []))[:1]):
        if group is not None and seq in group and len(group[seq].value):
            value = group[seq].value[0].get(keyword)
            if value is not None:
                return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return None


def check_frame_geometry(ds: Dataset, name: str) -> int:
    """Check the position, orientation and pixel spacing of every frame; returns the number of frames.

    Raises InputError when a frame lacks one of them, or a value is not a finite number, or a pixel spacing or an
    orientation axis is not positive/non-zero (a NaN or zero would give silently wrong geometry).
    """
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if per_frame and len(per_frame) != n:
        raise InputError(f"{name}: {len(per_frame)} per-frame functional groups for {n} frames",
                         "the file is damaged or truncated")
    for f in range(n):
        frame = per_frame[f] if per_frame else None
        for seq, keyword, size in _GEOMETRY_SEQUENCES:
            raw = _group_value(ds, frame, seq, keyword)
            if raw is None:
                raise InputError(f"{name}: frame {f + 1} has no {keyword} ({seq})",
                                 "the enhanced image has no complete patient geometry; re-export it")
            try:
                vals = np.array([float(v) for v in raw], dtype=float)
            except (TypeError, ValueError):
                raise InputError(f"{name}: frame {f + 1} has a malformed {keyword}") from None
            if vals.size != size or not np.all(np.isfinite(vals)):
                raise InputError(f"{name}: frame {f + 1} has an invalid {keyword} {raw} (NaN, infinite or wrong "
                                 "count)", "the geometry of this file cannot be trusted; re-export it")
            if keyword == "PixelSpacing" and not np.all(vals > 0):
                raise InputError(f"{name}: frame {f + 1} has a non-positive PixelSpacing {raw}")
            if keyword == "ImageOrientationPatient" and (np.linalg.norm(vals[:3]) < 1e-6
                                                         or np.linalg.norm(vals[3:]) < 1e-6):
                raise InputError(f"{name}: frame {f + 1} has an ImageOrientationPatient with a zero-length axis")
    return n


def read_enhanced(path: Path, metadata: dict) -> Volume:
    """Read the enhanced image file ``path`` into a Volume (k along +normal, LPS, float32 modality values).

    ``metadata`` (series UIDs, modality, ...) is copied into the volume's metadata, plus ``enhanced=True`` and
    ``n_frames``. Raises InputError when the file cannot be read, its frame geometry is missing or not finite, or
    its frames do not form one regular 3D grid (several stacks, echoes or time points, gaps, tilt).
    """
    name = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise InputError(f"corrupt or unreadable DICOM file {name}: {type(exc).__name__}: {exc}") from None
    n = check_frame_geometry(ds, name)
    import highdicom as hd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hvol = hd.Image.from_dataset(ds, copy=False).get_volume(apply_real_world_transform=False,
                                                                   apply_modality_transform=None,
                                                                   apply_voi_transform=False,
                                                                   dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - highdicom raises RuntimeError/ValueError/... for non-grid frames
        raise InputError(f"{name}: the {n} frames of this enhanced image do not form one regular 3D grid "
                         f"({type(exc).__name__}: {exc})",
                         "it may hold several stacks, echoes or time points; split it or convert it to single-frame "
                         "files (emf2sf) first") from None
    affine = np.asarray(hvol.affine, dtype=float)  # maps (slice, row, column, 1) to LPS mm
    array = np.asarray(hvol.array, dtype=np.float32)
    if array.ndim != 3:
        raise InputError(f"{name}: enhanced image with {array.ndim}-D frames (colour?) is not supported",
                         "convert it to single-frame grey images first")
    m = affine[:3, :3][:, [2, 1, 0]]  # columns (i, j, k) = (column, row, slice) index axes
    spacing = np.linalg.norm(m, axis=0)
    origin = affine[:3, 3].copy()
    if not (np.all(np.isfinite(affine)) and np.all(spacing > 0)):
        raise InputError(f"{name}: degenerate frame geometry (spacing {spacing.tolist()} mm)")
    direction = m / spacing
    if array.shape[0] > 1 and float(np.dot(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2])) < 0:
        # highdicom may stack against the normal: flip so that k runs along row x column, as for classic series
        origin = origin + (array.shape[0] - 1) * m[:, 2]
        direction[:, 2] = -direction[:, 2]
        array = np.ascontiguousarray(array[::-1])
    if array.shape[0] == 1:
        direction[:, 2] = np.cross(direction[:, 0], direction[:, 1])
    md = dict(metadata)
    md.update({"enhanced": True, "n_frames": n, "files": [name],
               "sop_instance_uids": [str(ds.get("SOPInstanceUID", ""))]})
    modality = md.get("Modality") or None
    return Volume(array, spacing=tuple(float(s) for s in spacing), origin=tuple(float(o) for o in origin),
                  direction=direction, modality=modality, metadata=md)


__all__ = ["is_enhanced", "has_plane_positions", "check_frame_geometry", "read_enhanced"]
