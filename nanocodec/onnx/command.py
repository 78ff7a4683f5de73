"""The export command's arguments and run, shared by `nanocodec export` and `python -m nanocodec.onnx`:
`nanocodec export MODEL OUT_DIR --format onnx [--opset N] [--overwrite]` (contracts §9)."""
from __future__ import annotations

import argparse

from .layout import DEFAULT_OPSET

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a converted folder, a hub repo id, a .nemo or a NeMo-named safetensors folder "
                             "(anything AudioCodecModel.from_pretrained takes)")
    parser.add_argument("out", metavar="OUT_DIR", help="output folder (absent or empty unless --overwrite)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--preset", help="architecture for sources that carry none (see nanocodec convert)")
    parser.add_argument("--revision", help="hub revision (defaults to the pinned one for official repos)")


def run(args: argparse.Namespace) -> int:
    """Export as `args` say; print a summary unless `args.quiet`. Errors propagate (NanoCodecError:
    the caller prints one line and exits 2)."""
    from ..model import AudioCodecModel  # torch: only once an export runs, not for --help
    from .export import export_onnx

    quiet = getattr(args, "quiet", False)
    options = {k: v for k, v in (("preset", args.preset), ("revision", args.revision)) if v is not None}
    model = AudioCodecModel.from_pretrained(args.model, backend="reference", **options)
    report = export_onnx(model, args.out, opset=args.opset, overwrite=args.overwrite, progress=not quiet)
    if not quiet:
        print(report.summary())
        print(f"wrote {args.out}")
    return 0
