"""The notebook pipeline runner and its CLI, on throw-away notebooks."""

from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from fifa_lab import cli
from fifa_lab.pipeline import PROFILES, PipelineError, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def write_notebook(
    folder: Path, stem: str, body: str = "", parameters: str = "", writes_results: bool = True
) -> Path:
    """A notebook with a ``parameters`` cell, an optional body and a cell writing ``<stem>.json``."""
    params = new_code_cell(f"run_dir = '.'\nseed = 0\nprofile = 'smoke'\nx = 1\n{parameters}")
    params.metadata["tags"] = ["parameters"]
    cells = [params] + ([new_code_cell(body)] if body else [])
    if writes_results:
        cells.append(new_code_cell(
            "import json, pathlib\n"
            f"pathlib.Path(run_dir, '{stem}.json').write_text("
            "json.dumps({'run_dir': run_dir, 'seed': seed, 'profile': profile, 'x': x}))"
        ))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def nb_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    return folder


@pytest.mark.slow
def test_outputs_results_and_overrides_land_in_run_dir(nb_dir: Path, tmp_path: Path) -> None:
    write_notebook(nb_dir, "01_a")
    # A comment papermill's parameter patterns cannot read still declares y.
    write_notebook(nb_dir, "02_b", body="x = x + y", parameters='y = 0  # e.g. "3": added to x; None = 0')
    lines: list[str] = []
    run_dir = tmp_path / "run"
    result = run_pipeline(
        "smoke", run_dir=run_dir, parameters={"seed": 7, "x": 2.5, "y": 4, "typo": 1},
        notebooks=["01_a", "02_b"], notebook_dir=nb_dir, log=lines.append,
    )
    assert result.notebooks == {s: run_dir.resolve() / "notebooks" / f"{s}.ipynb" for s in ("01_a", "02_b")}
    assert all(path.exists() for path in result.notebooks.values())
    assert set(result.durations) == {"01_a", "02_b"} and not result.skipped
    expected = {"run_dir": str(run_dir.resolve()), "seed": 7, "profile": "smoke", "x": 2.5}
    assert result.load_results() == {"01_a": expected, "02_b": {**expected, "x": 6.5}}
    assert not list((run_dir / "notebooks").glob(".*"))  # no temporary files left behind
    assert "note: no notebook in this run declares typo; not passed" in lines
    assert any("01_a: done in" in line for line in lines)
    assert any(str(run_dir.resolve() / "02_b.json") in line for line in lines)
    assert result.index == run_dir.resolve() / "index.html" and result.index.exists()
    assert (run_dir / "html" / "02_b.html").exists()


@pytest.mark.slow
def test_up_to_date_notebooks_are_skipped_until_stale(nb_dir: Path, tmp_path: Path) -> None:
    write_notebook(nb_dir, "01_a")
    write_notebook(nb_dir, "02_b", parameters="y = 0")
    kwargs = dict(
        run_dir=tmp_path / "run", notebooks=["01_a", "02_b"], notebook_dir=nb_dir, log=lambda _: None
    )

    assert set(run_pipeline(**kwargs).durations) == {"01_a", "02_b"}
    again = run_pipeline(**kwargs)
    assert again.skipped == ["01_a", "02_b"] and not again.durations
    assert set(again.results) == {"01_a", "02_b"}

    # A changed parameter re-runs only the notebooks that declare it ...
    changed = run_pipeline(**kwargs, parameters={"y": 3})
    assert changed.skipped == ["01_a"] and set(changed.durations) == {"02_b"}

    # ... an edited source re-runs it and everything after it, and force re-runs all.
    write_notebook(nb_dir, "01_a")
    assert set(run_pipeline(**kwargs, parameters={"y": 3}).durations) == {"01_a", "02_b"}
    assert set(run_pipeline(**kwargs, parameters={"y": 3}, force=True).durations) == {"01_a", "02_b"}


@pytest.mark.slow
def test_failing_cell_names_notebook_and_cell(nb_dir: Path, tmp_path: Path) -> None:
    write_notebook(nb_dir, "01_a", body="raise ValueError('broken gallery')")
    run_dir = tmp_path / "run"
    with pytest.raises(PipelineError) as info:
        run_pipeline(run_dir=run_dir, notebooks=["01_a"], notebook_dir=nb_dir, log=lambda _: None)
    message = str(info.value)
    failed = run_dir.resolve() / "notebooks" / "01_a.failed.ipynb"
    # Cell 2: the body, after the parameters cell and papermill's injected-parameters cell.
    assert message.startswith("notebook 01_a failed: cell 2 (In [")
    assert "ValueError: broken gallery" in message
    assert str(failed) in message and failed.exists()
    assert not (run_dir / "notebooks" / "01_a.ipynb").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limits", "stopped_by"),
    [({"notebook_timeout": 8}, "01_a ran past its time limit of 8 s (--notebook-timeout) and was stopped in cell 2"),
     ({"timeout": 2, "notebook_timeout": 60}, "01_a failed: a cell ran past the limit of 2 s per cell (--timeout) "
                                               "in cell 2")],
    ids=["notebook", "cell"],
)
def test_time_limits_stop_the_notebook_and_name_it(
    nb_dir: Path, tmp_path: Path, limits: dict, stopped_by: str
) -> None:
    write_notebook(nb_dir, "01_a", body="import time\ntime.sleep(120)")
    run_dir = tmp_path / "run"
    start = time.monotonic()
    with pytest.raises(PipelineError) as info:
        run_pipeline(run_dir=run_dir, notebooks=["01_a"], notebook_dir=nb_dir, log=lambda _: None, **limits)
    assert time.monotonic() - start < 60  # stopped, not waited out
    message = str(info.value)
    # Cell 2: the sleeping body, after the parameters cell and papermill's injected-parameters cell.
    assert message.startswith(f"notebook {stopped_by} (In [")
    assert "import time" in message
    failed = run_dir.resolve() / "notebooks" / "01_a.failed.ipynb"
    assert str(failed) in message and failed.exists()


@pytest.mark.slow
def test_notebook_without_results_json_is_an_error(nb_dir: Path, tmp_path: Path) -> None:
    write_notebook(nb_dir, "01_a", writes_results=False)
    with pytest.raises(PipelineError, match="01_a ran but did not write its results"):
        run_pipeline(run_dir=tmp_path / "run", notebooks=["01_a"], notebook_dir=nb_dir, log=lambda _: None)


FIGURE_AND_METRICS = """\
import json, pathlib
from PIL import Image
pathlib.Path(run_dir, 'figures').mkdir(exist_ok=True)
Image.new('RGB', (16, 8), 'orange').save(pathlib.Path(run_dir, 'figures', '01_plot.png'))
metrics = {'Det': {'acc': 0.5, 'auc': float('nan')}, 'bars': {'Det acc': {'value': 0.5, 'bar': 0.95, 'judged': True}}}
pathlib.Path(run_dir, 'metrics.json').write_text(json.dumps(metrics))
"""


@pytest.mark.slow
def test_cli_pipeline_ends_with_summary_and_index(
    nb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_notebook(nb_dir, "01_fict_exploration", body=FIGURE_AND_METRICS)
    run_dir = tmp_path / "run"
    argv = ["pipeline", "--profile", "smoke", "--run-dir", str(run_dir), "--notebook-dir", str(nb_dir),
            "--notebook-timeout", "120"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/6] 01_fict_exploration: running" in out and "02_forgery_synthesis: skipped" in out
    assert re.search(r"^durations:\n  01_fict_exploration +\d+\.\d s\n  total this run +\d+\.\d s$", out, re.M)
    assert re.search(r"^  Det acc +0\.500$", out, re.M) and re.search(r"^  Det AUC +n/a$", out, re.M)
    assert re.search(r"^  AGE mIoU +n/a$", out, re.M)
    assert re.search(r"^quality bars:\n  Det acc +0\.500 +\(bar 0\.950\) +MISSED$", out, re.M)
    index = run_dir.resolve() / "index.html"
    assert f"index (open in a browser): {index}" in out
    page = index.read_text(encoding="utf-8")
    assert 'href="html/01_fict_exploration.html"' in page and 'src="figures/01_plot.png"' in page
    assert (run_dir / "html" / "01_fict_exploration.html").exists()

    assert cli.main(argv) == 0  # nothing changed: skipped, and the summary says how long it took last time
    assert re.search(r"^  01_fict_exploration +up to date \(last run \d+\.\d s\)$", capsys.readouterr().out, re.M)


@pytest.mark.slow
def test_readme_papermill_command_runs_notebook_01_on_smoke(tmp_path: Path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    documented = next(block for block in blocks if "papermill notebooks/01_fict_exploration.ipynb" in block)
    # Run it verbatim from a scratch folder that sees the repository's notebooks and venv, so the run
    # folder it makes lands in tmp_path.
    (tmp_path / "notebooks").symlink_to(REPO / "notebooks")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    done = subprocess.run(["bash", "-euc", documented], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [results] = (tmp_path / "runs").glob("*/01_fict_exploration.json")
    run_dir = results.parent
    record = json.loads(results.read_text())
    assert record["n_faces"] == PROFILES["smoke"]["n_faces"] and record["figures"]  # the smoke knob, passed by -p
    assert all((run_dir / "figures" / name).is_file() for name in record["figures"])
    executed = nbformat.read(run_dir / "notebooks" / "01_fict_exploration.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'profile = "smoke"' in injected.source and 'run_dir = "."' in injected.source


def test_missing_notebooks_are_skipped_with_a_note(nb_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_pipeline(
        run_dir=tmp_path / "run", notebooks=["09_later"], notebook_dir=nb_dir, log=lines.append
    )
    assert result.missing == ["09_later"] and not result.notebooks
    assert any("09_later" in line and "does not exist yet" in line for line in lines)


def test_runner_owns_run_dir_and_profile(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run_dir"):
        run_pipeline(run_dir=tmp_path, parameters={"run_dir": "elsewhere"})
    with pytest.raises(ValueError, match="unknown profile"):
        run_pipeline("huge", run_dir=tmp_path)


def test_cli_parses_parameters_as_yaml_scalars() -> None:
    args = cli.build_parser().parse_args([
        "pipeline", "-p", "a=1", "-p", "b=x", "-p", "c=true", "-p", "lr=1e-3", "-p", "s=[1, 2]",
        "--only", "01_fict_exploration",
    ])
    assert dict(args.parameters) == {"a": 1, "b": "x", "c": True, "lr": 0.001, "s": "[1, 2]"}
    assert args.profile == "default" and args.only == ["01_fict_exploration"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["pipeline", "-p", "novalue"])


def test_cli_train_eval_samples_is_a_count_or_all() -> None:
    parse = lambda *extra: cli.build_parser().parse_args(["train", "--run-dir", "r", *extra])  # noqa: E731
    assert parse().eval_samples is None  # the default profile scores the whole validation split
    assert parse("--eval-samples", "all").eval_samples is None and parse("--eval-samples", "32").eval_samples == 32
    for bad in ("0", "some"):
        with pytest.raises(SystemExit):
            parse("--eval-samples", bad)


def test_cli_reports_pipeline_error_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict = {}

    def fail(**kwargs: object) -> None:
        seen.update(kwargs)
        raise PipelineError("notebook 03_annotation failed: cell 2")

    monkeypatch.setattr(cli, "run_pipeline", fail)
    status = cli.main(
        ["pipeline", "--profile", "smoke", "--only", "03_annotation", "01_fict_exploration", "--timeout", "60"]
    )
    assert status == 1
    assert "notebook 03_annotation failed: cell 2" in capsys.readouterr().err
    assert seen["notebooks"] == ["01_fict_exploration", "03_annotation"]
    assert seen["profile"] == "smoke" and seen["timeout"] == 60


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    listed = {req for req in pip if not req.startswith("-")}
    torch_spec = re.search(r"^TORCH_SPEC \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert torch_spec in listed
    assert listed - {torch_spec} == {req for req in wanted if not req.startswith("torch")}
