"""Metrics of the FiFa-11 tasks: detection, classification, text, masks and boxes.

Every metric returns plain Python floats (or dicts of them) under the lower-case keys that
``metrics.json`` uses: ``acc``, ``auc``, ``f1``, ``eer``, ``macro_f1``, ``meteor``, ``cider``, ``bleu4``,
``rouge_l``, ``miou``, ``ciou``, ``ap50``. Bad input (mismatched lengths, wrong shapes, empty lists,
unknown labels) raises ``ValueError`` with a message that says what is wrong.

Conventions chosen here, used the same way everywhere in :mod:`fifa_lab.eval`:

* **Labels.** Detection labels are ``0``/``1``, booleans or ``"real"``/``"fake"`` (any case); ``fake``
  (1) is the positive class, and scores are the probability (or any monotone score) of ``fake``.
* **Undefined values are NaN.** AUC and EER of a set holding one class only, F1 when neither the truth
  nor the prediction holds a positive, and AP50 when there is no true mask or box at all are ``nan``
  (no warning): the metric is undefined there, and a number would mislead. A class that appears in
  neither the truth nor the prediction is left out of the macro-F1 mean for the same reason.
* **Empty masks.** A prediction and truth that are *both* empty score IoU ``empty_iou`` (default 1.0:
  "nothing here" is the right answer on a real image, as in the generalised referring-segmentation
  gIoU); pass ``empty_iou=None`` to leave such images out of mIoU. For AP50, empty masks are dropped on
  both sides (an empty mask says "no artifact", not "an artifact of area 0").
* **Masks** are ``(H, W)`` bool (or 0/1) arrays, or COCO RLE dicts ``{"size": [h, w], "counts": str}``
  (:mod:`fifa_lab.data.masks`). **Boxes** are ``(x0, y0, x1, y1)`` pixels with exclusive maxima (as
  everywhere in fifa-lab); they go to pycocotools as COCO ``[x, y, w, h]``.
* **Text.** Grounding markup (``<p>``, ``</p>``, ``[SEG]``) is stripped before scoring; text is then
  tokenised with the COCO caption PTB tokenizer (Java) and scored with ``pycocoevalcap`` (BLEU-4 and
  CIDEr at corpus level, METEOR through its Java jar, ROUGE-L averaged over items). CIDEr is the COCO
  value (CIDEr-D, 0..10; papers often print it x100) and uses the evaluated set for its IDF, so it
  needs at least a few items: on a single item it is 0.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import math
import re
import shutil
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from fifa_lab.annotate.explain import strip_grounding
from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.masks import decode_rle, encode_rle

TEXT_METRICS = ("meteor", "cider", "bleu4", "rouge_l")
AP_IOU = 0.5  # the IoU threshold of AP50
_POSITIVE = {"fake": 1, "real": 0}


# --- shared helpers -----------------------------------------------------------------------------------


def _check_lengths(**named: Sequence[Any]) -> int:
    """The common length of the named sequences; ValueError if they are empty or differ."""
    lengths = {name: len(values) for name, values in named.items()}
    first = next(iter(lengths))
    if lengths[first] == 0:
        raise ValueError(f"{first} is empty; metrics need at least one item")
    if len(set(lengths.values())) > 1:
        raise ValueError("inputs differ in length: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    return lengths[first]


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


# --- detection (Det, R-Det) ---------------------------------------------------------------------------


def binary_labels(values: Sequence[Any], name: str = "labels") -> np.ndarray:
    """``(N,)`` int array of 0 (real) / 1 (fake) from 0/1, booleans or ``"real"``/``"fake"`` (any case).

    Raises:
        ValueError: an empty input or a value that is none of these (the message names it).
    """
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if isinstance(value, str) and value.strip().lower() in _POSITIVE:
            out[i] = _POSITIVE[value.strip().lower()]
        elif isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating)) and value in (0, 1):
            out[i] = int(value)
        else:
            raise ValueError(f"{name}[{i}] = {value!r} is not a binary label; use 0/1, True/False or 'real'/'fake'")
    if out.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one item")
    return out


def _scores(values: Sequence[Any], name: str = "y_score") -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be one score per item (1-D), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return scores


def accuracy(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Share of items whose prediction equals the truth (any hashable labels, compared as given)."""
    _check_lengths(y_true=y_true, y_pred=y_pred)
    return float(np.mean([t == p for t, p in zip(y_true, y_pred)]))


def f1_score(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Binary F1 of the ``fake`` class: ``2 TP / (2 TP + FP + FN)``; NaN when that is 0/0 (no positives anywhere)."""
    _check_lengths(y_true=y_true, y_pred=y_pred)
    truth, pred = binary_labels(y_true, "y_true"), binary_labels(y_pred, "y_pred")
    tp = int(np.sum((truth == 1) & (pred == 1)))
    fp = int(np.sum((truth == 0) & (pred == 1)))
    fn = int(np.sum((truth == 1) & (pred == 0)))
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def roc_curve(y_true: Sequence[Any], y_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score plus the ``(0, 0)`` start.

    A point at threshold ``t`` counts ``score >= t`` as fake; tied scores move together (a diagonal
    step). ``thresholds[0]`` is ``inf``. Raises ValueError when only one class is present.
    """
    _check_lengths(y_true=y_true, y_score=y_score)
    truth, scores = binary_labels(y_true, "y_true"), _scores(y_score)
    positives, negatives = int(truth.sum()), int(truth.size - truth.sum())
    if positives == 0 or negatives == 0:
        raise ValueError("a ROC curve needs both real and fake items; only one class is present")
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(truth)[last_of_tie]
    fps = last_of_tie + 1 - tps
    fpr = np.r_[0.0, fps / negatives]
    tpr = np.r_[0.0, tps / positives]
    return fpr, tpr, np.r_[np.inf, scores[last_of_tie]]


def _roc_or_none(y_true: Sequence[Any], y_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(fpr, tpr)`` of :func:`roc_curve`, or None when only one class is present."""
    _check_lengths(y_true=y_true, y_score=y_score)
    truth = binary_labels(y_true, "y_true")
    if truth.min() == truth.max():
        return None
    fpr, tpr, _ = roc_curve(truth, y_score)
    return fpr, tpr


def roc_auc(y_true: Sequence[Any], y_score: Sequence[float]) -> float:
    """Area under the ROC curve (trapezoids; ties count one half); NaN when only one class is present."""
    roc = _roc_or_none(y_true, y_score)
    if roc is None:
        return math.nan
    fpr, tpr = roc
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def equal_error_rate(y_true: Sequence[Any], y_score: Sequence[float]) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate (``1 - tpr``).

    Found on the ROC curve with straight lines between its points (the usual ``brentq`` on an
    interpolated ROC, done in closed form). 0 for perfectly separated scores, 0.5 for constant scores.
    NaN when only one class is present.
    """
    roc = _roc_or_none(y_true, y_score)
    if roc is None:
        return math.nan
    fpr, tpr = roc
    gap = fpr - (1.0 - tpr)  # -1 at the start (0, 0), +1 at the end (1, 1), non-decreasing
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0:
        return float(fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def detection_metrics(y_true: Sequence[Any], y_score: Sequence[float] | None = None,
                      y_pred: Sequence[Any] | None = None, threshold: float = 0.5) -> dict[str, float | None]:
    """Real/fake detection metrics: ``{"acc", "f1", "auc", "eer"}``.

    Args:
        y_true: per item 0/1, bool or ``"real"``/``"fake"``.
        y_score: per item the score of ``fake`` (higher = more likely fake); needed for AUC and EER.
        y_pred: per item the hard decision (same label forms as ``y_true``); when left out it is
            ``y_score >= threshold``.
        threshold: the decision threshold on ``y_score`` when ``y_pred`` is not given.

    Returns:
        ``acc`` and ``f1`` (fake is positive) from the hard decisions; ``auc`` and ``eer`` from the
        scores, ``None`` when no scores are given and NaN when only one class is present.
    """
    if y_score is None and y_pred is None:
        raise ValueError("pass y_score (scores of 'fake') or y_pred (hard decisions), or both")
    truth = binary_labels(y_true, "y_true")
    if y_score is not None:
        _check_lengths(y_true=y_true, y_score=y_score)
        scores = _scores(y_score)
    if y_pred is None:
        pred = (scores >= threshold).astype(np.int64)
    else:
        _check_lengths(y_true=y_true, y_pred=y_pred)
        pred = binary_labels(y_pred, "y_pred")
    return {
        "acc": accuracy(truth, pred),
        "f1": f1_score(truth, pred),
        "auc": None if y_score is None else roc_auc(truth, scores),
        "eer": None if y_score is None else equal_error_rate(truth, scores),
    }


# --- classification (Cls) -----------------------------------------------------------------------------


def confusion_matrix(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] = FORGERY_CLASSES,
                     ) -> np.ndarray:
    """``(K, K)`` int counts, rows = true label, columns = predicted label, both in the order of ``labels``.

    Raises:
        ValueError: different lengths, repeated labels, or a true or predicted value not in ``labels``
            (map unparseable answers to a label of your choice before calling).
    """
    _check_lengths(y_true=y_true, y_pred=y_pred)
    labels = list(labels)
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list without repeats, got {labels!r}")
    index = {label: k for k, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        for name, value in (("y_true", t), ("y_pred", p)):
            if value not in index:
                raise ValueError(f"{name}[{i}] = {value!r} is not one of the labels {labels}")
        matrix[index[t], index[p]] += 1
    return matrix


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """``(K,)`` one-vs-rest F1 of each class from a confusion matrix; NaN for a class in neither truth nor prediction."""
    matrix = np.asarray(matrix)
    tp = np.diag(matrix).astype(np.float64)
    den = matrix.sum(axis=0) + matrix.sum(axis=1)  # = 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)


def macro_f1(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] = FORGERY_CLASSES) -> float:
    """Mean one-vs-rest F1 over ``labels``; classes absent from truth and prediction are left out (NaN if all are)."""
    f1 = per_class_f1(confusion_matrix(y_true, y_pred, labels))
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] = FORGERY_CLASSES,
                           ) -> dict[str, Any]:
    """Forgery-class metrics: ``{"acc", "macro_f1", "confusion", "labels", "per_class_f1"}``.

    ``confusion`` is a list of lists (JSON-ready; rows true, columns predicted, in ``labels`` order),
    ``per_class_f1`` maps each label to its F1 (NaN when the class is in neither truth nor prediction).
    ``labels`` defaults to the forgery classes ``real, FS, FR, FE, EFS``.
    """
    matrix = confusion_matrix(y_true, y_pred, labels)
    f1 = per_class_f1(matrix)
    return {
        "acc": float(np.trace(matrix) / matrix.sum()),
        "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else math.nan,
        "confusion": matrix.tolist(),
        "labels": list(labels),
        "per_class_f1": {str(label): float(v) for label, v in zip(labels, f1)},
    }


# --- text (TOE, R-TOE, B-TOE, AGE text) ---------------------------------------------------------------


def strip_markup(text: str) -> str:
    """The text without grounding markup (``<p>``, ``</p>``, ``[SEG]``), spaces tidied (as the TOE texts)."""
    if not isinstance(text, str):
        raise ValueError(f"texts must be strings, got {type(text).__name__}")
    return strip_grounding(text)


_CLITIC = re.compile(r"(\w)('s|'re|'ve|'ll|'d|'m|n't)\b")
_NOT_WORD = re.compile(r"[^a-z0-9'\-]+")


def simple_tokenize(text: str) -> str:
    """A Java-free stand-in for the PTB tokenizer: lower case, punctuation dropped, tokens joined by spaces.

    Words keep inner hyphens (``brow-ridge``) and clitics split off as PTB does (``cupid 's``,
    ``does n't``). Scores computed with it are close to, but not identical with, PTB-tokenised ones.
    """
    text = _CLITIC.sub(r"\1 \2", text.lower().replace("\u2019", "'"))
    tokens = (token.strip("-") for token in _NOT_WORD.sub(" ", text).split())
    return " ".join(t for t in tokens if t and t != "'")


def _ptb_tokenize(texts: dict[int, list[str]]) -> dict[int, list[str]] | None:
    """PTB-tokenised texts (pycocoevalcap's Java tokenizer), or None if it failed (a warning says why)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {k: [{"caption": t} for t in v] for k, v in texts.items()}
    try:
        out = PTBTokenizer().tokenize(captions)
    except Exception as exc:  # noqa: BLE001 - any failure of the Java tool falls back to the simple tokenizer
        warnings.warn(f"the PTB tokenizer failed ({exc}); using fifa_lab's simple tokenizer", stacklevel=3)
        return None
    if set(out) != set(texts) or any(len(out[k]) != len(v) for k, v in texts.items()):
        warnings.warn("the PTB tokenizer returned a different number of lines; using fifa_lab's simple tokenizer",
                      stacklevel=3)
        return None
    return out


class _MeteorProcess:
    """One METEOR Java process (pycocoevalcap's), started on first use and kept for the next calls.

    Starting it loads a paraphrase table (several seconds), so it is reused; it stops at interpreter
    exit. A failed call kills it and the next call starts a fresh one.
    """

    def __init__(self) -> None:
        self._meteor = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float | None:
        """The corpus METEOR score, or None (with a warning) when the Java process fails."""
        from pycocoevalcap.meteor.meteor import Meteor

        with self._lock:
            try:
                if self._meteor is None or self._meteor.meteor_p.poll() is not None:
                    self._meteor = Meteor()
            except OSError as exc:
                warnings.warn(f"METEOR could not start java: {exc!r}", stacklevel=4)
                return None
            try:
                return float(self._meteor.compute_score(gts, res)[0])
            except Exception as exc:  # noqa: BLE001 - a broken Java run costs METEOR only, as a missing java does
                self._close_locked()
                warnings.warn(f"METEOR failed: {exc!r}", stacklevel=4)
                return None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        meteor, self._meteor = self._meteor, None
        if meteor is not None:
            process = meteor.meteor_p
            with contextlib.suppress(Exception):
                process.kill()
                process.wait(timeout=10)
            # Meteor.__del__ takes its own lock, which a failed compute_score leaves held; a fresh
            # lock and a finished process let it run harmlessly when the object is collected.
            meteor.lock = threading.Lock()


_METEOR = _MeteorProcess()


def _references(references: Sequence[Any]) -> list[list[str]]:
    out = []
    for i, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{i}] must be a string or a non-empty list of strings, got {refs!r}")
        out.append(refs)
    return out


def text_metrics(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                 metrics: Sequence[str] = TEXT_METRICS, tokenizer: str = "auto") -> dict[str, float | None]:
    """Caption metrics of predicted texts against one or more references each (COCO caption protocol).

    Args:
        predictions: one predicted text per item (grounding markup is stripped).
        references: per item one reference string or a list of them (markup stripped too).
        metrics: which of ``meteor``, ``cider``, ``bleu4``, ``rouge_l`` to compute.
        tokenizer: ``"ptb"`` (pycocoevalcap's Java PTB tokenizer, as COCO), ``"simple"``
            (:func:`simple_tokenize`, no Java) or ``"auto"`` (PTB where ``java`` is on the PATH).

    Returns:
        ``{metric: value}`` for the requested metrics. Without ``java`` a warning names it, the
        simple tokenizer is used and ``meteor`` is ``None``; the other metrics are still computed.
        A METEOR run that fails in Java also gives ``None`` with a warning saying why.
    """
    _check_lengths(predictions=predictions, references=references)
    unknown = set(metrics) - set(TEXT_METRICS)
    if unknown or not metrics:
        raise ValueError(f"unknown text metrics {sorted(unknown)}; choose from {TEXT_METRICS}")
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"tokenizer must be 'auto', 'ptb' or 'simple', got {tokenizer!r}")
    refs = _references(references)
    if not all(isinstance(p, str) for p in predictions):
        raise ValueError("predictions must be strings")
    # One line per text: the Java tools read line by line.
    res = {i: [" ".join(strip_markup(p).split())] for i, p in enumerate(predictions)}
    gts = {i: [" ".join(strip_markup(r).split()) for r in rs] for i, rs in enumerate(refs)}

    java = shutil.which("java") is not None
    if not java and (tokenizer != "simple" or "meteor" in metrics):
        warnings.warn("`java` was not found on the PATH: METEOR is skipped (None) and the PTB tokenizer is "
                      "replaced by fifa_lab's simple tokenizer; install a Java runtime for COCO-exact scores",
                      stacklevel=2)
    tokenized = None
    if java and tokenizer in ("auto", "ptb"):
        both = _ptb_tokenize({**{2 * i: v for i, v in res.items()}, **{2 * i + 1: v for i, v in gts.items()}})
        if both is not None:
            tokenized = ({i: both[2 * i] for i in res}, {i: both[2 * i + 1] for i in gts})
    if tokenized is None:
        tokenized = ({i: [simple_tokenize(t) for t in v] for i, v in res.items()},
                     {i: [simple_tokenize(t) for t in v] for i, v in gts.items()})
    res, gts = tokenized
    # METEOR's line protocol uses " ||| " as a separator.
    res = {i: [t.replace("|||", " ") for t in v] for i, v in res.items()}
    gts = {i: [t.replace("|||", " ") for t in v] for i, v in gts.items()}

    out: dict[str, float | None] = {}
    for name in metrics:
        if name == "meteor":
            out[name] = _METEOR.score(gts, res) if java else None
        elif name == "cider":
            from pycocoevalcap.cider.cider import Cider
            out[name] = float(Cider().compute_score(gts, res)[0])
        elif name == "bleu4":
            from pycocoevalcap.bleu.bleu import Bleu
            with contextlib.redirect_stdout(io.StringIO()):
                out[name] = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
        elif name == "rouge_l":
            from pycocoevalcap.rouge.rouge import Rouge
            out[name] = float(Rouge().compute_score(gts, res)[0])
    return out


# --- masks (Loc, RSeg, AGE masks) ---------------------------------------------------------------------


def to_mask(mask: Any) -> np.ndarray:
    """An ``(H, W)`` bool array from a bool/0-1 array or a COCO RLE dict; ValueError for anything else."""
    if isinstance(mask, Mapping):
        return decode_rle(mask)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be an (H, W) array or an RLE dict, got shape {array.shape}")
    return array.astype(bool, copy=False) if array.dtype == bool else array != 0


def mask_list(masks: Any) -> list[np.ndarray]:
    """The masks of one image as a list of ``(H, W)`` bool arrays.

    Accepts a list/tuple of masks, a ``(K, H, W)`` array (``Response.masks``), or one mask (array or RLE).
    """
    if isinstance(masks, Mapping):
        return [to_mask(masks)]
    if isinstance(masks, np.ndarray):
        if masks.ndim == 3:
            return [m != 0 for m in masks]
        return [to_mask(masks)]
    if isinstance(masks, (list, tuple)):
        return [to_mask(m) for m in masks]
    raise ValueError(f"masks of an image must be a list of masks, a (K, H, W) array or one mask, "
                     f"got {type(masks).__name__}")


def _same_shape(masks: Sequence[np.ndarray], where: str) -> tuple[int, int] | None:
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise ValueError(f"{where}: masks of different sizes {sorted(shapes)}")
    return next(iter(shapes)) if shapes else None


def iou_matrix(masks_a: Sequence[Any], masks_b: Sequence[Any]) -> np.ndarray:
    """``(len(a), len(b))`` IoU of every pair of masks (all of one size); 0 where both masks are empty."""
    a, b = [to_mask(m) for m in masks_a], [to_mask(m) for m in masks_b]
    _same_shape(a + b, "iou_matrix")
    if not a or not b:
        return np.zeros((len(a), len(b)))
    # float64 products count pixels exactly (float32 would round above 2**24 pixels).
    fa = np.stack(a).reshape(len(a), -1).astype(np.float64)
    fb = np.stack(b).reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def mask_iou(pred: Any, true: Any, empty_iou: float = 1.0) -> float:
    """IoU of two masks of one size; ``empty_iou`` when both are empty."""
    p, t = to_mask(pred), to_mask(true)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in size")
    union = int(np.count_nonzero(p | t))
    return float(empty_iou) if union == 0 else int(np.count_nonzero(p & t)) / union


def _union(masks: Any) -> np.ndarray:
    """One image's mask: a single mask (array or RLE), or the union of a list / ``(K, H, W)`` stack of masks."""
    if isinstance(masks, np.ndarray) and masks.ndim == 3:
        if masks.shape[0] == 0:
            return np.zeros(masks.shape[1:], dtype=bool)
        return np.any(masks != 0, axis=0)
    if isinstance(masks, (list, tuple)) and masks and isinstance(masks[0], (Mapping, np.ndarray)):
        parts = mask_list(masks)
        _same_shape(parts, "masks to unite")
        return np.logical_or.reduce(parts)
    if isinstance(masks, (list, tuple)) and not masks:
        raise ValueError("an empty list of masks has no size; pass an all-false (H, W) mask or a (0, H, W) array")
    return to_mask(masks)


def mask_metrics(pred_masks: Sequence[Any], true_masks: Sequence[Any], empty_iou: float | None = 1.0,
                 ) -> dict[str, float]:
    """Localisation metrics ``{"miou", "ciou"}`` over a set of images.

    Args:
        pred_masks, true_masks: one mask per image (array or RLE); a list of masks of an image is united.
        empty_iou: IoU of an image whose prediction and truth are both empty; ``None`` leaves such
            images out of mIoU.

    Returns:
        ``miou``: the mean over images of each image's IoU. ``ciou``: cumulative intersection over
        cumulative union (big masks weigh more); ``empty_iou`` (or NaN for ``None``) if every mask is empty.
        ``miou`` is NaN when ``empty_iou=None`` leaves no image.
    """
    n = _check_lengths(pred_masks=pred_masks, true_masks=true_masks)
    ious, inter_sum, union_sum = [], 0, 0
    for i in range(n):
        p, t = _union(pred_masks[i]), _union(true_masks[i])
        if p.shape != t.shape:
            raise ValueError(f"image {i}: prediction {p.shape} and truth {t.shape} differ in size")
        inter, union = int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        if union:
            ious.append(inter / union)
        elif empty_iou is not None:
            ious.append(float(empty_iou))
    if union_sum:
        ciou = inter_sum / union_sum
    else:
        ciou = math.nan if empty_iou is None else float(empty_iou)
    return {"miou": float(np.mean(ious)) if ious else math.nan, "ciou": float(ciou)}


def match_pairs(ious: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs ``(rows, cols)`` with the largest total IoU (Hungarian, ``linear_sum_assignment``)."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return linear_sum_assignment(ious, maximize=True)


def matched_iou(ious: np.ndarray, empty_iou: float | None = 1.0, unmatched: str = "zero") -> float | None:
    """One image's mean IoU after one-to-one (Hungarian) matching of its predictions and truths.

    Args:
        ious: ``(n_pred, n_true)`` IoU matrix.
        empty_iou: the score when the image has neither predictions nor truths; ``None`` = leave it out
            (the function returns None).
        unmatched: ``"zero"`` (default) divides the matched IoUs by ``max(n_pred, n_true)``, so a missed
            truth or an extra prediction scores 0; ``"ignore"`` averages only matched pairs with IoU > 0
            (GLaMM's GCG evaluation, where extra or missing masks cost nothing; 0 when there are none).
    """
    if unmatched not in ("zero", "ignore"):
        raise ValueError(f"unmatched must be 'zero' or 'ignore', got {unmatched!r}")
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2:
        raise ValueError(f"ious must be an (n_pred, n_true) matrix, got shape {ious.shape}")
    n_pred, n_true = ious.shape
    if n_pred == 0 and n_true == 0:
        return None if empty_iou is None else float(empty_iou)
    rows, cols = match_pairs(ious)
    paired = ious[rows, cols]
    if unmatched == "zero":
        return float(paired.sum() / max(n_pred, n_true))
    paired = paired[paired > 0]
    return float(paired.mean()) if paired.size else 0.0


def _coco_ap50(iou_type: str, preds: list[list[Any]], truths: list[list[Any]], scores: list[list[float]],
               sizes: list[tuple[int, int]] | None = None) -> float:
    """Class-agnostic COCO AP at IoU 0.5 (pycocotools COCOeval, area 'all', up to 100 detections per image).

    ``preds`` / ``truths`` hold per image RLE dicts (segm) or ``[x, y, w, h]`` lists (bbox).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from pycocotools import mask as mask_utils

    def area(item: Any) -> float:
        return float(mask_utils.area(item)) if iou_type == "segm" else float(item[2] * item[3])

    # COCO reads image sizes only to decode segmentations (then they must be right); boxes need none.
    images = [{"id": i + 1} for i in range(len(truths))]
    for image, (h, w) in zip(images, sizes or []):
        image.update(height=h, width=w)
    annotations, detections = [], []
    for i, items in enumerate(truths):
        for item in items:  # COCOeval uses id 0 for "unmatched", so ids start at 1
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                "area": area(item), ("segmentation" if iou_type == "segm" else "bbox"): item})
    for i, items in enumerate(preds):
        for item, score in zip(items, scores[i]):
            detections.append({"image_id": i + 1, "category_id": 1, "score": float(score),
                               ("segmentation" if iou_type == "segm" else "bbox"): item})
    if not annotations:
        return math.nan
    if not detections:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": 1, "name": "artifact"}]}
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.iouThrs = np.array([AP_IOU])
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: (iou thresholds, recall thresholds, categories, area ranges, max detections)
    precision = evaluator.eval["precision"][0, :, 0, 0, -1]
    precision = precision[precision > -1]
    return float(precision.mean()) if precision.size else math.nan


def _scores_per_image(scores: Sequence[Sequence[float]] | None, counts: list[int]) -> list[list[float]]:
    """Per image one score per prediction; all 1.0 when ``scores`` is None."""
    if scores is None:
        return [[1.0] * c for c in counts]
    _check_lengths(predictions=counts, scores=scores)
    out = []
    for i, (row, count) in enumerate(zip(scores, counts)):
        row = np.asarray(row, dtype=np.float64).ravel()
        if row.size != count or not np.isfinite(row).all():
            raise ValueError(f"image {i}: {count} predictions but scores {row.tolist()}")
        out.append(row.tolist())
    return out


def mask_ap50(pred_masks: Sequence[Any], true_masks: Sequence[Any],
              scores: Sequence[Sequence[float]] | None = None) -> float:
    """Class-agnostic mask AP50 with pycocotools (``COCOeval``, ``iouType='segm'``).

    Args:
        pred_masks, true_masks: per image a list of masks (arrays or RLE), a ``(K, H, W)`` array or one mask.
        scores: per image one confidence per predicted mask; ``None`` gives every mask score 1
            (ties keep the given order, as COCOeval sorts stably).

    Returns:
        AP at IoU 0.5 (101-point interpolated, up to 100 predictions per image); 0 when nothing is
        predicted; NaN when there is no (non-empty) true mask at all. Empty masks are dropped on both sides.
    """
    n = _check_lengths(pred_masks=pred_masks, true_masks=true_masks)
    preds, truths, kept_scores, sizes = [], [], [], []
    raw_preds = [mask_list(m) for m in pred_masks]
    all_scores = _scores_per_image(scores, [len(p) for p in raw_preds])
    for i in range(n):
        p, t = raw_preds[i], mask_list(true_masks[i])
        shape = _same_shape(p + t, f"image {i}") or (1, 1)
        keep = [k for k, m in enumerate(p) if m.any()]
        preds.append([encode_rle(p[k]) for k in keep])
        kept_scores.append([all_scores[i][k] for k in keep])
        truths.append([encode_rle(m) for m in t if m.any()])
        sizes.append(shape)
    return _coco_ap50("segm", preds, truths, kept_scores, sizes)


# --- boxes (B-Loc) ------------------------------------------------------------------------------------


def _box_array(boxes: Any, where: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{where}: boxes must be (x0, y0, x1, y1), got shape {array.shape}")
    if not np.isfinite(array).all() or (array[:, 2] < array[:, 0]).any() or (array[:, 3] < array[:, 1]).any():
        raise ValueError(f"{where}: boxes must be finite (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0, got {array.tolist()}")
    return array


def box_iou_matrix(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``(x0, y0, x1, y1)`` boxes (continuous coordinates; 0 for two empty boxes)."""
    a, b = _box_array(boxes_a, "boxes_a"), _box_array(boxes_b, "boxes_b")
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes."""
    return float(box_iou_matrix([box_a], [box_b])[0, 0])


def _box_lists(boxes: Sequence[Any], name: str) -> list[np.ndarray]:
    return [_box_array(b, f"{name}[{i}]") for i, b in enumerate(boxes)]


def box_ap50(pred_boxes: Sequence[Any], true_boxes: Sequence[Any],
             scores: Sequence[Sequence[float]] | None = None) -> float:
    """Class-agnostic box AP50 with pycocotools (``COCOeval``, ``iouType='bbox'``).

    Args:
        pred_boxes, true_boxes: per image a list of ``(x0, y0, x1, y1)`` boxes (may be empty).
        scores: per image one confidence per predicted box; ``None`` = all 1 (given order breaks ties).

    Returns:
        AP at IoU 0.5 as :func:`mask_ap50` (0 when nothing is predicted, NaN when there is no true box).
        Boxes of zero area are dropped on both sides, as empty masks are.
    """
    _check_lengths(pred_boxes=pred_boxes, true_boxes=true_boxes)
    preds, truths = _box_lists(pred_boxes, "pred_boxes"), _box_lists(true_boxes, "true_boxes")
    all_scores = _scores_per_image(scores, [len(p) for p in preds])

    def has_area(boxes: np.ndarray) -> np.ndarray:
        return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])

    all_scores = [[s for s, keep in zip(row, has_area(p)) if keep] for row, p in zip(all_scores, preds)]
    preds, truths = [p[has_area(p)] for p in preds], [t[has_area(t)] for t in truths]

    def xywh(boxes: np.ndarray) -> list[list[float]]:
        return [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes]

    return _coco_ap50("bbox", [xywh(p) for p in preds], [xywh(t) for t in truths], all_scores)


def box_metrics(pred_boxes: Sequence[Any], true_boxes: Sequence[Any], scores: Sequence[Sequence[float]] | None = None,
                empty_iou: float | None = 1.0) -> dict[str, float]:
    """Box localisation metrics ``{"miou", "ap50"}`` over a set of images (B-Loc).

    ``miou``: per image the Hungarian-matched box IoUs summed and divided by ``max(n_pred, n_true)``
    (:func:`matched_iou`; an image with no boxes on either side scores ``empty_iou``, ``None`` = left
    out), then the mean over images. ``ap50``: :func:`box_ap50`.
    """
    _check_lengths(pred_boxes=pred_boxes, true_boxes=true_boxes)
    preds, truths = _box_lists(pred_boxes, "pred_boxes"), _box_lists(true_boxes, "true_boxes")
    per_image = [matched_iou(box_iou_matrix(p, t), empty_iou) for p, t in zip(preds, truths)]
    per_image = [v for v in per_image if v is not None]
    return {"miou": float(np.mean(per_image)) if per_image else math.nan,
            "ap50": box_ap50(pred_boxes, true_boxes, scores)}
