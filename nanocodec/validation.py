"""Input checks at the API boundary: every bad input becomes an `InvalidInputError` that says
what is wrong and how to fix it, before any computation (contracts §4)."""
from __future__ import annotations

import numpy as np
import torch

from .errors import InvalidInputError


def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidInputError(f"{what} could not be read as a tensor: {e}") from None
    raise InvalidInputError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def lengths(value, batch: int, maximum: int, what: str, device) -> torch.Tensor:
    """Validate a lengths vector: [B] integers in [1, maximum]; None means all full length."""
    if value is None:
        return torch.full((batch,), maximum, dtype=torch.int64, device=device)
    value = _as_tensor(value, what)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise InvalidInputError(f"{what} must hold integers, got dtype {value.dtype}; pass e.g. torch.tensor([...], dtype=torch.int64)")
    if value.dim() == 0:
        value = value.reshape(1)
    if value.dim() != 1 or value.shape[0] != batch:
        raise InvalidInputError(f"{what} must have shape [{batch}] (one length per batch item), got {list(value.shape)}")
    value = value.to(device=device, dtype=torch.int64)
    if bool((value < 1).any()) or bool((value > maximum).any()):
        raise InvalidInputError(
            f"{what} must be in [1, {maximum}] (the tensor's last dimension), got {value.tolist()}"
        )
    return value


def audio_batch(audio, audio_len, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[T], [B,T] or [B,1,T] float audio -> ([B,T] in the model's dtype/device, int64 lengths [B])."""
    audio = _as_tensor(audio, "audio")
    if not audio.dtype.is_floating_point:
        raise InvalidInputError(
            f"audio must be a float tensor in [-1, 1], got dtype {audio.dtype}; "
            "convert integer PCM first (e.g. x.float() / 32768 for int16)"
        )
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    elif audio.dim() == 3:
        if audio.shape[1] != 1:
            raise InvalidInputError(
                f"audio [B, C, T] must be mono (C == 1), got C={audio.shape[1]}; mix down to mono first (mean over channels)"
            )
        audio = audio[:, 0]
    elif audio.dim() != 2:
        raise InvalidInputError(f"audio must have shape [T], [B, T] or [B, 1, T], got {list(audio.shape)}")
    if audio.shape[0] == 0:
        raise InvalidInputError("audio has an empty batch (B == 0); pass at least one item")
    if audio.shape[-1] == 0:
        raise InvalidInputError("audio is empty (0 samples); pass at least one sample per item")
    audio_len = lengths(audio_len, audio.shape[0], audio.shape[-1], "audio_len", audio.device)
    t = torch.arange(audio.shape[-1], device=audio.device)
    valid = t[None, :] < audio_len[:, None]
    finite = torch.isfinite(audio) | ~valid  # samples past an item's length are ignored anyway
    if not bool(finite.all()):
        bad = sorted({int(i) for i in torch.nonzero(~finite)[:, 0]})
        raise InvalidInputError(f"audio holds NaN or Inf samples (batch items {bad}); clean or drop those items")
    return audio.to(device=device, dtype=dtype), audio_len.to(device)


def token_batch(tokens, tokens_len, num_codebooks: int, codebook_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[G,F] or [B,G,F] integer tokens -> ([B,G,F] int64 on device, int64 lengths [B])."""
    tokens = _as_tensor(tokens, "tokens")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise InvalidInputError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 3:
        raise InvalidInputError(f"tokens must have shape [B, {num_codebooks}, F] or [{num_codebooks}, F], got {list(tokens.shape)}")
    if tokens.shape[1] != num_codebooks:
        raise InvalidInputError(
            f"tokens have {tokens.shape[1]} codebooks, this model has {num_codebooks}; "
            "were they made by another NanoCodec variant?"
        )
    if tokens.shape[0] == 0 or tokens.shape[-1] == 0:
        raise InvalidInputError(f"tokens are empty (shape {list(tokens.shape)}); pass at least one frame")
    tokens_len = lengths(tokens_len, tokens.shape[0], tokens.shape[-1], "tokens_len", tokens.device)
    tokens = tokens.to(torch.int64)
    t = torch.arange(tokens.shape[-1], device=tokens.device)
    valid = (t[None, :] < tokens_len[:, None]).unsqueeze(1)
    out_of_range = ((tokens < 0) | (tokens >= codebook_size)) & valid
    if bool(out_of_range.any()):
        b, g, f = (int(v) for v in torch.nonzero(out_of_range)[0])
        raise InvalidInputError(
            f"token {int(tokens[b, g, f])} at item {b}, codebook {g}, frame {f} is out of range: "
            f"this model's codes are 0..{codebook_size - 1}"
        )
    # frames past an item's length are ignored (NeMo masks them): make them valid ids
    tokens = torch.where(valid, tokens, torch.zeros_like(tokens))
    return tokens.to(device), tokens_len.to(device)
