"""Segments <-> numpy on the volume's IJK grid: read, write a box, the output segmentation node.

Reads and writes both go through one oriented-image grid: the volume's IJK mapped into the segmentation node's
coordinates (where its labelmaps live), so they are exact under any linear transforms of the volume and the
segmentation. Arrays are (K, J, I) = numpy order of the volume's voxels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import slicer
import vtk
import vtk.util.numpy_support
from slicer.i18n import tr as _

from OncoSegLib.errors import OncoSegError
from OncoSegLib.slicer_support import geometry as oncoGeometry
from OncoSegLib.slicer_support import merge as oncoMerge

from .volumes import ijk_to_ras_matrix


def ijk_to_segmentation_matrix(volumeNode: Any, segmentationNode: Any) -> vtk.vtkMatrix4x4:
    """vtkMatrix4x4: the volume's IJK -> the segmentation node's coordinates (labelmaps live there)."""
    volumeToSegmentation = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            volumeNode.GetParentTransformNode(), segmentationNode.GetParentTransformNode(), volumeToSegmentation):
        raise OncoSegError(_("The volume and the segmentation are under different non-linear transforms"),
                           hint=_("harden the transforms or choose a segmentation under the volume's transform"))
    ijkToSegmentation = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(volumeToSegmentation, ijk_to_ras_matrix(volumeNode), ijkToSegmentation)
    return ijkToSegmentation


def segment_array(segmentationNode: Any, segmentId: str, volumeNode: Any) -> np.ndarray:
    """(K, J, I) bool voxels of one segment on the volume's grid, read on the same IJK-to-segmentation grid the
    writes use (Slicer's arrayFromSegmentBinaryLabelmap resamples through world and misreads when the volume's and
    the segmentation's transforms differ)."""
    labelmap = slicer.vtkOrientedImageData()
    reference = slicer.vtkOrientedImageData()
    reference.SetImageToWorldMatrix(ijk_to_segmentation_matrix(volumeNode, segmentationNode))
    dims = volumeNode.GetImageData().GetDimensions()  # a volume node's extent starts at 0
    reference.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    onGrid = slicer.vtkOrientedImageData()
    if not (segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
            and slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                labelmap, reference, onGrid, False, False)):
        raise OncoSegError(_("Could not read segment {id}").format(id=segmentId))
    values = vtk.util.numpy_support.vtk_to_numpy(onGrid.GetPointData().GetScalars())
    return values.reshape(dims[::-1]) != 0


def write_region(segmentationNode: Any, volumeNode: Any, update: Any) -> None:
    """Write one RegionUpdate (0/1 values in a (k, j, i) box) into its segment, touching only that box.

    Two merge operations (see ``oncoMerge.REGION_WRITE_MODES``): MODE_MERGE_MIN clears the segment's voxels
    where the value is 0, MODE_MERGE_MASK sets them where it is 1, both limited to the box. MODE_REPLACE would
    clear the whole segment when it shares a labelmap layer with other segments.
    """
    image = slicer.vtkOrientedImageData()
    image.SetImageToWorldMatrix(ijk_to_segmentation_matrix(volumeNode, segmentationNode))
    extent = oncoGeometry.extent_from_bbox(update.bbox)
    image.SetExtent(list(extent))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    values = vtk.util.numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    values[:] = update.values.astype(np.uint8).ravel()  # (k, j, i) C order = VTK's i-fastest point order
    modes = {"MODE_MERGE_MIN": slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN,
             "MODE_MERGE_MASK": slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK}
    for modeName in oncoMerge.REGION_WRITE_MODES:
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                image, segmentationNode, update.segment_id, modes[modeName], extent):
            raise OncoSegError(_("Could not write segment {id}").format(id=update.segment_id))


def ensure_segmentation(volumeNode: Any, segmentationNode: Any = None) -> Any:
    """The output segmentation: created when None (under the volume's transform), referencing the volume's
    geometry and placed under the volume's study in Subject Hierarchy."""
    if segmentationNode is None:
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                              f"{volumeNode.GetName()} OncoSeg")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    studyItem = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
    if studyItem and studyItem != shNode.GetSceneItemID():
        shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), studyItem)
    return segmentationNode


def segment_ids(segmentationNode: Any) -> list[str]:
    """Segment IDs in segment order."""
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]


def segment_names(segmentationNode: Any) -> list[str]:
    """Segment names in segment order ([] for no node)."""
    if segmentationNode is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
