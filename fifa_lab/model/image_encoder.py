"""The one vision encoder of FiFa-MLLM: a tiny ViT (``transformers.ViTModel``, random init, no pooler).

Its features feed the LM (through the projector), the region encoder and the mask decoder: FiFa replaces
GLaMM's CLIP + SAM pair with one face encoder.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import ViTConfig, ViTModel

from fifa_lab.model.config import FiFaConfig


class ImageEncoder(nn.Module):
    """``(B, 3, H, W)`` images in [0, 1] -> patch tokens ``(B, N, Dv)`` and grid ``(B, Dv, H/p, W/p)``."""

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.config = config
        vit_config = ViTConfig(
            image_size=config.image_size, patch_size=config.patch_size, num_channels=3,
            hidden_size=config.vision_hidden_size, num_hidden_layers=config.vision_layers,
            num_attention_heads=config.vision_heads, intermediate_size=4 * config.vision_hidden_size)
        self.vit = ViTModel(vit_config, add_pooling_layer=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``images`` ``(B, 3, H, W)`` float in [0, 1].

        Returns ``(tokens, grid)``: ``tokens`` ``(B, N, Dv)`` with ``N = (H/p) * (W/p)`` in raster order,
        ``grid`` the same features as ``(B, Dv, H/p, W/p)``.
        """
        # ViT expects roughly zero-centred input; [0, 1] -> [-1, 1]
        hidden = self.vit(pixel_values=images * 2.0 - 1.0).last_hidden_state
        tokens = hidden[:, 1:]  # drop CLS: every consumer wants spatial features
        side = self.config.grid_size
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        return tokens, grid
