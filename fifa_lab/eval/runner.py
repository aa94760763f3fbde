"""The benchmark runner: a checkpoint (or another model's answers) over one split, for all FiFa-11 tasks.

:func:`predict` answers every selected sample with :meth:`FiFaMLLM.generate_batch` and writes one JSON line per
sample (``predictions/<split>.jsonl``: sample and image ids, task, prompt, reference, answer, masks as
COCO RLE and, for the closed questions, the probability of each choice). :func:`score` reads such a
file (ours, or another model's in the same format) against the split's references and returns
``{task id: {metric: value}}``; :func:`run_benchmark` does both and writes ``metrics.json`` atomically
with what was sampled beside the numbers (split, seed, counts, thresholds, package versions, checkpoint
hash).

Which metric scores which task:

=========================  ==================================================================
Det                        ``acc``, ``f1``, ``auc``, ``eer`` (scores: P(fake) of the two answers), with fused
                           answers also ``generated_acc`` (the LM's own text)
Cls                        ``acc``, ``macro_f1``, ``confusion`` (and ``generated_acc``, as Det)
R-Det                      ``acc``, ``f1``, ``auc``, ``eer`` (P(yes))
TOE, R-TOE, B-TOE          ``meteor``, ``cider``, ``bleu4``, ``rouge_l``
Loc, RSeg                  ``miou``, ``ciou``, ``ap50`` (the union of the answer's masks per image;
                           Loc on fakes only, as a real image has nothing to localise)
B-Loc                      ``miou``, ``ap50`` of the boxes written in the answer (fakes only)
AGE, R-AGE                 ``meteor``, ``cider``, ``ap50``, ``miou``, ``mask_recall``,
                           ``grounding_consistency`` (:func:`fifa_lab.eval.age.age_metrics`); mIoU
                           leaves out answers where neither side has a mask
=========================  ==================================================================
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.build import load_datasets, package_versions
from fifa_lab.data.masks import decode_rle, encode_rle
from fifa_lab.data.records import decode_label_map
from fifa_lab.eval.age import age_metrics
from fifa_lab.eval.metrics import box_metrics, classification_metrics, detection_metrics, mask_ap50, mask_metrics, \
    text_metrics
from fifa_lab.forge.post import apply_post, check_chain
from fifa_lab.io import atomic_path, write_json
from fifa_lab.train.data import SampleDataset, resize_mask

PREDICTIONS_DIR = "predictions"
METRICS_FILE = "metrics.json"
CLOSED_CHOICES = {"Det": ("real", "fake"), "R-Det": ("no", "yes"), "Cls": tuple(FORGERY_CLASSES)}
# how predict answers a closed question about the whole image (Det, Cls): "generated" keeps the LM's own text,
# "fused" takes the most probable choice of FiFaMLLM.choice_probs(head=True) (the LM's likelihood of each
# choice times the forgery head's probability of it). Default run, 120 test samples per task, generated ->
# fused: Cls 0.742 -> 0.867 (the head alone: 0.867; the LM read the head's class probabilities in its
# forensic token but named the rarer classes too seldom), Det 0.908 -> 0.900
CLOSED_ANSWERS = ("generated", "fused")
HEAD_TASKS = ("Det", "Cls")
TEXT_TASKS = ("TOE", "R-TOE", "B-TOE")
MASK_TASKS = ("Loc", "RSeg")
AGE_TASKS = ("AGE", "R-AGE")
_BOX = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")


def checkpoint_hash(directory: str | os.PathLike) -> str:
    """sha256 of a checkpoint's weight file (what ``metrics.json`` records as the model's identity)."""
    from fifa_lab.model.fifa_mllm import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(Path(directory) / WEIGHTS_FILE, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def select_samples(tasks: Sequence[str], per_task: int | None, seed: int) -> list[int]:
    """Row indices to evaluate: per task, ``per_task`` rows drawn without replacement by ``seed`` (all if None),
    returned in row order so a prediction file reads like the split."""
    rng = np.random.default_rng(seed)
    chosen = []
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, task in enumerate(tasks):
        by_task[task].append(index)
    for task in sorted(by_task):
        rows = by_task[task]
        if per_task is not None and len(rows) > per_task:
            rows = sorted(rng.choice(rows, per_task, replace=False).tolist())
        chosen += rows
    return sorted(chosen)


def parse_closed(answer: str, choices: Sequence[str]) -> str | None:
    """The choice an answer names (first whole-word match, case-insensitive), or None."""
    words = re.findall(r"[A-Za-z]+", answer.lower())
    lowered = [c.lower() for c in choices]
    return next((choices[lowered.index(w)] for w in words if w in lowered), None)


def parse_boxes(text: str) -> list[list[float]]:
    """Every ``[x0, y0, x1, y1]`` written in ``text``, in order (an empty list for "no artifact")."""
    return [[float(v) for v in match] for match in _BOX.findall(text)]


def predict(model: Any, run_dir: str | os.PathLike, split: str = "test", per_task: int | None = None,
            seed: int = 0, max_new_tokens: int = 256, out: str | os.PathLike | None = None,
            tasks: Sequence[str] | None = None, perturb: Sequence[Mapping[str, Any]] | None = None,
            batch_size: int = 8, closed_answer: str = "fused") -> Path:
    """Answer the selected samples of ``split`` and write them as JSONL (default ``predictions/<split>.jsonl``).

    Closed questions (Det, R-Det, Cls) also record ``choice_probs``, the model's probability of each
    answer word, which gives Det its AUC. With ``closed_answer="fused"`` (:data:`CLOSED_ANSWERS`) a Det or
    Cls answer is the most probable choice with the forgery head's probabilities fused in
    (:meth:`FiFaMLLM.choice_probs` with ``head=True``); the LM's own text is kept as ``generated`` and its
    choice probabilities alone as ``lm_choice_probs``. Masks are at the model's image size, as COCO RLE.
    ``tasks`` keeps only those task ids; ``perturb`` is a post-processing chain
    (:mod:`fifa_lab.forge.post`, e.g. ``[{"op": "jpeg", "quality": 50}]``) applied to every image before the
    model sees it, for robustness curves (the references stay as they are). Samples of one task are
    answered ``batch_size`` at a time (:meth:`FiFaMLLM.generate_batch`: same-task answers have similar
    lengths, so few rows wait for a long one); lines keep the selection's order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if closed_answer not in CLOSED_ANSWERS:
        raise ValueError(f"closed_answer must be one of {', '.join(CLOSED_ANSWERS)}, got {closed_answer!r}")
    chain = check_chain(perturb or [])
    data = load_datasets(run_dir)
    dataset = SampleDataset(data.samples[split], data.images[split], model.config.image_size)
    if tasks is not None:
        unknown = sorted(set(tasks) - set(dataset.tasks))
        if unknown:
            raise ValueError(f"no {', '.join(unknown)} samples in the {split} split "
                             f"(it has {sorted(set(dataset.tasks))})")
    # drawn as for all tasks, then filtered: a task's samples are the ones the full benchmark answers
    rows = [row for row in select_samples(dataset.tasks, per_task, seed)
            if tasks is None or dataset.tasks[row] in tasks]
    out = Path(out) if out is not None else Path(run_dir) / PREDICTIONS_DIR / f"{split}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines: dict[int, dict[str, Any]] = {}
    chunks = [chunk for task in dict.fromkeys(dataset.tasks[row] for row in rows)
              for chunk in _chunks([row for row in rows if dataset.tasks[row] == task], batch_size)]
    with tqdm(total=len(rows), desc=f"predict {split}") as progress:
        for chunk in chunks:
            images, regions = [], []
            for index in chunk:
                region = dataset[index]["region"]
                regions.append(None if region is None else region.numpy().astype(bool))
                images.append(apply_post(dataset.image(index), chain) if chain else dataset.image(index))
            prompts = [dataset.samples[index]["prompt"] for index in chunk]
            answers = model.generate_batch(images, prompts, regions, max_new_tokens=max_new_tokens)
            for index, image, region, answer in zip(chunk, images, regions, answers):
                sample = dataset.samples[index]
                line = {"sample_id": sample["sample_id"], "image_id": sample["image_id"], "task": sample["task"],
                        "answer": answer.text, "masks": [encode_rle(m) for m in answer.masks]}
                if sample["task"] in CLOSED_CHOICES:
                    choices = CLOSED_CHOICES[sample["task"]]
                    probs = model.choice_probs(image, sample["prompt"], choices, region=region)
                    line["choice_probs"] = dict(zip(choices, (round(float(p), 6) for p in probs)))
                    if closed_answer == "fused" and sample["task"] in HEAD_TASKS:
                        fused = model.choice_probs(image, sample["prompt"], choices, head=True)
                        line["lm_choice_probs"] = line["choice_probs"]
                        line["choice_probs"] = dict(zip(choices, (round(float(p), 6) for p in fused)))
                        line["generated"], line["answer"] = answer.text, choices[int(np.argmax(fused))]
                lines[index] = line
            progress.update(len(chunk))
    with atomic_path(out) as tmp, open(tmp, "w") as handle:
        for index in rows:
            handle.write(json.dumps(lines[index]) + "\n")
    return out


def _chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A predictions JSONL; each line needs ``sample_id`` and ``answer`` (``masks`` and ``choice_probs`` optional)."""
    lines = []
    for number, text in enumerate(Path(path).read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number} is not JSON: {exc}") from None
        if not isinstance(line, dict) or "sample_id" not in line or "answer" not in line:
            raise ValueError(f"{path}:{number} needs 'sample_id' and 'answer' (and 'masks' as RLE for mask tasks)")
        lines.append(line)
    return lines


def _masks_at(rles: Iterable[Mapping[str, Any]], size: int) -> list[np.ndarray]:
    return [resize_mask(decode_rle(rle), size) for rle in rles]


def _union(masks: Sequence[np.ndarray], size: int) -> np.ndarray:
    out = np.zeros((size, size), bool)
    for mask in masks:
        out |= mask
    return out


def score(predictions: Sequence[Mapping[str, Any]], run_dir: str | os.PathLike, split: str = "test",
          image_size: int = 256, text: bool = True) -> dict[str, dict[str, Any]]:
    """``{task: {metric: value, "n": count}}`` of ``predictions`` against ``split``'s references.

    Masks are compared at ``image_size`` (predicted and true masks resized there). ``text=False`` skips
    the Java-based caption metrics (METEOR, and the PTB tokenizer) for a quick look.
    """
    data = load_datasets(run_dir)
    samples = data.samples[split]
    position = {sample_id: i for i, sample_id in enumerate(samples["sample_id"])}
    unknown = [p["sample_id"] for p in predictions if p["sample_id"] not in position]
    if unknown:
        raise ValueError(f"{len(unknown)} predictions name samples not in the {split} split, e.g. {unknown[:3]}")
    images = data.images[split]
    by_task: dict[str, list[tuple[Mapping[str, Any], dict[str, Any]]]] = defaultdict(list)
    for prediction in predictions:
        by_task[prediction["task"] if "task" in prediction else samples[position[prediction["sample_id"]]]["task"]
                ].append((prediction, samples[position[prediction["sample_id"]]]))

    results: dict[str, dict[str, Any]] = {}
    for task, pairs in sorted(by_task.items()):
        refs = [ref for _, ref in pairs]
        answers = [pred["answer"] for pred, _ in pairs]
        if task in CLOSED_CHOICES:
            choices = CLOSED_CHOICES[task]
            truth = [parse_closed(ref["target"], choices) for ref in refs]
            guess = [parse_closed(answer, choices) or "(none)" for answer in answers]
            if task == "Cls":
                known = [g if g in choices else "real" for g in guess]  # an unreadable answer counts as wrong
                metrics = classification_metrics(truth, known, labels=list(choices))
                metrics["acc"] = float(np.mean([g == t for g, t in zip(guess, truth)]))
            else:
                positive = choices[1]
                labels = [t == positive for t in truth]
                scores = [pred.get("choice_probs", {}).get(positive) for pred, _ in pairs]
                metrics = detection_metrics(labels, y_score=scores if None not in scores else None,
                                            y_pred=[g == positive for g in guess])
                metrics["acc"] = float(np.mean([g == t for g, t in zip(guess, truth)]))
            if all("generated" in pred for pred, _ in pairs):  # fused answers: the LM's own text, scored alike
                metrics["generated_acc"] = float(np.mean([parse_closed(pred["generated"], choices) == t
                                                          for (pred, _), t in zip(pairs, truth)]))
        elif task in TEXT_TASKS:
            metrics = text_metrics(answers, [[ref["target"]] for ref in refs],
                                   metrics=("meteor", "cider", "bleu4", "rouge_l") if text else
                                   ("cider", "bleu4", "rouge_l"), tokenizer="auto" if text else "simple")
        elif task in MASK_TASKS:
            kept = [(pred, ref) for pred, ref in pairs if task != "Loc" or ref["target_masks"]]
            pred_masks = [_union(_masks_at(pred.get("masks", []), image_size), image_size) for pred, _ in kept]
            true_masks = [_union(_masks_at(ref["target_masks"], image_size), image_size) for _, ref in kept]
            metrics = {**mask_metrics(pred_masks, true_masks), "ap50": mask_ap50(pred_masks, true_masks)} \
                if kept else {"miou": float("nan"), "ciou": float("nan"), "ap50": float("nan")}
            pairs = kept
        elif task == "B-Loc":
            kept = [(pred, ref) for pred, ref in pairs if parse_boxes(ref["target"])]
            metrics = box_metrics([parse_boxes(pred["answer"]) for pred, _ in kept],
                                  [parse_boxes(ref["target"]) for _, ref in kept]) if kept else {}
            pairs = kept
        elif task in AGE_TASKS:
            regions = [decode_label_map(images[int(ref["image_index"])]["label_map"]) for ref in refs]
            regions = [r if r.shape == (image_size, image_size) else
                       _resize_labels(r, image_size) for r in regions]
            # empty_iou=None: an answer and reference both without masks (a real image) is left out of
            # mIoU, else every correct "no manipulation" would add a free IoU of 1
            metrics = age_metrics(answers, [ref["target"] for ref in refs],
                                  [_masks_at(pred.get("masks", []), image_size) for pred, _ in pairs],
                                  [_masks_at(ref["target_masks"], image_size) for ref in refs], regions=regions,
                                  empty_iou=None, text_scores=("meteor", "cider") if text else ("cider",),
                                  tokenizer="auto" if text else "simple")
        else:
            continue
        results[task] = {**{k: v for k, v in metrics.items() if k != "per_class_f1"}, "n": len(pairs)}
    return results


def _resize_labels(label_map: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(label_map.astype(np.int16), (size, size), interpolation=cv2.INTER_NEAREST)


def run_benchmark(model_dir: str | os.PathLike, run_dir: str | os.PathLike, split: str = "test",
                  per_task: int | None = None, seed: int = 0, max_new_tokens: int = 256,
                  extra: Mapping[str, Any] | None = None, closed_answer: str = "fused") -> dict[str, Any]:
    """Predict with the checkpoint in ``model_dir``, score, and write ``run_dir/metrics.json``; returns it.

    ``extra`` entries (e.g. ``annotator`` reliability, baselines) are stored beside the task metrics.
    """
    from fifa_lab.model import FiFaMLLM

    model = FiFaMLLM.from_pretrained(model_dir)
    path = predict(model, run_dir, split, per_task, seed, max_new_tokens, closed_answer=closed_answer)
    predictions = read_predictions(path)
    metrics: dict[str, Any] = score(predictions, run_dir, split, model.config.image_size)
    counts: dict[str, int] = defaultdict(int)
    for line in predictions:
        counts[line["task"]] += 1
    metrics.update(extra or {})
    metrics["meta"] = {"split": split, "seed": seed, "per_task": per_task, "counts": dict(sorted(counts.items())),
                       "max_new_tokens": max_new_tokens, "closed_answer": closed_answer,
                       "mask_threshold": "logit > 0",
                       "thresholds": {"detection": 0.5, "mask_recall_iou": 0.5, "mask_recall_text": 0.5,
                                      "grounding_inside": 0.5},
                       "checkpoint": str(model_dir), "checkpoint_sha256": checkpoint_hash(model_dir),
                       "predictions": str(path), "packages": package_versions()}
    write_json(Path(run_dir) / METRICS_FILE, metrics)
    return metrics
