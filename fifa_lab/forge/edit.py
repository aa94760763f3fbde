"""FE face editing (FaceApp-like): one localised attribute change inside FICT concept masks.

Colour edits shift the concept's chroma in Lab and keep its luminance texture (what attribute editors
do, and why their results look painted: a colour mismatch at the concept's edge). Texture edits smooth
or draw (plastic skin, wrinkles, an added beard). Shape edits warp (eyebrow reshaping). Object edits
add or remove glasses and beards. The artifact mask is exactly the pixels the edit rewrote.
"""
from __future__ import annotations

import cv2
import numpy as np

from fifa_lab.forge.core import (
    Edit,
    ForgeContext,
    NotApplicable,
    blend,
    box,
    feather,
    from_lab,
    register_method,
    to_lab,
)
from fifa_lab.forge.reenact import face_ring
from fifa_lab.forge.warp import warp_field

SKIN_REGIONS = ("forehead", "cheeks", "chin_jaw", "nose_sidewall_left", "nose_sidewall_right", "nose_bridge",
                "philtrum")


def _recolour(ctx: ForgeContext, region: np.ndarray, shift_ab: np.ndarray, edge_px: float = 1.0) -> np.ndarray:
    """The image with the region's Lab chroma shifted by ``shift_ab``, faded in over ``edge_px``."""
    lab = to_lab(ctx.face.image)
    lab[..., 1:] += feather(region, 0.0, edge_px)[..., None] * shift_ab.astype(np.float32)
    return np.clip(from_lab(lab) + 0.5, 0, 255).astype(np.uint8)


def _random_shift(ctx: ForgeContext, magnitude: float) -> np.ndarray:
    angle = ctx.rng.uniform(0, 2 * np.pi)
    return magnitude * ctx.strength * np.array([np.cos(angle), np.sin(angle)])


def _colour_edit(ctx: ForgeContext, concepts: tuple[str, ...], magnitude: float, what: str) -> Edit:
    region = ctx.region(*concepts)
    if not region.any():
        raise NotApplicable(f"the face shows no {what}")
    shift = _random_shift(ctx, magnitude)
    image = _recolour(ctx, region, shift)
    return Edit(image, [(("colour_mismatch",), region)], {"shift_ab": shift})


@register_method("FE", "lip_colour")
def lip_colour(ctx: ForgeContext) -> Edit:
    """Recolour the lips (lipstick-like chroma shift)."""
    return _colour_edit(ctx, ("lips",), 35.0, "lips")


@register_method("FE", "iris_colour")
def iris_colour(ctx: ForgeContext) -> Edit:
    """Recolour both irises."""
    return _colour_edit(ctx, ("eye_left_iris", "eye_right_iris"), 45.0, "iris")


@register_method("FE", "hair_colour")
def hair_colour(ctx: ForgeContext) -> Edit:
    """Dye the scalp hair."""
    return _colour_edit(ctx, ("scalp_hair",), 40.0, "scalp hair")


@register_method("FE", "skin_smooth")
def skin_smooth(ctx: ForgeContext) -> Edit:
    """Beautify: smooth the skin (plastic skin, missing pores)."""
    region = ctx.region(*SKIN_REGIONS)
    sigma = 1.0 + 2.5 * ctx.strength
    smooth = cv2.bilateralFilter(ctx.face.image, d=-1, sigmaColor=20 + 40 * ctx.strength, sigmaSpace=sigma)
    smooth = cv2.GaussianBlur(smooth, (0, 0), 0.6 * sigma)
    return Edit(np.where(region[..., None], smooth, ctx.face.image), [(("texture_anomaly", "blur"), region)],
                {"sigma": sigma})


@register_method("FE", "ageing")
def ageing(ctx: ForgeContext) -> Edit:
    """Age the face: wrinkles on the forehead, under the eyes, at the eye corners and along the smile lines."""
    f, rng, points = ctx.frame, ctx.rng, ctx.face.landmarks.astype(np.float64)
    lines: list[np.ndarray] = []

    def wavy(curve: np.ndarray, amount: float) -> np.ndarray:
        """Jitter a curve across its direction: drawn wrinkles are never perfectly smooth."""
        wobble = np.convolve(rng.normal(0, amount, len(curve) + 2), np.ones(3) / 3, mode="valid")
        return curve + (wobble * f.iod)[:, None] * f.ey

    brow_top = points[17:27].mean(axis=0) - 0.33 * f.iod * f.ey
    for k in range(3):  # forehead furrows, slightly bowed
        u = np.linspace(-0.5, 0.5, 12)[:, None] * rng.uniform(0.8, 1.1)
        bow = 0.04 * np.cos(np.linspace(-1.2, 1.2, 12))[:, None]
        lines.append(wavy(brow_top - k * 0.12 * f.iod * f.ey + f.iod * (u * f.ex - bow * f.ey), 0.008))
    for lower in ([36, 41, 40, 39], [42, 47, 46, 45]):  # under-eye creases
        lines.append(wavy(points[lower] + 0.1 * f.iod * f.ey, 0.005))
    for corner, side in ((36, -1.0), (45, 1.0)):  # crow's feet: short rays out of the outer corners
        for tilt in (-0.35, 0.0, 0.35):
            direction = side * np.cos(tilt) * f.ex + np.sin(tilt) * f.ey
            start = points[corner] + 0.07 * f.iod * direction
            lines.append(start + np.linspace(0, 0.15, 4)[:, None] * f.iod * direction)
    for ala, corner, side in ((31, 48, -1.0), (35, 54, 1.0)):  # deeper nasolabial folds
        lines.append(wavy(np.linspace(points[ala], points[corner], 6) + 0.07 * f.iod * side * f.ex, 0.006))

    # Anti-aliased lines need a 0..255 canvas; on a 0/1 canvas they would round into dashes.
    crease = np.zeros(ctx.shape, np.uint8)
    width = max(1, int(round(0.022 * f.iod)))
    cv2.polylines(crease, [np.round(line * 16).astype(np.int32) for line in lines], False, 255, width,
                  cv2.LINE_AA, shift=4)
    crease = cv2.GaussianBlur(crease.astype(np.float32) / 255.0, (0, 0), 0.6)
    # A crease is a dark groove with a lit edge just below it: shift a copy one pixel down the face.
    down = f.ey / max(abs(f.ey[0]), abs(f.ey[1]))
    lit = cv2.warpAffine(crease, np.float32([[1, 0, down[0]], [0, 1, down[1]]]), crease.shape[::-1])
    depth = 0.2 + 0.3 * ctx.strength
    gain = 1 - depth * crease + 0.35 * depth * np.clip(lit - crease, 0, 1)
    region = ((crease > 0.03) | (lit > 0.03)) & ctx.region(*SKIN_REGIONS, "eyes")
    if not region.any():
        raise NotApplicable("no skin where the wrinkles would go")
    image = np.clip(ctx.face.image * gain[..., None] + 0.5, 0, 255).astype(np.uint8)
    return Edit(np.where(region[..., None], image, ctx.face.image), [(("texture_anomaly",), region)],
                {"lines": len(lines), "depth": depth})


@register_method("FE", "brow_shape")
def brow_shape(ctx: ForgeContext) -> Edit:
    """Reshape the eyebrows: raise and arch them by warping."""
    target = ctx.face.landmarks.astype(np.float64).copy()
    arch = np.sin(np.linspace(0, np.pi, 5))
    lift = (0.04 + 0.08 * ctx.strength) * ctx.frame.iod
    for brow in (slice(17, 22), slice(22, 27)):
        target[brow] -= (lift * (0.5 + arch))[:, None] * ctx.frame.ey
    # The eyes, nose and a ring around the face stay put, so only the brow band moves.
    anchors = np.concatenate([ctx.face.landmarks[27:48], face_ring(ctx, margin=0.25)])
    field = warp_field(ctx.face.landmarks, target, ctx.shape, anchors=anchors)
    image = field.apply(ctx.face.image, ctx.face.image.copy())
    moved = field.displacement() >= 0.5
    return Edit(image, [(("shape_distortion",), moved)], {"lift_px": lift}, landmarks=target)


def _attributes(ctx: ForgeContext, **changes: bool) -> dict[str, bool]:
    attributes = {k: v for k, v in ctx.face.attributes.items() if isinstance(v, bool)}
    attributes.update(changes)
    return attributes


@register_method("FE", "add_beard")
def add_beard(ctx: ForgeContext) -> Edit:
    """Add a beard: a hair texture painted over the chin and jaw."""
    if ctx.has("beard"):
        raise NotApplicable("the face already has a beard")
    attributes = _attributes(ctx, beard=True, moustache=True)
    masks = ctx.tree.masks(ctx.face.landmarks, ctx.shape, attributes)
    region = (masks["beard"] | masks["moustache"]) & ~ctx.region("lips")
    if not region.any():
        raise NotApplicable("the beard geometry is empty for this face")
    # Facial hair takes the colour of the scalp hair (or the brows, or dark brown when neither shows).
    source = next((r for r in (ctx.region("scalp_hair"), ctx.region("eyebrows")) if r.any()), None)
    colour = 0.9 * ctx.face.image[source].mean(axis=0) if source is not None else np.array([60.0, 45.0, 35.0])
    # Strands: noise smeared along the image's vertical, strong enough to read as hair, not as a stain.
    # Everything is computed over the beard's bounding box only.
    rows, cols = box(region, pad=1)
    length = max(3, int(round(0.09 * ctx.frame.iod)))
    patch = region[rows, cols]
    strands = cv2.blur(ctx.rng.standard_normal(patch.shape, dtype=np.float32), (1, length)) * np.float32(np.sqrt(length))
    hair = colour.astype(np.float32) * np.clip(1 + 0.35 * strands[..., None], 0.3, 1.8)
    opacity = 0.6 + 0.35 * ctx.strength
    # Thinner towards the edge, patchy inside: painted beards are too even, but not perfectly even.
    alpha = opacity * feather(patch, 0.0, 0.06 * ctx.frame.iod) * np.clip(0.8 + 0.25 * strands, 0, 1)
    image = ctx.face.image.copy()
    image[rows, cols] = blend(image[rows, cols], hair, alpha)
    region[rows, cols] &= alpha > 0
    return Edit(image, [(("texture_anomaly", "colour_mismatch"), region)],
                {"opacity": opacity, "strand_px": length},
                label_map=ctx.tree.label_map(ctx.face.landmarks, ctx.shape, attributes, masks=masks))


@register_method("FE", "remove_beard")
def remove_beard(ctx: ForgeContext) -> Edit:
    """Remove the beard and moustache, filling with skin inpainted from around them."""
    region = ctx.region("facial_hair")
    if not region.any():
        raise NotApplicable("the face has no beard or moustache to remove")
    region = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~ctx.region("lips")
    filled = cv2.inpaint(ctx.face.image, region.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    filled = cv2.GaussianBlur(filled, (0, 0), 1.0 + ctx.strength)
    return Edit(np.where(region[..., None], filled, ctx.face.image),
                [(("blur", "texture_anomaly", "colour_mismatch"), region)], {},
                label_map=ctx.tree.label_map(ctx.face.landmarks, ctx.shape, _attributes(ctx, beard=False, moustache=False)))


@register_method("FE", "add_glasses")
def add_glasses(ctx: ForgeContext) -> Edit:
    """Add glasses: frames drawn from the glasses concepts, tinted lenses without reflections."""
    if ctx.has("glasses"):
        raise NotApplicable("the face already wears glasses")
    attributes = _attributes(ctx, glasses=True)
    masks = ctx.tree.masks(ctx.face.landmarks, ctx.shape, attributes)
    frame, lenses = masks["glasses_frame"], masks["glasses_lens_left"] | masks["glasses_lens_right"]
    colour = ctx.rng.choice([20.0, 90.0, 160.0])
    image = ctx.face.image.astype(np.float32)
    image[lenses] = image[lenses] * (0.9 - 0.1 * ctx.strength) + 12
    image[frame] = colour
    return Edit(np.clip(image, 0, 255).astype(np.uint8),
                [(("lighting_inconsistency",), lenses & ~frame), (("blending_seam",), frame)], {"frame_grey": colour},
                label_map=ctx.tree.label_map(ctx.face.landmarks, ctx.shape, attributes, masks=masks))
