"""Token files: `.safetensors` holding int32 tokens `[G, F]` per item, with the facts needed to decode
them in the header metadata (all strings, as safetensors wants):

    format          "nanocodec-tokens"        format_version   "1"
    model           the model's local folder (absolute) or hub repo id (+ "model_revision")
    config_sha256   model.config.sha256(): which architecture made the tokens
    sample_rate, samples_per_frame, num_codebooks, codebook_size
    lengths         JSON {key: {"frames": F, "num_samples": T}}: T samples at sample_rate before
                    padding to whole frames (decode trims to it), F = ceil(T / samples_per_frame)
    precision       JSON record of the settings that made the tokens (nanocodec/precision.py, contracts
                    §10): {"dtype", "tf32", "cudnn_benchmark", "backend", "device", "torch", "threads"}

`nanocodec encode` writes one item under the key "tokens"; a `nanocodec tokenize` shard holds one item
per audio file, keyed by its path relative to the corpus. Files are written crash-safely and
byte-deterministically (nanocodec/tensorfile.py; no timestamps).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import atomic, tensorfile
from ..errors import InvalidInputError

FORMAT = "nanocodec-tokens"
FORMAT_VERSION = 1
SINGLE_KEY = "tokens"
_FACTS = ("sample_rate", "samples_per_frame", "num_codebooks", "codebook_size")


@dataclass
class TokenFile:
    tokens: dict[str, torch.Tensor]  # key -> int32 [G, F]
    num_samples: dict[str, int]  # key -> samples at sample_rate before frame padding
    model: str | None
    config_sha256: str
    sample_rate: int
    samples_per_frame: int
    num_codebooks: int
    codebook_size: int
    metadata: dict[str, str] = field(default_factory=dict)  # the whole header metadata

    @property
    def model_revision(self) -> str | None:
        return self.metadata.get("model_revision") or None

    def frames(self, key: str) -> int:
        return int(self.tokens[key].shape[-1])

    def batch(self, keys=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack items into `(tokens int32 [B, G, F_max] zero-padded, tokens_len int64 [B])`."""
        keys = list(self.tokens) if keys is None else list(keys)
        longest = max(self.frames(k) for k in keys)
        out = torch.zeros(len(keys), self.num_codebooks, longest, dtype=torch.int32)
        for i, k in enumerate(keys):
            out[i, :, : self.frames(k)] = self.tokens[k]
        return out, torch.tensor([self.frames(k) for k in keys], dtype=torch.int64)


def model_reference(model_arg) -> str:
    """What to store as the model: an existing local folder as its absolute path, else the hub id."""
    path = Path(os.fspath(model_arg)).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model_arg)


def precision_text(record: dict) -> str:
    """A precision record as header metadata (compact, sorted: the same record gives the same bytes)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def header(model, model_ref: str | None, revision: str | None = None, *, precision: dict | None = None) -> dict[str, str]:
    """The metadata every token file made by `model` carries. `precision`: the record of the settings
    the tokens are made under (default: the innermost open precision scope's, else the policy's
    defaults for the model's device, dtype and backend, with this process's threads)."""
    if precision is None:
        from .. import precision as policy

        scope = policy.current()
        precision = scope.record() if scope else policy.settings(model.device, model.dtype, backend=model.backend)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config_sha256": model.config.sha256(),
        "sample_rate": str(model.sample_rate),
        "samples_per_frame": str(model.samples_per_frame),
        "num_codebooks": str(model.num_codebooks),
        "codebook_size": str(model.codebook_size),
        "precision": precision_text(precision),
    }
    if model_ref:
        meta["model"] = str(model_ref)
    if revision:
        meta["model_revision"] = str(revision)
    return meta


def to_bytes(tokens: dict[str, torch.Tensor], num_samples: dict[str, int], meta: dict[str, str]) -> bytes:
    """Serialise items (key -> int [G, F]) with `meta` (from `header`) and their lengths."""
    if set(tokens) != set(num_samples):
        raise ValueError("tokens and num_samples must have the same keys")
    spf = int(meta["samples_per_frame"])
    lengths = {}
    clean = {}
    for key in tokens:
        t = tokens[key].detach().cpu().to(torch.int32).contiguous()
        n = int(num_samples[key])
        if t.dim() != 2 or t.shape[-1] != math.ceil(n / spf):
            raise ValueError(f"item {key!r}: tokens {list(t.shape)} do not fit {n} samples at {spf} samples/frame")
        clean[key] = t
        lengths[key] = {"frames": int(t.shape[-1]), "num_samples": n}
    meta = dict(meta)
    meta["lengths"] = json.dumps(lengths, sort_keys=True, separators=(",", ":"))
    return tensorfile.to_bytes(clean, meta)


def write(path, tokens: dict[str, torch.Tensor], num_samples: dict[str, int], meta: dict[str, str]) -> Path:
    try:
        return atomic.write_file(path, to_bytes(tokens, num_samples, meta))
    except OSError as e:
        raise InvalidInputError(f"could not write {path}: {e}") from None


def read_metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except Exception as e:  # safetensors raises its own types for bad headers
        raise InvalidInputError(f"{path} is not a readable .safetensors file: {e}") from None


def read(path) -> TokenFile:
    """Read and check a token file; anything wrong raises `InvalidInputError`."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise InvalidInputError(f"{path} is not a nanocodec token file (made by `nanocodec encode` or `tokenize`)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise InvalidInputError(
            f"{path}: token file format_version {meta.get('format_version')!r}, this nanocodec reads {FORMAT_VERSION}"
        )
    try:
        facts = {k: int(meta[k]) for k in _FACTS}
        lengths = json.loads(meta["lengths"])
        config_sha = meta["config_sha256"]
    except (KeyError, ValueError) as e:
        raise InvalidInputError(f"{path}: token file header is incomplete or corrupt ({e})") from None
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise InvalidInputError(f"{path} is not a readable .safetensors file: {e}") from None
    if set(tensors) != set(lengths):
        raise InvalidInputError(f"{path}: the header's lengths do not list the same items as the file holds")
    num_samples = {}
    for key, t in tensors.items():
        info = lengths[key]
        frames = math.ceil(int(info["num_samples"]) / facts["samples_per_frame"])
        if t.dtype != torch.int32 or t.dim() != 2 or t.shape[0] != facts["num_codebooks"] or t.shape[1] != frames:
            raise InvalidInputError(
                f"{path}: item {key!r} holds {t.dtype} {list(t.shape)}, expected int32 "
                f"[{facts['num_codebooks']}, {frames}]; the file is corrupt"
            )
        num_samples[key] = int(info["num_samples"])
    return TokenFile(tensors, num_samples, meta.get("model") or None, config_sha, metadata=meta, **facts)
