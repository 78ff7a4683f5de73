"""The reports of benchmarks/cuda_device.py (parity-cuda-<card>.md, bench-cuda-<card>.md and .json) and the summary it
prints last. Rewritten whole after every step from the results dict alone, so a run its time limit cuts short still
leaves consistent reports of what it measured."""
from __future__ import annotations

import json
import time
from pathlib import Path

from common import fmt, table, write_atomic

# the NeMo figure each of our grid precisions is compared with in the same run
COUNTERPART = {"fp32": "NeMo fp32", "bf16": "NeMo bf16-autocast", "fp32-chunk1s": "NeMo fp32"}
STREAM_PATHS = ("slots API", "functional step", "CUDA graph")
VERDICT = {True: "PASS", False: "FAIL", None: "not run"}


def header(res: dict, title: str) -> list[str]:
    m, model = res["machine"], res.get("model") or {}
    card = m["card"] + (f" (compute capability {m['capability']}, {m['sm_count']} SMs, {m['memory_gib']} GiB)" if m.get("capability") else "")
    lines = [f"# {title} on {m['card']}", "", f"`python3 benchmarks/cuda_device.py`, profile **{res['profile']}**, budget "
             f"{res['budget_s']:.0f} s, ran {res.get('elapsed_s', 0):.0f} s, {time.strftime('%Y-%m-%d')}; how it measures: benchmarks/DEVICE.md.", "",
             f"- machine: {card}; torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, Python {m['python']}, numpy {m['numpy']}",
             "- precision policy (nanocodec/precision.py): " + ", ".join(f"{k} {v}" for k, v in res.get("precision", {}).items())]
    if model:
        lines.append(f"- model: `{model['name']}` from seed {model['seed']} ({model['params'].get('total', 0) / 1e6:.2f}M parameters), "
                     f"NeMo {model['nemo_version']}'s modules from `{Path(model['nemo_source']).name}` ({model['einops']}); NeMo state "
                     f"sha256 `{model['nemo_state_sha256'][:16]}…`; " + "; ".join(model["notes"]))
    return lines + [""]


def errors(res: dict, steps=None) -> list[str]:
    out = []
    for e in (e for e in res["errors"] if steps is None or e["step"] in steps):
        out += [f"- {e['step']}: {e['error']}", "", "```", e["traceback"].strip(), "```"]
    return ["", "## Errors", ""] + out if out else []


def parity_md(res: dict) -> str:
    rows = res["parity"]["rows"]
    lines = header(res, "CUDA parity: nanocodec vs NeMo") + [
        "Rules (contracts §5, CUDA): float32 with TF32 off; tokens identical except FSQ boundary frames (reference "
        "pre-rounding value within 1e-4 of a half-integer, at most max(1, 0.1%) of frames); pre-quantizer latents within "
        "1e-4 of their max abs value; decoded audio (both sides decode the reference's tokens) within 1e-4 max abs error.", "",
        f"**Result: {VERDICT[res['parity'].get('pass')]}** ({sum(r['ok'] for r in rows)} of {len(rows)} comparisons pass)", ""]
    lines += table(["input", "comparison", "tokens equal", "explained", "unexplained", "latent max rel error",
                    "audio max abs error", "audio SNR (dB)", "verdict"], [
        [r["input"], r["kind"], f"{r['tokens']['matched']}/{r['tokens']['tokens']}", r["tokens"]["explained"], r["tokens"]["unexplained"],
         fmt(r["latent_rel_error"], ".1e"), fmt(r["audio_max_abs_error"], ".1e"), fmt(r["audio_snr_db"], ".1f"), VERDICT[r["ok"]]]
        for r in rows])
    lines += ["", "## Half precision and TF32 (reported, not gated)", "",
              "Against NeMo float32 (TF32 off) on the same inputs; decode of NeMo's float32 tokens. Ours: the dtype given to "
              "`from_pretrained`; NeMo `bf16-autocast`: under `torch.autocast`, `bf16-cast`: the model cast to bfloat16.", ""]
    lines += table(["implementation", "input", "tokens = NeMo fp32", "latent max rel error", "decode SNR (dB)", "decode max abs error"], [
        [r["impl"], r["input"], f"error: {r['error']}"] if "error" in r else
        [r["impl"], r["input"], f"{100 * r['token_match']:.2f}%", fmt(r["latent_rel_error"], ".1e"), fmt(r["audio_snr_db"], ".1f"),
         fmt(r["audio_max_abs_error"], ".1e")] for r in res["half"]["rows"]])
    return "\n".join(lines + errors(res, ("setup", "parity"))) + "\n"


def case_rows(c: dict) -> list:
    if "impls" not in c:
        return [[c["case"], f"skipped: {c['skipped']}" if "skipped" in c else f"error: {c['error']}"]]
    rows = []
    for lb, r in c["impls"].items():
        if "error" in r:
            rows.append([c["case"], lb, f"error: {r['error']}"])
            continue
        other = COUNTERPART.get(lb.split()[-1], "") if lb.startswith("ours") else ""
        o, rt = c["impls"].get(other, {}), r["roundtrip"]
        rows.append([c["case"], lb, f"{r['encode']['median']:.2f}", f"{r['decode']['median']:.2f}",
                     f"{rt['median']:.2f} ({rt['min']:.2f}–{rt['max']:.2f}, n={rt['n']})", f"{r['x_real_time']:.0f}",
                     "–" if r["peak_bytes"] is None else f"{(r['peak_bytes'] + r['weights_bytes']) / 2**20:.0f}",
                     f"{o['roundtrip']['median'] / rt['median']:.2f}× ({other})" if "roundtrip" in o else "–"])
    return rows


def case_line(c: dict) -> str:
    if "impls" not in c:
        return f"{c['case']}: {c.get('skipped') or c.get('error')}"
    return f"{c['case']}: " + "; ".join(
        f"{lb} ERROR {r['error']}" if "error" in r else f"{lb} {r['roundtrip']['median']:.1f} ms ({r['x_real_time']:.0f}x RT"
        + (f", {r['peak_bytes'] / 2**20:.0f} MiB" if r["peak_bytes"] is not None else "") + ")" for lb, r in c["impls"].items())


def stream_line(c: dict, prefix: str = "stream") -> str:
    if "skipped" in c or "error" in c:
        return f"{prefix} {c['slots']} slots: {c.get('skipped') or c.get('error')}"
    return f"{prefix} {c['slots']} slots: " + ", ".join(f"{p} p50 {c[p]['p50']:.2f} p99 {c[p]['p99']:.2f} ms" for p in STREAM_PATHS if p in c) \
        + (f"; graph capture failed: {c['graph_error']}" if "graph_error" in c else "")


def bench_md(res: dict) -> str:
    frame, rows = res["stream"].get("frame_ms", 80.0), []
    for c in res["stream"]["cases"]:
        if "skipped" in c or "error" in c:
            rows.append([c["slots"], f"skipped: {c['skipped']}" if "skipped" in c else f"error: {c['error']}"])
        rows += [[c["slots"], p, f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['min']:.2f}–{r['max']:.2f} ({r['n']})",
                  f"{c['slots'] * frame / r['p50']:.1f}", fmt(c.get("max_abs_error_vs_api", {}).get(p), ".1e", "(reference)")]
                 for p in STREAM_PATHS if (r := c.get(p))]
        rows += [[c["slots"], "CUDA graph", f"capture failed: {c['graph_error']}"]] if "graph_error" in c else []
    lines = header(res, "CUDA benchmark: nanocodec vs NeMo") + [
        "Both implementations hold the same weights; first call = peak memory (above what was allocated before it, own "
        "weights added), one more warm-up, then interleaved rounds; device events, medians. × real time = audio seconds in "
        "the batch / round trip; TFLOP/s = × real time × issue 7's 62.24 GFLOP per audio-second / 1000.",
        "", "## Issue 7's CUDA targets", ""]
    lines += table(["target", "figure", "met"], [[t["target"], t["figure"], {True: "**met**", False: "missed"}.get(t["met"], t["met"])]
                                                 for t in res["targets"]] or [["(no figures yet)"]])
    lines += ["", "## Encode, decode, round trip", ""] + table(
        ["case", "implementation", "encode ms", "decode ms", "round trip ms (min–max, rounds)", "× real time",
         "peak incl. own weights MiB", "speed-up vs NeMo"], [row for c in res["grid"]["cases"] for row in case_rows(c)])
    lines += ["", "## Streaming decoder: 1-frame steps (issue 21)", "", f"n slots, 1 frame each; × real time = n × {frame:g} ms "
              "of audio / p50; error against the slots API's audio of the same steps from a stream's start.", ""]
    lines += table(["slots", "path", "p50 ms", "p99 ms", "min–max (steps)", "× real time", "max abs error vs slots API"], rows)
    lines += ["", "## Steps", ""] + table(["step", "seconds", "outcome"], [[n, f"{s['s']:.1f}", s.get("error", "ok")]
                                                                          for n, s in res["steps"].items()])
    return "\n".join(lines + errors(res)) + "\n"


def write_all(res: dict, out: Path, stem: str) -> None:
    for name, text in ((f"parity-cuda-{stem}.md", parity_md(res)), (f"bench-cuda-{stem}.md", bench_md(res)),
                       (f"bench-cuda-{stem}.json", json.dumps(res, indent=1, default=str, allow_nan=True) + "\n")):
        write_atomic(out / name, text)


def summary(res: dict) -> str:
    """The last lines printed (the device tool returns the end of the output): the verdicts and figures, no tables."""
    rows, m = res["parity"]["rows"], res["machine"]
    lines = ["", "=" * 100, f"{m['card']} | torch {m['torch']} | profile {res['profile']} | {res.get('elapsed_s', 0):.0f} s of {res['budget_s']:.0f}",
             f"PARITY {VERDICT[res['parity'].get('pass')]}: {len(rows)} gated comparisons, tokens {sum(r['tokens']['matched'] for r in rows)}/"
             f"{sum(r['tokens']['tokens'] for r in rows)}, max latent rel {max((r['latent_rel_error'] for r in rows), default=float('nan')):.1e}, "
             f"max audio abs {max((r['audio_max_abs_error'] for r in rows), default=float('nan')):.1e}"]
    lines += [f"  {r['impl']:<20} {r['input']:<12} " + (f"tokens {100 * r['token_match']:6.2f}%  decode SNR {r['audio_snr_db']:6.1f} dB"
                                                        if "token_match" in r else r["error"]) for r in res["half"]["rows"]]
    lines += ["GRID " + case_line(c) for c in res["grid"]["cases"]] + [stream_line(c, "STREAM") for c in res["stream"]["cases"]]
    lines += [f"TARGET {'MET' if t['met'] is True else 'MISSED' if t['met'] is False else t['met']}: {t['target']}: {t['figure']}"
              for t in res["targets"]]
    return "\n".join(lines + [f"ERROR {e['step']}: {e['error']}" for e in res["errors"]] + ["=" * 100])
