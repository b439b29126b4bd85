"""Planar contours of binary masks traced on voxel *edges*, and the matching even-odd (XOR) polygon rasteriser.

Frame: in-plane pixel-index coordinates ``(i, j)`` of one slice (i = column, j = row; the IJK frame of
:mod:`OncoSegLib.io.volume`). Pixel ``(j, i)`` covers ``[i-0.5, i+0.5] x [j-0.5, j+0.5]``, so every vertex this
module traces sits on a half-integer position (a pixel corner). Consequences:

- the polygons enclose exactly the mask's pixels: sum of signed areas == pixel count, and
  ``rasterize_slice(trace_slice(m)) == m`` for any mask (pixel centres never lie on an edge);
- each contour is a simple closed polygon (crack following; self-touching loops are split at the touching corner),
  collinear vertices are dropped, every contour has >= 4 vertices;
- outer boundaries are clockwise on screen (i right, j down: positive shoelace area), holes counter-clockwise
  (negative). Holes are separate contours (the DICOM RT "XOR" convention) unless ``keyhole=True`` joins each hole
  to its enclosing contour by a zero-width cut (for systems that cannot read XOR holes).

Foreground is 4-connected: pixels touching only at a corner get separate contours that share that corner.
Hand-written (no library traces pixel *edges* with hole and saddle handling; skimage/opencv trace pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Contour", "trace_slice", "polygon_area", "rasterize_slice", "trace_labels"]

# edge directions on screen (i right, j down): 0 = +i, 1 = +j, 2 = -i, 3 = -j
_DX = np.array([1, 0, -1, 0], dtype=np.int64)
_DY = np.array([0, 1, 0, -1], dtype=np.int64)


@dataclass
class Contour:
    """One closed planar polygon of a slice.

    Attributes:
        points: (N, 2) float array of (i, j) pixel-index coordinates (IJK frame, in-plane), N >= 3, not repeating
            the first point; vertices of traced contours are pixel corners (half-integers).
        is_hole: True for an inner boundary (a hole of the region around it) under the XOR convention.
    """

    points: np.ndarray
    is_hole: bool = False

    @property
    def area(self) -> float:
        """Signed area in pixel units (positive for outer contours, negative for holes)."""
        return polygon_area(self.points)


def polygon_area(points: np.ndarray) -> float:
    """Signed shoelace area of a closed polygon given as (N, 2) (i, j) points, in pixel units.

    Positive when clockwise on screen (i right, j down), i.e. for the outer contours of :func:`trace_slice`.
    """
    p = np.asarray(points, dtype=float)
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _boundary_edges(m: np.ndarray):
    """Directed unit boundary edges of a padded mask (foreground on the right of each edge, on screen).

    Returns (sx, sy, d): start corner coordinates and direction code, as int64 arrays.
    Corner (x, y) is the top-left corner of pixel (row y, column x) of the padded array.
    """
    mi = m.astype(np.int8)
    # horizontal edges at y between rows y-1 and y: diff > 0 -> foreground below -> top edge, direction +i
    dv = mi[1:, :] - mi[:-1, :]  # shape (H-1, W); edge at y = r+1, spanning x in [c, c+1]
    r, c = np.nonzero(dv > 0)
    top = (c, r + 1, np.zeros(r.size, np.int64))
    r, c = np.nonzero(dv < 0)  # foreground above -> bottom edge, direction -i, starts at right end
    bot = (c + 1, r + 1, np.full(r.size, 2, np.int64))
    dh = mi[:, 1:] - mi[:, :-1]  # shape (H, W-1); edge at x = c+1 spanning y in [r, r+1]
    r, c = np.nonzero(dh > 0)  # foreground to the right -> left edge of fg, direction -j, starts at bottom
    left = (c + 1, r + 1, np.full(r.size, 3, np.int64))
    r, c = np.nonzero(dh < 0)  # foreground to the left -> right edge of fg, direction +j, starts at top
    right = (c + 1, r, np.full(r.size, 1, np.int64))
    sx = np.concatenate([top[0], bot[0], left[0], right[0]]).astype(np.int64)
    sy = np.concatenate([top[1], bot[1], left[1], right[1]]).astype(np.int64)
    d = np.concatenate([top[2], bot[2], left[2], right[2]]).astype(np.int64)
    return sx, sy, d


def _trace_loops(m: np.ndarray) -> list[np.ndarray]:
    """Simple closed loops (corner coordinates of the padded mask, int) around the foreground of ``m``.

    ``m`` must have a background border of at least one pixel.
    """
    h, w = m.shape
    sx, sy, d = _boundary_edges(m)
    n = sx.size
    if n == 0:
        return []
    nx = w + 1  # corners per row
    key = (sy * nx + sx) * 4 + d
    order = np.argsort(key, kind="stable")
    sx, sy, d, key = sx[order], sy[order], d[order], key[order]
    ex, ey = sx + _DX[d], sy + _DY[d]
    # saddle corners: the four pixels around the corner alternate (TL == BR != TR == BL)
    tl = m[ey - 1, ex - 1]
    tr = m[ey - 1, ex]
    bl = m[ey, ex - 1]
    br = m[ey, ex]
    saddle = (tl == br) & (tr == bl) & (tl != tr)
    # the one outgoing direction at ordinary corners
    out_dir = np.full((h + 1) * nx, -1, dtype=np.int64)
    out_dir[sy * nx + sx] = d  # at saddles this is overwritten by one of two; saddles are handled below
    end_v = ey * nx + ex
    nd = out_dir[end_v]
    # at a saddle keep turning right (foreground on the right stays 4-connected): new direction = d + 1
    nd = np.where(saddle, (d + 1) % 4, nd)
    succ = np.searchsorted(key, end_v * 4 + nd)
    if not np.array_equal(key[succ], end_v * 4 + nd):  # pragma: no cover - would be a bug in edge generation
        raise RuntimeError("contour tracing: unmatched boundary edge")
    is_corner = d != d[np.argsort(succ)]  # direction changes between predecessor and this edge
    # walk the permutation; record only corner vertices, split where a loop comes back to a saddle corner
    succ_l = succ.tolist()
    corner_l = is_corner.tolist()
    vx, vy = sx.tolist(), sy.tolist()
    saddle_start = np.zeros(n, dtype=bool)
    saddle_start[succ[saddle]] = True  # edges that start at a saddle corner
    saddle_l = saddle_start.tolist()
    visited = bytearray(n)
    loops: list[np.ndarray] = []
    for e0 in np.nonzero(is_corner)[0].tolist():
        if visited[e0]:
            continue
        stack: list[tuple[int, int]] = []
        where: dict[tuple[int, int], int] = {}
        e = e0
        while not visited[e]:
            visited[e] = 1
            if corner_l[e]:
                p = (vx[e], vy[e])
                if saddle_l[e]:
                    idx = where.get(p)
                    if idx is not None:  # loop touches itself here: cut off the sub-loop p ... (back to p)
                        loops.append(np.array(stack[idx:], dtype=np.int64))
                        for q in stack[idx:]:
                            where.pop(q, None)
                        del stack[idx:]
                    where[p] = len(stack)
                stack.append(p)
            e = succ_l[e]
        if stack:
            loops.append(np.array(stack, dtype=np.int64))
    return loops


def _keyhole(loops: list[np.ndarray], areas: list[float]) -> list[np.ndarray]:
    """Join every hole to the contour that encloses it with a zero-width cut (corner coordinates, float).

    Each hole is connected from a point a quarter pixel right of its top-left corner straight up (-j) to the first
    edge above it, which belongs to its outer contour or to a hole above it that is already joined. The cut runs
    at a quarter-pixel offset so it never passes through a pixel centre.
    """
    holes = [n for n, a in enumerate(areas) if a < 0]
    if not holes:
        return [lp.astype(float) for lp in loops]
    # horizontal edges of every loop: (loop, index of start vertex, y, xmin, xmax)
    hx = []
    for n, lp in enumerate(loops):
        nxt = np.roll(lp, -1, axis=0)
        horiz = np.nonzero(lp[:, 1] == nxt[:, 1])[0]
        for e in horiz.tolist():
            x0, x1 = lp[e, 0], nxt[e, 0]
            hx.append((n, e, lp[e, 1], min(x0, x1), max(x0, x1)))
    edges = np.array(hx, dtype=np.int64)
    # per hole: its attachment point m on its topmost-leftmost horizontal edge, and the edge hit above
    attach: dict[int, list[tuple[int, float, int]]] = {}  # loop -> [(edge index, x of hit, hole)]
    start_of: dict[int, tuple[int, float]] = {}  # hole -> (edge index holding m, x of m)
    for hn in holes:
        lp = loops[hn]
        top = lp[:, 1].min()
        cand = [e for e in range(len(lp)) if lp[e, 1] == top and lp[(e + 1) % len(lp), 1] == top]
        e_top = min(cand, key=lambda e: min(lp[e, 0], lp[(e + 1) % len(lp), 0]))
        xm = min(lp[e_top, 0], lp[(e_top + 1) % len(lp), 0]) + 0.25
        sel = (edges[:, 2] < top) & (edges[:, 3] < xm) & (edges[:, 4] > xm)
        if not sel.any():  # pragma: no cover - a hole always has an enclosing contour
            raise RuntimeError("keyhole: no contour above a hole")
        cand_e = edges[sel]
        hit = cand_e[np.argmax(cand_e[:, 2])]
        attach.setdefault(int(hit[0]), []).append((int(hit[1]), xm, hn))
        start_of[hn] = (e_top, xm)

    def emit(n: int, out: list[tuple[float, float]]) -> None:
        lp = loops[n]
        cnt = len(lp)
        if n in start_of:
            e_start, xm = start_of[n]
            y = float(lp[e_start, 1])
            out.append((xm, y))
            seq = [(e_start + 1 + t) % cnt for t in range(cnt)]
        else:
            seq = list(range(cnt))
        for e in seq:
            out.append((float(lp[e, 0]), float(lp[e, 1])))
            hits = [a for a in attach.get(n, []) if a[0] == e]
            if hits:
                x0, x1 = lp[e, 0], lp[(e + 1) % cnt, 0]
                hits.sort(key=lambda a: a[1], reverse=bool(x1 < x0))  # in the direction of travel along the edge
                y = float(lp[e, 1])
                for _, xh, hole in hits:
                    out.append((xh, y))
                    emit(hole, out)
                    out.append((xh, y))
        if n in start_of:
            out.append((start_of[n][1], float(lp[start_of[n][0], 1])))

    result = []
    for n, a in enumerate(areas):
        if a > 0:
            pts: list[tuple[float, float]] = []
            emit(n, pts)
            result.append(np.array(pts, dtype=float))
    return result


def trace_slice(mask: np.ndarray, keyhole: bool = False) -> list[Contour]:
    """Trace the boundary of a 2D mask on pixel edges.

    Args:
        mask: (J, I) array, non-zero = inside.
        keyhole: False (default): holes are separate contours with ``is_hole=True`` (XOR convention).
            True: each hole is joined to its enclosing contour by a zero-width cut, so every returned contour is an
            outer one (islands inside holes stay separate contours).

    Returns:
        Contours with (N, 2) (i, j) pixel-index points (IJK frame), outer contours first in raster order of their
        first vertex. Empty list for an empty mask.
    """
    m = np.asarray(mask) != 0
    if m.ndim != 2:
        raise ValueError(f"trace_slice needs a 2D mask, got shape {m.shape}")
    if not m.any():
        return []
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    padded = np.zeros((r1 - r0 + 2, c1 - c0 + 2), dtype=bool)
    padded[1:-1, 1:-1] = m[r0:r1, c0:c1]
    loops = _trace_loops(padded)
    areas = [polygon_area(lp.astype(float)) for lp in loops]
    # corner (x, y) of the padded array -> pixel-index coordinates of the original slice
    off = np.array([c0 - 1 - 0.5, r0 - 1 - 0.5])
    if keyhole:
        return [Contour(points=p + off, is_hole=False) for p in _keyhole(loops, areas)]
    return [Contour(points=lp.astype(float) + off, is_hole=a < 0) for lp, a in zip(loops, areas)]


def rasterize_slice(polygons: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of polygons on a (J, I) pixel grid, XOR-combined (a pixel inside an odd number is set).

    Args:
        polygons: (N, 2) arrays of (i, j) pixel-index coordinates (IJK frame, in-plane); closed implicitly.
        shape: (J, I) output shape.

    A pixel is inside when its centre (i, j) is; a centre exactly on an edge counts as inside for left edges and
    outside for right edges (half-open rule), which never occurs for edge-traced contours.
    """
    nj, ni = int(shape[0]), int(shape[1])
    toggles = np.zeros((nj, ni + 1), dtype=np.uint8)  # crossing counts mod 256: parity is all that matters
    for poly in polygons:
        p = np.asarray(poly, dtype=float)
        if p.ndim != 2 or p.shape[0] < 3:
            continue
        x0, y0 = p[:, 0], p[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
        # rows whose centre j satisfies ylo <= j < yhi (half-open: each vertex counted once)
        jlo = np.clip(np.ceil(ylo), 0, nj).astype(np.int64)
        jhi = np.clip(np.ceil(yhi), 0, nj).astype(np.int64)
        cnt = np.maximum(jhi - jlo, 0)
        if cnt.sum() == 0:
            continue
        eidx = np.repeat(np.arange(p.shape[0]), cnt)
        starts = np.repeat(jlo, cnt)
        offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        jj = starts + offs
        t = (jj - y0[eidx]) / (y1[eidx] - y0[eidx])
        xc = x0[eidx] + t * (x1[eidx] - x0[eidx])
        first = np.clip(np.ceil(xc), 0, ni).astype(np.int64)  # first pixel centre at or right of the crossing
        np.add.at(toggles, (jj, first), 1)
    return (np.cumsum(toggles, axis=1, dtype=np.uint8)[:, :ni] & 1).astype(bool)


def trace_labels(mask3d: np.ndarray, keyhole: bool = False) -> dict[int, list[Contour]]:
    """Trace every slice k of a (K, J, I) mask; returns {k: contours} for the slices that hold any voxel."""
    m = np.asarray(mask3d) != 0
    if m.ndim != 3:
        raise ValueError(f"trace_labels needs a (K, J, I) mask, got shape {m.shape}")
    ks = np.nonzero(m.reshape(m.shape[0], -1).any(axis=1))[0]
    return {int(k): trace_slice(m[k], keyhole=keyhole) for k in ks}


def has_self_intersection(points: np.ndarray) -> bool:
    """True when two non-adjacent edges of a closed polygon intersect or touch (test helper, O(N^2)).

    Points are compared exactly; use it on edge-traced contours (axis-parallel edges).
    """
    p = np.asarray(points, dtype=float)
    n = len(p)
    a, b = p, np.roll(p, -1, axis=0)
    for s in range(n):
        for t in range(s + 1, n):
            if t == s + 1 or (s == 0 and t == n - 1):
                continue
            if _segments_touch(a[s], b[s], a[t], b[t]):
                return True
    return False


def _segments_touch(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    def on_seg(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    if o1 * o2 < 0 and o3 * o4 < 0:
        return True
    return ((o1 == 0 and on_seg(p1, p2, q1)) or (o2 == 0 and on_seg(p1, p2, q2))
            or (o3 == 0 and on_seg(q1, q2, p1)) or (o4 == 0 and on_seg(q1, q2, p2)))


def slice_polygons(contours: Sequence[Contour]) -> list[np.ndarray]:
    """The point arrays of ``contours`` (convenience for :func:`rasterize_slice`)."""
    return [c.points for c in contours]
