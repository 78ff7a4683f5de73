"""Tier 2, live parity: NeMo side by side, fresh seeds and inputs, compared in the same run.

  python -m parity.live [--seed S] [--profile default|quick] [--report reports]      (make parity-live [SEED=S])
  python -m parity.live --nemo path/to/user.nemo [--report reports]                  (make parity NEMO=...)

1. NeMo, in the oracle environment (ORACLE_PY, default parity/oracle/.venv/bin/python; `make oracle`),
   runs parity/oracle/live_nemo.py: it builds fresh seeded `.nemo` files of every variant (0.6 kbps
   replicate and reflect, legacy weight norm, with discriminator, 1.78, 1.89, the full-size 0.6 kbps)
   or restores the user's `.nemo`, draws fresh inputs from the seed and writes its outputs to a work folder.
2. Here, each `.nemo` is converted with OUR converter (convert.converter.convert), loaded, and compared
   with parity/run.py's comparisons under the contracts §5 rules: items (tokens with boundary diagnosis,
   latents, decode of NeMo's tokens, forward), ragged batches in both modes, and inputs NeMo refuses
   (the reflect variant below its minimum length) which we must refuse too.
3. Layout "nemo" (NeMo's own conv calls) on the single items of BITWISE_MODELS (all): latents, tokens and the
   decode of NeMo's tokens must equal NeMo's bit for bit. Only here, where NeMo runs on the same machine
   with the same torch and thread count, is a bitwise claim made (contracts §5); against references
   recorded on another CPU it would be wrong.
4. A summary table per model (frames compared, explained and unexplained boundary flips), the bitwise
   line, and the machine (CPU, torch, threads of both sides), named per CPU vendor (parity.machine.cpu_vendor:
   intel, amd, arm): `reports/parity-live-cpu-<vendor>.md/.json` (user runs: `parity-live-<name>-cpu-<vendor>.*`;
   schema: parity/report.py, plus live.bitwise and live.ours described at bitwise_check and main);
   exit status 1 on any failure, a comparison's explained flips over its own budget included.

The seed is printed first; SEED=<seed> (or --seed) rebuilds the same models and inputs.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from . import report, run
from .compare import TokenReport
from .fixtures import ROOT
from .machine import cpu_name, cpu_vendor

ORACLE_SCRIPT = ROOT / "parity" / "oracle" / "live_nemo.py"
DEFAULT_ORACLE_PY = ROOT / "parity" / "oracle" / ".venv" / "bin" / "python"
# models whose single items are also compared with layout "nemo", bit for bit: None, every model of the run
# (set_conv_layout claims it for every model; the full-size one and its 60 s clip are the costly part)
BITWISE_MODELS = None


def oracle_python(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ORACLE_PY") or DEFAULT_ORACLE_PY)


def oracle_missing(py: Path) -> str | None:
    """Why the oracle environment cannot run (None when it can)."""
    if not py.exists():
        return f"no NeMo oracle environment at {py} (run `make oracle`, or set ORACLE_PY)"
    return None


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_nemo(py: Path, work: Path, seed: int, profile: str, nemo: Path | None, threads: int) -> tuple[float, float]:
    """Run the NeMo side; returns (wall seconds, CPU seconds)."""
    cmd = [str(py), str(ORACLE_SCRIPT), "--work", str(work), "--seed", str(seed), "--profile", profile]
    if nemo:
        cmd += ["--nemo", str(nemo)]
    if threads:
        cmd += ["--threads", str(threads)]
    t0, c0 = time.time(), _children_cpu()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.time() - t0, _children_cpu() - c0


def _error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"


def compare_model(entry: dict, work: Path, options: run.RunOptions, with_pesq: bool,
                  items_only: bool = False) -> tuple[list[run.Record], dict]:
    """Our side of one model against NeMo's outputs in `work`: items, refusals and batches (items_only:
    the items alone). options.threads (when not 0) is torch's thread count for the call, restored after."""
    import torch

    before = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        records, timing = _compare_model(entry, work, options, with_pesq, items_only)
    finally:
        torch.set_num_threads(before)
    return records, timing


def _compare_model(entry: dict, work: Path, options: run.RunOptions, with_pesq: bool,
                   items_only: bool) -> tuple[list[run.Record], dict]:
    import torch

    threads = torch.get_num_threads()
    t0, c0 = time.time(), time.process_time()
    nemo = Path(entry["nemo"]) if Path(entry["nemo"]).is_absolute() else work / entry["nemo"]
    model = run.load_nemo(nemo, work / "converted" / entry["name"], options)
    t_convert = time.time() - t0
    name, records = entry["name"], []
    for item in entry["items"]:
        ref = load_file(str(work / item["ref"]))
        try:
            records.append(run.compare_item(model, name, item["input"], ref["audio"], ref, with_pesq))
        except Exception as e:  # noqa: BLE001  we refuse what NeMo accepts: a failure
            records.append(run.Record(name, item["input"], "item", TokenReport(), float("nan"), float("nan"),
                                      float("nan"), rejected={"nemo": None, "ours": _error(e)}))
    for rej in [] if items_only else entry["rejected"]:
        audio = load_file(str(work / rej["ref"]))["audio"]
        try:
            model.encode(run._t(audio).unsqueeze(0))
            ours = None
        except ValueError as e:  # nanocodec's InvalidInputError: a clear refusal, not a crash
            ours = _error(e)
        records.append(run.Record(name, rej["input"], "refused", TokenReport(), 0.0, 0.0, float("inf"),
                                  rejected={"nemo": rej["nemo"], "ours": ours}))
    for b in [] if items_only else entry["batches"]:
        records += run.compare_batch(model, name, b["name"], load_file(str(work / b["ref"])))
    del model
    gc.collect()
    timing = {"convert_load_s": round(t_convert, 2), "compare_s": round(time.time() - t0 - t_convert, 2),
              "cpu_s": round(time.process_time() - c0, 2), "torch_threads": threads}
    return records, timing


def budget_failures(records: list[run.Record]) -> list[run.Record]:
    """Comparisons whose explained boundary flips exceed their own budget, max(1, 0.1% of their frames)
    (contracts §5 counts it per comparison and over the run; Record.ok checks unexplained flips only)."""
    return [r for r in records if not r.tokens.ok]


def is_bitwise(r: run.Record) -> bool:
    return (not r.rejected and r.tokens.tokens > 0 and r.tokens.matched == r.tokens.tokens
            and r.latent_rel_error == 0.0 and r.audio_max_abs_error == 0.0 and r.forward_consistent is not False)


def bitwise_check(plan: dict, work: Path, threads: int, models=BITWISE_MODELS) -> dict:
    """Layout "nemo" on the single items of `models` (those the plan has; None: all), against NeMo's live outputs:
    every item's tokens all matched, latents and decoded audio (of NeMo's tokens) with max error exactly
    0.0. Needs NeMo's torch version and thread count on our side too: a torch mismatch (a user's own NeMo
    environment) leaves it unchecked (ok None), a thread mismatch fails it.

    Returns {layout, checked, ok, items, models, nemo: {torch, torch_threads}, ours: {torch, torch_threads},
    rows: [{model, input, frames, tokens, matched, latent_rel_error, audio_max_abs_error, forward_consistent,
    bitwise}], seconds, line}."""
    import torch

    nemo_v = plan.get("versions", {})
    entries = [m for m in plan["models"] if models is None or m["name"] in models]
    out = {"layout": "nemo", "checked": False, "ok": None, "items": 0, "models": [m["name"] for m in entries],
           "nemo": {"torch": nemo_v.get("torch"), "torch_threads": nemo_v.get("torch_threads")},
           "ours": {"torch": torch.__version__, "torch_threads": None}, "rows": [], "seconds": 0.0}
    if not entries:
        out["line"] = f"layout nemo: not checked (no model of {', '.join(models or ())} in this run)"
        return out
    if nemo_v.get("torch") != torch.__version__:
        out["line"] = (f"layout nemo: not checked (NeMo's torch {nemo_v.get('torch')} is not ours, "
                       f"{torch.__version__}: bitwise equality is claimed only with the same torch)")
        return out
    t0 = time.time()
    options = run.RunOptions(threads=threads, layout="nemo")
    records = []
    for m in entries:
        recs, timing = compare_model(m, work, options, with_pesq=False, items_only=True)
        records += recs
        out["ours"]["torch_threads"] = timing["torch_threads"]
    out["seconds"] = round(time.time() - t0, 1)
    out["checked"] = True
    out["items"] = len(records)
    out["rows"] = [{"model": r.model, "input": r.input, "frames": r.tokens.frames, "tokens": r.tokens.tokens,
                    "matched": r.tokens.matched, "latent_rel_error": r.latent_rel_error,
                    "audio_max_abs_error": r.audio_max_abs_error, "forward_consistent": r.forward_consistent,
                    "bitwise": is_bitwise(r)} for r in records]
    same_threads = out["ours"]["torch_threads"] == nemo_v.get("torch_threads")
    bad = [r for r in records if not is_bitwise(r)]
    out["ok"] = bool(records) and same_threads and not bad
    where = (f"{', '.join(out['models'])}; torch {torch.__version__}, {out['ours']['torch_threads']} threads both "
             f"sides" if same_threads else
             f"NeMo {nemo_v.get('torch_threads')} threads, ours {out['ours']['torch_threads']}: not the same")
    if out["ok"]:
        out["line"] = f"layout nemo: bitwise NeMo on {len(records)} items ({where})"
    else:
        worst = ", ".join(f"{r.model} {r.input}: tokens {r.tokens.matched}/{r.tokens.tokens}, latent "
                          f"{r.latent_rel_error:.2e}, audio {r.audio_max_abs_error:.2e}" for r in bad[:5])
        out["line"] = (f"layout nemo: **NOT bitwise** NeMo on {len(bad)} of {len(records)} items ({where})"
                       + (f": {worst}" if worst else ""))
    return out


def summarize(models: list[dict], records: list[run.Record]) -> list[dict]:
    rows = []
    for m in models:
        rs = [r for r in records if r.model == m["name"]]
        tok = TokenReport()
        for r in rs:
            tok = tok.merge(r.tokens)
        num = [r for r in rs if not r.rejected]
        snrs = [r.audio_snr_db for r in num if not np.isnan(r.audio_snr_db)]
        pesq = [abs(r.pesq["input_vs_ours"] - r.pesq["input_vs_nemo"]) for r in num
                if r.pesq.get("input_vs_ours") is not None and r.pesq.get("input_vs_nemo") is not None]
        rows.append({
            "model": m["name"], "variant": m["variant"], "seed": m.get("seed"),
            "params": (m.get("params") or {}).get("encoder", 0) + (m.get("params") or {}).get("decoder", 0),
            "items": sum(r.kind == "item" for r in rs), "batches": len(m["batches"]),
            "refused_by_both": sum(bool(r.rejected.get("nemo")) and bool(r.rejected.get("ours")) for r in rs),
            "frames": tok.frames, "allowed_explained": tok.allowed_explained,
            "tokens": tok.tokens, "matched": tok.matched, "explained": tok.explained, "unexplained": tok.unexplained,
            "max_latent_rel_error": max((r.latent_rel_error for r in num), default=None),
            "max_audio_abs_error": max((r.audio_max_abs_error for r in num), default=None),
            "min_snr_db": min(snrs, default=None),
            "max_pesq_diff": max(pesq, default=None),
            "nemo_s": m.get("nemo_seconds"), "ours_s": round(m["timing"]["convert_load_s"] + m["timing"]["compare_s"], 2),
            "nemo_cpu_s": m.get("nemo_cpu_seconds"), "ours_cpu_s": m["timing"]["cpu_s"],
            "ok": all(r.ok and r.tokens.ok for r in rs),
        })
    return rows


def _f(x, spec):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and np.isinf(x):
        return "inf"
    return format(x, spec)


def summary_markdown(live: dict) -> str:
    lines = [
        "## Live run",
        "",
        f"Seed **{live['seed']}** (reproduce: `{live['reproduce']}`); "
        f"{'profile ' + live['profile'] if live['profile'] else 'your .nemo on the committed speech clips'}; "
        f"NeMo {live['nemo_versions'].get('nemo')} (torch {live['nemo_versions'].get('torch')}, "
        f"{live['nemo_versions'].get('torch_threads')} threads) in {live['oracle_python']}; ours torch "
        f"{live.get('ours', {}).get('torch')}, {live.get('ours', {}).get('torch_threads')} threads; on "
        f"{live.get('ours', {}).get('cpu') or live['nemo_versions'].get('cpu')} ({live.get('ours', {}).get('cpu_vendor')}).",
        f"Wall time {live['timings']['total_s']:.0f} s: NeMo side {live['timings']['nemo_s']:.0f} s "
        f"(import {live['timings']['nemo_import_s']:.0f} s), ours (convert + compare) {live['timings']['ours_s']:.0f} s; "
        f"CPU time NeMo {live['timings']['nemo_cpu_s']:.0f} s, ours {live['timings']['ours_cpu_s']:.0f} s on "
        f"{live['timings']['cpus']} CPUs, load average {live['timings']['load_average'][0]} -> "
        f"{live['timings']['load_average'][1]} (other work on the machine inflates wall times).",
        "",
        "| model | variant | seed | params | items | batches | refused by both | frames | tokens matched | explained "
        "| unexplained | max latent rel err | max audio err | min SNR dB | max PESQ diff | NeMo s (CPU s) | ours s (CPU s) | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in live["summary"]:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['seed'] if r['seed'] is not None else '-'} | {r['params']:,} | "
            f"{r['items']} | {r['batches']} | {r['refused_by_both']} | {r.get('frames', '-')} | {r['matched']}/{r['tokens']} | "
            f"{r['explained']} | "
            f"{r['unexplained']} | {_f(r['max_latent_rel_error'], '.2e')} | {_f(r['max_audio_abs_error'], '.2e')} | "
            f"{_f(r['min_snr_db'], '.1f')} | {_f(r['max_pesq_diff'], '.4f')} | {_f(r['nemo_s'], '.1f')} "
            f"({_f(r['nemo_cpu_s'], '.1f')}) | {_f(r['ours_s'], '.1f')} ({_f(r['ours_cpu_s'], '.1f')}) | "
            f"{'yes' if r['ok'] else '**NO**'} |")
    bitwise = live.get("bitwise")
    if bitwise:
        lines += ["", bitwise["line"] + "."]
    notes = [n for n in live.get("notes", []) if n]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += ["", "Per comparison (kinds: item, batch-invariant, batch-compat, refused = NeMo raises and so must we):", ""]
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict]) -> None:
    head = ["model", "items", "batches", "refused", "frames", "tokens", "explained", "unexpl", "latent", "audio", "SNR",
            "PESQ d", "ok"]
    body = [[r["model"], str(r["items"]), str(r["batches"]), str(r["refused_by_both"]), str(r["frames"]),
             f"{r['matched']}/{r['tokens']}",
             str(r["explained"]), str(r["unexplained"]), _f(r["max_latent_rel_error"], ".1e"),
             _f(r["max_audio_abs_error"], ".1e"), _f(r["min_snr_db"], ".0f"), _f(r["max_pesq_diff"], ".4f"),
             "ok" if r["ok"] else "FAIL"] for r in rows]
    w = [max(len(x) for x in col) for col in zip(head, *body)]
    for line in [head] + body:
        print("  ".join(x.ljust(n) for x, n in zip(line, w)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parity.live", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None, help="default: $SEED, else a fresh random seed")
    ap.add_argument("--profile", choices=["default", "quick"], default="default")
    ap.add_argument("--nemo", type=Path, help="a user's own .nemo: live parity on it (committed speech inputs)")
    ap.add_argument("--report", type=Path, help="folder for parity-live[-<name>]-cpu-<vendor>.md/.json")
    ap.add_argument("--oracle-py", help="the NeMo environment's python (default: $ORACLE_PY or parity/oracle/.venv)")
    ap.add_argument("--work", type=Path, help="keep the work folder (models, NeMo outputs) here")
    # 1 by default: on a shared 2-core machine every OpenMP region of a 2-thread process waits for a time
    # slice whenever another process holds the other core; NeMo's many small ops then ran 25-40x slower
    # (measured); one thread is as fast for the reduced models and predictable.
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1; 0: torch's default)")
    ap.add_argument("--no-pesq", action="store_true")
    args = ap.parse_args(argv)

    env_seed = os.environ.get("SEED")
    seed = args.seed if args.seed is not None else int(env_seed) if env_seed else secrets.randbelow(2**31 - 1)
    py = oracle_python(args.oracle_py)
    if (why := oracle_missing(py)):
        print(f"live parity: {why}", file=sys.stderr)
        return 2
    if args.nemo and not args.nemo.is_file():
        print(f"live parity: no such .nemo file: {args.nemo}", file=sys.stderr)
        return 2
    reproduce = (f"SEED={seed} make parity NEMO={args.nemo}" if args.nemo else
                 f"make parity-live SEED={seed}" + (f" PROFILE={args.profile}" if args.profile != "default" else ""))
    print(f"live parity: seed {seed} (reproduce: {reproduce})", flush=True)
    options = run.RunOptions(threads=args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    vendor = cpu_vendor()

    t0, load0 = time.time(), os.getloadavg()[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="nanocodec-live-"))
    try:
        print(f"live parity: NeMo ({py}) -> {work}", flush=True)
        t_nemo, cpu_nemo = run_nemo(py, work, seed, args.profile, args.nemo.resolve() if args.nemo else None, args.threads)
        c_ours = time.process_time()
        plan = json.loads((work / "plan.json").read_text())
        records = []
        for m in plan["models"]:
            recs, m["timing"] = compare_model(m, work, options, with_pesq=not args.no_pesq)
            records += recs
            bad = sum(not r.ok for r in recs)
            print(f"  ours {m['name']}: {len(recs)} comparisons, {bad} failed "
                  f"(convert+load {m['timing']['convert_load_s']:.1f} s, compare {m['timing']['compare_s']:.1f} s)",
                  flush=True)
        bitwise = None
        if not args.nemo:
            bitwise = bitwise_check(plan, work, args.threads)
            print(f"  ours {bitwise['line']}" + (f" ({bitwise['seconds']:.1f} s)" if bitwise["checked"] else ""),
                  flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    total, cpu_ours, load1 = time.time() - t0, time.process_time() - c_ours, os.getloadavg()[0]

    ok, tok = run.verdict(records)
    over_budget = budget_failures(records)
    ok = ok and not over_budget and (bitwise is None or bitwise["ok"] is not False)
    rows = summarize(plan["models"], records)
    for r in over_budget:
        print(f"FAIL {r.model} {r.input} {r.kind}: {r.tokens.explained} explained boundary flips in "
              f"{r.tokens.frames} frames, allowed {r.tokens.allowed_explained} per comparison")
    if bitwise and bitwise["ok"] is False:
        print(f"FAIL {bitwise['line']}")
    for r in records:
        if not r.ok:
            what = (f"NeMo {r.rejected.get('nemo')} / ours {r.rejected.get('ours')}" if r.rejected else
                    f"tokens unexplained {r.tokens.unexplained}, latent {r.latent_rel_error:.2e}, audio "
                    f"{r.audio_max_abs_error:.2e} / {r.audio_snr_db:.1f} dB, forward {r.forward_consistent}, pesq {r.pesq}")
            print(f"FAIL {r.model} {r.input} {r.kind}: {what}")
    print_table(rows)
    ours_s = sum(m["timing"]["convert_load_s"] + m["timing"]["compare_s"] for m in plan["models"])
    print(f"{len(records)} comparisons over {len(plan['models'])} models: tokens {tok.matched}/{tok.tokens} matched, "
          f"{tok.explained} explained (allowed {tok.allowed_explained}), {tok.unexplained} unexplained -> "
          f"{'PASS' if ok else 'FAIL'} in {total:.0f} s (NeMo {t_nemo:.0f} s, ours {ours_s:.0f} s; CPU time NeMo "
          f"{cpu_nemo:.0f} s, ours {cpu_ours:.0f} s; load average {load0:.1f} -> {load1:.1f}); seed {seed}")
    if bitwise:
        print(bitwise["line"])

    if args.report:
        budget_notes = [f"{len(over_budget)} comparison(s) over their own explained-flip budget: " + ", ".join(
            f"{r.model} {r.input} {r.kind} ({r.tokens.explained} in {r.tokens.frames} frames, allowed "
            f"{r.tokens.allowed_explained})" for r in over_budget[:10])] if over_budget else []
        live = {
            "mode": plan["mode"], "seed": seed, "profile": plan["profile"], "reproduce": reproduce,
            "oracle_python": str(py), "nemo_versions": plan["versions"],
            "timings": {"total_s": round(total, 1), "nemo_s": round(t_nemo, 1),
                        "nemo_import_s": plan["nemo_import_seconds"], "ours_s": round(ours_s, 1),
                        "nemo_cpu_s": round(cpu_nemo, 1), "ours_cpu_s": round(cpu_ours, 1),
                        "load_average": [round(load0, 2), round(load1, 2)], "cpus": os.cpu_count(),
                        "bitwise_s": bitwise["seconds"] if bitwise else 0.0},
            "models": [{k: v for k, v in m.items() if k not in ("items", "rejected", "batches")}
                       | {"inputs": {i["input"]: i["samples"] for i in m["items"]},
                          "refused_by_nemo": {i["input"]: i["nemo"] for i in m["rejected"]},
                          "batches": {b["name"]: b["lengths"] for b in m["batches"]},
                          "distinct_codes_min": min((i["distinct_codes"] for i in m["items"] if i["frames"] > 10),
                                                    default=None)}
                       for m in plan["models"]],
            "summary": rows,
            "notes": [m.get("restore_note") for m in plan["models"]] + budget_notes,
            # our side, as NeMo's is in nemo_versions (the CPU and vendor name the report)
            "ours": {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu": cpu_name(),
                     "cpu_vendor": vendor},
            **({"bitwise": bitwise} if bitwise else {}),
        }
        name = "live" if not args.nemo else f"live-{plan['models'][0]['name']}"
        rep = report.build(records, options, "cpu", live=live)
        rep["ok"] = rep["ok"] and ok
        md, js = report.write(rep, args.report, stem=f"parity-{name}-cpu-{vendor}")
        print(f"wrote {md} and {js}")
        from .variants_table import refresh_after_report

        refresh_after_report(js)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
