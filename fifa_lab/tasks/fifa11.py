"""The eleven FiFa tasks of DESIGN.md, registered on import.

Where targets come from (a record holds both the forge's ground truth and the annotator's output):

* decisions and pure localisation use the **ground truth**: Det, Cls (class), Loc (artifact mask),
  B-Loc (boxes of its connected parts), R-Det (does the region hold ground-truth artifacts);
* explanations use the **annotation**, as FiFa trains on annotator output: TOE (``toe_text``), AGE
  (``text`` and its segment masks), R-TOE / R-AGE / B-TOE (the annotator's segments that touch the
  region, their masks clipped to it), so text and masks of one sample always agree;
* RSeg uses the label map: the named concept's visible mask. Its prompt marks the concept as the phrase
  (``Segment the <p>right concha</p>.``) and the answer only says where the mask goes
  (:data:`RSEG_ANSWER`, GLaMM's referring-segmentation reply): the ``[SEG]`` grounds the last phrase
  before it, here the prompt's, so the model need not write the name out again. When the answer had to
  repeat it (``<p>right concha</p> [SEG]``) the default model wrote a different concept ("right eye")
  and RSeg mIoU stayed at 0.003.

Region tasks sample a FICT concept (leaf or parent, not the root) and show it as one of three kinds,
drawn uniformly: ``concept`` (its id, named in the prompt, with its visible mask), ``mask`` (only the
mask, "the marked region") or ``box`` (its bounding box, also written in the prompt). Whether a region
"is manipulated" follows the rule of :mod:`fifa_lab.fict.coverage`: a reference mask covers at least
``MIN_COVERAGE`` of the region, or at least ``MIN_SHARE`` of the reference lies inside it. The region is
manipulated or not with equal chance where the image allows both; R-Det gives one of each on a fake
(exactly balanced on fakes) and one clean region on a real image.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from fifa_lab.annotate.explain import concept_phrase
from fifa_lab.artifacts import ARTIFACTS, FORGERY_CLASS_NAMES, FORGERY_CLASSES
from fifa_lab.data.masks import box_to_mask, decode_rle, encode_rle
from fifa_lab.data.records import REAL_TEXT, decode_label_map
from fifa_lab.fict import ConceptTree, load_tree
from fifa_lab.fict.coverage import MIN_COVERAGE, MIN_SHARE
from fifa_lab.tasks.registry import REGION_KINDS, SEG_TOKEN, Task, get_task, make_sample, register_task, task_rng

NO_ARTIFACT = "no artifact"
LOC_PHRASE = "manipulated area"
RSEG_ANSWER = f"Sure, it is {SEG_TOKEN}."
MAX_BOXES = 8
MIN_BOX_SHARE = 0.001  # B-Loc ignores artifact specks smaller than this share of the image
MIN_REGION_SHARE = 16 / 256**2  # regions smaller than 16 px of a 256 px image are too small to ask about
CLASS_OPTIONS = ", ".join(f"{c} ({FORGERY_CLASS_NAMES[c]})" if c != "real" else c for c in FORGERY_CLASSES)
_BOX = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")


# --- boxes as text --------------------------------------------------------------------------------------


def grounding_phrases(tree: ConceptTree | None = None) -> tuple[str, ...]:
    """Every ``<p>`` phrase a target of these tasks grounds: each concept of ``tree`` (default FICT) as the
    annotator names it (AGE, R-AGE), then Loc's ``manipulated area``. A coarser tree's concepts are among
    the FICT's, so the default also covers models trained on one."""
    tree = tree or load_tree()
    return (*(concept_phrase(tree, concept.id) for concept in tree if concept.id != tree.root), LOC_PHRASE)


def format_box(box: Sequence[int]) -> str:
    """``"[x0, y0, x1, y1]"``, the box text of B-Loc answers and box prompts."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Every ``[x0, y0, x1, y1]`` in ``text``, in order (what the B-Loc evaluation reads)."""
    return [tuple(float(v) for v in m.groups()) for m in _BOX.finditer(text)]


def artifact_boxes(mask: np.ndarray, max_boxes: int = MAX_BOXES, min_share: float = MIN_BOX_SHARE) -> list[tuple[int, int, int, int]]:
    """Boxes of the connected parts (8-connected) of ``mask``, largest part first, specks dropped."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_area = max(1, min_share * mask.size)
    parts = [stats[k] for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area]
    parts.sort(key=lambda s: (-s[cv2.CC_STAT_AREA], s[cv2.CC_STAT_TOP], s[cv2.CC_STAT_LEFT]))
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in parts[:max_boxes]]


@dataclass(frozen=True)
class Piece:
    """One annotator segment: the region phrase (``"the left eye"``), its artifact ids and its mask."""

    phrase: str
    artifacts: Sequence[str]
    mask: np.ndarray

    def clause(self, grounded: bool) -> str:
        """``"the left eye shows blurred detail"``; grounded: ``"<p>the left eye</p> [SEG] shows ..."``."""
        phrase = f"<p>{self.phrase}</p> {SEG_TOKEN}" if grounded else self.phrase
        if not self.artifacts:
            return phrase
        words = [ARTIFACTS[a][0] if a in ARTIFACTS else a for a in self.artifacts]
        listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        return f"{phrase} shows {listed}"


# --- the record as arrays, computed once per record -------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _membership(tree: ConceptTree) -> tuple[list[str], np.ndarray]:
    """Candidate region concepts (all but the root) and their ``(n_concepts, n_leaves + 1)`` leaf matrix.

    The extra last column is label -1 (no concept), which belongs to no concept.
    """
    ids = [c.id for c in tree if c.id != tree.root]
    matrix = np.zeros((len(ids), len(tree.leaves()) + 1), dtype=np.float64)
    for row, key in enumerate(ids):
        matrix[row, [tree.leaf_index[leaf.id] for leaf in tree.leaves(key)]] = 1.0
    return ids, matrix


class RecordView:
    """Decoded arrays of one record that the task builders share (label map, masks, concept areas)."""

    def __init__(self, record: Mapping[str, Any], tree: ConceptTree | None = None):
        self.record = record
        self.tree = load_tree() if tree is None else tree
        self.labels = decode_label_map(record["label_map"])
        self.size = self.labels.shape
        self.fake = record["label"] == "fake"
        self.truth = decode_rle(record["artifact_mask"])
        explanation = record["explanation"]
        self.segments = [Piece(s["phrase"], s["artifacts"], decode_rle(s["mask"])) for s in explanation["segments"]]
        n = len(self.tree.leaves())
        self._bins = np.where(self.labels < 0, n, self.labels).astype(np.int64)
        self.concepts, self._matrix = _membership(self.tree)
        self.area = self._matrix @ np.bincount(self._bins.ravel(), minlength=n + 1)
        min_area = max(1.0, MIN_REGION_SHARE * self.labels.size)
        self.candidates = np.flatnonzero(self.area >= min_area)

    @functools.cached_property
    def boxes(self) -> np.ndarray:
        """``(n_concepts, 4)`` int boxes ``x0, y0, x1, y1`` of each concept's visible area (zeros if none)."""
        n = len(self.tree.leaves())
        height, width = self.size
        ys, xs = np.indices(self.size)
        bins, flat_x, flat_y = self._bins.ravel(), xs.ravel(), ys.ravel()
        lo_x, lo_y = np.full(n + 1, width), np.full(n + 1, height)
        hi_x, hi_y = np.full(n + 1, -1), np.full(n + 1, -1)
        np.minimum.at(lo_x, bins, flat_x)
        np.minimum.at(lo_y, bins, flat_y)
        np.maximum.at(hi_x, bins, flat_x)
        np.maximum.at(hi_y, bins, flat_y)
        out = np.zeros((len(self.concepts), 4), dtype=np.int64)
        for row in range(len(self.concepts)):
            members = self._matrix[row].astype(bool) & (hi_x >= 0)
            if members.any():
                out[row] = (lo_x[members].min(), lo_y[members].min(), hi_x[members].max() + 1, hi_y[members].max() + 1)
        return out

    def concept_mask(self, row: int) -> np.ndarray:
        """Visible mask of candidate concept ``row``."""
        return self._matrix[row].astype(bool)[self._bins]

    def region_mask(self, row: int, kind: str) -> np.ndarray:
        return box_to_mask(self.boxes[row], self.size) if kind == "box" else self.concept_mask(row)

    def touched(self, references: Sequence[np.ndarray], kind: str) -> np.ndarray:
        """``(n_concepts,)`` bool: the region of each concept (as ``kind``) is touched by any reference mask."""
        hit = np.zeros(len(self.concepts), dtype=bool)
        for reference in references:
            total = float(reference.sum())
            if total == 0:
                continue
            if kind == "box":
                boxes = self.boxes
                integral = cv2.integral(reference.astype(np.uint8)).astype(np.float64)
                x0, y0, x1, y1 = boxes.T
                inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
                area = ((x1 - x0) * (y1 - y0)).astype(np.float64)
            else:
                inside = self._matrix @ np.bincount(self._bins[reference], minlength=self._matrix.shape[1])
                area = self.area
            hit |= (inside > 0) & ((inside >= MIN_COVERAGE * area) | (inside >= MIN_SHARE * total))
        return hit


def as_view(record: Mapping[str, Any] | RecordView, tree: ConceptTree | None = None) -> RecordView:
    return record if isinstance(record, RecordView) else RecordView(record, tree)


# --- regions --------------------------------------------------------------------------------------------


def pick_region(view: RecordView, rng: np.random.Generator, kind: str, want: bool,
                references: Sequence[np.ndarray]) -> tuple[int, bool] | None:
    """A candidate concept whose region (as ``kind``) is touched (``want=True``) or not by ``references``.

    Falls back to the other answer when the image has no region of the wanted one (a real image has
    no manipulated region; a full-face swap may leave no clean one). None if no candidate at all.
    """
    touched = view.touched(references, kind)
    candidates = view.candidates
    for answer in (want, not want):
        pool = candidates[touched[candidates] == answer]
        if pool.size:
            return int(pool[rng.integers(pool.size)]), answer
    return None


def region_spec(view: RecordView, row: int, kind: str) -> tuple[dict[str, Any], str]:
    """The sample's ``region`` dict for concept ``row`` shown as ``kind``, and how prompts name it."""
    concept = view.concepts[row]
    if kind == "concept":
        name = view.tree.get(concept).name
        return {"kind": kind, "concept": concept, "mask": encode_rle(view.concept_mask(row)), "box": None}, f"the {name}"
    if kind == "mask":
        return {"kind": kind, "concept": None, "mask": encode_rle(view.concept_mask(row)), "box": None}, "the marked region"
    box = [int(v) for v in view.boxes[row]]
    return {"kind": kind, "concept": None, "mask": None, "box": box}, f"the box {format_box(box)}"


def region_segments(view: RecordView, region: np.ndarray) -> list[Piece]:
    """The annotator's segments that touch ``region`` (same rule as concepts), masks clipped to it."""
    out = []
    area = float(region.sum())
    for piece in view.segments:
        overlap = piece.mask & region
        inside = float(overlap.sum())
        if inside > 0 and (inside >= MIN_COVERAGE * area or inside >= MIN_SHARE * float(piece.mask.sum())):
            out.append(Piece(piece.phrase, piece.artifacts, overlap))
    return out


def region_text(where: str, pieces: Sequence[Piece], grounded: bool) -> tuple[str, list[np.ndarray]]:
    """Explanation of a region from its segments: plain (R-TOE, B-TOE) or grounded (R-AGE) with masks."""
    subject = where[0].upper() + where[1:]
    if not pieces:
        return f"{subject} shows no sign of manipulation.", []
    clauses = "; ".join(p.clause(grounded) for p in pieces)
    return f"{subject} shows signs of manipulation: {clauses}.", [p.mask for p in pieces] if grounded else []


# --- builders -------------------------------------------------------------------------------------------


def _build_det(record, rng, tree=None):
    view = as_view(record, tree)
    prompt, template = DET.prompt(rng)
    return [make_sample(view.record, DET, 0, prompt, view.record["label"], template=template)]


def _build_cls(record, rng, tree=None):
    view = as_view(record, tree)
    prompt, template = CLS.prompt(rng, options=CLASS_OPTIONS)
    return [make_sample(view.record, CLS, 0, prompt, view.record["forgery_class"], template=template)]


def _build_toe(record, rng, tree=None):
    view = as_view(record, tree)
    prompt, template = TOE.prompt(rng)
    text = view.record["explanation"]["toe_text"] if view.fake else REAL_TEXT
    return [make_sample(view.record, TOE, 0, prompt, text, template=template)]


def _build_loc(record, rng, tree=None):
    view = as_view(record, tree)
    prompt, template = LOC.prompt(rng)
    if view.fake and view.truth.any():
        return [make_sample(view.record, LOC, 0, prompt, f"<p>{LOC_PHRASE}</p> {SEG_TOKEN}",
                            [view.record["artifact_mask"]], template=template)]
    return [make_sample(view.record, LOC, 0, prompt, NO_ARTIFACT, template=template)]


def _build_age(record, rng, tree=None):
    view = as_view(record, tree)
    prompt, template = AGE.prompt(rng)
    explanation = view.record["explanation"]
    if not view.fake:
        return [make_sample(view.record, AGE, 0, prompt, REAL_TEXT, template=template)]
    return [make_sample(view.record, AGE, 0, prompt, explanation["text"],
                        [s["mask"] for s in explanation["segments"]], template=template)]


def _region_samples(task: Task, view: RecordView, rng: np.random.Generator, wants: Sequence[bool],
                    kinds: Sequence[str], mode: str) -> list[dict[str, Any]]:
    """One sample per entry of ``wants``; ``mode`` is ``"det"`` (ground truth) or ``"toe"``/``"age"``."""
    references = [view.truth] if mode == "det" else [p.mask for p in view.segments]
    samples = []
    for k, want in enumerate(wants):
        kind = kinds[int(rng.integers(len(kinds)))]
        picked = pick_region(view, rng, kind, want, references)
        if picked is None:
            continue
        row, answer = picked
        region, where = region_spec(view, row, kind)
        prompt, template = task.prompt(rng, where=where)
        meta = {"template": template, "concept": view.concepts[row], "manipulated": answer, "kind": kind}
        if mode == "det":
            samples.append(make_sample(view.record, task, k, prompt, "yes" if answer else "no", region=region, **meta))
            continue
        segments = region_segments(view, view.region_mask(row, kind))
        text, masks = region_text(where, segments, grounded=mode == "age")
        samples.append(make_sample(view.record, task, k, prompt, text, [encode_rle(m) for m in masks],
                                   region=region, **meta))
    return samples


def _build_r_det(record, rng, tree=None):
    view = as_view(record, tree)
    wants = [True, False] if view.fake else [False]
    return _region_samples(R_DET, view, rng, wants, REGION_KINDS, "det")


def _build_r_toe(record, rng, tree=None):
    view = as_view(record, tree)
    return _region_samples(R_TOE, view, rng, [bool(rng.random() < 0.5)], REGION_KINDS, "toe")


def _build_r_age(record, rng, tree=None):
    view = as_view(record, tree)
    return _region_samples(R_AGE, view, rng, [bool(rng.random() < 0.5)], REGION_KINDS, "age")


def _build_b_toe(record, rng, tree=None):
    view = as_view(record, tree)
    return _region_samples(B_TOE, view, rng, [bool(rng.random() < 0.5)], ("box",), "toe")


def _build_b_loc(record, rng, tree=None):
    view = as_view(record, tree)
    prompt, template = B_LOC.prompt(rng)
    boxes = artifact_boxes(view.truth) if view.fake else []
    target = ", ".join(format_box(b) for b in boxes) if boxes else NO_ARTIFACT
    return [make_sample(view.record, B_LOC, 0, prompt, target, template=template, boxes=len(boxes))]


def _build_rseg(record, rng, tree=None):
    view = as_view(record, tree)
    if not view.candidates.size:
        return []
    row = int(view.candidates[rng.integers(view.candidates.size)])
    concept = view.concepts[row]
    name = view.tree.get(concept).name
    prompt, template = RSEG.prompt(rng, concept=name)
    return [make_sample(view.record, RSEG, 0, prompt, RSEG_ANSWER,
                        [encode_rle(view.concept_mask(row))], template=template, concept=concept)]


# --- the eleven tasks -----------------------------------------------------------------------------------

DET = register_task(Task(
    "Det", "image", "Is the face real or fake? Answer: 'real' or 'fake'.",
    ("<image>\nIs this face real or fake?",
     "<image>\nHas this face image been manipulated? Answer real or fake.",
     "Look at <image>. Is the face authentic (real) or forged (fake)?",
     "<image>\nDecide whether this is a real face or a deepfake. Answer with one word: real or fake."),
    _build_det, ("acc", "auc", "f1")))

CLS = register_task(Task(
    "Cls", "image", "Which forgery class is the image? Answer: a class id (real, FS, FR, FE, EFS).",
    ("<image>\nWhich forgery class does this face belong to? Options: {options}.",
     "<image>\nClassify the manipulation of this face. Answer with one of: {options}.",
     "What kind of forgery, if any, does <image> show? Choose from {options}."),
    _build_cls, ("acc", "macro_f1", "confusion")))

TOE = register_task(Task(
    "TOE", "image", "Explain in text whether and where the face is manipulated.",
    ("<image>\nIs this face manipulated? Explain what you see.",
     "<image>\nDescribe any forgery artifacts in this face image.",
     "Explain why <image> is real or fake, naming the facial regions and artifacts involved."),
    _build_toe, ("meteor", "cider", "bleu4", "rouge_l")))

LOC = register_task(Task(
    "Loc", "image", "Segment the manipulated area: '<p>manipulated area</p> [SEG]', or 'no artifact'.",
    ("<image>\nSegment the manipulated regions of this face.",
     "<image>\nWhere has this face been tampered with? Give the mask.",
     "Localise the forgery artifacts in <image>."),
    _build_loc, ("miou", "ciou")))

AGE = register_task(Task(
    "AGE", "image", "Explain the forgery with each artifact phrase grounded by a [SEG] mask.",
    ("<image>\nExplain whether this face is manipulated and segment every artifact you mention.",
     "<image>\nGive a grounded explanation of the forgery artifacts in this face.",
     "Describe the artifacts in <image> and point to each one with a mask."),
    _build_age, ("meteor", "cider", "ap50", "miou", "mask_recall", "grounding_consistency")))

R_DET = register_task(Task(
    "R-Det", "region", "Is the given region manipulated? Answer: 'yes' or 'no'.",
    ("<image>\nIs {where} <region> manipulated? Answer yes or no.",
     "<image>\nHas {where} <region> been tampered with?",
     "In <image>, does {where} <region> contain forgery artifacts? Answer yes or no."),
    _build_r_det, ("acc", "f1"), uses_region=True))

R_TOE = register_task(Task(
    "R-TOE", "region", "Explain in text whether and how the given region is manipulated.",
    ("<image>\nExplain whether {where} <region> is manipulated.",
     "<image>\nDescribe any forgery artifacts in {where} <region>.",
     "Look at {where} <region> in <image>. Is it authentic? Explain."),
    _build_r_toe, ("meteor", "cider"), uses_region=True))

R_AGE = register_task(Task(
    "R-AGE", "region", "Grounded explanation of the artifacts inside the given region.",
    ("<image>\nExplain the artifacts in {where} <region> and segment each one.",
     "<image>\nGive a grounded explanation of any manipulation inside {where} <region>.",
     "In <image>, describe and segment the forgery artifacts within {where} <region>."),
    _build_r_age, ("meteor", "cider", "ap50", "miou", "mask_recall", "grounding_consistency"), uses_region=True))

B_TOE = register_task(Task(
    "B-TOE", "box", "Explain in text whether and how the content of the given box is manipulated.",
    ("<image>\nExplain whether {where} <region> is manipulated.",
     "<image>\nWhat forgery artifacts, if any, are inside {where} <region>?",
     "Describe the content of {where} <region> in <image>: is it real or manipulated?"),
    _build_b_toe, ("meteor", "cider"), uses_region=True))

B_LOC = register_task(Task(
    "B-Loc", "box", "List the boxes of the manipulated areas as '[x0, y0, x1, y1], ...', or 'no artifact'.",
    ("<image>\nGive the bounding boxes of the manipulated areas as [x0, y0, x1, y1].",
     "<image>\nWhere are the forgery artifacts? Answer with pixel boxes [x0, y0, x1, y1].",
     "List boxes [x0, y0, x1, y1] around every tampered area of <image>."),
    _build_b_loc, ("box_iou", "ap50")))

RSEG = register_task(Task(
    "RSeg", "concept", "Segment the FICT concept the prompt names as <p>name</p>: 'Sure, it is [SEG].'.",
    ("<image>\nSegment the <p>{concept}</p>.",
     "<image>\nWhere is the <p>{concept}</p> in this face? Give its mask.",
     "Please segment the <p>{concept}</p> in <image>."),
    _build_rseg, ("miou",)))

FIFA11 = ("Det", "Cls", "TOE", "Loc", "AGE", "R-Det", "R-TOE", "R-AGE", "B-TOE", "B-Loc", "RSeg")


def build_samples(record: Mapping[str, Any], seed: int = 0, tasks: Sequence[str] | None = None,
                  tree: ConceptTree | None = None) -> list[dict[str, Any]]:
    """Samples of every task in ``tasks`` (default: the FiFa-11) for one record, deterministic in ``seed``."""
    view = RecordView(record, tree)
    samples = []
    for task_id in tasks or FIFA11:
        task = get_task(task_id)
        samples.extend(task.build(view, task_rng(seed, record["image_id"], task.id)))
    return samples
