"""Input checks of the torch-free runtime: numpy only, the rules and messages of
`nanocodec.validation` (contracts §1, §4), which imports torch and so cannot be used here."""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

# = nanocodec.validation.MAX_AUDIO_ABS (tests/test_onnx.py checks they agree): audio is documented
# in [-1, 1]; far beyond is integer PCM passed as float
MAX_AUDIO_ABS = 16.0
AUDIO_DTYPES = (np.float16, np.float32, np.float64)


def _array(x, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what} could not be read as an array: {e}") from None
    if arr.dtype == object or arr.dtype.kind not in "biufc":
        raise InvalidInputError(f"{what} must be a numeric numpy array, got dtype {arr.dtype}")
    return arr


def lengths(value, batch: int, maximum: int, what: str) -> np.ndarray:
    """[B] integers in [1, maximum] -> int64; None: every item full length."""
    if value is None:
        return np.full(batch, maximum, dtype=np.int64)
    value = _array(value, what)
    if value.dtype.kind not in "iu":
        raise InvalidInputError(f"{what} must hold integers, got dtype {value.dtype}; pass e.g. np.array([...], dtype=np.int64)")
    value = value.reshape(1) if value.ndim == 0 else value
    if value.ndim != 1 or value.shape[0] != batch:
        raise InvalidInputError(f"{what} must have shape [{batch}] (one length per batch item), got {list(value.shape)}")
    if (value < 1).any() or (value > maximum).any():  # numpy compares mixed int kinds exactly
        raise InvalidInputError(f"{what} must be in [1, {maximum}] (the array's last dimension), got {value.tolist()}")
    return value.astype(np.int64)


def audio_batch(audio, audio_len, samples_per_frame: int, min_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """[T], [B,T] or [B,1,T] float audio -> (float32 [B,1,T], int64 lengths [B])."""
    audio = _array(audio, "audio")
    if audio.dtype.kind == "c":
        raise InvalidInputError(f"audio must be real, got dtype {audio.dtype}; pass the real signal (e.g. x.real)")
    if audio.dtype.kind != "f":
        raise InvalidInputError(f"audio must be a float array in [-1, 1], got dtype {audio.dtype}; "
                                "convert integer PCM first (e.g. x.astype(np.float32) / 32768 for int16)")
    if audio.dtype.type not in AUDIO_DTYPES:
        raise InvalidInputError(f"audio dtype {audio.dtype} is not supported; pass float32 (or float16, float64)")
    if audio.ndim == 1:
        audio = audio[None]
    elif audio.ndim == 3:
        if audio.shape[1] != 1:
            raise InvalidInputError(f"audio [B, C, T] must be mono (C == 1), got C={audio.shape[1]}; "
                                    "mix down to mono first (mean over channels)")
        audio = audio[:, 0]
    elif audio.ndim != 2:
        raise InvalidInputError(f"audio must have shape [T], [B, T] or [B, 1, T], got {list(audio.shape)}")
    if audio.shape[0] == 0:
        raise InvalidInputError("audio has an empty batch (B == 0); pass at least one item")
    if audio.shape[-1] == 0:
        raise InvalidInputError("audio is empty (0 samples); pass at least one sample per item")
    audio_len = lengths(audio_len, audio.shape[0], audio.shape[-1], "audio_len")
    valid = np.arange(audio.shape[-1])[None, :] < audio_len[:, None]
    finite = np.isfinite(audio)
    if not (finite | ~valid).all():
        bad = sorted({int(i) for i in np.nonzero(~finite & valid)[0]})
        raise InvalidInputError(f"audio holds NaN or Inf samples (batch items {bad}); clean or drop those items")
    out = np.where(valid & finite, audio, 0).astype(np.float32)  # past a length: ignored, so made harmless
    peak = np.abs(out).max(axis=-1)
    if (peak > MAX_AUDIO_ABS).any():
        bad = [int(i) for i in np.nonzero(peak > MAX_AUDIO_ABS)[0]]
        raise InvalidInputError(
            f"audio reaches |x| = {float(peak.max()):g} (batch items {bad}); audio must be scaled to [-1, 1] "
            f"(values beyond ±{MAX_AUDIO_ABS:g} are refused): integer PCM needs dividing first (int16: x / 32768)")
    frames = -(-audio_len // samples_per_frame)
    if (frames < min_frames).any():
        raise InvalidInputError(
            f"this model pads its encoder with 'reflect', which needs at least {min_frames} frames "
            f"({min_frames * samples_per_frame} samples) per item; got {int(audio_len.min())} samples. "
            "Pad the audio (e.g. with silence) to that length.")
    return np.ascontiguousarray(out[:, None, :]), audio_len


def token_batch(tokens, tokens_len, num_codebooks: int, codebook_size: int, *,
                active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[G,F] or [B,G,F] integer tokens -> (int32 [B,G,F], int64 lengths [B]). Ids must be in
    [0, codebook_size) inside each item's length; with `active` (a stream's slots: one row each),
    in active rows only. Frames past a length and inactive rows are set to 0."""
    tokens = _array(tokens, "tokens")
    if tokens.dtype.kind not in "iu":
        raise InvalidInputError(f"tokens must be an integer array, got dtype {tokens.dtype}")
    if tokens.ndim == 2:
        tokens = tokens[None]
    if tokens.ndim != 3:
        raise InvalidInputError(f"tokens must have shape [B, {num_codebooks}, F] or [{num_codebooks}, F], got {list(tokens.shape)}")
    if tokens.shape[1] != num_codebooks:
        raise InvalidInputError(f"tokens have {tokens.shape[1]} codebooks, this model has {num_codebooks}; "
                                "were they made by another NanoCodec variant?")
    if tokens.shape[0] == 0 or tokens.shape[-1] == 0:
        raise InvalidInputError(f"tokens are empty (shape {list(tokens.shape)}); pass at least one frame")
    if active is not None and tokens.shape[0] != len(active):
        raise InvalidInputError(f"this stream was opened with batch_size={len(active)}, got {tokens.shape[0]} items")
    tokens_len = lengths(tokens_len, tokens.shape[0], tokens.shape[-1], "tokens_len")
    valid = (np.arange(tokens.shape[-1])[None, :] < tokens_len[:, None])[:, None, :]
    if active is not None:
        valid = valid & active[:, None, None]
    bad = ((tokens < 0) | (tokens >= codebook_size)) & valid  # exact for every integer dtype
    if bad.any():
        b, g, f = (int(v) for v in np.argwhere(bad)[0])
        raise InvalidInputError(f"token {tokens[b, g, f].item()} at item {b}, codebook {g}, frame {f} is out of range: "
                                f"this model's codes are 0..{codebook_size - 1}")
    return np.where(valid, tokens, 0).astype(np.int32), tokens_len


def min_token_frames(tokens_len: np.ndarray, min_frames: int) -> None:
    if (tokens_len < min_frames).any():
        raise InvalidInputError(
            f"this model's decoder pads with 'reflect', which needs at least {min_frames} frames of tokens per item "
            f"(NeMo itself fails on fewer); got {int(tokens_len.min())}. Encode at least {min_frames} frames of audio.")


def slot_mask(active, batch_size: int) -> np.ndarray:
    """`active`: None (all) or a bool array/list of length batch_size -> bool [batch_size]."""
    if active is None:
        return np.ones(batch_size, dtype=bool)
    if hasattr(active, "detach") and hasattr(active, "numpy"):
        active = active.detach().cpu().numpy()
    mask = np.asarray(active)
    if mask.dtype != bool or mask.shape != (batch_size,):
        raise InvalidInputError(f"active must be a bool array (or list) of length {batch_size}, got "
                                f"dtype {mask.dtype}, shape {list(mask.shape)}")
    return mask


def slot_list(slots, batch_size: int) -> list[int]:
    """`slots`: None (all) or a list of ints in [0, batch_size)."""
    if slots is None:
        return list(range(batch_size))
    if isinstance(slots, (int, np.integer)) or isinstance(slots, (str, bytes)):
        raise InvalidInputError(f"slots must be a list of slot indices in [0, {batch_size}), got {slots!r}; e.g. reset([{slots!r}])")
    out = []
    for s in slots:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < batch_size:
            raise InvalidInputError(f"slots must be ints in [0, {batch_size}), got {list(slots)!r}")
        out.append(int(s))
    return out
