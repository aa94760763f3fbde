"""Concept colours, translucent mask overlays, label-map pictures and face galleries.

Colours come from golden-ratio hue walks: consecutive steps land far apart on the colour wheel, and
siblings sit next to each other in the tree file, so neighbouring regions never share a hue.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fifa_lab.faces.face import Face
from fifa_lab.fict.tree import ConceptTree, load_tree

RGB = tuple[int, int, int]
GOLDEN = (math.sqrt(5) - 1) / 2
# Saturation/value pairs cycled along a walk: hues that end up close still differ in shade.
_SHADES = ((0.75, 0.95), (0.55, 0.85), (0.9, 0.72))
NO_CONCEPT: RGB = (0, 0, 0)


def distinct_colours(n: int, offset: float = 0.0) -> list[RGB]:
    """``n`` well-separated RGB colours from a golden-ratio hue walk starting at hue ``offset``."""
    colours = []
    for k in range(n):
        saturation, value = _SHADES[k % len(_SHADES)]
        rgb = colorsys.hsv_to_rgb((offset + k * GOLDEN) % 1.0, saturation, value)
        colours.append(tuple(int(round(255 * c)) for c in rgb))
    return colours


def concept_colours(tree: ConceptTree) -> dict[str, RGB]:
    """A fixed colour per concept id: one walk over the leaves in file order, one over the parents.

    Parents are walked shallowest first so the regions (depth 1) take the first, most spread-out
    steps; the root is grey.
    """
    leaves = [c.id for c in tree.leaves()]
    parents = sorted((c.id for c in tree if not tree.is_leaf(c.id) and c.id != tree.root), key=tree.depth)
    colours = dict(zip(leaves, distinct_colours(len(leaves))))
    colours.update(zip(parents, distinct_colours(len(parents), offset=0.08)))
    colours[tree.root] = (128, 128, 128)
    return colours


def overlay(image: np.ndarray, masks: Mapping[str, np.ndarray] | Sequence[np.ndarray],
            colours: Mapping[str, RGB] | Sequence[RGB] | None = None, alpha: float = 0.45,
            outline: bool = True) -> np.ndarray:
    """Paint masks onto an image as translucent colour with an opaque 1 px contour.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey).
        masks: ``{id: (H, W) bool}`` or a list of ``(H, W)`` bool masks; later masks paint over earlier.
        colours: keyed like ``masks`` (by id for a dict, by position for a list); default
            :func:`distinct_colours` in mask order.
        alpha: opacity of the fill.
        outline: draw each mask's contours.

    Returns:
        ``(H, W, 3)`` uint8 RGB; pixels outside every mask are unchanged.
    """
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    keys = list(masks) if isinstance(masks, Mapping) else list(range(len(masks)))
    mask_list = [np.asarray(masks[k], dtype=bool) for k in keys]
    if colours is None:
        colour_list = distinct_colours(len(mask_list))
    elif isinstance(colours, Mapping):
        colour_list = [colours[k] for k in keys]
    else:
        colour_list = list(colours)
    paint = np.zeros_like(image)
    covered = np.zeros(image.shape[:2], dtype=bool)
    for mask, colour in zip(mask_list, colour_list):
        paint[mask] = colour
        covered |= mask
    # One blend over the union, so overlapping masks do not stack their opacity.
    blended = image.astype(np.float32) * (1 - alpha) + paint.astype(np.float32) * alpha
    out = np.where(covered[..., None], np.rint(blended), image).astype(np.uint8)
    if outline:
        for mask, colour in zip(mask_list, colour_list):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
    return out


def _group_index(tree: ConceptTree, depth: int | None) -> tuple[list[str], np.ndarray]:
    """Concept ids shown at ``depth`` (leaves when None) and, per leaf index, its group's index."""
    leaves = tree.leaves()
    if depth is None:
        return [c.id for c in leaves], np.arange(len(leaves))
    groups = [tree.ancestor_at_depth(c.id, depth).id for c in leaves]
    ids = list(dict.fromkeys(groups))
    return ids, np.array([ids.index(g) for g in groups])


def depth_masks(tree: ConceptTree, label_map: np.ndarray, depth: int | None = 1) -> dict[str, np.ndarray]:
    """Visible masks of the concepts at ``depth`` (leaves shallower than it stand for themselves).

    Args:
        label_map: ``(H, W)`` int leaf index per pixel, -1 for none (``Face.label_map``).
        depth: 1 = regions; None = leaves.

    Returns:
        ``{concept_id: (H, W) bool}`` in tree order; the masks partition the labelled pixels.
    """
    ids, group = _group_index(tree, depth)
    # Shifted by one so label -1 maps to group -1 through the lookup table.
    groups = np.concatenate([[-1], group])[np.asarray(label_map) + 1]
    return {key: groups == k for k, key in enumerate(ids)}


def label_map_image(tree: ConceptTree, label_map: np.ndarray, depth: int | None = None,
                    colours: Mapping[str, RGB] | None = None) -> np.ndarray:
    """Colour each pixel by its leaf, or by the leaf's ancestor at ``depth``; black where -1.

    Args:
        label_map: ``(H, W)`` int leaf index per pixel (``Face.label_map``).
        colours: per concept id; default :func:`concept_colours`.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    colours = concept_colours(tree) if colours is None else colours
    ids, group = _group_index(tree, depth)
    lut = np.array([NO_CONCEPT] + [colours[ids[g]] for g in group], dtype=np.uint8)
    return lut[np.asarray(label_map) + 1]


def face_gallery(faces: Sequence[Face | np.ndarray], tree: ConceptTree | None = None,
                 overlay_depth: int | None = None, ncols: int = 4, titles: Sequence[str] | None = None,
                 ) -> Figure:
    """A grid of face images, optionally with the concepts at ``overlay_depth`` overlaid.

    Args:
        faces: :class:`Face` records or ``(H, W, 3)`` uint8 images (images get no overlay).
        tree: the concept tree for overlays; default FICT.
        overlay_depth: None = plain images; 1 = regions, 2 = sub-regions, ... A legend names them.
        titles: one per face; default each face's ``source``.
    """
    if overlay_depth is not None:
        tree = load_tree() if tree is None else tree
        colours = concept_colours(tree)
    images: list[np.ndarray] = []
    shown: dict[str, None] = {}  # concepts drawn on any face, for the legend
    for face in faces:
        image = face.image if isinstance(face, Face) else np.asarray(face)
        if overlay_depth is not None and isinstance(face, Face):
            labels = face.label_map if face.label_map is not None else tree.label_map(
                face.landmarks, face.size, face.attributes)
            masks = {i: m for i, m in depth_masks(tree, labels, overlay_depth).items() if m.any()}
            shown.update(dict.fromkeys(masks))
            image = overlay(image, masks, colours)
        images.append(image)
    if titles is None:
        titles = [face.source if isinstance(face, Face) else "" for face in faces]

    ncols = max(1, min(ncols, len(images)))
    nrows = max(1, math.ceil(len(images) / ncols))
    legend_cols = max(1, min(6, 2 * ncols, len(shown)))
    legend_height = 0.25 * math.ceil(len(shown) / legend_cols) + 0.1 if shown else 0.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.7 * nrows + legend_height), squeeze=False)
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if shown:
        order = {c.id: n for n, c in enumerate(tree)}
        handles = [Patch(color=np.array(colours[i]) / 255, label=tree.get(i).name)
                   for i in sorted(shown, key=order.__getitem__)]
        fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    return fig
