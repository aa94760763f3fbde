"""The run's HTML index and the terminal metric summary, on a hand-made run folder (no kernel needed)."""

from __future__ import annotations

import json
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from fifa_lab.pipeline import PipelineResult
from fifa_lab.report import METRICS_FILE, format_value, metric_summary, notebook_seconds, write_index

HOSTILE = "<script>alert('x')</script> & co"
"""Text that must come out of the index escaped, never as markup."""


class _Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value is not None]


def links_of(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def executed_notebook(path: Path, seconds: float, text: str) -> Path:
    """A notebook as papermill leaves it: outputs and papermill's duration in the metadata."""
    cell = new_code_cell("print('hello')", execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    nb = new_notebook(cells=[new_markdown_cell("# A notebook"), cell])
    nb.metadata["papermill"] = {"duration": seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def figure(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 8), "orange").save(path)


@pytest.fixture
def run(tmp_path: Path) -> PipelineResult:
    """A run folder: 01 ran now and lists its figures; 02 was up to date and lists none; 06 is missing."""
    run_dir = tmp_path / "run"
    first, second = "01_a", "02_b & c"
    notebooks = {first: executed_notebook(run_dir / "notebooks" / f"{first}.ipynb", 1.0, HOSTILE),
                 second: executed_notebook(run_dir / "notebooks" / f"{second}.ipynb", 12.0, "ok")}
    figure(run_dir / "figures" / "01_plot one.png")
    figure(run_dir / "figures" / "02_gallery.png")
    figure(run_dir / "figures" / "03_not_ours.png")
    (run_dir / f"{first}.json").write_text(json.dumps({"figures": ["01_plot one.png", "01_never_written.png"]}))
    (run_dir / f"{second}.json").write_text(json.dumps({"n": 1}))
    metrics = {"Det": {"acc": 0.75, "auc": math.nan}, "AGE": {"miou": None, "meteor": 0.3125},
               "bars": {"Det acc": {"value": 0.75, "bar": 0.95, "judged": True},
                        "AGE METEOR": {"value": 0.40, "bar": 0.35, "judged": True},
                        "AGE mIoU": {"value": None, "bar": 0.45, "judged": True},
                        HOSTILE: {"value": 1.2, "bar": 0.9, "judged": False}}}
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics))  # files from before write_json wrote null hold NaN
    return PipelineResult(run_dir=run_dir, profile="smoke", notebooks=notebooks,
                          results={s: run_dir / f"{s}.json" for s in notebooks},
                          durations={first: 1.5}, skipped=[second], missing=["06_later"])


def test_index_links_are_relative_and_exist_after_moving_the_folder(run: PipelineResult, tmp_path: Path) -> None:
    index = write_index(run.run_dir, run)
    assert index == run.run_dir / "index.html"
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(run.run_dir, moved)

    links = [unquote(link) for link in links_of(moved / "index.html")]
    assert links, "the index links nothing"
    for link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), link
        assert (moved / parts.path).is_file(), link
    assert {"html/01_a.html", "html/02_b & c.html", "notebooks/01_a.ipynb", "01_a.json", METRICS_FILE} <= set(links)
    # 01 lists its figures (one of them never written); 02 lists none and gets the PNGs carrying its number.
    figures = sorted({link for link in links if link.startswith("figures/")})
    assert figures == ["figures/01_plot one.png", "figures/02_gallery.png"]
    page = (moved / "html" / "01_a.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert" in page  # the notebook's own output, converted by nbconvert


def test_index_shows_status_duration_metrics_and_escapes_text(run: PipelineResult) -> None:
    page = write_index(run.run_dir, run).read_text(encoding="utf-8")
    assert "<b>smoke</b>" in page
    assert "ran in 1.5 s" in page and "up to date, not re-run in 12.0 s" in page
    assert "Not written yet: 06_later" in page
    assert "02_b &amp; c" in page and "02_b & c" not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "<td>Det acc</td><td class=\"num\">0.750</td>" in page
    assert "<td>Det AUC</td><td class=\"num\">n/a</td>" in page  # NaN
    assert "<td>AGE mIoU</td><td class=\"num\">n/a</td>" in page  # None
    assert "<td>RSeg mIoU</td><td class=\"num\">n/a</td>" in page  # task absent
    assert "<td class=\"missed\">MISSED</td>" in page and "<td class=\"met\">met</td>" in page
    assert ">not judged</td>" in page


def test_notebook_pages_are_converted_only_when_stale(run: PipelineResult) -> None:
    write_index(run.run_dir, run)
    page = run.run_dir / "html" / "01_a.html"
    before = page.stat().st_mtime_ns
    write_index(run.run_dir, run)
    assert page.stat().st_mtime_ns == before
    executed = run.notebooks["01_a"]
    os.utime(executed, ns=(before + 10**9, before + 10**9))
    write_index(run.run_dir, run)
    assert page.stat().st_mtime_ns > before
    assert not list((run.run_dir / "html").glob(".*"))  # atomic writes leave no temporaries


def test_index_without_metrics_says_where_they_come_from(run: PipelineResult) -> None:
    (run.run_dir / METRICS_FILE).unlink()
    page = write_index(run.run_dir, run).read_text(encoding="utf-8")
    assert "No metrics.json yet" in page and "Key metrics" not in page


def summary_values(text: str) -> dict[str, str]:
    """``label -> value`` of the key-metric lines of :func:`metric_summary` (before the quality bars)."""
    values = {}
    for line in text.split("quality bars:")[0].splitlines():
        if line.startswith("  "):
            label, _, rest = line.strip().partition("  ")
            values[label] = rest.strip()
    return values


def test_summary_reads_missing_and_nan_metrics_as_not_available(run: PipelineResult) -> None:
    text = metric_summary(run.run_dir)
    values = summary_values(text)
    assert values["Det acc"] == "0.750" and values["AGE METEOR"] == "0.312"
    assert values["Det AUC"] == "n/a" and values["AGE mIoU"] == "n/a"
    assert values["Cls acc"] == "n/a" and values["TOE METEOR"] == "n/a" and values["RSeg mIoU"] == "n/a"
    assert values["AGE grounding consistency"] == "n/a"
    bars = text.split("quality bars:")[1]
    assert "0.750  (bar 0.950)  MISSED" in bars and "0.400  (bar 0.350)  met" in bars
    assert "n/a  (bar 0.450)  n/a" in bars and "not judged" in bars


def test_summary_of_a_run_without_metrics(tmp_path: Path) -> None:
    assert "no metrics.json" in metric_summary(tmp_path)
    (tmp_path / METRICS_FILE).write_text(json.dumps({"meta": {"split": "test"}}))
    text = metric_summary(tmp_path)
    assert all(value == "n/a" for value in summary_values(text).values())
    assert "quality bars" not in text


def test_values_and_durations() -> None:
    assert format_value(1) == "1.000" and format_value(0.12345) == "0.123"
    assert {format_value(v) for v in (None, math.nan, math.inf, True, "0.5", [1])} == {"n/a"}


def test_duration_is_read_from_papermill_metadata(tmp_path: Path) -> None:
    assert notebook_seconds(executed_notebook(tmp_path / "a.ipynb", 3.25, "")) == 3.25
    nbformat.write(new_notebook(), tmp_path / "plain.ipynb")
    assert notebook_seconds(tmp_path / "plain.ipynb") is None
    assert notebook_seconds(tmp_path / "absent.ipynb") is None


def test_metrics_file_name_matches_the_runner() -> None:
    from fifa_lab.eval.runner import METRICS_FILE as RUNNER_METRICS_FILE  # loads torch: seconds

    assert METRICS_FILE == RUNNER_METRICS_FILE
