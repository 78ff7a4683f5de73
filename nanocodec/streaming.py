"""Exact streaming: a cached decoder and a lookahead-aware encoder (contracts §1).

Decoder: NeMo's decoder is fully causal with zero lookahead, so each causal conv keeps its last
(k-1)*d inputs and each transposed conv its last input frame (`state` dict, one per stream);
concatenated steps equal offline `decode` with no recomputation.

Encoder: non-causal, so every conv is a small state machine (`_ConvStream`) that emits an output
as soon as its right context has arrived, pads its own start as offline padding would once it has
seen enough samples, and pads its own true end at `flush()`. Residual sums and the mean over
kernel sizes wait until every branch has produced a sample. `lookahead_samples` is how far past a
frame's end the input must reach before that frame's tokens come out.
"""
from __future__ import annotations

import torch

from . import validation
from .errors import InvalidInputError
from .nn.conv import Conv1d, cat_time, own_time


class StreamingDecoder:
    """`step(tokens [B,G,n]) -> audio [B,1,n*spf]`; the concatenation equals `model.decode(all)`."""

    def __init__(self, model, batch_size: int = 1):
        self.model = model
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self._state: dict = {}

    @torch.no_grad()
    def step(self, tokens) -> torch.Tensor:
        m = self.model
        tokens, _ = validation.token_batch(tokens, None, m.num_codebooks, m.codebook_size, m.device)
        if tokens.shape[0] != self.batch_size:
            raise InvalidInputError(f"this stream was opened with batch_size={self.batch_size}, got {tokens.shape[0]} items")
        latents = m.quantizer.decode(tokens).to(m.dtype)
        return m.decoder(latents, state=self._state)


class _Stream:
    """One op of the streaming encoder graph: push samples in, get the outputs now computable."""

    delay = 0  # extra input samples needed past an output's own span (at this op's input rate)
    stride = 1

    def push(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flush(self) -> torch.Tensor:
        raise NotImplementedError

    def lookahead(self) -> int:
        return self.delay


class _Pointwise(_Stream):
    def __init__(self, fn):
        self.fn = fn

    def push(self, x):
        return None if x is None else self.fn(x)

    def flush(self):
        return None


class _ConvStream(_Stream):
    """A non-causal conv (symmetric padding p, kernel k, dilation d, stride s) fed in pieces."""

    def __init__(self, conv: Conv1d):
        self.conv = conv
        self.p, self.d, self.s = conv.padding, conv.dilation, conv.stride
        self.span = (conv.weight.shape[-1] - 1) * self.d + 1
        # output n covers inputs [n*s, (n+1)*s) and reads up to n*s - p + span - 1
        self.delay = self.span - 1 - self.p - (self.s - 1)
        self.stride = self.s
        self.reset()

    def reset(self):
        self.pending = None  # raw input held until the left padding can be built
        self.buf = None  # padded-input samples from position `base` on
        self.base = 0
        self.next_out = 0
        self.tail = None  # the last p+1 raw inputs, for the right padding at flush

    def _left_pad(self, x):
        p, mode = self.p, self.conv.pad_mode
        if mode == "zeros":
            return x.new_zeros(*x.shape[:2], p)
        if mode == "replicate":
            return x[..., :1].expand(-1, -1, p)
        return x[..., 1 : p + 1].flip(-1)  # reflect about the first sample

    def _right_pad(self):
        p, mode, t = self.p, self.conv.pad_mode, self.tail
        if mode == "zeros":
            return t.new_zeros(*t.shape[:2], p)
        if mode == "replicate":
            return t[..., -1:].expand(-1, -1, p)
        return t[..., -p - 1 : -1].flip(-1)

    def _ready_to_start(self, n: int) -> bool:
        return {"zeros": n >= 1, "replicate": n >= 1, "reflect": n >= self.p + 1}[self.conv.pad_mode]

    def _emit(self):
        if self.buf is None:
            return None
        end = self.base + self.buf.shape[-1]
        stop = (end - self.span) // self.s + 1  # outputs [next_out, stop) are computable now
        if stop <= self.next_out:
            return None
        lo = self.next_out * self.s - self.base
        hi = (stop - 1) * self.s + self.span - self.base
        piece = self.buf[..., lo:hi]
        y = self.conv.unpadded(piece)  # the conv's own backend: NCW, channels-last or a short matrix product
        keep = stop * self.s - self.base
        self.buf = own_time(self.buf[..., keep:])
        self.base += keep
        self.next_out = stop
        return y

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        self.tail = own_time((x if self.tail is None else cat_time([self.tail, x]))[..., -(self.p + 1):])
        if self.buf is None:
            self.pending = x if self.pending is None else cat_time([self.pending, x])
            if not self._ready_to_start(self.pending.shape[-1]):
                return None
            x, self.pending = self.pending, None
            self.buf = cat_time([self._left_pad(x), x]) if self.p else x
            return self._emit()
        self.buf = cat_time([self.buf, x])
        return self._emit()

    def flush(self):
        if self.buf is None:
            if self.pending is not None:
                raise InvalidInputError(
                    "too little audio for this model's reflect padding; pad the input with silence"
                )
            return None
        if self.p:
            self.buf = cat_time([self.buf, self._right_pad()])
        y = self._emit()
        self.reset()
        return y


def _cat(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return cat_time([a, b])


def _take(q, n):
    return q[..., :n], (own_time(q[..., n:]) if q.shape[-1] > n else None)


class _Seq(_Stream):
    def __init__(self, ops):
        self.ops = ops
        self.stride = 1
        for op in ops:
            self.stride *= op.stride

    def push(self, x):
        for op in self.ops:
            x = op.push(x)
        return x

    def flush(self):
        out = None
        for i, op in enumerate(self.ops):
            x = op.push(out) if out is not None and out.shape[-1] else None
            x = _cat(x, op.flush())
            out = x
        return out

    def lookahead(self):
        total, rate = 0, 1
        for op in self.ops:
            total += op.lookahead() * rate
            rate *= op.stride
        return total

    def reset(self):
        for op in self.ops:
            if hasattr(op, "reset"):
                op.reset()


class _Residual(_Stream):
    """x + branch(x), the skip path held back until the branch catches up."""

    def __init__(self, branch: _Seq):
        self.branch = branch
        self.reset()

    def reset(self):
        self.branch.reset()
        self.skip = None

    def _combine(self, y):
        if y is None or y.shape[-1] == 0:
            return None
        x, self.skip = _take(self.skip, y.shape[-1])
        return x + y

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        self.skip = _cat(self.skip, x)
        return self._combine(self.branch.push(x))

    def flush(self):
        out = self._combine(self.branch.flush())
        self.skip = None
        return out

    def lookahead(self):
        return self.branch.lookahead()


class _Mean(_Stream):
    """(b0(x) + b1(x) + ...) / n, each block's surplus queued until all have it."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.reset()

    def reset(self):
        for b in self.blocks:
            b.reset()
        self.queues = [None] * len(self.blocks)

    def _combine(self, outs):
        self.queues = [_cat(q, o) for q, o in zip(self.queues, outs)]
        n = min(0 if q is None else q.shape[-1] for q in self.queues)
        if n == 0:
            return None
        parts = []
        for i, q in enumerate(self.queues):
            part, self.queues[i] = _take(q, n)
            parts.append(part)
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out / len(parts)

    def push(self, x):
        if x is None or x.shape[-1] == 0:
            return None
        return self._combine([b.push(x) for b in self.blocks])

    def flush(self):
        out = self._combine([b.flush() for b in self.blocks])
        self.queues = [None] * len(self.blocks)
        return out

    def lookahead(self):
        return max(b.lookahead() for b in self.blocks)


def _encoder_graph(encoder) -> _Seq:
    def res_layer(layer):
        return _Mean([
            _Seq([
                _Residual(_Seq([_Pointwise(u.input_activation), _ConvStream(u.input_conv),
                                _Pointwise(u.skip_activation), _ConvStream(u.skip_conv)]))
                for u in block.units
            ])
            for block in layer.blocks
        ])

    ops = [_ConvStream(encoder.pre_conv)]
    for layer, act, down in zip(encoder.res_layers, encoder.activations, encoder.down_convs):
        ops += [res_layer(layer), _Pointwise(act), _ConvStream(down)]
    ops += [_Pointwise(encoder.post_activation), _ConvStream(encoder.post_conv)]
    return _Seq(ops)


def encode_in_chunks(encoder, audio: torch.Tensor, chunk: int) -> torch.Tensor:
    """Offline encoder output of `audio` [B,1,T] (T whole frames), computed `chunk` samples at a
    time on the streaming machinery: flat memory and warm caches for long inputs."""
    graph = _encoder_graph(encoder)
    outs = [graph.push(audio[..., i : i + chunk]) for i in range(0, audio.shape[-1], chunk)]
    outs.append(graph.flush())
    return cat_time([o for o in outs if o is not None])


def decode_in_chunks(decoder, latents: torch.Tensor, chunk: int) -> torch.Tensor:
    """Offline decoder output of `latents` [B,D,F], `chunk` frames at a time (causal state carried)."""
    state: dict = {}
    return torch.cat([decoder(latents[..., i : i + chunk], state=state) for i in range(0, latents.shape[-1], chunk)], dim=-1)


class StreamingEncoder:
    """`step(audio [B,1,n] | [B,n]) -> int32 tokens [B,G,f]`, `flush()` -> the rest; the
    concatenation equals `model.encode(all_audio).tokens`."""

    def __init__(self, model, batch_size: int = 1):
        self.model = model
        self.batch_size = batch_size
        self.graph = _encoder_graph(model.encoder)
        self.lookahead_samples = self.graph.lookahead()
        self.reset()

    @property
    def lookahead_ms(self) -> float:
        return 1000.0 * self.lookahead_samples / self.model.sample_rate

    def reset(self) -> None:
        self.graph.reset()
        self.samples = 0

    def _empty(self):
        m = self.model
        return torch.zeros(self.batch_size, m.num_codebooks, 0, dtype=torch.int32, device=m.device)

    def _tokens(self, latents):
        if latents is None or latents.shape[-1] == 0:
            return self._empty()
        return self.model.quantizer.encode(latents)

    @torch.no_grad()
    def step(self, audio) -> torch.Tensor:
        m = self.model
        shape = tuple(getattr(audio, "shape", ()))
        if len(shape) not in (2, 3) or shape[0] != self.batch_size or (len(shape) == 3 and shape[1] != 1):
            raise InvalidInputError(f"stream audio must be [{self.batch_size}, n] or [{self.batch_size}, 1, n], got {list(shape)}")
        if shape[-1] == 0:
            return self._empty()  # n == 0 is a valid step
        audio, _ = validation.audio_batch(audio, None, m.dtype, m.device)
        self.samples += audio.shape[-1]
        return self._tokens(self.graph.push(audio.unsqueeze(1)))

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        m = self.model
        spf = m.samples_per_frame
        padding = -self.samples % spf  # NeMo's pad_audio: zeros up to a whole frame
        try:
            if self.samples == 0:
                return self._empty()
            out = self.graph.push(torch.zeros(self.batch_size, 1, padding, dtype=m.dtype, device=m.device)) if padding else None
            return self._tokens(_cat(out, self.graph.flush()))
        finally:
            self.reset()
