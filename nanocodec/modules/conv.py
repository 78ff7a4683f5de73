"""Convolutions with NeMo's padding rules, on plain (weight-norm folded) weights.

`Conv1d` is the encoder's non-causal conv: symmetric padding with a padding mode. In a ragged
batch each item must see its *own* edge padding at its own end (batch invariance), so before
such a conv the context right after each item's end is filled as that item's padding would be
(`Ragged.mode == "edge"`). `Ragged.mode == "mask"` instead reproduces NeMo's batched behaviour:
the tensor is padded at its edges and every conv output is zeroed past each item's length.

`CausalConv1d` / `CausalConvTranspose1d` are the decoder's: left zero padding only, and a
transposed conv trimmed by its stride on the right. Being causal, they are batch invariant
without any of this.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .masking import mask_past_lengths

_TORCH_PAD_MODE = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect"}


@dataclass(frozen=True)
class Ragged:
    """Valid length of each batch item at the current stage, and how padding treats it."""

    lengths: torch.Tensor  # int64 [B]
    mode: str  # "edge": each item padded at its own end; "mask": NeMo's batched behaviour

    def downsampled(self, rate: int) -> "Ragged":
        return Ragged(torch.div(self.lengths, rate, rounding_mode="floor"), self.mode)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return mask_past_lengths(x, self.lengths)


def pad_with_context(x: torch.Tensor, pad: int, pad_mode: str, ragged: Ragged | None) -> torch.Tensor:
    """Pad `x` [B,C,T] by `pad` on both sides; with an "edge" Ragged, per item at its own end."""
    if pad == 0:
        return x
    xp = F.pad(x, (pad, pad), mode=_TORCH_PAD_MODE[pad_mode])
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
        y = F.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        out_ragged = out_ragged or ragged
        if out_ragged is not None and out_ragged.mode == "mask":
            y = out_ragged.mask(y)
        return y


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
            x = torch.cat([past, x], dim=-1)
            state[self] = x[..., -self.context :]
        return F.conv1d(x, self.weight, self.bias, dilation=self.dilation)


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
        r, n = self.stride, x.shape[-1]
        if state is None:
            y = F.conv_transpose1d(x, self.weight, self.bias, stride=r, groups=self.groups)
            return y[..., : n * r]
        previous = state.get(self)
        if previous is None:
            previous = x.new_zeros(x.shape[0], x.shape[1], 1)
        state[self] = x[..., -1:]
        y = F.conv_transpose1d(torch.cat([previous, x], dim=-1), self.weight, self.bias, stride=r, groups=self.groups)
        return y[..., r : r + n * r]
