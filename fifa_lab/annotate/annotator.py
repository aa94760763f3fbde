"""FiFa-Annotator: (fake, real) or (fake, mask) -> artifact mask -> FICT concepts -> attributes -> explanation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fifa_lab.annotate.attributes import Thresholds, measure
from fifa_lab.annotate.explain import Segment, check_age, compose, rewrite_with_lm, strip_grounding
from fifa_lab.annotate.mask import ImagePair, get_rule
from fifa_lab.fict.coverage import MIN_COVERAGE, MIN_SHARE, concepts_in_region
from fifa_lab.fict.tree import ConceptTree, load_tree


@dataclass
class Annotation:
    """What the annotator made of one image.

    Attributes:
        mask: ``(H, W)`` bool artifact mask.
        concepts: ``[{concept, coverage, artifacts}]`` FICT leaves the mask touches, largest first.
        text: AGE explanation, ``<p>phrase</p> [SEG]`` per segment.
        toe_text: the same explanation without grounding tags (TOE).
        segments: the grounded phrases in text order; the i-th ``[SEG]`` owns ``segments[i].mask``.
        attributes: measured numbers per concept (see :mod:`fifa_lab.annotate.attributes`).
        rule: the mask rule used (``"given"`` when the mask was passed in).
        has_artifact: False when nothing differs.
    """

    mask: np.ndarray
    concepts: list[dict[str, Any]]
    text: str
    toe_text: str
    segments: list[Segment] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)
    rule: str = "adaptive"
    has_artifact: bool = True


def annotate(fake: np.ndarray, real: np.ndarray | None = None, mask: np.ndarray | None = None,
             landmarks: np.ndarray | None = None, *, label_map: np.ndarray | None = None,
             tree: ConceptTree | None = None, rule: str = "adaptive", seed: int = 0,
             min_coverage: float = MIN_COVERAGE, min_share: float = MIN_SHARE,
             thresholds: Thresholds = Thresholds(), attributes: dict | None = None,
             rewrite_model: str | None = None) -> Annotation:
    """Annotate a fake against its real source (or a given artifact mask).

    Args:
        fake: ``(H, W, 3)`` uint8 RGB.
        real: the paired real source, same size; needed for the mask rules and the attribute measures.
        mask: ``(H, W)`` bool artifact mask to use instead of a rule (e.g. a forgery's ground truth).
        landmarks: ``(68, 2)`` landmarks of the *fake* (used to draw the label map when none is given).
        label_map: ``(H, W)`` label map of ``tree`` for the fake; overrides ``landmarks``.
        rule: a mask rule of :data:`fifa_lab.annotate.mask.RULES` (``top5``, ``otsu``, ``adaptive``).
        seed: picks the phrasings.
        min_coverage, min_share: the concept rule (:mod:`fifa_lab.fict.coverage`).
        attributes: conditional face attributes for drawing the label map from landmarks.
        rewrite_model: folder of a local causal LM that rephrases the text (kept only when it keeps
            every grounded phrase; see :func:`fifa_lab.annotate.explain.rewrite_with_lm`).

    Raises:
        ValueError: nothing to compare (no real and no mask), sizes that differ, or no way to name
            concepts (neither landmarks nor a label map).
    """
    tree = load_tree() if tree is None else tree
    fake = np.asarray(fake)
    if fake.ndim != 3 or fake.shape[2] != 3 or fake.dtype != np.uint8:
        raise ValueError(f"fake must be an (H, W, 3) uint8 RGB image, got {fake.shape} {fake.dtype}")
    if real is None and mask is None:
        raise ValueError("nothing to compare: pass the real source (real=...) or an artifact mask (mask=...)")
    shape = fake.shape[:2]
    if label_map is None:
        if landmarks is None:
            raise ValueError("concepts cannot be named without geometry: pass landmarks=(68, 2) or label_map=")
        label_map = tree.label_map(landmarks, shape, attributes)
    if label_map.shape != shape:
        raise ValueError(f"label map {label_map.shape} does not match the image {shape}")
    pair = ImagePair(fake, real if real is not None else fake)  # checks the sizes
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape:
            raise ValueError(f"mask {mask.shape} does not match the image {shape}")
        rule_name = "given"
    elif pair.identical:
        mask, rule_name = np.zeros(shape, bool), rule
    else:
        mask, rule_name = get_rule(rule)(pair), rule
    if not mask.any():
        return Annotation(mask, [], *compose(tree, {}, {}, {}, seed)[:2], rule=rule_name, has_artifact=False)

    hits = concepts_in_region(tree, label_map, mask, min_coverage, min_share)
    measured = measure(pair, mask, label_map, tree, [h.concept for h in hits], thresholds) if real is not None else {
        h.concept: {"artifacts": []} for h in hits}
    n = len(tree.leaves())
    visible = dict(zip((leaf.id for leaf in tree.leaves()),
                       np.bincount(np.where(label_map < 0, n, label_map).ravel(), minlength=n + 1)[:n].tolist()))
    concept_masks = {h.concept: mask & (label_map == tree.leaf_index[h.concept]) for h in hits}
    text, toe_text, segments = compose(tree, measured, concept_masks, visible, seed)
    if rewrite_model is not None:
        text, rewritten = rewrite_with_lm(text, rewrite_model)
        toe_text = strip_grounding(text) if rewritten else toe_text
    check_age(text, len(segments))
    concepts = [{"concept": h.concept, "coverage": round(h.coverage, 4), "artifacts": measured[h.concept]["artifacts"]}
                for h in hits]
    return Annotation(mask, concepts, text, toe_text, segments, measured, rule_name, True)
