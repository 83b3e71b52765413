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

# One package per deployable; each declares its own pinned runtime dependencies.
PACKAGES := contract operator gateway_image cli devkit

$(BIN)/python: pyproject.toml $(addsuffix /pyproject.toml,$(PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.3
	$(BIN)/pip install --quiet $(addprefix -e ./,$(PACKAGES)) --group dev
	touch $@

setup: $(BIN)/python ## create .venv: the five packages (editable) and the pinned dev tools

tools: ## build the pinned control-plane and test binaries into ~/.cache/tiergate-tools (cold: 30-40 min on 2 cores)
	scripts/build-tools.sh

test: setup tools ## run every test: unit, golden, gateway, and real control-plane tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## only the tests that need no control plane
	$(BIN)/python -m pytest -m 'not cluster' $(PYTEST_ARGS)

lint: setup ## ruff (lint and format check), mypy --strict, import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

cluster-up: setup tools ## start the local control plane; prints its kubeconfig
	$(BIN)/python -m tiergate_devkit.cluster start

cluster-down: ## stop the local control plane
	$(BIN)/python -m tiergate_devkit.cluster stop

KEEP ?=

demo: setup tools ## the whole story locally: dev up, openai SDK through both tiers, split, failover, 429, down (KEEP=1 keeps it up)
	KEEP=$(KEEP) $(BIN)/tiergate demo

.PHONY: dev-up dev-down

dev-up: setup tools ## control plane, operator, examples, mock upstreams, API-fed gateways; prints how to call them
	$(BIN)/tiergate dev up

dev-down: ## stop exactly what dev-up started
	$(BIN)/tiergate dev down

clean: cluster-down ## remove the venv and local state (not the tools cache)
	rm -rf $(VENV) .tiergate .mypy_cache .ruff_cache .pytest_cache

# --- chart and kind (charts/tiergate; docs/kind.md). kind targets need Docker and are not run in CI.
KIND ?= kind
KIND_CLUSTER ?= tiergate
KIND_NODE_IMAGE ?= kindest/node:v1.33.1# pinned; pairs with kind v0.29.0 (docs/kind.md)
IMAGE_TAG ?= 0.1.0
OPERATOR_IMAGE ?= ghcr.io/tiergate/tiergate-operator
GATEWAY_IMAGE ?= ghcr.io/tiergate/tiergate-gateway

.PHONY: chart-crds kind-up kind-down

chart-crds: setup ## regenerate charts/tiergate/templates/crds from crds/
	$(BIN)/python scripts/sync-chart-crds.py

kind-up: ## kind cluster + both images built and loaded + the chart installed (needs Docker, kind, helm)
	$(KIND) get clusters | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --image $(KIND_NODE_IMAGE)
	docker build -f operator/Dockerfile -t $(OPERATOR_IMAGE):$(IMAGE_TAG) .
	docker build -f gateway_image/Dockerfile -t $(GATEWAY_IMAGE):$(IMAGE_TAG) .
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE):$(IMAGE_TAG) $(GATEWAY_IMAGE):$(IMAGE_TAG)
	helm upgrade --install tiergate charts/tiergate --kube-context kind-$(KIND_CLUSTER) \
	  --namespace tiergate-system --create-namespace \
	  --set image.repository=$(OPERATOR_IMAGE),image.tag=$(IMAGE_TAG),image.pullPolicy=Never \
	  --set gateway.image.repository=$(GATEWAY_IMAGE),gateway.image.tag=$(IMAGE_TAG),gateway.image.pullPolicy=Never \
	  --wait --timeout 3m

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
