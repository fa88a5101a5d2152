# One command each: `make demo` (set up + run the digits search), `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser postgres demo test test-fast bench clean

setup: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/slimsearch run configs/digits.yaml

# Debian's chromium for the headless-browser test of the MLflow UI (needs root + apt; else the test is skipped).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: the browser test will be skipped"

# Debian's PostgreSQL server binaries for the multi-host storage test (a throwaway server on loopback).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	  || echo "postgresql not installed: the PostgreSQL storage test will be skipped"

test: setup browser postgres
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q tests

# Unit and component tests only (no whole searches): a few minutes.
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not e2e" tests

# The benchmark suite (~40 min on 2 cores; run on an idle machine): prints measured tables
# headed by run date, commit and hardware, and rewrites the results in benchmarks/README.md.
bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf slimsearch-out .pytest_cache test-artifacts
