# The two commands a new user needs: `make demo` and `make test`.
# Both create or update .venv first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing pixelfleet and its test tools into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python -m pixelfleet.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python benchmarks/thumbnails.py

clean:
	rm -rf $(VENV) demo-output pixelfleet.db build *.egg-info
