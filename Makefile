# Two commands matter: `make run` (demo exporter on :9879) and `make test` (the whole suite).
# They use separate virtualenvs: `make run` needs the four runtime dependencies only (.venv-run,
# ~10 MB), `make test` everything the suite drives (.venv: Helm SDK, linters, validators).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_VENV  := .venv-run
RUN_STAMP := $(RUN_VENV)/.installed
# The runtime dependencies, read from pyproject.toml so that the list lives in one place.
RUNTIME_DEPS = $(shell $(PYTHON) -c 'import tomllib; print(" ".join(repr(d) for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')

.PHONY: run test lint typecheck pytest bench bench-forecast bench-alerts mutation sync-chart dashboards clean

$(STAMP): pyproject.toml
	@echo ">> $(VENV): installing the development dependencies (once; about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# No pip inside the runtime venv when the interpreter's own pip can install into it (pip >= 22.3
# has --python): creating a venv without pip is ten times faster than ensurepip.
$(RUN_STAMP): pyproject.toml
	@echo ">> $(RUN_VENV): installing the runtime dependencies only: $(RUNTIME_DEPS)"
	$(PYTHON) -m venv --without-pip $(RUN_VENV)
	@if $(PYTHON) -m pip --python $(RUN_VENV)/bin/python --version >/dev/null 2>&1; then \
	  $(PYTHON) -m pip --python $(RUN_VENV)/bin/python install --disable-pip-version-check $(RUNTIME_DEPS); \
	else \
	  $(RUN_VENV)/bin/python -m ensurepip --default-pip >/dev/null && \
	  $(RUN_VENV)/bin/python -m pip install --disable-pip-version-check $(RUNTIME_DEPS); \
	fi
	@touch $@

# The package runs from the source tree (python -m exporter): nothing to build or reinstall.
run: $(RUN_STAMP)
	@echo ">> demo exporter on http://localhost:9879/ (Ctrl-C stops it)"
	$(RUN_VENV)/bin/python -m exporter --demo $(ARGS)

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

bench-alerts: $(STAMP)
	$(BIN)/python -m benchmarks.alerts_backtest

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
	rm -rf $(VENV) $(RUN_VENV) .mypy_cache .pytest_cache .ruff_cache .coverage build dist
