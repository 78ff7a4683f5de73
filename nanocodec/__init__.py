"""nanocodec: NVIDIA NeMo's NanoCodec in plain PyTorch, proven equal to NeMo."""
from .config import DecoderConfig, EncoderConfig, NanoCodecConfig, QuantizerConfig
from .errors import CheckpointError, InvalidInputError, NanoCodecError, NotSupportedError, UnsafeCheckpointError
from .model import AudioCodecModel, CodecOutput, DecodeOutput, EncodeOutput, LatentOutput
from .presets import PRESETS

__version__ = "0.1.0"

__all__ = [
    "AudioCodecModel",
    "NanoCodecConfig",
    "EncoderConfig",
    "QuantizerConfig",
    "DecoderConfig",
    "EncodeOutput",
    "DecodeOutput",
    "CodecOutput",
    "LatentOutput",
    "PRESETS",
    "NanoCodecError",
    "InvalidInputError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "NotSupportedError",
]
