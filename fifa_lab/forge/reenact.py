"""FR face reenactment: expression and pose changed by landmark-driven warping.

Each method moves some landmarks (lower lip and jaw, eyelids, the whole face for a head turn), warps
the image piecewise-affinely so the old points land on the new ones, and for an opened mouth
re-synthesises the interior the source never showed: a dark cavity with a blurred band of fused teeth,
the classic reenactment failure. The artifact mask is every pixel the warp moved by more than
``MOVED_PX`` plus the re-synthesised interior. The fake's own label map counts for the concepts too,
since an opened mouth now shows teeth where the real showed lips: it is the real label map carried
through the same warp (nearest neighbour, so every fake pixel is labelled by the concept its content
came from), with the re-synthesised interior labelled as what was painted there. That is exact where
redrawing the concept geometry from the moved landmarks is not (a squeezed iris stays an iris), and
it costs a remap instead of a full label map.
"""
from __future__ import annotations

import cv2
import numpy as np

from fifa_lab.fict.geometry import mouth_gap
from fifa_lab.forge.core import Edit, ForgeContext, NotApplicable, register_method
from fifa_lab.forge.warp import warp_field
from fifa_lab.ibug68 import INNER_LIPS, LANDMARK_DEPTH

MOVED_PX = 0.5  # a pixel counts as manipulated when the warp moved it at least this far
_LOWER_LIP = [55, 56, 57, 58, 59, 65, 66, 67]
_CORNERS = [48, 54, 60, 64]


def face_ring(ctx: ForgeContext, margin: float = 0.45) -> np.ndarray:
    """``(26, 2)`` fixed points ``margin`` IODs outside the jaw and above the brows.

    As warp anchors they confine a landmark-driven warp to the face and a band around it, the way a
    reenactment model only re-renders the face, and leave hair, neck and background in place.
    """
    f = ctx.frame
    points = ctx.face.landmarks.astype(np.float64)
    centre = points[27:36].mean(axis=0)
    jaw = points[0:17]
    outward = (jaw - centre) / np.linalg.norm(jaw - centre, axis=1, keepdims=True)
    brows = points[17:27] - (margin + 0.35) * f.iod * f.ey
    return np.concatenate([jaw + margin * f.iod * outward, brows])


def _warp(ctx: ForgeContext, target: np.ndarray, anchors: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real image warped so its landmarks land on ``target`` (within the face ring unless ``anchors``
    are given); returns ``(image, moved mask, fake label map)``."""
    anchors = face_ring(ctx) if anchors is None else anchors
    field = warp_field(ctx.face.landmarks, target, ctx.shape, anchors=anchors)
    image = field.apply(ctx.face.image, ctx.face.image.copy())
    labels = field.apply(ctx.face.label_map, ctx.face.label_map.copy(), interpolation=cv2.INTER_NEAREST)
    return image, field.displacement() >= MOVED_PX, labels


def _drop_lower_face(ctx: ForgeContext, drop: float) -> np.ndarray:
    """Landmarks with the lower lip moved down by ``drop`` pixels, corners and chin following partly."""
    target = ctx.face.landmarks.astype(np.float64).copy()
    down = ctx.frame.ey
    target[_LOWER_LIP] += drop * down
    target[_CORNERS] += 0.5 * drop * down
    target[4:13] += (0.4 * drop * np.sin(np.linspace(0, np.pi, 9)))[:, None] * down
    return target


@register_method("FR", "mouth_open", strength_range=(0.4, 1.0))
def mouth_open(ctx: ForgeContext) -> Edit:
    """Open the mouth by warping the lower lip and jaw down; the interior is re-synthesised (fused teeth)."""
    drop = ctx.strength * 0.16 * ctx.frame.iod
    target = _drop_lower_face(ctx, drop)
    image, moved, labels = _warp(ctx, target, anchors=face_ring(ctx, margin=0.3))
    # The interior the real face never showed: dark cavity, one blurred band of teeth without gaps.
    interior = np.zeros(ctx.shape, np.uint8)
    cv2.fillPoly(interior, [np.round(target[INNER_LIPS] * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    teeth = np.zeros(ctx.shape, np.uint8)
    upper = target[[60, 61, 62, 63, 64]]
    band = np.concatenate([upper, (upper + 0.45 * drop * ctx.frame.ey)[::-1]])
    cv2.fillPoly(teeth, [np.round(band * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    teeth &= interior
    tone = ctx.rng.uniform(200, 235)
    synthetic = np.full((*ctx.shape, 3), (70, 25, 30), np.float32)
    synthetic[teeth.astype(bool)] = (tone, tone * 0.97, tone * 0.88)
    sigma = 0.8 + 1.5 * ctx.strength
    synthetic = cv2.GaussianBlur(synthetic, (0, 0), sigma)
    inside = interior.astype(bool)
    image[inside] = np.clip(synthetic[inside], 0, 255).astype(np.uint8)
    for concept, painted in (("oral_cavity", inside), ("teeth", teeth.astype(bool))):
        if concept in ctx.tree and ctx.tree.is_leaf(concept):  # a user's coarser tree may lack them
            labels[painted] = ctx.label(concept)
    return Edit(image, [(("shape_distortion",), moved & ~inside), (("missing_detail", "blur"), inside)],
                {"drop_px": drop, "teeth_blur_sigma": sigma}, landmarks=target, label_map=labels)


@register_method("FR", "mouth_close", strength_range=(0.6, 1.0))
def mouth_close(ctx: ForgeContext) -> Edit:
    """Close an open mouth by warping the lower lip and jaw up (only for faces with an open mouth)."""
    gap = mouth_gap(ctx.face.landmarks)
    if gap < 0.06:
        raise NotApplicable("the mouth is already closed")
    target = _drop_lower_face(ctx, -ctx.strength * (gap - 0.01) * ctx.frame.iod)
    image, moved, labels = _warp(ctx, target, anchors=face_ring(ctx, margin=0.3))
    # Squeezing the lips together smears them: blur where the interior used to be.
    interior = np.zeros(ctx.shape, np.uint8)
    cv2.fillPoly(interior, [np.round(ctx.face.landmarks[INNER_LIPS] * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    interior = cv2.dilate(interior, np.ones((3, 3), np.uint8)).astype(bool)
    image[interior] = cv2.GaussianBlur(image, (0, 0), 1.2)[interior]
    return Edit(image, [(("shape_distortion",), moved & ~interior), (("shape_distortion", "blur"), interior)],
                {"gap_iod": gap}, landmarks=target, label_map=labels)


@register_method("FR", "eye_close", strength_range=(0.5, 1.0))
def eye_close(ctx: ForgeContext) -> Edit:
    """Close the eyes (a blink) by pulling the upper lids toward the lower lids."""
    target = ctx.face.landmarks.astype(np.float64).copy()
    for upper, lower in (((37, 38), (41, 40)), ((43, 44), (47, 46))):
        target[list(upper)] += ctx.strength * 0.85 * (target[list(lower)] - target[list(upper)])
    # The brows stay put, so the stretch stays between brow and lid.
    image, moved, labels = _warp(ctx, target, anchors=np.concatenate([face_ring(ctx), ctx.face.landmarks[17:27]]))
    return Edit(image, [(("shape_distortion", "blur"), moved)], {"closure": 0.85 * ctx.strength},
                landmarks=target, label_map=labels)


@register_method("FR", "head_turn", strength_range=(0.4, 1.0))
def head_turn(ctx: ForgeContext) -> Edit:
    """Turn the head sideways: landmarks move with their depth, the face is warped to follow."""
    yaw = float(ctx.rng.choice([-1, 1]) * ctx.strength * np.radians(14))
    offsets = (LANDMARK_DEPTH - LANDMARK_DEPTH.mean()) * np.sin(yaw) * ctx.frame.iod
    target = ctx.face.landmarks.astype(np.float64) + offsets[:, None] * ctx.frame.ex
    image, moved, labels = _warp(ctx, target)
    return Edit(image, [(("shape_distortion", "blur"), moved)], {"yaw_degrees": np.degrees(yaw)},
                landmarks=target, label_map=labels)
