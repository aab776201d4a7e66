# Every target works from a fresh clone; `make install` creates .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := check
.PHONY: install demo test test-fast lint check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The bench extra (Celery) too: the test suite smoke-tests the benchmark runner.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"

# Runs sample jobs through the full stack in embedded mode (no services needed).
demo: install
	$(BIN)/taatom-jobs demo

# The whole suite, slow tiers included, against real Redis (127.0.0.1:6379).
test: install
	./scripts/ensure-services.sh
	$(BIN)/python -m pytest

test-fast: install
	./scripts/ensure-services.sh
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

# The whole benchmark suite (raw Dramatiq, Celery, our stack; per-job benchmarks);
# regenerates BENCHMARKS.md. Needs redis-server on PATH.
bench: install
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .taatom-jobs *.egg-info
