# tiergate: every target the README names. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help setup tools test test-fast lint cluster-up cluster-down demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.3
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/python ## create .venv with the pinned dependencies

tools: ## build the pinned control-plane binaries into ~/.cache/tiergate-tools (cold: ~25 min)
	scripts/build-tools.sh

test: setup tools ## run every test: unit, golden, gateway, and real control-plane tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## only the tests that need no control plane
	$(BIN)/python -m pytest -m 'not cluster' $(PYTEST_ARGS)

lint: setup ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

cluster-up: setup tools ## start the local control plane; prints its kubeconfig
	$(BIN)/python -m tiergate_operator.devcluster start

cluster-down: ## stop the local control plane
	$(BIN)/python -m tiergate_operator.devcluster stop

clean: cluster-down ## remove the venv and local state (not the tools cache)
	rm -rf $(VENV) .tiergate .mypy_cache .ruff_cache .pytest_cache
