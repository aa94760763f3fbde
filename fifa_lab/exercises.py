"""Self-check exercises for the course notebooks (see COURSE.md).

Each exercise asks a student to write one small function the library already has in some form. Its
check runs the student's function on several freshly drawn cases (random faces, points, masks,
forgeries, confusion matrices), compares every answer with the library's own code, and returns a
:class:`CheckResult`. A wrong answer is matched against the mistakes students typically make, so the
hint names the mistake ("you divided by the column sum: that is precision") rather than only saying
"wrong". Checks never raise: a stub that still returns None reads "not attempted", and an exception in
the student's code is reported with a hint, so a notebook run headlessly with papermill always finishes.

The cases are drawn from ``seed``; without one a fresh seed is drawn on every call, so an answer
hard-coded for one set of cases does not pass, and a failure message names the seed that replays it.

=====================  ==========  ==================================================================
exercise               notebook    reference it is checked against
=====================  ==========  ==================================================================
concept_path_at        01          :func:`fifa_lab.widgets.concept_at` and :func:`~fifa_lab.widgets.concept_path`
parent_mask            01          the parents of :meth:`fifa_lab.fict.ConceptTree.masks`
manipulated_concepts   02          :func:`fifa_lab.fict.coverage.concepts_in_region`
pick_threshold         03          an exhaustive sweep of thresholds against the forgery's ground truth
per_class_recall       05          the rows of :func:`fifa_lab.eval.metrics.confusion_matrix`
most_confused          05          the same matrix, normalised per true class
=====================  ==========  ==================================================================

Model answers, written the way a student would, are in :data:`SOLUTIONS`; :func:`show_solution` prints
one and returns it, which is what the notebooks do when their ``solutions`` parameter is True.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from fifa_lab.annotate.mask import difference_map
from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.eval.metrics import confusion_matrix, mask_iou
from fifa_lab.faces import synth_face
from fifa_lab.faces.face import Face
from fifa_lab.fict.coverage import MIN_COVERAGE, MIN_SHARE, concept_overlaps, concepts_in_region
from fifa_lab.fict.tree import ConceptTree, load_tree
from fifa_lab.forge import forge
from fifa_lab.widgets.region import concept_at, concept_path

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
_MARKS = {PASSED: "✔", FAILED: "✘", NOT_ATTEMPTED: "…"}

CASE_FACE_SIZE = 128  # small faces keep the geometry checks fast; the concepts are the same at any size
THRESHOLD_FACE_SIZE = 256  # JPEG noise depends on the size: the threshold exercise uses the notebooks' size
THRESHOLD_CASES = 5
THRESHOLD_TOLERANCE = 0.1  # a threshold passes within this much mean IoU of the best single threshold
JPEG_QUALITIES = (60, 90)  # the sharing conditions of the threshold exercise (inclusive)
SWAP_METHODS = ("swap_feathered", "swap_poisson")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` is ``"passed"``, ``"failed"`` or ``"not attempted"``.

    In a notebook the result shows as one readable line (mark, exercise, message).
    """

    exercise: str
    status: str
    message: str
    seed: int | None = field(default=None, compare=False)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{_MARKS[self.status]} {self.exercise}: {self.status}. {self.message}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython shows the readable line instead of the dataclass fields."""
        printer.text(str(self))


@dataclass(frozen=True)
class _Case:
    """Keyword arguments for the student's function, a short description, and the right answer."""

    kwargs: dict[str, Any]
    label: str
    expected: Any
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Mistake:
    """A typical wrong answer: ``answer(case)`` computes it; a student's answer equal to it gets ``hint``."""

    hint: str
    answer: Callable[[_Case], Any]


class _BadAnswer(Exception):
    """The student's return value has the wrong form; the message says what form is expected."""


def _draw_seed(seed: int | None) -> int:
    return int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)


def _not_attempted(exercise: str, tip: str) -> CheckResult:
    return CheckResult(exercise, NOT_ATTEMPTED, f"Not attempted yet: fill in `{exercise}` above and run this cell "
                                                f"again. Tip: {tip}")


def _grade(exercise: str, answer: Any, cases: Sequence[_Case], *, normalise: Callable[[Any, _Case], Any],
           same: Callable[[Any, Any], bool], mistakes: Sequence[_Mistake], describe: Callable[[_Case, Any], str],
           on_error: Callable[[_Case, Exception], str | None], tip: str, seed: int) -> CheckResult:
    """Run ``answer`` on the cases in order and turn the first disagreement into a hint.

    ``normalise`` turns a return value into the form ``expected`` has (raising _BadAnswer with a hint);
    ``describe`` says what was wrong on a case when no known mistake matches; ``on_error`` may turn an
    exception of the student's code into a specific hint. Of the known mistakes, the one that explains
    the most wrong answers is named: on a single case two mistakes can give the same answer (an empty
    mask, say), across the cases they rarely do.
    """
    replay = f"(cases from seed={seed}; pass seed={seed} to the check to replay them)"
    if not callable(answer):
        return CheckResult(exercise, FAILED, f"expected the function `{exercise}`, got {type(answer).__name__}.",
                           seed)
    answers: list[Any] = []  # normalised answers of the cases run so far
    stopped: str | None = None  # why the run stopped early: an exception or a malformed answer
    for index, case in enumerate(cases):
        try:
            raw = answer(**case.kwargs)
        except NotImplementedError:
            return _not_attempted(exercise, tip)
        except Exception as exc:  # the student's code may raise anything; report it, never re-raise
            hint = on_error(case, exc) or f"Read the traceback by calling `{exercise}` on this case yourself."
            stopped = f"your function raised {type(exc).__name__}: {exc} on {case.label}. {hint}"
            break
        if raw is None and index == 0:
            return _not_attempted(exercise, tip)
        try:
            answers.append(normalise(raw, case))
        except _BadAnswer as bad:
            stopped = f"on {case.label}: {bad}"
            break

    wrong = [k for k, got in enumerate(answers) if not same(got, cases[k].expected)]
    if not wrong:
        if stopped:
            return CheckResult(exercise, FAILED, f"{stopped} {replay}", seed)
        return CheckResult(exercise, PASSED, f"all {len(cases)} cases agree with fifa_lab's own code.", seed)

    def explained(mistake: _Mistake) -> list[int]:
        """The wrong answers this mistake reproduces exactly."""
        found = []
        for k in wrong:
            typical = mistake.answer(cases[k])
            if typical is not None and not same(typical, cases[k].expected) and same(answers[k], typical):
                found.append(k)
        return found

    best: tuple[_Mistake, list[int]] | None = None
    for mistake in mistakes:  # on a tie the earlier mistake in the list stays
        found = explained(mistake)
        if found and (best is None or len(found) > len(best[1])):
            best = mistake, found
    if best is not None:
        first = cases[best[1][0]]
        return CheckResult(exercise, FAILED, f"on {first.label}: {best[0].hint} {replay}", seed)
    first = cases[wrong[0]]
    return CheckResult(exercise, FAILED, f"on {first.label}: {describe(first, answers[wrong[0]])} {replay}", seed)


# --- notebook 01: the concept at a pixel --------------------------------------------------------------------

def _path_names(tree: ConceptTree, label_map: np.ndarray, row: int, col: int) -> list[str]:
    """Root-to-leaf names of the leaf at ``label_map[row, col]`` read with Python's own indexing rules."""
    return concept_path(tree, tree.leaves()[int(label_map[row, col])].id)


def _reference_path(tree: ConceptTree, label_map: np.ndarray, x: float, y: float) -> list[str]:
    leaf = concept_at(tree, label_map, x, y)
    return [] if leaf is None else concept_path(tree, leaf.id)


def _boundary_pixel(label_map: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel whose diagonal neighbour (row + 1, col + 1) shows another leaf: rounding lands elsewhere there."""
    rows, cols = np.nonzero(label_map[:-1, :-1] != label_map[1:, 1:])
    pick = int(rng.integers(rows.size))
    return int(rows[pick]), int(cols[pick])


def _transposed_pixel(label_map: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel whose mirror across the diagonal shows another leaf: swapping x and y lands elsewhere there."""
    rows, cols = np.nonzero((label_map != label_map.T) & (label_map >= 0) & (label_map.T >= 0))
    pick = int(rng.integers(rows.size))
    return int(rows[pick]), int(cols[pick])


def _concept_path_cases(tree: ConceptTree, rng: np.random.Generator, n_faces: int = 3) -> list[_Case]:
    cases = []
    for face_index in range(n_faces):
        face_seed = int(rng.integers(10**6))
        label_map = synth_face(face_seed, size=CASE_FACE_SIZE).label_map.copy()
        height, width = label_map.shape
        points = []
        if face_index == 0:
            # No concept at all: a patch where the label map holds -1 (as between far-apart shapes).
            # Off the diagonal, so that reading it with x and y swapped lands outside the patch.
            top = int(rng.integers(height // 4, height // 2))
            left = top + width // 6
            label_map[top:top + 6, left:left + 6] = -1
            points += [(left + 2.5, top + 2.5), (-3.2, float(rng.uniform(0, height))),
                       (float(rng.uniform(0, width)), height + 2.6)]
        points += [(float(rng.uniform(0.2, 0.8) * width), float(rng.uniform(0.2, 0.8) * height)) for _ in range(3)]
        row, col = _boundary_pixel(label_map, rng)
        points.append((col + 0.7, row + 0.7))
        row, col = _transposed_pixel(label_map, rng)
        points.append((col + 0.3, row + 0.3))
        for x, y in points:
            inside = 0 <= x < width and 0 <= y < height
            where = f"face seed {face_seed}, (x, y) = ({x:.1f}, {y:.1f})"
            where += "" if inside else f", outside the {width}x{height} image"
            cases.append(_Case({"tree": tree, "label_map": label_map, "x": x, "y": y}, where,
                               _reference_path(tree, label_map, x, y), {"inside": inside}))
    # A random point comes first: a stub returning None there reads "not attempted", not a wrong edge case.
    return cases[3:] + cases[:3]


def _path_mistakes(tree: ConceptTree) -> list[_Mistake]:
    def read(case: _Case, row: int, col: int) -> list[str] | None:
        """The path a student's plain ``label_map[row, col]`` lookup would give, None when it raises."""
        label_map = case.kwargs["label_map"]
        try:
            return _path_names(tree, label_map, row, col)
        except IndexError:
            return None

    def floor(case: _Case) -> tuple[int, int]:
        return int(math.floor(case.kwargs["y"])), int(math.floor(case.kwargs["x"]))

    def ids(case: _Case) -> list[str] | None:
        return [tree.get(name).id for name in case.expected] or None

    # The edge cases first: on their one case a swapped lookup may give the same wrong answer.
    return [
        _Mistake("label -1 means *no concept here* and the answer is []. `tree.leaves()[-1]` silently returns the "
                 "last leaf: test the label before using it as an index.",
                 lambda case: read(case, *floor(case)) if case.context["inside"] and not case.expected else None),
        _Mistake("a point outside the image has no concept: return []. A negative row or column does not raise in "
                 "Python, it counts from the other end of the image; check 0 <= row < height and 0 <= col < width.",
                 lambda case: None if case.context["inside"] else read(case, *floor(case))),
        _Mistake("x is the column and y the row: read `label_map[row, col]` with row = floor(y), col = floor(x); "
                 "you swapped them.", lambda case: read(case, *floor(case)[::-1])),
        _Mistake("pixel (x, y) covers x..x+1 and y..y+1, so round down (`int(np.floor(x))`) instead of rounding to "
                 "the nearest integer.",
                 lambda case: read(case, round(case.kwargs["y"]), round(case.kwargs["x"]))),
        _Mistake("the path goes from the root down to the leaf; yours runs upwards (reverse it, or use "
                 "`tree.path(leaf_id)`).", lambda case: case.expected[::-1]),
        _Mistake("return readable names (`concept.name`), not concept ids.", ids),
        _Mistake("the path starts at the root concept (the whole face); include it.", lambda case: case.expected[1:]),
        _Mistake("return the whole path from the root, not only the leaf.", lambda case: case.expected[-1:]),
    ]


def _path_error_hint(case: _Case, exc: Exception) -> str | None:
    if isinstance(exc, IndexError) and not case.context["inside"]:
        return ("A point outside the image has no concept: return [] when not 0 <= row < height and "
                "0 <= col < width, before indexing the label map.")
    return None


def _as_names(value: Any, case: _Case) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _BadAnswer(f"return a list of concept names from the root to the leaf, got {value!r}.")
    names = list(value)
    if any(not isinstance(name, str) for name in names):
        raise _BadAnswer("return names as strings (`concept.name`), not Concept objects or numbers; "
                         f"got {names!r}.")
    return names


def check_concept_path_at(answer: Callable[..., Any], seed: int | None = None) -> CheckResult:
    """Check ``answer(tree, label_map, x, y) -> [names from the root to the leaf at pixel (x, y)]``.

    The answer is ``[]`` where the label map has no concept (-1) and outside the image. Cases: random
    points on three random synthetic faces, including points near a leaf's border, a -1 patch and
    points outside the image.
    """
    seed = _draw_seed(seed)
    tree = load_tree()
    return _grade("concept_path_at", answer, _concept_path_cases(tree, np.random.default_rng(seed)),
                  normalise=lambda value, case: [] if value is None else _as_names(value, case),
                  same=lambda a, b: a == b, mistakes=_path_mistakes(tree),
                  describe=lambda case, got: f"you returned {got}, the concept there is {case.expected or '(none)'}.",
                  on_error=_path_error_hint, seed=seed,
                  tip="`label_map[row, col]` is the index of a leaf in `tree.leaves()`; `tree.path(id)` lists the "
                      "concepts from the root down to it.")


# --- notebook 01: a parent is the union of its children -----------------------------------------------------

def _parent_mask_cases(tree: ConceptTree, rng: np.random.Generator, n_faces: int = 2) -> list[_Case]:
    parents = [c.id for c in tree if not tree.is_leaf(c.id) and c.id != tree.root]
    # Regions whose children are parents themselves (eyes -> left eye -> iris): direct children are not enough.
    nested = [p for p in parents if any(not tree.is_leaf(c.id) for c in tree.children(p))]
    # Parents with some leaf children and some parent children (mouth: philtrum, lips, interior).
    mixed = [p for p in nested if any(tree.is_leaf(c.id) for c in tree.children(p))]
    leaves = [c.id for c in tree.leaves()]
    cases = []
    for _ in range(n_faces):
        face_seed = int(rng.integers(10**6))
        face = synth_face(face_seed, size=CASE_FACE_SIZE)
        masks = tree.masks(face.landmarks, face.size, face.attributes)
        leaf_masks = {leaf: masks[leaf] for leaf in leaves}
        picks = [rng.choice(nested), rng.choice(mixed) if mixed else rng.choice(parents), rng.choice(parents),
                 rng.choice(leaves)]
        for concept_id in dict.fromkeys(str(p) for p in picks):  # unique, in order
            cases.append(_Case({"tree": tree, "leaf_masks": leaf_masks, "concept_id": concept_id},
                               f"face seed {face_seed}, concept {concept_id!r}", masks[concept_id]))
    return cases


def _parent_mistakes(tree: ConceptTree) -> list[_Mistake]:
    def combine(case: _Case, ids: list[str], how: Callable[..., np.ndarray]) -> np.ndarray | None:
        masks = [case.kwargs["leaf_masks"][i] for i in ids]
        return how(np.stack(masks), axis=0) if masks else np.zeros_like(case.expected)

    def leaf_children(case: _Case) -> np.ndarray | None:
        concept_id = case.kwargs["concept_id"]
        if tree.is_leaf(concept_id):
            return None
        return combine(case, [c.id for c in tree.children(concept_id) if tree.is_leaf(c.id)], np.any)

    return [
        _Mistake("a parent is the *union* of its children (any of them covers the pixel: `|` or np.any), not the "
                 "intersection.", lambda case: combine(case, [c.id for c in tree.leaves(case.kwargs["concept_id"])],
                                                       np.all)),
        _Mistake("you skipped the children that are parents themselves; go down to every leaf below the concept "
                 "(recurse, or use `tree.leaves(concept_id)`).", leaf_children),
        _Mistake("a leaf has no children: its mask is its own (`tree.leaves(leaf_id)` is `[leaf]`).",
                 lambda case: np.zeros_like(case.expected) if tree.is_leaf(case.kwargs["concept_id"]) else None),
    ]


def _parent_error_hint(tree: ConceptTree) -> Callable[[_Case, Exception], str | None]:
    def hint(case: _Case, exc: Exception) -> str | None:
        missing = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
        if isinstance(missing, str) and missing in tree and not tree.is_leaf(missing):
            return (f"`leaf_masks` holds leaves only, and {missing!r} is a parent: a child can be a parent itself, "
                    "so recurse down to the leaves (or use `tree.leaves(concept_id)`).")
        return None

    return hint


def _as_mask(value: Any, case: _Case) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != case.expected.shape:
        raise _BadAnswer(f"return one (H, W) mask of the image's size {case.expected.shape}, got shape {array.shape}.")
    return array.astype(bool)


def check_parent_mask(answer: Callable[..., Any], seed: int | None = None) -> CheckResult:
    """Check ``answer(tree, leaf_masks, concept_id) -> (H, W) bool`` against the tree's own parent masks.

    ``leaf_masks`` maps every *leaf* id to its mask; the answer for a parent is the union of the leaves
    below it, for a leaf its own mask. Cases: nested regions, mixed parents, random parents and leaves
    on two random faces.
    """
    seed = _draw_seed(seed)
    tree = load_tree()

    def describe(case: _Case, got: np.ndarray) -> str:
        missing, extra = int((case.expected & ~got).sum()), int((got & ~case.expected).sum())
        return (f"your mask misses {missing} and adds {extra} pixels (IoU {mask_iou(got, case.expected):.2f} with "
                f"the tree's own mask).")

    return _grade("parent_mask", answer, _parent_mask_cases(tree, np.random.default_rng(seed)),
                  normalise=_as_mask, same=lambda a, b: a is not None and np.array_equal(a, b),
                  mistakes=_parent_mistakes(tree), describe=describe, on_error=_parent_error_hint(tree), seed=seed,
                  tip="`tree.children(id)` lists a concept's children; a child may have children of its own.")


# --- notebook 02: the concept-coverage rule ------------------------------------------------------------------

def _ellipse_mask(shape: tuple[int, int], centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    axes = (int(rng.integers(3, shape[1] // 4)), int(rng.integers(3, shape[0] // 4)))
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def _patch_inside(label_map: np.ndarray, leaf: int, pixels: float) -> np.ndarray:
    """Exactly ``round(pixels)`` pixels of the leaf: those nearest to its deepest point (a compact patch)."""
    region = label_map == leaf
    depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    rows, cols = np.nonzero(region)
    nearest = np.argsort((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2, kind="stable")[:int(round(pixels))]
    patch = np.zeros(label_map.shape, bool)
    patch[rows[nearest], cols[nearest]] = True
    return patch


def _blob_inside_large_concept(label_map: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A patch inside one of the largest visible leaves covering 15% of it: the whole mask lies in the leaf
    (share 1) while its coverage stays below the default 0.25. Returns the mask and the leaf index."""
    areas = np.bincount(label_map[label_map >= 0].ravel())
    leaf = int(rng.choice(np.argsort(areas)[-5:]))
    return _patch_inside(label_map, leaf, 0.15 * areas[leaf]), leaf


PATCH_THRESHOLDS = {"min_coverage": 0.5, "min_share": 0.2}


def _concept_with_patches(label_map: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int]] | None:
    """All of one leaf A plus a patch inside a leaf B and one inside a leaf C, sized so that under
    :data:`PATCH_THRESHOLDS` every wrong rule disagrees with the right one:

    ======  ========  =====  ==================================================================
    leaf    coverage  share  counts under
    ======  ========  =====  ==================================================================
    A       1         ~0.6   every rule
    B       < 0.2     ~0.25  the rule (share), not coverage alone, not swapped, not "and"
    C       0.2-0.25  ~0.14  no rule, but the fixed 0.25/0.1 thresholds and the swapped rule
    ======  ========  =====  ==================================================================

    Returns the mask and the leaf indices (A, B, C), or None when the drawn leaves do not fit.
    """
    areas = np.bincount(label_map[label_map >= 0].ravel())
    leaves = np.flatnonzero(areas >= 50)
    c = int(rng.choice(leaves))
    patch_c = _patch_inside(label_map, c, 0.22 * areas[c])
    total = patch_c.sum() / 0.14  # the mask's size that gives C a share of 0.14
    candidates = [k for k in leaves if k != c and 0.45 * total <= areas[k] <= 0.75 * total]
    if not candidates:
        return None
    a = int(rng.choice(candidates))
    total = (areas[a] + patch_c.sum()) / 0.75  # A and C take 75% of the mask, B's patch the rest
    candidates = [k for k in leaves if k not in (a, c) and areas[k] > 0.25 * total / 0.18]
    if not candidates:
        return None
    b = int(rng.choice(candidates))
    return (label_map == a) | _patch_inside(label_map, b, 0.25 * total) | patch_c, [a, b, c]


def _patch_case_holds(tree: ConceptTree, label_map: np.ndarray, mask: np.ndarray, leaves: list[int]) -> bool:
    """Whether the patches have the coverage and share :func:`_concept_with_patches` aims at (a check, so a
    change there cannot silently weaken the exercise)."""
    hits = {h.concept: h for h in concept_overlaps(tree, label_map, mask)}
    a, b, c = (hits.get(tree.leaves()[k].id) for k in leaves)
    return (len(hits) == 3 and a is not None and b is not None and c is not None and a.coverage == 1
            and b.coverage < 0.2 and 0.21 <= b.share < 0.5 and 0.2 <= c.coverage < 0.25 and 0.1 <= c.share < 0.19)


_COVERAGE_FORGERIES = (("FE", "iris_colour"), ("FE", "lip_colour"), ("FR", "mouth_open"), ("FE", "hair_colour"),
                       ("EFS", "background_warp"))


def _coverage_mask(tree: ConceptTree, kind: tuple[str | None, str], rng: np.random.Generator,
                   ) -> tuple[Face, np.ndarray, str]:
    """A random face and a mask of one kind on it: a forgery's (class, method), ``blob``, ``patches`` or
    ``ellipse``; a face the kind does not fit (mouth_open on an open mouth) is replaced by another."""
    forgery_class, method = kind
    while True:
        face_seed = int(rng.integers(10**6))
        face = synth_face(face_seed, size=CASE_FACE_SIZE)
        where = f"face seed {face_seed}"
        if method == "blob":
            blob, leaf = _blob_inside_large_concept(face.label_map, rng)
            return face, blob, f"{where}, a small mask inside {tree.leaves()[leaf].name}"
        elif method == "patches":
            patches = _concept_with_patches(face.label_map, rng)
            if patches is not None and _patch_case_holds(tree, face.label_map, *patches):
                a, b, c = (tree.leaves()[k].name for k in patches[1])
                return face, patches[0], f"{where}, a mask over all of {a} and patches inside {b} and {c}"
        elif method == "ellipse":
            centre = face.landmarks[int(rng.integers(68))]
            return face, _ellipse_mask(face.size, centre, rng), f"{where}, an ellipse mask"
        else:
            try:
                return face, forge(face, forgery_class, method, seed=int(rng.integers(10**6))).mask, \
                    f"{where}, the mask of a {method} fake"
            except ValueError:
                pass


def _coverage_cases(tree: ConceptTree, rng: np.random.Generator) -> list[_Case]:
    # The first three masks tell the wrong rules apart on every draw: a face swap covers small concepts
    # (an iris) entirely while each holds a tiny share of the mask; a small mask inside a large concept
    # is all share and little coverage; the patches (see _concept_with_patches) separate the rest.
    # Random forgeries and an ellipse follow with random thresholds.
    picks = rng.choice(len(_COVERAGE_FORGERIES), 2, replace=False)
    kinds = [("FS", "swap_feathered"), (None, "blob"), (None, "patches"),
             *(_COVERAGE_FORGERIES[int(k)] for k in picks), (None, "ellipse")]
    cases = []
    for kind in kinds:
        face, mask, label = _coverage_mask(tree, kind, rng)
        thresholds: dict[str, float] = {}
        if kind[1] == "patches":
            thresholds = dict(PATCH_THRESHOLDS)
        elif kind[1] not in ("swap_feathered", "blob"):
            thresholds = {"min_coverage": round(float(rng.uniform(0.1, 0.6)), 2),
                          "min_share": round(float(rng.uniform(0.03, 0.3)), 2)}
        expected = {h.concept for h in concepts_in_region(tree, face.label_map, mask, **thresholds)}
        label += f", {thresholds}" if thresholds else ", default thresholds"
        cases.append(_Case({"tree": tree, "label_map": face.label_map, "mask": mask, **thresholds}, label, expected,
                           {"hits": concept_overlaps(tree, face.label_map, mask), "thresholds": thresholds}))
    return cases


def _coverage_mistakes() -> list[_Mistake]:
    def rule(keep: Callable[[Any, float, float], bool]) -> Callable[[_Case], set[str]]:
        def answer(case: _Case) -> set[str]:
            cov = case.context["thresholds"].get("min_coverage", MIN_COVERAGE)
            share = case.context["thresholds"].get("min_share", MIN_SHARE)
            return {h.concept for h in case.context["hits"] if keep(h, cov, share)}

        return answer

    return [
        _Mistake("right with the default thresholds, but you ignore `min_coverage` and `min_share` when they are "
                 "passed: compare with the arguments, not with the numbers 0.25 and 0.1.",
                 lambda case: {h.concept for h in case.context["hits"]
                               if h.coverage >= MIN_COVERAGE or h.share >= MIN_SHARE}),
        _Mistake("coverage and share are swapped: coverage = overlap / the concept's visible pixels, compared with "
                 "min_coverage; share = overlap / the mask's pixels, compared with min_share.",
                 rule(lambda h, cov, share: h.share >= cov or h.coverage >= share)),
        _Mistake("you keep a concept only when the mask covers enough *of the concept* (coverage). A large concept "
                 "partly under the mask (a cheek under a blending seam) counts too when enough *of the mask* lies in "
                 "it: add `or share >= min_share`, with share = overlap / the mask's pixels.",
                 rule(lambda h, cov, share: h.coverage >= cov)),
        _Mistake("you keep a concept only when enough *of the mask* falls in it (share). A small concept entirely "
                 "manipulated (an iris inside a swapped face) holds little of a large mask but is fully covered: add "
                 "`or coverage >= min_coverage`.", rule(lambda h, cov, share: h.share >= share)),
        _Mistake("you require both conditions; the rule keeps a concept when *either* holds (coverage OR share).",
                 rule(lambda h, cov, share: h.coverage >= cov and h.share >= share)),
    ]


def _as_concept_ids(tree: ConceptTree) -> Callable[[Any, _Case], set[str]]:
    def normalise(value: Any, case: _Case) -> set[str]:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise _BadAnswer(f"return a list or set of concept ids, got {value!r}.")
        # Concepts and ConceptHits are accepted as their ids: the question is which concepts, not the type.
        ids = {getattr(item, "concept", getattr(item, "id", item)) for item in value}
        unknown = sorted(str(i) for i in ids if not isinstance(i, str) or i not in tree)
        if unknown:
            raise _BadAnswer(f"{unknown[:3]} are not concept ids of the tree; return ids such as 'eye_left_iris'.")
        if any(i != tree.get(i).id for i in ids):
            raise _BadAnswer("return concept ids (e.g. 'eye_left_iris'), not readable names (e.g. 'left iris'): "
                             "`tree.leaves()[k].id`.")
        parents = sorted(i for i in ids if not tree.is_leaf(i))
        if parents:
            raise _BadAnswer(f"only leaves (atomic concepts) count; {parents[:3]} are parents. The label map holds "
                             "leaf indices only.")
        return ids

    return normalise


def check_coverage_rule(answer: Callable[..., Any], seed: int | None = None) -> CheckResult:
    """Check ``answer(tree, label_map, mask, min_coverage=0.25, min_share=0.1) -> leaf ids`` (any order).

    The rule (:mod:`fifa_lab.fict.coverage`): a leaf counts when the mask covers at least
    ``min_coverage`` of the leaf's visible pixels, or at least ``min_share`` of the mask lies in the leaf.
    Cases: masks of real forgeries (always a face swap) and random ellipses on random faces, with the
    default and with random thresholds.
    """
    seed = _draw_seed(seed)
    tree = load_tree()

    def describe(case: _Case, got: set[str]) -> str:
        hits = {h.concept: h for h in case.context["hits"]}

        def show(ids: set[str]) -> str:
            return ", ".join(f"{tree.get(i).name} (coverage {hits[i].coverage:.2f}, share {hits[i].share:.2f})"
                             if i in hits else f"{tree.get(i).name} (not under the mask)" for i in sorted(ids)[:4])

        parts = [f"missing {show(case.expected - got)}" if case.expected - got else "",
                 f"extra {show(got - case.expected)}" if got - case.expected else ""]
        return "; ".join(p for p in parts if p) + "."

    return _grade("manipulated_concepts", answer, _coverage_cases(tree, np.random.default_rng(seed)),
                  normalise=_as_concept_ids(tree), same=lambda a, b: a == b, mistakes=_coverage_mistakes(),
                  describe=describe, on_error=lambda case, exc: None, seed=seed,
                  tip="a leaf's visible pixels are `label_map == k` for the leaf `tree.leaves()[k]`; the overlap is "
                      "`(mask & visible).sum()`.")


# --- notebook 03: the artifact threshold ---------------------------------------------------------------------

@dataclass(frozen=True)
class _ThresholdCase:
    """A JPEG-shared fake: its RGB difference to the real image, the true mask and the IoU of every threshold."""

    label: str
    post: str
    diff: np.ndarray
    truth: np.ndarray
    ious: np.ndarray  # ious[t] = IoU(diff > t, truth) for the grey levels t = 0..255


def _iou_per_threshold(diff: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of ``diff > t`` with ``truth`` for every grey level t = 0..255, from sorted values (fast, exact)."""
    levels = np.arange(256)
    above = diff.size - np.searchsorted(np.sort(diff.ravel()), levels, side="right")
    inside = int(truth.sum()) - np.searchsorted(np.sort(diff[truth]), levels, side="right")
    union = int(truth.sum()) + above - inside
    return np.where(union > 0, inside / np.maximum(union, 1), 1.0)


def _threshold_case(rng: np.random.Generator, post: list[dict[str, Any]], what: str) -> _ThresholdCase:
    face_seed = int(rng.integers(10**6))
    method = SWAP_METHODS[int(rng.integers(len(SWAP_METHODS)))]
    fake = forge(synth_face(face_seed, size=THRESHOLD_FACE_SIZE), "FS", method, seed=int(rng.integers(10**6)),
                 post=post)
    diff = difference_map(fake.fake, fake.real, kind="abs_rgb")
    return _ThresholdCase(f"face seed {face_seed}, {method}, {what}", what, diff, fake.mask,
                          _iou_per_threshold(diff, fake.mask))


def _threshold_of(answer: Any, diff: np.ndarray) -> float | None:
    """The student's threshold for one map: the number itself, or what their function returns."""
    value = answer(diff) if callable(answer) else answer
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise _BadAnswer(f"a threshold is one number (grey levels 0..255), got {value!r}.") from None
    if not math.isfinite(value):
        raise _BadAnswer(f"a threshold must be a finite number, got {value!r}.")
    return value


def check_artifact_threshold(answer: float | Callable[[np.ndarray], float], seed: int | None = None) -> CheckResult:
    """Check a threshold for the RGB difference map of JPEG-shared face swaps.

    ``answer`` is a number of grey levels, or ``pick_threshold(diff) -> number`` for an ``(H, W)``
    difference map (:func:`fifa_lab.annotate.mask.difference_map` with ``kind="abs_rgb"``); the mask is
    ``diff > threshold``. It is judged on several fresh face swaps saved as JPEG (quality 60-90): the
    mean IoU with the forgeries' ground-truth masks must come within 0.1 of the best single threshold's.
    A hint says whether the threshold is too low (JPEG noise enters the mask) or too high (the faint
    parts of the change drop out). A passing answer is also shown on a clean and on a noisier fake.
    """
    exercise = "pick_threshold"
    seed = _draw_seed(seed)
    rng = np.random.default_rng(seed)
    replay = f"(cases from seed={seed}; pass seed={seed} to the check to replay them)"
    cases = [_threshold_case(rng, [{"op": "jpeg", "quality": q}], f"JPEG quality {q}")
             for q in rng.integers(JPEG_QUALITIES[0], JPEG_QUALITIES[1] + 1, THRESHOLD_CASES).tolist()]
    try:
        thresholds = [_threshold_of(answer, case.diff) for case in cases]
    except NotImplementedError:
        thresholds = [None]
    except _BadAnswer as bad:
        return CheckResult(exercise, FAILED, f"{bad} {replay}", seed)
    except Exception as exc:  # the student's code may raise anything; report it, never re-raise
        return CheckResult(exercise, FAILED, f"your function raised {type(exc).__name__}: {exc}. {replay}", seed)
    if thresholds[0] is None:
        return _not_attempted(exercise, "look at `diff` outside the manipulated region (`diff[~fake.mask]`): "
                                        "how high does the JPEG noise reach?")
    if any(t is None for t in thresholds):
        return CheckResult(exercise, FAILED, f"your function returned None for some maps; return a number. {replay}",
                           seed)

    ious = np.array([mask_iou(case.diff > t, case.truth) for case, t in zip(cases, thresholds)])
    mean_curve = np.mean([case.ious for case in cases], axis=0)
    best = int(np.argmax(mean_curve))
    verdict = (f"mean IoU with the ground truth {ious.mean():.2f} over {len(cases)} JPEG-shared face swaps vs "
               f"{mean_curve[best]:.2f} at the best single threshold, {best}")
    if ious.mean() >= mean_curve[best] - THRESHOLD_TOLERANCE:
        return CheckResult(exercise, PASSED, f"{verdict}. {_threshold_outlook(answer, rng)}", seed)

    # Judge the direction where the answer does worst relative to that case's own best threshold.
    worst = int(np.argmax([case.ious.max() - iou for case, iou in zip(cases, ious)]))
    case, threshold = cases[worst], thresholds[worst]
    mask = case.diff > threshold
    if threshold < int(np.argmax(case.ious)):
        detail = (f"threshold too low: the mask includes JPEG noise, {100 * (mask & ~case.truth).mean():.1f}% of "
                  f"the image outside the manipulated region is marked (on {case.label}, threshold {threshold:g})")
    else:
        detail = (f"threshold too high: the faint parts of the change (the feathered edge, small colour shifts) "
                  f"drop out, the mask finds only {100 * (mask & case.truth).sum() / case.truth.sum():.0f}% of the "
                  f"manipulated pixels (on {case.label}, threshold {threshold:g})")
    return CheckResult(exercise, FAILED, f"{detail}; {verdict}. {replay}", seed)


def _threshold_outlook(answer: Any, rng: np.random.Generator) -> str:
    """How the passing answer fares on a clean fake and a noisier one, against each one's best threshold."""
    others = [_threshold_case(rng, [], "no post-processing"),
              _threshold_case(rng, [{"op": "noise", "sigma": 8.0, "seed": int(rng.integers(1000))},
                                    {"op": "jpeg", "quality": 70}], "sensor noise (sigma 8) then JPEG 70")]
    parts = []
    for case in others:
        try:
            threshold = _threshold_of(answer, case.diff)
        except Exception:  # the check has passed; a function that fails on these maps just goes unreported
            continue
        if threshold is not None:
            parts.append(f"{case.post}: IoU {mask_iou(case.diff > threshold, case.truth):.2f} vs "
                         f"{case.ious.max():.2f} at threshold {int(np.argmax(case.ious))}")
    if not parts:
        return ""
    return ("The same answer elsewhere: " + "; ".join(parts) + ". One fixed number cannot suit every sharing "
            "condition, which is why the annotator's adaptive rule measures each image's noise first.")


# --- notebook 05: reading a confusion matrix -----------------------------------------------------------------

def _simulated_matrix(rng: np.random.Generator, labels: list[str], empty_class: str | None = None) -> np.ndarray:
    """A confusion matrix of a simulated classifier, built by the library's own ``confusion_matrix``.

    Classes have very different sizes (as forgery datasets do); ``empty_class`` gets no true images.
    """
    y_true, y_pred = [], []
    for k, label in enumerate(labels):
        count = 0 if label == empty_class else int(rng.integers(4, 80))
        probabilities = rng.dirichlet(np.full(len(labels), 0.6)) * float(rng.uniform(0.15, 0.6))
        probabilities[k] += 1 - probabilities.sum()
        y_true += [label] * count
        y_pred += [labels[j] for j in rng.choice(len(labels), count, p=probabilities)]
    return confusion_matrix(y_true, y_pred, labels)


def _random_labels(rng: np.random.Generator) -> list[str]:
    """3 to 5 forgery classes in a random order, so position-based answers fail."""
    return [str(c) for c in rng.permutation(FORGERY_CLASSES)[:int(rng.integers(3, len(FORGERY_CLASSES) + 1))]]


def _row_rates(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a true class given each answer); NaN rows for absent classes."""
    rows = matrix.sum(axis=1, keepdims=True)
    return np.where(rows > 0, matrix / np.maximum(rows, 1), np.nan)


def _recall_cases(rng: np.random.Generator, n_cases: int = 4) -> list[_Case]:
    cases = []
    for index in range(n_cases):
        labels = _random_labels(rng)
        # The last case has a class with no true images at all, as a small test split can have.
        empty = labels[int(rng.integers(len(labels)))] if index == n_cases - 1 else None
        matrix = _simulated_matrix(rng, labels, empty)
        expected = dict(zip(labels, np.diag(_row_rates(matrix)).tolist()))
        cases.append(_Case({"matrix": matrix, "labels": labels}, f"the matrix {matrix.tolist()} with labels {labels}",
                           expected))
    return cases


def _same_rates(a: Mapping[str, float] | None, b: Mapping[str, float]) -> bool:
    if a is None or set(a) != set(b):
        return False
    return all((math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], abs_tol=1e-9) for k in b)


def _recall_mistakes() -> list[_Mistake]:
    def per_label(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[_Case], dict[str, float]]:
        def answer(case: _Case) -> dict[str, float]:
            with np.errstate(divide="ignore", invalid="ignore"):
                return dict(zip(case.kwargs["labels"], values(case.kwargs["matrix"].astype(float)).tolist()))

        return answer

    def zero_for_empty(case: _Case) -> dict[str, float]:
        return {k: 0.0 if math.isnan(v) else v for k, v in case.expected.items()}

    return [
        _Mistake("you divided by the column sum: that is *precision* (of the images answered X, how many really are "
                 "X). Recall divides by the row sum: of the images that truly are X, how many were answered X. Rows "
                 "are the truth.", per_label(lambda m: np.diag(m) / m.sum(axis=0))),
        _Mistake("those are counts of correct answers; recall is a rate: divide by the number of true images of the "
                 "class (its row sum).", per_label(np.diag)),
        _Mistake("you divided by all images; recall divides by the images of that one class (its row sum).",
                 per_label(lambda m: np.diag(m) / m.sum())),
        _Mistake("a class with no true images has an undefined recall (0 / 0): return nan, as fifa_lab.eval.metrics "
                 "does for undefined values, not 0.", zero_for_empty),
    ]


def _as_rates(value: Any, case: _Case) -> dict[str, float]:
    labels = case.kwargs["labels"]
    if isinstance(value, Mapping):
        rates = dict(value)
    elif isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str) and len(value) == len(labels):
        rates = dict(zip(labels, value))
    else:
        raise _BadAnswer(f"return {{label: recall}} (or one recall per label, in the labels' order), got {value!r}.")
    if set(rates) != set(labels):
        raise _BadAnswer(f"return one recall for each label {labels}, got keys {sorted(map(str, rates))}.")
    try:
        return {str(k): math.nan if v is None else float(v) for k, v in rates.items()}
    except (TypeError, ValueError):
        raise _BadAnswer(f"recalls are numbers (nan where undefined), got {rates!r}.") from None


def check_per_class_recall(answer: Callable[..., Any], seed: int | None = None) -> CheckResult:
    """Check ``answer(matrix, labels) -> {label: recall}`` for confusion matrices with rows = truth.

    Recall of a class = correct answers / true images of the class; nan for a class with no true images.
    Cases: simulated classifiers on 3-5 forgery classes in a random order and of very different sizes.
    """
    seed = _draw_seed(seed)

    def describe(case: _Case, got: dict[str, float]) -> str:
        wrong = [k for k in case.expected if not _same_rates({k: got[k]}, {k: case.expected[k]})]
        return "; ".join(f"recall of {k} is {case.expected[k]:.3f}, you gave {got[k]:.3f}" for k in wrong[:3]) + "."

    return _grade("per_class_recall", answer, _recall_cases(np.random.default_rng(seed)), normalise=_as_rates,
                  same=_same_rates, mistakes=_recall_mistakes(), describe=describe, on_error=lambda case, exc: None,
                  seed=seed, tip="rows are the true class, columns the answer; the diagonal holds the correct answers.")


def _confused_pair(rates: np.ndarray, labels: list[str]) -> tuple[str, str]:
    """The off-diagonal cell with the largest value (NaN rows ignored), as (row label, column label)."""
    off = np.where(np.eye(len(labels), dtype=bool), -np.inf, np.nan_to_num(rates, nan=-np.inf))
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    return labels[i], labels[j]


def _has_clear_maximum(values: np.ndarray, margin: float) -> bool:
    off = np.sort(values[~np.eye(len(values), dtype=bool)])
    return bool(off[-1] - off[-2] >= margin)


def _confused_cases(rng: np.random.Generator, n_cases: int = 4) -> list[_Case]:
    """Matrices with one clear answer; among them one where raw counts point to another cell (class
    imbalance) and one where column shares do, so both readings fail and each gets its own hint."""
    cases: list[_Case] = []
    told: set[str] = set()  # readings that some case already tells apart
    while len(cases) < n_cases:
        labels = _random_labels(rng)
        matrix = _simulated_matrix(rng, labels)
        rates = _row_rates(matrix)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns = np.nan_to_num(matrix / matrix.sum(axis=0, keepdims=True))
        if not all(_has_clear_maximum(values, margin) for values, margin in
                   ((rates, 0.03), (matrix.astype(float), 1), (columns, 0.01))):
            continue
        expected = _confused_pair(rates, labels)
        readings = {"counts": _confused_pair(matrix.astype(float), labels), "columns": _confused_pair(columns, labels)}
        # A case tells a reading apart when it points to neither the answer, the answer reversed, nor the other reading.
        tells = {name for name, pair in readings.items()
                 if pair not in (expected, expected[::-1]) and list(readings.values()).count(pair) == 1}
        missing = set(readings) - told
        if n_cases - len(cases) <= len(missing) and not tells & missing:
            continue  # the last slots are kept for cases that tell the typical mistakes apart
        told |= tells
        cases.append(_Case({"matrix": matrix, "labels": labels}, f"the matrix {matrix.tolist()} with labels {labels}",
                           expected))
    return cases


def _confused_mistakes() -> list[_Mistake]:
    def columns(case: _Case) -> tuple[str, str]:
        matrix = case.kwargs["matrix"].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return _confused_pair(np.nan_to_num(matrix / matrix.sum(axis=0, keepdims=True)), case.kwargs["labels"])

    return [
        _Mistake("the order is (true class, answer): rows are the truth, columns the answer; yours is reversed.",
                 lambda case: case.expected[::-1]),
        _Mistake("you compared raw counts. Classes differ in size, so a big class has big counts everywhere; compare "
                 "shares of each true class instead (divide every row by its sum).",
                 lambda case: _confused_pair(case.kwargs["matrix"].astype(float), case.kwargs["labels"])),
        _Mistake("you divided by column sums (of the answers B, the share that truly were A); the question is which "
                 "true class is most often answered as another: divide every row by its sum.", columns),
    ]


def _as_pair(value: Any, case: _Case) -> tuple[str, str]:
    labels = case.kwargs["labels"]
    if isinstance(value, str) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        raise _BadAnswer(f"return a pair (true label, predicted label), got {value!r}.")
    pair = tuple(value)
    if not all(isinstance(v, str) and v in labels for v in pair):
        raise _BadAnswer(f"return the labels themselves (e.g. {labels[0]!r}), not indices; got {pair!r}.")
    if pair[0] == pair[1]:
        raise _BadAnswer(f"({pair[0]!r}, {pair[1]!r}) is on the diagonal, the correct answers; confusion is off the "
                         "diagonal (true class != answer).")
    return pair  # type: ignore[return-value]


def check_most_confused(answer: Callable[..., Any], seed: int | None = None) -> CheckResult:
    """Check ``answer(matrix, labels) -> (true label, predicted label)`` of the worst confusion.

    The worst confusion is the off-diagonal cell with the largest share of its row: the true class most
    often answered as one particular other class. Cases include matrices where raw counts or column
    shares point to another cell, so those readings fail.
    """
    seed = _draw_seed(seed)

    def describe(case: _Case, got: tuple[str, str]) -> str:
        labels, rates = case.kwargs["labels"], _row_rates(case.kwargs["matrix"])
        share = {(a, b): rates[labels.index(a), labels.index(b)] for a, b in (got, case.expected)}
        return (f"{share[case.expected]:.0%} of the true {case.expected[0]} images were answered "
                f"{case.expected[1]}, but only {share[got]:.0%} of the true {got[0]} images were answered {got[1]}.")

    return _grade("most_confused", answer, _confused_cases(np.random.default_rng(seed)), normalise=_as_pair,
                  same=lambda a, b: tuple(a) == tuple(b), mistakes=_confused_mistakes(), describe=describe,
                  on_error=lambda case, exc: None, seed=seed,
                  tip="look off the diagonal, and compare each cell with the size of its true class.")


# --- model answers ------------------------------------------------------------------------------------------

def concept_path_at(tree, label_map, x, y):
    """Names from the root down to the leaf at pixel (x, y); [] where there is no concept."""
    row, col = int(np.floor(y)), int(np.floor(x))  # x is the column, y the row
    height, width = label_map.shape
    if not (0 <= row < height and 0 <= col < width):
        return []
    label = int(label_map[row, col])
    if label < 0:  # -1: no concept here (and tree.leaves()[-1] would be the last leaf)
        return []
    leaf = tree.leaves()[label]
    return [concept.name for concept in tree.path(leaf.id)]


def parent_mask(tree, leaf_masks, concept_id):
    """A concept's mask from the leaf masks: the union of every leaf below it (a leaf: its own mask)."""
    mask = np.zeros_like(next(iter(leaf_masks.values())), dtype=bool)
    for leaf in tree.leaves(concept_id):
        mask |= leaf_masks[leaf.id]
    return mask


def manipulated_concepts(tree, label_map, mask, min_coverage=MIN_COVERAGE, min_share=MIN_SHARE):
    """Leaf ids the mask touches: coverage (of the leaf's visible pixels) or share (of the mask) high enough."""
    kept = []
    for index, leaf in enumerate(tree.leaves()):
        visible = label_map == index
        overlap = np.count_nonzero(mask & visible)
        if overlap == 0:
            continue
        coverage = overlap / np.count_nonzero(visible)
        share = overlap / np.count_nonzero(mask)
        if coverage >= min_coverage or share >= min_share:
            kept.append(leaf.id)
    return kept


def pick_threshold(diff):
    """A grey level above the JPEG noise of quality 60-90 (a few grey levels) and below most of a face swap's
    changes; tuned on a few examples, which is all a fixed threshold can be."""
    return 12


def per_class_recall(matrix, labels):
    """{label: recall}: the diagonal over the row sums (rows are the truth); nan for a class without images."""
    matrix = np.asarray(matrix, dtype=float)
    true_images = matrix.sum(axis=1)
    return {label: matrix[k, k] / true_images[k] if true_images[k] > 0 else float("nan")
            for k, label in enumerate(labels)}


def most_confused(matrix, labels):
    """(true label, answer) of the off-diagonal cell holding the largest share of its true class."""
    matrix = np.asarray(matrix, dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # an empty row stays 0
    np.fill_diagonal(shares, -1)  # correct answers are not confusions
    i, j = np.unravel_index(np.argmax(shares), shares.shape)
    return labels[i], labels[j]


SOLUTIONS: dict[str, Callable[..., Any]] = {fn.__name__: fn for fn in (
    concept_path_at, parent_mask, manipulated_concepts, pick_threshold, per_class_recall, most_confused)}
"""Exercise name -> model answer (what ``solutions=True`` fills in)."""


def show_solution(name: str) -> Callable[..., Any]:
    """Print the model answer of exercise ``name`` and return it (a teacher's run with ``solutions=True``)."""
    if name not in SOLUTIONS:
        raise KeyError(f"no exercise {name!r}; exercises: {', '.join(SOLUTIONS)}")
    print(f"Model answer (solutions=True):\n\n{inspect.getsource(SOLUTIONS[name])}")
    return SOLUTIONS[name]
