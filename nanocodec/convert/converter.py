"""The conversion itself: source -> (config, folded weights) -> release folder with a report."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file

from nanocodec import AudioCodecModel
from nanocodec.config import NanoCodecConfig
from nanocodec.errors import CheckpointError, InvalidInputError
from nanocodec.fileio.hub import check_state_dict, save_pretrained
from nanocodec.presets import PRESETS

from . import __version__
from .archive import read_nemo
from .identify import identify
from .keymap import DROP_RULES, map_state_dict
from .model_card import model_card
from .nemo_config import config_from_yaml
from .sources import CONFIG_NAME, NANOCODEC, NEMO, SAFETENSORS, Source, check_size, locate, safetensors_shapes


@dataclass
class Report:
    source: str
    source_sha256: str
    source_kind: str
    nemo_version: str | None
    config_notes: list[str] = field(default_factory=list)
    ignored_members: list[str] = field(default_factory=list)
    mapped: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)
    folded_weight_norm: int = 0
    parameters: dict = field(default_factory=dict)
    nemo_inference_parameters: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    def summary(self) -> str:
        total_mapped = sum(self.mapped.values())
        total_dropped = sum(self.dropped.values())
        lines = [
            f"source: {self.source} ({self.source_kind}, sha256 {self.source_sha256[:16]}...)",
            f"tensors: {total_mapped} mapped ({', '.join(f'{k} {v}' for k, v in sorted(self.mapped.items()))}), "
            f"{total_dropped} dropped ({', '.join(f'{k} {v}' for k, v in sorted(self.dropped.items())) or 'none'})",
            f"weight norm folded: {self.folded_weight_norm} convs",
            "parameters: NeMo-counted {:.2f}M (weight norm g+v); folded encoder {:,} + decoder {:,} = {:.2f}M".format(
                self.nemo_inference_parameters / 1e6,
                self.parameters["encoder"], self.parameters["decoder"], self.parameters["total"] / 1e6,
            ),
        ]
        for why in {w for n, _p, w in DROP_RULES if n in self.dropped}:
            lines.append(f"dropped because: {why}")
        lines += [f"note: {n}" for n in self.config_notes]
        if self.ignored_members:
            lines.append(f"archive members ignored: {', '.join(self.ignored_members)}")
        return "\n".join(lines)


def architecture(source: Source, preset: str | NanoCodecConfig | None) -> tuple[NanoCodecConfig, list[str]]:
    """The architecture of NeMo-named safetensors, which carry none, and the report's notes on it:
    `preset` as given (a preset's name, or any NanoCodecConfig, e.g. a reduced-width test model's),
    else the one preset whose shapes the tensors have (nanocodec/convert/identify.py)."""
    if isinstance(preset, NanoCodecConfig):
        return preset, [f"architecture from the config passed in (sha256 {preset.sha256()[:16]})"]
    if preset is not None:
        if preset not in PRESETS:
            raise CheckpointError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        chosen, how = PRESETS[preset], "named"
    else:
        shapes = {}
        for f in source.files:
            shapes.update(safetensors_shapes(f))
        chosen, how = identify(shapes, sample_rate=source.sample_rate, source=source.label), "identified from its tensor shapes"
    notes = [f"architecture from preset {chosen.name} ({how})"]
    notes += [f"preset {chosen.name} assumes: {a}" for a in chosen.assumptions]
    return chosen.config(), notes


def read_source(source: Source, preset: str | NanoCodecConfig | None = None):
    """-> (config, NeMo-named state dict, report skeleton). `preset`: the architecture of a source that
    carries none (NeMo-named safetensors; see `architecture`); a .nemo brings its own yaml."""
    if source.kind == NANOCODEC:
        raise CheckpointError(f"{source.label} is already in nanocodec's layout; load it with from_pretrained, "
                              "there is nothing to convert")
    if source.kind == SAFETENSORS:
        check_size(source.files, source.label)
        config, notes = architecture(source, preset)
        state = {}
        for f in source.files:
            try:
                state.update(load_file(str(f)))
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise CheckpointError(f"{f} is not a readable safetensors file: {e}") from None
        if source.port_config:
            notes.append(f"{CONFIG_NAME} beside the weights (the PyPI port's, not an architecture) read for its "
                         f"sample_rate only: {source.sample_rate}")
        return config, state, Report(source.label, source.sha256(), SAFETENSORS, None, config_notes=notes)
    if preset is not None:
        raise InvalidInputError(f"{source.label} is a .nemo: its own model_config.yaml gives the architecture; "
                                "pass no preset (--preset) or config")
    archive = read_nemo(source.path)
    config, notes = config_from_yaml(archive.config, source=str(source.path))
    report = Report(source.label, source.sha256(), NEMO, archive.config.get("nemo_version"), config_notes=notes,
                    ignored_members=archive.ignored_members)
    return config, archive.state_dict, report


def convert(src, out, *, overwrite: bool = False, preset: str | NanoCodecConfig | None = None,
            revision: str | None = None, config: NanoCodecConfig | None = None, **hub_kwargs) -> Report:
    """Convert `src` (a path or hub repo id: nanocodec/convert/sources.py) into `out` (contracts §3).
    `preset` (a name in PRESETS or a NanoCodecConfig; `config` is the older name for the latter) is the
    architecture of a source without one; absent, it is identified from the tensor shapes."""
    if config is not None and preset is not None:
        raise InvalidInputError("pass preset= or config=, not both")
    return convert_source(locate(src, revision, **hub_kwargs), out, overwrite=overwrite,
                          preset=config if config is not None else preset)


def convert_source(source: Source, out, *, overwrite: bool = False, preset: str | NanoCodecConfig | None = None) -> Report:
    """Convert a located source into the release folder `out`."""
    config, nemo_state, report = read_source(source, preset)
    mapping = map_state_dict(nemo_state, config)
    del nemo_state
    with torch.device("meta"):
        model = AudioCodecModel(config)
    check_state_dict(model, mapping.state_dict)
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapping.state_dict.items()}, strict=True, assign=True)
    mapping.state_dict.clear()
    check_state_dict(model, model.state_dict())  # again in float32: a float64 value past its range is Inf now
    report.mapped = dict(mapping.mapped)
    report.dropped = dict(mapping.dropped)
    report.folded_weight_norm = mapping.folded
    report.parameters = model.num_parameters()
    report.nemo_inference_parameters = mapping.nemo_inference_params
    metadata = {
        "source_sha256": report.source_sha256,
        "nemo_version": report.nemo_version or "unknown",
        "converter_version": __version__,
    }
    save_pretrained(model, out, overwrite=overwrite, metadata=metadata,
                    extra_files={"README.md": model_card(config, report), "conversion_report.json": report.to_json()})
    return report
