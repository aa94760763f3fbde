"""Metrics of fifa_lab.eval: hand-made cases with known answers and seeded checks against pycocotools."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy.interpolate import interp1d
from scipy.optimize import brentq

from fifa_lab.data.masks import encode_rle
from fifa_lab.eval import age, metrics
from fifa_lab.eval import (
    age_metrics,
    box_ap50,
    box_iou,
    box_iou_matrix,
    box_metrics,
    classification_metrics,
    concept_masks,
    confusion_matrix,
    detection_metrics,
    equal_error_rate,
    f1_score,
    grounding_consistency,
    iou_matrix,
    macro_f1,
    mask_ap50,
    mask_iou,
    mask_metrics,
    matched_iou,
    phrase_similarity,
    recovered_pairs,
    resolve_phrase,
    roc_auc,
    roc_curve,
    text_metrics,
)
from fifa_lab.fict import load_tree

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need java")


# --- detection ------------------------------------------------------------------------------------------


def test_detection_perfect_and_inverted():
    y = [0, 0, 1, 1]
    assert detection_metrics(y, [0.1, 0.2, 0.8, 0.9]) == {"acc": 1.0, "f1": 1.0, "auc": 1.0, "eer": 0.0}
    inverted = detection_metrics(y, [0.9, 0.8, 0.2, 0.1])
    assert inverted == {"acc": 0.0, "f1": 0.0, "auc": 0.0, "eer": 1.0}


def test_detection_hand_case():
    # Sorted scores 0.8 (fake), 0.4 (real), 0.35 (fake), 0.1 (real): 3 of 4 real-fake pairs ordered right.
    y, s = ["real", "real", "fake", "fake"], [0.1, 0.4, 0.35, 0.8]
    out = detection_metrics(y, s)
    assert out["auc"] == pytest.approx(0.75)
    assert out["acc"] == pytest.approx(0.75)  # threshold 0.5 calls only 0.8 fake
    assert out["f1"] == pytest.approx(2 / 3)  # TP 1, FP 0, FN 1
    assert out["eer"] == pytest.approx(0.5)  # ROC passes through fpr = fnr = 0.5
    fpr, tpr, thresholds = roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thresholds[0] == np.inf and list(thresholds[1:]) == [0.8, 0.4, 0.35, 0.1]
    # Label forms are interchangeable; hard predictions give acc and F1 but no AUC/EER.
    assert detection_metrics([0, 0, 1, 1], s) == out
    hard = detection_metrics(y, y_pred=["real", "fake", "fake", "fake"])
    assert hard == {"acc": 0.75, "f1": pytest.approx(0.8), "auc": None, "eer": None}


def test_detection_ties_and_single_class():
    assert roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert equal_error_rate([0, 1, 0, 1], [0.5] * 4) == 0.5
    only_fake = detection_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(only_fake["auc"]) and math.isnan(only_fake["eer"])
    assert only_fake["acc"] == pytest.approx(2 / 3)
    assert math.isnan(f1_score([0, 0], [0, 0]))  # no positive anywhere: F1 undefined
    assert f1_score([0, 0], [1, 0]) == 0.0
    with pytest.raises(ValueError, match="one class"):
        roc_curve([0, 0], [0.1, 0.2])


def test_auc_and_eer_match_independent_computations():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 60)
        y[:2] = [0, 1]
        s = np.round(rng.random(60) + 0.4 * y, 1)  # rounding makes ties
        pos, neg = s[y == 1], s[y == 0]
        pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
        assert roc_auc(y, s) == pytest.approx(pairs)
        fpr, tpr, _ = roc_curve(y, s)
        reference = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
        assert equal_error_rate(y, s) == pytest.approx(reference, abs=1e-9)


def test_detection_errors():
    with pytest.raises(ValueError, match="differ in length"):
        detection_metrics([0, 1], [0.3])
    with pytest.raises(ValueError, match="empty"):
        detection_metrics([], [])
    with pytest.raises(ValueError, match="not a binary label"):
        detection_metrics(["real", "maybe"], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        detection_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="y_score"):
        detection_metrics([0, 1])


# --- classification -------------------------------------------------------------------------------------


def test_classification_hand_case():
    labels = ["real", "FS", "FE"]
    y_true = ["real", "real", "FS", "FS", "FE", "FE"]
    y_pred = ["real", "FS", "FS", "FS", "FE", "real"]
    matrix = confusion_matrix(y_true, y_pred, labels)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    # F1: real 2*1/(2+1+1) = 1/2, FS 2*2/(4+1+0) = 4/5, FE 2*1/(2+0+1) = 2/3
    out = classification_metrics(y_true, y_pred, labels)
    assert out["acc"] == pytest.approx(4 / 6)
    assert out["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert out["confusion"] == matrix.tolist() and out["labels"] == labels
    assert out["per_class_f1"]["FS"] == pytest.approx(0.8)
    # The label order is the caller's.
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, ["FE", "FS", "real"]), matrix[::-1, ::-1])


def test_classification_perfect_absent_class_and_errors():
    y = ["real", "FS", "FR", "FE"]
    out = classification_metrics(y, y)  # default labels: real, FS, FR, FE, EFS
    assert out["acc"] == 1.0 and out["macro_f1"] == 1.0
    assert math.isnan(out["per_class_f1"]["EFS"])  # in neither truth nor prediction: left out of the mean
    assert macro_f1(["FS", "FS"], ["FE", "FE"]) == 0.0
    with pytest.raises(ValueError, match="not one of the labels"):
        confusion_matrix(["real"], ["deepfake"])
    with pytest.raises(ValueError, match="repeats"):
        confusion_matrix(["real"], ["real"], ["real", "real"])
    with pytest.raises(ValueError, match="differ in length"):
        macro_f1(["real"], ["real", "FS"])


# --- text -----------------------------------------------------------------------------------------------

SENTENCES = ["the right brow ridge has a visible blending seam",
             "the left eye shows blurred over smoothed detail",
             "no manipulation found in this face image",
             "colour mismatch can be seen around the mouth corners"]


def test_text_perfect_disjoint_and_hand_rouge():
    perfect = text_metrics(SENTENCES, SENTENCES, metrics=("cider", "bleu4", "rouge_l"), tokenizer="simple")
    assert perfect["cider"] == pytest.approx(10.0)
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    other = ["zebra quartz violin " * 3] * 4
    disjoint = text_metrics(other, SENTENCES, metrics=("cider", "bleu4", "rouge_l"), tokenizer="simple")
    assert disjoint["cider"] == 0.0 and disjoint["rouge_l"] == 0.0 and disjoint["bleu4"] < 1e-6
    # ROUGE-L by hand: LCS 3 of a 3-word candidate and a 6-word reference: P = 1, R = 1/2, beta = 1.2.
    rouge = text_metrics(["a b c"], ["a x b y c z"], metrics=("rouge_l",), tokenizer="simple")["rouge_l"]
    assert rouge == pytest.approx((1 + 1.2**2) * 0.5 / (0.5 + 1.2**2))
    # Several references: the best one counts.
    assert text_metrics(["a b c"], [["x y", "a b c"]], metrics=("rouge_l",), tokenizer="simple")["rouge_l"] == 1.0


def test_text_strips_grounding_markup():
    grounded = "The image shows signs of forgery. <p>The right brow ridge</p> [SEG] has a visible blending seam."
    plain = "The image shows signs of forgery. The right brow ridge has a visible blending seam."
    out = text_metrics([grounded, plain], [plain, grounded], metrics=("bleu4", "rouge_l"), tokenizer="simple")
    assert out["rouge_l"] == 1.0 and out["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert metrics.strip_markup(grounded) == plain
    assert metrics.simple_tokenize("Cupid's bow, (blurry) brow-ridge!") == "cupid 's bow blurry brow-ridge"


@needs_java
def test_text_with_java_meteor_and_ptb():
    out = text_metrics(SENTENCES, SENTENCES)
    assert set(out) == {"meteor", "cider", "bleu4", "rouge_l"}
    assert out["meteor"] > 0.99 and out["cider"] == pytest.approx(10.0) and out["rouge_l"] == 1.0
    worse = text_metrics(["Blending seam, on the brow!", "the mouth looks real", "", "x"], SENTENCES,
                         metrics=("meteor", "rouge_l"))
    assert 0.0 < worse["meteor"] < 0.5 and 0.0 < worse["rouge_l"] < 0.5


def test_text_without_java_skips_only_meteor(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="`java`"):
        out = text_metrics(SENTENCES, SENTENCES)
    assert out["meteor"] is None
    assert out["cider"] == pytest.approx(10.0) and out["rouge_l"] == 1.0


def test_text_meteor_failure_gives_none_with_a_warning(monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_module

    def broken(*args, **kwargs):
        raise OSError("java crashed")

    monkeypatch.setattr(metrics, "_METEOR", metrics._MeteorProcess())
    monkeypatch.setattr(meteor_module, "Meteor", broken)
    with pytest.warns(UserWarning, match="METEOR could not start java"):
        out = text_metrics(SENTENCES, SENTENCES, metrics=("meteor", "rouge_l"), tokenizer="simple")
    assert out == {"meteor": None, "rouge_l": 1.0}


def test_text_errors():
    with pytest.raises(ValueError, match="differ in length"):
        text_metrics(["a"], ["a", "b"], tokenizer="simple")
    with pytest.raises(ValueError, match="non-empty list"):
        text_metrics(["a"], [[]], tokenizer="simple")
    with pytest.raises(ValueError, match="unknown text metrics"):
        text_metrics(["a"], ["a"], metrics=("spice",))
    with pytest.raises(ValueError, match="empty"):
        text_metrics([], [])


# --- masks ----------------------------------------------------------------------------------------------


def test_mask_iou_hand_cases():
    pred = np.array([[1, 1], [0, 0]], bool)
    true = np.array([[1, 0], [1, 0]], bool)
    assert mask_iou(pred, true) == pytest.approx(1 / 3)  # 1 shared pixel of 3
    assert mask_iou(pred, pred) == 1.0
    assert mask_iou(pred, ~pred) == 0.0
    empty = np.zeros((2, 2), bool)
    assert mask_iou(empty, empty) == 1.0 and mask_iou(pred, empty) == 0.0
    assert mask_iou(encode_rle(pred), encode_rle(true)) == pytest.approx(1 / 3)  # RLE dicts work too
    with pytest.raises(ValueError, match="differ in size"):
        mask_iou(pred, np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((2, 2, 3)), pred)


def test_mask_metrics_miou_ciou_and_empty_policy():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 px
    b = np.zeros((4, 4), bool)
    b[:2, :] = True  # 8 px, contains a
    empty = np.zeros((4, 4), bool)
    out = mask_metrics([a, b, empty], [b, b, empty])
    # IoUs 4/8, 8/8 and 1 (both empty); cIoU (4 + 8) / (8 + 8)
    assert out["miou"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert out["ciou"] == pytest.approx(12 / 16)
    skipped = mask_metrics([a, b, empty], [b, b, empty], empty_iou=None)
    assert skipped["miou"] == pytest.approx(0.75) and skipped["ciou"] == pytest.approx(12 / 16)
    assert mask_metrics([empty], [empty]) == {"miou": 1.0, "ciou": 1.0}
    assert math.isnan(mask_metrics([empty], [empty], empty_iou=None)["miou"])
    assert mask_metrics([a], [~a]) == {"miou": 0.0, "ciou": 0.0}
    # A list of masks (or a (K, H, W) stack) of one image is united; RLE works.
    united = mask_metrics([[a, b & ~a]], [encode_rle(b)])
    assert united == {"miou": 1.0, "ciou": 1.0}
    assert mask_metrics([np.stack([a, b])], [b])["miou"] == 1.0
    assert mask_metrics([np.zeros((0, 4, 4), bool)], [b])["miou"] == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        mask_metrics([a], [np.zeros((5, 5), bool)])
    with pytest.raises(ValueError, match="differ in length"):
        mask_metrics([a, a], [a])


def _random_rectangles(rng, n, size):
    """``n`` random non-empty boxes ``(x0, y0, x1, y1)`` inside a ``size`` x ``size`` image."""
    out = []
    for _ in range(n):
        x0, y0 = rng.integers(0, size - 2, 2)
        x1, y1 = x0 + rng.integers(1, size - x0), y0 + rng.integers(1, size - y0)
        out.append((int(x0), int(y0), int(x1), int(y1)))
    return out


def _jitter(rng, box, size):
    x0, y0, x1, y1 = np.asarray(box) + rng.integers(-2, 3, 4)
    x0, y0 = int(np.clip(x0, 0, size - 1)), int(np.clip(y0, 0, size - 1))
    return x0, y0, int(np.clip(x1, x0 + 1, size)), int(np.clip(y1, y0 + 1, size))


def _box_mask(box, size):
    mask = np.zeros((size, size), bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask


def _random_detection_set(seed, size=20, n_images=6):
    """Per image true boxes, predicted boxes (jittered truths plus false positives) and their scores."""
    rng = np.random.default_rng(seed)
    truths, preds, scores = [], [], []
    for _ in range(n_images):
        true = _random_rectangles(rng, int(rng.integers(0, 4)), size)
        pred = [_jitter(rng, b, size) for b in true if rng.random() < 0.8]
        pred += _random_rectangles(rng, int(rng.integers(0, 3)), size)
        truths.append(true)
        preds.append(pred)
        scores.append(list(rng.random(len(pred))))
    return truths, preds, scores


def _reference_ap50(ious_per_image, scores_per_image, n_true):
    """COCO-style AP50 written out: greedy matching by score, 101-point interpolated precision."""
    hits = []  # (score, is true positive)
    for ious, scores in zip(ious_per_image, scores_per_image):
        taken = set()
        for d in np.argsort(-np.asarray(scores), kind="mergesort"):
            best, best_iou = None, 0.5
            for g in range(ious.shape[1]):
                if g not in taken and ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best is not None:
                taken.add(best)
            hits.append((scores[d], best is not None))
    if n_true == 0:
        return math.nan
    hits.sort(key=lambda h: -h[0])
    tp = np.cumsum([h[1] for h in hits])
    fp = np.cumsum([not h[1] for h in hits])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([precision[k] if k < len(precision) else 0.0 for k in points]))


def test_iou_matrices_match_pycocotools():
    rng = np.random.default_rng(1)
    size = 24
    boxes_a, boxes_b = _random_rectangles(rng, 7, size), _random_rectangles(rng, 5, size)
    masks_a = [(rng.random((size, size)) < 0.3) | _box_mask(b, size) for b in boxes_a]
    masks_b = [(rng.random((size, size)) < 0.3) | _box_mask(b, size) for b in boxes_b]
    coco = mask_utils.iou([encode_rle(m) for m in masks_a], [encode_rle(m) for m in masks_b], [0] * 5)
    np.testing.assert_allclose(iou_matrix(masks_a, masks_b), coco, rtol=1e-6)

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    coco_boxes = mask_utils.iou([xywh(b) for b in boxes_a], [xywh(b) for b in boxes_b], [0] * 5)
    np.testing.assert_allclose(box_iou_matrix(boxes_a, boxes_b), coco_boxes, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap50_matches_reference_on_random_sets(seed):
    size = 20
    truths, preds, scores = _random_detection_set(seed, size)
    n_true = sum(len(t) for t in truths)
    box_ious = [box_iou_matrix(p, t) for p, t in zip(preds, truths)]
    assert box_ap50(preds, truths, scores) == pytest.approx(_reference_ap50(box_ious, scores, n_true))
    # The same rectangles as masks (a few pixels flipped so masks and boxes differ).
    rng = np.random.default_rng(100 + seed)

    def masks(boxes):
        out = []
        for b in boxes:
            m = _box_mask(b, size)
            m[rng.integers(0, size), rng.integers(0, size)] ^= True
            out.append(m if m.any() else _box_mask(b, size))
        return out

    pred_masks = [masks(p) if p else np.zeros((0, size, size), bool) for p in preds]
    true_masks = [[encode_rle(m) for m in masks(t)] for t in truths]
    mask_ious = [iou_matrix(list(p), t) for p, t in zip(pred_masks, true_masks)]
    assert mask_ap50(pred_masks, true_masks, scores) == pytest.approx(_reference_ap50(mask_ious, scores, n_true))


def test_ap50_hand_cases():
    a, b = _box_mask((0, 0, 5, 5), 10), _box_mask((5, 5, 10, 10), 10)
    assert mask_ap50([[a], [b]], [[a], [b]]) == pytest.approx(1.0)
    assert mask_ap50([[b], [a]], [[a], [b]]) == 0.0
    assert mask_ap50([[], []], [[a], [b]]) == 0.0  # nothing predicted
    assert math.isnan(mask_ap50([[a]], [[]]))  # no truth: undefined
    # One of two truths found at full precision: 51 of 101 recall points.
    assert mask_ap50([[a], []], [[a], [b]]) == pytest.approx(51 / 101)
    # An empty predicted mask is dropped, not a false positive.
    assert mask_ap50([[np.zeros((10, 10), bool), a]], [[a]], scores=[[0.9, 0.1]]) == pytest.approx(1.0)
    # A confident false positive ranked first halves precision at full recall: (1/2) over all points.
    assert mask_ap50([[b, a]], [[a]], scores=[[0.9, 0.1]]) == pytest.approx(0.5)
    assert box_ap50([[(0, 0, 10, 10)], []], [[(0, 0, 10, 10)], [(5, 5, 8, 8)]]) == pytest.approx(51 / 101)
    with pytest.raises(ValueError, match="scores"):
        mask_ap50([[a]], [[a]], scores=[[0.5, 0.5]])


# --- boxes and matching -----------------------------------------------------------------------------------


def test_box_iou_and_metrics_hand_cases():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0  # touching edges share no area
    # Image 1: perfect; image 2: one of two truths found exactly (matched IoU sum 1 over max(1, 2)).
    out = box_metrics([[(0, 0, 4, 4)], [(0, 0, 2, 2)]], [[(0, 0, 4, 4)], [(0, 0, 2, 2), (5, 5, 8, 8)]])
    assert out["miou"] == pytest.approx((1 + 0.5) / 2)
    assert out["ap50"] == pytest.approx(67 / 101)  # precision 1 up to recall 2/3: recall points 0 .. 0.66
    assert box_metrics([[]], [[]], empty_iou=1.0)["miou"] == 1.0
    with pytest.raises(ValueError, match="x1 >= x0"):
        box_iou((2, 0, 0, 2), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="x0, y0, x1, y1"):
        box_iou_matrix([(0, 0, 1)], [(0, 0, 1, 1)])


def test_matched_iou_uses_one_to_one_hungarian_matching():
    ious = np.array([[0.9, 0.8], [0.7, 0.0]])
    # Greedy would take 0.9 then 0.0; the best one-to-one pairing is 0.8 + 0.7.
    assert matched_iou(ious) == pytest.approx(0.75)
    # An extra prediction costs a slot under "zero" and nothing under GLaMM's "ignore".
    extra = np.array([[1.0], [0.0], [0.3]])
    assert matched_iou(extra) == pytest.approx(1 / 3)
    assert matched_iou(extra, unmatched="ignore") == 1.0
    assert matched_iou(np.zeros((0, 0))) == 1.0 and matched_iou(np.zeros((0, 0)), empty_iou=None) is None
    assert matched_iou(np.zeros((0, 2))) == 0.0


# --- AGE --------------------------------------------------------------------------------------------------


def _glamm_greedy(ious, sims, iou_threshold=0.5, text_threshold=0.5):
    """GLaMM's find_best_matches loop, stop at the first failing pair included (for comparison only)."""
    ious, sims, found = ious.copy(), sims.copy(), 0
    while ious.size and ious.max() > 0:
        i, j = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[i, j] < iou_threshold or sims[i, j] < text_threshold:
            break
        found += 1
        ious[i, :], ious[:, j] = 0, 0
    return found


def _exact_similarity(pred, true):
    return np.array([[float(p.lower() == t.lower()) for t in true] for p in pred])


def test_recovered_pairs_fix_glamm_early_stop():
    # Truth: A = "the left eye", B = "the mouth". Prediction X says "the mouth" but overlaps A most;
    # prediction Y says "the left eye" and overlaps A well enough; X also overlaps B.
    ious = np.array([[0.9, 0.7],   # X vs A, B
                     [0.6, 0.0]])  # Y vs A, B
    sims = _exact_similarity(["the mouth", "the left eye"], ["the left eye", "the mouth"])
    assert _glamm_greedy(ious, sims) == 0  # the best-IoU pair (X, A) fails the text test and stops the loop
    assert sorted(recovered_pairs(ious, sims)) == [(0, 1), (1, 0)]
    assert recovered_pairs(ious, np.zeros_like(ious)) == []
    assert recovered_pairs(np.full((2, 2), 0.49), np.ones((2, 2))) == []
    # One-to-one: two predictions of one truth recover it once.
    assert len(recovered_pairs(np.array([[0.9], [0.8]]), np.ones((2, 1)))) == 1


def _age_case():
    size = 16
    eye, mouth, chin = (_box_mask(b, size) for b in [(0, 0, 8, 6), (4, 8, 12, 12), (4, 12, 12, 16)])
    true_text = ("This face has been manipulated. In <p>the left eye</p> [SEG] there is blur. "
                 "There is a blending seam in <p>the mouth</p> [SEG].")
    return size, eye, mouth, chin, true_text


def test_age_metrics_matching_and_recall_with_given_similarity():
    size, eye, mouth, chin, true_text = _age_case()
    # Phrases and masks in another order than the truth's, plus an extra mask: pairing is by matching.
    pred_text = "Fake. <p>the mouth</p> [SEG] and <p>the left eye</p> [SEG] and <p>the chin</p> [SEG]."
    out = age_metrics([pred_text], [true_text], [[mouth, eye, chin]], [[eye, mouth]],
                      similarity=_exact_similarity, text_scores=("cider",), tokenizer="simple")
    assert out["mask_recall"] == 1.0
    # Hungarian IoU pairs eye-eye and mouth-mouth (both 1), the chin is extra: (1 + 1) / 3.
    assert out["miou"] == pytest.approx(2 / 3)
    assert out["ap50"] == pytest.approx(1.0)  # both truths found before the extra mask
    assert out["meteor"] is None and out["grounding_consistency"] is None
    # Swapped phrases: the masks still match (mIoU) but no phrase does, and a mask without a phrase
    # (more [SEG] masks than phrases) cannot match a phrase either.
    swapped = "Fake. <p>the left eye</p> [SEG] and <p>the mouth</p> [SEG]."
    out = age_metrics([swapped], [true_text], [[mouth, eye, chin]], [[eye, mouth]],
                      similarity=_exact_similarity, text_scores=("cider",), tokenizer="simple")
    assert out["mask_recall"] == 0.0 and out["miou"] == pytest.approx(2 / 3)
    # GLaMM's averaging over matched pairs only ignores the extra mask.
    out = age_metrics([pred_text], [true_text], [[mouth, eye, chin]], [[eye, mouth]], unmatched="ignore",
                      similarity=_exact_similarity, text_scores=("cider",), tokenizer="simple")
    assert out["miou"] == 1.0


def test_age_metrics_perfect_with_phrase_model():
    size, eye, mouth, chin, true_text = _age_case()
    other = "This is a forged face. Look at <p>the chin</p> [SEG]: it shows warping."
    out = age_metrics([true_text, other], [true_text, other], [[eye, mouth], [chin]], [[eye, mouth], [chin]],
                      text_scores=("cider",), tokenizer="simple")
    assert out["mask_recall"] == 1.0 and out["miou"] == 1.0 and out["ap50"] == pytest.approx(1.0)
    assert out["cider"] == pytest.approx(10.0)
    # Right masks under unrelated phrases: IoU passes, text does not.
    wrong = true_text.replace("the left eye", "a blending seam").replace("the mouth", "the hairline")
    out = age_metrics([wrong, other], [true_text, other], [[eye, mouth], [chin]], [[eye, mouth], [chin]],
                      text_scores=("cider",), tokenizer="simple")
    assert out["mask_recall"] == pytest.approx(1 / 3) and out["miou"] == 1.0


def test_phrase_similarity_model_is_offline_and_sensible():
    sims = phrase_similarity(["the left eye", "the left eye"], ["the left eye", "the left eye region", "a blending seam"])
    assert sims.shape == (2, 3)
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert sims[0, 1] > 0.5 > sims[0, 2]
    assert age.embed_phrases([]).shape == (0, 384)


@needs_java
def test_age_metrics_meteor():
    size, eye, mouth, chin, true_text = _age_case()
    out = age_metrics([true_text], [true_text], [[eye, mouth]], [[eye, mouth]], similarity=_exact_similarity)
    assert out["meteor"] > 0.99


def test_age_metrics_errors():
    size, eye, mouth, chin, true_text = _age_case()
    with pytest.raises(ValueError, match="2 grounded phrases but 1 true masks"):
        age_metrics([true_text], [true_text], [[eye]], [[eye]], similarity=_exact_similarity, text_scores=())
    with pytest.raises(ValueError, match="differ in length"):
        age_metrics([true_text], [true_text, true_text], [[eye]], [[eye]], text_scores=())


# --- grounding consistency ---------------------------------------------------------------------------------


def test_resolve_phrase_follows_the_annotator_names():
    tree = load_tree()
    for concept in tree:  # the annotator writes "the <readable name>"
        if concept.id != tree.root:
            assert resolve_phrase(f"the {concept.name}", tree) is concept
    cases = {"The right brow ridge": "brow_ridge_right", "the left cheek": "cheek_left", "the eyes": "eyes",
             "the mouth": "mouth", "The forehead center.": "forehead_centre", "the left cheek area": "cheek_left",
             "Cupids bow": "cupids_bow", "the subject's left eye": "eye_left", "left nose ala": "nose_ala_left"}
    for phrase, concept_id in cases.items():
        assert resolve_phrase(phrase, tree).id == concept_id, phrase
    for phrase in ("the face", "a blending seam", "", "the left side"):
        assert resolve_phrase(phrase, tree) is None


def _label_map_case():
    """An 8x8 label map: top half the forehead centre, bottom half the left upper lip (in 'the mouth')."""
    tree = load_tree()
    labels = np.full((8, 8), tree.leaf_index["forehead_centre"], np.int16)
    labels[4:] = tree.leaf_index["upper_lip_left"]
    top, bottom = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    top[:4], bottom[4:] = True, True
    return tree, labels, top, bottom


def test_grounding_consistency_hand_case():
    tree, labels, top, bottom = _label_map_case()
    half = np.zeros((8, 8), bool)
    half[2:6, :] = True  # half in the forehead, half in the mouth
    text = ("<p>the mouth</p> [SEG] <p>the forehead centre</p> [SEG] <p>the left eye</p> [SEG] "
            "<p>a weird spot</p> [SEG] <p>the left upper lip</p> [SEG] <p>the forehead</p> [SEG]")
    masks = [bottom, bottom, top, top, half, np.zeros((8, 8), bool)]
    out = grounding_consistency([text], [masks], [labels], tree)
    # mouth in mouth: yes; forehead centre on the mouth: no; left eye (absent here): no; unresolved: reported;
    # half inside the lip: yes at inside=0.5; an empty mask: resolved but not consistent.
    assert out["n_grounded"] == 6 and out["n_resolved"] == 5 and out["n_empty"] == 1
    assert out["n_consistent"] == 2 and out["grounding_consistency"] == pytest.approx(2 / 5)
    assert out["unresolved"] == {"a weird spot": 1}
    strict = grounding_consistency([text], [masks], [labels], tree, inside=0.6)
    assert strict["n_consistent"] == 1
    # The same with concept-mask dicts (RLE allowed) instead of the label map.
    regions = {key: encode_rle(mask) for key, mask in concept_masks(tree, label_map=labels).items()}
    assert grounding_consistency([text], [masks], [regions], tree) == out
    # Phrase lists work as well as answer texts; with no resolvable phrase the share is NaN.
    assert math.isnan(grounding_consistency([["a weird spot"]], [[top]], [labels], tree)["grounding_consistency"])


def test_grounding_consistency_from_landmarks_and_in_age_metrics():
    from fifa_lab.faces import synth_face

    tree = load_tree()
    face = synth_face(0, size=64)
    regions = concept_masks(tree, landmarks=face.landmarks, size=(64, 64))
    mouth, eye = regions["mouth"], regions["eye_left"]
    text = "Fake. <p>the mouth</p> [SEG] and <p>the left eye</p> [SEG]."
    out = grounding_consistency([text], [[mouth, mouth]], [regions], tree)
    assert out["n_resolved"] == 2 and out["n_consistent"] == 1
    # With the label map the regions are what is visible; masks inside them are consistent.
    visible = concept_masks(tree, label_map=face.label_map)
    masks = [visible["mouth"], visible["eye_left"]]
    age_out = age_metrics([text], [text], [masks], [masks], regions=[face.label_map], tree=tree,
                          similarity=_exact_similarity, text_scores=())
    assert age_out["grounding_unresolved"] == 0 and age_out["cider"] is None
    assert age_out["grounding_consistency"] == 1.0 and age_out["mask_recall"] == 1.0
    with pytest.raises(ValueError, match="exactly one"):
        concept_masks(tree)
    with pytest.raises(ValueError, match="differ in length"):
        grounding_consistency([text], [[mouth]], [], tree)
