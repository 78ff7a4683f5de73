"""The pytest entry of `make bench` (benchmarks/test_bench.py), kept for the Makefile's recipe
`pytest benchmarks/test_bench.py --benchmark-only ... [--bench-quick] $(BENCH_ARGS)`: its options are
benchmarks/harness.py's, spelled --bench-<name>. `python benchmarks/harness.py` is the same run without pytest."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OPTIONS = ("impls", "threads", "budget-s", "max-rounds", "grid", "out")


def pytest_addoption(parser):
    g = parser.getgroup("bench", "nanocodec side-by-side CPU benchmark (benchmarks/harness.py --help)")
    g.addoption("--bench-quick", action="store_true", help="smoke run (harness.py --quick)")
    g.addoption("--bench-ours", action="append", help="our model's options (harness.py --ours), repeatable")
    for name in OPTIONS:
        g.addoption(f"--bench-{name}", help=f"harness.py --{name}")


def harness_argv(config) -> list[str]:
    argv = ["--quick"] if config.getoption("--bench-quick") else []
    argv += [a for spec in config.getoption("--bench-ours") or [] for a in ("--ours", spec)]
    return argv + [a for n in OPTIONS if (v := config.getoption(f"--bench-{n}")) is not None for a in (f"--{n}", v)]
