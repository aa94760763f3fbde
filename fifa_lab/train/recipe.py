"""What notebook 04 and the CLI call: pick a backbone, build (or resume) the model, read the training log.

:func:`prepare_model` is the one place that decides which FiFa-MLLM a run trains:

- ``backbone="tiny"``: a byte-level BPE tokenizer trained on the run's train split, then a random-init
  tiny model (:func:`fifa_lab.model.build_tiny`);
- ``backbone="pretrained"``: a local vision tower and causal LM given by path, LoRA on the LM
  (:func:`fifa_lab.model.pretrained.build_pretrained`); nothing is downloaded.

When the run folder already holds a checkpoint, the model is rebuilt from it instead, so a resumed run
keeps the exact tokenizer and architecture it started with (the trainer then restores the weights and
optimizer state).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fifa_lab.data.build import load_datasets
from fifa_lab.model import FiFaConfig, FiFaMLLM, build_tiny
from fifa_lab.train.trainer import LOG_FILE, MODEL_DIR, checkpoints

BACKBONES = ("tiny", "pretrained")


@dataclass
class ModelChoice:
    """Which model a run trains.

    ``config`` overrides fields of :class:`FiFaConfig` (for the tiny build: sizes; for both: loss
    weights, ``max_length``, ``image_token_pool``, ...). ``vision_path``/``lm_path`` are the local folders
    of the pretrained build; ``lora=False`` fine-tunes the whole LM instead of adapters.
    """

    backbone: str = "tiny"
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer_vocab_size: int = 2048
    tokenizer_texts: int = 20000  # train samples whose prompt + target train the tiny tokenizer
    vision_path: str | None = None
    lm_path: str | None = None
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "pretrained" and not (self.vision_path and self.lm_path):
            raise ValueError("backbone='pretrained' needs vision_path= (a local Hugging Face vision model folder) "
                             "and lm_path= (a local causal LM folder with its tokenizer); nothing is downloaded")


def prepare_model(run_dir: str | os.PathLike, choice: ModelChoice | None = None) -> FiFaMLLM:
    """The model to train in ``run_dir``: rebuilt from its latest checkpoint if there is one, else new."""
    choice = choice or ModelChoice()
    found = checkpoints(Path(run_dir) / MODEL_DIR)
    if found:
        return FiFaMLLM.from_pretrained(found[-1][1]).train()
    torch.manual_seed(choice.seed)
    config = dataclasses.replace(FiFaConfig(), **choice.config)
    data = load_datasets(run_dir)
    if choice.backbone == "tiny":
        samples = data.samples["train"]
        count = min(len(samples), choice.tokenizer_texts)
        head = samples.select(range(count))
        texts = [f"{prompt} {target}" for prompt, target in zip(head["prompt"], head["target"])]
        return build_tiny(texts, config, choice.tokenizer_vocab_size, concept_tree=data.tree)
    from fifa_lab.model.pretrained import LoraSettings, build_pretrained  # lazy: imports peft

    lora = LoraSettings(rank=choice.lora_rank, alpha=choice.lora_alpha, targets=tuple(choice.lora_targets)) \
        if choice.lora else None
    return build_pretrained(choice.vision_path, choice.lm_path, config, lora=lora, concept_tree=data.tree)


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The training log of ``run_dir`` (one dict per optimizer step), ``[]`` before the first step."""
    path = Path(run_dir) / MODEL_DIR / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_task_ratios(text: str | dict[str, float] | None) -> dict[str, float]:
    """Task mixture from a papermill/CLI-friendly string: ``"Det=2, Loc=2, RSeg=0"`` (or a dict, or empty).

    Missing tasks weigh 1; 0 switches a task off.
    """
    from fifa_lab.tasks import TASKS

    if not text:
        return {}
    if isinstance(text, dict):
        pairs = {str(k): float(v) for k, v in text.items()}
    else:
        pairs = {}
        for item in str(text).split(","):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"task ratio {item.strip()!r} is not NAME=VALUE (e.g. 'Det=2, RSeg=0')")
            try:
                pairs[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"task ratio {item.strip()!r}: {value.strip()!r} is not a number") from None
    unknown = sorted(set(pairs) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} in the task ratios; tasks are {sorted(TASKS)}")
    return pairs
