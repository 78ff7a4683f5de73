"""`python -m parity [--report DIR] [--model NAME ...] [--threads N] [--dtype float32] [--layout auto|nemo]`
(make parity runs both layouts: "auto", the fast default, and "nemo", NeMo's bitwise conv calls).

`python -m parity --nemo path/to/user.nemo [--report DIR]` (make parity NEMO=...): the live tier on a
user's own checkpoint instead (parity/live.py; needs the NeMo oracle environment).

`python -m parity --quick [--report DIR]` (what plain `make` runs): the one base 0.6 kbps fixture model
(`QUICK_MODEL`) against NeMo's recordings, without PESQ (reported, never gated), its report written to
DIR (default out/parity) as parity-<device>-quick.md/.json; never the tracked reports/ or the README.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from . import fixtures, report, run
from .machine import cpu_vendor

QUICK_MODEL = "nano0p6_replicate"  # the embedded 0.6 kbps fixture (tests/fixtures/models/nano0p6_replicate.nemo)
QUICK_REPORT = fixtures.ROOT / "out" / "parity"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity", description="Tier 1 parity against committed NeMo references.")
    parser.add_argument("--report", type=Path, help="folder for parity-<device>.md/.json (CPU: parity-cpu-<vendor>)")
    parser.add_argument("--model", action="append", help="only these fixture models")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layout", default="auto", choices=["auto", "channels_last", "nemo"],
                        help="conv layout (AudioCodecModel.set_conv_layout); reports of other layouts get a suffix")
    parser.add_argument("--nemo", help="live parity on this .nemo with NeMo side by side (parity/live.py)")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {QUICK_MODEL}, no PESQ; report to --report (default {QUICK_REPORT}), never reports/")
    args = parser.parse_args(argv)
    if args.quick:
        if args.model and args.model != [QUICK_MODEL]:
            parser.error(f"--quick checks {QUICK_MODEL} only; leave --model out")
        args.model = [QUICK_MODEL]
        args.report = args.report or QUICK_REPORT
        if args.report.resolve() == (fixtures.ROOT / "reports").resolve():
            parser.error("--quick does not write the tracked reports/ (make parity does); pick another --report")
    if args.nemo:
        from . import live

        return live.main(["--nemo", args.nemo] + (["--threads", str(args.threads)] if args.threads else [])
                         + (["--report", str(args.report)] if args.report else []))
    options = run.RunOptions(device=args.device, dtype=args.dtype, threads=args.threads, layout=args.layout)
    cases = [c for c in fixtures.model_cases() if not args.model or c.name in args.model]
    records = []
    for case in tqdm(cases, desc="parity", unit="model"):
        records += run.run_case(case, options, with_pesq=not args.quick)
    ok, total = run.verdict(records)
    for r in records:
        if not r.ok:
            print(f"FAIL {r.model} {r.input} {r.kind}: tokens unexplained {r.tokens.unexplained}, "
                  f"latent {r.latent_rel_error:.2e}, audio {r.audio_max_abs_error:.2e} / {r.audio_snr_db:.1f} dB")
    print(f"{len(records)} comparisons over {len(cases)} models: tokens {total.matched}/{total.tokens} matched, "
          f"{total.explained} explained, {total.unexplained} unexplained -> {'PASS' if ok else 'FAIL'}")
    if args.report:
        # a CPU report is named per vendor (parity-cpu-<vendor>.*): float32 sums differ between CPUs
        device = f"cpu-{cpu_vendor()}" if args.device == "cpu" and not args.quick else args.device.replace(":", "")
        if args.layout != "auto":
            device += f"-{args.layout}-layout"
        stem = f"parity-{device}-quick" if args.quick else None
        md, js = report.write(report.build(records, options, device), args.report, stem)
        print(f"wrote {md} and {js}")
        from .variants_table import refresh_after_report

        if args.layout == "auto" and not args.quick:
            refresh_after_report(js)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
