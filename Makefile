# nanocodec: every task a maintainer or CI runs. `make` = install + conversion + parity report;
# `make test` = install + the test suite (what .ci/run runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch is repeated on every pip line so pip keeps the local CPU build and never pulls CUDA torch.
TORCH := torch==2.13.0

.DEFAULT_GOAL := all
.PHONY: all install test parity convert bench clean

all: install parity

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]" $(TORCH)
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

# Tier 1 parity: every committed fixture model x input against NeMo's recorded references.
parity: install
	$(PY) -m parity --report reports

# make convert NEMO=path/or/hub-id OUT=folder  (without NEMO: the official 0.6 kbps checkpoint)
NEMO ?=
OUT ?= out/nemo-nano-codec-22khz-0.6kbps-12.5fps
convert: install
	$(PY) -m convert $(if $(NEMO),$(NEMO),nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps) $(OUT) --overwrite

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# The NeMo oracle: its isolated environment, test audio and fixture builder.
include parity/oracle/oracle.mk
