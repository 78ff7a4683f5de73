"""Grouped finite scalar quantizer with NeMo's exact numerics (`GroupFiniteScalarQuantizer`).

Every step mirrors NeMo's float32 expression (scale, offset, tan shift, straight-through
rounding, float index cast to int32) so that tokens are bitwise NeMo's for the same latents.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import QuantizerConfig
from .nn.masking import mask_past_lengths


class GroupFSQ(nn.Module):
    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)build the FSQ constants from the config, e.g. after the model was made on the meta
        device. [1, 1, D, 1]: broadcast over batch, group and frame; derived from config, not stored."""
        levels = torch.tensor(self.cfg.num_levels_per_group, dtype=torch.int32, device=device)
        base = torch.cumprod(torch.tensor([1] + self.cfg.num_levels_per_group[:-1], device=device), dim=0,
                             dtype=torch.int32)
        self.register_buffer("levels", levels.view(1, 1, -1, 1), persistent=False)
        self.register_buffer("base", base.view(1, 1, -1, 1), persistent=False)

    @property
    def num_groups(self) -> int:
        return self.cfg.num_groups

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    def _grouped(self, latents: torch.Tensor) -> torch.Tensor:
        b, _, f = latents.shape
        return latents.float().reshape(b, self.num_groups, -1, f)

    def prerounding(self, latents: torch.Tensor) -> torch.Tensor:
        """output_scale*tanh(x + shift) - offset, [B,G,D,F] float32 (boundary diagnosis uses it)."""
        levels = self.levels
        output_scale = (levels - 1) / 2
        output_scale = output_scale * (1 - self.cfg.eps)
        output_offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(torch.float32)
        input_shift = (output_offset / output_scale).tan()
        return output_scale * (self._grouped(latents) + input_shift).tanh() - output_offset

    def encode(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """latents [B, G*D, F] -> int32 tokens [B, G, F]; frames at or past `lengths` are 0."""
        tokens = self.tokens_from_prerounding(self.prerounding(latents))
        if lengths is not None:
            tokens = mask_past_lengths(tokens, lengths)
        return tokens

    def tokens_from_prerounding(self, compressed: torch.Tensor) -> torch.Tensor:
        """[B,G,D,F] pre-rounding values -> int32 tokens [B,G,F] (round half to even)."""
        codes = compressed + (torch.round(compressed) - compressed)  # NeMo's straight-through form
        scale = self.levels // 2
        codes = codes / scale
        nonnegative = scale * codes + scale
        return torch.sum(nonnegative * self.base, dim=2).to(torch.int32)

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """int tokens [B, G, F] -> float32 latents [B, G*D, F]; frames past `lengths` are 0."""
        b, g, f = tokens.shape
        nonnegative = (tokens.unsqueeze(2) // self.base) % self.levels
        scale = self.levels // 2
        latents = ((nonnegative - scale) / scale).to(torch.float32).reshape(b, -1, f)
        if lengths is not None:
            latents = mask_past_lengths(latents, lengths)
        return latents

