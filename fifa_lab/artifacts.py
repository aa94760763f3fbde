"""The one vocabulary of forgery classes and artifact types, shared by forgeries, annotations and text.

Forgery classes follow DFA-Bench; artifact types are what an analyst names when explaining a fake.
Each artifact type has a readable phrase for explanations and a one-line description for teaching.
"""
from __future__ import annotations

FORGERY_CLASSES = ("real", "FS", "FR", "FE", "EFS")
FORGERY_CLASS_NAMES = {
    "real": "real (unmanipulated)",
    "FS": "face swap",
    "FR": "face reenactment",
    "FE": "face editing",
    "EFS": "entire face synthesis",
}

# id -> (phrase used in explanations, description)
ARTIFACTS: dict[str, tuple[str, str]] = {
    "blur": ("blurred, over-smoothed detail", "Lost sharpness compared with the surrounding face."),
    "colour_mismatch": ("a colour or tone mismatch", "Hue or brightness that does not match neighbouring skin."),
    "blending_seam": ("a visible blending seam", "An edge where a pasted region meets the original image."),
    "texture_anomaly": ("unnatural texture (plastic skin, missing pores)", "Skin or hair texture that is too smooth or repetitive."),
    "shape_distortion": ("warped, distorted shape", "Geometry bent by warping: stretched or squeezed features."),
    "asymmetry": ("left-right asymmetry", "Paired parts (eyes, earrings, brows) that do not match each other."),
    "lighting_inconsistency": ("inconsistent lighting", "Shading or highlights that disagree with the light elsewhere."),
    "ghosting": ("ghosting or double edges", "Doubled or smeared contours left by misaligned blending."),
    "grid_pattern": ("a grid (checkerboard) pattern", "Periodic high-frequency texture left by generator upsampling."),
    "missing_detail": ("missing detail (fused teeth, irregular iris)", "Structures a generator failed to draw correctly."),
    "noise_inconsistency": ("inconsistent noise or compression", "Noise or JPEG blocking that differs from the rest of the image."),
}
ARTIFACT_TYPES = tuple(ARTIFACTS)


def check_forgery_class(name: str) -> str:
    """Return ``name`` if it is a forgery class, else raise ValueError listing the classes."""
    if name not in FORGERY_CLASSES:
        raise ValueError(f"unknown forgery class {name!r}; use one of {', '.join(FORGERY_CLASSES)}")
    return name


def check_artifact(name: str) -> str:
    """Return ``name`` if it is an artifact type, else raise ValueError listing the types."""
    if name not in ARTIFACTS:
        raise ValueError(f"unknown artifact type {name!r}; use one of {', '.join(ARTIFACT_TYPES)}")
    return name
