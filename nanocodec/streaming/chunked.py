"""Offline results computed a chunk at a time (flat memory, warm caches for long inputs)."""
from __future__ import annotations

import torch

from ..nn.stream_state import EncoderStream
from ..nn.time_axis import cat_time


def encode_in_chunks(encoder, audio: torch.Tensor, chunk: int) -> torch.Tensor:
    """Offline encoder output of `audio` [B,1,T] (T whole frames), `chunk` samples at a time."""
    state = EncoderStream(encoder)
    outs = []
    for i in range(0, audio.shape[-1], chunk):
        state.final = i + chunk >= audio.shape[-1]
        outs.append(encoder(audio[..., i : i + chunk], state=state))
    return cat_time(outs)


def decode_in_chunks(decoder, latents: torch.Tensor, chunk: int) -> torch.Tensor:
    """Offline decoder output of `latents` [B,D,F], `chunk` frames at a time (causal state carried)."""
    state = decoder.init_state(latents.shape[0])
    outs = []
    for i in range(0, latents.shape[-1], chunk):
        audio, state = decoder.step(latents[..., i : i + chunk], state)
        outs.append(audio)
    return torch.cat(outs, dim=-1)
