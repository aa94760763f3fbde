"""The mask decoder: each ``[SEG]`` hidden state becomes a query over light pixel embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig


class MaskDecoder(nn.Module):
    """``[SEG]`` hidden states ``(K, D_lm)`` + encoder grid -> mask logits ``(K, H, W)``."""

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

    def pixel_embeddings(self, grid: torch.Tensor) -> torch.Tensor:
        """Encoder grid ``(B, Dv, H/p, W/p)`` -> pixel embeddings ``(B, C, H/4, W/4)``."""
        size = self.config.image_size // 4
        x = self.stage1(grid)
        # two upsampling stages: x2 first, then whatever is left to reach H/4
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.stage2(x)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, seg_hidden: torch.Tensor, pixel_embeds: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(K, H, W)`` for ``seg_hidden`` ``(K, D_lm)`` over one image's ``(C, H/4, W/4)``."""
        queries = self.query_proj(seg_hidden)  # (K, C)
        low = torch.einsum("kc,chw->khw", queries, pixel_embeds)
        full = self.config.image_size
        return F.interpolate(low[:, None], size=(full, full), mode="bilinear", align_corners=False)[:, 0]
