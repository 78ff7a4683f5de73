"""`AudioCodecModel`: encode audio to tokens and decode tokens to audio, as NeMo does (contracts §1)."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from . import validation
from .config import NanoCodecConfig
from .decoder import CausalHiFiGANDecoder, HiFiGANDecoder
from .encoder import HiFiGANEncoder
from .errors import InvalidInputError, NotSupportedError
from .nn.conv import Ragged
from .nn.masking import mask_past_lengths
from .quantizer import GroupFSQ
from .streaming import decode_in_chunks, encode_in_chunks

LAYOUTS = ("auto", "channels_last", "nemo")  # set_conv_layout


# chunk_seconds="auto" on CPU (measured on a 2-core Xeon, full-size 0.6 kbps, 1 thread, CPU time
# per audio-second): decode 2 s chunks: 0.42 s at 30 s vs 0.71 whole, and no slower at 5-10 s;
# encode whole up to 12 s (0.20 s, chunking costs ~10% there), 4 s chunks beyond (30 s: 0.22 vs
# 0.27 whole). Chunks also keep memory flat (encoder +401 vs +598 MiB at 20 s).
AUTO_DECODE_CHUNK_SECONDS = 2.0
AUTO_ENCODE_CHUNK_SECONDS = 4.0
AUTO_ENCODE_MIN_SECONDS = 12.0


class EncodeOutput(NamedTuple):
    tokens: torch.Tensor  # int32 [B, G, F]
    tokens_len: torch.Tensor  # int64 [B]


class LatentOutput(NamedTuple):
    latents: torch.Tensor  # [B, D, F], the encoder's output before quantization
    latents_len: torch.Tensor  # int64 [B]


class DecodeOutput(NamedTuple):
    audio: torch.Tensor  # float [B, 1, F*spf]
    audio_len: torch.Tensor  # int64 [B]


class CodecOutput(NamedTuple):
    audio: torch.Tensor
    tokens: torch.Tensor
    audio_len: torch.Tensor


class AudioCodecModel(nn.Module):
    def __init__(self, config: NanoCodecConfig):
        super().__init__()
        self.config = config
        self.encoder = HiFiGANEncoder(config.encoder)
        self.quantizer = GroupFSQ(config.quantizer)
        # NanoCodec: causal; NeMo's older codecs (LFSC, 22/44 kHz audio codecs): non-causal
        self.decoder = (CausalHiFiGANDecoder if config.decoder.causal else HiFiGANDecoder)(config.decoder)
        self.conv_layout = "auto"  # set_conv_layout
        self.backend = "reference"  # what the modules are now; from_pretrained applies backend="auto"
        self.compiled = None  # nanocodec/backends/compiled.py, set by compile()
        self.conv_paths = None  # the cpu backend's count of channels-last and NCW convs
        # TF32 for float32 work on CUDA (contracts §10): None keeps the enclosing precision scope's choice
        # (e.g. the CLI's --tf32), else off; True opts this model in. No effect on the CPU.
        self.allow_tf32: bool | None = None
        self.eval()

    # ---- facts --------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.config.samples_per_frame

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.pre_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.pre_conv.weight.device

    def num_parameters(self) -> dict[str, int]:
        enc = sum(p.numel() for p in self.encoder.parameters())
        dec = sum(p.numel() for p in self.decoder.parameters())
        return {"encoder": enc, "decoder": dec, "total": enc + dec}

    def set_backend(self, backend: str = "auto", *, force_channels_last: bool = False) -> "AudioCodecModel":
        """How the modules run (nanocodec/backends): "reference" (NeMo's own NCW conv calls, bitwise
        NeMo on the same machine), "cpu" (channels-last where this machine's kernels are as accurate
        as NCW, nanocodec/backends/cpu.py; `force_channels_last`: every conv that can, ungated) or
        "auto" ("cpu" on the CPU, else "reference"). Decided now, at the current thread count."""
        from .backends import BACKENDS, cpu, resolve

        if backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        from .backends.compiled import uncompile

        uncompile(self)  # swapping module classes under a compiled forward is unsafe
        cpu.revert(self)  # the reference modules: what every backend starts from
        self.backend = resolve(backend, self.device.type)
        self.conv_paths = cpu.apply(self, force=force_channels_last) if self.backend == "cpu" else None
        return self

    def compile(self, *, allow_cpu: bool = False, **compile_kwargs) -> "AudioCodecModel":
        """torch.compile what encode/decode run (nanocodec/backends/compiled.py): the encoder's and
        decoder's forward on whole inputs; refused on the CPU (measured slower there) unless allow_cpu=True."""
        from .backends.compiled import compile_model

        return compile_model(self, allow_cpu=allow_cpu, **compile_kwargs)

    def set_conv_layout(self, layout: str = "auto") -> "AudioCodecModel":
        """The conv layout by its older names: "auto" = `set_backend("auto")`; "channels_last" = the
        cpu backend with every conv that can channels-last (ungated); "nemo" = `set_backend("reference")`."""
        if layout not in LAYOUTS:
            raise InvalidInputError(f"conv layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        if layout == "nemo":
            self.set_backend("reference")
        else:
            self.set_backend("cpu" if layout == "channels_last" else "auto", force_channels_last=layout == "channels_last")
        self.conv_layout = layout
        return self

    # ---- encoding -----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_latents(self, audio, audio_len=None, *, sample_rate: int | None = None, nemo_batch_compat: bool = False,
                       chunk_seconds: float | str | None = "auto") -> LatentOutput:
        """The encoder's continuous output (NeMo's `encode_audio`), before quantization.

        `sample_rate`: the audio's rate when it is not the model's (see `encode`).
        `chunk_seconds`: encode a long, non-ragged batch that many seconds at a time on the
        streaming machinery (flat memory, warm caches; equal to whole-input encoding up to ~1e-6
        in latents, i.e. the token rule of contracts §5). Ragged batches are encoded whole.
        "auto" (default): on CPU outside layout "nemo", `AUTO_ENCODE_CHUNK_SECONDS` chunks for
        inputs longer than `AUTO_ENCODE_MIN_SECONDS`, else whole; None: always whole.
        """
        with self.precision_scope():
            return self._encode_latents(audio, audio_len, sample_rate, nemo_batch_compat, chunk_seconds)

    def _encode_latents(self, audio, audio_len, sample_rate, nemo_batch_compat, chunk_seconds) -> LatentOutput:
        audio, audio_len = self._audio_at_model_rate(audio, audio_len, sample_rate)
        spf = self.samples_per_frame
        frames = torch.div(audio_len + spf - 1, spf, rounding_mode="floor")
        padded_len = frames * spf
        total = int(padded_len.max())
        # NeMo's pad_audio: zero-pad (or crop) the tensor to the longest item's whole frames
        x = audio[:, :total]
        if x.shape[-1] < total:
            x = nn.functional.pad(x, (0, total - x.shape[-1]))
        ragged = None
        if nemo_batch_compat:
            # NeMo keeps whatever the tensor holds past audio_len; masks after every conv
            if bool((padded_len != total).any()):
                ragged = Ragged(padded_len, "mask")
            self._check_reflect(torch.full_like(padded_len, total))
        else:
            # item i sees exactly what NeMo's encode(audio[i:i+1, :len_i]) sees: its own zero
            # padding to whole frames, then its own edge padding at its own end
            x = mask_past_lengths(x, audio_len)
            if bool((padded_len != total).any()):
                ragged = Ragged(padded_len, "edge")
            self._check_reflect(padded_len)
        if chunk_seconds == "auto":
            long = total > AUTO_ENCODE_MIN_SECONDS * self.sample_rate
            chunk_seconds = AUTO_ENCODE_CHUNK_SECONDS if long and self._auto_chunks() else None
        chunk = self._chunk(chunk_seconds) * spf
        if ragged is None and chunk and total > chunk:
            latents = encode_in_chunks(self.encoder, x.unsqueeze(1), chunk)
        else:
            latents = self.encoder(x.unsqueeze(1), ragged)
        # contiguous: the channels-last conv path leaves [B,D,F] laid out [B,F,D]
        latents = mask_past_lengths(latents, frames).contiguous()
        return LatentOutput(latents, frames)

    @torch.inference_mode()
    def encode(self, audio, audio_len=None, *, sample_rate: int | None = None, nemo_batch_compat: bool = False,
               chunk_seconds: float | str | None = "auto") -> EncodeOutput:
        """audio [B,1,T] | [B,T] | [T] -> (int32 tokens [B,G,F], int64 tokens_len [B]) (contracts §1).

        `sample_rate`: the audio's rate, when it is not the model's (None: the model's). Each item's
        valid prefix (`audio_len[i]` samples) is resampled alone with `nanocodec.audio.resample` (soxr,
        quality VHQ), to `nanocodec.audio.resampled_length` samples (n * model_rate / sample_rate,
        rounded half up, at least 1), re-padded with zeros; `tokens_len` follows those lengths.
        `decode` returns audio at the model's rate. Not bit-identical to NeMo's own resampler (a windowed
        sinc over the whole tensor; `nanocodec.nemo_compat` lists the differences).
        """
        latents, frames = self.encode_latents(audio, audio_len, sample_rate=sample_rate,
                                              nemo_batch_compat=nemo_batch_compat, chunk_seconds=chunk_seconds)
        return EncodeOutput(self.quantizer.encode(latents, frames), frames)

    def _audio_at_model_rate(self, audio, audio_len, sample_rate) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked audio [B,T] in the model's dtype and device, resampled to the model's rate."""
        if sample_rate is not None:
            from .fileio.audio import resample, sample_rate_hz

            sample_rate = sample_rate_hz(sample_rate, "sample_rate")
        if sample_rate is None or sample_rate == self.sample_rate:
            return validation.audio_batch(audio, audio_len, self.dtype, self.device)
        # checked, then resampled from float32 on the CPU (soxr's precision), whatever the model's dtype
        audio, audio_len = validation.audio_batch(audio, audio_len, torch.float32, "cpu")
        audio, audio_len = resample(audio, sample_rate, self.sample_rate, lengths=audio_len)
        return audio.to(device=self.device, dtype=self.dtype), audio_len.to(self.device)

    def precision_scope(self):
        """The precision policy's scope for this model's work (nanocodec/precision.py): flags set for the
        call and restored after it; float32 runs without TF32 unless `allow_tf32` or the caller's scope
        opts in."""
        from .precision import DTYPES, precision_scope

        # a model cast to another dtype by hand (e.g. float64) has no TF32 question: scope it as float32
        dtype = self.dtype if self.dtype in DTYPES.values() else torch.float32
        return precision_scope(self.device, dtype, allow_tf32=self.allow_tf32)

    def _auto_chunks(self) -> bool:
        """Whether chunk_seconds="auto" chunks at all: on CPU (where it was measured to pay), and
        not in layout "nemo" (NeMo's computation, whole inputs)."""
        return self.device.type == "cpu" and self.backend != "reference"

    def _chunk(self, seconds: float | None) -> int:
        """Whole frames per chunk for `chunk_seconds` (0: no chunking; "auto" is resolved before)."""
        if seconds is None:
            return 0
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise InvalidInputError(f"chunk_seconds must be positive, got {seconds}")
        return max(1, round(seconds * self.sample_rate / self.samples_per_frame))

    def _check_reflect(self, lengths: torch.Tensor) -> None:
        if self.config.encoder.pad_mode != "reflect":
            return
        shortest = int(lengths.min())
        for step, pad in self.encoder.stage_paddings():
            if shortest // step <= pad:
                need = min_reflect_frames(self)
                raise InvalidInputError(
                    f"this model pads its encoder with 'reflect', which needs at least {need} frames "
                    f"({need * self.samples_per_frame} samples) per item; got {shortest} samples "
                    "(after padding to whole frames). Pad the audio (e.g. with silence) to that length."
                )

    # ---- decoding -----------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, tokens, tokens_len=None, *, chunk_seconds: float | str | None = "auto") -> DecodeOutput:
        """int tokens [B,G,F] | [G,F] -> (audio [B,1,F*spf] at the model's output rate, int64 lengths).

        Token ids outside 0..codebook_size-1 raise `InvalidInputError` (NeMo wraps them; the
        NeMo drop-in `nanocodec.nemo_compat` does too). `chunk_seconds`: decode that many seconds at
        a time with the causal state carried across chunks (flat memory; equal to whole-input
        decoding within ~1e-7). "auto" (default): `AUTO_DECODE_CHUNK_SECONDS` on CPU for a causal
        decoder outside layout "nemo" (measured: a 30 s decode 1.7x faster, its activations staying
        in cache), else whole; None: whole."""
        tokens, tokens_len = validation.token_batch(tokens, tokens_len, self.num_codebooks, self.codebook_size, self.device)
        return self.decode_checked(tokens, tokens_len, chunk_seconds=chunk_seconds)

    @torch.inference_mode()
    def decode_checked(self, tokens: torch.Tensor, tokens_len: torch.Tensor, *,
                       chunk_seconds: float | str | None = "auto") -> DecodeOutput:
        """`decode` of tokens already checked by `validation.token_batch` (int64 [B,G,F] on the model's
        device, frames past each length zeroed)."""
        with self.precision_scope():
            return self._decode_checked(tokens, tokens_len, chunk_seconds)

    def _decode_checked(self, tokens, tokens_len, chunk_seconds) -> DecodeOutput:
        latents = self.quantizer.decode(tokens, tokens_len).to(self.dtype)
        audio_len = tokens_len * self.samples_per_frame
        if chunk_seconds == "auto":
            causal = self.config.decoder.causal
            chunk_seconds = AUTO_DECODE_CHUNK_SECONDS if causal and self._auto_chunks() else None
        chunk = self._chunk(chunk_seconds)
        if chunk and latents.shape[-1] > chunk:
            # clamp/tanh map 0 to 0, so masking after the output activation is what NeMo gives
            return DecodeOutput(mask_past_lengths(decode_in_chunks(self.decoder, latents, chunk), audio_len), audio_len)
        return DecodeOutput(self.decoder(latents, audio_len), audio_len)

    @torch.inference_mode()
    def forward(self, audio, audio_len=None, *, sample_rate: int | None = None, nemo_batch_compat: bool = False,
                chunk_seconds: float | str | None = "auto") -> CodecOutput:
        """encode then decode; `audio` of the result is at the model's rate whatever `sample_rate` was."""
        tokens, tokens_len = self.encode(audio, audio_len, sample_rate=sample_rate, nemo_batch_compat=nemo_batch_compat,
                                         chunk_seconds=chunk_seconds)
        decoded, decoded_len = self.decode(tokens, tokens_len, chunk_seconds=chunk_seconds)
        return CodecOutput(decoded, tokens, decoded_len)

    # ---- streaming (nanocodec/streaming.py) ----------------------------------------------
    def stream_decoder(self, batch_size: int = 1):
        """Exact streaming decode: `dec.step(tokens [B,G,n]) -> [B,1,n*spf]` (zero lookahead)."""
        if not self.config.decoder.causal:
            raise NotSupportedError(
                "stream_decoder() needs a causal decoder; this model's decoder (NeMo HiFiGANDecoder) looks ahead "
                "at later frames, so streamed output could not equal decode(). Decode whole sequences with decode()."
            )
        from .streaming import StreamingDecoder

        return StreamingDecoder(self, batch_size)

    def stream_encoder(self, batch_size: int = 1):
        """Exact streaming encode: `enc.step(audio)`, `enc.flush()`; see `lookahead_samples`."""
        from .streaming import StreamingEncoder

        return StreamingEncoder(self, batch_size)

    # ---- loading and saving (nanocodec/fileio/hub.py) ------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id, revision=None, device="cpu", dtype=torch.float32, **kwargs):
        from .fileio.hub import load_pretrained

        return load_pretrained(cls, path_or_repo_id, revision=revision, device=device, dtype=dtype, **kwargs)

    def save_pretrained(self, out_dir, *, overwrite: bool = False, metadata: dict | None = None, extra_files=None):
        from .fileio.hub import save_pretrained

        return save_pretrained(self, out_dir, overwrite=overwrite, metadata=metadata, extra_files=extra_files)


def min_reflect_frames(model: AudioCodecModel) -> int:
    spf = model.samples_per_frame
    frames = 1
    while any((frames * spf) // step <= pad for step, pad in model.encoder.stage_paddings()):
        frames += 1
    return frames

