"""NeMo `model_config.yaml` -> `NanoCodecConfig`.

Only the inference graph is read: `audio_encoder`, `vector_quantizer`, `audio_decoder` and the
model-level rates. Each section's keys are exactly its NeMo 3.0.0 constructor's arguments; an
absent key takes NeMo's class default (our dataclass defaults are those defaults, written out
explicitly into config.json); a key we do not understand is an error, because it might change
the computation.
"""
from __future__ import annotations

import dataclasses

from nanocodec.config import NONCAUSAL_DECODER_DEFAULTS, DecoderConfig, EncoderConfig, NanoCodecConfig, QuantizerConfig
from nanocodec.errors import CheckpointError

MODEL_TARGET = "AudioCodecModel"
SECTIONS = {
    # yaml key: (accepted _target_ class names, our dataclass)
    "audio_encoder": (("HiFiGANEncoder",), EncoderConfig),
    "vector_quantizer": (("GroupFiniteScalarQuantizer",), QuantizerConfig),
    "audio_decoder": (("CausalHiFiGANDecoder", "HiFiGANDecoder"), DecoderConfig),
}
# Our fields that are not NeMo constructor arguments (set from the _target_ class instead).
NOT_NEMO_ARGUMENTS = {"audio_decoder": {"causal"}}
# Class defaults that differ from our dataclass defaults (which are CausalHiFiGANDecoder's).
CLASS_DEFAULTS = {"HiFiGANDecoder": {**NONCAUSAL_DECODER_DEFAULTS, "causal": False}}
# Model-level keys that would change inference and that nanocodec does not implement.
UNSUPPORTED_MODEL_KEYS = ("semantic_codec", "semantic_codec_path")


def _target_name(section: dict) -> str:
    target = section.get("_target_", "")
    return str(target).rsplit(".", 1)[-1]


def config_from_yaml(conf: dict, source="model_config.yaml") -> tuple[NanoCodecConfig, list[str]]:
    """Returns the config and the notes for the report (defaults taken, values assumed)."""
    notes: list[str] = []
    target = conf.get("target")
    if target is not None and str(target).rsplit(".", 1)[-1] != MODEL_TARGET:
        raise CheckpointError(f"{source}: target {target!r} is not NeMo's AudioCodecModel; nanocodec cannot convert it")
    for key in UNSUPPORTED_MODEL_KEYS:
        if conf.get(key):
            raise CheckpointError(f"{source}: '{key}' is set; nanocodec does not implement it and cannot convert this model")
    for key in ("sample_rate", "samples_per_frame"):
        if key not in conf:
            raise CheckpointError(f"{source}: missing '{key}'")
    parts = {}
    for yaml_key, (targets, part_cls) in SECTIONS.items():
        section = conf.get(yaml_key)
        if not isinstance(section, dict):
            raise CheckpointError(f"{source}: missing section '{yaml_key}'")
        name = _target_name(section)
        if name not in targets:
            raise CheckpointError(
                f"{source}: {yaml_key}._target_ is {section.get('_target_')!r}; nanocodec supports {', '.join(targets)}"
            )
        values = {k: v for k, v in section.items() if k != "_target_"}
        known = {f.name for f in dataclasses.fields(part_cls)} - NOT_NEMO_ARGUMENTS.get(yaml_key, set())
        for key in values:
            if key not in known:
                raise CheckpointError(f"{source}: {yaml_key}.{key} is not understood; it may change the computation")
        class_defaults = CLASS_DEFAULTS.get(name, {})
        for f in dataclasses.fields(part_cls):
            if f.name in values or f.name in NOT_NEMO_ARGUMENTS.get(yaml_key, ()):
                continue
            if f.name in class_defaults:
                notes.append(f"{yaml_key}.{f.name} absent: NeMo 3.0.0 {name} default {class_defaults[f.name]!r}")
            elif f.default is not dataclasses.MISSING:
                notes.append(f"{yaml_key}.{f.name} absent: NeMo 3.0.0 class default {f.default!r}")
            elif f.default_factory is not dataclasses.MISSING:
                notes.append(f"{yaml_key}.{f.name} absent: NeMo 3.0.0 class default {f.default_factory()!r}")
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        values = {**class_defaults, **values}
        try:
            parts[yaml_key] = part_cls(**values)
        except TypeError as e:
            raise CheckpointError(f"{source}: {yaml_key}: {e}") from None
    config = NanoCodecConfig(
        sample_rate=conf["sample_rate"],
        samples_per_frame=conf["samples_per_frame"],
        output_sample_rate=conf.get("output_sample_rate"),
        encoder=parts["audio_encoder"],
        quantizer=parts["vector_quantizer"],
        decoder=parts["audio_decoder"],
    )
    return config, notes
