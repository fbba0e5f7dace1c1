# Developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bins cluster-up cluster-up-real-node cluster-down demo test lint unit component integration crd clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Control-plane binaries from Go modules, plus the real node's containerd and its images built offline from this
# repository's Dockerfile, all cached under ~/.cache/modelcache-operator (about 30 minutes cold on 2 cores).
bins: setup
	$(BIN)/modelcache-devcluster build --real-node

cluster-up: bins
	$(BIN)/modelcache-devcluster up

# The local control plane with one real kubelet node (containerd + runc) beside the kwok nodes.
cluster-up-real-node: bins
	$(BIN)/modelcache-devcluster up --real-node

cluster-down: setup
	$(BIN)/modelcache-devcluster down

demo: bins
	$(BIN)/python hack/demo.py

crd: setup
	$(BIN)/modelcache-operator crd -o crds --chart-template charts/modelcache-operator/templates/crds.yaml
	$(BIN)/modelcache-operator docs -o docs/reference.md

lint: setup
	$(BIN)/ruff check src tests benchmarks hack
	$(BIN)/mypy
	$(BIN)/deptry src

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
