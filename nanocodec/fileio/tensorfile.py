"""A byte-deterministic safetensors writer.

The safetensors library keeps metadata in a hash map whose order changes between runs, which
would make converted weights and token files differ byte for byte (contracts §6 wants the same
bytes for the same input). The format is simple enough to write directly: an 8-byte little-endian
header size, a JSON header (here with sorted keys, padded with spaces to 8 bytes), then the raw
little-endian tensor bytes in header order. Reading stays with the safetensors library.
"""
from __future__ import annotations

import io
import json
import struct
from typing import BinaryIO

import torch

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write(f: BinaryIO, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Stream a safetensors file into the binary file `f`, one tensor at a time (no full copy)."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    names, offset = sorted(tensors), 0
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    f.write(struct.pack("<Q", len(head)))
    f.write(head)
    for name in names:
        t = tensors[name].detach().cpu().contiguous()
        if t.numel():
            f.write(memoryview(t.view(torch.uint8).numpy()))


def to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    write(buf, tensors, metadata)
    return buf.getvalue()
