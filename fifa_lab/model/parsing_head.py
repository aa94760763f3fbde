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

The head was a linear 1x1 classifier, so that a concept it separates is one a ``[SEG]`` query can point
at; with the gate the query no longer has to, and ``FiFaConfig.parsing_hidden`` puts a 3x3 layer first,
so each pixel's leaf is read with its neighbours (a leaf's border is where its neighbour begins). Default
run, seed 0, with the concept token, linear -> 64 channels: validation pixel accuracy 0.800 -> 0.824 and
mean leaf IoU 0.317 -> 0.358; on 40 test samples per task RSeg mIoU 0.319 -> 0.376, AGE mask mIoU
0.111 -> 0.129, mask recall 0.10 -> 0.15, grounding consistency 0.61 -> 0.63, Loc unchanged (0.72), TOE
METEOR 0.320 -> 0.294 (the LM's text moves from run to run by about that much). Training took 1,297 s,
against 1,093 s for notebook 04 with the linear head (different hours, so the cost is roughly a fifth).

Resolution bounds the map: the median FICT leaf is 144 pixels at 256, nine cells at 1/4, and even the true
label map read at the cell centres and upsampled back reaches a mean leaf IoU of only 0.62 (0.75 at 1/2;
30 synthetic faces). Within that bound what a cell looks like rarely says which leaf it is: the skin
leaves ("the upper left cheek", "the left chin") differ by *where* they lie. With
``FiFaConfig.parsing_position`` the head reads each cell's ``(x, y)`` beside its embedding and adds a
learned logit map per class (zero at first). Default run, seed 0, without -> with: on the first 60
validation images pixel accuracy 0.818 -> 0.831 and mean leaf IoU 0.368 -> 0.401; on 120 test samples per
task grounding consistency 0.42 -> 0.72, RSeg mIoU 0.405 -> 0.413, AGE mask recall 0.114 -> 0.118, but AGE
mIoU 0.108 -> 0.091 and Cls 0.75 -> 0.72 (Det 0.908 -> 0.917); notebook 04 took 1,230 s. Drawing the FICT
at full resolution from a landmark head's 68 points (heatmaps and soft-argmax on the pixel embeddings)
was tried instead and not kept: its points were 6 pixels off at step 1,200 (30 validation images), and
after 1,600 steps its drawn map (leaf IoU 0.34 on 20 validation images) was no better than this head's
(0.35).

Per leaf, the map was off even where resolution is no excuse (forehead, cheeks: IoU 0.57-0.66 where the
true map read per cell reaches 0.93-0.97): a 3x3 layer at 1/4 sees 12 pixels, and a skin leaf's border is
set by where the jaw line or the eye lies, further away. ``FiFaConfig.parsing_context_blocks`` adds
residual depthwise blocks (``mask_decoder.RefineBlock``) after the 3x3 layer whose taps lie 2, 4 and 8
cells apart, so each cell is read with up to 15 cells (60 pixels) around it. Default run, seed 0, without
-> with three blocks: on the first 60 validation images pixel accuracy 0.825 -> 0.882 and mean leaf IoU
0.390 -> 0.510; on 120 test samples per task RSeg mIoU 0.413 -> 0.529 (0.549 with the full-size gate of
``mask_decoder.py``), AGE mIoU 0.091 -> 0.093, grounding consistency 0.72 -> 0.73, Cls 0.717 -> 0.742,
Det 0.917 -> 0.908, but AGE mask recall 0.118 -> 0.070; whole validation split Det 0.874 -> 0.871, Loc
0.577 -> 0.563. The blocks cost about a fifth of the training time (~0.14 s per block per step of 8 on one
core). Training each cell towards the *share* of each leaf in it (every pixel scored, rather than the
cell's centre) lifts the ceiling of a 1/4 map from 0.63 to 0.77 (the true shares upsampled), but the
trained head did not move (0.383 vs 0.390) and that run's AGE answers grounded worse (mIoU 0.023, one
seed), so the loss reads the centres.

Then resolution bound the small leaves: RSeg scored 0.37 on concepts under 300 pixels (half of them),
0.67 up to 1,500 and 0.90 above (120 test samples). ``FiFaConfig.parsing_resolution = 2`` refines the
1/4 map at 1/2: the 1/4 logits, upsampled, plus a correction (zero at first) classified from the 1/4
features upsampled and a stem of the head's own on the raw image (one stride-2 convolution), through one
residual block; the loss reads the centre of each 2x2 cell. Measured first on the trained 1/4 model with
its features frozen (600 steps of 8 training only the refinement, first 60 validation images): mean leaf
IoU 0.502 -> 0.590, leaves under 300 pixels 0.39 -> 0.51, 300-1,500 pixels 0.70 -> 0.73, larger 0.88 ->
0.90.

With ``FiFaConfig.concept_token`` the head also tells the LM *where* the forgery head sees artifacts, in
the FICT's words: :func:`concept_evidence` reads, per concept, how much of it the artifact map covers and
how much of the artifact map lies in it, and :meth:`ParsingHead.token` turns that into one more image
token. An AGE answer names the concepts it grounds before their masks are decoded, so without it the LM
had to find the edited concepts in the pooled patch tokens alone, and named wrong or repeated ones.
Default run, seed 0, 40 test AGE answers decoded freely, without -> with the token: named-concept
precision 0.09 -> 0.21 and recall 0.03 -> 0.14, mask mIoU 0.036 -> 0.093, mask recall 0.03 -> 0.10,
TOE METEOR 0.309 -> 0.320; but AGE METEOR 0.331 -> 0.304, R-TOE METEOR 0.359 -> 0.318 and grounding
consistency 0.97 -> 0.50: the model without it kept naming one large, well-parsed concept ("the right
eye") whose mask lay in it, the model with it names the small concepts that were edited ("the left
chin"), and the parsing head's 1/4-resolution map lets their masks spill into the neighbours. Whole
validation split: Det 0.901 -> 0.895, Loc mIoU 0.60 -> 0.58 (one seed each).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig
from fifa_lab.model.mask_decoder import RefineBlock

# targets: leaf index + 1, so 0 is "no concept" (background, hair); pixels to skip (an image without a
# label map) carry IGNORE_LABEL
IGNORE_LABEL = -100
FINE_CHANNELS = 32  # width of the parsing head's 1/2-resolution refinement (parsing_resolution = 2)


class ParsingHead(nn.Module):
    """Pixel embeddings ``(B, C, H/4, W/4)`` (and, for a head refined at 1/2, the images ``(B, 3, H, W)`` in
    [0, 1]) -> concept logits ``(B, parsing_classes, H/r, W/r)``, ``r = FiFaConfig.parsing_resolution``."""

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.config = config
        dim, hidden = config.mask_decoder_dim, config.parsing_hidden
        # parsing_position: the pixel's (x, y) joins its embedding, and each class has a learned logit map (zero at
        # first), as skin leaves ("the upper left cheek") differ by where they lie, not by how they look
        inputs = dim + (2 if config.parsing_position else 0)
        # parsing_hidden = 0: linear, as the [SEG] query is; > 0: a 3x3 layer first, so each pixel's leaf is
        # read with its neighbours (the concept gate, not the query, separates concepts)
        self.context = nn.Sequential(nn.Conv2d(inputs, hidden, 3, padding=1), nn.GroupNorm(1, hidden), nn.GELU()) \
            if hidden else None
        # parsing_context_blocks: residual depthwise blocks whose taps lie 2, 4, 8, ... cells apart, so a cell
        # is read with the face around it (where the jaw line runs decides "left chin" vs "under-jaw")
        self.wide = nn.Sequential(*(RefineBlock(hidden, 2 ** (k + 1)) for k in range(config.parsing_context_blocks)))
        self.classify = nn.Conv2d(hidden or inputs, config.parsing_classes, 1)
        # parsing_resolution = 2: the 1/4 logits, upsampled, plus a correction read at 1/2 from the 1/4 features
        # and a stem of its own on the raw image (a small leaf is a few 1/4 cells; its border needs finer cells)
        # (FINE_CHANNELS wide: at 1/2 every layer costs 4x its 1/4 twin)
        if config.parsing_resolution == 2:
            self.fine_stem = nn.Sequential(nn.Conv2d(3, FINE_CHANNELS, 3, stride=2, padding=1),
                                           nn.GroupNorm(1, FINE_CHANNELS), nn.GELU())
            self.fine_project = nn.Conv2d(hidden, FINE_CHANNELS, 1)  # at 1/4, before upsampling
            self.fine = RefineBlock(FINE_CHANNELS)
            self.fine_classify = nn.Conv2d(FINE_CHANNELS, config.parsing_classes, 1)
            nn.init.zeros_(self.fine_classify.weight)  # starts as the upsampled 1/4 logits
            nn.init.zeros_(self.fine_classify.bias)
        else:
            self.fine_stem = self.fine_project = self.fine = self.fine_classify = None
        low = config.image_size // 4
        self.prior = nn.Parameter(torch.zeros(config.parsing_classes, low, low)) if config.parsing_position else None
        # linear, as the forensic token is: the LM's own layers do the reading
        self.to_token = nn.Linear(2 * config.parsing_classes, config.lm_hidden_size) \
            if config.concept_token else None

    def forward(self, pixel: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        if self.prior is not None:
            batch, _, height, width = pixel.shape
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, device=pixel.device, dtype=pixel.dtype),
                                    torch.linspace(-1, 1, width, device=pixel.device, dtype=pixel.dtype), indexing="ij")
            pixel = torch.cat([pixel, torch.stack([xs, ys]).expand(batch, 2, height, width)], 1)
        hidden = pixel if self.context is None else self.wide(self.context(pixel))
        logits = self.classify(hidden)
        if self.prior is not None:
            logits = logits + self.prior
        if self.fine is None:
            return logits
        if images is None:
            raise ValueError("a parsing head refined at 1/2 (parsing_resolution=2) also reads the images (B, 3, H, W)")
        fine = _twice(self.fine_project(hidden)) + self.fine_stem(images * 2.0 - 1.0)
        return _twice(logits) + self.fine_classify(self.fine(fine))

    def token(self, logits: torch.Tensor, artifact_logits: torch.Tensor) -> torch.Tensor:
        """Concept logits ``(B, L, h, w)`` and the forgery head's artifact logits ``(B, H, W)`` -> the concept
        token's embedding ``(B, D)``."""
        if self.to_token is None:
            raise RuntimeError("this model was built with concept_token=False")
        return self.to_token(concept_evidence(logits, artifact_logits))

    def loss(self, logits: torch.Tensor, label_maps: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits`` against ``label_maps`` ``(B, H, W)`` long (leaf + 1, 0 = none,
        ``IGNORE_LABEL`` = unknown), read at the centre of each cell (4x4 pixels at 1/4); zero when every
        pixel is unknown."""
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


def _twice(maps: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C, 2h, 2w)``, bilinear."""
    return F.interpolate(maps, scale_factor=2, mode="bilinear", align_corners=False)


def concept_evidence(logits: torch.Tensor, artifact_logits: torch.Tensor) -> torch.Tensor:
    """Concept logits ``(B, L, h, w)`` and artifact logits ``(B, H, W)`` (``H`` a multiple of ``h``) ->
    ``(B, 2L)``: per concept, the share of it the artifact map covers, then the share of the artifact map
    inside it.

    Both are soft: with ``P`` the concept probability and ``a`` the artifact probability per cell,
    coverage is ``sum(P a) / (sum(P) + 1)`` and share is ``sum(P a) / (sum(a) + 1)``; the ``+ 1`` keeps an
    absent concept and an empty artifact map at 0 rather than 0 / 0.
    """
    if logits.ndim != 4 or artifact_logits.ndim != 3 or logits.shape[0] != artifact_logits.shape[0]:
        raise ValueError(f"concept logits must be (B, L, h, w) and artifact logits (B, H, W), got "
                         f"{tuple(logits.shape)} and {tuple(artifact_logits.shape)}")
    probs = logits.softmax(1)
    artifact = F.adaptive_avg_pool2d(torch.sigmoid(artifact_logits)[:, None], probs.shape[-2:])  # (B, 1, h, w)
    overlap = (probs * artifact).sum((2, 3))  # (B, L)
    coverage = overlap / (probs.sum((2, 3)) + 1)
    share = overlap / (artifact.sum((1, 2, 3))[:, None] + 1)
    return torch.cat([coverage, share], 1)
