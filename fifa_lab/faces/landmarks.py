"""Landmark backends: find faces in a photo and their 68 iBUG landmarks.

A backend is any object with a ``name`` and a ``detect(image)`` method returning `Detection`s.
Adding one (mediapipe, a face parser, ...) takes one file::

    from fifa_lab.faces.landmarks import Detection, register_backend

    @register_backend("mine")
    def _make_mine():          # called once, on first use, so heavy imports stay lazy
        return MyBackend()

after which ``detect_face(image, backend="mine")`` uses it. Backends must return landmarks in
iBUG 68-point order (convert other layouts inside the backend).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from fifa_lab.ibug68 import check_landmarks


@dataclass
class Detection:
    """One face found by a backend, in the coordinates of the image it was given.

    Attributes:
        box: ``(x0, y0, x1, y1)`` face box in pixels (x1, y1 exclusive).
        landmarks: ``(68, 2)`` float32 ``(x, y)`` pixel coordinates in iBUG order.
        score: detector confidence; comparable only between detections of the same backend.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    def __post_init__(self) -> None:
        self.box = tuple(float(v) for v in self.box)
        if len(self.box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1), got {self.box}")
        self.landmarks = check_landmarks(self.landmarks)
        self.score = float(self.score)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


class LandmarkBackend(Protocol):
    """Finds faces and their 68 landmarks in an ``(H, W, 3)`` uint8 RGB image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return every face found, in any order (empty list when none)."""


BackendFactory = Callable[[], LandmarkBackend]
_FACTORIES: dict[str, BackendFactory] = {}
_INSTANCES: dict[str, LandmarkBackend] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering a zero-argument factory that builds the backend ``name``.

    Registering a name again replaces the factory (and drops its cached instance), so re-running a
    notebook cell that defines a backend just works.
    """

    def decorator(factory: BackendFactory) -> BackendFactory:
        _FACTORIES[name] = factory
        _INSTANCES.pop(name, None)
        return factory

    return decorator


def available_backends() -> list[str]:
    """Names of the registered backends, sorted (their dependencies may still be missing)."""
    return sorted(_FACTORIES)


def get_backend(name: str = "dlib") -> LandmarkBackend:
    """The backend registered as ``name``, built on first use and cached (models load once)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown landmark backend {name!r}; available: {', '.join(available_backends())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


# --- dlib: HOG frontal face detector + 68-point shape predictor --------------------------------

DLIB_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"


def dlib_model_path() -> Path:
    """Path of dlib's 68-point model shipped in the ``face-recognition-models`` pip package."""
    # Importing face_recognition_models pulls in pkg_resources (deprecated, absent from recent
    # setuptools), so the package directory is located without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise ImportError(
            f"the dlib landmark backend needs {DLIB_MODEL_FILE}: pip install face-recognition-models"
        )
    locations = list(spec.submodule_search_locations or [])
    package_dir = Path(locations[0]) if locations else Path(spec.origin).parent
    path = package_dir / "models" / DLIB_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall it: pip install --force-reinstall face-recognition-models"
        )
    return path


class DlibBackend:
    """dlib's HOG frontal face detector and its 68-point shape predictor.

    HOG cost grows with the pixel count and dlib's detector finds faces down to about 80 px, so images
    are resized before detection: downscaled to a long side of `MAX_SIDE`, and upsampled once by dlib
    when the long side is below `UPSAMPLE_BELOW`. Landmarks are predicted on the original image.
    """

    name = "dlib"
    MAX_SIDE = 1024
    UPSAMPLE_BELOW = 400

    def __init__(self, model_path: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as err:
            raise ImportError("the dlib landmark backend needs dlib: pip install dlib-bin (or dlib)") from err
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model_path or dlib_model_path()))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an ``(H, W, 3)`` uint8 RGB image, largest box first."""
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        small, scale_x, scale_y = image, 1.0, 1.0
        if max(height, width) > self.MAX_SIDE:
            scale = self.MAX_SIDE / max(height, width)
            new_size = (round(width * scale), round(height * scale))
            small = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
            scale_x, scale_y = new_size[0] / width, new_size[1] / height
        upsample = 1 if max(small.shape[:2]) < self.UPSAMPLE_BELOW else 0
        # dlib maps rectangles found on its upsampled copy back to `small` itself.
        rects, scores, _ = self._detector.run(small, upsample, 0.0)

        detections = []
        for rect, score in zip(rects, scores):
            # dlib rectangles are inclusive; boxes are exclusive and in the original image.
            x0, y0 = rect.left() / scale_x, rect.top() / scale_y
            x1, y1 = (rect.right() + 1) / scale_x, (rect.bottom() + 1) / scale_y
            full_rect = self._dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1)
            shape = self._predictor(image, full_rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            detections.append(Detection((x0, y0, x1, y1), points, score))
        return sorted(detections, key=lambda d: d.area, reverse=True)


@register_backend("dlib")
def _make_dlib() -> DlibBackend:
    return DlibBackend()
