"""Slicing and coordinate maps: IJK <-> (axis, index, row, col) <-> model pixels, checked against independent
oracles (explicit numpy indexing; torch's bilinear resize of a one-pixel image)."""

import numpy as np
import pytest
import torch

from OncoSegLib.errors import InputError
from OncoSegLib.slicing import (
    AXES,
    check_ijk_inside,
    get_slice,
    ijk_to_model,
    ijk_to_slice,
    model_to_ijk,
    model_to_pixel,
    paste_slice_mask,
    pixel_to_model,
    slice_shape,
    slice_to_ijk,
)

SHAPE = (7, 11, 13)  # K, J, I: every side different, so any axis mix-up changes shapes


def test_get_slice_matches_explicit_indexing():
    a = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    assert np.array_equal(get_slice(a, "axial", 3), a[3, :, :])
    assert np.array_equal(get_slice(a, "coronal", 4), a[:, 4, :])
    assert np.array_equal(get_slice(a, "sagittal", 5), a[:, :, 5])
    assert slice_shape(SHAPE, "axial") == (11, 13)
    assert slice_shape(SHAPE, "coronal") == (7, 13)
    assert slice_shape(SHAPE, "sagittal") == (7, 11)
    rgb = np.zeros(SHAPE + (3,))
    assert get_slice(rgb, "sagittal", 2).shape == (7, 11, 3)


@pytest.mark.parametrize("axis", AXES)
def test_ijk_slice_pixel_is_the_voxel(axis):
    a = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    for ijk in [(0, 0, 0), (12, 10, 6), (3, 7, 2), (9, 1, 5)]:
        index, row, col = ijk_to_slice(ijk, axis)
        i, j, k = ijk
        assert get_slice(a, axis, int(index))[int(row), int(col)] == a[k, j, i]
        assert slice_to_ijk(axis, index, row, col) == tuple(float(v) for v in ijk)


@pytest.mark.parametrize("axis", AXES)
def test_paste_slice_mask_lands_on_voxels(axis):
    m = np.zeros(SHAPE, dtype=bool)
    index, row, col = (int(v) for v in ijk_to_slice((4, 6, 2), axis))
    plane = np.zeros(slice_shape(SHAPE, axis), dtype=bool)
    plane[row, col] = True
    paste_slice_mask(m, axis, index, plane)
    assert list(zip(*np.nonzero(m))) == [(2, 6, 4)]  # (k, j, i)
    with pytest.raises(InputError):
        paste_slice_mask(m, axis, index, np.zeros((3, 3), dtype=bool))


@pytest.mark.parametrize("hw", [(11, 13), (40, 17), (9, 64), (112, 112)])
def test_pixel_to_model_matches_bilinear_resize(hw):
    """Oracle: resize an image holding one bright pixel with torch (align_corners=False, what preprocessing does);
    the intensity centroid of the upsampled image is where that pixel centre lands in model pixels."""
    s = 112
    h, w = hw
    for row, col in [(h // 2, w // 2), (h // 3, 2 * w // 3), (1 + h // 4, 1)]:
        if not (0 < row < h - 1 and 0 < col < w - 1):
            continue
        img = torch.zeros(1, 1, h, w)
        img[0, 0, row, col] = 1.0
        up = torch.nn.functional.interpolate(img, size=(s, s), mode="bilinear", align_corners=False)[0, 0].numpy()
        yy, xx = np.mgrid[0:s, 0:s]
        cy, cx = (up * yy).sum() / up.sum(), (up * xx).sum() / up.sum()
        x, y = pixel_to_model(row, col, hw, s)
        # discrete sampling of the bilinear hat moves its centroid by < 0.1 px; a half-pixel convention error
        # would be (S / W - 1) / 2 px (>= 3 px for the small slices here)
        assert abs(x - cx) < 0.1 and abs(y - cy) < 0.1
        r2, c2 = model_to_pixel(x, y, hw, s)
        assert abs(r2 - row) < 1e-9 and abs(c2 - col) < 1e-9


def test_model_to_pixel_is_exact_inverse_and_vectorised():
    rows, cols = np.array([0.0, 3.5, 10.0]), np.array([12.0, 0.0, 6.25])
    x, y = pixel_to_model(rows, cols, (11, 13), 1008)
    r, c = model_to_pixel(x, y, (11, 13), 1008)
    assert np.allclose(r, rows) and np.allclose(c, cols)
    # the corners of the slice map to the corners of the model input (pixel edges coincide)
    x0, y0 = pixel_to_model(-0.5, -0.5, (11, 13), 1008)
    x1, y1 = pixel_to_model(10.5, 12.5, (11, 13), 1008)
    assert (x0, y0) == (-0.5, -0.5) and (x1, y1) == (1007.5, 1007.5)


@pytest.mark.parametrize("axis", AXES)
def test_ijk_to_model_round_trip(axis):
    for ijk in [(2.0, 3.0, 4.0), (12.0, 0.0, 6.0)]:
        index, x, y = ijk_to_model(ijk, axis, SHAPE, 112)
        assert np.allclose(model_to_ijk(axis, index, x, y, SHAPE, 112), ijk)


def test_check_inside_names_prompt_and_extent():
    check_ijk_inside((12.4, 10.4, 6.4), SHAPE)
    with pytest.raises(InputError) as err:
        check_ijk_inside((13, 2, 2), SHAPE, "point 3 of object 'liver'")
    msg = str(err.value)
    assert "point 3 of object 'liver'" in msg and "i 0..12" in msg and "j 0..10" in msg and "k 0..6" in msg
    with pytest.raises(InputError):
        check_ijk_inside((1, 2), SHAPE)
    with pytest.raises(InputError):
        get_slice(np.zeros(SHAPE), "axial", 7)
    with pytest.raises(InputError):
        get_slice(np.zeros(SHAPE), "oblique", 0)
