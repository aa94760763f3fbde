"""Datasets of fifa-lab: the mask encoding, image records, the dataset build and public formats.

``masks`` and ``records`` load eagerly (they are light and used everywhere); ``build`` and ``formats``
pull in the forge and the annotator, so their names load on first use. That also keeps
``fifa_lab.forge`` / ``fifa_lab.annotate`` free to import ``fifa_lab.data.masks`` without a cycle.
"""
from __future__ import annotations

import importlib
from typing import Any

from fifa_lab.data.masks import RLEError, box_to_mask, decode_rle, empty_rle, encode_rle, mask_to_box
from fifa_lab.data.records import (
    IMAGE_FEATURES,
    SPLIT_RATIOS,
    SPLITS,
    assign_split,
    decode_label_map,
    encode_label_map,
    image_array,
    make_record,
)

_LAZY = {
    "DatasetPaths": "build", "FiFaData": "build", "build_dataset": "build", "load_datasets": "build",
    "ImportResult": "formats", "export_dfa_instruct": "formats", "import_dfa_instruct": "formats",
    "import_ddvqa": "formats", "import_ffpp": "formats", "records_dataset": "formats",
    "samples_dataset": "formats",
}

__all__ = ["IMAGE_FEATURES", "RLEError", "SPLITS", "SPLIT_RATIOS", "assign_split", "box_to_mask",
           "decode_label_map", "decode_rle", "empty_rle", "encode_label_map", "encode_rle", "image_array",
           "make_record", "mask_to_box", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"fifa_lab.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fifa_lab.data' has no attribute {name!r}")
