"""The two HiFi-GAN decoders NeMo codecs use: latents -> waveform.

`CausalHiFiGANDecoder` (NeMo `CausalHiFiGANDecoder`, the NanoCodecs): zero lookahead, so it streams
exactly. `HiFiGANDecoder` (NeMo `HiFiGANDecoder`), used by NeMo's older codecs (the low-frame-rate speech codec, the 22/44 kHz audio codecs). Every
conv pads symmetrically with `pad_mode` (NeMo's default `reflect`), and each up-sampling is
`ConvTranspose1dNorm`: kernel 2r, stride r, padding (r+1)//2, output_padding r%2 (length n -> n*r).
It looks ahead, so it cannot stream: `forward(..., state=...)` raises `NotSupportedError`.

Ragged batches are batch invariant, as the encoder's are: item i gets exactly what NeMo's
`decode` gives it alone (its own edge padding at its own end; the transposed convs see zeros past
its length). NeMo's own batched decode of this decoder is not batch invariant (it pads the
tensor's edge and masks after every conv); `ragged_mode="mask"` reproduces that.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import DecoderConfig
from .errors import InvalidInputError, NotSupportedError
from .nn.activations import OutputActivation, make_activation
from .nn.conv import CausalConv1d, CausalConvTranspose1d, Conv1d, ConvTranspose1d, Ragged
from .nn.masking import mask_past_lengths
from .nn.resblocks import ResLayer
from .nn.stream_state import DecoderStep, stateful_decoder_modules


def _build_layers(decoder: nn.Module, cfg: DecoderConfig, causal: bool) -> None:
    """The layers both decoders have, as NeMo builds them (the state dict's names): `pre_conv`, then
    per up-sampling stage an activation, a transposed conv halving the channels and a res layer,
    then `post_activation`, `post_conv` and the output activation."""
    pad = cfg.pad_mode

    def conv(i, o, k):
        return CausalConv1d(i, o, k) if causal else Conv1d(i, o, k, pad_mode=pad)

    channels = cfg.base_channels
    decoder.pre_conv = conv(cfg.input_dim, channels, cfg.in_kernel_size)
    decoder.activations = nn.ModuleList()
    decoder.up_convs = nn.ModuleList()
    decoder.res_layers = nn.ModuleList()
    for rate in cfg.up_sample_rates:
        out_channels = channels // 2
        decoder.activations.append(make_activation(cfg.activation, channels))
        groups = out_channels if cfg.n_groups_equal_to_out_channels else 1
        decoder.up_convs.append((CausalConvTranspose1d if causal else ConvTranspose1d)(channels, out_channels, rate, groups=groups))
        decoder.res_layers.append(ResLayer(out_channels, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes,
                                           cfg.activation, causal=causal, pad_mode=pad))
        channels = out_channels
    decoder.post_activation = make_activation(cfg.activation, channels)
    decoder.post_conv = conv(channels, 1, cfg.out_kernel_size)
    decoder.out_activation = OutputActivation(cfg.output_activation)


class CausalHiFiGANDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        _build_layers(self, cfg, causal=True)
        self.state_names = stateful_decoder_modules(self)  # module -> its state's name

    def forward(self, latents: torch.Tensor, out_len: torch.Tensor | None = None, state: DecoderStep | None = None) -> torch.Tensor:
        """latents [B,D,F] -> audio [B,1,F*spf]; samples at or past `out_len` are zeroed as NeMo does.

        `state` (streaming, see `step`): every causal conv reads its past from it and writes the
        new one, so consecutive steps on consecutive chunks give exactly the offline output."""
        x = self.pre_conv(latents, state)
        for act, up, res_layer in zip(self.activations, self.up_convs, self.res_layers):
            # the transposed conv runs NCW, and the activation before it is cheaper on NCW rows
            # than on channels-last tiles (the res layer lays its input out as its convs take it)
            x = res_layer(up(act(x.contiguous()), state), state=state)
        x = self.post_conv(self.post_activation(x), state)
        if out_len is not None:
            x = mask_past_lengths(x, out_len)
        return self.out_activation(x).contiguous()

    # ---- streaming: named, explicit state --------------------------------------------------
    def state_spec(self) -> dict[str, tuple[int, int]]:
        """name -> (channels, length) of each state tensor `[B, channels, length]`, in module order."""
        spec = {}
        for module, name in self.state_names.items():
            if isinstance(module, CausalConv1d):
                spec[name] = (module.weight.shape[1], module.context)
            else:  # transposed conv: its last input frame
                spec[name] = (module.weight.shape[0], 1)
        return spec

    def init_state(self, batch_size: int = 1, *, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The state at the start of a stream: zeros (the offline causal padding)."""
        w = self.pre_conv.weight
        return {name: torch.zeros(batch_size, c, n, dtype=dtype or w.dtype, device=device or w.device)
                for name, (c, n) in self.state_spec().items()}

    def step(self, latents: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`audio, state_out = step(latents [B,D,n], state_in)`: the next n frames' audio
        [B,1,n*spf] and the state after them (new tensors; `state_in` is not modified). Chained
        from `init_state`, the audio equals `forward` of all the frames."""
        step = DecoderStep(self.state_names, state)
        audio = self(latents, state=step)
        return audio, step.outputs


class HiFiGANDecoder(nn.Module):
    causal = False

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        _build_layers(self, cfg, causal=False)

    # ---- reflect padding needs long enough inputs ---------------------------------------
    def stage_paddings(self) -> list[tuple[int, int]]:
        """(samples per latent frame at that stage, largest padding of a conv run at that stage)."""
        cfg = self.cfg
        res_pad = max((k * d - d) // 2 for k in cfg.resblock_kernel_sizes for d in cfg.resblock_dilation_sizes)
        out, step = [(1, self.pre_conv.padding)], 1
        for i, rate in enumerate(cfg.up_sample_rates):
            step *= rate
            pads = [res_pad] + ([self.post_conv.padding] if i == len(cfg.up_sample_rates) - 1 else [])
            out.append((step, max(pads)))
        return out

    def min_frames(self) -> int:
        """The fewest latent frames NeMo can decode (reflect padding must be shorter than its input)."""
        if self.cfg.pad_mode != "reflect":
            return 1
        frames = 1
        while any(frames * step <= pad for step, pad in self.stage_paddings()):
            frames += 1
        return frames

    def _check_length(self, frames: int) -> None:
        need = self.min_frames()
        if frames < need:
            raise InvalidInputError(
                f"this model's decoder pads with 'reflect', which needs at least {need} frames of tokens per item "
                f"(NeMo itself fails on fewer); got {frames}. Encode at least {need} frames of audio."
            )

    def init_state(self, *args, **kwargs):
        raise NotSupportedError(
            "this model's decoder (NeMo HiFiGANDecoder) is not causal: every output sample depends on later "
            "frames, so it cannot decode incrementally (stream_decoder, chunk_seconds). Decode whole sequences."
        )

    step = init_state

    # ---- forward --------------------------------------------------------------------------
    def forward(self, latents: torch.Tensor, out_len: torch.Tensor | None = None, state: dict | None = None,
                ragged_mode: str = "edge") -> torch.Tensor:
        """latents [B,D,F] -> audio [B,1,F*spf]; samples at or past `out_len` are zeroed as NeMo does."""
        if state is not None:
            self.init_state()
        spf = 1
        for rate in self.cfg.up_sample_rates:
            spf *= rate
        n = latents.shape[-1]
        ragged = None
        if out_len is not None:
            frames = torch.div(out_len.to(latents.device), spf, rounding_mode="floor")
            # "mask" (NeMo's batched decode) pads the tensor's edge, so only the tensor's length counts
            self._check_length(int(frames.min()) if ragged_mode == "edge" else n)
            if bool((frames != n).any()):
                ragged = Ragged(frames, ragged_mode)
        else:
            self._check_length(n)
        x = self.pre_conv(latents, ragged)
        for act, up, res_layer, rate in zip(self.activations, self.up_convs, self.res_layers, self.cfg.up_sample_rates):
            # as in the causal decoder: the transposed conv and the activation before it run NCW
            x = act(x.contiguous())
            if ragged is not None:
                x = ragged.mask(x)  # the item alone has nothing past its end
                ragged = Ragged(ragged.lengths * rate, ragged.mode)
            x = up(x)
            if ragged is not None and ragged.mode == "mask":
                x = ragged.mask(x)
            x = res_layer(x, ragged)
        x = self.post_conv(self.post_activation(x), ragged)
        if out_len is not None:
            x = mask_past_lengths(x, out_len)
        return self.out_activation(x).contiguous()
