"""Smoke run of notebooks/04_training.ipynb with papermill on the smoke profile."""
from __future__ import annotations

from pathlib import Path

import pytest

from fifa_lab.data.build import build_dataset
from fifa_lab.model import FiFaMLLM
from fifa_lab.pipeline import PROFILES
from notebook_runner import assert_stored_clean, run_smoke

STEM = "04_training"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)


@pytest.mark.slow
def test_notebook_04_smoke(tmp_path: Path) -> None:
    build_dataset(tmp_path, n_faces=PROFILES["smoke"]["dataset_faces"], seed=0)
    results = run_smoke(STEM, tmp_path, task_ratios="Det=2, RSeg=0")
    steps = PROFILES["smoke"]["train_steps"]
    assert results["train"]["steps"] == steps and results["train"]["task_ratios"] == {"Det": 2.0, "RSeg": 0.0}
    assert set(results["validation"]) >= {"det_acc", "loc_miou"}
    assert results["parameters"]["total"] == sum(v for k, v in results["parameters"].items() if k != "total")
    assert {"04_training.png", "04_predictions.png"} <= set(results["figures"])
    for example in results["examples"]:
        assert example["answer"].count("[SEG]") == example["masks"]
    # the pipeline's contract with notebooks 05 and 06: a loadable model in model/best
    model = FiFaMLLM.from_pretrained(tmp_path / "model" / "best")
    assert model.config.vocab_size == len(model.tokenizer)
    # RSeg switched off: no RSeg step was ever logged
    log = (tmp_path / "model" / "train_log.jsonl").read_text()
    assert '"RSeg"' not in log
