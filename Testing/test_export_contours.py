"""Edge-traced contours and the XOR rasteriser on hand-made masks.

Oracles: pixel counts, scipy.ndimage connected components (number of outer contours / holes), matplotlib's
point-in-polygon test (an independent rasteriser), and exhaustive segment-intersection checks.
"""

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from scipy import ndimage

from OncoSegLib.export.contours import has_self_intersection, polygon_area, rasterize_slice, trace_slice


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows], dtype=bool)


HAND_MADE = {
    "single": _mask(["...", ".#.", "..."]),
    "pair": _mask(["....", ".##.", "...."]),
    "line_1px": _mask(["........", ".######.", "........"]),
    "vertical_line": _mask([".#.", ".#.", ".#.", ".#."]),
    "diagonal_8conn": _mask(["#...", ".#..", "..#.", "...#"]),
    "corner_squares": _mask(["##..", "##..", "..##", "..##"]),
    "ring_with_island": _mask([
        "#########",
        "#.......#",
        "#.#####.#",
        "#.#...#.#",
        "#.#.#.#.#",
        "#.#...#.#",
        "#.#####.#",
        "#.......#",
        "#########",
    ]),
    "slit_box": _mask([
        "#######",
        "#.....#",
        "#.....#",
        "###..##",
        "...##..",
    ]),
    "hole_touching_corner": _mask([  # hole connects to the outside only through a corner
        ".####",
        "#...#",
        "#...#",
        "#####",
    ]),
    "checker": _mask(["#.#.", ".#.#", "#.#.", ".#.#"]),
    "full": np.ones((3, 5), dtype=bool),
}


# hole contours expected per hand-made mask (counted by hand). A hole that meets the outside only at a pixel corner
# still gets its own contour: the boundary touches itself there and is split into two simple polygons.
EXPECTED_HOLES = {"single": 0, "pair": 0, "line_1px": 0, "vertical_line": 0, "diagonal_8conn": 0,
                  "corner_squares": 0, "ring_with_island": 2, "slit_box": 0, "hole_touching_corner": 1,
                  "checker": 0, "full": 0}


def _components(m: np.ndarray) -> int:
    """Number of 4-connected foreground components (scipy) = number of outer contours."""
    return int(ndimage.label(m, structure=ndimage.generate_binary_structure(2, 1))[1])


def _matplotlib_xor(polys: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    jj, ii = np.mgrid[: shape[0], : shape[1]]
    centres = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    out = np.zeros(centres.shape[0], dtype=bool)
    for p in polys:
        out ^= MplPath(np.asarray(p), closed=False).contains_points(centres, radius=0.0)
    return out.reshape(shape)


def _check_contours(m: np.ndarray, keyhole: bool = False, holes: int | None = None) -> None:
    contours = trace_slice(m, keyhole=keyhole)
    polys = [c.points for c in contours]
    # exact area, exact fill by our rasteriser and by matplotlib
    assert sum(polygon_area(p) for p in polys) == pytest.approx(m.sum(), abs=1e-9)
    np.testing.assert_array_equal(rasterize_slice(polys, m.shape), m)
    np.testing.assert_array_equal(_matplotlib_xor(polys, m.shape), m)
    for c in contours:
        assert len(c.points) >= 4
        # every vertex of an edge-traced contour is a pixel corner (half-integer)
        if not keyhole:
            assert np.all(np.abs(c.points - np.floor(c.points) - 0.5) < 1e-12)
            assert not has_self_intersection(c.points)
            # no collinear consecutive points
            a, b = np.roll(c.points, 1, axis=0), np.roll(c.points, -1, axis=0)
            cross = (c.points[:, 0] - a[:, 0]) * (b[:, 1] - c.points[:, 1]) - \
                    (c.points[:, 1] - a[:, 1]) * (b[:, 0] - c.points[:, 0])
            assert np.all(cross != 0)
            assert (c.area < 0) == c.is_hole
    if not keyhole:
        assert sum(not c.is_hole for c in contours) == _components(m)
        if holes is not None:
            assert sum(c.is_hole for c in contours) == holes
    else:
        assert not any(c.is_hole for c in contours)
        assert len(contours) == _components(m)


@pytest.mark.parametrize("name", sorted(HAND_MADE))
@pytest.mark.parametrize("keyhole", [False, True])
def test_hand_made_masks(name: str, keyhole: bool) -> None:
    _check_contours(HAND_MADE[name], keyhole=keyhole, holes=EXPECTED_HOLES[name])


def test_specific_shapes() -> None:
    single = trace_slice(HAND_MADE["single"])
    assert len(single) == 1
    np.testing.assert_allclose(np.sort(single[0].points, axis=0),
                               np.sort(np.array([[0.5, 0.5], [1.5, 0.5], [1.5, 1.5], [0.5, 1.5]]), axis=0))
    assert len(trace_slice(HAND_MADE["line_1px"])[0].points) == 4  # collinear points dropped
    corner = trace_slice(HAND_MADE["corner_squares"])
    assert len(corner) == 2 and all(len(c.points) == 4 for c in corner)
    ring = trace_slice(HAND_MADE["ring_with_island"])
    assert sorted(c.is_hole for c in ring) == [False, False, False, True, True]
    assert trace_slice(np.zeros((4, 4), bool)) == []


def test_random_masks() -> None:
    rng = np.random.default_rng(1)
    for _ in range(60):
        shape = tuple(rng.integers(1, 13, size=2))
        m = rng.random(shape) < rng.uniform(0.2, 0.8)
        _check_contours(m)
        _check_contours(m, keyhole=True)


def test_rasterize_foreign_polygons() -> None:
    """Polygons not on pixel edges (e.g. through pixel centres) follow the centre-inside rule, like matplotlib."""
    rng = np.random.default_rng(2)
    for _ in range(20):
        pts = rng.uniform(-1, 20, size=(7, 2)) + 0.123
        ours = rasterize_slice([pts], (20, 20))
        np.testing.assert_array_equal(ours, _matplotlib_xor([pts], (20, 20)))


def test_large_outline_is_fast_enough_and_exact() -> None:
    jj, ii = np.mgrid[:300, :280]
    m = ((jj - 150) / 120.0) ** 2 + ((ii - 140) / 110.0) ** 2 < 1
    m[140:160, 130:150] = False
    contours = trace_slice(m)
    assert sum(c.area for c in contours) == m.sum()
    np.testing.assert_array_equal(rasterize_slice([c.points for c in contours], m.shape), m)
