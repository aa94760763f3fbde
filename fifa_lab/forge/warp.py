"""Piecewise-affine warps driven by landmarks: the geometry behind face swaps, reenactment and reshaping.

The output ("destination") points plus fixed border points are Delaunay-triangulated; every output
pixel takes the affine map of its triangle, which sends the triangle's corners to the matching source
points. The dense sampling map is built in one vectorised pass: each triangle is rasterised once into a
triangle-index image (``cv2.fillConvexPoly``) and the per-triangle affine coefficients are gathered by
that index; ``cv2.remap`` then samples the source image.

Only triangles with a moving corner are rasterised, and only inside a region of interest, so a local
change (a brow, a mouth) costs a local amount of work; every other pixel maps to itself exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

_SHIFT = 4  # fixed-point bits for sub-pixel triangle rasterisation
MOVE_EPS = 1e-3  # pixels: a point that moved less than this counts as fixed


@dataclass
class WarpField:
    """The sampling map of a warp over a rectangle of the output image.

    Attributes:
        map_x, map_y: ``(h, w)`` float32 source coordinates of each output pixel of the rectangle.
        origin: ``(y0, x0)`` of the rectangle in the output image.
        area_scale: ``(h, w)`` float32 source area per output area (< 1 where the warp stretches the
            source, which blurs it; > 1 where it squeezes).
        shape: ``(H, W)`` of the output image.
    """

    map_x: np.ndarray
    map_y: np.ndarray
    origin: tuple[int, int]
    area_scale: np.ndarray
    shape: tuple[int, int]

    @property
    def rows(self) -> slice:
        return slice(self.origin[0], self.origin[0] + self.map_x.shape[0])

    @property
    def cols(self) -> slice:
        return slice(self.origin[1], self.origin[1] + self.map_x.shape[1])

    def displacement(self) -> np.ndarray:
        """``(H, W)`` float32 distance in pixels between each output pixel and where it samples from."""
        out = np.zeros(self.shape, np.float32)
        yy, xx = np.mgrid[self.rows, self.cols].astype(np.float32)
        out[self.rows, self.cols] = np.hypot(self.map_x - xx, self.map_y - yy)
        return out

    def full(self, values: np.ndarray, fill: float) -> np.ndarray:
        """Embed an ``(h, w)`` array of the rectangle in an ``(H, W)`` array filled with ``fill``."""
        out = np.full(self.shape, fill, values.dtype)
        out[self.rows, self.cols] = values
        return out

    def apply(self, image: np.ndarray, out: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Sample ``image`` (the source) through the map into the rectangle of ``out`` (modified and returned)."""
        out[self.rows, self.cols] = cv2.remap(image, self.map_x, self.map_y, interpolation,
                                              borderMode=cv2.BORDER_REFLECT)
        return out


def border_points(shape: tuple[int, int], per_side: int = 4) -> np.ndarray:
    """``(4 * per_side, 2)`` points spaced evenly around the image border (corners included)."""
    h, w = shape
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)
    top = np.stack([t * (w - 1), np.zeros_like(t)], 1)
    right = np.stack([np.full_like(t, w - 1), t * (h - 1)], 1)
    bottom = np.stack([(1 - t) * (w - 1), np.full_like(t, h - 1)], 1)
    left = np.stack([np.zeros_like(t), (1 - t) * (h - 1)], 1)
    return np.concatenate([top, right, bottom, left])


def warp_field(source: np.ndarray, target: np.ndarray, shape: tuple[int, int],
               anchors: np.ndarray | None = None, roi: tuple[int, int, int, int] | None = None) -> WarpField:
    """The piecewise-affine map sending ``target`` points (in the output) to ``source`` points.

    Args:
        source: ``(N, 2)`` points ``(x, y)`` in the image to sample from.
        target: ``(N, 2)`` matching points in the output image of ``shape`` ``(H, W)``.
        anchors: ``(K, 2)`` extra output points that stay where they are (they confine a local warp);
            the image border is always fixed.
        roi: ``(x0, y0, x1, y1)`` output rectangle to build the map for; None covers the triangles that
            move (everything else maps to itself).

    Returns:
        A `WarpField` over the rectangle.
    """
    h, w = shape
    fixed = border_points(shape) if anchors is None else np.concatenate([border_points(shape), anchors])
    src = np.concatenate([np.asarray(source, np.float64), fixed])
    dst = np.concatenate([np.asarray(target, np.float64), fixed])
    triangles = Delaunay(dst).simplices
    moving = np.any(np.abs(src[triangles] - dst[triangles]).max(axis=2) > MOVE_EPS, axis=1)
    corners = dst[triangles]  # (T, 3, 2)
    system = np.concatenate([corners, np.ones((len(triangles), 3, 1))], axis=2)  # rows [x, y, 1]
    solvable = np.abs(np.linalg.det(system)) > 1e-6
    use = moving & solvable
    # Affine coefficients per triangle: [x_src, y_src] = [x, y, 1] @ coef, coef (3, 2); an extra last
    # entry is the identity for pixels of fixed triangles.
    coef = np.tile(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), (len(triangles) + 1, 1, 1))
    coef[:-1][use] = np.linalg.solve(system[use], src[triangles][use])

    if roi is None:
        if not use.any():
            roi = (0, 0, 1, 1)
        else:
            pts = corners[use].reshape(-1, 2)
            roi = (int(np.floor(pts[:, 0].min())), int(np.floor(pts[:, 1].min())),
                   int(np.ceil(pts[:, 0].max())) + 1, int(np.ceil(pts[:, 1].max())) + 1)
    x0, y0 = max(0, roi[0]), max(0, roi[1])
    x1, y1 = min(w, roi[2]), min(h, roi[3])
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"warp region {roi} lies outside the {w}x{h} image")

    index = np.full((y1 - y0, x1 - x0), len(triangles), np.int32)
    offset = np.array([x0, y0], np.float64)
    for k in np.flatnonzero(use):
        poly = np.round((corners[k] - offset) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillConvexPoly(index, poly, int(k), lineType=cv2.LINE_8, shift=_SHIFT)

    table = coef.reshape(-1, 6).astype(np.float32)  # per triangle: a_xx, a_xy, a_yx, a_yy, t_x, t_y
    c = table[index]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    map_x = xx * c[..., 0] + yy * c[..., 2] + c[..., 4]
    map_y = xx * c[..., 1] + yy * c[..., 3] + c[..., 5]
    area = np.abs(table[:, 0] * table[:, 3] - table[:, 1] * table[:, 2])
    return WarpField(map_x, map_y, (y0, x0), area[index], (h, w))


def warp_image(image: np.ndarray, source: np.ndarray, target: np.ndarray, shape: tuple[int, int] | None = None,
               anchors: np.ndarray | None = None) -> tuple[np.ndarray, WarpField]:
    """Warp ``image`` so its ``source`` points land on ``target``; returns the ``(H, W, C)`` image and field.

    Pixels outside the field's rectangle keep the input (same-size warps) or are black (other sizes).
    """
    shape = image.shape[:2] if shape is None else shape
    field = warp_field(source, target, shape, anchors)
    out = image.copy() if image.shape[:2] == tuple(shape) else np.zeros((*shape, *image.shape[2:]), image.dtype)
    return field.apply(image, out), field
