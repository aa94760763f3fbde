"""Smoke run of notebooks/04_training.ipynb with papermill on the smoke profile."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from fifa_lab.data.build import build_dataset
from fifa_lab.model import FiFaMLLM
from fifa_lab.cli import build_parser
from fifa_lab.pipeline import NOTEBOOK_DIR, PROFILES
from fifa_lab.train import TrainConfig
from fifa_lab.train.recipe import parse_task_ratios
from fifa_lab.train.trainer import DEFAULT_TASK_RATIOS
from notebook_runner import assert_stored_clean, run_smoke

STEM = "04_training"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)


def test_notebook_cli_and_trainer_share_the_default_task_mixture() -> None:
    nb = nbformat.read(NOTEBOOK_DIR / f"{STEM}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    defaults = {statement.targets[0].id: ast.literal_eval(statement.value)
                for statement in ast.parse(cell.source).body if isinstance(statement, ast.Assign)}
    cli = build_parser().parse_args(["train", "--run-dir", "somewhere"])
    assert parse_task_ratios(defaults["task_ratios"]) == parse_task_ratios(cli.task_ratios) == DEFAULT_TASK_RATIOS
    assert TrainConfig().task_ratios == DEFAULT_TASK_RATIOS and TrainConfig().task_ratios is not DEFAULT_TASK_RATIOS


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
