"""Ablations (the FiFa paper's Table 6): what each design choice of the data and the training is worth.

Every arm trains a fresh FiFa-MLLM with one choice changed and the same budget, and is scored on the
*main* run's test split (FICT-112 names, adaptive masks), the benchmark the full design is built for:

==============  ===========================================================================================
``full``        all FiFa-11 tasks, the 112-leaf FICT, the adaptive annotator mask rule
``no_aux``      the auxiliary tasks Det, Cls and RSeg switched off (their sampling ratio 0)
``coarse_tree`` explanations and concept masks name the FICT cut at depth 1 (12 regions such as "eyes")
``top5_masks``  the annotator's masks from the published top-5% difference rule instead of the adaptive one
==============  ===========================================================================================

An arm is one entry of :data:`ABLATIONS`; a new one is one more :func:`register_ablation` call. Arms with
the same data share one build (copied into each arm's folder, since the trainer reads ``<arm>/data``).
Everything lands in ``run_dir/ablations/<arm>/`` (data, model, predictions, ``result.json``), written
atomically, so a rerun skips finished arms and resumes an interrupted training from its checkpoint (an arm
whose budget or seed changed starts its training afresh).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fifa_lab.data.build import build_dataset, data_paths, package_versions
from fifa_lab.eval.runner import checkpoint_hash, predict, read_predictions, score
from fifa_lab.io import atomic_path, write_json
from fifa_lab.train.trainer import DEFAULT_TASK_RATIOS, MODEL_DIR

ABLATION_DIR = "ablations"
RESULT_FILE = "result.json"
# how answers are decoded, among the settings: a result decoded another way is not read back
DECODING = "whole-image phrases confined to the proposed concepts (fifa_lab.model.concept_candidates)"
# the arms are compared on the grounded explanation (the paper's Table 6) and on plain localisation;
# Det is not among them because the no_aux arm never sees a Det question
ABLATION_TASKS = ("Loc", "AGE")
COLUMNS = {"loc_miou": ("Loc", "miou"), "age_meteor": ("AGE", "meteor"), "age_cider": ("AGE", "cider"),
           "age_ap50": ("AGE", "ap50"), "age_miou": ("AGE", "miou"), "age_mask_recall": ("AGE", "mask_recall"),
           "age_grounding": ("AGE", "grounding_consistency")}


@dataclass(frozen=True)
class Ablation:
    """One arm: ``data`` overrides :func:`~fifa_lab.data.build.build_dataset` arguments, ``task_ratios``
    changes the training mixture on top of ``DEFAULT_TASK_RATIOS`` (0 switches a task off)."""

    name: str
    description: str
    data: Mapping[str, Any] = field(default_factory=dict)
    task_ratios: Mapping[str, float] = field(default_factory=dict)


ABLATIONS: dict[str, Ablation] = {}


def register_ablation(ablation: Ablation) -> Ablation:
    if ablation.name in ABLATIONS:
        raise ValueError(f"ablation {ablation.name!r} is already registered")
    ABLATIONS[ablation.name] = ablation
    return ablation


register_ablation(Ablation("full", "all tasks, FICT-112, adaptive masks"))
register_ablation(Ablation("no_aux", "without the auxiliary tasks Det, Cls, RSeg",
                           task_ratios={"Det": 0.0, "Cls": 0.0, "RSeg": 0.0}))
register_ablation(Ablation("coarse_tree", "coarse tree: 12 regions (FICT cut at depth 1)",
                           data={"concept_depth": 1}))
register_ablation(Ablation("top5_masks", "annotator masks by the top-5% rule", data={"annotator_rule": "top5"}))


@dataclass
class AblationBudget:
    """What every arm gets: faces in its dataset, and the training run (as notebook 04's parameters)."""

    n_faces: int = 240
    steps: int = 150
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 20
    model_config: dict[str, Any] = field(default_factory=dict)  # FiFaConfig overrides of the tiny build

    def __post_init__(self) -> None:
        for name in ("n_faces", "steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ablation {name} must be a positive integer, got {value!r}")


def _data_key(arm: Ablation, budget: AblationBudget, seed: int) -> str:
    text = json.dumps({"data": dict(arm.data), "n_faces": budget.n_faces, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _arm_data(root: Path, arm: Ablation, budget: AblationBudget, seed: int) -> None:
    """Build the arm's dataset, or copy the finished identical one of another arm first."""
    key, target = _data_key(arm, budget, seed), data_paths(root / arm.name)
    if not target.card.exists():
        for other in ABLATIONS.values():
            source = data_paths(root / other.name)
            if other.name != arm.name and _data_key(other, budget, seed) == key and source.card.exists():
                with atomic_path(target.root) as tmp:
                    shutil.copytree(source.root, tmp)
                break
    from fifa_lab.model import FiFaConfig

    size = int(budget.model_config.get("image_size", FiFaConfig.image_size))  # the images the model will see
    build_dataset(root / arm.name, budget.n_faces, seed=seed, size=size, **arm.data)  # at once when copied


def run_ablation(run_dir: str | os.PathLike, arm: str | Ablation, budget: AblationBudget | None = None, *,
                 per_task: int | None = 20, seed: int = 0, max_new_tokens: int = 160) -> dict[str, Any]:
    """Build, train and score one arm in ``run_dir/ablations/<arm>/``; returns (and stores) its row.

    The row holds the :data:`COLUMNS` metrics on ``per_task`` seeded Loc and AGE samples of the main run's
    test split (the same samples for every arm) and what produced them (budget, seed, counts, checkpoint
    hash, package versions). A finished arm with the same settings (the model's whole config among them)
    is read back, not rerun.
    """
    from fifa_lab.model.config import FiFaConfig
    from fifa_lab.train import TrainConfig, train
    from fifa_lab.train.recipe import ModelChoice, prepare_model

    arm = ABLATIONS[arm] if isinstance(arm, str) and arm in ABLATIONS else arm
    if not isinstance(arm, Ablation):
        raise ValueError(f"unknown ablation {arm!r}; registered: {', '.join(ABLATIONS)}")
    budget = budget or AblationBudget()
    run_dir = Path(run_dir)
    if not data_paths(run_dir).samples.exists():
        raise FileNotFoundError(f"{run_dir} has no dataset to score the ablation on; build it first "
                                "(notebooks 02-03 or fifa_lab.data.build.build_dataset)")
    folder = run_dir / ABLATION_DIR / arm.name
    # the main recipe's mixture with the arm's changes on top, so "full" trains as notebook 04 does
    ratios = {**DEFAULT_TASK_RATIOS, **arm.task_ratios}
    # the model's whole config, defaults included: a result from another architecture (say, before a
    # new head) must be retrained, not read back
    model = FiFaConfig(**budget.model_config).to_dict()
    settings = {"arm": dataclasses.asdict(arm), "budget": dataclasses.asdict(budget), "per_task": per_task,
                "seed": seed, "max_new_tokens": max_new_tokens, "tasks": list(ABLATION_TASKS),
                "task_ratios": ratios, "model": model, "decoding": DECODING}
    settings = json.loads(json.dumps(settings))  # tuples and mappings as JSON reads them back
    result_path = folder / RESULT_FILE
    if result_path.exists():
        stored = json.loads(result_path.read_text())
        if stored.get("settings") == settings:
            return stored
    settings_path = folder / "settings.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        # another budget or seed: its checkpoints must not be resumed as this arm's
        shutil.rmtree(folder / MODEL_DIR, ignore_errors=True)
    write_json(settings_path, settings)
    _arm_data(run_dir / ABLATION_DIR, arm, budget, seed)

    model = prepare_model(folder, ModelChoice(seed=seed, config=budget.model_config))
    config = TrainConfig(steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr,
                         warmup_steps=min(budget.warmup_steps, max(1, budget.steps // 10)),
                         task_ratios=ratios, eval_every=budget.steps,
                         checkpoint_every=max(1, budget.steps // 2), eval_samples=16, seed=seed)
    summary = train(folder, model, config)
    from fifa_lab.model import FiFaMLLM

    # the last step, not the best: validation here is a few samples, and every arm gets the same rule
    checkpoint = summary["checkpoint"]
    trained = FiFaMLLM.from_pretrained(checkpoint)
    path = predict(trained, run_dir, "test", per_task, seed, max_new_tokens, out=folder / "predictions.jsonl",
                   tasks=ABLATION_TASKS)
    predictions = read_predictions(path)
    scores = score(predictions, run_dir, "test", trained.config.image_size)
    row = {name: scores.get(task, {}).get(metric, float("nan")) for name, (task, metric) in COLUMNS.items()}
    result = {"arm": arm.name, "description": arm.description, **row,
              "counts": {task: scores.get(task, {}).get("n", 0) for task in ABLATION_TASKS},
              "settings": settings, "split": "test", "checkpoint": str(checkpoint),
              "checkpoint_sha256": checkpoint_hash(checkpoint), "packages": package_versions()}
    write_json(result_path, result)
    return json.loads(result_path.read_text())  # as stored (undefined metrics None), so a rerun returns the same


def run_ablations(run_dir: str | os.PathLike, arms: Sequence[str] | None = None,
                  budget: AblationBudget | None = None, **kwargs: Any) -> dict[str, Any]:
    """All ``arms`` (default: every registered one) with one budget: ``{"rows": [...], "meta": {...}}``.

    ``kwargs`` go to :func:`run_ablation` (``per_task``, ``seed``, ``max_new_tokens``).
    """
    names = list(arms) if arms is not None else list(ABLATIONS)
    unknown = [name for name in names if name not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; registered: {', '.join(ABLATIONS)}")
    budget = budget or AblationBudget()
    rows = [run_ablation(run_dir, name, budget, **kwargs) for name in names]
    return {"rows": [{k: v for k, v in row.items() if k not in ("settings", "packages")} for row in rows],
            "meta": {"split": "test", "tasks": list(ABLATION_TASKS), "budget": dataclasses.asdict(budget),
                     "per_task": rows[0]["settings"]["per_task"] if rows else None,
                     "seed": rows[0]["settings"]["seed"] if rows else None,
                     "packages": package_versions()}}
