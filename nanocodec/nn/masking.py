"""Zeroing the time steps past each item's length (NeMo's `mask_sequence_tensor`)."""
from __future__ import annotations

import torch


def mask_past_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, ..., T]: positions t >= lengths[b] become 0."""
    t = torch.arange(x.shape[-1], device=x.device)
    keep = t < lengths.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    # where, not multiply: NaN * 0 is NaN, and samples past a length must not leak in
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
