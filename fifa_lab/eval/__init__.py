"""Evaluation of fifa-lab: the metrics of the FiFa-11 tasks.

:mod:`fifa_lab.eval.metrics` scores detection, classification, text, masks and boxes;
:mod:`fifa_lab.eval.age` scores grounded explanations (GLaMM's protocol, with its matching fixed) and
grounding consistency. Metric keys are the lower-case names of ``metrics.json`` (``acc``, ``auc``,
``f1``, ``eer``, ``macro_f1``, ``meteor``, ``cider``, ``bleu4``, ``rouge_l``, ``miou``, ``ciou``, ``ap50``,
``mask_recall``, ``grounding_consistency``).
"""
from fifa_lab.eval.age import (
    age_metrics,
    concept_masks,
    embed_phrases,
    grounding_consistency,
    phrase_similarity,
    recovered_pairs,
    resolve_phrase,
)
from fifa_lab.eval.metrics import (
    accuracy,
    box_ap50,
    box_iou,
    box_iou_matrix,
    box_metrics,
    classification_metrics,
    confusion_matrix,
    detection_metrics,
    equal_error_rate,
    f1_score,
    iou_matrix,
    macro_f1,
    mask_ap50,
    mask_iou,
    mask_metrics,
    matched_iou,
    roc_auc,
    roc_curve,
    strip_markup,
    text_metrics,
)

__all__ = [
    "accuracy", "age_metrics", "box_ap50", "box_iou", "box_iou_matrix", "box_metrics", "classification_metrics",
    "concept_masks", "confusion_matrix", "detection_metrics", "embed_phrases", "equal_error_rate", "f1_score",
    "grounding_consistency", "iou_matrix", "macro_f1", "mask_ap50", "mask_iou", "mask_metrics", "matched_iou",
    "phrase_similarity", "recovered_pairs", "resolve_phrase", "roc_auc", "roc_curve", "strip_markup",
    "text_metrics",
]
