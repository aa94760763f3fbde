"""FS face swap: another identity's inner face pasted onto the target, and self-blended images.

``swap_feathered`` and ``swap_poisson`` follow the classic FaceSwap recipe: warp the donor's face onto
the target's landmarks (piecewise affine), match its colour (Reinhard transfer in Lab, leaving a
strength-dependent residual mismatch), soften it (the generator's blur) and blend it inside the
landmark hull, with a feathered alpha ramp or Poisson (gradient-domain) cloning. What is left is what
real swaps leave: a seam along the hull, a tone mismatch and blur inside, and the donor's shading
under the target's light.

``self_blend`` (Self-Blended Images, Shiohara & Yamasaki 2022) blends a face with a colour- and
sharpness-jittered, slightly scaled and shifted copy of itself inside a deformed landmark hull. It needs
no donor, so it turns any photo with landmarks into a fake with an exact mask.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from fifa_lab.faces.face import Face
from fifa_lab.faces.synth import synth_face
from fifa_lab.forge.core import (
    Edit,
    ForgeContext,
    blend,
    box,
    feather,
    from_lab,
    register_method,
    to_lab,
)
from fifa_lab.forge.warp import warp_field
from fifa_lab.ibug68 import JAW

# Donors are drawn from a fixed pool of synthetic identities (seeds DONOR_SEED_BASE + k), cached, so a
# swap costs a warp rather than rendering a face; the base keeps donors apart from the usual dataset seeds.
DONOR_POOL = 64
DONOR_SEED_BASE = 1_000_000
# Lights whose azimuths differ by more than this shade the pasted face visibly differently.
LIGHT_MISMATCH = np.radians(45)


@functools.lru_cache(maxsize=DONOR_POOL)
def donor_face(seed: int, size: int) -> Face:
    """The cached synthetic donor identity ``seed`` (treat it as read-only)."""
    return synth_face(seed, size)


def _donor(ctx: ForgeContext) -> tuple[Face, dict]:
    if ctx.donor is not None:
        return ctx.donor, {"donor": ctx.donor.source}
    size = max(64, *ctx.shape)
    seed = DONOR_SEED_BASE + int(ctx.rng.integers(DONOR_POOL))
    if ctx.face.source == f"synthetic:seed={seed}":  # never swap a face with itself
        seed = DONOR_SEED_BASE + (seed - DONOR_SEED_BASE + 1) % DONOR_POOL
    return donor_face(seed, size), {"donor": f"synthetic:seed={seed}", "donor_seed": seed}


def _hull(ctx: ForgeContext, lift: float) -> np.ndarray:
    """``(H, W)`` uint8 0/1 convex hull of the jaw and the brows raised by ``lift`` IODs (the swapped area)."""
    points = ctx.face.landmarks.astype(np.float64).copy()
    points[17:27] -= lift * ctx.frame.iod * ctx.frame.ey
    mask = np.zeros(ctx.shape, np.uint8)
    hull = cv2.convexHull(np.round(points[np.r_[JAW, 17:27]] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _lights_differ(a: Face, b: Face) -> bool:
    """Whether two synthetic faces were lit from clearly different directions (unknown for photos)."""
    la, lb = (f.attributes.get("params", {}).get("light") for f in (a, b))
    if la is None or lb is None:
        return False
    return abs((la[0] - lb[0] + np.pi) % (2 * np.pi) - np.pi) > LIGHT_MISMATCH


def _paste(ctx: ForgeContext) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice], dict, Face]:
    """The donor face warped, colour-matched (with residual mismatch) and blurred, over the hull's box.

    Returns the float32 ``(h, w, 3)`` donor crop, the ``(H, W)`` uint8 hull, the box and the parameters.
    """
    donor, params = _donor(ctx)
    s = ctx.strength
    lift = float(ctx.rng.uniform(0.0, 0.25))
    hull = _hull(ctx, lift)
    rows, cols = box(hull, pad=2)
    field = warp_field(donor.landmarks, ctx.face.landmarks, ctx.shape,
                       roi=(cols.start, rows.start, cols.stop, rows.stop))
    pasted = cv2.remap(donor.image, field.map_x, field.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # Reinhard colour transfer in Lab over the hull, then a residual offset: real swaps never match exactly.
    inside = hull[rows, cols].astype(bool)
    src, ref = to_lab(pasted), to_lab(ctx.face.image[rows, cols])
    mu_s, sd_s = src[inside].mean(0), src[inside].std(0) + 1e-3
    mu_r, sd_r = ref[inside].mean(0), ref[inside].std(0) + 1e-3
    direction = ctx.rng.normal(size=3) * [1.5, 1.0, 1.0]
    offset = direction / np.linalg.norm(direction) * (2.0 + 6.0 * s)  # a Delta-E of 2..8
    contrast = 1.0 + ctx.rng.uniform(-0.15, 0.15) * s
    matched = from_lab((src - mu_s) / sd_s * sd_r * contrast + mu_r + offset)
    sigma = 0.3 + 0.8 * s
    matched = cv2.GaussianBlur(matched, (0, 0), sigma)
    params.update(lift=lift, colour_offset_lab=offset, contrast=contrast, blur_sigma=sigma)
    return matched, hull, (rows, cols), params, donor


def _inner_artifacts(ctx: ForgeContext, donor: Face, *artifacts: str) -> tuple[str, ...]:
    return (*artifacts, "lighting_inconsistency") if _lights_differ(ctx.face, donor) else artifacts


@register_method("FS", "swap_feathered", strength_range=(0.3, 1.0))
def swap_feathered(ctx: ForgeContext) -> Edit:
    """Donor inner face warped onto the target and alpha-blended with a feathered hull mask."""
    pasted, hull, (rows, cols), params, donor = _paste(ctx)
    iod = ctx.frame.iod
    # Stronger swaps blend over a narrower ramp: a sharper, more visible seam.
    inset, width = 0.04 * iod, (0.22 - 0.16 * ctx.strength) * iod
    weight = feather(hull[rows, cols], inset, width)
    image = ctx.face.image.copy()
    image[rows, cols] = blend(image[rows, cols], pasted, weight)
    w = np.zeros(ctx.shape, np.float32)
    w[rows, cols] = weight
    params.update(feather_px=width, inset_px=inset)
    return Edit(image, [(("blending_seam",), (w > 0) & (w < 0.98)),
                        (_inner_artifacts(ctx, donor, "colour_mismatch", "blur"), w >= 0.98)], params)


@register_method("FS", "swap_poisson", strength_range=(0.3, 1.0))
def swap_poisson(ctx: ForgeContext) -> Edit:
    """Donor inner face warped onto the target and Poisson-cloned (cv2.seamlessClone) into the hull."""
    pasted, hull, (rows, cols), params, donor = _paste(ctx)
    inset = 0.04 * ctx.frame.iod
    inner = feather(hull[rows, cols], inset, 1.0) > 0
    clone_mask = inner.astype(np.uint8) * 255
    clone_mask[[0, -1], :] = 0  # seamlessClone ignores the outermost pixels; keep the mask honest
    clone_mask[:, [0, -1]] = 0
    ys, xs = np.nonzero(clone_mask)
    # seamlessClone places the mask's bounding box centred on `center` (integer halves): this keeps it put.
    center = (int(xs.min() + (xs.max() - xs.min() + 1) // 2), int(ys.min() + (ys.max() - ys.min() + 1) // 2))
    crop = ctx.face.image[rows, cols]
    # seamlessClone writes into its mask argument (OpenCV 4.x), so it gets a copy.
    cloned = cv2.seamlessClone(np.clip(pasted, 0, 255).astype(np.uint8), np.ascontiguousarray(crop),
                               clone_mask.copy(), center, cv2.NORMAL_CLONE)
    image = ctx.face.image.copy()
    image[rows, cols] = cloned
    changed = np.zeros(ctx.shape, bool)
    changed[rows, cols] = clone_mask > 0
    # The boundary mismatch diffuses a band inwards: that band is the seam.
    band = feather(changed, 0.0, 0.12 * ctx.frame.iod) < 1.0
    params.update(inset_px=inset)
    return Edit(image, [(("blending_seam", "colour_mismatch"), changed & band),
                        (_inner_artifacts(ctx, donor, "blur"), changed & ~band)], params)


@register_method("FS", "self_blend", strength_range=(0.3, 1.0))
def self_blend(ctx: ForgeContext) -> Edit:
    """The face blended with a jittered, slightly moved copy of itself inside a deformed hull (SBI)."""
    rng, s, iod = ctx.rng, ctx.strength, ctx.frame.iod
    face = ctx.face
    points = face.landmarks.astype(np.float64)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centre = points.mean(axis=0)
    # Deform the hull: each vertex moves in or out a little, then the whole mask shrinks or grows.
    hull = centre + (hull - centre) * rng.uniform(0.9, 1.04, (len(hull), 1))
    mask = np.zeros(ctx.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    inset = float(rng.uniform(-0.05, 0.12)) * iod
    width = float(rng.uniform(0.06, 0.25) * (1.2 - 0.6 * s)) * iod
    ratio = float(rng.uniform(0.6, 1.0))
    rows, cols = box(mask, pad=int(abs(inset)) + 2)
    weight = ratio * feather(mask[rows, cols], inset, width)

    # The "source" copy: colour jitter, then blur or sharpen, then a small scale and shift.
    crop = face.image[rows, cols].astype(np.float32)
    gain = 1.0 + rng.uniform(-1, 1, 3) * (0.04 + 0.1 * s)
    bias = rng.uniform(-1, 1, 3) * (3 + 10 * s)
    source = crop * gain + bias
    sharpen = bool(rng.random() < 0.35)
    if sharpen:
        amount = 0.5 + 1.0 * s
        source = source + amount * (source - cv2.GaussianBlur(source, (0, 0), 1.0))
    else:
        sigma = 0.4 + 1.2 * s
        source = cv2.GaussianBlur(source, (0, 0), sigma)
    scale = 1.0 + rng.uniform(-1, 1) * 0.03 * s
    shift = rng.uniform(-1, 1, 2) * 0.03 * s * iod
    cx, cy = centre[0] - cols.start, centre[1] - rows.start
    matrix = np.array([[scale, 0, (1 - scale) * cx + shift[0]], [0, scale, (1 - scale) * cy + shift[1]]])
    source = cv2.warpAffine(source, matrix, (crop.shape[1], crop.shape[0]), borderMode=cv2.BORDER_REFLECT)

    image = face.image.copy()
    image[rows, cols] = blend(face.image[rows, cols], source, weight)
    w = np.zeros(ctx.shape, np.float32)
    w[rows, cols] = weight
    # A moved copy shows double edges where it is blended half-and-half with the original.
    moved = float(np.hypot(*shift) + abs(scale - 1) * iod)
    inner = ["colour_mismatch", "noise_inconsistency" if sharpen else "blur"] + (["ghosting"] if moved >= 1.0 else [])
    params = {"inset_px": inset, "feather_px": width, "ratio": ratio, "gain": gain, "bias": bias,
              "sharpen": sharpen, "scale": scale, "shift_px": shift}
    return Edit(image, [(("blending_seam",), (w > 0) & (w < 0.98 * ratio)), (tuple(inner), w >= 0.98 * ratio)],
                params)

