"""The notebooks' self-check exercises: model answers pass, typical mistakes get their own hint, constant
answers fail, unfinished stubs read "not attempted", and a teacher's notebook run shows the answers passing."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from fifa_lab import exercises
from fifa_lab.exercises import (
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    SOLUTIONS,
    check_artifact_threshold,
    check_concept_path_at,
    check_coverage_rule,
    check_most_confused,
    check_parent_mask,
    check_per_class_recall,
)
from fifa_lab.pipeline import NOTEBOOK_DIR, _declared_parameters
from notebook_runner import run_smoke, untrained_run

SEEDS = (0, 1, 2, 3)

CHECKS = {
    "concept_path_at": check_concept_path_at,
    "parent_mask": check_parent_mask,
    "manipulated_concepts": check_coverage_rule,
    "pick_threshold": check_artifact_threshold,
    "per_class_recall": check_per_class_recall,
    "most_confused": check_most_confused,
}

# Which notebook practises which exercises (the exercise names are the keys of the results JSON).
NOTEBOOK_EXERCISES = {
    "01_fict_exploration": ("concept_path_at", "parent_mask"),
    "02_forgery_synthesis": ("manipulated_concepts",),
    "03_annotation": ("pick_threshold",),
    "05_age_evaluation": ("per_class_recall", "most_confused"),
}


def stub(*args, **kwargs):
    """What the notebooks hand out: a function whose body is still `...`."""


# --- wrong answers a student plausibly writes ------------------------------------------------------------


def path_swapped_xy(tree, label_map, x, y):
    row, col = int(np.floor(x)), int(np.floor(y))
    if not (0 <= row < label_map.shape[0] and 0 <= col < label_map.shape[1]) or label_map[row, col] < 0:
        return []
    return [c.name for c in tree.path(tree.leaves()[label_map[row, col]].id)]


def path_ignoring_minus_one(tree, label_map, x, y):
    row, col = int(np.floor(y)), int(np.floor(x))
    if not (0 <= row < label_map.shape[0] and 0 <= col < label_map.shape[1]):
        return []
    return [c.name for c in tree.path(tree.leaves()[label_map[row, col]].id)]


def path_without_bounds(tree, label_map, x, y):
    label = label_map[int(np.floor(y)), int(np.floor(x))]
    return [] if label < 0 else [c.name for c in tree.path(tree.leaves()[label].id)]


def path_rounded(tree, label_map, x, y):
    return SOLUTIONS["concept_path_at"](tree, label_map, round(x), round(y))


def path_upwards(tree, label_map, x, y):
    return SOLUTIONS["concept_path_at"](tree, label_map, x, y)[::-1]


def path_of_ids(tree, label_map, x, y):
    return [tree.get(name).id for name in SOLUTIONS["concept_path_at"](tree, label_map, x, y)]


def parent_from_direct_children(tree, leaf_masks, concept_id):
    if tree.is_leaf(concept_id):
        return leaf_masks[concept_id]
    return np.any([leaf_masks[c.id] for c in tree.children(concept_id)], axis=0)


def parent_as_intersection(tree, leaf_masks, concept_id):
    return np.all([leaf_masks[leaf.id] for leaf in tree.leaves(concept_id)], axis=0)


def parent_from_leaf_children_only(tree, leaf_masks, concept_id):
    if tree.is_leaf(concept_id):
        return leaf_masks[concept_id]
    mask = np.zeros_like(leaf_masks[tree.leaves()[0].id])
    for child in tree.children(concept_id):
        if child.id in leaf_masks:
            mask |= leaf_masks[child.id]
    return mask


def coverage_overlaps(tree, label_map, mask):
    """(leaf id, coverage, share of the mask, share of the image) of every leaf under the mask."""
    for index, leaf in enumerate(tree.leaves()):
        visible = label_map == index
        overlap = np.count_nonzero(mask & visible)
        if overlap:
            yield leaf.id, overlap / visible.sum(), overlap / mask.sum(), overlap / mask.size


def coverage_only(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [i for i, cov, share, _ in coverage_overlaps(tree, label_map, mask) if cov >= min_coverage]


def share_only(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [i for i, cov, share, _ in coverage_overlaps(tree, label_map, mask) if share >= min_share]


def coverage_and_share(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [i for i, cov, share, _ in coverage_overlaps(tree, label_map, mask)
            if cov >= min_coverage and share >= min_share]


def coverage_share_swapped(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [i for i, cov, share, _ in coverage_overlaps(tree, label_map, mask)
            if share >= min_coverage or cov >= min_share]


def share_of_image(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [i for i, cov, _, image in coverage_overlaps(tree, label_map, mask)
            if cov >= min_coverage or image >= min_share]


def fixed_thresholds(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [i for i, cov, share, _ in coverage_overlaps(tree, label_map, mask) if cov >= 0.25 or share >= 0.1]


def readable_names(tree, label_map, mask, min_coverage=0.25, min_share=0.1):
    return [tree.get(i).name for i in SOLUTIONS["manipulated_concepts"](tree, label_map, mask, min_coverage,
                                                                         min_share)]


def precision_not_recall(matrix, labels):
    matrix = np.asarray(matrix, float)
    with np.errstate(invalid="ignore", divide="ignore"):  # a class never answered has no precision
        return {label: matrix[k, k] / matrix[:, k].sum() for k, label in enumerate(labels)}


def correct_counts(matrix, labels):
    return {label: float(matrix[k][k]) for k, label in enumerate(labels)}


def recall_zero_when_empty(matrix, labels):
    recall = SOLUTIONS["per_class_recall"](matrix, labels)
    return {k: 0.0 if np.isnan(v) else v for k, v in recall.items()}


def confused_by_counts(matrix, labels):
    off = np.array(matrix, float)
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    return labels[i], labels[j]


def confused_transposed(matrix, labels):
    return SOLUTIONS["most_confused"](matrix, labels)[::-1]


def confused_by_columns(matrix, labels):
    matrix = np.asarray(matrix, float)
    shares = matrix / np.maximum(matrix.sum(axis=0, keepdims=True), 1)
    np.fill_diagonal(shares, -1)
    i, j = np.unravel_index(np.argmax(shares), shares.shape)
    return labels[i], labels[j]


def confused_with_diagonal(matrix, labels):
    matrix = np.asarray(matrix, float)
    i, j = np.unravel_index(np.argmax(matrix / matrix.sum(axis=1, keepdims=True)), matrix.shape)
    return labels[i], labels[j]


WRONG_ANSWERS = [
    ("concept_path_at", path_swapped_xy, "you swapped them"),
    ("concept_path_at", path_ignoring_minus_one, "label -1 means *no concept here*"),
    ("concept_path_at", path_without_bounds, "outside the image has no concept"),
    ("concept_path_at", path_rounded, "round down"),
    ("concept_path_at", path_upwards, "yours runs upwards"),
    ("concept_path_at", path_of_ids, "not concept ids"),
    ("parent_mask", parent_from_direct_children, "is a parent: a child can be a parent itself"),
    ("parent_mask", parent_as_intersection, "not the intersection"),
    ("parent_mask", parent_from_leaf_children_only, "you skipped the children that are parents themselves"),
    ("manipulated_concepts", coverage_only, "add `or share >= min_share`"),
    ("manipulated_concepts", share_only, "add `or coverage >= min_coverage`"),
    ("manipulated_concepts", coverage_and_share, "you require both conditions"),
    ("manipulated_concepts", coverage_share_swapped, "coverage and share are swapped"),
    # dividing by the image makes the share test almost never true: the hint defines share again
    ("manipulated_concepts", share_of_image, "share = overlap / the mask's pixels"),
    ("manipulated_concepts", fixed_thresholds, "you ignore `min_coverage` and `min_share`"),
    ("manipulated_concepts", readable_names, "not readable names"),
    ("pick_threshold", 0, "threshold too low: the mask includes JPEG noise"),
    ("pick_threshold", 2.5, "threshold too low: the mask includes JPEG noise"),
    ("pick_threshold", 60, "threshold too high"),
    ("pick_threshold", lambda diff: float(np.percentile(diff, 95)), "threshold too high"),  # the published top 5%
    ("per_class_recall", precision_not_recall, "that is *precision*"),
    ("per_class_recall", correct_counts, "recall is a rate"),
    ("per_class_recall", recall_zero_when_empty, "return nan"),
    ("most_confused", confused_by_counts, "you compared raw counts"),
    ("most_confused", confused_transposed, "yours is reversed"),
    ("most_confused", confused_by_columns, "you divided by column sums"),
    ("most_confused", confused_with_diagonal, "is on the diagonal"),
]

# Answers that ignore their input: a hard-coded or constant reply must never pass.
CONSTANT_ANSWERS = [
    ("concept_path_at", lambda tree, label_map, x, y: ["face image", "eyes", "left eye", "left iris"]),
    ("concept_path_at", lambda tree, label_map, x, y: []),
    ("parent_mask", lambda tree, leaf_masks, concept_id: np.ones_like(next(iter(leaf_masks.values())))),
    ("manipulated_concepts", lambda tree, label_map, mask, **thresholds: ["eye_left_iris", "eye_right_iris"]),
    ("manipulated_concepts", lambda tree, label_map, mask, **thresholds: []),
    ("pick_threshold", 255),
    ("per_class_recall", lambda matrix, labels: {label: 1.0 for label in labels}),
    ("most_confused", lambda matrix, labels: (labels[0], labels[1])),
    ("most_confused", lambda matrix, labels: ("FS", "FE")),
]


@pytest.mark.parametrize("name", list(CHECKS))
@pytest.mark.parametrize("seed", [*SEEDS, None])
def test_model_answer_passes(name: str, seed: int | None) -> None:
    result = CHECKS[name](SOLUTIONS[name], seed=seed)
    assert result.status == PASSED and result.passed and bool(result), str(result)


@pytest.mark.parametrize("seed", range(20))
def test_threshold_model_answer_passes_on_many_draws(seed: int) -> None:
    """The fixed threshold is the one answer judged by a tolerance; it must not fail on unlucky draws."""
    assert check_artifact_threshold(SOLUTIONS["pick_threshold"], seed=100 + seed).passed


@pytest.mark.parametrize(("name", "answer", "hint"), WRONG_ANSWERS,
                         ids=[f"{n}-{getattr(a, '__name__', a)}" for n, a, _ in WRONG_ANSWERS])
@pytest.mark.parametrize("seed", SEEDS)
def test_typical_mistake_fails_with_its_hint(name: str, answer, hint: str, seed: int) -> None:
    result = CHECKS[name](answer, seed=seed)
    assert result.status == FAILED and not result.passed
    assert hint in result.message, str(result)
    assert f"seed={seed}" in result.message  # the failure can be replayed


@pytest.mark.parametrize(("name", "answer"), CONSTANT_ANSWERS, ids=[n for n, _ in CONSTANT_ANSWERS])
@pytest.mark.parametrize("seed", [*SEEDS, None])
def test_constant_answer_fails(name: str, answer, seed: int | None) -> None:
    assert CHECKS[name](answer, seed=seed).status == FAILED


@pytest.mark.parametrize("name", list(CHECKS))
def test_unfinished_stub_reads_not_attempted(name: str) -> None:
    result = CHECKS[name](stub)
    assert result.status == NOT_ATTEMPTED and not result.passed
    assert "Not attempted yet" in result.message and "Tip:" in result.message


@pytest.mark.parametrize("name", list(CHECKS))
def test_student_exception_is_reported_not_raised(name: str) -> None:
    def broken(*args, **kwargs):
        return 1 / 0

    result = CHECKS[name](broken, seed=0)
    assert result.status == FAILED and "ZeroDivisionError" in result.message


def test_not_a_function_is_reported() -> None:
    assert "expected the function" in check_coverage_rule("eye_left_iris").message
    assert "one number" in check_artifact_threshold("twelve", seed=0).message


def test_same_seed_same_cases() -> None:
    first, second = check_per_class_recall(precision_not_recall, seed=5), check_per_class_recall(
        precision_not_recall, seed=5)
    assert first.message == second.message


def test_result_shows_as_one_readable_line() -> None:
    result = check_most_confused(SOLUTIONS["most_confused"], seed=0)
    assert str(result).startswith("✔ most_confused: passed.")


def test_show_solution_prints_and_returns_the_model_answer(capsys: pytest.CaptureFixture[str]) -> None:
    answer = exercises.show_solution("per_class_recall")
    assert answer is SOLUTIONS["per_class_recall"]
    assert "def per_class_recall(matrix, labels):" in capsys.readouterr().out
    with pytest.raises(KeyError, match="exercises:"):
        exercises.show_solution("nope")


@pytest.mark.parametrize("stem", list(NOTEBOOK_EXERCISES))
def test_notebook_has_the_switch_and_the_exercises(stem: str) -> None:
    """Each exercise has a task, a stub and a check; the solutions switch is a papermill parameter."""
    path = NOTEBOOK_DIR / f"{stem}.ipynb"
    assert "solutions" in _declared_parameters(path)
    sources = [cell.source for cell in nbformat.read(path, as_version=4).cells]
    for name in NOTEBOOK_EXERCISES[stem]:
        assert any(f"def {name}(" in s and "..." in s for s in sources), f"{stem}: no stub for {name}"
        assert any(f'show_solution("{name}")' in s and "if solutions:" in s for s in sources)
        assert any(f"{CHECKS[name].__name__}({name})" in s for s in sources), f"{stem}: no check for {name}"


def printed(executed: Path) -> str:
    """Everything the code cells of an executed notebook printed or displayed as text."""
    nb = nbformat.read(executed, as_version=4)
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["01_fict_exploration", "02_forgery_synthesis", "03_annotation"])
@pytest.mark.parametrize(("solutions", "status"), [(True, PASSED), (False, NOT_ATTEMPTED)])
def test_notebook_records_its_exercises(tmp_path: Path, stem: str, solutions: bool, status: str) -> None:
    """A teacher's run shows the model answers passing; a student's untouched run finishes and says
    "not attempted"."""
    results = run_smoke(stem, tmp_path, solutions=solutions)
    assert results["exercises"] == {name: status for name in NOTEBOOK_EXERCISES[stem]}
    assert ("Model answer (solutions=True)" in printed(tmp_path / f"{stem}.ipynb")) == solutions


@pytest.mark.slow
def test_teacher_run_of_notebook_05(tmp_path: Path) -> None:
    """Notebook 05's exercises pass with solutions=True and are then applied to the run's own matrix."""
    untrained_run(tmp_path)
    run_smoke("05_age_evaluation", tmp_path, solutions=True)
    output = printed(tmp_path / "05_age_evaluation.ipynb")
    assert "✔ per_class_recall: passed" in output and "✔ most_confused: passed" in output
    assert "recall per class:" in output and "most confused:" in output
