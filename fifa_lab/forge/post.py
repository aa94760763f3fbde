"""Global post-processing of a fake: the JPEG, resizing, blur and noise a shared image goes through.

A chain is a list of operations applied in order, each a plain dict recorded in ``Forgery.params["post"]``:

``{"op": "jpeg", "quality": 10..100}``, ``{"op": "resize", "scale": 0.25..4}`` (to that scale and back),
``{"op": "blur", "sigma": > 0}`` (Gaussian, pixels), ``{"op": "noise", "sigma": > 0, "seed": int}``
(Gaussian, grey levels; the seed keeps it reproducible).

Post-processing is global and applied after the artifact mask is fixed: it changes every pixel a
little and hides the manipulation traces, as sharing a fake does.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

# op -> {parameter: (low, high, type)}: the accepted range of each parameter.
POST_OPS: dict[str, dict[str, tuple[float, float, type]]] = {
    "jpeg": {"quality": (10, 100, int)},
    "resize": {"scale": (0.25, 4.0, float)},
    "blur": {"sigma": (0.05, 10.0, float)},
    "noise": {"sigma": (0.05, 50.0, float), "seed": (0, 2**32 - 1, int)},
}


def check_chain(chain: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate a chain and return it as plain dicts; ValueError names the bad operation."""
    if isinstance(chain, (str, bytes)) or not isinstance(chain, Sequence):
        raise ValueError(f"a post-processing chain is a list of operations, got {chain!r}")
    out = []
    for step in chain:
        if not isinstance(step, Mapping) or step.get("op") not in POST_OPS:
            raise ValueError(f"post-processing step {step!r}: 'op' must be one of {', '.join(POST_OPS)}")
        spec = POST_OPS[step["op"]]
        if set(step) - {"op"} != set(spec):
            raise ValueError(f"post-processing op {step['op']!r} takes exactly {sorted(spec)}, got {dict(step)}")
        clean: dict[str, Any] = {"op": step["op"]}
        for key, (low, high, kind) in spec.items():
            value = step[key]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or (kind is int and float(value) != int(value)) or not low <= value <= high:
                raise ValueError(f"post-processing op {step['op']!r}: {key} must be a {kind.__name__} in "
                                 f"[{low}, {high}], got {value!r}")
            clean[key] = kind(value)
        out.append(clean)
    return out


def apply_post(image: np.ndarray, chain: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Apply a chain to an ``(H, W, 3)`` uint8 RGB image; returns a new ``(H, W, 3)`` uint8 image."""
    out = image
    for step in check_chain(chain):
        out = _OPS[step["op"]](out, step)
    return out if out is not image else image.copy()


def random_chain(rng: np.random.Generator) -> list[dict[str, Any]]:
    """A typical sharing chain: optional resize, blur and noise, then JPEG (always: most fakes are shared)."""
    chain: list[dict[str, Any]] = []
    if rng.random() < 0.4:
        chain.append({"op": "resize", "scale": round(float(rng.uniform(0.5, 0.9)), 3)})
    if rng.random() < 0.3:
        chain.append({"op": "blur", "sigma": round(float(rng.uniform(0.3, 1.2)), 3)})
    if rng.random() < 0.3:
        chain.append({"op": "noise", "sigma": round(float(rng.uniform(1.0, 5.0)), 3),
                      "seed": int(rng.integers(2**32))})
    chain.append({"op": "jpeg", "quality": int(rng.integers(50, 96))})
    return chain


def _jpeg(image: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, step["quality"]])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def _resize(image: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    h, w = image.shape[:2]
    scale = step["scale"]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(cv2.resize(image, small, interpolation=shrink), (w, h), interpolation=cv2.INTER_LINEAR)


def _blur(image: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), step["sigma"])


def _noise(image: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    noise = np.random.default_rng(step["seed"]).normal(0.0, step["sigma"], image.shape).astype(np.float32)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


_OPS: dict[str, Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]] = {
    "jpeg": _jpeg, "resize": _resize, "blur": _blur, "noise": _noise,
}
