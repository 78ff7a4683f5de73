"""Activations with NeMo's exact numerics (nemo/collections/common/parts/utils.py)."""
from __future__ import annotations

import functools

import torch
from torch import nn

# torch.nn.LeakyReLU() default slope, as NeMo's CodecActivation uses it (not HiFi-GAN's 0.1).
LRELU_SLOPE = 0.01
SNAKE_EPS = 1e-9


def snake(x: torch.Tensor, alpha: torch.Tensor, out: torch.Tensor | None = None,
          inv_alpha: torch.Tensor | None = None) -> torch.Tensor:
    """NeMo's scripted `x + (alpha + eps).reciprocal() * sin(alpha * x).pow(2)`, op for op (so
    bitwise equal: the products and the sum are the same IEEE operations, only commuted), but
    computed in one buffer (`out`, may be a slice of a larger tensor): Snake is memory-bound, and
    this saves three full-size temporaries and their passes over memory. `inv_alpha`: a
    precomputed `(alpha + eps).reciprocal()` (bitwise the same value)."""
    if out is None:
        out = x * alpha
    else:
        torch.mul(x, alpha, out=out)
    out.sin_().pow_(2)
    out.mul_((alpha + SNAKE_EPS).reciprocal() if inv_alpha is None else inv_alpha)
    return out.add_(x)


def _needs_grad(x: torch.Tensor, alpha: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad)


def _snake_reference(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


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


def snake_rows(rows: torch.Tensor, alpha: torch.Tensor, snake_channels: int) -> torch.Tensor:
    """(Half)Snake on channels-last memory: `rows` [B,T,C] (each item's rows contiguous) -> new
    [B,T,C]: Snake on the first `snake_channels`, leaky ReLU on the rest.

    The per-channel constants are tiled over `k` time steps, so that every op runs at full
    vector width: Snake on all channels with alpha = 1/(alpha+eps) = 0 on the leaky-ReLU ones
    (the term is then exactly 0), then one PReLU with slope 1 on the Snake channels (x > 0 ? x :
    1*x, exact) and NeMo's 0.01 on the others. Per element the same IEEE operations as NeMo's."""
    b, t, c = rows.shape
    n = snake_channels
    a = alpha.reshape(-1).to(rows.dtype)
    per_channel = rows.new_zeros(3, c)
    per_channel[0, :n] = a
    per_channel[1, :n] = (a + SNAKE_EPS).reciprocal()
    per_channel[2, :n] = 1.0
    per_channel[2, n:] = LRELU_SLOPE
    k = _steps_per_tile(t, c)
    if k is None:  # no tiling: per-channel broadcasting (correct, slower)
        out = snake(rows, per_channel[0], inv_alpha=per_channel[1])
        if n < c:
            torch.ops.aten.leaky_relu.out(rows[..., n:], LRELU_SLOPE, out=out[..., n:])
        return out
    alpha_t, inv_t, slope_t = per_channel.repeat(1, k)
    out = snake(rows.reshape(b, t // k, k * c), alpha_t, inv_alpha=inv_t)  # a view of rows; new out
    if n < c:
        out = nn.functional.prelu(out.reshape(-1, k * c), slope_t)
    return out.view(b, t, c)


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _needs_grad(x, self.alpha):
            return _snake_reference(x, self.alpha)
        rows = _rows_of(x)
        if rows is not None:  # channels-last: stays so, for the channels-last conv after it
            return snake_rows(rows, self.alpha, x.shape[1]).transpose(1, 2)
        return snake(x.contiguous(), self.alpha)


class HalfSnake(nn.Module):
    """Snake on the first C//2 channels (floor: 27 -> 13), leaky ReLU on the rest."""

    def __init__(self, channels: int):
        super().__init__()
        self.snake_channels = channels // 2
        self.alpha = nn.Parameter(torch.ones(1, self.snake_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NeMo: cat([snake(x[:, :n]), leaky_relu(x[:, n:])], dim=1); here both halves are written
        # straight into one output (no cat, no temporaries), in the input's layout
        n = self.snake_channels
        if _needs_grad(x, self.alpha):  # autograd (training, gradient checks): NeMo's form as is
            return torch.cat([_snake_reference(x[:, :n], self.alpha), nn.functional.leaky_relu(x[:, n:], LRELU_SLOPE)], 1)
        rows = _rows_of(x)
        if rows is not None:
            return snake_rows(rows, self.alpha, n).transpose(1, 2)
        x = x.contiguous()
        out = torch.empty_like(x)
        snake(x[:, :n], self.alpha, out=out[:, :n])
        torch.ops.aten.leaky_relu.out(x[:, n:], LRELU_SLOPE, out=out[:, n:])
        return out


class LeakyReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(x, LRELU_SLOPE)


class ELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.elu(x)


def make_activation(name: str, channels: int) -> nn.Module:
    if name == "lrelu":
        return LeakyReLU()
    if name == "elu":
        return ELU()
    if name == "snake":
        return Snake(channels)
    if name == "half_snake":
        return HalfSnake(channels)
    raise ValueError(f"unknown activation {name!r}")


class OutputActivation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "clamp":
            return torch.clamp(x, -1.0, 1.0)
        return torch.tanh(x)
