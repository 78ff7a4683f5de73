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
.PHONY: all install test parity convert bench-streaming clean

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
# make parity NEMO=path/to/user.nemo: the live tier on your own checkpoint instead (parity/oracle/oracle.mk).
parity: install
	$(PY) -m parity --report reports $(if $(NEMO),--nemo "$(NEMO)")

# make convert NEMO=path/or/hub-id OUT=folder  (without NEMO: the official 0.6 kbps checkpoint)
NEMO ?=
OUT ?= out/nemo-nano-codec-22khz-0.6kbps-12.5fps
convert: install
	$(PY) -m convert $(if $(NEMO),$(NEMO),nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps) $(OUT) --overwrite

# Streaming latency vs sliding-window re-decoding (writes reports/streaming-cpu.md)
bench-streaming: install
	$(PY) benchmarks/streaming.py --out reports

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# The NeMo oracle: its isolated environment, test audio and fixture builder.
include parity/oracle/oracle.mk
