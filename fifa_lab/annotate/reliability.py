"""How far the annotator can be trusted: its output against forgery ground truth, per class and rule.

The published FiFa-Annotator reports no such numbers. Here every rule annotates the same synthetic
forgeries and is scored against their ground truth:

* concepts: precision, recall and F1, micro-averaged over images; a predicted concept matches a
  ground-truth concept with the same leaf id;
* mask: IoU of the annotator's mask and the ground-truth mask, averaged over images;
* artifacts: precision and recall of (concept, artifact type) pairs on the matched concepts.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fifa_lab.annotate.annotator import annotate
from fifa_lab.fict.tree import ConceptTree, load_tree


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def reliability_report(forgeries: Sequence[Any], label_maps: Sequence[np.ndarray],
                       rules: Sequence[str] = ("top5", "otsu", "adaptive"), tree: ConceptTree | None = None,
                       ) -> dict[str, Any]:
    """Score each mask rule on ``forgeries`` (objects with ``fake``, ``real``, ``mask``, ``concepts``,
    ``forgery_class``, like :class:`fifa_lab.forge.Forgery`); ``label_maps[i]`` labels forgery i's fake.

    Returns ``{"per_class": {class: {rule: {concepts: {precision, recall, f1}, mask_iou, artifacts:
    {precision, recall}, n}}}, "overall": {rule: ...}, "best_rule": name, "rules": [...]}``.
    """
    if len(forgeries) != len(label_maps):
        raise ValueError(f"{len(forgeries)} forgeries but {len(label_maps)} label maps")
    if not forgeries:
        raise ValueError("no forgeries to score")
    tree = load_tree() if tree is None else tree
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for forgery, labels in zip(forgeries, label_maps):
        truth = {c["concept"]: set(c["artifacts"]) for c in forgery.concepts}
        for rule in rules:
            notes = annotate(forgery.fake, forgery.real, label_map=labels, tree=tree, rule=rule)
            predicted = {c["concept"]: set(c["artifacts"]) for c in notes.concepts}
            union = (notes.mask | forgery.mask).sum()
            iou = float((notes.mask & forgery.mask).sum() / union) if union else 1.0
            matched = predicted.keys() & truth.keys()
            for group in (forgery.forgery_class, "overall"):
                c = counts.setdefault((group, rule), {"tp": 0, "pred": 0, "true": 0, "iou": [],
                                                       "atp": 0, "apred": 0, "atrue": 0})
                c["tp"] += len(matched)
                c["pred"] += len(predicted)
                c["true"] += len(truth)
                c["iou"].append(iou)
                c["atp"] += sum(len(predicted[k] & truth[k]) for k in matched)
                c["apred"] += sum(len(predicted[k]) for k in matched)
                c["atrue"] += sum(len(truth[k]) for k in matched)
    report: dict[str, Any] = {"per_class": {}, "overall": {}, "rules": list(rules)}
    for (group, rule), c in counts.items():
        artifacts = _prf(c["atp"], c["apred"], c["atrue"])
        entry = {"concepts": _prf(c["tp"], c["pred"], c["true"]), "mask_iou": round(float(np.mean(c["iou"])), 4),
                 "artifacts": {"precision": artifacts["precision"], "recall": artifacts["recall"]}, "n": len(c["iou"])}
        if group == "overall":
            report["overall"][rule] = entry
        else:
            report["per_class"].setdefault(group, {})[rule] = entry
    # The best rule balances naming the right concepts and outlining the right pixels.
    report["best_rule"] = max(rules, key=lambda r: report["overall"][r]["concepts"]["f1"] + report["overall"][r]["mask_iou"])
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table: one row per class and rule."""
    lines = [f"{'class':6s} {'rule':9s} {'n':>4s} {'conc.P':>7s} {'conc.R':>7s} {'conc.F1':>8s} {'maskIoU':>8s} "
             f"{'art.P':>6s} {'art.R':>6s}"]
    groups = [(k, v) for k, v in sorted(report["per_class"].items())] + [("all", report["overall"])]
    for group, by_rule in groups:
        for rule in report["rules"]:
            e = by_rule[rule]
            lines.append(f"{group:6s} {rule:9s} {e['n']:4d} {e['concepts']['precision']:7.3f} {e['concepts']['recall']:7.3f} "
                         f"{e['concepts']['f1']:8.3f} {e['mask_iou']:8.3f} {e['artifacts']['precision']:6.3f} "
                         f"{e['artifacts']['recall']:6.3f}")
    lines.append(f"best rule: {report['best_rule']}")
    return "\n".join(lines)
