"""Smoke run of notebooks/01_fict_exploration.ipynb with papermill on the smoke profile."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from fifa_lab.pipeline import KERNEL_NAME, NOTEBOOK_DIR, PROFILES

NOTEBOOK = NOTEBOOK_DIR / "01_fict_exploration.ipynb"


def test_notebook_stored_clean() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.kernelspec.name == "fifa-lab"
    assert nb.cells[0].cell_type == "markdown"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert all(c.get("id") for c in nb.cells)
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_notebook_01_smoke(tmp_path: Path) -> None:
    kernel = KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"
    executed = tmp_path / "01_fict_exploration.ipynb"
    parameters = {**PROFILES["smoke"], "run_dir": str(tmp_path), "profile": "smoke"}
    papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=parameters, kernel_name=kernel,
                               cwd=str(tmp_path), progress_bar=False, execution_timeout=120)

    results = json.loads((tmp_path / "01_fict_exploration.json").read_text())
    assert results["n_leaves"] == 112 and results["n_nodes"] == 141
    assert sum(results["leaves_per_region"].values()) == 112
    assert results["n_faces"] == PROFILES["smoke"]["n_faces"]
    assert results["demo"]["region"] == "eyes" and "left eye" in results["demo"]["path"]
    assert results["photo"]["nonempty_concepts"] > 100
    assert {f"01_{name}.png" for name in ("tree", "synthetic_regions", "photo_concepts")} <= set(results["figures"])

    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
