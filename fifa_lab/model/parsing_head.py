"""The parsing head: dense FICT supervision of the pixel embeddings the ``[SEG]`` queries read.

RSeg ("segment the right eyebrow") and every grounded AGE phrase ask a ``[SEG]`` query to pick out one
named concept. The query can only select what the pixel embeddings separate, and without help they learn
concepts from the few samples whose target mask happens to be that concept (about ten per concept in the
default run): the default model then found no concept at all (RSeg mIoU 0.0). Every training image already
carries its FICT label map, so this head classifies each pixel embedding into its leaf concept (face
parsing, as the FICT is built from), on every sample whatever its task. Measured in the default run: AGE
mask mIoU 0.009 -> 0.034 and Loc 0.735 -> 0.761, but RSeg queries still decoded to empty masks (0.0):
a query alone did not learn to point at a concept. The concept gate of the mask decoder
(``mask_decoder.py``) therefore confines each ``[SEG]`` mask to this head's probability of the concept its
phrase names. Weighted by ``FiFaConfig.parsing_weight`` (0 = no head, no loss, no gate).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig

# targets: leaf index + 1, so 0 is "no concept" (background, hair); pixels to skip (an image without a
# label map) carry IGNORE_LABEL
IGNORE_LABEL = -100


class ParsingHead(nn.Module):
    """Pixel embeddings ``(B, C, H/4, W/4)`` -> concept logits ``(B, parsing_classes, H/4, W/4)``."""

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.config = config
        # linear, as the [SEG] query is: a concept the head separates is one a query can point at
        self.classify = nn.Conv2d(config.mask_decoder_dim, config.parsing_classes, 1)

    def forward(self, pixel: torch.Tensor) -> torch.Tensor:
        return self.classify(pixel)

    def loss(self, logits: torch.Tensor, label_maps: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits`` against ``label_maps`` ``(B, H, W)`` long (leaf + 1, 0 = none,
        ``IGNORE_LABEL`` = unknown), read at the centre of each 4x4 cell; zero when every pixel is unknown."""
        size, low = label_maps.shape[-1], logits.shape[-1]
        step = size // low
        target = label_maps[:, step // 2::step, step // 2::step]
        known = target != IGNORE_LABEL
        if not known.any():
            return logits.sum() * 0.0
        top = int(target[known].max())
        if top >= self.config.parsing_classes or int(target[known].min()) < 0:
            raise ValueError(f"label maps hold classes up to {top}, but the parsing head has "
                             f"{self.config.parsing_classes} (leaf index + 1, 0 = none); set "
                             "FiFaConfig.parsing_classes to the tree's leaf count + 1")
        return F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL)
