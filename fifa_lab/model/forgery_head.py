"""The forgery head: dense real/fake supervision of the shared encoder (SIDA/M2F2-Det style auxiliary heads).

Every training image, whatever its task, carries two labels for free: fake or real, and its artifact
mask. The LM's answer tokens teach the encoder only through a long path (projector, LM, one answer
token), and the ``[SEG]`` masks only on the few samples that have them. This head puts both labels
directly on the encoder: an artifact-mask logit from the mask decoder's pixel embeddings, and a
detection logit read from that map's *evidence* (its peak, its mean and the share it covers), so the
features the LM reads and the ``[SEG]`` queries point at are trained on every sample. Weighted by
``FiFaConfig.forgery_weight`` (0 switches the loss off, for ablations).

Detection reads the artifact map rather than the globally pooled grid because a manipulation is often
local (a recoloured lip): pooling over the whole face dilutes it, the map's peak does not. For the peak
to be evidence it is trained to be: the loss also asks the peak alone to say real or fake, since
per-pixel BCE and Dice let the map keep a fixed hot spot where edits are common (the mouth) on real
faces too. With
``FiFaConfig.forensic_token`` the evidence also becomes one more token after the image patches, so the
LM can answer "fake" and ask for a mask from what the densely supervised head found (as M2F2-Det hands
its detector's output to its LLM).

With ``FiFaConfig.forgery_classes`` the head also tells the forgery classes apart (real, FS, FR, FE,
EFS), from what separates them: how much of the face the artifact map covers and where (a swap's
blended inner face, a reenacted mouth, one edited attribute, a whole synthetic image), read from the
evidence, the map pooled to a ``LAYOUT`` x ``LAYOUT`` grid and the mean pixel embedding. Its class
probabilities join the forensic token. Without it the LM had to find the class in the patch tokens
alone and the default run answered Cls with 0.55-0.73 accuracy at macro-F1 0.18-0.36. With it the head
is right on 0.84 of the validation images (0.81 before the pixel refine blocks of mask_decoder.py), but
the LM's Cls answers rarely name the rarer classes (test 0.825, macro-F1 0.48-0.51, seed 0): the head knows
the class, the LM does not always say it. Giving the
one-token Cls answer more weight makes the LM say it, at the explanations' cost (measured in the comments
on ``trainer.DEFAULT_TASK_RATIOS`` and ``FiFaConfig.answer_averaging``).

With ``FiFaConfig.forensic_condition`` the same reading is also added to the LM's input at every
position (:meth:`ForgeryHead.condition`), scaled by ``tanh`` of a gate that starts at zero (LLaMA-Adapter's
zero gating, Flamingo's tanh gates), so a pretrained LM starts unchanged and the shift grows only as fast
as one scalar learns: a zero-initialised linear map instead grew by the learning rate in every weight at
once and swamped the token embeddings (a two-sample overfit then diverged).

Why both (default run, seed 0, Det accuracy on all 294 validation images at steps 800 / 1200 / 1600):
with neither, the LM learned the real/fake prior while the head was still guessing and never read the
token (0.50 / 0.46 / 0.49 over a head right on 0.87; every AGE question answered "no manipulation");
with the class probabilities in the token, 0.54 / 0.87 / 0.86; with the condition as well, 0.84 / 0.89 /
0.89. One seed each, so the sizes are indicative; the trained gate ends near zero (closing it moves Det
by 0.003), so the condition matters while the LM learns to read the token rather than after.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fifa_lab.model.config import FiFaConfig

EVIDENCE_FEATURES = 3  # peak (mean of the top 0.25% logits), mean logit, covered share (mean probability)
# the peak's share of the map: 10 of 64 x 64 cells, less than a recoloured iris covers (about 12), so the
# smallest edits are not averaged away
PEAK_SHARE = 1 / 400
LAYOUT = 4  # the class reading sees the artifact map pooled to LAYOUT x LAYOUT cells


def artifact_evidence(low: torch.Tensor) -> torch.Tensor:
    """Artifact logits ``(B, h, w)`` -> evidence ``(B, 3)``: peak, mean logit and covered share."""
    flat = low.flatten(1)
    top = flat.topk(max(1, round(flat.shape[1] * PEAK_SHARE)), dim=1).values.mean(1)
    return torch.stack([top, flat.mean(1), torch.sigmoid(flat).mean(1)], 1)


class ForgeryHead(nn.Module):
    """Pixel embeddings ``(B, C, H/4, W/4)`` -> fake logits ``(B,)``, artifact logits ``(B, H, W)``,
    evidence ``(B, 3)`` and class logits ``(B, forgery_classes)`` (``None`` when ``forgery_classes`` is 0).

    :meth:`token` turns the evidence and class probabilities into one LM embedding ``(B, D)``
    (``forensic_token`` builds only).
    """

    def __init__(self, config: FiFaConfig) -> None:
        super().__init__()
        self.config = config
        self.artifact = nn.Conv2d(config.mask_decoder_dim, 1, 1)
        self.detect = nn.Linear(EVIDENCE_FEATURES, 1)
        classes = config.forgery_classes
        features = EVIDENCE_FEATURES + LAYOUT * LAYOUT + config.mask_decoder_dim
        # an MLP: coverage and layout separate the classes only in combination (much and central: a swap)
        self.classify = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, config.mask_decoder_dim), nn.GELU(),
                                      nn.Linear(config.mask_decoder_dim, classes)) if classes else None
        # linear: the LM's own layers do the reading; the token only has to carry a few numbers
        self.to_token = nn.Linear(EVIDENCE_FEATURES + classes, config.lm_hidden_size) \
            if config.forensic_token else None
        self.to_condition = nn.Linear(EVIDENCE_FEATURES + classes, config.lm_hidden_size) \
            if config.forensic_condition else None
        self.condition_gate = nn.Parameter(torch.zeros(())) if config.forensic_condition else None

    def forward(self, pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        low = self.artifact(pixel)[:, 0]  # (B, H/4, W/4)
        evidence = artifact_evidence(low)
        size = self.config.image_size
        artifact = F.interpolate(low[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        classes = None
        if self.classify is not None:
            layout = F.adaptive_avg_pool2d(low[:, None], LAYOUT).flatten(1)  # (B, LAYOUT**2)
            classes = self.classify(torch.cat([evidence, layout, pixel.mean((2, 3))], 1))
        return self.detect(evidence)[:, 0], artifact, evidence, classes

    def token(self, evidence: torch.Tensor, class_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Evidence ``(B, 3)`` and class logits ``(B, forgery_classes)`` (``None`` without classes) -> the
        forensic token's embedding ``(B, D)``."""
        if self.to_token is None:
            raise RuntimeError("this model was built with forensic_token=False")
        return self.to_token(self._reading(evidence, class_logits))

    def condition(self, evidence: torch.Tensor, class_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The same reading as :meth:`token` -> the vector ``(B, D)`` added to every LM input position."""
        if self.to_condition is None:
            raise RuntimeError("this model was built with forensic_condition=False")
        return torch.tanh(self.condition_gate) * self.to_condition(self._reading(evidence, class_logits))

    def _reading(self, evidence: torch.Tensor, class_logits: torch.Tensor | None) -> torch.Tensor:
        """What the LM is handed: the evidence, then the class probabilities where the head has classes."""
        if (class_logits is None) != (self.classify is None):
            raise ValueError(f"this head tells {self.config.forgery_classes} forgery classes apart: pass their "
                             "logits" if self.classify is not None else "this head has no forgery classes")
        return evidence if class_logits is None else torch.cat([evidence, class_logits.softmax(-1)], 1)
