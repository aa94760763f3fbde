"""The Facial Image Concept Tree: the default tree's structure, its masks and label maps on a known face,
the subject's left/right convention, validation of malformed trees, user trees and golden mask areas."""

from __future__ import annotations

import copy
import json

import cv2
import numpy as np
import pytest
import yaml

from fifa_lab.faces.synth import face_landmarks, sample_params
from fifa_lab.fict import DEFAULT_TREE, TreeError, coarse_tree, geometry, leaf_lookup, load_tree, tree_from_dict
from fifa_lab.fict.tree import GAP_FILL
from fifa_lab.ibug68 import LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE, FaceFrame, canonical_frame, mean_shape

SIZE = 256
HW = (SIZE, SIZE)
CONDITIONAL = {  # leaf -> the attribute that makes it exist
    "glasses_lens_left": "glasses", "glasses_lens_right": "glasses", "glasses_frame": "glasses",
    "earring_left": "earrings", "earring_right": "earrings", "beard": "beard", "moustache": "moustache",
    "hair_fringe": "fringe",
}
MOUTH_INTERIOR = ("teeth", "tongue", "gums", "oral_cavity")
ALL_ON = {"glasses": True, "earrings": True, "beard": True, "moustache": True, "fringe": True}
FACE_REGIONS = ("forehead", "eyes", "eyebrows", "nose", "cheeks", "mouth", "chin_jaw")
# iBUG 68 index of each point's mirror image (the subject's right <-> left).
MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]  # nose bridge, nose base
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def twin_id(concept_id: str) -> str:
    tokens = concept_id.split("_")
    swap = {"left": "right", "right": "left"}
    return "_".join(swap.get(t, t) for t in tokens)


def open_mouth(landmarks: np.ndarray) -> np.ndarray:
    """The face with its lower inner lip (65-67) and lower outer lip (55-59) dropped by 0.15 IOD."""
    out = landmarks.copy()
    out[[65, 66, 67, 55, 56, 57, 58, 59], 1] += 0.15 * FaceFrame.from_landmarks(landmarks).iod
    return out


def mirrored(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image (pixel x -> width - 1 - x), re-indexed in iBUG order."""
    out = landmarks[MIRROR].copy()
    out[:, 0] = (width - 1) - out[:, 0]
    return out


def face_outline(landmarks: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    """Convex hull of the jaw (0-16), the brows raised by 0.85 IOD and the brow ends pushed out by 0.1 IOD,
    dilated by ``margin`` IODs: an independent, generous outline of the face."""
    frame = FaceFrame.from_landmarks(landmarks)
    points = np.vstack([
        landmarks[0:17],
        landmarks[17:27] + frame.offset(np.array([0.0, -0.85])),
        landmarks[17] + frame.offset(np.array([-0.1, 0.0])),
        landmarks[26] + frame.offset(np.array([0.1, 0.0])),
    ]).astype(np.float32)
    hull = np.zeros(shape, np.uint8)
    cv2.fillPoly(hull, [np.round(cv2.convexHull(points)).astype(np.int32)], 1)
    # Distance (in IODs) of every pixel from the hull; 0 inside.
    distance = cv2.distanceTransform(1 - hull, cv2.DIST_L2, 5) / frame.iod
    return distance <= margin


@pytest.fixture(scope="module")
def tree():
    return load_tree()


@pytest.fixture(scope="module")
def base_dict(tree):
    return copy.deepcopy(tree.to_dict())


@pytest.fixture(scope="module")
def frontal() -> np.ndarray:
    return canonical_frame(SIZE).to_image(mean_shape())


@pytest.fixture(scope="module")
def frontal_masks(tree, frontal):
    return tree.masks(frontal, HW)


@pytest.fixture(scope="module")
def frontal_masks_all(tree, frontal):
    """Masks of the frontal face wearing everything (glasses, earrings, beard, moustache, fringe)."""
    return tree.masks(frontal, HW, ALL_ON)


@pytest.fixture(scope="module")
def synthetic_landmarks():
    """Landmarks of 20 sampled synthetic faces (varied shape, yaw, roll, scale, mouth) and their attributes."""
    out = []
    for seed in range(20):
        params = sample_params(np.random.default_rng(seed))
        attrs = {k: getattr(params, k) for k in ALL_ON}
        out.append((face_landmarks(params, SIZE), attrs))
    return out


# --- structure of the default tree -------------------------------------------------------------------

def test_default_tree_has_112_leaves_141_nodes_and_unique_ids_and_names(tree):
    concepts = list(tree)
    assert len(tree.leaves()) == 112
    assert len(concepts) == len(tree) == 141
    ids = [c.id for c in concepts]
    names = [c.name.lower() for c in concepts]
    assert len(set(ids)) == len(ids)
    assert len(set(names)) == len(names)
    assert [c.id for c in tree.leaves()] == [i for i in ids if tree.is_leaf(i)]
    assert tree.leaf_index == {c.id: k for k, c in enumerate(tree.leaves())}
    # Leaves carry recipes, parents do not.
    assert all((c.recipe is not None) == tree.is_leaf(c.id) for c in concepts)


def test_one_root_and_every_parent_exists(tree):
    roots = [c for c in tree if c.parent is None]
    assert [r.id for r in roots] == [tree.root] == ["face"]
    ids = {c.id for c in tree}
    for c in tree:
        if c.parent is not None:
            assert c.parent in ids, c.id
            assert c.id in [k.id for k in tree.children(c.parent)]
            assert not tree.is_leaf(c.parent)


def test_sides_and_left_right_twins(tree):
    ids = {c.id for c in tree}
    sided = 0
    for c in tree:
        assert c.side in ("left", "right", "none"), c.id
        tokens = c.id.split("_")
        # A concept is sided exactly when its id says so.
        assert ("left" in tokens) == (c.side == "left"), c.id
        assert ("right" in tokens) == (c.side == "right"), c.id
        if c.side == "left":
            sided += 1
            twin = tree.get(twin_id(c.id))
            assert twin.id in ids and twin.side == "right", c.id
            assert "left" in c.name.lower() and "right" in twin.name.lower()
            assert twin.layer == c.layer, c.id
            assert tree.is_leaf(twin.id) == tree.is_leaf(c.id)
            # Twins hang under the same parent or under twin parents.
            assert twin.parent in (c.parent, twin_id(c.parent)), c.id
            if c.recipe is not None:
                assert twin.recipe["kind"] == c.recipe["kind"], c.id
    assert sided == sum(c.side == "right" for c in tree) >= 30


def test_depth_ancestors_and_path_are_consistent(tree):
    for c in tree:
        path = tree.path(c.id)
        ancestors = tree.ancestors(c.id)
        assert path[0].id == tree.root and path[-1] == c
        assert len(path) == tree.depth(c.id) + 1
        assert ancestors == path[:-1][::-1]
        assert (tree.parent(c.id) is None) == (c.id == tree.root)
        if ancestors:
            assert tree.parent(c.id) == ancestors[0]
        for upper, lower in zip(path, path[1:]):
            assert lower.parent == upper.id
            assert tree.depth(lower.id) == tree.depth(upper.id) + 1
        for depth in range(len(path) + 2):
            assert tree.ancestor_at_depth(c.id, depth) == path[min(depth, len(path) - 1)]
    assert tree.depth("face") == 0
    assert [n.id for n in tree.path("eye_left_pupil")] == ["face", "eyes", "eye_left", "eye_left_pupil"]


def test_get_by_id_and_by_readable_name(tree):
    for c in tree:
        assert tree.get(c.id) is tree.get(c.name) is tree.get(c.name.upper()) is tree.get(c.name.title())
        assert tree.get(c.id) == c
        assert c.id in tree and c.name.upper() in tree
    assert tree.get("LEFT EYE").id == "eye_left"
    assert "no such concept" not in tree and 3 not in tree


def test_unknown_name_raises_keyerror_with_suggestion(tree):
    with pytest.raises(KeyError) as info:
        tree.get("left eyebrw")
    message = str(info.value)
    assert "left eyebrw" in message and "did you mean" in message and "'left eyebrow'" in message
    with pytest.raises(KeyError, match="nose_tipp.*did you mean.*'nose_tip'"):
        tree.get("nose_tipp")
    with pytest.raises(KeyError) as info:
        tree.children("zzzzzz")
    assert "did you mean" not in str(info.value)


def test_leaves_under_a_region_are_its_descendant_leaves(tree):
    all_leaves = tree.leaves()
    total = 0
    for c in tree:
        expected = [leaf for leaf in all_leaves if leaf == c or c.id in {a.id for a in tree.ancestors(leaf.id)}]
        assert tree.leaves(c.id) == expected, c.id  # same members, file order
        assert tree.leaves(c.name.upper()) == expected
        if tree.is_leaf(c.id):
            assert expected == [c]
        if c.parent == tree.root:
            total += len(expected)
    assert total == 112  # the top-level regions partition the leaves
    assert tree.leaves(tree.root) == all_leaves
    assert len(tree.leaves("eyes")) == 20 and len(tree.leaves("eye_left")) == 10


def test_outline_mentions_every_node(tree):
    outline = tree.outline()
    lines = outline.splitlines()
    assert len(lines) == 141
    for c in tree:
        assert f"{c.name} [{c.id}]" in outline, c.id
    assert lines[0].startswith("face image [face] (112 leaves)")
    plain = tree.outline(show_ids=False)
    assert all(c.name in plain for c in tree) and "[nose_tip]" not in plain
    top = tree.outline(max_depth=1).splitlines()
    assert len(top) == 1 + len(tree.children(tree.root))
    # Indentation is the depth.
    for line in lines:
        name = line.strip().split(" [")[0]
        assert (len(line) - len(line.lstrip())) // 2 == tree.depth(name)


# --- masks on the mean frontal face ----------------------------------------------------------------

def test_every_unconditional_leaf_is_drawn_on_the_frontal_face(tree, frontal_masks):
    masks = frontal_masks
    assert set(masks) == {c.id for c in tree}
    for c in tree:
        assert masks[c.id].shape == HW and masks[c.id].dtype == bool
    for leaf in tree.leaves():
        if leaf.id in CONDITIONAL:
            assert not masks[leaf.id].any(), f"{leaf.id} drawn without its attribute"
        elif leaf.id not in MOUTH_INTERIOR:
            assert masks[leaf.id].sum() >= 10, f"{leaf.id} is (nearly) empty on the frontal face"


def test_conditional_leaves_appear_with_their_attributes(tree, frontal, frontal_masks_all):
    for leaf, attribute in CONDITIONAL.items():
        assert frontal_masks_all[leaf].sum() >= 10, leaf
        only = tree.masks(frontal, HW, {attribute: True})
        assert only[leaf].any(), leaf
        # An attribute switches on its own concepts and nothing else.
        others = [k for k, a in CONDITIONAL.items() if a != attribute]
        assert not any(only[k].any() for k in others), attribute
    # The mean face's mouth is closed, so only the mouth interior stays empty.
    assert all(frontal_masks_all[leaf.id].any() for leaf in tree.leaves() if leaf.id not in MOUTH_INTERIOR)


def test_mouth_interior_follows_the_mouth_open_attribute(tree, frontal):
    closed = tree.masks(frontal, HW, {"mouth_open": False})
    opened = tree.masks(frontal, HW, {"mouth_open": True})
    for leaf in MOUTH_INTERIOR:
        assert not closed[leaf].any(), leaf
        assert opened[leaf].any(), leaf
    assert not closed["mouth_interior"].any()


def test_open_mouth_is_measured_from_the_lips(tree, frontal):
    masks = tree.masks(open_mouth(frontal), HW)
    for leaf in MOUTH_INTERIOR:
        assert masks[leaf].sum() >= 20, leaf
    # The interior sits between the lips and is not covered by them.
    interior = masks["mouth_interior"]
    assert interior.sum() > 300
    assert (interior & masks["lower_lip_left"]).sum() < 0.1 * interior.sum()
    lips_y = frontal[[62, 66], 1].mean()
    assert centroid(masks["oral_cavity"])[1] > lips_y


def test_mean_face_mouth_counts_as_closed(tree, frontal_masks):
    for leaf in MOUTH_INTERIOR:
        assert not frontal_masks[leaf].any(), leaf


def test_parent_masks_are_exact_unions_of_children(tree, frontal, frontal_masks_all):
    for masks in (frontal_masks_all, tree.masks(open_mouth(frontal), HW)):
        for c in tree:
            kids = tree.children(c.id)
            if not kids:
                continue
            union = np.zeros(HW, bool)
            for k in kids:
                union |= masks[k.id]
            assert np.array_equal(masks[c.id], union), c.id
            leaves = np.zeros(HW, bool)
            for leaf in tree.leaves(c.id):
                leaves |= masks[leaf.id]
            assert np.array_equal(masks[c.id], leaves), c.id
    # The root covers the image apart from rasterisation slivers (which the label map fills).
    assert frontal_masks_all["face"].mean() > 0.99


def _face_region_union(tree, masks) -> np.ndarray:
    union = np.zeros(HW, bool)
    for region in FACE_REGIONS:
        for leaf in tree.leaves(region):
            if leaf.id != "under_jaw":  # the shadow *below* the jaw line, outside the face by definition
                union |= masks[leaf.id]
    return union


def test_face_regions_lie_inside_the_face_outline(tree, frontal, frontal_masks_all):
    masks = frontal_masks_all
    union = _face_region_union(tree, masks)
    inside = face_outline(frontal, HW, margin=0.06)
    for region in FACE_REGIONS:
        for leaf in tree.leaves(region):
            if leaf.id != "under_jaw":
                assert not (masks[leaf.id] & ~inside).any(), f"{leaf.id} leaves the face outline"
    # Non-trivial: the face regions fill the outline, and the things around the face are outside it.
    hull = face_outline(frontal, HW, margin=0.0)
    assert (union & hull).sum() > 0.9 * hull.sum()
    for outside in ("ears", "under_jaw", "neck", "background", "clothing", "earrings"):
        assert (masks[outside] & hull).sum() < 0.05 * masks[outside].sum(), outside
    assert (masks["under_jaw"] & ~inside).sum() > 0.5 * masks["under_jaw"].sum()


def test_face_regions_lie_inside_the_face_outline_on_synthetic_faces(tree, synthetic_landmarks):
    # Turned, rolled, rescaled faces: the outline is more generous (spline corners under yaw).
    for seed, (landmarks, attrs) in enumerate(synthetic_landmarks):
        masks = tree.masks(landmarks, HW, attrs)
        inside = face_outline(landmarks, HW, margin=0.12)
        for region in FACE_REGIONS:
            for leaf in tree.leaves(region):
                if leaf.id != "under_jaw":
                    assert not (masks[leaf.id] & ~inside).any(), f"seed {seed}: {leaf.id} leaves the face"
        hull = face_outline(landmarks, HW, margin=0.0)
        assert (masks["ears"] & hull).sum() < 0.25 * masks["ears"].sum(), seed


def test_mentolabial_fold_stays_on_the_chin_of_synthetic_faces(tree):
    for seed in range(40):
        landmarks = face_landmarks(sample_params(np.random.default_rng(seed)), SIZE)
        fold = tree.masks(landmarks, HW)["mentolabial_fold"]
        inside = (fold & face_outline(landmarks, HW, margin=0.0)).sum() / fold.sum()
        assert inside > 0.9, f"seed {seed}: only {inside:.0%} of the mentolabial fold is on the face"


# --- the subject's left and right --------------------------------------------------------------------

def test_subjects_left_is_on_the_image_right(tree, frontal, frontal_masks_all):
    masks = frontal_masks_all
    iod = FaceFrame.from_landmarks(frontal).iod
    centre = SIZE / 2
    for side, eye, brow in (("left", LEFT_EYE, LEFT_BROW), ("right", RIGHT_EYE, RIGHT_BROW)):
        sign = 1 if side == "left" else -1
        eye_c = centroid(masks[f"eye_{side}"])
        assert sign * (eye_c[0] - centre) > 0.3 * iod
        assert np.linalg.norm(eye_c - frontal[eye].mean(axis=0)) < 0.15 * iod
        brow_c = centroid(masks[f"eyebrow_{side}"])
        assert sign * (brow_c[0] - centre) > 0.3 * iod
        assert np.linalg.norm(brow_c - frontal[brow].mean(axis=0)) < 0.15 * iod
        # Ears sit outside the jaw on their side; cheeks between the nose and that jaw side.
        jaw_x = frontal[16 if side == "left" else 0, 0]
        ear_c = centroid(masks[f"ear_{side}"])
        assert sign * (ear_c[0] - jaw_x) > 0
        cheek_c = centroid(masks[f"cheek_{side}"])
        assert sign * (cheek_c[0] - frontal[33, 0]) > 0.2 * iod and sign * (jaw_x - cheek_c[0]) > 0.1 * iod
    assert np.allclose(frontal[LEFT_EYE, 0].mean(), centre + 0.5 * iod)
    # Every sided leaf lies on its side of the image.
    for leaf in tree.leaves():
        if leaf.side != "none":
            x = centroid(masks[leaf.id])[0]
            assert (x > centre) == (leaf.side == "left"), leaf.id


def test_mirror_permutation_maps_the_mean_face_onto_itself():
    shape = mean_shape()
    assert sorted(MIRROR) == list(range(68)) and np.array_equal(MIRROR[MIRROR], np.arange(68))
    flipped = shape[MIRROR] * [-1.0, 1.0]
    assert np.allclose(flipped, shape)


@pytest.mark.parametrize("face", ["frontal", "synthetic"])
def test_mirroring_the_face_swaps_left_and_right_masks(tree, frontal, synthetic_landmarks, face):
    # The synthetic face (yaw, roll, shifted, asymmetric) makes the mirror image a different face.
    landmarks = frontal if face == "frontal" else synthetic_landmarks[3][0]
    masks = tree.masks(landmarks, HW, ALL_ON)
    mirror = tree.masks(mirrored(landmarks, SIZE), HW, ALL_ON)
    for c in tree:
        if c.id == "hair_parting":  # a side parting is drawn on the subject's left of any face
            continue
        expected = np.fliplr(masks[twin_id(c.id)])
        if not expected.any() and not mirror[c.id].any():  # e.g. the interior of a closed mouth
            continue
        if not tree.is_leaf(c.id) or expected.sum() >= 100:
            threshold = 0.9 if not tree.is_leaf(c.id) else 0.85
            assert iou(mirror[c.id], expected) > threshold, c.id
    # Swapped, not merely symmetric: the mirrored left eye is the flipped right eye, not the flipped left eye.
    assert iou(mirror["eye_left"], np.fliplr(masks["eye_right"])) > 0.9
    assert iou(mirror["eye_left"], np.fliplr(masks["eye_left"])) < 0.05
    assert iou(mirror["ear_right"], np.fliplr(masks["ear_left"])) > 0.9


# --- label map -------------------------------------------------------------------------------------

def _expected_labels(tree, masks) -> np.ndarray:
    """The overlap policy, written independently: the covering leaf with the highest (layer, file position)."""
    leaves = tree.leaves()
    stack = np.stack([masks[leaf.id] for leaf in leaves])
    rank = np.array([leaf.layer * 1000 + k for k, leaf in enumerate(leaves)])
    score = np.where(stack, rank[:, None, None] + 1, 0)
    best = score.argmax(axis=0)
    return np.where(score.max(axis=0) > 0, best, -1)


@pytest.mark.parametrize("variant", ["plain", "all_attributes", "open_mouth"])
def test_label_map_follows_the_overlap_policy(tree, frontal, variant):
    landmarks = open_mouth(frontal) if variant == "open_mouth" else frontal
    attrs = ALL_ON if variant == "all_attributes" else None
    masks = tree.masks(landmarks, HW, attrs)
    labels = tree.label_map(landmarks, HW, attrs)
    assert labels.dtype == np.int16 and labels.shape == HW
    assert labels.min() >= -1 and labels.max() <= 111
    assert not (labels == -1).any()
    assert np.array_equal(labels, tree.label_map(None, HW, masks=masks))
    expected = _expected_labels(tree, masks)
    covered = expected >= 0
    assert np.array_equal(labels[covered], expected[covered])
    # Uncovered slivers take a leaf drawn within GAP_FILL pixels.
    leaves = tree.leaves()
    window = np.ones((2 * GAP_FILL + 1, 2 * GAP_FILL + 1), np.uint8)
    for y, x in zip(*np.nonzero(~covered)):
        near = cv2.dilate(masks[leaves[labels[y, x]].id].view(np.uint8), window)
        assert near[y, x], (y, x)
    assert (~covered).sum() < 0.01 * labels.size


def test_eye_overlaps_show_the_higher_layer(tree, frontal, frontal_masks_all):
    masks = frontal_masks_all
    labels = tree.label_map(frontal, HW, ALL_ON)
    index = tree.leaf_index
    for side in ("left", "right"):
        sclera, iris, pupil = (masks[f"eye_{side}_{p}"] for p in ("sclera", "iris", "pupil"))
        # Sclera, iris and pupil tile the eye opening without overlapping...
        assert not (sclera & iris).any() and not (iris & pupil).any() and not (sclera & pupil).any()
        # ...and where they meet lids, lenses or lashes, the higher layer shows.
        lens = masks[f"glasses_lens_{side}"]
        assert (pupil & lens).any() and (labels[pupil & lens] == index[f"eye_{side}_pupil"]).all()
        lid = masks[f"eye_{side}_upper_eyelid"]  # layer 6 < iris 8
        assert (iris & lid).any() and (labels[iris & lid & ~masks[f"eye_{side}_lash_line"]]
                                       == index[f"eye_{side}_iris"]).all()
        lash = masks[f"eye_{side}_lash_line"]  # same layer as the iris, later in the file
        assert (iris & lash).any() and (labels[iris & lash] == index[f"eye_{side}_lash_line"]).all()
        lash_on_white = sclera & lash & ~masks["glasses_frame"]  # the frame (layer 10) covers some of it
        assert lash_on_white.any() and (labels[lash_on_white] == index[f"eye_{side}_lash_line"]).all()
        assert (labels[sclera & lash & masks["glasses_frame"]] == index["glasses_frame"]).all()
        assert (sclera & lens).any() and (labels[sclera & lens] != index[f"glasses_lens_{side}"]).all()
        # The pupil shows wherever it is drawn (nothing in the tree is painted over it).
        assert (labels[pupil] == index[f"eye_{side}_pupil"]).all()
    fringe = masks["hair_fringe"] & masks["forehead_centre"]
    assert fringe.sum() > 100 and (labels[fringe] == index["hair_fringe"]).all()


def test_visible_masks_agree_with_the_label_map(tree, frontal, frontal_masks_all):
    labels = tree.label_map(frontal, HW, ALL_ON)
    visible = tree.visible_masks(labels)
    assert set(visible) == {c.id for c in tree}
    for k, leaf in enumerate(tree.leaves()):
        assert np.array_equal(visible[leaf.id], labels == k), leaf.id
    covered = np.zeros(HW, bool)
    for leaf in tree.leaves():
        covered |= frontal_masks_all[leaf.id]
    for c in tree:
        if not tree.is_leaf(c.id):
            union = np.zeros(HW, bool)
            for kid in tree.children(c.id):
                union |= visible[kid.id]
            assert np.array_equal(visible[c.id], union), c.id
        # What is visible of a concept was drawn for it (apart from filled slivers).
        assert not (visible[c.id] & ~frontal_masks_all[c.id] & covered).any(), c.id
    assert visible["face"].all()
    # Visible leaves partition the image.
    assert sum(visible[leaf.id].astype(int) for leaf in tree.leaves()).max() == 1


def test_no_unlabelled_pixels_on_synthetic_faces(tree, synthetic_landmarks):
    for seed, (landmarks, attrs) in enumerate(synthetic_landmarks):
        labels = tree.label_map(landmarks, HW, attrs)
        assert labels.dtype == np.int16
        assert labels.min() >= 0 and labels.max() <= 111, seed
        # The essential concepts are visible on every face.
        visible = tree.visible_masks(labels)
        for key in ("eye_left_iris", "eye_right_iris", "nose_tip", "upper_lip_left", "background"):
            assert visible[key].any(), (seed, key)


@pytest.mark.parametrize("angle,scale", [(20.0, 1.0), (-20.0, 1.0), (0.0, 0.8), (15.0, 1.15)])
def test_concepts_follow_roll_and_scale(tree, frontal, frontal_masks, angle, scale):
    origin = FaceFrame.from_landmarks(frontal).origin
    theta = np.radians(angle)
    rot = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (frontal - origin) @ rot.T + origin
    masks = tree.masks(moved, HW)
    affine = np.hstack([rot, (origin - rot @ origin)[:, None]])
    for key in ("nose", "eyes", "mouth", "forehead", "eye_left", "cheek_right"):
        warped = cv2.warpAffine(frontal_masks[key].view(np.uint8), affine, (SIZE, SIZE),
                                flags=cv2.INTER_NEAREST).astype(bool)
        assert iou(warped, masks[key]) > 0.85, key
    # The unrotated mask no longer fits (the check has teeth).
    if angle:
        assert iou(frontal_masks["eyes"], masks["eyes"]) < 0.8


# --- malformed trees --------------------------------------------------------------------------------

def _entry(data, key):
    return next(c for c in data["concepts"] if c["id"] == key)


def _duplicate(d):
    d["concepts"].append(copy.deepcopy(_entry(d, "nose_tip")))


def _two_roots(d):
    d["concepts"].append({"id": "second_root", "name": "second root", "parent": None, "recipe": {"kind": "image"}})


def _shape_cycle(d):
    d["shapes"]["loop_one"] = {"kind": "image", "clip": ["loop_two"]}
    d["shapes"]["loop_two"] = {"kind": "image", "minus": ["loop_one"]}


BROKEN = {
    # case: (mutation, node named in the message, another word the message must contain)
    "duplicate id": (_duplicate, "nose_tip", "duplicate"),
    "missing parent": (lambda d: _entry(d, "nose_tip").update(parent="nose_typo"), "nose_tip", "nose_typo"),
    "cycle": (lambda d: _entry(d, "eyes").update(parent="eye_left"), "eyes", "cycle"),
    "self parent": (lambda d: _entry(d, "nose_tip").update(parent="nose_tip"), "nose_tip", "cycle"),
    "unknown kind": (lambda d: _entry(d, "nose_tip")["recipe"].update(kind="blob"), "nose_tip", "blob"),
    "unknown parameter": (lambda d: _entry(d, "nose_tip")["recipe"].update(radius=1.0), "nose_tip", "radius"),
    "missing parameter": (lambda d: _entry(d, "eye_left_iris")["recipe"].pop("axes"), "eye_left_iris", "axes"),
    "bad point": (lambda d: _entry(d, "nose_tip")["recipe"]["points"].__setitem__(0, 70), "nose_tip", "70"),
    "bad point in shape": (lambda d: d["shapes"]["face_oval"]["points"].__setitem__(0, 70), "face_oval", "70"),
    "unknown clip": (lambda d: _entry(d, "nose_tip")["recipe"].update(clip=["no_such_shape"]), "nose_tip",
                     "no_such_shape"),
    "shape cycle": (_shape_cycle, "loop_two", "loop_one"),
    "clip own parent": (lambda d: _entry(d, "nose_tip")["recipe"].update(clip=["nose"]), "nose_tip", "cycle"),
    "parent with recipe": (lambda d: _entry(d, "nose").update(recipe={"kind": "image"}), "nose", "parent"),
    "leaf without recipe": (lambda d: _entry(d, "nose_tip").pop("recipe"), "nose_tip", "recipe"),
    "two roots": (_two_roots, "second_root", "root"),
    "bad side": (lambda d: _entry(d, "nose_tip").update(side="centre"), "nose_tip", "centre"),
    "duplicate name": (lambda d: _entry(d, "nose_tip").update(name="NOSE"), "nose_tip", "nose"),
    "id is a shape": (lambda d: _entry(d, "nose_tip").update(id="face_oval"), "face_oval", "shape"),
}


def _broken(base_dict, mutate):
    data = copy.deepcopy(base_dict)
    mutate(data)
    return data


def test_the_unbroken_dict_loads(base_dict):
    tree = tree_from_dict(copy.deepcopy(base_dict))
    assert len(tree.leaves()) == 112


@pytest.mark.parametrize("case", list(BROKEN))
def test_malformed_tree_dict_is_refused_naming_the_node(base_dict, case):
    mutate, node, word = BROKEN[case]
    with pytest.raises(TreeError) as info:
        tree_from_dict(_broken(base_dict, mutate), source="my_tree")
    message = str(info.value)
    assert f"'{node}'" in message and word in message and message.startswith("my_tree")


@pytest.mark.parametrize("suffix,case", [
    (".yaml", "missing parent"), (".yaml", "bad point"),  # YAML parsing is slow: two cases suffice
    (".json", "missing parent"), (".json", "bad point"), (".json", "unknown clip"), (".json", "two roots"),
])
def test_malformed_tree_file_is_refused_naming_node_and_file(base_dict, tmp_path, suffix, case):
    mutate, node, word = BROKEN[case]
    data = _broken(base_dict, mutate)
    path = tmp_path / f"broken{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TreeError) as info:
        load_tree(path)
    message = str(info.value)
    assert f"'{node}'" in message and word in message and str(path) in message


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "name: bad\nconcepts: [ {id: face, parent: null\n"),
    (".yaml", "name: bad\n  concepts:\n- id: x\n"),
    (".json", '{"name": "bad", "concepts": [}'),
])
def test_unparseable_tree_file_is_a_tree_error(tmp_path, suffix, text):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TreeError, match="not valid") as info:
        load_tree(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("data", [None, [], {"name": "x"}, {"concepts": []}, {"concepts": [{"name": "no id"}]},
                                  {"concepts": [{"id": "r"}], "shapes": ["not", "a", "mapping"]}])
def test_tree_data_of_the_wrong_shape_is_refused(data):
    with pytest.raises(TreeError):
        tree_from_dict(data)


def test_missing_tree_file(tmp_path):
    path = tmp_path / "nowhere" / "tree.yaml"
    with pytest.raises(FileNotFoundError) as info:
        load_tree(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_tree(tmp_path)  # a folder is not a tree file


@pytest.mark.parametrize("case,mutate", [
    ("layer", lambda d: _entry(d, "nose_tip").update(layer="high")),
    ("ellipse axes", lambda d: _entry(d, "eye_left_iris")["recipe"].update(axes=[0.1])),
    ("polyline width", lambda d: _entry(d, "lip_seam")["recipe"].update(width="thick")),
    ("strip far", lambda d: _entry(d, "eyebrow_left_head")["recipe"].update(far="x")),
])
def test_bad_parameter_values_are_refused_at_load(base_dict, case, mutate):
    with pytest.raises(TreeError, match="'(nose_tip|eye_left_iris|lip_seam|eyebrow_left_head)'"):
        tree_from_dict(_broken(base_dict, mutate))


def test_to_dict_returns_independent_data(frontal):
    tree = load_tree(DEFAULT_TREE)  # a private copy: this test must not corrupt the shared default tree
    data = tree.to_dict()
    data["shapes"]["extra_shape"] = {"kind": "image"}
    _entry(data, "forehead_centre")["recipe"]["clip"].append("no_such_shape")
    assert "extra_shape" not in tree.to_dict()["shapes"]
    assert tree.get("forehead_centre").recipe["clip"] == ["face_oval"]
    tree.masks(frontal, HW)


def test_default_tree_round_trips_through_yaml_and_json(tree, base_dict, frontal, frontal_masks_all, tmp_path):
    for suffix, text in ((".yaml", yaml.safe_dump(base_dict)), (".json", json.dumps(base_dict))):
        path = tmp_path / f"copy{suffix}"
        path.write_text(text, encoding="utf-8")
        copy_tree = load_tree(path)
        assert [c.id for c in copy_tree] == [c.id for c in tree]
        assert [(c.layer, c.side, c.parent) for c in copy_tree] == [(c.layer, c.side, c.parent) for c in tree]
        masks = copy_tree.masks(frontal, HW, ALL_ON)
        assert all(np.array_equal(masks[c.id], frontal_masks_all[c.id]) for c in tree)
    assert load_tree() is load_tree(None) is tree


# --- user trees -----------------------------------------------------------------------------------

COARSE_YAML = """
name: coarse
shapes:
  oval: {kind: polygon, smooth: true, points: [0, 4, 8, 12, 16, {at: 24, 'off': [0, -0.5]}, {at: 19, 'off': [0, -0.5]}]}
concepts:
  - {id: image, name: whole image, parent: null}
  - id: skin
    name: face skin
    parent: image
    layer: 1
    recipe: {kind: polygon, points: [0, 4, 8, 12, 16, {at: 24, 'off': [0, -0.5]}, {at: 19, 'off': [0, -0.5]}],
             smooth: true}
  - id: eye_band
    name: eye band
    parent: image
    side: none
    layer: 2
    recipe: {kind: ellipse, center: {frame: [0, 0]}, axes: [0.8, 0.22], clip: [oval]}
  - id: rest
    name: everything else
    parent: image
    recipe: {kind: image, minus: [oval]}
"""


def test_a_coarse_user_tree_loads_and_draws(tmp_path, frontal):
    path = tmp_path / "coarse.yaml"
    path.write_text(COARSE_YAML, encoding="utf-8")
    tree = load_tree(path)
    assert tree.name == "coarse" and len(tree) == 4 and [c.id for c in tree.leaves()] == ["skin", "eye_band", "rest"]
    assert tree.get("Face Skin").id == "skin" and tree.get("eye_band").layer == 2
    masks = tree.masks(frontal, HW)
    assert masks["image"].all()
    # The skin polygon and the 'oval' shape are the same outline drawn twice: 'rest' is its exact complement.
    assert np.array_equal(masks["rest"], ~masks["skin"])
    assert masks["skin"].sum() > 0.2 * SIZE * SIZE and masks["rest"].sum() > 0.3 * SIZE * SIZE
    assert not (masks["eye_band"] & ~masks["skin"]).any()
    iod = FaceFrame.from_landmarks(frontal).iod
    assert abs(masks["eye_band"].sum() - np.pi * 0.8 * 0.22 * iod**2) < 0.05 * masks["eye_band"].sum()
    labels = tree.label_map(frontal, HW)
    assert labels.dtype == np.int16 and set(np.unique(labels)) == {0, 1, 2}
    assert (labels[masks["eye_band"]] == 1).all()  # layer 2 over the face skin
    assert (labels[masks["rest"] & ~masks["skin"]] == 2).all()
    visible = tree.visible_masks(labels)
    assert np.array_equal(visible["image"], np.ones(HW, bool))
    # A non-square image works too.
    wide = tree.masks(frontal + [40, 0], (200, 340))
    assert wide["skin"].shape == (200, 340)
    # The same tree as JSON.
    json_path = tmp_path / "coarse.json"
    json_path.write_text(json.dumps(yaml.safe_load(COARSE_YAML)), encoding="utf-8")
    assert np.array_equal(load_tree(json_path).label_map(frontal, HW), labels)


@pytest.mark.parametrize("depth", [1, 2])
def test_coarse_tree_cuts_at_a_depth_and_keeps_the_geometry(tree, frontal, frontal_masks_all, depth):
    coarse = coarse_tree(tree, depth)
    expected = {tree.ancestor_at_depth(leaf.id, depth).id for leaf in tree.leaves()}
    assert {leaf.id for leaf in coarse.leaves()} == expected
    assert len(coarse.leaves()) == {1: 12, 2: 52}[depth]
    assert coarse.name == f"fict-112-depth{depth}"
    # a coarse leaf's mask is exactly the union of the fine leaves it replaces
    coarse_masks = coarse.masks(frontal, HW, ALL_ON)
    for leaf in coarse.leaves():
        union = np.logical_or.reduce([frontal_masks_all[f.id] for f in tree.leaves(leaf.id)])
        assert np.array_equal(coarse_masks[leaf.id], union), leaf.id
    # label maps carried over by the lookup name the coarse leaf above each fine one
    fine_labels = tree.label_map(frontal, HW, ALL_ON)
    mapped = leaf_lookup(tree, coarse)[fine_labels]
    assert mapped.dtype == np.int16 and mapped.min() >= -1
    for leaf in tree.leaves():
        hit = fine_labels == tree.leaf_index[leaf.id]
        if hit.any():
            above = tree.ancestor_at_depth(leaf.id, depth).id
            assert (mapped[hit] == coarse.leaf_index[above]).all()
    assert ((fine_labels == -1) == (mapped == -1)).all()


def test_coarse_tree_refuses_bad_depths_and_lookup_needs_a_cut_of_the_same_tree(tree):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="depth"):
            coarse_tree(tree, bad)
    with pytest.raises(ValueError, match="lies under no leaf"):
        leaf_lookup(coarse_tree(tree, 1), tree)


def test_register_recipe_adds_a_kind_usable_from_a_tree_dict(frontal):
    def square(ctx, recipe):
        centre = ctx.points(np.array([recipe["center"]]))[0]
        half = float(recipe["half"]) * ctx.frame.iod
        mask = ctx.empty()
        x0, y0 = np.round(centre - half).astype(int)
        x1, y1 = np.round(centre + half).astype(int)
        mask[y0:y1, x0:x1] = 1
        return mask

    data = {"name": "squares", "concepts": [
        {"id": "root", "parent": None},
        {"id": "nose_square", "parent": "root", "layer": 1,
         "recipe": {"kind": "test_square", "center": 30, "half": 0.1, "minus": ["left_half"]}},
        {"id": "left_half", "parent": "root", "side": "left",
         "recipe": {"kind": "polygon", "points": [{"frame": [0, -5]}, {"frame": [5, -5]}, {"frame": [5, 5]},
                                                  {"frame": [0, 5]}]}},
        {"id": "other", "parent": "root", "recipe": {"kind": "image", "minus": ["nose_square", "left_half"]}},
    ]}
    assert "test_square" not in geometry.RECIPES
    try:
        registered = geometry.register_recipe("test_square", required=("center", "half"), optional=("tint",))(square)
        assert registered is square and "test_square" in geometry.RECIPES
        tree = tree_from_dict(data)
        masks = tree.masks(frontal, HW)
        side = 2 * round(0.1 * FaceFrame.from_landmarks(frontal).iod)
        nose = np.round(frontal[30]).astype(int)
        square_mask = masks["nose_square"]
        # A square around the nose tip, less the half on the subject's left (image right of x = 128).
        assert square_mask.sum() == pytest.approx(side * side / 2, rel=0.15)
        ys, xs = np.nonzero(square_mask)
        assert xs.max() < SIZE / 2 and abs(ys.mean() - nose[1]) <= 1
        labels = tree.label_map(frontal, HW)
        assert (labels[square_mask] == tree.leaf_index["nose_square"]).all() and labels.min() >= 0
        # The new kind's parameters are checked like the built-in ones.
        bad = copy.deepcopy(data)
        _entry(bad, "nose_square")["recipe"]["colour"] = "red"
        with pytest.raises(TreeError, match="'nose_square'.*colour"):
            tree_from_dict(bad)
        _entry(bad, "nose_square")["recipe"] = {"kind": "test_square", "center": 30}
        with pytest.raises(TreeError, match="'nose_square'.*half"):
            tree_from_dict(bad)
    finally:
        geometry.RECIPES.pop("test_square", None)
    with pytest.raises(TreeError, match="'nose_square'.*unknown recipe kind 'test_square'"):
        tree_from_dict(data)


# --- golden numbers -------------------------------------------------------------------------------

# Pixel areas on the mean frontal face at 256 px, no attributes (computed once from the current geometry).
GOLDEN_AREAS = {
    "nose_tip": 242,
    "eye_left_iris": 122,
    "upper_lip_left": 131,
    "forehead_centre": 1000,
    "background_top": 8314,
}


def test_golden_mask_areas(frontal_masks):
    assert {key: int(frontal_masks[key].sum()) for key in GOLDEN_AREAS} == GOLDEN_AREAS


def test_repeated_mask_sets_reuse_memory_but_never_a_kept_mask(tree, frontal):
    # A dataset build draws thousands of mask sets: their memory must be reused at once (no reference
    # cycle waiting for the garbage collector, no growth), yet masks a caller keeps must stay intact.
    import gc
    import tracemalloc

    kept = tree.masks(frontal, HW)
    expected = {k: v.copy() for k, v in kept.items()}
    moved = frontal + np.array([9.0, 4.0])
    gc.disable()
    tracemalloc.start()
    try:
        tree.masks(moved, HW)
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            tree.masks(moved, HW)
        growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        gc.enable()
    assert growth < 2 * 2**20, f"{growth / 2**20:.1f} MiB kept by 20 dropped mask sets"
    assert all(np.array_equal(kept[k], expected[k]) for k in expected)
