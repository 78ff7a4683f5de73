"""Parity reports: `reports/parity-<device>.md` and `.json`.

JSON schema (format 1):
  {"format": 1, "device": str, "environment": {torch, python, platform, cpu, git_commit},
   "options": {device, dtype, threads, threads_used}, "ok": bool,
   "totals": {frames, tokens, matched, explained, unexplained, allowed_explained},
   "tolerances": {boundary, latent_rel, audio_max_abs, audio_min_snr_db},
   "fixtures": [{model, input, kind, ok,
                 tokens: {frames, tokens, matched, explained, unexplained, mismatches[...]},
                 latent_rel_error, audio_max_abs_error, audio_snr_db, forward_consistent,
                 pesq: {ours_vs_nemo, input_vs_ours, input_vs_nemo} (speech inputs only)}]}
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import torch

from . import compare


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"torch": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": cpu, "git_commit": commit}


def _num(x):
    if x is None:
        return None
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def build(records, options, device: str) -> dict:
    from .run import verdict

    ok, total = verdict(records)
    rows = []
    for r in records:
        d = r.to_dict()
        d["audio_snr_db"] = _num(d["audio_snr_db"])
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
    }


def _fmt(x, spec):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)


def to_markdown(report: dict) -> str:
    env, t = report["environment"], report["totals"]
    lines = [
        f"# Parity with NeMo: {report['device']}",
        "",
        f"Verdict: **{'PASS' if report['ok'] else 'FAIL'}**. Tokens: {t['matched']}/{t['tokens']} matched, "
        f"{t['explained']} explained boundary flips (allowed {t['allowed_explained']}), {t['unexplained']} unexplained.",
        "",
        f"Machine: {env['cpu']}; torch {env['torch']}, Python {env['python']}; commit {env['git_commit']}.",
        f"Options: {report['options']}.",
        "References: NeMo 3.0.0 outputs committed under tests/fixtures (made by `make fixtures`).",
        "Tolerances (contracts §5): latents <= 1e-4 relative, decoded audio <= 1e-5 max abs and >= 80 dB SNR.",
        "",
        "| model | input | kind | tokens matched | explained | unexplained | latent rel err | audio max err | SNR dB | PESQ ours vs NeMo | PESQ in/ours | PESQ in/NeMo | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["fixtures"]:
        tok, p = r["tokens"], r.get("pesq") or {}
        lines.append(
            f"| {r['model']} | {r['input']} | {r['kind']} | {tok['matched']}/{tok['tokens']} | {tok['explained']} | "
            f"{tok['unexplained']} | {_fmt(r['latent_rel_error'], '.2e')} | {_fmt(r['audio_max_abs_error'], '.2e')} | "
            f"{_fmt(r['audio_snr_db'], '.1f')} | {_fmt(p.get('ours_vs_nemo'), '.3f')} | {_fmt(p.get('input_vs_ours'), '.3f')} | "
            f"{_fmt(p.get('input_vs_nemo'), '.3f')} | {'yes' if r['ok'] else '**NO**'} |"
        )
    lines += ["", "PESQ with seeded (untrained) weights measures nothing about codec quality; it is reported "
              "to show that ours and NeMo's reconstructions score the same."]
    return "\n".join(lines) + "\n"


def write(report: dict, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"parity-{report['device']}"
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    js.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    md.write_text(to_markdown(report))
    return md, js
