"""Artifact attributes measured from pixels, per concept, and their mapping to the artifact vocabulary.

Each number compares the fake with the real inside the artifact mask (the manipulated pixels of one
concept):

=====================  ========================================================  ============================
number                 what it is                                                artifact (see `Thresholds`)
=====================  ========================================================  ============================
``sharpness``          Laplacian energy after a 2x2 box filter (which cancels    blur (< 0.6); on skin below
                       an upsampling checkerboard), fake / real                  0.35 also texture_anomaly;
                                                                                 noise_inconsistency (> 1.8,
                                                                                 unless a grid explains it)
``chroma_shift``       Delta-E between the mean a*b* colours of the manipulated  colour_mismatch (>= 4)
                       pixels under the concept's parent (blur and warps move
                       colour between neighbouring leaves, not out of the parent)
``lightness_shift``    mean L* change (signed)                                   colour_mismatch (abs >= 6),
                                                                                 lighting_inconsistency
                                                                                 (abs > 15)
``seam``               fake minus real gradient on the mask edge, grey levels    blending_seam (> 0.75)
                       per pixel
``grid``               2x2 checkerboard response, fake / real                    grid_pattern (> 1.6)
``gradient_ncc``       correlation of the fake's and the real's gradients        shape_distortion (<= 0.5,
                                                                                 edge energy kept 0.6..1.7x)
``coarse_ratio``       gradient energy at sigma 2 px, fake / real
``asymmetry``          how much further a sided concept is in colour from its    asymmetry (> 12 Delta-E)
                       mirror twin in the fake than in the real (twin untouched)
=====================  ========================================================  ============================

Ghosting and missing detail are not named: on the synthetic forgeries no pixel measure tried for them
(edge energy gained with the old edges kept; blur of iris or teeth) reached a precision above 0.05.

Without the real image (a fake plus a given mask) the measures that need it are None and three
stand-ins remain: the seam as the fake's gradient on the mask edge over its gradient around it
(``seam_ratio`` >= 2), the grid as checkerboard energy inside the mask over the band around it, and
blur and asymmetry against the concept's untouched mirror twin (``twin_sharpness``, ``asymmetry``).

Speed: the filters run once, on the mask's bounding box; per-concept numbers are sums from one
``np.bincount`` per quantity over the label map, aggregated to every tree node by one matrix product.
A concept with fewer than ``min_pixels`` manipulated pixels (or, for sharpness, too little texture in
the real) takes the numbers of its nearest such ancestor, then of the whole mask (``measured_on``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from fifa_lab.annotate.mask import ImagePair, to_lab
from fifa_lab.fict.tree import ConceptTree


@dataclass(frozen=True)
class Thresholds:
    """Where a number becomes an artifact type. Checked on synthetic forgeries against their
    ground-truth artifact types (per-type precision and recall, :mod:`fifa_lab.annotate.reliability`)."""

    # Fewer manipulated pixels than this and ratios of energies are noise: borrow an ancestor's.
    min_pixels: int = 30
    # Mean squared Laplacian of the real below which a region has no detail to lose (sclera, plain
    # background); about the energy of the synthetic faces' skin pores.
    texture_floor: float = 4.0
    # Fine-detail energy below 0.6x is a Gaussian blur of about 0.7 px: visible at 100%.
    blur_ratio: float = 0.6
    # Skin this much smoother than its source looks plastic (beautification filters).
    smooth_skin_ratio: float = 0.35
    skin_regions: tuple[str, ...] = ("forehead", "cheeks", "chin_jaw", "nose", "philtrum")
    noise_ratio: float = 1.8
    # A mean chroma shift of 4 Delta-E or a lightness shift of 6 L* is plain side by side with the
    # neighbouring skin (2.3 is just noticeable).
    chroma_shift: float = 4.0
    lightness_shift: float = 6.0
    # A lightness change this large reads as a different light rather than a tint.
    light_shift: float = 15.0
    seam: float = 0.75
    seam_ratio_alone: float = 2.0
    grid: float = 1.6
    # Edges that moved: gradients correlating at most 0.5 while the edge energy stayed within
    # 0.6..1.7x (else blur or added texture explains the change), where the real has edges.
    shape_ncc: float = 0.5
    shape_coarse_band: tuple[float, float] = (0.6, 1.7)
    edge_floor: float = 4.0
    asymmetry: float = 12.0


DEFAULT_THRESHOLDS = Thresholds()

# Quantities summed per leaf inside the mask (f = fake, r = real).
_COLUMNS = ("n", "lf2", "lr2", "cf2", "cr2", "gf2", "gr2", "gfgr", "dL", "da", "db", "chf", "chr")
_C = {name: i for i, name in enumerate(_COLUMNS)}
_PAD = 8  # context around the mask's box: the filters' reach and the rings around the mask
_CHECKER = np.array([[1, -1], [-1, 1]], np.float32)
_COLOUR_ARTIFACTS = ("colour_mismatch", "lighting_inconsistency")
_COLOUR_NUMBERS = ("chroma_shift", "lightness_shift")
_REGION_ARTIFACTS = ("grid_pattern", "shape_distortion")


@functools.lru_cache(maxsize=8)
def _tree_tables(tree: ConceptTree) -> tuple[np.ndarray, list[str], list[list[int]], np.ndarray]:
    """Per tree: membership ``(nodes + 1, leaves + 1)`` (last row = the whole mask, last column =
    label -1), node ids, each leaf's chain of rows (itself, its ancestors below the root, the whole
    mask) and each leaf's mirror twin (leaf index, or -1)."""
    leaves = tree.leaves()
    nodes = [c.id for c in tree]
    row = {key: i for i, key in enumerate(nodes)}
    member = np.zeros((len(nodes) + 1, len(leaves) + 1))
    for i, key in enumerate(nodes):
        member[i, [tree.leaf_index[leaf.id] for leaf in tree.leaves(key)]] = 1.0
    member[-1] = 1.0
    chains = [[row[leaf.id]] + [row[a.id] for a in tree.ancestors(leaf.id) if a.id != tree.root] + [len(nodes)]
              for leaf in leaves]
    twins = np.full(len(leaves), -1, np.int64)
    for leaf in leaves:
        if leaf.side in ("left", "right"):
            twin = leaf.id.replace(leaf.side, "right" if leaf.side == "left" else "left")
            if twin != leaf.id and twin in tree and tree.is_leaf(twin):
                twins[tree.leaf_index[leaf.id]] = tree.leaf_index[tree.get(twin).id]
    return member, nodes, chains, twins


@functools.lru_cache(maxsize=8)
def _skin_leaves(tree: ConceptTree, regions: tuple[str, ...]) -> frozenset[str]:
    return frozenset(leaf.id for region in regions if region in tree for leaf in tree.leaves(region))


def _box(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)),
            slice(max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)))


def _gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradients in grey levels per pixel."""
    return (cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8),
            cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8))


def _detail(gray: np.ndarray) -> np.ndarray:
    """Laplacian of the image after a 2x2 box filter: fine detail without the Nyquist checkerboard
    (which the box filter cancels), so an upsampling grid does not pass for sharpness."""
    return cv2.Laplacian(cv2.blur(gray, (2, 2)), cv2.CV_32F)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0 (an undefined ratio never crosses a threshold)."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def measure(fake: np.ndarray, real: np.ndarray | None, mask: np.ndarray, label_map: np.ndarray,
            tree: ConceptTree, concepts: list[str], thresholds: Thresholds = DEFAULT_THRESHOLDS,
            pair: ImagePair | None = None) -> dict[str, dict]:
    """Artifacts and numbers of each leaf in ``concepts`` inside ``mask``.

    Args:
        fake, real: ``(H, W, 3)`` uint8 RGB; ``real`` None measures the fake alone (see module doc).
        mask: ``(H, W)`` bool artifact mask, not empty.
        label_map: ``(H, W)`` int leaf indices of ``tree`` (-1 for none).
        concepts: leaf ids to report, e.g. those the mask touches.
        pair: the (fake, real) `ImagePair` when the caller has one (its grey and Lab images are reused).

    Returns:
        ``{leaf id: {"artifacts": [ids], number: float | None, ..., "pixels": int, "measured_on":
        concept id or "mask"}}`` in the order of ``concepts``.
    """
    t = thresholds
    member, nodes, chains, twins = _tree_tables(tree)
    n_leaves = len(twins)
    if real is not None and pair is None:
        pair = ImagePair(fake, real)
    rows, cols = _box(mask, _PAD)
    m = np.ascontiguousarray(mask[rows, cols], dtype=bool)
    labels = label_map[rows, cols].astype(np.intp)
    labels[labels < 0] = n_leaves
    idx = labels[m]

    def per_leaf(values: np.ndarray | None, where: np.ndarray = m, index: np.ndarray = idx) -> np.ndarray:
        return np.bincount(index, weights=None if values is None else values[where],
                           minlength=n_leaves + 1).astype(np.float64)

    gray_f = pair.gray_fake[rows, cols] if pair is not None else cv2.cvtColor(
        np.ascontiguousarray(fake[rows, cols], np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap_f = _detail(gray_f)
    gx_f, gy_f = _gradients(gray_f)
    grad_f = cv2.magnitude(gx_f, gy_f)
    check_f = np.abs(cv2.filter2D(gray_f, -1, _CHECKER))
    sums = {"n": per_leaf(None), "lf2": per_leaf(lap_f * lap_f), "chf": per_leaf(check_f)}
    kernel = np.ones((3, 3), np.uint8)
    m8 = m.view(np.uint8)
    if pair is not None:
        gray_r = pair.gray_real[rows, cols]
        lap_r = _detail(gray_r)
        gx_r, gy_r = _gradients(gray_r)
        cx_f, cy_f = _gradients(cv2.GaussianBlur(gray_f, (0, 0), 2.0))
        cx_r, cy_r = _gradients(cv2.GaussianBlur(gray_r, (0, 0), 2.0))
        check_r = np.abs(cv2.filter2D(gray_r, -1, _CHECKER))
        delta = pair.lab_fake[rows, cols] - pair.lab_real[rows, cols]
        sums.update(lr2=per_leaf(lap_r * lap_r), cf2=per_leaf(cx_f * cx_f + cy_f * cy_f),
                    cr2=per_leaf(cx_r * cx_r + cy_r * cy_r), gf2=per_leaf(grad_f * grad_f),
                    gr2=per_leaf(gx_r * gx_r + gy_r * gy_r), gfgr=per_leaf(gx_f * gx_r + gy_f * gy_r),
                    dL=per_leaf(delta[..., 0]), da=per_leaf(delta[..., 1]), db=per_leaf(delta[..., 2]),
                    chr=per_leaf(check_r))
        outside = None
    else:
        # No real: the fake's own checkerboard response around the mask is the grid reference.
        band = cv2.dilate(m8, kernel, iterations=_PAD).view(bool) & ~m
        outside = float(check_f[band].mean()) if band.any() else np.nan
    zero = np.zeros(n_leaves + 1)
    groups = member @ np.stack([sums.get(name, zero) for name in _COLUMNS], axis=1)  # (nodes + 1, columns)
    numbers = _numbers(groups, outside, t)

    # Seam: gradient on the 3 px band along the mask edge, per leaf; without a real, against the
    # fake's gradient 2..5 px to either side of that edge.
    edge = cv2.dilate(m8, kernel).view(bool) & ~cv2.erode(m8, kernel).view(bool)
    edge_idx = labels[edge]
    edge_n = member @ per_leaf(None, edge, edge_idx)
    if pair is not None:
        numbers["seam"] = _divide(member @ per_leaf(grad_f - cv2.magnitude(gx_r, gy_r), edge, edge_idx), edge_n)
    else:
        ring = cv2.dilate(m8, kernel, iterations=5).view(bool) & ~cv2.erode(m8, kernel, iterations=5).view(bool) & ~edge
        around = float(grad_f[ring].mean()) if ring.any() else np.nan
        numbers["seam_ratio"] = _divide(member @ per_leaf(grad_f, edge, edge_idx), edge_n) / (around + 1.0)
    flags = _flags(numbers, pair is not None, t)

    hit = {tree.leaf_index[c] for c in concepts}
    twin_numbers = _twins(fake, pair, label_map, twins, hit, t)
    skin = _skin_leaves(tree, t.skin_regions)
    row_of = {key: i for i, key in enumerate(nodes)}
    seam_name = "seam" if pair is not None else "seam_ratio"
    shown = [name for name in numbers if name not in ("textured", seam_name)]
    out: dict[str, dict] = {}
    for concept in concepts:
        k = tree.leaf_index[concept]
        own = row_of[concept]
        chain = chains[k]
        base = next((g for g in chain if groups[g, _C["n"]] >= t.min_pixels), chain[-1])
        sharp = next((g for g in chain if groups[g, _C["n"]] >= t.min_pixels and numbers["textured"][g]), None)
        # Colour is judged on the parent's manipulated pixels: blurring or warping moves colour between
        # neighbouring leaves (a blurred lash line turns lighter) but keeps the parent's mean.
        pooled = next((g for g in chain[1:] if groups[g, _C["n"]] >= t.min_pixels), base)
        found = {a for a in _COLOUR_ARTIFACTS if a in flags and flags[a][pooled]}
        found |= {a for a in _REGION_ARTIFACTS if a in flags and flags[a][base]}
        if sharp is not None:
            if flags["blur"][sharp]:
                found.add("blur")
                if concept in skin and numbers["sharpness"][sharp] < t.smooth_skin_ratio:
                    found.add("texture_anomaly")
            elif flags["noise_inconsistency"][sharp] and "grid_pattern" not in found:
                found.add("noise_inconsistency")
        # A seam belongs to the concepts the mask edge runs through, judged on their own stretch of it.
        if edge_n[own] >= 8 and flags["blending_seam"][own]:
            found.add("blending_seam")
        entry: dict = {name: _round(numbers[name][pooled if name in _COLOUR_NUMBERS else base]) for name in shown}
        entry["sharpness"] = None if sharp is None else _round(numbers["sharpness"][sharp])
        entry[seam_name] = _round(numbers[seam_name][own])
        twin = twin_numbers.get(k)
        if twin is not None:
            entry.update({key: _round(value) for key, value in twin.items()})
            if twin["asymmetry"] > t.asymmetry:
                found.add("asymmetry")
            if pair is None and twin["twin_sharpness"] < t.blur_ratio:
                found.add("blur")
        entry["pixels"] = int(groups[own, _C["n"]])
        entry["measured_on"] = "mask" if base == len(nodes) else nodes[base]
        out[concept] = {"artifacts": sorted(found), **entry}
    return out


def _round(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _numbers(g: np.ndarray, outside_checker: float | None, t: Thresholds) -> dict[str, np.ndarray]:
    """Per-group numbers from summed columns ``g`` ``(groups, columns)``; NaN where undefined.

    ``outside_checker`` is None with a real image, else the fake's mean checkerboard response
    around the mask (the grid reference without a real)."""
    n = g[:, _C["n"]]
    mean = {name: _divide(g[:, _C[name]], n) for name in _COLUMNS if name != "n"}
    if outside_checker is not None:
        return {"grid": (mean["chf"] + 1.0) / (outside_checker + 1.0),
                "textured": np.zeros(len(g), bool), "sharpness": np.full(len(g), np.nan)}
    return {
        "grid": (mean["chf"] + 1.0) / (mean["chr"] + 1.0),
        "textured": mean["lr2"] >= t.texture_floor,
        "sharpness": (mean["lf2"] + 1.0) / (mean["lr2"] + 1.0),
        "chroma_shift": np.hypot(mean["da"], mean["db"]),
        "lightness_shift": mean["dL"],
        "gradient_ncc": _divide(mean["gfgr"], np.sqrt(mean["gf2"] * mean["gr2"])),
        "coarse_ratio": _divide(mean["cf2"], mean["cr2"]),
        "real_edges": mean["gr2"],
    }


def _flags(s: dict[str, np.ndarray], has_real: bool, t: Thresholds) -> dict[str, np.ndarray]:
    """Boolean per group for each artifact the numbers can show (NaN compares False)."""
    with np.errstate(invalid="ignore"):
        flags = {"grid_pattern": s["grid"] > t.grid, "blur": s["sharpness"] < t.blur_ratio,
                 "noise_inconsistency": s["sharpness"] > t.noise_ratio}
        if not has_real:
            return {**flags, "blending_seam": s["seam_ratio"] >= t.seam_ratio_alone}
        light = np.abs(s["lightness_shift"])
        return {
            **flags,
            "blending_seam": s["seam"] > t.seam,
            "colour_mismatch": (s["chroma_shift"] >= t.chroma_shift) | (light >= t.lightness_shift),
            "lighting_inconsistency": light > t.light_shift,
            "shape_distortion": (s["real_edges"] >= t.edge_floor) & (s["gradient_ncc"] <= t.shape_ncc)
            & (s["coarse_ratio"] >= t.shape_coarse_band[0]) & (s["coarse_ratio"] <= t.shape_coarse_band[1]),
        }


def _twins(fake: np.ndarray, pair: ImagePair | None, label_map: np.ndarray, twins: np.ndarray, hit: set[int],
           t: Thresholds) -> dict[int, dict[str, float]]:
    """For hit sided leaves whose twin was left alone, ``{leaf index: numbers}`` over both whole
    visible leaves: the colour asymmetry (and, without a real, the sharpness against the twin)."""
    wanted = {k: int(twins[k]) for k in hit if twins[k] >= 0 and twins[k] not in hit}
    if not wanted:
        return {}
    n = len(twins)
    needed = np.zeros(n + 1, bool)
    needed[list(wanted) + list(wanted.values())] = True
    labels = np.where(label_map < 0, n, label_map).astype(np.intp)
    where = needed[labels]
    idx = labels[where]
    count = np.bincount(idx, minlength=n + 1).astype(np.float64)

    def means(values: np.ndarray) -> np.ndarray:
        return _divide(np.bincount(idx, weights=values[where], minlength=n + 1), count)

    def colours(lab: np.ndarray) -> np.ndarray:
        return np.stack([means(lab[..., c]) for c in range(3)], axis=1)

    if pair is not None:
        fake_colour, real_colour = colours(pair.lab_fake), colours(pair.lab_real)
    else:
        fake_colour = colours(to_lab(fake))
        gray = cv2.cvtColor(np.asarray(fake, np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
        energy = means(cv2.Laplacian(gray, cv2.CV_32F) ** 2)
    out = {}
    for k, j in wanted.items():
        if min(count[k], count[j]) < t.min_pixels:
            continue
        apart = float(np.linalg.norm(fake_colour[k] - fake_colour[j]))
        if pair is not None:
            out[k] = {"asymmetry": apart - float(np.linalg.norm(real_colour[k] - real_colour[j]))}
        else:
            out[k] = {"asymmetry": apart, "twin_sharpness": float((energy[k] + 1.0) / (energy[j] + 1.0))}
    return out
