"""Convolutions with NeMo's padding rules and numerics, on plain (weight-norm folded) weights.

`Conv1d` is the encoder's non-causal conv: symmetric padding with a padding mode. In a ragged
batch each item must see its *own* edge padding at its own end (batch invariance), so before
such a conv the context right after each item's end is filled as that item's padding would be
(`Ragged.mode == "edge"`). `Ragged.mode == "mask"` instead reproduces NeMo's batched behaviour:
the tensor is padded at its edges and every conv output is zeroed past each item's length.

`CausalConv1d` / `CausalConvTranspose1d` are the decoder's: left zero padding only, and a
transposed conv trimmed by its stride on the right. Being causal, they are batch invariant
without any of this. With a `state` dict (streaming) each keeps its own past in `state[self]`.

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

from .masking import mask_past_lengths

_TORCH_PAD_MODE = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect"}


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 3 and x.shape[1] > 1 and x.stride(1) == 1


def cat_time(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along time that keeps a channels-last layout (a 3-D cat returns NCW, which
    would transpose every piece in memory and again at the next conv)."""
    if len(tensors) > 1 and all(is_channels_last(t) for t in tensors):
        return torch.cat([t.transpose(1, 2) for t in tensors], 1).transpose(1, 2)
    return torch.cat(tensors, -1)


def own_time(x: torch.Tensor) -> torch.Tensor:
    """A compact copy of a (small) slice in the same layout. Streaming state kept as a view
    would pin the whole chunk it was cut from: one chunk per conv alive between calls."""
    # clone, not contiguous(): a batch-1 slice counts as contiguous and would stay a view
    if is_channels_last(x):
        return x.transpose(1, 2).clone(memory_format=torch.contiguous_format).transpose(1, 2)
    return x.clone(memory_format=torch.contiguous_format)


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

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, out_ragged: Ragged | None = None) -> torch.Tensor:
        x = pad_with_context(x, self.padding, self.pad_mode, ragged)
        y = conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        out_ragged = out_ragged or ragged
        if out_ragged is not None and out_ragged.mode == "mask":
            y = out_ragged.mask(y)
        return y

    def unpadded(self, x: torch.Tensor) -> torch.Tensor:
        """The conv without any padding (the streaming encoder pads its pieces itself)."""
        return conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)


class CausalConv1d(nn.Module):
    """Causal conv: left zero padding of (k-1)*d, stride 1 (NeMo `CausalConv1dNorm`).

    With a `state` dict (streaming), the padding is instead the last (k-1)*d input samples of
    the previous call, kept in `state[self]` (zeros at the start, exactly the offline padding).
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, dilation=1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.dilation = dilation
        self.context = (kernel_size - 1) * dilation  # past samples each output needs
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        if state is None:
            x = F.pad(x, (self.context, 0))
        elif self.context:
            past = state.get(self)
            if past is None:
                past = x.new_zeros(x.shape[0], x.shape[1], self.context)
            x = cat_time([past, x])
            state[self] = own_time(x[..., -self.context :])
        return conv1d(x, self.weight, self.bias, dilation=self.dilation)


class CausalConvTranspose1d(nn.Module):
    """Transposed conv, kernel 2r, stride r, right-trimmed by r (NeMo `CausalConvTranspose1dNorm`).

    Output sample n depends on input frames n//r and n//r - 1 only. With a `state` dict
    (streaming), the previous call's last input frame is prepended (zeros at the start) and the
    outputs it alone produces are dropped: the overlap carried into the next chunk.
    """

    def __init__(self, in_channels, out_channels, stride, *, groups):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, 2 * stride))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self.groups = groups
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        # NCW in any layout: oneDNN's channels-last grouped transposed conv is ~5x slower here
        x = x.contiguous()
        r, n = self.stride, x.shape[-1]
        if state is None:
            y = F.conv_transpose1d(x, self.weight, self.bias, stride=r, groups=self.groups)
            return y[..., : n * r]
        previous = state.get(self)
        if previous is None:
            previous = x.new_zeros(x.shape[0], x.shape[1], 1)
        state[self] = own_time(x[..., -1:])
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
