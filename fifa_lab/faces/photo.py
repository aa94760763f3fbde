"""Photo face source: detect a face in a photo and align it to the canonical face placement.

The aligned crop puts the face where synthetic faces are drawn (`canonical_frame`), so every later
stage (FICT masks, forgeries, the annotator) sees photos and synthetic faces laid out the same way.
"""
from __future__ import annotations

import cv2
import numpy as np

from fifa_lab.faces.face import Face
from fifa_lab.faces.image_io import ImageSource, load_image
from fifa_lab.faces.landmarks import available_backends, get_backend
from fifa_lab.fict import load_tree
from fifa_lab.ibug68 import canonical_frame, check_landmarks, mean_shape

# Appearance flags a landmark backend cannot tell; photos default to False for each.
_PHOTO_ATTRIBUTES = ("glasses", "earrings", "beard", "moustache", "fringe")


class NoFaceError(ValueError):
    """No (or not enough) faces were found in the photo."""


def align_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The ``(2, 3)`` similarity transform taking ``(68, 2)`` landmarks onto the canonical mean face.

    Least squares over all 68 points (Umeyama): the target is ``mean_shape()`` placed by
    ``canonical_frame(size)``, i.e. the layout of a synthetic ``size`` x ``size`` face.
    """
    source = check_landmarks(landmarks).astype(np.float64)
    target = canonical_frame(size).to_image(mean_shape())
    return _similarity(source, target)


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Umeyama's least-squares rotation + uniform scale + translation, ``(N, 2)`` -> ``(N, 2)``."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(dst.T @ src / len(src))
    # Force a proper rotation: a reflection would swap the subject's left and right.
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / src.var(axis=0).sum()
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``(H, W, 3)`` ``image`` by the ``(2, 3)`` ``matrix`` into a ``size`` x ``size`` crop."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 1.0:
        # Bilinear warping skips pixels when shrinking and aliases; area-average down to the crop's
        # scale first so a large face keeps a clean crop (aliasing would look like a forgery artifact).
        height, width = image.shape[:2]
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
        sx, sy = new_size[0] / width, new_size[1] / height
        # cv2.resize maps pixel centres as x' = sx * x + (sx - 1) / 2; undo that in the matrix.
        resized_to_original = np.array(
            [[1 / sx, 0, (1 - sx) / (2 * sx)], [0, 1 / sy, (1 - sy) / (2 * sy)], [0, 0, 1]]
        )
        matrix = matrix @ resized_to_original
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def detect_face(image: ImageSource, size: int = 256, backend: str = "dlib", index: int = 0) -> Face:
    """Detect a face in a photo and return it aligned in a ``size`` x ``size`` crop.

    Args:
        image: a path, PIL image or array (see `load_image` for the accepted forms).
        size: side of the square output crop in pixels.
        backend: name of a registered landmark backend (see `fifa_lab.faces.landmarks`).
        index: which face, counted from the largest (0 = largest box).

    Returns:
        A `Face` with the ``(size, size, 3)`` uint8 crop, its ``(68, 2)`` float32 landmarks,
        its label map under the default FICT (the same geometry code as synthetic faces; the
        conditional concepts such as glasses or beard stay empty because 68 landmarks cannot tell
        them) and attributes: the five appearance flags (False), ``"alignment"`` (the
        ``(2, 3)`` float64 matrix from original-image to crop pixels), ``"box"`` (the detection box
        ``(x0, y0, x1, y1)`` in the original image) and ``"score"`` (the detector score).

    Raises:
        ImageError: the image cannot be loaded. NoFaceError: no face (or no face ``index``) found.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    rgb = load_image(image)
    # Backends may report faces in any order; `index` counts from the largest.
    detections = sorted(get_backend(backend).detect(rgb), key=lambda d: d.area, reverse=True)
    if not detections:
        height, width = rgb.shape[:2]
        raise NoFaceError(
            f"no face found by the {backend!r} backend in the {width}x{height} image; it needs a roughly"
            " frontal, unoccluded face that is not tiny in the image (crop closer, or try another"
            f" backend: {', '.join(available_backends())})"
        )
    try:
        detection = detections[index]
    except IndexError:
        raise NoFaceError(f"face index {index} requested but only {len(detections)} face(s) found") from None

    matrix = align_landmarks(detection.landmarks, size)
    aligned = warp_to_crop(rgb, matrix, size)
    landmarks = (detection.landmarks.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
    attributes = {name: False for name in _PHOTO_ATTRIBUTES}
    label_map = load_tree().label_map(landmarks, (size, size), attributes)
    attributes.update(alignment=matrix, box=detection.box, score=detection.score)
    return Face(aligned, landmarks, label_map=label_map, attributes=attributes, source=f"photo:{backend}")
