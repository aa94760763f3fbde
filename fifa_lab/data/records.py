"""The image record: one row of the image dataset (DESIGN "Records"), its schema and its split.

A record is a plain dict that fits :data:`IMAGE_FEATURES`:

==================  ===========================================================================================
``image_id``        ``"<source_id>-real"`` or ``"<source_id>-<class>-<k>"`` (the build's naming)
``image``           the RGB image; built as ``{"bytes": PNG, "path": None}``, a PIL image once loaded
``label``           ``"real"`` or ``"fake"``
``forgery_class``   ``real``, ``FS``, ``FR``, ``FE`` or ``EFS``
``forgery_method``  the forge method (``""`` for a real image, the folder name for imported data)
``source_id``       the identity the image shows; a real face and all its fakes share it, and so their split
``landmarks``       ``68 x 2`` float32 ``(x, y)`` of the image shown (a fake's own landmarks)
``label_map``       the FICT label map as a lossless PNG (see below)
``artifact_mask``   ground-truth artifact mask (RLE), all false for a real image
``concepts``        ground truth ``[{concept, coverage, artifacts[], mask}]``: the FICT leaves the artifact
                    mask touches; ``mask`` (RLE) is the manipulated part of that concept
``explanation``     what the FiFa-Annotator made of the image: ``text`` (AGE, ``<p>..</p> [SEG]``),
                    ``toe_text`` (text only), ``segments [{phrase, concepts[], mask}]`` (the i-th ``[SEG]``
                    owns the i-th segment; ``phrase`` names the region, ``artifacts`` what is wrong there),
                    and its own ``mask``, ``concepts [{concept, coverage,
                    artifacts[]}]`` and ``has_artifact``, kept next to the ground truth so the reliability
                    report can compare the two
``split``           ``train``, ``validation`` or ``test`` (:func:`assign_split` of ``source_id``)
``params``          JSON string: generator, face seed, forgery recipe, tree, ... (provenance)
==================  ===========================================================================================

Label map storage: a per-concept RLE list would cost ~140 masks per image, so the label map is kept as
one single-channel PNG with value ``leaf index + 1`` (0 = no concept): 8-bit when the tree has fewer
than 255 leaves (the default FICT has 112), 16-bit otherwise. Any concept's visible mask comes back
with ``tree.visible_masks(decode_label_map(record["label_map"]))``.

Real images carry a fixed explanation (:data:`REAL_TEXT`, no segments): the annotator explains
differences from a reference, and a real image has none.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.masks import decode_rle, empty_rle, encode_rle
from fifa_lab.fict import ConceptTree, load_tree

SPLITS = ("train", "validation", "test")
SPLIT_RATIOS = (0.8, 0.1, 0.1)
REAL_TEXT = "No manipulation: the face looks authentic and shows no forgery artifacts."
SCHEMA_VERSION = 1  # bump when a field changes meaning; stored in every build's parameters

# Plain (not fixed-length) lists: datasets 4.x cannot cast fixed-length lists inside a struct that is
# null in some rows (a sample's region mask or box), and the two-element size is checked on decoding anyway.
RLE_FEATURE = {"size": List(Value("int32")), "counts": Value("string")}
CONCEPT_FEATURE = {"concept": Value("string"), "coverage": Value("float32"), "artifacts": List(Value("string"))}
IMAGE_FEATURES = Features({
    "image_id": Value("string"),
    "image": Image(),
    "label": Value("string"),
    "forgery_class": Value("string"),
    "forgery_method": Value("string"),
    "source_id": Value("string"),
    "landmarks": List(List(Value("float32"), length=2), length=68),
    "label_map": Image(),
    "artifact_mask": RLE_FEATURE,
    "concepts": List({**CONCEPT_FEATURE, "mask": RLE_FEATURE}),
    "explanation": {
        "text": Value("string"),
        "toe_text": Value("string"),
        "segments": List({"phrase": Value("string"), "concepts": List(Value("string")),
                          "artifacts": List(Value("string")), "mask": RLE_FEATURE}),
        "mask": RLE_FEATURE,
        "concepts": List(CONCEPT_FEATURE),
        "has_artifact": Value("bool"),
    },
    "split": Value("string"),
    "params": Value("string"),
})


# --- splits -------------------------------------------------------------------------------------------


def assign_split(source_id: str, ratios: Sequence[float] = SPLIT_RATIOS) -> str:
    """The split of an identity: a hash of ``source_id`` placed on the ``ratios`` (train, validation, test).

    Depends on nothing but the id, so a real face and its fakes always land together (no identity
    leaks across splits), on any machine and in any build order.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {tuple(ratios)}")
    digest = hashlib.sha256(str(source_id).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edges = np.cumsum(ratios)
    for split, edge in zip(SPLITS, edges):
        if position < edge:
            return split
    return SPLITS[-1]


# --- images and label maps ----------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of an ``(H, W, 3)`` uint8, ``(H, W)`` uint8 or ``(H, W)`` uint16 array."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_image(image: np.ndarray) -> dict[str, Any]:
    """The value of an ``Image`` column for an ``(H, W, 3)`` uint8 RGB array (PNG: fakes stay bit-exact)."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"an image must be an (H, W, 3) uint8 RGB array, got {array.shape} {array.dtype}")
    return {"bytes": png_bytes(array), "path": None}


def image_array(value: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from an ``Image`` column value (PIL image, ``{"bytes", "path"}`` or array)."""
    return np.asarray(_to_pil(value).convert("RGB"))


def encode_label_map(label_map: np.ndarray) -> dict[str, Any]:
    """The ``label_map`` column value: PNG of ``label + 1`` (8-bit below 255 leaves, else 16-bit)."""
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a label map must be a 2-D integer array, got {labels.shape} {labels.dtype}")
    top = int(labels.max(initial=-1))
    if (labels.size and int(labels.min()) < -1) or top >= 65535:
        raise ValueError("label map values must lie in -1..65534")
    shifted = (labels.astype(np.int32) + 1).astype(np.uint8 if top < 255 else np.uint16)
    return {"bytes": png_bytes(shifted), "path": None}


def decode_label_map(value: Any) -> np.ndarray:
    """``(H, W)`` int16 label map (leaf index, -1 = none) from a ``label_map`` column value."""
    if isinstance(value, np.ndarray) and value.dtype == np.int16:
        return value
    return np.asarray(_to_pil(value), dtype=np.int32).astype(np.int16) - 1


def _to_pil(value: Any) -> PILImage.Image:
    if isinstance(value, PILImage.Image):
        return value
    if isinstance(value, np.ndarray):
        return PILImage.fromarray(value)
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return PILImage.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return PILImage.open(value["path"])
    raise ValueError(f"cannot read an image from {type(value).__name__}")


# --- records ------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain-Python copy of ``value`` for ``json.dumps`` (numpy scalars/arrays, tuples, sets)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def concept_entries(tree: ConceptTree, concepts: Sequence[Mapping[str, Any]], mask: np.ndarray,
                    label_maps: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """``concepts`` with each concept's manipulated part as an RLE ``mask``.

    The part is ``mask`` inside the concept on any of ``label_maps`` (the real and the fake geometry
    both count, as in the forge's ground truth: a moved mouth touches where it was and where it went).
    """
    out = []
    for entry in concepts:
        leaves = [tree.leaf_index[leaf.id] for leaf in tree.leaves(entry["concept"])]
        inside = np.zeros(mask.shape, dtype=bool)
        for labels in label_maps:
            inside |= np.isin(labels, leaves)
        out.append({"concept": str(entry["concept"]), "coverage": float(entry.get("coverage", 0.0)),
                    "artifacts": [str(a) for a in entry.get("artifacts", [])], "mask": encode_rle(mask & inside)})
    return out


def explanation_entry(annotation: Any, size: tuple[int, int]) -> dict[str, Any]:
    """The ``explanation`` column from an annotator result (or :func:`real_explanation` for ``None``)."""
    if annotation is None:
        return real_explanation(size)
    segments = []
    for segment in _field(annotation, "segments", []):
        phrase, concepts, artifacts, mask = _segment_parts(segment)
        segments.append({"phrase": phrase, "concepts": [str(c) for c in concepts],
                         "artifacts": [str(a) for a in artifacts], "mask": encode_rle(mask)})
    text = str(_field(annotation, "text", ""))
    if text.count("[SEG]") != len(segments):
        raise ValueError(f"annotation text has {text.count('[SEG]')} [SEG] tokens but {len(segments)} segments")
    mask = _field(annotation, "mask", None)
    return {
        "text": text,
        "toe_text": str(_field(annotation, "toe_text", "") or text),
        "segments": segments,
        "mask": encode_rle(mask) if mask is not None else empty_rle(size),
        "concepts": [{"concept": str(c["concept"]), "coverage": float(c.get("coverage", 0.0)),
                      "artifacts": [str(a) for a in c.get("artifacts", [])]}
                     for c in _field(annotation, "concepts", [])],
        "has_artifact": bool(_field(annotation, "has_artifact", bool(segments))),
    }


def real_explanation(size: tuple[int, int]) -> dict[str, Any]:
    """The explanation of a real image: :data:`REAL_TEXT`, no segments, an empty mask."""
    return {"text": REAL_TEXT, "toe_text": REAL_TEXT, "segments": [], "mask": empty_rle(size),
            "concepts": [], "has_artifact": False}


def _field(obj: Any, name: str, default: Any) -> Any:
    return obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)


def _segment_parts(segment: Any) -> tuple[str, list[str], list[str], np.ndarray]:
    """``(phrase, concept ids, artifact ids, bool mask)`` of an annotator segment (object or dict)."""
    phrase, concepts, artifacts, mask = (_field(segment, k, None) for k in ("phrase", "concepts", "artifacts", "mask"))
    if isinstance(mask, Mapping):
        mask = decode_rle(mask)
    if isinstance(concepts, str):
        concepts = [concepts]
    return str(phrase), list(concepts or []), list(artifacts or []), np.asarray(mask, dtype=bool)


def record_from_parts(*, image_id: str, image: np.ndarray, source_id: str, landmarks: np.ndarray,
                      label_map: np.ndarray, forgery_class: str = "real", forgery_method: str = "",
                      artifact_mask: np.ndarray | None = None, concepts: Sequence[Mapping[str, Any]] = (),
                      explanation: Mapping[str, Any] | None = None, split: str | None = None,
                      params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble a record from arrays; ``concepts`` must already carry RLE masks (see :func:`concept_entries`).

    The split defaults to :func:`assign_split` of ``source_id``.
    """
    if forgery_class not in FORGERY_CLASSES:
        raise ValueError(f"unknown forgery class {forgery_class!r}; use one of {', '.join(FORGERY_CLASSES)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    size = (int(image.shape[0]), int(image.shape[1]))
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {points.shape}")
    if label_map.shape != size:
        raise ValueError(f"label map shape {label_map.shape} does not match the image {size}")
    mask = np.zeros(size, dtype=bool) if artifact_mask is None else np.asarray(artifact_mask, dtype=bool)
    return {
        "image_id": image_id,
        "image": encode_image(image),
        "label": "real" if forgery_class == "real" else "fake",
        "forgery_class": forgery_class,
        "forgery_method": forgery_method,
        "source_id": source_id,
        "landmarks": points.tolist(),
        "label_map": encode_label_map(label_map),
        "artifact_mask": encode_rle(mask),
        "concepts": [dict(c) for c in concepts],
        "explanation": dict(explanation) if explanation is not None else real_explanation(size),
        "split": split or assign_split(source_id),
        "params": json.dumps(jsonable(params or {}), sort_keys=True),
    }


def fake_label_map(face: Any, forgery: Any, tree: ConceptTree | None = None) -> np.ndarray:
    """The label map of what a fake shows: the face's own unless the forgery moved the landmarks.

    The face's attributes (glasses, beard, ...) are kept: a forgery changes geometry, not accessories.
    """
    if np.array_equal(forgery.landmarks, face.landmarks):
        return face.label_map
    tree = load_tree() if tree is None else tree
    return tree.label_map(forgery.landmarks, face.size, face.attributes)


def make_record(face: Any, forgery: Any = None, annotation: Any = None, *, source_id: str,
                image_id: str | None = None, params: Mapping[str, Any] | None = None,
                tree: ConceptTree | None = None, split: str | None = None,
                label_map: np.ndarray | None = None) -> dict[str, Any]:
    """The record of a real face (``forgery=None``) or of one of its fakes.

    Args:
        face: the real `Face` (image, landmarks, label map, attributes).
        forgery: a `Forgery` of ``face``; its mask and concepts are the ground truth.
        annotation: the annotator's result on ``(forgery.fake, forgery.real)``; becomes ``explanation``.
            Required for a fake.
        source_id: the identity id shared by the face and its fakes (decides the split).
        image_id: defaults to ``"<source_id>-real"`` / ``"<source_id>-<class>"``.
        params: provenance merged into the ``params`` JSON (generator, seeds, ...).
        tree: the concept tree of the label maps; None is the default FICT.
        label_map: the fake's label map when the caller already has it (:func:`fake_label_map`).
    """
    tree = load_tree() if tree is None else tree
    extra = dict(params or {})
    if forgery is None:
        return record_from_parts(
            image_id=image_id or f"{source_id}-real", image=face.image, source_id=source_id,
            landmarks=face.landmarks, label_map=face.label_map, split=split,
            params={"face_source": face.source, "fict": tree.name, **extra})
    if annotation is None:
        raise ValueError("a fake record needs the annotator's result (annotation=...) for its explanation")
    size = (int(forgery.fake.shape[0]), int(forgery.fake.shape[1]))
    # The record shows the fake, so its label map follows the fake's geometry when the forgery moved it;
    # the manipulated part of a concept counts on both geometries (where a moved mouth was and went).
    fake_labels = fake_label_map(face, forgery, tree) if label_map is None else label_map
    label_maps = [face.label_map] if fake_labels is face.label_map else [face.label_map, fake_labels]
    mask = np.asarray(forgery.mask, dtype=bool)
    return record_from_parts(
        image_id=image_id or f"{source_id}-{forgery.forgery_class}", image=forgery.fake, source_id=source_id,
        landmarks=forgery.landmarks, label_map=fake_labels, forgery_class=forgery.forgery_class,
        forgery_method=forgery.method, artifact_mask=mask,
        concepts=concept_entries(tree, forgery.concepts, mask, label_maps),
        explanation=explanation_entry(annotation, size), split=split,
        params={"face_source": face.source, "fict": tree.name, "forgery": forgery.params,
                "annotator_rule": str(_field(annotation, "rule", "")), **extra})
