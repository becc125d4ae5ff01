# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Python packages come from lock files with hashes (requirements/dev.txt for tests and tools,
# requirements/run.txt, a subset with the same pins, for serving; `make lock` refreshes them):
# pip checks every download against its SHA-256 and installs nothing unlisted, then installs
# copyledger itself without dependencies. A stamp per lock reinstalls when it changes (D42).
LOCK_DEV := requirements/dev.txt
LOCK_RUN := requirements/run.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK_DEV) | sha256sum | cut -c1-12)

.PHONY: run run-finish i18n test test-deps lint typecheck unit system-deps tlogcheck lock bench bench-merkle bench-http bench-claims bench-tiles bench-soak bench-images bench-av clean

$(STAMP): pyproject.toml $(LOCK_DEV)
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK_DEV)
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# `make run` serves within seconds on a fresh machine (D45). uv, pinned with hashes in
# requirements/uv.txt and installed by pip into .venv-uv, installs the serving lock's wheels
# (seconds where pip takes minutes); tools/link_checkout.py makes the checkout's copyledger
# importable and writes its command; the server starts. In the background (log:
# .venv/setup.log) `run-finish` then installs the rest: the large wheels of
# requirements/run-deferred.txt that only fingerprints and the index use (D58), copyledger's
# own install, the packages of requirements/run-later.txt (built from source: no Linux wheel),
# and the Debian packages of `.ci/system-deps --run`. Until they are there, a feature that
# needs one answers 503 with Retry-After saying it is being installed
# (copyledger.ledger.components). A venv that has the dev install already (make test) is
# used as it is.
RUN_STAMP := $(VENV)/.run-$(shell cat pyproject.toml $(LOCK_RUN) | sha256sum | cut -c1-12)
UV_DIR := .venv-uv
UV := $(UV_DIR)/bin/uv
UV_PIP := $(UV) pip install -q --python $(BIN)/python
LATER := requirements/run-later.txt
DEFERRED := requirements/run-deferred.txt
INSTALLING := $(VENV)/.installing
DATA_DIR ?= copyledger-data

$(UV): requirements/uv.txt
	rm -rf $(UV_DIR)
	$(PYTHON) -m pip install -q --disable-pip-version-check --root-user-action=ignore \
	  --no-compile --no-deps --require-hashes --target $(UV_DIR) -r requirements/uv.txt

# Refresh the locks from pyproject.toml: keeps every pin that still fits and resolves what is
# new (a dependency added, a bound changed); `make lock UPGRADE=1` moves everything to the
# newest releases. pip-tools runs from its own venv, so the project's venv is untouched.
LOCK_VENV := .venv-lock
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
  --no-emit-find-links $(if $(UPGRADE),--upgrade)

lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/python -m pip install -q 'pip-tools>=7.4')
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) --extra dev \
	  --output-file $(LOCK_DEV) pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) \
	  --constraint $(LOCK_DEV) --output-file $(LOCK_RUN) pyproject.toml

# HOST and PORT, from the environment or the command line: `PORT=8001 make run`.
run: $(if $(wildcard $(STAMP) $(RUN_STAMP)),,$(UV))
	@if [ ! -e $(STAMP) ] && [ ! -e $(RUN_STAMP) ]; then \
	  { test -x $(BIN)/python || $(UV) venv -q $(VENV); } && \
	  $(UV_PIP) --require-hashes --excludes $(DEFERRED) --excludes $(LATER) -r $(LOCK_RUN) && \
	  $(BIN)/python tools/link_checkout.py && echo libraries > $(INSTALLING) || exit 1; \
	else : > $(INSTALLING); fi
	@setsid nice -n 19 $(MAKE) --no-print-directory run-finish >$(VENV)/setup.log 2>&1 </dev/null &
	MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX-2} COPYLEDGER_INSTALLING=$(CURDIR)/$(INSTALLING) \
	  $(BIN)/python -m copyledger.cli serve \
	  --data-dir $(DATA_DIR) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# The rest of the serving install, while the server runs: the deferred wheels first (then the
# marker no longer says "libraries"), copyledger itself, what is built from source, the Debian
# packages. The marker goes when it ends, done or not (a failure is in .venv/setup.log, and the
# next `make run` tries again).
run-finish:
	@ok=0; { test -e $(STAMP) || test -e $(RUN_STAMP) || { \
	    $(UV_PIP) --require-hashes --excludes $(LATER) -r $(LOCK_RUN) && : > $(INSTALLING) && \
	    $(UV_PIP) --no-deps -e . && $(BIN)/python tools/link_checkout.py --remove && \
	    $(UV_PIP) --require-hashes -r $(LOCK_RUN) && \
	    rm -f $(VENV)/.run-* && touch $(RUN_STAMP); }; } && \
	  : > $(INSTALLING) && bash .ci/system-deps --run && ok=1; \
	  rm -f $(INSTALLING); echo "run-finish: $$([ $$ok = 1 ] && echo done || echo failed)"; \
	  [ $$ok = 1 ]

# The message catalogues: new English strings added as msgids, translations kept (D44).
i18n: $(STAMP)
	$(BIN)/python -m tests.i18n_catalog

# Debian packages the tests use: a PostgreSQL server and Go (for the independent tlogcheck).
system-deps:
	@bash .ci/system-deps

# tools/tlogcheck: our independent checker, built only from Go's golang.org/x/mod sumdb packages
# (Debian's golang-golang-x-mod-dev, no module download). Without Go it is not built and the
# tests that use it skip (or fail, with COPYLEDGER_REQUIRE_TLOGCHECK=1); tests/conftest.py
# runs `make tlogcheck` too, so a plain `pytest` rebuilds it when main.go changes.
GOCODE := /usr/share/gocode
TLOGCHECK := $(BIN)/tlogcheck

tlogcheck: $(TLOGCHECK)

$(TLOGCHECK): tools/tlogcheck/main.go
	@if command -v go >/dev/null 2>&1 && [ -d $(GOCODE)/src/golang.org/x/mod/sumdb ]; then \
	  mkdir -p $(BIN) && GOPATH=$(GOCODE) GO111MODULE=off go build -o $@ ./tools/tlogcheck; \
	else \
	  echo "tlogcheck: Go or golang.org/x/mod is missing (make system-deps); not built" >&2; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check ledger notary api cli matching service client copyledger tests bench
	@! command -v gofmt >/dev/null 2>&1 || test -z "$$(gofmt -l tools)" || (gofmt -l tools; false)

typecheck: $(STAMP)
	$(BIN)/mypy --strict -p copyledger

unit: $(STAMP)
	$(BIN)/pytest -q --durations=25

# What the suite needs installed: `make test` makes it first; CI's SoftHSM pass waits for it.
test-deps: $(STAMP) system-deps tlogcheck

test: test-deps lint typecheck unit

$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m pip install -q --no-deps merkletools
	touch $@

$(VENV)/.bench-deps:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	touch $@

bench-merkle: $(VENV)/.bench
	$(BIN)/python bench/merkle_bench.py

bench-http: $(VENV)/.bench $(VENV)/.bench-deps
	$(BIN)/python bench/http_bench.py

bench-claims: $(VENV)/.bench
	$(BIN)/python bench/claim_bench.py

bench-tiles: $(VENV)/.bench
	$(BIN)/python bench/tiles_bench.py

# Ten minutes at 50 connections of mixed reads and writes (SOAK_SECONDS to change it).
bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py --seconds $(or $(SOAK_SECONDS),600)

bench-images: $(VENV)/.bench system-deps
	$(BIN)/python bench/image_edits_bench.py

bench-av: $(STAMP) system-deps
	$(BIN)/python bench/av_bench.py

bench: bench-merkle bench-http bench-claims bench-tiles

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(UV_DIR) .pytest_cache .mypy_cache .ruff_cache
