"""The modules that are traced into the ONNX graphs: the model core in NeMo's numerics, wrapped so
that each graph does all its own work (padding to whole frames, ragged lengths, FSQ).

They wrap the reference (NCW) model. Its activations compute in place into preallocated buffers
for speed; HalfSnake writes its two halves into slices of one `empty_like` buffer, which the
TorchScript exporter silently drops (measured: outputs off by 2.6 against torch, no warning). So
the traced copy runs NeMo's own functional expressions instead (`use_export_activations`).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..nn.activations import LRELU_SLOPE, HalfSnake, Snake, _snake_reference
from ..nn.conv import Ragged
from ..nn.masking import mask_past_lengths


class _ExportSnake(Snake):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _snake_reference(x, self.alpha)


class _ExportHalfSnake(HalfSnake):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NeMo's HalfSnake as written: cat([snake(x[:, :n]), leaky_relu(x[:, n:])], dim=1)
        n = self.snake_channels
        return torch.cat([_snake_reference(x[:, :n], self.alpha), nn.functional.leaky_relu(x[:, n:], LRELU_SLOPE)], 1)


_EXPORT_ACTIVATIONS = {Snake: _ExportSnake, HalfSnake: _ExportHalfSnake}


def export_copy(model) -> nn.Module:
    """A frozen copy of `model` on the reference backend, float32 on the CPU, with activations that
    trace to what they compute (the caller's model is left as it was)."""
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    model.set_backend("reference")
    model.requires_grad_(False)
    for module in model.modules():
        export_class = _EXPORT_ACTIVATIONS.get(type(module))
        if export_class is not None:
            module.__class__ = export_class
    return model.eval()


class EncoderGraph(nn.Module):
    """audio [B,1,T] float32, audio_len int64 [B] -> tokens int32 [B,G,F], tokens_len int64 [B].

    Always the batch-invariant ragged path of contracts §1 (the core's `Ragged(..., "edge")`: item i
    sees its own zero padding to whole frames and its own edge padding at its own end, whatever the
    tensor holds past `audio_len[i]`); with equal lengths it computes exactly the plain path. The
    tensor is padded to whole frames of its own length; F = max(tokens_len).
    """

    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder
        self.quantizer = model.quantizer
        self.samples_per_frame = model.samples_per_frame

    def forward(self, audio: torch.Tensor, audio_len: torch.Tensor):
        spf = self.samples_per_frame
        frames = torch.div(audio_len + spf - 1, spf, rounding_mode="floor")
        samples = audio.shape[-1]  # traced as the input's shape, not a constant
        whole = torch.div(samples + spf - 1, spf, rounding_mode="floor") * spf
        x = nn.functional.pad(audio[:, 0], (0, whole - samples))
        x = mask_past_lengths(x, audio_len)  # NeMo's zero padding of each item to whole frames
        latents = self.encoder(x.unsqueeze(1), Ragged(frames * spf, "edge"))
        tokens = self.quantizer.encode(mask_past_lengths(latents, frames), frames)
        return tokens[:, :, : frames.max()], frames


class DecoderGraph(nn.Module):
    """tokens int32 [B,G,F], tokens_len int64 [B] -> audio float32 [B,1,F*spf], audio_len int64 [B].

    The non-causal decoder takes its batch-invariant ragged path whenever the lengths in a batch
    differ, a branch decided in Python: `export` traces it with unequal lengths, so the graph always
    holds the ragged path (which equals the plain one when all lengths are equal).
    """

    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder
        self.quantizer = model.quantizer
        self.samples_per_frame = model.samples_per_frame

    def forward(self, tokens: torch.Tensor, tokens_len: torch.Tensor):
        latents = self.quantizer.decode(tokens.to(torch.int64), tokens_len)
        audio_len = tokens_len * self.samples_per_frame
        return self.decoder(latents, audio_len), audio_len


class DecoderStepGraph(nn.Module):
    """tokens int32 [B,G,n], then one state tensor per `state_names` -> audio float32 [B,1,n*spf],
    then the new state tensors in the same order (the causal decoder's functional `step`)."""

    def __init__(self, model, state_names: list[str]):
        super().__init__()
        self.decoder = model.decoder
        self.quantizer = model.quantizer
        self.state_names = list(state_names)

    def forward(self, tokens: torch.Tensor, *state_in: torch.Tensor):
        latents = self.quantizer.decode(tokens.to(torch.int64))
        audio, state_out = self.decoder.step(latents, dict(zip(self.state_names, state_in)))
        return (audio, *(state_out[name] for name in self.state_names))
