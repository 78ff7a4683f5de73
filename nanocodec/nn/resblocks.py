"""HiFi-GAN residual stacks (NeMo `ResidualBlock`, `HiFiGANResBlock`, `HiFiGANResLayer`).

Non-causal stacks (the encoder's, the HiFi-GAN decoder's) take `ragged=`, the batch's valid lengths,
and stream with `state=` an `EncoderStream` (their pieces lag their input: the residual and the mean
wait for the slowest branch). Causal ones (the NanoCodec decoder's) stream with `state=` a
`DecoderStep` (zero lookahead: nothing waits). None: offline, full length.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import make_activation
from .conv import CausalConv1d, Conv1d, Ragged
from .stream_state import DecoderStep, EncoderStream

StreamState = EncoderStream | DecoderStep


class ResidualUnit(nn.Module):
    """x + skip_conv(act(input_conv(act(x)))); input_conv dilated, skip_conv not."""

    def __init__(self, channels, kernel_size, dilation, activation, *, causal, pad_mode="reflect"):
        super().__init__()
        self.causal = causal
        self.input_activation = make_activation(activation, channels)
        self.skip_activation = make_activation(activation, channels)
        if causal:
            self.input_conv = CausalConv1d(channels, channels, kernel_size, dilation=dilation)
            self.skip_conv = CausalConv1d(channels, channels, kernel_size)
        else:
            self.input_conv = Conv1d(channels, channels, kernel_size, dilation=dilation, pad_mode=pad_mode)
            self.skip_conv = Conv1d(channels, channels, kernel_size, pad_mode=pad_mode)

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, state: StreamState | None = None) -> torch.Tensor:
        context = {"state": state} if self.causal else {"ragged": ragged, "state": state}
        h = self.input_conv(self.input_activation(x), **context)
        y = self.skip_conv(self.skip_activation(h), **context)
        if isinstance(state, EncoderStream):
            return state.add_skip(self, x, y)
        # add into the conv's fresh output (x + y == y + x in IEEE arithmetic)
        return y.add_(x)

    def lookahead(self) -> int:
        return self.input_conv.lookahead() + self.skip_conv.lookahead()


class ResBlock(nn.Module):
    """One kernel size, a residual unit per dilation, applied in sequence."""

    def __init__(self, channels, kernel_size, dilations, activation, *, causal, pad_mode="reflect"):
        super().__init__()
        self.units = nn.ModuleList(
            ResidualUnit(channels, kernel_size, d, activation, causal=causal, pad_mode=pad_mode) for d in dilations
        )

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, state: StreamState | None = None) -> torch.Tensor:
        for unit in self.units:
            x = unit(x, ragged, state)
        return x

    def lookahead(self) -> int:
        return sum(unit.lookahead() for unit in self.units)


class ResLayer(nn.Module):
    """Mean of one ResBlock per kernel size, all fed the same input."""

    def __init__(self, channels, kernel_sizes, dilations, activation, *, causal, pad_mode="reflect"):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(channels, k, dilations, activation, causal=causal, pad_mode=pad_mode) for k in kernel_sizes
        )

    def forward(self, x: torch.Tensor, ragged: Ragged | None = None, state: StreamState | None = None) -> torch.Tensor:
        if isinstance(state, EncoderStream):
            return state.mean(self, [block(x, ragged, state) for block in self.blocks])
        # NeMo: sum(residuals) / len(residuals): left-to-right adds, then a true division.
        out = self.blocks[0](x, ragged, state)
        for block in self.blocks[1:]:
            out.add_(block(x, ragged, state))
        return out.div_(len(self.blocks))

    def lookahead(self) -> int:
        return max(block.lookahead() for block in self.blocks)
