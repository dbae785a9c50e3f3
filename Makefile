# The two commands a new user needs: `make demo` and `make test`.
# Both create or update .venv first.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-catalog screenshots clean

# Each step says what it installs and roughly how long it takes, then lists the packages
# as pip collects them. Times measured on this project's CI machine (2 cores, a local
# package mirror); a download over a slow network takes longer.
PIP_SHOW := tee -a $(VENV)/install.log | { grep --line-buffered -E '^Collecting ' || true; } \
	| sed -u -e 's/^Collecting /    /' -e 's/ (from .*//'
PIP_FAILED := { echo "pip failed; the end of $(VENV)/install.log:"; tail -25 $(VENV)/install.log; exit 1; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	@echo "installing into $(VENV) (first time: about a minute with a package mirror, more to download; later only what changed):"
	@# torch first, pinned: the CPU build (the [ml] extra pins the same version)
	@echo "  1/2 torch 2.13.0, CPU build (750 MB installed; 16 s from a local file)"
	@start=$$SECONDS; $(BIN)/python -m pip install 'torch==2.13.0' 2>&1 | $(PIP_SHOW) || $(PIP_FAILED); \
	  echo "      done in $$((SECONDS - start)) s"
	@echo "  2/2 pixelfleet with every extra and the test tools (about 115 packages; 37 s from a mirror)"
	@start=$$SECONDS; $(BIN)/python -m pip install -e '.[all,dev]' 2>&1 | $(PIP_SHOW) || $(PIP_FAILED); \
	  echo "      done in $$((SECONDS - start)) s"
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python -m pixelfleet.cli.demo

# A temp folder of its own per run, removed after it (rm, which needs no recursion for deep
# trees): pytest's clean-up of earlier runs' folders then never has to remove what a test
# made, or a killed run left, there.
test: lint
	@tmp=$$(mktemp -d); $(BIN)/python -m pytest --basetemp="$$tmp/pytest" $(PYTEST_ARGS); \
	  status=$$?; rm -rf "$$tmp"; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/lint-imports

# Refresh the screenshots docs/ shows (the browser tests write to a temp folder otherwise).
screenshots: $(STAMP)
	$(BIN)/python -m pytest -q tests/server/test_browser.py --screenshots docs/screenshots

bench: $(STAMP)
	$(BIN)/python benchmarks/thumbnails.py
	$(BIN)/python benchmarks/labels.py

bench-catalog: $(STAMP)
	$(BIN)/python benchmarks/catalog.py

clean:
	rm -rf $(VENV) demo-output pixelfleet.db build *.egg-info
