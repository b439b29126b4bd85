"""From the markups a user placed in 3D Slicer to one object's prompts (the project's one prompt model,
:class:`OncoSegLib.prompts.ObjectPrompts`), in voxel coordinates of the input volume.

All positions come in as world RAS mm (what ``GetNthControlPointPositionWorld`` returns) and leave as integer volume
**IJK** voxel indices (i = column, j = row, k = slice), each prompt with the slicing ``axis`` of the view it was
placed in ("axial" = a k-slice, "coronal" = j, "sagittal" = i). The console's dict form and the stored JSON are
read by :mod:`OncoSegLib.prompts` (one parser for files, console and scenes); nothing here contains patient data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from OncoSegLib.prompts import BoxPrompt, ObjectPrompts, PointPrompt, ScribblePrompt, TextPrompt
from OncoSegLib.slicer_support.geometry import (AXIS_TO_IJK_INDEX, polyline_to_voxels, roi_to_ijk_box, round_ijk,
                                                world_points_to_ijk)
from OncoSegLib.slicing import check_axis


def prompts_from_markups(object_name: str, ras_to_ijk: np.ndarray, shape_ijk: Sequence[int],
                         volume_to_world: np.ndarray | None = None,
                         positive_world: np.ndarray | None = None, positive_axes: Sequence[str] | None = None,
                         negative_world: np.ndarray | None = None, negative_axes: Sequence[str] | None = None,
                         roi_corners_world: np.ndarray | None = None, scribble_world: np.ndarray | None = None,
                         scribble_axis: str | None = None, text: str = "", default_axis: str = "axial") -> ObjectPrompts:
    """Assemble an object's prompts from the markups the user placed (all positions in world RAS mm).

    Args:
        object_name: segment name the prompts belong to.
        ras_to_ijk, volume_to_world, shape_ijk: the input volume's geometry (see ``geometry``).
        positive_world / negative_world: (N, 3) fiducial positions; ``*_axes``: per point, the slicing axis recorded
            when it was placed ("" or missing = ``default_axis``).
        roi_corners_world: (8, 3) corners of a markups ROI (``geometry.roi_corners_world``), or None.
        scribble_world: (M, 3) points along a drawn curve, or None; ``scribble_axis`` its axis (None = the
            axis its voxels are flat on, else ``default_axis``).
        text: optional text prompt (evaluated on the middle slice of ``default_axis``).
    Points outside the volume raise InputError naming the point.
    """
    default_axis = check_axis(default_axis)
    ps = ObjectPrompts(name=object_name, axis=default_axis)
    for world, axes, positive in ((positive_world, positive_axes, True), (negative_world, negative_axes, False)):
        if world is None or len(world) == 0:
            continue
        ijk = world_points_to_ijk(world, ras_to_ijk, volume_to_world)
        for n, p in enumerate(ijk):
            axis = (axes[n] if axes is not None and n < len(axes) and axes[n] else default_axis)
            ps.points.append(PointPrompt(round_ijk(p, shape_ijk), positive, check_axis(axis)))
    if roi_corners_world is not None:
        box = roi_to_ijk_box(np.asarray(roi_corners_world), ras_to_ijk, shape_ijk, volume_to_world,
                             axis=None)
        ps.boxes.append(BoxPrompt(box.ijk_min, box.ijk_max, box.axis))
    if scribble_world is not None and len(scribble_world) > 0:
        cont = world_points_to_ijk(scribble_world, ras_to_ijk, volume_to_world)
        vox = polyline_to_voxels(cont, shape_ijk)
        if len(vox):
            axis = scribble_axis
            if not axis:
                flat = [c for c in range(3) if np.ptp(vox[:, c]) == 0]
                inv = {v: k for k, v in AXIS_TO_IJK_INDEX.items()}
                axis = inv[flat[-1]] if flat else default_axis
            ps.scribbles.append(ScribblePrompt(tuple(tuple(int(x) for x in v) for v in vox), True,  # type: ignore[arg-type]
                                               check_axis(axis)))
    if text.strip():
        ps.text = TextPrompt(text.strip(), default_axis)
    return ps


def defined_indices(statuses: Sequence[int], defined_status: int) -> list[int]:
    """Indices of the markup control points whose position is defined.

    While a markup is being placed, Slicer keeps a *preview* control point that follows the mouse
    (``vtkMRMLMarkupsNode.PositionPreview``), and a point can be *undefined* or *missing*; such points are listed by
    ``GetNumberOfControlPoints`` and returned by ``slicer.util.arrayFromMarkupsControlPoints`` but are not prompts.

    Args:
        statuses: ``GetNthControlPointPositionStatus(n)`` for every control point, in order.
        defined_status: the value of ``vtkMRMLMarkupsNode.PositionDefined`` (2 in Slicer 5.x).
    """
    return [n for n, s in enumerate(statuses) if int(s) == int(defined_status)]
