"""The pretrained build of FiFa-MLLM: a local Hugging Face vision tower + a local causal LM with LoRA.

:func:`build_pretrained` loads both from folders the user gives (``local_files_only``: nothing is
downloaded), adds the FiFa special tokens to the LM's tokenizer, sizes the projector, region encoder and
mask decoder from the loaded hidden sizes and wraps the LM with peft LoRA. What trains by default: the LoRA
matrices, the embedding rows of the added tokens (input and, when untied, output), the projector, the region
encoder, the mask decoder and the forgery head; the vision tower and every original LM weight stay frozen.

For export, :func:`merge_lora` folds the adapters into the LM. ``FiFaMLLM.save_pretrained`` writes an
``architecture.json`` (the HF configs, and the LoRA settings while unmerged) so ``FiFaMLLM.from_pretrained``
rebuilds the same modules before loading the weights.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from fifa_lab.fict.tree import ConceptTree
from fifa_lab.model.config import FiFaConfig
from fifa_lab.model.fifa_mllm import FiFaMLLM

__all__ = ["LoraSettings", "PretrainedImageEncoder", "architecture_of", "build_pretrained", "merge_lora",
           "modules_from_architecture", "trainable_parameters"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_VISION_HINT = "pass the folder of a local Hugging Face vision model (config.json + weights), e.g. a ViT, CLIP or SigLIP"
_LM_HINT = ("pass the folder of a local Hugging Face causal LM (config.json + weights + tokenizer files), "
            "e.g. a Llama or Qwen checkpoint")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LM: ``rank`` r, scaling ``alpha`` / r, ``dropout`` on the adapter input, ``targets`` module names."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


class PretrainedImageEncoder(nn.Module):
    """A HF ViT-style tower as FiFa's image encoder: ``(B, 3, H, W)`` in [0, 1] -> tokens ``(B, N, Dv)``, grid.

    ``tower`` is a ViT-like module (ViT, CLIP or SigLIP vision transformer) whose ``last_hidden_state`` is
    ``(B, extra + N, Dv)``: ``extra`` leading non-patch tokens (CLS, registers; none for SigLIP) then the
    ``N = (H/p) * (W/p)`` patch tokens in raster order. ``mean``/``std`` are the tower's pixel normalisation.
    """

    def __init__(self, tower: nn.Module, mean: list[float] | None = None, std: list[float] | None = None) -> None:
        super().__init__()
        vision = tower.config
        self.tower = tower
        self.grid_size = vision.image_size // vision.patch_size
        # persistent buffers: the normalisation travels with the weights of a saved checkpoint
        self.register_buffer("mean", torch.tensor(mean or [0.5] * 3).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std or [0.5] * 3).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` ``(B, 3, H, W)`` float in [0, 1] -> ``tokens`` ``(B, N, Dv)``, ``grid`` ``(B, Dv, H/p, W/p)``."""
        hidden = self.tower(pixel_values=(images - self.mean) / self.std).last_hidden_state
        side = self.grid_size
        tokens = hidden[:, -side * side:]  # patches come last whatever leading tokens the tower adds
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        return tokens, grid


def build_pretrained(vision_path: str | Path, lm_path: str | Path, config: FiFaConfig | None = None,
                     lora: LoraSettings | None = LoraSettings(), train_vision: bool = False,
                     concept_tree: ConceptTree | None = None) -> FiFaMLLM:
    """Build FiFa-MLLM from a local vision model folder and a local causal LM folder (with its tokenizer).

    ``config`` (default :class:`FiFaConfig`) gives the FiFa-only settings (special tokens, ``max_length``,
    ``mask_decoder_dim``, loss weights); image, patch, vision and LM sizes and ``vocab_size`` are replaced
    by the loaded models' values. ``lora=None`` trains the whole LM instead of adapters. ``train_vision``
    unfreezes the vision tower. ``concept_tree``: as for :class:`FiFaMLLM`. Raises FileNotFoundError /
    ValueError naming the bad path.
    """
    config = config or FiFaConfig()
    tower, mean, std = _load_vision(Path(vision_path))
    lm, tokenizer = _load_lm(Path(lm_path))

    # the LM's own bos/eos/pad are kept; only a missing one gets FiFa's default
    for role in ("bos", "eos", "pad"):
        if getattr(tokenizer, f"{role}_token") is None:
            tokenizer.add_special_tokens({f"{role}_token": getattr(config, f"{role}_token")})
    old_vocab = lm.get_input_embeddings().weight.shape[0]
    tokenizer.add_tokens(list(config.special_tokens), special_tokens=True)
    new_ids = sorted({tokenizer.convert_tokens_to_ids(t) for t in (*config.special_tokens, tokenizer.pad_token,
                                                                   tokenizer.bos_token, tokenizer.eos_token)}
                     - set(range(old_vocab)))
    # transformers' mean_resizing draws the added rows from the old rows' mean and covariance, not from noise
    lm.resize_token_embeddings(len(tokenizer))
    lm.config.pad_token_id = tokenizer.pad_token_id

    vision = tower.config
    config = dataclasses.replace(
        config, image_size=vision.image_size, patch_size=vision.patch_size, vision_hidden_size=vision.hidden_size,
        vision_layers=vision.num_hidden_layers, vision_heads=vision.num_attention_heads,
        lm_hidden_size=lm.config.hidden_size, lm_layers=lm.config.num_hidden_layers,
        lm_heads=lm.config.num_attention_heads, lm_intermediate_size=lm.config.intermediate_size,
        vocab_size=len(tokenizer), bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token)

    tower.requires_grad_(train_vision)
    if lora is not None:
        lm = get_peft_model(lm, _lora_config(lora.rank, lora.alpha, lora.dropout, lora.targets,
                                             _token_targets(lm, new_ids)))
    return FiFaMLLM(config, tokenizer, image_encoder=PretrainedImageEncoder(tower, mean, std), lm=lm,
                    concept_tree=concept_tree)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``model`` (shared tensors counted once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def merge_lora(model: FiFaMLLM) -> FiFaMLLM:
    """Fold the LoRA adapters (and trained token rows) into the LM, in place, for export; returns ``model``.

    Afterwards ``model.lm`` is the plain causal LM and ``save_pretrained`` writes a checkpoint without peft.
    """
    if not isinstance(model.lm, PeftModel):
        raise ValueError("model.lm has no LoRA adapters to merge (build it with build_pretrained(..., lora=...))")
    model.lm = model.lm.merge_and_unload()
    return model


def architecture_of(model: FiFaMLLM) -> dict[str, Any]:
    """What :func:`modules_from_architecture` needs to rebuild ``model``'s encoder and LM (JSON-ready)."""
    lm, lora = model.lm, None
    if isinstance(lm, PeftModel):
        peft = lm.peft_config[lm.active_adapter]
        lora = {"rank": peft.r, "alpha": peft.lora_alpha, "dropout": peft.lora_dropout,
                "targets": sorted(peft.target_modules), "trainable_tokens": peft.trainable_token_indices}
        lm = lm.get_base_model()
    return {"vision": model.image_encoder.tower.config.to_dict(), "lm": lm.config.to_dict(), "lora": lora}


def modules_from_architecture(architecture: dict[str, Any]) -> tuple[PretrainedImageEncoder, nn.Module]:
    """Random-init encoder and LM shaped like :func:`architecture_of` says, ready for ``load_model``."""
    vision = AutoModel.from_config(_config_from_dict(architecture["vision"]))
    lm = AutoModelForCausalLM.from_config(_config_from_dict(architecture["lm"]))
    lora = architecture["lora"]
    if lora is not None:
        lm = get_peft_model(lm, _lora_config(lora["rank"], lora["alpha"], lora["dropout"], lora["targets"],
                                             lora["trainable_tokens"]))
    return PretrainedImageEncoder(_vision_tower(vision)), lm


# --- helpers ----------------------------------------------------------------------------------------


def _check_folder(path: Path, hint: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; {hint}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; {hint}")
    if not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in path.iterdir()):
        raise FileNotFoundError(f"{path} has no weights (*.safetensors or *.bin); {hint}")


def _vision_tower(model: nn.Module) -> nn.Module:
    # CLIP/SigLIP (full or vision-only) keep the transformer in .vision_model; ViT-style models are the tower
    return getattr(model, "vision_model", model)


def _load_vision(path: Path) -> tuple[nn.Module, list[float] | None, list[float] | None]:
    """The vision tower at ``path`` (float32) and its pixel mean/std from ``preprocessor_config.json`` if any."""
    _check_folder(path, _VISION_HINT)
    try:
        model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load a vision model from {path} ({error}); {_VISION_HINT}") from error
    tower = _vision_tower(model)
    vision = getattr(tower, "config", None)
    if not all(hasattr(vision, key) for key in ("image_size", "patch_size", "hidden_size")):
        kind = getattr(model.config, "model_type", type(model).__name__)
        raise ValueError(f"{path} holds a {kind} model, not a ViT-style vision model; {_VISION_HINT}")
    mean = std = None
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        settings = json.loads(processor.read_text())
        mean, std = settings.get("image_mean"), settings.get("image_std")
    return tower, mean, std


def _load_lm(path: Path) -> tuple[PreTrainedModel, Any]:
    """The causal LM at ``path`` (float32) and its fast tokenizer."""
    _check_folder(path, _LM_HINT)
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load a causal LM from {path} ({error}); {_LM_HINT}") from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(f"cannot load a tokenizer from {path} ({error}); {_LM_HINT}") from error
    if not tokenizer.is_fast:
        # FiFaMLLM.from_pretrained reloads the tokenizer from its tokenizer.json
        raise ValueError(f"the tokenizer in {path} is not a fast (tokenizers) tokenizer; {_LM_HINT}")
    return lm, tokenizer


def _token_targets(lm: PreTrainedModel, new_ids: list[int]) -> dict[str, list[int]] | None:
    """peft ``trainable_token_indices``: the added rows of the input embedding and, if untied, the LM head."""
    if not new_ids:
        return None
    names = {module: name for name, module in lm.named_modules()}
    targets = {names[lm.get_input_embeddings()].rsplit(".", 1)[-1]: new_ids}
    output = lm.get_output_embeddings()
    # a tied head shares the rows already; an untied one needs its own so the LM can emit [SEG]
    if output is not None and output.weight is not lm.get_input_embeddings().weight:
        targets[names[output].rsplit(".", 1)[-1]] = new_ids
    return targets


def _lora_config(rank: int, alpha: int, dropout: float, targets: Any,
                 token_targets: dict[str, list[int]] | None) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                      trainable_token_indices=token_targets, task_type="CAUSAL_LM")


def _config_from_dict(data: dict[str, Any]) -> Any:
    data = dict(data)
    return AutoConfig.for_model(data.pop("model_type"), **data)
