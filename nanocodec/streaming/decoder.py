"""The streaming decoder: N independent streams as slots of one batch (contracts §1, §8)."""
from __future__ import annotations

import torch

from .. import validation
from ..errors import InvalidInputError


class StreamingDecoder:
    """`step(tokens [N,G,n], active=None) -> audio [N,1,n*spf]`: per slot, the concatenated steps
    equal `model.decode` of that slot's tokens. Inactive slots are skipped: their tokens ignored,
    their state untouched, their output rows zero; the active ones run as one batch.
    `reset(slots=None)`: every slot, or the listed ones, back to the start of a stream."""

    def __init__(self, model, batch_size: int = 1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive int (the number of slots), got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        with torch.inference_mode():
            self.state = model.decoder.init_state(batch_size)  # name -> [N, C, L]

    @torch.inference_mode()
    def reset(self, slots=None) -> None:
        rows = self._slots(slots)
        for tensor in self.state.values():
            tensor[rows] = 0

    def _slots(self, slots) -> list[int] | slice:
        if slots is None:
            return slice(None)
        items = list(slots) if isinstance(slots, (list, tuple)) else None
        if items is None or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            raise InvalidInputError(f"slots must be a list of ints in [0, {self.batch_size}), got {slots!r}")
        bad = [i for i in items if not 0 <= i < self.batch_size]
        if bad:
            raise InvalidInputError(f"slots {bad} out of range: this decoder has slots 0..{self.batch_size - 1}")
        return items

    def _active_rows(self, active) -> torch.Tensor | None:
        """Indices of the active slots, or None when every slot is active."""
        if active is None:
            return None
        try:
            mask = torch.as_tensor(active).cpu()
        except (TypeError, ValueError, RuntimeError):
            mask = None
        if mask is None or mask.dtype != torch.bool or mask.shape != (self.batch_size,):
            raise InvalidInputError(
                f"active must be {self.batch_size} booleans (one per slot), got {getattr(active, 'dtype', type(active).__name__)} "
                f"of shape {list(getattr(mask, 'shape', []))}")
        if bool(mask.all()):
            return None
        return mask.nonzero().view(-1).to(self.model.device)

    @torch.inference_mode()
    def step(self, tokens, active=None) -> torch.Tensor:
        m = self.model
        shape = tuple(getattr(tokens, "shape", ()))
        if len(shape) != 3 or shape[0] != self.batch_size:
            raise InvalidInputError(
                f"this stream decoder was opened with batch_size={self.batch_size} (one slot per item): tokens must be "
                f"[{self.batch_size}, {m.num_codebooks}, n], got {list(shape) if shape else type(tokens).__name__}")
        rows = self._active_rows(active)
        if rows is None:
            tokens, _ = validation.token_batch(tokens, None, m.num_codebooks, m.codebook_size, m.device)
            audio, self.state = m.decoder.step(m.quantizer.decode(tokens).to(m.dtype), self.state)
            return audio
        out = torch.zeros(self.batch_size, 1, shape[-1] * m.samples_per_frame, dtype=m.dtype, device=m.device)
        if rows.numel() == 0:
            return out
        tokens = torch.as_tensor(tokens)
        tokens = tokens[rows.to(tokens.device)]
        tokens, _ = validation.token_batch(tokens, None, m.num_codebooks, m.codebook_size, m.device)
        state = {name: t.index_select(0, rows) for name, t in self.state.items()}
        audio, state = m.decoder.step(m.quantizer.decode(tokens).to(m.dtype), state)
        for name, t in state.items():
            self.state[name].index_copy_(0, rows, t.to(self.state[name].dtype))
        out.index_copy_(0, rows, audio)
        return out
