"""The fast CPU backend: the model core's modules, run channels-last where that pays and is accurate.

oneDNN's channels-last (`nwc`) conv kernels are 1.2-5x faster than its NCW ones for the small
channel counts at high sample rates of these codecs. This backend runs a conv as a 2-D conv on
`[B,C,1,T]` laid out `[B,T,C]` in memory when `accuracy_gate` found this machine's channels-last
kernels as accurate as NCW for its shape, and keeps everything around it in that layout:

- `FastConv1d`: the encoder's (and HiFi-GAN decoder's) convs; replicate/reflect edge padding is
  patched into the few border outputs (`_edge_patched`) instead of copying the whole input;
- `FastCausalConv1d`: the causal decoder's convs; a long chunk's causal context is patched in the
  same way instead of copying the chunk behind its past (`_patched_chunk`);
- `FastSnake` / `FastHalfSnake`: (Half)Snake on channels-last memory in tiles (`snake_rows`), so
  every elementwise op runs at full vector width;
- `FastResLayer`: lays a res layer's input out once as its convs take it;
- 16-bit convs with < 16 input channels run in float32 (`conv1d`): oneDNN gets some wrong.

The decoders' first conv (its rounding is amplified by every later layer) and the grouped
transposed convs (oneDNN's channels-last kernel for them is ~5x slower) stay NCW, and so do the
convs of encoders with (Half)Snake activations (their lengths need not split into tiles).

`apply(model, force=...)` swaps the modules' classes for these subclasses (same parameters, same
state-dict names) and lays each channels-last conv's weight out once; `revert(model)` swaps them
back to the reference classes with NCW weights (bitwise NeMo). Nothing is re-laid out in `forward`.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.activations import LRELU_SLOPE, SNAKE_EPS, HalfSnake, Snake, needs_grad, snake
from ..nn.conv import (CausalConv1d, Conv1d, Ragged, cat_time, edge_padding, is_channels_last, low_precision_unsafe, own_time,
                       pad_with_context)
from ..nn.conv import conv1d as reference_conv1d
from ..nn.resblocks import ResLayer, StreamState
from ..nn.stream_state import DecoderStep, EncoderStream
from . import accuracy_gate

_CL = torch.channels_last


# ---- tensors and weights in channels-last memory ----------------------------------------------
def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B,C,T] with memory laid out [B,T,C] (a copy unless it already is)."""
    return x.unsqueeze(2).contiguous(memory_format=_CL).squeeze(2)


def _lay_out(param: nn.Parameter, channels_last: bool) -> None:
    """Re-lay a conv weight's storage once (in place of the old copy, so memory does not double):
    channels-last for this backend's 2-D convs, NCW for NeMo's (a channels-last weight would make
    oneDNN pick its channels-last kernels even for an NCW input)."""
    with torch.inference_mode(False), torch.no_grad():
        if channels_last and not param.unsqueeze(2).is_contiguous(memory_format=_CL):
            param.data = param.data.permute(0, 2, 1).contiguous().permute(0, 2, 1)
        elif not channels_last and not param.is_contiguous():
            param.data = param.data.contiguous()


def conv1d(x, weight, bias, *, stride=1, dilation=1, padding=0, channels_last=False) -> torch.Tensor:
    """The reference `conv1d`, or the same conv as a channels-last 2-D conv (output `[B,C,T]`
    strided `[B,T,C]`); 16-bit convs oneDNN gets wrong in float32 in both (nn.conv.low_precision_unsafe)."""
    if not channels_last:
        return reference_conv1d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    if low_precision_unsafe(x, weight):
        return to_channels_last(reference_conv1d(x, weight, bias, stride=stride, padding=padding, dilation=dilation))
    y = F.conv2d(x.unsqueeze(2).contiguous(memory_format=_CL), weight.unsqueeze(2), bias,
                 stride=(1, stride), padding=(0, padding), dilation=(1, dilation))
    return y.squeeze(2)


def unfolded_conv(x: torch.Tensor, weight: torch.Tensor, bias, *, stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """The conv (no padding) of a short input as one matrix product of its unfolded windows:
    a conv call would have oneDNN reorder the whole weight again (as much work as the main
    conv on 1 s of audio for the widest layers), and torch's fallback is slower still."""
    b, c, n = x.shape
    k, s, d = weight.shape[-1], stride, dilation
    outputs = (n - (k - 1) * d - 1) // s + 1
    rows = x.transpose(1, 2).contiguous()  # [B, T, C]
    windows = rows.as_strided((b, outputs, k, c), (n * c, s * c, d * c, 1)).reshape(b, outputs, k * c)
    w = weight.permute(0, 2, 1).reshape(weight.shape[0], k * c)  # a view for a channels-last weight
    return torch.addmm(bias, windows.reshape(b * outputs, k * c), w.t()).view(b, outputs, -1).transpose(1, 2)


def _pad_channels_last(x: torch.Tensor, pad: int, pad_mode: str) -> torch.Tensor:
    """F.pad(x, (pad, pad), mode) of a [B,C,T] in any layout, laid out channels-last. Plain copies
    (the same values as F.pad): 3-D padding would return NCW, and 4-D replication padding of a
    channels-last tensor is ~10x slower than copying."""
    b, c, t = x.shape
    if pad_mode == "reflect" and pad >= t:
        return F.pad(x.contiguous(), (pad, pad), mode="reflect")  # raises torch's own error
    out = x.new_empty(b, t + 2 * pad, c).transpose(1, 2)
    out[..., pad : pad + t].copy_(x)
    out[..., :pad].copy_(edge_padding(x, pad, pad_mode, "left"))
    out[..., pad + t :].copy_(edge_padding(x, pad, pad_mode, "right"))
    return out


# ---- convolutions -------------------------------------------------------------------------------
class FastConv1d(Conv1d):
    """`Conv1d`, channels-last when `channels_last` (set by `apply`) and on CPU."""

    channels_last = False

    def _cl(self, x: torch.Tensor) -> bool:
        return self.channels_last and x.device.type == "cpu"

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, out_ragged: Ragged | None = None,
                state: EncoderStream | None = None) -> torch.Tensor:
        if state is not None:  # the reference streaming code, on this class's `unpadded`
            return self.stream(x, state)
        if not self._cl(x):
            # NCW: oneDNN would pick its channels-last kernel for a channels-last input
            return super().forward(x.contiguous(), ragged, out_ragged)
        y = None
        if ragged is None or ragged.mode != "edge":
            y = self._edge_patched(x)
        if y is None:
            padded = _pad_channels_last(x, self.padding, self.pad_mode) if self.padding else None
            x = pad_with_context(x, self.padding, self.pad_mode, ragged, padded=padded)
            y = conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation, channels_last=True)
        out_ragged = out_ragged or ragged
        if out_ragged is not None and out_ragged.mode == "mask":
            y = out_ragged.mask(y)
        return y

    def unpadded(self, x: torch.Tensor) -> torch.Tensor:
        if not self._cl(x):
            return conv1d(x.contiguous(), self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        if x.shape[-1] * x.shape[1] < SHORT_PIECE_VALUES:
            return unfolded_conv(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)
        return conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation, channels_last=True)

    def _edge_patched(self, x: torch.Tensor) -> torch.Tensor | None:
        """The padded conv without a padded copy of the whole input.

        The conv runs with its own zero padding; only the few outputs whose window reaches into
        the padding differ from the replicate/reflect result, and those are recomputed from short
        explicitly padded edge segments. None when the input is too short for that (the caller
        then pads the whole input).
        """
        p, s, n = self.padding, self.stride, x.shape[-1]

        def conv(z, padding=0):
            return conv1d(z, self.weight, self.bias, stride=s, dilation=self.dilation, padding=padding, channels_last=True)

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
        head, tail = edge_padding(x, p, self.pad_mode, "left"), edge_padding(x, p, self.pad_mode, "right")
        b = x.shape[0]
        edges = torch.cat([cat_time([head, x[..., : length - p]]), cat_time([x[..., j * s - p :], tail])], 0)
        e = unfolded_conv(edges, self.weight, self.bias, stride=s, dilation=self.dilation)
        y[..., :left] = e[:b, :, :left]
        y[..., right:] = e[b:, :, right - j :]
        return y


# Pieces of fewer input values than this (80 KiB of float32) are convolved as one matrix product of
# their windows (streaming encoder): a conv call would first reorder the whole weight, as much work
# as the conv itself for such pieces; above it, the conv call's faster kernel wins.
SHORT_PIECE_VALUES = 20480

# A chunk at least this many times the conv's context is patched rather than copied behind its
# past. Estimated from the decoder's shapes: the patch's product (context x k*C x C) stays well
# under the chunk copy (n x C) above this; measured overall, a 10 s decode's torch.cat time went
# from 256 to 20 ms for 37 ms of patch products.
_PATCH_MIN_RATIO = 64


class FastCausalConv1d(CausalConv1d):
    """`CausalConv1d`, channels-last when `channels_last` (set by `apply`) and on CPU."""

    channels_last = False
    step_packed = True  # streaming steps on prepacked weights (`apply` clears it for the first conv)

    def forward(self, x: torch.Tensor, state: DecoderStep | None = None) -> torch.Tensor:
        cl = self.channels_last and x.device.type == "cpu"
        if state is not None and self.context and x.shape[-1] * x.shape[1] <= STEP_MAX_VALUES:
            return self._short_step(x, state, cl)
        if not cl:
            # NCW: oneDNN would pick its channels-last kernel for a channels-last input
            return super().forward(x.contiguous(), state)
        if state is None:
            # the conv's own zero padding on both sides, the right-hand outputs dropped: no padded
            # copy of the input, and `context` extra outputs computed (<= 50 samples)
            n = x.shape[-1]
            y = conv1d(x, self.weight, self.bias, dilation=self.dilation, padding=self.context, channels_last=True)
            return y[..., :n]  # a view; channels-last rows, each item's contiguous
        if self.context:
            return self._patched_chunk(x, state.read(self, x, self.context), state)
        return conv1d(x, self.weight, self.bias, dilation=self.dilation, channels_last=True)

    def _short_step(self, x: torch.Tensor, state: DecoderStep, cl: bool) -> torch.Tensor:
        """A streaming step's conv: past + input in the conv's layout, then the conv on a weight
        reordered for oneDNN once (`packed_conv1d`), not on every call."""
        past = state.read(self, x, self.context)
        window = cat_time([to_channels_last(past), to_channels_last(x)]) if cl else torch.cat([past, x], -1).contiguous()
        state.write(self, own_time(window[..., -self.context :]))
        if not self.step_packed:  # the decoder's first conv: summed as NeMo sums it (module docstring)
            return conv1d(window, self.weight, self.bias, dilation=self.dilation, channels_last=cl)
        return packed_conv1d(self, window)

    def _patched_chunk(self, x: torch.Tensor, past: torch.Tensor, state: DecoderStep) -> torch.Tensor:
        """A long chunk without copying it behind its past: the conv with zero padding, then the
        first `context` outputs (the ones that read the past) recomputed from past + chunk head."""
        c, n = self.context, x.shape[-1]
        state.write(self, own_time(x[..., -c:]))
        y = conv1d(x, self.weight, self.bias, dilation=self.dilation, padding=c, channels_last=True)[..., :n]
        y[..., :c] = unfolded_conv(cat_time([past, x[..., :c]]), self.weight, self.bias, dilation=self.dilation)
        return y


# ---- streaming steps: weights reordered for oneDNN once ---------------------------------------------
# A streaming step convolves a few samples with the whole weight: a conv call reorders the weight
# into oneDNN's blocked layout every time (for the widest layers as much work as the conv itself,
# measured), and for the smallest inputs torch falls back to its slow reference kernels. Steps
# instead call oneDNN with the weight reordered once per conv and window length (the step sizes a
# stream uses; the reorder is a hint for that length, valid for any).
_PACKED_LENGTHS = 4  # window lengths kept per conv (e.g. 1- and 25-frame steps)
# Step inputs up to this many values (512 KiB of float32: a 1-frame step's widest, 1764 samples x 27
# channels, or a 25-frame step's first stages) take the packed path; longer chunks (offline chunked
# decoding) the patched one, where the reorder is a small part of the conv.
STEP_MAX_VALUES = 1 << 17


def _packable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and not needs_grad(x, weight))


class PackedWeights:
    """A conv's oneDNN-reordered weights by window length. A cache, not state: a copied or pickled
    model starts without it (oneDNN tensors have no storage to copy) and rebuilds it on its first step."""

    def __init__(self, tag=None):
        self.tag = tag
        self.by_length: dict[int, torch.Tensor] = {}

    def __deepcopy__(self, memo):
        return PackedWeights()

    def __reduce__(self):
        return (PackedWeights, ())


def packed_conv1d(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`conv1d(x, module.weight, module.bias, dilation=module.dilation)` (no padding, stride 1) on
    a weight reordered for oneDNN once per window length; the output keeps `x`'s layout."""
    if not _packable(x, module.weight):
        return conv1d(x, module.weight, module.bias, dilation=module.dilation, channels_last=is_channels_last(x))
    w = module.weight
    tag = (w.data_ptr(), w._version, w.dtype)  # new or reloaded weights invalidate the reorders
    cache = module.__dict__.get("_packed_weights")
    if cache is None or cache.tag != tag:
        cache = module.__dict__["_packed_weights"] = PackedWeights(tag)
    length = x.shape[-1]
    packed = cache.by_length.get(length)
    if packed is None:
        if len(cache.by_length) >= _PACKED_LENGTHS:
            cache.by_length.pop(next(iter(cache.by_length)))
        with torch.no_grad():
            packed = cache.by_length[length] = torch.ops.mkldnn._reorder_convolution_weight(
                w.unsqueeze(2).contiguous(), [0, 0], [1, 1], [1, module.dilation], 1, [1, x.shape[1], 1, length])
    x4 = x.unsqueeze(2).contiguous(memory_format=_CL) if is_channels_last(x) else x.unsqueeze(2)
    return torch.ops.mkldnn._convolution_pointwise(x4, packed, module.bias, [0, 0], [1, 1], [1, module.dilation], 1,
                                                   "none", [], "").squeeze(2)


def drop_packed_weights(module: nn.Module) -> None:
    module.__dict__.pop("_packed_weights", None)


# ---- (Half)Snake on channels-last memory ---------------------------------------------------------
def _rows_of(x: torch.Tensor) -> torch.Tensor | None:
    """The `[B,T,C]` rows of a channels-last `[B,C,T]` (each item's rows contiguous), else None."""
    if x.dim() == 3 and x.shape[1] > 1 and x.stride(1) == 1 and x.stride(2) == x.shape[1]:
        return x.transpose(1, 2)
    return None


# Time steps per tile: per-channel constants tiled over this many steps give the elementwise ops
# long unit-stride inner loops (a [C]-vector broadcast over [T,C] rows loops C at a time, on the
# scalar path for C < 16: 2-5x slower, measured).
_TILE_ELEMENTS = 4096


@functools.lru_cache(maxsize=256)
def _steps_per_tile(t: int, c: int) -> int | None:
    """A divisor of `t` near `_TILE_ELEMENTS / c` (decoder lengths are frames x the stage's
    upsampling product, which always has one), or None."""
    want = max(1, _TILE_ELEMENTS // c)
    for d in range(3 * want):
        for k in (want + d, want - d):
            if 1 <= k <= t and t % k == 0:
                return k
    return None


def _tiled_constants(alpha: torch.Tensor, n: int, c: int, k: int, dtype: torch.dtype, owner: dict | None) -> torch.Tensor:
    """[3, k*c]: alpha, 1/(alpha+eps) and the PReLU slope per channel, tiled k times; kept in
    `owner` (the module's __dict__) per tile, so that a streaming step does not rebuild them on
    every call; rebuilt when alpha changes."""
    tag = (alpha.data_ptr(), alpha._version, dtype)
    cache = None if owner is None else owner.get("_snake_tiles")
    if cache is None or cache[0] != tag:
        cache = (tag, {})
        if owner is not None:
            owner["_snake_tiles"] = cache
    tiles = cache[1].get((c, k))
    if tiles is None:
        a = alpha.detach().reshape(-1).to(dtype)
        per_channel = a.new_zeros(3, c)
        per_channel[0, :n] = a
        per_channel[1, :n] = (a + SNAKE_EPS).reciprocal()
        per_channel[2, :n] = 1.0
        per_channel[2, n:] = LRELU_SLOPE
        tiles = cache[1][(c, k)] = per_channel.repeat(1, k)
    return tiles


def snake_rows(rows: torch.Tensor, alpha: torch.Tensor, snake_channels: int, owner: dict | None = None) -> torch.Tensor:
    """(Half)Snake on channels-last memory: `rows` [B,T,C] (each item's rows contiguous) -> new
    [B,T,C]: Snake on the first `snake_channels`, leaky ReLU on the rest.

    The per-channel constants are tiled over `k` time steps, so that every op runs at full
    vector width: Snake on all channels with alpha = 1/(alpha+eps) = 0 on the leaky-ReLU ones
    (the term is then exactly 0), then one PReLU with slope 1 on the Snake channels (x > 0 ? x :
    1*x, exact) and NeMo's 0.01 on the others. Per element the same IEEE operations as NeMo's."""
    b, t, c = rows.shape
    n = snake_channels
    k = _steps_per_tile(t, c)
    alpha_t, inv_t, slope_t = _tiled_constants(alpha, n, c, k or 1, rows.dtype, owner)
    if k is None:  # no tiling: per-channel broadcasting (correct, slower)
        out = snake(rows, alpha_t, inv_alpha=inv_t)
        if n < c:
            torch.ops.aten.leaky_relu.out(rows[..., n:], LRELU_SLOPE, out=out[..., n:])
        return out
    out = snake(rows.reshape(b, t // k, k * c), alpha_t, inv_alpha=inv_t)  # a view of rows; new out
    if n < c:
        out = nn.functional.prelu(out.reshape(-1, k * c), slope_t)
    return out.view(b, t, c)


class FastSnake(Snake):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = None if needs_grad(x, self.alpha) else _rows_of(x)
        if rows is None:
            return super().forward(x)
        return snake_rows(rows, self.alpha, x.shape[1], self.__dict__).transpose(1, 2)  # stays channels-last


class FastHalfSnake(HalfSnake):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = None if needs_grad(x, self.alpha) else _rows_of(x)
        if rows is None:
            return super().forward(x)
        return snake_rows(rows, self.alpha, self.snake_channels, self.__dict__).transpose(1, 2)


class FastResLayer(ResLayer):
    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, state: StreamState | None = None) -> torch.Tensor:
        # every block reads x: laid out once as their convs take it, not converted again by each
        first = self.blocks[0].units[0].input_conv
        if getattr(first, "channels_last", False) and x.device.type == "cpu":
            x = to_channels_last(x)
        return super().forward(x, ragged, state)


# ---- applying the backend to a model --------------------------------------------------------------
FAST = {Conv1d: FastConv1d, CausalConv1d: FastCausalConv1d, Snake: FastSnake, HalfSnake: FastHalfSnake,
        ResLayer: FastResLayer}
REFERENCE = {fast: base for base, fast in FAST.items()}
CONVS = (FastConv1d, FastCausalConv1d)


def _eligible(model) -> set[int]:
    """ids of the convs this backend may run channels-last (the rest stay NCW, module docstring)."""
    out = set()
    if model.config.encoder.activation in ("lrelu", "elu"):
        out |= {id(m) for m in model.encoder.modules() if isinstance(m, Conv1d)}
    out |= {id(m) for m in model.decoder.modules() if isinstance(m, (Conv1d, CausalConv1d))}
    out.discard(id(model.decoder.pre_conv))
    return out


def swap_in(module: nn.Module, channels_last: bool = False) -> nn.Module:
    """Make one module this backend's (a conv channels-last or not); other modules are left alone."""
    fast = FAST.get(type(module))
    if fast is not None:
        module.__class__ = fast
    if isinstance(module, CONVS):
        module.channels_last = channels_last
        _lay_out(module.weight, channels_last)
        drop_packed_weights(module)
    return module


def swap_out(module: nn.Module) -> nn.Module:
    """Back to the reference module (NeMo's NCW numerics), its weight laid out NCW."""
    base = REFERENCE.get(type(module))
    if base is not None:
        if isinstance(module, CONVS):
            _lay_out(module.weight, False)
            del module.channels_last
            module.__dict__.pop("step_packed", None)
            drop_packed_weights(module)
        module.__class__ = base
    return module


def apply(model, *, force: bool = False) -> dict:
    """Swap `model`'s modules for this backend's and decide each conv's layout once: channels-last
    where eligible and (unless `force`) `accuracy_gate` accepts its shape at the current thread
    count. Returns {"channels_last": n, "ncw": m} (convs)."""
    eligible = _eligible(model)
    counts = {"channels_last": 0, "ncw": 0}
    for module in model.modules():
        cl = False
        if isinstance(module, (Conv1d, CausalConv1d)):
            cl = id(module) in eligible and (force or accuracy_gate.channels_last_accurate(
                module.weight, getattr(module, "stride", 1), module.dilation))
            counts["channels_last" if cl else "ncw"] += 1
        swap_in(module, cl)
        if module is model.decoder.pre_conv and isinstance(module, FastCausalConv1d):
            module.step_packed = False
    return counts


def revert(model) -> None:
    """Every module back to the reference (NeMo's NCW numerics)."""
    for module in model.modules():
        swap_out(module)
