"""`make bench`: nanocodec vs NeMo 3.0.0 vs nanocodec-torch 1.0.0 on this CPU, side by side (issue 7).

The measurement is benchmarks/harness.py's: per case, one forked worker per implementation, interleaved
rounds, each call timed inside its worker. Each test hands one (case, op, implementation)'s samples to
pytest-benchmark through the virtual clock (benchmarks/clock.py), so pytest-benchmark's table groups
the three implementations of a case side by side. The session writes reports/bench-cpu-<cpu>.md/.json/.png
(QUICK: cache/bench/report-quick/) when it ends.
"""
from __future__ import annotations

import statistics

import pytest

import clock
import harness


@pytest.fixture(scope="session")
def bench(request):
    b = harness.Bench(harness.Config.from_pytest(request.config))
    try:
        b.start()
        b.extras()
        yield b
    finally:
        b.close()
        if b.zygotes or b.results:
            from report import write_reports

            paths = write_reports(b)
            harness.log("reports: " + ", ".join(str(p) for p in paths))


def _record(benchmark, samples, group: str) -> None:
    clock.feed(samples)
    benchmark.group = group
    benchmark.pedantic(clock.tick, rounds=len(samples), iterations=1, warmup_rounds=0)


def test_conv_peak(bench, benchmark, layer):
    """One conv layer of the model's shapes (F.conv1d, fp32): the CPU's measured peak for this work."""
    if not bench.peak:
        pytest.fail(f"conv peak not measured: {bench.errors.get('conv_peak')}")
    spec = bench.peak["layers"][layer]
    benchmark.extra_info.update({"gflops": spec["gflops"], "gflop": spec["flop"] / 1e9})
    _record(benchmark, spec["times"], "conv peak (single layer)")


def test_codec(bench, benchmark, case, op, label):
    res = bench.measure(case)
    if res.get("skipped"):
        pytest.skip(f"{case.key}: {res['skipped']}")
    entry = res["impl"].get(label)
    if entry is None:
        pytest.fail(f"{label} did not load: {bench.errors.get(label)}")
    samples = entry[op]
    if not samples:
        pytest.fail(f"{label} {case.key}: " + ("; ".join(entry["errors"]) or "no samples"))
    med = statistics.median(samples)
    gflop = bench.gflop(case, op)
    info = {"x_realtime": case.audio_seconds / med, "gflops": gflop / med,
            "peak_rss_mib": (entry.get("memory") or {}).get("peak_rss_mib"), "rounds": len(samples)}
    if bench.peak:
        info["peak_share"] = info["gflops"] / bench.peak["peak_gflops"]
    prim = bench.primary
    if prim and label != prim and res["impl"].get(prim, {}).get(op):
        info[f"{prim}_speedup"] = med / statistics.median(res["impl"][prim][op])
    benchmark.extra_info.update(info)
    _record(benchmark, samples, f"{op} {case.key}")
    assert not entry["errors"], entry["errors"]
