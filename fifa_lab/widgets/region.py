"""Point at a face, see which FICT concept is there: plain callbacks plus an ipywidgets front end.

The callbacks (:func:`concept_at`, :func:`concept_path`, :func:`highlight`, :func:`concept_options`)
are plain functions so tests and scripts use them without a browser; :class:`RegionExplorer` only wires
them to widgets, and its :meth:`~RegionExplorer.select_point` / :meth:`~RegionExplorer.select_concept`
are exactly what a click or a dropdown choice calls.
"""
from __future__ import annotations

import html
from typing import Any

import cv2
import ipyevents
import ipywidgets as widgets
import numpy as np

from fifa_lab.faces.face import Face
from fifa_lab.fict.tree import Concept, ConceptTree, load_tree
from fifa_lab.viz.overlay import concept_colours, overlay

DIM = 0.35  # brightness kept outside the highlighted concept
LEVELS = {"leaf": None, "region": 1}  # toggle label -> depth passed to concept_at


def concept_at(tree: ConceptTree, label_map: np.ndarray, x: float, y: float, depth: int | None = None,
               ) -> Concept | None:
    """The leaf shown at pixel ``(x, y)`` of an ``(H, W)`` label map, or its ancestor at ``depth``.

    ``x`` is the column and ``y`` the row (fractions are floored). None outside the image or where
    the label map has no concept (-1).
    """
    col, row = int(np.floor(x)), int(np.floor(y))
    height, width = label_map.shape
    if not (0 <= row < height and 0 <= col < width) or label_map[row, col] < 0:
        return None
    leaf = tree.leaves()[int(label_map[row, col])]
    return leaf if depth is None else tree.ancestor_at_depth(leaf.id, depth)


def concept_path(tree: ConceptTree, concept_id: str) -> list[str]:
    """Readable names from the root down to the concept."""
    return [c.name for c in tree.path(concept_id)]


def _labels(face: Face, tree: ConceptTree) -> np.ndarray:
    if face.label_map is not None:
        return face.label_map
    return tree.label_map(face.landmarks, face.size, face.attributes)


def visible_mask(tree: ConceptTree, label_map: np.ndarray, concept_id: str) -> np.ndarray:
    """``(H, W)`` bool: the pixels the label map gives to the concept or any leaf under it."""
    members = [tree.leaf_index[leaf.id] for leaf in tree.leaves(concept_id)]
    return np.isin(label_map, members)


def highlight(face: Face, tree: ConceptTree, concept_id: str, alpha: float = 0.5) -> np.ndarray:
    """The face with the concept's visible pixels tinted in its colour and everything else dimmed.

    Returns:
        ``(H, W, 3)`` uint8 RGB. A concept the face lacks (no glasses) leaves the whole face dimmed.
    """
    mask = visible_mask(tree, _labels(face, tree), concept_id)
    dimmed = np.where(mask[..., None], face.image, (face.image * DIM).astype(np.uint8))
    colour = concept_colours(tree)[tree.get(concept_id).id]
    return overlay(dimmed, [mask], [colour], alpha=alpha)


def concept_options(tree: ConceptTree, depth: int | None = None) -> list[tuple[str, str]]:
    """``(label, id)`` pairs for a dropdown, in tree order, names indented by depth, down to ``depth``."""
    # Non-breaking spaces: browsers collapse ordinary leading spaces in <option> text.
    return [("\u00a0\u00a0\u00a0" * tree.depth(c.id) + c.name, c.id)
            for c in tree if depth is None or tree.depth(c.id) <= depth]


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as PNG")
    return data.tobytes()


class RegionExplorer:
    """Click a face (or pick from the dropdown) to highlight a concept and read its path and description.

    Attributes:
        selected: the selected concept id, or None.
        image: the ``ipywidgets.Image`` showing the (highlighted) face.
        events: the ``ipyevents.Event`` delivering clicks on ``image``.
        dropdown, level, path_html: the concept chooser, the 'leaf'/'region' toggle and the path text.
        widget: the top-level ``VBox``; display it (or the explorer itself) in a notebook.
    """

    def __init__(self, face: Face, tree: ConceptTree | None = None, display_width: int = 384):
        self.face = face
        self.tree = load_tree() if tree is None else tree
        self.label_map = _labels(face, self.tree)
        self.selected: str | None = None
        self._point: tuple[float, float] | None = None

        self.image = widgets.Image(value=_png(face.image), format="png",
                                   layout=widgets.Layout(width=f"{display_width}px"))
        self.events = ipyevents.Event(source=self.image, watched_events=["click"])
        self.events.on_dom_event(self._on_click)
        self.level = widgets.ToggleButtons(options=list(LEVELS), value="leaf", description="Level")
        self.level.observe(self._on_level, names="value")
        self.dropdown = widgets.Dropdown(options=concept_options(self.tree), value=None, description="Concept")
        self.dropdown.observe(self._on_dropdown, names="value")
        self.path_html = widgets.HTML("<i>Click the face or choose a concept.</i>")
        self.widget = widgets.VBox([
            widgets.HBox([self.level, self.dropdown]),
            widgets.HBox([self.image, self.path_html]),
        ])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def depth(self) -> int | None:
        """The depth clicks resolve to: None for leaves, 1 for regions."""
        return LEVELS[self.level.value]

    def select_point(self, x: float, y: float) -> Concept | None:
        """Select the concept at image pixel ``(x, y)`` at the current level; None (and cleared) off the face."""
        self._point = (x, y)
        concept = concept_at(self.tree, self.label_map, x, y, self.depth)
        self._show(None if concept is None else concept.id)
        return concept

    def select_concept(self, concept_id: str | None) -> None:
        """Select a concept by id or name (None clears the selection)."""
        self._point = None
        self._show(None if concept_id is None else self.tree.get(concept_id).id)

    def _show(self, concept_id: str | None) -> None:
        self.selected = concept_id
        # The dropdown handler sees its value already equals `selected` and does not call back in.
        self.dropdown.value = concept_id
        if concept_id is None:
            self.image.value = _png(self.face.image)
            self.path_html.value = "<i>No concept here.</i>"
            return
        self.image.value = _png(highlight(self.face, self.tree, concept_id))
        node = self.tree.get(concept_id)
        path = " &rsaquo; ".join(html.escape(name) for name in concept_path(self.tree, concept_id))
        self.path_html.value = (f"<b>{path}</b><br><code>{html.escape(node.id)}</code> "
                                f"(side: {node.side})<br>{html.escape(node.description)}")

    def _on_click(self, event: dict[str, Any]) -> None:
        # The image may be displayed scaled; map the click from displayed to image pixels.
        height, width = self.face.size
        x = event["relativeX"] * width / event["boundingRectWidth"]
        y = event["relativeY"] * height / event["boundingRectHeight"]
        self.select_point(x, y)

    def _on_dropdown(self, change: dict[str, Any]) -> None:
        if change["new"] != self.selected:
            self.select_concept(change["new"])

    def _on_level(self, change: dict[str, Any]) -> None:
        # Switching level re-reads the last clicked point at the new granularity.
        if self._point is not None:
            self.select_point(*self._point)
