"""Ask FiFa-MLLM about a face, region by region: plain callbacks plus an ipywidgets front end.

The steps of an interactive analysis are plain functions, so tests and scripts use them without a browser:

* a **subject** (:class:`Subject`): a test image of the run (:func:`subject_from_record`) or an uploaded
  photo, detected and aligned first (:func:`subject_from_photo`);
* its **verdict** (:func:`verdict`): the model's Det and Cls answers with their probabilities;
* a **region** (:class:`Region`): the FICT concept under a click (:func:`region_from_point`, leaf or
  region level), a concept chosen by id (:func:`region_from_concept`) or a drawn box (:func:`region_from_box`);
* a **question** (:class:`Question`): a FiFa task template (:func:`question_choices`) or free text;
* the **answer** (:func:`ask`): text interleaved with masks, each grounded phrase with its concept path
  (:func:`phrase_concepts`), rendered by :func:`answer_html` in the colours of the mask overlay.

:class:`AnalysisApp` wires these to widgets. Its methods (:meth:`~AnalysisApp.select_point`,
:meth:`~AnalysisApp.select_concept`, :meth:`~AnalysisApp.select_box`, :meth:`~AnalysisApp.ask`,
:meth:`~AnalysisApp.toggle_phrase`, ...) are exactly what the widget events call. They never raise on a
user's mistake (no face in a photo, a box off the image): the message appears in the app instead.
"""
from __future__ import annotations

import html
import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import ipyevents
import ipywidgets as widgets
import numpy as np
from PIL import Image, UnidentifiedImageError

from fifa_lab.artifacts import FORGERY_CLASS_NAMES
from fifa_lab.data.masks import box_to_mask, decode_rle, mask_to_box
from fifa_lab.data.records import decode_label_map, image_array, png_bytes
from fifa_lab.fict.names import resolve_phrase
from fifa_lab.eval.runner import CLOSED_CHOICES
from fifa_lab.faces.face import Face
from fifa_lab.faces.image_io import ImageError, ImageSource
from fifa_lab.faces.photo import NoFaceError, detect_face
from fifa_lab.fict.tree import ConceptTree, load_tree
from fifa_lab.model.fifa_mllm import FiFaMLLM, Response, parse_phrases
from fifa_lab.tasks.fifa11 import CLASS_OPTIONS, format_box
from fifa_lab.tasks.registry import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN, get_task
from fifa_lab.train.data import load_image, region_mask, resize_mask
from fifa_lab.viz.answer import answer_overlay, grounded_html, grounded_segments, mask_colours
from fifa_lab.viz.overlay import RGB, overlay
from fifa_lab.widgets.region import DIM, LEVELS, concept_at, concept_options, concept_path, highlight, visible_mask

REGION_TASKS = ("R-AGE", "R-TOE", "R-Det", "B-TOE")
IMAGE_TASKS = ("AGE", "TOE", "Loc")
FREE_TEXT = "free"  # the task id of a question typed by the user
DEFAULT_QUESTION = "R-AGE"
BOX_TASK = "B-TOE"  # its templates describe a box: a concept region is asked about as its bounding box
BOX_COLOUR: RGB = (255, 196, 0)
BOX_MODE = "box"  # the click mode in which two clicks draw a box, beside the levels of LEVELS
PATH_SEPARATOR = " \u203a "
UNRESOLVED = "not a FICT concept"


# --- subjects: what is analysed ---------------------------------------------------------------------------


@dataclass
class Subject:
    """An image to analyse.

    Attributes:
        name: how the image picker lists it (the image id, or the uploaded file's name).
        face: the image with its landmarks and FICT label map (clicks are read from the label map).
        truth: the forgery class of a dataset image (``real``, ``FS`` ...); None for a photo.
        reference: the annotator's explanation of a dataset image as an :class:`Answer`; None for a photo.
    """

    name: str
    face: Face
    truth: str | None = None
    reference: Answer | None = None


def subject_from_record(record: Mapping[str, Any]) -> Subject:
    """A :class:`Subject` from an image record (a row of ``load_datasets(run_dir).images[split]``)."""
    image = image_array(record["image"])
    face = Face(image, np.asarray(record["landmarks"], np.float32), label_map=decode_label_map(record["label_map"]),
                source=f"dataset:{record['image_id']}")
    explanation = record["explanation"]
    text = explanation["text"]
    masks = [decode_rle(segment["mask"]) for segment in explanation["segments"]]
    age = get_task("AGE")
    reference = Answer(
        question="The annotator's explanation of the whole image (the reference the model was trained on)",
        prompt=age.templates[0], region=None,
        response=Response(text, parse_phrases(text), np.array(masks, bool).reshape(-1, *image.shape[:2])))
    return Subject(record["image_id"], face, truth=record["forgery_class"], reference=reference)


def subject_from_photo(photo: bytes | ImageSource, name: str = "photo", size: int = 256) -> Subject:
    """A :class:`Subject` from a photo (file bytes, a path, a PIL image or an array): the largest face,
    detected and aligned to a ``size`` x ``size`` crop like the synthetic faces.

    Raises:
        ImageError: the photo cannot be read. NoFaceError: no face was found in it.
    """
    if isinstance(photo, (bytes, bytearray, memoryview)):
        try:
            photo = Image.open(io.BytesIO(bytes(photo)))
            photo.load()
        except (UnidentifiedImageError, OSError):
            raise ImageError(f"{name} is not an image file that can be read (PNG, JPEG, ...)") from None
    try:
        face = detect_face(photo, size=size)
    except NoFaceError as error:
        raise NoFaceError(f"{name}: {error}") from None  # the app lists several photos: say which one
    return Subject(name, face)


# --- the verdict ---------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The model's closed answers about a whole image: ``label`` (real or fake) and ``forgery_class``,
    each the most probable of its choices, with the probability of every choice."""

    label: str
    label_probs: dict[str, float]
    forgery_class: str
    class_probs: dict[str, float]


def model_image(model: FiFaMLLM, image: np.ndarray) -> np.ndarray:
    """``image`` resized to what the model takes: ``(S, S, 3)`` uint8 with ``S = model.config.image_size``."""
    return load_image(image, model.config.image_size)


def verdict(model: FiFaMLLM, image: np.ndarray) -> Verdict:
    """The Det and Cls answers for ``image`` ``(H, W, 3)`` uint8: the choice the model finds most likely
    among the benchmark's closed choices (:data:`fifa_lab.eval.runner.CLOSED_CHOICES`), the forgery head's
    probabilities fused in as the benchmark answers them (``closed_answer="fused"``)."""
    pixels = model_image(model, image)
    answers = []
    for task, fields in (("Det", {}), ("Cls", {"options": CLASS_OPTIONS})):
        choices = CLOSED_CHOICES[task]
        probs = model.choice_probs(pixels, get_task(task).templates[0].format(**fields), choices, head=True)
        answers.append(dict(zip(choices, (float(p) for p in probs))))
    det, cls = answers
    return Verdict(max(det, key=det.get), det, max(cls, key=cls.get), cls)


def verdict_html(result: Verdict, truth: str | None = None) -> str:
    """One line: the detection answer, the forgery class (with probabilities) and the truth when known."""
    name = FORGERY_CLASS_NAMES.get(result.forgery_class, result.forgery_class)
    parts = [f"Verdict: <b>{html.escape(result.label)}</b> (P(fake) = {result.label_probs.get('fake', 0.0):.2f})",
             f"class <b>{html.escape(result.forgery_class)}</b>, {html.escape(name)} "
             f"(p = {result.class_probs[result.forgery_class]:.2f})"]
    if truth is not None:
        parts.append(f"truth: {html.escape(truth)}")
    return " &middot; ".join(parts)


# --- regions -------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Region:
    """What a region question is about.

    Attributes:
        kind: ``concept`` (a FICT concept's visible pixels) or ``box``.
        mask: ``(H, W)`` bool at the subject's image size.
        where: how prompts name it, as in training ("the left eye", "the box [x0, y0, x1, y1]").
        concept: the FICT concept id (concept regions).
        box: ``(x0, y0, x1, y1)`` image pixels, maxima exclusive (box regions).
    """

    kind: str
    mask: np.ndarray
    where: str
    concept: str | None = None
    box: tuple[int, int, int, int] | None = None


def region_from_concept(tree: ConceptTree, label_map: np.ndarray, concept_id: str) -> Region:
    """The visible pixels of a concept (id or readable name) on a face with this ``(H, W)`` label map.

    Raises:
        KeyError: no such concept. ValueError: the face does not show it (glasses on a face without).
    """
    concept = tree.get(concept_id)
    mask = visible_mask(tree, label_map, concept.id)
    if not mask.any():
        raise ValueError(f"this face shows no {concept.name} ({concept.id}): its mask is empty; choose another")
    return Region("concept", mask, f"the {concept.name}", concept=concept.id)


def region_from_point(tree: ConceptTree, label_map: np.ndarray, x: float, y: float, depth: int | None = None,
                      ) -> Region | None:
    """The concept at image pixel ``(x, y)`` (column, row): its leaf, or its ancestor at ``depth``
    (1 = the region: eyes, nose ...). None outside the image or where no concept is drawn."""
    concept = concept_at(tree, label_map, x, y, depth)
    return None if concept is None else region_from_concept(tree, label_map, concept.id)


def region_from_box(box: Sequence[float], shape: Sequence[int]) -> Region:
    """A box region from two opposite corners ``(x0, y0, x1, y1)`` in image pixels of an ``(H, W)`` image.

    The corners may come in any order (two clicks); the box is cut to the image.

    Raises:
        ValueError: not four numbers, an empty box, or a box that lies outside the image.
    """
    if len(box) != 4:
        raise ValueError(f"a box is four numbers x0, y0, x1, y1, got {tuple(box)!r}")
    height, width = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    clipped = (max(0, int(np.floor(left))), max(0, int(np.floor(top))),
               min(width, int(np.ceil(right))), min(height, int(np.ceil(bottom))))
    if right - left < 1 or bottom - top < 1:
        raise ValueError(f"box {tuple(box)} is empty: its corners need to be at least one pixel apart in x and y")
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise ValueError(f"box {tuple(box)} lies outside the {width}x{height} image: "
                         f"x must lie in 0..{width} and y in 0..{height}")
    return Region("box", box_to_mask(clipped, (height, width)), f"the box {format_box(clipped)}", box=clipped)


def bounding_box_region(region: Region) -> Region:
    """A region as its bounding box (what box questions take); a box region is returned as it is."""
    if region.kind == "box":
        return region
    return region_from_box(mask_to_box(region.mask), region.mask.shape)


def model_region(region: Region, size: int) -> np.ndarray:
    """The region as the ``(size, size)`` bool mask the model pools into its ``<region>`` token."""
    if region.kind == "box":
        # scaled as a box then rasterised, as the training data does for box regions
        return region_mask({"kind": "box", "box": region.box}, region.mask.shape, size)
    return resize_mask(region.mask, size)


def region_label(tree: ConceptTree, region: Region | None) -> str:
    """HTML naming the selected region: the concept's path and id, or the box."""
    if region is None:
        return "<i>No region selected: click the face, choose a concept or draw a box.</i>"
    if region.kind == "box":
        return f"Region: <b>box {html.escape(format_box(region.box))}</b>"
    path = PATH_SEPARATOR.join(html.escape(name) for name in concept_path(tree, region.concept))
    return f"Region: <b>{path}</b> <code>{html.escape(region.concept)}</code>"


# --- questions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question to ask: a FiFa task's prompt template, or free text (``task == FREE_TEXT``).

    ``template`` holds ``<image>`` and, for region tasks, ``{where} <region>``; a free question is the
    user's own words, asked about the selected region when there is one.
    """

    task: str
    template: str

    @property
    def uses_region(self) -> bool:
        """Whether the answer depends on the selected region (free text does when one is selected)."""
        return self.task == FREE_TEXT or REGION_TOKEN in self.template

    @property
    def label(self) -> str:
        """How the question dropdown lists it."""
        if self.task == FREE_TEXT:
            return "Free text (type your question below)"
        scope = "box" if self.task == BOX_TASK else "region" if self.uses_region else "whole image"
        return f"{self.task} ({scope}): {readable(self.template.replace('{where}', 'the ' + scope))}"


def readable(prompt: str) -> str:
    """A prompt as a reader sees it: without the ``<image>`` and ``<region>`` tokens."""
    return " ".join(prompt.replace(IMAGE_TOKEN, " ").replace(REGION_TOKEN, " ").split())


def question_choices() -> list[tuple[str, Question]]:
    """``(label, question)`` pairs for the question dropdown: the region tasks first (R-AGE, R-TOE, R-Det,
    B-TOE), then the whole-image ones (AGE, TOE, Loc), each with its first template, then free text."""
    questions = [Question(task, get_task(task).templates[0]) for task in (*REGION_TASKS, *IMAGE_TASKS)]
    questions.append(Question(FREE_TEXT, ""))
    return [(q.label, q) for q in questions]


def question_from(text: str) -> Question:
    """The question a parameter names: a task id of :func:`question_choices` (``"R-AGE"``), else free text."""
    for _, question in question_choices():
        if question.task == text.strip() and question.task != FREE_TEXT:
            return question
    return free_question(text)


def free_question(text: str) -> Question:
    """A question typed by the user; ValueError when empty or when it holds the model's special tokens."""
    words = " ".join(str(text).split())
    if not words:
        raise ValueError("type a question first, e.g. 'Is this region blurred?'")
    typed = [token for token in (IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN) if token in words]
    if typed:
        raise ValueError(f"leave {', '.join(typed)} out of the question: the app adds the image and region itself")
    return Question(FREE_TEXT, words)


def make_prompt(question: Question, region: Region | None) -> tuple[str, Region | None]:
    """The prompt of ``question`` about ``region`` and the region it actually refers to.

    Whole-image questions ignore the region (None); box questions take a concept's bounding box; free text
    is asked about the region when one is given.

    Raises:
        ValueError: a region question without a region, or an empty free question.
    """
    if question.task == FREE_TEXT:
        asked = free_question(question.template)
        if region is None:
            return f"{IMAGE_TOKEN}\n{asked.template}", None
        return f"{IMAGE_TOKEN}\n{asked.template} ({region.where} {REGION_TOKEN})", region
    if not question.uses_region:
        return question.template, None
    if region is None:
        raise ValueError(f"{question.task} asks about a region: click the face, choose a concept or draw a box first")
    if question.task == BOX_TASK:
        region = bounding_box_region(region)
    return question.template.format(where=region.where), region


# --- answers ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One asked question and the model's answer.

    Attributes:
        question: what was asked, as a reader sees it.
        prompt: the prompt the model was given.
        region: the region the prompt's ``<region>`` stands for (None for whole-image questions).
        response: the model's text, phrases and one ``(H, W)`` mask per ``[SEG]`` at the subject's image size.
    """

    question: str
    prompt: str
    region: Region | None
    response: Response


def ask(model: FiFaMLLM, image: np.ndarray, question: Question, region: Region | None = None,
        max_new_tokens: int = 64) -> Answer:
    """Ask ``question`` about ``image`` ``(H, W, 3)`` uint8 (and ``region``); greedy decoding.

    The model sees the image at its own size; the answer's masks come back at the image's size.
    """
    prompt, used = make_prompt(question, region)
    size = model.config.image_size
    response = model.generate(model_image(model, image), prompt,
                              region=None if used is None else model_region(used, size),
                              max_new_tokens=max_new_tokens)
    height, width = image.shape[:2]
    # bilinear, then thresholded at half: a mask keeps its extent whether scaled up or down
    masks = np.array([cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
                      for m in response.masks], bool).reshape(-1, height, width)
    return Answer(readable(prompt), prompt, used, Response(response.text, response.phrases, masks))


def mask_phrases(text: str) -> list[str]:
    """The phrase of each mask of an answer, in ``[SEG]`` order (``""`` for a ``[SEG]`` without a phrase)."""
    return [piece.text for piece in grounded_segments(text) if piece.mask_index is not None]


def phrase_concepts(tree: ConceptTree, phrases: Sequence[str]) -> list[list[str]]:
    """For each phrase, the readable path from the root to the FICT concept it names ("the left eye" ->
    ``["face image", "eyes", "left eye"]``); an empty list when it names none (same reading as the
    grounding-consistency metric, :func:`fifa_lab.fict.names.resolve_phrase`)."""
    paths = []
    for phrase in phrases:
        concept = resolve_phrase(phrase, tree)
        paths.append([] if concept is None else concept_path(tree, concept.id))
    return paths


def answer_html(answer: Answer, paths: Sequence[Sequence[str]] = (), hidden: Collection[int] = ()) -> str:
    """The question, the answer with each grounded phrase tinted like its mask, and one legend row per mask
    (colour, phrase, concept path). ``paths`` holds one concept path per mask (see :func:`phrase_concepts`);
    ``hidden`` lists the masks switched off."""
    text = answer.response.text
    joined = [PATH_SEPARATOR.join(path) or UNRESOLVED for path in paths]
    body = grounded_html(text, hidden, joined) if text.strip() else "<i>(the model gave an empty answer)</i>"
    phrases = mask_phrases(text)
    rows = []
    for index, (r, g, b) in enumerate(mask_colours(len(phrases))):
        state = " (hidden)" if index in hidden else ""
        path = joined[index] if index < len(joined) else UNRESOLVED
        rows.append(f'<tr><td><span style="display:inline-block;width:12px;height:12px;background:rgb({r},{g},{b})">'
                    f'</span></td><td>{html.escape(phrases[index]) or "&#9632;"}{state}</td>'
                    f'<td style="color:#555">{html.escape(path)}</td></tr>')
    legend = f'<table style="font-size:90%">{"".join(rows)}</table>' if rows else ""
    return f"<p><b>Q:</b> {html.escape(answer.question)}</p>{body}{legend}"


def region_picture(subject: Subject, tree: ConceptTree, region: Region | None) -> np.ndarray:
    """The subject's image with the region highlighted (the rest dimmed); the plain image without one."""
    image = subject.face.image
    if region is None:
        return image
    if region.kind == "concept":
        return highlight(subject.face, tree, region.concept)
    dimmed = np.where(region.mask[..., None], image, (image * DIM).astype(np.uint8))
    return overlay(dimmed, [region.mask], [BOX_COLOUR], alpha=0.25)


# --- the app ---------------------------------------------------------------------------------------------------


def _error(message: str) -> str:
    return f'<span style="color:#b00020">&#9888; {html.escape(message)}</span>'


@dataclass
class _Selection:
    """Where the app stands: the subject shown, its verdict, the region, the answer, the concept path of
    each of its masks and the masks switched off."""

    index: int = 0
    subject: Subject | None = None
    verdict: Verdict | None = None
    region: Region | None = None
    answer: Answer | None = None
    paths: list[list[str]] = field(default_factory=list)
    hidden: set[int] = field(default_factory=set)


class AnalysisApp:
    """Pick an image, click a region, ask a question, read the grounded answer.

    Args:
        model: a FiFa-MLLM (``FiFaMLLM.from_pretrained(run_dir / "model/best")``).
        images: image records to pick from (``load_datasets(run_dir).images["test"]``); photos are added
            by the upload button or :meth:`add_photo`.
        tree: the FICT the clicks are read with (default :func:`load_tree`).
        index: the image shown first.
        concept: the concept selected first (an id or name), or None.
        question: the question selected first: a task id of :func:`question_choices` or free text.
        max_new_tokens: the longest answer generated.
        photo_size: the side of an uploaded photo's aligned face crop.
        display_width: pixels each face picture takes on screen.

    Building the app computes the first verdict but asks nothing; call :meth:`ask` (or click the face).
    Every widget carries a CSS class ``fifa-*`` so browser tests find it (see the attributes' names).
    """

    def __init__(self, model: FiFaMLLM, images: Sequence[Mapping[str, Any]], tree: ConceptTree | None = None,
                 index: int = 0, concept: str | None = None, question: str = DEFAULT_QUESTION,
                 max_new_tokens: int = 64, photo_size: int = 256, display_width: int = 320):
        if not len(images):
            raise ValueError("no images to analyse: pass the image records of a split with images "
                             "(load_datasets(run_dir).images['test'])")
        if not 0 <= index < len(images):
            raise IndexError(f"image index {index} is out of range: there are {len(images)} images")
        self.model = model
        self.images = images
        self.tree = load_tree() if tree is None else tree
        self.max_new_tokens = max_new_tokens
        self.photo_size = photo_size
        self.uploads: list[Subject] = []
        self.state = _Selection()
        self._point: tuple[float, float] | None = None  # last clicked point, re-read when the level changes
        self._corner: tuple[float, float] | None = None  # first corner of a box being drawn

        width = widgets.Layout(width=f"{display_width}px")
        self.picker = self._classed(widgets.Dropdown(options=self._image_options(), value=index, description="Image"),
                                    "fifa-image-picker")
        self.upload = self._classed(widgets.FileUpload(accept="image/*", multiple=False, description="Upload photo"),
                                    "fifa-upload")
        self.verdict_html = self._classed(widgets.HTML(), "fifa-verdict")
        self.level = self._classed(widgets.ToggleButtons(options=[*LEVELS, BOX_MODE], value="leaf",
                                                         description="Click"), "fifa-level")
        self.concepts = self._classed(widgets.Dropdown(options=concept_options(self.tree), value=None,
                                                       description="Concept"), "fifa-concept-dropdown")
        self.box_fields = [widgets.IntText(description=name, layout=widgets.Layout(width="120px"))
                           for name in ("x0", "y0", "x1", "y1")]
        self.box_button = self._classed(widgets.Button(description="Use box"), "fifa-box")
        self.face_image = self._classed(widgets.Image(format="png", layout=width), "fifa-face")
        self.answer_image = self._classed(widgets.Image(format="png", layout=width), "fifa-overlay")
        self.events = ipyevents.Event(source=self.face_image, watched_events=["click"])
        self.concept_html = self._classed(widgets.HTML(), "fifa-concept")
        choices = question_choices()
        self.question = self._classed(widgets.Dropdown(options=choices, value=choices[0][1], description="Question",
                                                       layout=widgets.Layout(width="640px")), "fifa-question")
        self.free_text = self._classed(widgets.Text(placeholder="Free text, e.g. Is this region blurred?",
                                                    layout=widgets.Layout(width="480px")), "fifa-free-text")
        self.ask_button = self._classed(widgets.Button(description="Ask", button_style="primary"), "fifa-ask")
        self.reference_button = self._classed(widgets.Button(description="Show reference"), "fifa-reference")
        self.status = self._classed(widgets.HTML(), "fifa-status")
        self.phrase_toggles = self._classed(widgets.HBox(), "fifa-phrases")
        self.answer_html = self._classed(widgets.HTML("<i>No answer yet: click the face or press Ask.</i>"),
                                         "fifa-answer")
        self.widget = widgets.VBox([
            widgets.HBox([self.picker, self.upload]),
            self.verdict_html,
            widgets.HBox([self.level, self.concepts]),
            widgets.HBox([*self.box_fields, self.box_button]),
            widgets.HBox([self.face_image, self.answer_image]),
            self.concept_html,
            self.question,
            widgets.HBox([self.free_text, self.ask_button, self.reference_button]),
            self.status,
            self.phrase_toggles,
            self.answer_html,
        ])

        self._set_question(question)
        self._load(index)
        if concept is not None:
            self._set_region(self._checked(lambda: region_from_concept(self.tree, self._labels, concept)))
        self._wire()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @staticmethod
    def _classed(widget: widgets.DOMWidget, css_class: str) -> Any:
        widget.add_class(css_class)
        return widget

    def _wire(self) -> None:
        self.events.on_dom_event(self._on_click)
        self.picker.observe(self._on_picker, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.level.observe(self._on_level, names="value")
        self.concepts.observe(self._on_concept, names="value")
        self.box_button.on_click(lambda _: self.select_box(tuple(f.value for f in self.box_fields)))
        self.ask_button.on_click(lambda _: self.ask())
        self.reference_button.on_click(lambda _: self.show_reference())

    # --- state read by the methods -----------------------------------------------------------------

    @property
    def subject(self) -> Subject:
        """The image shown."""
        return self.state.subject

    @property
    def verdict(self) -> Verdict:
        """The model's verdict on the image shown."""
        return self.state.verdict

    @property
    def region(self) -> Region | None:
        """The selected region, or None."""
        return self.state.region

    @property
    def answer(self) -> Answer | None:
        """The answer shown, or None."""
        return self.state.answer

    @property
    def hidden(self) -> set[int]:
        """Indices of the masks switched off."""
        return self.state.hidden

    @property
    def _labels(self) -> np.ndarray:
        return self.subject.face.label_map

    def current_question(self) -> Question:
        """The selected question; for free text the typed words (ValueError when none are typed)."""
        question = self.question.value
        return free_question(self.free_text.value) if question.task == FREE_TEXT else question

    # --- images -----------------------------------------------------------------------------------------

    def _image_options(self) -> list[tuple[str, int]]:
        names = list(self.images["image_id"]) if hasattr(self.images, "column_names") else \
            [record["image_id"] for record in self.images]
        return [*((name, k) for k, name in enumerate(names)),
                *((f"upload: {s.name}", len(names) + k) for k, s in enumerate(self.uploads))]

    def _subject_at(self, index: int) -> Subject:
        count = len(self.images)
        return subject_from_record(self.images[index]) if index < count else self.uploads[index - count]

    def _load(self, index: int) -> None:
        """Show image ``index`` with its verdict; keep the region where the new face allows it."""
        state = self.state
        state.index, state.subject = index, self._subject_at(index)
        self.picker.value = index  # the picker handler sees the same index and does not call back in
        state.verdict = verdict(self.model, state.subject.face.image)
        self.verdict_html.value = verdict_html(state.verdict, state.subject.truth)
        self.reference_button.disabled = state.subject.reference is None
        self._point = self._corner = None
        region = state.region
        if region is not None:
            region = self._checked(lambda: region_from_concept(self.tree, self._labels, region.concept)
                                   if region.kind == "concept" else region_from_box(region.box, self._labels.shape))
        self._set_region(region)
        self._show_answer(None)

    def select_image(self, index: int) -> None:
        """Show image ``index`` (test images first, then uploads) and ask the current question about it
        (unless it is a region question and the new face has no region selected)."""
        self.status.value = ""
        self._load(index)
        if self.region is not None or self.question.value.task not in REGION_TASKS:
            self.ask()

    def add_photo(self, photo: bytes | ImageSource, name: str = "photo") -> Subject | None:
        """Detect and align the face in a photo, add it to the picker, show and ask about it.

        A photo that cannot be read or has no face leaves the app as it was, with the reason shown.
        """
        try:
            subject = subject_from_photo(photo, name, self.photo_size)
        except ValueError as error:  # ImageError and NoFaceError
            self.status.value = _error(str(error))
            return None
        self.uploads.append(subject)
        self.picker.options = self._image_options()
        self.select_image(len(self.images) + len(self.uploads) - 1)
        return subject

    # --- regions ----------------------------------------------------------------------------------------

    @property
    def depth(self) -> int | None:
        """The depth clicks resolve to: None for leaves (and in box mode), 1 for regions."""
        return LEVELS.get(self.level.value)

    def _checked(self, make: Any) -> Any:
        """``make()``, or None with its message shown when the input is bad (ValueError, KeyError)."""
        try:
            return make()
        except (ValueError, KeyError) as error:
            self.status.value = _error(str(error.args[0]) if error.args else str(error))
            return None

    def _set_region(self, region: Region | None) -> None:
        self.state.region = region
        self.face_image.value = png_bytes(region_picture(self.subject, self.tree, region))
        self.concept_html.value = region_label(self.tree, region)
        # The concept handler sees its value already equals the selection and does not call back in.
        self.concepts.value = region.concept if region is not None and region.kind == "concept" else None
        if region is not None and region.kind == "box":
            for field_widget, value in zip(self.box_fields, region.box):
                field_widget.value = value

    def _region_changed(self, region: Region | None) -> None:
        self._set_region(region)
        if region is not None and self.question.value.uses_region:
            self.ask()

    def select_point(self, x: float, y: float) -> Region | None:
        """Select the concept at image pixel ``(x, y)`` at the current level and ask about it.

        Off the image (or where no concept is drawn) the selection stays and a message says why.
        """
        self._point = (x, y)
        self.status.value = ""
        region = self._checked(lambda: region_from_point(self.tree, self._labels, x, y, self.depth))
        if region is None:
            if not self.status.value:  # region_from_point found nothing there, without an error of its own
                self.status.value = _error(f"no face concept at ({x:.0f}, {y:.0f}); click inside the image")
            return None
        self._region_changed(region)
        return region

    def select_concept(self, concept_id: str | None) -> Region | None:
        """Select a concept by id or name and ask about it; None clears the selection."""
        self._point = None
        self.status.value = ""
        region = None if concept_id is None else \
            self._checked(lambda: region_from_concept(self.tree, self._labels, concept_id))
        if region is None and concept_id is not None:
            return None
        self._region_changed(region)
        return region

    def select_box(self, box: Sequence[float]) -> Region | None:
        """Select a box ``(x0, y0, x1, y1)`` in image pixels (any two opposite corners) and ask about it."""
        self._point = None
        self.status.value = ""
        region = self._checked(lambda: region_from_box(box, self._labels.shape))
        if region is not None:
            self._region_changed(region)
        return region

    def box_corner(self, x: float, y: float) -> Region | None:
        """One click of box drawing: the first click marks a corner, the second selects the box."""
        if self._corner is None:
            self._corner = (x, y)
            marked = region_picture(self.subject, self.tree, self.region).copy()
            cv2.drawMarker(marked, (int(x), int(y)), BOX_COLOUR, cv2.MARKER_CROSS, 12, 2)
            self.face_image.value = png_bytes(marked)
            self.status.value = f"First corner at ({x:.0f}, {y:.0f}): click the opposite corner."
            return None
        corner, self._corner = self._corner, None
        return self.select_box((*corner, x, y))

    # --- asking and showing -----------------------------------------------------------------------------

    def _set_question(self, question: str) -> None:
        chosen = question_from(question)
        if chosen.task == FREE_TEXT:
            self.question.value = next(q for _, q in question_choices() if q.task == FREE_TEXT)
            self.free_text.value = chosen.template
        else:
            self.question.value = chosen

    def ask(self) -> Answer | None:
        """Ask the current question about the selected region; a problem is shown, not raised."""
        try:
            question = self.current_question()
            # the module-level ask(), not this method: method names are not in scope inside methods
            answer = ask(self.model, self.subject.face.image, question, self.region, self.max_new_tokens)
        except ValueError as error:
            self.status.value = _error(str(error))
            return None
        self.status.value = ""
        self._show_answer(answer)
        return answer

    def show_reference(self) -> Answer | None:
        """Show the annotator's explanation of a dataset image (what the model was trained to say)."""
        reference = self.subject.reference
        if reference is None:
            self.status.value = _error("an uploaded photo has no reference explanation")
            return None
        self._show_answer(reference)
        return reference

    def _show_answer(self, answer: Answer | None) -> None:
        self.state.answer, self.state.hidden = answer, set()
        if answer is None:
            self.phrase_toggles.children = ()
            self.answer_html.value = "<i>No answer yet: click the face or press Ask.</i>"
            self.answer_image.value = png_bytes(self.subject.face.image)
            return
        phrases = mask_phrases(answer.response.text)
        self.state.paths = phrase_concepts(self.tree, phrases)
        toggles = []
        for index, (phrase, colour) in enumerate(zip(phrases, mask_colours(len(phrases)))):
            toggle = widgets.ToggleButton(value=True, description=phrase or f"mask {index + 1}",
                                          tooltip=PATH_SEPARATOR.join(self.state.paths[index]) or UNRESOLVED)
            toggle.style.text_color = "rgb({},{},{})".format(*colour)
            toggle.style.font_weight = "bold"
            toggle.observe(lambda change, i=index: self._on_toggle(i, change), names="value")
            toggles.append(toggle)
        self.phrase_toggles.children = tuple(toggles)
        self._render_answer()

    def _render_answer(self) -> None:
        answer, hidden = self.answer, self.hidden
        self.answer_html.value = answer_html(answer, self.state.paths, hidden)
        self.answer_image.value = png_bytes(answer_overlay(self.subject.face.image, answer.response.masks, hidden))

    def toggle_phrase(self, index: int) -> bool:
        """Switch grounded phrase ``index`` (and its mask) off or back on; returns whether it is shown now."""
        count = len(self.phrase_toggles.children)
        if not 0 <= index < count:
            raise IndexError(f"phrase {index} does not exist: the answer has {count} grounded phrases")
        self.hidden.symmetric_difference_update({index})
        shown = index not in self.hidden
        toggle = self.phrase_toggles.children[index]
        toggle.style.text_decoration = "" if shown else "line-through"
        toggle.value = shown  # its handler sees the state already matches and does not call back in
        self._render_answer()
        return shown

    # --- widget events ----------------------------------------------------------------------------------

    def _on_click(self, event: dict[str, Any]) -> None:
        # The image may be displayed scaled; map the click from displayed to image pixels.
        height, width = self.subject.face.size
        x = event["relativeX"] * width / event["boundingRectWidth"]
        y = event["relativeY"] * height / event["boundingRectHeight"]
        if self.level.value == BOX_MODE:
            self.box_corner(x, y)
        else:
            self.select_point(x, y)

    def _on_picker(self, change: dict[str, Any]) -> None:
        if change["new"] != self.state.index:
            self.select_image(change["new"])

    def _on_upload(self, change: dict[str, Any]) -> None:
        for item in change["new"]:
            self.add_photo(bytes(item["content"]), item["name"])

    def _on_level(self, change: dict[str, Any]) -> None:
        self._corner = None
        if change["new"] == BOX_MODE:
            self.status.value = "Box mode: click two opposite corners of the box."
        elif self._point is not None:
            # switching leaf <-> region re-reads the last clicked point at the new granularity
            self.select_point(*self._point)

    def _on_concept(self, change: dict[str, Any]) -> None:
        selected = self.region.concept if self.region is not None else None
        if change["new"] != selected:
            self.select_concept(change["new"])

    def _on_toggle(self, index: int, change: dict[str, Any]) -> None:
        if change["new"] == (index in self.hidden):
            self.toggle_phrase(index)
