"""What a model source is, wherever it lies (contracts §1, §3), before anything is loaded or converted.

In the order `from_pretrained` and the converter try them:
1. a `.nemo` file (NeMo's archive, NVIDIA's release format);
2. a folder or hub repo in nanocodec's layout: `config.json` with `model_type: "nanocodec"` (loaded strictly);
3. NeMo-named safetensors, a folder, a repo or one file (the PyPI port's re-export, whose `config.json`
   is the port's own, e.g. `{"sample_rate": 22050}`, or absent): no architecture inside;
4. a folder or hub repo holding one `.nemo` (NVIDIA's repos: `<repo name>.nemo`).
Anything else is a CheckpointError that says what was found. Nothing here reads tensor data: only
file names, JSON configs and safetensors headers.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nanocodec.errors import CheckpointError
from nanocodec.presets import preset_for_hub_id

from .archive import MAX_WEIGHTS_BYTES

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "nanocodec"
MAX_CONFIG_BYTES = 1 << 20
# NeMo's module names: a state dict holding these is NeMo's (the port keeps them), not nanocodec's
NEMO_PREFIXES = ("audio_encoder.", "audio_decoder.")

NANOCODEC, NEMO, SAFETENSORS = "nanocodec layout", ".nemo", "NeMo-named safetensors"
ACCEPTED = (f"a .nemo file, a folder or hub repo with nanocodec's {CONFIG_NAME} + {WEIGHTS_NAME}, NeMo-named "
            ".safetensors (the PyPI port's re-export), or a folder or repo holding one .nemo")


@dataclass
class Source:
    kind: str  # NANOCODEC, NEMO or SAFETENSORS
    label: str  # what the user named (a path or a hub id), for messages and reports
    path: Path  # the folder (nanocodec layout), the .nemo, or the first safetensors file
    files: list[Path] = field(default_factory=list)  # SAFETENSORS: every weights file, sorted
    port_config: dict | None = None  # SAFETENSORS: the PyPI port's config.json, when there is one
    digest: str | None = None  # sha256(), once computed

    @property
    def sample_rate(self) -> int | None:
        rate = (self.port_config or {}).get("sample_rate")
        return rate if isinstance(rate, int) and not isinstance(rate, bool) else None

    def sha256(self) -> str:
        """Of the .nemo file, or of the safetensors files' bytes in name order."""
        if self.digest is None:
            h = hashlib.sha256()
            for path in (self.files if self.kind == SAFETENSORS else [self.path]):
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            self.digest = h.hexdigest()
        return self.digest


def locate(src, revision: str | None = None, **hub_kwargs) -> Source:
    """The source `src` names: a local file or folder, else a hub repo id (downloaded, or found in the
    huggingface_hub cache when offline). `hub_kwargs` go to huggingface_hub (cache_dir, token, ...)."""
    label = os.fspath(src)
    path = Path(label).expanduser()
    if path.is_file():
        return _classify_file(path, label)
    if path.is_dir():
        return classify_folder(path, label)
    if not is_repo_id(label):
        raise CheckpointError(f"{label!r} is neither an existing file or folder nor a hub repo id like 'owner/name'")
    return _locate_repo(label, revision, hub_kwargs)


def is_repo_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/"))


def _classify_file(path: Path, label: str) -> Source:
    if path.suffix == ".nemo":
        return Source(NEMO, label, path)
    if path.suffix == ".safetensors":
        if nemo_named(path):
            return Source(SAFETENSORS, label, path, [path], _port_config(path.parent))
        raise CheckpointError(f"{label} is not NeMo-named safetensors; for nanocodec's layout pass the folder holding "
                              f"it and its {CONFIG_NAME}")
    raise CheckpointError(f"{label} is a file but not a .nemo or .safetensors; from_pretrained takes {ACCEPTED}")


def classify_folder(folder: Path, label: str) -> Source:
    config = _read_json(folder / CONFIG_NAME)
    if config is not None and config.get("model_type") == MODEL_TYPE:
        return Source(NANOCODEC, label, folder)
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    named = [f for f in weights if nemo_named(f)]
    if named:
        return Source(SAFETENSORS, label, named[0], named, config)
    nemo = sorted(folder.glob("*.nemo")) if folder.is_dir() else []
    if len(nemo) == 1:
        return Source(NEMO, label, nemo[0])
    if len(nemo) > 1:
        raise CheckpointError(f"{label} holds several .nemo files ({', '.join(p.name for p in nemo)}); pass one of them")
    if config is not None:
        why = (f"its model_type is {config['model_type']!r}, not {MODEL_TYPE!r}" if "model_type" in config
               else "it has no model_type")
        raise CheckpointError(
            f"{label}: {CONFIG_NAME} is not nanocodec's ({why}) and no NeMo-named .safetensors or .nemo is beside it"
            + (f" (the .safetensors there use other names, e.g. {_first_key(weights[0])!r})" if weights else "")
            + "; this is not a model nanocodec reads")
    found = sorted(p.name for p in folder.iterdir())[:8] if folder.is_dir() else []
    raise CheckpointError(f"{label} holds no {CONFIG_NAME}, no .safetensors and no .nemo "
                          f"(found: {', '.join(found) or 'nothing'}); from_pretrained takes {ACCEPTED}")


def nemo_named(path: Path) -> bool:
    return any(k.startswith(NEMO_PREFIXES) for k in safetensors_shapes(path))


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def check_size(files: list[Path], label: str) -> None:
    """The .nemo weights limit (archive.MAX_WEIGHTS_BYTES) holds for NeMo-named safetensors too."""
    total = sum(f.stat().st_size for f in files)
    if total > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{label}: {total} bytes of safetensors, over the {MAX_WEIGHTS_BYTES}-byte limit on a "
                              "checkpoint's weights")


def _first_key(path: Path) -> str:
    return next(iter(sorted(safetensors_shapes(path))), "")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path} is larger than 1 MiB; it is not a model config")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return value


def _port_config(folder: Path) -> dict | None:
    config = _read_json(folder / CONFIG_NAME)
    return None if config is not None and config.get("model_type") == MODEL_TYPE else config


# ---- hub repos ------------------------------------------------------------------------------
def _locate_repo(repo_id: str, revision: str | None, hub_kwargs: dict) -> Source:
    if preset_for_hub_id(repo_id):  # NVIDIA's own repos: the pinned .nemo, its sha256 checked
        return download_nemo(repo_id, revision, **hub_kwargs)
    # the small files first: a repo in our layout or the port's never downloads a .nemo
    folder = _snapshot(repo_id, revision, [CONFIG_NAME, "*.safetensors"], hub_kwargs)
    if not (folder / CONFIG_NAME).exists() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.nemo")):
        folder = _snapshot(repo_id, revision, ["*.nemo"], hub_kwargs)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise CheckpointError(f"{repo_id} (revision {revision or 'main'}) holds no {CONFIG_NAME}, .safetensors or "
                              f".nemo; from_pretrained takes {ACCEPTED}")
    return classify_folder(folder, repo_id)


def _snapshot(repo_id: str, revision: str | None, patterns: list[str], hub_kwargs: dict) -> Path:
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns, **hub_kwargs))
    except Exception as e:  # hub errors come in many types: one clear message instead
        raise CheckpointError(f"could not download {repo_id!r} (revision {revision or 'main'}): {e}") from None


def download_nemo(repo_id: str, revision: str | None, **hub_kwargs) -> Source:
    """`<repo basename>.nemo` (NeMo's own naming) from the hub, pinned and verified when the repo is a preset's."""
    import huggingface_hub

    preset = preset_for_hub_id(repo_id)
    filename = preset.nemo_filename if preset else repo_id.rsplit("/", 1)[-1] + ".nemo"
    revision = revision or (preset.revision if preset else None)
    try:
        path = Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, **hub_kwargs))
    except Exception as e:
        raise CheckpointError(f"could not download {filename} from {repo_id} (revision {revision}): {e}") from None
    source = Source(NEMO, repo_id, path)
    if preset and preset.sha256 and revision == preset.revision and source.sha256() != preset.sha256:
        raise CheckpointError(f"{path}: sha256 {source.sha256()} is not the pinned {preset.sha256}; refusing it")
    return source
