"""Load any image a user hands over as one canonical array: ``(H, W, 3)`` uint8 RGB.

Conversions, applied in this order:

* path: decoded with PIL, EXIF orientation applied (phone photos are stored rotated);
* PIL image: palette, CMYK, YCbCr and other colour modes converted to RGB(A); 16-bit greyscale
  read as 16-bit; 32-bit integer greyscale (mode ``I``) read as 8-bit when it holds 0..255, else
  as 16-bit; float mode ``F`` follows the float rule below;
* dtype: ``uint8`` as is; ``uint16`` scaled to 8 bits (65535 -> 255); other integer dtypes must
  already hold 0..255; floats must lie in ``[0, 1]`` (within ``FLOAT_TOLERANCE``, then clipped);
  ``bool`` is refused (a mask, not a photo);
* channels: greyscale ``(H, W)`` or ``(H, W, 1)`` replicated to RGB; greyscale+alpha ``(H, W, 2)``
  and RGBA ``(H, W, 4)`` composited on white.

Every problem is reported as `ImageError`, naming the file when there is one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

# Smallest accepted height and width: below this no detector finds a face and crops are meaningless.
MIN_SIDE = 32
# Float images a hair outside [0, 1] (resampling overshoot, rounding) are clipped rather than refused.
FLOAT_TOLERANCE = 1e-3

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]


class ImageError(ValueError):
    """The input cannot be read or used as a photo."""


def load_image(source: ImageSource) -> np.ndarray:
    """Return ``source`` (a path, a PIL image or an array) as a new ``(H, W, 3)`` uint8 RGB array.

    See the module docstring for the conversions. Raises `ImageError` for a missing or unreadable
    file, an empty array, an unsupported shape or dtype, or a side shorter than `MIN_SIDE`.
    """
    if isinstance(source, (str, os.PathLike)):
        array = _read_file(Path(source).expanduser())
    elif isinstance(source, Image.Image):
        array = _from_pil(source)
    elif isinstance(source, np.ndarray):
        array = source
    else:
        raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(source).__name__}")
    return _to_rgb_uint8(array)


def _read_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"not a file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return _from_pil(ImageOps.exif_transpose(image))
    # PIL's format plugins signal corrupt or truncated data with many exception types
    # (OSError, ValueError, SyntaxError, EOFError, DecompressionBombError, ...).
    except Exception as err:
        raise ImageError(f"cannot read image file {path}: {err}") from err


def _from_pil(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        # 32-bit mode: older Pillow opens 16-bit PNGs this way, convert("I") of 8-bit data keeps 0..255.
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageError("32-bit integer image (PIL mode I) has values outside 0..65535")
        return values.astype(np.uint8 if values.max() <= 255 else np.uint16)
    if mode in ("RGB", "RGBA", "L", "LA", "F"):
        return np.asarray(image)
    # Palette images may carry transparency; RGBA keeps it for compositing on white.
    has_alpha = mode in ("PA", "RGBa", "La") or "transparency" in image.info
    return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))


def _to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise ImageError(f"image is empty (shape {array.shape})")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(
            f"image must have shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"image is {width}x{height} pixels; each side must be at least {MIN_SIDE}")

    array = _to_uint8(array)
    channels = array.shape[2]
    if channels in (2, 4):
        array = _composite_on_white(array[:, :, :-1], array[:, :, -1:])
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.array(array, dtype=np.uint8, order="C")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        raise ImageError("boolean arrays are masks, not images; convert to uint8 (e.g. mask * 255) first")
    if dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"{dtype} image has values in [{low}, {high}];"
                " integer images other than uint16 must hold 0..255"
            )
        return array.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageError("float image contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            raise ImageError(
                f"float images must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]"
                " (divide 0..255 data by 255 or pass it as uint8)"
            )
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {dtype}")


def _composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend ``(H, W, C)`` uint8 colour over white with ``(H, W, 1)`` uint8 alpha."""
    color16, alpha16 = color.astype(np.uint16), alpha.astype(np.uint16)
    blended = (color16 * alpha16 + 255 * (255 - alpha16) + 127) // 255
    return blended.astype(np.uint8)
