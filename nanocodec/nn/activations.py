"""Activations with NeMo's exact numerics (nemo/collections/common/parts/utils.py)."""
from __future__ import annotations

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


def needs_grad(x: torch.Tensor, alpha: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad)


def _snake_reference(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if needs_grad(x, self.alpha):
            return _snake_reference(x, self.alpha)
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
        # autograd (training, gradient checks) and graph capture (torch.compile: no `out=` into a
        # strided slice): NeMo's form as is. The TorchScript ONNX exporter silently drops the slice
        # writes below: nanocodec/onnx/graphs.py exports NeMo's form instead.
        if needs_grad(x, self.alpha) or torch.compiler.is_compiling():
            return torch.cat([_snake_reference(x[:, :n], self.alpha), nn.functional.leaky_relu(x[:, n:], LRELU_SLOPE)], 1)
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
