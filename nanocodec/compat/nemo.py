"""NeMo drop-in: `AudioCodecModel` with NeMo 3.0.0's method names, signatures and shapes.

    # from nemo.collections.tts.models import AudioCodecModel
    from nanocodec.compat.nemo import AudioCodecModel

    codec = AudioCodecModel.from_pretrained("path/to/converted-folder").eval()
    tokens, tokens_len = codec.encode(audio=audio, audio_len=audio_len)        # [B, G, F] int32, [B]
    audio_hat, audio_hat_len = codec.decode(tokens=tokens, tokens_len=tokens_len)   # [B, T], [B]
    audio_hat, audio_hat_len = codec(audio=audio, audio_len=audio_len)

What differs from nanocodec's own `AudioCodecModel`:
- NeMo's shapes: audio in and out is `[B, T]`, not `[B, 1, T]`.
- `nemo_batch_compat=True` by default: a ragged batch gives exactly what NeMo gives on the same
  tensor, including the influence of whatever the tensor holds past each `audio_len` (NeMo's encoder
  pads the tensor's edge, not each item's). Pass `nemo_batch_compat=False` to get each item's solo
  tokens instead (batch-invariant; nanocodec's default).
- `from_pretrained` takes what `nanocodec.AudioCodecModel.from_pretrained` takes (a `.nemo`, NVIDIA's hub
  repo, a converted folder, the PyPI port's NeMo-named safetensors: converted in memory and cached), not
  NGC names; `restore_from` does not exist.
- `sample_rate=` other than the model's: resampled as `nanocodec.AudioCodecModel.encode` does, which is
  not NeMo's resampler. NeMo (`resample_batch`) runs its port of torchaudio's windowed-sinc resampler
  (`nemo.collections.audio.parts.utils.transforms.resample`: Hann window, rolloff 0.99) over the whole
  padded tensor, junk past each length included, with new lengths ceil(n * rate / sample_rate). Here
  each item's valid prefix is resampled alone with soxr (quality VHQ, `nanocodec.audio.resample`), new
  lengths n * rate / sample_rate rounded half up (at least 1), zeros after them. So the samples differ
  slightly (two good resamplers: on 4 s of speech at 44.1 kHz through the fixture model, 268 of 272
  tokens agreed with NeMo's in tests/test_nemo_compat.py's live test), a length can be one shorter than NeMo's, and with
  `nemo_batch_compat` the junk past each length does not reach the encoder. At the model's rate (or
  `sample_rate` None / 0, as in NeMo) nothing is resampled and everything above holds exactly.
- Token ids outside 0..codebook_size-1 are accepted and wrapped exactly as NeMo 3.0.0's FSQ decode
  wraps them (`(indices // base) % levels` per FSQ dimension, floor division: -1 decodes as the
  top code of every dimension, codebook_size as 0); nanocodec's own `decode` refuses them. Tokens must
  still be integers (NeMo would also run float tensors through that formula) and fit in int64.
- Inference only: every method runs under `torch.no_grad()`; there is no training step.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import validation
from ..errors import InvalidInputError
from ..model import AudioCodecModel as _Model


class AudioCodecModel(nn.Module):
    """NeMo's `AudioCodecModel` interface around a nanocodec model (see the module docstring)."""

    def __init__(self, model: _Model, *, nemo_batch_compat: bool = True):
        super().__init__()
        if not isinstance(model, _Model):
            raise InvalidInputError(f"nemo_compat.AudioCodecModel wraps a nanocodec.AudioCodecModel, got {type(model).__name__}")
        self.model = model
        self.nemo_batch_compat = bool(nemo_batch_compat)

    @classmethod
    def from_pretrained(cls, model_name, revision=None, device=None, dtype=torch.float32, *,
                        map_location=None, nemo_batch_compat: bool = True, **kwargs):
        """`model_name`: anything `nanocodec.AudioCodecModel.from_pretrained` takes (a hub repo id such as
        NeMo's, a `.nemo`, a converted folder). `map_location` is an alias of `device`, as in NeMo."""
        device = device if device is not None else (map_location if map_location is not None else "cpu")
        model = _Model.from_pretrained(model_name, revision=revision, device=device, dtype=dtype, **kwargs)
        return cls(model, nemo_batch_compat=nemo_batch_compat)

    # ---- NeMo's facts ------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def output_sample_rate(self) -> int:
        return self.model.config.output_sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.model.samples_per_frame

    @property
    def num_codebooks(self) -> int:
        return self.model.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def freeze(self) -> "AudioCodecModel":
        """NeMo's `freeze()`: eval mode, no gradients."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def unfreeze(self) -> "AudioCodecModel":
        for p in self.parameters():
            p.requires_grad_(True)
        return self

    # ---- NeMo's methods --------------------------------------------------------------------
    @torch.no_grad()
    def encode_audio(self, audio, audio_len=None, sample_rate=None):
        """audio [B, T] -> (encoded [B, D, F] before quantization, encoded_len [B])."""
        return tuple(self.model.encode_latents(audio, audio_len, sample_rate=sample_rate or None,
                                               nemo_batch_compat=self.nemo_batch_compat))

    @torch.no_grad()
    def quantize(self, encoded, encoded_len=None):
        """encoded [B, D, F] -> tokens int32 [B, G, F]; frames past encoded_len are 0."""
        encoded, encoded_len = self._latents(encoded, encoded_len, "encoded")
        return self.model.quantizer.encode(encoded, encoded_len)

    @torch.no_grad()
    def dequantize(self, tokens, tokens_len=None):
        """tokens [B, G, F] -> dequantized [B, D, F] in the model's dtype (FSQ runs in float32)."""
        tokens, tokens_len = self._tokens(tokens, tokens_len)
        return self.model.quantizer.decode(tokens, tokens_len).to(self.dtype)

    @torch.no_grad()
    def decode_audio(self, inputs, input_len=None):
        """inputs [B, D, F] (dequantized or encoder output) -> (audio [B, T], audio_len [B])."""
        inputs, input_len = self._latents(inputs, input_len, "inputs")
        audio_len = input_len * self.samples_per_frame
        with self.model.precision_scope():
            audio = self.model.decoder(inputs.to(self.dtype), audio_len)
        return audio[:, 0], audio_len

    @torch.no_grad()
    def encode(self, audio, audio_len=None, sample_rate=None):
        """audio [B, T] -> (tokens int32 [B, G, F], tokens_len int64 [B])."""
        return tuple(self.model.encode(audio, audio_len, sample_rate=sample_rate or None,
                                       nemo_batch_compat=self.nemo_batch_compat))

    @torch.no_grad()
    def decode(self, tokens, tokens_len=None):
        """tokens [B, G, F] -> (audio [B, F * samples_per_frame], audio_len [B]); ids wrap as in NeMo."""
        audio, audio_len = self.model.decode_checked(*self._tokens(tokens, tokens_len))
        return audio[:, 0], audio_len

    @torch.no_grad()
    def forward(self, audio, audio_len=None, sample_rate=None):
        """audio [B, T] -> (output_audio [B, T'], output_audio_len [B]): encode, quantize, decode."""
        tokens, tokens_len = self.encode(audio, audio_len, sample_rate)
        return self.decode(tokens, tokens_len)

    # ---- checks ----------------------------------------------------------------------------
    def _tokens(self, tokens, tokens_len):
        q = self.model
        return validation.token_batch(tokens, tokens_len, q.num_codebooks, q.codebook_size, q.device, out_of_range="wrap")

    def _latents(self, x, lengths, what: str):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")
        dim = self.model.config.quantizer.dim
        if x.dim() != 3 or x.shape[1] != dim or x.shape[0] == 0 or x.shape[-1] == 0:
            raise InvalidInputError(f"{what} must have shape [B, {dim}, F] with B, F >= 1, got {list(x.shape)}")
        if not x.dtype.is_floating_point:
            raise InvalidInputError(f"{what} must be a float tensor, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError(f"{what} holds NaN or Inf values")
        lengths = validation.lengths(lengths, x.shape[0], x.shape[-1], f"{what}_len", self.device)
        return x.to(self.device), lengths
