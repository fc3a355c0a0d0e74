# payrun: `make run` tries it out, `make test` runs every test. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast chaos bench check lint migrate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("payrun needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## everything on this machine: embedded PostgreSQL, simulator, API, dispatcher; Ctrl-C stops it in order
	$(BIN)/payrun dev

test: $(STAMP)  ## the whole suite, on DATABASE_URL/TEST_DATABASE_URL or an embedded PostgreSQL
	$(BIN)/pytest

test-fast: $(STAMP)  ## without the end-to-end tests that start real processes
	$(BIN)/pytest -m 'not e2e'

chaos: $(STAMP)  ## the paused-process tests with many random seeds (CI runs one): PAYRUN_CHAOS_SEEDS="1 2 3"
	PAYRUN_CHAOS_SEEDS="$${PAYRUN_CHAOS_SEEDS:-1 2 3 4 5 6 7 8 9 10}" $(BIN)/pytest tests/e2e/test_paused_processes.py

bench: $(STAMP)  ## benchmarks: each prints a table and a summary line
	$(BIN)/python -m bench

lint: $(STAMP)  ## ruff, the layering contracts of pyproject.toml (lint-imports), and types (mypy --strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

check: lint test

migrate: $(STAMP)
	$(BIN)/payrun migrate

clean:  ## also deletes .data/: the embedded database, the demo key, the simulator's state
	rm -rf $(VENV) .data build *.egg-info .pytest_cache .ruff_cache .import_linter_cache
