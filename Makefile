# The two commands a new user needs: `make demo` and `make test`.
# Both create or update .venv first.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-catalog screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	@echo "installing pixelfleet and its test tools into $(VENV) ..."
	@# torch first, pinned: the CPU build (the [ml] extra pins the same version)
	@$(BIN)/python -m pip install --quiet 'torch==2.13.0' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@# (pip's notes about this machine's unused package folders are filtered out)
	@$(BIN)/python -m pip install --quiet -e '.[all,dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python -m pixelfleet.cli.demo

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
