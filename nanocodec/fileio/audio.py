"""Audio files in and out: read what soundfile reads, mix to mono, resample, trim, write.

- Reading goes through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...). Integer PCM
  becomes float32 in [-1, 1] the way libsndfile scales it (int16 / 32768, int32 / 2**31, ...).
- Several channels are mixed down to mono by their mean.
- Resampling to the model's rate uses soxr at quality "VHQ" (very high quality), float32: numpy clips
  [T] / [T, C] as soxr takes them, tensors [T] / [B, T] / [B, 1, T] item by item (with `lengths`: each
  item's valid prefix alone, re-padded with zeros). New lengths: `resampled_length` (soxr's rounding).
- Anything that cannot be read (corrupt, empty, not audio, NaN/Inf samples) raises `InvalidInputError`
  naming the file.
- `write` is crash-safe (temporary sibling, fsync, rename) and, for WAV and FLAC, byte-deterministic:
  libsndfile's float-WAV PEAK chunk carries a timestamp, so it is turned off.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from . import atomic
from ..errors import InvalidInputError

RESAMPLE_QUALITY = "VHQ"
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command: no PEAK chunk (it holds a timestamp)
_READ_ERRORS = (RuntimeError, ValueError, TypeError, OSError, EOFError, AssertionError)


@dataclass(frozen=True)
class Audio:
    """One decoded file: float32 samples plus what the file was before conversion."""

    samples: np.ndarray  # float32 [T] (mono) or [T, C] (mono=False), at `sample_rate`
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_frames: int  # frames in the file, at the source rate

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """The file's duration (source frames / source rate)."""
        return self.source_frames / self.source_sample_rate

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.samples))


def _name(source, name) -> str:
    if name is not None:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<audio bytes>"


def read(source, sample_rate: int | None = None, *, mono: bool = True, name: str | None = None) -> Audio:
    """Read an audio file (path, bytes or binary file object) as float32.

    `sample_rate`: resample to this rate (soxr VHQ); None keeps the file's rate.
    `mono`: mix channels down to one by their mean (samples [T]); False keeps [T, C].
    """
    label = _name(source, name)
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            raise InvalidInputError(f"{label} is a folder, not an audio file (`nanocodec tokenize` takes folders)")
        if not os.path.exists(source):
            raise InvalidInputError(f"{label}: no such file")
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except _READ_ERRORS as e:
        # libsndfile's own words, without the object address soundfile puts around them
        reason = (getattr(e, "error_string", None) or str(e) or type(e).__name__).strip()
        reason = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "<data>", " ".join(reason.split())).rstrip(".")
        raise InvalidInputError(
            f"{label}: cannot read it as audio ({reason}); soundfile reads WAV, FLAC, OGG, MP3, AIFF and other "
            "libsndfile formats: convert the file (e.g. with ffmpeg) or remove it"
        ) from None
    frames, channels = data.shape
    if frames == 0:
        raise InvalidInputError(f"{label}: the file holds no samples")
    if not np.isfinite(data).all():
        raise InvalidInputError(f"{label}: the file holds NaN or Inf samples; clean or drop it")
    if mono:
        data = to_mono(data)
    if sample_rate is not None and int(sample_rate) != rate:
        data = resample(data, rate, int(sample_rate))
    return Audio(np.ascontiguousarray(data, dtype=np.float32), int(sample_rate or rate), int(rate), int(channels), int(frames))


def load(path, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """`(audio [T] float32 mono tensor, rate)`: the file at `sample_rate` (or its own rate)."""
    clip = read(path, sample_rate)
    return clip.tensor(), clip.sample_rate


def to_float32(x) -> np.ndarray:
    """Integer PCM (int8/16/32, uint8) -> float32 in [-1, 1]; float arrays are cast to float32."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return ((x.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if np.issubdtype(x.dtype, np.signedinteger):
        return (x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise InvalidInputError(f"audio samples must be integer PCM or float, got dtype {x.dtype}")


def to_mono(x: np.ndarray) -> np.ndarray:
    """[T, C] -> [T] by the mean over channels; [T] is returned as is."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise InvalidInputError(f"audio must be [T] or [T, C], got shape {list(x.shape)}")
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """How many samples `resample` returns for `num_samples`: soxr's one-shot length, n * target / orig
    rounded half up (floor(n * target / orig + 1/2), exact in integers), and at least 1 (a single sample
    at a much lower rate would round to nothing; it is kept as it is)."""
    return max(1, (2 * int(num_samples) * int(target_sr) + int(orig_sr)) // (2 * int(orig_sr)))


def sample_rate_hz(value, what: str = "sample_rate") -> int:
    """A sample rate as an int, or `InvalidInputError` naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0 \
            or not float(value).is_integer():
        raise InvalidInputError(f"{what} must be a positive whole number of Hz (e.g. 44100), got {value!r}")
    return int(value)


def resample(x, orig_sr: int, target_sr: int, lengths=None):
    """soxr resampling at quality VHQ; the same rate returns the input (the same object).

    - numpy `[T]` or `[T, C]` (soxr's layout, time first, as `read(mono=False)` gives): channels resampled
      together, returns float32 numpy.
    - torch tensor `[T]`, `[B, T]` or `[B, 1, T]` (the model's layout, time last, as NeMo's `[B, T]`):
      each item resampled alone; returns a float32 tensor of the same rank on the input's device.
      `lengths` ([B] integers): resample each item's first `lengths[i]` samples only, re-pad with zeros,
      and return `(audio, new_lengths)` (int64); the new length of each is `resampled_length`.
    """
    orig_sr, target_sr = sample_rate_hz(orig_sr, "orig_sr"), sample_rate_hz(target_sr, "target_sr")
    if isinstance(x, torch.Tensor):
        return _resample_tensor(x, orig_sr, target_sr, lengths)
    if lengths is not None:
        raise InvalidInputError("resample(lengths=...) takes a torch tensor [B, T] (time last); "
                                "a numpy array is [T] or [T, C], one clip")
    if orig_sr == target_sr:
        return x
    out = soxr.resample(np.ascontiguousarray(x, dtype=np.float32), orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    if out.shape[0] == 0:  # a single sample at a lower rate rounds to nothing: keep one
        out = np.ascontiguousarray(x[:1], dtype=np.float32)
    return out


def _resample_tensor(x: torch.Tensor, orig_sr: int, target_sr: int, lengths):
    if x.dim() not in (1, 2, 3) or (x.dim() == 3 and x.shape[1] != 1):
        raise InvalidInputError(
            f"resample takes a tensor [T], [B, T] or [B, 1, T] (time last), got {list(x.shape)}; "
            "for [T, C] channels pass a numpy array (x.numpy()) or mix to mono first (x.mean(-1))"
        )
    if not x.dtype.is_floating_point:
        raise InvalidInputError(f"resample takes float audio in [-1, 1], got dtype {x.dtype}; "
                                "scale integer PCM first (nanocodec.audio.to_float32)")
    rows = x.reshape(-1, x.shape[-1])  # [B, T]
    if lengths is None:
        lens = [rows.shape[-1]] * rows.shape[0]
    else:
        from ..validation import lengths as check_lengths

        lens = check_lengths(lengths, rows.shape[0], rows.shape[-1], "lengths", "cpu").tolist()
    if orig_sr == target_sr:
        return x if lengths is None else (x, torch.tensor(lens, dtype=torch.int64, device=x.device))
    new_lens = [resampled_length(n, orig_sr, target_sr) for n in lens]
    host = rows.detach().to("cpu", torch.float32).numpy()
    out = np.zeros((rows.shape[0], max(new_lens)), dtype=np.float32)
    for i, (n, m) in enumerate(zip(lens, new_lens)):
        out[i, :m] = resample(host[i, :n], orig_sr, target_sr)  # its valid prefix alone
    y = torch.from_numpy(out).to(x.device).reshape(*x.shape[:-1], out.shape[-1])
    if lengths is None:
        return y
    return y, torch.tensor(new_lens, dtype=torch.int64, device=x.device)


def trim(audio, length: int):
    """Cut decoded audio (last axis) to `length` samples, e.g. the input's length before frame padding."""
    length = int(length)
    if length < 0:
        raise InvalidInputError(f"trim length must be >= 0, got {length}")
    return audio[..., :length]


def output_format(path, subtype: str | None = None) -> tuple[str, str]:
    """(soundfile format, subtype) `write` uses for `path` (from its suffix), or `InvalidInputError`."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").upper()
    fmt = {"AIF": "AIFF", "OPUS": "OGG"}.get(fmt, fmt)
    if fmt not in sf.available_formats():
        raise InvalidInputError(
            f"{path}: unknown audio format {path.suffix!r}; use .wav or .flac (any of {sorted(sf.available_formats())})"
        )
    if subtype is None:
        subtype = "FLOAT" if fmt == "WAV" else sf.default_subtype(fmt)
    if not sf.check_format(fmt, subtype):
        raise InvalidInputError(f"{path}: {fmt} cannot hold subtype {subtype}; try one of {sorted(sf.available_subtypes(fmt))}")
    return fmt, subtype


def write(path, audio, sample_rate: int, *, subtype: str | None = None) -> Path:
    """Write mono audio ([T], [1, T] or [1, 1, T], float in [-1, 1]) crash-safely.

    The format comes from the suffix (.wav, .flac, .ogg, ...). WAV defaults to 32-bit float (the
    decoder's exact output); pass subtype="PCM_16" for 16-bit. WAV and FLAC bytes are deterministic.
    """
    path = Path(path)
    fmt, subtype = output_format(path, subtype)
    data = audio.detach().float().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, dtype=np.float32)
    data = np.ascontiguousarray(data.reshape(-1) if data.size == max(data.shape, default=0) else data, dtype=np.float32)
    if data.ndim != 1:
        raise InvalidInputError(f"write takes mono audio ([T], [1, T] or [1, 1, T]), got shape {list(np.shape(audio))}")
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", int(sample_rate), 1, subtype=subtype, format=fmt) as f:
        try:  # soundfile exposes no API for it; without it float WAVs differ run to run
            sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
        except AttributeError:
            pass
        f.write(data)
    try:
        return atomic.write_file(path, buf.getvalue())
    except OSError as e:
        raise InvalidInputError(f"could not write {path}: {e}") from None
