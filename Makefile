# One command each: `make demo` (set up + run the digits search), `make test` (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

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

test: setup
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf slimsearch-out .pytest_cache
