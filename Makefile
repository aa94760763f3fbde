# fifa-lab: `make pipeline` and `make test` set up .venv themselves on first use.

PYTHON ?= python3
# The pin picks a CPU wheel where one is provided locally; elsewhere override it,
# e.g. `make setup TORCH_SPEC=torch` for the default (CUDA on Linux) build.
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
PROFILE ?= default
RUN ?= $(PROFILE)
PYTEST_ARGS ?=

BIN := $(VENV)/bin
# The stamp lives inside the venv, so deleting .venv also forgets the setup, and its name carries a
# checksum of TORCH_SPEC, so a different spec re-installs while an unchanged one does not.
STAMP := $(VENV)/.setup-$(firstword $(shell printf '%s' '$(TORCH_SPEC)' | cksum)).stamp

.PHONY: setup pipeline test browser-test lab clean

setup: $(STAMP)

# The kernel goes into the venv, not ~/.local: papermill finds it there and the user's Jupyter
# setup stays untouched.
$(STAMP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install '$(TORCH_SPEC)'
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name fifa-lab --display-name 'Python (fifa-lab)'
	rm -f $(VENV)/.setup-*.stamp
	touch $@

pipeline: $(STAMP)
	$(BIN)/fifa-lab pipeline --profile $(PROFILE) --run-dir runs/$(RUN)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the browser test: notebook 06 in JupyterLab, driven by Playwright with the system chromium
# (apt-get install chromium); its screenshot lands in test-artifacts/browser/.
browser-test: $(STAMP)
	$(BIN)/python -m pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

# Removes generated runs and caches; keeps .venv and data/ (delete .venv by hand to rebuild it).
clean:
	rm -rf runs .pytest_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf
