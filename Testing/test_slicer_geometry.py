"""Geometry helpers of the Slicer module: world RAS -> IJK through parent transforms, against SimpleITK."""

import numpy as np
import pytest
import SimpleITK as sitk

from OncoSegLib.errors import InputError
from OncoSegLib.slicer_support import geometry as g

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotation(axis, deg):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _oblique_image(size=(23, 17, 9), spacing=(0.7, 1.3, 2.9), origin=(-40.0, 12.5, 88.0), permute=None):
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    d = _rotation([1, 2, 3], 27)
    if permute is not None:
        d = d[:, permute]
    img.SetDirection(tuple(d.ravel()))
    return img


def _ijk_to_ras(img):
    """Slicer's IJKToRAS for a SimpleITK image (built from SimpleITK's own geometry: LPS -> RAS flip)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    return FLIP @ m


def _parent_transform():
    t = np.eye(4)
    t[:3, :3] = _rotation([0.3, -1, 0.5], 41)
    t[:3, 3] = [5.0, -17.0, 30.0]
    return t


def test_world_points_to_ijk_matches_simpleitk_with_oblique_volume_and_parent_transform():
    img = _oblique_image()
    ras_to_ijk = np.linalg.inv(_ijk_to_ras(img))
    parent = _parent_transform()
    rng = np.random.default_rng(0)
    idx = rng.uniform(0, 8, size=(20, 3))
    # oracle: SimpleITK maps index -> LPS; RAS = flip; world = parent @ RAS
    lps = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in idx])
    ras = lps * [-1, -1, 1]
    world = ras @ parent[:3, :3].T + parent[:3, 3]
    got = g.world_points_to_ijk(world, ras_to_ijk, volume_to_world=parent)
    np.testing.assert_allclose(got, idx, atol=1e-9)
    # and back through SimpleITK: world -> volume RAS -> LPS -> continuous index
    back = np.array([img.TransformPhysicalPointToContinuousIndex(tuple(map(float, (np.linalg.inv(parent) @ [*w, 1])[:3] * [-1, -1, 1])))
                     for w in world])
    np.testing.assert_allclose(got, back, atol=1e-9)


def test_markup_under_its_own_transform():
    img = _oblique_image()
    ras_to_ijk = np.linalg.inv(_ijk_to_ras(img))
    markup_parent = _parent_transform()
    target_ijk = np.array([[3.0, 4.0, 5.0]])
    world = g.transform_points(g.ijk_to_world_matrix(ras_to_ijk), target_ijk)
    node_coords = g.transform_points(np.linalg.inv(markup_parent), world)
    got = g.world_points_to_ijk(node_coords, ras_to_ijk, markup_to_world=markup_parent)
    np.testing.assert_allclose(got, target_ijk, atol=1e-9)


def test_round_ijk_nearest_voxel_and_outside_error():
    assert g.round_ijk([2.49, 3.51, 0.0], (5, 6, 7)) == (2, 4, 0)
    assert g.round_ijk([-0.4, 5.4, 6.49], (5, 6, 7)) == (0, 5, 6)  # outer half of border voxels
    with pytest.raises(InputError):
        g.round_ijk([-0.6, 0, 0], (5, 6, 7))
    with pytest.raises(InputError):
        g.round_ijk([0, 0, 6.6], (5, 6, 7))


@pytest.mark.parametrize("permute,expected", [
    (None, {"axial": "axial", "coronal": "coronal", "sagittal": "sagittal"}),
    ([2, 0, 1], None),  # k along what i was: a sagittally acquired series
])
def test_axis_from_slice_normal(permute, expected):
    size, spacing = (10, 10, 10), (0.5, 0.5, 5.0)  # anisotropic spacing must not bias the choice
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    d = np.eye(3) if permute is None else np.eye(3)[:, permute]
    img.SetDirection(tuple(d.ravel()))
    ras_to_ijk = np.linalg.inv(_ijk_to_ras(img))
    red, green, yellow = [0, 0, 1], [0, 1, 0], [1, 0, 0]  # view normals in RAS
    got = {v: g.axis_from_slice_normal(n, ras_to_ijk) for v, n in (("axial", red), ("coronal", green), ("sagittal", yellow))}
    if expected is None:
        # independent reasoning: which IJK column of the direction is parallel to each RAS normal
        expected = {}
        for view, n in (("axial", red), ("coronal", green), ("sagittal", yellow)):
            lps_n = np.asarray(n) * [-1, -1, 1]
            col = int(np.argmax(np.abs(d.T @ lps_n)))
            expected[view] = {0: "sagittal", 1: "coronal", 2: "axial"}[col]
        assert expected["axial"] != "axial"  # the test really exercises a permuted volume
    assert got == expected


def test_axis_follows_a_tilted_view_and_parent_transform():
    img = _oblique_image()
    ras_to_ijk = np.linalg.inv(_ijk_to_ras(img))
    parent = _parent_transform()
    k_world = g.ijk_to_world_matrix(ras_to_ijk, parent)[:3, 2]
    tilt = _rotation([1, 0, 0], 20) @ (k_world / np.linalg.norm(k_world))
    assert g.axis_from_slice_normal(tilt, ras_to_ijk, parent) == "axial"
    j_world = g.ijk_to_world_matrix(ras_to_ijk, parent)[:3, 1]
    assert g.axis_from_slice_normal(-j_world, ras_to_ijk, parent) == "coronal"


def test_roi_box_rotated_with_volume_gives_exact_voxel_box():
    img = _oblique_image(size=(30, 30, 20), spacing=(1.0, 1.0, 1.0))
    ijk_to_ras = _ijk_to_ras(img)
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    # an ROI aligned with the volume axes covering voxel centres 4..9 (i), 5..12 (j), 3..6 (k)
    lo, hi = np.array([4, 5, 3]), np.array([9, 12, 6])
    center_ijk = (lo + hi) / 2
    center_world = g.transform_points(ijk_to_ras, center_ijk[None])[0]
    size = (hi - lo) + 0.5  # half a voxel of slack on each axis, still short of the next centre
    axes = ijk_to_ras[:3, :3]
    corners = g.roi_corners_world(center_world, size, axes)
    box = g.roi_to_ijk_box(corners, ras_to_ijk, img.GetSize())
    assert box.ijk_min == tuple(lo) and box.ijk_max == tuple(hi)
    assert box.axis == "axial" and not box.is_2d


def test_flat_roi_is_2d_on_its_thin_axis():
    ijk_to_ras = np.diag([-1.0, -1.0, 2.0, 1.0])
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    center = g.transform_points(ijk_to_ras, [[10, 8, 4.2]])[0]
    corners = g.roi_corners_world(center, (6.0, 4.0, 0.0), None)  # zero thickness along S = k
    box = g.roi_to_ijk_box(corners, ras_to_ijk, (20, 20, 10))
    assert box.is_2d and box.axis == "axial"
    assert box.ijk_min == (7, 6, 4) and box.ijk_max == (13, 10, 4)
    corners = g.roi_corners_world(g.transform_points(ijk_to_ras, [[10, 8, 4]])[0], (0.0, 4.0, 6.0), None)
    box = g.roi_to_ijk_box(corners, ras_to_ijk, (20, 20, 10))
    assert box.axis == "sagittal" and box.ijk_min[0] == box.ijk_max[0] == 10
    with pytest.raises(InputError):
        g.roi_to_ijk_box(corners + 1000.0, ras_to_ijk, (20, 20, 10))


def test_polyline_to_voxels_is_connected_and_ordered():
    pts = np.array([[1.0, 1.0, 2.0], [9.2, 4.7, 2.0], [3.0, 8.0, 2.0]])
    vox = g.polyline_to_voxels(pts, (12, 12, 5))
    assert tuple(vox[0]) == (1, 1, 2) and tuple(vox[-1]) == (3, 8, 2)
    steps = np.abs(np.diff(vox, axis=0))
    assert steps.max() <= 1  # 8-connected in plane: no voxel skipped
    assert len({tuple(v) for v in vox}) == len(vox)
    assert np.all(vox[:, 2] == 2)
    assert len(g.polyline_to_voxels(np.array([[50.0, 50, 50]]), (12, 12, 5))) == 0


def test_bounding_box_and_extent():
    m = np.zeros((5, 6, 7), bool)
    m[1, 2, 3] = m[3, 4, 5] = True
    bb = g.bounding_box_kji(m)
    assert bb == (slice(1, 4), slice(2, 5), slice(3, 6))
    assert g.extent_from_bbox(bb) == (3, 5, 2, 4, 1, 3)
    assert g.bounding_box_kji(np.zeros((2, 2, 2), bool)) is None
