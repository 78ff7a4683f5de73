"""Input checks at the API boundary: every bad input becomes an `InvalidInputError` that says
what is wrong and how to fix it, before any computation (contracts §4).

Accepted: torch tensors (dense, strided, on a real device; any strides), numpy arrays (any strides
or byte order) and nested Python lists of numbers. Audio is real floating point (float16,
bfloat16, float32, float64), finite, and within ±`MAX_AUDIO_ABS` where it counts (up to each
item's length): audio is documented to lie in [-1, 1]; a little beyond is tolerated (clipping,
resampling overshoot), far beyond is a scaling mistake (integer PCM passed as float) that would
also overflow half precision. Lengths and tokens are integers (any integer dtype).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from .errors import InvalidInputError

AUDIO_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_AUDIO_ABS = 16.0


def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.is_nested or x.layout != torch.strided:
            raise InvalidInputError(f"{what} must be a dense tensor, got a {'nested' if x.is_nested else x.layout} tensor; "
                                    "pass a regular (padded) tensor, with lengths for ragged batches")
        if x.is_quantized:
            raise InvalidInputError(f"{what} is a quantized tensor ({x.dtype}); pass a plain tensor (e.g. x.dequantize())")
        if x.device.type == "meta":
            raise InvalidInputError(f"{what} is on the 'meta' device and holds no data; pass a real tensor")
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufc" or x.dtype.itemsize > (16 if x.dtype.kind == "c" else 8):
            raise InvalidInputError(
                f"{what} has numpy dtype {x.dtype}, which is not a number type torch reads; "
                "pass float32 audio or int64 lengths/tokens"
            )
        # torch reads neither negative strides nor a foreign byte order: copy those into a plain array
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if any(s < 0 for s in x.strides):
            x = x.copy()
        try:
            return torch.from_numpy(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidInputError(f"{what} could not be read as a tensor: {e}") from None
    if isinstance(x, (list, tuple, numbers.Number)) and not isinstance(x, (str, bytes)):
        try:
            return torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise InvalidInputError(f"{what} could not be read as a tensor: {e}") from None
    raise InvalidInputError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def lengths(value, batch: int, maximum: int, what: str, device) -> torch.Tensor:
    """Validate a lengths vector: [B] integers in [1, maximum]; None means all full length."""
    if value is None:
        return torch.full((batch,), maximum, dtype=torch.int64, device=device)
    value = _as_tensor(value, what)
    if not _is_integer(value.dtype):
        raise InvalidInputError(f"{what} must hold integers, got dtype {value.dtype}; pass e.g. torch.tensor([...], dtype=torch.int64)")
    if value.dim() == 0:
        value = value.reshape(1)
    if value.dim() != 1 or value.shape[0] != batch:
        raise InvalidInputError(f"{what} must have shape [{batch}] (one length per batch item), got {list(value.shape)}")
    if value.dtype == torch.uint64:  # values past int64 would wrap negative: compare in float first
        if bool((value.to(torch.float64) > maximum).any()):
            raise InvalidInputError(f"{what} must be in [1, {maximum}] (the tensor's last dimension), got {value.tolist()}")
    value = value.to(device=device, dtype=torch.int64)
    if bool((value < 1).any()) or bool((value > maximum).any()):
        raise InvalidInputError(
            f"{what} must be in [1, {maximum}] (the tensor's last dimension), got {value.tolist()}"
        )
    return value


def audio_batch(audio, audio_len, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[T], [B,T] or [B,1,T] float audio -> ([B,T] in the model's dtype/device, int64 lengths [B])."""
    audio = _as_tensor(audio, "audio")
    if audio.dtype.is_complex:
        raise InvalidInputError(f"audio must be real, got dtype {audio.dtype}; pass the real signal (e.g. x.real)")
    if not audio.dtype.is_floating_point:
        raise InvalidInputError(
            f"audio must be a float tensor in [-1, 1], got dtype {audio.dtype}; "
            "convert integer PCM first (e.g. x.float() / 32768 for int16)"
        )
    if audio.dtype not in AUDIO_DTYPES:
        raise InvalidInputError(f"audio dtype {audio.dtype} is not supported; pass float32 (or float16, bfloat16, float64)")
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
    valid = t[None, :] < audio_len[:, None]  # samples past an item's length are ignored anyway
    finite = torch.isfinite(audio) | ~valid
    if not bool(finite.all()):
        bad = sorted({int(i) for i in torch.nonzero(~finite)[:, 0]})
        raise InvalidInputError(f"audio holds NaN or Inf samples (batch items {bad}); clean or drop those items")
    peak = torch.where(valid, audio.abs(), torch.zeros((), dtype=audio.dtype, device=audio.device)).amax(dim=-1)
    if bool((peak > MAX_AUDIO_ABS).any()):
        bad = [int(i) for i in torch.nonzero(peak > MAX_AUDIO_ABS)[:, 0]]
        raise InvalidInputError(
            f"audio reaches |x| = {float(peak.max()):g} (batch items {bad}); audio must be scaled to [-1, 1] "
            f"(values beyond ±{MAX_AUDIO_ABS:g} are refused): integer PCM needs dividing first (int16: x / 32768)"
        )
    out = audio.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(out).all()):
        # only samples past an item's length can be NaN/Inf here (or overflow a narrower dtype):
        # the model zeroes those by multiplying with a 0/1 mask, and NaN * 0 is NaN, so zero them
        out = torch.where(torch.isfinite(out), out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out, audio_len.to(device)


def token_batch(tokens, tokens_len, num_codebooks: int, codebook_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[G,F] or [B,G,F] integer tokens -> ([B,G,F] int64 on device, int64 lengths [B])."""
    tokens = _as_tensor(tokens, "tokens")
    if not _is_integer(tokens.dtype):
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
    t = torch.arange(tokens.shape[-1], device=tokens.device)
    valid = (t[None, :] < tokens_len[:, None]).unsqueeze(1)
    if tokens.dtype == torch.uint64:  # ids past int64 would wrap negative: find them before converting
        _refuse_tokens(tokens, (tokens.to(torch.float64) >= codebook_size) & valid, codebook_size)
    tokens = tokens.to(torch.int64)
    _refuse_tokens(tokens, ((tokens < 0) | (tokens >= codebook_size)) & valid, codebook_size)
    # frames past an item's length are ignored (NeMo masks them): make them valid ids
    tokens = torch.where(valid, tokens, torch.zeros_like(tokens))
    return tokens.to(device), tokens_len.to(device)


def _refuse_tokens(tokens: torch.Tensor, bad: torch.Tensor, codebook_size: int) -> None:
    if bool(bad.any()):
        b, g, f = (int(v) for v in torch.nonzero(bad)[0])
        raise InvalidInputError(
            f"token {tokens[b, g, f].tolist()} at item {b}, codebook {g}, frame {f} is out of range: "
            f"this model's codes are 0..{codebook_size - 1}"
        )
