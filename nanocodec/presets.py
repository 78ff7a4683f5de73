"""Released NanoCodec models: where they live and their architecture.

A preset is what a source without its own architecture (the PyPI port's safetensors re-export)
is converted with; a `.nemo` always brings its own `model_config.yaml`, which wins.
Values marked INFERRED on the reference page (the encoder's pad_mode for 0.6 kbps) are the
preset's assumption, and the converter's report says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import DecoderConfig, EncoderConfig, NanoCodecConfig, QuantizerConfig


@dataclass(frozen=True)
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

    def config(self) -> NanoCodecConfig:
        dim = self.num_groups * len(self.num_levels_per_group)
        return NanoCodecConfig(
            sample_rate=self.sample_rate,
            samples_per_frame=self.samples_per_frame,
            encoder=EncoderConfig(
                encoded_dim=dim,
                down_sample_rates=list(self.down_sample_rates),
                base_channels=24,
                activation="lrelu",
                pad_mode="replicate",
            ),
            quantizer=QuantizerConfig(num_groups=self.num_groups, num_levels_per_group=list(self.num_levels_per_group)),
            decoder=DecoderConfig(
                input_dim=dim,
                up_sample_rates=list(reversed(self.down_sample_rates)),
                base_channels=864,
                activation="half_snake",
                output_activation="clamp",
                pad_mode="zeros",
                n_groups_equal_to_out_channels=True,
            ),
        )


_ENCODER_GUESS = (
    "encoder base_channels 24, activation lrelu and pad_mode replicate are INFERRED for this "
    "preset (NeMo's class default pad_mode is reflect); a .nemo's own yaml overrides them"
)

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
    )
}

# The official repo the README and `make convert` default to.
DEFAULT_PRESET = "nanocodec-22khz-0.6kbps-12.5fps"


def preset_for_hub_id(repo_id: str) -> Preset | None:
    for p in PRESETS.values():
        if p.hub_id == repo_id:
            return p
    return None
