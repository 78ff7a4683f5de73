"""What an exported folder holds (contracts §9): file names, graph input/output names, the config's
format. Shared by the exporter and the torch-free runtime, so this module imports nothing heavy."""
from __future__ import annotations

CONFIG_FILE = "onnx_config.json"
FORMAT = "nanocodec-onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
DECODER_STEP_FILE = "decoder_step.onnx"

# graph inputs and outputs, in order
ENCODER_INPUTS = ("audio", "audio_len")  # float32 [B,1,T], int64 [B]
ENCODER_OUTPUTS = ("tokens", "tokens_len")  # int32 [B,G,F], int64 [B]
DECODER_INPUTS = ("tokens", "tokens_len")  # int32 [B,G,F], int64 [B]
DECODER_OUTPUTS = ("audio", "audio_len")  # float32 [B,1,F*spf], int64 [B]
STEP_TOKENS = "tokens"  # int32 [B,G,n]
STEP_AUDIO = "audio"  # float32 [B,1,n*spf]
STATE_IN = "state_in."  # + the decoder module's path: float32 [B,C,L]
STATE_OUT = "state_out."
