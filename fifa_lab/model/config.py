"""Configuration of FiFa-MLLM: one dataclass for every component, JSON round trip.

Sizes default to the **tiny** build of DESIGN.md (a small ViT and a small decoder-only LM, random init,
trainable on CPU). ``vocab_size`` is not a free choice: it is set from the trained tokenizer
(:func:`fifa_lab.model.build_tiny` does that) so embedding rows and token ids always agree.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.tasks.registry import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN

PHRASE_START = "<p>"
PHRASE_END = "</p>"
ANSWER_AVERAGING = ("token", "square")  # FiFaConfig.answer_averaging


@dataclass
class FiFaConfig:
    """Every hyper-parameter of FiFa-MLLM.

    The image is square, ``image_size`` pixels a side, cut into ``(image_size / patch_size) ** 2`` patches;
    each ``<image>`` token of a prompt becomes :attr:`num_image_tokens` embeddings in the LM's input.
    """

    image_size: int = 256
    patch_size: int = 16
    # the LM sees the patch grid average-pooled by this factor per side (the mask decoder sees it whole):
    # 2 turns 256 patch tokens into 64, which is most of the LM's cost for short answers
    image_token_pool: int = 2
    # tiny ViT (transformers ViTModel, random init); "conv" stem = hybrid ViT, "patch" = plain 16x16 projection
    vision_stem: str = "conv"
    vision_hidden_size: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    # tiny decoder-only LM (transformers LlamaForCausalLM, random init)
    lm_hidden_size: int = 256
    lm_layers: int = 4
    lm_heads: int = 4
    lm_intermediate_size: int = 512
    vocab_size: int = 0  # 0 = not set yet; the tokenizer decides
    max_length: int = 512  # text tokens (the patch tokens of <image> come on top)
    mask_decoder_dim: int = 64
    # channels of the mask decoder's stem on the raw image at 1/4 resolution (0 = none): patch features
    # alone put mask edges on a patch-sized grid
    pixel_stem_channels: int = 32
    # residual depthwise-separable 3x3 blocks mixing grid and stem in the pixel embeddings (mask_decoder.py;
    # 0 = none, as in checkpoints from before them)
    pixel_refine_blocks: int = 2
    # loss weights: token CE, mask BCE, mask Dice. GLaMM uses Dice 0.5; 1.0 here because small artifact masks let BCE alone settle on empty masks
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 1.0
    # how the token CE averages over a batch: "token" (every answer token alike, transformers' own loss) or
    # "square" (InternVL 2.5's square averaging: a sample's tokens weigh 1/sqrt(its token count)), which
    # keeps one-word answers (Det, Cls) from being drowned by long explanations in the same batch. Default
    # run, seed 0, 80 validation samples per task, token -> square: Cls acc 0.71 -> 0.80 (macro-F1 0.44 ->
    # 0.66), but Det 0.91 -> 0.86 (whole split 0.895 -> 0.867), AGE grounding consistency 0.87 -> 0.57 and
    # TOE METEOR 0.30 -> 0.275; so "token" stays the default and "square" is the lever for Cls
    answer_averaging: str = "token"
    # the forgery head's loss (detection BCE + artifact-mask BCE and Dice on every image); 0 = off
    forgery_weight: float = 1.0
    # the parsing head's loss (per-pixel FICT leaf classification on every image, see parsing_head.py);
    # 0 = no head. Classes: the FICT's 112 leaves + "no concept"
    parsing_weight: float = 1.0
    parsing_classes: int = 113
    # channels of the parsing head's 3x3 layer before its per-pixel classifier (0 = a linear classifier, as
    # in checkpoints from before it)
    parsing_hidden: int = 64
    # the parsing head also reads each pixel's position and adds a learned per-class logit map (False =
    # neither, as in checkpoints from before it)
    parsing_position: bool = True
    # residual depthwise blocks after the parsing head's 3x3 layer, their taps 2, 4, 8, ... cells apart
    # (0 = none, as in checkpoints from before them); need parsing_hidden > 0
    parsing_context_blocks: int = 3
    # the parsing head's output resolution, as the divisor of image_size: 4 (its 1/4 map, as in checkpoints from
    # before the choice) or 2 (that map refined at 1/2 with a stem of its own on the image); 2 needs
    # parsing_hidden > 0
    parsing_resolution: int = 2
    # the concept gate (mask_decoder.py): each [SEG] also picks the parsing classes its phrase names (or none)
    # and its mask is confined to the parsing head's probability of them; needs the parsing head. The
    # weight is that of the pick's loss (mask_decoder.pick_loss)
    concept_gate: bool = True
    concept_weight: float = 0.2
    # forgery classes the forgery head tells apart (fifa_lab.artifacts.FORGERY_CLASSES: real, FS, FR, FE,
    # EFS; trained by cross-entropy inside the forgery loss) and hands to the forensic token; 0 = none
    forgery_classes: int = 5
    # the LM also reads the forgery head's evidence (artifact map peak, mean, covered share) as one more
    # image token, so "is it fake" and "where" can lean on the densely supervised head
    forensic_token: bool = True
    # ... and has the same reading added to its input at every position, behind a tanh gate that starts at 0
    # (see forgery_head.py)
    forensic_condition: bool = True
    # ... and reads, per FICT concept, how much of it the forgery head's artifact map covers and how much of
    # the map lies in it, as one more image token after the forensic one (parsing_head.py); needs the
    # parsing head
    concept_token: bool = True
    special_tokens: list[str] = field(
        default_factory=lambda: [IMAGE_TOKEN, REGION_TOKEN, PHRASE_START, PHRASE_END, SEG_TOKEN])
    pad_token: str = "<pad>"
    bos_token: str = "<s>"
    eos_token: str = "</s>"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.answer_averaging not in ANSWER_AVERAGING:
            raise ValueError(f"answer_averaging must be one of {', '.join(ANSWER_AVERAGING)}, "
                             f"got {self.answer_averaging!r}")
        if self.vision_stem not in ("conv", "patch"):
            raise ValueError(f"vision_stem must be 'conv' or 'patch', got {self.vision_stem!r}")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (the pixel decoder works at 1/4), got {self.image_size}")
        if self.parsing_hidden < 0:
            raise ValueError(f"parsing_hidden must be >= 0 (0 = a linear head), got {self.parsing_hidden}")
        if self.parsing_context_blocks < 0 or (self.parsing_context_blocks and not self.parsing_hidden):
            raise ValueError(f"parsing_context_blocks must be >= 0 and needs parsing_hidden > 0, got "
                             f"{self.parsing_context_blocks} with parsing_hidden={self.parsing_hidden}")
        if self.parsing_resolution not in (2, 4) or (self.parsing_resolution == 2 and not self.parsing_hidden):
            raise ValueError(f"parsing_resolution must be 4 or 2 (2 needs parsing_hidden > 0), got "
                             f"{self.parsing_resolution} with parsing_hidden={self.parsing_hidden}")
        if self.pixel_refine_blocks < 0:
            raise ValueError(f"pixel_refine_blocks must be >= 0 (0 = none), got {self.pixel_refine_blocks}")
        if self.parsing_classes < 2:
            raise ValueError(f"parsing_classes must be >= 2 (leaves + 'no concept'), got {self.parsing_classes}")
        if self.forgery_classes not in (0, len(FORGERY_CLASSES)):
            raise ValueError(f"forgery_classes must be 0 (none) or {len(FORGERY_CLASSES)} "
                             f"({', '.join(FORGERY_CLASSES)}), got {self.forgery_classes}")
        if self.concept_gate and not self.parsing_weight:
            raise ValueError("concept_gate reads the parsing head, which parsing_weight=0 switches off; "
                             "set concept_gate=False too")
        if self.concept_token and not self.parsing_weight:
            raise ValueError("concept_token reads the parsing head, which parsing_weight=0 switches off; "
                             "set concept_token=False too")
        if self.image_token_pool < 1 or self.grid_size % self.image_token_pool:
            raise ValueError(f"image_token_pool {self.image_token_pool} must be >= 1 and divide the "
                             f"{self.grid_size}-patch grid")
        for name in ("vision", "lm"):
            hidden, heads = getattr(self, f"{name}_hidden_size"), getattr(self, f"{name}_heads")
            if hidden % heads:
                raise ValueError(f"{name}_hidden_size {hidden} is not divisible by {name}_heads {heads}")
        missing = {IMAGE_TOKEN, REGION_TOKEN, PHRASE_START, PHRASE_END, SEG_TOKEN} - set(self.special_tokens)
        if missing:
            raise ValueError(f"special_tokens lacks {sorted(missing)}")

    @property
    def grid_size(self) -> int:
        """Patches per side: ``image_size // patch_size``."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches of the encoder grid: ``grid_size ** 2``."""
        return self.grid_size ** 2

    @property
    def num_image_tokens(self) -> int:
        """Embeddings one ``<image>`` expands to in the LM: ``(grid_size / image_token_pool) ** 2`` pooled
        patches, one global token (the grid's mean), with ``forensic_token`` the forgery head's evidence and
        with ``concept_token`` the artifact map read per FICT concept."""
        return (self.grid_size // self.image_token_pool) ** 2 + 1 + int(self.forensic_token) + int(self.concept_token)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FiFaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FiFaConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FiFaConfig:
        """A config written by :meth:`save`; one from before the parsing head (no ``parsing_weight``),
        the concept gate (no ``concept_gate``), the forgery classes (no ``forgery_classes``), the forensic
        condition (no ``forensic_condition``), the pixel refine blocks (no ``pixel_refine_blocks``) or the
        concept token (no ``concept_token``), the parsing layer (no ``parsing_hidden``), the parsing head's
        position (no ``parsing_position``), its context blocks (no ``parsing_context_blocks``) or its 1/2
        refinement (no ``parsing_resolution``) loads without them, as its checkpoint has no weights for them."""
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict):
            data.setdefault("parsing_weight", 0.0)
            data.setdefault("concept_gate", False)
            data.setdefault("forgery_classes", 0)
            data.setdefault("forensic_condition", False)
            data.setdefault("pixel_refine_blocks", 0)
            data.setdefault("concept_token", False)
            data.setdefault("parsing_hidden", 0)
            data.setdefault("parsing_position", False)
            data.setdefault("parsing_context_blocks", 0)
            data.setdefault("parsing_resolution", 4)
        return cls.from_dict(data)
