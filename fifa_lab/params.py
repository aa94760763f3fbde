"""Notebook parameters as they arrive from papermill.

``fifa-lab pipeline -p`` reads values as YAML scalars, so ``-p solutions=false`` arrives as ``False``.
Plain papermill's ``-p`` only knows ``True`` and ``False``: ``-p solutions false`` arrives as the string
``"false"``, which Python treats as true. Notebooks therefore pass their boolean parameters through
:func:`flag`.
"""
from __future__ import annotations

from typing import Any

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


def flag(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool (or 0/1) as it is, text such as ``"false"``/``"True"``/``"yes"``/``"0"`` by its
    meaning; anything else is a ``ValueError`` naming the parameter ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"parameter {name} must be true or false, got {value!r} (e.g. -p {name} false)")
