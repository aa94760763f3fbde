"""Notebook 06 in a real browser: JupyterLab on localhost, driven by Playwright with the system Chromium.

The test builds a small run folder (dataset + untrained model), opens
``notebooks/06_interactive_analysis.ipynb`` parameterised for it in JupyterLab, runs all cells from the
Run menu, clicks on the face image (an ipyevents-backed ``ipywidgets.Image``) and checks that the selected
concept and the explanation both change and that the concept is a FICT concept. A screenshot is kept in
``test-artifacts/browser/`` (with the server log, and a ``*-failed.png`` when the test fails).

Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``; Playwright's own browser download is not
used) and the ``playwright`` Python package (the ``dev`` extra). Missing either fails the test; set
``FIFA_LAB_SKIP_BROWSER=1`` to skip it deliberately.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
STEM = "06_interactive_analysis"
SKIP_ENV = "FIFA_LAB_SKIP_BROWSER"

# Generous limits: the CPU is slow and shared; every wait polls a condition, none just sleeps.
SERVER_START_S = 180
PAGE_LOAD_MS = 180_000
RUN_ALL_MS = 900_000
CLICK_RESPONSE_MS = 300_000
# Where to click, as a fraction of the face image: the subject's right eye on the aligned synthetic
# faces (landmarks 36-41 average about (0.39, 0.44) of the image over seeds).
EYE_POINT = (0.39, 0.44)


def _require_browser() -> tuple[Any, str]:
    """Playwright's sync API and the chromium executable, or a skip (opt-out) / a failure saying what is missing."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser test skipped on request")
    problems = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        problems.append("the Python package 'playwright' is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium")
    if chromium is None:
        problems.append("no 'chromium' on PATH (Debian/Ubuntu: apt-get install chromium; .ci/run does this)")
    if problems:
        pytest.fail("browser test cannot run: " + "; ".join(problems)
                    + f". Set {SKIP_ENV}=1 to skip it deliberately.", pytrace=False)
    return sync_playwright, chromium


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings for a quiet, deterministic lab: no news/update toasts, every cell kept in the DOM."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, value in files.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _get(url: str, timeout: float = 5) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


def _log_tail(log_path: Path, chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else "(no log)"


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the test process dies, even when it is killed
    without running its clean-up (a CI timeout); the server then stops its kernels itself."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def jupyter_lab(root_dir: Path, state_dir: Path, log_path: Path) -> Iterator[tuple[str, str]]:
    """Run ``jupyter lab`` on a free localhost port with a random token; yield ``(base_url, token)``.

    Config, runtime, settings and workspace state live under ``state_dir`` so the user's own Jupyter
    setup neither affects nor sees the run. On exit the server is asked to shut down (which stops its
    kernels); whatever is left of the processes it started is terminated, then killed.
    """
    import psutil

    port, token = _free_port(), secrets.token_hex(16)
    settings = state_dir / "settings"
    _write_lab_settings(settings)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state_dir / "config"),
           "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"), "JUPYTER_PLATFORM_DIRS": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("JUPYTER_TOKEN", None)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={state_dir / 'workspaces'}",
               # offline and lean: no PyPI extension manager, no terminals
               "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--allow-root")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
    started: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode} before it answered:\n{_log_tail(log_path)}",
                            pytrace=False)
            try:
                if _get(f"{base}/api/status?token={token}") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s:\n{_log_tail(log_path)}",
                            pytrace=False)
            time.sleep(0.5)
        yield base, token
    finally:
        # Remember the server's descendants (the kernel runs in its own session) before stopping it.
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(server.pid)
            started = {p.pid: p for p in [root, *root.children(recursive=True)]}
        if server.poll() is None:
            with contextlib.suppress(Exception):
                request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
                urllib.request.urlopen(request, timeout=10).close()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(server.pid, signal.SIGKILL)
                    server.wait(timeout=15)
        survivors = [p for p in started.values() if p.pid != server.pid and p.is_running()]
        for process in survivors:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(survivors, timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()


# Run in the page: "done" once every code cell has an execution count, "error: ..." as soon as an output
# shows a traceback (Run All stops there), otherwise null (keep waiting).
CELLS_STATE_JS = """() => {
  const errors = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
  for (const out of document.querySelectorAll(errors)) {
    // IPython's error outputs: "... Traceback (most recent call last)" or, for syntax errors, "Cell In[n], line m".
    const text = out.innerText;
    if (/Traceback \\(most recent call last\\)|^\\s*Cell In\\[\\d+\\], line \\d+/m.test(text)) {
      return 'error: ' + text.slice(-3000);
    }
  }
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.innerText.trim());
  if (prompts.length === 0) return null;
  return prompts.every(p => /^\\[\\d+\\]:?$/.test(p)) ? 'done' : null;
}"""


def open_and_run_all(page: Any, url: str, kernel_display: str = "Python (fifa-lab)") -> None:
    """Open a notebook URL in JupyterLab, pick our kernel if asked, and run all cells from the Run menu."""
    page.goto(url, timeout=PAGE_LOAD_MS)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(state="visible", timeout=PAGE_LOAD_MS)
    # The stored notebooks name the fifa-lab kernel, so normally no dialog appears; when one does
    # (kernel missing from the notebook metadata), choose ours.
    ready = page.locator(f'.jp-NotebookPanel .jp-Toolbar-kernelName:has-text("{kernel_display}"), .jp-Dialog')
    ready.first.wait_for(state="visible", timeout=PAGE_LOAD_MS)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        select = dialog.locator("select")
        if select.count():
            select.first.select_option(label=kernel_display)
        dialog.locator("button.jp-mod-accept").first.click()
        dialog.wait_for(state="detached", timeout=PAGE_LOAD_MS)
    # Wait for the kernel to be up (the toolbar's status indicator reads idle) before running.
    page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(
        state="attached", timeout=PAGE_LOAD_MS)
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu .lm-Menu-item .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    handle = page.wait_for_function(CELLS_STATE_JS, timeout=RUN_ALL_MS, polling=1000)
    state = handle.json_value()
    assert state == "done", f"a cell failed in the browser:\n{state}"


def _text(page: Any, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


def click_face_and_wait(page: Any, point: tuple[float, float] = EYE_POINT) -> tuple[dict[str, str], dict[str, str]]:
    """Click ``point`` (fractions of width, height) on ``.fifa-face``; wait until concept and answer change.

    Returns the ``{"concept", "answer"}`` texts before and after the click.
    """
    face = page.locator("img.fifa-face").first
    face.wait_for(state="visible", timeout=CLICK_RESPONSE_MS)
    face.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=face.element_handle(),
                           timeout=CLICK_RESPONSE_MS)
    before = {"concept": _text(page, ".fifa-concept"), "answer": _text(page, ".fifa-answer")}
    box = face.bounding_box()
    assert box and box["width"] > 20 and box["height"] > 20, f"face image has no usable size: {box}"
    page.mouse.click(box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"])
    try:
        page.wait_for_function(
            """([concept, answer]) => {
                 const c = document.querySelector('.fifa-concept'), a = document.querySelector('.fifa-answer');
                 return c && a && c.innerText.trim() !== concept && a.innerText.trim() !== answer;
               }""",
            arg=[before["concept"], before["answer"]], timeout=CLICK_RESPONSE_MS, polling=500)
    except Exception as error:  # playwright's TimeoutError: say what the page shows instead
        status = page.locator(".fifa-status").first.inner_text() if page.locator(".fifa-status").count() else ""
        raise AssertionError(
            f"clicking the face at {point} did not change both the concept and the answer within "
            f"{CLICK_RESPONSE_MS // 1000} s ({type(error).__name__}). Before: {before}. Now: concept "
            f"{_text(page, '.fifa-concept')!r}, answer {_text(page, '.fifa-answer')!r}, status {status!r}") from error
    after = {"concept": _text(page, ".fifa-concept"), "answer": _text(page, ".fifa-answer")}
    return before, after


def fict_concept_in(text: str) -> str | None:
    """The longest FICT concept name or id (not the root) that occurs in ``text``, or None."""
    from fifa_lab.fict import load_tree

    tree = load_tree()
    lowered = text.lower()
    found = [term for c in tree if c.id != tree.root for term in (c.name.lower(), c.id.lower())
             if re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", lowered)]
    return max(found, key=len) if found else None


def drive_notebook(notebook: Path, screenshot: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Serve ``notebook``'s folder with JupyterLab, run it in Chromium, click the face, save a screenshot."""
    sync_playwright, chromium = _require_browser()
    root = notebook.parent
    state = root.parent / f"{root.name}-jupyter-state"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", "-failed.png", "-console.log"):  # keep only this run's artefacts
        screenshot.with_name(screenshot.stem + suffix).unlink(missing_ok=True)
    log_path = screenshot.with_name(screenshot.stem + "-server.log")
    with jupyter_lab(root, state, log_path) as (base, token), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        try:
            open_and_run_all(page, f"{base}/lab/tree/{notebook.name}?token={token}")
            before, after = click_face_and_wait(page)
            page.locator("img.fifa-face").first.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))
            return before, after
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-failed.png")))
            screenshot.with_name(screenshot.stem + "-console.log").write_text("\n".join(console))
            raise
        finally:
            browser.close()


def make_run_dir_06(tmp_path: Path) -> Path:
    """A run folder with a smoke dataset, an untrained tiny model and notebook 06 parameterised for it."""
    source = ROOT / "notebooks" / f"{STEM}.ipynb"
    assert source.exists(), f"{source} is missing"

    import papermill
    import torch
    from fifa_lab.data.build import build_dataset, load_datasets
    from fifa_lab.model import build_tiny
    from fifa_lab.pipeline import PROFILES

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    build_dataset(run_dir, n_faces=PROFILES["smoke"]["dataset_faces"], seed=0)
    samples = load_datasets(run_dir).samples["train"]
    torch.manual_seed(0)
    build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=600).save_pretrained(
        run_dir / "model" / "best")
    # papermill only injects the parameters cell here; JupyterLab does the executing.
    papermill.execute_notebook(str(source), str(run_dir / f"{STEM}.ipynb"), prepare_only=True,
                               parameters={**PROFILES["smoke"], "run_dir": str(run_dir), "profile": "smoke",
                                           "model_dir": "model/best"},
                               kernel_name="fifa-lab", progress_bar=False)
    return run_dir


@pytest.mark.browser
@pytest.mark.slow
def test_notebook_06_click_in_browser(tmp_path: Path) -> None:
    # In the test body, not a fixture: a missing browser is a test failure (or an explicit skip), and it
    # is reported before the run folder is built.
    _require_browser()
    run_dir = make_run_dir_06(tmp_path)
    before, after = drive_notebook(run_dir / f"{STEM}.ipynb", ARTIFACTS / "notebook06.png")
    assert after["concept"] != before["concept"]
    assert after["answer"] != before["answer"] and after["answer"]
    concept = fict_concept_in(after["concept"])
    assert concept is not None, f"selected concept {after['concept']!r} names no FICT concept"
    # The click went to the eye: a wrong mapping from screen to image pixels would select something else.
    from fifa_lab.fict import load_tree

    tree = load_tree()
    assert "eyes" in [c.id for c in tree.path(tree.get(concept).id)], \
        f"clicked the eye at {EYE_POINT} of the image but selected {after['concept']!r}"
    assert (ARTIFACTS / "notebook06.png").stat().st_size > 10_000
