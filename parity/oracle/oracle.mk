# The NeMo oracle: its isolated environment, the test audio and the fixture builder/checker.
#   make oracle            create parity/oracle/.venv (idempotent; a few minutes the first time)
#   make test-audio        regenerate tests/fixtures/audio (espeak-ng + sox; installs nothing)
#   make fixtures          rebuild every .nemo + NeMo reference + manifest (FULL=1: also the
#                          full-size 0.6 kbps model into cache/fixtures-full/, git-ignored)
#   make check-fixtures    re-run NeMo on the committed .nemo files, compare (contracts §5)
#   make parity-live       tier 2: NeMo side by side on fresh seeded models of every variant and fresh
#                          inputs, converted with our converter, compared (SEED=n reproduces a run,
#                          PROFILE=quick a small one), plus layout "nemo" bit for bit against the same
#                          NeMo run; writes reports/parity-live-cpu-<vendor>.md/.json (intel, amd, arm:
#                          parity/machine.py cpu_vendor)
#   make parity NEMO=f     the live tier on your own .nemo (committed speech clips, PESQ of both)
# ORACLE_PY may point at another NeMo environment (e.g. ORACLE_PY=/path/to/venv/bin/python).
ORACLE_DIR := parity/oracle
ORACLE_VENV := $(ORACLE_DIR)/.venv
ORACLE_PY ?= $(ORACLE_VENV)/bin/python
# recipes (parity/live.py, make parity NEMO=...) find the NeMo environment through it
export ORACLE_PY
ORACLE_TORCH := torch==2.13.0
ORACLE_NEMO := nemo-toolkit==3.0.0
ORACLE_PYTHON ?= python3
FULL ?=

SEED ?=
PROFILE ?= default
# build the oracle venv first only when ORACLE_PY is this default one (not the user's own NeMo env)
ORACLE_DEP := $(if $(filter file,$(origin ORACLE_PY)),oracle)

.PHONY: oracle test-audio fixtures check-fixtures parity-live

$(ORACLE_VENV)/.installed: $(ORACLE_DIR)/requirements.in $(ORACLE_DIR)/constraints.txt
	$(ORACLE_PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_VENV)/bin/pip install -q --upgrade pip
	$(ORACLE_VENV)/bin/pip install -q $(ORACLE_TORCH)
	$(ORACLE_VENV)/bin/pip install -q --no-deps $(ORACLE_NEMO)
	$(ORACLE_VENV)/bin/pip install -q -r $(ORACLE_DIR)/requirements.in -c $(ORACLE_DIR)/constraints.txt $(ORACLE_TORCH)
	$(ORACLE_VENV)/bin/python -c "import nemo.collections.tts.models, torch; assert '+cu' not in torch.__version__"
	touch $@

oracle: $(ORACLE_VENV)/.installed

test-audio:
	$(ORACLE_DIR)/make_test_audio.sh tests/fixtures/audio $(ORACLE_PY)

fixtures:
	$(ORACLE_PY) $(ORACLE_DIR)/build_fixtures.py $(if $(FULL),--full)

check-fixtures:
	$(ORACLE_PY) $(ORACLE_DIR)/check_fixtures.py

parity-live: install $(ORACLE_DEP)
	$(PY) -m parity.live --report reports --profile $(PROFILE) --oracle-py $(ORACLE_PY) $(if $(SEED),--seed $(SEED))

# make parity NEMO=...: the main Makefile's parity recipe hands the file to the live tier, which needs NeMo
ifneq ($(NEMO),)
parity: $(ORACLE_DEP)
endif
