"""Matplotlib pictures of concepts: colours, mask overlays, label maps and face galleries."""
from fifa_lab.viz.overlay import (
    concept_colours,
    depth_masks,
    distinct_colours,
    face_gallery,
    label_map_image,
    overlay,
)

__all__ = ["concept_colours", "depth_masks", "distinct_colours", "face_gallery", "label_map_image", "overlay"]
