"""`python -m nanocodec.convert SRC OUT [--overwrite] [--preset NAME] [--revision REV]` (contracts §3).

Exit 0 on success; exit 2 with one line on stderr for a user or checkpoint error.
"""
from __future__ import annotations

import argparse
import sys

from nanocodec.errors import NanoCodecError
from nanocodec.presets import PRESETS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanocodec.convert", description="Convert a NeMo NanoCodec to nanocodec release weights.")
    parser.add_argument("src", help=".nemo file, hub repo id holding one, or a folder of NeMo-named safetensors")
    parser.add_argument("out", help="output folder (absent or empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="architecture for sources that carry none")
    parser.add_argument("--revision", help="hub revision (defaults to the pinned one for official repos)")
    args = parser.parse_args(argv)
    from .converter import convert

    try:
        report = convert(args.src, args.out, overwrite=args.overwrite, preset=args.preset, revision=args.revision)
    except NanoCodecError as e:
        print(f"convert: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
