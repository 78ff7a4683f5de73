"""Which convolutions may run channels-last on this machine: decided by measuring, not by vendor.

oneDNN's channels-last float32 conv kernels are faster than its NCW ones on some CPUs, but their
summation order is not the same everywhere: on a 2-core AMD EPYC (Zen 5, torch 2.13) the error of
a channels-last 864->864 x7 conv against float64 is 5-8x NCW's (2e-6 vs 3.3e-7 relative), enough to
flip tokens past contracts §5's budget on 60 s inputs, while on the Intel Xeon (AVX-512 + AMX)
the ungated channels-last model stayed within 1.4e-6 of NeMo's latents (that session's figures; the
gate has not yet run there shape by shape). So before a conv shape runs channels-last under layout "auto", its two
float32 paths (the channels-last conv and the unfolded matrix product used for edges and short
pieces) are measured once against float64 on seeded inputs of that shape; the shape runs
channels-last only if both are within `ACCURACY_FACTOR` of NCW's own error on the same input.

The measurement is deterministic (seeded inputs, the same kernels for the same shape and thread
count), so two runs on one machine pick the same paths and give byte-identical outputs; it is
cached per process and keyed by the thread count, and it never looks at the CPU's name.
Measured here: the error does not depend on the length (64 to 88200 outputs gave the same
figures), so a short input stands for every length; it grows with the reduction size C*k.
"""
from __future__ import annotations

import math
import threading
from typing import NamedTuple

import torch
import torch.nn.functional as F

# NCW's error is that of a well-blocked float32 sum; "as accurate" allows one half-bit more
# (x1.5). Measured (RMS) on the AMD EPYC: 24-27 channel convs come out at 1.0-1.4x (kept
# channels-last), 48-54 channels at 1.6-1.9x, 96-432 at 2.2-4.8x (sent to NCW).
ACCURACY_FACTOR = 1.5
# values compared per shape: the RMS error over 2^15 outputs is stable to ~0.5%
_SAMPLES = 1 << 15
_measured: dict[tuple, "GateResult"] = {}
_lock = threading.Lock()


class GateResult(NamedTuple):
    ncw_error: float  # RMS error relative to the float64 output's RMS
    channels_last_error: float
    unfolded_error: float
    channels_last: bool  # both fast paths within ACCURACY_FACTOR of NCW


def _rel_rms(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-300))


def measure(in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int,
            threads: int) -> GateResult:
    """The float32 errors of one conv shape's three paths against float64 (seeded, deterministic),
    measured once per process. `threads` is part of the key only: kernels (and their sums) may
    differ with the thread count."""
    key = (in_channels, out_channels, kernel_size, stride, dilation, threads)
    with _lock:
        if key not in _measured:
            _measured[key] = _measure(*key[:5])
        return _measured[key]


def _measure(in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int) -> GateResult:
    from .cpu import to_channels_last, unfolded_conv  # cpu.py imports this module

    outputs = max(16, math.ceil(_SAMPLES / out_channels))
    span = (kernel_size - 1) * dilation + 1
    length = (outputs - 1) * stride + span
    g = torch.Generator().manual_seed(in_channels * 1_000_003 + out_channels * 1009 + kernel_size * 101 + stride * 11 + dilation)
    with torch.inference_mode():
        x = torch.randn(1, in_channels, length, generator=g)
        w = torch.randn(out_channels, in_channels, kernel_size, generator=g) / math.sqrt(in_channels * kernel_size)
        b = torch.randn(out_channels, generator=g) * 0.1
        ref = F.conv1d(x.double(), w.double(), b.double(), stride=stride, dilation=dilation)
        ncw = F.conv1d(x, w, b, stride=stride, dilation=dilation)
        w_cl = w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        cl = F.conv2d(to_channels_last(x).unsqueeze(2), w_cl, b, stride=(1, stride), dilation=(1, dilation)).squeeze(2)
        unfolded = unfolded_conv(x, w_cl.squeeze(2), b, stride=stride, dilation=dilation)
        e_ncw, e_cl, e_unf = _rel_rms(ncw, ref), _rel_rms(cl, ref), _rel_rms(unfolded, ref)
    bound = ACCURACY_FACTOR * e_ncw
    return GateResult(e_ncw, e_cl, e_unf, e_cl <= bound and e_unf <= bound)


def channels_last_accurate(weight: torch.Tensor, stride: int, dilation: int) -> bool:
    """Whether a conv with this (NCW-shaped) weight may run channels-last: float32 is gated here;
    16-bit dtypes are not held to NeMo's float32 numbers (contracts §5: reported, not gated)."""
    if weight.dtype != torch.float32:
        return True
    out_channels, in_channels, kernel_size = weight.shape
    return measure(in_channels, out_channels, kernel_size, stride, dilation, torch.get_num_threads()).channels_last


def decisions() -> list[dict]:
    """Every shape measured in this process so far and its verdict, for reports."""
    with _lock:
        items = sorted(_measured.items())
    return [dict(zip(("in_channels", "out_channels", "kernel", "stride", "dilation", "threads"), key), **r._asdict())
            for key, r in items]


def summary() -> dict:
    """What the gate decided in this process, for a run's recorded settings: the rule, and how many
    conv shapes run channels-last and NCW (per thread count), with the measured errors."""
    shapes = decisions()
    return {"rule": f"channels-last where its float32 error <= {ACCURACY_FACTOR} x NCW's, measured against float64",
            "channels_last_shapes": sum(d["channels_last"] for d in shapes),
            "ncw_shapes": sum(not d["channels_last"] for d in shapes), "shapes": shapes}

