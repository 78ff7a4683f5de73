"""Causal HiFi-GAN decoder (NeMo `CausalHiFiGANDecoder`): latents -> waveform, zero lookahead."""
from __future__ import annotations

import torch
from torch import nn

from .config import DecoderConfig
from .modules.activations import OutputActivation, make_activation
from .modules.conv import CausalConv1d, CausalConvTranspose1d
from .modules.masking import mask_past_lengths
from .modules.resblocks import ResLayer


class CausalHiFiGANDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        channels = cfg.base_channels
        self.pre_conv = CausalConv1d(cfg.input_dim, channels, cfg.in_kernel_size)
        # NCW, as NeMo sums it: the first layer's rounding is amplified by all the others (measured:
        # channels-last here alone took the fixtures' audio error from <= 1.5e-6 to 5.5e-6), and
        # at the frame rate it costs nothing either way
        self.pre_conv.auto_channels_last = False
        self.activations = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        self.res_layers = nn.ModuleList()
        for rate in cfg.up_sample_rates:
            out_channels = channels // 2
            self.activations.append(make_activation(cfg.activation, channels))
            groups = out_channels if cfg.n_groups_equal_to_out_channels else 1
            self.up_convs.append(CausalConvTranspose1d(channels, out_channels, rate, groups=groups))
            self.res_layers.append(
                ResLayer(out_channels, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, cfg.activation, causal=True)
            )
            channels = out_channels
        self.post_activation = make_activation(cfg.activation, channels)
        self.post_conv = CausalConv1d(channels, 1, cfg.out_kernel_size)
        self.out_activation = OutputActivation(cfg.output_activation)

    def forward(self, latents: torch.Tensor, out_len: torch.Tensor | None = None, state: dict | None = None) -> torch.Tensor:
        """latents [B,D,F] -> audio [B,1,F*spf]; samples at or past `out_len` are zeroed as NeMo does.

        `state` (streaming): every causal conv keeps its past in it, so consecutive calls on
        consecutive chunks give exactly the offline output of the whole sequence.
        """
        x = self.pre_conv(latents, state)
        for act, up, res_layer in zip(self.activations, self.up_convs, self.res_layers):
            # the transposed conv runs NCW, and the activation before it is cheaper on NCW rows
            # than on channels-last tiles (the res layer lays its input out as its convs take it)
            x = res_layer(up(act(x.contiguous()), state), state)
        x = self.post_conv(self.post_activation(x), state)
        if out_len is not None:
            x = mask_past_lengths(x, out_len)
        return self.out_activation(x).contiguous()
