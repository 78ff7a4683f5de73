"""pytest options and set-up for the side-by-side benchmark (benchmarks/test_bench.py, `make bench`).

    .venv/bin/python -m pytest benchmarks/test_bench.py --benchmark-only -s [--bench-quick]
        [--bench-ours dtype=bfloat16,threads=1 ...] [--bench-threads auto|N] [--bench-budget-s S]
        [--bench-impls ours,nemo,port] [--bench-grid 1x1,5x1] [--bench-max-rounds N] [--bench-out DIR]

pytest-benchmark's timer is replaced by benchmarks/clock.py's virtual clock: the statistics it prints
are the worker processes' own perf_counter timings (see harness.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402


def pytest_addoption(parser):
    g = parser.getgroup("bench", "nanocodec side-by-side CPU benchmark (benchmarks/harness.py)")
    g.addoption("--bench-quick", action="store_true", help="smoke run: 3 small cases, ~75 s budget, report under cache/bench/")
    g.addoption("--bench-ours", action="append", default=None,
                help="our model's options, e.g. dtype=bfloat16,threads=1,chunk_seconds=10 (repeat: several variants)")
    g.addoption("--bench-impls", default=None, help="comma list of ours,nemo,port (default all)")
    g.addoption("--bench-threads", default="auto", help="threads per implementation or auto (default)")
    g.addoption("--bench-budget-s", type=float, default=None, help="measurement time budget in s (0: none)")
    g.addoption("--bench-max-rounds", type=int, default=None)
    g.addoption("--bench-grid", default=None, help="cases as SECONDSxBATCH, comma separated (default: issue 7's grid)")
    g.addoption("--bench-out", default=None, help="report folder (default reports/, QUICK: cache/bench/report-quick)")


def pytest_configure(config):
    # runs before pytest-benchmark's own pytest_configure (trylast), which loads the timer
    config.option.benchmark_timer = "clock.now"


def bench_config(config) -> harness.Config:
    return harness.Config.from_pytest(config)


def pytest_generate_tests(metafunc):
    cfg = bench_config(metafunc.config)
    labels = [harness.ours_label(opts, i) for i, opts in enumerate(cfg.ours)] if "ours" in cfg.impls else []
    labels += [i for i in ("nemo", "port") if i in cfg.impls]
    if {"case", "op", "label"} <= set(metafunc.fixturenames):
        params = [(c, op, label) for c in harness.run_order(cfg.grid) for op in harness.OPS for label in labels]
        metafunc.parametrize(("case", "op", "label"), params, ids=[f"{c.key}-{op}-{label}" for c, op, label in params])
    if "layer" in metafunc.fixturenames:
        metafunc.parametrize("layer", range(len(harness.PEAK_LAYERS)), ids=[s["name"] for s in harness.PEAK_LAYERS])
