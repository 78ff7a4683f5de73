"""The reports of a CPU benchmark run (benchmarks/harness.py), from its record alone: <out>/bench-cpu-<vendor>.md,
.json and three PNG plots (vendor: intel, amd or arm, parity.machine.cpu_vendor).

    .venv/bin/python benchmarks/report.py reports/bench-cpu-amd.json [--out DIR]

renders the markdown and the plots again from a run's JSON (no measuring).
"""
from __future__ import annotations

import json
from pathlib import Path

from common import OPS, Case, fmt, loadavg_text, stats, table, write_atomic

NAMES = {"nemo": "NeMo 3.0.0", "port": "nanocodec-torch 1.0.0"}


def name(label: str) -> str:
    return NAMES.get(label, label)


def summarize(data: dict) -> dict:
    """Per (case, implementation): each op's sample statistics with × real time, effective GFLOP/s and share
    of the measured peak; the case's peak RSS."""
    peak = (data.get("conv_peak") or {}).get("peak_gflops")
    per_frame = data["flops"]["per_frame"]
    rows = []
    for case in map(Case.parse, data["config"]["grid"]):
        res = data["raw"].get(case.key)
        for label in (data["implementations"] if res else []):
            entry = res.get("impl", {}).get(label, {})
            row = {"case": case.key, "impl": label, "skipped": res.get("skipped"), "errors": entry.get("errors", []),
                   "peak_rss_mib": (entry.get("memory") or {}).get("peak_rss_mib")}
            for op in OPS:
                if s := stats(entry.get(op, [])):
                    gflop = sum(per_frame[o] for o in (("encode", "decode") if op == "roundtrip" else (op,))) * case.frames * case.batch / 1e9
                    s.update(x_realtime=case.audio_seconds / s["median"], gflops=gflop / s["median"])
                    s["peak_share"] = s["gflops"] / peak if peak else None
                row[op] = s
            rows.append(row)
    return {"rows": rows, "peak_gflops": peak}


def report_stem(machine: dict) -> str:
    """bench-cpu-<intel|amd|arm>: one report per CPU vendor, since speed (and which conv paths the accuracy
    gate lets run channels-last) differ between them."""
    return f"bench-cpu-{machine.get('vendor', 'other')}"


def write_reports(data: dict, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data["summary"] = summarize(data)
    stem = report_stem(data["machine"])
    write_atomic(out / f"{stem}.json", json.dumps(data, indent=1, default=str) + "\n")
    plots = write_plots(data, out, stem)
    write_atomic(out / f"{stem}.md", markdown(data, plots, f"{out.name}/{stem}.json"))
    return [out / f"{stem}.json", out / f"{stem}.md"] + plots


def _index(data: dict) -> tuple[dict, list, str | None]:
    rows = {(r["case"], r["impl"]): r for r in data["summary"]["rows"]}
    labels = list(data["implementations"])
    return rows, labels, next((lb for lb in labels if lb.startswith("ours")), None)


def _med(row, op):
    return row[op]["median"] if row and row.get(op) else None


def _speedup(rows, key, op, a, b):
    ra, rb = _med(rows.get((key, a)), op), _med(rows.get((key, b)), op)
    return rb / ra if ra and rb else None


def write_plots(data: dict, out: Path, stem: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # matplotlib is a dev extra; the reports stand without the plots
        data["errors"]["plots"] = f"matplotlib unavailable: {e}"
        return []
    rows, labels, _ = _index(data)
    grid = [Case.parse(k) for k in data["config"]["grid"]]
    b1 = [c for c in grid if c.batch == 1]

    def lines(ax, cases, x, y, xlabel, ylabel, log_base=10):
        for label in labels:
            pts = [(x(c), v) for c in cases if (r := rows.get((c.key, label))) and (v := y(r))]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name(label))
        ax.set_xscale("log", base=log_base)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)

    def save(fig, suffix):
        fig.tight_layout()
        paths.append(out / f"{stem}-{suffix}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    def rss(r):
        return r.get("peak_rss_mib")

    paths: list[Path] = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, op in zip(axes, OPS):
        lines(ax, b1, lambda c: c.duration, lambda r: (r.get(op) or {}).get("x_realtime"), "audio length (s), batch 1",
              "× real time (higher is faster)" if op == "encode" else "")
        ax.set_title(op.replace("roundtrip", "round trip"))
    axes[-1].legend()
    fig.suptitle("CPU speed vs input length (medians)")
    save(fig, "rtf")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, secs in zip(axes, (1, 5)):
        cases = sorted((c for c in grid if c.seconds == secs), key=lambda c: c.batch)
        lines(ax, cases, lambda c: c.batch, rss, f"batch ({secs} s items)", "peak RSS (MiB), round trip", log_base=2)
        ax.set_xticks([c.batch for c in cases], [str(c.batch) for c in cases])
    axes[0].legend()
    fig.suptitle("Peak memory vs batch (one process per implementation and case)")
    save(fig, "memory")
    cases = [c for c in grid if any(_med(rows.get((c.key, lb)), "roundtrip") for lb in labels)]
    if cases:
        fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [2, 1]})
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            ys = [((rows.get((c.key, label)) or {}).get("roundtrip") or {}).get("x_realtime", 0) for c in cases]
            axes[0].bar([k + i * width for k in range(len(cases))], ys, width, label=name(label))
        axes[0].set_xticks([k + width * (len(labels) - 1) / 2 for k in range(len(cases))], [c.key for c in cases], rotation=30)
        axes[0].set(ylabel="round trip, × real time", title="ours vs NeMo vs nanocodec-torch (medians)")
        axes[0].grid(axis="y", alpha=0.3)
        axes[0].legend()
        lines(axes[1], b1, lambda c: c.duration, rss, "audio length (s), batch 1", "peak RSS (MiB), round trip")
        save(fig, "compare")
    return paths


def markdown(data: dict, plots: list, json_name: str) -> str:
    rows, labels, prim = _index(data)
    cfg, m, raw, peak = data["config"], data["machine"], data["raw"], data["summary"]["peak_gflops"]
    grid = [Case.parse(k) for k in cfg["grid"]]
    others = [lb for lb in labels if lb != prim]
    impls, threads = data["implementations"], data["threads"]
    la = data["loadavg"]
    g = data["flops"]["gflop_per_audio_second"]
    cost = f"{g['encode'] + g['decode']:.2f} GFLOP per audio-second (encode {g['encode']:.2f}, decode {g['decode']:.2f})"
    L = [f"# CPU benchmark{' (QUICK smoke run: not for quoting)' if cfg['quick'] else ''}: nanocodec vs NeMo 3.0.0 vs "
         "nanocodec-torch 1.0.0\n",
         f"Generated {data['generated']} by `make bench{' QUICK=1' if cfg['quick'] else ''}` (benchmarks/harness.py); "
         f"raw samples in `{json_name}`.\n",
         f"- **CPU**: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['mem_gib']} GiB RAM, ISA: {', '.join(m['isa'])}; "
         f"kernel {m['kernel']}.",
         f"- **Load average** (1/5/15 min; the machine is shared with other work): {loadavg_text(la['start'])} at the start, "
         f"{loadavg_text(la.get('end'))} at the end. Timings on a loaded 2-core machine are noisy and slower than on an idle one; "
         "the ratios come from interleaved rounds, so all implementations saw the same conditions.",
         "- **Implementations** (same weights: the seeded full-size 0.6 kbps NeMo checkpoint "
         "`cache/fixtures-full/nano0p6_full.nemo`, 61.8M parameters): " + "; ".join(
             f"{name(lb)}: `{i.get('package')}`, torch {i.get('torch')}, Python {i.get('python')}, {threads[lb]} "
             f"thread{'s' if threads[lb] > 1 else ''}, {i.get('dtype')}" for lb, i in impls.items()) + ".",
         f"- **Threads**: {cfg['threads']} per implementation ({cfg['threads_why']}); one implementation computes at a time."]
    if notes := [n for i in impls.values() for n in i.get("notes", [])]:
        L.append("- **Our options**: " + "; ".join(notes) + ".")
    for lb, i in impls.items():
        if gate := i.get("accuracy_gate"):
            paths = i.get("conv_paths")
            convs = f"; the model's convs: {paths['channels_last']} channels-last, {paths['ncw']} NCW" if paths else ""
            L.append(f"- **Backend** ({name(lb)}: {i.get('backend')}; nanocodec/backends/accuracy_gate.py, {gate['rule']}): "
                     f"conv shapes {gate['channels_last_shapes']} channels-last, {gate['ncw_shapes']} NCW{convs}.")
        if p := i.get("precision"):
            L.append(f"- **Precision policy** ({name(lb)}, nanocodec/precision.py, contracts §10): "
                     + ", ".join(f"{k} {v}" for k, v in p.items()) + ".")
    L += [f"- **Run**: {data['wall_s']['total'] / 60:.1f} min in all (model loading {data['wall_s']['setup']:.0f} s); time "
          f"budget {cfg['budget_s']:.0f} s for the measurements, rounds per case planned from measured speeds (at most "
          f"{cfg['max_rounds']}).", ""]
    if prim:
        every = [prim] + others
        slash = " / ".join(map(name, every))
        hdr = (["length"] + [f"{name(x)} ms" for x in every] + [f"speed-up vs {name(x)}" for x in others]
               + [f"× real time ({slash})", f"peak RSS MiB ({slash})", "rounds"])
        body = []
        for c in (c for c in grid if c.batch == 1 and c.key in raw):
            if raw[c.key].get("skipped"):
                body.append([f"{c.seconds:g} s", f"skipped: {raw[c.key]['skipped']}"])
                continue
            rs = {x: rows.get((c.key, x)) or {} for x in every}
            body.append([f"{c.seconds:g} s"] + [_ms(_med(rs[x], "roundtrip")) for x in every]
                        + [f"**{fmt(_speedup(rows, c.key, 'roundtrip', prim, x))}×**" for x in others]
                        + [" / ".join(fmt((rs[x].get("roundtrip") or {}).get("x_realtime")) for x in every),
                           " / ".join(fmt(rs[x].get("peak_rss_mib"), ".0f") for x in every),
                           str(raw[c.key].get("rounds_done", raw[c.key].get("rounds", "—")))])
        L += ["## Headline: round trip (encode + decode), batch 1\n"] + table(hdr, body)
        L.append("\nspeed-up vs X = X's median time ÷ ours (above 1: ours is faster). × real time = audio duration ÷ "
                 "processing time. Lengths are whole frames (1 s = 13 frames = 1.04 s).\n")
    L += ["## All cases: medians\n", f"Model cost {cost}; GFLOP/s = that nominal cost ÷ median time (the same figure for "
          f"every implementation, \"effective\"); share = of the measured single-conv peak, {fmt(peak, '.0f')} GFLOP/s.\n"]
    for op in OPS:
        body = []
        for c in (c for c in grid if c.key in raw):
            if raw[c.key].get("skipped"):
                body.append([c.key, "skipped"])
                continue
            cells = [c.key]
            for x in labels:
                r = rows.get((c.key, x))
                s = r.get(op) if r else None
                share = f", {100 * s['peak_share']:.0f}%" if s and s.get("peak_share") else ""
                cells.append(f"{_ms(s['median'])} ({s['x_realtime']:.2f}×, {s['gflops']:.0f}{share}) n={s['n']}" if s
                             else "error" if r and r["errors"] else "—")
            body.append(cells + ([fmt(_speedup(rows, c.key, op, prim, x)) + "×" for x in others] if prim else []))
        hdr = ["case"] + [f"{name(x)}: ms (× RT, GFLOP/s, share)" for x in labels] + ([f"speed-up vs {name(x)}" for x in others] if prim else [])
        L += [f"### {op.replace('roundtrip', 'round trip')}\n"] + table(hdr, body) + [""]
    L.append("Encode and decode are the two timed halves of each round trip call (every implementation's forward is "
             "encode then decode); min/max per sample are in the JSON.\n")
    L += ["## Peak memory (RSS high-water mark)\n",
          "Method: each implementation loads its model once, in a process that then never computes; every "
          "(implementation, case) runs in a child forked from it for that case alone. The child first maps again "
          "every file-backed page the loaded parent has resident (fork copies only anonymous page tables; "
          "`/proc/<parent>/pagemap`), so it starts with the parent's resident set, then resets the kernel's RSS "
          "high-water mark (`/proc/self/clear_refs` = 5) and reads it (`VmHWM`) after its warm-up and timed round "
          "trips. Each figure is thus the peak RSS of a process that loaded the model and then ran only that case "
          "(weights, framework, heap, activations). Transients of loading itself are not in it: the first row "
          "gives RSS after load and, in brackets, the loading peak.\n"]
    body = [["after load (loading peak)"] + [f"{fmt(i.get('rss_after_load_mib'), '.0f')} ({fmt(i.get('hwm_after_load_mib'), '.0f')})"
                                             for i in impls.values()]]
    body += [[c.key] + [fmt((rows.get((c.key, x)) or {}).get("peak_rss_mib"), ".0f") for x in labels]
             for c in grid if c.key in raw and not raw[c.key].get("skipped")]
    L += table(["case"] + [f"{name(x)} peak MiB" for x in labels], body) + [""]
    fl, pk = data["flops"], data.get("conv_peak")
    L += ["## Compute: model cost and the CPU's measured peak\n",
          f"- Model cost: {cost} ({fl.get('method')}; intercept at 0 frames: "
          f"{', '.join(f'{k} {v / 1e9:.3f} GFLOP' for k, v in fl['intercept'].items())}). Issue 7 quotes 27.95 + 34.29 GFLOP "
          "per audio-second."]
    if pk:
        torch_of = (impls.get(pk["measured_in"]) or {}).get("torch")
        L.append(f"- Peak: single `F.conv1d` layers of the model's shapes, fp32, {pk['threads']} thread"
                 f"{'s' if pk['threads'] > 1 else ''}, in the environment of {name(pk['measured_in'])} (torch {torch_of}), "
                 f"median of {len(pk['layers'][0]['times'])}:\n")
        L += table(["layer", "C_in → C_out, kernel", "length", "GFLOP", "ms", "GFLOP/s"], [
            [s["name"], f"{s['c_in']} → {s['c_out']}, k={s['kernel']}", s["length"], f"{s['flop'] / 1e9:.2f}",
             f"{s['median_s'] * 1000:.1f}", f"**{s['gflops']:.0f}**" if s["name"] == pk["peak_layer"] else f"{s['gflops']:.0f}"]
            for s in pk["layers"]])
        L.append(f"\nMeasured peak: **{peak:.0f} GFLOP/s** ({pk['peak_layer']}).\n")
    ref = "nemo" if "nemo" in labels else labels[0]
    L += ["## Same weights, same results\n",
          "Tokens (fraction of identical token values) and decoded audio (SNR, max |diff|) of each implementation against "
          "the reference, on each case's first call: a check that all ran the same model on the same input.\n",
          f"Reference: {name(ref)}.\n"]
    body = []
    for c in grid:
        if ag := (raw.get(c.key) or {}).get("agreement"):
            body.append([c.key] + [_agreement_cell(ag.get(x)) for x in labels if x != ref])
    L += table(["case"] + [f"{name(x)}: tokens equal / SNR dB / max diff" for x in labels if x != ref], body) + [""]
    if plots:
        L += ["## Plots\n"] + [f"![{p.stem}]({p.name})\n" for p in plots]
    L += ["## Method\n",
          "- One worker process per environment (`benchmarks/worker.py`): ours in `.venv`, NeMo in the oracle venv "
          "(`parity/oracle/.venv`), nanocodec-torch 1.0.0 in `cache/bench-venvs/port` (installed with "
          "`pip install nanocodec-torch==1.0.0 torch==2.13.0`). Ours loads `python -m convert`'s output of the .nemo; NeMo "
          "restores the .nemo (`AudioCodecModel.restore_from`); nanocodec-torch loads the .nemo's state dict exported to "
          "safetensors with NeMo's key names through its own `load_safetensors_weights` (which folds weight norm itself).\n"
          "- Input: the committed speech clips tiled to the length, whole frames, batch items at different offsets; written "
          "once to a raw float32 file every worker reads. Calls: `encode(audio [B,T], lengths)` then `decode(tokens, "
          "lengths)` under `torch.inference_mode()`, full-length items.\n"
          "- Timing: `time.perf_counter()` inside the worker around each call only (no pytest-benchmark: every figure here "
          "is one the workers measured). Per case, every implementation first makes a warm-up call (the case itself when "
          f"it is estimated under {cfg['warm_full_s']:g} s, else a 1 s call), then rounds interleave the implementations "
          "in rotating order, one process computing at a time (the others block on a pipe). Medians over rounds.\n",
          "## Caveats\n"]
    cav = [
        "The machine is shared (load averages above): absolute times drift with other work; ratios from the same "
        "interleaved rounds are the robust figures. Long cases get few rounds under the time budget (see the rounds column).",
        "nanocodec-torch floors the token count (`audio_len // 1764`) and masks nothing; with whole-frame inputs all three "
        "produce the same number of frames. NeMo recomputes weight norm on every call; ours and nanocodec-torch fold it at load.",
        "Peak RSS includes each framework's resident footprint (NeMo's is far larger), so it measures what a user's "
        "process holds while coding, not activations alone; the load-time peak is reported apart.",
        "GFLOP/s counts the model's nominal convolution FLOPs, not what an implementation actually executes."]
    if skipped := [c.key for c in grid if (raw.get(c.key) or {}).get("skipped")]:
        cav.insert(0, f"Skipped for the time budget: {', '.join(skipped)} (`make bench BENCH_ARGS='--bench-budget-s 0'` "
                   "runs without a budget).")
    errs = {**data["errors"], **{f"{r['case']}/{r['impl']}": r["errors"][0] for r in data["summary"]["rows"] if r["errors"]}}
    if errs:
        cav.append("Errors: " + "; ".join(f"{k}: {v.splitlines()[0][:300] if v else v}" for k, v in errs.items()))
    return "\n".join(L + [f"- {c}" for c in cav] + [""])


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
