"""Forgery synthesis with ground truth: FS face swap, FR reenactment, FE editing, EFS entire-face synthesis.

``forge(face, forgery_class, method=None, seed=0) -> Forgery`` makes one fake with its pixel-exact
artifact mask, the FICT concepts it manipulated (with artifact types), its class, method and parameters.
Importing this package registers every built-in method; a new method is one decorated function in one
file (see :func:`register_method`).
"""
from fifa_lab.forge.core import METHODS, Edit, ForgeContext, Forgery, NotApplicable, forge, methods_of, register_method
from fifa_lab.forge.post import apply_post, random_chain

# Importing the method modules registers their methods.
from fifa_lab.forge import edit, reenact, swap, synthesis  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "Edit", "ForgeContext", "Forgery", "NotApplicable", "apply_post", "forge", "methods_of",
           "random_chain", "register_method"]
