"""Forgery synthesis: every method's ground truth is where the change is, deterministic and well-formed."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from fifa_lab.artifacts import ARTIFACTS
from fifa_lab.faces import Face, detect_face, synth_face
from fifa_lab.fict import load_tree
from fifa_lab.forge import METHODS, apply_post, forge, methods_of

# Concepts (or their ancestors) a method must name in its ground truth.
EXPECTED_REGION = {
    "lip_colour": "lips", "iris_colour": "eyes", "hair_colour": "scalp_hair", "eye_close": "eyes",
    "mouth_open": "mouth", "mouth_close": "mouth", "brow_shape": "eyebrows", "add_beard": "facial_hair",
    "remove_beard": "facial_hair", "add_glasses": "glasses", "asymmetry": None, "background_warp": "background",
    "skin_smooth": "cheeks",
}


@pytest.fixture(scope="module")
def tree():
    return load_tree()


@pytest.fixture(scope="module")
def faces() -> list[Face]:
    return [synth_face(seed) for seed in range(8)]


def _forge_any(faces: list[Face], name: str, seed: int = 0):
    """The method on the first face it applies to (remove_beard needs a beard, mouth_close an open mouth)."""
    spec = METHODS[name]
    for face in faces:
        try:
            return forge(face, spec.forgery_class, name, seed=seed)
        except ValueError:
            continue
    pytest.fail(f"{name} applies to none of the test faces")


@pytest.mark.parametrize("name", list(METHODS))
def test_mask_is_exactly_where_the_image_changed(faces, tree, name):
    fake = _forge_any(faces, name)
    assert fake.mask.dtype == bool and fake.mask.shape == fake.real.shape[:2] and fake.mask.any()
    diff = np.abs(fake.fake.astype(int) - fake.real.astype(int)).max(axis=-1)
    # Without post-processing nothing outside the mask may change, and the inside clearly does.
    assert not diff[~fake.mask].any()
    assert diff[fake.mask].mean() > 1.0
    assert fake.forgery_class == METHODS[name].forgery_class and fake.method == name
    leaves = {leaf.id for leaf in tree.leaves()}
    assert fake.concepts and all(c["concept"] in leaves for c in fake.concepts)
    assert all(a in ARTIFACTS for c in fake.concepts for a in c["artifacts"])
    assert all(0 < c["coverage"] <= 1 for c in fake.concepts)
    region = EXPECTED_REGION.get(name)
    if region is not None:
        named = {a.id for c in fake.concepts for a in [tree.get(c["concept"]), *tree.ancestors(c["concept"])]}
        assert region in named, (name, [c["concept"] for c in fake.concepts][:6])
    json.dumps(fake.params)  # the recipe must be storable


@pytest.mark.parametrize("name", ["swap_feathered", "mouth_open", "hair_colour", "gan_upsample"])
def test_same_seed_same_fake_and_different_seeds_differ(faces, name):
    cls = METHODS[name].forgery_class
    a, b = forge(faces[0], cls, name, seed=5), forge(faces[0], cls, name, seed=5)
    assert np.array_equal(a.fake, b.fake) and np.array_equal(a.mask, b.mask) and a.params == b.params
    c = forge(faces[0], cls, name, seed=6)
    assert not np.array_equal(a.fake, c.fake)


@pytest.mark.parametrize("name", ["swap_feathered", "swap_poisson", "self_blend"])
def test_swap_masks_are_one_blob_over_the_inner_face(faces, name):
    for face in faces[:3]:
        fake = forge(face, "FS", name, seed=1)
        nose_tip = tuple(np.round(face.landmarks[30, ::-1]).astype(int))
        assert fake.mask[nose_tip] and not fake.mask[0, 0] and not fake.mask[-1, -1]
        # One blob: OpenCV's seamlessClone writes into its mask argument, which once turned the
        # Poisson ground truth into a frame around the face.
        assert cv2.connectedComponents(fake.mask.astype(np.uint8))[0] - 1 == 1
        assert any("blending_seam" in c["artifacts"] for c in fake.concepts)


def test_ageing_draws_whole_wrinkle_lines(faces):
    fake = forge(faces[0], "FE", "ageing", seed=0)
    # About a dozen lines (forehead, under-eye, crow's feet, smile lines), not hundreds of dashes.
    assert cv2.connectedComponents(fake.mask.astype(np.uint8))[0] - 1 <= 15
    assert fake.mask.mean() > 0.005


def test_gan_upsample_leaves_a_checkerboard_not_a_tone_shift(faces):
    fake = forge(faces[0], "EFS", "gan_upsample", seed=0)
    diff = fake.fake.astype(float).mean(axis=2) - fake.real.astype(float).mean(axis=2)
    m = fake.mask
    even, odd = diff[0::2, 0::2][m[0::2, 0::2]].mean(), diff[1::2, 1::2][m[1::2, 1::2]].mean()
    assert odd - even > 5 and abs(diff[m].mean()) < 2


def test_method_none_picks_an_applicable_method_per_seed(faces):
    picked = {forge(faces[0], "FE", seed=s).method for s in range(12)}
    assert len(picked) > 2 and picked <= set(methods_of("FE"))
    beardless = next(f for f in faces if not f.attributes["beard"] and not f.attributes["moustache"])
    assert all(forge(beardless, "FE", seed=s).method != "remove_beard" for s in range(20))


def test_post_processing_is_recorded_and_leaves_the_mask_alone(faces):
    chain = [{"op": "jpeg", "quality": 40}, {"op": "blur", "sigma": 1.0}]
    clean = forge(faces[1], "FE", "lip_colour", seed=2)
    processed = forge(faces[1], "FE", "lip_colour", seed=2, post=chain)
    assert [step["op"] for step in processed.params["post"]] == ["jpeg", "blur"]
    assert np.array_equal(clean.mask, processed.mask)
    assert not np.array_equal(clean.fake, processed.fake)
    assert np.array_equal(processed.fake, apply_post(clean.fake, chain))
    random = forge(faces[1], "FE", "lip_colour", seed=2, post="random")
    assert random.params["post"] and random.params["post"] == forge(faces[1], "FE", "lip_colour", seed=2,
                                                                    post="random").params["post"]


def test_fr_fakes_carry_their_moved_landmarks(faces):
    fake = forge(faces[0], "FR", "mouth_open", seed=1)
    lower_lip = [57, 66]
    assert (fake.landmarks[lower_lip, 1] > faces[0].landmarks[lower_lip, 1] + 1).all()
    assert np.allclose(fake.landmarks[36:48], faces[0].landmarks[36:48])
    # A closed mouth opened by warping shows an interior the real never had: the ground truth names it.
    closed = next(f for f in faces if not f.attributes["mouth_open"])
    opened = forge(closed, "FR", "mouth_open", seed=1)
    named = {c["concept"]: c["artifacts"] for c in opened.concepts}
    assert "oral_cavity" in named and "missing_detail" in named["oral_cavity"]


def test_self_blend_makes_ground_truth_from_a_photo():
    photo = detect_face(astronaut())
    fake = forge(photo, "FS", "self_blend", seed=0)
    assert fake.mask.any() and fake.mask.mean() < 0.6
    assert any(c["concept"].startswith("cheek") for c in fake.concepts)


def test_bad_inputs_get_clear_errors(faces):
    with pytest.raises(ValueError, match="FS, FR, FE, EFS"):
        forge(faces[0], "XX")
    with pytest.raises(ValueError, match="lip_colour"):
        forge(faces[0], "FE", "no_such_method")
    with pytest.raises(ValueError, match="label map"):
        forge(Face(faces[0].image, faces[0].landmarks), "FE")
    beardless = next(f for f in faces if not f.attributes["beard"] and not f.attributes["moustache"])
    with pytest.raises(ValueError, match="beard"):
        forge(beardless, "FE", "remove_beard")
    with pytest.raises(ValueError, match="strength"):
        forge(faces[0], "FE", "lip_colour", strength=1.5)


def test_the_generator_trace_is_the_fingerprint_inside_the_mask_and_nothing_outside(faces):
    traced = forge(faces[0], "FE", "lip_colour", seed=3)
    plain = forge(faces[0], "FE", "lip_colour", seed=3, trace=False)
    assert traced.params["trace"] == {"period": 8, "amplitude": 5.0} and plain.params["trace"] is None
    assert np.array_equal(traced.mask, plain.mask)
    diff = traced.fake.astype(float) - plain.fake.astype(float)
    assert not diff[~traced.mask].any()
    rows, cols = np.nonzero(traced.mask)
    expected = np.rint(5.0 * np.cos(2 * np.pi * rows / 8) * np.cos(2 * np.pi * cols / 8))[:, None]
    unclipped = (plain.fake[rows, cols] >= 5) & (plain.fake[rows, cols] <= 250)  # per pixel and channel
    assert unclipped.mean() > 0.5
    assert np.abs(diff[rows, cols] - expected)[unclipped].max() <= 1


def test_a_custom_trace_is_recorded_and_bad_ones_are_refused(faces):
    custom = forge(faces[0], "FE", "lip_colour", seed=3, trace={"period": 16, "amplitude": 2})
    assert custom.params["trace"] == {"period": 16, "amplitude": 2}
    for bad, message in (({"period": 1}, "period"), ({"amplitude": -1}, "amplitude"),
                         ({"scale": 2}, "not \\['scale'\\]"), ("yes", "trace must be")):
        with pytest.raises(ValueError, match=message):
            forge(faces[0], "FE", "lip_colour", seed=3, trace=bad)
