"""Matplotlib pictures: concept colours, mask overlays, label maps, face and forgery galleries."""
from fifa_lab.viz.forgery import difference_map, forgery_gallery
from fifa_lab.viz.overlay import (
    concept_colours,
    depth_masks,
    distinct_colours,
    face_gallery,
    label_map_image,
    overlay,
)

__all__ = ["concept_colours", "depth_masks", "difference_map", "distinct_colours", "face_gallery", "forgery_gallery",
           "label_map_image", "overlay"]
