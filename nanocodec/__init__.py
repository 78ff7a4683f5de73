"""nanocodec: NVIDIA NeMo's NanoCodec in plain PyTorch, proven equal to NeMo.

The package is laid out as the model is built:
- `config`, `presets`, `model`, `encoder`, `quantizer`, `decoder`, `streaming`: the model core, in
  NeMo's numerics; `nn/`: its building blocks (convs with NeMo's padding, activations, res blocks);
- `backends/`: the fast CPU backend beside the core (channels-last convs where the per-machine
  accuracy gate finds them as accurate as NCW), chosen once per model (`model.set_backend`);
- `fileio/`: hub loading and saving, safe tensor files, atomic outputs, audio files, token files;
- `convert/`: `.nemo` -> release weights (`nanocodec.convert`, `python -m convert` in a checkout);
- `apps/`: the command line, the corpus tokenizer and its Ray engine; `compat/`: the NeMo drop-in.

Public names are resolved on first use, so that a light entry point (`nanocodec --help`) does not
import torch: `from nanocodec import AudioCodecModel` imports the model then.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AudioCodecModel": ".model", "EncodeOutput": ".model", "DecodeOutput": ".model", "CodecOutput": ".model",
    "LatentOutput": ".model",
    "NanoCodecConfig": ".config", "EncoderConfig": ".config", "QuantizerConfig": ".config", "DecoderConfig": ".config",
    "PRESETS": ".presets",
    "NanoCodecError": ".errors", "InvalidInputError": ".errors", "CheckpointError": ".errors",
    "UnsafeCheckpointError": ".errors", "NotSupportedError": ".errors",
}
# public submodules under their documented names (nanocodec.audio, ...) -> where they live now
_SUBMODULES = {"audio": ".fileio.audio", "token_files": ".fileio.token_files", "nemo_compat": ".compat.nemo"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name], __name__)
    else:
        raise AttributeError(f"module 'nanocodec' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
