"""Convolutions with NeMo's padding rules, on plain (weight-norm folded) weights.

`Conv1d` is the encoder's non-causal conv: symmetric padding with a padding mode. In a ragged
batch each item must see its *own* edge padding at its own end (batch invariance), so before
such a conv the context right after each item's end is filled as that item's padding would be
(`Ragged.mode == "edge"`). `Ragged.mode == "mask"` instead reproduces NeMo's batched behaviour:
the tensor is padded at its edges and every conv output is zeroed past each item's length.

`CausalConv1d` / `CausalConvTranspose1d` are the decoder's: left zero padding only, and a
transposed conv trimmed by its stride on the right. Being causal, they are batch invariant
without any of this.

Layout: on CPU the encoder's convs run as 2-D convs on `[B,C,1,T]` laid out channels-last
(`[B,T,C]` in memory), where oneDNN's kernels are 1.2-5x faster than its NCW ones for these
shapes (small channel counts at high sample rates gain most), and the encoder's leaky ReLUs and
sums simply keep that layout; the edge padding is patched in rather than copied (`_edge_patched`).
The causal decoder's convs run channels-last too, with its (Half)Snake computed on that memory
in tiles (`activations.snake_rows`); only its grouped transposed convs stay NCW (oneDNN's
channels-last kernel for them is ~5x slower), converted once on each side. The non-causal HiFi-GAN
decoders (LFSC, audio codecs) do the same.
`layout="nemo"` runs NeMo's own NCW `conv1d` calls everywhere, bitwise NeMo; the layouts differ
by float32 summation order only (~1e-7 relative; contracts §5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backends import accuracy_gate
from .masking import mask_past_lengths

_TORCH_PAD_MODE = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect"}
_CL = torch.channels_last
LAYOUTS = ("auto", "channels_last", "nemo")


def channels_last_for(conv: nn.Module, x: torch.Tensor) -> bool:
    """Whether `conv` runs channels-last on `x`. "auto": on CPU, where the conv says it pays
    (`auto_channels_last`, measured) and this machine's channels-last kernels for its shape are as
    accurate as NCW (`accuracy_gate`); NeMo's NCW elsewhere."""
    if conv.layout == "auto":
        return (conv.auto_channels_last and x.device.type == "cpu"
                and accuracy_gate.channels_last_accurate(conv.weight, getattr(conv, "stride", 1), conv.dilation))
    return conv.layout == "channels_last"


def _cl_weight(param: nn.Parameter) -> torch.Tensor:
    """The conv weight as a channels-last 4-D view. The parameter's storage is re-laid out once
    (in place of the NCW copy, so memory does not double); state dicts and `.to()` keep it."""
    w4 = param.unsqueeze(2)
    if not w4.is_contiguous(memory_format=_CL):
        with torch.inference_mode(False), torch.no_grad():
            param.data = param.data.permute(0, 2, 1).contiguous().permute(0, 2, 1)
        w4 = param.unsqueeze(2)
    return w4


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B,C,T] with memory laid out [B,T,C] (a copy unless it already is)."""
    return x.unsqueeze(2).contiguous(memory_format=_CL).squeeze(2)


def _ncw_weight(param: nn.Parameter) -> torch.Tensor:
    """The weight laid out as NeMo's (a channels-last weight would make oneDNN pick its
    channels-last kernels even for an NCW input, and NeMo's bitwise results would be lost)."""
    if not param.is_contiguous():
        with torch.inference_mode(False), torch.no_grad():
            param.data = param.data.contiguous()
    return param


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


def _low_precision_unsafe(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN (torch 2.13 CPU, AMX) returns wrong 16-bit convs for some small input-channel
    counts, in both layouts: e.g. 8 in-channels x kernel 12, or 4 x 16, relative error ~1 (found
    by benchmarks/cuda_device.py's CPU dry run on the reduced-width fixture; every in-channel
    count >= 16 measured right). Such convs, small by nature, run in float32."""
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and weight.shape[1] < 16


def conv1d(x, weight, bias, *, stride=1, dilation=1, padding=0, channels_last=False) -> torch.Tensor:
    """`F.conv1d`, or the same conv as a channels-last 2-D conv (output `[B,C,T]` strided `[B,T,C]`)."""
    if _low_precision_unsafe(x, weight):
        y = F.conv1d(x.float(), weight.float(), None if bias is None else bias.float(), stride=stride,
                     padding=padding, dilation=dilation).to(x.dtype)
        return to_channels_last(y) if channels_last else y
    if not channels_last:
        return F.conv1d(x, _ncw_weight(weight), bias, stride=stride, padding=padding, dilation=dilation)
    y = F.conv2d(x.unsqueeze(2).contiguous(memory_format=_CL), _cl_weight(weight), bias,
                 stride=(1, stride), padding=(0, padding), dilation=(1, dilation))
    return y.squeeze(2)


@dataclass(frozen=True)
class Ragged:
    """Valid length of each batch item at the current stage, and how padding treats it."""

    lengths: torch.Tensor  # int64 [B]
    mode: str  # "edge": each item padded at its own end; "mask": NeMo's batched behaviour

    def downsampled(self, rate: int) -> "Ragged":
        return Ragged(torch.div(self.lengths, rate, rounding_mode="floor"), self.mode)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        return mask_past_lengths(x, self.lengths)


def _pad_channels_last(x: torch.Tensor, pad: int, pad_mode: str) -> torch.Tensor:
    """F.pad(x, (pad, pad), mode) for a channels-last [B,C,T], keeping the layout. Plain copies
    (the same values as F.pad): 3-D padding would return NCW, and 4-D replication padding of a
    channels-last tensor is ~10x slower than copying."""
    b, c, t = x.shape
    if pad_mode == "reflect" and pad >= t:
        return F.pad(x.contiguous(), (pad, pad), mode="reflect")  # raises torch's own error
    out = x.new_empty(b, t + 2 * pad, c).transpose(1, 2)
    out[..., pad : pad + t].copy_(x)
    left, right = out[..., :pad], out[..., pad + t :]
    if pad_mode == "zeros":
        left.zero_()
        right.zero_()
    elif pad_mode == "replicate":
        left.copy_(x[..., :1].expand(-1, -1, pad))
        right.copy_(x[..., -1:].expand(-1, -1, pad))
    else:  # reflect about the first and last samples
        left.copy_(x[..., 1 : pad + 1].flip(-1))
        right.copy_(x[..., t - pad - 1 : t - 1].flip(-1))
    return out


def pad_with_context(x: torch.Tensor, pad: int, pad_mode: str, ragged: Ragged | None) -> torch.Tensor:
    """Pad `x` [B,C,T] by `pad` on both sides; with an "edge" Ragged, per item at its own end."""
    if pad == 0:
        return x
    if is_channels_last(x):
        xp = _pad_channels_last(x, pad, pad_mode)
    else:
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
        self.layout = "auto"  # see the module docstring; AudioCodecModel.set_conv_layout sets it
        # "auto" picks channels-last on CPU. An encoder with (Half)Snake turns it off: its lengths
        # (any sample count), unlike a decoder's, need not split into tiles (activations.snake_rows)
        self.auto_channels_last = True
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, out_ragged: Ragged | None = None) -> torch.Tensor:
        cl = channels_last_for(self, x)
        y = None
        if cl and (ragged is None or ragged.mode != "edge"):
            y = self._edge_patched(x)
        if y is None:
            x = pad_with_context(x, self.padding, self.pad_mode, ragged)
            y = conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation, channels_last=cl)
        out_ragged = out_ragged or ragged
        if out_ragged is not None and out_ragged.mode == "mask":
            y = out_ragged.mask(y)
        return y

    def _edge_patched(self, x: torch.Tensor) -> torch.Tensor | None:
        """The padded conv without a padded copy of the whole input (channels-last path).

        The conv runs with its own zero padding; only the few outputs whose window reaches into
        the padding differ from the replicate/reflect result, and those are recomputed from short
        explicitly padded edge segments. None when the input is too short for that (the caller
        then pads the whole input).
        """
        p, s, n = self.padding, self.stride, x.shape[-1]
        conv = lambda z, padding=0: conv1d(z, self.weight, self.bias, stride=s, dilation=self.dilation,
                                           padding=padding, channels_last=True)
        if self.pad_mode == "zeros" or p == 0:
            return conv(x, p)
        span = (self.weight.shape[-1] - 1) * self.dilation + 1
        outputs = (n + 2 * p - span) // s + 1
        left = -(-p // s)  # outputs [0, left) read the left padding
        right = max(0, -(-(n + p - span + 1) // s))  # outputs [right, outputs) read the right padding
        right_start = right * s - p  # first raw input sample those outputs read
        left_stop = (left - 1) * s + span - p  # raw inputs [0, left_stop) feed the left outputs
        if right <= left or right_start < 0 or left_stop > n or outputs <= 0:
            return None
        if self.pad_mode == "reflect" and p >= n:
            return None
        # Both edge segments get one length L (the left one reaching further right, the right one
        # starting `j` outputs earlier) and run as one small matrix product on a doubled batch.
        j = min(right, (n + 2 * p - (p + left_stop)) // s)
        length = n + 2 * p - j * s
        if j < left or length - p > n:
            return None
        y = conv(x, p)
        if self.pad_mode == "replicate":
            head, tail = x[..., :1].expand(-1, -1, p), x[..., -1:].expand(-1, -1, p)
        else:
            head, tail = x[..., 1 : p + 1].flip(-1), x[..., n - p - 1 : n - 1].flip(-1)
        b = x.shape[0]
        edges = torch.cat([cat_time([head, x[..., : length - p]]), cat_time([x[..., j * s - p :], tail])], 0)
        e = self.unpadded_short(edges)
        y[..., :left] = e[:b, :, :left]
        y[..., right:] = e[b:, :, right - j :]
        return y

    def unpadded_short(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of a short input without padding, as one matrix product (`unfolded_conv`)."""
        return unfolded_conv(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)


def unfolded_conv(x: torch.Tensor, weight: nn.Parameter, bias, *, stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """The conv (no padding) of a short input as one matrix product of its unfolded windows:
    a conv call would have oneDNN reorder the whole weight again (as much work as the main
    conv on 1 s of audio for the widest layers), and torch's fallback is slower still."""
    b, c, n = x.shape
    k, s, d = weight.shape[-1], stride, dilation
    outputs = (n - (k - 1) * d - 1) // s + 1
    rows = x.transpose(1, 2).contiguous()  # [B, T, C]
    windows = rows.as_strided((b, outputs, k, c), (n * c, s * c, d * c, 1)).reshape(b, outputs, k * c)
    w = _cl_weight(weight).permute(0, 2, 3, 1).reshape(weight.shape[0], k * c)  # a view
    return torch.addmm(bias, windows.reshape(b * outputs, k * c), w.t()).view(b, outputs, -1).transpose(1, 2)


# A chunk at least this many times the conv's context is patched rather than copied behind its
# past. Estimated from the decoder's shapes: the patch's product (context x k*C x C) stays well
# under the chunk copy (n x C) above this; measured overall, a 10 s decode's torch.cat time went
# from 256 to 20 ms for 37 ms of patch products.
_PATCH_MIN_RATIO = 64


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
        self.layout = "auto"
        # "auto": channels-last on CPU (the (Half)Snake between these convs keeps that layout
        # at full vector width; see activations.snake_rows)
        self.auto_channels_last = True
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        cl = channels_last_for(self, x)
        if state is None:
            if cl:
                # the conv's own zero padding on both sides, the right-hand outputs dropped:
                # no padded copy of the input, and `context` extra outputs computed (<= 50 samples)
                n = x.shape[-1]
                y = conv1d(x, self.weight, self.bias, dilation=self.dilation, padding=self.context, channels_last=True)
                return y[..., :n]  # a view; channels-last rows, each item's contiguous
            x = F.pad(x, (self.context, 0))
        elif self.context:
            past = state.get(self)
            if past is None:
                past = x.new_zeros(x.shape[0], x.shape[1], self.context)
                if cl:
                    past = to_channels_last(past)
            if cl and x.shape[-1] >= _PATCH_MIN_RATIO * self.context:
                return self._patched_chunk(x, past, state)
            x = cat_time([past, x])
            state[self] = own_time(x[..., -self.context :])
        return conv1d(x, self.weight, self.bias, dilation=self.dilation, channels_last=cl)

    def _patched_chunk(self, x: torch.Tensor, past: torch.Tensor, state: dict) -> torch.Tensor:
        """A long chunk without copying it behind its past: the conv with zero padding, then the
        first `context` outputs (the ones that read the past) recomputed from past + chunk head."""
        c, n = self.context, x.shape[-1]
        state[self] = own_time(x[..., -c:])
        y = conv1d(x, self.weight, self.bias, dilation=self.dilation, padding=c, channels_last=True)[..., :n]
        y[..., :c] = unfolded_conv(cat_time([past, x[..., :c]]), self.weight, self.bias, dilation=self.dilation)
        return y


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
