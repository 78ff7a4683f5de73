"""Activations with NeMo's exact numerics (nemo/collections/common/parts/utils.py)."""
from __future__ import annotations

import torch
from torch import nn

# torch.nn.LeakyReLU() default slope, as NeMo's CodecActivation uses it (not HiFi-GAN's 0.1).
LRELU_SLOPE = 0.01
SNAKE_EPS = 1e-9


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    # Same operation order as NeMo's scripted `snake`: reciprocal first, then multiply.
    return x + (alpha + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


class Snake(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake(x, self.alpha)


class HalfSnake(nn.Module):
    """Snake on the first C//2 channels (floor: 27 -> 13), leaky ReLU on the rest."""

    def __init__(self, channels: int):
        super().__init__()
        self.snake_channels = channels // 2
        self.alpha = nn.Parameter(torch.ones(1, self.snake_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.snake_channels
        return torch.cat([snake(x[:, :n], self.alpha), nn.functional.leaky_relu(x[:, n:], LRELU_SLOPE)], dim=1)


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
