"""Smoke run of notebooks/01_fict_exploration.ipynb with papermill on the smoke profile."""
from __future__ import annotations

from pathlib import Path

import pytest

from fifa_lab.pipeline import PROFILES
from notebook_runner import assert_stored_clean, run_smoke

STEM = "01_fict_exploration"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)


@pytest.mark.slow
def test_notebook_01_smoke(tmp_path: Path) -> None:
    results = run_smoke(STEM, tmp_path)
    assert results["n_leaves"] == 112 and results["n_nodes"] == 141
    assert sum(results["leaves_per_region"].values()) == 112
    assert results["n_faces"] == PROFILES["smoke"]["n_faces"]
    assert results["demo"]["region"] == "eyes" and "left eye" in results["demo"]["path"]
    assert results["photo"]["nonempty_concepts"] > 100
    assert {f"01_{name}.png" for name in ("tree", "synthetic_regions", "photo_concepts")} <= set(results["figures"])
