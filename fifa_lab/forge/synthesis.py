"""EFS entire face synthesis: the fingerprints a generator leaves on an image it made.

Our "generator" is the synthetic renderer itself, so the image is already synthetic; these methods add
the traces that give real generators away, each where a generator typically leaves it: an upsampling
checkerboard and spectral peaks over the person, a mismatched pair (irises, earrings), a warped
background. The artifact mask is exactly where a fingerprint was applied.
"""
from __future__ import annotations

import cv2
import numpy as np

from fifa_lab.forge.core import Edit, ForgeContext, NotApplicable, from_lab, register_method, to_lab


def _person(ctx: ForgeContext) -> np.ndarray:
    return ~ctx.region("background")


@register_method("EFS", "gan_upsample")
def gan_upsample(ctx: ForgeContext) -> Edit:
    """Transposed-convolution upsampling: detail lost and a checkerboard over the person."""
    region = _person(ctx)
    h, w = ctx.shape
    image = ctx.face.image.astype(np.float32)
    low = cv2.resize(image, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    # A stride-2 transposed convolution is zero insertion followed by a convolution. With the 3-tap kernel
    # [a, 1, a], pixels on the inserted rows/columns get a * (two neighbours): a = 1/2 would be plain
    # bilinear interpolation, a larger a makes them (1 + gain) times too bright, the classic checkerboard.
    gain = 0.03 + 0.09 * ctx.strength
    taps = np.array([0.5 * (1 + gain), 1.0, 0.5 * (1 + gain)], np.float32)
    zeros = np.zeros((2 * low.shape[0], 2 * low.shape[1], 3), np.float32)
    zeros[::2, ::2] = low
    up = cv2.sepFilter2D(zeros, -1, taps, taps, borderType=cv2.BORDER_REFLECT)[:h, :w]
    up /= (1 + (1 + gain)) ** 2 / 4  # mean gain over the 2x2 phases: the grid, not a brightness shift
    out = np.where(region[..., None], up, image)
    return Edit(np.clip(out + 0.5, 0, 255).astype(np.uint8), [(("grid_pattern", "blur"), region)],
                {"kernel_gain": gain})


@register_method("EFS", "spectral_peaks")
def spectral_peaks(ctx: ForgeContext) -> Edit:
    """Periodic high-frequency texture (peaks in the spectrum) over the face and hair."""
    region = _person(ctx) & ~ctx.region("clothing", "neck")
    h, w = ctx.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(ctx.rng.choice([3.0, 4.0, 6.0]))
    angle = ctx.rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    amplitude = 2.0 + 5.0 * ctx.strength
    image = ctx.face.image + (amplitude * wave)[..., None] * region[..., None]
    return Edit(np.clip(image + 0.5, 0, 255).astype(np.uint8), [(("grid_pattern", "noise_inconsistency"), region)],
                {"period_px": period, "angle": angle, "amplitude": amplitude})


@register_method("EFS", "asymmetry")
def asymmetry(ctx: ForgeContext) -> Edit:
    """A mismatched pair: one iris (or one earring) in another colour than its twin."""
    side = str(ctx.rng.choice(["left", "right"]))
    candidates = [f"earring_{side}"] if ctx.has(f"earring_{side}") and ctx.rng.random() < 0.5 else []
    candidates.append(f"eye_{side}_iris")
    region = ctx.region(candidates[0])
    if not region.any():
        raise NotApplicable(f"the face shows no {candidates[0].replace('_', ' ')}")
    angle = ctx.rng.uniform(0, 2 * np.pi)
    shift = (25 + 35 * ctx.strength) * np.array([np.cos(angle), np.sin(angle)], np.float32)
    lab = to_lab(ctx.face.image)
    lab[region, 1:] += shift
    image = np.clip(from_lab(lab) + 0.5, 0, 255).astype(np.uint8)
    artifacts = ("asymmetry", "missing_detail") if "iris" in candidates[0] else ("asymmetry",)
    return Edit(image, [(artifacts, region)], {"concept": candidates[0], "shift_ab": shift})


@register_method("EFS", "background_warp")
def background_warp(ctx: ForgeContext) -> Edit:
    """A warped background: smooth random displacements bend straight structures behind the person."""
    background = ctx.region("background")
    if not background.any():
        raise NotApplicable("the image shows no background")
    h, w = ctx.shape
    amplitude = (2.0 + 6.0 * ctx.strength) * h / 256
    coarse = ctx.rng.standard_normal((2, 6, 6)).astype(np.float32)
    dx, dy = (cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) * amplitude for c in coarse)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(ctx.face.image, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # The background also gets a band of the generator's structure: stripes the warp then bends.
    stripes = (6.0 * np.sin((yy + dy) / (5 + 3 * ctx.strength))).astype(np.float32)
    warped = np.clip(warped + stripes[..., None], 0, 255).astype(np.uint8)
    region = background & (np.hypot(dx, dy) >= 0.5)
    return Edit(np.where(region[..., None], warped, ctx.face.image), [(("shape_distortion",), region)],
                {"amplitude_px": amplitude})
