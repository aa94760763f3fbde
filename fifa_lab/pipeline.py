"""Run the project notebooks in order with papermill into one run folder.

Each notebook receives ``run_dir``, ``seed`` and ``profile`` plus whichever profile knobs and user
parameters its ``parameters`` cell declares, executes with ``run_dir`` as its working directory, and
writes its own results JSON ``run_dir/<stem>.json``. Notebooks hand work to each other through the run
folder, so once one notebook runs, every later one in the same call runs too. At the end the runner
writes ``run_dir/index.html`` (:mod:`fifa_lab.report`) and logs the durations and key metrics.
"""

from __future__ import annotations

import ast
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import papermill
from IPython.core.inputtransformer2 import TransformerManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient.exceptions import CellTimeoutError
from papermill.exceptions import PapermillExecutionError

from fifa_lab.io import write_json
from fifa_lab.report import METRICS_FILE, metric_summary, notebook_seconds, write_index

NOTEBOOKS: list[str] = [
    "01_fict_exploration",
    "02_forgery_synthesis",
    "03_annotation",
    "04_training",
    "05_age_evaluation",
    "06_interactive_analysis",
]
"""Notebook stems in execution order; a stem whose file does not exist yet is skipped with a note."""

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

PROFILES: dict[str, dict[str, Any]] = {
    # smoke: seconds per notebook, for tests and CI.
    "smoke": {"seed": 0, "n_faces": 2, "reliability_faces": 2, "dataset_faces": 6,
              "train_steps": 4, "batch_size": 2, "eval_every": 2, "eval_samples": 2, "examples": 1,
              "eval_per_task": 2, "max_new_tokens": 16, "expert_budget_s": 2, "robustness_per_task": 1,
              "ablation_faces": 4, "ablation_steps": 2, "ablation_per_task": 1},
    # default: the run `make pipeline` does on a 2-core CPU (training about 15 minutes).
    "default": {"seed": 0, "n_faces": 8, "reliability_faces": 25, "dataset_faces": 1500,
                "train_steps": 1600, "batch_size": 8, "eval_every": 400, "eval_samples": None, "examples": 4,
                "eval_per_task": 40, "max_new_tokens": 256, "expert_budget_s": 120,
                "robustness_per_task": 20, "ablation_faces": 80, "ablation_steps": 50, "ablation_per_task": 8},
    # full: bigger data and longer training, for a workstation or GPU.
    "full": {"seed": 0, "n_faces": 16, "reliability_faces": 100, "dataset_faces": 5000,
             "train_steps": 8000, "batch_size": 16, "eval_every": 1000, "eval_samples": None, "examples": 6,
             "eval_per_task": 200, "max_new_tokens": 256, "expert_budget_s": 900,
             "robustness_per_task": 100, "ablation_faces": 1500, "ablation_steps": 1600,
             "ablation_per_task": 100},
}
"""Profile name -> papermill parameters shared by all notebooks (the one place for profile-sized knobs)."""

KERNEL_NAME = "fifa-lab"
STATE_FILE = "pipeline_state.json"

# Passed to every notebook whether or not its parameters cell declares them.
_ALWAYS = frozenset({"run_dir", "seed", "profile"})
# Set by the runner itself; overriding them would make notebooks write where the runner does not look.
_RESERVED = frozenset({"run_dir", "profile"})


class PipelineError(RuntimeError):
    """A notebook failed or broke the pipeline's contract; the message says which and where to look."""


class _TimeLimits:
    """nbclient's ``timeout_func`` for one notebook: the per-cell limit or what is left of the notebook's.

    Each cell gets whichever is shorter, and the object remembers whether the notebook's limit was the
    one given, so a timeout can be reported as the one the user set.
    """

    def __init__(self, cell_seconds: float | None, notebook_seconds: float | None) -> None:
        self.cell_seconds = cell_seconds
        self.notebook_seconds = notebook_seconds
        # The clock starts now, before the kernel starts: the limit is on the notebook's whole wall time.
        self.deadline = None if notebook_seconds is None else time.monotonic() + notebook_seconds
        self.notebook_limit_applied = False

    def __call__(self, cell: Any) -> float | None:
        if self.deadline is None:
            return self.cell_seconds
        # nbclient reads 0 as "no limit", so a notebook already out of time gives its next cell a moment.
        left = max(self.deadline - time.monotonic(), 0.01)
        self.notebook_limit_applied = not self.cell_seconds or left < self.cell_seconds
        return left if self.notebook_limit_applied else self.cell_seconds


@dataclass
class PipelineResult:
    """What a pipeline run produced, keyed by notebook stem."""

    run_dir: Path
    profile: str
    notebooks: dict[str, Path] = field(default_factory=dict)
    """Executed notebooks (run now or already up to date)."""
    results: dict[str, Path] = field(default_factory=dict)
    """Results JSON written by each notebook."""
    durations: dict[str, float] = field(default_factory=dict)
    """Seconds per notebook executed in this call."""
    skipped: list[str] = field(default_factory=list)
    """Notebooks that were up to date and not re-executed."""
    missing: list[str] = field(default_factory=list)
    """Notebooks in the list whose source does not exist."""
    index: Path | None = None
    """The run's ``index.html``; None when no notebook has been executed."""

    def load_results(self) -> dict[str, Any]:
        """Read every notebook's results JSON."""
        return {name: json.loads(path.read_text()) for name, path in self.results.items()}


def run_pipeline(
    profile: str = "smoke",
    run_dir: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebooks: Sequence[str] | None = None,
    force: bool = False,
    timeout: float | None = None,
    log: Callable[[str], Any] = print,
    notebook_dir: str | os.PathLike[str] | None = None,
    notebook_timeout: float | None = None,
) -> PipelineResult:
    """Execute ``notebooks`` (default: all of :data:`NOTEBOOKS`) in order into ``run_dir``.

    Args:
        profile: key of :data:`PROFILES` giving the shared parameters.
        run_dir: run folder; default ``runs/<profile>`` under the current directory.
        parameters: overrides of profile parameters (``seed``, knobs, anything a notebook declares).
        notebooks: stems to run, in this order.
        force: re-execute notebooks that are up to date.
        timeout: seconds a single cell may run; None = no limit.
        log: receives one progress line at a time, then the summary.
        notebook_dir: where ``<stem>.ipynb`` sources live; default the repository's ``notebooks/``.
        notebook_timeout: seconds one whole notebook may run, kernel start included; None = no limit.

    A notebook is up to date, and skipped, when its executed copy and results JSON are newer than its
    source and it was last run with the same parameters (kept in ``run_dir/pipeline_state.json``).
    Changes to ``fifa_lab`` code are not tracked: use ``force`` after editing the package.

    Once every notebook has run, the executed notebooks are converted to HTML and ``run_dir/index.html``
    links them with their figures and the key metrics (:func:`fifa_lab.report.write_index`).

    Raises:
        PipelineError: a notebook failed or ran out of time (message names the notebook, the cell and
            the partially executed notebook kept for inspection) or did not write its results JSON.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    overrides = dict(parameters or {})
    if reserved := _RESERVED & overrides.keys():
        raise ValueError(f"{', '.join(sorted(reserved))} is set by the runner; pass run_dir/profile instead")

    run_dir = Path(run_dir if run_dir is not None else Path.cwd() / "runs" / profile).resolve()
    source_dir = Path(notebook_dir) if notebook_dir is not None else NOTEBOOK_DIR
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    result = PipelineResult(run_dir=run_dir, profile=profile)

    names = list(NOTEBOOKS if notebooks is None else notebooks)
    sources = {name: source_dir / f"{name}.ipynb" for name in names}
    declared = {name: _declared_parameters(src) for name, src in sources.items() if src.exists()}
    if unused := sorted(overrides.keys() - _ALWAYS - set().union(*declared.values())):
        log(f"note: no notebook in this run declares {', '.join(unused)}; not passed")

    shared = {**PROFILES[profile], **overrides, "run_dir": str(run_dir), "profile": profile}
    kernel = KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"
    upstream_ran = False
    for index, name in enumerate(names, 1):
        tag = f"[{index}/{len(names)}] {name}"
        if name not in declared:
            log(f"{tag}: skipped, {sources[name]} does not exist yet")
            result.missing.append(name)
            continue
        params = {k: v for k, v in shared.items() if k in _ALWAYS or k in declared[name]}
        recorded = _jsonable(params)
        output, results = out_dir / f"{name}.ipynb", run_dir / f"{name}.json"
        fresh = _up_to_date(sources[name], output, results, recorded, state.get(name))
        if fresh and not (force or upstream_ran):
            log(f"{tag}: up to date, skipped (--force re-runs it)")
            result.skipped.append(name)
        else:
            # Forget the old record first so an interrupted run is never mistaken for a finished one.
            state.pop(name, None)
            write_json(state_path, state)
            log(f"{tag}: running")
            start = time.perf_counter()
            limits = _TimeLimits(cell_seconds=timeout, notebook_seconds=notebook_timeout)
            _execute(name, sources[name], output, results, params, run_dir, kernel, limits)
            result.durations[name] = time.perf_counter() - start
            state[name] = {"parameters": recorded}
            write_json(state_path, state)
            upstream_ran = True
            log(f"{tag}: done in {result.durations[name]:.1f} s")
        result.notebooks[name] = output
        result.results[name] = results

    if result.notebooks:
        result.index = write_index(run_dir, result)
    _report(result, log)
    return result


def _declared_parameters(source: Path) -> set[str]:
    """Names assigned at the top level of the notebook's ``parameters`` cell.

    Read with Python's parser (after IPython's magic translation) rather than papermill's line patterns,
    which drop a parameter whose comment holds a quote, colon or semicolon (``eval_per_task = 40  # ...; ...``).
    """
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            names = set()
            for statement in ast.parse(TransformerManager().transform_cell(cell.source)).body:
                if isinstance(statement, ast.Assign):
                    targets = statement.targets
                elif isinstance(statement, ast.AnnAssign):
                    targets = [statement.target]
                else:
                    continue
                names.update(target.id for target in targets if isinstance(target, ast.Name))
            return names
    return set()


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as they round-trip through the state file, so comparisons are like for like."""
    return json.loads(json.dumps(params, default=str))


def _up_to_date(source: Path, output: Path, results: Path, params: dict[str, Any], record: Any) -> bool:
    if record != {"parameters": params} or not (output.exists() and results.exists()):
        return False
    newer_than = source.stat().st_mtime_ns
    return output.stat().st_mtime_ns > newer_than and results.stat().st_mtime_ns > newer_than


def _execute(
    name: str,
    source: Path,
    output: Path,
    results: Path,
    params: dict[str, Any],
    run_dir: Path,
    kernel: str,
    limits: _TimeLimits,
) -> None:
    """Run one notebook; its executed copy replaces ``output`` only when every cell succeeded."""
    partial = output.with_name(f".{name}.running.ipynb")
    failed = output.with_name(f"{name}.failed.ipynb")
    results_before = results.stat().st_mtime_ns if results.exists() else None
    try:
        papermill.execute_notebook(
            str(source),
            str(partial),
            parameters=params,
            kernel_name=kernel,
            cwd=str(run_dir),
            progress_bar=False,
            execution_timeout=limits.cell_seconds,
            timeout_func=limits,
        )
    except Exception as exc:  # papermill, nbclient and the kernel raise many types; all end the run
        kept = None
        if partial.exists():
            os.replace(partial, failed)
            kept = failed
        if isinstance(exc, PapermillExecutionError):
            # The index counts papermill's injected-parameters cell, as the kept notebook does.
            what = f"failed: cell {exc.cell_index} (In [{exc.exec_count}]) raised {exc.ename}: {exc.evalue}"
        elif isinstance(exc, CellTimeoutError):
            what = _timeout_message(limits, kept)
        else:
            what = f"failed: {type(exc).__name__}: {exc}"
        where = "" if kept is None else f"\nThe partially executed notebook is kept for inspection: {kept}"
        raise PipelineError(f"notebook {name} {what}{where}") from exc
    os.replace(partial, output)
    failed.unlink(missing_ok=True)
    if not results.exists() or results.stat().st_mtime_ns == results_before:
        raise PipelineError(
            f"notebook {name} ran but did not write its results {results}; every notebook ends by "
            f"writing <stem>.json into run_dir. Executed notebook: {output}"
        )


def _timeout_message(limits: _TimeLimits, kept: Path | None) -> str:
    """Which limit stopped the notebook and, from the kept notebook, the cell that was running."""
    cell = ""
    if kept is not None:
        nb = nbformat.read(kept, as_version=4)
        # papermill stamps each cell as it starts, in order; the last one stamped is the one stopped.
        started = [i for i, c in enumerate(nb.cells) if c.metadata.get("papermill", {}).get("start_time")]
        if started:
            running = nb.cells[started[-1]]
            count = running.get("execution_count") or " "
            first_line = running.source.strip().splitlines()[0] if running.source.strip() else ""
            cell = f" in cell {started[-1]} (In [{count}]): {first_line}"
    if limits.notebook_limit_applied:
        return f"ran past its time limit of {limits.notebook_seconds:g} s (--notebook-timeout) and was stopped{cell}"
    return f"failed: a cell ran past the limit of {limits.cell_seconds:g} s per cell (--timeout){cell}"


def _report(result: PipelineResult, log: Callable[[str], Any]) -> None:
    """Summarise the run once it is over: durations, key metrics and where to look."""
    if not result.notebooks:
        return
    width = max(map(len, result.notebooks))
    log("durations:")
    for name, executed in result.notebooks.items():
        if name in result.durations:
            log(f"  {name:<{width}}  {result.durations[name]:7.1f} s")
        else:
            last = notebook_seconds(executed)
            log(f"  {name:<{width}}  up to date" + ("" if last is None else f" (last run {last:.1f} s)"))
    log(f"  {'total this run':<{width}}  {sum(result.durations.values()):7.1f} s")
    log(metric_summary(result.run_dir))
    log(f"executed notebooks: {result.run_dir / 'notebooks'}")
    for path in result.results.values():
        log(f"results: {path}")
    if (result.run_dir / METRICS_FILE).exists():
        log(f"metrics: {result.run_dir / METRICS_FILE}")
    if result.index is not None:
        log(f"index (open in a browser): {result.index}")
