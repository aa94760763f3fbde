"""The mask decoder: each ``[SEG]`` hidden state becomes a query over light pixel embeddings.

Pixel embeddings are the encoder grid, upsampled to 1/4 resolution, plus (``pixel_stem_channels`` > 0) a
two-convolution stem on the raw image at the same resolution, so mask edges can follow image edges
rather than the patch grid. ``pixel_refine_blocks`` residual depthwise-separable 3x3 blocks then mix the
two: the sum alone left every pixel linear in a 7-pixel stem window and a bilinear blend of patch
features, so neither a small edit's generator trace (8-pixel period) nor the border between two skin
concepts was seen with its surroundings. Default run, seed 0, all validation images, none -> 2 blocks:
the LM's Det answer 0.895 -> 0.901, Loc mIoU 0.57 -> 0.60, the forgery head's class accuracy
0.81 -> 0.84, the parsing head's mean leaf IoU 0.29 -> 0.32 (pixel accuracy 0.78 -> 0.80), for 2 x 5k
parameters and a training time within the machine's run-to-run noise (1,071 s vs 1,066 s); seed 1: Det 0.891 -> 0.895, Loc 0.59. 4 blocks gave no
more (seed 0: Det 0.898, Loc 0.58). Edits of a few hundred pixels (an iris) are still missed.

**Concept gate** (``FiFaConfig.concept_gate``). A grounded phrase names a FICT concept ("the left
cheek"), and its mask should lie in that concept: that is what grounding consistency measures and what
RSeg asks for outright. Without help a ``[SEG]`` query has to find a concept's pixels from the few samples
naming it, and the default model found none (RSeg mIoU 0.0, teacher-forced best-threshold IoU 0.04, while
the parsing head's own argmax reached 0.34 on the same concepts). So each ``[SEG]`` also *picks*, from
its phrase's token embeddings, parsing classes (a sigmoid per class, trained against the leaves of the
concept the phrase names) or says that its phrase names no concept (an "open" sigmoid, for Loc's "manipulated area"), and
the mask logit adds ``log`` of the parsing head's probability mass on the picked classes (1 when open):
about 0 inside the named concept, about ``log(GATE_FLOOR)`` outside. The query then only has to say
*what* to mark (all of the concept for RSeg, its artifacts for AGE), and a parent concept is the union
of its leaves for free. The pick's loss sums its per-class BCE: averaged over 113 classes, the one or
few named leaves hardly counted and the pick stayed at the class prior (tried in the default run; read
from the LM's state at ``[SEG]`` instead of the phrase, it stayed there too).

Answering, the gate is applied at full size: the parsing logits are upsampled before their softmax, so
a concept's border lies where its logits cross its neighbour's, to the pixel, rather than being blurred
over a 4-pixel cell by upsampling the log-mass. Default run, 120 test samples per task: RSeg mIoU
0.413 -> 0.429 (0.529 -> 0.549 with the parsing context blocks), grounding consistency 0.720 -> 0.716
(0.715 -> 0.734). Training keeps the 1/4 gate: the full-size one cost ~18x the time per ``[SEG]``
(softmax and backward over 113 maps of 256 x 256).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig

GATE_FLOOR = 1e-4  # the least probability mass the gate passes: outside the picked concept a logit drops by ~9
PICK_PRIOR = -4.0  # initial class pick logits: a phrase names a few of the ~113 classes, so start near "not picked"


def gate_mass(pick_logits: torch.Tensor, parse_logits: torch.Tensor) -> torch.Tensor:
    """Pick logits ``(K, L + 1)`` (``L`` parsing classes, then "open") and parsing logits ``(L, h, w)`` ->
    the probability mass ``(K, h, w)`` the gate passes: open + (1 - open) * sum of picked class probabilities."""
    picked = torch.sigmoid(pick_logits)
    mass = torch.einsum("kl,lhw->khw", picked[:, :-1], parse_logits.softmax(0))
    opened = picked[:, -1, None, None]
    return opened + (1 - opened) * mass


def pick_loss(pick_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over ``[SEG]``s of the pick's loss: BCE of "open" plus, where a concept is named (open target
    0), the BCE summed over classes. ``pick_logits`` and 0/1 ``targets`` are ``(K, L + 1)``."""
    bce = F.binary_cross_entropy_with_logits(pick_logits, targets, reduction="none")
    named = 1.0 - targets[:, -1]
    return (bce[:, -1] + named * bce[:, :-1].sum(1)).mean()


class RefineBlock(nn.Module):
    """``(B, C, h, w)`` -> same: ``x + pointwise(GELU(GroupNorm(depthwise3x3(x))))``, the last layer zeroed so
    a new block starts as the identity; ``dilation`` spaces the 3x3 taps that many cells apart."""

    def __init__(self, dim: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=dilation, dilation=dilation, groups=dim),
                                  nn.GroupNorm(1, dim), nn.GELU(),
                                  nn.Conv2d(dim, dim, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


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
        self.refine = nn.ModuleList(RefineBlock(dim) for _ in range(config.pixel_refine_blocks))
        if config.concept_gate:
            # normalised: raw token embeddings are ~0.02 a coordinate, which left the pick at its prior
            # for hundreds of steps
            self.concept_pick = nn.Sequential(nn.LayerNorm(config.lm_hidden_size),
                                              nn.Linear(config.lm_hidden_size, config.parsing_classes + 1))
            nn.init.constant_(self.concept_pick[-1].bias, PICK_PRIOR)
            nn.init.zeros_(self.concept_pick[-1].bias[-1:])  # open at 0.5: the gate starts out of the way
            # a per-query offset: "all of the picked concept" needs a logit above 0 everywhere inside it
            self.query_bias = nn.Linear(config.lm_hidden_size, 1)
        else:
            self.concept_pick = self.query_bias = None

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
        for block in self.refine:
            x = block(x)
        return x

    def forward(self, seg_hidden: torch.Tensor, pixel_embeds: torch.Tensor,
                parse_logits: torch.Tensor | None = None, phrases: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits ``(K, H, W)`` for ``seg_hidden`` ``(K, D_lm)`` over one image's ``(C, H/4, W/4)``;
        a gated decoder also needs that image's parsing logits ``(L, H/r, W/r)`` (``r`` 4 or 2) and the
        ``[SEG]``s' phrase embeddings ``(K, D_lm)`` (``FiFaMLLM._seg_phrases``)."""
        queries = self.query_proj(seg_hidden)  # (K, C)
        low = torch.einsum("kc,chw->khw", queries, pixel_embeds)
        if self.concept_pick is None:
            return self._full_size(low)
        if parse_logits is None or phrases is None:
            raise ValueError("the concept gate needs the image's parsing logits (L, H/4, W/4) and the "
                             "phrase embeddings (K, D)")
        low = low + self.query_bias(seg_hidden)[:, :, None]
        pick = self.concept_pick(phrases)
        if self.training:  # at the parsing map's size: the full-size gate below costs ~18x the 1/4 one to train
            if low.shape[-2:] != parse_logits.shape[-2:]:
                low = F.interpolate(low[:, None], size=parse_logits.shape[-2:], mode="bilinear",
                                    align_corners=False)[:, 0]
            return self._full_size(low + gate_mass(pick, parse_logits).clamp_min(GATE_FLOOR).log())
        # answering, gated at full size: the parsing logits are upsampled before their softmax, so a concept's
        # border follows the logits' crossing rather than a blend of log-masses across a 4-pixel cell
        return self._full_size(low) + gate_mass(pick, self._full_size(parse_logits)).clamp_min(GATE_FLOOR).log()

    def _full_size(self, maps: torch.Tensor) -> torch.Tensor:
        """``(N, h, w)`` -> ``(N, H, W)``, bilinear."""
        full = self.config.image_size
        return F.interpolate(maps[:, None], size=(full, full), mode="bilinear", align_corners=False)[:, 0]
