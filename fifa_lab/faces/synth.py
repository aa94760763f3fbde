"""Procedural synthetic faces: the embedded, offline default face source.

A face is sampled from a seed in three steps:

1. **Geometry**: a random face shape (jaw, eyes, brows, nose, mouth, expression) in face-frame units,
   turned by a small yaw, then placed in the image with a small roll, scale and shift -> 68 landmarks.
2. **Concepts**: the default FICT draws every concept mask from those landmarks and the sampled
   attributes (glasses, beard, ...), and the label map says which concept each pixel shows.
3. **Appearance**: each visible concept is painted with its material (skin, lips, iris, hair, ...),
   then shaded by a height field under a random light, with skin pores, hair strands, an iris pattern,
   teeth gaps, specular highlights and sensor noise.

Because the image is painted from the label map, the label map is exact: every later stage (forgeries,
annotation, grounding) can be checked against it.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from fifa_lab.faces.face import Face
from fifa_lab.fict import load_tree
from fifa_lab.ibug68 import CANONICAL_EYE_MIDPOINT, CANONICAL_IOD, LANDMARK_DEPTH, jaw_curve, mean_shape

# Skin tones from light to deep (RGB), sampled with jitter so the set is continuous.
SKIN_TONES = np.array([[247, 216, 196], [236, 192, 160], [224, 172, 134], [198, 142, 104],
                       [160, 106, 72], [120, 78, 52], [88, 56, 38]], dtype=np.float32)
HAIR_COLOURS = np.array([[28, 22, 20], [62, 42, 30], [110, 74, 44], [170, 128, 76], [220, 190, 130],
                         [150, 62, 30], [170, 170, 170], [235, 235, 230], [60, 60, 140]], dtype=np.float32)
IRIS_COLOURS = np.array([[70, 42, 24], [110, 70, 36], [70, 110, 60], [80, 120, 170], [110, 120, 130],
                         [140, 110, 60]], dtype=np.float32)

# Material of each concept of the default tree: the first of the leaf and its ancestors listed here.
_MATERIALS = {
    "face": "skin", "context": "background", "clothing": "cloth", "scalp_hair": "hair", "moustache": "beard",
    "beard": "beard", "eyebrows": "brow", "nose": "skin", "cheeks": "skin", "forehead": "skin",
    "chin_jaw": "skin", "under_jaw": "skin_shadow", "neck": "neck", "ears": "ear", "face_boundary": "skin",
    "lips": "lip", "philtrum": "skin", "lip_seam": "lip_dark", "mouth_corner_left": "lip_dark",
    "mouth_corner_right": "lip_dark", "oral_cavity": "cavity", "tongue": "tongue", "gums": "gums",
    "teeth": "teeth", "nostril_left": "nostril", "nostril_right": "nostril", "glasses_frame": "frame",
    "glasses_lens_left": "skin", "glasses_lens_right": "skin", "earring_left": "metal", "earring_right": "metal",
    "ear_left_concha": "ear_shadow", "ear_right_concha": "ear_shadow",
}
for _side in ("left", "right"):
    _MATERIALS.update({
        f"eye_{_side}_sclera": "sclera", f"eye_{_side}_iris": "iris", f"eye_{_side}_pupil": "pupil",
        f"eye_{_side}_lash_line": "lash", f"eye_{_side}_inner_corner": "caruncle",
        f"eye_{_side}_outer_corner": "skin", f"eye_{_side}_eyelid_crease": "skin_fold",
        f"nasolabial_fold_{_side}": "skin_fold",
    })
_MATERIALS["mentolabial_fold"] = "skin_fold"


@dataclass(frozen=True)
class FaceParams:
    """Everything sampled for one synthetic face (recorded in ``Face.attributes['params']``)."""

    jaw_width: float
    jaw_depth: float
    jaw_squareness: float
    eye_scale: float
    eye_openness: float
    eye_spacing: float
    brow_raise: float
    brow_arch: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_fullness: float
    mouth_gap: float
    yaw: float
    roll: float
    scale: float
    shift: tuple[float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    cloth: tuple[float, float, float]
    frame_colour: tuple[float, float, float]
    light: tuple[float, float]
    hair_flow: float
    glasses: bool
    earrings: bool
    beard: bool
    moustache: bool
    fringe: bool


def sample_params(rng: np.random.Generator) -> FaceParams:
    """Draw the parameters of one face."""
    def colour(table: np.ndarray, jitter: float) -> tuple[float, float, float]:
        i = rng.uniform(0, len(table) - 1)
        base = table[int(i)] + (table[min(int(i) + 1, len(table) - 1)] - table[int(i)]) * (i - int(i))
        if table is not SKIN_TONES:  # discrete palettes: pick one, not a blend of two
            base = table[rng.integers(len(table))]
        return tuple(float(c) for c in np.clip(base + rng.normal(0, jitter, 3), 0, 255))

    skin = colour(SKIN_TONES, 6)
    lips = tuple(float(c) for c in np.clip(np.array(skin) * [0.85, 0.6, 0.62] + rng.normal(0, 8, 3), 0, 255))
    beard = bool(rng.random() < 0.2)
    return FaceParams(
        jaw_width=rng.uniform(0.95, 1.15), jaw_depth=rng.uniform(1.48, 1.72), jaw_squareness=rng.uniform(1.8, 2.9),
        eye_scale=rng.uniform(0.88, 1.12), eye_openness=rng.uniform(0.75, 1.25), eye_spacing=rng.uniform(-0.03, 0.03),
        brow_raise=rng.uniform(-0.05, 0.07), brow_arch=rng.uniform(0.6, 1.4),
        nose_length=rng.uniform(0.9, 1.12), nose_width=rng.uniform(0.85, 1.25),
        mouth_width=rng.uniform(0.85, 1.15), lip_fullness=rng.uniform(0.75, 1.35),
        mouth_gap=float(rng.uniform(0.08, 0.22)) if rng.random() < 0.35 else 0.0,
        yaw=float(np.radians(rng.uniform(-12, 12))), roll=float(np.radians(rng.uniform(-8, 8))),
        scale=rng.uniform(0.92, 1.06), shift=(float(rng.uniform(-0.025, 0.025)), float(rng.uniform(-0.02, 0.02))),
        skin=skin, hair=colour(HAIR_COLOURS, 10), iris=colour(IRIS_COLOURS, 10), lips=lips,
        background=(colour(np.array([[200, 200, 205], [120, 150, 190], [90, 120, 90], [230, 220, 190],
                                     [60, 60, 70], [180, 120, 120]], np.float32), 25),
                    colour(np.array([[240, 240, 240], [40, 40, 50], [150, 170, 150], [200, 180, 150]], np.float32), 25)),
        cloth=colour(np.array([[30, 30, 35], [200, 200, 200], [40, 60, 120], [120, 30, 30], [60, 100, 60],
                               [180, 150, 100]], np.float32), 15),
        frame_colour=colour(np.array([[20, 20, 20], [90, 60, 30], [160, 160, 170]], np.float32), 8),
        # Light from above the head (image y points down), from the left or the right.
        light=(float(rng.uniform(1.15 * np.pi, 1.85 * np.pi)), float(rng.uniform(0.25, 0.6))),
        hair_flow=float(rng.uniform(-0.5, 0.5)),
        glasses=bool(rng.random() < 0.2), earrings=bool(rng.random() < 0.25), beard=beard,
        moustache=bool(beard or rng.random() < 0.1), fringe=bool(rng.random() < 0.3),
    )


def face_landmarks(params: FaceParams, size: int) -> np.ndarray:
    """The 68 landmarks ``(68, 2)`` in pixels for a face of these parameters in a ``size`` image."""
    p = params
    shape = mean_shape()
    shape[0:17] = jaw_curve(p.jaw_width, 0.05, p.jaw_depth, p.jaw_squareness)
    for eye, centre_u in ((slice(36, 42), -0.5), (slice(42, 48), 0.5)):
        centre = np.array([centre_u * (1 + p.eye_spacing), 0.0])
        local = shape[eye] - [centre_u, 0.0]
        local *= p.eye_scale
        local[:, 1] *= p.eye_openness
        shape[eye] = centre + local
    brows = shape[17:27]
    arch = np.sin(np.linspace(0, np.pi, 5)) * 0.05 * (p.brow_arch - 1)
    brows[:, 1] += p.brow_raise - np.concatenate([arch, arch[::-1]])
    shape[27:36, 1] = shape[27:36, 1] * p.nose_length
    shape[31:36, 0] *= p.nose_width
    mouth = shape[48:68]
    mouth_centre_v = 1.18 * p.nose_length
    mouth[:, 0] *= p.mouth_width
    mouth[:, 1] = mouth_centre_v + (mouth[:, 1] - 1.18) * p.lip_fullness
    # Opening the mouth drops the lower lip and, less so, the chin.
    lower = [55, 56, 57, 58, 59, 65, 66, 67]
    shape[lower, 1] += p.mouth_gap
    shape[[48, 54, 60, 64], 1] += p.mouth_gap / 2
    shape[4:13, 1] += p.mouth_gap * 0.6 * np.sin(np.linspace(0, np.pi, 9))
    # Yaw: points move sideways with their depth.
    shape[:, 0] = shape[:, 0] * np.cos(p.yaw) + LANDMARK_DEPTH * np.sin(p.yaw)
    iod_px = CANONICAL_IOD * size * p.scale
    rotation = np.array([[np.cos(p.roll), -np.sin(p.roll)], [np.sin(p.roll), np.cos(p.roll)]])
    origin = (np.array(CANONICAL_EYE_MIDPOINT) + p.shift) * size
    return (origin + iod_px * shape @ rotation.T).astype(np.float32)


def synth_face(seed: int, size: int = 256) -> Face:
    """A deterministic synthetic face for ``seed``: image ``(size, size, 3)`` uint8, landmarks, label map.

    ``Face.attributes`` holds the conditional attributes (glasses, earrings, beard, moustache, fringe,
    mouth_open) and ``params``, the sampled parameters. The label map indexes the default tree's leaves.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ValueError(f"size must be an integer of at least 64 pixels, got {size!r}")
    rng = np.random.default_rng(int(seed))
    params = sample_params(rng)
    landmarks = face_landmarks(params, int(size))
    attributes = {"glasses": params.glasses, "earrings": params.earrings, "beard": params.beard,
                  "moustache": params.moustache, "fringe": params.fringe}
    tree = load_tree()
    masks = tree.masks(landmarks, (size, size), attributes)
    labels = tree.label_map(landmarks, (size, size), masks=masks)
    image = _render(tree, masks, labels, params, landmarks, rng)
    attributes["mouth_open"] = bool(masks["oral_cavity"].any())
    attributes["params"] = asdict(params)
    return Face(image=image, landmarks=landmarks, label_map=labels, attributes=attributes,
                source=f"synthetic:seed={int(seed)}")


# --- appearance ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _leaf_materials(tree) -> tuple[str, ...]:
    """Material of every leaf of ``tree``, in leaf order."""
    return tuple(next(_MATERIALS[c.id] for c in [leaf, *tree.ancestors(leaf.id)] if c.id in _MATERIALS)
                 for leaf in tree.leaves())


def _material_table(tree, params: FaceParams) -> np.ndarray:
    """Base colour ``(n_leaves + 1, 3)`` of every leaf of the default tree."""
    skin = np.array(params.skin, np.float32)
    hair = np.array(params.hair, np.float32)
    lips = np.array(params.lips, np.float32)
    colours = {
        "skin": skin, "skin_shadow": skin * 0.72, "skin_fold": skin * 0.86, "neck": skin * 0.9,
        "ear": skin * [0.97, 0.9, 0.9], "ear_shadow": skin * 0.7, "hair": hair, "beard": hair * 0.9,
        "brow": np.minimum(hair, skin) * 0.75, "lip": lips, "lip_dark": lips * 0.8,
        "cavity": np.array([60, 20, 25], np.float32), "tongue": np.array([190, 90, 95], np.float32),
        "gums": np.array([205, 110, 115], np.float32), "teeth": np.array([238, 232, 215], np.float32),
        "nostril": skin * 0.35, "sclera": np.array([240, 236, 230], np.float32),
        "iris": np.array(params.iris, np.float32), "pupil": np.array([12, 10, 10], np.float32),
        "lash": np.array([25, 20, 20], np.float32), "caruncle": np.array([225, 150, 150], np.float32),
        "frame": np.array(params.frame_colour, np.float32), "metal": np.array([225, 195, 90], np.float32),
        "cloth": np.array(params.cloth, np.float32), "background": np.array(params.background[0], np.float32),
    }
    # The last row colours label -1 (no concept), which the default tree leaves nowhere.
    table = np.array([colours[m] for m in _leaf_materials(tree)] + [colours["background"]], np.float32)
    return np.clip(table, 0, 255)


@functools.lru_cache(maxsize=4)
def _skin_lookup(tree) -> np.ndarray:
    """``(n_leaves + 1,)`` bool: which labels (and -1, last) are painted with a skin material."""
    skin = {"skin", "skin_fold", "neck", "ear", "skin_shadow"}
    return np.array([m in skin for m in _leaf_materials(tree)] + [False])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise ``(H, W)`` float32.

    Uniform white noise is used (blurring makes it Gaussian-like, and it is 4x cheaper to draw); coarse
    noise is drawn at low resolution and upsampled, which looks the same and costs far less.
    """
    h, w = shape
    step = max(1, int(sigma // 2))
    noise = rng.random((h // step + 1, w // step + 1), dtype=np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma / step)
    if step > 1:
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = noise[:h, :w]
    sample = noise[::4, ::4]  # statistics of a subsample are exact enough and 16x cheaper
    return (noise - sample.mean()) / max(float(sample.std()), 1e-6)


def _strands(rng: np.random.Generator, shape: tuple[int, int], length: int, slant: float, vertical: bool = True,
             ) -> np.ndarray:
    """Noise smeared into streaks ``length`` pixels long, sheared by ``slant``: hair strands. ``(H, W)``."""
    h, w = shape
    noise = cv2.blur(rng.random(shape, dtype=np.float32) - 0.5, (1, length) if vertical else (length, 1))
    shear = np.float32([[1, slant, -slant * h / 2], [0, 1, 0]]) if vertical else \
        np.float32([[1, 0, 0], [slant, 1, -slant * w / 2]])
    noise = cv2.warpAffine(noise, shear, (w, h), borderMode=cv2.BORDER_REFLECT)
    return noise / max(float(noise[::4, ::4].std()), 1e-6)


def _blurred(mask: np.ndarray, sigma: float, out_shape: tuple[int, int], small: int = 4) -> np.ndarray:
    """A soft version of a mask, float32 in [0, 1] of ``out_shape``, blurred at 1/``small`` resolution."""
    h, w = mask.shape
    low = cv2.resize(mask.view(np.uint8), (w // small, h // small), interpolation=cv2.INTER_AREA).astype(np.float32)
    if sigma > 0:
        low = cv2.GaussianBlur(low, (0, 0), max(sigma / small, 0.5))
    return cv2.resize(low, out_shape[::-1], interpolation=cv2.INTER_LINEAR)


def _render(tree, masks: dict[str, np.ndarray], labels: np.ndarray, params: FaceParams, landmarks: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    size = labels.shape[0]
    shape = labels.shape
    iod = CANONICAL_IOD * size * params.scale
    image = np.take(_material_table(tree, params), labels, axis=0)  # (H, W, 3) float32; -1 takes the last row

    # Background: a vertical gradient between two colours with soft blotches, smooth enough to draw at
    # a quarter of the resolution.
    quarter = (size // 4, size // 4)
    ramp = np.linspace(0, 1, quarter[0], dtype=np.float32)[:, None, None]
    bg = (1 - ramp) * np.array(params.background[0], np.float32) + ramp * np.array(params.background[1], np.float32)
    bg = bg + 18 * _smooth_noise(rng, quarter, size / 48)[..., None]
    bg = cv2.resize(bg, shape[::-1], interpolation=cv2.INTER_LINEAR)
    np.copyto(image, bg, where=masks["background"][..., None])

    # Height field (head dome, nose ridge, lips, eyeballs, hollows) and its shading under one light,
    # computed at half resolution: the fields are smooth, so this loses nothing visible.
    head = masks["face"] & ~masks["context"]
    half = (size // 2, size // 2)
    height = _blurred(head & ~masks["hair"], iod * 0.45, half)
    height += 0.15 * _blurred(masks["nose"], iod * 0.08, half, small=2)
    height += 0.12 * _blurred(masks["lips"], iod * 0.05, half, small=2)
    height += 0.25 * _blurred(masks["scalp_hair"], iod * 0.3, half)
    height += 0.05 * _blurred(masks["eyes"], iod * 0.06, half, small=2)
    height -= 0.12 * _blurred(masks["oral_cavity"] | masks["nostril_left"] | masks["nostril_right"], iod * 0.04, half,
                              small=2)
    gy, gx = np.gradient(height * (size / 24.0))  # slopes per full-resolution pixel
    azimuth, elevation = params.light
    light = np.array([np.cos(azimuth) * np.cos(elevation * 1.2), np.sin(azimuth) * np.cos(elevation * 1.2) - 0.3,
                      1.6], np.float32)
    light /= np.linalg.norm(light)
    inv_norm = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    diffuse = np.clip((light[2] - gx * light[0] - gy * light[1]) * inv_norm, 0, 1)
    specular = _power40(np.clip((1.0 - 0.5 * (gx * light[0] + gy * light[1])) * inv_norm, 0, 1))
    inside = _blurred(head, 0, half)
    gain = inside * (0.55 + 0.5 * diffuse) + (1 - inside) * (0.925 + 0.0825 * diffuse)
    gain = cv2.resize(gain.astype(np.float32), shape[::-1], interpolation=cv2.INTER_LINEAR)
    specular = cv2.resize(specular.astype(np.float32), shape[::-1], interpolation=cv2.INTER_LINEAR)

    # Textures: pores and blotches on skin, strands on hair and brows, fabric on clothes.
    skin = _skin_lookup(tree)[labels]
    pores = 0.035 * _smooth_noise(rng, shape, 0.6) + 0.03 * _smooth_noise(rng, shape, iod * 0.15)
    texture = np.where(skin, 1 + pores, np.float32(1))
    strands = _strands(rng, shape, max(5, int(iod * 0.3)), params.hair_flow)
    texture = np.where(masks["hair"], 1 + 0.25 * strands, texture)
    brows = _strands(rng, shape, max(3, int(iod * 0.12)), 0.15, vertical=False)
    texture = np.where(masks["eyebrows"], 1 + 0.18 * brows, texture)
    texture = np.where(masks["clothing"], 1 + 0.05 * pores / 0.065, texture)
    image *= (gain * texture)[..., None]

    for side, eye in (("left", 42), ("right", 36)):
        _paint_eye(image, masks, f"eye_{side}", landmarks[[eye + 1, eye + 2, eye + 4, eye + 5]].mean(axis=0),
                   landmarks[eye + 1, 1], iod, azimuth, rng)
    if masks["teeth"].any():
        _paint_teeth(image, masks["teeth"], landmarks)
    if params.glasses:
        lenses = masks["glasses_lens_left"] | masks["glasses_lens_right"]
        image[lenses] = image[lenses] * 0.88 + np.array([20, 25, 30], np.float32)
    shiny = (head & skin) | masks["eyes"] | masks["lips"] | masks["glasses"]
    image += np.where(shiny, 60 * specular, 0).astype(np.float32)[..., None]

    # Camera: slight blur and (luminance) sensor noise.
    image = cv2.GaussianBlur(image, (0, 0), 0.55)
    image += 7.0 * (rng.random((*shape, 1), dtype=np.float32) - 0.5)  # uniform noise of std 2
    return np.clip(image, 0, 255).astype(np.uint8)


def _power40(x: np.ndarray) -> np.ndarray:
    """``x ** 40`` by repeated squaring: a sharp specular lobe without the cost of a general power."""
    x2 = x * x
    x8 = (x2 * x2) ** 2
    x32 = (x8 * x8) ** 2
    return x32 * x8


def _eye_box(centre: np.ndarray, radius: float, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x0, y0 = (max(0, int(c - radius)) for c in centre)
    x1, y1 = (int(c + radius) + 2 for c in centre)
    return slice(y0, min(y1, shape[0])), slice(x0, min(x1, shape[1]))


def _paint_eye(image: np.ndarray, masks: dict[str, np.ndarray], eye: str, centre: np.ndarray, lid_y: float,
               iod: float, azimuth: float, rng: np.random.Generator) -> None:
    """Iris fibres and limbal ring, upper-lid shadow and a catchlight, painted in place."""
    rows, cols = _eye_box(centre, 0.4 * iod, image.shape)
    opening = (masks[f"{eye}_sclera"] | masks[f"{eye}_iris"] | masks[f"{eye}_pupil"])[rows, cols]
    if not opening.any():
        return
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    radius = np.hypot(xx - centre[0], yy - centre[1]) / (0.115 * iod)
    theta = np.arctan2(yy - centre[1], xx - centre[0])
    fibres = 1 + 0.18 * np.sin(theta * 23 + rng.uniform(0, 6)) * np.sin(theta * 7 + rng.uniform(0, 6))
    limbus = np.clip(1.35 - 0.6 * radius, 0.55, 1.05)
    iris = masks[f"{eye}_iris"][rows, cols]
    lid_shadow = np.clip((yy - lid_y) / (0.08 * iod), 0.55, 1.0)
    gain = np.where(iris, fibres * limbus, 1.0) * np.where(opening, lid_shadow, 1.0)
    image[rows, cols] *= gain[..., None].astype(np.float32)
    if iris.any():
        glint = centre - 0.04 * iod * np.array([np.cos(azimuth), np.sin(azimuth)])
        cv2.circle(image, (int(glint[0]), int(glint[1])), max(1, int(0.02 * iod)), (250, 250, 250), -1, cv2.LINE_AA)


def _paint_teeth(image: np.ndarray, teeth: np.ndarray, landmarks: np.ndarray) -> None:
    """Dark gaps between incisors across the mouth width, painted in place."""
    left, right = landmarks[[60, 64], 0]
    xs = np.arange(image.shape[1], dtype=np.float32)
    gaps = np.abs(np.sin((xs - left) / max(right - left, 1.0) * np.pi * 8)) ** 0.25
    ys, xs_idx = np.nonzero(teeth)
    image[ys, xs_idx] *= (0.7 + 0.3 * gaps[xs_idx])[:, None]
