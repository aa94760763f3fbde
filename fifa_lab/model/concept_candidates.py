"""Concept candidates: the concepts the model's own heads see as edited, as the annotator would name them.

An AGE answer names the concepts it grounds ("the left chin") before any mask is decoded, and a phrase's
mask can only match a true mask if it names a concept that was edited. The parsing head knows where each
concept lies and the forgery head where the artifacts are; the annotator's own rule
(:func:`fifa_lab.fict.coverage.concepts_in_region`, then :func:`fifa_lab.annotate.explain.group_concepts`)
applied to those two maps, read at 1/4, names 101 of the 271 true phrases of 120 test AGE answers
(default run, seed 0), while the LM, reading the same maps through the concept token, named 35. Most of
the rest is the artifact map: it is trained on the true mask, while explanations name what the
annotator's mask touches, which for subtle edits lies elsewhere; with the annotator's mask in its place
the rule names 200.

So when the model answers about a whole image, :meth:`FiFaMLLM.generate_batch` lets its ``<p>`` phrases
name only these candidates (when the heads propose any): the LM still decides whether to name any, how
many, in which order, and what it says of them. Same model (no retraining), 120 test AGE answers, whole
vocabulary -> candidates: true concepts named 35 -> 97 of 271 (a named one's mask has IoU 0.58 on
average), mIoU 0.093 -> 0.212, mask recall 0.070 -> 0.244, AP50 0.010 -> 0.099, grounding consistency
0.734 -> 0.906, METEOR 0.300 -> 0.309; Loc (57 answers) 0.691 either way. On 120 validation answers
(more of the hardest class, FE): mIoU 0.055 -> 0.126, mask recall 0.039 -> 0.142, consistency 0.70 ->
0.87, METEOR 0.290 -> 0.287; counting a cell as edited from 0.3 rather than 0.5, or allowing 8 candidates
rather than the annotator's 5, did worse there (mIoU 0.119, 0.106). Questions about a region keep the
whole vocabulary: the candidates are the whole image's.

A second forgery-head map trained on the annotator's mask, proposing in place of the artifact map, was
tried (default run retrained, seed 0, its other modules initialised exactly as without it): it drew
that mask at IoU 0.42 on the test fakes, hardly closer than the artifact map already is (0.40; EFS 0.08,
whose annotated region is a small part of the generator's trace): from the fake alone the annotator's
choice is mostly not to be seen. Its candidates held 116 of the 271 true concepts instead of 101, but
the retrained LM named fewer phrases (213 against 245), so AGE mIoU stayed at 0.21 (0.209), while
grounding consistency fell 0.91 -> 0.83, TOE METEOR 0.33 -> 0.31 and RSeg 0.55 -> 0.52 (120 test
samples per task). Forbidding the answer to end before it had named every candidate lifted mIoU to 0.24
but only by piling up closing sentences and garbled text, so neither was kept.

Handing the candidates to the LM as words instead (their ``<p>`` phrase tokens after the image tokens)
was tried and the LM did not copy them, whether they came from the heads' maps in training (37 of 328
phrases copied at step 1,600) or, for half the images, from the annotation (1 of 115 at step 800).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fifa_lab.annotate.explain import MAX_SEGMENTS, concept_phrase, group_concepts
from fifa_lab.fict.coverage import concepts_in_region
from fifa_lab.fict.tree import ConceptTree

ARTIFACT_PROBABILITY = 0.5  # a cell of the parsing grid counts as edited from this mean artifact probability on


def propose(tree: ConceptTree, parse_logits: torch.Tensor, artifact_logits: torch.Tensor,
            limit: int = MAX_SEGMENTS) -> list[str]:
    """The annotator's concept rule on one image's maps: parsing logits ``(L + 1, h, w)`` (class 0 = no
    concept, class k = leaf k - 1 of ``tree``) and artifact logits ``(H, W)``, ``H`` a multiple of ``h``,
    read on the ``h`` x ``w`` grid -> at most ``limit`` concept phrases as the annotator writes them ("the
    left chin"), largest overlap first; none when no cell is edited."""
    n = len(tree.leaves())
    if parse_logits.ndim != 3 or artifact_logits.ndim != 2 or parse_logits.shape[0] < n + 1:
        raise ValueError(f"parsing logits must be (L + 1, h, w) with L >= the tree's {n} leaves "
                         f"and artifact logits (H, W), got {tuple(parse_logits.shape)} and "
                         f"{tuple(artifact_logits.shape)}")
    size = parse_logits.shape[-2:]
    labels = (parse_logits.argmax(0) - 1).cpu().numpy()
    edited = F.adaptive_avg_pool2d(torch.sigmoid(artifact_logits.detach().float())[None, None], size)[0, 0]
    region = (edited >= ARTIFACT_PROBABILITY).cpu().numpy()
    if not region.any():
        return []
    labels = np.where(labels < n, labels, -1)  # classes beyond the tree's leaves name nothing
    hits = [h.concept for h in concepts_in_region(tree, labels, region)]
    visible = np.bincount(labels[labels >= 0].ravel(), minlength=n)[:n]
    return [concept_phrase(tree, named) for named, _ in group_concepts(tree, hits, visible)[:limit]]
