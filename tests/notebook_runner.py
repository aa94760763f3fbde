"""Shared helpers for the notebook tests: run one notebook with papermill on the smoke profile."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import papermill
import torch
from jupyter_client.kernelspec import KernelSpecManager

from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.model import build_tiny
from fifa_lab.pipeline import KERNEL_NAME, NOTEBOOK_DIR, PROFILES


def assert_stored_clean(stem: str) -> None:
    """The notebook in git: our kernel, a teaching first cell, one parameters cell, ids, no outputs."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{stem}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "fifa-lab"
    assert nb.cells[0].cell_type == "markdown"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert all(c.get("id") for c in nb.cells)
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def run_smoke(stem: str, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Execute ``notebooks/<stem>.ipynb`` into ``run_dir`` with the smoke profile; return its results JSON.

    Fails when any cell produced an error output.
    """
    kernel = KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"
    executed = run_dir / f"{stem}.ipynb"
    parameters = {**PROFILES["smoke"], "run_dir": str(run_dir), "profile": "smoke", **overrides}
    papermill.execute_notebook(str(NOTEBOOK_DIR / f"{stem}.ipynb"), str(executed), parameters=parameters,
                               kernel_name=kernel, cwd=str(run_dir), progress_bar=False, execution_timeout=180)
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return json.loads((run_dir / f"{stem}.json").read_text())


def untrained_run(run_dir: Path) -> None:
    """A smoke-sized dataset in ``run_dir`` and an untrained tiny model in ``run_dir/model/best``, as notebooks
    05 and 06 expect after 03 and 04 (a notebook must run and report whatever such a model answers)."""
    build_dataset(run_dir, n_faces=PROFILES["smoke"]["dataset_faces"], seed=0)
    samples = load_datasets(run_dir).samples["train"]
    torch.manual_seed(0)
    build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=600).save_pretrained(
        run_dir / "model" / "best")
