"""Artifact attributes measured from pixels, per concept, and their mapping to the artifact vocabulary.

Every measure compares the fake with the real inside the artifact mask, one concept at a time, and is
computed for all concepts at once with ``np.bincount`` over the label map (one pass per measure):

* ``sharpness``: energy of the Laplacian, fake / real (< ``BLUR_RATIO``: blur, and below
  ``SMOOTH_SKIN_RATIO`` on skin also a texture anomaly; > ``NOISE_RATIO``: noise, unless a grid explains it);
* ``colour_shift``: mean Lab chroma change in Delta-E units (> ``COLOUR_JND`` x 3: colour mismatch);
* ``luminance_shift``: mean L change (> ``LIGHT_SHIFT``: lighting inconsistency);
* ``seam``: extra gradient on the mask boundary, fake minus real, grey levels (> ``SEAM_GRADIENT``: seam);
* ``grid``: energy of a 2x2 checkerboard filter, fake / real (> ``GRID_RATIO``: grid pattern);
* ``structure``: mean gradient change not explained by colour, blur or a grid, grey levels
  (> ``STRUCTURE_CHANGE``: shape distortion);
* ``asymmetry``: for sided concepts whose twin was left alone, how much more the concept now differs
  from its mirror twin (Delta-E; > ``ASYMMETRY_JND``: asymmetry).

Thresholds were set on synthetic forgeries against their ground-truth artifact types (precision and
recall per type; see notebook 03's reliability report) and are parameters.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from fifa_lab.annotate.mask import ImagePair
from fifa_lab.fict.tree import ConceptTree

BLUR_RATIO = 0.6
SMOOTH_SKIN_RATIO = 0.35  # skin this much smoother than its source looks plastic
NOISE_RATIO = 1.8
COLOUR_JND = 2.3
LIGHT_SHIFT = 15.0
SEAM_GRADIENT = 6.0
GRID_RATIO = 1.6
STRUCTURE_CHANGE = 12.0
ASYMMETRY_JND = 12.0
SKIN = ("forehead", "cheeks", "chin_jaw", "nose", "philtrum")


@dataclass(frozen=True)
class Thresholds:
    blur_ratio: float = BLUR_RATIO
    smooth_skin_ratio: float = SMOOTH_SKIN_RATIO
    noise_ratio: float = NOISE_RATIO
    colour: float = 3 * COLOUR_JND
    light: float = LIGHT_SHIFT
    seam: float = SEAM_GRADIENT
    grid: float = GRID_RATIO
    structure: float = STRUCTURE_CHANGE
    asymmetry: float = ASYMMETRY_JND


def _per_label(values: np.ndarray, labels: np.ndarray, where: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``values`` and pixel count per label inside ``where``: two ``(n,)`` arrays."""
    idx = labels[where]
    return (np.bincount(idx, weights=values[where].astype(np.float64), minlength=n),
            np.bincount(idx, minlength=n).astype(np.float64))


def _mean(values: np.ndarray, labels: np.ndarray, where: np.ndarray, n: int) -> np.ndarray:
    total, count = _per_label(values, labels, where, n)
    return np.divide(total, count, out=np.zeros(n), where=count > 0)


def measure(pair: ImagePair, mask: np.ndarray, label_map: np.ndarray, tree: ConceptTree,
            concepts: list[str], thresholds: Thresholds = Thresholds()) -> dict[str, dict]:
    """Attributes of each concept in ``concepts`` inside ``mask``: ``{concept: {"artifacts": [...], measures}}``."""
    n = len(tree.leaves()) + 1
    labels = np.where(label_map < 0, n - 1, label_map)
    fake_grey, real_grey = pair.gray_fake, pair.gray_real

    lap_f = cv2.Laplacian(fake_grey, cv2.CV_32F) ** 2
    lap_r = cv2.Laplacian(real_grey, cv2.CV_32F) ** 2
    sharp = (_mean(lap_f, labels, mask, n) + 1.0) / (_mean(lap_r, labels, mask, n) + 1.0)

    lab_f, lab_r = pair.lab_fake, pair.lab_real
    d_ab = lab_f[..., 1:] - lab_r[..., 1:]
    colour = np.hypot(_mean(d_ab[..., 0], labels, mask, n), _mean(d_ab[..., 1], labels, mask, n))
    light = np.abs(_mean(lab_f[..., 0] - lab_r[..., 0], labels, mask, n))

    def gradient(grey: np.ndarray) -> np.ndarray:
        return cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))

    grad_f, grad_r = gradient(fake_grey), gradient(real_grey)
    mask_u8 = mask.astype(np.uint8)
    ring = (cv2.dilate(mask_u8, np.ones((3, 3), np.uint8)) - cv2.erode(mask_u8, np.ones((3, 3), np.uint8))).astype(bool)
    seam = _mean(grad_f - grad_r, labels, ring, n)
    structure = _mean(np.abs(grad_f - grad_r), labels, mask, n)

    checker = np.array([[1, -1], [-1, 1]], np.float32)
    grid = (_mean(np.abs(cv2.filter2D(fake_grey, -1, checker)), labels, mask, n) + 1.0) / (
        _mean(np.abs(cv2.filter2D(real_grey, -1, checker)), labels, mask, n) + 1.0)

    # Mirror twins: how far apart in colour the pair is now, versus in the real face.
    everywhere = np.ones(mask.shape, bool)
    mean_f = np.stack([_mean(lab_f[..., c], labels, everywhere, n) for c in range(3)], axis=1)
    mean_r = np.stack([_mean(lab_r[..., c], labels, everywhere, n) for c in range(3)], axis=1)

    skin = set(leaf.id for region in SKIN if region in tree for leaf in tree.leaves(region))
    out: dict[str, dict] = {}
    hit = set(concepts)
    for concept in concepts:
        k = tree.leaf_index[concept]
        artifacts = []
        blurred = sharp[k] < thresholds.blur_ratio
        gridded = grid[k] > thresholds.grid
        if blurred:
            artifacts.append("blur")
            if concept in skin and sharp[k] < thresholds.smooth_skin_ratio:
                artifacts.append("texture_anomaly")
        elif sharp[k] > thresholds.noise_ratio and not gridded:
            artifacts.append("noise_inconsistency")
        if colour[k] > thresholds.colour:
            artifacts.append("colour_mismatch")
        if light[k] > thresholds.light:
            artifacts.append("lighting_inconsistency")
        if seam[k] > thresholds.seam:
            artifacts.append("blending_seam")
        if gridded:
            artifacts.append("grid_pattern")
        if structure[k] > thresholds.structure and colour[k] < thresholds.colour and not (blurred or gridded):
            artifacts.append("shape_distortion")
        twin = _twin(tree, concept)
        asym = 0.0
        if twin is not None:
            j = tree.leaf_index[twin]
            asym = float(np.linalg.norm(mean_f[k] - mean_f[j]) - np.linalg.norm(mean_r[k] - mean_r[j]))
            if asym > thresholds.asymmetry and twin not in hit:
                artifacts.append("asymmetry")
        out[concept] = {
            "artifacts": artifacts,
            "sharpness": round(float(sharp[k]), 4), "colour_shift": round(float(colour[k]), 3),
            "luminance_shift": round(float(light[k]), 3), "seam": round(float(seam[k]), 3),
            "grid": round(float(grid[k]), 4), "structure": round(float(structure[k]), 3),
            "asymmetry": round(asym, 3),
        }
    return out


def _twin(tree: ConceptTree, concept: str) -> str | None:
    """The mirror concept (left <-> right) when the tree has one."""
    node = tree.get(concept)
    if node.side == "none":
        return None
    other = "right" if node.side == "left" else "left"
    twin = concept.replace(node.side, other)
    return twin if twin in tree and twin != concept else None


def summary(per_concept: Mapping[str, dict]) -> dict[str, int]:
    """How many concepts show each artifact type."""
    counts: dict[str, int] = {}
    for entry in per_concept.values():
        for artifact in entry["artifacts"]:
            counts[artifact] = counts.get(artifact, 0) + 1
    return counts
