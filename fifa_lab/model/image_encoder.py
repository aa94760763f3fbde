"""The one vision encoder of FiFa-MLLM: a tiny ViT (``transformers.ViTModel``, random init, no pooler).

Its features feed the LM (through the projector), the region encoder and the mask decoder: FiFa replaces
GLaMM's CLIP + SAM pair with one face encoder.

``vision_stem="conv"`` (the tiny default) replaces the ViT's one-shot 16x16 patch projection by a
stack of stride-2 convolutions, the hybrid ViT of Dosovitskiy et al. (2021) and the "early
convolutions" of Xiao et al. (2021). Forgery artifacts are low-level (seams, blur, checkerboards);
a random-init ViT with a linear patch projection needs far more data to learn such filters than a
CPU budget gives, while a conv stem starts with the right inductive bias.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import ViTConfig, ViTModel

from fifa_lab.model.config import FiFaConfig


class ConvPatchEmbeddings(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, (H/p) * (W/p), Dv)`` through ``log2(p)`` stride-2 3x3 convolutions.

    Drop-in for ``ViTPatchEmbeddings`` (same call and output; the last convolution is ``projection``,
    which ``ViTModel`` reads for the input dtype). Widths double from 32 up to ``Dv``.

    No normalisation layer: a per-image norm (GroupNorm over all channels, as in the mask decoder)
    rescales every image to unit feature energy and so erases the global sharpness and noise level
    that forensic detection reads.
    """

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        stages = int(math.log2(config.patch_size))
        if 2 ** stages != config.patch_size:
            raise ValueError(f"vision_stem='conv' needs a power-of-two patch_size, got {config.patch_size}")
        widths = [3] + [min(32 * 2 ** k, config.vision_hidden_size) for k in range(stages - 1)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]
        self.stages = nn.Sequential(*layers)
        self.projection = nn.Conv2d(widths[-1], config.vision_hidden_size, 3, stride=2, padding=1)
        self.num_patches = config.num_patches

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.projection(self.stages(pixel_values)).flatten(2).transpose(1, 2)


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
        if config.vision_stem == "conv":
            self.vit.embeddings.patch_embeddings = ConvPatchEmbeddings(config)

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
