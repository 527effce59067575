# hoi-zoo: make demo | make test | make bench | make lint
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export ZOO_BODY_MODELS ?= $(abspath $(DATA))/body_models

.PHONY: install demo test bench lint docs clean

# Creates .venv and installs the package with its dev extras. Re-running is a no-op unless
# pyproject.toml changed. torch is pinned exactly so pip never takes a local build of another version.
install: $(STAMP)
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.11.0 torchvision==0.26.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Generates the synthetic body model and DAMON-format data, trains and tests deco/synthetic,
# prints the metrics table and writes a contact figure. Main job: see tools/demo.py.
demo: install
	$(PY) tools/demo.py --data $(DATA)

test: install
	$(PY) -m pytest -q -x -n 2 --dist loadfile -p no:cacheprovider tests
	$(PY) tools/catalog.py docs --check

bench: install
	$(PY) tools/bench.py

lint: install
	$(VENV)/bin/ruff check zoo tools tests

docs: install
	$(PY) tools/catalog.py docs

clean:
	rm -rf runs .pytest_cache
