"""Zeroing the time steps past each item's length (NeMo's `mask_sequence_tensor`)."""
from __future__ import annotations

import torch


def mask_past_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, ..., T]: positions t >= lengths[b] become 0."""
    t = torch.arange(x.shape[-1], device=x.device)
    keep = t < lengths.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return x * keep.to(x.dtype)
