"""The mask decoder: each ``[SEG]`` hidden state becomes a query over light pixel embeddings.

Pixel embeddings are the encoder grid, upsampled to 1/4 resolution, plus (``pixel_stem_channels`` > 0) a
two-convolution stem on the raw image at the same resolution, so mask edges can follow image edges
rather than the patch grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig


class MaskDecoder(nn.Module):
    """``[SEG]`` hidden states ``(K, D_lm)`` + encoder grid + image -> mask logits ``(K, H, W)``."""

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.mask_decoder_dim
        # GLaMM's text_hidden_fcs: LM hidden state -> decoder query
        self.query_proj = nn.Sequential(
            nn.Linear(config.lm_hidden_size, config.lm_hidden_size), nn.GELU(),
            nn.Linear(config.lm_hidden_size, dim))
        self.stage1 = nn.Sequential(nn.Conv2d(config.vision_hidden_size, dim, 3, padding=1), nn.GroupNorm(1, dim),
                                    nn.GELU())
        self.stage2 = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(1, dim), nn.GELU(),
                                    nn.Conv2d(dim, dim, 1))
        stem = config.pixel_stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 3, stride=2, padding=1), nn.GroupNorm(1, stem), nn.GELU(),
            nn.Conv2d(stem, dim, 3, stride=2, padding=1)) if stem else None

    def pixel_embeddings(self, grid: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Encoder grid ``(B, Dv, H/p, W/p)`` and images ``(B, 3, H, W)`` in [0, 1] -> ``(B, C, H/4, W/4)``."""
        size = self.config.image_size // 4
        x = self.stage1(grid)
        # two upsampling stages: x2 first, then whatever is left to reach H/4
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.stage2(x)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if self.stem is not None:
            x = x + self.stem(images * 2.0 - 1.0)
        return x

    def forward(self, seg_hidden: torch.Tensor, pixel_embeds: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(K, H, W)`` for ``seg_hidden`` ``(K, D_lm)`` over one image's ``(C, H/4, W/4)``."""
        queries = self.query_proj(seg_hidden)  # (K, C)
        low = torch.einsum("kc,chw->khw", queries, pixel_embeds)
        full = self.config.image_size
        return F.interpolate(low[:, None], size=(full, full), mode="bilinear", align_corners=False)[:, 0]
