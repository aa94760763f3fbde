"""FE face editing (FaceApp-like): one localised attribute change inside FICT concept masks.

Colour edits shift the concept's chroma in Lab and keep its luminance texture (what attribute editors
do, and why their results look painted: a colour mismatch at the concept's edge). Texture edits smooth
or draw (plastic skin, wrinkles, an added beard). Shape edits warp (eyebrow reshaping). Object edits
add or remove glasses and beards. The artifact mask is exactly the pixels the edit rewrote.
"""
from __future__ import annotations

import cv2
import numpy as np

from fifa_lab.forge.core import Edit, ForgeContext, NotApplicable, feather, from_lab, register_method, to_lab
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
    """Age the face: wrinkle lines on the forehead, under the eyes and along the smile lines."""
    f = ctx.frame
    lines: list[np.ndarray] = []
    brow_top = ctx.face.landmarks[17:27].mean(axis=0) - 0.35 * f.iod * f.ey
    for k in range(3):  # forehead furrows
        centre = brow_top - k * 0.13 * f.iod * f.ey
        u = np.linspace(-0.55, 0.55, 12)[:, None]
        bow = 0.04 * np.cos(np.linspace(-1.2, 1.2, 12))[:, None]
        lines.append(centre + f.iod * (u * f.ex - bow * f.ey))
    for eye in (slice(36, 42), slice(42, 48)):  # under-eye creases
        pts = ctx.face.landmarks[eye][[0, 5, 4, 3]] if eye.start == 36 else ctx.face.landmarks[eye][[3, 4, 5, 0]]
        lines.append(pts + 0.1 * f.iod * f.ey)
    for ala, corner in ((31, 48), (35, 54)):  # deeper nasolabial folds
        lines.append(np.linspace(ctx.face.landmarks[ala], ctx.face.landmarks[corner], 6) + 0.06 * f.iod * (
            f.ex if ala == 35 else -f.ex))
    drawn = np.zeros(ctx.shape, np.uint8)
    width = max(1, int(round(0.02 * f.iod)))
    cv2.polylines(drawn, [np.round(line * 16).astype(np.int32) for line in lines], False, 1, width, cv2.LINE_AA, shift=4)
    region = drawn.astype(bool) & ctx.region(*SKIN_REGIONS, "eyes")
    if not region.any():
        raise NotApplicable("no skin where the wrinkles would go")
    darken = 1 - (0.12 + 0.25 * ctx.strength) * cv2.GaussianBlur(drawn.astype(np.float32), (0, 0), 0.7)
    image = np.clip(ctx.face.image * darken[..., None], 0, 255).astype(np.uint8)
    return Edit(np.where(region[..., None], image, ctx.face.image), [(("texture_anomaly",), region)],
                {"lines": len(lines)})


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
    masks = ctx.tree.masks(ctx.face.landmarks, ctx.shape, _attributes(ctx, beard=True, moustache=True))
    region = (masks["beard"] | masks["moustache"]) & ~ctx.region("lips")
    brows = ctx.region("eyebrows")
    colour = ctx.face.image[brows].mean(axis=0) if brows.any() else np.array([60.0, 45.0, 35.0])
    strands = cv2.blur(ctx.rng.random(ctx.shape, dtype=np.float32) - 0.5, (1, 5))
    hair = colour[None, None] * (1 + 0.6 * strands[..., None])
    alpha = (0.55 + 0.4 * ctx.strength) * feather(region, 0.0, 2.0)
    image = ctx.face.image * (1 - alpha[..., None]) + hair * alpha[..., None]
    region &= alpha > 0
    return Edit(np.clip(image, 0, 255).astype(np.uint8), [(("texture_anomaly", "colour_mismatch"), region)],
                {"opacity": 0.55 + 0.4 * ctx.strength}, label_map=ctx.tree.label_map(
                    ctx.face.landmarks, ctx.shape, _attributes(ctx, beard=True, moustache=True)))


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
                label_map=ctx.tree.label_map(ctx.face.landmarks, ctx.shape, attributes))
