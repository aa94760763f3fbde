"""The 68-point iBUG landmark convention: index ranges, validation, the face frame and the mean face.

All geometry in the workbench is expressed in one *face frame* derived from the landmarks, so synthetic
faces, aligned photos and the concept tree share one layout:

* origin: midpoint of the two eye centres;
* ``u`` axis: from the subject's right eye (image left on a frontal face) to the subject's left eye;
* ``v`` axis: ``u`` rotated by +90 degrees in image coordinates (pointing down the face);
* unit: the inter-ocular distance (IOD) between the two eye centres.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

N_LANDMARKS = 68
# iBUG 68-point index ranges (the subject's right is on the image left of a frontal face).
JAW = slice(0, 17)
RIGHT_BROW, LEFT_BROW = slice(17, 22), slice(22, 27)
NOSE_BRIDGE, NOSE_BASE = slice(27, 31), slice(31, 36)
RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)
OUTER_LIPS, INNER_LIPS = slice(48, 60), slice(60, 68)

# Where an aligned face sits in its square working image, as fractions of the image side:
# the eye midpoint and the inter-ocular distance. Synthetic faces are drawn around this placement
# and photos are aligned to it, so both kinds of face fill the image the same way.
CANONICAL_EYE_MIDPOINT = (0.5, 0.44)
CANONICAL_IOD = 0.24


def check_landmarks(landmarks: Any) -> np.ndarray:
    """Return landmarks as a ``(68, 2)`` float32 array or raise a ValueError saying what is wrong."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (N_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) in iBUG order, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks contain NaN or infinite values")
    return points


@dataclass(frozen=True)
class FaceFrame:
    """The face frame of one set of landmarks: ``image_point = origin + iod * (u * ex + v * ey)``."""

    origin: np.ndarray  # (2,) pixel position of the eye midpoint
    ex: np.ndarray  # (2,) unit vector along u
    ey: np.ndarray  # (2,) unit vector along v
    iod: float

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceFrame":
        points = check_landmarks(landmarks).astype(np.float64)
        right_eye = points[RIGHT_EYE].mean(axis=0)
        left_eye = points[LEFT_EYE].mean(axis=0)
        axis = left_eye - right_eye
        iod = float(np.hypot(*axis))
        if iod < 1e-3:
            raise ValueError("landmarks are degenerate: the two eye centres coincide")
        ex = axis / iod
        ey = np.array([-ex[1], ex[0]])
        return cls((right_eye + left_eye) / 2, ex, ey, iod)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` face-frame coordinates to pixel coordinates."""
        uv = np.asarray(uv, dtype=np.float64)
        return self.origin + self.iod * (uv[..., :1] * self.ex + uv[..., 1:2] * self.ey)

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` pixel coordinates to face-frame coordinates."""
        d = (np.asarray(xy, dtype=np.float64) - self.origin) / self.iod
        return np.stack([d @ self.ex, d @ self.ey], axis=-1)

    def offset(self, duv: np.ndarray) -> np.ndarray:
        """Pixel displacement of a face-frame displacement ``(..., 2)``."""
        duv = np.asarray(duv, dtype=np.float64)
        return self.iod * (duv[..., :1] * self.ex + duv[..., 1:2] * self.ey)


def canonical_frame(size: int) -> FaceFrame:
    """The face frame of an aligned face in a ``size`` x ``size`` working image."""
    origin = np.array(CANONICAL_EYE_MIDPOINT, dtype=np.float64) * size
    return FaceFrame(origin, np.array([1.0, 0.0]), np.array([0.0, 1.0]), CANONICAL_IOD * size)


def jaw_curve(width: float = 1.05, top: float = 0.05, depth: float = 1.6, squareness: float = 2.3) -> np.ndarray:
    """17 jaw landmarks (iBUG 0-16) in face-frame units: a superellipse from ear to ear through the chin.

    ``squareness`` 2 is an ellipse; larger values give a squarer jaw.
    """
    angle = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(angle), np.sin(angle)
    exponent = 2.0 / squareness
    u = -width * np.sign(c) * np.abs(c) ** exponent
    v = top + depth * np.abs(s) ** exponent
    return np.stack([u, v], axis=1)


# A frontal, neutral, closed-mouth face in face-frame units (iBUG order, subject's right at u < 0).
_BROWS_RIGHT = [(-0.95, -0.27), (-0.78, -0.38), (-0.6, -0.42), (-0.42, -0.41), (-0.2, -0.35)]
_NOSE = [(0.0, -0.04), (0.0, 0.2), (0.0, 0.43), (0.0, 0.66),
         (-0.27, 0.77), (-0.14, 0.81), (0.0, 0.83), (0.14, 0.81), (0.27, 0.77)]
_EYE_RIGHT = [(-0.76, 0.0), (-0.59, -0.09), (-0.41, -0.09), (-0.24, 0.01), (-0.41, 0.07), (-0.59, 0.07)]
_MOUTH = [(-0.42, 1.18), (-0.27, 1.1), (-0.1, 1.06), (0.0, 1.08), (0.1, 1.06), (0.27, 1.1), (0.42, 1.18),
          (0.27, 1.28), (0.12, 1.32), (0.0, 1.33), (-0.12, 1.32), (-0.27, 1.28),
          (-0.36, 1.18), (-0.12, 1.15), (0.0, 1.155), (0.12, 1.15), (0.36, 1.18),
          (0.12, 1.16), (0.0, 1.165), (-0.12, 1.16)]


def _mirror(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-u, v) for u, v in points]


def mean_shape() -> np.ndarray:
    """The 68 landmarks of the mean frontal face in face-frame units, shape ``(68, 2)``."""
    brows_left = _mirror(_BROWS_RIGHT)[::-1]
    # iBUG orders the left eye from its inner corner (42) over the top to the outer corner (45).
    eye_left = _mirror([_EYE_RIGHT[i] for i in (3, 2, 1, 0, 5, 4)])
    points = np.concatenate([jaw_curve(), _BROWS_RIGHT, brows_left, _NOSE, _EYE_RIGHT, eye_left, _MOUTH])
    return points.astype(np.float64)


# Depth of each landmark out of the image plane (IODs) on a frontal face: turning the head by a yaw angle
# moves a point sideways by depth * sin(yaw).
LANDMARK_DEPTH = np.concatenate([
    -0.55 * np.cos(np.linspace(0, np.pi, 17)) ** 2 + 0.1,  # jaw: ears far back, chin forward
    [0.15, 0.25, 0.32, 0.36, 0.38, 0.38, 0.36, 0.32, 0.25, 0.15],  # brows
    [0.45, 0.55, 0.68, 0.8, 0.5, 0.55, 0.6, 0.55, 0.5],  # nose
    [0.15, 0.25, 0.27, 0.28, 0.27, 0.25] * 2,  # eyes
    [0.35, 0.45, 0.5, 0.52, 0.5, 0.45, 0.35, 0.45, 0.5, 0.52, 0.5, 0.45],  # outer lips
    [0.38, 0.46, 0.48, 0.46, 0.38, 0.46, 0.48, 0.46],  # inner lips
])
