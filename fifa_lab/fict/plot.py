"""Pictures of a concept tree: a horizontal dendrogram and leaf counts per region."""
from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from fifa_lab.fict.tree import ConceptTree

ROW_INCHES = 0.16  # one terminal node per row; enough for 7.5 pt labels not to touch
COLUMN_INCHES = 1.9  # one tree level per column, wide enough for the longest concept names
ELBOW = 0.3  # where, between two levels, a parent's connector turns down to its children


def region_leaf_counts(tree: ConceptTree, depth: int = 1) -> dict[str, int]:
    """Number of leaves under each concept at ``depth`` (a shallower leaf counts for itself), by name in tree order."""
    return dict(Counter(tree.ancestor_at_depth(leaf.id, depth).name for leaf in tree.leaves()))


def plot_tree(tree: ConceptTree, ax: Axes | None = None, max_depth: int | None = None) -> Figure:
    """Draw the tree as a horizontal dendrogram: the root on the left, one column per level.

    Terminal nodes take one row each, labelled to their right; a parent sits level with the middle
    of its children, labelled above its node with its leaf count. Nodes deeper than ``max_depth``
    fold into their ancestor's count. Colours follow each node's region
    (:func:`fifa_lab.viz.concept_colours`). Every drawn node gets exactly one text label.

    A new figure is sized to the tree (about 18 inches tall for all 112 FICT leaves); pass ``ax``
    to draw into an existing one.
    """
    from fifa_lab.viz.overlay import concept_colours  # viz imports the fict package

    def shown_children(key: str) -> list[str]:
        return [] if max_depth is not None and tree.depth(key) >= max_depth else [c.id for c in tree.children(key)]

    rows: dict[str, float] = {}
    terminals: list[str] = []

    def place(key: str) -> float:
        kids = shown_children(key)
        if kids:
            ys = [place(kid) for kid in kids]
            rows[key] = (ys[0] + ys[-1]) / 2
        else:
            rows[key] = len(terminals)
            terminals.append(key)
        return rows[key]

    place(tree.root)
    n_rows = len(terminals)
    n_levels = max(tree.depth(k) for k in rows) + 1
    if ax is None:
        fig, ax = plt.subplots(figsize=(COLUMN_INCHES * n_levels + 1.0, ROW_INCHES * n_rows + 0.8))
    colours = concept_colours(tree)

    segments = []
    for key in rows:
        kids = shown_children(key)
        if not kids:
            continue
        x, turn = tree.depth(key), tree.depth(key) + ELBOW
        segments.append([(x, rows[key]), (turn, rows[key])])
        segments.append([(turn, rows[kids[0]]), (turn, rows[kids[-1]])])
        segments += [[(turn, rows[kid]), (x + 1, rows[kid])] for kid in kids]
    ax.add_collection(LineCollection(segments, colors="0.6", linewidths=0.8))

    for key, y in rows.items():
        node, x = tree.get(key), tree.depth(key)
        region = tree.ancestor_at_depth(key, 1).id
        colour = np.array(colours[region]) / 255
        ax.scatter([x], [y], s=14 if tree.is_leaf(key) else 36, color=colour, zorder=3, edgecolors="0.3",
                   linewidths=0.4)
        label = node.name if tree.is_leaf(key) else f"{node.name} ({len(tree.leaves(key))})"
        weight = "bold" if x <= 1 else "normal"
        if key in terminals:
            ax.text(x + 0.06, y, label, fontsize=7.5, va="center", fontweight=weight)
        else:
            # Above the node: to its right runs the connector to its children.
            ax.text(x, y - 0.3, label, fontsize=7.5, ha="center", va="bottom", fontweight=weight)

    ax.set_xlim(-0.4, n_levels - 1 + 0.9)
    ax.set_ylim(n_rows - 0.5, -1.5)  # row 0 at the top
    ax.axis("off")
    ax.set_title(f"{tree.name}: {len(tree)} concepts, {len(tree.leaves())} leaves", fontsize=10)
    ax.figure.tight_layout()
    return ax.figure
