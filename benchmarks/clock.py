"""A virtual clock for pytest-benchmark (`--benchmark-timer=benchmarks.clock.now`, set by conftest.py).

The timings are taken by the worker processes themselves (time.perf_counter inside each
implementation's own environment, around the call only). pytest-benchmark reads this clock
before and after the function it benchmarks; that function is `tick`, which advances the clock by
the next worker-measured duration. pytest-benchmark's statistics are therefore exactly the
workers' own timings, with no inter-process overhead in them.
"""
from __future__ import annotations

_now = 0.0
_pending: list[float] = []


def now() -> float:
    return _now


def feed(samples) -> int:
    _pending.extend(float(s) for s in samples)
    return len(_pending)


def tick() -> None:
    global _now
    _now += _pending.pop(0)
