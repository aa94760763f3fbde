"""Smoke run of notebooks/05_age_evaluation.ipynb with papermill on the smoke profile."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from notebook_runner import assert_stored_clean, run_smoke, untrained_run

STEM = "05_age_evaluation"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)


@pytest.mark.slow
def test_notebook_05_smoke(tmp_path: Path) -> None:
    untrained_run(tmp_path)
    results = run_smoke(STEM, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"Det", "Cls", "Loc", "AGE"} <= set(metrics)
    assert metrics["meta"]["split"] == "test" and metrics["meta"]["checkpoint_sha256"]
    assert set(metrics["experts"]) >= {"det_acc", "cls_acc", "loc_miou", "mllm_over_expert"}
    assert "Det acc" in metrics["bars"] and "AGE mIoU" in metrics["bars"]
    assert results["meta"] == metrics["meta"]
    assert "05_classes_and_iou.png" in results["figures"]
    # the ablation table: every arm trained on its own data and scored on this run's test split
    assert [row["arm"] for row in metrics["ablations"]["rows"]] == ["full", "no_aux", "coarse_tree", "top5_masks"]
    assert metrics["ablations"]["meta"]["budget"]["steps"] == 2
    assert "05_ablations.png" in results["figures"]
