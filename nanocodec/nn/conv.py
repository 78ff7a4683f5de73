"""Convolutions with NeMo's padding rules and numerics, on plain (weight-norm folded) weights.

`Conv1d` is the encoder's non-causal conv: symmetric padding with a padding mode. In a ragged
batch each item must see its *own* edge padding at its own end (batch invariance), so before
such a conv the context right after each item's end is filled as that item's padding would be
(`Ragged.mode == "edge"`). `Ragged.mode == "mask"` instead reproduces NeMo's batched behaviour:
the tensor is padded at its edges and every conv output is zeroed past each item's length.
With `state=` (an `EncoderStream`) it is fed in pieces and emits each output once its inputs,
padding included, have arrived.

`CausalConv1d` / `CausalConvTranspose1d` are the decoder's: left zero padding only, and a
transposed conv trimmed by its stride on the right. Being causal, they are batch invariant
without any of this. With `state=` (a `DecoderStep`) each reads its past from the previous step
and writes the new one (nn/stream_state.py).

These are NeMo's own NCW `conv1d` calls: bitwise NeMo on the same machine. The fast CPU backend
(nanocodec/backends/cpu.py) subclasses them to run channels-last where that pays and is accurate;
`cat_time` and `own_time` keep whichever memory layout their input has, so both share the
streaming code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .masking import mask_past_lengths
from .stream_state import ConvPieces
from .time_axis import cat_time, is_channels_last, own_time  # noqa: F401  (re-exported for the backends)

_TORCH_PAD_MODE = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect"}


def edge_padding(x: torch.Tensor, pad: int, pad_mode: str, side: str) -> torch.Tensor:
    """The `pad` samples `F.pad(x, mode=pad_mode)` puts before `x` (side "left") or after it
    ("right"), for `x` [B,C,T] in any memory layout (reflect needs T > pad)."""
    if pad_mode == "zeros":
        return x.new_zeros(*x.shape[:2], pad)
    if pad_mode == "replicate":
        return (x[..., :1] if side == "left" else x[..., -1:]).expand(-1, -1, pad)
    n = x.shape[-1]  # reflect about the edge sample
    return (x[..., 1 : pad + 1] if side == "left" else x[..., n - pad - 1 : n - 1]).flip(-1)


def low_precision_unsafe(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN (torch 2.13 CPU, AMX) returns wrong 16-bit convs for some small input-channel
    counts, in both layouts: e.g. 8 in-channels x kernel 12, or 4 x 16, relative error ~1 (found
    by benchmarks/cuda_device.py's CPU dry run on the reduced-width fixture; every in-channel
    count >= 16 measured right). Such convs, small by nature, run in float32: a correctness guard
    for a broken kernel, which NeMo's numerics in 16 bits do not include."""
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and weight.shape[1] < 16


def conv1d(x, weight, bias, *, stride=1, dilation=1, padding=0) -> torch.Tensor:
    """`F.conv1d`, with the 16-bit guard above."""
    if low_precision_unsafe(x, weight):
        return F.conv1d(x.float(), weight.float(), None if bias is None else bias.float(), stride=stride,
                        padding=padding, dilation=dilation).to(x.dtype)
    return F.conv1d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


@dataclass(frozen=True)
class Ragged:
    """Valid length of each batch item at the current stage, and how padding treats it."""

    lengths: torch.Tensor  # int64 [B]
    mode: str  # "edge": each item padded at its own end; "mask": NeMo's batched behaviour

    def downsampled(self, rate: int) -> "Ragged":
        return Ragged(torch.div(self.lengths, rate, rounding_mode="floor"), self.mode)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return mask_past_lengths(x, self.lengths)


def pad_with_context(x: torch.Tensor, pad: int, pad_mode: str, ragged: Ragged | None,
                     padded: torch.Tensor | None = None) -> torch.Tensor:
    """Pad `x` [B,C,T] by `pad` on both sides; with an "edge" Ragged, per item at its own end.
    `padded`: `x` already padded at the tensor's ends (another memory layout's copy of F.pad)."""
    if pad == 0:
        return x
    xp = padded if padded is not None else F.pad(x, (pad, pad), mode=_TORCH_PAD_MODE[pad_mode])
    if ragged is None or ragged.mode != "edge":
        return xp
    lengths = ragged.lengths[:, None]
    t = torch.arange(-pad, x.shape[-1] + pad, device=x.device)[None, :]
    inside = t < lengths  # the left padding (t < 0) is every item's own already
    if pad_mode == "zeros":
        return xp * inside.unsqueeze(1).to(xp.dtype)
    if pad_mode == "replicate":
        source = torch.where(inside, t, lengths - 1)
    else:  # reflect about the item's last sample, as F.pad(mode="reflect") does at a tensor end
        source = torch.where(inside, t, (2 * (lengths - 1) - t).clamp(min=0))
    index = (source + pad).unsqueeze(1).expand(-1, x.shape[1], -1)
    return torch.gather(xp, 2, index)


class Conv1d(nn.Module):
    """Non-causal conv, symmetric padding `(k*d - d)//2` unless given (NeMo `Conv1dNorm`)."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, dilation=1, padding=None, pad_mode="reflect"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self.dilation = dilation
        # NeMo: `if not padding: padding = get_padding(k, d)`, so an explicit 0 also means default.
        self.padding = padding or (kernel_size * dilation - dilation) // 2
        self.pad_mode = pad_mode
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, out_ragged: Ragged | None = None,
                state: "EncoderStream | None" = None) -> torch.Tensor:
        if state is not None:
            return self.stream(x, state)
        x = pad_with_context(x, self.padding, self.pad_mode, ragged)
        y = conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        out_ragged = out_ragged or ragged
        if out_ragged is not None and out_ragged.mode == "mask":
            y = out_ragged.mask(y)
        return y

    def unpadded(self, x: torch.Tensor) -> torch.Tensor:
        """The conv without any padding (`stream` pads its pieces itself)."""
        return conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)

    def lookahead(self) -> int:
        """Input samples an output reads past its own stride's span (at this conv's input rate)."""
        return (self.weight.shape[-1] - 1) * self.dilation - self.padding - (self.stride - 1)

    def stream(self, x: torch.Tensor, state: "EncoderStream") -> torch.Tensor:
        """The next piece of the offline output: every output whose window (padding included) has
        arrived. The start is padded as offline once enough samples have come (reflect needs p+1),
        the true end when `state.final`; then the record is cleared."""
        r = state.record(self, ConvPieces)
        p, mode = self.padding, self.pad_mode
        if x.shape[-1]:
            r.tail = own_time((x if r.tail is None else cat_time([r.tail, x]))[..., -(p + 1):])
            if r.buf is None:
                r.pending = x if r.pending is None else cat_time([r.pending, x])
                if r.pending.shape[-1] >= (p + 1 if mode == "reflect" else 1):
                    x, r.pending = r.pending, None
                    r.buf = cat_time([edge_padding(x, p, mode, "left"), x]) if p else x
            else:
                r.buf = cat_time([r.buf, x])
        if state.final:
            state.forget(self)
            if r.buf is None and r.pending is not None:
                raise InvalidInputError("too little audio for this model's reflect padding; pad the input with silence")
            if r.buf is not None and p:
                r.buf = cat_time([r.buf, edge_padding(r.tail, p, mode, "right")])
        return self._emit(r, x)

    def _emit(self, r: ConvPieces, like: torch.Tensor) -> torch.Tensor:
        s = self.stride
        span = (self.weight.shape[-1] - 1) * self.dilation + 1
        stop = 0 if r.buf is None else (r.base + r.buf.shape[-1] - span) // s + 1  # outputs [next_out, stop) computable
        if stop <= r.next_out:
            return like.new_zeros(like.shape[0], self.weight.shape[0], 0)
        lo, hi = r.next_out * s - r.base, (stop - 1) * s + span - r.base
        y = self.unpadded(r.buf[..., lo:hi])  # the conv's own backend: NCW, channels-last or a short matrix product
        keep = stop * s - r.base
        r.buf, r.base, r.next_out = own_time(r.buf[..., keep:]), r.base + keep, stop
        return y


class CausalConv1d(nn.Module):
    """Causal conv: left zero padding of (k-1)*d, stride 1 (NeMo `CausalConv1dNorm`).

    With `state=` (a `DecoderStep`), the padding is instead the last (k-1)*d input samples of
    the previous step (zeros at the start, exactly the offline padding).
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, dilation=1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.dilation = dilation
        self.context = (kernel_size - 1) * dilation  # past samples each output needs
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, state: "DecoderStep | None" = None) -> torch.Tensor:
        if state is None:
            x = F.pad(x, (self.context, 0))
        elif self.context:
            x = cat_time([state.read(self, x, self.context), x])
            state.write(self, own_time(x[..., -self.context :]))
        return conv1d(x, self.weight, self.bias, dilation=self.dilation)


class CausalConvTranspose1d(nn.Module):
    """Transposed conv, kernel 2r, stride r, right-trimmed by r (NeMo `CausalConvTranspose1dNorm`).

    Output sample n depends on input frames n//r and n//r - 1 only. With `state=` (a
    `DecoderStep`), the previous step's last input frame is prepended (zeros at the start) and
    the outputs it alone produces are dropped: the overlap carried into the next chunk.
    """

    def __init__(self, in_channels, out_channels, stride, *, groups):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, 2 * stride))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self.groups = groups
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, state: "DecoderStep | None" = None) -> torch.Tensor:
        # NCW in any layout: oneDNN's channels-last grouped transposed conv is ~5x slower here
        x = x.contiguous()
        r, n = self.stride, x.shape[-1]
        if state is None:
            y = F.conv_transpose1d(x, self.weight, self.bias, stride=r, groups=self.groups)
            return y[..., : n * r]
        previous = state.read(self, x, 1)
        state.write(self, own_time(x[..., -1:]))
        y = F.conv_transpose1d(torch.cat([previous, x], dim=-1), self.weight, self.bias, stride=r, groups=self.groups)
        return y[..., r : r + n * r]


class ConvTranspose1d(nn.Module):
    """NeMo `ConvTranspose1dNorm` on a folded weight: kernel 2r, stride r, output n*r."""

    def __init__(self, in_channels, out_channels, stride, *, groups):
        super().__init__()
        kernel_size = 2 * stride
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self.groups = groups
        # NeMo's get_up_sample_padding(k, r)
        self.padding = (kernel_size - stride + 1) // 2
        self.output_padding = (kernel_size - stride) % 2
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x.contiguous(), self.weight, self.bias, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding, groups=self.groups)
