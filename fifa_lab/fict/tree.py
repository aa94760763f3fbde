"""The Facial Image Concept Tree (FICT): loading, validation, lookup, masks and label maps.

A tree file (YAML or JSON) has ``name``, optional ``shapes`` (named helper masks that recipes clip to or
subtract, never concepts themselves) and ``concepts``: a list of nodes with ``id``, ``name``, ``parent``
(null for the one root), ``side`` (``left``/``right`` = the *subject's* side, or ``none``),
``description``, optional ``layer`` (inherited by descendants) and, on leaves only, a geometry
``recipe`` (see :mod:`fifa_lab.fict.geometry`). A parent's mask is the union of its children's.

Overlap policy of the label map: leaf masks may overlap (a fringe over the forehead, a lens over the
eye). Each pixel takes the leaf with the highest ``layer``; within one layer the leaf listed later in
the file wins. Rasterisation leaves slivers where neighbouring shapes meet; gaps up to
``GAP_FILL`` pixels wide take a neighbouring leaf, wider uncovered areas stay -1. So the label map shows
what is visible, while :meth:`ConceptTree.masks` gives each concept's whole extent.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from fifa_lab.fict import geometry

DEFAULT_TREE = Path(__file__).with_name("fict112.yaml")
SIDES = ("left", "right", "none")
GAP_FILL = 2  # pixels on each side of a rasterisation sliver filled from neighbouring leaves


class TreeError(ValueError):
    """A tree file that cannot be used; the message names the offending node."""


@dataclass(frozen=True)
class Concept:
    """One node of the tree. ``recipe`` is set on leaves only; ``layer`` orders the label map."""

    id: str
    name: str
    parent: str | None
    side: str = "none"
    description: str = ""
    layer: int = 0
    recipe: Mapping[str, Any] | None = field(default=None, compare=False)


class ConceptTree:
    """A validated concept tree. Build it with :func:`load_tree`."""

    def __init__(self, concepts: list[Concept], shapes: Mapping[str, Mapping[str, Any]], name: str = "fict"):
        self.name = name
        self.shapes = dict(shapes)
        self._points = geometry.PointTable()
        self._recipes = {key: geometry.compile_recipe(recipe, self._points) for key, recipe in shapes.items()}
        self._recipes.update({c.id: geometry.compile_recipe(c.recipe, self._points) for c in concepts if c.recipe is not None})
        # Masks drawn per call: one per recipe, union part and parent (see geometry.MaskArena).
        self._planes = len(self._recipes) + len(concepts) + sum(len(r.get("parts", [])) for r in self._recipes.values())
        self._nodes = {c.id: c for c in concepts}
        self._order = [c.id for c in concepts]
        self._children: dict[str, list[str]] = {c.id: [] for c in concepts}
        for c in concepts:
            if c.parent is not None:
                self._children[c.parent].append(c.id)
        self._by_name = {c.name.lower(): c.id for c in concepts}
        self.root = next(c.id for c in concepts if c.parent is None)
        self._leaves = [i for i in self._order if not self._children[i]]
        self.leaf_index = {leaf: k for k, leaf in enumerate(self._leaves)}
        # Parents after their children, so each union is built from finished masks.
        self._bottom_up = sorted((i for i in self._order if self._children[i]), key=self.depth, reverse=True)
        self._paint_order = sorted(self._leaves, key=lambda i: (self._nodes[i].layer, self._order.index(i)))

    # --- lookup -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Concept]:
        return (self._nodes[i] for i in self._order)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._nodes or key.lower() in self._by_name)

    def get(self, key: str) -> Concept:
        """The concept with this id or readable name (case-insensitive); KeyError with suggestions."""
        if key in self._nodes:
            return self._nodes[key]
        if isinstance(key, str) and key.lower() in self._by_name:
            return self._nodes[self._by_name[key.lower()]]
        close = difflib.get_close_matches(str(key), list(self._nodes) + [c.name for c in self], n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"no concept '{key}' in tree '{self.name}'{hint}")

    def children(self, key: str) -> list[Concept]:
        return [self._nodes[i] for i in self._children[self.get(key).id]]

    def parent(self, key: str) -> Concept | None:
        parent = self.get(key).parent
        return None if parent is None else self._nodes[parent]

    def ancestors(self, key: str) -> list[Concept]:
        """From the parent up to the root."""
        chain, node = [], self.get(key)
        while node.parent is not None:
            node = self._nodes[node.parent]
            chain.append(node)
        return chain

    def path(self, key: str) -> list[Concept]:
        """From the root down to the concept itself."""
        return self.ancestors(key)[::-1] + [self.get(key)]

    def depth(self, key: str) -> int:
        """0 for the root."""
        return len(self.ancestors(key))

    def is_leaf(self, key: str) -> bool:
        return not self._children[self.get(key).id]

    def leaves(self, under: str | None = None) -> list[Concept]:
        """Atomic concepts in file order, all or those below ``under``."""
        if under is None:
            return [self._nodes[i] for i in self._leaves]
        top = self.get(under).id
        return [self._nodes[i] for i in self._leaves if i == top or top in {a.id for a in self.ancestors(i)}]

    def ancestor_at_depth(self, key: str, depth: int) -> Concept:
        """The concept's ancestor at ``depth`` (the concept itself when it is shallower)."""
        path = self.path(key)
        return path[min(depth, len(path) - 1)]

    # --- geometry -----------------------------------------------------------------------------
    def masks(self, landmarks: Any, size: tuple[int, int], attributes: Mapping[str, Any] | None = None,
              ) -> dict[str, np.ndarray]:
        """Masks of every concept for one face.

        Args:
            landmarks: ``(68, 2)`` pixel coordinates ``(x, y)`` in iBUG order.
            size: ``(height, width)`` of the image.
            attributes: what landmarks cannot tell (``glasses``, ``earrings``, ``beard``, ``moustache``,
                ``fringe``); missing ones count as false, so those concepts get empty masks.
                ``mouth_open`` is measured from the inner lips unless given.

        Returns:
            ``{concept_id: (H, W) bool}`` for leaves and parents (parents are unions of children).
        """
        ctx = geometry.GeometryContext(landmarks, size, self._points, attributes, planes=self._planes)
        drawn: dict[str, np.ndarray] = {}

        def resolve(name: str) -> np.ndarray:
            if name not in drawn:
                recipe = self._recipes.get(name)
                # A parent concept (no recipe) is the union of its children.
                drawn[name] = self._union(name, resolve, ctx) if recipe is None else geometry.draw(ctx, recipe, resolve)
            return drawn[name]

        try:
            for leaf in self._leaves:
                resolve(leaf)
            for parent in self._bottom_up:
                resolve(parent)
        finally:
            # resolve refers to itself; breaking that cycle lets the ~9 MB of masks of a call go as soon as
            # the caller drops them instead of at the next full garbage collection.
            del resolve
        # Drawn masks hold 0/1 bytes, so a bool view is exact and costs no copy.
        return {i: drawn[i].view(bool) for i in self._order}

    def _union(self, key: str, resolve: Callable[[str], np.ndarray], ctx: geometry.GeometryContext) -> np.ndarray:
        mask = ctx.empty()
        for child in self._children[key]:
            cv2.bitwise_or(mask, resolve(child), dst=mask)
        return mask

    def label_map(self, landmarks: Any, size: tuple[int, int], attributes: Mapping[str, Any] | None = None,
                  masks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """``(H, W)`` int16 map of the most specific visible leaf (index into :meth:`leaves`), -1 for none.

        Pass ``masks`` from :meth:`masks` to avoid drawing them again.
        """
        if masks is None:
            masks = self.masks(landmarks, size, attributes)
        height, width = (int(s) for s in size)
        labels = np.full((height, width), -1, dtype=np.int16)
        for leaf in self._paint_order:
            labels[masks[leaf]] = self.leaf_index[leaf]
        for _ in range(GAP_FILL):
            gaps = labels < 0
            if not gaps.any():
                break
            # Shifted by one so -1 becomes 0 and never wins the maximum over a neighbourhood.
            grown = cv2.dilate((labels + 1).astype(np.uint16), np.ones((3, 3), np.uint8)).astype(np.int16) - 1
            labels[gaps] = grown[gaps]
        return labels

    def visible_masks(self, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Per-concept masks of what the label map shows (leaves and parents), ``{id: (H, W) bool}``."""
        leaf_masks = {leaf.id: label_map == k for k, leaf in enumerate(self.leaves())}
        out: dict[str, np.ndarray] = {}
        for key in self._order:
            members = self.leaves(key)
            if len(members) == 1 and members[0].id == key:
                out[key] = leaf_masks[key]
            else:
                ids = np.array([self.leaf_index[m.id] for m in members], dtype=np.int16)
                out[key] = np.isin(label_map, ids)
        return out

    # --- text ---------------------------------------------------------------------------------
    def outline(self, max_depth: int | None = None, show_ids: bool = True) -> str:
        """An indented text outline of the tree; parents show their leaf counts."""
        lines = []

        def walk(key: str, depth: int) -> None:
            node = self._nodes[key]
            label = f"{node.name} [{key}]" if show_ids else node.name
            if self._children[key]:
                label += f" ({len(self.leaves(key))} leaves)"
            lines.append("  " * depth + label)
            if max_depth is None or depth < max_depth:
                for child in self._children[key]:
                    walk(child, depth + 1)

        walk(self.root, 0)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The tree as the plain data a tree file holds."""
        concepts = []
        for c in self:
            entry = {"id": c.id, "name": c.name, "parent": c.parent, "side": c.side,
                     "description": c.description, "layer": c.layer}
            if c.recipe is not None:
                entry["recipe"] = dict(c.recipe)
            concepts.append(entry)
        # A deep copy: the default tree is shared, so callers must not reach its internals.
        return copy.deepcopy({"name": self.name, "shapes": self.shapes, "concepts": concepts})


def coarse_tree(tree: ConceptTree | None = None, depth: int = 1) -> ConceptTree:
    """``tree`` cut at ``depth``: every concept there becomes a leaf covering all the leaves it had.

    The coarse-vocabulary arm of the ablation (depth 1 of the FICT gives 12 regions such as ``eyes`` and
    ``mouth``, the granularity of a face parser). Geometry is kept exactly: the concepts below the cut
    become named shapes (so recipes that clip to them still work) and a new leaf is the union of its old
    leaves, written as "the image minus (the image minus those leaves)" because recipes have no union of
    names. Use :func:`leaf_lookup` to carry label maps of ``tree`` over to the coarse tree.
    """
    tree = load_tree() if tree is None else tree
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (1 = the children of the root), got {depth!r}")
    data = tree.to_dict()
    shapes = dict(data["shapes"])

    def as_union(key: str) -> dict[str, Any]:
        outside = f"{key}__outside"
        shapes[outside] = {"kind": "image", "minus": [leaf.id for leaf in tree.leaves(key)]}
        return {"kind": "image", "minus": [outside]}

    concepts = []
    for entry in data["concepts"]:
        key, level = entry["id"], tree.depth(entry["id"])
        if level > depth:
            shapes[key] = entry["recipe"] if "recipe" in entry else as_union(key)
        elif level == depth and not tree.is_leaf(key):
            layer = max(leaf.layer for leaf in tree.leaves(key))
            concepts.append({**entry, "layer": layer, "recipe": as_union(key)})
        else:
            concepts.append(entry)
    return tree_from_dict({"name": f"{tree.name}-depth{depth}", "shapes": shapes, "concepts": concepts},
                          source=f"{tree.name} cut at depth {depth}")


def leaf_lookup(fine: ConceptTree, coarse: ConceptTree) -> np.ndarray:
    """Index table ``t`` with ``t[fine_label_map]`` = the same map in ``coarse``'s leaves (-1 stays -1).

    Every leaf of ``fine`` must lie under a leaf of ``coarse`` with the same id (as :func:`coarse_tree`
    makes them).
    """
    table = np.full(len(fine.leaves()) + 1, -1, dtype=np.int16)  # the last entry is what -1 indexes
    for leaf in fine.leaves():
        above = [leaf.id] + [a.id for a in fine.ancestors(leaf.id)]
        hit = next((key for key in above if key in coarse.leaf_index), None)
        if hit is None:
            raise ValueError(f"leaf '{leaf.id}' of {fine.name} lies under no leaf of {coarse.name}")
        table[fine.leaf_index[leaf.id]] = coarse.leaf_index[hit]
    return table


def load_tree(path: str | Path | None = None) -> ConceptTree:
    """Load and validate a concept tree; ``None`` gives the default 112-leaf FICT (loaded once, shared)."""
    if path is None:
        return _default_tree()
    return _load_tree_file(Path(path))


@functools.lru_cache(maxsize=1)
def _default_tree() -> ConceptTree:
    return _load_tree_file(DEFAULT_TREE)


def _load_tree_file(path: Path) -> ConceptTree:
    if not path.is_file():
        raise FileNotFoundError(f"tree file {path} does not exist; pass a YAML/JSON tree file or None for the default")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TreeError(f"tree file {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from exc
    return tree_from_dict(data, source=str(path))


def tree_from_dict(data: Any, source: str = "<dict>") -> ConceptTree:
    """Validate plain tree data (as in a tree file) and build the tree; TreeError names the bad node.

    The tree keeps its own copy, so later edits to ``data`` do not reach it.
    """
    data = copy.deepcopy(data)
    if not isinstance(data, Mapping) or not isinstance(data.get("concepts"), list) or not data["concepts"]:
        raise TreeError(f"{source}: a tree needs a non-empty 'concepts' list")
    shapes = data.get("shapes") or {}
    if not isinstance(shapes, Mapping):
        raise TreeError(f"{source}: 'shapes' must map names to recipes")
    raw: dict[str, Mapping[str, Any]] = {}
    for entry in data["concepts"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise TreeError(f"{source}: every concept needs a string 'id', got {entry!r}")
        if entry["id"] in raw:
            raise TreeError(f"{source}: concept '{entry['id']}': duplicate id")
        if entry["id"] in shapes:
            raise TreeError(f"{source}: concept '{entry['id']}': id is also a shape name")
        raw[entry["id"]] = entry

    roots = [i for i, e in raw.items() if e.get("parent") is None]
    if len(roots) != 1:
        raise TreeError(f"{source}: a tree needs exactly one root (parent: null), found {roots or 'none'}")
    for key, entry in raw.items():
        parent = entry.get("parent")
        if parent is not None and parent not in raw:
            raise TreeError(f"{source}: concept '{key}': parent '{parent}' is not in the tree")
        if entry.get("side", "none") not in SIDES:
            raise TreeError(f"{source}: concept '{key}': side must be one of {SIDES}, got {entry.get('side')!r}")
        seen = {key}
        while parent is not None:  # walking up from every node finds any cycle
            if parent in seen:
                raise TreeError(f"{source}: concept '{key}': its ancestors form a cycle through '{parent}'")
            seen.add(parent)
            parent = raw[parent].get("parent")

    has_children = {e.get("parent") for e in raw.values()}
    names: dict[str, str] = {}
    concepts: list[Concept] = []
    layers: dict[str, int] = {}
    for key, entry in raw.items():
        name = str(entry.get("name", key))
        if name.lower() in names:
            raise TreeError(f"{source}: concept '{key}': name '{name}' is already used by '{names[name.lower()]}'")
        names[name.lower()] = key
        recipe = entry.get("recipe")
        if key in has_children and recipe is not None:
            raise TreeError(f"{source}: concept '{key}': a parent is the union of its children and takes no recipe")
        if key not in has_children:
            if recipe is None:
                raise TreeError(f"{source}: concept '{key}': a leaf needs a geometry recipe")
            try:
                geometry.compile_recipe(recipe, geometry.PointTable())
            except ValueError as exc:
                raise TreeError(f"{source}: concept '{key}': {exc}") from None
        concepts.append(Concept(key, name, entry.get("parent"), entry.get("side", "none"),
                                str(entry.get("description", "")), 0, recipe))
    for key, recipe in shapes.items():
        try:
            geometry.compile_recipe(recipe, geometry.PointTable())
        except ValueError as exc:
            raise TreeError(f"{source}: shape '{key}': {exc}") from None

    def layer_of(key: str) -> int:
        if key not in layers:
            entry = raw[key]
            if "layer" in entry:
                if isinstance(entry["layer"], bool) or not isinstance(entry["layer"], int):
                    raise TreeError(f"{source}: concept '{key}': layer must be an integer, got {entry['layer']!r}")
                layers[key] = entry["layer"]
            else:
                layers[key] = 0 if entry.get("parent") is None else layer_of(entry["parent"])
        return layers[key]

    concepts = [Concept(c.id, c.name, c.parent, c.side, c.description, layer_of(c.id), c.recipe) for c in concepts]
    _check_references(concepts, shapes, source)
    return ConceptTree(concepts, shapes, name=str(data.get("name", Path(source).stem)))


def _check_references(concepts: list[Concept], shapes: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Every clip/minus name must exist and the references must not loop."""
    children: dict[str, list[str]] = {}
    for c in concepts:
        if c.parent is not None:
            children.setdefault(c.parent, []).append(c.id)
    deps: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for c in concepts:
        deps[c.id] = geometry.references(c.recipe) if c.recipe is not None else children.get(c.id, [])
        kinds[c.id] = "concept"
    for key, recipe in shapes.items():
        deps[key] = geometry.references(recipe)
        kinds[key] = "shape"
    for key, refs in deps.items():
        for ref in refs:
            if ref not in deps:
                raise TreeError(f"{source}: {kinds[key]} '{key}': refers to unknown shape or concept '{ref}'")
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(key: str, trail: list[str]) -> None:
        state[key] = 1
        for ref in deps[key]:
            if state.get(ref) == 1:
                loop = " -> ".join(trail[trail.index(ref):] + [ref]) if ref in trail else f"{key} -> {ref}"
                raise TreeError(f"{source}: {kinds[key]} '{key}': recipe references form a cycle ({loop})")
            if state.get(ref) is None:
                visit(ref, trail + [ref])
        state[key] = 2

    for key in deps:
        if state.get(key) is None:
            visit(key, [key])
