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
    low = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    up = cv2.resize(low, (w, h), interpolation=cv2.INTER_NEAREST)
    up = cv2.GaussianBlur(up, (0, 0), 0.5)
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where((yy + xx) % 2 == 0, 1.0, -1.0).astype(np.float32)
    amplitude = 2.0 + 6.0 * ctx.strength
    fake = up + amplitude * checker[..., None]
    out = np.where(region[..., None], fake, image)
    return Edit(np.clip(out + 0.5, 0, 255).astype(np.uint8), [(("grid_pattern", "blur"), region)],
                {"checker_amplitude": amplitude})


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
