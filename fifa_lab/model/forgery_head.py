"""The forgery head: dense real/fake supervision of the shared encoder (SIDA/M2F2-Det style auxiliary heads).

Every training image, whatever its task, carries two labels for free: fake or real, and its artifact
mask. The LM's answer tokens teach the encoder only through a long path (projector, LM, one answer
token), and the ``[SEG]`` masks only on the few samples that have them. This head puts both labels
directly on the encoder: a detection logit from the pooled grid and an artifact-mask logit from the
mask decoder's pixel embeddings, so the features the LM reads and the ``[SEG]`` queries point at are
trained on every sample. Weighted by ``FiFaConfig.forgery_weight`` (0 switches it off, for ablations).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig


class ForgeryHead(nn.Module):
    """Encoder grid ``(B, Dv, h, w)`` + pixel embeddings ``(B, C, H/4, W/4)`` -> detection and artifact logits."""

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.config = config
        self.detect = nn.Sequential(nn.LayerNorm(config.vision_hidden_size), nn.Linear(config.vision_hidden_size, 1))
        self.artifact = nn.Conv2d(config.mask_decoder_dim, 1, 1)

    def forward(self, grid: torch.Tensor, pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(fake_logits (B,), artifact_logits (B, H, W))``."""
        fake = self.detect(grid.mean((2, 3)))[:, 0]
        size = self.config.image_size
        artifact = F.interpolate(self.artifact(pixel), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        return fake, artifact
