"""Streaming state, named after the modules that hold it (the streaming code is the modules' own).

Decoder (causal, zero lookahead): each causal conv's state is its last `(k-1)*d` inputs and each
transposed conv's its last input frame, one tensor `[B, C, L]` per module, named by the module's
path in the decoder (`pre_conv`, `up_convs.0`, `res_layers.0.blocks.1.units.2.input_conv`, ...).
A step is functional: `DecoderStep` reads the previous step's tensors and collects the new ones,
so `audio, state_out = decoder.step(latents, state_in)` (the multi-stream slots, the ONNX step
export and CUDA graphs build on that).

Encoder (non-causal): each conv holds the raw input it cannot convolve yet (`ConvPieces`), each
residual unit the skip input its branch has not caught up with, each res layer the block outputs
that wait for the slowest block. `EncoderStream` keeps them, one record per module path, for one
stream; `final` marks the call that ends the stream (every conv pads its true end).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .time_axis import cat_time, own_time


def _names(root: nn.Module, types: tuple) -> dict[nn.Module, str]:
    return {m: name for name, m in root.named_modules() if isinstance(m, types)}


class DecoderStep:
    """One decoder step: `read(module)` the module's state from `inputs` (zeros when absent: the
    start of a stream, exactly the offline causal padding), `write(module, tensor)` into `outputs`."""

    def __init__(self, names: dict[nn.Module, str], inputs: dict[str, torch.Tensor]):
        self.names = names
        self.inputs = inputs
        self.outputs: dict[str, torch.Tensor] = {}

    def read(self, module: nn.Module, like: torch.Tensor, length: int) -> torch.Tensor:
        past = self.inputs.get(self.names[module])
        if past is None:
            past = like.new_zeros(like.shape[0], like.shape[1], length)
        return past

    def write(self, module: nn.Module, tensor: torch.Tensor) -> None:
        self.outputs[self.names[module]] = tensor


def stateful_decoder_modules(decoder: nn.Module) -> dict[nn.Module, str]:
    """module -> state name, for every decoder module that carries state between steps."""
    from .conv import CausalConv1d, CausalConvTranspose1d

    names = _names(decoder, (CausalConv1d, CausalConvTranspose1d))
    return {m: n for m, n in names.items() if not isinstance(m, CausalConv1d) or m.context}


@dataclass
class ConvPieces:
    """A non-causal conv fed in pieces. Positions count padded-input samples from 0."""

    pending: torch.Tensor | None = None  # raw input held until the left padding can be built
    buf: torch.Tensor | None = None  # padded-input samples from position `base` on
    base: int = 0
    next_out: int = 0  # the next output index to emit
    tail: torch.Tensor | None = None  # the last p+1 raw inputs, for the right padding at the end


@dataclass
class Queue:
    """Samples waiting to be combined: a residual's skip input, a res layer's block outputs."""

    parts: list = field(default_factory=list)  # one [B,C,t] tensor per input (None: empty)

    def push(self, i: int, x: torch.Tensor) -> None:
        if x.shape[-1]:
            q = self.parts[i]
            self.parts[i] = x if q is None else cat_time([q, x])

    def take(self, i: int, n: int) -> torch.Tensor:
        q = self.parts[i]
        self.parts[i] = own_time(q[..., n:]) if q.shape[-1] > n else None
        return q[..., :n]

    def ready(self) -> int:
        return min(0 if q is None else q.shape[-1] for q in self.parts)


class EncoderStream:
    """The streaming encoder's state for one stream, one record per module path."""

    def __init__(self, encoder: nn.Module):
        self.names = {m: name for name, m in encoder.named_modules()}
        self.records: dict[str, object] = {}
        self.final = False  # this call ends the stream: convs pad their true ends

    def record(self, module: nn.Module, make):
        name = self.names[module]
        rec = self.records.get(name)
        if rec is None:
            rec = self.records[name] = make()
        return rec

    def forget(self, module: nn.Module) -> None:
        self.records.pop(self.names[module], None)

    def add_skip(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y + x` of a residual unit whose branch output `y` lags its input `x`: the skip input is
        queued until the branch has produced the same samples."""
        queue = self.record(module, lambda: Queue([None]))
        queue.push(0, x)
        out = y.add_(queue.take(0, y.shape[-1])) if y.shape[-1] else y
        if self.final:
            self.forget(module)
        return out

    def mean(self, module: nn.Module, outs: list[torch.Tensor]) -> torch.Tensor:
        """`sum(outs) / len(outs)` over the samples every block has produced; the rest queued."""
        queue = self.record(module, lambda: Queue([None] * len(outs)))
        for i, o in enumerate(outs):
            queue.push(i, o)
        n = queue.ready()
        if self.final:
            self.forget(module)
        if n == 0:
            return outs[0][..., :0]
        out = queue.take(0, n)  # its own samples (queued copies or a fresh block output)
        for i in range(1, len(outs)):
            out.add_(queue.take(i, n))
        return out.div_(len(outs))
