# nanocodec: every task a maintainer or CI runs. `make` = install + the quick main job (convert the
# embedded 0.6 kbps fixture into out/, check it against NeMo's recordings; writes nothing tracked);
# `make test` = install + the test suite (what .ci/run runs); `make parity` = the full tracked reports.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch is repeated on every pip line so pip keeps the local CPU build and never pulls CUDA torch.
TORCH := torch==2.13.0

.DEFAULT_GOAL := all
.PHONY: all quick install test parity convert bench-streaming bench-onnx bench-ray clean bench device-prep

all: install quick

# The quick main job (about 1 CPU-minute after install): the embedded 0.6 kbps fixture converted into
# out/nano0p6 (a model folder for the README's commands) and checked against NeMo's committed outputs
# (python -m parity --quick: one model, no PESQ). Writes under out/ only (git-ignored).
QUICK_NEMO := tests/fixtures/models/nano0p6_replicate.nemo
quick: install
	$(PY) -m convert $(QUICK_NEMO) out/nano0p6 --overwrite
	$(PY) -m parity --quick --report out/parity
	@echo "model:  out/nano0p6 (try: $(VENV)/bin/nanocodec info out/nano0p6)"
	@echo "parity: out/parity/parity-cpu-quick.md (every fixture and the tracked reports: make parity)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev,ray,onnx]" $(TORCH)
	touch $@

install: $(VENV)/.installed

# The whole suite, the live NeMo tier included (`-m "live or not live"` selects the marker-gated
# tests): the oracle environment is built first (1-4 minutes once, then cached by its stamp).
# Two pytest workers (pytest-xdist, a test file per worker) of one torch thread each: the suite is
# thousands of small convs, which two OpenMP threads per process run slower than one (spin-waits at
# every op's barrier), and the file-level parallelism fills both of CI's cores. On a 2-core AMD EPYC
# (AVX2) the suite took 14.5 min so; serial with 2 threads it took 20-29 min. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: install oracle
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "live or not live" tests

# Tier 1 parity: every committed fixture model x input against NeMo's recorded references.
# make parity NEMO=path/to/user.nemo: the live tier on your own checkpoint instead (parity/oracle/oracle.mk).
parity: install
	$(PY) -m parity --report reports $(if $(NEMO),--nemo "$(NEMO)")
	$(if $(NEMO),,$(PY) -m parity --report reports --layout nemo)

# make convert NEMO=path/or/hub-id OUT=folder  (without NEMO: the official 0.6 kbps checkpoint)
NEMO ?=
OUT ?= out/nemo-nano-codec-22khz-0.6kbps-12.5fps
convert: install
	$(PY) -m convert $(if $(NEMO),$(NEMO),nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps) $(OUT) --overwrite

# Streaming (issue 21): steps, slots, real-time streams vs NeMo offline and the sliding window (reports/streaming-cpu-<cpu>.md)
bench-streaming: install
	$(PY) benchmarks/streaming.py --out reports

# ONNX Runtime vs our torch path on the full-size model, interleaved (writes reports/onnx-<cpu>.md)
bench-onnx: install
	$(PY) benchmarks/onnx_bench.py --out reports

# Corpus tokenization: audio-hours per hour of the local engine and of `--engine ray` with 1 and 2
# encoders on a local Ray cluster, outputs compared byte for byte (writes reports/ray-cpu-<cpu>.md, ~5 min).
# Uses the full-size model from `make fixtures FULL=1` when present. BENCH_RAY_ARGS adds options.
BENCH_RAY_ARGS ?=
bench-ray: install
	$(PY) benchmarks/ray_throughput.py --out reports $(BENCH_RAY_ARGS)

# Before a GPU lease (benchmarks/DEVICE.md): NeMo's wheel into .devicecarry/ (git-ignored, carried),
# the size check, and the prepared CUDA script's CPU dry run.
device-prep: install
	benchmarks/device_prep.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# The NeMo oracle: its isolated environment, test audio and fixture builder.
include parity/oracle/oracle.mk

# Side by side on this CPU vs NeMo (oracle env) and nanocodec-torch 1.0.0 (cache/bench-venvs/port), issue 7:
# writes reports/bench-cpu-<cpu>.md/.json/.png (<= 20 min; benchmarks/README.md). make bench QUICK=1: smoke run
# (~2 min, report in cache/bench/report-quick/). BENCH_ARGS adds harness.py's options (with or without the bench-
# prefix), e.g. BENCH_ARGS="--bench-ours dtype=bfloat16 --bench-threads 2"
QUICK ?=
BENCH_ARGS ?=
bench: install $(ORACLE_DEP)
	$(PY) benchmarks/harness.py $(if $(QUICK),--quick) $(BENCH_ARGS)
