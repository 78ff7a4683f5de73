"""Exact streaming (contracts §1, §8) and chunked processing, on the modules' own streaming code.

- `StreamingDecoder`: NeMo's decoder is causal with zero lookahead; each step carries the named
  decoder state (`decoder.step`), so concatenated steps equal offline `decode`. Several
  independent streams share one decoder as slots of one batch (contracts §8).
- `StreamingEncoder`: the encoder looks ahead; every conv emits an output once its right context
  has arrived (`Conv1d.stream`); `lookahead_samples` is how far past a frame's end that is.
- `encode_in_chunks` / `decode_in_chunks`: offline results computed a chunk at a time.
"""
from .chunked import decode_in_chunks, encode_in_chunks
from .decoder import StreamingDecoder
from .encoder import StreamingEncoder

__all__ = ["StreamingDecoder", "StreamingEncoder", "decode_in_chunks", "encode_in_chunks"]
