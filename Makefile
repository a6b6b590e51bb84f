# `make run` serves on SQLite; `make test` runs the checks and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run demo test lint format openapi bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,dev]"
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/radar migrate
	@echo
	@echo "  Defection Radar on http://$(HOST):$(PORT)  (API docs: http://$(HOST):$(PORT)/docs)"
	@echo "  Get an API key (another terminal):"
	@echo "    $(BIN)/radar keys create --name till-1 --scope ingest --scope read --scope manage"
	@echo "  Or watch a synthetic chain stream through a fresh service: make demo"
	@echo
	RADAR_MIGRATE_ON_START=false $(BIN)/radar serve --host $(HOST) --port $(PORT)

# A synthetic chain streamed through a fresh service at accelerated time (about a minute).
demo: $(VENV)/.run-installed
	$(BIN)/radar demo --port $(PORT)

test: lint browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The dashboard test drives Debian's headless Chromium (installed once, as root or via sudo).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "installing Chromium and ChromeDriver for the dashboard test"; \
		  $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; }

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.test-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: $(VENV)/.run-installed
	$(BIN)/radar openapi --out openapi/openapi.json

bench: $(VENV)/.test-installed
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
