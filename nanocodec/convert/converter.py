"""The conversion itself: source -> (config, folded weights) -> release folder with a report."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from nanocodec import AudioCodecModel
from nanocodec.config import NanoCodecConfig
from nanocodec.errors import CheckpointError, InvalidInputError
from nanocodec.fileio.hub import check_state_dict, save_pretrained
from nanocodec.presets import PRESETS, preset_for_hub_id

from . import __version__
from .archive import read_nemo
from .keymap import DROP_RULES, map_state_dict
from .nemo_config import config_from_yaml
from .model_card import model_card


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


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_nemo(repo_id: str, revision: str | None) -> Path:
    """Fetch `<repo basename>.nemo` (NeMo's own naming) from the hub, pinned and verified when known."""
    from huggingface_hub import hf_hub_download

    preset = preset_for_hub_id(repo_id)
    filename = preset.nemo_filename if preset else repo_id.rsplit("/", 1)[-1] + ".nemo"
    revision = revision or (preset.revision if preset else None)
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as e:
        raise CheckpointError(f"could not download {filename} from {repo_id} (revision {revision}): {e}") from None
    if preset and preset.sha256 and revision == preset.revision:
        digest = sha256_file(path)
        if digest != preset.sha256:
            raise CheckpointError(f"{path}: sha256 {digest} is not the pinned {preset.sha256}; refusing it")
    return path


def download_safetensors(repo_id: str, revision: str | None) -> str:
    """A hub repo of NeMo-named safetensors (the PyPI port's re-export), as a local folder."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=["*.safetensors"])
    except Exception as e:
        raise CheckpointError(f"could not download {repo_id} (revision {revision}): {e}") from None


def load_source(src: str, preset_name: str | None, revision: str | None, config: NanoCodecConfig | None = None):
    """-> (config, NeMo-named state dict, report skeleton). `config` (or `preset_name`): the architecture
    of a source that carries none (NeMo-named safetensors); a .nemo brings its own yaml."""
    path = Path(src)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            nemo = sorted(path.glob("*.nemo"))
            if len(nemo) == 1:
                return load_source(str(nemo[0]), preset_name, revision, config)
            raise CheckpointError(f"{src}: no .nemo and no NeMo-named .safetensors inside")
        if config is None and not preset_name:
            raise CheckpointError(
                f"{src} holds bare safetensors with no architecture; name it with --preset ({', '.join(PRESETS)})"
            )
        if config is None and preset_name not in PRESETS:
            raise CheckpointError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset_name] if config is None else None
        state = {}
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.read_bytes())
            try:
                state.update(load_file(str(f)))
            except Exception as e:  # safetensors raises its own error types for corrupt files
                raise CheckpointError(f"{f} is not a readable safetensors file: {e}") from None
        if preset is None:
            notes = [f"architecture from the config passed in (sha256 {config.sha256()[:16]})"]
        else:
            notes = [f"architecture from preset {preset.name}: {a}" for a in preset.assumptions] or [
                f"architecture from preset {preset.name}"]
        report = Report(str(src), digest.hexdigest(), "NeMo-named safetensors", None, config_notes=notes)
        return (preset.config() if preset else config), state, report
    if not path.exists():
        if src.count("/") == 1 and not src.startswith((".", "/")) and (preset_name or config is not None):
            return load_source(download_safetensors(src, revision), preset_name, revision, config)
        if src.count("/") == 1 and not src.startswith((".", "/")):
            path = download_nemo(src, revision)
        else:
            raise CheckpointError(f"{src}: no such file or folder")
    if config is not None:
        raise InvalidInputError(f"{src} is a .nemo: its own model_config.yaml gives the architecture; pass no config")
    archive = read_nemo(path)
    config, notes = config_from_yaml(archive.config, source=str(path))
    report = Report(str(src), sha256_file(path), ".nemo", archive.config.get("nemo_version"), config_notes=notes,
                    ignored_members=archive.ignored_members)
    return config, archive.state_dict, report


def convert(src: str, out: str, *, overwrite: bool = False, preset: str | None = None, revision: str | None = None,
            config: NanoCodecConfig | None = None) -> Report:
    """Convert `src` into `out` (contracts §3). `preset` (a name in PRESETS) or `config` (any
    NanoCodecConfig, e.g. a reduced-width test model's) is the architecture of a source without one."""
    config, nemo_state, report = load_source(src, preset, revision, config)
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
