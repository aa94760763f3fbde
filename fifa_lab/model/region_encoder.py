"""The region encoder: pools encoder features inside a mask (or box) into one ``<region>`` embedding."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig


def boxes_to_masks(boxes: torch.Tensor | Sequence[Sequence[float]], size: tuple[int, int]) -> torch.Tensor:
    """``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in pixels (exclusive maxima) -> ``(B, H, W)`` float masks.

    A pixel is in the box when its centre is; the box is clipped to the image.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (B, 4) as (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    height, width = size
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width) + 0.5
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).float()


class RegionEncoder(nn.Module):
    """Masked average of the encoder grid, then an MLP into the LM's hidden size."""

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Linear(config.vision_hidden_size, config.lm_hidden_size), nn.GELU(),
            nn.Linear(config.lm_hidden_size, config.lm_hidden_size))

    def forward(self, grid: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Pool ``grid`` ``(B, Dv, h, w)`` inside ``masks`` ``(B, H, W)`` -> ``(B, D_lm)``.

        Area interpolation turns each mask into per-patch coverage in [0, 1], so a region smaller than
        a patch still counts, weighted by how much of the patch it covers.
        """
        if masks.ndim != 3 or masks.shape[0] != grid.shape[0]:
            raise ValueError(f"region masks must be (B, H, W) with B={grid.shape[0]}, got {tuple(masks.shape)}")
        masks = masks.to(grid.dtype)
        empty = (masks.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"region mask(s) {empty} of the batch are empty; a region needs at least one pixel")
        weights = F.interpolate(masks[:, None], size=grid.shape[-2:], mode="area")  # (B, 1, h, w)
        pooled = (grid * weights).sum((2, 3)) / weights.sum((2, 3))  # (B, Dv)
        return self.proj(pooled)
