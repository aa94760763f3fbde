"""Smoke run of notebooks/03_annotation.ipynb with papermill on the smoke profile."""
from __future__ import annotations

from pathlib import Path

import pytest

from fifa_lab.tasks import TASKS
from notebook_runner import assert_stored_clean, run_smoke

STEM = "03_annotation"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)


@pytest.mark.slow
def test_notebook_03_smoke(tmp_path: Path) -> None:
    results = run_smoke(STEM, tmp_path)
    assert results["example"]["text"].count("<p>") == results["example"]["text"].count("[SEG]") > 0
    reliability = results["reliability"]
    assert set(reliability["per_class"]) == {"FS", "FR", "FE", "EFS"}
    assert reliability["best_rule"] in ("top5", "otsu", "adaptive")
    assert set(results["tasks_shown"]) == set(TASKS)
    assert (tmp_path / "data" / "data_card.json").exists()
    assert {"03_steps.png", "03_threshold_sweep.png", "03_reliability.png"} <= set(results["figures"])
