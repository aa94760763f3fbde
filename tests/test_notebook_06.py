"""Smoke run of notebooks/06_interactive_analysis.ipynb with papermill on the smoke profile."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from fifa_lab.data.build import load_datasets
from fifa_lab.pipeline import NOTEBOOK_DIR
from notebook_runner import assert_stored_clean, run_smoke, untrained_run

STEM = "06_interactive_analysis"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)
    nb = nbformat.read(NOTEBOOK_DIR / f"{STEM}.ipynb", as_version=4)
    parameters = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name in ("run_dir", "seed", "profile", "model_dir", "image_index", "concept", "question", "max_new_tokens"):
        assert f"{name} = " in parameters, name


@pytest.mark.slow
def test_notebook_06_smoke(tmp_path: Path) -> None:
    untrained_run(tmp_path)
    results = run_smoke(STEM, tmp_path, image_index=1, concept="nose")
    test_ids = list(load_datasets(tmp_path).images["test"]["image_id"])
    assert results["image_id"] == test_ids[1] and results["truth"] in {"real", "FS", "FR", "FE", "EFS"}
    assert results["verdict"]["label"] in {"real", "fake"}
    assert sum(results["verdict"]["class_probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert results["concept"] == "nose" and "the nose" in results["question"]
    assert results["masks"] == results["answer"].count("[SEG]") == len(results["concept_paths"])
    assert results["figures"] == ["06_answer.png"] and (tmp_path / "figures" / "06_answer.png").stat().st_size
    executed = nbformat.read(tmp_path / f"{STEM}.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert any("text/html" in o.get("data", {}) and "Verdict:" in o["data"]["text/html"] for o in outputs)
