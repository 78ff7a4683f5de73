"""ONNX export of a nanocodec model and a torch-free ONNX Runtime path (contracts §9).

- `nanocodec export MODEL OUT_DIR --format onnx [--opset N]` (or `python -m nanocodec.onnx MODEL
  OUT_DIR`, or `nanocodec.onnx.export.export_onnx`) writes `encoder.onnx`, `decoder.onnx`,
  `decoder_step.onnx` (causal decoders) and `onnx_config.json`;
- `from nanocodec.onnx import OnnxCodec` runs such a folder with numpy and onnxruntime only.

Nothing here imports torch until an export runs: `OnnxCodec` is resolved on first use.
"""
from __future__ import annotations

__all__ = ["OnnxCodec", "OnnxStreamDecoder"]


def __getattr__(name: str):
    if name in __all__:
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'nanocodec.onnx' has no attribute {name!r}")
