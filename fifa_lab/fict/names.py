"""Phrases -> FICT concepts: which concept a phrase such as "the left cheek area" names.

One lookup for everything that reads concept names from text: grounding consistency (``fifa_lab.eval``),
the interactive analysis and the training targets of the concept gate (``fifa_lab.train.data``).
"""
from __future__ import annotations

import functools
import re

from fifa_lab.fict.tree import Concept, ConceptTree, load_tree

# Words dropped before matching a phrase to a concept name: leading determiners and a trailing region word.
LEADING_WORDS = frozenset({"the", "a", "an", "this", "that", "these", "those", "his", "her", "its", "their",
                           "subjects", "persons"})
TRAILING_WORDS = frozenset({"region", "regions", "area", "areas", "part", "zone"})
_SPELLING = {"center": "centre"}


def _words(text: str) -> list[str]:
    """Lower-case words: apostrophes removed (``cupid's`` -> ``cupids``), other punctuation and hyphens split."""
    text = text.lower().replace("\u2019", "'").replace("'", "")
    return [_SPELLING.get(w, w) for w in re.split(r"[^a-z0-9]+", text) if w]


@functools.lru_cache(maxsize=8)
def _concept_keys(tree: ConceptTree) -> dict[str, str]:
    """Normalised alias -> concept id: each concept's readable name, its id as words, and the id with a
    trailing side word moved to the front (``nose_ala_left`` -> ``left nose ala``). The root is left out."""
    keys: dict[str, str] = {}
    for concept in tree:
        if concept.id == tree.root:
            continue
        id_words = _words(concept.id.replace("_", " "))
        aliases = [_words(concept.name), id_words]
        sided = [w for w in id_words if w not in ("left", "right")]
        if len(sided) < len(id_words):
            aliases.append([w for w in id_words if w in ("left", "right")] + sided)
        for alias in aliases:
            keys.setdefault(" ".join(alias), concept.id)
    return keys


def resolve_phrase(phrase: str, tree: ConceptTree | None = None) -> Concept | None:
    """The FICT concept a grounded phrase names, or None.

    The phrase is lower-cased, punctuation and apostrophes dropped, ``center`` read as ``centre``, and
    leading determiners (``the``, ``a``, ``his`` ...) removed; it then has to equal a concept's readable
    name (as :mod:`fifa_lab.annotate.explain` writes them: "the right brow ridge", "the eyes"), its id
    as words, or that id with its side word first. A trailing ``region``/``area``/``part``/``zone`` is
    dropped when that gives a match ("the left cheek area"). The root (the whole image) is never named.
    """
    tree = tree or load_tree()
    keys = _concept_keys(tree)
    words = _words(phrase)
    while words and words[0] in LEADING_WORDS:
        words = words[1:]
    for candidate in (words, words[:-1] if len(words) > 1 and words[-1] in TRAILING_WORDS else None):
        if candidate and " ".join(candidate) in keys:
            return tree.get(keys[" ".join(candidate)])
    return None
