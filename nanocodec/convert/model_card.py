"""The README.md model card written next to converted weights."""
from __future__ import annotations

from nanocodec.config import NanoCodecConfig


def model_card(config: NanoCodecConfig, report) -> str:
    p = report.parameters
    return f"""---
library_name: nanocodec
license: other
license_name: nvidia-open-model-license
tags: [audio, codec, speech, nanocodec]
---
# NanoCodec for nanocodec

Converted from NVIDIA NeMo's codec checkpoint `{report.source}`
(sha256 `{report.source_sha256}`, NeMo {report.nemo_version or "version unknown"}) by nanocodec's converter.
The weights are NVIDIA's and stay under the NVIDIA Open Model License; only the format changed
(weight norm folded exactly as NeMo computes it, training-only tensors dropped).

| | |
|---|---|
| sample rate | {config.sample_rate} Hz |
| samples per frame | {config.samples_per_frame} ({config.frame_rate:g} frames/s) |
| codebooks | {config.num_codebooks} x {config.codebook_size} codes ({config.bitrate:.0f} bit/s) |
| parameters | encoder {p['encoder']:,}, decoder {p['decoder']:,} |
| decoder | {"causal `CausalHiFiGANDecoder` (streams: `model.stream_decoder()`)" if config.decoder.causal else "non-causal `HiFiGANDecoder` (no streaming decode)"} |

```python
from nanocodec import AudioCodecModel
model = AudioCodecModel.from_pretrained("THIS_FOLDER_OR_REPO")
tokens, tokens_len = model.encode(audio)          # audio [B, 1, T] float at {config.sample_rate} Hz
audio_hat, audio_len = model.decode(tokens, tokens_len)
```

`conversion_report.json` lists every checkpoint tensor as mapped or dropped, and why.
"""
