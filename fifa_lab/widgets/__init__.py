"""ipywidgets front ends; their callbacks are plain functions tested without a browser."""
from fifa_lab.widgets.region import (
    RegionExplorer,
    concept_at,
    concept_options,
    concept_path,
    highlight,
    visible_mask,
)

__all__ = ["RegionExplorer", "concept_at", "concept_options", "concept_path", "highlight", "visible_mask"]
