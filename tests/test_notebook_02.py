"""Smoke run of notebooks/02_forgery_synthesis.ipynb with papermill on the smoke profile."""
from __future__ import annotations

from pathlib import Path

import pytest

from fifa_lab.forge import METHODS
from notebook_runner import assert_stored_clean, run_smoke

STEM = "02_forgery_synthesis"


def test_notebook_stored_clean() -> None:
    assert_stored_clean(STEM)


@pytest.mark.slow
def test_notebook_02_smoke(tmp_path: Path) -> None:
    results = run_smoke(STEM, tmp_path)
    assert {m for methods in results["methods"].values() for m in methods} == set(METHODS)
    # Every method ran on some face, and changed nothing outside its ground-truth mask.
    assert set(results["method_stats"]) == set(METHODS)
    assert all(s["diff_outside"] == 0 and s["diff_inside"] > 0 for s in results["method_stats"].values())
    psnr = [results["jpeg_psnr_db"][q] for q in sorted(results["jpeg_psnr_db"], key=int, reverse=True)]
    assert psnr == sorted(psnr, reverse=True)  # harsher JPEG, lower PSNR
    assert {f"02_gallery_{c}.png" for c in ("FS", "FR", "FE", "EFS")} <= set(results["figures"])
