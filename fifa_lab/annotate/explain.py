"""Explanations in the AGE convention: ``<p>phrase</p> [SEG]`` per grounded phrase, plus a text-only form.

An explanation is an opening sentence, one clause per grounded phrase and a closing sentence, each
drawn from several templates with a seeded generator, so a dataset's texts vary but are reproducible.
Concepts are named with the tree's readable names; when most of a parent's visible leaves are hit, the
parent is named instead ("the left eye" rather than six eye parts). The i-th ``[SEG]`` owns the i-th
segment's mask: the artifact mask inside the concepts the phrase names.

A local causal LM may rephrase a text (:func:`rewrite_with_lm`); it is never required, never
downloaded, and its output is kept only when every grounded phrase survives.
"""
from __future__ import annotations

import functools
import re
import warnings
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
    "The face was edited, and it shows.",
)
# {phrase} is the grounded phrase; {:singular|plural} picks the form that agrees with it. No clause
# starts with the phrase, so phrases stay lower-case and equal to the segments' (and tasks') phrases.
CLAUSES = (
    "In {phrase} there is {artifacts}.",
    "Look at {phrase}: {:it shows|they show} {artifacts}.",
    "{artifacts} can be seen in {phrase}.",
    "There is {artifacts} in {phrase}.",
    "Close inspection of {phrase} reveals {artifacts}.",
    "Notice {phrase}, which {:has|have} {artifacts}.",
    "Here {phrase} {:shows|show} {artifacts}.",
)
CLOSINGS = (
    "These traces mark the image as fake.",
    "Together they point to a manipulated face.",
    "A real photo would not show these artifacts.",
    "",  # sometimes no closing sentence at all
)
NO_ARTIFACT = "No manipulation found: the image matches its source and shows no forgery artifacts."
UNNAMED = "The image differs from its source, but only where no face concept is visible."
NO_ARTIFACT_WORDS = "subtle manipulation traces"
GROUP_SHARE = 0.6  # name a parent when at least this share of its visible leaves is hit
WIDER_SHARE = 0.9  # and a grandparent only when nearly all of its visible leaves are
MAX_SEGMENTS = 5  # longer lists read as inventories; the rest stay in Annotation.concepts


@dataclass
class Segment:
    """One grounded phrase: its words exactly as between ``<p>`` and ``</p>`` (``"the left eye"``), the
    leaf concepts it stands for, their artifact types and its ``(H, W)`` bool mask (the artifact mask
    inside those concepts)."""

    phrase: str
    concepts: list[str]
    artifacts: list[str]
    mask: np.ndarray


@functools.lru_cache(maxsize=8)
def _tree_tables(tree: ConceptTree) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per tree: the leaf indices under every node, and every leaf's ancestors below the root."""
    under = {c.id: np.array([tree.leaf_index[leaf.id] for leaf in tree.leaves(c.id)]) for c in tree}
    ancestors = {leaf.id: [a.id for a in tree.ancestors(leaf.id) if a.id != tree.root] for leaf in tree.leaves()}
    return under, ancestors


def group_concepts(tree: ConceptTree, hits: Sequence[str], visible: np.ndarray) -> list[tuple[str, list[str]]]:
    """``[(named concept, its hit leaves)]``: parents replace most-hit children; order follows ``hits``.

    ``visible`` is the ``(n_leaves,)`` visible pixel count of each leaf; leaves not shown do not count
    against a parent. A parent is named when at least ``GROUP_SHARE`` of its shown leaves are hit, a
    grandparent (or higher) when at least ``WIDER_SHARE`` are; the root is never named.
    """
    under, ancestors = _tree_tables(tree)
    hit = np.zeros(len(visible), bool)
    hit[[tree.leaf_index[h] for h in hits]] = True
    shown = visible > 0
    named: dict[str, list[str]] = {}
    for leaf in hits:
        choice = leaf
        for level, parent in enumerate(ancestors[leaf]):
            members = under[parent][shown[under[parent]]]
            share = GROUP_SHARE if level == 0 else WIDER_SHARE
            if len(members) < 2 or hit[members].sum() < share * len(members):
                break
            choice = parent
        named.setdefault(choice, []).append(leaf)
    # A named parent absorbs leaves named on their own below it (they were walked before it qualified).
    for key in list(named):
        for other in list(named):
            if other != key and key in named and other in named and key in ancestors.get(other, ()):
                named[key] += named.pop(other)
    return list(named.items())


def concept_phrase(tree: ConceptTree, concept_id: str) -> str:
    """How an explanation names a concept in its ``<p>`` phrase: ``"the left chin"``."""
    return f"the {tree.get(concept_id).name}"


def _plural(name: str) -> bool:
    """Whether a readable concept name is grammatically plural ("eyes", "chin and jaw", not "iris")."""
    last = name.split()[-1]
    return " and " in name or (last.endswith("s") and not last.endswith(("is", "us", "ss", "ns"))) or last == "glasses"


def _artifact_words(artifacts: Sequence[str]) -> str:
    words = [ARTIFACTS[a][0] for a in artifacts] or [NO_ARTIFACT_WORDS]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _clause(template: str, phrase: str, plural: bool, artifacts: str) -> str:
    sentence = re.sub(r"\{:([^|}]*)\|([^}]*)\}", lambda m: m.group(2 if plural else 1), template)
    sentence = sentence.format(phrase=phrase, artifacts=artifacts)
    return sentence[0].upper() + sentence[1:]


def compose(tree: ConceptTree, per_concept: Mapping[str, dict], mask: np.ndarray, label_map: np.ndarray,
            visible: np.ndarray, seed: int = 0, max_segments: int = MAX_SEGMENTS) -> tuple[str, str, list[Segment]]:
    """The AGE text, the TOE text and the segments for the hit concepts.

    Args:
        per_concept: ``{leaf id: {"artifacts": [...], ...}}``, largest overlap first.
        mask: ``(H, W)`` bool artifact mask; label_map: ``(H, W)`` leaf indices (-1 none).
        visible: ``(n_leaves,)`` visible pixel count of each leaf.
        seed: picks the templates.
    """
    if not per_concept:
        text = UNNAMED if mask.any() else NO_ARTIFACT
        return text, text, []
    rng = np.random.default_rng(seed)
    n = len(visible)
    labels = np.where(label_map < 0, n, label_map)
    segments = []
    for named, leaves in group_concepts(tree, list(per_concept), visible)[:max_segments]:
        artifacts = sorted({a for leaf in leaves for a in per_concept[leaf]["artifacts"]})
        inside = np.zeros(n + 1, bool)
        inside[[tree.leaf_index[leaf] for leaf in leaves]] = True
        segments.append(Segment(concept_phrase(tree, named), leaves, artifacts, mask & inside[labels]))
    opening = OPENINGS[rng.integers(len(OPENINGS))]
    age, toe = [opening], [opening]
    for segment in segments:
        template = CLAUSES[rng.integers(len(CLAUSES))]
        words = _artifact_words(segment.artifacts)
        plural = _plural(segment.phrase)
        age.append(_clause(template, f"<p>{segment.phrase}</p> [SEG]", plural, words))
        toe.append(_clause(template, segment.phrase, plural, words))
    closing = CLOSINGS[rng.integers(len(CLOSINGS))]
    if closing:
        age.append(closing)
        toe.append(closing)
    return " ".join(age), " ".join(toe), segments


def strip_grounding(text: str) -> str:
    """The text-only (TOE) form of an AGE text: tags and ``[SEG]`` removed."""
    text = text.replace("<p>", "").replace("</p>", "").replace("[SEG]", "")
    return re.sub(r"\s+([.,:;])", r"\1", re.sub(r"\s+", " ", text)).strip()


def check_age(text: str, n_masks: int) -> None:
    """Raise ValueError unless every ``<p>..</p>`` is followed by one ``[SEG]`` and they match ``n_masks``."""
    phrases = grounded_phrases(text)
    if len(phrases) != n_masks or text.count("[SEG]") != n_masks:
        raise ValueError(f"AGE text has {len(phrases)} grounded phrases and {text.count('[SEG]')} [SEG] "
                         f"for {n_masks} masks")


def grounded_phrases(text: str) -> list[str]:
    """The ``<p>...</p>`` phrases of an AGE text in order; ValueError unless each is closed and
    followed by ``[SEG]``."""
    phrases, rest = [], text
    while "<p>" in rest:
        start = rest.index("<p>") + 3
        end = rest.find("</p>", start)
        if end < 0 or "<p>" in rest[start:end] or not rest[end + 4:].lstrip().startswith("[SEG]"):
            raise ValueError("a <p> phrase is not closed or not followed by [SEG]")
        phrases.append(rest[start:end])
        rest = rest[end + 4:]
    if "</p>" in rest:
        raise ValueError("a </p> without its <p>")
    return phrases


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


def rewrite_with_lm(text: str, model_path: str | Path, max_new_tokens: int = 96) -> tuple[str, bool]:
    """Rephrase an AGE text with a local Hugging Face causal LM; returns ``(text, rewritten)``.

    The model and tokenizer load only from ``model_path`` (``local_files_only``; nothing is downloaded).
    The rewrite is kept only when it has the same grounded phrases in the same order, each followed by
    one ``[SEG]``; otherwise the template text comes back unchanged and ``rewritten`` is False, so the
    i-th ``[SEG]`` always owns the i-th mask. A prompt longer than the model's context also falls back
    (with a warning).
    """
    import torch

    tokenizer, model = _local_lm(str(model_path))
    inputs = tokenizer(REWRITE_PROMPT.format(text=text), return_tensors="pt")
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if context is not None and inputs["input_ids"].shape[1] + max_new_tokens > context:
        warnings.warn(f"rewrite skipped: the prompt ({inputs['input_ids'].shape[1]} tokens) plus {max_new_tokens} "
                      f"new tokens exceeds the model's context of {context}", stacklevel=2)
        return text, False
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
