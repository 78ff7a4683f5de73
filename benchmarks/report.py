"""Reports of a benchmark run (benchmarks/harness.py): <out>/bench-cpu-<vendor>.md, .json and PNG plots
(vendor: intel, amd or arm, parity.machine.cpu_vendor).

    .venv/bin/python benchmarks/report.py reports/bench-cpu-amd.json [--out DIR]

renders the markdown and the plots again from a run's JSON (no measuring).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from harness import OPS, machine

NAMES = {"nemo": "NeMo 3.0.0", "port": "nanocodec-torch 1.0.0"}


def name(label: str) -> str:
    return NAMES.get(label, label)


def stats(xs: list) -> dict | None:
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "mean": statistics.fmean(xs)}


def summarize(bench) -> dict:
    """Per (case, implementation, op): median time, × real time, GFLOP/s, share of peak; memory."""
    peak = (bench.peak or {}).get("peak_gflops")
    rows = []
    for case in bench.cfg.grid:
        res = bench.results.get(case.key)
        if res is None:
            continue
        for label in bench.labels:
            entry = res.get("impl", {}).get(label, {})
            row = {"case": case.key, "seconds": case.seconds, "batch": case.batch, "frames": case.frames,
                   "audio_seconds": case.audio_seconds, "impl": label, "skipped": res.get("skipped"),
                   "errors": entry.get("errors", [])}
            for op in OPS:
                s = stats(entry.get(op, []))
                if s:
                    g = bench.gflop(case, op)
                    s["x_realtime"] = case.audio_seconds / s["median"]
                    s["gflops"] = g / s["median"]
                    s["peak_share"] = s["gflops"] / peak if peak else None
                row[op] = s
            mem = entry.get("memory") or {}
            row["peak_rss_mib"] = mem.get("peak_rss_mib")
            row["rss_after_load_mib"] = (bench.zygotes[label].info or {}).get("rss_after_load_mib") if label in bench.zygotes else None
            rows.append(row)
    return {"rows": rows, "peak_gflops": peak}


def _row(rows, case_key, label):
    return next((r for r in rows if r["case"] == case_key and r["impl"] == label), None)


def _med(row, op):
    return row[op]["median"] if row and row.get(op) else None


def fmt_ms(x):
    if x is None:
        return "—"
    ms = x * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def fmt(x, spec=".2f", none="—"):
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def speedup(rows, case_key, op, a, b):
    ra, rb = _med(_row(rows, case_key, a), op), _med(_row(rows, case_key, b), op)
    return rb / ra if ra and rb else None


# ----------------------------------------------------------------------------------------------
def report_stem(machine_info: dict) -> str:
    """bench-cpu-<intel|amd|arm>, from the measured machine: one report per CPU vendor, since speed
    (and which conv paths the accuracy gate lets run channels-last) differ between them."""
    return f"bench-cpu-{machine_info.get('vendor', 'other')}"


def write_reports(bench) -> list[Path]:
    out = Path(bench.cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summ = summarize(bench)
    data = build_json(bench, summ)
    stem = report_stem(data["machine"])
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(json.dumps(data, indent=1, default=str) + "\n")
    plots = write_plots(bench, summ, out, stem)
    paths[1].write_text(markdown(bench, summ, data, plots))
    return paths + plots


def build_json(bench, summ) -> dict:
    cfg = bench.cfg
    frozen = getattr(bench, "frozen", None) or {}  # a replayed run keeps its own facts
    return {
        "generated": frozen.get("generated") or time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": frozen.get("machine") or machine(),
        "loadavg": {"start": bench.loadavg_start, "end": frozen.get("loadavg_end") or _loadavg()},
        "config": {"quick": cfg.quick, "grid": [c.key for c in cfg.grid], "threads": cfg.threads, "threads_why": cfg.threads_why,
                   "ours_variants": cfg.ours, "budget_s": cfg.budget_s, "max_rounds": cfg.max_rounds,
                   "warm_full_s": cfg.warm_full_s},
        "implementations": {label: z.info for label, z in bench.zygotes.items()},
        "threads": {label: z.threads for label, z in bench.zygotes.items()},
        "wall_s": frozen.get("wall_s") or {"setup": bench.setup_s, "total": time.time() - bench.t_start},
        "flops": bench.flops,
        "conv_peak": bench.peak,
        "plan": bench.plan_log,
        "summary": summ,
        "raw": bench.results,
        "errors": bench.errors,
    }


def _loadavg():
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# ----------------------------------------------------------------------------------------------
def write_plots(bench, summ, out: Path, stem: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # matplotlib is a dev extra; the reports stand without the plots
        bench.errors["plots"] = f"matplotlib unavailable: {e}"
        return []
    rows, labels, paths = summ["rows"], bench.labels, []
    b1 = [c for c in bench.cfg.grid if c.batch == 1]

    # 1. × real time vs length, batch 1, per op
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=False)
    for ax, op in zip(axes, OPS):
        for label in labels:
            pts = [(c.duration, r[op]["x_realtime"]) for c in b1 if (r := _row(rows, c.key, label)) and r.get(op)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name(label))
        ax.set_xscale("log")
        ax.set_xlabel("audio length (s), batch 1")
        ax.set_title(op.replace("roundtrip", "round trip"))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("× real time (higher is faster)")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend()
    fig.suptitle("CPU speed vs input length (medians)")
    fig.tight_layout()
    paths.append(out / f"{stem}-rtf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. peak RSS vs batch (1 s and 5 s)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, secs in zip(axes, (1, 5)):
        cases = sorted([c for c in bench.cfg.grid if c.seconds == secs], key=lambda c: c.batch)
        for label in labels:
            pts = [(c.batch, r["peak_rss_mib"]) for c in cases if (r := _row(rows, c.key, label)) and r.get("peak_rss_mib")]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name(label))
        ax.set_xscale("log", base=2)
        ax.set_xticks([c.batch for c in cases], [str(c.batch) for c in cases])
        ax.set_xlabel(f"batch ({secs} s items)")
        ax.set_ylabel("peak RSS (MiB), round trip")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend()
    fig.suptitle("Peak memory vs batch (one process per implementation and case)")
    fig.tight_layout()
    paths.append(out / f"{stem}-memory.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 3. every case: round trip × real time, grouped bars; and peak RSS vs length
    cases = [c for c in bench.cfg.grid if any(_med(_row(rows, c.key, label), "roundtrip") for label in labels)]
    if cases:
        fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [2, 1]})
        ax = axes[0]
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            ys = [(r["roundtrip"]["x_realtime"] if (r := _row(rows, c.key, label)) and r.get("roundtrip") else 0) for c in cases]
            ax.bar([k + i * width for k in range(len(cases))], ys, width, label=name(label))
        ax.set_xticks([k + width * (len(labels) - 1) / 2 for k in range(len(cases))])
        ax.set_xticklabels([c.key for c in cases], rotation=30)
        ax.set_ylabel("round trip, × real time")
        ax.set_title("ours vs NeMo vs nanocodec-torch (medians)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        ax = axes[1]
        for label in labels:
            pts = [(c.duration, r["peak_rss_mib"]) for c in b1 if (r := _row(rows, c.key, label)) and r.get("peak_rss_mib")]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name(label))
        ax.set_xscale("log")
        ax.set_xlabel("audio length (s), batch 1")
        ax.set_ylabel("peak RSS (MiB), round trip")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        paths.append(out / f"{stem}-compare.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------
def markdown(bench, summ, data, plots) -> str:
    rows, labels, cfg = summ["rows"], bench.labels, bench.cfg
    m = data["machine"]
    la0, la1 = data["loadavg"]["start"], data["loadavg"]["end"]
    peak = summ["peak_gflops"]
    prim = bench.primary
    others = [label for label in labels if label != prim]
    L = []
    title = "CPU benchmark" + (" (QUICK smoke run: not for quoting)" if cfg.quick else "")
    L.append(f"# {title}: nanocodec vs NeMo 3.0.0 vs nanocodec-torch 1.0.0\n")
    L.append(f"Generated {data['generated']} by `make bench{' QUICK=1' if cfg.quick else ''}` (benchmarks/test_bench.py, "
             f"benchmarks/harness.py); raw samples in `{Path(cfg.out).name}/{report_stem(m)}.json`.\n")
    L.append(f"- **CPU**: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['mem_gib']} GiB RAM, ISA: {', '.join(m['isa'])}; "
             f"kernel {m['kernel']}.")
    L.append(f"- **Load average** (1/5/15 min; the machine is shared with other work): {fmt_la(la0)} at the start, "
             f"{fmt_la(la1)} at the end. Timings on a loaded 2-core machine are noisy and slower than on an idle one; "
             "the ratios come from interleaved rounds, so all implementations saw the same conditions.")
    impl_lines = []
    for label in labels:
        info = bench.zygotes[label].info or {}
        impl_lines.append(f"{name(label)}: `{info.get('package')}`, torch {info.get('torch')}, Python {info.get('python')}, "
                          f"{bench.zygotes[label].threads} thread{'s' if bench.zygotes[label].threads > 1 else ''}, {info.get('dtype')}")
    L.append("- **Implementations** (same weights: the seeded full-size 0.6 kbps NeMo checkpoint "
             "`cache/fixtures-full/nano0p6_full.nemo`, 61.8M parameters): " + "; ".join(impl_lines) + ".")
    L.append(f"- **Threads**: {cfg.threads} per implementation ({cfg.threads_why}); one implementation computes at a time.")
    notes = [n for label in labels for n in (bench.zygotes[label].info or {}).get("notes", [])]
    if notes:
        L.append("- **Our options**: " + "; ".join(notes) + ".")
    for label in labels:
        info = bench.zygotes[label].info or {}
        gate, paths = info.get("accuracy_gate"), info.get("conv_paths")
        if gate:
            convs = f"; the model's convs: {paths['channels_last']} channels-last, {paths['ncw']} NCW" if paths else ""
            L.append(f"- **Backend** ({name(label)}: {info.get('backend')}; nanocodec/backends/accuracy_gate.py, "
                     f"{gate['rule']}): conv shapes {gate['channels_last_shapes']} channels-last, "
                     f"{gate['ncw_shapes']} NCW{convs}.")
    total = data["wall_s"]["total"]
    L.append(f"- **Run**: {total / 60:.1f} min in all (model loading {data['wall_s']['setup']:.0f} s); time budget "
             f"{cfg.budget_s:.0f} s for the measurements, rounds per case planned from measured speeds "
             f"(at most {cfg.max_rounds}).")
    L.append("")

    # headline
    b1 = [c for c in cfg.grid if c.batch == 1]
    if prim:
        L.append("## Headline: round trip (encode + decode), batch 1\n")
        every = [prim] + others
        slash = " / ".join(name(x) for x in every)
        hdr = ["length"] + [f"{name(x)} ms" for x in every] + [f"speed-up vs {name(x)}" for x in others]
        hdr += [f"× real time ({slash})", f"peak RSS MiB ({slash})", "rounds"]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        for c in b1:
            res = bench.results.get(c.key, {})
            if res.get("skipped"):
                L.append(f"| {c.seconds:g} s | skipped: {res['skipped']} |" + " |" * (len(hdr) - 2))
                continue
            rs = {x: _row(rows, c.key, x) or {} for x in every}
            cells = [f"{c.seconds:g} s"]
            cells += [fmt_ms(_med(rs[x], "roundtrip")) for x in every]
            cells += ["**" + fmt(speedup(rows, c.key, "roundtrip", prim, x), ".2f") + "×**" for x in others]
            cells += [" / ".join(fmt((rs[x].get("roundtrip") or {}).get("x_realtime"), ".2f") for x in every)]
            cells += [" / ".join(fmt(rs[x].get("peak_rss_mib"), ".0f") for x in every)]
            cells += [str(res.get("rounds_done", res.get("rounds", "—")))]
            L.append("| " + " | ".join(cells) + " |")
        L.append("\nspeed-up vs X = X's median time ÷ ours (above 1: ours is faster). × real time = audio duration ÷ "
                 "processing time. Lengths are whole frames (1 s = 13 frames = 1.04 s).\n")

    # all cases, per op
    L.append("## All cases: medians\n")
    L.append(f"Model cost {fmt_cost(bench)}; GFLOP/s = that nominal cost ÷ median time (the same figure for every "
             f"implementation, \"effective\"); share = of the measured single-conv peak, {fmt(peak, '.0f')} GFLOP/s.\n")
    for op in OPS:
        L.append(f"### {op.replace('roundtrip', 'round trip')}\n")
        hdr = ["case"] + [f"{name(x)}: ms (× RT, GFLOP/s, share)" for x in labels]
        if prim:
            hdr += [f"speed-up vs {name(x)}" for x in others]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        for c in cfg.grid:
            res = bench.results.get(c.key, {})
            if not res:
                continue
            if res.get("skipped"):
                L.append(f"| {c.key} | skipped |" + " |" * (len(hdr) - 2))
                continue
            cells = [c.key]
            for x in labels:
                r = _row(rows, c.key, x)
                s = r.get(op) if r else None
                if not s:
                    cells.append("error" if r and r["errors"] else "—")
                    continue
                share = f", {100 * s['peak_share']:.0f}%" if s.get("peak_share") else ""
                cells.append(f"{fmt_ms(s['median'])} ({s['x_realtime']:.2f}×, {s['gflops']:.0f}{share}) n={s['n']}")
            if prim:
                cells += [fmt(speedup(rows, c.key, op, prim, x), ".2f") + "×" for x in others]
            L.append("| " + " | ".join(cells) + " |")
        L.append("")
    L.append("Encode and decode are the two timed halves of each round trip call (every implementation's forward is "
             "encode then decode); min/max per sample are in the JSON.\n")

    # memory
    L.append("## Peak memory (RSS high-water mark)\n")
    L.append("Method: each implementation loads its model once, in a process that then never computes; every "
             "(implementation, case) runs in a child forked from it for that case alone. The child first maps again "
             "every file-backed page the loaded parent has resident (fork copies only anonymous page tables; "
             "`/proc/<parent>/pagemap`), so it starts with the parent's resident set, then resets the kernel's RSS "
             "high-water mark (`/proc/self/clear_refs` = 5) and reads it (`VmHWM`) after its warm-up and timed round "
             "trips. Each figure is thus the peak RSS of a process that loaded the model and then ran only that case "
             "(weights, framework, heap, activations). Transients of loading itself are not in it: the first row "
             "gives RSS after load and, in brackets, the loading peak.\n")
    hdr = ["case"] + [f"{name(x)} peak MiB" for x in labels]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    loads = ["after load (loading peak)"] + [
        f"{fmt((bench.zygotes[x].info or {}).get('rss_after_load_mib'), '.0f')} "
        f"({fmt((bench.zygotes[x].info or {}).get('hwm_after_load_mib'), '.0f')})" for x in labels]
    L.append("| " + " | ".join(loads) + " |")
    for c in cfg.grid:
        if c.key not in bench.results or bench.results[c.key].get("skipped"):
            continue
        cells = [c.key] + [fmt((_row(rows, c.key, x) or {}).get("peak_rss_mib"), ".0f") for x in labels]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    # compute
    L.append("## Compute: model cost and the CPU's measured peak\n")
    fl = bench.flops or {}
    L.append(f"- Model cost: {fmt_cost(bench)} ({fl.get('method')}; intercept at 0 frames: "
             f"{', '.join(f'{k} {v / 1e9:.3f} GFLOP' for k, v in (fl.get('intercept') or {}).items())}). "
             f"Issue 7 quotes {ISSUE_GFLOP['encode']} + {ISSUE_GFLOP['decode']} GFLOP per audio-second.")
    if bench.peak:
        th = bench.peak["threads"]
        L.append(f"- Peak: single `F.conv1d` layers of the model's shapes, fp32, {th} thread{'s' if th > 1 else ''}, in "
                 f"the environment of {name(bench.peak['measured_in'])} (torch {(bench.zygotes[bench.peak['measured_in']].info or {}).get('torch')}), "
                 f"median of {cfg.peak_reps}:\n")
        L.append("| layer | C_in → C_out, kernel | length | GFLOP | ms | GFLOP/s |")
        L.append("|---|---|---|---|---|---|")
        for s in bench.peak["layers"]:
            L.append(f"| {s['name']} | {s['c_in']} → {s['c_out']}, k={s['kernel']} | {s['length']} | {s['flop'] / 1e9:.2f} | "
                     f"{s['median_s'] * 1000:.1f} | **{s['gflops']:.0f}** |" if s["name"] == bench.peak["peak_layer"] else
                     f"| {s['name']} | {s['c_in']} → {s['c_out']}, k={s['kernel']} | {s['length']} | {s['flop'] / 1e9:.2f} | "
                     f"{s['median_s'] * 1000:.1f} | {s['gflops']:.0f} |")
        L.append(f"\nMeasured peak: **{peak:.0f} GFLOP/s** ({bench.peak['peak_layer']}).\n")

    # agreement
    L.append("## Same weights, same results\n")
    L.append("Tokens (fraction of identical token values) and decoded audio (SNR, max |diff|) of each implementation against "
             "the reference, on each case's first call: a check that all ran the same model on the same input.\n")
    ref = "nemo" if "nemo" in labels else labels[0]
    L.append(f"Reference: {name(ref)}.\n")
    hdr = ["case"] + [f"{name(x)}: tokens equal / SNR dB / max diff" for x in labels if x != ref]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for c in cfg.grid:
        ag = (bench.results.get(c.key) or {}).get("agreement") or {}
        if not ag:
            continue
        cells = [c.key]
        for x in labels:
            if x == ref:
                continue
            e = ag.get(x)
            if not e:
                cells.append("—")
                continue
            te = e.get("tokens_equal")
            cells.append(f"{'—' if te is None else f'{100 * te:.2f}%'} / {fmt(e.get('snr_db'), '.1f')} / "
                         f"{fmt(e.get('max_abs_diff'), '.1e')}" + (f" ({e['note']})" if e.get("note") else ""))
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    if plots:
        L.append("## Plots\n")
        for p in plots:
            L.append(f"![{p.stem}]({p.name})\n")

    L.append("## Method\n")
    L.append(
        "- One worker process per environment (`benchmarks/worker.py`): ours in `.venv`, NeMo in the oracle venv "
        "(`parity/oracle/.venv`), nanocodec-torch 1.0.0 in `cache/bench-venvs/port` (installed with "
        "`pip install nanocodec-torch==1.0.0 torch==2.13.0`). Ours loads `python -m convert`'s output of the .nemo; NeMo "
        "restores the .nemo (`AudioCodecModel.restore_from`); nanocodec-torch loads the .nemo's state dict exported to "
        "safetensors with NeMo's key names through its own `load_safetensors_weights` (which folds weight norm itself).\n"
        "- Input: the committed speech clips tiled to the length, whole frames, batch items at different offsets; written "
        "once to a raw float32 file every worker reads. Calls: `encode(audio [B,T], lengths)` then `decode(tokens, "
        "lengths)` under `torch.inference_mode()`, full-length items.\n"
        "- Timing: `time.perf_counter()` inside the worker around each call only. Per case, every implementation first "
        "makes a warm-up call (the case itself when it is estimated under "
        f"{cfg.warm_full_s:g} s, else a 1 s call), then rounds interleave the implementations in rotating order, one "
        "process computing at a time (the others block on a pipe). Medians over rounds.\n"
        "- pytest-benchmark (`make bench`) reports the same worker-measured samples: its timer is a virtual clock "
        "advanced by them (`benchmarks/clock.py`), so its table carries no inter-process overhead.\n"
    )
    L.append("## Caveats\n")
    cav = [
        "The machine is shared (load averages above): absolute times drift with other work; ratios from the same "
        "interleaved rounds are the robust figures. Long cases get few rounds under the time budget (see the rounds column).",
        "nanocodec-torch floors the token count (`audio_len // 1764`) and masks nothing; with whole-frame inputs all three "
        "produce the same number of frames. NeMo recomputes weight norm on every call; ours and nanocodec-torch fold it at load.",
        "Peak RSS includes each framework's resident footprint (NeMo's is far larger), so it measures what a user's "
        "process holds while coding, not activations alone; the load-time peak is reported apart.",
        "GFLOP/s counts the model's nominal convolution FLOPs, not what an implementation actually executes.",
    ]
    skipped = [c.key for c in cfg.grid if (bench.results.get(c.key) or {}).get("skipped")]
    if skipped:
        cav.insert(0, f"Skipped for the time budget: {', '.join(skipped)} (`make bench BENCH_ARGS='--bench-budget-s 0'` runs without a budget).")
    errs = {**bench.errors}
    for c in cfg.grid:
        for x in labels:
            r = _row(rows, c.key, x)
            if r and r["errors"]:
                errs[f"{c.key}/{x}"] = r["errors"][0].splitlines()[0][:300]
    if errs:
        cav.append("Errors: " + "; ".join(f"{k}: {v.splitlines()[0][:300] if v else v}" for k, v in errs.items()))
    L += [f"- {c}" for c in cav]
    L.append("")
    return "\n".join(L)


ISSUE_GFLOP = {"encode": 27.95, "decode": 34.29}


def fmt_la(la):
    return " / ".join(f"{v:.2f}" for v in la) if la else "n/a"


def fmt_cost(bench) -> str:
    g = (bench.flops or {}).get("gflop_per_audio_second") or {}
    if not g:
        return "n/a"
    return f"{g['encode'] + g['decode']:.2f} GFLOP per audio-second (encode {g['encode']:.2f}, decode {g['decode']:.2f})"


# ----------------------------------------------------------------------------------------------
def replay(json_path: Path, out: Path | None = None):
    """A finished run, read back from its JSON, in the shape write_reports expects."""
    from types import SimpleNamespace

    from harness import Bench, Case, Config

    data = json.loads(Path(json_path).read_text())
    c = data["config"]
    cfg = Config(quick=c["quick"], grid=[Case(float(k.split("s-b")[0]), int(k.split("s-b")[1])) for k in c["grid"]],
                 ours=c["ours_variants"], threads=c["threads"], threads_why=c.get("threads_why", ""),
                 budget_s=c["budget_s"], max_rounds=c["max_rounds"], warm_full_s=c["warm_full_s"],
                 out=Path(out) if out else Path(json_path).parent)
    layers = (data.get("conv_peak") or {}).get("layers") or []
    cfg.peak_reps = len(layers[0]["times"]) if layers else cfg.peak_reps
    bench = Bench.__new__(Bench)
    bench.cfg = cfg
    bench.zygotes = {label: SimpleNamespace(info=info, threads=data["threads"][label],
                                            impl="ours" if label.startswith("ours") else label)
                     for label, info in data["implementations"].items()}
    bench.results, bench.errors = data["raw"], data["errors"]
    bench.flops, bench.peak, bench.plan_log = data["flops"], data["conv_peak"], data["plan"]
    bench.loadavg_start, bench.setup_s, bench.t_start = data["loadavg"]["start"], data["wall_s"]["setup"], 0.0
    bench.frozen = {"generated": data["generated"], "machine": data["machine"], "loadavg_end": data["loadavg"]["end"],
                    "wall_s": data["wall_s"]}
    return bench


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    ap = argparse.ArgumentParser(description="render a benchmark run's reports again from its JSON")
    ap.add_argument("json")
    ap.add_argument("--out")
    a = ap.parse_args()
    for p in write_reports(replay(Path(a.json), a.out)):
        print(p)
