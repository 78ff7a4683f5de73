"""Record NeMo's full-size NanoCodec discriminator, shapes only, into full_discriminator_spec.json.

Runs inside the oracle environment (imports NeMo 3.0.0):
    parity/oracle/.venv/bin/python parity/oracle/record_full_discriminator.py

NeMo's model is built from the base fixture's config (tests/fixtures/models/nano0p6_replicate.nemo)
with the `discriminator:` section of NeMo's low-frame-rate 22 kHz codec recipe (the NanoCodec family's
training config; NeMo ships no NanoCodec-specific yaml) in place of the fixtures' tiny one, and every
`discriminator.*` tensor of its state dict is recorded by key, shape, dtype and kind, never by value.
`derive.derive_with_discriminator(base, out, FULL_DISCRIMINATOR_SPEC)` then builds, at test time, a
reduced generator saved with full-size discriminators (issue 16: such a checkpoint is legitimate).

The SLM discriminator wraps a frozen WavLM that NeMo downloads from the hub; it is replaced here by an
empty module, so the spec holds the discriminative head NeMo trains and saves, not WavLM. (NeMo 3.0.0's
`AudioCodecModel.state_dict` drops keys containing ".slm_model.slm_model.", but its `SSLModel` names
the wrapped model `ssl_model`: the check below records whether NeMo would keep WavLM's tensors.)
Buffers are recorded with kind "buffer-shape-only": `derive.discriminator_tensors` fills them from
its seed like parameters. The converter drops every discriminator tensor, so their values never matter.
"""
from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from pathlib import Path
from unittest import mock

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nemo_oracle as O  # noqa: E402
from derive import CONFIG_NAME, DERIVED_BASE, load_config, read_nemo  # noqa: E402

FULL_DISCRIMINATOR_SPEC = HERE / "full_discriminator_spec.json"
SOURCE = {
    "repo": "NVIDIA/NeMo",
    "commit": "8cfedd7203462cb251a914e700e5605444277561",  # the snapshot read (2025-09-20)
    "file_last_changed_in": "128907634bd0bee26f815e6bb213d966a7b0fff1",
    "file": "examples/tts/conf/audio_codec/audio_codec_low_frame_rate_22050.yaml",
    "section": "model.discriminator",
    "changes": "input_sr: ${sample_rate} resolved to 22050",
}
M = "nemo.collections.tts.modules."
FULL_DISC_CONFIG = {
    "_target_": M + "audio_codec_modules.Discriminator",
    "discriminators": [
        {"_target_": M + "encodec_modules.MultiResolutionDiscriminatorSTFT",
         "resolutions": [[128, 32, 128], [256, 64, 256], [512, 128, 512], [1024, 256, 1024], [2048, 512, 2048]]},
        {"_target_": M + "audio_codec_modules.MultiPeriodDiscriminator"},
        {"_target_": M + "audio_codec_modules.SLMDiscriminator", "slm_model_name": "microsoft/wavlm-base-plus",
         "slm_sr": 16000, "input_sr": 22050, "slm_hidden": 768, "slm_layers": 13, "initial_channel": 64,
         "use_spectral_norm": False},
    ],
}
WAVLM = ".slm_model.ssl_model."  # where SSLModel keeps the hub model


class _NoWavLM(torch.nn.Module):
    """Stands in for the hub's WavLM; one tensor, to see whether NeMo's state_dict keeps it."""

    def __init__(self):
        super().__init__()
        self.probe = torch.nn.Parameter(torch.zeros(1))


def record() -> dict:
    from nemo.collections.tts.models import AudioCodecModel
    from nemo.collections.tts.modules import audio_codec_modules
    from omegaconf import OmegaConf

    cfg = load_config(read_nemo(O.MODELS_DIR / f"{DERIVED_BASE}.nemo")[CONFIG_NAME])
    cfg = cfg.get("model", cfg)
    cfg["discriminator"] = copy.deepcopy(FULL_DISC_CONFIG)
    torch.manual_seed(0)
    with mock.patch.object(audio_codec_modules.AutoModel, "from_pretrained", lambda name, *a, **k: _NoWavLM()):
        m = AudioCodecModel(cfg=OmegaConf.create(cfg))
    params = {n for n, _ in m.named_parameters()}
    state = m.state_dict()
    tensors, per_part, numel = [], Counter(), 0
    for k, v in state.items():
        if not k.startswith("discriminator.") or WAVLM in k:
            continue
        kind = "parameter" if k in params else "buffer-shape-only"
        tensors.append({"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "kind": kind})
        part = FULL_DISC_CONFIG["discriminators"][int(k.split(".")[2])]["_target_"].rsplit(".", 1)[1]
        per_part[part] += v.numel() * v.element_size()
        numel += v.numel()
    assert all(t["dtype"] == "float32" for t in tensors)
    return {
        "config": FULL_DISC_CONFIG,
        "source": SOURCE,
        "nemo_version": __import__("nemo").__version__,
        "n_tensors": len(tensors),
        "n_elements": numel,
        "bytes_float32": 4 * numel,
        "bytes_per_discriminator": dict(per_part),
        "nemo_state_dict_keeps_wavlm": any(WAVLM in k for k in state),
        "tensors": tensors,
        "note": ("recorded from NeMo by record_full_discriminator.py: shapes only (no values); the hub's WavLM "
                 "inside SLMDiscriminator is left out (see the script's docstring); derive.py fills every "
                 "tensor, buffers included, from a seed"),
    }


def main() -> int:
    O.quiet_nemo()
    spec = record()
    FULL_DISCRIMINATOR_SPEC.write_text(json.dumps(spec, indent=1) + "\n")
    print(f"{FULL_DISCRIMINATOR_SPEC.name}: {spec['n_tensors']} tensors, {spec['n_elements']} elements, "
          f"{spec['bytes_float32']} bytes float32 {spec['bytes_per_discriminator']}; "
          f"NeMo's state_dict keeps WavLM: {spec['nemo_state_dict_keeps_wavlm']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
