"""Train FiFa-MLLM on a run folder's data with ``accelerate`` (so ``accelerate launch`` works unchanged).

Writes under ``run_dir/model/``::

    train_log.jsonl   one line per optimizer step: step, loss, ce, bce, dice, forgery, parsing, concept, lr, task_ce, (val)
    step-<n>/         checkpoint: save_pretrained files + ``state/`` (accelerate: optimizer, scheduler, RNG)
                      + ``trainer_state.json`` (step, best score so far); the last ``keep_checkpoints`` kept
    best/             save_pretrained of the weights with the best validation score (Det acc + Loc mIoU)

Resume: a call finding ``step-<n>/`` continues from the latest one. Batches are a pure function of
``(seed, micro-batch number)`` (:class:`~fifa_lab.train.data.StepBatchSampler`), so a resumed run follows
the uninterrupted one exactly; log lines past the checkpoint (from a killed run) are dropped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from fifa_lab.data.build import load_datasets
from fifa_lab.data.masks import decode_rle
from fifa_lab.io import atomic_path, write_json
from fifa_lab.model import FiFaMLLM
from fifa_lab.model.fifa_mllm import IGNORE_INDEX
from fifa_lab.tasks.registry import IMAGE_TOKEN
from fifa_lab.train.data import SampleDataset, StepBatchSampler, collate, resize_mask

MODEL_DIR = "model"
LOG_FILE = "train_log.jsonl"
STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
BEST_DIR = "best"
_STEP_DIR = re.compile(r"^step-(\d+)$")

# The default task mixture: Det drawn twice as often as each other task (missing tasks weigh 1). In the
# default run (seed 0) this took the LM's detection answer from 0.83 to 0.88 of all 294 validation images
# (the forgery head it reads is right on 0.88) and test Cls from 0.63 to 0.75, Loc mIoU 0.76 -> 0.75.
# Drawing Cls three times as often as well ("Det=2, Cls=3") was measured and not taken: on 80 validation
# samples per task it raised Cls macro-F1 from 0.44 (seed 0) to 0.64 / 0.61 (seeds 0 / 1) but lowered
# AGE METEOR from 0.27 to 0.21 / 0.23, AGE grounding consistency from 0.87 to 0.40 / 0.48 and TOE METEOR
# from 0.30 to 0.26: at 1,600 steps the explanations are short of training, and every draw taken from
# them shows.
DEFAULT_TASK_RATIOS: dict[str, float] = {"Det": 2.0}


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    ``task_ratios`` maps task id -> sampling share (missing tasks weigh 1, 0 drops the task); by default
    :data:`DEFAULT_TASK_RATIOS`.
    ``stop_after`` ends this call after that step while the LR schedule still spans ``steps``: a later
    call with the same config resumes as if never stopped.
    """

    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    num_cycles: float = 0.5  # cosine periods over the decay; 0.5 = from lr down to 0
    max_grad_norm: float = 1.0
    task_ratios: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASK_RATIOS))
    eval_every: int = 100
    eval_samples: int | None = 16  # per validation metric (None: the whole validation split)
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    mixed_precision: str = "no"  # "bf16"/"fp16" where the device has it (accelerate's setting)
    device: str = "auto"  # "auto" (accelerate's pick: GPU when present), "cpu" or "cuda"
    stop_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ValueError(f"eval_samples must be >= 1 or None (the whole validation split), got {self.eval_samples}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA GPU here; use device='cpu' or 'auto'")
        if self.stop_after is not None and not 0 < self.stop_after <= self.steps:
            raise ValueError(f"stop_after must be in 1..steps={self.steps}, got {self.stop_after}")


def checkpoints(model_dir: str | Path) -> list[tuple[int, Path]]:
    """Finished ``step-<n>`` checkpoints under ``model_dir``, oldest first."""
    model_dir = Path(model_dir)
    found = []
    if model_dir.is_dir():
        for path in model_dir.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / TRAINER_STATE).exists():
                found.append((int(match.group(1)), path))
    return sorted(found)


def _task_ce(model: FiFaMLLM, batch: dict[str, Any], logits: torch.Tensor) -> dict[str, float]:
    """Mean token cross-entropy per task of the batch (for the log; no gradient).

    The model expands ``<image>`` into N patch positions, so labels are expanded the same way here.
    """
    labels, ids = batch["labels"], batch["input_ids"]
    num = logits.shape[1] - ids.shape[1] + 1
    at = (ids == model.token_ids[IMAGE_TOKEN]).int().argmax(1).tolist()
    pad = torch.full((num,), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    expanded = torch.stack([torch.cat([labels[b, :i], pad, labels[b, i + 1:]]) for b, i in enumerate(at)])
    token_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), expanded[:, 1:], reduction="none",
                                 ignore_index=IGNORE_INDEX)
    counts = (expanded[:, 1:] != IGNORE_INDEX).sum(1).clamp(min=1)
    per_row = (token_loss.sum(1) / counts).tolist()
    sums: dict[str, list[float]] = {}
    for task, value in zip(batch["tasks"], per_row):
        sums.setdefault(task, []).append(value)
    return {task: sum(v) / len(v) for task, v in sums.items()}


@torch.no_grad()
def evaluate(model: FiFaMLLM, dataset: SampleDataset, max_samples: int | None = 16,
             batch_size: int = 16) -> dict[str, float]:
    """Det accuracy (greedy answer names the right one of fake/real) and Loc mIoU on ``dataset``.

    ``max_samples`` caps the samples per metric (``None``: the whole split; the default profile scores
    every validation image, since with 48 the best checkpoint was picked on noise: a 0.04 step in
    accuracy is two images). Loc is scored on fakes only (samples whose reference has masks): on a real
    image an empty answer would score a free IoU of 1. Masks come from :meth:`FiFaMLLM.ground_batch` on
    the reference answer (teacher-forced), so the score measures the masks even while the model cannot
    yet write ``[SEG]`` itself; the IoU is of the union of predicted vs reference masks. Both run
    ``batch_size`` samples at a time. ``score`` = det_acc + loc_miou; a metric with no samples counts 0.
    """
    was_training = model.training
    model.eval()
    tasks = np.array(dataset.tasks)
    size = model.config.image_size
    dets = [int(i) for i in np.flatnonzero(tasks == "Det")][:max_samples]
    fakes = [int(i) for i in np.flatnonzero(tasks == "Loc")
             if len(dataset.samples[int(i)]["target_masks"])][:max_samples]
    correct, ious = [], []
    for start in range(0, len(dets), batch_size):
        chunk = dets[start:start + batch_size]
        rows = [dataset.samples[i] for i in chunk]
        answers = model.generate_batch([dataset.image(i) for i in chunk], [row["prompt"] for row in rows],
                                       max_new_tokens=8)
        for row, answer in zip(rows, answers):
            truth = "fake" if "fake" in row["target"].lower() else "real"
            text = answer.text.lower()
            correct.append(truth == ("fake" if "fake" in text else "real" if "real" in text else None))
    for start in range(0, len(fakes), batch_size):  # Loc asks about the whole image: no regions
        chunk = fakes[start:start + batch_size]
        rows = [dataset.samples[i] for i in chunk]
        grounded = model.ground_batch([dataset.image(i) for i in chunk], [row["prompt"] for row in rows],
                                      [row["target"] for row in rows])
        for row, response in zip(rows, grounded):
            pred = response.masks.any(0) if len(response.masks) else np.zeros((size, size), bool)
            truth = np.zeros((size, size), bool)
            for rle in row["target_masks"]:
                truth |= resize_mask(decode_rle(rle), size)
            ious.append(float((pred & truth).sum() / max(1, (pred | truth).sum())))
    model.train(was_training)
    det = float(np.mean(correct)) if correct else 0.0
    loc = float(np.mean(ious)) if ious else 0.0
    return {"det_acc": det, "loc_miou": loc, "score": det + loc, "det_n": len(correct), "loc_n": len(ious)}


def _trim_log(path: Path, last_step: int) -> None:
    """Drop log lines after ``last_step``: a killed run may have logged steps its checkpoint lacks."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= last_step]
    if len(kept) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))


def _save_checkpoint(accelerator: Accelerator, model: FiFaMLLM, model_dir: Path, step: int,
                     state: dict[str, Any], keep: int) -> Path:
    """Write ``step-<step>/`` atomically (weights, accelerate state, trainer state), prune old ones."""
    path = model_dir / f"step-{step}"
    if accelerator.is_main_process:
        with atomic_path(path) as tmp:
            model.save_pretrained(tmp)
            # a subfolder: accelerate names its weight file model.safetensors too, which would clash
            accelerator.save_state(str(tmp / STATE_DIR))
            write_json(tmp / TRAINER_STATE, state)  # last: its presence marks a finished checkpoint
        for _, old in checkpoints(model_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def train(run_dir: str | os.PathLike, model: FiFaMLLM, config: TrainConfig | None = None) -> dict[str, Any]:
    """Train ``model`` on ``run_dir``'s train split, validating on its validation split.

    Resumes from the latest ``run_dir/model/step-<n>/`` if there is one (its weights, optimizer,
    scheduler and RNG state replace the given ones). Returns ``start_step``, ``step`` (the last one
    done), ``last`` (its log line), ``best_score``, ``best_step`` and the paths ``log``, ``checkpoint``,
    ``best``.
    """
    config = config or TrainConfig()
    run_dir = Path(run_dir)
    model_dir = run_dir / MODEL_DIR
    log_path = model_dir / LOG_FILE
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.device == "cpu")
    set_seed(config.seed)

    data = load_datasets(run_dir)
    size = model.config.image_size
    train_set = SampleDataset(data.samples["train"], data.images["train"], size, config.task_ratios, data.tree)
    val_set = SampleDataset(data.samples["validation"], data.images["validation"], size, tree=data.tree)

    # weight decay on matrices only: decaying norms and biases just fights their scale
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps, config.num_cycles)
    model, optimizer = accelerator.prepare(model, optimizer)
    # not prepared: accelerate would step it once per process; registered so save_state keeps it
    accelerator.register_for_checkpointing(scheduler)
    unwrapped: FiFaMLLM = accelerator.unwrap_model(model)

    start, best_score, best_step = 0, -math.inf, None
    found = checkpoints(model_dir)
    if found:
        start, latest = found[-1]
        accelerator.load_state(str(latest / STATE_DIR))
        saved = json.loads((latest / TRAINER_STATE).read_text())
        best_score = saved["best_score"] if saved["best_score"] is not None else -math.inf
        best_step = saved["best_step"]
    if accelerator.is_main_process:
        model_dir.mkdir(parents=True, exist_ok=True)
        _trim_log(log_path, start)
    stop = config.stop_after or config.steps

    sampler = StepBatchSampler(train_set.weights(), config.batch_size, config.seed, start * config.grad_accum,
                               stop * config.grad_accum, accelerator.process_index)
    batches = iter(DataLoader(train_set, batch_sampler=sampler, collate_fn=collate(unwrapped)))
    model.train()
    last: dict[str, Any] = {}
    checkpoint = found[-1][1] if found else None
    progress = tqdm(total=stop, initial=start, desc="train", disable=not accelerator.is_local_main_process)
    for step in range(start + 1, stop + 1):
        totals = dict.fromkeys(("loss", "ce", "bce", "dice", "forgery", "parsing", "concept"), 0.0)
        task_ce: dict[str, list[float]] = {}
        for micro in range(config.grad_accum):
            batch = next(batches)
            tasks = batch.pop("tasks")
            batch = {k: [m.to(accelerator.device) for m in v] if isinstance(v, list) else v.to(accelerator.device)
                     for k, v in batch.items()}
            # gradients sync across processes only on the last micro-batch of a step
            sync = micro == config.grad_accum - 1
            with accelerator.no_sync(model) if not sync else nullcontext():
                with accelerator.autocast():
                    out = model(**batch)
                accelerator.backward(out["loss"] / config.grad_accum)
            for key in totals:
                totals[key] += float(out[key].detach()) / config.grad_accum
            for task, value in _task_ce(unwrapped, {**batch, "tasks": tasks}, out["logits"].detach()).items():
                task_ce.setdefault(task, []).append(value)
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        last = {"step": step, **totals, "lr": scheduler.get_last_lr()[0],
                "task_ce": {t: sum(v) / len(v) for t, v in sorted(task_ce.items())}}
        if not all(math.isfinite(last[k]) for k in totals):
            raise FloatingPointError(f"non-finite loss at step {step}: {last}")
        if step % config.eval_every == 0 or step == config.steps:
            if accelerator.is_main_process:
                metrics = evaluate(unwrapped, val_set, config.eval_samples)
                last["val"] = metrics
                # ties keep the earlier weights: later is not better
                if metrics["score"] > best_score:
                    best_score, best_step = metrics["score"], step
                    unwrapped.save_pretrained(model_dir / BEST_DIR)
            accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with log_path.open("a") as log:
                log.write(json.dumps(last) + "\n")
        if step % config.checkpoint_every == 0 or step == stop:
            state = {"step": step, "best_score": None if best_score == -math.inf else best_score,
                     "best_step": best_step, "config": dataclasses.asdict(config)}
            checkpoint = _save_checkpoint(accelerator, unwrapped, model_dir, step, state, config.keep_checkpoints)
        progress.update(1)
        progress.set_postfix(loss=f"{last['loss']:.3f}")
    progress.close()
    best = model_dir / BEST_DIR
    return {"start_step": start, "step": max(start, stop), "last": last,
            "best_score": None if best_score == -math.inf else best_score, "best_step": best_step,
            "log": log_path, "checkpoint": checkpoint, "best": best if best.exists() else None}

