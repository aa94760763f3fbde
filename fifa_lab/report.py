"""The end products of a pipeline run: an HTML index of its notebooks and figures, and a metric summary.

:func:`write_index` converts each executed notebook to HTML (``run_dir/html/<stem>.html``) and writes
``run_dir/index.html``: the profile and date, per notebook a link to its HTML page, its status and
duration and thumbnails of the figures it wrote, and the key metrics and quality bars of
``metrics.json``. Every link is relative to the run folder, so the folder can be moved, zipped or served
as it is. :func:`metric_summary` is the same key metrics as plain text for the terminal.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fifa_lab.io import atomic_path

if TYPE_CHECKING:  # the pipeline imports this module to write its index
    from fifa_lab.pipeline import PipelineResult

INDEX_FILE = "index.html"
HTML_DIR = "html"
FIGURES_DIR = "figures"
# The file fifa_lab.eval.runner (METRICS_FILE) and notebook 05 write; not imported from there because that
# module loads torch, which the runner and the CLI do not otherwise need.
METRICS_FILE = "metrics.json"

KEY_METRICS: list[tuple[str, str, str]] = [
    ("Det acc", "Det", "acc"),
    ("Det AUC", "Det", "auc"),
    ("Cls acc", "Cls", "acc"),
    ("Loc mIoU", "Loc", "miou"),
    ("AGE METEOR", "AGE", "meteor"),
    ("AGE mIoU", "AGE", "miou"),
    ("AGE mask recall", "AGE", "mask_recall"),
    ("AGE grounding consistency", "AGE", "grounding_consistency"),
    ("TOE METEOR", "TOE", "meteor"),
    ("RSeg mIoU", "RSeg", "miou"),
]
"""(label, task, metric) of the numbers a run is judged by, in the order they are shown."""

NOT_AVAILABLE = "n/a"


def read_metrics(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``run_dir/metrics.json`` as a dict, or None before a notebook has written it."""
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def format_value(value: Any) -> str:
    """A metric as three decimals; missing, None, NaN and non-numbers read ``n/a``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NOT_AVAILABLE
    return f"{value:.3f}"


def key_metrics(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) for each of :data:`KEY_METRICS`, ``n/a`` where a task or metric is absent."""
    rows = []
    for label, task, key in KEY_METRICS:
        values = metrics.get(task)
        rows.append((label, format_value(values.get(key) if isinstance(values, Mapping) else None)))
    return rows


def bar_verdict(entry: Mapping[str, Any]) -> str:
    """``met``, ``MISSED``, ``n/a`` (no value) or ``not judged`` for one entry of metrics.json's ``bars``.

    Notebook 05 marks a bar ``judged: false`` when its comparison says nothing (an expert at chance).
    """
    if not entry.get("judged", True):
        return "not judged"
    value, bar = entry.get("value"), entry.get("bar")
    if format_value(value) == NOT_AVAILABLE or format_value(bar) == NOT_AVAILABLE:
        return NOT_AVAILABLE
    return "met" if value >= bar else "MISSED"


def quality_bars(metrics: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(name, value, bar, verdict) for each quality bar notebook 05 recorded; empty when there are none."""
    bars = metrics.get("bars")
    if not isinstance(bars, Mapping):
        return []
    return [(str(name), format_value(entry.get("value")), format_value(entry.get("bar")), bar_verdict(entry))
            for name, entry in bars.items() if isinstance(entry, Mapping)]


def metric_summary(run_dir: str | os.PathLike[str]) -> str:
    """The key metrics and quality-bar verdicts of ``run_dir/metrics.json`` as aligned lines of text."""
    metrics = read_metrics(run_dir)
    if metrics is None:
        return f"key metrics: no {METRICS_FILE} in {run_dir} yet (notebook 05 writes it)"
    rows = key_metrics(metrics)
    width = max(len(label) for label, _ in rows)
    lines = ["key metrics:"] + [f"  {label:<{width}}  {value:>6}" for label, value in rows]
    if bars := quality_bars(metrics):
        width = max(len(name) for name, *_ in bars)
        lines.append("quality bars:")
        lines += [f"  {name:<{width}}  {value:>6}  (bar {bar})  {verdict}" for name, value, bar, verdict in bars]
    return "\n".join(lines)


def notebook_seconds(executed: str | os.PathLike[str]) -> float | None:
    """How long an executed notebook took, from the metadata papermill records in it (None if absent)."""
    try:
        seconds = json.loads(Path(executed).read_text())["metadata"]["papermill"]["duration"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def notebook_figures(run_dir: str | os.PathLike[str], stem: str) -> list[Path]:
    """The figures notebook ``stem`` wrote, as paths relative to ``run_dir``, in the notebook's order.

    A notebook lists its figures under ``"figures"`` in its results JSON, as names in ``figures/`` (or
    paths relative to the run folder). A notebook whose results do not list them gets the PNGs in
    ``figures/`` that carry its number, the prefix every project notebook gives its figure names.
    """
    run_dir = Path(run_dir)
    results = run_dir / f"{stem}.json"
    try:
        listed = json.loads(results.read_text()).get("figures")
    except (OSError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        number = stem.split("_", 1)[0]
        return sorted(p.relative_to(run_dir) for p in (run_dir / FIGURES_DIR).glob(f"{number}_*.png"))
    found = []
    for name in map(str, listed):
        for candidate in (Path(FIGURES_DIR) / name, Path(name)):
            if not candidate.is_absolute() and (run_dir / candidate).is_file():
                found.append(candidate)
                break
    return found


def convert_notebook(executed: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Write ``executed`` as a self-contained HTML page at ``target``, unless it is already newer.

    Uses nbconvert's lab template without executing anything; figures in outputs stay embedded.
    """
    executed, target = Path(executed), Path(target)
    if target.exists() and target.stat().st_mtime_ns > executed.stat().st_mtime_ns:
        return target
    # lazy: nbconvert takes a second to import, which `fifa-lab train` and other commands do not need
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    with atomic_path(target) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return target


def write_index(run_dir: str | os.PathLike[str], result: PipelineResult) -> Path:
    """Convert the executed notebooks of ``result`` to HTML and write ``run_dir/index.html``; return its path."""
    run_dir = Path(run_dir)
    sections = []
    for stem, executed in result.notebooks.items():
        page = convert_notebook(executed, run_dir / HTML_DIR / f"{stem}.html")
        if stem in result.durations:
            status, seconds = "ran", result.durations[stem]
        else:
            status, seconds = "up to date, not re-run", notebook_seconds(executed)
        sections.append(_notebook_section(run_dir, stem, page, executed, status, seconds))
    if result.missing:
        sections.append(f"<p class=\"note\">Not written yet: {_text(', '.join(result.missing))}</p>")
    metrics = read_metrics(run_dir)
    title = f"fifa-lab run {run_dir.name}"
    written = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    metrics_link = "" if metrics is None else f" · <a href=\"{_href(Path(METRICS_FILE))}\">{METRICS_FILE}</a>"
    document = "\n".join([
        "<!DOCTYPE html>",
        "<html lang=\"en\">",
        "<head>",
        "<meta charset=\"utf-8\">",
        f"<title>{_text(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_text(title)}</h1>",
        f"<p>Profile <b>{_text(result.profile)}</b> · written {_text(written)}{metrics_link}</p>",
        _metrics_section(metrics),
        "<h2>Notebooks</h2>",
        *sections,
        "</body>",
        "</html>",
        "",
    ])
    index = run_dir / INDEX_FILE
    with atomic_path(index) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return index


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}section{border-top:1px solid #ddd;padding:.5em 0}"
    ".figures img{height:9em;margin:.2em;border:1px solid #ddd}.note{color:#666}"
    ".missed{color:#b00;font-weight:bold}.met{color:#070}"
)
_VERDICT_CLASS = {"met": " class=\"met\"", "MISSED": " class=\"missed\""}
"""The class attribute that colours a verdict cell; other verdicts stay plain."""


def _text(value: Any) -> str:
    """Any text shown on the page, escaped."""
    return html.escape(str(value), quote=True)


def _href(relative: Path) -> str:
    """A link to a file of the run folder: relative, URL-quoted and escaped for an attribute."""
    return html.escape(quote(relative.as_posix()), quote=True)


def _notebook_section(
    run_dir: Path, stem: str, page: Path, executed: Path, status: str, seconds: float | None
) -> str:
    duration = "" if seconds is None else f" in {seconds:.1f} s"
    figures = notebook_figures(run_dir, stem)
    thumbnails = "".join(
        f"<a href=\"{_href(figure)}\"><img src=\"{_href(figure)}\" alt=\"{_text(figure.name)}\" "
        f"title=\"{_text(figure.name)}\" loading=\"lazy\"></a>"
        for figure in figures
    )
    return "\n".join([
        "<section>",
        f"<h3><a href=\"{_href(page.relative_to(run_dir))}\">{_text(stem)}</a></h3>",
        f"<p>{_text(status)}{_text(duration)} · <a href=\"{_href(executed.relative_to(run_dir))}\">executed "
        f"notebook</a> · <a href=\"{_href(Path(f'{stem}.json'))}\">results</a></p>",
        f"<div class=\"figures\">{thumbnails}</div>" if figures else "<p class=\"note\">No figures.</p>",
        "</section>",
    ])


def _metrics_section(metrics: Mapping[str, Any] | None) -> str:
    if metrics is None:
        return f"<p class=\"note\">No {METRICS_FILE} yet: notebook 05 writes it.</p>"
    rows = "".join(f"<tr><td>{_text(label)}</td><td class=\"num\">{_text(value)}</td></tr>"
                   for label, value in key_metrics(metrics))
    parts = ["<h2>Key metrics</h2>", f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"]
    if bars := quality_bars(metrics):
        rows = "".join(
            f"<tr><td>{_text(name)}</td><td class=\"num\">{_text(value)}</td><td class=\"num\">{_text(bar)}</td>"
            f"<td{_VERDICT_CLASS.get(verdict, '')}>{_text(verdict)}</td></tr>"
            for name, value, bar, verdict in bars
        )
        parts += ["<h2>Quality bars</h2>",
                  f"<table><tr><th>bar</th><th>value</th><th>needed</th><th>verdict</th></tr>{rows}</table>"]
    return "\n".join(parts)
