"""Slicing and joining along time in whichever memory layout a tensor has (NCW or channels-last)."""
from __future__ import annotations

import torch


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 3 and x.shape[1] > 1 and x.stride(1) == 1


def cat_time(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along time that keeps a channels-last layout (a 3-D cat returns NCW, which
    would transpose every piece in memory and again at the next conv)."""
    if len(tensors) > 1 and all(is_channels_last(t) for t in tensors):
        return torch.cat([t.transpose(1, 2) for t in tensors], 1).transpose(1, 2)
    return torch.cat(tensors, -1)


def own_time(x: torch.Tensor) -> torch.Tensor:
    """A compact copy of a (small) slice in the same layout. Streaming state kept as a view
    would pin the whole chunk it was cut from: one chunk per conv alive between calls."""
    # clone, not contiguous(): a batch-1 slice counts as contiguous and would stay a view
    if is_channels_last(x):
        return x.transpose(1, 2).clone(memory_format=torch.contiguous_format).transpose(1, 2)
    return x.clone(memory_format=torch.contiguous_format)
