"""Volume nodes -> numpy: geometry, voxels and the session key (frames: IJK, the node's RAS, world RAS)."""

from __future__ import annotations

from typing import Any

import numpy as np

import slicer
import vtk
from slicer.i18n import tr as _

from OncoSegLib.errors import OncoSegError
from OncoSegLib.slicer_support import core as oncoCore


def ijk_to_ras_matrix(volumeNode: Any) -> vtk.vtkMatrix4x4:
    """vtkMatrix4x4: the node's IJK -> its own RAS (parent transform not applied)."""
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    return ijkToRas


def volume_geometry(volumeNode: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """(RASToIJK 4x4, volume-to-world 4x4, shape (I, J, K)) of a volume node; refuses non-linear transforms."""
    rasToIjk = vtk.vtkMatrix4x4()
    volumeNode.GetRASToIJKMatrix(rasToIjk)
    toWorld = np.eye(4)
    transformNode = volumeNode.GetParentTransformNode()
    if transformNode is not None:
        if not transformNode.IsTransformToWorldLinear():
            raise OncoSegError(_("The input volume is under a non-linear transform"),
                               hint=_("harden the transform on the volume first"))
        toWorld = slicer.util.arrayFromTransformMatrix(transformNode, toWorld=True)
    dims = volumeNode.GetImageData().GetDimensions()
    return slicer.util.arrayFromVTKMatrix(rasToIjk), toWorld, tuple(int(d) for d in dims)


def volume_from_node(volumeNode: Any, copyVoxels: bool = True) -> Any:
    """OncoSeg Volume (LPS geometry of the node's own RAS, parent transform not applied) of a volume node; the
    modality comes from the Subject Hierarchy DICOM attribute when the volume was loaded from DICOM."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    tag = shNode.GetItemAttribute(shNode.GetItemByDataNode(volumeNode),
                                  slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName())
    voxels = slicer.util.arrayFromVolume(volumeNode)
    return oncoCore.volume_from_slicer(voxels.copy() if copyVoxels else voxels,
                                       slicer.util.arrayFromVTKMatrix(ijk_to_ras_matrix(volumeNode)),
                                       modality=tag or None, metadata={"node": volumeNode.GetName()})


def volume_key(volumeNode: Any) -> Any:
    """Fingerprint of the voxels and geometry the session works on: node ID, image data and its scalars'
    modified times, IJKToRAS. Not the node's own MTime, which renaming, attributes, a parent transform or
    saving change (the session, its objects and embeddings must survive those)."""
    imageData = volumeNode.GetImageData()
    scalars = imageData.GetPointData().GetScalars() if imageData is not None else None
    return oncoCore.volume_key(volumeNode.GetID(), imageData.GetMTime() if imageData is not None else 0,
                               scalars.GetMTime() if scalars is not None else 0,
                               slicer.util.arrayFromVTKMatrix(ijk_to_ras_matrix(volumeNode)))
