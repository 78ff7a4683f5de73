"""`OnnxCodec`: an exported folder run with ONNX Runtime, numpy in and out (contracts §9).

Imports numpy and onnxruntime only, never torch: a deployment needs neither PyTorch nor NeMo.

    codec = OnnxCodec.from_pretrained("out/nano0p6-onnx", threads=1)
    tokens, tokens_len = codec.encode(audio, audio_len)     # float [B,1,T] | [B,T] | [T] -> int32 [B,G,F]
    audio_hat, audio_len = codec.decode(tokens, tokens_len)  # float32 [B,1,F*spf], int64
    dec = codec.stream_decoder(batch_size=4)                 # causal decoders: exact streaming, slots
    chunk = dec.step(tokens_n, active=[True, False, True, True])

Inputs are checked as the torch API checks them (nanocodec/onnx/checks.py): out-of-range token ids,
bad shapes, NaN audio and too-short inputs for a reflect-padded model raise `InvalidInputError`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import CheckpointError, InvalidInputError, NotSupportedError
from . import checks, layout


class EncodeOutput(NamedTuple):
    tokens: np.ndarray  # int32 [B, G, F]
    tokens_len: np.ndarray  # int64 [B]


class DecodeOutput(NamedTuple):
    audio: np.ndarray  # float32 [B, 1, F*spf]
    audio_len: np.ndarray  # int64 [B]


def session_options(threads: int | None = None):
    """ORT's settings for one session: `threads` intra-op threads (None: ORT's default, one per
    core), one inter-op thread, and no spinning: by default idle ORT threads spin-wait, which on a
    shared or small machine costs the other work its cores."""
    import onnxruntime as ort

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive integer or None, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def read_config(folder: Path) -> dict:
    path = folder / layout.CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} holds no {layout.CONFIG_FILE}: not an exported ONNX folder; "
                              "make one with `nanocodec export MODEL OUT_DIR --format onnx`")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); export the model again") from None
    if not isinstance(config, dict) or config.get("format") != layout.FORMAT:
        raise CheckpointError(f"{path}: 'format' must be {layout.FORMAT!r}; export the model again")
    if config.get("format_version") != layout.FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {config.get('format_version')!r} is not "
                              f"{layout.FORMAT_VERSION}, the one this nanocodec reads; export the model again")
    return config


class OnnxCodec:
    def __init__(self, folder: Path, config: dict, sessions: dict):
        self.folder = folder
        self.config = config
        self.sessions = sessions  # graph name -> onnxruntime.InferenceSession
        self.sample_rate = int(config["sample_rate"])
        self.samples_per_frame = int(config["samples_per_frame"])
        self.num_codebooks = int(config["num_codebooks"])
        self.codebook_size = int(config["codebook_size"])
        self.min_frames = dict(config["min_frames"])

    @classmethod
    def from_pretrained(cls, folder, providers=None, threads: int | None = None) -> "OnnxCodec":
        """Load an exported folder (a local path). `providers`: ONNX Runtime execution providers
        (default: the CPU one); `threads`: intra-op threads per session (default: ORT's, all cores)."""
        import onnxruntime as ort

        folder = Path(folder)
        config = read_config(folder)
        opts = session_options(threads)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        sessions = {}
        for name, graph in config["graphs"].items():
            path = folder / graph["file"]
            if not path.is_file():
                raise CheckpointError(f"{path} is missing; export the model again")
            try:
                sessions[name] = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as e:  # onnxruntime raises its own types for bad files and providers
                raise CheckpointError(f"ONNX Runtime could not load {path}: {e}") from None
        return cls(folder, config, sessions)

    def encode(self, audio, audio_len=None) -> EncodeOutput:
        """audio float [B,1,T] | [B,T] | [T] at the model's rate -> int32 tokens [B,G,F], int64
        lengths; ragged batches are batch-invariant (contracts §1)."""
        audio, audio_len = checks.audio_batch(audio, audio_len, self.samples_per_frame, self.min_frames["encoder"])
        tokens, tokens_len = self.sessions["encoder"].run(None, {"audio": audio, "audio_len": audio_len})
        return EncodeOutput(tokens, tokens_len)

    def decode(self, tokens, tokens_len=None) -> DecodeOutput:
        """int tokens [B,G,F] | [G,F] -> float32 audio [B,1,F*spf], int64 lengths tokens_len*spf."""
        tokens, tokens_len = checks.token_batch(tokens, tokens_len, self.num_codebooks, self.codebook_size)
        checks.min_token_frames(tokens_len, self.min_frames["decoder"])
        audio, audio_len = self.sessions["decoder"].run(None, {"tokens": tokens, "tokens_len": tokens_len})
        return DecodeOutput(audio, audio_len)

    def stream_decoder(self, batch_size: int = 1) -> "OnnxStreamDecoder":
        if "decoder_step" not in self.sessions:
            raise NotSupportedError(
                "stream_decoder() needs a causal decoder; this model's decoder (NeMo HiFiGANDecoder) looks ahead "
                "at later frames, so streamed output could not equal decode(). Decode whole sequences with decode().")
        return OnnxStreamDecoder(self, batch_size)


class OnnxStreamDecoder:
    """`step(tokens [N,G,n], active=None) -> float32 [N,1,n*spf]` through `decoder_step.onnx`, the
    state fed back; N independent slots (contracts §8): an inactive slot's tokens are ignored, its
    state untouched and its output rows zero; all active slots run in one batched call."""

    def __init__(self, codec: OnnxCodec, batch_size: int = 1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.codec = codec
        self.batch_size = batch_size
        self.session = codec.sessions["decoder_step"]
        self.spec = codec.config["state"]
        self.state = {s["name"]: np.zeros((batch_size, *s["shape"][1:]), dtype=np.float32) for s in self.spec}

    def reset(self, slots=None) -> None:
        """Every slot (None) or the listed ones back to the start of a stream."""
        for i in checks.slot_list(slots, self.batch_size):
            for value in self.state.values():
                value[i] = 0

    def step(self, tokens, active=None) -> np.ndarray:
        c = self.codec
        mask = checks.slot_mask(active, self.batch_size)
        tokens, _ = checks.token_batch(tokens, None, c.num_codebooks, c.codebook_size, active=mask)
        out = np.zeros((self.batch_size, 1, tokens.shape[-1] * c.samples_per_frame), dtype=np.float32)
        rows = np.nonzero(mask)[0]
        if len(rows) == 0:
            return out
        everyone = len(rows) == self.batch_size
        feed = {layout.STEP_TOKENS: tokens if everyone else tokens[rows]}
        for s in self.spec:
            feed[s["input"]] = self.state[s["name"]] if everyone else self.state[s["name"]][rows]
        audio, *state_out = self.session.run(None, feed)
        for s, value in zip(self.spec, state_out):
            if everyone:
                self.state[s["name"]] = value
            else:
                self.state[s["name"]][rows] = value
        out[rows] = audio
        return out
