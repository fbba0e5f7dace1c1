# Developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bins cluster-up cluster-down demo test lint unit component integration crd clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Control-plane binaries from Go modules, cached under ~/.cache/modelcache-operator/bins (tens of minutes cold).
bins: setup
	$(BIN)/modelcache-devcluster build

cluster-up: bins
	$(BIN)/modelcache-devcluster up

cluster-down: setup
	$(BIN)/modelcache-devcluster down

demo: bins
	$(BIN)/python hack/demo.py

crd: setup
	$(BIN)/modelcache-operator crd -o crds/modelcache.dev_modelcaches.yaml
	$(BIN)/modelcache-operator crd --chart-template charts/modelcache-operator/templates/crd-modelcaches.yaml

lint: setup
	$(BIN)/ruff check src tests benchmarks hack
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit

component: setup
	$(BIN)/pytest tests/component

integration: bins
	$(BIN)/pytest tests/integration

# The whole suite: lint, types, then unit, component and integration tests in one pytest run.
test: bins lint
	$(BIN)/pytest tests

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
