"""The reports of a CPU benchmark run (benchmarks/harness.py), from its record alone: <out>/bench-cpu-<vendor>.md,
.json and .png (vendor: intel, amd or arm, parity.machine.cpu_vendor).

    .venv/bin/python benchmarks/report.py reports/bench-cpu-amd.json [--out DIR]

renders the markdown and the plot again from a run's JSON (no measuring); older runs' JSONs render too.
"""
from __future__ import annotations

import json
from pathlib import Path

from common import ISSUE_GFLOP_PER_S, OPS, Case, fmt, loadavg_text, stats, table, write_atomic

NAMES = {"nemo": "NeMo 3.0.0", "port": "nanocodec-torch 1.0.0"}


def name(label: str) -> str:
    return NAMES.get(label, label)


def gflop_per_audio_second(data: dict) -> dict:
    """The model's cost: runs before issue 17 recounted it (the same figures), later ones record the constant."""
    return (data.get("flops") or {}).get("gflop_per_audio_second") or dict(ISSUE_GFLOP_PER_S)


def summarize(data: dict) -> dict:
    """Per (case, implementation): each op's sample statistics with × real time and effective GFLOP/s; the
    case's peak RSS."""
    peak, cost = (data.get("conv_peak") or {}).get("peak_gflops"), gflop_per_audio_second(data)
    rows = []
    for case in map(Case.parse, data["config"]["grid"]):
        res = data["raw"].get(case.key)
        for label in (data["implementations"] if res else []):
            entry = res.get("impl", {}).get(label, {})
            row = {"case": case.key, "impl": label, "skipped": res.get("skipped"), "errors": entry.get("errors", []),
                   "peak_rss_mib": (entry.get("memory") or {}).get("peak_rss_mib")}
            for op in OPS:
                if s := stats(entry.get(op, [])):
                    gflop = sum(cost[o] for o in (("encode", "decode") if op == "roundtrip" else (op,))) * case.audio_seconds
                    s.update(x_realtime=case.audio_seconds / s["median"], gflops=gflop / s["median"])
                row[op] = s
            rows.append(row)
    return {"rows": rows, "peak_gflops": peak}


def report_stem(machine: dict) -> str:
    """bench-cpu-<intel|amd|arm>: one report per CPU vendor, since speed (and which conv paths the accuracy
    gate lets run channels-last) differ between them. Runs that predate the vendor field: from the CPU's name."""
    cpu = machine.get("cpu", "").lower()
    return f"bench-cpu-{machine.get('vendor') or next((v for v in ('intel', 'amd') if v in cpu), 'other')}"


def write_reports(data: dict, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data["summary"] = summarize(data)
    stem = report_stem(data["machine"])
    write_atomic(out / f"{stem}.json", json.dumps(data, indent=1, default=str) + "\n")
    plots = write_plot(data, out / f"{stem}.png")
    write_atomic(out / f"{stem}.md", markdown(data, plots, f"{out.name}/{stem}.json"))
    return [out / f"{stem}.json", out / f"{stem}.md"] + plots


def _index(data: dict) -> tuple[dict, list, str]:
    """(case, label) -> summary row; the labels; the one the speed-ups are of (ours, else the first)."""
    rows = {(r["case"], r["impl"]): r for r in data["summary"]["rows"]}
    labels = list(data["implementations"])
    return rows, labels, next((lb for lb in labels if lb.startswith("ours")), labels[0])


def _med(row, op):
    return row[op]["median"] if row and row.get(op) else None


def _speedup(rows, key, op, a, b):
    ra, rb = _med(rows.get((key, a)), op), _med(rows.get((key, b)), op)
    return rb / ra if ra and rb else None


def write_plot(data: dict, path: Path) -> list[Path]:
    """One figure, batch 1 against input length: round trip × real time, and peak RSS (the batches: tables)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # matplotlib is a dev extra; the reports stand without the plot
        data["errors"]["plots"] = f"matplotlib unavailable: {e}"
        return []
    rows, labels, _ = _index(data)
    b1 = [c for c in map(Case.parse, data["config"]["grid"]) if c.batch == 1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = [(lambda r: (r.get("roundtrip") or {}).get("x_realtime"), "round trip, × real time (higher is faster)"),
              (lambda r: r.get("peak_rss_mib"), "peak RSS (MiB), one process per case")]
    for ax, (value, ylabel) in zip(axes, panels):
        for label in labels:
            if pts := [(c.duration, v) for c in b1 if (r := rows.get((c.key, label))) and (v := value(r))]:
                ax.plot(*zip(*pts), marker="o", label=name(label))
        ax.set_xscale("log")
        ax.set_xticks([c.duration for c in b1], [f"{c.seconds:g}" for c in b1])
        ax.set(xlabel="audio length (s), batch 1", ylabel=ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    if axes[1].lines:  # none when no batch-1 case ran
        axes[1].legend(loc="upper left")  # the RSS panel has room there
    fig.suptitle("CPU: ours vs NeMo vs nanocodec-torch (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _setup_lines(data: dict) -> list[str]:
    """The bullet list above the tables: machine, load, implementations, threads, our backend and precision, budget."""
    cfg, m, impls, threads, la = data["config"], data["machine"], data["implementations"], data["threads"], data["loadavg"]
    L = [f"- **CPU**: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['mem_gib']} GiB RAM, ISA: {', '.join(m['isa'])}; "
         f"kernel {m['kernel']}.",
         f"- **Load average** (1/5/15 min; the machine is shared with other work): {loadavg_text(la['start'])} at the start, "
         f"{loadavg_text(la.get('end'))} at the end. The ratios come from interleaved rounds, so all implementations saw the "
         "same conditions.",
         "- **Implementations** (same weights: the seeded full-size 0.6 kbps NeMo checkpoint "
         "`cache/fixtures-full/nano0p6_full.nemo`, 61.8M parameters): " + "; ".join(
             f"{name(lb)}: `{i.get('package')}`, torch {i.get('torch')}, Python {i.get('python')}, {threads[lb]} "
             f"thread{'s' if threads[lb] > 1 else ''}, {i.get('dtype')}" for lb, i in impls.items()) + ".",
         f"- **Threads**: {cfg['threads']} per implementation ({cfg['threads_why']}); one implementation computes at a time."]
    for lb, i in impls.items():
        if gate := i.get("accuracy_gate"):
            paths = i.get("conv_paths")
            convs = f"; the model's convs: {paths['channels_last']} channels-last, {paths['ncw']} NCW" if paths else ""
            L.append(f"- **Backend** ({name(lb)}: {i.get('backend')}; nanocodec/backends/accuracy_gate.py, {gate['rule']}): "
                     f"conv shapes {gate['channels_last_shapes']} channels-last, {gate['ncw_shapes']} NCW{convs}.")
        if p := i.get("precision"):
            L.append(f"- **Precision policy** ({name(lb)}, nanocodec/precision.py, contracts §10): "
                     + ", ".join(f"{k} {v}" for k, v in p.items()) + ".")
    return L + [f"- **Run**: {data['wall_s']['total'] / 60:.1f} min in all (model loading {data['wall_s']['setup']:.0f} s); time "
                f"budget {cfg['budget_s']:.0f} s for the measurements, at most {cfg['max_rounds']} rounds per case.", ""]


def _cases_table(data: dict, grid: list) -> list[str]:
    """Round trip per case (batch 1 by length first: the headline): each implementation's median time with its
    encode + decode halves, ours' speed-ups over the others, × real time, effective GFLOP/s, peak RSS, rounds."""
    rows, labels, prim = _index(data)
    raw, others = data["raw"], [lb for lb in labels if lb != prim]
    every = [prim] + others
    slash = " / ".join(map(name, every))
    hdr = (["case"] + [f"{name(x)} ms (enc + dec)" for x in every] + [f"speed-up vs {name(x)}" for x in others]
           + [f"× real time ({slash})", f"GFLOP/s ({slash})", f"peak RSS MiB ({slash})", "rounds"])
    body = []
    for c in (c for c in grid if c.key in raw):
        if raw[c.key].get("skipped"):
            body.append([c.key, f"skipped: {raw[c.key]['skipped']}"])
            continue
        rs = {x: rows.get((c.key, x)) or {} for x in every}
        body.append([c.key] + [_ms_split(rs[x]) for x in every]
                    + [f"**{fmt(_speedup(rows, c.key, 'roundtrip', prim, x))}×**" for x in others]
                    + [" / ".join(fmt((rs[x].get("roundtrip") or {}).get(k), spec) for x in every)
                       for k, spec in (("x_realtime", ".2f"), ("gflops", ".0f"))]
                    + [" / ".join(fmt(rs[x].get("peak_rss_mib"), ".0f") for x in every),
                       str(raw[c.key].get("rounds_done", raw[c.key].get("rounds", "—")))])
    return table(hdr, body)


def _ms_split(row: dict) -> str:
    """'1664 (665 + 1000)': the round trip median and its two timed halves' medians, ms; 'error' or '—' without."""
    if not row.get("roundtrip"):
        return "error" if row.get("errors") else "—"
    return f"{_ms(_med(row, 'roundtrip'))} ({_ms(_med(row, 'encode'))} + {_ms(_med(row, 'decode'))})"


def _compute(data: dict, cost: str) -> list[str]:
    """The model's cost and the CPU's conv peak, layer by layer."""
    pk, impls = data.get("conv_peak"), data["implementations"]
    L = ["## Compute: model cost and the CPU's measured peak\n",
         f"- Model cost: {cost} ({data['flops'].get('method')}); issue 7 quotes 27.95 + 34.29 GFLOP per audio-second."]
    if pk:
        L.append(f"- Peak: single `F.conv1d` layers of the model's shapes, fp32, {pk['threads']} thread"
                 f"{'s' if pk['threads'] > 1 else ''}, in the environment of {name(pk['measured_in'])} (torch "
                 f"{(impls.get(pk['measured_in']) or {}).get('torch')}), median of {len(pk['layers'][0]['times'])}:\n")
        L += table(["layer", "C_in → C_out, kernel", "length", "GFLOP", "ms", "GFLOP/s"], [
            [s["name"], f"{s['c_in']} → {s['c_out']}, k={s['kernel']}", s["length"], f"{s['flop'] / 1e9:.2f}",
             f"{s['median_s'] * 1000:.1f}", f"**{s['gflops']:.0f}**" if s["name"] == pk["peak_layer"] else f"{s['gflops']:.0f}"]
            for s in pk["layers"]])
        L.append(f"\nMeasured peak: **{pk['peak_gflops']:.0f} GFLOP/s** ({pk['peak_layer']}).\n")
    return L


def markdown(data: dict, plots: list, json_name: str) -> str:
    cfg, raw, impls, peak = data["config"], data["raw"], data["implementations"], data["summary"]["peak_gflops"]
    labels = list(impls)
    grid = [Case.parse(k) for k in cfg["grid"]]
    g = gflop_per_audio_second(data)
    cost = f"{g['encode'] + g['decode']:.2f} GFLOP per audio-second (encode {g['encode']:.2f}, decode {g['decode']:.2f})"
    quick = cfg["quick"]
    L = [f"# CPU benchmark{' (QUICK smoke run: not for quoting)' if quick else ''}: nanocodec vs NeMo 3.0.0 vs "
         "nanocodec-torch 1.0.0\n",
         f"Generated {data['generated']} by `make bench{' QUICK=1' if quick else ''}` (benchmarks/harness.py); "
         f"raw samples in `{json_name}`. How it measures: benchmarks/README.md.\n"] + _setup_lines(data)
    L += ["## Round trip (encode + decode), medians\n"] + _cases_table(data, grid) + [
        "\nspeed-up vs X = X's median time ÷ ours (above 1: ours is faster). × real time = audio duration ÷ processing "
        "time. GFLOP/s = the model's nominal convolution FLOPs ÷ median time (\"effective\", not what an implementation "
        f"executes; the measured single-conv peak: {fmt(peak, '.0f')} GFLOP/s). Lengths are whole frames (1 s = 13 frames = "
        "1.04 s); min/max per sample and each half's GFLOP/s are in the JSON.\n",
        "Peak RSS: each (implementation, case) runs in a child forked for it alone from a process that loaded the model "
        "and never computes; the child maps the parent's resident file pages again, resets the high-water mark "
        "(`/proc/self/clear_refs`) and reads `VmHWM` after its calls: the peak of a process that loaded the model and then "
        "ran only that case. After load: " + ", ".join(
            f"{name(lb)} {fmt(i.get('rss_after_load_mib'), '.0f')} MiB (loading peak {fmt(i.get('hwm_after_load_mib'), '.0f')})"
            for lb, i in impls.items()) + ".\n"] + _compute(data, cost)
    ref = "nemo" if "nemo" in labels else labels[0]
    L += ["## Same weights, same results\n",
          f"Each implementation against {name(ref)} on each case's first call: fraction of identical token values, decoded "
          "audio's SNR and max |diff|.\n"]
    body = [[c.key] + [_agreement_cell(ag.get(x)) for x in labels if x != ref] for c in grid
            if (ag := (raw.get(c.key) or {}).get("agreement"))]
    L += table(["case"] + [f"{name(x)}: tokens equal / SNR dB / max diff" for x in labels if x != ref], body) + [""]
    L += ["## Plots\n"] + [f"![{p.stem}]({p.name})\n" for p in plots] if plots else []
    cav = [
        "Timing: `time.perf_counter()` in the worker around each call only. Per case every implementation first makes a "
        f"warm-up call (the case itself when estimated under {cfg['warm_full_s']:g} s, else a 1 s call), then rounds "
        "interleave them in rotating order, one process computing at a time; medians over rounds.",
        "The machine is shared (load averages above): absolute times drift with other work; ratios from the same "
        "interleaved rounds are the robust figures. Long cases get few rounds under the time budget (the rounds column).",
        "nanocodec-torch floors the token count (`audio_len // 1764`) and masks nothing; with whole-frame inputs all three "
        "produce the same number of frames. NeMo recomputes weight norm on every call; ours and nanocodec-torch fold it at load.",
        "Peak RSS includes each framework's resident footprint (NeMo's is far larger): what a user's process holds while "
        "coding, not activations alone."]
    if skipped := [c.key for c in grid if (raw.get(c.key) or {}).get("skipped")]:
        cav.insert(0, f"Skipped for the time budget: {', '.join(skipped)} (`make bench BENCH_ARGS='--bench-budget-s 0'` "
                   "runs without a budget).")
    errs = {**data["errors"], **{f"{r['case']}/{r['impl']}": r["errors"][0] for r in data["summary"]["rows"] if r["errors"]}}
    if errs:
        cav.append("Errors: " + "; ".join(f"{k}: {v.splitlines()[0][:300] if v else v}" for k, v in errs.items()))
    return "\n".join(L + ["## Method and caveats\n"] + [f"- {c}" for c in cav] + [""])


def _agreement_cell(e: dict | None) -> str:
    if not e:
        return "—"
    tokens = "—" if e.get("tokens_equal") is None else f"{100 * e['tokens_equal']:.2f}%"
    return f"{tokens} / {fmt(e.get('snr_db'), '.1f')} / {fmt(e.get('max_abs_diff'), '.1e')}" + (f" ({e['note']})" if e.get("note") else "")


def _ms(x):
    return "—" if x is None else (f"{x * 1000:.0f}" if x >= 0.1 else f"{x * 1000:.1f}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="render a benchmark run's reports again from its JSON")
    ap.add_argument("json")
    ap.add_argument("--out")
    a = ap.parse_args()
    for p in write_reports(json.loads(Path(a.json).read_text()), Path(a.out) if a.out else Path(a.json).parent):
        print(p)
