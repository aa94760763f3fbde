"""Importers and exporters of public deepfake-analysis formats.

* **DD-VQA** (Zhang et al., ECCV 2024): ``{"<manipulate id>_<video>": {"<question id>": {"question",
  "answer": [...]}}}`` over a folder of frames -> FiFa samples (:func:`import_ddvqa`).
* **DFA-Instruct-style conversations** (DFA-GPT): LLaVA-style JSON with subsets DF-D (detection),
  DF-C (classification), AD (artifact description) and FC (free conversation)
  (:func:`export_dfa_instruct`, :func:`import_dfa_instruct`).
* **FaceForensics++ folders** of extracted frames and masks -> image records (:func:`import_ffpp`).

Importers return an :class:`ImportResult`: a list of samples or records with ``.skipped``, the
``(path or key, reason)`` of everything left out, so a large import is not lost to one bad frame.
Malformed files raise ``ValueError`` naming the file.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets import Dataset

from fifa_lab.annotate import annotate
from fifa_lab.data.records import (
    IMAGE_FEATURES,
    assign_split,
    concept_entries,
    explanation_entry,
    image_array,
    png_bytes,
    record_from_parts,
)
from fifa_lab.faces import ImageError, NoFaceError, detect_face, load_image
# The fake's own crop warp (area-averaged when shrinking): the real frame must be resampled identically.
from fifa_lab.faces.photo import warp_to_crop
from fifa_lab.fict import load_tree
from fifa_lab.fict.coverage import concepts_in_region
from fifa_lab.io import write_json
from fifa_lab.tasks.registry import IMAGE_TOKEN, REGION_TOKEN, SAMPLE_FEATURES, SEG_TOKEN

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImportResult(list):
    """The imported items (a plain list) plus ``skipped``: ``[(path or key, reason), ...]``."""

    def __init__(self, items: Iterable[Any] = (), skipped: Iterable[tuple[str, str]] = ()):
        super().__init__(items)
        self.skipped: list[tuple[str, str]] = list(skipped)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


class _Groups:
    """Union-find over video ids: a swap ``target_source`` joins both identities into one group."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, *keys: str) -> None:
        roots = sorted(self.find(k) for k in keys)
        for root in roots[1:]:
            self.parent[root] = roots[0]  # the smallest id names the group: stable across imports

    def source_id(self, key: str, prefix: str) -> str:
        return f"{prefix}-{self.find(key)}"


def _videos(name: str) -> list[str]:
    """Identities in an FF++ video name: ``"000"`` -> [000], ``"000_003"`` -> [000, 003]."""
    return [part for part in name.split("_") if part]


# --- DD-VQA -------------------------------------------------------------------------------------------

# Manipulation ids of DD-VQA keys -> (FF++ method folder, forgery class).
DDVQA_METHODS = {0: ("Deepfakes", "FS"), 1: ("Face2Face", "FR"), 2: ("FaceShifter", "FS"),
                 3: ("FaceSwap", "FS"), 5: ("Original", "real"), 6: ("NeuralTextures", "FR")}
# Face parts DD-VQA asks about -> FICT concepts. FICT has no "skin" node; the whole face stands for it.
DDVQA_PARTS = {"skin": "face", "face": "face", "eyes": "eyes", "eye": "eyes", "eyebrows": "eyebrows",
               "eyebrow": "eyebrows", "nose": "nose", "mouth": "mouth", "lips": "lips", "teeth": "teeth",
               "hair": "hair", "ears": "ears", "ear": "ears", "chin": "chin_jaw", "cheeks": "cheeks"}
_DDVQA_KEY = re.compile(r"^(\d+)_(\w+)$")
_DDVQA_PART = re.compile(r"\b(?:the\s+)?(?:person'?s'?|perons'?s)\s+([a-z]+)|\bthe\s+(image|face)\b", re.IGNORECASE)


def _ddvqa_frames(frames_dir: Path, key: str, method: str, video: str) -> list[Path]:
    """Frames of a DD-VQA key: ``<key>.png``, ``<key>/*.png``, ``<method>/<video>.png`` or ``<method>/<video>/*``."""
    for base in (frames_dir / key, frames_dir / method / video):
        for suffix in IMAGE_SUFFIXES:
            if base.with_name(base.name + suffix).is_file():
                return [base.with_name(base.name + suffix)]
        if base.is_dir():
            frames = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if frames:
                return frames
    return []


def _verdict(answer: str) -> str | None:
    """``"fake"`` / ``"real"`` from the first sentence of a DD-VQA answer, None when it says neither."""
    first = answer.split(".")[0].lower()
    if "fake" in first:
        return "fake"
    if "real" in first:
        return "real"
    return None


def import_ddvqa(json_path: str | Path, frames_dir: str | Path, split: str | None = None,
                 one_per_answer: bool = False) -> ImportResult:
    """DD-VQA question-answer pairs as FiFa samples.

    How questions map to tasks:

    * "Does the image look real/fake?" -> **Det** (target ``real``/``fake`` from the key's manipulation
      id, the ground truth) and **TOE** (target: the annotator's answer);
    * "Does the person's <part> look real/fake?" -> **R-Det** (target ``yes`` when the answer calls the
      part fake, ``no`` when real; left out when it says neither) and **R-TOE** (target: the answer), with
      the region given as a FICT concept (:data:`DDVQA_PARTS`; "skin" maps to the whole face). DD-VQA
      frames carry no landmarks, so the region has a concept id but no mask: fill it from a label map
      once landmarks are known.

    The prompt is the DD-VQA question itself. ``target`` is the first answer and ``meta["references"]``
    holds all of them (for multi-reference metrics); ``one_per_answer=True`` instead makes one sample
    per answer. ``image_id`` is ``ddvqa-<key>-<frame stem>``; ``meta["image_path"]`` is the frame file.

    Args:
        json_path: a DD-VQA JSON file (one per method and split in the release).
        frames_dir: folder with the frames, as ``<key>.png``, ``<key>/<frame>.png``,
            ``<Method>/<video>.png`` or ``<Method>/<video>/<frame>.png`` (``.jpg`` too).
        split: the split of every sample; None assigns it by identity (the swap pair's smaller video id).

    Returns:
        The samples; ``.skipped`` lists keys without frames and questions naming no known part.
    """
    json_path, frames_dir = Path(json_path), Path(frames_dir)
    data = _read_json(json_path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{json_path}: expected an object of '<manipulate id>_<video>' keys, got {type(data).__name__}")
    tree = load_tree()
    groups = _Groups()
    for key in data:
        match = _DDVQA_KEY.match(str(key))
        if match:
            groups.join(*_videos(match.group(2)))
    samples, skipped = [], []
    for key, questions in data.items():
        match = _DDVQA_KEY.match(str(key))
        if not match or int(match.group(1)) not in DDVQA_METHODS:
            raise ValueError(f"{json_path}: key {key!r} is not '<manipulate id>_<video>' with an id in "
                             f"{sorted(DDVQA_METHODS)}")
        if not isinstance(questions, Mapping):
            raise ValueError(f"{json_path}: key {key!r} must map question ids to {{question, answer}}")
        method, forgery_class = DDVQA_METHODS[int(match.group(1))]
        video = match.group(2)
        frames = _ddvqa_frames(frames_dir, key, method, video)
        if not frames:
            skipped.append((key, f"no frame found in {frames_dir}"))
            continue
        source_id = groups.source_id(_videos(video)[0], "ffpp")
        sample_split = split or assign_split(source_id)
        for question_id, entry in questions.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("question"), str) \
                    or not isinstance(entry.get("answer"), list) or not entry["answer"]:
                raise ValueError(f"{json_path}: {key}/{question_id} needs a 'question' string and a non-empty "
                                 "'answer' list")
            question, answers = entry["question"].strip(), [str(a).strip() for a in entry["answer"]]
            part_match = _DDVQA_PART.search(question)
            part = (part_match.group(1) or part_match.group(2)).lower() if part_match else None
            if part not in ("image", None) and part not in DDVQA_PARTS:
                skipped.append((f"{key}/{question_id}", f"question names no known face part: {question!r}"))
                continue
            for frame in frames:
                image_id = f"ddvqa-{key}-{frame.stem}"
                meta = {"source": "dd-vqa", "key": key, "question_id": str(question_id), "method": method,
                        "forgery_class": forgery_class, "image_path": str(frame), "references": answers}
                targets = answers if one_per_answer else answers[:1]
                for k, answer in enumerate(targets):
                    base = f"{image_id}/{question_id}/{k}"
                    if part in ("image", None):
                        # Det's target is the ground truth, the same for every answer: one Det sample.
                        label = "real" if forgery_class == "real" else "fake"
                        pairs = ([("Det", label)] if k == 0 else []) + [("TOE", answer)]
                        region, prompt = None, f"{IMAGE_TOKEN}\n{question}"
                    else:
                        concept = DDVQA_PARTS[part]
                        verdict = _verdict(answer)
                        pairs = ([("R-Det", "yes" if verdict == "fake" else "no")] if verdict else []) + [("R-TOE", answer)]
                        region = {"kind": "concept", "concept": concept, "mask": None, "box": None}
                        prompt = f"{IMAGE_TOKEN}\n{question} Region: the {tree.get(concept).name} {REGION_TOKEN}."
                    for task, target in pairs:
                        samples.append({"sample_id": f"{base}/{task}", "image_id": image_id, "image_index": -1,
                                        "task": task, "prompt": prompt, "target": target, "target_masks": [],
                                        "region": region, "split": sample_split,
                                        "meta": json.dumps({**meta, "answer_index": k}, sort_keys=True)})
    if skipped:
        log.warning("import_ddvqa(%s): skipped %d entries, e.g. %s", json_path, len(skipped), skipped[0])
    return ImportResult(samples, skipped)


# --- DFA-Instruct-style conversations -----------------------------------------------------------------

# FiFa task -> DFA-Instruct subset. Other text-only tasks go to FC (free conversation), one
# multi-turn conversation per image.
TASK_SUBSETS = {"Det": "DF-D", "Cls": "DF-C", "TOE": "AD"}
SUBSET_TASKS = {subset: task for task, subset in TASK_SUBSETS.items()}
DFA_SUBSETS = ("DF-D", "DF-C", "AD", "FC")


def _conversation_turn(sample: Mapping[str, Any], first: bool) -> tuple[str, str] | None:
    """``(human, gpt)`` text of a sample, or None when it cannot be said without masks.

    Conversations carry no masks: samples with ``[SEG]`` targets or a mask-only region are left out;
    a concept region is named in the prompt already and a box region has its coordinates written there,
    so dropping the ``<region>`` token keeps their meaning.
    """
    region = sample.get("region")
    if SEG_TOKEN in sample["target"] or (region and region.get("kind") == "mask"):
        return None
    prompt = re.sub(r"\s*" + re.escape(REGION_TOKEN), "", sample["prompt"])
    prompt = prompt.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "the image").strip()
    # LLaVA's convention: the first human turn starts with "<image>\n", later turns hold no image token.
    return (f"{IMAGE_TOKEN}\n{prompt}" if first else prompt), sample["target"]


def export_dfa_instruct(samples: Iterable[Mapping[str, Any]], path: str | Path, image_dir: str = "images",
                        images: Iterable[Mapping[str, Any]] | None = None) -> dict[str, int]:
    """Write samples as a DFA-Instruct-style conversation JSON.

    Det -> DF-D, Cls -> DF-C, TOE -> AD (one single-turn conversation each); every other text-only
    sample (R-Det, R-TOE, B-TOE, B-Loc, ...) joins its image's FC conversation, one turn per sample.
    Samples whose answer needs masks (Loc, AGE, R-AGE, RSeg, mask regions) are left out.
    Each conversation also holds ``"fifa": {"tasks", "sample_ids", "split"}`` so that
    :func:`import_dfa_instruct` restores the FiFa task ids; LLaVA-style loaders ignore the key.

    Args:
        samples: FiFa samples (dicts as in the sample dataset).
        path: output JSON file, written atomically.
        image_dir: the ``image`` field is ``<image_dir>/<image_id>.png``, relative to the JSON's folder.
        images: image records (e.g. a split of the image dataset); when given, their PNGs are written
            under ``path.parent / image_dir``.

    Returns:
        Conversations per subset and ``"skipped"``, the number of samples left out.
    """
    path = Path(path)
    conversations: list[dict[str, Any]] = []
    free: dict[str, dict[str, Any]] = {}
    skipped = 0
    for sample in samples:
        image = f"{image_dir}/{sample['image_id']}.png"
        subset = TASK_SUBSETS.get(sample["task"])
        if subset is not None:
            turn = _conversation_turn(sample, first=True)
            if turn is None:
                skipped += 1
                continue
            conversations.append({"id": sample["sample_id"], "image": image, "subset": subset,
                                  "conversations": [{"from": "human", "value": turn[0]}, {"from": "gpt", "value": turn[1]}],
                                  "fifa": {"tasks": [sample["task"]], "sample_ids": [sample["sample_id"]],
                                           "split": sample.get("split", "")}})
            continue
        chat = free.get(sample["image_id"])
        turn = _conversation_turn(sample, first=chat is None)
        if turn is None:
            skipped += 1
            continue
        if chat is None:
            chat = free[sample["image_id"]] = {
                "id": f"{sample['image_id']}/FC", "image": image, "subset": "FC", "conversations": [],
                "fifa": {"tasks": [], "sample_ids": [], "split": sample.get("split", "")}}
            conversations.append(chat)
        chat["conversations"] += [{"from": "human", "value": turn[0]}, {"from": "gpt", "value": turn[1]}]
        chat["fifa"]["tasks"].append(sample["task"])
        chat["fifa"]["sample_ids"].append(sample["sample_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if images is not None:
        folder = path.parent / image_dir
        folder.mkdir(parents=True, exist_ok=True)
        for record in images:
            (folder / f"{record['image_id']}.png").write_bytes(png_bytes(image_array(record["image"])))
    write_json(path, conversations)
    counts = {subset: sum(c["subset"] == subset for c in conversations) for subset in DFA_SUBSETS}
    return {**counts, "skipped": skipped}


def import_dfa_instruct(path: str | Path) -> ImportResult:
    """FiFa samples from a DFA-Instruct-style conversation JSON (one sample per human/gpt turn).

    DF-D -> Det, DF-C -> Cls, AD -> TOE; FC turns take the task ids stored by
    :func:`export_dfa_instruct` when present, else the task ``"FC"``. ``image_id`` is the image file's
    stem; ``meta`` holds the subset, the resolved ``image_path`` and, for later turns of a
    conversation, the ``history`` of earlier ``[human, gpt]`` turns. Samples have no region or masks.

    Raises:
        ValueError: not valid JSON, not a list of conversations, a conversation without ``id``,
            ``image`` or ``conversations``, an unknown subset, or turns that do not alternate
            human / gpt; the message names the file and the entry.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of conversations, got {type(data).__name__}")
    samples = []
    for position, entry in enumerate(data):
        where = f"{path}: conversation {position}"
        if not isinstance(entry, Mapping) or not all(k in entry for k in ("id", "image", "conversations")):
            raise ValueError(f"{where} needs 'id', 'image' and 'conversations'")
        subset = entry.get("subset", "FC")
        if subset not in DFA_SUBSETS:
            raise ValueError(f"{where}: unknown subset {subset!r}; use one of {', '.join(DFA_SUBSETS)}")
        turns = entry["conversations"]
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            raise ValueError(f"{where}: 'conversations' must be a non-empty list of human/gpt pairs")
        roles = [t.get("from") if isinstance(t, Mapping) else None for t in turns]
        if roles != ["human", "gpt"] * (len(turns) // 2) or not all(isinstance(t.get("value"), str) for t in turns):
            raise ValueError(f"{where}: turns must alternate 'human' and 'gpt' with string values, got {roles}")
        fifa = entry.get("fifa") or {}
        tasks = fifa.get("tasks") or []
        sample_ids = fifa.get("sample_ids") or []
        image_id = Path(str(entry["image"])).stem
        history: list[list[str]] = []
        for k in range(len(turns) // 2):
            human, answer = turns[2 * k]["value"], turns[2 * k + 1]["value"]
            task = tasks[k] if k < len(tasks) else SUBSET_TASKS.get(subset, "FC")
            prompt = human if IMAGE_TOKEN in human else f"{IMAGE_TOKEN}\n{human}"
            meta = {"source": "dfa-instruct", "subset": subset, "conversation": str(entry["id"]), "turn": k,
                    "image_path": str((path.parent / str(entry["image"])).resolve())}
            if history:
                meta["history"] = [list(h) for h in history]
            samples.append({"sample_id": sample_ids[k] if k < len(sample_ids) else f"{entry['id']}/{k}",
                            "image_id": image_id, "image_index": -1, "task": task, "prompt": prompt,
                            "target": answer, "target_masks": [], "region": None, "split": fifa.get("split", ""),
                            "meta": json.dumps(meta, sort_keys=True)})
            history.append([human, answer])
    return ImportResult(samples)


# --- FaceForensics++ folders ----------------------------------------------------------------------------

# FF++ method folders -> forgery class (identity swaps vs expression reenactment).
FFPP_METHODS = {"Deepfakes": "FS", "FaceSwap": "FS", "FaceShifter": "FS", "Face2Face": "FR", "NeuralTextures": "FR"}


def _frames(folder: Path, max_frames: int | None) -> list[Path]:
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    return frames[:max_frames] if max_frames else frames


def _find_frame(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def import_ffpp(root: str | Path, size: int = 256, compression: str = "c23", methods: Sequence[str] | None = None,
                max_frames: int | None = None, annotate_fakes: bool = True, on_error: str = "skip",
                backend: str = "dlib") -> ImportResult:
    """Image records from a FaceForensics++-style folder of extracted frames and masks.

    Layout read (``.png`` or ``.jpg`` frames)::

        original_sequences/youtube/<compression>/frames/<video>/<frame>.png
        manipulated_sequences/<Method>/<compression>/frames/<target>_<source>/<frame>.png
        manipulated_sequences/<Method>/masks/frames/<target>_<source>/<frame>.png

    Every frame goes through :func:`fifa_lab.faces.detect_face` (aligned ``size`` crop, landmarks, label
    map); the fake's mask and its real counterpart (the target video's frame of the same name) are
    warped with the fake's alignment so the three line up pixel for pixel. The ground-truth concepts are
    those the mask touches (FF++ says nothing of artifact types, so their ``artifacts`` are empty); the
    explanation comes from the annotator on (fake, real), or on the mask when no real frame exists.
    Methods: Deepfakes, FaceSwap, FaceShifter -> FS; Face2Face, NeuralTextures -> FR; others are skipped.
    A swap ``target_source`` joins both identities in one split.

    Args:
        on_error: ``"skip"`` records a frame without a detectable face (or without its mask) in
            ``.skipped``; ``"raise"`` raises instead.
        annotate_fakes: False leaves fakes with an empty explanation (faster when only masks matter).

    Returns:
        The records (originals first, then each method, sorted by path) with ``.skipped``.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    root = Path(root)
    originals = root / "original_sequences" / "youtube" / compression / "frames"
    manipulated = root / "manipulated_sequences"
    if not originals.is_dir() and not manipulated.is_dir():
        raise FileNotFoundError(f"{root} has neither original_sequences/youtube/{compression}/frames nor "
                                "manipulated_sequences: not a FaceForensics++ folder")
    tree = load_tree()
    groups = _Groups()
    jobs: list[tuple[str, str, Path]] = []  # (method or "original", video, frame)
    skipped: list[tuple[str, str]] = []
    if originals.is_dir():
        for video in sorted(p.name for p in originals.iterdir() if p.is_dir()):
            groups.join(*_videos(video))
            jobs += [("original", video, frame) for frame in _frames(originals / video, max_frames)]
    method_dirs = sorted(p for p in manipulated.iterdir() if p.is_dir()) if manipulated.is_dir() else []
    for method_dir in method_dirs:
        method = method_dir.name
        if method not in FFPP_METHODS or (methods is not None and method not in methods):
            if method not in FFPP_METHODS:
                skipped.append((str(method_dir), f"unknown method; known: {', '.join(FFPP_METHODS)}"))
            continue
        frames_root = method_dir / compression / "frames"
        if not frames_root.is_dir():
            continue
        for video in sorted(p.name for p in frames_root.iterdir() if p.is_dir()):
            groups.join(*_videos(video))
            jobs += [(method, video, frame) for frame in _frames(frames_root / video, max_frames)]

    records = []
    for method, video, frame in jobs:
        try:
            records.append(_ffpp_record(root, compression, tree, groups, method, video, frame, size,
                                        annotate_fakes, backend))
        except (NoFaceError, ImageError, _MissingMask) as exc:
            if on_error == "raise":
                raise type(exc)(f"{frame}: {exc}") from exc
            skipped.append((str(frame), str(exc)))
    if skipped:
        log.warning("import_ffpp(%s): skipped %d of %d frames, e.g. %s", root, len(skipped), len(jobs), skipped[0])
    return ImportResult(records, skipped)


class _MissingMask(ValueError):
    """A manipulated frame without a readable mask of the same size."""


def _ffpp_record(root: Path, compression: str, tree, groups: _Groups, method: str, video: str, frame: Path,
                 size: int, annotate_fakes: bool, backend: str) -> dict[str, Any]:
    source_id = groups.source_id(_videos(video)[0], "ffpp")
    params = {"dataset": "FaceForensics++", "compression": compression, "method": method, "video": video,
              "frame": frame.stem, "path": str(frame.relative_to(root)), "detector": backend}
    image = load_image(frame)
    face = detect_face(image, size=size, backend=backend)
    params["alignment"] = np.asarray(face.attributes["alignment"]).round(6).tolist()
    if method == "original":
        return record_from_parts(image_id=f"ffpp-original-{video}-{frame.stem}", image=face.image,
                                 source_id=source_id, landmarks=face.landmarks, label_map=face.label_map,
                                 params=params)
    mask_path = _find_frame(root / "manipulated_sequences" / method / "masks" / "frames" / video, frame.stem)
    if mask_path is None:
        raise _MissingMask(f"no mask for this frame under manipulated_sequences/{method}/masks/frames/{video}")
    raw_mask = load_image(mask_path).max(axis=2) > 127
    if raw_mask.shape != image.shape[:2]:
        raise _MissingMask(f"mask {mask_path} is {raw_mask.shape} but the frame is {image.shape[:2]}")
    matrix = np.asarray(face.attributes["alignment"], dtype=np.float64)
    mask = cv2.warpAffine(raw_mask.astype(np.uint8) * 255, matrix, (size, size), flags=cv2.INTER_LINEAR) > 127
    real_path = _find_frame(root / "original_sequences" / "youtube" / compression / "frames" / _videos(video)[0],
                            frame.stem)
    hits = concepts_in_region(tree, face.label_map, mask) if mask.any() else []
    concepts = concept_entries(tree, [{"concept": h.concept, "coverage": round(h.coverage, 4), "artifacts": []}
                                      for h in hits], mask, [face.label_map])
    explanation = None
    if annotate_fakes:
        # The real frame goes through the fake's own warp so the annotator compares aligned pixels.
        real = load_image(real_path) if real_path is not None else None
        real = warp_to_crop(real, matrix, size) if real is not None and real.shape == image.shape else None
        annotation = annotate(face.image, real=real, mask=None if real is not None else mask,
                              landmarks=face.landmarks, label_map=face.label_map)
        explanation = explanation_entry(annotation, (size, size))
        params["annotated_with"] = "real frame" if real is not None else "mask"
    record = record_from_parts(
        image_id=f"ffpp-{method}-{video}-{frame.stem}", image=face.image, source_id=source_id,
        landmarks=face.landmarks, label_map=face.label_map, forgery_class=FFPP_METHODS[method],
        forgery_method=method, artifact_mask=mask, concepts=concepts, params=params)
    if explanation is not None:
        record["explanation"] = explanation
    else:
        # No annotation: keep the schema (empty text, no segments) but say that the image is a fake.
        record["explanation"] = {**record["explanation"], "text": "", "toe_text": "", "has_artifact": bool(mask.any())}
    return record


def samples_dataset(samples: Sequence[Mapping[str, Any]]) -> Dataset:
    """A ``datasets.Dataset`` of samples (e.g. imported ones) with the FiFa sample schema."""
    return Dataset.from_list([dict(s) for s in samples], features=SAMPLE_FEATURES)


def records_dataset(records: Sequence[Mapping[str, Any]]) -> Dataset:
    """A ``datasets.Dataset`` of image records (e.g. from :func:`import_ffpp`) with the record schema."""
    return Dataset.from_list([dict(r) for r in records], features=IMAGE_FEATURES)
