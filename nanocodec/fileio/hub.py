"""`from_pretrained` / `save_pretrained`: nanocodec's layout is `config.json` + `model.safetensors`.

`from_pretrained` takes what exists in the world (contracts §1; nanocodec/convert/sources.py says how
each source is recognised): a folder or hub repo in our layout is loaded strictly (every tensor present,
none extra, same shapes and dtypes, all finite); a `.nemo` (a file, or NVIDIA's hub repo holding one) or
NeMo-named safetensors (the PyPI port's re-export) are converted first by `nanocodec convert`'s own code
and cached (nanocodec/convert/cache.py). Loading never executes code: safetensors and JSON only here,
the converter's safe readers there.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load

from . import atomic, tensorfile
from ..config import NanoCodecConfig
from ..errors import CheckpointError, InvalidInputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
NEMO_PREFIXES = ("audio_encoder.", "audio_decoder.", "vector_quantizer.")


def resolve(src, *, revision=None, preset=None, cache_dir=None, **hub_kwargs) -> Path:
    """The folder in nanocodec's layout that `src` gives: itself, its hub snapshot, or its cached
    conversion. `preset` (a preset name or a NanoCodecConfig): the architecture of NeMo-named
    safetensors (otherwise identified from their shapes); `cache_dir`: huggingface_hub's download cache,
    and the converted models' root beneath it (nanocodec/convert/cache.py)."""
    from ..convert.cache import cache_root, converted_folder
    from ..convert.sources import NANOCODEC, locate

    if cache_dir is not None:
        hub_kwargs["cache_dir"] = cache_dir
    source = locate(src, revision, **hub_kwargs)
    if source.kind != NANOCODEC:
        return converted_folder(source, preset, cache_root(cache_dir))
    if preset is not None:
        raise InvalidInputError(f"{source.label} has its own {CONFIG_NAME} (nanocodec's layout); pass no preset")
    return source.path


def read_config(folder: Path) -> NanoCodecConfig:
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists():
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
            f"{path} holds NeMo-named weights (e.g. the PyPI port's re-export) beside nanocodec's {CONFIG_NAME}: "
            f"remove that {CONFIG_NAME} and load the folder again (the architecture is then identified from the "
            f"shapes, or named with preset=), or convert it: nanocodec convert {folder} OUT (python -m nanocodec.convert)"
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


def load_pretrained(cls, src, *, revision=None, device="cpu", dtype=torch.float32, backend="auto", preset=None,
                    cache_dir=None, **hub_kwargs):
    folder = resolve(src, revision=revision, preset=preset, cache_dir=cache_dir, **hub_kwargs)
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
