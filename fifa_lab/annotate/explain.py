"""Explanations in the AGE convention: ``<p>phrase</p> [SEG]`` per grounded phrase, plus a text-only form.

Concepts are named with the tree's readable names; when most of a parent's visible leaves are hit, the
parent is named instead ("the left eye" rather than six eye parts). Phrasings are drawn from several
templates per part with a seeded generator, so a dataset's texts vary but are reproducible. A local
causal LM may rephrase a text (:func:`rewrite_with_lm`); it is never required and never downloaded.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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


def strip_grounding(text: str) -> str:
    """The text-only (TOE) form of an AGE text: tags and ``[SEG]`` removed."""
    return re.sub(r"\s+", " ", text.replace("<p>", "").replace("</p>", "").replace("[SEG]", "")).replace(" .", ".").strip()


def check_age(text: str, n_masks: int) -> None:
    """Raise ValueError unless every ``<p>..</p>`` is followed by one ``[SEG]`` and they match ``n_masks``."""
    phrases, segs = text.count("<p>"), text.count("[SEG]")
    if phrases != text.count("</p>") or phrases != segs or segs != n_masks:
        raise ValueError(f"AGE text has {phrases} <p>, {text.count('</p>')} </p> and {segs} [SEG] for {n_masks} masks")


@functools.lru_cache(maxsize=2)
def _local_lm(model_path: str):
    """Tokenizer and model of a local causal LM, loaded once per path (annotating a dataset reuses them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model at {path} (config.json missing): pass the folder of a "
                                "local causal LM saved with save_pretrained, or leave the rewrite off")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return tokenizer, AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()


REWRITE_PROMPT = ("Rewrite this deepfake explanation in fluent English. Keep every <p>...</p> [SEG] exactly as it is "
                  "and in the same order.\nExplanation: {text}\nRewritten:")


def grounded_phrases(text: str) -> list[str]:
    """The ``<p>...</p>`` phrases of an AGE text, in order, each required to be followed by ``[SEG]``."""
    phrases, rest = [], text
    while "<p>" in rest:
        start = rest.index("<p>") + 3
        end = rest.find("</p>", start)
        if end < 0 or not rest[end + 4:].lstrip().startswith("[SEG]"):
            raise ValueError("a <p> phrase is not closed or not followed by [SEG]")
        phrases.append(rest[start:end])
        rest = rest[end + 4:]
    return phrases


def rewrite_with_lm(text: str, model_path: str, max_new_tokens: int = 96) -> tuple[str, bool]:
    """Rephrase an AGE text with a local Hugging Face causal LM; returns ``(text, rewritten)``.

    The model and tokenizer load only from ``model_path`` (``local_files_only``; nothing is downloaded).
    The rewrite is kept only when it has the same grounded phrases in the same order, each followed by
    one ``[SEG]``; otherwise the template text comes back unchanged and ``rewritten`` is False, so the
    i-th ``[SEG]`` always owns the i-th mask.
    """
    import torch

    tokenizer, model = _local_lm(str(model_path))
    inputs = tokenizer(REWRITE_PROMPT.format(text=text), return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    candidate = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    try:
        if candidate and grounded_phrases(candidate) == grounded_phrases(text):
            return candidate, True
    except ValueError:
        pass
    return text, False
