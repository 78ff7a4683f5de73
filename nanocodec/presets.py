"""Released NeMo codecs nanocodec runs: where they live and their architecture.

The three NanoCodecs (causal decoder), and NeMo's older codecs built from the same modules with the
non-causal `HiFiGANDecoder`: the low-frame-rate speech codec (LFSC) and the 22/44 kHz audio codecs.

A preset is what a source without its own architecture (the PyPI port's safetensors re-export)
is converted with; a `.nemo` always brings its own `model_config.yaml`, which wins.
Values marked INFERRED on the reference page (the encoder's pad_mode for 0.6 kbps) are the
preset's assumption, and the converter's report says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import DecoderConfig, EncoderConfig, NanoCodecConfig, QuantizerConfig


@dataclass(frozen=True, eq=False)
class Preset:
    name: str
    hub_id: str
    nemo_filename: str
    revision: str | None  # pinned hub revision where one is known
    sha256: str | None  # sha256 of the .nemo at that revision
    sample_rate: int
    samples_per_frame: int
    down_sample_rates: tuple[int, ...]
    num_groups: int
    num_levels_per_group: tuple[int, ...]
    assumptions: tuple[str, ...] = ()
    family: str = "NanoCodec"
    # HiFiGANEncoder / decoder arguments that differ from the NanoCodec ones below
    encoder: dict = field(default_factory=dict)
    decoder: dict = field(default_factory=dict)
    note: str = ""  # one line for the README's variants table

    def config(self) -> NanoCodecConfig:
        dim = self.num_groups * len(self.num_levels_per_group)
        enc = dict(base_channels=24, activation="lrelu", pad_mode="replicate")
        enc.update(self.encoder)
        dec = dict(base_channels=864, activation="half_snake", output_activation="clamp", pad_mode="zeros",
                   n_groups_equal_to_out_channels=True)
        dec.update(self.decoder)
        return NanoCodecConfig(
            sample_rate=self.sample_rate,
            samples_per_frame=self.samples_per_frame,
            encoder=EncoderConfig(encoded_dim=dim, down_sample_rates=list(self.down_sample_rates), **enc),
            quantizer=QuantizerConfig(num_groups=self.num_groups, num_levels_per_group=list(self.num_levels_per_group)),
            decoder=DecoderConfig(input_dim=dim, up_sample_rates=list(reversed(self.down_sample_rates)), **dec),
        )


_ENCODER_GUESS = (
    "encoder base_channels 24, activation lrelu and pad_mode replicate are INFERRED for this "
    "preset (NeMo's class default pad_mode is reflect); a .nemo's own yaml overrides them"
)
_NEMO_YAML = "NVIDIA/NeMo@8cfedd7203462cb251a914e700e5605444277561:examples/tts/conf/audio_codec/"


def _from_example_yaml(yaml_name: str, extra: str = "") -> str:
    return (f"architecture from NeMo's example training config {_NEMO_YAML}{yaml_name} (absent keys: NeMo 3.0.0 "
            f"class defaults, e.g. pad_mode reflect); the released .nemo's own yaml, when converted, overrides it{extra}")


# NeMo's older codecs share the HiFiGANEncoder and use the non-causal HiFiGANDecoder.
_NONCAUSAL = dict(pad_mode="reflect", n_groups_equal_to_out_channels=False, causal=False)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="nanocodec-22khz-0.6kbps-12.5fps",
            hub_id="nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps",
            nemo_filename="nemo-nano-codec-22khz-0.6kbps-12.5fps.nemo",
            revision="5c8e22ed763c14d81337fbe6ca74062f3d10f7e5",
            sha256="bd5883099d0c74ceda760b6b7a1600b86da4d8a02531c9c282679951dcb08870",
            sample_rate=22050,
            samples_per_frame=1764,
            down_sample_rates=(2, 3, 6, 7, 7),
            num_groups=4,
            num_levels_per_group=(9, 8, 8, 7),
            assumptions=(_ENCODER_GUESS,),
            note="NVIDIA: not recommended for general-purpose audio",
        ),
        Preset(
            name="nanocodec-22khz-1.78kbps-12.5fps",
            hub_id="nvidia/nemo-nano-codec-22khz-1.78kbps-12.5fps",
            nemo_filename="nemo-nano-codec-22khz-1.78kbps-12.5fps.nemo",
            revision=None,
            sha256=None,
            sample_rate=22050,
            samples_per_frame=1764,
            down_sample_rates=(2, 3, 6, 7, 7),
            num_groups=13,
            num_levels_per_group=(8, 7, 6, 6),
            assumptions=(_ENCODER_GUESS,),
        ),
        Preset(
            name="nanocodec-22khz-1.89kbps-21.5fps",
            hub_id="nvidia/nemo-nano-codec-22khz-1.89kbps-21.5fps",
            nemo_filename="nemo-nano-codec-22khz-1.89kbps-21.5fps.nemo",
            revision=None,
            sha256=None,
            sample_rate=22050,
            samples_per_frame=1024,
            down_sample_rates=(2, 2, 4, 8, 8),
            num_groups=8,
            num_levels_per_group=(8, 7, 6, 6),
        ),
        Preset(
            name="lfsc-22khz-1.89kbps-21.5fps",
            hub_id="nvidia/low-frame-rate-speech-codec-22khz",
            nemo_filename="low-frame-rate-speech-codec-22khz.nemo",
            revision=None,
            sha256=None,
            sample_rate=22050,
            samples_per_frame=1024,
            down_sample_rates=(2, 2, 4, 8, 8),
            num_groups=8,
            num_levels_per_group=(8, 7, 6, 6),
            family="Low Frame-rate Speech Codec",
            encoder=dict(base_channels=48, activation="lrelu", pad_mode="reflect", resblock_dilation_sizes=[1]),
            decoder=dict(base_channels=1024, activation="lrelu", output_activation="tanh", **_NONCAUSAL),
            assumptions=(_from_example_yaml("audio_codec_low_frame_rate_22050.yaml",
                                            "; it gives 112.7M parameters, the model card's figure"),),
            note="speech; non-causal decoder",
        ),
        Preset(
            name="audio-codec-22khz-6.9kbps-86fps",
            hub_id="nvidia/audio-codec-22khz",
            nemo_filename="audio-codec-22khz.nemo",
            revision=None,
            sha256=None,
            sample_rate=22050,
            samples_per_frame=256,
            down_sample_rates=(2, 2, 8, 8),
            num_groups=8,
            num_levels_per_group=(8, 5, 5, 5),
            family="NeMo Audio Codec",
            encoder=dict(base_channels=48, activation="lrelu", pad_mode="reflect"),
            decoder=dict(base_channels=768, activation="half_snake", output_activation="clamp", **_NONCAUSAL),
            assumptions=(_from_example_yaml("audio_codec_22050.yaml"),),
            note="general audio; non-causal decoder",
        ),
        Preset(
            name="audio-codec-44khz-6.9kbps-86fps",
            hub_id="nvidia/audio-codec-44khz",
            nemo_filename="audio-codec-44khz.nemo",
            revision=None,
            sha256=None,
            sample_rate=44100,
            samples_per_frame=512,
            down_sample_rates=(2, 4, 8, 8),
            num_groups=8,
            num_levels_per_group=(8, 5, 5, 5),
            family="NeMo Audio Codec",
            encoder=dict(base_channels=48, activation="lrelu", pad_mode="reflect"),
            decoder=dict(base_channels=768, activation="half_snake", output_activation="clamp", **_NONCAUSAL),
            assumptions=(_from_example_yaml("audio_codec_44100.yaml"),),
            note="general audio; non-causal decoder",
        ),
    )
}

# The official repo the README and `make convert` default to.
DEFAULT_PRESET = "nanocodec-22khz-0.6kbps-12.5fps"


def preset_for_hub_id(repo_id: str) -> Preset | None:
    for p in PRESETS.values():
        if p.hub_id == repo_id:
            return p
    return None
