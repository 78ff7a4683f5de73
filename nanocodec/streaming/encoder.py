"""The streaming encoder: audio in pieces -> tokens as soon as each frame's right context has arrived."""
from __future__ import annotations

import torch

from .. import validation
from ..errors import InvalidInputError
from ..nn.stream_state import EncoderStream


class StreamingEncoder:
    """`step(audio [B,1,n] | [B,n]) -> int32 tokens [B,G,f]`, `flush()` -> the rest; the
    concatenation equals `model.encode(all_audio).tokens`."""

    def __init__(self, model, batch_size: int = 1):
        self.model = model
        self.batch_size = batch_size
        self.lookahead_samples = model.encoder.lookahead()
        self.reset()

    @property
    def lookahead_ms(self) -> float:
        return 1000.0 * self.lookahead_samples / self.model.sample_rate

    def reset(self) -> None:
        self.state = EncoderStream(self.model.encoder)
        self.samples = 0

    def _tokens(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.shape[-1] == 0:
            m = self.model
            return torch.zeros(self.batch_size, m.num_codebooks, 0, dtype=torch.int32, device=m.device)
        return self.model.quantizer.encode(latents)

    @torch.inference_mode()
    def step(self, audio) -> torch.Tensor:
        m = self.model
        shape = tuple(getattr(audio, "shape", ()))
        if len(shape) not in (2, 3) or shape[0] != self.batch_size or (len(shape) == 3 and shape[1] != 1):
            raise InvalidInputError(f"stream audio must be [{self.batch_size}, n] or [{self.batch_size}, 1, n], got {list(shape)}")
        if shape[-1] == 0:
            return self._tokens(torch.zeros(self.batch_size, 1, 0))  # n == 0 is a valid step
        audio, _ = validation.audio_batch(audio, None, m.dtype, m.device, check_layout=False)  # [B, n]: B streams
        self.samples += audio.shape[-1]
        return self._tokens(m.encoder(audio.unsqueeze(1), state=self.state))

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        m = self.model
        padding = -self.samples % m.samples_per_frame  # NeMo's pad_audio: zeros up to a whole frame
        try:
            if self.samples == 0:
                return self._tokens(torch.zeros(self.batch_size, 1, 0))
            self.state.final = True
            return self._tokens(m.encoder(torch.zeros(self.batch_size, 1, padding, dtype=m.dtype, device=m.device),
                                          state=self.state))
        finally:
            self.reset()
