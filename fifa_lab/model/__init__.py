"""FiFa-MLLM: the model of fifa-lab (DESIGN.md, "Model (FiFa-MLLM)"), one file per component.

``config`` (:class:`FiFaConfig`), ``tokenizer`` (:func:`train_tokenizer`), ``image_encoder`` (tiny ViT),
``region_encoder`` (``<region>`` pooling), ``mask_decoder`` (``[SEG]`` -> mask) and ``fifa_mllm`` (the
composed :class:`FiFaMLLM`). :func:`build_tiny` is the tiny, random-init build.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from fifa_lab.fict.tree import ConceptTree
from fifa_lab.model.config import FiFaConfig
from fifa_lab.model.fifa_mllm import FiFaMLLM, Response, parse_phrases
from fifa_lab.model.tokenizer import train_tokenizer

__all__ = ["FiFaConfig", "FiFaMLLM", "Response", "build_tiny", "parse_phrases", "train_tokenizer"]


def build_tiny(tokenizer_texts: Iterable[str], config: FiFaConfig | None = None, tokenizer_vocab_size: int = 1024,
               concept_tree: ConceptTree | None = None, **overrides: Any) -> FiFaMLLM:
    """Train a tokenizer on ``tokenizer_texts`` and build a random-init tiny :class:`FiFaMLLM`.

    ``overrides`` replace fields of ``config`` (default :class:`FiFaConfig`); ``vocab_size`` is always
    taken from the trained tokenizer. ``concept_tree``: as for :class:`FiFaMLLM`.
    """
    config = dataclasses.replace(config or FiFaConfig(), **overrides)
    tokenizer = train_tokenizer(tokenizer_texts, tokenizer_vocab_size, config)
    config = dataclasses.replace(config, vocab_size=len(tokenizer))
    return FiFaMLLM(config, tokenizer, concept_tree=concept_tree)
