"""Parity reports: `reports/parity-<device>.md` and `.json`.

JSON schema (format 1):
  {"format": 1, "device": str, "environment": {torch, python, platform, cpu, cpu_vendor, git_commit,
                                               accuracy_gate: {rule, channels_last_shapes, ncw_shapes}},
   "options": {device, dtype, threads, threads_used}, "ok": bool,
   "totals": {frames, tokens, matched, explained, unexplained, allowed_explained},
   "tolerances": {boundary, latent_rel, audio_max_abs, audio_min_snr_db},
   (a row is ok when tokens, latents, audio and the forward pass are within bounds; PESQ is reported,
    not gated: see parity.run._speech_pesq)
   "fixtures": [{model, input, kind, ok,
                 tokens: {frames, tokens, matched, explained, unexplained, mismatches[...]},
                 latent_rel_error, audio_max_abs_error, audio_snr_db, forward_consistent,
                 pesq: {ours_vs_nemo, input_vs_ours, input_vs_nemo} (speech inputs only),
                 rejected: {nemo, ours} (live tier: an input NeMo raises on; ok = we raise too), else {}}],
   "live": (live tier only, parity/live.py) {mode: seeded|user, seed, profile, reproduce, oracle_python,
            nemo_versions: {nemo, torch, numpy, python, platform, cpu, torch_threads},
            timings: {total_s, nemo_s, nemo_import_s, ours_s, nemo_cpu_s, ours_cpu_s, load_average, cpus},
            models: [{name, nemo, variant, seed, arch, params, samples_per_frame, nemo_seconds,
                      nemo_cpu_seconds, build_seconds, timing: {convert_load_s, compare_s, cpu_s},
                      inputs: {name: samples}, refused_by_nemo: {name: error}, batches: {name: [lengths]},
                      distinct_codes_min, nemo_min_frames (reflect),
                      sample_rate/restore_note (user)}],
            summary: [{model, variant, seed, params, items, batches, refused_by_both, tokens, matched, explained,
                       unexplained, max_latent_rel_error, max_audio_abs_error, min_snr_db, max_pesq_diff,
                       nemo_s, ours_s, nemo_cpu_s, ours_cpu_s, ok}], notes: [...]}}
Non-finite floats are written as the strings "inf" / "-inf" / "nan".
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import torch

from nanocodec.fileio.atomic import write_file

from . import compare
from .machine import cpu_name, cpu_vendor


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    from nanocodec.backends import accuracy_gate

    gate = accuracy_gate.summary()  # which conv shapes this run's "auto" layout ran channels-last
    return {"torch": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": cpu_name(), "cpu_vendor": cpu_vendor(), "git_commit": commit,
            "accuracy_gate": {k: gate[k] for k in ("rule", "channels_last_shapes", "ncw_shapes")}}


def _gate_line(gate: dict | None) -> str:
    if not gate:
        return ""
    return (f"Accuracy gate (nanocodec/backends/accuracy_gate.py, {gate['rule']}): "
            f"{gate['channels_last_shapes']} conv shapes channels-last, {gate['ncw_shapes']} NCW on this machine.")


def _num(x):
    if x is None:
        return None
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _finite(x):
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return _num(x)


def build(records, options, device: str, live: dict | None = None) -> dict:
    from .run import verdict

    ok, total = verdict(records)
    rows = []
    for r in records:
        d = r.to_dict()
        for k in ("latent_rel_error", "audio_max_abs_error", "audio_snr_db"):
            d[k] = _num(d[k])
        rows.append(d)
    return {
        "format": 1,
        "device": device,
        "environment": environment(),
        "options": options.describe(),
        "ok": ok,
        "totals": {**{k: v for k, v in total.to_dict().items() if k not in ("mismatches", "ok")},
                   "allowed_explained": total.allowed_explained},
        "tolerances": {"boundary": compare.BOUNDARY_TOL, "latent_rel": compare.LATENT_REL_TOL,
                       "audio_max_abs": compare.AUDIO_MAX_ABS_TOL, "audio_min_snr_db": compare.AUDIO_MIN_SNR_DB},
        "fixtures": rows,
        **({"live": _finite(live)} if live else {}),
    }


def _fmt(x, spec):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)


def to_markdown(report: dict) -> str:
    env, t = report["environment"], report["totals"]
    live = report.get("live")
    lines = [
        f"# {'Live parity' if live else 'Parity'} with NeMo: {report['device']}",
        "",
        f"Verdict: **{'PASS' if report['ok'] else 'FAIL'}**. Tokens: {t['matched']}/{t['tokens']} matched, "
        f"{t['explained']} explained boundary flips (allowed {t['allowed_explained']}), {t['unexplained']} unexplained.",
        "",
        f"Machine: {env['cpu']}; torch {env['torch']}, Python {env['python']}; commit {env['git_commit']}.",
        _gate_line(env.get("accuracy_gate")),
        f"Options: {report['options']}.",
        ("References: NeMo restored your .nemo and ran in the same session (`make parity NEMO=...`)."
         if live.get("mode") == "user" else
         "References: NeMo run in the same session on fresh seeded models and inputs (`make parity-live`).") if live else
        "References: NeMo 3.0.0 outputs committed under tests/fixtures (made by `make fixtures`).",
        "Tolerances (contracts §5): latents <= 1e-4 relative, decoded audio <= 1e-5 max abs and >= 80 dB SNR.",
        "",
    ]
    if live:
        from .live import summary_markdown

        lines += summary_markdown(live).splitlines()
    lines += [
        "| model | input | kind | tokens matched | explained | unexplained | latent rel err | audio max err | SNR dB | PESQ ours vs NeMo | PESQ in/ours | PESQ in/NeMo | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["fixtures"]:
        tok, p = r["tokens"], r.get("pesq") or {}
        if r.get("rejected"):
            rej = r["rejected"]
            nemo, ours = (rej.get(k) or "accepts" for k in ("nemo", "ours"))
            lines.append(f"| {r['model']} | {r['input']} | {r['kind']} | NeMo: {nemo[:90]} | ours: {ours[:90]} "
                         f"| | | | | | | | {'yes' if r['ok'] else '**NO**'} |")
            continue
        lines.append(
            f"| {r['model']} | {r['input']} | {r['kind']} | {tok['matched']}/{tok['tokens']} | {tok['explained']} | "
            f"{tok['unexplained']} | {_fmt(r['latent_rel_error'], '.2e')} | {_fmt(r['audio_max_abs_error'], '.2e')} | "
            f"{_fmt(r['audio_snr_db'], '.1f')} | {_fmt(p.get('ours_vs_nemo'), '.3f')} | {_fmt(p.get('input_vs_ours'), '.3f')} | "
            f"{_fmt(p.get('input_vs_nemo'), '.3f')} | {'yes' if r['ok'] else '**NO**'} |"
        )
    if live and live.get("mode") == "user":
        lines += ["", "PESQ (input vs each reconstruction of NeMo's tokens) with your weights measures the codec; "
                  "ours and NeMo's must agree (gate: |difference| <= 0.01)."]
    else:
        lines += ["", "PESQ with seeded (untrained) weights measures nothing about codec quality; it is reported "
                  "to show that ours and NeMo's reconstructions score the same."]
    return "\n".join(lines) + "\n"


def write(report: dict, folder: Path, stem: str | None = None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / (stem or f"parity-{report['device']}")
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    # atomically (temporary sibling, rename): a run killed mid-write leaves the previous report whole
    write_file(js, (json.dumps(report, indent=1, sort_keys=True) + "\n").encode())
    write_file(md, to_markdown(report).encode())
    return md, js
