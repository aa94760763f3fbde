"""THE mask encoding of fifa-lab: COCO run-length encoding (RLE) through pycocotools.

Every mask that leaves memory (dataset columns, predictions, exported files) is an RLE dict
``{"size": [h, w], "counts": str}``: COCO's compressed RLE with ``counts`` as a UTF-8 string rather
than bytes, so it goes into JSON and Arrow string columns unchanged and pycocotools still reads it.
Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive maxima (``x1 - x0`` is the width).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

Box = tuple[int, int, int, int]


class RLEError(ValueError):
    """A malformed RLE dict; the message says what is wrong with it."""


def encode_rle(mask: Any) -> dict[str, Any]:
    """Encode an ``(H, W)`` mask (bool, or numbers where non-zero means inside) as a COCO RLE dict."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be a 2-D (H, W) array, got shape {array.shape}")
    # pycocotools wants column-major uint8 (COCO counts run down the columns).
    rle = mask_utils.encode(np.asfortranarray(array != 0, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def empty_rle(size: Sequence[int]) -> dict[str, Any]:
    """The RLE of an all-false ``(h, w)`` mask."""
    height, width = _check_size(size)
    return encode_rle(np.zeros((height, width), dtype=bool))


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode an RLE dict to an ``(H, W)`` bool mask.

    Accepts compressed RLE (``counts`` a str or bytes, as :func:`encode_rle` writes and COCO files
    hold) and uncompressed RLE (``counts`` a list of run lengths, COCO's ``iscrowd`` form).
    The runs are parsed and checked to cover exactly ``h * w`` pixels before anything is written
    (pycocotools' own decoder does no bounds checks and would write past its buffer on a corrupt string),
    then expanded with numpy.

    Raises:
        RLEError: not a dict with a valid ``size`` and ``counts``, or runs that do not add up to h*w.
    """
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise RLEError(f"an RLE must be a dict with 'size' and 'counts', got {_short(rle)}")
    height, width = _check_size(rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (list, tuple, np.ndarray)):
        runs = [int(c) for c in counts]
    else:
        if isinstance(counts, str):
            counts = counts.encode("ascii", errors="replace")
        if not isinstance(counts, bytes):
            raise RLEError(f"RLE counts must be a str, bytes or a list of ints, got {type(counts).__name__}")
        runs = _parse_counts(counts)
    _check_runs(runs, height, width)
    # Runs alternate 0s and 1s (starting with 0s) in column-major order.
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(width, height).T.copy()


def mask_to_box(mask: Any) -> Box | None:
    """Tight box ``(x0, y0, x1, y1)`` around the true pixels (exclusive maxima), ``None`` if empty."""
    array = np.asarray(mask, dtype=bool)
    if array.ndim != 2:
        raise ValueError(f"a mask must be a 2-D (H, W) array, got shape {array.shape}")
    rows, cols = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_to_mask(box: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """``(h, w)`` bool mask of the pixels inside ``box`` (clipped to the image).

    Fractional coordinates take every pixel the box touches (floor of the minima, ceil of the maxima).
    """
    height, width = _check_size(size)
    if len(box) != 4:
        raise ValueError(f"a box must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {tuple(box)} has a maximum below its minimum; boxes are (x0, y0, x1, y1)")
    mask = np.zeros((height, width), dtype=bool)
    c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    mask[r0:r1, c0:c1] = True
    return mask


# --- validation ---------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_size(size: Any) -> tuple[int, int]:
    if (not isinstance(size, (list, tuple, np.ndarray)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise RLEError(f"RLE size must be [height, width] of non-negative ints, got {_short(size)}")
    return int(size[0]), int(size[1])


def _check_runs(runs: list[int], height: int, width: int) -> list[int]:
    if any(r < 0 for r in runs):
        raise RLEError("RLE counts hold a negative run length")
    if sum(runs) != height * width:
        raise RLEError(f"RLE counts cover {sum(runs)} pixels but size {height}x{width} has {height * width}")
    return runs


def _parse_counts(counts: bytes) -> list[int]:
    """Run lengths of a compressed COCO counts string (the inverse of pycocotools' ``rleToString``).

    Each run is a little-endian base-32 number, 5 bits per character offset by 48, bit 0x20 meaning
    "more characters follow" and bit 0x10 of the last one the sign; from the third run on each number
    is stored as a difference to the run two places earlier.
    """
    runs: list[int] = []
    position, length = 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                raise RLEError("RLE counts string ends in the middle of a run length")
            code = counts[position] - 48
            if not 0 <= code < 64:
                raise RLEError(f"RLE counts string has an invalid character {chr(counts[position])!r}")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs
