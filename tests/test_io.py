"""Atomic JSON results that strict JSON readers accept."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fifa_lab.io import write_json


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_undefined_numbers_become_null_and_numpy_becomes_plain(tmp_path: Path) -> None:
    path = write_json(tmp_path / "metrics.json", {
        "Det": {"acc": np.float64(0.75), "auc": math.nan, "eer": np.float32(np.inf), "n": np.int64(40)},
        "curve": np.array([0.5, np.nan, -np.inf]), "classes": ("real", "fake"), "kept": np.bool_(True),
        "run": tmp_path / "run"})
    assert _strict(path.read_text()) == {
        "Det": {"acc": 0.75, "auc": None, "eer": None, "n": 40}, "curve": [0.5, None, None],
        "classes": ["real", "fake"], "kept": True, "run": str(tmp_path / "run")}


def test_an_unwritable_value_fails_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "result.json", {"step": 1})
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        write_json(path, {"step": 2, "model": object()})
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
