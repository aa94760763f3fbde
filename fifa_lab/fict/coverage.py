"""Which concepts a region (an artifact mask, a box) touches: the one rule used by ground truth and annotator.

A leaf counts when the region covers at least ``min_coverage`` of the leaf's visible area, or when at
least ``min_share`` of the region falls inside the leaf. The first catches small concepts fully
manipulated (an iris), the second large concepts partly manipulated (a cheek under a seam).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fifa_lab.fict.tree import ConceptTree

MIN_COVERAGE = 0.25
MIN_SHARE = 0.1


@dataclass(frozen=True)
class ConceptHit:
    """One concept touched by a region: ``coverage`` = |region ∩ concept| / |concept|,
    ``share`` = |region ∩ concept| / |region|, ``pixels`` = |region ∩ concept| (visible areas)."""

    concept: str
    coverage: float
    share: float
    pixels: int


def concept_overlaps(tree: ConceptTree, label_map: np.ndarray, region: np.ndarray) -> list[ConceptHit]:
    """Overlap of a boolean ``(H, W)`` region with every visible leaf, largest first (zero overlaps omitted)."""
    region = np.asarray(region, dtype=bool)
    if region.shape != label_map.shape:
        raise ValueError(f"region shape {region.shape} does not match the label map {label_map.shape}")
    n = len(tree.leaves())
    labels = np.where(label_map < 0, n, label_map)  # label -1 (no concept) counts in an extra last bin
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels[region], minlength=n + 1)
    total = int(region.sum())
    hits = [ConceptHit(leaf.id, float(inside[k] / areas[k]), float(inside[k] / total), int(inside[k]))
            for k, leaf in enumerate(tree.leaves()) if inside[k] > 0]
    return sorted(hits, key=lambda h: h.pixels, reverse=True)


def concepts_in_region(tree: ConceptTree, label_map: np.ndarray, region: np.ndarray,
                       min_coverage: float = MIN_COVERAGE, min_share: float = MIN_SHARE) -> list[ConceptHit]:
    """The leaves a region counts as touching under the coverage-or-share rule, largest overlap first."""
    return [h for h in concept_overlaps(tree, label_map, region) if h.coverage >= min_coverage or h.share >= min_share]
