"""How far the annotator can be trusted: its output against forgery ground truth, per class and rule.

The published FiFa-Annotator reports no such numbers. Here every mask rule annotates the same
forgeries (objects with ``fake``, ``real``, ``mask``, ``concepts``, ``forgery_class``, as
:class:`fifa_lab.forge.Forgery` has) and is scored against their ground truth:

* concepts: precision, recall and F1, micro-averaged over images (true positives, predictions and
  ground-truth concepts summed over images first). A predicted concept matches a ground-truth concept
  with the same leaf id; both sides use the same concept rule
  (:func:`fifa_lab.fict.coverage.concepts_in_region`), so a perfect mask scores 1;
* mask: IoU of the annotator's mask and the ground-truth mask, averaged over images (two empty
  masks count as 1);
* artifacts: precision and recall of (concept, artifact type) pairs over the concepts both sides name;
* detection: the share of images where the annotator's "artifact or not" agrees with the ground truth.

Where a ratio has nothing to count (no predictions, say), it is 1: nothing was claimed wrongly.
The best rule maximises the mean of overall concept F1 and mask IoU.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fifa_lab.annotate.annotator import annotate
from fifa_lab.fict.tree import ConceptTree, load_tree

METRIC_KEYS = ("tp", "pred", "true", "atp", "apred", "atrue", "agree", "seconds")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_true)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def _label_map(item: Any) -> np.ndarray:
    """A label map given as such, or the ``label_map`` of a face."""
    labels = item if isinstance(item, np.ndarray) else getattr(item, "label_map", None)
    if labels is None:
        raise ValueError(f"expected a label map or a face with one, got {type(item).__name__}")
    return labels


def reliability_report(forgeries: Sequence[Any], label_maps_or_faces: Sequence[Any],
                       rules: Sequence[str] = ("top5", "otsu", "adaptive"), tree: ConceptTree | None = None,
                       **annotate_kwargs: Any) -> dict[str, Any]:
    """Score each mask rule on ``forgeries`` against their ground truth.

    Args:
        forgeries: objects with ``fake``, ``real``, ``mask``, ``concepts`` and ``forgery_class``
            (:class:`fifa_lab.forge.Forgery`; a real image is ``forgery_class="real"``, an empty mask
            and no concepts).
        label_maps_or_faces: per forgery, the label map its ground-truth concepts were named on (the
            fake's geometry when a reenactment moved the face), or a face whose ``label_map`` it is.
        rules: mask rule names to compare.
        annotate_kwargs: passed to :func:`fifa_lab.annotate.annotate` (thresholds, min_coverage, ...).

    Returns:
        ``{"per_class": {class: {rule: entry}}, "overall": {rule: entry}, "rules": [...],
        "best_rule": name, "best_by": str}`` with ``entry = {"concepts": {precision, recall, f1},
        "mask_iou", "artifacts": {precision, recall}, "detection", "ms_per_image", "n"}`` (plain
        floats, JSON-ready).
    """
    if len(forgeries) != len(label_maps_or_faces):
        raise ValueError(f"{len(forgeries)} forgeries but {len(label_maps_or_faces)} label maps or faces")
    if not forgeries:
        raise ValueError("no forgeries to score")
    if not rules:
        raise ValueError("no rules to compare")
    tree = load_tree() if tree is None else tree
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for forgery, item in zip(forgeries, label_maps_or_faces):
        labels = _label_map(item)
        truth = {c["concept"]: set(c["artifacts"]) for c in forgery.concepts}
        true_mask = np.asarray(forgery.mask, bool)
        for rule in rules:
            start = time.perf_counter()
            notes = annotate(forgery.fake, forgery.real, label_map=labels, tree=tree, rule=rule, **annotate_kwargs)
            seconds = time.perf_counter() - start
            predicted = {c["concept"]: set(c["artifacts"]) for c in notes.concepts}
            union = int((notes.mask | true_mask).sum())
            iou = (notes.mask & true_mask).sum() / union if union else 1.0
            matched = predicted.keys() & truth.keys()
            for group in (forgery.forgery_class, "overall"):
                c = counts.setdefault((group, rule), {**{key: 0 for key in METRIC_KEYS}, "iou": []})
                c["tp"] += len(matched)
                c["pred"] += len(predicted)
                c["true"] += len(truth)
                c["atp"] += sum(len(predicted[k] & truth[k]) for k in matched)
                c["apred"] += sum(len(predicted[k]) for k in matched)
                c["atrue"] += sum(len(truth[k]) for k in matched)
                c["agree"] += int(notes.has_artifact == bool(true_mask.any()))
                c["seconds"] += seconds
                c["iou"].append(float(iou))

    report: dict[str, Any] = {"per_class": {}, "overall": {}, "rules": list(rules)}
    for (group, rule), c in counts.items():
        n = len(c["iou"])
        artifacts = _prf(c["atp"], c["apred"], c["atrue"])
        entry = {"concepts": _prf(c["tp"], c["pred"], c["true"]), "mask_iou": round(float(np.mean(c["iou"])), 4),
                 "artifacts": {"precision": artifacts["precision"], "recall": artifacts["recall"]},
                 "detection": round(c["agree"] / n, 4), "ms_per_image": round(1000 * c["seconds"] / n, 2), "n": n}
        if group == "overall":
            report["overall"][rule] = entry
        else:
            report["per_class"].setdefault(group, {})[rule] = entry

    def score(rule: str) -> float:
        return (report["overall"][rule]["concepts"]["f1"] + report["overall"][rule]["mask_iou"]) / 2

    report["best_rule"] = max(rules, key=score)  # ties go to the first listed
    report["best_by"] = "mean of overall concept F1 and mask IoU"
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table: one row per class and rule, then the best rule."""
    lines = [f"{'class':6s} {'rule':9s} {'n':>4s} {'conc.P':>7s} {'conc.R':>7s} {'conc.F1':>8s} {'maskIoU':>8s} "
             f"{'art.P':>6s} {'art.R':>6s} {'detect':>7s} {'ms':>6s}"]
    groups = sorted(report["per_class"].items()) + [("all", report["overall"])]
    for group, by_rule in groups:
        for rule in report["rules"]:
            e = by_rule[rule]
            lines.append(f"{group:6s} {rule:9s} {e['n']:4d} {e['concepts']['precision']:7.3f} "
                         f"{e['concepts']['recall']:7.3f} {e['concepts']['f1']:8.3f} {e['mask_iou']:8.3f} "
                         f"{e['artifacts']['precision']:6.3f} {e['artifacts']['recall']:6.3f} "
                         f"{e['detection']:7.3f} {e['ms_per_image']:6.1f}")
    lines.append(f"best rule: {report['best_rule']} ({report['best_by']})")
    return "\n".join(lines)
