"""The forgery record, the method registry and `forge`, which runs one method and writes its ground truth.

A forgery *method* is a function ``fn(ctx: ForgeContext) -> Edit`` registered under a forgery class
(FS, FR, FE, EFS) with :func:`register_method`. It sees the real face, the concept tree, a seeded random
generator and a strength in ``(0, 1]``, and returns the manipulated image with its artifact mask split
into *layers*: each layer is a boolean mask with the artifact types the method knows it leaves there
(a blending seam on a ring, colour mismatch inside, ...). `forge` turns that into the ground truth:

* ``mask``: the union of the layers, i.e. exactly the pixels the method rewrote, before any global
  post-processing; outside it the fake equals the real image byte for byte (before post-processing);
* ``concepts``: the FICT leaves the mask touches under the one rule of
  :func:`fifa_lab.fict.coverage.concepts_in_region`, each with the artifact types of the layers that
  cover at least ``LAYER_SHARE`` of that concept's manipulated pixels;
* ``params``: everything needed to redo the forgery (JSON-serialisable).

Randomness: every draw comes from ``np.random.default_rng`` seeded by ``seed`` (one stream picks the
method, one per method draws its parameters, one draws the post-processing chain), so a forgery is
reproduced from ``(face, forgery_class, method, seed)`` and picking a method with ``method=None`` gives
the same fake as naming the method it picked.
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from fifa_lab.artifacts import check_artifact, check_forgery_class
from fifa_lab.faces.face import Face
from fifa_lab.fict.coverage import concepts_in_region
from fifa_lab.fict.tree import ConceptTree, load_tree
from fifa_lab.forge.post import apply_post, check_chain, random_chain
from fifa_lab.forge.trace import Trace, apply_trace, check_trace
from fifa_lab.ibug68 import FaceFrame, check_landmarks

# A layer names an artifact for a concept when it covers at least this share of the concept's
# manipulated pixels (a seam ring barely grazing a concept does not make the concept "seamed").
LAYER_SHARE = 0.1
FAKE_CLASSES = ("FS", "FR", "FE", "EFS")


class NotApplicable(ValueError):
    """The method cannot manipulate this face (e.g. remove_beard on a beardless face)."""


@dataclass
class Forgery:
    """One fake with its ground truth.

    Attributes:
        fake: ``(H, W, 3)`` uint8 RGB manipulated image, after post-processing.
        real: ``(H, W, 3)`` uint8 RGB image of the source face (the paired real).
        mask: ``(H, W)`` bool artifact mask: the pixels the manipulation rewrote, before post-processing.
        forgery_class: FS, FR, FE or EFS.
        method: the registered method name.
        concepts: ``[{concept, coverage, artifacts}]``: the FICT leaves the mask touches, largest first;
            ``coverage`` is the manipulated share of the concept's visible area, ``artifacts`` the
            artifact type ids the method left there.
        params: JSON-serialisable recipe: seed, strength, method parameters, donor, post-processing chain.
        landmarks: ``(68, 2)`` float32 landmarks of the fake (moved by reenactment and reshaping).
        source: ``Face.source`` of the real face.
        artifact_masks: ``{artifact id: (H, W) bool}``, where each artifact type was left.
    """

    fake: np.ndarray
    real: np.ndarray
    mask: np.ndarray
    forgery_class: str
    method: str
    concepts: list[dict[str, Any]]
    params: dict[str, Any]
    landmarks: np.ndarray
    source: str
    artifact_masks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Edit:
    """What a method returns.

    Attributes:
        image: ``(H, W, 3)`` uint8 manipulated image (pixels outside the layers are reset to the real).
        layers: ``[(artifact ids, (H, W) bool)]``; their union is the artifact mask.
        params: the method's own parameters (JSON-serialisable after `jsonable`).
        landmarks: ``(68, 2)`` landmarks of the fake when the method moved them, else None.
        label_map: ``(H, W)`` label map of the fake's geometry when the method moved content, else None;
            its concepts count too (a mouth opened by warping touches the concepts it moved into).
    """

    image: np.ndarray
    layers: list[tuple[tuple[str, ...], np.ndarray]]
    params: dict[str, Any] = field(default_factory=dict)
    landmarks: np.ndarray | None = None
    label_map: np.ndarray | None = None


@dataclass
class ForgeContext:
    """Everything a method may use: the real face, the tree, its random generator and strength."""

    face: Face
    tree: ConceptTree
    rng: np.random.Generator
    strength: float
    donor: Face | None = None

    @functools.cached_property
    def frame(self) -> FaceFrame:
        return FaceFrame.from_landmarks(self.face.landmarks)

    @property
    def shape(self) -> tuple[int, int]:
        return self.face.size

    def region(self, *concepts: str) -> np.ndarray:
        """``(H, W)`` bool: pixels of the real face's label map showing any leaf under these concepts."""
        return _leaf_lookup(self.tree, concepts)[self.face.label_map]

    def has(self, *concepts: str) -> bool:
        """Whether any of these concepts is visible on the real face."""
        return bool(self.region(*concepts).any())

    def label(self, concept: str) -> int:
        """Label-map index of a leaf concept."""
        return self.tree.leaf_index[self.tree.get(concept).id]


@functools.lru_cache(maxsize=256)
def _leaf_lookup(tree: ConceptTree, concepts: tuple[str, ...]) -> np.ndarray:
    """``(n_leaves + 1,)`` bool table, True for leaves under ``concepts``; the last entry serves label -1."""
    table = np.zeros(len(tree.leaves()) + 1, dtype=bool)
    for concept in concepts:
        table[[tree.leaf_index[leaf.id] for leaf in tree.leaves(concept)]] = True
    return table


@dataclass(frozen=True)
class MethodSpec:
    """A registered forgery method."""

    forgery_class: str
    name: str
    fn: Callable[[ForgeContext], Edit]
    strength_range: tuple[float, float]

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


METHODS: dict[str, MethodSpec] = {}


def register_method(forgery_class: str, name: str, strength_range: tuple[float, float] = (0.3, 1.0)):
    """Register ``fn(ctx) -> Edit`` as a method of ``forgery_class``; ``strength`` is drawn from ``strength_range``.

    Method names are unique across classes so ``params["method"]`` alone names the code that ran.
    """
    if check_forgery_class(forgery_class) not in FAKE_CLASSES:
        raise ValueError(f"methods make fakes: use one of {', '.join(FAKE_CLASSES)}")
    low, high = (float(s) for s in strength_range)
    if not 0 < low <= high <= 1:
        raise ValueError(f"strength_range must satisfy 0 < low <= high <= 1, got {strength_range}")

    def wrap(fn: Callable[[ForgeContext], Edit]) -> Callable[[ForgeContext], Edit]:
        if name in METHODS and METHODS[name].fn is not fn:
            raise ValueError(f"forgery method {name!r} is already registered ({METHODS[name].forgery_class})")
        METHODS[name] = MethodSpec(forgery_class, name, fn, (low, high))
        return fn

    return wrap


def methods_of(forgery_class: str) -> list[str]:
    """Registered method names of one class, in registration order."""
    return [name for name, spec in METHODS.items() if spec.forgery_class == forgery_class]


def forge(face: Face, forgery_class: str, method: str | None = None, seed: int = 0, *,
          strength: float | None = None, post: str | Sequence[dict[str, Any]] | None = None,
          donor: Face | None = None, tree: ConceptTree | None = None,
          trace: Trace | dict[str, Any] | bool | None = True) -> Forgery:
    """Make one fake of ``face`` with ground truth.

    Args:
        face: the real face; needs an ``(H, W, 3)`` uint8 image, ``(68, 2)`` landmarks and an ``(H, W)``
            label map of ``tree`` (as `synth_face` and `detect_face` give).
        forgery_class: FS, FR, FE or EFS.
        method: a registered method of that class; None picks one from ``seed`` among those that apply
            to this face (e.g. remove_beard only applies to a bearded face).
        seed: non-negative integer; the same seed gives the same fake.
        strength: artifact strength in ``(0, 1]``; None draws it from the method's range.
        post: None (no post-processing), ``"random"`` (a chain drawn from ``seed``) or a chain
            ``[{"op": "jpeg", "quality": 75}, ...]`` (see :mod:`fifa_lab.forge.post`).
        donor: the source identity for face swaps (FS swap methods); None draws a synthetic donor.
        tree: the concept tree the label map indexes; None is the default FICT.
        trace: the generator trace left in the rewritten pixels (see :mod:`fifa_lab.forge.trace`): True
            for the default, a :class:`~fifa_lab.forge.trace.Trace` or dict of its fields, or False for
            none (the fake then differs from the real only in content: no detector can tell it alone).

    Raises:
        ValueError: unknown class or method (the message lists the options), a face without a label map
            or with mismatched shapes, a bad strength or post chain, or no method applies to the face.
    """
    forgery_class = check_forgery_class(forgery_class)
    if forgery_class not in FAKE_CLASSES:
        raise ValueError(f"forge makes fakes; use one of {', '.join(FAKE_CLASSES)}, not {forgery_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    tree = load_tree() if tree is None else tree
    check_face(face, tree)
    if donor is not None:
        check_face(donor, tree)
    if strength is not None and not (isinstance(strength, (int, float)) and 0 < strength <= 1):
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
    chain = _post_chain(post, seed)
    trace = check_trace(trace)

    names = methods_of(forgery_class)
    if method is None:
        candidates = [names[k] for k in np.random.default_rng(seed).permutation(len(names))]
    elif method in names:
        candidates = [method]
    else:
        owner = f" (it is a {METHODS[method].forgery_class} method)" if method in METHODS else ""
        raise ValueError(f"unknown {forgery_class} method {method!r}{owner}; use one of {', '.join(names)}")

    reasons = []
    for name in candidates:
        spec = METHODS[name]
        rng = np.random.default_rng([seed, _stream(name)])
        level = float(strength) if strength is not None else float(rng.uniform(*spec.strength_range))
        try:
            edit = spec.fn(ForgeContext(face, tree, rng, level, donor))
        except NotApplicable as exc:
            if method is not None:
                raise
            reasons.append(f"{name}: {exc}")
            continue
        return _finish(face, tree, forgery_class, spec, edit, seed, level, chain, trace)
    raise ValueError(f"no {forgery_class} method applies to this face ({'; '.join(reasons)})")


def check_face(face: Face, tree: ConceptTree) -> None:
    """Raise ValueError unless ``face`` has a uint8 RGB image, 68 landmarks and a label map of ``tree``."""
    image = getattr(face, "image", None)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"face.image must be an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}")
    check_landmarks(face.landmarks)
    if face.label_map is None:
        raise ValueError("face has no label map; forgeries need one for their ground truth: build faces with "
                         "synth_face/detect_face or set face.label_map = tree.label_map(face.landmarks, (h, w))")
    if face.label_map.shape != image.shape[:2]:
        raise ValueError(f"face.label_map has shape {face.label_map.shape} but the image is {image.shape[:2]}")
    if not np.issubdtype(face.label_map.dtype, np.integer):
        raise ValueError(f"face.label_map must hold integer leaf indices, got {face.label_map.dtype}")
    n = len(tree.leaves())
    if face.label_map.size and (face.label_map.min() < -1 or face.label_map.max() >= n):
        raise ValueError(f"face.label_map holds indices outside -1..{n - 1}: it was not made with this tree")


def _stream(name: str) -> int:
    """A stable per-name sub-stream key (``hash()`` is salted per process, crc32 is not)."""
    return zlib.crc32(name.encode("utf-8"))


def _post_chain(post: str | Sequence[dict[str, Any]] | None, seed: int) -> list[dict[str, Any]]:
    if post is None:
        return []
    if isinstance(post, str):
        if post != "random":
            raise ValueError(f"post must be None, 'random' or a list of operations, got {post!r}")
        return random_chain(np.random.default_rng([seed, _stream("post")]))
    return check_chain(post)


def _finish(face: Face, tree: ConceptTree, forgery_class: str, spec: MethodSpec, edit: Edit, seed: int,
            strength: float, chain: list[dict[str, Any]], trace: Trace | None) -> Forgery:
    real = face.image
    layers = [(tuple(check_artifact(a) for a in artifacts), np.asarray(region, dtype=bool))
              for artifacts, region in edit.layers]
    if not layers or any(region.shape != real.shape[:2] for _, region in layers):
        raise RuntimeError(f"method {spec.name!r} returned no layers or layers of the wrong shape")
    mask = np.logical_or.reduce([region for _, region in layers])
    # The mask is the ground truth: nothing outside it may differ from the real image.
    if not mask.any() or not (edit.image != real)[mask].any():
        raise ValueError(f"method {spec.name!r} changed nothing at strength {strength:.3f}; raise the strength")
    rendered = edit.image if trace is None else apply_trace(edit.image, trace)
    fake = np.where(mask[..., None], rendered, real)

    label_maps = [face.label_map] if edit.label_map is None else [face.label_map, edit.label_map]
    concepts = ground_truth_concepts(tree, label_maps, mask, layers)
    artifact_masks: dict[str, np.ndarray] = {}
    for artifacts, region in layers:
        for artifact in artifacts:
            artifact_masks[artifact] = artifact_masks.get(artifact, False) | region
    params = {"seed": seed, "strength": round(strength, 6), **jsonable(edit.params), "post": jsonable(chain),
              "trace": None if trace is None else trace.to_dict()}
    landmarks = face.landmarks if edit.landmarks is None else check_landmarks(edit.landmarks)
    return Forgery(fake=apply_post(fake, chain), real=real, mask=mask, forgery_class=forgery_class,
                   method=spec.name, concepts=concepts, params=params, landmarks=landmarks.astype(np.float32),
                   source=face.source, artifact_masks=artifact_masks)


def ground_truth_concepts(tree: ConceptTree, label_maps: Sequence[np.ndarray], mask: np.ndarray,
                          layers: Sequence[tuple[tuple[str, ...], np.ndarray]]) -> list[dict[str, Any]]:
    """Concepts a mask touches, with the artifact types of the layers over them.

    Which concepts: `concepts_in_region` on each label map (the real face's and, for geometry changes,
    the fake's); a concept found on either counts, with its larger coverage. Which artifacts: those of
    every layer holding at least ``LAYER_SHARE`` of the concept's manipulated pixels (on the label map
    where it covers most), else of the layer holding most of them.
    """
    n = len(tree.leaves())
    hits: dict[str, dict[str, Any]] = {}
    for labels in label_maps:
        bins = np.where(labels < 0, n, labels)
        in_mask = np.bincount(bins[mask], minlength=n + 1).astype(np.float64)
        per_layer = [np.bincount(bins[region], minlength=n + 1) for _, region in layers]
        for hit in concepts_in_region(tree, labels, mask):
            k = tree.leaf_index[hit.concept]
            shares = [layer[k] / in_mask[k] for layer in per_layer]
            if hit.concept in hits and hits[hit.concept]["pixels"] >= hit.pixels:
                continue
            chosen = [i for i, s in enumerate(shares) if s >= LAYER_SHARE] or [int(np.argmax(shares))]
            artifacts = sorted({a for i in chosen for a in layers[i][0]})
            hits[hit.concept] = {"concept": hit.concept, "coverage": round(hit.coverage, 4),
                                 "artifacts": artifacts, "pixels": hit.pixels}
    ordered = sorted(hits.values(), key=lambda h: h["pixels"], reverse=True)
    return [{key: h[key] for key in ("concept", "coverage", "artifacts")} for h in ordered]


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain Python for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    return value


# --- pixel helpers shared by the methods ----------------------------------------------------------

def box(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of an ``(H, W)`` mask grown by ``pad`` (clipped)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return slice(0, 0), slice(0, 0)
    h, w = mask.shape
    return (slice(max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)),
            slice(max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 distance to the mask's edge in pixels: positive inside, negative outside."""
    inside = mask.astype(np.uint8)
    return (cv2.distanceTransform(inside, cv2.DIST_L2, 3)
            - cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3))


def feather(mask: np.ndarray, inset: float, width: float) -> np.ndarray:
    """``(H, W)`` float32 blend weight: 0 outside the mask shrunk by ``inset`` px (grown if negative),
    rising smoothly to 1 over ``width`` px inwards. Exactly 0 where the weight would round to nothing."""
    t = np.clip((signed_distance(mask) - inset) / max(width, 1e-3), 0.0, 1.0)
    weight = t * t * (3 - 2 * t)  # smoothstep: no visible kink where the ramp starts or ends
    weight[weight < 0.02] = 0.0
    return weight


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in 0..255 (any dtype) -> float32 CIE Lab (L 0..100)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """float32 CIE Lab -> float32 RGB in 0..255 (not clipped)."""
    return cv2.cvtColor(np.ascontiguousarray(lab, np.float32), cv2.COLOR_Lab2RGB) * 255.0


def blend(real: np.ndarray, other: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``real + weight * (other - real)`` as uint8; ``weight`` ``(H, W)`` in [0, 1], images ``(H, W, 3)``."""
    out = real.astype(np.float32)
    out += weight[..., None] * (np.asarray(other, np.float32) - out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
