"""Decisions added by the semantic audit of the Slicer module against Slicer's source.

- region writes into a segment that shares its labelmap layer (merge modes, write order),
- markups preview points are not prompts,
- DICOM tags for SlicerRT's exporter (what Slicer's export dialog would set),
- the "Flag below IoU" setting, undo owner.

The shared-layer model below is a transcription of vtkSegmentationModifier::AppendLabelmapToSegment
(Slicer/Slicer Libs/vtkSegmentationCore/vtkSegmentationModifier.cxx, commit 583e9b37) for one layer holding several
segments as label values: it is how Slicer behaves, written down so that the module's choice of merge modes is
checked against it (the real C++ cannot run here).
"""

import numpy as np
import pytest

from OncoSegLib.slicer_support import core as C
from OncoSegLib.slicer_support import dicom_tags as T
from OncoSegLib.slicer_support.geometry import extent_from_bbox
from OncoSegLib.slicer_support.merge import REGION_WRITE_MODES, UndoStack, plan_segment_write, write_order
from OncoSegLib.slicer_support.prompts import defined_indices


def _slicer_write(layer, label, values, extent, mode):
    """SetBinaryLabelmapToSegment on a segment (``label``) sharing ``layer`` with others; extent (i0,i1,j0,j1,k0,k1)."""
    i0, i1, j0, j1, k0, k1 = extent
    box = (slice(k0, k1 + 1), slice(j0, j1 + 1), slice(i0, i1 + 1))
    sub = layer[box]
    mod = np.asarray(values) > 0
    if mode == "MODE_REPLACE":  # shared layer: ClearSegment(segment) over the WHOLE layer, then mask mode
        layer[layer == label] = 0
        sub[mod] = label
    elif mode == "MODE_MERGE_MIN":  # modifier 0 clears this segment's voxels (others masked out), inside extent
        sub[(~mod) & (sub == label)] = 0
    elif mode == "MODE_MERGE_MASK":  # modifier 1 sets the label inside extent
        sub[mod] = label
    else:
        raise AssertionError(mode)


def _layer():
    layer = np.zeros((4, 10, 12), np.int16)
    layer[1:3, 1:3, 1:3] = 1   # segment A (label 1), first blob
    layer[1:3, 6:9, 8:11] = 1  # segment A, second blob far away
    layer[0, 0, 5:8] = 2       # segment B (label 2) in the same layer
    return layer


def _region_update(layer):
    old = layer == 1
    new = old.copy()
    new[1:3, 1:4, 1:4] = True  # the AI grows the first blob only
    plan = plan_segment_write("A", old, new, {"B": layer == 2}, "protect")
    (update,) = plan.updates
    return new, update


def test_region_write_modes_keep_voxels_outside_the_box_and_other_segments():
    layer = _layer()
    new, update = _region_update(layer)
    for mode in REGION_WRITE_MODES:
        _slicer_write(layer, 1, update.values, extent_from_bbox(update.bbox), mode)
    np.testing.assert_array_equal(layer == 1, new)  # second blob (outside the update box) kept
    np.testing.assert_array_equal(layer == 2, _layer() == 2)


def test_replace_mode_would_lose_the_rest_of_the_segment():
    """Why MODE_REPLACE is not used: on a shared layer it clears the whole segment before writing the box."""
    layer = _layer()
    new, update = _region_update(layer)
    _slicer_write(layer, 1, update.values, extent_from_bbox(update.bbox), "MODE_REPLACE")
    assert (layer == 1).sum() < new.sum() and not (layer[1:3, 6:9, 8:11] == 1).any()


def test_region_write_removes_voxels_too():
    layer = _layer()
    old = layer == 1
    new = old.copy()
    new[1:3, 1:3, 1:3] = False  # the AI drops the first blob
    (update,) = plan_segment_write("A", old, new, {"B": layer == 2}, "protect").updates
    for mode in REGION_WRITE_MODES:
        _slicer_write(layer, 1, update.values, extent_from_bbox(update.bbox), mode)
    np.testing.assert_array_equal(layer == 1, new)


def test_write_order_puts_the_edited_segment_last():
    layer = _layer()
    old = layer == 1
    new = old | (layer == 2)  # takes B's voxels
    plan = plan_segment_write("A", old, new, {"B": layer == 2}, "overwrite")
    assert [u.segment_id for u in plan.updates] == ["A", "B"]
    assert [u.segment_id for u in write_order(plan.updates, "A")] == ["B", "A"]


def test_preview_and_undefined_control_points_are_not_prompts():
    # vtkMRMLMarkupsNode: PositionUndefined=0, PositionPreview=1, PositionDefined=2, PositionMissing=3
    assert defined_indices([2, 2, 1], 2) == [0, 1]
    assert defined_indices([0, 2, 3, 2], 2) == [1, 3]
    assert defined_indices([], 2) == []


def test_dicom_tags_like_the_export_dialog():
    patient = {"PatientName": "Doe^Jane", "PatientID": "P1", "PatientSex": "", "PatientBirthDate": None}
    study = {"StudyInstanceUID": "1.2.3", "StudyDate": "20260101", "StudyID": ""}
    series = {"Modality": "MR", "SeriesDescription": "T1 post", "Manufacturer": ""}
    offered = {"Modality": "CT", "Manufacturer": "Unknown manufacturer", "SeriesDescription": "No series description",
               "SeriesNumber": "1"}
    tags = T.exportable_tags(patient, study, series, offered)
    assert tags == {"PatientName": "Doe^Jane", "PatientID": "P1", "StudyInstanceUID": "1.2.3",
                    "StudyDate": "20260101", "Modality": "MR", "SeriesDescription": "T1 post"}
    # a series attribute the plugin does not offer is not an export parameter
    assert "SeriesNumber" not in T.exportable_tags({}, {}, {"SeriesNumber": "7"}, {"Modality": "RTSTRUCT"})
    assert T.attribute_name("PatientID") == "DICOM.PatientID"


@pytest.mark.parametrize("iou,engine_low,threshold,expected", [
    (0.6, False, 0.5, False), (0.6, False, 0.8, True), (0.9, True, 0.5, True), (None, None, 0.9, False)])
def test_low_confidence_uses_the_user_threshold_and_the_engine_flag(iou, engine_low, threshold, expected):
    m = np.zeros((2, 3, 3), bool)
    m[0, 1, 1] = True
    r = C.measure("x", m, (1.0, 1.0, 1.0), {"iou": iou, "low": engine_low}, low_threshold=threshold)
    assert r.low is expected


def test_undo_records_keep_their_owner():
    s = UndoStack()
    layer = _layer()
    _, update = _region_update(layer)
    s.push("a", [update], owner="segmentation 1")
    s.push("b", [update], owner="segmentation 2")
    assert s.peek_owner() == "segmentation 2" and s.pop()[0] == "b"
    assert s.peek_owner() == "segmentation 1"
    s.pop()
    assert s.peek_owner() is None
