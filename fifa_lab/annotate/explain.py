"""Explanations in the AGE convention: ``<p>phrase</p> [SEG]`` per grounded phrase, plus a text-only form.

Concepts are named with the tree's readable names; when most of a parent's visible leaves are hit, the
parent is named instead ("the left eye" rather than six eye parts). Phrasings are drawn from several
templates per part with a seeded generator, so a dataset's texts vary but are reproducible.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fifa_lab.artifacts import ARTIFACTS
from fifa_lab.fict.tree import ConceptTree

OPENINGS = (
    "This face has been manipulated.",
    "The image shows signs of forgery.",
    "Several regions reveal that this face is fake.",
    "This is a forged face.",
)
CLAUSES = (
    "{phrase} shows {artifacts}.",
    "{phrase} has {artifacts}.",
    "In {phrase} there is {artifacts}.",
    "{phrase} reveals {artifacts}.",
)
NO_ARTIFACT = "No manipulation found: the image matches its source and shows no forgery artifacts."
GROUP_SHARE = 0.6  # name a parent when at least this share of its visible leaves is hit
WIDER_SHARE = 0.9  # and a grandparent only when nearly all of its visible leaves are
MAX_SEGMENTS = 5


@dataclass
class Segment:
    """One grounded phrase: its words, the leaf concepts it stands for and its ``(H, W)`` bool mask."""

    phrase: str
    concepts: list[str]
    artifacts: list[str]
    mask: np.ndarray


def group_concepts(tree: ConceptTree, hits: Sequence[str], visible: Mapping[str, int]) -> list[tuple[str, list[str]]]:
    """``[(named concept, its hit leaves)]``: parents replace most-hit children; order follows ``hits``.

    ``visible`` maps leaf ids to their visible pixel counts (leaves not shown do not count against a parent).
    """
    hit = set(hits)
    named: dict[str, list[str]] = {}
    for leaf in hits:
        choice = leaf
        for level, parent in enumerate(tree.ancestors(leaf)[:-1]):  # never the root
            shown = [c.id for c in tree.leaves(parent.id) if visible.get(c.id, 0) > 0]
            share = GROUP_SHARE if level == 0 else WIDER_SHARE
            if len(shown) < 2 or sum(c in hit for c in shown) < share * len(shown):
                break
            choice = parent.id
        named.setdefault(choice, []).append(leaf)
    # A parent absorbs leaves listed separately under it.
    for key in list(named):
        for other in list(named):
            if other != key and key in named and other in named and key in {a.id for a in tree.ancestors(other)}:
                named[key] += named.pop(other)
    return list(named.items())


def _artifact_words(artifacts: Sequence[str]) -> str:
    words = [ARTIFACTS[a][0] for a in artifacts] or ["subtle manipulation traces"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def compose(tree: ConceptTree, per_concept: Mapping[str, dict], concept_masks: Mapping[str, np.ndarray],
            visible: Mapping[str, int], seed: int = 0) -> tuple[str, str, list[Segment]]:
    """The AGE text, the TOE text and the segments for concepts with measured artifacts.

    ``per_concept`` is ordered largest first (see :func:`fifa_lab.annotate.attributes.measure`);
    ``concept_masks`` holds each hit leaf's manipulated ``(H, W)`` bool mask.
    """
    if not per_concept:
        return NO_ARTIFACT, NO_ARTIFACT, []
    rng = np.random.default_rng(seed)
    segments = []
    for named, leaves in group_concepts(tree, list(per_concept), visible)[:MAX_SEGMENTS]:
        artifacts = sorted({a for leaf in leaves for a in per_concept[leaf]["artifacts"]})
        mask = np.logical_or.reduce([concept_masks[leaf] for leaf in leaves])
        segments.append(Segment(f"the {tree.get(named).name}", leaves, artifacts, mask))
    opening = OPENINGS[rng.integers(len(OPENINGS))]
    age, toe = [opening], [opening]
    for segment in segments:
        template = CLAUSES[rng.integers(len(CLAUSES))]
        words = _artifact_words(segment.artifacts)
        age.append(_capitalise(template.format(phrase=f"<p>{segment.phrase}</p> [SEG]", artifacts=words)))
        toe.append(_capitalise(template.format(phrase=segment.phrase, artifacts=words)))
    return " ".join(age), " ".join(toe), segments


def _capitalise(sentence: str) -> str:
    # Capitalise the first word, not the markup in front of it.
    if sentence.startswith("<p>"):
        return "<p>" + sentence[3].upper() + sentence[4:]
    return sentence[0].upper() + sentence[1:]


def check_age(text: str, n_masks: int) -> None:
    """Raise ValueError unless every ``<p>..</p>`` is followed by one ``[SEG]`` and they match ``n_masks``."""
    phrases, segs = text.count("<p>"), text.count("[SEG]")
    if phrases != text.count("</p>") or phrases != segs or segs != n_masks:
        raise ValueError(f"AGE text has {phrases} <p>, {text.count('</p>')} </p> and {segs} [SEG] for {n_masks} masks")
