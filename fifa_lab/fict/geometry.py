"""Landmark geometry -> concept masks.

A concept's *recipe* (in the tree file) says how to draw its mask from the 68 landmarks. Recipes are
plain data so a user's tree file can define new concepts without code:

```yaml
recipe: {kind: polygon, points: [36, 37, [38, 39, 0.5], {at: 39, off: [0.1, 0.0]}], smooth: true,
         clip: [face_oval], minus: [right_eye_iris]}
```

Points are landmark indices, ``[a, b, t]`` (the point a fraction ``t`` of the way from landmark ``a`` to
``b``), ``{centroid: [i, ...]}``, ``{frame: [u, v]}`` (a face-frame position, see
:class:`fifa_lab.ibug68.FaceFrame`) or ``{at: <point>, off: [du, dv]}`` (a point moved by a face-frame
offset). Lengths are in inter-ocular distances, so recipes follow the face's scale and roll.

Every recipe may carry ``clip`` (intersect with each named shape or concept), ``minus`` (subtract them)
and ``condition`` (an attribute that must be true, e.g. ``glasses`` or ``mouth_open``, else the mask is
empty). A new recipe kind is one function registered with :func:`register_recipe`.

Recipes are compiled once when a tree loads: every point of every recipe becomes a row of one
:class:`PointTable`, a linear map from the landmarks, so a face's points cost one matrix product.
"""
from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from fifa_lab.ibug68 import INNER_LIPS, FaceFrame, check_landmarks

# cv2 drawing takes integer coordinates; a fixed-point shift keeps sub-pixel accuracy.
_SHIFT = 4
_SCALE = 1 << _SHIFT
# The inner lips count as apart (teeth, tongue and oral cavity visible) above this gap, in IODs.
MOUTH_OPEN_GAP = 0.04
COMMON_KEYS = frozenset({"kind", "clip", "minus", "condition"})
POINT_LIST_KEYS = frozenset({"points", "curve"})
POINT_KEYS = frozenset({"center"})


@dataclass(frozen=True)
class RecipeKind:
    draw: Callable[["GeometryContext", Mapping[str, Any]], np.ndarray]
    keys: frozenset[str]
    required: frozenset[str]


RECIPES: dict[str, RecipeKind] = {}


def register_recipe(kind: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()):
    """Register a recipe kind drawing a uint8 0/1 mask; ``points``/``curve``/``center`` arrive compiled."""

    def wrap(fn):
        RECIPES[kind] = RecipeKind(fn, frozenset(required) | frozenset(optional), frozenset(required))
        return fn

    return wrap


class PointTable:
    """All points of a tree's recipes as rows ``point = W @ [landmarks; eye midpoint] + offset (face frame)``."""

    def __init__(self) -> None:
        self._weights: list[np.ndarray] = []
        self._offsets: list[tuple[float, float]] = []
        self._index: dict[str, int] = {}
        self._arrays = (np.zeros((0, 69)), np.zeros((0, 2)))

    def add(self, spec: Any) -> int:
        """Row index of a point spec, adding it when new; ValueError on a malformed spec."""
        key = repr(spec)
        if key not in self._index:
            weights, offset = self._parse(spec)
            self._weights.append(weights)
            self._offsets.append(offset)
            self._index[key] = len(self._weights) - 1
        return self._index[key]

    def _parse(self, spec: Any) -> tuple[np.ndarray, tuple[float, float]]:
        weights = np.zeros(69)
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            weights[_landmark_index(spec)] = 1.0
            return weights, (0.0, 0.0)
        if isinstance(spec, (list, tuple)) and len(spec) == 3:
            a, b, t = spec
            t = _number(t, "the fraction t of [a, b, t]")
            weights[_landmark_index(a)] += 1.0 - t
            weights[_landmark_index(b)] += t
            return weights, (0.0, 0.0)
        if isinstance(spec, Mapping) and len(spec) == 2 and {"at", "off"} == set(spec):
            weights, offset = self._parse(spec["at"])
            du, dv = _pair(spec["off"], "off")
            return weights, (offset[0] + du, offset[1] + dv)
        if isinstance(spec, Mapping) and set(spec) == {"frame"}:
            weights[68] = 1.0
            return weights, tuple(_pair(spec["frame"], "frame"))
        if isinstance(spec, Mapping) and set(spec) == {"centroid"} and isinstance(spec["centroid"], list) and spec["centroid"]:
            for i in spec["centroid"]:
                weights[_landmark_index(i)] += 1.0 / len(spec["centroid"])
            return weights, (0.0, 0.0)
        raise ValueError(f"bad point {spec!r}: use a landmark index, [a, b, t], {{at, off}}, {{frame}} or {{centroid}}")

    def evaluate(self, landmarks: np.ndarray, frame: FaceFrame) -> np.ndarray:
        """Pixel positions ``(n_points, 2)`` of every row for one face."""
        if len(self._arrays[0]) != len(self._weights):
            self._arrays = (np.array(self._weights), np.array(self._offsets, dtype=np.float64))
        weights, offsets = self._arrays
        anchors = np.vstack([landmarks, frame.origin[None]])
        return weights @ anchors + frame.offset(offsets)


def _landmark_index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 68:
        raise ValueError(f"landmark index {value!r} is not an integer in 0..67")
    return int(value)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _pair(value: Any, what: str) -> np.ndarray:
    try:
        pair = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        pair = np.zeros(0)
    if pair.shape != (2,) or not np.all(np.isfinite(pair)):
        raise ValueError(f"'{what}' must be two numbers, got {value!r}")
    return pair


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{what}' must be true or false, got {value!r}")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{what}' must be an attribute name, got {value!r}")
    return value


# Checks of the parameters shared by recipe kinds, run when a tree loads so a bad value names its node.
PARAMETER_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "axes": _pair, "near": _pair, "far": _pair, "width": _number, "angle": _number,
    "smooth": _flag, "closed": _flag, "condition": _name,
}


def compile_recipe(recipe: Any, table: PointTable) -> dict[str, Any]:
    """Check a recipe and replace its point specs by rows of ``table``; ValueError says what is wrong."""
    if not isinstance(recipe, Mapping) or "kind" not in recipe:
        raise ValueError(f"a recipe must be a mapping with a 'kind', got {recipe!r}")
    kind = recipe["kind"]
    if kind not in RECIPES:
        raise ValueError(f"unknown recipe kind '{kind}' (known: {', '.join(sorted(RECIPES))})")
    spec = RECIPES[kind]
    unknown = set(recipe) - COMMON_KEYS - spec.keys
    if unknown:
        raise ValueError(f"recipe kind '{kind}' has no parameter(s) {sorted(unknown)}")
    missing = spec.required - set(recipe)
    if missing:
        raise ValueError(f"recipe kind '{kind}' needs parameter(s) {sorted(missing)}")
    compiled = dict(recipe)
    for key in PARAMETER_CHECKS.keys() & set(recipe):
        PARAMETER_CHECKS[key](recipe[key], key)
    for key in ("clip", "minus"):
        names = recipe.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"'{key}' must be a list of shape or concept ids")
    for key in POINT_LIST_KEYS & set(recipe):
        if not isinstance(recipe[key], list) or len(recipe[key]) < 2:
            raise ValueError(f"'{key}' must list at least two points")
        compiled[key] = np.array([table.add(p) for p in recipe[key]], dtype=np.intp)
    for key in POINT_KEYS & set(recipe):
        compiled[key] = table.add(recipe[key])
    if kind == "union":
        parts = recipe["parts"]
        if not isinstance(parts, list) or not parts:
            raise ValueError("'parts' must be a non-empty list of recipes")
        if any(isinstance(p, Mapping) and (COMMON_KEYS - {"kind"}) & set(p) for p in parts):
            raise ValueError("the parts of a union are plain shapes: put clip/minus/condition on the union")
        compiled["parts"] = [compile_recipe(p, table) for p in parts]
    return compiled


def references(recipe: Mapping[str, Any]) -> list[str]:
    """Names of the shapes and concepts a recipe clips to or subtracts."""
    return list(recipe.get("clip", [])) + list(recipe.get("minus", []))


def mouth_gap(landmarks: np.ndarray) -> float:
    """Mean gap between the inner lips (iBUG 61-67, 62-66, 63-65), in inter-ocular distances."""
    frame = FaceFrame.from_landmarks(landmarks)
    inner = frame.to_frame(landmarks[INNER_LIPS])
    return float(np.mean(inner[[7, 6, 5], 1] - inner[[1, 2, 3], 1]))


class MaskArena:
    """Zeroed ``(H, W)`` uint8 planes carved from one ``(planes, H, W)`` block per call.

    A mask set touches ~10 MB at 256 px. Allocated plane by plane and freed when the caller drops it,
    that memory goes back to the operating system and every call pays page faults again (half the cost
    of a mask set). Blocks are therefore pooled: a block is reused once nothing references it any more
    (no mask of an earlier call is alive), so a loop over faces keeps reusing one block, while masks a
    caller keeps stay untouched.
    """

    POOL_SIZE = 4  # blocks kept per (planes, H, W); beyond that, blocks are plain allocations
    _pool: dict[tuple[int, int, int], list[np.ndarray]] = {}
    _lock = threading.Lock()

    def __init__(self, shape: tuple[int, int], planes: int):
        key = (planes, *shape)
        with MaskArena._lock:
            pool = MaskArena._pool.setdefault(key, [])
            # Two references (the pool's and getrefcount's argument) mean no mask of the block is alive.
            free = next((i for i in range(len(pool)) if sys.getrefcount(pool[i]) == 2), None)
            if free is not None:
                self.block, self.fresh = pool[free], False
            else:
                self.block, self.fresh = np.zeros(key, np.uint8), True
                if len(pool) < MaskArena.POOL_SIZE:
                    pool.append(self.block)
        self.shape = shape
        self.used = 0

    def take(self) -> np.ndarray:
        """The next zeroed plane (a plain allocation if the block is used up)."""
        if self.used == len(self.block):
            return np.zeros(self.shape, np.uint8)
        plane = self.block[self.used]
        self.used += 1
        if not self.fresh:
            plane.fill(0)
        return plane


class GeometryContext:
    """One face's landmarks, face frame, image size, attributes and evaluated recipe points."""

    def __init__(self, landmarks: Any, size: tuple[int, int], table: PointTable,
                 attributes: Mapping[str, Any] | None = None, planes: int = 0):
        self.landmarks = check_landmarks(landmarks).astype(np.float64)
        height, width = (int(s) for s in size)
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {size}")
        self.shape = (height, width)
        self.frame = FaceFrame.from_landmarks(self.landmarks)
        self.attributes = dict(attributes or {})
        self.attributes.setdefault("mouth_open", mouth_gap(self.landmarks) > MOUTH_OPEN_GAP)
        self._points = table.evaluate(self.landmarks, self.frame)
        self._arena = MaskArena(self.shape, planes) if planes else None

    def points(self, rows: np.ndarray) -> np.ndarray:
        """Pixel positions ``(n, 2)`` of compiled point rows."""
        return self._points[rows]

    def empty(self) -> np.ndarray:
        """A zeroed ``(H, W)`` uint8 mask to draw into."""
        return self._arena.take() if self._arena is not None else np.zeros(self.shape, dtype=np.uint8)


def catmull_rom(points: np.ndarray, closed: bool, samples: int = 6) -> np.ndarray:
    """Densify ``(N, 2)`` points into a smooth uniform Catmull-Rom curve through them."""
    if len(points) < 3:
        return points
    return _catmull_rom_basis(len(points), closed, samples) @ points


@functools.lru_cache(maxsize=256)
def _catmull_rom_basis(n: int, closed: bool, samples: int) -> np.ndarray:
    """The spline is linear in its control points: ``curve = basis @ points`` with basis ``(M, n)``."""
    # Control point k of segment s is point (s + k - 1); open curves extend their ends linearly.
    t = np.linspace(0.0, 1.0, samples, endpoint=False)
    coeff = 0.5 * np.stack([-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3, t + 4 * t**2 - 3 * t**3, -t**2 + t**3], axis=1)
    segments = n if closed else n - 1
    basis = np.zeros((segments * samples + (0 if closed else 1), n))
    for s in range(segments):
        rows = slice(s * samples, (s + 1) * samples)
        for k in range(4):
            index = s + k - 1
            if closed:
                basis[rows, index % n] += coeff[:, k]
            elif index < 0:  # phantom point 2*p0 - p1
                basis[rows, 0] += 2 * coeff[:, k]
                basis[rows, 1] -= coeff[:, k]
            elif index >= n:  # phantom point 2*p[n-1] - p[n-2]
                basis[rows, n - 1] += 2 * coeff[:, k]
                basis[rows, n - 2] -= coeff[:, k]
            else:
                basis[rows, index] += coeff[:, k]
    if not closed:
        basis[-1, n - 1] = 1.0
    return basis


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * _SCALE).astype(np.int32).reshape(-1, 1, 2)


def _fill(ctx: GeometryContext, polygon: np.ndarray) -> np.ndarray:
    mask = ctx.empty()
    cv2.fillPoly(mask, [_fixed(polygon)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def _thickness(ctx: GeometryContext, width: Any) -> int:
    return max(1, int(round(float(width) * ctx.frame.iod)))


@register_recipe("polygon", ("points",), ("smooth",))
def polygon(ctx: GeometryContext, recipe: Mapping[str, Any]) -> np.ndarray:
    """Filled polygon through ``points``; ``smooth: true`` rounds it with a closed spline."""
    pts = ctx.points(recipe["points"])
    return _fill(ctx, catmull_rom(pts, closed=True) if recipe.get("smooth") else pts)


@register_recipe("strip", ("curve", "far"), ("near", "smooth"))
def strip(ctx: GeometryContext, recipe: Mapping[str, Any]) -> np.ndarray:
    """The band between two offset copies of an open ``curve``: ``curve + near`` and ``curve + far``."""
    curve = ctx.points(recipe["curve"])
    if recipe.get("smooth"):
        curve = catmull_rom(curve, closed=False)
    near = curve + ctx.frame.offset(_pair(recipe.get("near", (0, 0)), "near"))
    far = curve + ctx.frame.offset(_pair(recipe["far"], "far"))
    return _fill(ctx, np.concatenate([near, far[::-1]]))


@register_recipe("polyline", ("points", "width"), ("smooth", "closed"))
def polyline(ctx: GeometryContext, recipe: Mapping[str, Any]) -> np.ndarray:
    """A line ``width`` IODs thick through ``points`` (an outline when ``closed``)."""
    pts = ctx.points(recipe["points"])
    closed = bool(recipe.get("closed", False))
    if recipe.get("smooth"):
        pts = catmull_rom(pts, closed=closed)
    mask = ctx.empty()
    cv2.polylines(mask, [_fixed(pts)], closed, 1, thickness=_thickness(ctx, recipe["width"]),
                  lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


@register_recipe("ellipse", ("center", "axes"), ("angle", "width"))
def ellipse(ctx: GeometryContext, recipe: Mapping[str, Any]) -> np.ndarray:
    """Ellipse at ``center`` with semi-axes ``axes`` (IODs) turned ``angle`` degrees from the u axis.

    Filled, or an outline ``width`` IODs thick when ``width`` is given.
    """
    center = ctx.points(np.array([recipe["center"]]))[0]
    axes = _pair(recipe["axes"], "axes") * ctx.frame.iod
    roll = np.degrees(np.arctan2(ctx.frame.ex[1], ctx.frame.ex[0]))
    thickness = _thickness(ctx, recipe["width"]) if "width" in recipe else -1
    mask = ctx.empty()
    cv2.ellipse(mask, tuple(int(c) for c in np.round(center * _SCALE)), tuple(int(a) for a in np.round(axes * _SCALE)),
                roll + float(recipe.get("angle", 0.0)), 0, 360, 1, thickness, cv2.LINE_8, _SHIFT)
    return mask


@register_recipe("union", ("parts",))
def union(ctx: GeometryContext, recipe: Mapping[str, Any]) -> np.ndarray:
    """The union of the plain shapes (no clip/minus/condition) listed in ``parts``."""
    mask = ctx.empty()
    for part in recipe["parts"]:
        cv2.bitwise_or(mask, RECIPES[part["kind"]].draw(ctx, part), dst=mask)
    return mask


@register_recipe("image")
def whole_image(ctx: GeometryContext, recipe: Mapping[str, Any]) -> np.ndarray:
    """Every pixel; with ``clip``/``minus`` it makes 'the rest of the image' concepts such as background."""
    mask = ctx.empty()
    mask.fill(1)
    return mask


def draw(ctx: GeometryContext, recipe: Mapping[str, Any], resolve: Callable[[str], np.ndarray]) -> np.ndarray:
    """Draw a compiled recipe as a uint8 0/1 mask; ``resolve`` returns the masks of referenced names."""
    condition = recipe.get("condition")
    if condition is not None and not ctx.attributes.get(condition, False):
        return ctx.empty()
    mask = RECIPES[recipe["kind"]].draw(ctx, recipe)
    for name in recipe.get("clip", []):
        cv2.bitwise_and(mask, resolve(name), dst=mask)
    for name in recipe.get("minus", []):
        cv2.subtract(mask, resolve(name), dst=mask)  # saturates at 0 on 0/1 masks
    return mask
