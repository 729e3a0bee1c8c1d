# orgplane: `make run` serves a demo on SQLite; `make test` runs the suite on SQLite and PostgreSQL.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ORGPLANE_DATABASE_URL ?= sqlite+aiosqlite:///./orgplane.db

.PHONY: run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Serving needs the package and its runtime dependencies only (not the test tools); pip shows
# its progress while it installs.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing orgplane and what it needs to serve into $(VENV) ..."
	$(BIN)/python -m pip install --progress-bar on -e '.[examples]'
	touch $(RUN_STAMP)

# The demo lets webhooks reach this machine (the tour's receiver listens on 127.0.0.1); set
# ORGPLANE_WEBHOOK_ALLOWED_NETWORKS to change that. A production server starts with none.
DEMO_WEBHOOK_NETWORKS ?= 127.0.0.0/8

run: $(RUN_STAMP)
	$(BIN)/orgplane migrate
	$(BIN)/orgplane bootstrap
	ORGPLANE_WEBHOOK_ALLOWED_NETWORKS="$${ORGPLANE_WEBHOOK_ALLOWED_NETWORKS-$(DEMO_WEBHOOK_NETWORKS)}" \
		$(BIN)/orgplane serve

# The suite runs in TEST_WORKERS processes (pytest-xdist); each has databases of its own.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts examples
	$(BIN)/ruff format --check src tests bench scripts examples
	$(BIN)/mypy
	$(BIN)/mypy scripts

format: $(STAMP)
	$(BIN)/ruff format src tests bench scripts examples
	$(BIN)/ruff check --fix src tests bench scripts examples

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/suite.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
