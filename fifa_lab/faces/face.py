"""The `Face` record that every face source returns (see :mod:`fifa_lab.ibug68` for its geometry)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Face:
    """One face image with its geometry.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image.
        landmarks: ``(68, 2)`` float32 pixel coordinates ``(x, y)`` in iBUG order.
        label_map: ``(H, W)`` int16 index into ``tree.leaves()`` of the most specific visible
            concept at each pixel (-1 where none), or ``None`` when not computed.
        attributes: what the landmarks cannot tell: ``glasses``, ``earrings``, ``beard``,
            ``moustache``, ``fringe`` (booleans) and, for synthetic faces, the render parameters.
        source: where the face came from, e.g. ``"synthetic:seed=3"`` or ``"photo:dlib"``.
    """

    image: np.ndarray
    landmarks: np.ndarray
    label_map: np.ndarray | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])
