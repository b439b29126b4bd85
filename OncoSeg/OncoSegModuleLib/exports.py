"""Export glue: a segmentation node's label map on the volume grid, the original DICOM series, SlicerRT's exporter.

RTSTRUCT and SEG reference the ORIGINAL series the volume was loaded from (Slicer's DICOM database, or a folder);
the files themselves are written by ``OncoSegLib.slicer_support.exports`` (atomic writes).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import slicer
from slicer.i18n import tr as _

from OncoSegLib.errors import OncoSegError
from OncoSegLib.slicer_support import dicom_tags as oncoDicomTags
from OncoSegLib.slicer_support import exports as oncoExports

from .mrml_segments import ensure_segmentation, segment_array, segment_ids
from .volumes import volume_from_node


def label_map(segmentationNode: Any, volumeNode: Any) -> tuple[np.ndarray, list[str], list[tuple[int, int, int]]]:
    """(labels (K, J, I) on the volume grid, names, colours 0-255) of all segments in segment order; where
    segments overlap the later segment wins (the project's one rule, OncoSegLib.export.overlap)."""
    from OncoSegLib.export.overlap import label_map_from_masks

    ids = segment_ids(segmentationNode)
    if not ids:
        raise OncoSegError(_("The segmentation is empty"), hint=_("segment something first"))
    labels = label_map_from_masks([segment_array(segmentationNode, i, volumeNode) for i in ids])
    segments = [segmentationNode.GetSegmentation().GetSegment(i) for i in ids]
    return (labels, [s.GetName() for s in segments],
            [tuple(int(round(255 * c)) for c in s.GetColor()) for s in segments])


def dicom_series_files(volumeNode: Any) -> list[str]:
    """Files of the ORIGINAL DICOM series the volume was loaded from (empty when not from the database)."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    seriesUid = shNode.GetItemUID(shNode.GetItemByDataNode(volumeNode),
                                  slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName())
    if not seriesUid or not slicer.dicomDatabase:
        return []
    return list(slicer.dicomDatabase.filesForSeries(seriesUid))


def export(kind: str, segmentationNode: Any, volumeNode: Any, outDir: str, seriesFolder: str | None = None,
           useSlicerRT: bool = True) -> list[str]:
    """Write "rtstruct", "seg" or "nifti" into ``outDir``; returns the written paths (plus SlicerRT's RTSTRUCT
    folder ``outDir/SlicerRT`` when SlicerRT is installed and ``useSlicerRT``)."""
    labels, names, colors = label_map(segmentationNode, volumeNode)
    paths = [oncoExports.write_export(
        kind, labels, names, colors, volume_from_node(volumeNode, copyVoxels=False), outDir,
        base_name=segmentationNode.GetName(), series_folder=seriesFolder,
        series_files=() if seriesFolder or kind == "nifti" else dicom_series_files(volumeNode),
        workdir=slicer.app.temporaryPath)]
    if kind == "rtstruct" and useSlicerRT and hasattr(slicer.modules, "dicomrtimportexport"):
        paths.append(export_with_slicer_rt(segmentationNode, volumeNode, os.path.join(outDir, "SlicerRT")))
    return paths


def export_with_slicer_rt(segmentationNode: Any, volumeNode: Any, outDir: str) -> str:
    """SlicerRT's exporter: volume and segmentation exported together under one study; returns ``outDir``."""
    import DicomRtImportExportPlugin

    os.makedirs(outDir, exist_ok=True)
    ensure_segmentation(volumeNode, segmentationNode)
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    volumeItem = shNode.GetItemByDataNode(volumeNode)
    if shNode.GetItemParent(volumeItem) == shNode.GetSceneItemID():  # not in a study: make one
        studyItem = shNode.CreateStudyItem(shNode.CreateSubjectItem(shNode.GetSceneItemID(), "OncoSeg patient"),
                                           "OncoSeg study")
        shNode.SetItemParent(volumeItem, studyItem)
        shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), studyItem)
    exporter = DicomRtImportExportPlugin.DicomRtImportExportPluginClass()
    exportables = (exporter.examineForExport(volumeItem)
                   + exporter.examineForExport(shNode.GetItemByDataNode(segmentationNode)))
    # what Slicer's DICOM export dialog does before exporting: patient/study/series tags from Subject Hierarchy
    # (without it the new study has no patient name/ID and SlicerRT writes any volume as Modality CT)
    studyItem = shNode.GetItemParent(volumeItem)
    oncoDicomTags.tag_exportables(exportables, shNode.GetItemAttribute, shNode.GetItemParent(studyItem), studyItem,
                                  outDir)
    error = exporter.export(exportables)
    if error:
        raise OncoSegError(_("SlicerRT export failed: {error}").format(error=error))
    return outDir
