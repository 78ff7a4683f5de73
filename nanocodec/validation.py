"""Input checks at the API boundary: every bad input becomes an `InvalidInputError` that says
what is wrong and how to fix it, before any computation (contracts §4).

Accepted: torch tensors (dense, strided, on a real device; any strides), numpy arrays (any strides
or byte order) and nested Python lists of numbers. Audio is real floating point (float16,
bfloat16, float32, float64), finite, and within ±`MAX_AUDIO_ABS` where it counts (up to each
item's length): audio is documented to lie in [-1, 1]; a little beyond is tolerated (clipping,
resampling overshoot), far beyond is a scaling mistake (integer PCM passed as float) that would
also overflow half precision. Lengths and tokens are integers (any integer dtype).

Channels are never guessed: a layout that looks like interleaved channels is refused with the fix
(`interleaved_channels` states the exact rule); `[T]`, `[B, T]` and `[B, 1, T]` are the mono layouts.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from .errors import InvalidInputError

AUDIO_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_AUDIO_ABS = 16.0
# interleaved_channels: a last axis of at most this many values, with more than RATIO times as many
# rows before it, is read as channels. No audio batch looks like that ([B, T] with T <= 8 samples and
# B > 64 T items: over 64 items of under 0.4 ms each), while sf.read's [T, C] always does past 0.03 s.
INTERLEAVED_MAX_CHANNELS = 8
INTERLEAVED_MIN_RATIO = 64


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


def interleaved_channels(shape) -> str | None:
    """Why `shape` is not mono audio in the model's layout, with the fix; None when it is.

    The exact rule (the mono layouts [T], [B, T] and [B, 1, T] pass unless a line below says otherwise):
    - [R, C] with C <= INTERLEAVED_MAX_CHANNELS and R > INTERLEAVED_MIN_RATIO * C: [T, C] interleaved
      channels (what soundfile.read returns), not R items of C samples;
    - [B, C, T] with C > 1: channels first; [B, T, C] when C <= 8 and T > 64 C: interleaved;
    - 4 or more dimensions: the [..., T, C] interleaved layout when the last axis is small (as above),
      else not audio;
    - [B, 1, T] and [T] never.
    """
    shape = tuple(int(n) for n in shape)

    def looks_interleaved(rows: int, cols: int) -> bool:
        return 1 <= cols <= INTERLEAVED_MAX_CHANNELS and rows > INTERLEAVED_MIN_RATIO * cols

    if len(shape) == 2 and looks_interleaved(*shape):
        t, c = shape
        return (f"audio of shape {list(shape)} looks like [T, C] interleaved channels ({t} samples x {c} channels, "
                f"as soundfile.read returns them), not {t} items of {c} samples; mix to mono with audio.mean(-1) "
                f"(shape [{t}]), or pass audio.T to encode each channel as an item")
    if len(shape) == 3 and shape[1] != 1:
        b, c, t = shape
        if looks_interleaved(c, t):  # [B, T, C]
            return (f"audio of shape {list(shape)} looks like [B, T, C] interleaved channels ({c} samples x {t} "
                    f"channels); mix to mono with audio.mean(-1) (shape [{b}, {c}])")
        return (f"audio [B, C, T] must be mono (C == 1), got C={c} channels (shape {list(shape)}); mix to mono with "
                f"audio.mean(1, keepdim=True), or pass audio.reshape(-1, {t}) to encode each channel as an item")
    if len(shape) >= 4:
        if looks_interleaved(shape[-2], shape[-1]):
            return (f"audio of shape {list(shape)} looks like [..., T, C] interleaved channels ({shape[-2]} samples x "
                    f"{shape[-1]} channels); mix to mono with audio.mean(-1) and pass [B, 1, T] (here "
                    f"audio.mean(-1).reshape(-1, 1, {shape[-2]})), [B, T] or [T]")
        return f"audio must have shape [T], [B, T] or [B, 1, T], got {list(shape)}"
    if len(shape) == 0:
        return "audio must have shape [T], [B, T] or [B, 1, T], got a scalar (shape [])"
    return None


def audio_batch(audio, audio_len, dtype: torch.dtype, device, *, name: str | None = None,
                check_layout: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """[T], [B,T] or [B,1,T] float audio -> ([B,T] in the model's dtype/device, int64 lengths [B]).

    `name` (e.g. a file name) replaces the batch item indices in the messages about sample values.
    `check_layout=False`: the caller has fixed the batch size itself (a streaming step of B streams,
    which may well be [B, n] with a few samples each), so `interleaved_channels` is not asked."""
    audio = _as_tensor(audio, "audio")
    layout_error = interleaved_channels(audio.shape) if check_layout else None
    if layout_error:  # before the dtype: the bigger mistake first
        raise InvalidInputError(layout_error)
    if not check_layout and (audio.dim() not in (1, 2, 3) or (audio.dim() == 3 and audio.shape[1] != 1)):
        raise InvalidInputError(f"audio must have shape [T], [B, T] or [B, 1, T], got {list(audio.shape)}")
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
        audio = audio[:, 0]
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
        where = f"{name}: " if name else ""
        items = "" if name else f" (batch items {bad})"
        raise InvalidInputError(f"{where}audio holds NaN or Inf samples{items}; clean or drop {'it' if name else 'those items'}")
    peak = torch.where(valid, audio.abs(), torch.zeros((), dtype=audio.dtype, device=audio.device)).amax(dim=-1)
    if bool((peak > MAX_AUDIO_ABS).any()):
        bad = [int(i) for i in torch.nonzero(peak > MAX_AUDIO_ABS)[:, 0]]
        where, items = (f"{name}: ", "") if name else ("", f" (batch items {bad})")
        raise InvalidInputError(
            f"{where}audio reaches |x| = {float(peak.max()):g}{items}; audio must be scaled to [-1, 1] "
            f"(values beyond ±{MAX_AUDIO_ABS:g} are refused): integer PCM needs dividing first (int16: x / 32768)"
        )
    out = audio.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(out).all()):
        # only samples past an item's length can be NaN/Inf here (or overflow a narrower dtype):
        # the model zeroes those by multiplying with a 0/1 mask, and NaN * 0 is NaN, so zero them
        out = torch.where(torch.isfinite(out), out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out, audio_len.to(device)


def token_batch(tokens, tokens_len, num_codebooks: int, codebook_size: int, device, *,
                out_of_range: str = "refuse") -> tuple[torch.Tensor, torch.Tensor]:
    """[G,F] or [B,G,F] integer tokens -> ([B,G,F] int64 on device, int64 lengths [B]).

    `out_of_range`: "refuse" (nanocodec's API: ids outside 0..codebook_size-1 raise) or "wrap" (the
    NeMo drop-in: any int64 id is passed on, and FSQ decoding wraps it as NeMo 3.0.0 does,
    `(indices // base) % levels` per dimension, floor division)."""
    if out_of_range not in ("refuse", "wrap"):
        raise ValueError(f"out_of_range must be 'refuse' or 'wrap', got {out_of_range!r}")
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
        limit = codebook_size if out_of_range == "refuse" else 2**63
        _refuse_tokens(tokens, (tokens.to(torch.float64) >= limit) & valid,
                       codebook_size if out_of_range == "refuse" else None)
    tokens = tokens.to(torch.int64)
    if out_of_range == "refuse":
        _refuse_tokens(tokens, ((tokens < 0) | (tokens >= codebook_size)) & valid, codebook_size)
    # frames past an item's length are ignored (NeMo masks them): make them valid ids
    tokens = torch.where(valid, tokens, torch.zeros_like(tokens))
    return tokens.to(device), tokens_len.to(device)


def _refuse_tokens(tokens: torch.Tensor, bad: torch.Tensor, codebook_size: int | None) -> None:
    """`codebook_size` None: the wrapping mode, where only uint64 ids past int64 are refused."""
    if bool(bad.any()):
        b, g, f = (int(v) for v in torch.nonzero(bad)[0])
        limit = f"this model's codes are 0..{codebook_size - 1}" if codebook_size is not None else \
            "ids must fit in int64 (pass int64 tokens)"
        raise InvalidInputError(f"token {tokens[b, g, f].tolist()} at item {b}, codebook {g}, frame {f} is out of range: {limit}")
