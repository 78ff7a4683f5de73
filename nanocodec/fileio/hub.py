"""`from_pretrained` / `save_pretrained` in the hub layout: `config.json` + `model.safetensors`.

Loading is strict (every tensor present, none extra, same shapes and dtypes, all finite) and
never executes code: safetensors and JSON only. A `.nemo` or NeMo-named weights are refused with
the exact command that converts them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load

from . import atomic, tensorfile
from ..config import NanoCodecConfig
from ..errors import CheckpointError, InvalidInputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
NEMO_PREFIXES = ("audio_encoder.", "audio_decoder.", "vector_quantizer.")


def convert_command(source: str, options: str = "") -> str:
    return f"nanocodec convert {source} OUT{options} (or python -m nanocodec.convert ...), then load OUT"


def _resolve(path_or_repo_id, revision, **hub_kwargs) -> Path:
    path = Path(os.fspath(path_or_repo_id)).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        if path.suffix == ".nemo":
            raise CheckpointError(f"{path} is a NeMo checkpoint; convert it first: {convert_command(str(path))}")
        raise CheckpointError(f"{path} is a file; from_pretrained takes a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    repo_id = str(path_or_repo_id)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise CheckpointError(f"{repo_id!r} is neither an existing folder nor a hub repo id like 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "README.md"], **hub_kwargs
        )
    except Exception as e:  # hub errors come in many types: one clear message instead
        raise CheckpointError(f"could not download {repo_id!r} (revision {revision}): {e}") from None
    folder = Path(folder)
    if not (folder / CONFIG_NAME).exists():
        if _repo_has_nemo(repo_id, revision):
            raise CheckpointError(
                f"{repo_id} holds a NeMo .nemo checkpoint, not nanocodec weights; convert it first: "
                f"{convert_command(repo_id)}"
            )
        raise CheckpointError(f"{repo_id} has no {CONFIG_NAME}: it is not a nanocodec model repo")
    return folder


def _repo_has_nemo(repo_id, revision) -> bool:
    try:
        from huggingface_hub import list_repo_files

        return any(name.endswith(".nemo") for name in list_repo_files(repo_id, revision=revision))
    except Exception:
        return False


def read_config(folder: Path) -> NanoCodecConfig:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists():
        nemo = sorted(folder.glob("*.nemo"))
        if nemo:
            raise CheckpointError(f"{folder} holds a NeMo checkpoint ({nemo[0].name}); convert it first: {convert_command(str(nemo[0]))}")
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}; it is not a nanocodec model folder")
    if cfg_path.stat().st_size > 1 << 20:
        raise CheckpointError(f"{cfg_path} is larger than 1 MiB; it is not a nanocodec config")
    return NanoCodecConfig.from_json(cfg_path.read_text())


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_NAME
    if not path.exists():
        raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}")
    try:
        # bytes, not a file mapping: each tensor then owns its memory, so re-laying a weight out
        # for the fast conv path (nanocodec/nn/conv.py) frees the old copy instead of leaving
        # the mapped file resident beside it (measured: 100 MiB less steady RSS at full size)
        state = load(path.read_bytes())
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    if any(k.startswith(NEMO_PREFIXES) for k in state):
        raise CheckpointError(
            f"{path} holds NeMo-named weights (e.g. the PyPI port's re-export); convert them first: "
            f"{convert_command(str(folder), ' --preset NAME')}"
        )
    return state


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not match the config: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); re-convert the checkpoint"
        )
    for key, ref in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"tensor {key} has shape {list(got.shape)}, the config implies {list(ref.shape)}")
        if not got.dtype.is_floating_point:
            raise CheckpointError(f"tensor {key} has dtype {got.dtype}; weights must be floating point")
        if not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"tensor {key} holds NaN or Inf values; the checkpoint is corrupt")


def load_pretrained(cls, path_or_repo_id, *, revision=None, device="cpu", dtype=torch.float32, backend="auto",
                    **hub_kwargs):
    folder = _resolve(path_or_repo_id, revision, **hub_kwargs)
    config = read_config(folder)
    state = read_weights(folder)
    with torch.device("meta"):
        model = cls(config)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    # non-persistent buffers (FSQ constants) were made on meta: rebuild them for real
    model.quantizer.reset_buffers("cpu")
    return model.to(device=device, dtype=dtype).eval().set_backend(backend)


def save_pretrained(model, out_dir, *, overwrite: bool = False, metadata: dict | None = None,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write config.json + model.safetensors (+ extra text files) atomically into `out_dir`."""
    meta = {"format": "pt", "nanocodec_config_sha256": model.config.sha256()}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    tensors = model.state_dict()

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(model.config.to_json())
        with open(tmp / WEIGHTS_NAME, "wb") as f:
            tensorfile.write(f, tensors, meta)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    try:
        return atomic.write_folder(out_dir, fill, overwrite=overwrite)
    except InvalidInputError:
        raise
    except OSError as e:
        raise InvalidInputError(f"could not write {out_dir}: {e}") from None
