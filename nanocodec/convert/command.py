"""The converter's command-line arguments and run, shared by `python -m nanocodec.convert` (and the
repository's `python -m convert`) and `nanocodec convert` (contracts §3: one implementation)."""
from __future__ import annotations

import argparse

from ..presets import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help=".nemo file, hub repo id holding one, or a folder of NeMo-named safetensors")
    parser.add_argument("out", metavar="OUT", help="output folder (absent or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture of NeMo-named safetensors, which carry none (default: identified from "
                             "their tensor shapes among the presets)")
    parser.add_argument("--revision", help="hub revision (defaults to the pinned one for official repos)")


def run(args: argparse.Namespace) -> int:
    """Convert as `args` say; print the report's summary unless `args.quiet`. Errors propagate."""
    from .converter import convert  # torch: only once a conversion runs, not for --help

    report = convert(args.src, args.out, overwrite=args.overwrite, preset=args.preset, revision=args.revision)
    if not getattr(args, "quiet", False):
        print(report.summary())
        print(f"wrote {args.out}")
    return 0
