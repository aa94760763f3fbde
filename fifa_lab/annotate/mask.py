"""Artifact masks from a (fake, real) pair: difference maps and named threshold rules.

A rule is one difference map followed by one threshold and optional clean-up::

    difference (abs_rgb | lab | ssim | perceptual) -> smoothing -> threshold (top | otsu | adaptive)
        -> hysteresis -> morphology (close, fill holes, open) -> removal of tiny components

Three rules are registered in :data:`RULES`; every step is a parameter of :func:`artifact_mask`, so any
other combination is one keyword away:

* ``top5``: the published FiFa-Annotator rule, the 5% of pixels with the largest RGB difference. Its
  mask has 5% of the image whatever was changed: a 1% edit gets an IoU of at most 0.2, a 20% edit at
  most 0.25, and sensor or JPEG noise alone still yields a 5% "artifact".
* ``otsu``: Otsu's threshold on the RGB difference, nothing else. Adapts to the size of the change but
  splits pure noise in two, so a noisy or recompressed pair gets a large false mask.
* ``adaptive`` (default): the ``perceptual`` difference (colour and structure, each in units of a
  just-noticeable change above the pair's noise), thresholded at Otsu's level but never below 1, grown
  by hysteresis into the weaker parts of the same change, then closed, hole-filled, opened and cleared
  of tiny components.

Pixel radii and sigmas are given for 256 px images and scale with the shorter side; areas are shares
of the image.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

REFERENCE_SIDE = 256  # radii and sigmas are in pixels of a 256 px image
JND_LAB = 2.3  # CIE76 Delta-E that an observer just notices (Sharma 2003)


class ImagePair:
    """A pixel-aligned ``(H, W, 3)`` uint8 RGB pair with lazily computed, shared conversions.

    The mask rules and the attribute measurements read the same Lab and grey images; computing them
    once here keeps :func:`fifa_lab.annotate.annotate` fast.
    """

    def __init__(self, fake: np.ndarray, real: np.ndarray):
        self.fake = np.ascontiguousarray(fake, dtype=np.uint8)
        self.real = np.ascontiguousarray(real, dtype=np.uint8)
        if self.fake.shape != self.real.shape or self.fake.ndim != 3 or self.fake.shape[2] != 3:
            raise ValueError(f"fake has shape {self.fake.shape} but real has shape {self.real.shape}; both must be "
                             "(H, W, 3) uint8 of one size (no silent resize)")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.fake.shape[0]), int(self.fake.shape[1])

    @property
    def scale(self) -> float:
        """Shorter side relative to :data:`REFERENCE_SIDE`, for pixel radii and sigmas."""
        return min(self.shape) / REFERENCE_SIDE

    @functools.cached_property
    def lab_fake(self) -> np.ndarray:
        """``(H, W, 3)`` float32 Lab of the fake (L 0..100)."""
        return to_lab(self.fake)

    @functools.cached_property
    def lab_real(self) -> np.ndarray:
        return to_lab(self.real)

    @functools.cached_property
    def gray_fake(self) -> np.ndarray:
        """``(H, W)`` float32 luma of the fake in gray levels 0..255."""
        return cv2.cvtColor(self.fake, cv2.COLOR_RGB2GRAY).astype(np.float32)

    @functools.cached_property
    def gray_real(self) -> np.ndarray:
        return cv2.cvtColor(self.real, cv2.COLOR_RGB2GRAY).astype(np.float32)

    @functools.cached_property
    def delta_e(self) -> np.ndarray:
        """``(H, W)`` float32 CIE76 Delta-E between fake and real."""
        return channel_norm(self.lab_fake - self.lab_real)

    @functools.cached_property
    def identical(self) -> bool:
        return bool(np.array_equal(self.fake, self.real))


def to_lab(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W, 3)`` float32 CIE Lab (L in 0..100, a/b about -128..127)."""
    return cv2.cvtColor(np.asarray(image, np.uint8).astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def channel_norm(image: np.ndarray) -> np.ndarray:
    """Euclidean norm over the channels of an ``(H, W, 3)`` float32 image, ``(H, W)`` float32."""
    return cv2.sqrt(cv2.transform(image * image, np.ones((1, 3), np.float32)))


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float image (any channel count), reflecting at the border."""
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


# --- difference maps: ImagePair -> (H, W) float32, 0 where the images agree ---------------------------

def abs_rgb(pair: ImagePair) -> np.ndarray:
    """Largest absolute channel difference, in gray levels 0..255."""
    diff = cv2.absdiff(pair.fake, pair.real)
    return cv2.max(cv2.max(diff[:, :, 0], diff[:, :, 1]), diff[:, :, 2]).astype(np.float32)


def lab_delta_e(pair: ImagePair, formula: str = "cie76") -> np.ndarray:
    """Perceptual colour difference in Delta-E (2.3 is just noticeable).

    ``"cie76"`` is the Euclidean distance in Lab (fast); ``"ciede2000"`` the refined formula from
    scikit-image (about 20x slower, closer to perception for saturated colours).
    """
    if formula == "cie76":
        return pair.delta_e
    if formula == "ciede2000":
        from skimage.color import deltaE_ciede2000

        return deltaE_ciede2000(pair.lab_fake, pair.lab_real).astype(np.float32)
    raise ValueError(f"unknown Delta-E formula {formula!r}; use 'cie76' or 'ciede2000'")


def ssim_dissimilarity(pair: ImagePair, sigma: float = 1.5) -> np.ndarray:
    """Local structural dissimilarity ``(1 - SSIM) / 2`` of the luma, in 0..1.

    Statistics use a Gaussian window of ``sigma`` pixels (at 256 px). Reacts to blur, warps and texture
    changes even when the colour barely moves.
    """
    f, r = pair.gray_fake, pair.gray_real
    # One 5-channel blur costs about as much as one single-channel blur.
    moments = gaussian(cv2.merge([f, r, f * f, r * r, f * r]), sigma * pair.scale)
    mu_f, mu_r = moments[:, :, 0], moments[:, :, 1]
    var_f = moments[:, :, 2] - mu_f * mu_f
    var_r = moments[:, :, 3] - mu_r * mu_r
    cov = moments[:, :, 4] - mu_f * mu_r
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # the standard SSIM stabilisers for 8-bit data
    ssim = ((2 * mu_f * mu_r + c1) * (2 * cov + c2)) / ((mu_f * mu_f + mu_r * mu_r + c1) * (var_f + var_r + c2))
    return np.clip((1 - ssim) / 2, 0, 1).astype(np.float32)


def perceptual(pair: ImagePair, colour_sigma: float = 2.5, edge_weight: float = 0.25, ssim_sigma: float = 1.5,
               ssim_min: float = 0.03, ssim_noise_k: float = 8.0, ssim_noise_quantile: float = 0.25,
               gate: float = 0.5) -> np.ndarray:
    """Colour and structure change in units of "just noticeable above this pair's noise" (1 = threshold).

    Colour term: Delta-E of the Gaussian-smoothed (``colour_sigma``) signed Lab difference, divided by
    ``2.3 + edge_weight * local Lab gradient of the real``. Smoothing the *signed* difference cancels
    zero-mean noise while a coherent recolouring keeps its level; the edge term discounts the colour
    ringing and chroma bleeding JPEG leaves along strong edges. With the defaults, JPEG at quality 75
    or sensor noise of sigma 6 alone leaves under 0.1% of a synthetic face in the mask, while a Delta-E 6
    recolouring reads about 2 (a larger ``edge_weight`` tolerates heavier compression but misses recolourings of
    edge-rich regions such as an eye).

    Structure term: SSIM dissimilarity (window ``ssim_sigma``) divided by its floor
    ``max(ssim_min, ssim_noise_k * q)``, ``q`` its ``ssim_noise_quantile`` over the image.
    Compression, resizing and noise lower SSIM everywhere fairly evenly, so a low quantile measures
    them, and keeps measuring them when most of the image was manipulated (entire-face synthesis):
    the lower quartile only needs a quarter of the image left alone, where the median needed half.
    With the defaults, sharing chains like the forge's (JPEG 50..95, noise then JPEG, blur 1.2 px
    then JPEG, half-size resizing then JPEG) leave on average 0.6% (at most 2.6%) of an untouched
    synthetic face in the mask.
    """
    delta = gaussian(pair.lab_fake - pair.lab_real, colour_sigma * pair.scale)
    grad_x = cv2.Sobel(pair.lab_real, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    grad_y = cv2.Sobel(pair.lab_real, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    edges = gaussian(cv2.magnitude(channel_norm(grad_x), channel_norm(grad_y)), colour_sigma * pair.scale)
    colour = channel_norm(delta) / (JND_LAB + edge_weight * edges)
    structure = ssim_dissimilarity(pair, ssim_sigma)
    sample = structure[::2, ::2].ravel()  # every 4th pixel estimates a quantile as well, 4x faster
    k = int(ssim_noise_quantile * (sample.size - 1))
    floor = max(ssim_min, ssim_noise_k * float(np.partition(sample, k)[k]))
    # Both terms are spread by their windows; a pixel whose own colour moved by less than `gate` JNDs
    # is scaled down, which puts the mask edge back on the change (the flat inside of a blurred
    # region drops out too, and the rule's hole filling puts it back).
    own = np.minimum(pair.delta_e / (gate * JND_LAB), 1.0) if gate > 0 else 1.0
    return np.maximum(colour, structure / floor) * own


@dataclass(frozen=True)
class Difference:
    """A difference map and the smallest value of it that a person notices (the adaptive floor)."""

    fn: Callable[[ImagePair], np.ndarray]
    noticeable: float
    unit: str


DIFFERENCES: dict[str, Difference] = {
    "abs_rgb": Difference(abs_rgb, 6.0, "gray levels"),
    "lab": Difference(lab_delta_e, JND_LAB, "Delta-E (CIE76)"),
    "ssim": Difference(ssim_dissimilarity, 0.03, "(1 - SSIM) / 2"),
    "perceptual": Difference(perceptual, 1.0, "just-noticeable units above noise"),
}


def difference_map(fake: np.ndarray | ImagePair, real: np.ndarray | None = None, kind: str = "perceptual",
                   **params: Any) -> np.ndarray:
    """``(H, W)`` float32 difference of two ``(H, W, 3)`` uint8 images (or one `ImagePair`) by name;
    ``params`` go to the difference function."""
    if kind not in DIFFERENCES:
        raise ValueError(f"unknown difference {kind!r}; use one of {', '.join(DIFFERENCES)}")
    pair = fake if isinstance(fake, ImagePair) else ImagePair(fake, real)
    return DIFFERENCES[kind].fn(pair, **params)


# --- thresholds -------------------------------------------------------------------------------------

def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a float array: the cut maximising between-class variance (max when constant)."""
    values = np.asarray(values, dtype=np.float32).ravel()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return high
    width = (high - low) / bins
    index = np.minimum(((values - low) / width).astype(np.int32), bins - 1)
    hist = np.bincount(index, minlength=bins).astype(np.float64)
    centres = low + (np.arange(bins) + 0.5) * width
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * centres)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = weight * (total - weight) * (mass / weight - (total_mass - mass) / (total - weight)) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return low + (int(np.argmax(between)) + 1) * width


def noise_sigma(image: np.ndarray) -> float:
    """Robust standard deviation of white pixel noise in an ``(H, W)`` float map (Immerkaer 1996).

    The 3x3 kernel cancels constant and linear trends, so smooth changes do not count; the median
    ignores edges as long as they cover less than half the image. Spatially correlated noise (JPEG
    blocks) is underestimated.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(np.asarray(image, np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    # 6 = the kernel's L2 norm; 1.4826 turns a median absolute value into a Gaussian sigma.
    return float(1.4826 * np.median(np.abs(response)) / 6.0)


def _disk(radius: float) -> np.ndarray:
    r = max(1, round(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def threshold_difference(diff: np.ndarray, *, threshold: str = "adaptive", fraction: float = 0.05,
                         smooth_sigma: float = 0.0, min_delta: float = 0.0, noise_k: float = 0.0,
                         hysteresis: float = 1.0, close_radius: float = 0, open_radius: float = 0,
                         max_hole: float = 0.0, min_area: float = 0.0) -> tuple[np.ndarray, dict[str, float]]:
    """Turn an ``(H, W)`` difference map into a bool artifact mask; also return the levels used.

    Args:
        diff: non-negative ``(H, W)`` float difference, 0 where the images agree.
        threshold: ``"top"`` keeps exactly the ``fraction`` largest differences; ``"otsu"`` cuts at Otsu's
            level; ``"adaptive"`` cuts at Otsu's level raised to the floor.
        fraction: share of pixels kept by ``"top"`` (0.05 = the published top-5% rule).
        smooth_sigma: Gaussian sigma (pixels at 256 px) applied to the difference first.
        min_delta: absolute floor of the adaptive threshold, in the difference's units.
        noise_k: the floor is also ``noise_k`` times :func:`noise_sigma` of the unsmoothed difference.
        hysteresis: pixels above ``max(hysteresis * level, floor)`` join the mask when connected to a
            pixel above the level (recovers the flat inside of a change whose edges set the level);
            1 disables it.
        close_radius, open_radius: radii (pixels at 256 px) of a morphological close, then open.
        max_hole: holes (background components not touching the border) up to this share of the
            image are filled, after closing.
        min_area: connected components smaller than this share of the image are dropped.

    An all-zero difference gives an empty mask under every threshold.
    """
    diff = np.asarray(diff, np.float32)
    height, width = diff.shape
    scale = min(height, width) / REFERENCE_SIDE
    if not (diff > 0).any():
        return np.zeros((height, width), bool), {"level": 0.0, "floor": 0.0}
    floor = max(min_delta, noise_k * noise_sigma(diff) if noise_k > 0 else 0.0)
    if smooth_sigma > 0:
        diff = gaussian(diff, smooth_sigma * scale)

    if threshold == "top":
        k = max(1, int(np.ceil(fraction * diff.size)))
        flat = diff.ravel()
        # Exactly k pixels, as published: when fewer than k pixels differ, unchanged ones (ties broken in
        # raster order by the stable sort) fill the quota. That is the rule's flaw, kept on purpose.
        keep = np.argsort(-flat, kind="stable")[:k]
        mask = np.zeros(flat.size, bool)
        mask[keep] = True
        mask = mask.reshape(height, width)
        level = float(flat[keep].min()) if keep.size else 0.0
    elif threshold in ("otsu", "adaptive"):
        level = otsu_threshold(diff)
        if threshold == "adaptive":
            level = max(level, floor)
        mask = diff > level  # strict: a constant map (level = its value) gives an empty mask
        if hysteresis < 1 and mask.any():
            weak = diff > max(hysteresis * level, floor, 0.0)
            count, labels = cv2.connectedComponents(weak.view(np.uint8), connectivity=8)
            seeded = np.zeros(count, bool)
            seeded[labels[mask]] = True
            seeded[0] = False
            mask = seeded[labels]
    else:
        raise ValueError(f"unknown threshold {threshold!r}; use 'top', 'otsu' or 'adaptive'")

    mask = np.ascontiguousarray(mask, dtype=bool)
    if close_radius > 0 and mask.any():
        mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, _disk(close_radius * scale)).view(bool)
    if max_hole > 0 and mask.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).view(np.uint8), connectivity=4)
        x, y, w, h, area = (stats[:, i] for i in range(5))
        inner = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
        fill = inner & (area <= max_hole * mask.size)
        fill[0] = False  # label 0 is the mask itself
        mask = mask | fill[labels]
    if open_radius > 0 and mask.any():
        mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, _disk(open_radius * scale)).view(bool)
    if min_area > 0 and mask.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
        big = stats[:, cv2.CC_STAT_AREA] >= min_area * mask.size
        big[0] = False
        mask = big[labels]
    return np.ascontiguousarray(mask, dtype=bool), {"level": float(level), "floor": float(floor)}


_THRESHOLD_PARAMS = frozenset({"threshold", "fraction", "smooth_sigma", "min_delta", "noise_k", "hysteresis",
                               "close_radius", "open_radius", "max_hole", "min_area"})


@dataclass(frozen=True)
class MaskRule:
    """A named recipe: a difference map (a key of :data:`DIFFERENCES`) and parameters, each either a
    keyword of :func:`threshold_difference` or of the difference function (e.g. ``edge_weight`` of
    :func:`perceptual`). ``min_delta=None`` means the difference's just-noticeable value."""

    name: str
    description: str
    difference: str = "perceptual"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, fake: np.ndarray | ImagePair, real: np.ndarray | None = None, **overrides: Any) -> np.ndarray:
        return self.apply(fake, real, **overrides)[0]

    def apply(self, fake: np.ndarray | ImagePair, real: np.ndarray | None = None,
              **overrides: Any) -> tuple[np.ndarray, dict[str, float]]:
        """The ``(H, W)`` bool mask and the levels used; ``overrides`` replace the rule's parameters
        (``difference=`` included)."""
        difference = overrides.pop("difference", self.difference)
        if difference not in DIFFERENCES:
            raise ValueError(f"unknown difference {difference!r}; use one of {', '.join(DIFFERENCES)}")
        fn = DIFFERENCES[difference].fn
        own = set(list(inspect.signature(fn).parameters)[1:])  # everything after the pair
        params = {**self.params, **overrides}
        unknown = set(params) - _THRESHOLD_PARAMS - own
        if unknown:
            raise TypeError(f"unknown mask rule parameter(s) {sorted(unknown)}; valid: difference, "
                            f"{', '.join(sorted(_THRESHOLD_PARAMS | own))}")
        diff_params = {k: params.pop(k) for k in list(params) if k in own}
        if params.get("min_delta", 0.0) is None:
            params["min_delta"] = DIFFERENCES[difference].noticeable
        pair = fake if isinstance(fake, ImagePair) else ImagePair(fake, real)
        if pair.identical:  # nothing differs: skip the maps (and any division by a zero spread)
            return np.zeros(pair.shape, bool), {"level": 0.0, "floor": 0.0}
        return threshold_difference(fn(pair, **diff_params), **params)


RULES: dict[str, MaskRule] = {}


def register_rule(rule: MaskRule) -> MaskRule:
    """Add (or replace) a rule in :data:`RULES` under its name; returns it."""
    RULES[rule.name] = rule
    return rule


register_rule(MaskRule(
    "top5", "the published FiFa-Annotator rule: the top 5% of the max-channel RGB difference",
    difference="abs_rgb", params={"threshold": "top", "fraction": 0.05}))
register_rule(MaskRule(
    "otsu", "Otsu's threshold on the max-channel RGB difference, no clean-up",
    difference="abs_rgb", params={"threshold": "otsu"}))
register_rule(MaskRule(
    "adaptive", "perceptual (colour + structure above noise) difference; Otsu raised to 1; hysteresis; "
                "close / fill holes / open; tiny components removed",
    difference="perceptual",
    # Why: hysteresis at 0.4 recovers the flat inside of a blurred or recoloured region whose
    # high-contrast edges set Otsu's level; closing with 2 px and filling holes below 1% of the image
    # join those pieces; opening with 1 px and dropping components below 0.04% of the image (26 px at
    # 256 px) remove isolated specks left by noise.
    params={"threshold": "adaptive", "min_delta": None, "hysteresis": 0.4, "close_radius": 2,
            "open_radius": 1, "max_hole": 0.01, "min_area": 0.0004}))


def get_rule(rule: str | MaskRule) -> MaskRule:
    """The rule itself, or the registered rule of that name (ValueError listing the names)."""
    if isinstance(rule, MaskRule):
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown mask rule {rule!r}; use one of {', '.join(RULES)} or a MaskRule")
    return RULES[rule]


def artifact_mask(fake: np.ndarray, real: np.ndarray, rule: str | MaskRule = "adaptive", **params: Any) -> np.ndarray:
    """``(H, W)`` bool mask of where ``fake`` differs from ``real`` (both ``(H, W, 3)`` uint8 RGB).

    ``rule`` names a rule of :data:`RULES` (or is a `MaskRule`); ``params`` override its parameters
    (see :func:`threshold_difference`, plus ``difference=``). Different sizes raise ValueError:
    nothing is resized silently.
    """
    return get_rule(rule)(ImagePair(fake, real), **params)
