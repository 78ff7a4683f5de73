"""`python -m nanocodec.convert SRC OUT [--overwrite] [--preset NAME] [--revision REV]` (contracts §3).

Exit 0 on success; exit 2 with one line on stderr for a user or checkpoint error.
"""
from __future__ import annotations

import argparse
import sys

from nanocodec.errors import NanoCodecError

from .command import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanocodec.convert", description="Convert a NeMo NanoCodec to nanocodec release weights.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NanoCodecError as e:
        from nanocodec.apps.cli import one_line_message  # the library's Python hints as flags

        print(f"convert: error: {one_line_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
