# Sesame developer entry points. Every target that needs Python creates .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .sesame
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv lint test demo cluster cluster-down cluster-status flux flux-down operator-image binaries bench bench-quick kind-up kind-e2e kind-down clean

help:
	@echo "make demo          run Sesame end to end on the local control plane (or \$$KUBECONFIG)"
	@echo "make test          lint + the whole test suite against a real control plane"
	@echo "make cluster       start the local control plane in the background (.sesame/kubeconfig)"
	@echo "make cluster-down  stop it and remove its state"
	@echo "make flux          run Flux's source-, kustomize- and helm-controller against that cluster (docs/gitops.md)"
	@echo "make flux-down     delete every Flux object, then stop the controllers (cluster-down does it too)"
	@echo "make operator-image  build the operator image (no Docker) and import it into that cluster's node"
	@echo "make bench         benchmarks (ratios against a floor measured in the same run)"
	@echo "make kind-up / kind-e2e   the same integration tests on a kind cluster (needs Docker)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

binaries:
	bash tools/build-binaries.sh

lint: venv
	$(VENV)/bin/ruff check operator tests tools bench
	$(VENV)/bin/ruff format --check operator tests tools bench
	$(VENV)/bin/mypy

test: venv binaries lint
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

cluster: venv
	$(PY) tools/localcluster.py up --state $(STATE)

cluster-down: venv
	$(PY) tools/flux.py down --state $(STATE)
	$(PY) tools/localcluster.py down --state $(STATE)

# Flux's controllers as local processes against `make cluster` (loopback ports, state in .sesame/flux).
flux: venv
	$(PY) tools/flux.py up --state $(STATE)

flux-down: venv
	$(PY) tools/flux.py down --state $(STATE)

cluster-status: venv
	$(PY) tools/localcluster.py status --state $(STATE)

# ghcr.io/sesame-dev/sesame:<version>, the Helm chart's default image, built from this tree like the
# Dockerfile builds it (tools/images.py; cached until the code changes) and imported into the node of
# `make cluster`, so `helm install sesame charts/sesame` runs it there.
operator-image: venv
	$(PY) tools/images.py --operator --load-into $(STATE)

demo: venv binaries
	$(PY) tools/demo.py

# BENCH_ARGS: e.g. --n 2000, --rate 100, --duration 120, --skip-cost, --profile (see python -m bench.run -h)
bench: venv binaries
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: venv binaries
	$(PY) -m bench.run --quick $(BENCH_ARGS)

# A kind cluster for people with Docker; CI here uses the local control plane. Tests marked
# `local_plane` restart control-plane processes or need the API server to reach a loopback webhook,
# so they run only on the local control plane.
KIND_VERSION := v0.30.0
KIND ?= $(shell command -v kind 2>/dev/null || echo "go run sigs.k8s.io/kind@$(KIND_VERSION)")
KIND_CLUSTER ?= sesame
kind-up:
	mkdir -p $(STATE)
	$(KIND) create cluster --name $(KIND_CLUSTER) --kubeconfig $(STATE)/kind-kubeconfig

# kind's node runs the same real-node tests once Sesame's task image is loaded into it (the OCI
# archives tools/images.py builds carry containerd's image-name annotation, as `kind load` needs).
kind-e2e: venv binaries
	@test -f $(STATE)/kind-kubeconfig || $(MAKE) kind-up
	$(PY) tools/images.py --archives | while read -r archive; do \
	  $(KIND) load image-archive "$$archive" --name $(KIND_CLUSTER); done
	SESAME_KUBECONFIG=$(STATE)/kind-kubeconfig $(VENV)/bin/pytest -q -m "not local_plane" tests/integration

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf $(VENV) $(STATE) .mypy_cache .ruff_cache .pytest_cache
