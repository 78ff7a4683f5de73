"""`make bench` through pytest: one plain run of benchmarks/harness.py (see conftest.py).

Every figure of the reports is one the worker processes measured themselves (perf_counter around each
call). pytest-benchmark is handed only what it measures itself: the one call of the whole run, so its table
shows the run's wall time and nothing else.
"""
import harness
from conftest import harness_argv


def test_bench(request, benchmark):
    rc = benchmark.pedantic(harness.main, args=(harness_argv(request.config),), rounds=1, iterations=1, warmup_rounds=0)
    assert rc == 0
