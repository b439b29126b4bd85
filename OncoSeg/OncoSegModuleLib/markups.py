"""Prompt markups nodes -> ObjectPrompts on the volume's IJK grid (control points read in world RAS).

The parameter node holds four markups nodes: positive and negative points, a box ROI and a scribble curve. Only
defined control points count (not the preview point that follows the mouse while placing).
"""

from __future__ import annotations

from typing import Any

import slicer

from OncoSegLib.slicer_support import geometry as oncoGeometry
from OncoSegLib.slicer_support import params as oncoParams
from OncoSegLib.slicer_support import prompts as oncoPrompts

from .volumes import volume_geometry

#: parameter-node fields holding the prompt markups nodes
PROMPT_FIELDS = ("positivePoints", "negativePoints", "boxROI", "scribble")


def defined_control_points(markupsNode: Any) -> list[int]:
    """Indices of the control points whose position is defined (not the preview point that follows the mouse)."""
    statuses = [markupsNode.GetNthControlPointPositionStatus(n)
                for n in range(markupsNode.GetNumberOfControlPoints())]
    return oncoPrompts.defined_indices(statuses, slicer.vtkMRMLMarkupsNode.PositionDefined)


def ensure_prompt_nodes(parameterNode: Any) -> None:
    """Create the markups nodes prompts are placed into (kept in the scene, so saved with it)."""
    for attr, className, name, color in oncoParams.PROMPT_NODES:
        if getattr(parameterNode, attr) is None:
            node = slicer.mrmlScene.AddNewNodeByClass(className, name)
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor(color)
            if attr == "scribble":
                node.SetCurveTypeToLinear()  # the stroke drawn is the polyline the prompt uses
            setattr(parameterNode, attr, node)


def clear_prompt_nodes(parameterNode: Any) -> None:
    """Remove every control point of the prompt markups nodes."""
    for attr in PROMPT_FIELDS:
        node = getattr(parameterNode, attr)
        if node is not None:
            node.RemoveAllControlPoints()


def _world_points(node: Any) -> tuple[Any, Any]:
    """(defined control points in world RAS (n, 3), their descriptions = slice axes), or (None, None)."""
    keep = defined_control_points(node) if node is not None else []
    if not keep:
        return None, None
    world = slicer.util.arrayFromMarkupsControlPoints(node, world=True)[keep]
    return world, [node.GetNthControlPointDescription(n) for n in keep]


def prompts_from_nodes(parameterNode: Any) -> Any:
    """ObjectPrompts (IJK of the input volume) from the prompt markups of a parameter node."""
    p = parameterNode
    rasToIjk, toWorld, shape = volume_geometry(p.inputVolume)
    corners = None
    if p.boxROI is not None and defined_control_points(p.boxROI):
        center, size = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        p.boxROI.GetCenterWorld(center)
        p.boxROI.GetSizeWorld(size)
        corners = oncoGeometry.roi_corners_world(center, size,
                                                 slicer.util.arrayFromVTKMatrix(p.boxROI.GetObjectToWorldMatrix()))
    scribbleWorld, _scribbleAxes = _world_points(p.scribble)  # the stroke: its defined control points, a polyline
    if scribbleWorld is not None and len(scribbleWorld) < 2:
        scribbleWorld = None
    return oncoPrompts.prompts_from_markups(p.segmentName, rasToIjk, shape, toWorld, *_world_points(p.positivePoints),
                                            *_world_points(p.negativePoints), corners, scribbleWorld, None, "",
                                            "axial" if p.promptAxis == "auto" else p.promptAxis)


def axis_under_cursor(parameterNode: Any) -> str:
    """Slicing axis for a new prompt: the user's choice, or the volume axis of the slice view under the mouse."""
    if parameterNode.promptAxis != "auto" or not parameterNode.inputVolume:
        return "axial" if parameterNode.promptAxis == "auto" else parameterNode.promptAxis
    crosshairNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
    xyz = [0.0, 0.0, 0.0]
    sliceNode = crosshairNode.GetCursorPositionXYZ(xyz) if crosshairNode else None
    if sliceNode is None:
        return "axial"
    normal = slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())[:3, 2]
    rasToIjk, toWorld, _shape = volume_geometry(parameterNode.inputVolume)
    return oncoGeometry.axis_from_slice_normal(normal, rasToIjk, toWorld)
