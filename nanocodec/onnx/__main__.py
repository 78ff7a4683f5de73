"""`python -m nanocodec.onnx MODEL OUT_DIR [--opset N] [--overwrite]`: the same as `nanocodec export`.

Exit 0 on success; exit 2 with one line on stderr for a user or checkpoint error.
"""
from __future__ import annotations

import argparse
import sys

from nanocodec.errors import NanoCodecError

from .command import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanocodec.onnx",
                                     description="Export a nanocodec model as ONNX graphs (contracts §9).")
    add_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NanoCodecError as e:
        print(f"export: error: {e}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
