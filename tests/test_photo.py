"""Photo face source: image loading, the landmark-backend registry and dlib detection + alignment."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from fifa_lab.faces import landmarks as landmark_registry
from fifa_lab.ibug68 import (
    CANONICAL_EYE_MIDPOINT,
    CANONICAL_IOD,
    LEFT_EYE,
    RIGHT_EYE,
    FaceFrame,
    canonical_frame,
    mean_shape,
)
from fifa_lab.faces.image_io import MIN_SIDE, ImageError, load_image
from fifa_lab.faces.landmarks import Detection, available_backends, get_backend, register_backend
from fifa_lab.faces.photo import NoFaceError, align_landmarks, detect_face
from fifa_lab.fict import load_tree

SIZE = 256


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return astronaut()


@pytest.fixture
def isolated_registry(monkeypatch):
    """Let a test register backends without leaking them into other tests."""
    monkeypatch.setattr(landmark_registry, "_FACTORIES", dict(landmark_registry._FACTORIES))
    monkeypatch.setattr(landmark_registry, "_INSTANCES", dict(landmark_registry._INSTANCES))


def assert_canonical(face, size: int = SIZE) -> None:
    frame = FaceFrame.from_landmarks(face.landmarks)
    np.testing.assert_allclose(frame.origin, np.array(CANONICAL_EYE_MIDPOINT) * size, atol=0.02 * size)
    assert frame.iod == pytest.approx(CANONICAL_IOD * size, rel=0.1)
    assert abs(frame.ex[1]) < 0.05  # eyes level


# --- load_image ----------------------------------------------------------------------------------


def test_load_image_conversions(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    out = load_image(gray)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    assert np.array_equal(load_image(gray[..., None]), out)

    transparent = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])
    assert np.all(load_image(transparent) == 255)  # fully transparent -> white
    assert np.array_equal(load_image(np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])), photo)
    gray_alpha = Image.fromarray(photo).convert("LA")
    assert np.array_equal(load_image(gray_alpha)[..., 0], np.asarray(gray_alpha)[..., 0])

    assert np.array_equal(load_image(photo.astype(np.uint16) * 257), photo)
    assert np.array_equal(load_image(photo / 255.0), photo)
    assert np.array_equal(load_image(np.clip(photo / 255.0 + 5e-4, None, 1.0005)), photo)

    copy = load_image(photo)
    assert np.array_equal(copy, photo) and not np.shares_memory(copy, photo)


def test_load_image_from_files(photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "rgb.png")
    assert np.array_equal(load_image(tmp_path / "rgb.png"), photo)
    assert np.array_equal(load_image(str(tmp_path / "rgb.png")), photo)
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray.astype(np.uint16) * 257)
    assert np.array_equal(load_image(tmp_path / "gray16.png")[..., 1], gray)
    # 8-bit data in PIL's 32-bit integer mode stays 8-bit.
    assert np.array_equal(load_image(Image.fromarray(gray).convert("I"))[..., 0], gray)
    # EXIF orientation 6 (stored rotated) is applied: the image comes back rotated 90 degrees clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo[:, :300]).save(tmp_path / "rotated.png", exif=exif)
    assert np.array_equal(load_image(tmp_path / "rotated.png"), np.rot90(photo[:, :300], k=-1))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.uint8), f"10x10 pixels; each side must be at least {MIN_SIDE}"),
        (np.zeros((64, 20, 3), np.uint8), "20x64"),
        (np.zeros((64, 64, 5), np.uint8), "shape"),
        (np.zeros((2, 64, 64, 3), np.uint8), "shape"),
        (np.zeros((64, 64), bool), "mask"),
        (np.full((64, 64), 1.5), r"\[0, 1\]"),
        (np.full((64, 64), np.nan), "NaN"),
        (np.full((64, 64), 300, np.int32), "0..255"),
    ],
)
def test_load_image_rejects(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(array)


def test_load_image_file_errors(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="not found") as info:
        load_image(missing)
    assert str(missing) in str(info.value)

    corrupt = tmp_path / "x.png"
    corrupt.write_bytes(b"this is not an image \x00\x01\x02" * 10)
    with pytest.raises(ImageError, match="cannot read") as info:
        load_image(corrupt)
    assert str(corrupt) in str(info.value)

    with pytest.raises(TypeError):
        load_image([[0, 1], [2, 3]])


# --- backend registry ----------------------------------------------------------------------------


def test_unknown_backend_lists_available():
    with pytest.raises(ValueError, match="available: .*dlib"):
        get_backend("no-such-backend")
    with pytest.raises(ValueError, match="dlib"):
        detect_face(np.zeros((64, 64, 3), np.uint8), backend="no-such-backend")
    assert "dlib" in available_backends()
    assert get_backend("dlib") is get_backend()  # cached: the model loads once


def test_custom_backend_plugs_into_detect_face(isolated_registry):
    # Two mean faces, rotated and scaled arbitrarily; the backend reports the small one first,
    # detect_face still counts from the largest.
    def placed(origin, iod, angle):
        ex = np.array([np.cos(angle), np.sin(angle)])
        return FaceFrame(np.array(origin, float), ex, np.array([-ex[1], ex[0]]), iod).to_image(mean_shape())

    small, large = placed((80, 60), 25.0, 0.3), placed((200, 150), 60.0, -0.2)
    built = []

    class FixedBackend:
        name = "fixed"

        def detect(self, image):
            assert image.shape == (240, 320, 3) and image.dtype == np.uint8
            boxes = [(*p.min(0), *p.max(0)) for p in (small, large)]
            return [Detection(boxes[0], small, 0.5), Detection(boxes[1], large, 0.9)]

    @register_backend("fixed")
    def make_fixed():
        built.append(1)
        return FixedBackend()

    assert "fixed" in available_backends()
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    target = canonical_frame(SIZE).to_image(mean_shape())
    for index, points in [(0, large), (1, small)]:
        face = detect_face(noise, backend="fixed", index=index)
        assert face.source == "photo:fixed" and face.image.shape == (SIZE, SIZE, 3)
        np.testing.assert_allclose(face.landmarks, target, atol=1e-3)
        assert face.attributes["box"] == pytest.approx((*points.min(0), *points.max(0)))
    assert built == [1]
    with pytest.raises(NoFaceError, match="index 2"):
        detect_face(noise, backend="fixed", index=2)


def test_detection_validates_landmarks():
    with pytest.raises(ValueError, match="68, 2"):
        Detection((0, 0, 10, 10), np.zeros((5, 2)), 1.0)


def test_align_landmarks_is_exact_for_the_canonical_face():
    target = canonical_frame(SIZE).to_image(mean_shape())
    matrix = align_landmarks(target * 0.5 + 7.0, SIZE)
    np.testing.assert_allclose(matrix, [[2, 0, -14], [0, 2, -14]], atol=1e-4)  # float32 input


# --- dlib on a real photo ------------------------------------------------------------------------


def test_astronaut_has_one_face(photo):
    detections = get_backend("dlib").detect(photo)
    assert len(detections) == 1
    x0, y0, x1, y1 = detections[0].box
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200


def test_detect_face_aligns_astronaut(photo):
    face = detect_face(photo, size=SIZE)
    assert face.image.shape == (SIZE, SIZE, 3) and face.image.dtype == np.uint8
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    assert face.source == "photo:dlib"
    # The same geometry code as synthetic faces labels the photo: the eyes land where dlib put them.
    tree = load_tree()
    assert face.label_map.shape == (SIZE, SIZE) and face.label_map.dtype == np.int16
    for side, points in (("left", LEFT_EYE), ("right", RIGHT_EYE)):
        x, y = np.round(face.landmarks[points].mean(axis=0)).astype(int)
        assert tree.ancestor_at_depth(tree.leaves()[face.label_map[y, x]].id, 2).id == f"eye_{side}"
    assert not any(face.attributes[k] for k in ("glasses", "earrings", "beard", "moustache", "fringe"))
    assert face.attributes["alignment"].shape == (2, 3)
    assert_canonical(face)
    # The subject's left eye is on the image right; the mouth is below the eyes.
    assert face.landmarks[LEFT_EYE, 0].mean() > face.landmarks[RIGHT_EYE, 0].mean()
    assert face.landmarks[48:68, 1].mean() > face.landmarks[36:48, 1].mean()
    # The returned matrix maps the original landmarks onto the returned ones.
    original = get_backend("dlib").detect(photo)[0].landmarks
    matrix = face.attributes["alignment"]
    np.testing.assert_allclose(original @ matrix[:, :2].T + matrix[:, 2], face.landmarks, atol=1e-3)


@pytest.mark.parametrize(
    "convert",
    [
        lambda p: cv2.cvtColor(p, cv2.COLOR_RGB2GRAY),
        lambda p: np.dstack([p, np.full(p.shape[:2], 255, np.uint8)]),
        lambda p: p.astype(np.float32) / 255,
        lambda p: p.astype(np.uint16) * 257,
        lambda p: Image.fromarray(p),
    ],
    ids=["gray", "rgba", "float", "uint16", "pil"],
)
def test_detect_face_accepts_input_forms(photo, convert):
    assert_canonical(detect_face(convert(photo), size=SIZE))


def test_detect_face_from_path(photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "astronaut.jpg", quality=95)
    assert_canonical(detect_face(tmp_path / "astronaut.jpg", size=128), size=128)


def test_detect_face_on_huge_image(photo):
    huge = cv2.resize(photo, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    face = detect_face(huge, size=SIZE)
    assert_canonical(face)
    small_box = np.array(get_backend("dlib").detect(photo)[0].box)
    np.testing.assert_allclose(np.array(face.attributes["box"]) * 512 / 3000, small_box, atol=6)
    # Same face, same crop: the huge image's crop matches the original's.
    reference = detect_face(photo, size=SIZE).image.astype(float)
    assert np.abs(face.image.astype(float) - reference).mean() < 12


@pytest.mark.parametrize(
    "image",
    [
        np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))[..., None].repeat(3, axis=2),
        np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8),
    ],
    ids=["gradient", "noise"],
)
def test_no_face_raises(image):
    with pytest.raises(NoFaceError, match="no face found"):
        detect_face(image)


def test_tiny_image_raises():
    with pytest.raises(ImageError, match="10x10"):
        detect_face(np.zeros((10, 10, 3), np.uint8))
