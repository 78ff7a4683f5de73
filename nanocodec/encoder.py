"""Non-causal HiFi-GAN encoder (NeMo `HiFiGANEncoder`): waveform -> continuous latents."""
from __future__ import annotations

import torch
from torch import nn

from .config import EncoderConfig
from .nn.activations import make_activation
from .nn.conv import Conv1d, Ragged
from .nn.resblocks import ResLayer
from .nn.stream_state import EncoderStream


class HiFiGANEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.pad_mode
        channels = cfg.base_channels
        self.pre_conv = Conv1d(1, channels, cfg.in_kernel_size, pad_mode=pad)
        self.res_layers = nn.ModuleList()
        self.activations = nn.ModuleList()
        self.down_convs = nn.ModuleList()
        for rate in cfg.down_sample_rates:
            self.res_layers.append(
                ResLayer(channels, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, cfg.activation,
                         causal=False, pad_mode=pad)
            )
            self.activations.append(make_activation(cfg.activation, channels))
            # kernel 2r, stride r, padding (r+1)//2: maps a length n*r to exactly n
            self.down_convs.append(
                Conv1d(channels, 2 * channels, 2 * rate, stride=rate, padding=(rate + 1) // 2, pad_mode=pad)
            )
            channels *= 2
        self.post_activation = make_activation(cfg.activation, channels)
        self.post_conv = Conv1d(channels, cfg.encoded_dim, cfg.out_kernel_size, pad_mode=pad)

    def forward(self, audio: torch.Tensor, ragged: Ragged | None = None, state: EncoderStream | None = None) -> torch.Tensor:
        """audio [B,1,T] (T a multiple of samples_per_frame) -> latents [B,D,T/spf].

        With `state` (one stream, nanocodec/streaming): `audio` is the next piece of the input and
        the result the latent frames now computable (all the rest when `state.final`)."""
        x = self.pre_conv(audio, ragged, state=state)
        for res_layer, act, down, rate in zip(self.res_layers, self.activations, self.down_convs, self.cfg.down_sample_rates):
            x = act(res_layer(x, ragged, state))
            next_ragged = ragged.downsampled(rate) if ragged is not None else None
            x = down(x, ragged, next_ragged, state=state)
            ragged = next_ragged
        return self.post_conv(self.post_activation(x), ragged, state=state)

    def lookahead(self) -> int:
        """Input samples past a frame's end needed before that frame's latents can be emitted:
        each conv's own lookahead (`Conv1d.lookahead`), scaled by the down-sampling before it."""
        total, rate = self.pre_conv.lookahead(), 1
        for res_layer, down in zip(self.res_layers, self.down_convs):
            total += (res_layer.lookahead() + down.lookahead()) * rate
            rate *= down.stride
        return total + self.post_conv.lookahead() * rate

    def stage_paddings(self) -> list[tuple[int, int]]:
        """(samples per step at that stage, largest padding of a conv run at that stage).

        Reflect padding needs every item longer than the padding at every stage.
        """
        cfg = self.cfg
        res_pad = max((k * d - d) // 2 for k in cfg.resblock_kernel_sizes for d in cfg.resblock_dilation_sizes)
        out, step = [], 1
        first = max(self.pre_conv.padding, res_pad, self.down_convs[0].padding)
        out.append((step, first))
        for i, rate in enumerate(cfg.down_sample_rates):
            step *= rate
            pads = [self.post_conv.padding] if i == len(cfg.down_sample_rates) - 1 else [res_pad, self.down_convs[i + 1].padding]
            out.append((step, max(pads)))
        return out
