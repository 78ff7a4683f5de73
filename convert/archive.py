"""Reading a `.nemo` archive safely: nothing is extracted to disk and nothing runs.

A `.nemo` is a tar (or, before NeMo 1.7, a tar.gz) holding `model_config.yaml` and
`model_weights.ckpt`, usually as `./name` next to a `.` directory entry. Limits, stated here
and in the README: yaml ≤ 1 MiB, weights ≤ 4 GiB, ≤ 16 members. Links, devices, absolute
paths and `..` are refused as unsafe; unknown regular members are skipped and reported.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import torch
import yaml

from nanocodec.errors import CheckpointError, UnsafeCheckpointError

MAX_YAML_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 4 << 30
MAX_MEMBERS = 16
CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"


@dataclass
class NemoArchive:
    config: dict
    state_dict: dict[str, torch.Tensor]
    ignored_members: list[str] = field(default_factory=list)


def _member_name(member: tarfile.TarInfo, source) -> str:
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute():
        raise UnsafeCheckpointError(f"{source}: member {name!r} has an absolute path; refusing this archive")
    if ".." in path.parts:
        raise UnsafeCheckpointError(f"{source}: member {name!r} points outside the archive ('..'); refusing it")
    parts = [p for p in path.parts if p != "."]
    return "/".join(parts)


def read_nemo(path, *, max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> NemoArchive:
    source = str(path)
    try:
        tar = tarfile.open(source, "r:*")  # plain tar, or gzip as NeMo's _tar_open falls back to
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CheckpointError(f"{source} is not a .nemo archive (not a readable tar): {e}") from None
    raw: dict[str, bytes] = {}
    ignored: list[str] = []
    with tar:
        try:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise CheckpointError(f"{source}: more than {MAX_MEMBERS} members; not a .nemo checkpoint")
                name = _member_name(member, source)
                if member.isdir():
                    continue
                if member.issym() or member.islnk():
                    raise UnsafeCheckpointError(f"{source}: member {member.name!r} is a link; refusing this archive")
                if not member.isfile():
                    raise UnsafeCheckpointError(f"{source}: member {member.name!r} is a device or special file; refusing it")
                if name not in (CONFIG_MEMBER, WEIGHTS_MEMBER):
                    ignored.append(name)
                    continue
                if name in raw:
                    raise CheckpointError(f"{source}: member {name} appears twice")
                limit = MAX_YAML_BYTES if name == CONFIG_MEMBER else max_weights_bytes
                if member.size > limit:
                    raise CheckpointError(f"{source}: {name} is {member.size} bytes, over the {limit}-byte limit")
                f = tar.extractfile(member)
                data = f.read(limit + 1)
                if len(data) > limit:
                    raise CheckpointError(f"{source}: {name} is over the {limit}-byte limit")
                if len(data) != member.size:
                    raise CheckpointError(f"{source}: {name} is truncated ({len(data)} of {member.size} bytes)")
                raw[name] = data
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(f"{source}: the archive is corrupt or truncated: {e}") from None
    for name in (CONFIG_MEMBER, WEIGHTS_MEMBER):
        if name not in raw:
            raise CheckpointError(f"{source}: no {name} in the archive; not a NeMo model checkpoint")
    config = parse_yaml(raw.pop(CONFIG_MEMBER), source)
    state = load_weights(raw.pop(WEIGHTS_MEMBER), source)
    return NemoArchive(config, state, ignored)


def parse_yaml(data: bytes, source) -> dict:
    try:
        conf = yaml.safe_load(data.decode("utf-8"))
    except yaml.constructor.ConstructorError as e:
        raise UnsafeCheckpointError(f"{source}: {CONFIG_MEMBER} uses tags that could construct objects: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{source}: {CONFIG_MEMBER} is not valid YAML: {e}") from None
    if not isinstance(conf, dict):
        raise CheckpointError(f"{source}: {CONFIG_MEMBER} does not hold a mapping")
    if isinstance(conf.get("model"), dict):  # NeMo: `if 'model' in conf: conf = conf.model`
        conf = conf["model"]
    return conf


def load_weights(data: bytes, source) -> dict[str, torch.Tensor]:
    try:
        # weights_only: tensors and plain containers only; a pickle that would run code is refused
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{source}: {WEIGHTS_MEMBER} contains objects beyond tensors (refused, nothing was run): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # torch raises RuntimeError/EOFError/zipfile errors for corrupt data
        raise CheckpointError(f"{source}: {WEIGHTS_MEMBER} is not a readable torch checkpoint: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{source}: {WEIGHTS_MEMBER} is not a flat name -> tensor state dict")
    return dict(state)
