"""The interactive analysis: its plain callbacks and the app driven through the methods its widgets call."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from conftest import TINY_CONFIG
from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.faces.image_io import ImageError
from fifa_lab.faces.photo import NoFaceError
from fifa_lab.fict import load_tree
from fifa_lab.model import Response, build_tiny
from fifa_lab.viz.answer import mask_colours
from fifa_lab.widgets import AnalysisApp, visible_mask
from fifa_lab.widgets.analysis import (
    FREE_TEXT,
    Answer,
    Question,
    answer_html,
    ask,
    bounding_box_region,
    free_question,
    make_prompt,
    mask_phrases,
    model_region,
    phrase_concepts,
    question_choices,
    question_from,
    region_from_box,
    region_from_concept,
    region_from_point,
    subject_from_photo,
    subject_from_record,
    verdict,
    verdict_html,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    build_dataset(run_dir, n_faces=6, seed=0)
    return load_datasets(run_dir)


@pytest.fixture(scope="module")
def images(data):
    test = data.images["test"]
    # the smoke build's test split: one real face and its face swap (a fake with a reference explanation)
    assert sorted(test["forgery_class"]) == ["FS", "real"]
    return test


@pytest.fixture(scope="module")
def fake_index(images):
    return list(images["forgery_class"]).index("FS")


@pytest.fixture(scope="module")
def model(data):
    samples = data.samples["train"]
    torch.manual_seed(0)
    # untrained and at 64 px: the app must map between its 256 px images and the model's size
    return build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=600, **TINY_CONFIG)


@pytest.fixture(scope="module")
def tree():
    return load_tree()


@pytest.fixture(scope="module")
def subject(images, fake_index):
    return subject_from_record(images[fake_index])


def left_eye_centre(face) -> tuple[float, float]:
    """The mean of landmarks 42..47: the subject's left eye, on the image's right."""
    x, y = face.landmarks[42:48].mean(axis=0)
    return float(x), float(y)


def nose_tip(face) -> tuple[float, float]:
    x, y = face.landmarks[30]
    return float(x), float(y)


def question(task: str) -> Question:
    return next(q for _, q in question_choices() if q.task == task)


# --- plain callbacks -------------------------------------------------------------------------------------


def test_subject_from_record_keeps_face_truth_and_reference(images, fake_index, subject, tree):
    record = images[fake_index]
    assert subject.name == record["image_id"] and subject.truth == "FS"
    assert subject.face.image.shape == (256, 256, 3) and subject.face.label_map.shape == (256, 256)
    reference = subject.reference.response
    assert reference.text == record["explanation"]["text"] and reference.phrases
    assert reference.masks.shape == (reference.text.count("[SEG]"), 256, 256) and reference.masks.any(axis=(1, 2)).all()
    assert subject.reference.region is None and "<image>" in subject.reference.prompt


def test_verdict_gives_the_most_probable_choices(model, subject):
    result = verdict(model, subject.face.image)
    assert set(result.label_probs) == {"real", "fake"} and set(result.class_probs) == set(FORGERY_CLASSES)
    assert sum(result.label_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(result.class_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.label_probs, key=result.label_probs.get)
    assert result.forgery_class == max(result.class_probs, key=result.class_probs.get)
    line = verdict_html(result, truth="FS")
    assert f"<b>{result.label}</b>" in line and "truth: FS" in line
    assert "truth" not in verdict_html(result)


def test_regions_from_points_concepts_and_boxes(tree, subject):
    labels = subject.face.label_map
    x, y = left_eye_centre(subject.face)
    leaf = region_from_point(tree, labels, x, y)
    assert tree.is_leaf(leaf.concept) and "eye_left" in {c.id for c in tree.path(leaf.concept)}
    assert leaf.mask[int(y), int(x)] and leaf.where == f"the {tree.get(leaf.concept).name}"
    eyes = region_from_point(tree, labels, x, y, depth=1)
    assert eyes.concept == "eyes" and eyes.mask.sum() > leaf.mask.sum()
    assert region_from_point(tree, labels, -3, 10) is None

    nose = region_from_concept(tree, labels, "nose")
    assert nose.kind == "concept" and np.array_equal(nose.mask, visible_mask(tree, labels, "nose"))
    assert region_from_concept(tree, labels, "left eye").concept == "eye_left"  # readable names work too
    with pytest.raises(ValueError, match="shows no"):
        region_from_concept(tree, labels, "glasses")  # a synthetic face without glasses
    with pytest.raises(KeyError, match="did you mean"):
        region_from_concept(tree, labels, "nsoe")

    box = region_from_box((120, 90, 20, 10), labels.shape)  # corners in any order
    assert box.box == (20, 10, 120, 90) and box.mask.sum() == 100 * 80 and box.where == "the box [20, 10, 120, 90]"
    assert region_from_box((200, 200, 300, 310), labels.shape).box == (200, 200, 256, 256)  # cut to the image
    with pytest.raises(ValueError, match="outside the 256x256 image"):
        region_from_box((300, 300, 400, 400), labels.shape)
    with pytest.raises(ValueError, match="empty"):
        region_from_box((10, 10, 10, 50), labels.shape)
    with pytest.raises(ValueError, match="four numbers"):
        region_from_box((1, 2, 3), labels.shape)

    boxed = bounding_box_region(nose)
    ys, xs = np.nonzero(nose.mask)
    assert boxed.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) and boxed.mask[nose.mask].all()
    assert model_region(nose, 64).shape == (64, 64) and model_region(box, 64)[2:23, 5:30].all()


def test_questions_and_prompts(tree, subject):
    tasks = [q.task for _, q in question_choices()]
    assert tasks == ["R-AGE", "R-TOE", "R-Det", "B-TOE", "AGE", "TOE", "Loc", FREE_TEXT]
    labels = dict((q.task, label) for label, q in question_choices())
    assert "(region)" in labels["R-AGE"] and "(whole image)" in labels["AGE"] and "<" not in labels["R-AGE"]
    eye = region_from_concept(tree, subject.face.label_map, "eye_left")

    prompt, used = make_prompt(question("R-AGE"), eye)
    assert "the left eye <region>" in prompt and prompt.startswith("<image>") and used is eye
    with pytest.raises(ValueError, match="asks about a region"):
        make_prompt(question("R-Det"), None)
    prompt, used = make_prompt(question("AGE"), eye)
    assert used is None and "<region>" not in prompt  # whole-image questions ignore the region
    prompt, used = make_prompt(question("B-TOE"), eye)
    assert used.kind == "box" and f"the box [{used.box[0]}, " in prompt  # box questions take the bounding box

    free = free_question("  Is this   blurred? ")
    assert free.template == "Is this blurred?" and free.uses_region
    assert make_prompt(free, eye)[0] == "<image>\nIs this blurred? (the left eye <region>)"
    assert make_prompt(free, None) == ("<image>\nIs this blurred?", None)
    with pytest.raises(ValueError, match="type a question"):
        free_question("   ")
    with pytest.raises(ValueError, match="leave <region> out"):
        free_question("What is in <region>?")
    assert question_from("R-TOE") == question("R-TOE")
    assert question_from("Why is the nose odd?") == Question(FREE_TEXT, "Why is the nose odd?")


def test_ask_answers_at_the_image_size(model, tree, subject):
    eye = region_from_concept(tree, subject.face.label_map, "eye_left")
    answer = ask(model, subject.face.image, question("R-AGE"), eye, max_new_tokens=8)
    assert answer.question == "Explain the artifacts in the left eye and segment each one."
    assert answer.region is eye and "<region>" in answer.prompt
    masks = answer.response.masks
    assert masks.dtype == bool and masks.shape == (answer.response.text.count("[SEG]"), 256, 256)
    with pytest.raises(ValueError, match="asks about a region"):
        ask(model, subject.face.image, question("R-AGE"), None)


def test_phrase_concepts_and_answer_html(tree):
    text = "Look at <p>the left eye</p> [SEG] and <p>the Nose region</p> [SEG]; <p>manipulated area</p> [SEG]."
    phrases = mask_phrases(text)
    assert phrases == ["the left eye", "the Nose region", "manipulated area"]
    paths = phrase_concepts(tree, phrases)
    root = tree.get(tree.root).name
    assert paths == [[root, "eyes", "left eye"], [root, "nose"], []]
    masks = np.zeros((3, 8, 8), bool)
    answer = Answer("What is odd?", "<image>\nWhat is odd?", None, Response(text, phrases, masks))
    shown = answer_html(answer, paths)
    assert "<b>Q:</b> What is odd?" in shown and f"{root} \u203a eyes \u203a left eye" in shown
    assert "not a FICT concept" in shown and "line-through" not in shown
    r, g, b = mask_colours(3)[1]
    assert f"rgb({r},{g},{b})" in shown  # the phrase, its legend swatch and its mask share a colour
    hidden = answer_html(answer, paths, hidden={1})
    assert "line-through" in hidden and "the Nose region (hidden)" in hidden
    empty = Answer("Q", "<image>\nQ", None, Response("", [], np.zeros((0, 8, 8), bool)))
    assert "empty answer" in answer_html(empty)


def test_subject_from_photo_detects_or_says_why():
    subject = subject_from_photo(astronaut(), "astronaut.png")
    assert subject.face.image.shape == (256, 256, 3) and subject.face.label_map is not None
    assert subject.truth is None and subject.reference is None
    with pytest.raises(NoFaceError, match="blank.png: no face"):
        subject_from_photo(np.full((120, 120, 3), 90, np.uint8), "blank.png")
    with pytest.raises(ImageError, match="notes.txt is not an image"):
        subject_from_photo(b"just some text", "notes.txt")


# --- the app -----------------------------------------------------------------------------------------------


@pytest.fixture
def app(model, images, tree, fake_index):
    """A fresh app per test (building one takes a fraction of a second), so tests do not depend on order."""
    return AnalysisApp(model, images, tree, index=fake_index, concept="eye_left", max_new_tokens=8)


def test_app_starts_with_verdict_and_concept(app, images, fake_index):
    classes = {name: getattr(app, name)._dom_classes for name in
               ("face_image", "concept_html", "answer_html", "ask_button", "verdict_html")}
    assert classes == {"face_image": ("fifa-face",), "concept_html": ("fifa-concept",),
                       "answer_html": ("fifa-answer",), "ask_button": ("fifa-ask",),
                       "verdict_html": ("fifa-verdict",)}
    assert app.subject.name == images[fake_index]["image_id"] and "truth: FS" in app.verdict_html.value
    assert app.region.concept == "eye_left" and app.concepts.value == "eye_left"
    assert "left eye" in app.concept_html.value and app.answer is None  # building asks nothing
    assert app.question.value.task == "R-AGE"


def test_click_selects_the_concept_and_asks_about_it(app, tree):
    face = app.subject.face
    x, y = nose_tip(face)
    app.select_point(x, y)
    nose_leaf = app.region.concept
    assert tree.is_leaf(nose_leaf) and "nose" in {c.id for c in tree.path(nose_leaf)}
    assert app.answer.region is app.region and tree.get(nose_leaf).name in app.answer.question
    before = (app.concept_html.value, app.answer_html.value, app.face_image.value)

    # a click on the picture displayed at twice its size lands on the same pixel
    ex, ey = left_eye_centre(face)
    height, width = face.size
    app._on_click({"relativeX": 2 * ex, "relativeY": 2 * ey, "boundingRectWidth": 2 * width,
                   "boundingRectHeight": 2 * height})
    eye_leaf = app.region.concept
    assert tree.is_leaf(eye_leaf) and "eye_left" in {c.id for c in tree.path(eye_leaf)}
    after = (app.concept_html.value, app.answer_html.value, app.face_image.value)
    assert all(b != a for b, a in zip(before, after))  # label, explanation and highlight all follow the click
    assert app.concepts.value == eye_leaf and app.answer.region.concept == eye_leaf

    app.level.value = "region"  # re-reads the last click at region level, and asks again
    assert app.region.concept == "eyes" and "the eyes" in app.answer.question
    assert "face image \u203a eyes" in app.concept_html.value


def test_dropdown_and_box_selection(app):
    app.concepts.value = "nose"  # what choosing in the concept dropdown does
    assert app.region.concept == "nose" and "the nose" in app.answer.question

    app.level.value = "box"
    assert app.box_corner(150, 140) is None and app.region.concept == "nose"  # first corner only
    assert "opposite corner" in app.status.value
    region = app.box_corner(60, 40)
    assert region.box == (60, 40, 150, 140) and app.region is region
    assert [f.value for f in app.box_fields] == [60, 40, 150, 140] and app.concepts.value is None
    assert "the box [60, 40, 150, 140]" in app.answer.question and "box [60, 40, 150, 140]" in app.concept_html.value

    answer = app.answer
    assert app.select_box((300, 300, 400, 400)) is None
    assert "outside the 256x256 image" in app.status.value
    assert app.region is region and app.answer is answer  # a bad box changes nothing else
    app.box_fields[2].value = 200
    app.box_button.click()  # the box typed into the four fields
    assert app.region.box == (60, 40, 200, 140) and app.status.value == ""


def test_phrase_toggle_hides_its_mask_colour(app):
    reference = app.show_reference()
    masks = reference.response.masks
    assert len(app.phrase_toggles.children) == len(masks) == len(reference.response.phrases)
    assert [t.description for t in app.phrase_toggles.children] == reference.response.phrases
    only_first = masks[0] & ~masks[1:].any(axis=0)
    row, col = np.argwhere(only_first)[len(np.argwhere(only_first)) // 2]
    shown_overlay = app.answer_image.value

    assert app.toggle_phrase(0) is False and app.hidden == {0}
    assert app.phrase_toggles.children[0].value is False
    assert "line-through" in app.answer_html.value and app.answer_image.value != shown_overlay
    hidden_pixels = np.asarray(Image.open(io.BytesIO(app.answer_image.value)))
    assert np.array_equal(hidden_pixels[row, col], app.subject.face.image[row, col])  # mask 0's colour is gone

    app.phrase_toggles.children[0].value = True  # what clicking the toggle button does
    assert app.hidden == set() and app.answer_image.value == shown_overlay
    with pytest.raises(IndexError, match="grounded phrases"):
        app.toggle_phrase(len(masks))


def test_free_text_and_whole_image_questions(app):
    app.select_concept("nose")
    app.question.value = question(FREE_TEXT)
    app.free_text.value = ""
    assert app.ask() is None and "type a question" in app.status.value
    app.free_text.value = "Is the skin too smooth here?"
    answer = app.ask()
    assert answer.prompt == "<image>\nIs the skin too smooth here? (the nose <region>)" and app.status.value == ""

    app.question.value = question("AGE")
    whole = app.ask()
    assert whole.region is None and "<region>" not in whole.prompt
    app.select_concept("mouth")  # a whole-image question does not depend on the region: no new question
    assert app.region.concept == "mouth" and app.answer is whole


def test_bad_inputs_are_shown_not_raised(app):
    region = app.region
    assert app.select_concept("glasses") is None and "shows no glasses" in app.status.value
    assert app.select_point(-10, 5) is None and "click inside the image" in app.status.value
    assert app.region is region
    options = app.picker.options
    assert app.add_photo(np.full((120, 120, 3), 90, np.uint8), "blank.png") is None
    assert "blank.png: no face" in app.status.value and app.picker.options == options
    assert app.add_photo(b"\x00\x01 not a picture", "notes.png") is None and "not an image" in app.status.value


def test_switching_images_and_uploading_a_photo(app, images, fake_index):
    real_index = 1 - fake_index
    app.picker.value = real_index  # what choosing in the image picker does
    assert app.subject.truth == "real" and "truth: real" in app.verdict_html.value
    assert app.region.concept == "eye_left" and app.answer.region is app.region  # the region follows the face

    subject = app.add_photo(astronaut(), "astronaut.png")
    assert subject is app.subject and app.picker.options[-1] == ("upload: astronaut.png", len(images))
    assert app.picker.value == len(images) and "truth" not in app.verdict_html.value
    assert app.reference_button.disabled and app.show_reference() is None and "no reference" in app.status.value
    x, y = nose_tip(subject.face)
    assert "nose" in {c.id for c in app.tree.path(app.select_point(x, y).concept)}


def test_app_refuses_no_images(model, images):
    with pytest.raises(ValueError, match="no images"):
        AnalysisApp(model, [])
    with pytest.raises(IndexError, match="out of range"):
        AnalysisApp(model, images, index=len(images))
