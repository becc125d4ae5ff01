# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DATA_DIR ?= copyledger-data

.PHONY: run test lint typecheck unit system-deps bench bench-merkle bench-http bench-claims clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/copyledger serve --data-dir $(DATA_DIR)

# Debian packages the tests use: a PostgreSQL server and Go (for the independent tlogcheck).
system-deps:
	@bash .ci/system-deps

lint: $(STAMP)
	$(BIN)/ruff check ledger notary api cli matching service client copyledger tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict -p copyledger

unit: $(STAMP)
	$(BIN)/pytest -q

test: $(STAMP) system-deps lint typecheck unit

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

bench: bench-merkle bench-http bench-claims

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
