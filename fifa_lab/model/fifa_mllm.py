"""FiFa-MLLM: image encoder + projector + region encoder + causal LM + mask decoder.

Data flow (shapes for batch ``B``, text length ``T``, ``N`` patches, LM width ``D``)::

    images (B, 3, H, W) -> ImageEncoder -> tokens (B, P, Dv), grid (B, Dv, H/p, W/p)
    grid -> avg-pool by image_token_pool -> projector -> (B, N, D): the one <image> token of each prompt
        expands into these N embeddings
    images -> MaskDecoder stem (1/4 resolution) + grid -> refine blocks -> pixel embeddings (B, C, H/4, W/4)
    pixel embeddings -> ForgeryHead -> artifact logits, detection logit, evidence (B, 3) -> with
        forensic_token, one more embedding (B, 1, D) after the image's N - 1 others
    pixel embeddings -> ParsingHead -> FICT leaf logits (B, L + 1, H/4, W/4): a loss on every image, and
        what the concept gate of the mask decoder confines each [SEG] mask with; with concept_token, the
        artifact logits read per leaf (B, 2(L + 1)) -> one more embedding (B, 1, D), the image's last
    grid + region mask (B, H, W) -> RegionEncoder -> (B, D): replaces the <region> token's embedding
    LM(inputs_embeds (B, T - 1 + N, D)) -> logits, last hidden states
    hidden state at each [SEG] (K, D) . pixel embeddings (+ concept gate) -> MaskDecoder -> mask logits (K, H, W)

Training sequences are ``<s> prompt target </s>`` with labels only on ``target </s>``; the i-th ``[SEG]``
of a target owns the i-th mask (DESIGN.md, Records).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.masks import box_to_mask
from fifa_lab.fict.tree import ConceptTree, load_tree
from fifa_lab.io import atomic_path
from fifa_lab.model.concept_candidates import propose
from fifa_lab.model.config import PHRASE_END, PHRASE_START, FiFaConfig
from fifa_lab.model.forgery_head import ForgeryHead
from fifa_lab.model.image_encoder import ImageEncoder
from fifa_lab.model.mask_decoder import MaskDecoder, pick_loss
from fifa_lab.model.parsing_head import ParsingHead
from fifa_lab.model.region_encoder import RegionEncoder
from fifa_lab.tasks.fifa11 import LOC_PHRASE, grounding_phrases
from fifa_lab.tasks.registry import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN

IGNORE_INDEX = -100  # label value the LM's cross-entropy skips
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
ARCHITECTURE_FILE = "architecture.json"  # only for pretrained builds: the HF configs to rebuild their modules
TREE_FILE = "concept_tree.json"  # the tree whose leaves the parsing head's classes are (absent: the FICT)
_PHRASE = re.compile(re.escape(PHRASE_START) + r"(.*?)" + re.escape(PHRASE_END), re.S)


@dataclass
class Response:
    """One answer: ``text`` (special tokens kept), its ``<p>`` ``phrases`` and one bool mask per ``[SEG]``.

    ``masks`` is ``(K, H, W)`` bool with ``K`` the number of ``[SEG]`` in ``text``.
    """

    text: str
    phrases: list[str]
    masks: np.ndarray


def parse_phrases(text: str) -> list[str]:
    """The ``<p>...</p>`` phrases of ``text``, stripped, in order."""
    return [phrase.strip() for phrase in _PHRASE.findall(text)]


@dataclass
class _LMRun:
    """What one pass of the LM over an expanded sequence gives (``T'`` = expanded length)."""

    output: Any  # transformers CausalLMOutputWithPast
    input_ids: torch.Tensor  # (B, T'), <image> repeated over its N patch positions
    attention_mask: torch.Tensor  # (B, T')
    grid: torch.Tensor  # (B, Dv, H/p, W/p)
    pixel: torch.Tensor  # (B, C, H/4, W/4) pixel embeddings, shared by the mask decoder and the forgery head
    fake_logits: torch.Tensor  # (B,) the forgery head's detection logits
    artifact_logits: torch.Tensor  # (B, H, W) the forgery head's artifact-mask logits
    evidence: torch.Tensor  # (B, 3) the artifact map's peak, mean logit and covered share
    class_logits: torch.Tensor | None  # (B, forgery_classes) the forgery head's, None without classes
    condition: torch.Tensor | None  # (B, D) added to every LM input position, None without forensic_condition
    parse_logits: torch.Tensor | None  # (B, L + 1, H/r, W/r) the parsing head's (r = parsing_resolution), or None
    embeds: torch.Tensor  # (B, T', D) the LM's input embeddings
    labels: torch.Tensor | None  # (B, T') the answer tokens' ids, IGNORE_INDEX elsewhere; None without labels

    def seg_masks(self, decoder: MaskDecoder, row: int, seg_hidden: torch.Tensor,
                  phrases: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits ``(K, H, W)`` of row ``row``'s ``[SEG]`` hidden states ``(K, D)`` (and, for the
        concept gate, their phrase embeddings ``(K, D)``)."""
        parse = None if self.parse_logits is None else self.parse_logits[row]
        return decoder(seg_hidden, self.pixel[row], parse, phrases)


class FiFaMLLM(nn.Module):
    """The FiFa multimodal LM (tiny build: random-init ViT + Llama, a trained BPE tokenizer).

    ``image_encoder`` and ``lm`` replace the tiny ViT and Llama when given (the pretrained build,
    :func:`fifa_lab.model.pretrained.build_pretrained`); the encoder must return what :class:`ImageEncoder`
    returns and the LM must accept ``inputs_embeds`` like a transformers causal LM. ``concept_tree`` is the
    tree whose leaves the parsing head's classes are (default the FICT), whose concepts answers name.
    """

    def __init__(self, config: FiFaConfig, tokenizer: PreTrainedTokenizerFast, image_encoder: nn.Module | None = None,
                 lm: nn.Module | None = None, concept_tree: ConceptTree | None = None) -> None:
        super().__init__()
        if config.vocab_size != len(tokenizer):
            raise ValueError(f"config.vocab_size={config.vocab_size} but the tokenizer has {len(tokenizer)} ids; "
                             "set config.vocab_size = len(tokenizer)")
        self.config = config
        self.tokenizer = tokenizer
        self.token_ids = {}
        for token in (*config.special_tokens, config.pad_token, config.bos_token, config.eos_token):
            ids = tokenizer.encode(token, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"the tokenizer splits special token {token!r} into {ids}; register it as special")
            self.token_ids[token] = ids[0]
        self.pretrained_build = image_encoder is not None or lm is not None
        self.image_encoder = image_encoder if image_encoder is not None else ImageEncoder(config)
        self.projector = nn.Sequential(
            nn.Linear(config.vision_hidden_size, config.lm_hidden_size), nn.GELU(),
            nn.Linear(config.lm_hidden_size, config.lm_hidden_size))
        self.region_encoder = RegionEncoder(config)
        self.lm = lm if lm is not None else LlamaForCausalLM(LlamaConfig(
            vocab_size=config.vocab_size, hidden_size=config.lm_hidden_size,
            intermediate_size=config.lm_intermediate_size, num_hidden_layers=config.lm_layers,
            num_attention_heads=config.lm_heads, num_key_value_heads=config.lm_heads,
            max_position_embeddings=config.max_length + config.num_image_tokens,
            pad_token_id=self.token_ids[config.pad_token], bos_token_id=self.token_ids[config.bos_token],
            eos_token_id=self.token_ids[config.eos_token], tie_word_embeddings=False))
        self.mask_decoder = MaskDecoder(config)
        self.forgery_head = ForgeryHead(config)
        self.parsing_head = ParsingHead(config) if config.parsing_weight else None
        self.concept_tree = concept_tree or load_tree()
        if self.parsing_head is not None and len(self.concept_tree.leaves()) + 1 > config.parsing_classes:
            raise ValueError(f"the concept tree has {len(self.concept_tree.leaves())} leaves but the parsing head "
                             f"{config.parsing_classes} classes (leaves + 'no concept'); set parsing_classes")

    # --- text ---------------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str], targets: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Tokenize ``<s> prompt [target </s>]`` per sample, right-padded.

        Returns ``input_ids``, ``attention_mask`` ``(B, T)`` and, with ``targets``, ``labels`` ``(B, T)``
        (``-100`` on the prompt and padding). Each prompt needs exactly one ``<image>``.
        """
        if targets is not None and len(targets) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
        rows, label_rows = [], []
        for i, prompt in enumerate(prompts):
            prompt_ids = [self.token_ids[self.config.bos_token], *self._tokenize(prompt)]
            count = prompt_ids.count(self.token_ids[IMAGE_TOKEN])
            if count != 1:
                raise ValueError(f"prompt {i} must contain exactly one {IMAGE_TOKEN} token, found {count}: {prompt!r}")
            ids, labels = prompt_ids, [IGNORE_INDEX] * len(prompt_ids)
            if targets is not None:
                target_ids = [*self._tokenize(targets[i]), self.token_ids[self.config.eos_token]]
                ids, labels = ids + target_ids, labels + target_ids
            if len(ids) > self.config.max_length:
                # truncating could cut a [SEG] and misalign masks, so refuse instead
                raise ValueError(f"sample {i} has {len(ids)} tokens, more than max_length={self.config.max_length}")
            rows.append(ids)
            label_rows.append(labels)
        input_ids, attention_mask = _pad_rows(rows, self.token_ids[self.config.pad_token])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if targets is not None:
            batch["labels"] = _pad_rows(label_rows, IGNORE_INDEX)[0]
        return batch

    def _tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    # --- core pass ----------------------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images must be (B, 3, {size}, {size}) floats in [0, 1], got {tuple(images.shape)}")
        if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
            raise ValueError("images must be floats in [0, 1] (divide uint8 images by 255)")

    def _run(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor | None = None, regions: torch.Tensor | None = None, **lm_kwargs: Any) -> _LMRun:
        """Encode images and regions, splice them into the text embeddings, run the LM once."""
        self._check_images(images)
        batch, size = images.shape[0], self.config.image_size
        if input_ids.shape[0] != batch:
            raise ValueError(f"{batch} images but {input_ids.shape[0]} token rows")
        tokens, grid = self.image_encoder(images)
        pool = self.config.image_token_pool
        if pool > 1:
            tokens = F.avg_pool2d(grid, pool).flatten(2).transpose(1, 2)  # (B, N - 1, Dv), raster order
        # one global token (the mean of the grid) after the patches
        tokens = torch.cat([tokens, grid.mean((2, 3))[:, None]], 1)
        image_embeds = self.projector(tokens)  # (B, N, D)
        pixel = self.mask_decoder.pixel_embeddings(grid, images)  # (B, C, H/4, W/4)
        fake_logits, artifact_logits, evidence, class_logits = self.forgery_head(pixel)
        parse_logits = self.parsing_head(pixel, images) if self.parsing_head is not None else None
        if self.config.forensic_token:  # the head's evidence as the last image token
            image_embeds = torch.cat([image_embeds, self.forgery_head.token(evidence, class_logits)[:, None]], 1)
        if self.config.concept_token:  # where the artifacts lie, per FICT concept, after it
            image_embeds = torch.cat([image_embeds, self.parsing_head.token(parse_logits, artifact_logits)[:, None]], 1)
        embeds = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)

        has_region = (input_ids == self.token_ids[REGION_TOKEN]).any(1)  # (B,)
        if has_region.any():
            if regions is None:
                raise ValueError(f"a prompt contains {REGION_TOKEN} but no regions were given")
            if regions.ndim != 3 or tuple(regions.shape) != (batch, size, size):
                raise ValueError(f"regions must be (B, {size}, {size}) masks, got {tuple(regions.shape)}")
            rows = has_region.nonzero().flatten()
            region_embeds = torch.zeros(batch, embeds.shape[-1], dtype=embeds.dtype, device=embeds.device)
            region_embeds = region_embeds.index_copy(0, rows, self.region_encoder(grid[rows], regions[rows]))
            at_region = (input_ids == self.token_ids[REGION_TOKEN])[..., None]
            embeds = torch.where(at_region, region_embeds[:, None, :], embeds)

        image_id = self.token_ids[IMAGE_TOKEN]
        counts = (input_ids == image_id).sum(1)
        if (counts != 1).any():
            raise ValueError(f"every row needs exactly one {IMAGE_TOKEN} token, counts are {counts.tolist()}")
        # one <image> becomes N patch embeddings; every row grows by N - 1, so rows stay aligned
        num = image_embeds.shape[1]
        at = (input_ids == image_id).int().argmax(1).tolist()
        ones = torch.ones(num, dtype=attention_mask.dtype, device=attention_mask.device)
        image_ids = torch.full((num,), image_id, dtype=input_ids.dtype, device=input_ids.device)
        embeds = _splice(embeds, at, image_embeds)
        mask = _splice(attention_mask, at, ones.expand(batch, num))
        ids = _splice(input_ids, at, image_ids.expand(batch, num))
        if labels is not None:
            labels = _splice(labels, at, torch.full_like(ids[:, :num], IGNORE_INDEX))
        if not bool(mask[:, 0].all()):  # left padding (batched generation): positions count real tokens only
            lm_kwargs.setdefault("position_ids", (mask.cumsum(1) - 1).clamp(min=0))
        condition = self.forgery_head.condition(evidence, class_logits) if self.config.forensic_condition else None
        # embeds stay unconditioned in the run: the concept gate reads phrase embeddings from them
        # no labels to the LM: forward computes the token loss itself (answer_ce), averaged as configured
        output = self.lm(inputs_embeds=embeds if condition is None else embeds + condition[:, None], attention_mask=mask,
                         **lm_kwargs)
        return _LMRun(output=output, input_ids=ids, attention_mask=mask, grid=grid, pixel=pixel,
                      fake_logits=fake_logits, artifact_logits=artifact_logits, evidence=evidence,
                      class_logits=class_logits, condition=condition, parse_logits=parse_logits, embeds=embeds,
                      labels=labels)

    def _seg_phrases(self, run: _LMRun) -> list[torch.Tensor | None]:
        """Per row, one ``(K_b, D)`` embedding per ``[SEG]``: the mean input embedding of the tokens of the
        last ``<p>...</p>`` phrase since the previous ``[SEG]`` (zeros where there is none). The concept
        gate reads the name from here rather than from the LM's state at ``[SEG]``. ``None`` per row
        without a gate."""
        if self.mask_decoder.concept_pick is None:
            return [None] * run.input_ids.shape[0]
        start, end, seg = (self.token_ids[t] for t in (PHRASE_START, PHRASE_END, SEG_TOKEN))
        rows = []
        for b, (ids, mask) in enumerate(zip(run.input_ids.tolist(), run.attention_mask.tolist())):
            found, opened, phrase = [], None, None
            for i, (token, real) in enumerate(zip(ids, mask)):
                if not real:
                    continue
                if token == start:
                    opened = i + 1
                elif token == end and opened is not None:
                    phrase, opened = (opened, i), None
                elif token == seg:
                    found.append(run.embeds[b, phrase[0]:phrase[1]].mean(0) if phrase and phrase[1] > phrase[0]
                                 else run.embeds.new_zeros(run.embeds.shape[-1]))
                    phrase = None
            rows.append(torch.stack(found) if found else run.embeds.new_zeros(0, run.embeds.shape[-1]))
        return rows

    def _seg_hidden(self, run: _LMRun) -> list[torch.Tensor]:
        """Per row, the last-layer hidden states at its ``[SEG]`` tokens: ``(K_b, D)``."""
        hidden = run.output.hidden_states[-1]
        at_seg = (run.input_ids == self.token_ids[SEG_TOKEN]) & run.attention_mask.bool()
        return [hidden[b, at_seg[b]] for b in range(hidden.shape[0])]

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, regions: torch.Tensor | None = None,
                seg_masks: Sequence[torch.Tensor] | None = None, is_fake: torch.Tensor | None = None,
                artifact_masks: torch.Tensor | None = None, label_maps: torch.Tensor | None = None,
                seg_concepts: Sequence[torch.Tensor] | None = None,
                forgery_classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training/eval pass.

        ``images`` ``(B, 3, H, W)`` in [0, 1]; ``input_ids``/``attention_mask``/``labels`` ``(B, T)`` from
        :meth:`encode`; ``regions`` ``(B, H, W)`` masks for rows with ``<region>`` (other rows ignored);
        ``seg_masks`` one ``(K_b, H, W)`` tensor per row, ``K_b`` = that row's ``[SEG]`` count;
        ``is_fake`` ``(B,)``, ``artifact_masks`` ``(B, H, W)`` and ``forgery_classes`` ``(B,)`` long (index in
        :data:`~fifa_lab.artifacts.FORGERY_CLASSES`) the image labels of the forgery head;
        ``label_maps`` ``(B, H, W)`` long the parsing head's (FICT leaf + 1, 0 = none, -100 = unknown);
        ``seg_concepts`` one ``(K_b, L + 2)`` 0/1 tensor per row: the parsing classes each ``[SEG]``'s phrase
        names, then 1 where it names none (the concept gate's targets, used with ``seg_masks``).
        Returns ``loss`` (weighted sum), ``ce``, ``bce``, ``dice``, ``forgery``, ``parsing``, ``concept``
        (zero when not computed) and ``logits`` ``(B, T - 1 + N, V)``.
        """
        run = self._run(images, input_ids, attention_mask, labels, regions, output_hidden_states=True)
        zero = run.output.logits.new_zeros(())
        ce = answer_ce(run.output.logits, run.labels, self.config.answer_averaging) if labels is not None else zero
        bce, dice, forgery, parsing, concept = zero, zero, zero, zero, zero
        size, c = self.config.image_size, self.config
        if seg_masks is not None:
            if len(seg_masks) != images.shape[0]:
                raise ValueError(f"seg_masks has {len(seg_masks)} entries for {images.shape[0]} images")
            logits, targets, picks, pick_targets = [], [], [], []
            gate = self.mask_decoder.concept_pick
            if gate is not None and seg_concepts is not None and len(seg_concepts) != images.shape[0]:
                raise ValueError(f"seg_concepts has {len(seg_concepts)} entries for {images.shape[0]} images")
            phrases = self._seg_phrases(run)
            for b, hidden in enumerate(self._seg_hidden(run)):
                target = seg_masks[b]
                if target.ndim != 3 or tuple(target.shape[1:]) != (size, size) or target.shape[0] != hidden.shape[0]:
                    raise ValueError(f"row {b} has {hidden.shape[0]} {SEG_TOKEN} tokens, so seg_masks[{b}] must be "
                                     f"({hidden.shape[0]}, {size}, {size}); got {tuple(target.shape)}")
                if hidden.shape[0]:
                    logits.append(run.seg_masks(self.mask_decoder, b, hidden, phrases[b]))
                    targets.append(target.to(run.pixel.dtype))
                    if gate is not None and seg_concepts is not None:
                        wanted = seg_concepts[b]
                        if tuple(wanted.shape) != (hidden.shape[0], c.parsing_classes + 1):
                            raise ValueError(f"seg_concepts[{b}] must be ({hidden.shape[0]}, "
                                             f"{c.parsing_classes + 1}), got {tuple(wanted.shape)}")
                        picks.append(gate(phrases[b]))
                        pick_targets.append(wanted.to(hidden.dtype))
            if logits:
                bce, dice = _mask_losses(torch.cat(logits), torch.cat(targets))
            if picks:
                concept = pick_loss(torch.cat(picks), torch.cat(pick_targets))
        if c.forgery_weight and is_fake is not None and artifact_masks is not None:
            if is_fake.shape != (images.shape[0],) or tuple(artifact_masks.shape) != (images.shape[0], size, size):
                raise ValueError(f"is_fake must be (B,) and artifact_masks (B, {size}, {size}); got "
                                 f"{tuple(is_fake.shape)} and {tuple(artifact_masks.shape)}")
            target = artifact_masks.to(run.artifact_logits.dtype)
            label = is_fake.to(run.fake_logits.dtype)
            # the map's peak must itself say real or fake (multiple-instance style): per-pixel BCE and Dice
            # alone let the map keep a fixed hot spot where edits are common (the mouth) on real faces too,
            # which left the peak useless as evidence and hid small edits elsewhere
            peak = run.evidence[:, 0]
            forgery = F.binary_cross_entropy_with_logits(run.fake_logits, label) \
                + F.binary_cross_entropy_with_logits(peak, label) + sum(_mask_losses(run.artifact_logits, target))
            if run.class_logits is not None and forgery_classes is not None:
                if forgery_classes.shape != (images.shape[0],):
                    raise ValueError(f"forgery_classes must be (B,) = ({images.shape[0]},); "
                                     f"got {tuple(forgery_classes.shape)}")
                forgery = forgery + F.cross_entropy(run.class_logits.float(), forgery_classes.long())
        if self.parsing_head is not None and label_maps is not None:
            if tuple(label_maps.shape) != (images.shape[0], size, size):
                raise ValueError(f"label_maps must be (B, {size}, {size}); got {tuple(label_maps.shape)}")
            parsing = self.parsing_head.loss(run.parse_logits, label_maps.long())
        loss = (c.ce_weight * ce + c.bce_weight * bce + c.dice_weight * dice + c.forgery_weight * forgery
                + c.parsing_weight * parsing + c.concept_weight * concept)
        return {"loss": loss, "ce": ce, "bce": bce, "dice": dice, "forgery": forgery, "parsing": parsing,
                "concept": concept, "logits": run.output.logits}

    # --- inference ----------------------------------------------------------------------------------

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        size = self.config.image_size
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (size, size, 3):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"image must be a ({size}, {size}, 3) uint8 array, got {got}")
        device = next(self.parameters()).device
        return torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255.0

    def _region_tensor(self, region: Any, prompt: str) -> torch.Tensor | None:
        """``region`` (None, an ``(H, W)`` mask or an ``(x0, y0, x1, y1)`` box) -> ``(1, H, W)`` float."""
        size = self.config.image_size
        if IMAGE_TOKEN not in prompt:
            raise ValueError(f"the prompt must contain {IMAGE_TOKEN}: {prompt!r}")
        if (REGION_TOKEN in prompt) != (region is not None):
            raise ValueError(f"pass a region exactly when the prompt contains {REGION_TOKEN} "
                             f"(prompt has it: {REGION_TOKEN in prompt}, region given: {region is not None})")
        if region is None:
            return None
        array = np.asarray(region)
        if array.ndim == 1:
            if array.shape != (4,):
                raise ValueError(f"a box region must be (x0, y0, x1, y1), got {region!r}")
            x0, y0, x1, y1 = (float(v) for v in array)
            if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
                raise ValueError(f"box {tuple(array.tolist())} is empty or lies outside the {size}x{size} image")
            array = box_to_mask(array, (size, size))
        elif array.shape != (size, size):
            raise ValueError(f"a region mask must be ({size}, {size}) like the image, got {array.shape}")
        if not array.any():
            raise ValueError("the region mask is empty; a region needs at least one pixel")
        device = next(self.parameters()).device
        return torch.from_numpy(array.astype(np.float32)).to(device)[None]

    @torch.no_grad()
    def generate(self, image: np.ndarray, prompt: str, region: Any = None, max_new_tokens: int = 64,
                 do_sample: bool = False, temperature: float = 1.0, constrain_phrases: bool = True,
                 phrases: Sequence[str] | None = None, propose_concepts: bool = True) -> Response:
        """Answer ``prompt`` about ``image`` ``(H, W, 3)`` uint8; ``region`` is a mask ``(H, W)`` or a box.

        Decodes token by token with the LM's KV cache, then :meth:`ground` turns each ``[SEG]`` into a mask.
        With ``constrain_phrases`` each ``<p>`` phrase of the answer is one of ``phrases``, none twice
        (:class:`PhraseConstraint`; ``phrases=None``: the FICT's concepts as the annotator names them, and
        Loc's phrase, :func:`fifa_lab.tasks.fifa11.grounding_phrases`); ``constrain_phrases=False`` decodes
        them freely. With ``propose_concepts`` (and ``phrases=None``) an answer about the whole image (no
        ``region``) names only the concepts the parsing and forgery heads propose, where they propose any
        (:mod:`fifa_lab.model.concept_candidates`), or Loc's phrase. Loc's phrase never shares an answer
        with a concept's.
        """
        return self.generate_batch([image], [prompt], [region], max_new_tokens=max_new_tokens,
                                   do_sample=do_sample, temperature=temperature,
                                   constrain_phrases=constrain_phrases, phrases=phrases,
                                   propose_concepts=propose_concepts)[0]

    @torch.no_grad()
    def generate_batch(self, images: Sequence[np.ndarray], prompts: Sequence[str],
                       regions: Sequence[Any] | None = None, max_new_tokens: int = 64, do_sample: bool = False,
                       temperature: float = 1.0, constrain_phrases: bool = True,
                       phrases: Sequence[str] | None = None, propose_concepts: bool = True) -> list[Response]:
        """:meth:`generate` for several ``(image, prompt, region)`` at once, decoded together.

        Prompts are left-padded (positions count real tokens only), so every row's next token is the last
        column; each row stops at its own ``</s>``. Greedy answers equal one-at-a-time :meth:`generate` up
        to float rounding. Decoding and the grounding pass (:meth:`ground`) both run batched.
        """
        if len(images) != len(prompts) or (regions is not None and len(regions) != len(prompts)):
            raise ValueError(f"{len(images)} images, {len(prompts)} prompts and "
                             f"{'no' if regions is None else len(regions)} regions: give one of each per answer")
        if not prompts:
            return []
        regions = [None] * len(prompts) if regions is None else list(regions)
        pixels, region_batch = self._batch_tensors(images, prompts, regions)
        rows = [self.encode([prompt])["input_ids"][0].tolist() for prompt in prompts]
        input_ids, attention = _pad_rows(rows, self.token_ids[self.config.pad_token], left=True)
        run = self._run(pixels, input_ids.to(pixels.device), attention.to(pixels.device), regions=region_batch,
                        use_cache=True)
        output, attention = run.output, run.attention_mask
        positions = attention.sum(1, keepdim=True)  # (B, 1): the next token's position in each row
        embed = self.lm.get_input_embeddings()
        eos = self.token_ids[self.config.eos_token]
        # input-only tokens must never be emitted: an answer cannot carry a new image or region
        banned = [self.token_ids[t] for t in (IMAGE_TOKEN, REGION_TOKEN, self.config.pad_token, self.config.bos_token)]
        answers: list[list[int]] = [[] for _ in prompts]
        constraints = self._phrase_constraints(run, regions, phrases, propose_concepts) if constrain_phrases \
            else [None] * len(prompts)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=pixels.device)
        for step in range(max_new_tokens):
            logits = output.logits[:, -1].float().clone()
            logits[:, banned] = float("-inf")
            for row, (answer, constraint) in enumerate(zip(answers, constraints)):
                if constraint is None:
                    continue
                allowed = constraint.allowed(answer)
                if allowed is not None:
                    keep = logits[row, allowed]
                    logits[row] = float("-inf")
                    logits[row, allowed] = keep
                elif not constraint.may_open(answer):
                    logits[row, constraint.start] = float("-inf")
            if do_sample:
                tokens = torch.multinomial(F.softmax(logits / temperature, -1), 1)[:, 0]
            else:
                tokens = logits.argmax(-1)
            for answer, token, finished in zip(answers, tokens.tolist(), done.tolist()):
                if not finished and token != eos:
                    answer.append(token)
            done |= tokens == eos
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            attention = torch.cat([attention, attention.new_ones(len(prompts), 1)], 1)
            # transformers 5 calls the KV cache `cache` (`past_key_values` is deprecated there), 4 only knows the old name
            cache = {"cache": output["cache"]} if "cache" in output.keys() else {
                "past_key_values": output["past_key_values"]}
            next_embeds = embed(tokens[:, None])
            if run.condition is not None:
                next_embeds = next_embeds + run.condition[:, None]
            output = self.lm(inputs_embeds=next_embeds, attention_mask=attention, position_ids=positions,
                             use_cache=True, **cache)
            positions = positions + 1
        return self.ground_batch(images, prompts, answers, regions)

    def _phrase_constraints(self, run: _LMRun, regions: Sequence[Any], phrases: Sequence[str] | None,
                            propose_concepts: bool) -> list[PhraseConstraint]:
        """One :class:`PhraseConstraint` per row of ``run`` (see :meth:`generate` for the vocabulary)."""
        start, end = self.token_ids[PHRASE_START], self.token_ids[PHRASE_END]
        if phrases is not None:
            return [PhraseConstraint([self._tokenize(p) for p in phrases], start, end)] * len(regions)
        loc = self._tokenize(LOC_PHRASE)
        vocabulary = PhraseConstraint([self._tokenize(p) for p in grounding_phrases()], start, end, alone=[loc])
        constraints = []
        for row, region in enumerate(regions):
            proposed = propose(self.concept_tree, run.parse_logits[row], run.artifact_logits[row]) \
                if propose_concepts and region is None and run.parse_logits is not None else []
            constraints.append(PhraseConstraint([self._tokenize(p) for p in proposed] + [loc], start, end,
                                                alone=[loc]) if proposed else vocabulary)
        return constraints

    def _batch_tensors(self, images: Sequence[np.ndarray], prompts: Sequence[str],
                       regions: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Checked images ``(B, 3, H, W)`` and regions ``(B, H, W)`` (zeros on rows without one; None when
        no row has one)."""
        pixels = torch.cat([self._image_tensor(image) for image in images])
        region_rows = [self._region_tensor(region, prompt) for region, prompt in zip(regions, prompts)]
        if all(row is None for row in region_rows):
            return pixels, None
        blank = pixels.new_zeros(1, *pixels.shape[2:])
        return pixels, torch.cat([blank if row is None else row for row in region_rows])

    @torch.no_grad()
    def choice_probs(self, image: np.ndarray, prompt: str, choices: Sequence[str], region: Any = None,
                     head: bool = False) -> np.ndarray:
        """Probability of each answer in ``choices`` (``(C,)``, sums to 1): the softmax over choices of
        each one's teacher-forced log-likelihood (its tokens then ``</s>``). Gives closed questions a
        score for AUC/EER.

        ``head=True`` multiplies each choice's probability by the forgery head's probability of the same
        answer and renormalises (a product of two experts of the one model): its class probabilities when
        the choices are forgery classes (Cls), its detection probability when they are ``real``/``fake``
        (Det). The head judges the whole image, so a question about a ``region`` cannot use it.
        """
        if not choices:
            raise ValueError("choices must name at least one answer")
        if head and region is not None:
            raise ValueError("head=True fuses the forgery head, which judges the whole image, not a region")
        images = self._image_tensor(image)
        regions = self._region_tensor(region, prompt)
        prompt_ids = self.encode([prompt])["input_ids"][0].tolist()
        scores = []
        for choice in choices:
            answer = [*self._tokenize(choice), self.token_ids[self.config.eos_token]]
            ids = torch.tensor([prompt_ids + answer], device=images.device)
            run = self._run(images, ids, torch.ones_like(ids), regions=regions)
            steps = run.output.logits[0, -len(answer) - 1:-1].float().log_softmax(-1)  # the answer's positions
            scores.append(float(steps[torch.arange(len(answer)), torch.tensor(answer)].sum()))
        scores = torch.tensor(scores)
        if head:  # every run saw the same image, so the last one's head output serves
            scores = scores + _head_answer_probs(run, choices).cpu().clamp_min(1e-12).log()
        return scores.softmax(0).numpy()

    @torch.no_grad()
    def ground(self, image: np.ndarray, prompt: str, answer: str | Sequence[int], region: Any = None) -> Response:
        """Turn an ``answer`` (text or token ids) to ``prompt`` into a :class:`Response`.

        One pass over ``prompt + answer`` gives the hidden state at each ``[SEG]`` of the answer; each
        becomes a mask (logit > 0). ``masks`` has exactly one entry per ``[SEG]``.
        """
        return self.ground_batch([image], [prompt], [answer], [region])[0]

    @torch.no_grad()
    def ground_batch(self, images: Sequence[np.ndarray], prompts: Sequence[str],
                     answers: Sequence[str | Sequence[int]], regions: Sequence[Any] | None = None) -> list[Response]:
        """:meth:`ground` for several answers in one right-padded pass (padding after a row's last token
        changes none of its hidden states)."""
        regions = [None] * len(prompts) if regions is None else list(regions)
        if not len(images) == len(prompts) == len(answers) == len(regions):
            raise ValueError(f"{len(images)} images, {len(prompts)} prompts, {len(answers)} answers and "
                             f"{len(regions)} regions: give one of each per answer")
        pixels, region_batch = self._batch_tensors(images, prompts, regions)
        skip = {self.token_ids[t] for t in (self.config.pad_token, self.config.bos_token, self.config.eos_token)}
        seg = self.token_ids[SEG_TOKEN]
        answer_rows, rows = [], []
        for prompt, answer in zip(prompts, answers):
            ids = self._tokenize(answer) if isinstance(answer, str) else [int(t) for t in answer]
            ids = [t for t in ids if t not in skip]
            if {self.token_ids[IMAGE_TOKEN], self.token_ids[REGION_TOKEN]} & set(ids):
                raise ValueError(f"an answer cannot contain {IMAGE_TOKEN} or {REGION_TOKEN}")
            answer_rows.append(ids)
            rows.append(self.encode([prompt])["input_ids"][0].tolist() + ids)
        input_ids, attention = _pad_rows(rows, self.token_ids[self.config.pad_token])
        run = self._run(pixels, input_ids.to(pixels.device), attention.to(pixels.device), regions=region_batch,
                        output_hidden_states=True)
        size = self.config.image_size
        responses = []
        for b, (hidden, phrase, ids) in enumerate(zip(self._seg_hidden(run), self._seg_phrases(run), answer_rows)):
            # only the answer's [SEG] tokens own masks; a [SEG] typed into the prompt does not
            first = hidden.shape[0] - ids.count(seg)
            hidden, phrase = hidden[first:], None if phrase is None else phrase[first:]
            if hidden.shape[0]:
                masks = (run.seg_masks(self.mask_decoder, b, hidden, phrase) > 0).cpu().numpy()
            else:
                masks = np.zeros((0, size, size), dtype=bool)
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            responses.append(Response(text=text, phrases=parse_phrases(text), masks=masks))
        return responses

    # --- persistence and inspection -----------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` under ``directory``, atomically:
        an interrupted save leaves the previous checkpoint there, never a half-written one.

        A pretrained build also writes ``architecture.json`` (its HF configs and LoRA settings). The concept
        tree goes to ``concept_tree.json``."""
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            self.config.save(tmp / CONFIG_FILE)
            if self.pretrained_build:
                from fifa_lab.model.pretrained import architecture_of  # lazy: pretrained imports this module
                (tmp / ARCHITECTURE_FILE).write_text(json.dumps(architecture_of(self), indent=2) + "\n")
            (tmp / TREE_FILE).write_text(json.dumps(self.concept_tree.to_dict()) + "\n")
            save_model(self, str(tmp / WEIGHTS_FILE))
            self.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> FiFaMLLM:
        """Load a model written by :meth:`save_pretrained`; nothing is downloaded."""
        directory = Path(directory)
        needed = [directory / CONFIG_FILE, directory / WEIGHTS_FILE, directory / TOKENIZER_DIR / "tokenizer.json"]
        missing = [str(path) for path in needed if not path.exists()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a FiFa-MLLM checkpoint: missing {', '.join(missing)}; "
                                    "pass a folder written by FiFaMLLM.save_pretrained (e.g. runs/<name>/model/best)")
        config = FiFaConfig.load(directory / CONFIG_FILE)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory / TOKENIZER_DIR))
        tree_file = directory / TREE_FILE  # a checkpoint from before it was saved: the FICT
        tree = load_tree(tree_file) if tree_file.exists() else None
        if (directory / ARCHITECTURE_FILE).exists():
            from fifa_lab.model.pretrained import modules_from_architecture  # lazy: pretrained imports this module
            architecture = json.loads((directory / ARCHITECTURE_FILE).read_text())
            image_encoder, lm = modules_from_architecture(architecture)
            model = cls(config, tokenizer, image_encoder=image_encoder, lm=lm, concept_tree=tree)
        else:
            model = cls(config, tokenizer, concept_tree=tree)
        load_model(model, str(directory / WEIGHTS_FILE), device=str(device))
        return model.to(device).eval()

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component plus ``total``."""
        parts = ("image_encoder", "projector", "region_encoder", "lm", "mask_decoder", "forgery_head", "parsing_head")
        counts = {name: sum(p.numel() for p in getattr(self, name).parameters()) for name in parts
                  if getattr(self, name) is not None}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


class PhraseConstraint:
    """Which tokens may come next inside a ``<p>`` phrase: ones that continue a phrase of the vocabulary
    not yet used in the answer (``</p>`` once a phrase is whole).

    AGE grounds FICT concepts, so its phrases come from a closed vocabulary, the one the annotator writes
    (``fifa_lab.tasks.fifa11.grounding_phrases``); the annotator never names a concept twice in one answer.
    Decoded freely, the tiny default model repeated phrases (20 repeats in 40 test AGE answers), and a
    repeat can never match a second true mask under one-to-one matching; banning only a repeat's last
    word made it write phrases that name no concept ("the left face line", 7 of 67). Default run, seed 0,
    40 test AGE answers, free -> constrained: mask mIoU 0.093 -> 0.111, named-concept precision 0.21 ->
    0.24 and recall 0.14 -> 0.16, grounding consistency 0.50 -> 0.61, METEOR 0.304 -> 0.306. Without the
    concept token (``FiFaConfig.concept_token``) the model repeated one well-parsed concept ("the right
    eye") and constraining it moved grounding consistency 0.97 -> 0.77 at the same mIoU (0.036): the
    replacement concepts are smaller and their masks overflow them.

    A phrase in ``alone`` (Loc's "manipulated area") shares an answer with no other, and no phrase opens
    once none is left (:meth:`may_open`): confined to the few proposed concepts
    (:mod:`fifa_lab.model.concept_candidates`), the model went on past them, and 11 of 120 test AGE answers
    then named the manipulated area among concepts or an empty ``<p></p>``.
    """

    def __init__(self, phrases: Sequence[Sequence[int]], start: int, end: int,
                 alone: Sequence[Sequence[int]] = ()) -> None:
        if not phrases or any(not phrase for phrase in phrases):
            raise ValueError("the phrase vocabulary must hold at least one phrase, none of them empty")
        self.phrases = [tuple(phrase) for phrase in dict.fromkeys(tuple(p) for p in phrases)]
        # phrases that share an answer with no other (Loc's "manipulated area" is never one of several concepts)
        self.alone = {tuple(phrase) for phrase in alone}
        self.start, self.end = start, end

    def _read(self, answer: Sequence[int]) -> tuple[set[tuple[int, ...]], list[int] | None]:
        """The phrases ``answer`` has closed, and the tokens of the one it has open (``None``: none open)."""
        used, current = set(), None
        for token in answer:
            if token == self.start:
                current = []
            elif token == self.end and current is not None:
                used.add(tuple(current))
                current = None
            elif current is not None:
                current.append(token)
        return used, current

    def _left(self, used: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
        if used & self.alone:
            return []
        return [p for p in self.phrases if p not in used and not (used and p in self.alone)]

    def allowed(self, answer: Sequence[int]) -> list[int] | None:
        """The tokens allowed after ``answer`` (token ids so far), or ``None`` outside a phrase (any token)."""
        used, current = self._read(answer)
        if current is None:
            return None
        prefix, size = tuple(current), len(current)
        following = {phrase[size] if len(phrase) > size else self.end for phrase in self._left(used)
                     if phrase[:size] == prefix}
        # every phrase used up (or a prefix the vocabulary does not hold): only closing is left
        return sorted(following) if following else [self.end]

    def may_open(self, answer: Sequence[int]) -> bool:
        """Whether a new phrase may start after ``answer``: some phrase is still left to name."""
        return bool(self._left(self._read(answer)[0]))


def _head_answer_probs(run: _LMRun, choices: Sequence[str]) -> torch.Tensor:
    """The forgery head's probability ``(C,)`` of each closed answer in ``choices`` for the run's first image:
    forgery classes read its class probabilities (renormalised over ``choices``), ``real``/``fake`` its
    detection logit."""
    if set(choices) == {"real", "fake"}:
        fake = torch.sigmoid(run.fake_logits[0].float())
        return torch.stack([fake if choice == "fake" else 1 - fake for choice in choices])
    if set(choices) <= set(FORGERY_CLASSES) and run.class_logits is not None:
        probs = run.class_logits[0].float().softmax(0)[[FORGERY_CLASSES.index(choice) for choice in choices]]
        return probs / probs.sum()
    raise ValueError(f"the forgery head answers 'real'/'fake' or the forgery classes {', '.join(FORGERY_CLASSES)} "
                     f"(a head with classes only), not {list(choices)}")


def _pad_rows(rows: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to the longest with ``pad`` (on the right, or on the ``left`` for decoding):
    ``(B, T)`` ids and the ``(B, T)`` attention mask (0 on padding)."""
    width = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        fill = width - len(row)
        ids.append([pad] * fill + list(row) if left else list(row) + [pad] * fill)
        mask.append([0] * fill + [1] * len(row) if left else [1] * len(row) + [0] * fill)
    return torch.tensor(ids), torch.tensor(mask)


def _splice(rows: torch.Tensor, at: Sequence[int], insert: torch.Tensor) -> torch.Tensor:
    """Replace element ``at[b]`` of each row of ``rows`` ``(B, T, ...)`` by ``insert[b]`` ``(N, ...)``.

    Returns ``(B, T - 1 + N, ...)``.
    """
    return torch.stack([torch.cat([rows[b, :i], insert[b], rows[b, i + 1:]]) for b, i in enumerate(at)])


def answer_ce(logits: torch.Tensor, labels: torch.Tensor, averaging: str = "token") -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` ``(B, T, V)`` against ``labels`` ``(B, T)`` (IGNORE_INDEX: not
    scored), averaged over the batch as ``FiFaConfig.answer_averaging`` says.

    ``"token"`` weighs every scored token alike (transformers' causal-LM loss). ``"square"`` weighs row
    ``b``'s tokens by ``1 / sqrt(n_b)``, ``n_b`` its scored tokens (InternVL 2.5's square averaging): rows of
    equal length give the token average, while a batch of a two-token Det answer and a 200-token explanation
    gives the Det answer about 9 times the weight per token that token averaging does.
    """
    if averaging == "token":  # computed as transformers computes it, so token-averaged runs reproduce exactly
        shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
        return F.cross_entropy(logits.float().flatten(0, 1), shifted.flatten(), ignore_index=IGNORE_INDEX)
    targets = labels[:, 1:]
    per_token = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                                reduction="none").view(targets.shape)  # (B, T - 1), 0 where not scored
    counts = (targets != IGNORE_INDEX).sum(1).to(per_token.dtype)  # (B,)
    weights = counts.clamp(min=1).rsqrt()
    return (per_token.sum(1) * weights).sum() / (counts * weights).sum().clamp(min=1)


def _mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-mask BCE and Dice of ``logits`` vs ``targets``, both ``(K, H, W)``."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)
    probs = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    # +1 smoothing (as LISA/GLaMM) keeps Dice defined for empty targets
    dice = 1 - (2 * (probs * flat).sum(1) + 1) / (probs.sum(1) + flat.sum(1) + 1)
    return bce.mean(), dice.mean()
