"""FiFa-Annotator: (fake, real) or (fake, mask) -> artifact mask -> FICT concepts -> attributes -> explanation."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fifa_lab.annotate.attributes import DEFAULT_THRESHOLDS, Thresholds, measure
from fifa_lab.annotate.explain import MAX_SEGMENTS, Segment, check_age, compose, rewrite_with_lm, strip_grounding
from fifa_lab.annotate.mask import ImagePair, MaskRule, get_rule
from fifa_lab.fict.coverage import MIN_COVERAGE, MIN_SHARE, concepts_in_region
from fifa_lab.fict.tree import ConceptTree, load_tree


@dataclass
class Annotation:
    """What the annotator made of one image.

    Attributes:
        mask: ``(H, W)`` bool artifact mask.
        concepts: ``[{concept, coverage, artifacts}]``: the FICT leaves the mask touches (the rule of
            :func:`fifa_lab.fict.coverage.concepts_in_region`), largest overlap first.
        text: AGE explanation, ``<p>phrase</p> [SEG]`` per segment.
        toe_text: the same explanation without grounding tags (TOE).
        segments: the grounded phrases in text order; the i-th ``[SEG]`` owns ``segments[i].mask``.
        attributes: ``{leaf id: {number: value}}``, the measured numbers behind each concept's
            artifacts (see :mod:`fifa_lab.annotate.attributes`).
        rule: the mask rule used, or ``"given"`` when the mask was passed in.
        has_artifact: False when nothing differs (or the given mask is empty).
    """

    mask: np.ndarray
    concepts: list[dict[str, Any]]
    text: str
    toe_text: str
    segments: list[Segment] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)
    rule: str = "adaptive"
    has_artifact: bool = True


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]} (width x height)"


def annotate(fake: np.ndarray, real: np.ndarray | None = None, mask: np.ndarray | None = None,
             landmarks: np.ndarray | None = None, *, label_map: np.ndarray | None = None,
             tree: ConceptTree | None = None, rule: str | MaskRule = "adaptive", seed: int = 0,
             min_coverage: float = MIN_COVERAGE, min_share: float = MIN_SHARE,
             thresholds: Thresholds = DEFAULT_THRESHOLDS, face_attributes: Mapping[str, Any] | None = None,
             max_segments: int = MAX_SEGMENTS, rewrite_model: str | Path | None = None,
             **rule_params: Any) -> Annotation:
    """Annotate a fake against its real source, or inside a given artifact mask.

    Args:
        fake: ``(H, W, 3)`` uint8 RGB.
        real: the paired real source, ``(H, W, 3)`` uint8 of the same size. Sizes must match exactly:
            nothing is resized silently (resize or crop first, e.g. ``cv2.resize(real, (W, H))``).
        mask: ``(H, W)`` bool artifact mask to use instead of a rule (e.g. a forgery's ground truth).
            With a real too, the real still serves the attribute measures.
        landmarks: ``(68, 2)`` landmarks of the fake, used to draw the label map when none is given.
        label_map: ``(H, W)`` label map of ``tree`` for the fake (wins over ``landmarks``).
        tree: the concept tree; None is the default FICT.
        rule: a mask rule name of :data:`fifa_lab.annotate.mask.RULES` (``top5``, ``otsu``,
            ``adaptive``) or a `MaskRule`; ``rule_params`` override its parameters.
        seed: picks the phrasings (same seed, same text).
        min_coverage, min_share: the concept rule (:mod:`fifa_lab.fict.coverage`).
        thresholds: where measured numbers become artifact types.
        face_attributes: glasses/beard/... flags for drawing the label map from landmarks.
        max_segments: grounded phrases at most in the text.
        rewrite_model: folder of a local causal LM that rephrases the text (kept only when it keeps
            every grounded phrase; see :func:`fifa_lab.annotate.explain.rewrite_with_lm`).

    Raises:
        ValueError: nothing to compare (no real and no mask), sizes that differ (both named), or no
            way to name concepts (neither landmarks nor a label map).
    """
    tree = load_tree() if tree is None else tree
    fake = np.asarray(fake)
    if fake.ndim != 3 or fake.shape[2] != 3 or fake.dtype != np.uint8:
        raise ValueError(f"fake must be an (H, W, 3) uint8 RGB image, got shape {fake.shape} and dtype {fake.dtype}")
    if real is None and mask is None:
        raise ValueError("nothing to compare: pass the real source image (real=...) or an artifact mask (mask=...)")
    if real is not None:
        real = np.asarray(real)
        if real.shape != fake.shape or real.dtype != np.uint8:
            raise ValueError(f"fake is {_size(fake)} but real is {_size(real) if real.ndim >= 2 else real.shape} "
                             f"({real.dtype}); pass a pixel-aligned uint8 RGB pair of one size: annotate never "
                             "resizes silently")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != fake.shape[:2]:
            raise ValueError(f"fake is {_size(fake)} but the mask is {_size(mask)}; they must match")
    shape = fake.shape[:2]
    if label_map is None:
        if landmarks is None:
            raise ValueError("concepts cannot be named without the face's geometry: pass landmarks=(68, 2) "
                             "(x, y) points of the fake, or label_map=")
        label_map = tree.label_map(landmarks, shape, face_attributes)
    elif label_map.shape != shape:
        raise ValueError(f"fake is {_size(fake)} but the label map is {_size(label_map)}; they must match")

    pair = ImagePair(fake, real) if real is not None else None
    if mask is not None:
        rule_name = "given"
    else:
        chosen = get_rule(rule)
        rule_name = chosen.name
        mask = chosen(pair, **rule_params)
    if not mask.any():
        text, toe_text, _ = compose(tree, {}, mask, label_map, np.zeros(0))
        return Annotation(mask, [], text, toe_text, [], {}, rule_name, has_artifact=False)

    hits = concepts_in_region(tree, label_map, mask, min_coverage, min_share)
    measured = measure(fake, real, mask, label_map, tree, [h.concept for h in hits], thresholds, pair=pair)
    n = len(tree.leaves())
    visible = np.bincount(label_map[label_map >= 0].ravel(), minlength=n)[:n]
    text, toe_text, segments = compose(tree, measured, mask, label_map, visible, seed, max_segments)
    if rewrite_model is not None:
        text, rewritten = rewrite_with_lm(text, rewrite_model)
        if rewritten:
            toe_text = strip_grounding(text)
    check_age(text, len(segments))
    concepts = [{"concept": h.concept, "coverage": round(h.coverage, 4), "artifacts": measured[h.concept]["artifacts"]}
                for h in hits]
    numbers = {key: {k: v for k, v in entry.items() if k != "artifacts"} for key, entry in measured.items()}
    return Annotation(mask, concepts, text, toe_text, segments, numbers, rule_name, True)
