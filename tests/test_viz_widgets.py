"""Overlays, concept colours, the tree picture and the region explorer's callbacks (no browser)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from fifa_lab.faces import synth_face
from fifa_lab.fict import load_tree
from fifa_lab.fict.plot import plot_tree, region_leaf_counts
from fifa_lab.viz import concept_colours, depth_masks, face_gallery, label_map_image, overlay
from fifa_lab.widgets import RegionExplorer, concept_at, concept_options, concept_path, highlight


@pytest.fixture(scope="module")
def tree():
    return load_tree()


@pytest.fixture(scope="module")
def face():
    return synth_face(0)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def left_eye_centre(face) -> tuple[float, float]:
    """The mean of landmarks 42..47: the subject's left eye, on the image's right."""
    x, y = face.landmarks[42:48].mean(axis=0)
    return float(x), float(y)


# --- viz ---------------------------------------------------------------------------------------


def test_concept_colours_distinct_for_leaves_and_siblings(tree):
    colours = concept_colours(tree)
    assert set(colours) == {c.id for c in tree}
    assert all(len(rgb) == 3 and all(0 <= v <= 255 for v in rgb) for rgb in colours.values())
    assert len({colours[leaf.id] for leaf in tree.leaves()}) == len(tree.leaves())
    for node in tree:
        siblings = [colours[c.id] for c in tree.children(node.id)]
        assert len(set(siblings)) == len(siblings), node.id
    assert concept_colours(tree) == colours  # deterministic


def test_overlay_changes_masked_pixels_only():
    image = np.full((32, 40, 3), 100, np.uint8)
    mask = np.zeros((32, 40), bool)
    mask[8:20, 10:30] = True
    for masks, colours in (({"a": mask}, {"a": (255, 0, 0)}), ([mask], [(255, 0, 0)])):
        out = overlay(image, masks, colours, alpha=0.5, outline=False)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.all(out[~mask] == image[~mask])
        assert np.all(out[mask] == (178, 50, 50))
    outlined = overlay(image, [mask], [(255, 0, 0)], alpha=0.5)
    assert np.all(outlined[8, 15] == (255, 0, 0)) and np.all(outlined[12, 15] == (178, 50, 50))
    assert np.all(outlined[~mask] == image[~mask])
    assert overlay(image[..., 0], [mask]).shape == (32, 40, 3)  # grey input, default colours


def test_label_map_image_and_depth_masks(tree, face):
    leaves = label_map_image(tree, face.label_map)
    regions = label_map_image(tree, face.label_map, depth=1)
    colours = concept_colours(tree)
    assert leaves.shape == face.image.shape and leaves.dtype == np.uint8
    x, y = (int(v) for v in left_eye_centre(face))
    leaf = tree.leaves()[face.label_map[y, x]]
    assert tuple(leaves[y, x]) == colours[leaf.id]
    assert tuple(regions[y, x]) == colours["eyes"]
    assert len({tuple(c) for c in regions.reshape(-1, 3)}) <= len(tree.children(tree.root)) + 1

    masks = depth_masks(tree, face.label_map, depth=1)
    assert list(masks) == [c.id for c in tree.children(tree.root)]
    stacked = np.stack(list(masks.values()))
    assert np.array_equal(stacked.sum(axis=0), (face.label_map >= 0).astype(int))  # a partition
    assert masks["eyes"][y, x]


def test_face_gallery(tree):
    faces = [synth_face(seed, size=96) for seed in range(3)]
    fig = face_gallery(faces, tree, overlay_depth=1, ncols=2)
    assert len(fig.axes) == 4 and fig.legends
    assert len(face_gallery([f.image for f in faces]).axes) == 3


def test_plot_tree_labels_every_node(tree):
    full = plot_tree(tree)
    assert len(full.axes[0].texts) == len(tree) == 141
    regions = plot_tree(tree, max_depth=1)
    labels = [t.get_text() for t in regions.axes[0].texts]
    assert len(labels) == 1 + len(tree.children(tree.root))
    assert "eyes (20)" in labels
    fig, ax = plt.subplots()
    assert plot_tree(tree, ax=ax, max_depth=2) is fig


def test_region_leaf_counts(tree):
    counts = region_leaf_counts(tree)
    assert counts["eyes"] == 20 and counts["nose"] == 11
    assert list(counts) == [c.name for c in tree.children(tree.root)]
    assert sum(counts.values()) == sum(region_leaf_counts(tree, depth=3).values()) == 112


# --- widget callbacks --------------------------------------------------------------------------


def test_concept_at(tree, face):
    x, y = left_eye_centre(face)
    leaf = concept_at(tree, face.label_map, x, y)
    assert leaf is not None and tree.is_leaf(leaf.id)
    assert "eye_left" in {a.id for a in tree.ancestors(leaf.id)}
    assert concept_at(tree, face.label_map, x, y, depth=1).id == "eyes"
    path = concept_path(tree, leaf.id)
    assert path[0] == tree.get(tree.root).name and path[-1] == leaf.name and len(path) == tree.depth(leaf.id) + 1

    corner = concept_at(tree, face.label_map, 1, 1)
    assert corner is not None and "background" in {a.id for a in tree.path(corner.id)}
    for outside in ((-1, 5), (5, -0.5), (face.size[1], 5), (5, face.size[0] + 3)):
        assert concept_at(tree, face.label_map, *outside) is None
    empty = np.full_like(face.label_map, -1)
    assert concept_at(tree, empty, x, y) is None


def test_highlight(tree, face):
    out = highlight(face, tree, "eye_left")
    assert out.shape == face.image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, face.image)
    assert out[2, 2].sum() < face.image[2, 2].sum()  # the background is dimmed
    assert not np.array_equal(highlight(face, tree, "glasses"), face.image)  # absent: all dimmed


def test_concept_options(tree):
    options = concept_options(tree)
    assert [key for _, key in options] == [c.id for c in tree]
    assert options[0] == (tree.get(tree.root).name, tree.root)
    label = dict((key, text) for text, key in options)["eye_left_iris"]
    assert label.endswith("left iris") and label.startswith("\u00a0")
    assert len(concept_options(tree, depth=1)) == 13


# --- RegionExplorer ----------------------------------------------------------------------------


def test_region_explorer_click_and_dropdown(tree, face):
    explorer = RegionExplorer(face, tree)
    assert explorer.selected is None and explorer.widget.children
    initial = explorer.image.value

    x, y = left_eye_centre(face)
    concept = explorer.select_point(x, y)
    assert explorer.selected == concept.id and explorer.dropdown.value == concept.id
    assert "left eye" in explorer.path_html.value and tree.get(tree.root).name in explorer.path_html.value
    assert explorer.image.value != initial

    explorer.level.value = "region"  # re-reads the last click at region level
    assert explorer.selected == "eyes" and explorer.dropdown.value == "eyes"

    before = explorer.image.value
    explorer.dropdown.value = "nose"  # what choosing in the dropdown does
    assert explorer.selected == "nose" and explorer.image.value != before
    assert "nose" in explorer.path_html.value

    height, width = face.size
    # A click on the image displayed at 1.5x its size lands on the same pixel.
    explorer._on_click({"relativeX": 1.5 * x, "relativeY": 1.5 * y,
                        "boundingRectWidth": 1.5 * width, "boundingRectHeight": 1.5 * height})
    assert explorer.selected == "eyes"

    explorer.select_point(-5, -5)
    assert explorer.selected is None and explorer.dropdown.value is None and explorer.image.value == initial
