"""Procedural synthetic faces: determinism, shapes, the exactness of the label map, agreement of the
picture with its label map, diversity of the sampled faces and skin texture that forgeries can destroy."""

from __future__ import annotations

from dataclasses import asdict

import cv2
import numpy as np
import pytest

from fifa_lab.faces.synth import HAIR_COLOURS, face_landmarks, sample_params, synth_face
from fifa_lab.fict import load_tree
from fifa_lab.fict.geometry import MOUTH_OPEN_GAP, mouth_gap
from fifa_lab.ibug68 import CANONICAL_IOD, FaceFrame

SEEDS = range(10)
CONDITIONAL = ("glasses", "earrings", "beard", "moustache", "fringe")
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def tree():
    return load_tree()


@pytest.fixture(scope="module")
def faces():
    return {seed: synth_face(seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def visible(tree, faces):
    return {seed: tree.visible_masks(face.label_map) for seed, face in faces.items()}


@pytest.fixture(scope="module")
def params200():
    return [sample_params(np.random.default_rng(seed)) for seed in range(200)]


def luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ LUMA


def interior(mask: np.ndarray, margin: int = 4) -> np.ndarray:
    """The mask less a ``margin``-pixel border, so edges between materials do not count as texture."""
    return cv2.erode(mask.view(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)).astype(bool)


def high_pass(gray: np.ndarray) -> np.ndarray:
    gray = gray.astype(np.float32)
    return gray - cv2.GaussianBlur(gray, (0, 0), 2)


# --- determinism, shapes and arguments ---------------------------------------------------------------

def test_same_seed_gives_the_same_face(faces):
    again = synth_face(3)
    face = faces[3]
    assert np.array_equal(again.image, face.image)
    assert np.array_equal(again.landmarks, face.landmarks)
    assert np.array_equal(again.label_map, face.label_map)
    assert again.attributes == face.attributes and again.source == face.source == "synthetic:seed=3"
    assert synth_face(np.int64(3)).source == "synthetic:seed=3"
    # The recorded parameters are the first draw of the seed's generator.
    assert face.attributes["params"] == asdict(sample_params(np.random.default_rng(3)))


def test_different_seeds_give_different_faces(faces):
    images = [faces[s].image.astype(np.int16) for s in SEEDS]
    for a in range(len(images)):
        for b in range(a + 1, len(images)):
            assert np.abs(images[a] - images[b]).mean() > 10, (a, b)
    assert len({faces[s].landmarks.tobytes() for s in SEEDS}) == len(SEEDS)
    assert len({faces[s].label_map.tobytes() for s in SEEDS}) == len(SEEDS)


def test_shapes_and_dtypes(faces):
    for seed, face in faces.items():
        assert face.image.shape == (256, 256, 3) and face.image.dtype == np.uint8
        assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
        assert face.label_map.shape == (256, 256) and face.label_map.dtype == np.int16
        assert face.size == (256, 256)
        assert np.all(face.landmarks >= 0) and np.all(face.landmarks < 256), seed
        assert set(face.attributes) == set(CONDITIONAL) | {"mouth_open", "params"}
        assert all(type(face.attributes[k]) is bool for k in (*CONDITIONAL, "mouth_open"))
        # Faces are not flat: a real dynamic range.
        assert face.image.std() > 25 and np.ptp(face.image) > 150, seed


@pytest.mark.parametrize("size", [128, 384])
def test_other_sizes_scale_the_landmarks(faces, size):
    face = synth_face(4, size=size)
    assert face.image.shape == (size, size, 3) and face.label_map.shape == (size, size)
    assert face.label_map.min() >= 0
    # Same seed, same face: the landmarks scale with the image.
    assert np.allclose(face.landmarks, faces[4].landmarks * (size / 256), atol=1e-3)
    assert FaceFrame.from_landmarks(face.landmarks).iod == pytest.approx(CANONICAL_IOD * size, rel=0.12)


def test_inter_ocular_distance_is_about_a_quarter_of_the_image(faces):
    ratios = np.array([FaceFrame.from_landmarks(f.landmarks).iod / 256 for f in faces.values()])
    assert np.all(np.abs(ratios - CANONICAL_IOD) < 0.12 * CANONICAL_IOD)
    assert abs(ratios.mean() - CANONICAL_IOD) < 0.02
    assert np.ptp(ratios) > 0.005  # the scale varies


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", None])
def test_bad_seed_is_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        synth_face(seed)


@pytest.mark.parametrize("size", [63, 0, -256, 64.0, 100.5])
def test_bad_size_is_refused(size):
    with pytest.raises(ValueError, match="size"):
        synth_face(0, size=size)


def test_smallest_size_works():
    face = synth_face(0, size=64)
    assert face.image.shape == (64, 64, 3) and face.label_map.min() >= 0


# --- the label map ----------------------------------------------------------------------------------

def test_label_map_is_the_trees_label_map_of_the_landmarks(tree, faces):
    for seed in (0, 1, 2, 5, 8):
        face = faces[seed]
        attributes = {k: v for k, v in face.attributes.items() if k != "params"}
        assert np.array_equal(face.label_map, tree.label_map(face.landmarks, (256, 256), attributes)), seed
        params = face.attributes["params"]
        assert all(attributes[k] == params[k] for k in CONDITIONAL)
        assert face.attributes["mouth_open"] == bool(tree.masks(face.landmarks, (256, 256))["oral_cavity"].any())
        assert face.label_map.min() >= 0 and face.label_map.max() < len(tree.leaves())


def test_conditional_concepts_are_visible_exactly_when_sampled(faces, visible):
    concept = {"glasses": "glasses_frame", "earrings": "earrings", "beard": "beard",
               "moustache": "moustache", "fringe": "hair_fringe"}
    seen = {k: set() for k in concept}
    for seed, face in faces.items():
        for attribute, key in concept.items():
            assert visible[seed][key].any() == face.attributes[attribute], (seed, attribute)
            seen[attribute].add(face.attributes[attribute])
    # The ten faces show each attribute both present and absent.
    assert all(values == {True, False} for values in seen.values()), seen


def test_the_picture_agrees_with_its_label_map(faces, visible):
    for seed, face in faces.items():
        image = face.image.astype(np.float64)
        lum = luminance(face.image)
        vis = visible[seed]

        def mean_colour(key):
            assert vis[key].sum() >= 10, (seed, key)
            return image[vis[key]].mean(axis=0)

        sclera = vis["eye_left_sclera"] | vis["eye_right_sclera"]
        pupil = vis["eye_left_pupil"] | vis["eye_right_pupil"]
        iris = vis["eye_left_iris"] | vis["eye_right_iris"]
        assert lum[sclera].mean() > lum[pupil].mean() + 80, seed
        assert np.linalg.norm(image[iris].mean(0) - image[sclera].mean(0)) > 60, seed
        assert lum[iris].mean() < lum[sclera].mean() - 40, seed
        # Hair: another colour than the skin, and streaky where skin is smooth (away from region edges).
        skin = vis["cheeks"] | vis["forehead"]
        hair = vis["scalp_hair"]
        assert np.linalg.norm(image[hair].mean(0) - image[skin].mean(0)) > 30, seed
        detail = high_pass(lum)
        assert detail[interior(hair)].std() > 1.2 * detail[interior(skin)].std(), seed
        # Lips are redder than cheeks; nostrils are darker than the nose tip.
        lips, cheeks = mean_colour("lips"), mean_colour("cheeks")
        assert lips[0] / lips[1] > cheeks[0] / cheeks[1] + 0.05, seed
        assert lum[vis["nostril_left"] | vis["nostril_right"]].mean() < lum[vis["nose_tip"]].mean() - 30, seed
        if vis["teeth"].sum() >= 20 and vis["oral_cavity"].sum() >= 20:
            assert lum[vis["teeth"]].mean() > lum[vis["oral_cavity"]].mean() + 50, seed


def _within_label_variance(image: np.ndarray, labels: np.ndarray) -> float:
    inner = (slice(8, -8), slice(8, -8))
    pixels, lab = image[inner].reshape(-1, 3).astype(np.float64), labels[inner].ravel()
    total = 0.0
    for k in np.unique(lab):
        values = pixels[lab == k]
        total += ((values - values.mean(axis=0)) ** 2).sum()
    return total / len(lab)


def test_the_label_map_is_aligned_with_the_picture(faces):
    # Each concept is painted with its own material: moving the label map by two pixels mixes materials,
    # so the colour spread within labels grows.
    for seed in (0, 2, 6, 9):
        face = faces[seed]
        aligned = _within_label_variance(face.image, face.label_map)
        for shift in ((0, 2), (0, -2), (2, 0), (-2, 0)):
            moved = np.roll(face.label_map, shift, axis=(0, 1))
            assert _within_label_variance(face.image, moved) > 1.04 * aligned, (seed, shift)


def test_closed_mouths_are_closed(faces, params200):
    closed = [s for s in SEEDS if faces[s].attributes["params"]["mouth_gap"] == 0]
    assert closed  # seeds 1, 4, 5 and 8
    for seed in closed:
        assert not faces[seed].attributes["mouth_open"], seed
    measured = np.array([mouth_gap(face_landmarks(p, 256)) > MOUTH_OPEN_GAP for p in params200])
    assert np.array_equal(measured, np.array([p.mouth_gap > 0 for p in params200]))


# --- diversity ------------------------------------------------------------------------------------

def test_attributes_are_diverse(params200):
    shares = {key: np.mean([getattr(p, key) for p in params200]) for key in CONDITIONAL}
    shares["mouth_open"] = np.mean([p.mouth_gap > 0 for p in params200])
    for key, share in shares.items():
        assert 0.05 <= share <= 0.6, (key, share)
    # A moustache comes with every beard.
    assert all(p.moustache for p in params200 if p.beard)


def test_skin_hair_and_pose_are_diverse(params200):
    skin = np.array([p.skin for p in params200]) @ LUMA
    assert np.ptp(skin) > 100 and skin.min() < 100 and skin.max() > 200
    yaw = np.array([p.yaw for p in params200])
    roll = np.array([p.roll for p in params200])
    for angle in (yaw, roll):
        assert (angle > np.radians(3)).sum() > 20 and (angle < -np.radians(3)).sum() > 20
        assert np.all(np.abs(angle) < np.radians(20))
    hair = np.array([p.hair for p in params200])
    nearest = np.argmin(np.linalg.norm(hair[:, None] - HAIR_COLOURS[None], axis=2), axis=1)
    assert len(set(nearest)) >= 5
    assert len(set(nearest)) == len(HAIR_COLOURS)
    # Continuous shape parameters vary too.
    for key in ("jaw_width", "eye_openness", "mouth_width", "scale"):
        values = np.array([getattr(p, key) for p in params200])
        assert np.std(values) > 0.02, key


# --- texture --------------------------------------------------------------------------------------

def test_skin_texture_is_measurable_and_blur_removes_it(faces, visible):
    checked = 0
    for seed, face in faces.items():
        if face.attributes["fringe"]:
            continue
        vis = visible[seed]
        forehead = vis["forehead_centre"] | vis["forehead_left"] | vis["forehead_right"]
        # Away from other materials by more than the blur's reach.
        core = interior(forehead, margin=6)
        if core.sum() < 100:
            continue
        checked += 1
        gray = cv2.cvtColor(face.image, cv2.COLOR_RGB2GRAY)
        before = high_pass(gray)[core]
        assert before.std() > 1.5, seed  # pores, not a flat fill
        blurred = cv2.GaussianBlur(face.image, (0, 0), 2)
        after = high_pass(cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY))[core]
        assert (after**2).mean() <= 0.5 * (before**2).mean(), seed
    assert checked >= 5
