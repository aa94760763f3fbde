"""ipywidgets front ends; their callbacks are plain functions tested without a browser."""
from __future__ import annotations

import importlib
from typing import Any

from fifa_lab.widgets.region import (
    RegionExplorer,
    concept_at,
    concept_options,
    concept_path,
    highlight,
    visible_mask,
)

# The analysis app needs the model (torch, transformers: seconds to import); it is loaded on first use,
# so `from fifa_lab.widgets import RegionExplorer` stays quick.
_ANALYSIS = ("AnalysisApp", "Answer", "Question", "Region", "Subject", "Verdict", "answer_html", "ask",
             "phrase_concepts", "question_choices", "region_from_box", "region_from_concept", "region_from_point",
             "subject_from_photo", "subject_from_record", "verdict")

__all__ = ["RegionExplorer", "concept_at", "concept_options", "concept_path", "highlight", "visible_mask",
           *_ANALYSIS]


def __getattr__(name: str) -> Any:
    if name in _ANALYSIS:
        return getattr(importlib.import_module("fifa_lab.widgets.analysis"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
