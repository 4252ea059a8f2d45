# make test   — set up what is missing, then run every test (unit, API, end to end)
# make demo   — the main job: local control plane + EC2 endpoint, CRD, operator, examples/
# make demo-tenancy — the demo, then docs/tenancy.md's two teams (examples/tenancy/, two accounts)
# make image  — the operator's image, built with buildah on a small Debian base (cached)
# make cluster-demo — the chart on a real dev node (root): two replicas, examples/ Ready
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup controlplane test unit demo demo-tenancy cluster-demo up down bench bench-scale bench-fleet bench-fairness image clean

setup: $(STAMP) controlplane

$(STAMP): pyproject.toml constraints.txt
	@echo "==> setup 1/2: a virtualenv in $(VENV), the pinned packages of constraints.txt (once per checkout)"
	$(PYTHON) -m venv $(VENV)
	@echo "    installing $$(grep -c '==' constraints.txt) pinned packages with pip, each named as it is collected"
	$(BIN)/pip install --progress-bar off --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Builds kube-apiserver, kubectl, etcd and kube-controller-manager, the dev node's kubelet,
# kube-scheduler and containerd, and helm, once per machine, into ~/.cache/instance-profile-operator.
controlplane: $(STAMP)
	@echo "==> setup 2/2: kube-apiserver, kubectl, etcd, kube-controller-manager, the node's binaries and helm,"
	@echo "    compiled once per machine into ~/.cache/instance-profile-operator (cold: minutes, each build shown; cached: seconds)"
	@nice -n 10 $(BIN)/python -m instance_profile_operator.devenv build --node
	@nice -n 10 $(BIN)/python -m instance_profile_operator.devenv.gotools helm
	@echo "==> setup done"

test: setup
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

demo: setup
	$(BIN)/python -m instance_profile_operator.devenv demo

demo-tenancy: setup
	$(BIN)/python -m instance_profile_operator.devenv demo --tenancy

cluster-demo: setup
	$(BIN)/python -m instance_profile_operator.devenv.clusterdemo --dir .devenv-node

up: setup
	$(BIN)/python -m instance_profile_operator.devenv up --dir .devenv

down: $(STAMP)
	$(BIN)/python -m instance_profile_operator.devenv down --dir .devenv

bench: setup
	$(BIN)/python bench/converge.py

bench-scale: setup
	$(BIN)/python bench/scale.py

bench-fleet: setup
	$(BIN)/python bench/fleet.py

bench-fairness: setup
	$(BIN)/python bench/fairness.py

image: $(STAMP)
	$(BIN)/python -m instance_profile_operator.devenv.image build

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
