# Two commands matter: `make run` (demo exporter on :9879) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-forecast mutation sync-chart dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/x-usage-exporter --demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.performance

bench-forecast: $(STAMP)
	$(BIN)/python -m benchmarks.forecast

# Mutation testing of the pure modules (slow, not in CI): docs/mutation.md has the last scores.
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation billing parse snapshot forecast

# The chart cannot read outside its directory: it carries copies that a test keeps equal.
sync-chart:
	cp alerts/rules.yml alerts/thresholds.yml helm/x-usage-exporter/files/alerts/
	rm -f helm/x-usage-exporter/files/dashboards/*.json
	cp grafana/dashboards/*.json helm/x-usage-exporter/files/dashboards/

dashboards: $(STAMP)
	$(BIN)/python grafana/generate.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage build dist
